//! The storage conformance suite on the memory provider.

use std::sync::Arc;

use truststream_conformance::{factory, storage, CaseOutcome};
use truststream_core_storage::Storage;
use truststream_storage_memory::MemoryStorage;

const BUCKET: &str = "conformance";

async fn fresh() -> Result<Arc<MemoryStorage>, String> {
    let store = Arc::new(MemoryStorage::new());
    store
        .create_bucket(BUCKET)
        .await
        .map_err(|e| e.to_string())?;
    Ok(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_passes_the_storage_suite() {
    let report = storage::run(
        "memory",
        factory(|| async {
            let store = fresh().await?;
            let client = store.clone();
            Ok(storage::StorageFixture::new(store, BUCKET).with_url_client(
                move |method, url, body| {
                    let client = client.clone();
                    async move { client.fetch_signed(method, &url, body).await }
                },
            ))
        }),
        None,
    )
    .await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(report.passed() >= 20, "{}", report.summary());
    assert_eq!(
        report.passed(),
        storage::cases().len(),
        "{}",
        report.summary()
    );
    assert_eq!(
        report.skipped_cases(),
        Vec::<&str>::new(),
        "no case may be skipped"
    );
}

/// Without a URL client the signed-URL cases that need one are reported as
/// skipped (by name, with the reason), never as passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_url_client_signed_cases_are_skipped() {
    let report = storage::run(
        "memory-no-client",
        factory(|| async { Ok(storage::StorageFixture::new(fresh().await?, BUCKET)) }),
        Some("signed."),
    )
    .await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(
        report.skipped_cases(),
        [
            "signed.get_fetches_object",
            "signed.tampered_rejected",
            "signed.expired_rejected",
            "signed.wrong_method_rejected",
            "signed.put_stores_body",
        ]
    );
    for c in &report.cases {
        if let CaseOutcome::Skipped(why) = &c.outcome {
            assert!(why.contains("url_client"), "{}: {why}", c.case);
        }
    }
    // The signed cases that need no client still ran: the expiry, and
    // those that use the provider's own `fetch_signed`.
    let passed: Vec<&str> = report
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, CaseOutcome::Passed))
        .map(|c| c.case)
        .collect();
    assert_eq!(
        passed,
        [
            "signed.expires_at",
            "signed.fetch_signed_roundtrip",
            "signed.fetch_signed_refuses_forged",
            "signed.fetch_signed_refuses_expired",
        ],
        "{}",
        report.summary()
    );
}
