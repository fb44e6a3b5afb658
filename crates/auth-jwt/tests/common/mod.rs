//! Shared test setup: providers over memory and SQLite at the lowest argon2
//! cost, and a signer for hand-made tokens.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jsonwebtoken::{jwk::Jwk, Algorithm as A, EncodingKey, Header};
use serde_json::{json, Value};
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_db::Database;

pub const SECRET: &str = "test secret: 32 bytes or more, never production";
pub const PASSWORD: &str = "correct horse battery staple";

pub fn key(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR")))
        .expect("test key file")
}

/// The test configuration: HS256, cheap argon2, one role.
pub fn config() -> JwtAuthConfig {
    let mut c = JwtAuthConfig::with_secret(SECRET);
    c.argon2 = Argon2Cost::minimal();
    c.default_roles = vec!["member".into()];
    c.roles.insert(
        "member".into(),
        vec!["read:*".into(), "write:agents".into()],
    );
    c.roles.insert("admin".into(), vec!["*".into()]);
    c
}

pub fn memory_db() -> Arc<dyn Database> {
    Arc::new(truststream_db_memory::MemoryDatabase::new())
}

pub async fn sqlite_db() -> Arc<dyn Database> {
    Arc::new(
        truststream_db_sqlite::SqliteDatabase::in_memory()
            .await
            .expect("sqlite in memory"),
    )
}

pub async fn provider(config: JwtAuthConfig) -> JwtAuth {
    JwtAuth::new(config, memory_db()).await.expect("provider")
}

pub fn unique_email() -> String {
    format!("u-{}@example.com", uuid::Uuid::new_v4().simple())
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims as this provider issues them, for `sub`.
pub fn claims(sub: &str) -> Value {
    json!({
        "iss": "truststream",
        "aud": "authenticated",
        "sub": sub,
        "exp": now() + 600,
        "iat": now(),
        "role": "authenticated",
        "session_id": uuid::Uuid::new_v4().to_string(),
    })
}

/// Signs `claims` with HS256 and `secret`.
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

/// A JWKS endpoint on 127.0.0.1 whose document the test can swap, counting
/// requests.
pub struct JwksServer {
    pub url: String,
    pub doc: Arc<Mutex<Value>>,
    pub hits: Arc<AtomicUsize>,
}

pub async fn jwks_server(doc: Value) -> JwksServer {
    let doc = Arc::new(Mutex::new(doc));
    let hits = Arc::new(AtomicUsize::new(0));
    let (d, h) = (doc.clone(), hits.clone());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (d, h) = (d.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                axum::Json(d.lock().expect("jwks document").clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    JwksServer {
        url: format!("http://{addr}/.well-known/jwks.json"),
        doc,
        hits,
    }
}

pub fn rsa_key(file: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(key(file).as_bytes()).expect("rsa test key")
}

pub fn jwk(file: &str, kid: &str) -> Value {
    let mut j = Jwk::from_encoding_key(&rsa_key(file), A::RS256).expect("jwk");
    j.common.key_id = Some(kid.to_string());
    serde_json::to_value(j).expect("jwk json")
}

pub fn sign_rs256(claims: &Value, file: &str, kid: Option<&str>) -> String {
    let mut h = Header::new(A::RS256);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &rsa_key(file)).expect("sign")
}

/// Signs `claims` with HS256 and `secret` under a header given as JSON, as
/// an attacker would write it (members jsonwebtoken's `Header` cannot hold).
pub fn sign_raw_hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(v).expect("json"))
    };
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("hmac key");
    mac.update(input.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}
