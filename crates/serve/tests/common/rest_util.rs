//! Shared setup of the `/rest/v1` tests: a server over a database with the
//! JWT auth provider beside it, and request helpers.

#![allow(dead_code)] // each test binary uses part of it
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::{Client, Method, RequestBuilder};
use serde_json::Value;
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_auth::{Auth, SignUp};
use truststream_core_db::{Database, TableSchema};
use truststream_serve::{ApiKeys, Providers, Running, ServeConfig, Server, TablePolicy};

const SECRET: &str = "an HS256 secret for the rest tests, 32+ bytes long";

/// A running server and what the tests need around it.
pub struct Env {
    pub server: Running,
    pub http: Client,
    pub db: Arc<dyn Database>,
    pub auth: Arc<JwtAuth>,
    pub _dir: Option<tempfile::TempDir>,
}

/// Which database the server runs over.
pub enum Backend {
    Memory,
    Sqlite,
}

/// Starts a server over `backend` with `tables` created first and the
/// `policies` in `[serve.tables]`.
pub async fn start(
    backend: Backend,
    tables: Vec<TableSchema>,
    policies: Vec<(&str, TablePolicy)>,
    tweak: impl FnOnce(&mut ServeConfig),
) -> Env {
    let (db, dir): (Arc<dyn Database>, _) = match backend {
        Backend::Memory => (Arc::new(truststream_db_memory::MemoryDatabase::new()), None),
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let db = truststream_db_sqlite::SqliteDatabase::open(
                truststream_db_sqlite::SqliteConfig::file(dir.path().join("rest.db")),
            )
            .await
            .unwrap();
            (Arc::new(db), Some(dir))
        }
    };
    start_on(db, dir, tables, policies, tweak).await
}

/// [`start`] over a database opened by the caller (`dir`: kept alive with
/// the server).
pub async fn start_on(
    db: Arc<dyn Database>,
    dir: Option<tempfile::TempDir>,
    tables: Vec<TableSchema>,
    policies: Vec<(&str, TablePolicy)>,
    tweak: impl FnOnce(&mut ServeConfig),
) -> Env {
    for t in &tables {
        db.create_table(t).await.unwrap();
    }
    let mut cfg = JwtAuthConfig::with_secret(SECRET);
    cfg.argon2 = Argon2Cost::minimal();
    let auth = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
    let providers = Providers {
        db: db.clone(),
        auth: auth.clone() as Arc<dyn Auth>,
        storage: Arc::new(truststream_storage_memory::MemoryStorage::new()),
        metrics: None,
    };
    let mut config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        tables: policies
            .into_iter()
            .map(|(t, p)| (t.to_string(), p))
            .collect::<BTreeMap<_, _>>(),
        ..ServeConfig::default()
    };
    tweak(&mut config);
    let server = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .unwrap()
        .spawn();
    Env {
        server,
        http: Client::new(),
        db,
        auth,
        _dir: dir,
    }
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("{}/rest/v1/{path}", self.server.url)
    }

    /// A request as the service role.
    pub fn service(&self, method: Method, path: &str) -> RequestBuilder {
        let key = self.server.keys.service_role().to_string();
        self.http
            .request(method, self.url(path))
            .header("apikey", &key)
            .bearer_auth(key)
    }

    /// A request with the anon key.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        let key = self.server.keys.anon().to_string();
        self.http
            .request(method, self.url(path))
            .header("apikey", &key)
            .bearer_auth(key)
    }

    /// A request as a signed-in user (their access token).
    pub fn user(&self, token: &str, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("apikey", self.server.keys.anon())
            .bearer_auth(token)
    }

    /// Signs a user up through the provider: (user id, access token).
    pub async fn sign_up(&self, email: &str) -> (String, String) {
        let s = self
            .auth
            .sign_up(SignUp::new(email, "correct horse battery staple"))
            .await
            .unwrap();
        (s.user.id.clone(), s.access_token.expose().to_string())
    }
}

/// Status and JSON body (Null when empty).
pub async fn json(r: RequestBuilder) -> (u16, Value) {
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}
