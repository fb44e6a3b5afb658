//! `/storage/v1/signed/...`: signed URLs that storage-fs makes itself, with
//! its `base_url` pointing at the server, answered over real HTTP through
//! `Storage::fetch_signed` with no API key: GET and PUT round trips, and
//! tampered, expired, other-method, path-climbing and oversized requests
//! refused with fixed messages.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_storage::{SignedUrlMethod, Storage, UploadOptions};
use truststream_serve::{ApiKeys, Providers, Running, ServeConfig, Server};
use truststream_storage_fs::{FsStorage, FsStorageConfig};

/// The public URL the server is configured with (what clients would reach
/// it at, behind a proxy); the test talks to the bound address instead.
const PUBLIC: &str = "http://files.test:8080";

struct Env {
    addr: SocketAddr,
    http: reqwest::Client,
    storage: Arc<dyn Storage>,
    dir: tempfile::TempDir,
    _running: Running,
}

impl Env {
    /// `url` (signed under [`PUBLIC`]) at the server's real address.
    fn local(&self, url: &str) -> String {
        let rest = url
            .strip_prefix(PUBLIC)
            .expect("signed under the public URL");
        format!("http://{}{rest}", self.addr)
    }

    async fn sign(&self, method: SignedUrlMethod, key: &str, secs: u64) -> String {
        let url = self
            .storage
            .signed_url("docs", key, method, Duration::from_secs(secs))
            .await
            .unwrap();
        url.url
    }
}

async fn start(max_upload: u64) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let mut auth_cfg =
        truststream_auth_jwt::JwtAuthConfig::with_secret("provider url test secret, 32 bytes+");
    auth_cfg.argon2 = truststream_auth_jwt::Argon2Cost::minimal();
    let auth: Arc<dyn Auth> = Arc::new(
        truststream_auth_jwt::JwtAuth::new(auth_cfg, db.clone())
            .await
            .unwrap(),
    );
    let mut cfg = FsStorageConfig::new(dir.path().join("objects"));
    cfg.buckets = vec!["docs".into()];
    cfg.base_url = Some(format!("{PUBLIC}/storage/v1/signed"));
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::with_config(cfg).await.unwrap());
    let config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        public_url: Some(PUBLIC.into()),
        data_dir: dir.path().join("data").to_string_lossy().into(),
        max_upload_bytes: max_upload,
        ..ServeConfig::default()
    };
    let providers = Providers {
        db,
        auth,
        storage: storage.clone(),
        metrics: None,
    };
    let server = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .unwrap();
    let running = server.spawn();
    Env {
        addr: running.addr,
        http: reqwest::Client::new(),
        storage,
        dir,
        _running: running,
    }
}

/// Status and JSON body of an error answer; the body must not show the
/// provider's reason or the storage root.
async fn refusal(env: &Env, resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let root = env.dir.path().to_string_lossy().to_string();
    for leak in [root.as_str(), "signature mismatch", "signed URL rejected"] {
        assert!(!text.contains(leak), "{status} {text} shows {leak:?}");
    }
    (status, serde_json::from_str(&text).unwrap())
}

/// A request with `target` sent as it is (reqwest would resolve `..`).
async fn raw(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> u16 {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nhost: files.test\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_signed_urls_are_served_without_other_credentials() {
    let env = start(1024 * 1024).await;
    env.storage
        .upload(
            "docs",
            "reports/q1 ü.txt",
            Bytes::from_static(b"quarter one"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();

    // GET, twice (a URL is good until it expires); HEAD answers the same.
    let url = env
        .sign(SignedUrlMethod::Get, "reports/q1 ü.txt", 300)
        .await;
    assert!(
        url.starts_with(&format!("{PUBLIC}/storage/v1/signed/docs/")),
        "{url}"
    );
    for _ in 0..2 {
        let resp = env.http.get(env.local(&url)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/octet-stream");
        assert_eq!(resp.bytes().await.unwrap(), "quarter one");
    }
    let resp = env.http.head(env.local(&url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // PUT stores the body; the object reads back through the provider.
    let put = env.sign(SignedUrlMethod::Put, "uploads/new.bin", 300).await;
    let body = vec![7u8; 100_000];
    let resp = env
        .http
        .put(env.local(&put))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(
        env.storage
            .download("docs", "uploads/new.bin")
            .await
            .unwrap(),
        body
    );

    // A valid URL of a missing object.
    let missing = env
        .sign(SignedUrlMethod::Get, "reports/none.txt", 300)
        .await;
    let resp = env.http.get(env.local(&missing)).send().await.unwrap();
    let (status, json) = refusal(&env, resp).await;
    assert_eq!(status, 404, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_climbing_urls_get_403() {
    let env = start(1024).await;
    for key in ["a.txt", "b.txt"] {
        env.storage
            .upload("docs", key, Bytes::from(key), &UploadOptions::new())
            .await
            .unwrap();
    }
    let url = env.sign(SignedUrlMethod::Get, "a.txt", 300).await;
    let last = url.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let (path, _) = url.split_once('?').unwrap();
    for bad in [
        flipped,
        url.replace("/a.txt", "/b.txt"),
        url.replace("expires=", "expires=1"),
        path.to_string(),
        format!("{url}&x=1"),
    ] {
        let resp = env.http.get(env.local(&bad)).send().await.unwrap();
        let (status, json) = refusal(&env, resp).await;
        assert_eq!(status, 403, "{bad}: {json}");
        assert_eq!(json["error"], "InvalidSignature", "{json}");
    }

    // The other method: a PUT on a GET URL writes nothing.
    let resp = env
        .http
        .put(env.local(&url))
        .body("overwritten")
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(&env, resp).await.0, 403);
    assert_eq!(
        env.storage.download("docs", "a.txt").await.unwrap(),
        "a.txt"
    );
    let put = env.sign(SignedUrlMethod::Put, "c.txt", 300).await;
    let resp = env.http.get(env.local(&put)).send().await.unwrap();
    assert_eq!(refusal(&env, resp).await.0, 403);

    // Paths that climb out of the bucket, sent as they are.
    let local = env.local(&put);
    let target = &local[local.find("/storage/").unwrap()..];
    for climb in ["docs/../c.txt", "docs/%2E%2E/c.txt", "docs/../../../c.txt"] {
        let t = target.replace("docs/c.txt", climb);
        assert_ne!(t, target);
        assert_eq!(raw(env.addr, "PUT", &t, b"escaped").await, 403, "{t}");
        assert_eq!(raw(env.addr, "GET", &t, b"").await, 403, "{t}");
    }
    assert!(!env.dir.path().join("objects").join("c.txt").exists());
    assert!(env.storage.get_metadata("docs", "c.txt").await.is_err());

    // Over serve.max_upload_bytes (1024 here): 413, nothing stored.
    let resp = env
        .http
        .put(env.local(&put))
        .body(vec![1u8; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(&env, resp).await.0, 413);
    assert!(env.storage.get_metadata("docs", "c.txt").await.is_err());

    // Expired: a 1 s URL works, then is refused from the second it
    // expires (wait for that second, no longer).
    let short = env
        .storage
        .signed_url(
            "docs",
            "a.txt",
            SignedUrlMethod::Get,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    let resp = env.http.get(env.local(&short.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let left = (short.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(20)).await;
    let resp = env.http.get(env.local(&short.url)).send().await.unwrap();
    let (status, json) = refusal(&env, resp).await;
    assert_eq!(status, 403, "{json}");

    // Other methods are not served.
    let resp = env.http.delete(env.local(&url)).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(
        env.storage.download("docs", "a.txt").await.unwrap(),
        "a.txt"
    );
}
