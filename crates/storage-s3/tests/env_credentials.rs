//! Credentials, region and endpoint from the standard AWS environment when
//! the configuration leaves them out. One test per binary: it sets the
//! process environment before anything reads it.

#![allow(clippy::unwrap_used)] // test helpers, not library code

mod support;

use bytes::Bytes;
use truststream_core_storage::{Storage, UploadOptions};
use truststream_storage_s3::{S3Storage, S3StorageConfig};

#[tokio::test(flavor = "current_thread")]
async fn credentials_region_and_endpoint_come_from_the_aws_environment() {
    let Some(garage) = support::garage().await else {
        return;
    };
    // Single-threaded runtime, nothing else running yet.
    std::env::set_var("AWS_ACCESS_KEY_ID", &garage.access_key_id);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &garage.secret_access_key);
    std::env::set_var("AWS_REGION", truststream_storage_s3::testing::REGION);
    std::env::set_var("AWS_ENDPOINT_URL", garage.endpoint());
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent");
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    let store = S3Storage::connect(S3StorageConfig {
        probe_bucket: Some(truststream_storage_s3::testing::PROBE_BUCKET.into()),
        ..S3StorageConfig::default()
    })
    .await
    .unwrap();
    let bucket = support::fresh_bucket(&store).await.unwrap();
    store
        .upload(
            &bucket,
            "env.txt",
            Bytes::from("from env"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.download(&bucket, "env.txt").await.unwrap(),
        Bytes::from("from env")
    );
    support::drop_bucket(&store, &bucket).await;
}
