//! Shared by the S3 integration tests: the Garage server (or an explicit
//! endpoint), fresh buckets, and a plain HTTP client for presigned URLs.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use truststream_core_storage::{Error, ListOptions, SignedUrlMethod, Storage};
use truststream_storage_s3::testing::Garage;
use truststream_storage_s3::S3Storage;

/// The shared Garage server, or `None` (with a message saying what to
/// install) outside CI when the binary is missing. Under `CI=true` a missing
/// server is a failure.
pub async fn garage() -> Option<Garage> {
    match Garage::shared().await {
        Ok(g) => Some(g),
        Err(e) if truststream_core::in_ci() => {
            panic!("CI=true and no S3 server: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no S3 server ({e}); install garage to run this test");
            None
        }
    }
}

/// A new, empty bucket with a unique name.
pub async fn fresh_bucket(store: &S3Storage) -> Result<String, String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("ts-test-{}", &id[..16]);
    store
        .create_bucket(&name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(name)
}

/// Deletes every object of `bucket`, then the bucket.
pub async fn drop_bucket(store: &dyn Storage, bucket: &str) {
    loop {
        let Ok(page) = store.list(bucket, &ListOptions::new()).await else {
            break;
        };
        if page.objects.is_empty() {
            break;
        }
        for o in page.objects {
            let _ = store.delete(bucket, &o.key).await;
        }
    }
    let _ = store.delete_bucket(bucket).await;
}

/// Performs a request on a presigned URL with a plain HTTP client.
pub async fn fetch(
    http: &reqwest::Client,
    method: SignedUrlMethod,
    url: &str,
    body: Option<Bytes>,
) -> Result<Option<Bytes>, Error> {
    truststream_storage_s3::testing::fetch_presigned(http, method, url, body).await
}

/// The HTTP client for presigned URLs.
pub fn http() -> Arc<reqwest::Client> {
    Arc::new(reqwest::Client::new())
}
