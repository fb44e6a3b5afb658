//! `/storage/v1` over storage-s3 on a Garage server: a client that hangs
//! up mid-upload leaves no object and no pending multipart upload, for a
//! body below the provider's multipart threshold and for one above it
//! (parts already sent). The same over storage-memory and storage-fs is
//! `streaming_and_disconnects` in `storage.rs`.
//!
//! Needs the `garage` binary (`cargo install garage --version 2.5.0
//! --locked`): without it the test fails under `CI=true` and is skipped
//! with a message otherwise.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_db::Database;
use truststream_core_storage::{ListOptions, Storage, StorageExt};
use truststream_serve::{ApiKeys, Providers, ServeConfig, Server};
use truststream_storage_s3::testing::Garage;

/// The shared Garage server, or `None` outside CI when it cannot start.
async fn garage() -> Option<Garage> {
    match Garage::shared().await {
        Ok(g) => Some(g),
        Err(e) if truststream_core::in_ci() => panic!("CI=true and no S3 server: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: no S3 server ({e}); install garage to run this test");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_upload_leaves_nothing_on_s3() {
    let Some(garage) = garage().await else {
        return;
    };
    let s3 = Arc::new(garage.storage().await.unwrap());
    let storage: Arc<dyn Storage> = s3.clone();
    let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let mut cfg = JwtAuthConfig::with_secret("storage s3 test secret, at least 32 bytes");
    cfg.argon2 = Argon2Cost::minimal();
    let auth = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        data_dir: dir.path().to_string_lossy().into(),
        max_upload_bytes: 64 << 20,
        ..ServeConfig::default()
    };
    let providers = Providers {
        db,
        auth,
        storage: storage.clone(),
        metrics: None,
    };
    let running = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .unwrap()
        .spawn();
    let service = running.keys.service_role().to_string();
    // Bucket names are global on the shared server: a fresh one per run.
    let bucket = format!("serve-cut-{:016x}", rand::random::<u64>());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/storage/v1/bucket", running.url))
        .header("apikey", &service)
        .bearer_auth(&service)
        .json(&json!({ "id": bucket }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Half of 1 MB (one PUT once the body is whole), and 12 of 24 MiB (a
    // multipart upload with a part sent when the client goes).
    for (key, declared, sent) in [
        ("small-cut.bin", 1_000_000usize, 500_000usize),
        ("large-cut.bin", 24 << 20, 12 << 20),
    ] {
        let mut raw = format!(
            "POST /storage/v1/object/{bucket}/{key} HTTP/1.1\r\nHost: x\r\napikey: {service}\r\n\
             Authorization: Bearer {service}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {declared}\r\n\r\n"
        )
        .into_bytes();
        raw.extend(std::iter::repeat_n(b'z', sent));
        let mut s = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        s.write_all(&raw).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(s);
    }
    // The aborted writes finish failing on the server's side.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pending = s3
            .sdk_client()
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        if pending.uploads().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "multipart upload not aborted: {:?}",
            pending.uploads()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = storage.list(&bucket, &ListOptions::new()).await.unwrap();
    let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert!(!keys.iter().any(|k| k.contains("cut")), "left: {keys:?}");
    for key in ["small-cut.bin", "large-cut.bin"] {
        assert!(!storage.exists(&bucket, key).await.unwrap(), "{key}");
    }

    // The server still takes uploads.
    let r = http
        .post(format!("{}/storage/v1/object/{bucket}/ok.bin", running.url))
        .header("apikey", &service)
        .bearer_auth(&service)
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    for o in storage
        .list(&bucket, &ListOptions::new())
        .await
        .unwrap()
        .objects
    {
        storage.delete(&bucket, &o.key).await.unwrap();
    }
    storage.delete_bucket(&bucket).await.unwrap();
}
