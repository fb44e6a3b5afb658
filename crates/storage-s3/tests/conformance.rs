//! The storage conformance suite against a real Garage server: a fresh bucket
//! per case, presigned URLs fetched with a plain HTTP client.

#![allow(clippy::unwrap_used)] // test helpers, not library code

mod support;

use std::sync::{Arc, Mutex};

use truststream_conformance::{factory, storage};
use truststream_core_storage::Storage;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_passes_the_storage_suite_on_garage() {
    let Some(garage) = support::garage().await else {
        return;
    };
    let store = Arc::new(garage.storage().await.expect("client"));
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let http = support::http();
    let (s, c) = (store.clone(), created.clone());
    let report = storage::run(
        "s3",
        factory(move || {
            let (store, created, http) = (s.clone(), c.clone(), http.clone());
            async move {
                let bucket = support::fresh_bucket(&store).await?;
                // Makes `capabilities()` exact before the cases read it.
                store
                    .probe_conditional_writes(&bucket)
                    .await
                    .map_err(|e| e.to_string())?;
                created
                    .lock()
                    .map_err(|e| e.to_string())?
                    .push(bucket.clone());
                Ok(
                    storage::StorageFixture::new(store as Arc<dyn Storage>, bucket)
                        .with_url_client(move |method, url, body| {
                            let http = http.clone();
                            async move { support::fetch(&http, method, &url, body).await }
                        }),
                )
            }
        }),
        None,
    )
    .await;
    report.print_table();
    let buckets = created.lock().map(|b| b.clone()).unwrap_or_default();
    for b in buckets {
        support::drop_bucket(store.as_ref(), &b).await;
    }
    assert_eq!(report.failed(), 0, "{}", report.summary());
    // Garage 2.5 accepts If-None-Match/If-Match on PUT and ignores them, so
    // the probe turns conditional writes off and exactly the cases that
    // need them are skipped (a server that honours them runs them all).
    // The S3 server answers presigned URLs, not the provider, so the
    // `fetch_signed` cases are skipped too (`capability.fetch_signed` runs
    // and holds it to `Unsupported`).
    let conditional = store.capabilities().conditional_writes;
    let expected: Vec<&str> = storage::cases()
        .iter()
        .filter(|c| {
            (c.needs.contains(&"conditional_writes") && !conditional)
                || c.needs.contains(&"fetch_signed")
        })
        .map(|c| c.name)
        .collect();
    assert_eq!(report.skipped_cases(), expected, "{}", report.summary());
    assert_eq!(
        report.passed() + report.skipped(),
        storage::cases().len(),
        "{}",
        report.summary()
    );
}
