//! `/storage/v1/signed/...`: signed URLs that storage-fs makes itself, with
//! its `base_url` pointing at the server, answered over real HTTP with no
//! API key (checked by `Storage::verify_signed`, then served like
//! `/object/...`): GET (typed, ranged), HEAD (no read of the object) and
//! PUT round trips, a PUT body that fails mid-way, and tampered, expired,
//! other-method, path-climbing and oversized requests refused with fixed
//! messages.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common {
    pub mod calls;
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::calls::Calls;
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
    /// The storage calls the server made.
    calls: Arc<Calls>,
    /// The server's routes (requests without a socket).
    router: axum::Router,
    /// The server's service-role key.
    service: String,
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
    let calls = Arc::new(Calls::default());
    let served = truststream_layer::around_storage(storage.clone(), calls.clone());
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
        storage: served,
        metrics: None,
    };
    let server = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .unwrap();
    let router = server.router();
    let running = server.spawn();
    Env {
        addr: running.addr,
        http: reqwest::Client::new(),
        storage,
        calls,
        router,
        service: running.keys.service_role().to_string(),
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
            &UploadOptions::new().content_type("text/plain; charset=utf-8"),
        )
        .await
        .unwrap();

    // GET, twice (a URL is good until it expires): the object's content
    // type, kept out of shared caches; the check, then one read of the
    // object with its metadata.
    let url = env
        .sign(SignedUrlMethod::Get, "reports/q1 ü.txt", 300)
        .await;
    assert!(
        url.starts_with(&format!("{PUBLIC}/storage/v1/signed/docs/")),
        "{url}"
    );
    env.calls.take();
    for _ in 0..2 {
        let resp = env.http.get(env.local(&url)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(resp.headers()["cache-control"], "private, no-store");
        assert_eq!(resp.bytes().await.unwrap(), "quarter one");
        assert_eq!(
            env.calls.take(),
            ["verify_signed", "download_with_metadata"]
        );
    }
    // HEAD: the same headers, and the object is not read.
    let resp = env.http.head(env.local(&url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(resp.headers()["content-length"], "11");
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_eq!(env.calls.take(), ["verify_signed", "get_metadata"]);
    // A range.
    let resp = env
        .http
        .get(env.local(&url))
        .header("range", "bytes=8-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), "one");

    // PUT stores the body with its content type; the object reads back
    // through the provider.
    let put = env.sign(SignedUrlMethod::Put, "uploads/new.bin", 300).await;
    let body = vec![7u8; 100_000];
    let resp = env
        .http
        .put(env.local(&put))
        .header("content-type", "image/png")
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
    let meta = env
        .storage
        .get_metadata("docs", "uploads/new.bin")
        .await
        .unwrap();
    assert_eq!(meta.content_type.as_deref(), Some("image/png"));
    // Again: a PUT URL replaces.
    let resp = env
        .http
        .put(env.local(&put))
        .body("second")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(
        env.storage
            .download("docs", "uploads/new.bin")
            .await
            .unwrap(),
        "second"
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

/// A PUT body that fails part-way (the client went away, the connection
/// broke) stores nothing and is a 400, not a 413: only a body over the
/// limit is too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_body_that_fails_midway_is_400_and_stores_nothing() {
    use tower_service::Service as _;
    let env = start(1024 * 1024).await;
    let put = env.sign(SignedUrlMethod::Put, "cut.bin", 300).await;
    let target = put.strip_prefix(PUBLIC).unwrap().to_string();
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from(vec![1u8; 1000])),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )),
    ];
    let request = axum::http::Request::put(target.as_str())
        .header("content-type", "application/octet-stream")
        .body(axum::body::Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let resp = env.router.clone().call(request).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 400, "{json}");
    assert!(!json.to_string().contains("reset by peer"), "{json}");
    assert!(env.storage.get_metadata("docs", "cut.bin").await.is_err());
}

/// A provider-signed PUT keeps the bucket's limits: a type the bucket does
/// not allow is 415, a body over its `file_size_limit` 413; nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_put_keeps_the_buckets_limits() {
    let env = start(1024 * 1024).await;
    let resp = env
        .http
        .post(format!("http://{}/storage/v1/bucket", env.addr))
        .header("apikey", &env.service)
        .bearer_auth(&env.service)
        .json(&serde_json::json!({
            "id": "images",
            "allowed_mime_types": ["image/*"],
            "file_size_limit": 1000,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let sign = |key: &'static str| {
        let storage = env.storage.clone();
        async move {
            storage
                .signed_url("images", key, SignedUrlMethod::Put, Duration::from_secs(60))
                .await
                .unwrap()
                .url
        }
    };
    for (key, ct, len, status) in [
        ("a.txt", "text/plain", 10, 415),
        ("b.png", "image/png", 2000, 413),
        ("c.png", "image/png", 10, 200),
    ] {
        let url = sign(key).await;
        let resp = env
            .http
            .put(env.local(&url))
            .header("content-type", ct)
            .body(vec![0u8; len])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{key}");
        assert_eq!(
            env.storage.get_metadata("images", key).await.is_ok(),
            status == 200,
            "{key}"
        );
    }
}
