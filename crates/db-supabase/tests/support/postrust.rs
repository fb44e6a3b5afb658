//! postrust-server 3.1.0 (`postrust`, a third-party PostgREST-compatible
//! server) for the REST-mode tests: finding the binary, PostgreSQL and a
//! scratch area, starting a server on a scratch schema, signing role
//! tokens.
//!
//! Needs PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) and the `postrust` binary
//! (`POSTRUST_BIN`, `PATH`, or `~/.cargo/bin`). Under `CI=true` either
//! missing fails the test; elsewhere it is skipped with a message.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use truststream_core_db::{Database, Params};
use truststream_db_postgres::{testing, PgDatabase};

/// The JWT secret every test server verifies tokens with.
pub const JWT_SECRET: &str = "a postrust jwt secret for the db-supabase tests, 32+ bytes";

/// The role anonymous requests run as.
pub const ANON_ROLE: &str = "ts_dbsupa_anon";

/// What a postrust test needs: the binary, the PostgreSQL URL, and a
/// scratch area (clean it up at the end).
pub struct Fixture {
    pub bin: PathBuf,
    pub db_url: String,
    pub scratch: Arc<testing::Scratch>,
}

/// The binary and PostgreSQL, with [`ANON_ROLE`] made; `None` when
/// either is missing outside CI (the test returns: skipped, with a
/// message); under `CI=true` a missing one fails the test.
pub async fn fixture() -> Option<Fixture> {
    let Some(bin) = binary() else {
        assert!(
            !truststream_core::in_ci(),
            "postrust (postrust-server 3.1.0) is required under CI=true; .ci/run installs it"
        );
        eprintln!("skipping: postrust not found (cargo install postrust-server --version 3.1.0)");
        return None;
    };
    let db_url = testing::server().await?;
    let scratch = Arc::new(testing::Scratch::new(db_url.clone()));
    let pg = scratch
        .database("supa_role")
        .await
        .expect("a scratch schema");
    ensure_role(&pg, ANON_ROLE).await;
    Some(Fixture {
        bin,
        db_url,
        scratch,
    })
}

/// Creates `role` (NOLOGIN) unless it exists.
pub async fn ensure_role(pg: &PgDatabase, role: &str) {
    let sql = format!(
        "DO $$ BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    );
    pg.raw_query(&sql, &Params::new())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

impl Fixture {
    /// A server for `schema`.
    pub async fn start(&self, schema: &str) -> Postrust {
        self.start_with(schema, &[]).await
    }

    /// A server for `schema` with extra environment (`PGRST_DB_MAX_ROWS`).
    pub async fn start_with(&self, schema: &str, env: &[(&str, &str)]) -> Postrust {
        start_with(&self.bin, &self.db_url, schema, env).await
    }
}

fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("POSTRUST_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("postrust"))
        .find(|p| p.is_file())
}

/// A running server; killed when dropped.
pub struct Postrust {
    child: Child,
    pub url: String,
}

impl Drop for Postrust {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

async fn start_with(bin: &PathBuf, db_url: &str, schema: &str, env: &[(&str, &str)]) -> Postrust {
    let port = free_port();
    let child = Command::new(bin)
        .envs(env.iter().copied())
        .env("PGRST_DB_CHANNEL_ENABLED", "true")
        .env("PGRST_DB_CHANNEL", schema)
        .env("DATABASE_URL", db_url)
        .env("PGRST_DB_SCHEMAS", schema)
        .env("PGRST_DB_ANON_ROLE", ANON_ROLE)
        .env("PGRST_COMPAT_MODE", "true")
        .env("PGRST_SERVER_PORT", port.to_string())
        .env("PGRST_SERVER_HOST", "127.0.0.1")
        .env("PGRST_JWT_SECRET", JWT_SECRET)
        .env("PGRST_LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http.get(format!("{url}/")).send().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "postrust did not start on {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Postrust { child, url }
}

/// A token for `role` valid for an hour, with `claims` added.
pub fn token_with(role: &str, claims: serde_json::Value) -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    let mut body = json!({"role": role, "exp": exp});
    if let (Some(b), Some(c)) = (body.as_object_mut(), claims.as_object()) {
        b.extend(c.clone());
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &body,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("a signed token")
}

/// A token for `role` valid for an hour.
pub fn token(role: &str) -> String {
    token_with(role, json!({}))
}
