//! Test support (feature `testing`): a scratch schema per test on the
//! server at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! so tests run in parallel against one server and leave nothing behind.
//!
//! Under `CI=true` a server that cannot be reached is an error (the run
//! fails); elsewhere [`server`] returns `None` after printing what to start,
//! and the caller skips.
//!
//! Tests that stop, crash or restart the server use a [`PrivateCluster`]
//! of their own instead of the shared server; tests of the
//! transaction-mode pooler mode (`pooler = "transaction"`) put a private
//! [`PgBouncer`] in front of the server.

mod cluster;
mod pgbouncer;

pub use cluster::PrivateCluster;
pub use pgbouncer::PgBouncer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::Rng as _;
use sqlx::Connection as _;
use truststream_core_db::{DbResult, Error};

use crate::{PgConfig, PgDatabase};

/// Runs `statements` in order on a connection of their own to the server
/// of `config` (as the URL's user, normally the superuser): setup that a
/// provider does not do itself, such as roles, grants and policies.
///
/// # Panics
/// When the connection or a statement fails (test setup).
pub async fn admin(config: &PgConfig, statements: &[String]) {
    let mut c = match sqlx::PgConnection::connect(config.url.expose()).await {
        Ok(c) => c,
        Err(e) => panic!("connecting for test setup: {e}"),
    };
    for s in statements {
        if let Err(e) = sqlx::query(s).execute(&mut c).await {
            panic!("{s}: {e}");
        }
    }
    let _ = c.close().await;
}

/// `CREATE ROLE name NOLOGIN` unless the role exists, as a statement for
/// [`admin`]. Roles are cluster-wide: concurrent tests making the same role
/// do not fail. `name` must be a plain identifier (it is not quoted).
pub fn ensure_role(name: &str) -> String {
    format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN \
             CREATE ROLE {name} NOLOGIN; \
           END IF; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )
}

/// Whether no provider (of any process) watches `schema.table` through the
/// change feed: no session holds the table's watch lock, so the next
/// subscriber to leave drops the trigger. A closed provider's session lets
/// go of its locks a moment after the client closed it; a test waits on
/// this instead of sleeping.
pub async fn watch_lock_free(
    c: &mut sqlx::PgConnection,
    schema: &str,
    table: &str,
) -> Result<bool, sqlx::Error> {
    crate::feed::watch_lock_free(c, schema, table).await
}

/// The server URL tests use: `DATABASE_URL`, else the local default.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Whether tests run under CI, where a missing server fails: the
/// workspace's one rule, [`truststream_core::in_ci`].
pub fn in_ci() -> bool {
    truststream_core::in_ci()
}

/// Whether a server answers at `url`: `Err` says why not.
pub async fn probe(url: &str) -> Result<(), String> {
    match sqlx::PgConnection::connect(url).await {
        Ok(c) => {
            let _ = c.close().await;
            Ok(())
        }
        Err(e) => Err(format!(
            "PostgreSQL is not reachable at DATABASE_URL or 127.0.0.1:5432 ({e}); start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )),
    }
}

/// The URL of a reachable server; `None` (with a message on stderr) when
/// there is none outside CI. Panics under CI when the server is missing:
/// a test that needs PostgreSQL never passes without it.
pub async fn server() -> Option<String> {
    let url = database_url();
    match probe(&url).await {
        Ok(()) => Some(url),
        Err(why) if in_ci() => panic!("PostgreSQL is required under CI=true: {why}"),
        Err(why) => {
            eprintln!("skipping: {why}");
            None
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh schema name: `ts_<tag>_<pid>_<n>_<random>`.
pub fn scratch_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::thread_rng().gen();
    let mut name = format!("ts_{tag}_{}_{n}_{r:08x}", std::process::id());
    name.truncate(63);
    name
}

/// Scratch schemas made by this process, dropped by [`Scratch::cleanup`].
#[derive(Debug, Default)]
pub struct Scratch {
    url: String,
    schemas: Mutex<Vec<String>>,
}

impl Scratch {
    /// Scratch schemas on the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Scratch {
            url: url.into(),
            schemas: Mutex::new(Vec::new()),
        }
    }

    /// A configuration for a fresh schema (remembered for cleanup).
    pub fn config(&self, tag: &str) -> PgConfig {
        let name = scratch_name(tag);
        crate::lock(&self.schemas).push(name.clone());
        PgConfig::new(self.url.clone()).with_schema(name)
    }

    /// A provider on a fresh schema.
    pub async fn database(&self, tag: &str) -> DbResult<PgDatabase> {
        PgDatabase::open(self.config(tag)).await
    }

    /// Drops every schema made so far.
    pub async fn cleanup(&self) -> DbResult<()> {
        let names: Vec<String> = std::mem::take(&mut *crate::lock(&self.schemas));
        if names.is_empty() {
            return Ok(());
        }
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .map_err(crate::error::map)?;
        for n in names {
            truststream_core_db::ident::validate(&n)?;
            sqlx::query(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                truststream_core_db::ident::quote(&n)
            ))
            .execute(&mut conn)
            .await
            .map_err(|e| {
                Error::internal(format!("cannot drop scratch schema {n}"))
                    .with_source(crate::error::map(e))
            })?;
        }
        let _ = conn.close().await;
        Ok(())
    }
}
