//! The storage conformance suite against `truststream serve` over
//! storage-fs, through this provider.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use truststream_conformance::{factory, storage, CaseOutcome};
use truststream_core_storage::{ErrorKind, SignedUrlMethod, Storage};

/// Cases skipped on this provider: (case, the capability it lacks, why).
const EXPECTED_SKIPS: &[(&str, &str, &str)] = &[
    (
        "upload.checksum_recorded",
        "checksums",
        "the Storage API records no checksum",
    ),
    (
        "cond.if_not_exists",
        "conditional_writes",
        "no if-ETag-matches write exists, so the flag (which covers both conditions) is false; \
         create-only writes are SupabaseStorage::upload_new",
    ),
    (
        "cond.if_match",
        "conditional_writes",
        "the Storage API cannot replace an object only if its ETag matches",
    ),
    (
        "cond.if_not_exists_race",
        "conditional_writes",
        "as cond.if_not_exists; the race of create-only uploads is tests/faults.rs \
         create_only_uploads_and_moves",
    ),
    (
        "cond.if_match_race",
        "conditional_writes",
        "as cond.if_match",
    ),
    (
        "signed.fetch_signed_roundtrip",
        "fetch_signed",
        "the Storage API answers its signed URLs, not the provider: fetch them over HTTP \
         (SupabaseStorage::fetch_signed, inherent, is that HTTP client)",
    ),
    (
        "signed.fetch_signed_refuses_forged",
        "fetch_signed",
        "as signed.fetch_signed_roundtrip",
    ),
    (
        "signed.fetch_signed_refuses_expired",
        "fetch_signed",
        "as signed.fetch_signed_roundtrip",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_serve_over_fs() {
    let served = common::serve(50 * 1024 * 1024).await;
    let client = served.service_client();
    let seq = Arc::new(AtomicU64::new(0));
    let report = storage::run(
        "supabase (serve over fs)",
        factory(move || {
            let client = client.clone();
            let n = seq.fetch_add(1, Ordering::Relaxed);
            async move {
                let bucket = format!("fixture-{n:04}");
                client
                    .create_bucket(&bucket)
                    .await
                    .map_err(|e| e.to_string())?;
                let fetcher = client.clone();
                let store: Arc<dyn Storage> = Arc::new(client);
                Ok(storage::StorageFixture::new(store, bucket).with_url_client(
                    move |method, url, body| {
                        let fetcher = fetcher.clone();
                        async move { fetcher.fetch_signed(method, &url, body).await }
                    },
                ))
            }
        }),
        None,
    )
    .await;
    report.print_table();
    let mut skipped = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for c in &report.cases {
        match &c.outcome {
            CaseOutcome::Skipped(why) => {
                skipped.insert(c.case, why.clone());
            }
            CaseOutcome::Failed(why) => {
                failed.insert(c.case, why.clone());
            }
            CaseOutcome::Passed => {}
        }
    }
    let mut expected_skips: Vec<&str> = EXPECTED_SKIPS.iter().map(|(n, _, _)| *n).collect();
    expected_skips.sort();
    assert_eq!(
        skipped.keys().copied().collect::<Vec<_>>(),
        expected_skips,
        "skips: {skipped:#?}"
    );
    for (name, capability, why) in EXPECTED_SKIPS {
        assert!(
            skipped[name].contains(capability),
            "{name} was skipped for another reason than {capability} ({why}): {}",
            skipped[name]
        );
    }
    assert!(failed.is_empty(), "failures: {failed:#?}");
    assert_eq!(
        report.passed(),
        storage::cases().len() - EXPECTED_SKIPS.len(),
        "{}",
        report.summary()
    );
    served.running.stop().await.unwrap();
}

/// The Storage API signs only existing objects: signing a missing one is
/// `NotFound` (and signing an existing one works, expiring when asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_a_missing_object_is_not_found() {
    let served = common::serve(1024 * 1024).await;
    let s = served.service_client();
    s.create_bucket("signing").await.unwrap();
    let e = s
        .signed_url(
            "signing",
            "agent-exports/1/data.json",
            SignedUrlMethod::Get,
            Duration::from_secs(86_400),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    s.upload(
        "signing",
        "agent-exports/1/data.json",
        bytes::Bytes::from_static(b"{}"),
        &Default::default(),
    )
    .await
    .unwrap();
    let before = chrono::Utc::now();
    let url = s
        .signed_url(
            "signing",
            "agent-exports/1/data.json",
            SignedUrlMethod::Get,
            Duration::from_secs(86_400),
        )
        .await
        .unwrap();
    let day = chrono::Duration::hours(24);
    assert!((url.expires_at - (before + day)).num_seconds().abs() <= 2);
    assert!(url
        .url
        .starts_with(&format!("{}/storage/v1/object/sign/signing/", served.url)));
    served.running.stop().await.unwrap();
}
