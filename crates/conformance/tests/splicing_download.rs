//! `download.with_metadata_consistent_under_overwrite` catches a provider
//! whose `download_with_metadata` pairs the metadata of one version with
//! the bytes of another (what the trait's two-call default can do under
//! a concurrent overwrite).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use truststream_conformance::{factory, storage, CaseOutcome};
use truststream_core_storage::{ByteRange, ObjectDownload, Storage, StorageResult};
use truststream_layer::{LayeredStorage, StorageLayer};
use truststream_storage_memory::MemoryStorage;

/// A layer over storage-memory whose `download_with_metadata` reads the
/// metadata, waits (a while at most) for the object to be overwritten,
/// then reads the bytes: the race of the two-call default, made likely.
struct Splicing;

#[async_trait]
impl StorageLayer for Splicing {
    async fn download_with_metadata(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ObjectDownload> {
        let meta = next.get_metadata(bucket, key).await?;
        let served = match range {
            Some(r) => r.resolve(meta.size)?,
            None => 0..meta.size,
        };
        for _ in 0..100 {
            match next.get_metadata(bucket, key).await {
                Ok(now) if now.etag == meta.etag => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                _ => break,
            }
        }
        let body = next.download_stream(bucket, key, range).await?;
        Ok(ObjectDownload {
            meta,
            range: served,
            body,
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_that_splices_versions_fails_the_overwrite_case() {
    let report = storage::run(
        "splicing",
        factory(|| async {
            let inner = Arc::new(MemoryStorage::new());
            inner
                .create_bucket("conformance")
                .await
                .map_err(|e| e.to_string())?;
            let store: Arc<dyn Storage> = Arc::new(LayeredStorage::new(inner, Arc::new(Splicing)));
            Ok(storage::StorageFixture::new(store, "conformance"))
        }),
        Some("download.with_metadata"),
    )
    .await;
    report.print_table();
    let failed: Vec<&str> = report
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, CaseOutcome::Failed(_)))
        .map(|c| c.case)
        .collect();
    assert_eq!(
        failed,
        ["download.with_metadata_consistent_under_overwrite"],
        "{}",
        report.summary()
    );
}
