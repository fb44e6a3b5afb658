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
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
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

/// Performs a request on a presigned URL with a plain HTTP client:
/// `Some(body)` of a GET, `None` after a PUT. 401/403 are
/// `PermissionDenied`, 404 `NotFound`.
pub async fn fetch(
    http: &reqwest::Client,
    method: SignedUrlMethod,
    url: &str,
    body: Option<Bytes>,
) -> Result<Option<Bytes>, Error> {
    let req = match method {
        SignedUrlMethod::Get => http.get(url),
        SignedUrlMethod::Put => http.put(url).body(body.unwrap_or_default()),
    };
    let resp = req
        .send()
        .await
        .map_err(|e| Error::unavailable("request failed").with_source(e))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Error::unavailable("body failed").with_source(e))?;
    match status {
        200..=299 => Ok(match method {
            SignedUrlMethod::Get => Some(bytes),
            SignedUrlMethod::Put => None,
        }),
        // Garage answers an expired presigned URL with 400 "Date is too
        // old" where Amazon S3 answers 403; both are a refusal.
        400 if is_expiry(&bytes) => Err(Error::permission_denied(format!(
            "HTTP {status} (expired): {}",
            String::from_utf8_lossy(&bytes)
        ))),
        400 => Err(Error::invalid_input(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ))),
        401 | 403 => Err(Error::permission_denied(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ))),
        404 => Err(Error::not_found(format!("HTTP {status}"))),
        _ => Err(Error::unavailable(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ))),
    }
}

/// Whether an S3 error body says the request's date or expiry is past.
fn is_expiry(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.contains("date is too old") || text.contains("request has expired")
}

/// The HTTP client for presigned URLs.
pub fn http() -> Arc<reqwest::Client> {
    Arc::new(reqwest::Client::new())
}
