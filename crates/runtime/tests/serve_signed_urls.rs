//! `truststream serve` answers the signed URLs its own `fs` storage makes:
//! the storage section sets no `base_url`, serve gives it
//! `<public_url>/storage/v1/signed`, and a URL signed through the runtime's
//! `Arc<dyn Storage>` is fetched and uploaded to over HTTP with no API key;
//! a tampered one is 403.
#![cfg(all(feature = "serve", feature = "storage-fs", feature = "db-sqlite"))]
#![allow(clippy::unwrap_used)] // test code

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use truststream_core_storage::{SignedUrlMethod, UploadOptions};
use truststream_runtime::{serve, ConfigSources, Registries};

/// What clients would reach the server at; the test talks to the bound
/// address.
const PUBLIC: &str = "http://files.test:8080";

fn lit(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_the_signed_urls_of_its_fs_storage() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {db}\n\
         [default.storage]\ntype = \"fs\"\nroot = {files}\nbuckets = [\"docs\"]\n\
         [default.serve]\ndata_dir = {data}\npublic_url = \"{PUBLIC}\"\n",
        db = lit(&dir.path().join("app.db").display().to_string()),
        files = lit(&dir.path().join("files").display().to_string()),
        data = lit(&dir.path().join("data").display().to_string()),
    );
    let config = ConfigSources::new().toml_str(toml).load().unwrap();
    let registries = Arc::new(Registries::compiled_in());
    let prepared = serve::prepare(&config, Some("127.0.0.1:0")).unwrap();
    let (server, services) = serve::bind(&registries, prepared).await.unwrap();
    let running = server.spawn();
    let local = |url: &str| {
        let rest = url
            .strip_prefix(&format!("{PUBLIC}/storage/v1/signed/"))
            .unwrap_or_else(|| panic!("{url} is not under serve's /storage/v1/signed"));
        format!("http://{}/storage/v1/signed/{rest}", running.addr)
    };
    let storage = services.storage.clone();
    storage
        .upload(
            "docs",
            "a b.txt",
            Bytes::from_static(b"hello"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    let http = reqwest::Client::new();

    let get = storage
        .signed_url(
            "docs",
            "a b.txt",
            SignedUrlMethod::Get,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let resp = http.get(local(&get.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), "hello");

    let put = storage
        .signed_url(
            "docs",
            "up.bin",
            SignedUrlMethod::Put,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let resp = http
        .put(local(&put.url))
        .body("uploaded")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        storage.download("docs", "up.bin").await.unwrap(),
        "uploaded"
    );

    let tampered = get.url.replace("a%20b.txt", "up.bin");
    assert_ne!(tampered, get.url);
    let resp = http.get(local(&tampered)).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    running.stop().await.unwrap();
}
