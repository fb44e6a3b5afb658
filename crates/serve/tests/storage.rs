//! `/storage/v1` over storage-memory and storage-fs: every route as
//! storage-js calls it, bucket policies (deny by default, owner folders
//! between two signed-up users), size and MIME limits enforced while
//! streaming, path traversal, forged and expired signed tokens, a client
//! that disconnects mid-upload, and a multi-MiB streamed round trip.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common {
    pub mod calls;
}

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::calls::Calls;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_auth::{Auth, SignUp};
use truststream_core_db::Database;
use truststream_core_storage::Storage;
use truststream_db_memory::MemoryDatabase;
use truststream_serve::{
    ApiKeys, BucketPolicy, Providers, Running, ServeConfig, Server, TableAction,
};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Fs,
}

struct Env {
    base: String,
    addr: SocketAddr,
    http: reqwest::Client,
    anon: String,
    service: String,
    auth: Arc<JwtAuth>,
    storage: Arc<dyn Storage>,
    dir: tempfile::TempDir,
    /// The server's routes, for mounting them a second time
    /// ([`Server::router`]).
    router: axum::Router,
    _running: Running,
}

/// Who sends a request.
#[derive(Clone, Copy)]
enum Who<'a> {
    Service,
    Anon,
    User(&'a str),
    NoKey,
}

async fn start(kind: Kind, buckets: BTreeMap<String, BucketPolicy>, max_upload: u64) -> Env {
    start_wrapped(kind, buckets, max_upload, |s| s).await
}

/// Like [`start`], the server's storage being `wrap(provider)`.
async fn start_wrapped(
    kind: Kind,
    buckets: BTreeMap<String, BucketPolicy>,
    max_upload: u64,
    wrap: impl FnOnce(Arc<dyn Storage>) -> Arc<dyn Storage>,
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let mut cfg = JwtAuthConfig::with_secret("storage test secret, at least 32 bytes long");
    cfg.argon2 = Argon2Cost::minimal();
    let auth = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
    let storage: Arc<dyn Storage> = match kind {
        Kind::Memory => Arc::new(truststream_storage_memory::MemoryStorage::new()),
        Kind::Fs => Arc::new(
            truststream_storage_fs::FsStorage::open(dir.path().join("objects"))
                .await
                .unwrap(),
        ),
    };
    let storage = wrap(storage);
    let config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        data_dir: dir.path().join("data").to_string_lossy().into(),
        buckets,
        max_upload_bytes: max_upload,
        ..ServeConfig::default()
    };
    let providers = Providers {
        db,
        auth: auth.clone(),
        storage: storage.clone(),
        metrics: None,
    };
    let server = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .unwrap();
    let router = server.router();
    let running = server.spawn();
    Env {
        base: format!("{}/storage/v1", running.url),
        addr: running.addr,
        http: reqwest::Client::new(),
        anon: running.keys.anon().to_string(),
        service: running.keys.service_role().to_string(),
        auth,
        storage,
        dir,
        router,
        _running: running,
    }
}

fn policy(anon: &[TableAction], authenticated: &[TableAction], owner_folder: bool) -> BucketPolicy {
    BucketPolicy {
        anon: anon.to_vec(),
        authenticated: authenticated.to_vec(),
        owner_folder,
    }
}

const ALL: [TableAction; 4] = TableAction::ALL;

