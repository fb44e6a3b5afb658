//! A read-only build (`BuildOptions::read_only`, `truststream health`)
//! creates and removes nothing under the root.

use truststream_core::{BuildOptions, HealthStatus};
use truststream_core_storage::{ErrorKind, Storage};
use truststream_storage_fs::{FsStorage, FsStorageConfig};

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("test setup")
        .map(|e| {
            e.expect("test setup")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_build_creates_no_root_and_names_it() {
    let dir = tempfile::tempdir().expect("test setup");
    let root = dir.path().join("storage");
    let e = FsStorage::with_options(FsStorageConfig::new(&root), BuildOptions::read_only())
        .await
        .expect_err("a missing root is an error in a read-only build");
    assert!(!root.exists(), "the root was created");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let message = e.to_string();
    assert!(message.contains(&root.display().to_string()), "{message}");
    assert!(message.contains("does not exist yet"), "{message}");
    assert!(
        message.contains("created when the application starts"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_build_on_a_fresh_root_writes_nothing() {
    let dir = tempfile::tempdir().expect("test setup");
    let mut config = FsStorageConfig::new(dir.path());
    // Buckets a normal open would create.
    config.buckets = vec!["avatars".into()];
    let store = FsStorage::with_options(config, BuildOptions::read_only())
        .await
        .expect("an existing root opens read-only");
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    let e = store
        .create_bucket("photos")
        .await
        .expect_err("a read-only store refuses writes");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_build_lists_the_buckets_of_a_used_root() {
    let dir = tempfile::tempdir().expect("test setup");
    let mut config = FsStorageConfig::new(dir.path());
    config.buckets = vec!["avatars".into()];
    let writer = FsStorage::with_config(config.clone()).await.expect("open");
    drop(writer);
    let before = entries(dir.path());
    let store = FsStorage::with_options(config, BuildOptions::read_only())
        .await
        .expect("open read-only");
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Healthy, "{health:?}");
    assert!(
        health.message.unwrap_or_default().contains("1 bucket(s)"),
        "the avatars bucket is listed"
    );
    assert_eq!(entries(dir.path()), before);
}
