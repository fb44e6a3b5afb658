//! Shared test setup: providers over memory and SQLite at the lowest argon2
//! cost, and a signer for hand-made tokens.
#![allow(dead_code)]

use std::sync::Arc;

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