impl Env {
    fn req(&self, who: Who<'_>, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match who {
            Who::Service => r.header("apikey", &self.service).bearer_auth(&self.service),
            Who::Anon => r.header("apikey", &self.anon).bearer_auth(&self.anon),
            Who::User(token) => r.header("apikey", &self.anon).bearer_auth(token),
            Who::NoKey => r,
        }
    }

    async fn create_bucket(&self, body: Value) {
        let r = self
            .req(Who::Service, Method::POST, "/bucket")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    async fn upload(
        &self,
        who: Who<'_>,
        bucket_key: &str,
        body: impl Into<reqwest::Body>,
        ct: &str,
    ) -> Response {
        self.req(who, Method::POST, &format!("/object/{bucket_key}"))
            .header("content-type", ct)
            .header("cache-control", "max-age=3600")
            .header("x-upsert", "false")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// The service role's upload of `body` as `application/octet-stream`.
    async fn upload_bin(&self, bucket_key: &str, body: Vec<u8>) -> Response {
        self.upload(Who::Service, bucket_key, body, "application/octet-stream")
            .await
    }

    /// A `GET` of `path` (under `/storage/v1`).
    async fn get(&self, who: Who<'_>, path: &str) -> Response {
        self.req(who, Method::GET, path).send().await.unwrap()
    }

    async fn sign_up(&self, email: &str) -> (String, String) {
        let s = self
            .auth
            .sign_up(SignUp::new(email, "correct horse battery staple 42"))
            .await
            .unwrap();
        (s.user.id.clone(), s.access_token.expose().to_string())
    }

    /// Checks an error answer: the status, Supabase's shape with the status
    /// code as a string, and nothing of the provider's internals.
    async fn expect_err(&self, r: Response, status: u16) -> Value {
        let got = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(got, status, "body: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert_eq!(v["statusCode"], json!(status.to_string()), "{v}");
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
        let dir = self.dir.path().to_string_lossy().to_string();
        assert!(!text.contains(&dir), "leaks a file path: {text}");
        v
    }

    /// A raw HTTP/1.1 request (paths reqwest would normalize); returns the
    /// status and the body.
    async fn raw(&self, request: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(super::Kind::Memory).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fs() {
                super::$name(super::Kind::Fs).await
            }
        }
    };
}

// ----------------------------------------------------------------- buckets

async fn buckets(kind: Kind) {
    let env = start(kind, BTreeMap::new(), 50 << 20).await;
    // No key, a wrong key, the anon key.
    let r = env
        .req(Who::NoKey, Method::GET, "/bucket")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 401).await;
    let r = env
        .http
        .get(format!("{}/bucket", env.base))
        .header("apikey", "nope")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 401).await;
    let r = env
        .req(Who::Anon, Method::POST, "/bucket")
        .json(&json!({"id": "avatars"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;

    // storage-js's createBucket body.
    let r = env
        .req(Who::Service, Method::POST, "/bucket")
        .json(&json!({"id": "avatars", "name": "avatars", "public": true,
                      "file_size_limit": "1MB", "allowed_mime_types": ["image/*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"name": "avatars"}));
    let r = env
        .req(Who::Service, Method::POST, "/bucket")
        .json(&json!({"name": "avatars"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 409).await;
    let r = env
        .req(Who::Service, Method::POST, "/bucket")
        .json(&json!({"id": "Bad_Name"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 400).await;
    env.create_bucket(json!({"name": "docs"})).await;

    let b: Value = env
        .req(Who::Service, Method::GET, "/bucket/avatars")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["id"], "avatars");
    assert_eq!(b["name"], "avatars");
    assert_eq!(b["public"], true);
    assert_eq!(b["file_size_limit"], 1024 * 1024);
    assert_eq!(b["allowed_mime_types"], json!(["image/*"]));
    for k in ["owner", "created_at", "updated_at"] {
        assert!(b.get(k).is_some(), "{k} missing: {b}");
    }
    let list: Vec<Value> = env
        .req(Who::Service, Method::GET, "/bucket")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["avatars", "docs"]);
    // The anon key sees the public bucket only.
    let list: Vec<Value> = env
        .req(Who::Anon, Method::GET, "/bucket")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let r = env
        .req(Who::Anon, Method::GET, "/bucket/docs")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 404).await;
    let r = env
        .req(Who::Service, Method::GET, "/bucket/nope")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 404).await;
    // Update, empty and delete of a missing bucket are 404 too.
    for (method, path) in [
        (Method::PUT, "/bucket/nope"),
        (Method::POST, "/bucket/nope/empty"),
        (Method::DELETE, "/bucket/nope"),
    ] {
        let r = env
            .req(Who::Service, method, path)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        env.expect_err(r, 404).await;
    }

    // Update (service role only); the settings survive.
    let r = env
        .req(Who::Anon, Method::PUT, "/bucket/docs")
        .json(&json!({"public": true}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;
    let r = env
        .req(Who::Service, Method::PUT, "/bucket/docs")
        .json(&json!({"id": "docs", "name": "docs", "public": true, "file_size_limit": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Successfully updated"
    );
    let b: Value = env
        .req(Who::Service, Method::GET, "/bucket/docs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (b["public"].clone(), b["file_size_limit"].clone()),
        (json!(true), json!(100))
    );

    // Delete: not while it holds objects; empty, then delete.
    let r = env
        .upload(Who::Service, "docs/a.txt", "hello", "text/plain")
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .req(Who::Service, Method::DELETE, "/bucket/docs")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 409).await;
    let r = env
        .req(Who::Anon, Method::POST, "/bucket/docs/empty")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;
    let r = env
        .req(Who::Service, Method::POST, "/bucket/docs/empty")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Successfully emptied"
    );
    // Emptying keeps the settings.
    let b: Value = env
        .req(Who::Service, Method::GET, "/bucket/docs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["file_size_limit"], 100);
    let r = env
        .req(Who::Anon, Method::DELETE, "/bucket/docs")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;
    let r = env
        .req(Who::Service, Method::DELETE, "/bucket/docs")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Successfully deleted"
    );
    let r = env
        .req(Who::Service, Method::GET, "/bucket/docs")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 404).await;
    let names: Vec<String> = env
        .storage
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["avatars"]);
}
both!(buckets);

// -------------------------------------------------- upload and download

async fn objects(kind: Kind) {
    let env = start(kind, BTreeMap::new(), 50 << 20).await;
    env.create_bucket(json!({"id": "docs"})).await;
    let meta = base64::engine::general_purpose::STANDARD.encode(r#"{"owner":"me","n":1}"#);
    let r = env
        .req(
            Who::Service,
            Method::POST,
            "/object/docs/folder/hello%20world.txt",
        )
        .header("content-type", "text/plain;charset=UTF-8")
        .header("cache-control", "max-age=60")
        .header("x-upsert", "false")
        .header("x-metadata", meta)
        .body("hello, world")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up: Value = r.json().await.unwrap();
    assert_eq!(up["Key"], "docs/folder/hello world.txt");
    assert_eq!(up["fullPath"], "docs/folder/hello world.txt");
    assert_eq!(up["path"], "folder/hello world.txt");
    assert!(
        up["Id"].as_str().unwrap().len() == 36 && up["Id"] == up["id"],
        "{up}"
    );

    // Create again: 409; with x-upsert or PUT: replaced.
    let r = env
        .upload(
            Who::Service,
            "docs/folder/hello%20world.txt",
            "x",
            "text/plain",
        )
        .await;
    let e = env.expect_err(r, 409).await;
    assert_eq!(e["message"], "The resource already exists");
    let r = env
        .req(
            Who::Service,
            Method::POST,
            "/object/docs/folder/hello%20world.txt",
        )
        .header("x-upsert", "true")
        .header("content-type", "text/plain")
        .body("hello, again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["Id"], up["Id"], "an upsert keeps the object's id");
    let r = env
        .req(
            Who::Service,
            Method::PUT,
            "/object/docs/folder/hello%20world.txt",
        )
        .header("content-type", "text/plain")
        .header("cache-control", "max-age=60")
        .body("hello, world!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Download, with headers.
    for prefix in ["/object/docs", "/object/authenticated/docs"] {
        let r = env
            .req(
                Who::Service,
                Method::GET,
                &format!("{prefix}/folder/hello%20world.txt"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["cache-control"], "max-age=60");
        assert!(h["etag"].to_str().unwrap().starts_with('"'));
        assert!(h["last-modified"].to_str().unwrap().ends_with("GMT"));
        assert_eq!(h["content-length"], "13");
        assert_eq!(r.text().await.unwrap(), "hello, world!");
    }
    let r = env
        .req(
            Who::Service,
            Method::HEAD,
            "/object/docs/folder/hello%20world.txt",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "13");
    let etag = r.headers()["etag"].clone();
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    let r = env
        .req(
            Who::Service,
            Method::GET,
            "/object/docs/folder/hello%20world.txt",
        )
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // Ranges.
    let r = env
        .req(
            Who::Service,
            Method::GET,
            "/object/docs/folder/hello%20world.txt",
        )
        .header("range", "bytes=7-11")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 7-11/13");
    assert_eq!(r.text().await.unwrap(), "world");
    let r = env
        .req(
            Who::Service,
            Method::GET,
            "/object/docs/folder/hello%20world.txt",
        )
        .header("range", "bytes=-6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "world!");
    let r = env
        .req(
            Who::Service,
            Method::GET,
            "/object/docs/folder/hello%20world.txt",
        )
        .header("range", "bytes=50-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-range"], "bytes */13");
    env.expect_err(r, 416).await;
    // ?download
    let r = env
        .req(
            Who::Service,
            Method::GET,
            "/object/docs/folder/hello%20world.txt?download=report%20final.txt",
        )
        .send()
        .await
        .unwrap();
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cd.starts_with("attachment; filename=\"report final.txt\""),
        "{cd}"
    );
    let r = env
        .req(
            Who::Service,
            Method::GET,
            "/object/docs/folder/hello%20world.txt?download",
        )
        .send()
        .await
        .unwrap();
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cd.contains("hello world.txt"), "{cd}");

    // Info (storage-js camel-cases it).
    let info: Value = env
        .req(
            Who::Service,
            Method::GET,
            "/object/info/docs/folder/hello%20world.txt",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["name"], "folder/hello world.txt");
    assert_eq!(info["bucket_id"], "docs");
    assert_eq!(info["size"], 13);
    assert_eq!(info["content_type"], "text/plain");
    assert_eq!(info["id"], up["Id"]);
    // The PUT carried no x-metadata: the user metadata went with it.
    assert_eq!(info["metadata"], json!({}));
    let r = env
        .req(Who::Service, Method::GET, "/object/info/docs/missing.txt")
        .send()
        .await
        .unwrap();
    let e = env.expect_err(r, 404).await;
    assert_eq!(e["error"], "not_found");
    let r = env
        .req(Who::Service, Method::GET, "/object/docs/missing.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(env.expect_err(r, 404).await["message"], "Object not found");
    let r = env
        .upload(Who::Service, "nobucket/a.txt", "x", "text/plain")
        .await;
    env.expect_err(r, 404).await;

    // x-metadata round trip.
    let meta = base64::engine::general_purpose::STANDARD.encode(r#"{"owner":"me","n":1}"#);
    let r = env
        .req(Who::Service, Method::POST, "/object/docs/m.txt")
        .header("content-type", "text/plain")
        .header("x-metadata", meta)
        .body("m")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = env
        .req(Who::Service, Method::GET, "/object/info/docs/m.txt")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["metadata"], json!({"owner": "me", "n": 1}));
    let r = env
        .req(Who::Service, Method::POST, "/object/docs/bad-meta.txt")
        .header("x-metadata", "%%%")
        .body("m")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 400).await;

    // Multipart, as storage-js sends a Blob: cacheControl and metadata
    // fields, then the file part named "" with its own content type.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let (ct, body) = multipart_body("3600", Some(r#"{"a":"b"}"#), "image/png", &content);
    let r = env
        .req(Who::Service, Method::POST, "/object/docs/pics/cat.png")
        .header("content-type", ct)
        .header("x-upsert", "false")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = env
        .req(Who::Service, Method::GET, "/object/docs/pics/cat.png")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["cache-control"], "max-age=3600");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &content[..]);
    let info: Value = env
        .req(Who::Service, Method::GET, "/object/info/docs/pics/cat.png")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["metadata"], json!({"a": "b"}));

    // Single delete.
    let r = env
        .req(Who::Service, Method::DELETE, "/object/docs/m.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .req(Who::Service, Method::DELETE, "/object/docs/m.txt")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 404).await;
}
both!(objects);

fn multipart_body(
    cache: &str,
    metadata: Option<&str>,
    file_ct: &str,
    content: &[u8],
) -> (String, Vec<u8>) {
    let boundary = "----formdata-undici-0123456789";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n{cache}\r\n")
            .as_bytes(),
    );
    if let Some(m) = metadata {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{m}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"\"; filename=\"blob\"\r\nContent-Type: {file_ct}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

// ------------------------------------------- list, remove, move, copy

async fn list_remove_move_copy(kind: Kind) {
    let env = start(kind, BTreeMap::new(), 50 << 20).await;
    env.create_bucket(json!({"id": "docs"})).await;
    for k in ["a/b.txt", "a/c/d.txt", "e.txt", "f.txt"] {
        let r = env
            .upload(
                Who::Service,
                &format!("docs/{k}"),
                k.to_string(),
                "text/plain",
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let list = |body: Value| {
        let env = &env;
        async move {
            let r = env
                .req(Who::Service, Method::POST, "/object/list/docs")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Vec<Value>>().await.unwrap()
        }
    };
    // storage-js's default body.
    let root = list(json!({"prefix": "", "limit": 100, "offset": 0,
                           "sortBy": {"column": "name", "order": "asc"}}))
    .await;
    let names: Vec<&str> = root.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["a", "e.txt", "f.txt"],
        "the settings object is never listed"
    );
    assert_eq!(
        root[0],
        json!({"name": "a", "id": null, "updated_at": null, "created_at": null,
               "last_accessed_at": null, "metadata": null})
    );
    let f = &root[1];
    assert!(f["id"].is_string());
    for k in ["updated_at", "created_at", "last_accessed_at"] {
        assert!(f[k].is_string(), "{k}: {f}");
    }
    let m = &f["metadata"];
    assert_eq!(m["size"], 5);
    assert_eq!(m["mimetype"], "text/plain");
    assert_eq!(m["contentLength"], 5);
    assert_eq!(m["httpStatusCode"], 200);
    assert_eq!(m["cacheControl"], "max-age=3600");
    assert!(m["eTag"].is_string() && m["lastModified"].is_string());

    let sub = list(json!({"prefix": "a"})).await;
    let names: Vec<&str> = sub.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b.txt", "c"]);
    let desc = list(json!({"prefix": "", "sortBy": {"column": "name", "order": "desc"}, "limit": 2, "offset": 0})).await;
    let names: Vec<&str> = desc.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["f.txt", "e.txt"]);
    let paged = list(json!({"prefix": "", "limit": 1, "offset": 1})).await;
    assert_eq!(paged[0]["name"], "e.txt");
    let found = list(json!({"prefix": "", "search": "E."})).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["name"], "e.txt");
    let r = env
        .req(Who::Service, Method::POST, "/object/list/docs")
        .json(&json!({"prefix": "../"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 400).await;

    // Copy: {Key}; onto an existing object only with x-upsert.
    let r = env
        .req(Who::Service, Method::POST, "/object/copy")
        .json(&json!({"bucketId": "docs", "sourceKey": "e.txt", "destinationKey": "copies/e.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["Key"], "docs/copies/e.txt");
    let r = env
        .req(Who::Service, Method::POST, "/object/copy")
        .json(&json!({"bucketId": "docs", "sourceKey": "e.txt", "destinationKey": "f.txt"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 409).await;
    let r = env
        .req(Who::Service, Method::POST, "/object/copy")
        .json(&json!({"bucketId": "docs", "sourceKey": "nope.txt", "destinationKey": "x.txt"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 404).await;
    // Across buckets.
    env.create_bucket(json!({"id": "other"})).await;
    let r = env
        .req(Who::Service, Method::POST, "/object/copy")
        .json(&json!({"bucketId": "docs", "sourceKey": "e.txt", "destinationKey": "e.txt", "destinationBucket": "other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["Key"], "other/e.txt");

    // Move.
    let r = env
        .req(Who::Service, Method::POST, "/object/move")
        .json(&json!({"bucketId": "docs", "sourceKey": "f.txt", "destinationKey": "moved/f.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Successfully moved"})
    );
    let r = env
        .req(Who::Service, Method::GET, "/object/docs/f.txt")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 404).await;
    let r = env
        .req(Who::Service, Method::GET, "/object/docs/moved/f.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "f.txt");
    let r = env
        .req(Who::Service, Method::POST, "/object/move")
        .json(&json!({"bucketId": "docs", "sourceKey": "e.txt", "destinationKey": "../e.txt"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 400).await;

    // Remove: the removed objects; missing and reserved keys are skipped.
    let r = env
        .req(Who::Service, Method::DELETE, "/object/docs")
        .json(&json!({"prefixes": ["e.txt", "copies/e.txt", "missing.txt", ".truststream-bucket.json"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let removed: Vec<Value> = r.json().await.unwrap();
    let names: Vec<&str> = removed
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["e.txt", "copies/e.txt"]);
    assert_eq!(removed[0]["bucket_id"], "docs");
    let root = list(json!({"prefix": ""})).await;
    let names: Vec<&str> = root.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "moved"]);
    // The bucket's settings are still there.
    let r = env
        .req(Who::Service, Method::GET, "/bucket/docs")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
both!(list_remove_move_copy);

// ----------------------------------------------------------------- policies

async fn deny_by_default_and_public_buckets(kind: Kind) {
    let mut buckets = BTreeMap::new();
    buckets.insert(
        "shared".to_string(),
        policy(&[TableAction::Select], &ALL, false),
    );
    buckets.insert(
        "edit".to_string(),
        policy(&[], &[TableAction::Select, TableAction::Update], false),
    );
    let env = start(kind, buckets, 50 << 20).await;
    env.create_bucket(json!({"id": "private"})).await;
    env.create_bucket(json!({"id": "shared"})).await;
    env.create_bucket(json!({"id": "open", "public": true}))
        .await;
    env.create_bucket(json!({"id": "edit"})).await;
    for b in ["private", "shared", "open", "edit"] {
        let r = env
            .upload(Who::Service, &format!("{b}/x.txt"), "secret", "text/plain")
            .await;
        assert_eq!(r.status(), 200);
    }
    let (_, token) = env.sign_up("someone@example.com").await;

    // A bucket without a policy: the service role's only.
    for who in [Who::Anon, Who::User(&token)] {
        let r = env
            .req(who, Method::GET, "/object/private/x.txt")
            .send()
            .await
            .unwrap();
        let e = env.expect_err(r, 403).await;
        assert_eq!(e["message"], "new row violates row-level security policy");
        let r = env
            .req(who, Method::GET, "/object/info/private/x.txt")
            .send()
            .await
            .unwrap();
        env.expect_err(r, 403).await;
        let r = env.upload(who, "private/y.txt", "y", "text/plain").await;
        env.expect_err(r, 403).await;
        // Not 409 for an existing object: no hint that it exists.
        let r = env.upload(who, "private/x.txt", "y", "text/plain").await;
        env.expect_err(r, 403).await;
        let r = env
            .req(who, Method::POST, "/object/list/private")
            .json(&json!({"prefix": ""}))
            .send()
            .await
            .unwrap();
        env.expect_err(r, 403).await;
        let r = env
            .req(who, Method::DELETE, "/object/private")
            .json(&json!({"prefixes": ["x.txt"]}))
            .send()
            .await
            .unwrap();
        env.expect_err(r, 403).await;
        let r = env
            .req(who, Method::POST, "/object/sign/private/x.txt")
            .json(&json!({"expiresIn": 60}))
            .send()
            .await
            .unwrap();
        env.expect_err(r, 403).await;
        let r = env
            .req(who, Method::POST, "/object/copy")
            .json(&json!({"bucketId": "private", "sourceKey": "x.txt", "destinationKey": "z.txt"}))
            .send()
            .await
            .unwrap();
        env.expect_err(r, 403).await;
        let r = env
            .req(who, Method::POST, "/object/upload/sign/private/new.txt")
            .send()
            .await
            .unwrap();
        env.expect_err(r, 403).await;
    }
    // Public routes only for public buckets, with no key at all.
    let r = env
        .req(Who::NoKey, Method::GET, "/object/public/open/x.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "secret");
    let r = env
        .req(Who::NoKey, Method::GET, "/object/public/private/x.txt")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 404).await;
    let r = env
        .req(Who::NoKey, Method::GET, "/object/open/x.txt")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 401).await;
    // Any valid key downloads from a public bucket, but may not write to it.
    let r = env
        .req(Who::Anon, Method::GET, "/object/open/x.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env.upload(Who::Anon, "open/y.txt", "y", "text/plain").await;
    env.expect_err(r, 403).await;

    // The policy: anon may select, signed-in users everything.
    let r = env
        .req(Who::Anon, Method::GET, "/object/shared/x.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "secret");
    let r = env
        .upload(Who::Anon, "shared/anon.txt", "a", "text/plain")
        .await;
    env.expect_err(r, 403).await;
    let r = env
        .req(Who::Anon, Method::POST, "/object/move")
        .json(&json!({"bucketId": "shared", "sourceKey": "x.txt", "destinationKey": "y.txt"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;
    let r = env
        .upload(Who::User(&token), "shared/user.txt", "u", "text/plain")
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .req(Who::User(&token), Method::POST, "/object/move")
        .json(
            &json!({"bucketId": "shared", "sourceKey": "user.txt", "destinationKey": "moved.txt"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Update without insert: replace existing objects, create none.
    let r = env
        .req(Who::User(&token), Method::PUT, "/object/edit/x.txt")
        .header("content-type", "text/plain")
        .body("edited")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = env
        .req(Who::User(&token), Method::GET, "/object/edit/x.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "edited");
    for (method, upsert) in [
        (Method::PUT, "false"),
        (Method::POST, "true"),
        (Method::POST, "false"),
    ] {
        let r = env
            .req(Who::User(&token), method, "/object/edit/new.txt")
            .header("content-type", "text/plain")
            .header("x-upsert", upsert)
            .body("new")
            .send()
            .await
            .unwrap();
        env.expect_err(r, 403).await;
    }
    // A forged bearer token is 401, not anon.
    let r = env
        .req(
            Who::User("not.a.token"),
            Method::GET,
            "/object/shared/x.txt",
        )
        .send()
        .await
        .unwrap();
    env.expect_err(r, 401).await;
}
both!(deny_by_default_and_public_buckets);

async fn owner_folders(kind: Kind) {
    let mut buckets = BTreeMap::new();
    buckets.insert(
        "homes".to_string(),
        policy(&[TableAction::Select], &ALL, true),
    );
    let env = start(kind, buckets, 50 << 20).await;
    env.create_bucket(json!({"id": "homes"})).await;
    let (alice, alice_token) = env.sign_up("alice@example.com").await;
    let (bob, bob_token) = env.sign_up("bob@example.com").await;
    let a = Who::User(&alice_token);
    let b = Who::User(&bob_token);

    let r = env
        .upload(
            a,
            &format!("homes/{alice}/notes.txt"),
            "alice's",
            "text/plain",
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = env
        .upload(b, &format!("homes/{bob}/notes.txt"), "bob's", "text/plain")
        .await;
    assert_eq!(r.status(), 200);
    // Alice cannot write into Bob's folder, nor at the top.
    let r = env
        .upload(a, &format!("homes/{bob}/evil.txt"), "x", "text/plain")
        .await;
    env.expect_err(r, 403).await;
    let r = env.upload(a, "homes/top.txt", "x", "text/plain").await;
    env.expect_err(r, 403).await;
    // A user id that is a prefix of another's is not their folder.
    let r = env
        .upload(a, &format!("homes/{alice}x/notes.txt"), "x", "text/plain")
        .await;
    env.expect_err(r, 403).await;
    // Bob cannot read, overwrite, list, sign, delete or move Alice's.
    let path = format!("/object/homes/{alice}/notes.txt");
    let r = env.req(b, Method::GET, &path).send().await.unwrap();
    env.expect_err(r, 403).await;
    let r = env
        .req(b, Method::PUT, &path)
        .header("content-type", "text/plain")
        .body("overwritten")
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;
    let r = env
        .req(b, Method::POST, "/object/list/homes")
        .json(&json!({"prefix": alice}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;
    let r = env
        .req(b, Method::POST, "/object/list/homes")
        .json(&json!({"prefix": ""}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;
    let r = env
        .req(
            b,
            Method::POST,
            &format!("/object/sign/homes/{alice}/notes.txt"),
        )
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;
    let r = env
        .req(b, Method::DELETE, "/object/homes")
        .json(&json!({"prefixes": [format!("{alice}/notes.txt")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Vec<Value>>().await.unwrap(), Vec::<Value>::new());
    let r = env
        .req(b, Method::POST, "/object/move")
        .json(
            &json!({"bucketId": "homes", "sourceKey": format!("{alice}/notes.txt"),
                      "destinationKey": format!("{bob}/stolen.txt")}),
        )
        .send()
        .await
        .unwrap();
    env.expect_err(r, 403).await;
    // The anon key matches no owner, even with select granted.
    let r = env.req(Who::Anon, Method::GET, &path).send().await.unwrap();
    env.expect_err(r, 403).await;
    // Alice still has her file, and lists her own folder.
    let r = env.req(a, Method::GET, &path).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "alice's");
    let r = env
        .req(a, Method::POST, "/object/list/homes")
        .json(&json!({"prefix": alice}))
        .send()
        .await
        .unwrap();
    let names: Vec<Value> = r.json().await.unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0]["name"], "notes.txt");
    let r = env
        .req(a, Method::DELETE, "/object/homes")
        .json(&json!({"prefixes": [format!("{alice}/notes.txt")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 1);
}
both!(owner_folders);

// ------------------------------------------------------------------ limits

async fn size_and_mime_limits(kind: Kind) {
    let env = start(kind, BTreeMap::new(), 64 * 1024).await;
    env.create_bucket(json!({"id": "small", "file_size_limit": 1024}))
        .await;
    env.create_bucket(
        json!({"id": "images", "allowed_mime_types": ["image/*", "application/pdf"]}),
    )
    .await;
    env.create_bucket(json!({"id": "big"})).await;
    // An upload refused before its body is read: the server reads the
    // rest of a body that keeps arriving (a client still sending it would
    // otherwise meet a reset instead of the answer) and keeps the
    // connection; a rest that stops arriving ends with the connection
    // closed (its unread rest would be read as the next request). One read
    // to its end keeps the connection.
    let over = |sent: usize| {
        format!(
            "POST /storage/v1/object/big/over.bin HTTP/1.1\r\nhost: x\r\napikey: {k}\r\nauthorization: Bearer {k}\r\ncontent-type: application/octet-stream\r\ncontent-length: 204800\r\n\r\n{}",
            "a".repeat(sent),
            k = env.service
        )
    };
    for (request, status, closes) in [
        (over(1000), "413", true),
        (over(204_800), "413", false),
        (
            "POST /storage/v1/object/big/nokey.bin HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncontent-length: 5000\r\n\r\n".to_string(),
            "401",
            true,
        ),
        (
            format!(
                "POST /storage/v1/object/big/fits.bin HTTP/1.1\r\nhost: x\r\napikey: {k}\r\nauthorization: Bearer {k}\r\ncontent-type: application/octet-stream\r\ncontent-length: 10\r\n\r\n0123456789",
                k = env.service
            ),
            "200",
            false,
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(env.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before a response");
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let first = head.lines().next().unwrap_or("").to_string();
        assert!(first.contains(status), "{kind:?}: {first}");
        assert_eq!(head.contains("connection: close"), closes, "{kind:?}: {first}");
    }
    // A body too large to read through is not read: the answer comes at
    // once, with the connection closed.
    let mut s = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    s.write_all(
        format!(
            "POST /storage/v1/object/big/huge.bin HTTP/1.1\r\nhost: x\r\napikey: {k}\r\nauthorization: Bearer {k}\r\ncontent-type: application/octet-stream\r\ncontent-length: 104857600\r\n\r\n",
            k = env.service
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_millis(900), s.read(&mut buf))
            .await
            .expect("the answer waited for a body it will not read")
            .unwrap();
        assert!(n > 0, "closed before a response");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("connection: close"), "{head}");

    let r = env
        .upload(
            Who::Service,
            "small/ok.bin",
            vec![1u8; 1024],
            "application/octet-stream",
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .upload(
            Who::Service,
            "small/over.bin",
            vec![1u8; 1025],
            "application/octet-stream",
        )
        .await;
    let e = env.expect_err(r, 413).await;
    assert_eq!(e["error"], "Payload too large");
    assert_eq!(e["message"], "The object exceeded the maximum allowed size");
    // The server's limit caps every bucket.
    let r = env
        .upload(
            Who::Service,
            "big/over.bin",
            vec![1u8; 64 * 1024 + 1],
            "application/octet-stream",
        )
        .await;
    env.expect_err(r, 413).await;
    // Enforced while streaming, with no Content-Length to trust (chunked).
    let mut chunked = format!(
        "POST /storage/v1/object/small/chunked.bin HTTP/1.1\r\nHost: x\r\napikey: {k}\r\nAuthorization: Bearer {k}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        k = env.service
    );
    for _ in 0..8 {
        chunked.push_str(&format!("200\r\n{}\r\n", "7".repeat(512)));
    }
    chunked.push_str("0\r\n\r\n");
    let (status, body) = env.raw(&chunked).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"statusCode\":\"413\""), "{body}");
    // And in multipart bodies.
    let (ct, body) = multipart_body("3600", None, "application/octet-stream", &[9u8; 2000]);
    let r = env
        .req(Who::Service, Method::POST, "/object/small/form.bin")
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    env.expect_err(r, 413).await;
    for k in ["over.bin", "chunked.bin", "form.bin"] {
        let r = env
            .req(
                Who::Service,
                Method::GET,
                &format!("/object/info/small/{k}"),
            )
            .send()
            .await
            .unwrap();
        env.expect_err(r, 404).await;
    }

    // MIME types.
    let r = env
        .upload(Who::Service, "images/a.png", "png", "image/png")
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .upload(Who::Service, "images/a.pdf", "pdf", "application/pdf")
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .upload(
            Who::Service,
            "images/a.txt",
            "txt",
            "text/plain;charset=UTF-8",
        )
        .await;
    let e = env.expect_err(r, 415).await;
    assert!(e["message"].as_str().unwrap().contains("text/plain"), "{e}");
    let (ct, body) = multipart_body("3600", None, "text/html", b"<p>");
    let r = env
        .req(Who::Service, Method::POST, "/object/images/a.html")
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    env.expect_err(r, 415).await;
    // A copy into the bucket obeys its limits too.
    let r = env
        .upload(Who::Service, "big/a.txt", "txt", "text/plain")
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .req(Who::Service, Method::POST, "/object/copy")
        .json(&json!({"bucketId": "big", "sourceKey": "a.txt", "destinationKey": "a.txt", "destinationBucket": "images"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 415).await;
}
both!(size_and_mime_limits);

// --------------------------------------------------------------- traversal

async fn traversal_and_reserved_keys(kind: Kind) {
    let env = start(kind, BTreeMap::new(), 50 << 20).await;
    env.create_bucket(json!({"id": "docs"})).await;
    // Sent raw: reqwest (like browsers) would resolve dot segments, even
    // percent-encoded ones, before the server sees them.
    for path in [
        "/object/docs/..%2F..%2Fetc%2Fpasswd",
        "/object/docs/%2e%2e/%2e%2e/etc/passwd",
        "/object/docs/../../etc/passwd",
        "/object/docs/a/./b",
        "/object/docs/a/%2E%2E%2F%2E%2E%2Fx",
        "/object/docs/a%00b",
        "/object/docs/a%5Cb",
        "/object/docs/%ff%fe",
        "/object/docs/a//b",
        "/object/info/docs/%2e%2e/x",
        "/object/authenticated/docs/..%2Fx",
        "/object/public/docs/../x",
        "/object/sign/docs/../x?token=abc",
    ] {
        for method in ["GET", "POST", "PUT"] {
            let (status, body) = env
                .raw(&format!(
                    "{method} /storage/v1{path} HTTP/1.1\r\nHost: x\r\napikey: {k}\r\nAuthorization: Bearer {k}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
                    k = env.service
                ))
                .await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["statusCode"], "400", "{method} {path}: {v}");
            assert_eq!(v["error"], "Invalid key", "{method} {path}: {v}");
        }
    }
    // Encoded separators reqwest leaves alone.
    let r = env
        .req(Who::Service, Method::GET, "/object/docs/..%2Fx")
        .send()
        .await
        .unwrap();
    assert_eq!(env.expect_err(r, 400).await["error"], "Invalid key");
    // The reserved settings key is out of reach.
    for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
        let r = env
            .req(
                Who::Service,
                method.clone(),
                "/object/docs/.truststream-bucket.json",
            )
            .header("x-upsert", "true")
            .body("{\"public\": true}")
            .send()
            .await
            .unwrap();
        env.expect_err(r, 400).await;
    }
    let r = env
        .req(
            Who::Service,
            Method::POST,
            "/object/sign/docs/.truststream-bucket.json",
        )
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 400).await;
    let r = env
        .req(Who::Service, Method::POST, "/object/copy")
        .json(&json!({"bucketId": "docs", "sourceKey": ".truststream-bucket.json", "destinationKey": "s.json"}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 400).await;
    // Nothing escaped the store's root on the filesystem.
    assert!(!env.dir.path().join("etc").exists());
}
both!(traversal_and_reserved_keys);

// ------------------------------------------------------------ signed URLs

async fn signed_urls(kind: Kind) {
    let env = start(kind, BTreeMap::new(), 50 << 20).await;
    env.create_bucket(json!({"id": "docs"})).await;
    for k in ["a b.txt", "other.txt"] {
        let r = env
            .upload(
                Who::Service,
                &format!("docs/{}", k.replace(' ', "%20")),
                k.to_string(),
                "text/plain",
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = env
        .req(Who::Service, Method::POST, "/object/sign/docs/a%20b.txt")
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap();
    let signed: Value = r.json().await.unwrap();
    let url = signed["signedURL"].as_str().unwrap().to_string();
    assert!(url.starts_with("/object/sign/docs/a b.txt?token="), "{url}");
    let token = url.split("token=").nth(1).unwrap().to_string();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");
    // As storage-js builds it: encodeURI(base + signedURL) (+ &download).
    let full = format!("{}{}", env.base, url.replace(' ', "%20"));
    let r = env.http.get(&full).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "a b.txt");
    let r = env
        .http
        .get(format!("{full}&download=x.txt"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("x.txt"));
    let r = env
        .http
        .get(&full)
        .header("range", "bytes=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);

    // Forged, for another path, missing, malformed, expired.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        format!("/object/sign/docs/a%20b.txt?token={forged}"),
        format!("/object/sign/docs/other.txt?token={token}"),
        "/object/sign/docs/a%20b.txt".to_string(),
        "/object/sign/docs/a%20b.txt?token=abc".to_string(),
        format!("/object/sign/docs/a%20b.txt?token={}", env.anon),
    ];
    for path in &cases {
        let r = env.req(Who::NoKey, Method::GET, path).send().await.unwrap();
        let e = env.expect_err(r, 400).await;
        assert_eq!(e["error"], "InvalidJWT", "{path}");
    }
    // A token with a forged payload (another path) and the old signature.
    let parts: Vec<&str> = token.split('.').collect();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap();
    let mut claims: Value = serde_json::from_slice(&payload).unwrap();
    claims["url"] = json!("docs/other.txt");
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let r = env
        .req(
            Who::NoKey,
            Method::GET,
            &format!("/object/sign/docs/other.txt?token={swapped}"),
        )
        .send()
        .await
        .unwrap();
    env.expect_err(r, 400).await;
    let r = env
        .req(Who::Service, Method::POST, "/object/sign/docs/a%20b.txt")
        .json(&json!({"expiresIn": 1}))
        .send()
        .await
        .unwrap();
    let short: Value = r.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let short = format!(
        "{}{}",
        env.base,
        short["signedURL"].as_str().unwrap().replace(' ', "%20")
    );
    let r = env.http.get(&short).send().await.unwrap();
    let e = env.expect_err(r, 400).await;
    assert_eq!(e["message"], "jwt expired");
    // Bad lifetimes, missing objects.
    let r = env
        .req(Who::Service, Method::POST, "/object/sign/docs/a%20b.txt")
        .json(&json!({"expiresIn": 0}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 400).await;
    let r = env
        .req(Who::Service, Method::POST, "/object/sign/docs/missing.txt")
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap();
    env.expect_err(r, 404).await;

    // Batch.
    let r = env
        .req(Who::Service, Method::POST, "/object/sign/docs")
        .json(&json!({"expiresIn": 60, "paths": ["a b.txt", "missing.txt", "../x"]}))
        .send()
        .await
        .unwrap();
    let many: Vec<Value> = r.json().await.unwrap();
    assert_eq!(many.len(), 3);
    assert_eq!(many[0]["error"], Value::Null);
    assert_eq!(many[0]["path"], "a b.txt");
    assert!(many[0]["signedURL"]
        .as_str()
        .unwrap()
        .starts_with("/object/sign/docs/a b.txt?token="));
    assert!(many[1]["error"].is_string() && many[1]["signedURL"].is_null());
    assert!(many[2]["error"].is_string());
    let r = env
        .http
        .get(format!(
            "{}{}",
            env.base,
            many[0]["signedURL"].as_str().unwrap().replace(' ', "%20")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "a b.txt");

    // Signed upload URLs: one upload per token, bound to its path.
    let r = env
        .req(
            Who::Service,
            Method::POST,
            "/object/upload/sign/docs/up/new.txt",
        )
        .send()
        .await
        .unwrap();
    let up: Value = r.json().await.unwrap();
    let up_url = up["url"].as_str().unwrap();
    assert!(up_url.starts_with("/object/upload/sign/docs/up/new.txt?token="));
    let up_token = up["token"].as_str().unwrap().to_string();
    let put = |path: String, body: &'static str| {
        env.req(Who::Anon, Method::PUT, &path)
            .header("content-type", "text/plain")
            .header("x-upsert", "false")
            .body(body)
            .send()
    };
    let r = put(
        format!("/object/upload/sign/docs/up/other.txt?token={up_token}"),
        "x",
    )
    .await
    .unwrap();
    env.expect_err(r, 400).await;
    let r = put(
        format!("/object/upload/sign/docs/up/new.txt?token={token}"),
        "x",
    )
    .await
    .unwrap();
    env.expect_err(r, 400).await;
    let r = put(
        format!("/object/upload/sign/docs/up/new.txt?token={up_token}"),
        "uploaded",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["Key"], "docs/up/new.txt");
    let r = put(
        format!("/object/upload/sign/docs/up/new.txt?token={up_token}"),
        "again",
    )
    .await
    .unwrap();
    env.expect_err(r, 400).await;
    let r = env
        .req(Who::Service, Method::GET, "/object/docs/up/new.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "uploaded");
    // An upload token is no download token.
    let r = env
        .req(
            Who::NoKey,
            Method::GET,
            &format!("/object/sign/docs/up/new.txt?token={up_token}"),
        )
        .send()
        .await
        .unwrap();
    env.expect_err(r, 400).await;
    // Without x-upsert at signing, the token cannot replace an object.
    let r = env
        .req(
            Who::Service,
            Method::POST,
            "/object/upload/sign/docs/other.txt",
        )
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    let r = put(
        format!(
            "/object/upload/sign/docs/other.txt?token={}",
            t["token"].as_str().unwrap()
        ),
        "x",
    )
    .await
    .unwrap();
    env.expect_err(r, 409).await;
    let r = env
        .req(
            Who::Service,
            Method::POST,
            "/object/upload/sign/docs/other.txt",
        )
        .header("x-upsert", "true")
        .send()
        .await
        .unwrap();
    let t: Value = r.json().await.unwrap();
    let r = put(
        format!(
            "/object/upload/sign/docs/other.txt?token={}",
            t["token"].as_str().unwrap()
        ),
        "replaced",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
}
both!(signed_urls);

// ------------------------------------------------ streaming, disconnects

async fn streaming_and_disconnects(kind: Kind) {
    let env = start(kind, BTreeMap::new(), 64 << 20).await;
    env.create_bucket(json!({"id": "big"})).await;
    // 12 MiB streamed up in chunks, and back.
    let chunk: Vec<u8> = (0..(256 * 1024u32))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let expected: Vec<u8> = (0..48u8)
        .flat_map(|n| chunk.iter().map(move |b| b ^ n))
        .collect();
    let r = env
        .req(Who::Service, Method::POST, "/object/big/blob.bin")
        .header("content-type", "application/octet-stream")
        .body(expected.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = env
        .req(Who::Service, Method::GET, "/object/big/blob.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-length"],
        expected.len().to_string().as_str()
    );
    let got = r.bytes().await.unwrap();
    assert!(got.as_ref() == expected.as_slice(), "content differs");
    let r = env
        .req(Who::Service, Method::GET, "/object/big/blob.bin")
        .header("range", "bytes=5000000-5999999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap().as_ref() == &expected[5_000_000..6_000_000]);

    // A client that sends half of its declared body and hangs up leaves
    // no object, raw and multipart alike.
    let half = vec![b'z'; 500_000];
    let mut raw = format!(
        "POST /storage/v1/object/big/cut.bin HTTP/1.1\r\nHost: x\r\napikey: {k}\r\nAuthorization: Bearer {k}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n",
        k = env.service
    )
    .into_bytes();
    raw.extend_from_slice(&half);
    let (ct, form) = multipart_body(
        "3600",
        None,
        "application/octet-stream",
        &vec![b'q'; 1_000_000],
    );
    let mut raw_form = format!(
        "POST /storage/v1/object/big/cut-form.bin HTTP/1.1\r\nHost: x\r\napikey: {k}\r\nAuthorization: Bearer {k}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        form.len(),
        k = env.service
    )
    .into_bytes();
    raw_form.extend_from_slice(&form[..form.len() / 2]);
    for request in [raw, raw_form] {
        let mut s = tokio::net::TcpStream::connect(env.addr).await.unwrap();
        s.write_all(&request).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for k in ["cut.bin", "cut-form.bin"] {
        let r = env
            .req(Who::Service, Method::GET, &format!("/object/info/big/{k}"))
            .send()
            .await
            .unwrap();
        env.expect_err(r, 404).await;
        assert!(env.storage.get_metadata("big", k).await.is_err());
    }
    // Nor any temporary file of the aborted writes.
    let mut pending = vec![env.dir.path().to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().to_string();
            assert!(!name.contains("cut"), "left behind: {}", e.path().display());
            if e.file_type().unwrap().is_dir() && name != ".truststream" {
                pending.push(e.path());
            } else {
                assert!(!name.starts_with(".~t"), "temporary file left: {name}");
            }
        }
    }
    // The server still serves.
    let r = env
        .req(Who::Service, Method::HEAD, "/object/big/blob.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
both!(streaming_and_disconnects);

/// The bucket settings survive a restart of the server over the same
/// filesystem store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_settings_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    for round in 0..2 {
        let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
        let auth = Arc::new(
            JwtAuth::new(
                JwtAuthConfig::with_secret("storage test secret, at least 32 bytes long"),
                db.clone(),
            )
            .await
            .unwrap(),
        );
        let storage: Arc<dyn Storage> = Arc::new(
            truststream_storage_fs::FsStorage::open(&root)
                .await
                .unwrap(),
        );
        let config = ServeConfig {
            bind: "127.0.0.1:0".into(),
            data_dir: dir.path().join("data").to_string_lossy().into(),
            ..ServeConfig::default()
        };
        let running = Server::bind(
            Providers {
                db,
                auth,
                storage,
                metrics: None,
            },
            ApiKeys::generate(),
            config,
        )
        .await
        .unwrap()
        .spawn();
        let base = format!("{}/storage/v1", running.url);
        let key = running.keys.service_role().to_string();
        let http = reqwest::Client::new();
        if round == 0 {
            let r = http
                .post(format!("{base}/bucket"))
                .header("apikey", &key)
                .json(&json!({"id": "pics", "public": true, "allowed_mime_types": ["image/png"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let r = http
                .post(format!("{base}/object/pics/a.png"))
                .header("apikey", &key)
                .header("content-type", "image/png")
                .body("png")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        } else {
            let b: Value = http
                .get(format!("{base}/bucket/pics"))
                .header("apikey", &key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(b["public"], true);
            assert_eq!(b["allowed_mime_types"], json!(["image/png"]));
            let r = http
                .get(format!("{base}/object/public/pics/a.png"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.text().await.unwrap(), "png");
            let r = http
                .post(format!("{base}/object/pics/b.txt"))
                .header("apikey", &key)
                .header("content-type", "text/plain")
                .body("txt")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 415);
        }
        running.stop().await.unwrap();
    }
}

/// A bucket made private through one of the server's routers is private
/// at once through every other router of the same server
/// ([`Server::router`] for embedding): the settings cache belongs to the
/// server, not to one router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_made_private_is_private_at_once_on_every_router() {
    let env = start(Kind::Memory, BTreeMap::new(), 1 << 20).await;
    // The same server's routes mounted a second time, as an embedding
    // application would.
    let embedded = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let embedded_base = format!("http://{}/storage/v1", embedded.local_addr().unwrap());
    let router = env.router.clone();
    tokio::spawn(async move { axum::serve(embedded, router).await });
    let public_get = || {
        env.http
            .get(format!("{embedded_base}/object/public/flip/a.txt"))
            .send()
    };
    env.create_bucket(json!({"id": "flip", "public": true}))
        .await;
    let r = env
        .upload(Who::Service, "flip/a.txt", "secret", "text/plain")
        .await;
    assert_eq!(r.status(), 200);
    // The embedded routes read (and cache) the bucket as public.
    let r = public_get().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "secret");
    let r = env
        .req(Who::Service, Method::PUT, "/bucket/flip")
        .json(&json!({"public": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = public_get().await.unwrap();
    assert_ne!(r.status(), 200, "a private bucket's object was served");
    assert!(!r.text().await.unwrap().contains("secret"));
}

// ------------------------------------------------- provider failures

/// A provider whose every call fails with `kind`, its message naming a
/// file path that must never reach a client.
struct Failing(truststream_core::ErrorKind);

impl Failing {
    fn err<T>(&self) -> truststream_core_storage::StorageResult<T> {
        Err(truststream_core::Error::new(
            self.0,
            "cannot open /var/lib/secret-root/objects/x: input/output error",
        ))
    }
}

#[async_trait::async_trait]
impl Storage for Failing {
    fn info(&self) -> truststream_core::ProviderInfo {
        truststream_core::ProviderInfo {
            name: "failing",
            version: "0",
        }
    }
    fn capabilities(&self) -> truststream_core_storage::StorageCapabilities {
        truststream_core_storage::StorageCapabilities::all(None)
    }
    async fn health(&self) -> truststream_core::Health {
        truststream_core::Health::healthy(Duration::ZERO)
    }
    async fn upload(
        &self,
        _: &str,
        _: &str,
        _: bytes::Bytes,
        _: &truststream_core_storage::UploadOptions,
    ) -> truststream_core_storage::StorageResult<truststream_core_storage::ObjectMeta> {
        self.err()
    }
    async fn upload_stream(
        &self,
        _: &str,
        _: &str,
        _: truststream_core_storage::ByteStream,
        _: &truststream_core_storage::UploadOptions,
    ) -> truststream_core_storage::StorageResult<truststream_core_storage::ObjectMeta> {
        self.err()
    }
    async fn download(
        &self,
        _: &str,
        _: &str,
    ) -> truststream_core_storage::StorageResult<bytes::Bytes> {
        self.err()
    }
    async fn download_range(
        &self,
        _: &str,
        _: &str,
        _: truststream_core_storage::ByteRange,
    ) -> truststream_core_storage::StorageResult<bytes::Bytes> {
        self.err()
    }
    async fn download_stream(
        &self,
        _: &str,
        _: &str,
        _: Option<truststream_core_storage::ByteRange>,
    ) -> truststream_core_storage::StorageResult<truststream_core_storage::ByteStream> {
        self.err()
    }
    async fn get_metadata(
        &self,
        _: &str,
        _: &str,
    ) -> truststream_core_storage::StorageResult<truststream_core_storage::ObjectMeta> {
        self.err()
    }
    async fn delete(&self, _: &str, _: &str) -> truststream_core_storage::StorageResult<()> {
        self.err()
    }
    async fn list(
        &self,
        _: &str,
        _: &truststream_core_storage::ListOptions,
    ) -> truststream_core_storage::StorageResult<truststream_core_storage::ListPage> {
        self.err()
    }
    async fn copy(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> truststream_core_storage::StorageResult<truststream_core_storage::ObjectMeta> {
        self.err()
    }
    async fn signed_url(
        &self,
        _: &str,
        _: &str,
        _: truststream_core_storage::SignedUrlMethod,
        _: Duration,
    ) -> truststream_core_storage::StorageResult<truststream_core_storage::SignedUrl> {
        self.err()
    }
    // It claims every capability, fetch_signed included: those calls fail
    // as the others do (the defaults would answer Unsupported).
    async fn fetch_signed(
        &self,
        _: truststream_core_storage::SignedUrlMethod,
        _: &str,
        _: Option<bytes::Bytes>,
    ) -> truststream_core_storage::StorageResult<Option<bytes::Bytes>> {
        self.err()
    }
    async fn verify_signed(
        &self,
        _: truststream_core_storage::SignedUrlMethod,
        _: &str,
    ) -> truststream_core_storage::StorageResult<truststream_core_storage::signing::VerifiedUrl>
    {
        self.err()
    }
    async fn list_buckets(
        &self,
    ) -> truststream_core_storage::StorageResult<Vec<truststream_core_storage::BucketInfo>> {
        self.err()
    }
    async fn create_bucket(&self, _: &str) -> truststream_core_storage::StorageResult<()> {
        self.err()
    }
    async fn delete_bucket(&self, _: &str) -> truststream_core_storage::StorageResult<()> {
        self.err()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_get_fixed_messages() {
    use truststream_core::ErrorKind;
    for (kind, status) in [
        (ErrorKind::Unavailable, 503),
        (ErrorKind::Timeout, 503),
        (ErrorKind::Internal, 500),
    ] {
        let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
        let auth = Arc::new(
            JwtAuth::new(
                JwtAuthConfig::with_secret("storage test secret, at least 32 bytes long"),
                db.clone(),
            )
            .await
            .unwrap(),
        );
        let config = ServeConfig {
            bind: "127.0.0.1:0".into(),
            data_dir: tempfile::tempdir().unwrap().path().to_string_lossy().into(),
            ..ServeConfig::default()
        };
        let running = Server::bind(
            Providers {
                db,
                auth,
                storage: Arc::new(Failing(kind)),
                metrics: None,
            },
            ApiKeys::generate(),
            config,
        )
        .await
        .unwrap()
        .spawn();
        let base = format!("{}/storage/v1", running.url);
        let key = running.keys.service_role().to_string();
        let http = reqwest::Client::new();
        let requests = [
            http.get(format!("{base}/bucket")),
            http.post(format!("{base}/bucket"))
                .json(&json!({"id": "docs"})),
            http.get(format!("{base}/object/docs/a.txt")),
            http.get(format!("{base}/object/info/docs/a.txt")),
            http.post(format!("{base}/object/docs/a.txt")).body("x"),
            http.post(format!("{base}/object/list/docs"))
                .json(&json!({"prefix": ""})),
            http.delete(format!("{base}/object/docs"))
                .json(&json!({"prefixes": ["a.txt"]})),
            http.post(format!("{base}/object/sign/docs/a.txt"))
                .json(&json!({"expiresIn": 60})),
            // The provider's own signed URLs: its check fails as well.
            http.get(format!(
                "{base}/signed/docs/a.txt?method=GET&expires=1&signature=00"
            )),
            http.put(format!(
                "{base}/signed/docs/a.txt?method=PUT&expires=1&signature=00"
            ))
            .body("x"),
        ];
        for r in requests {
            let r = r.header("apikey", &key).send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{kind:?}");
            let text = r.text().await.unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["statusCode"], json!(status.to_string()));
            assert!(
                !text.contains("/var/lib") && !text.contains("input/output"),
                "leaks: {text}"
            );
        }
    }
}

// ---------------------------------------------------------- provider calls

/// What each request costs in provider calls once the bucket's settings
/// are cached: a download is one call (the metadata read with the bytes),
/// a `HEAD` the metadata alone, a suffix range the metadata first (for the
/// size), a range past the end a second call (the size its 416 names); a
/// create is one write, a replace looks at the object first; bucket
/// lookups never list every bucket; serve's own bucket update is seen at
/// once.
async fn provider_calls(kind: Kind) {
    let calls = Arc::new(Calls::default());
    let layer = calls.clone();
    let env = start_wrapped(kind, BTreeMap::new(), 50 << 20, move |s| {
        truststream_layer::around_storage(s, layer)
    })
    .await;
    env.create_bucket(json!({"name": "pub", "public": true}))
        .await;
    let small = vec![7u8; 4096];
    let r = env.upload_bin("pub/a.bin", small.clone()).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    calls.take();

    // A create: one write (the settings are cached, the provider's
    // if-not-exists condition answers a duplicate).
    let r = env.upload_bin("pub/b.bin", small.clone()).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(calls.take(), ["upload_stream"]);
    let r = env.upload_bin("pub/b.bin", small.clone()).await;
    env.expect_err(r, 409).await;
    assert_eq!(calls.take(), ["upload_stream"]);

    // A replace keeps the object's id: it reads the metadata first.
    let r = env
        .req(Who::Service, Method::PUT, "/object/pub/a.bin")
        .header("content-type", "application/octet-stream")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(calls.take(), ["get_metadata", "upload_stream"]);

    // Downloads: one call, the metadata (headers) read with the bytes;
    // small objects go out in one frame, large ones streamed.
    for path in [
        "/object/public/pub/a.bin",
        "/object/authenticated/pub/a.bin",
    ] {
        let r = env.get(Who::Service, path).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.content_length(), Some(4096));
        assert_eq!(r.bytes().await.unwrap().as_ref(), small.as_slice());
        assert_eq!(calls.take(), ["download_with_metadata"], "{path}");
    }
    let large: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let r = env.upload_bin("pub/large.bin", large.clone()).await;
    assert_eq!(r.status(), 200);
    calls.take();
    let r = env.get(Who::NoKey, "/object/public/pub/large.bin").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(1 << 20));
    assert!(r.bytes().await.unwrap() == large, "the large body differs");
    assert_eq!(calls.take(), ["download_with_metadata"]);

    // Ranges: one call from a start; a suffix needs the size first, a
    // start past the end a second call for the size its 416 names.
    let ranged = |range: &'static str| {
        env.req(Who::Service, Method::GET, "/object/pub/large.bin")
            .header("range", range)
            .send()
    };
    let r = ranged("bytes=100-199").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/1048576");
    assert!(
        r.bytes().await.unwrap() == large[100..200],
        "the range differs"
    );
    assert_eq!(calls.take(), ["download_with_metadata"]);
    let r = ranged("bytes=-10").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        "bytes 1048566-1048575/1048576"
    );
    assert!(r.bytes().await.unwrap() == large[(1 << 20) - 10..]);
    assert_eq!(calls.take(), ["get_metadata", "download_with_metadata"]);
    let r = ranged("bytes=2000000-").await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */1048576");
    assert_eq!(calls.take(), ["download_with_metadata", "get_metadata"]);
    // A HEAD reads the metadata only.
    let r = env
        .req(Who::Service, Method::HEAD, "/object/pub/large.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "1048576");
    assert_eq!(calls.take(), ["get_metadata"]);

    // One bucket is found without listing them all.
    let r = env.get(Who::Service, "/bucket/pub").await;
    assert_eq!(r.status(), 200);
    assert!(!calls.take().contains(&"list_buckets"));
    let r = env.get(Who::Service, "/bucket/nope").await;
    env.expect_err(r, 404).await;
    // (A bucket without settings may have been made by another tool: only
    // then are the buckets listed.)
    assert_eq!(calls.take(), ["download", "list_buckets"]);

    // Serve's own update is seen by the next request.
    let r = env
        .req(Who::Service, Method::PUT, "/bucket/pub")
        .json(&json!({"public": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!calls.take().contains(&"list_buckets"));
    let r = env.get(Who::NoKey, "/object/public/pub/a.bin").await;
    env.expect_err(r, 404).await;
}
both!(provider_calls);
