//! The whole storage conformance suite on the filesystem provider, with a
//! fresh root directory per case.

use std::sync::Arc;

use truststream_conformance::{factory, storage};
use truststream_core_storage::Storage;
use truststream_storage_fs::{FsStorage, FsStorageConfig};

const BUCKET: &str = "conformance";

fn fs_factory(fsync: bool, xattr_metadata: bool) -> storage::StorageFactory {
    factory(move || async move {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cfg = FsStorageConfig::new(dir.path());
        cfg.fsync = fsync;
        cfg.xattr_metadata = xattr_metadata;
        cfg.buckets = vec![BUCKET.into()];
        let store = Arc::new(
            FsStorage::with_config(cfg)
                .await
                .map_err(|e| e.to_string())?,
        );
        // The directory lives as long as the fixture's store does.
        let keep = Arc::new(dir);
        let client = store.clone();
        Ok(
            storage::StorageFixture::new(store as Arc<dyn Storage>, BUCKET).with_url_client(
                move |method, url, body| {
                    let client = client.clone();
                    let _keep = keep.clone();
                    async move { client.fetch_signed(method, &url, body).await }
                },
            ),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_suite_passes_with_fsync() {
    let report = storage::run("fs", fs_factory(true, true), None).await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(report.skipped(), 0, "skipped: {:?}", report.skipped_cases());
    assert!(report.passed() >= 37, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_suite_passes_without_fsync() {
    let report = storage::run("fs (fsync off)", fs_factory(false, true), None).await;
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(report.skipped(), 0, "skipped: {:?}", report.skipped_cases());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_suite_passes_with_sidecar_metadata() {
    let report = storage::run("fs (sidecar metadata)", fs_factory(true, false), None).await;
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(report.skipped(), 0, "skipped: {:?}", report.skipped_cases());
}
