#![doc = include_str!("../README.md")]

mod driver;
mod error;
mod feed;
#[cfg(feature = "testing")]
pub mod testing;
mod value;

use std::sync::{Arc, Mutex};

use sqlx::postgres::PgPool;
use truststream_core::{BuildOptions, Secret};
use truststream_core_db::sql::engine::{self, SqlState};

use crate::driver::{DIALECT, INFO};
use truststream_core_db::{ident, ChangeFeed, Database, DbRegistry, DbResult, TableSchema};

/// Type name under which [`register`] adds the provider.
pub const TYPE_NAME: &str = "postgres";

/// The table where the provider keeps each table's [`TableSchema`] (as JSON),
/// in the configured schema.
pub const SCHEMA_TABLE: &str = engine::SCHEMA_TABLE;

/// Configuration of the PostgreSQL provider (every field optional).
///
/// ```
/// let cfg: truststream_db_postgres::PgConfig = serde_json::from_value(serde_json::json!({
///     "url": "postgres://app@db.internal:5432/app",
///     "schema": "tenant_a",
///     "max_connections": 20,
/// }))
/// .unwrap();
/// assert_eq!(cfg.max_connections, 20);
/// assert!(!format!("{cfg:?}").contains("db.internal"), "the URL is a secret");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgConfig {
    /// Connection URL (`postgres://user:password@host:port/database?...`). A
    /// secret: never printed. Default `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: Secret,
    /// The schema tables live in (set as the connections' `search_path`,
    /// created when missing). `None`: the server's default (`public`).
    pub schema: Option<String>,
    /// Largest number of pooled connections (default 10).
    pub max_connections: u32,
    /// Connections kept open when idle (default 0).
    pub min_connections: u32,
    /// How long a call waits for a connection (a free one, or a new one from
    /// a server that may be down) before failing with `Unavailable`
    /// (default 5000 ms).
    pub acquire_timeout_ms: u64,
    /// Idle connections above `min_connections` are closed after this long
    /// (default 600000 ms; `null`: never).
    pub idle_timeout_ms: Option<u64>,
    /// Statements running longer are cancelled by the server and fail with
    /// `Timeout` (default 30000 ms; `null` or 0: no limit).
    pub statement_timeout_ms: Option<u64>,
    /// Changes buffered per change-feed subscriber (default 1024).
    pub change_feed_capacity: usize,
    /// The NOTIFY channel the change-feed triggers use (default
    /// `truststream_changes`).
    pub change_channel: String,
    /// What `url` points at: the server itself (`"none"`, the default), or
    /// a transaction-mode pooler (`"transaction"`: pgbouncer with
    /// `pool_mode = transaction`, Supabase's Supavisor on port 6543). With
    /// a pooler, nothing outlives a transaction: no named prepared
    /// statements, every operation in an explicit transaction, the session
    /// settings (`schema`, `statement_timeout_ms`) applied with `SET LOCAL`
    /// in each; and no change feed (`LISTEN` needs a session of its own).
    pub pooler: Pooler,
}

/// What a [`PgConfig::url`] points at (`pooler` in the configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// The PostgreSQL server, or a pooler in session mode: connections are
    /// sessions of their own.
    #[default]
    None,
    /// A pooler in transaction mode: a server connection is the client's
    /// for one transaction only.
    Transaction,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/postgres"),
            schema: None,
            max_connections: 10,
            min_connections: 0,
            acquire_timeout_ms: 5_000,
            idle_timeout_ms: Some(600_000),
            statement_timeout_ms: Some(30_000),
            change_feed_capacity: 1024,
            change_channel: "truststream_changes".to_string(),
            pooler: Pooler::None,
        }
    }
}

impl PgConfig {
    /// The default configuration for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: Secret::new(url),
            ..Self::default()
        }
    }

    /// The same configuration with tables in `schema`.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The same configuration for a URL that points at `pooler`.
    pub fn with_pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = pooler;
        self
    }

    fn validate(&self) -> DbResult<()> {
        if let Some(s) = &self.schema {
            ident::validate(s).map_err(|e| e.with_context("setting", "schema"))?;
        }
        ident::validate(&self.change_channel)
            .map_err(|e| e.with_context("setting", "change_channel"))?;
        Ok(())
    }
}

/// The PostgreSQL database provider. See the crate documentation.
///
/// Its [`Database`] implementation is core-db's shared SQL engine
/// (`truststream_core_db::sql::engine`) over this type's
/// [`SqlProvider`](truststream_core_db::sql::engine::SqlProvider).
pub struct PgDatabase {
    config: PgConfig,
    /// The pool, the schema cache and the statement cache.
    sql: SqlState<driver::Pool>,
    feed: feed::Feed,
    /// Built read-only ([`PgDatabase::open_with`]): connecting creates
    /// nothing (no schema, no bookkeeping tables).
    read_only: bool,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("config", &self.config)
            .field("connected", &self.sql.pool().is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data (the feed's task handle, the scratch schemas of
    // `testing`) is always consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PgDatabase {
    /// Connects to the server `config` describes (creating the schema and
    /// the provider's metadata table when missing). A server that cannot be
    /// reached within the acquire timeout is `Unavailable`.
    pub async fn open(config: PgConfig) -> DbResult<Self> {
        Self::open_with(config, BuildOptions::default()).await
    }

    /// [`PgDatabase::open`], told how to build. Read-only
    /// ([`BuildOptions::read_only`], `truststream health`): connecting
    /// creates neither the schema nor the provider's bookkeeping tables
    /// (a schema that does not exist fails to connect, naming the
    /// search path); reads and health checks work as usual.
    pub async fn open_with(config: PgConfig, options: BuildOptions) -> DbResult<Self> {
        config
            .validate()
            .map_err(|e| e.with_operation("db.connect"))?;
        let feed = feed::Feed::new(
            ChangeFeed::new(config.change_feed_capacity),
            config.change_channel.clone(),
        );
        let db = PgDatabase {
            config,
            sql: SqlState::new(INFO, DIALECT),
            feed,
            read_only: options.read_only,
        };
        db.connect().await?;
        Ok(db)
    }

    /// The configuration in use.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// The pool, for running SQL of your own beside the provider (for
    /// example in benchmarks or migrations). `None` when disconnected.
    pub fn pool(&self) -> Option<PgPool> {
        self.sql.pool().map(|p| p.pg)
    }
}

/// Reads a table's schema from [`SCHEMA_TABLE`]; `NotFound` when there is none.
pub(crate) async fn load_schema(pool: &PgPool, table: &str) -> DbResult<TableSchema> {
    engine::load_schema::<PgDatabase>(DIALECT, &driver::Pool::direct(pool.clone()), table).await
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        self.feed.stop();
    }
}

/// Adds the provider to `registry` under [`TYPE_NAME`]; its configuration is
/// [`PgConfig`].
pub fn register(reg: &mut DbRegistry) {
    reg.register_with_options(TYPE_NAME, |cfg, (), options| async move {
        let cfg: PgConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        Ok(Arc::new(PgDatabase::open_with(cfg, options).await?) as Arc<dyn Database>)
    });
}
