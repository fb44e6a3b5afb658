#![doc = include_str!("../README.md")]

mod driver;
mod error;
mod value;

use std::path::Path;
use std::sync::Arc;

use sqlx::sqlite::SqlitePool;
use truststream_core_db::sql::engine::{self, SqlState};

use crate::driver::{DIALECT, INFO};
use truststream_core_db::{ChangeFeed, Database, DbRegistry, DbResult};

/// Type name under which [`register`] adds the provider.
pub const TYPE_NAME: &str = "sqlite";

/// The table where the provider keeps each table's
/// [`TableSchema`](truststream_core_db::TableSchema) (as JSON),
/// so values decode back to their declared types.
pub const SCHEMA_TABLE: &str = engine::SCHEMA_TABLE;

/// Configuration of the SQLite provider (every field optional).
///
/// ```
/// let cfg: truststream_db_sqlite::SqliteConfig =
///     serde_json::from_value(serde_json::json!({"path": ":memory:"})).unwrap();
/// assert_eq!(cfg.path, ":memory:");
/// assert_eq!(cfg.busy_timeout_ms, 5_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// Database file (parent directories are created); `":memory:"` for a
    /// private in-memory database (one connection, gone when the provider is
    /// dropped or disconnected). Default `./data/truststream.db`.
    pub path: String,
    /// Largest number of pooled connections (default 8; always 1 for
    /// `:memory:`).
    pub max_connections: u32,
    /// Connections kept open when idle (default 0).
    pub min_connections: u32,
    /// How long a call waits for a free connection before failing with
    /// `Unavailable` (default 5000 ms).
    pub acquire_timeout_ms: u64,
    /// Idle connections above `min_connections` are closed after this long
    /// (default 600000 ms; `null`: never).
    pub idle_timeout_ms: Option<u64>,
    /// How long a statement waits for another writer's lock before failing
    /// with `Unavailable` (default 5000 ms).
    pub busy_timeout_ms: u64,
    /// Changes buffered per change-feed subscriber (default 1024; at least 1).
    pub change_feed_capacity: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: "./data/truststream.db".to_string(),
            max_connections: 8,
            min_connections: 0,
            acquire_timeout_ms: 5_000,
            idle_timeout_ms: Some(600_000),
            busy_timeout_ms: 5_000,
            change_feed_capacity: 1024,
        }
    }
}

impl SqliteConfig {
    /// A configuration for a private in-memory database.
    pub fn in_memory() -> Self {
        SqliteConfig {
            path: ":memory:".to_string(),
            ..Self::default()
        }
    }

    /// A configuration for the database file at `path`.
    pub fn file(path: impl AsRef<Path>) -> Self {
        SqliteConfig {
            path: path.as_ref().to_string_lossy().into_owned(),
            ..Self::default()
        }
    }

    fn is_memory(&self) -> bool {
        self.path == ":memory:"
    }
}

/// The SQLite database provider. See the crate documentation.
///
/// Its [`Database`] implementation is core-db's shared SQL engine
/// (`truststream_core_db::sql::engine`) over this type's
/// [`SqlProvider`](truststream_core_db::sql::engine::SqlProvider).
pub struct SqliteDatabase {
    config: SqliteConfig,
    /// The pool, the schema cache and the statement cache.
    sql: SqlState<SqlitePool>,
    /// Serializes this process's writes (SQLite has one writer at a time
    /// anyway), so the change feed publishes in commit order; holds the
    /// connection they run on.
    writer: Arc<tokio::sync::Mutex<driver::Writer>>,
    changes: ChangeFeed,
    /// Built read-only ([`SqliteDatabase::open_with`]): opening creates
    /// nothing (no file, no directory, no bookkeeping table).
    read_only: bool,
}

impl std::fmt::Debug for SqliteDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDatabase")
            .field("config", &self.config)
            .field("connected", &self.sql.pool().is_some())
            .finish_non_exhaustive()
    }
}

impl SqliteDatabase {
    /// Opens (creating if needed) the database `config` describes.
    pub async fn open(config: SqliteConfig) -> DbResult<Self> {
        Self::open_with(config, truststream_core::BuildOptions::default()).await
    }

    /// [`SqliteDatabase::open`], told how to build. Read-only
    /// ([`truststream_core::BuildOptions::read_only`], `truststream
    /// health`): a missing file is an error naming it (nothing is
    /// created: no file, no directory, no bookkeeping table) and the
    /// journal mode is left as the file has it.
    pub async fn open_with(
        config: SqliteConfig,
        options: truststream_core::BuildOptions,
    ) -> DbResult<Self> {
        let changes = ChangeFeed::new(config.change_feed_capacity);
        let db = SqliteDatabase {
            config,
            sql: SqlState::new(INFO, DIALECT),
            writer: Arc::new(tokio::sync::Mutex::new(driver::Writer::new())),
            changes,
            read_only: options.read_only,
        };
        db.connect().await?;
        Ok(db)
    }

    /// A private in-memory database.
    pub async fn in_memory() -> DbResult<Self> {
        Self::open(SqliteConfig::in_memory()).await
    }

    /// The configuration in use.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }
}

/// Registers the provider under [`TYPE_NAME`] (`"sqlite"`), configured by
/// [`SqliteConfig`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let mut reg = truststream_core_db::DbRegistry::new("database");
/// truststream_db_sqlite::register(&mut reg);
/// let db = reg.build("sqlite", serde_json::json!({"path": ":memory:"}), ()).await.unwrap();
/// assert_eq!(db.info().name, "sqlite");
/// # });
/// ```
pub fn register(reg: &mut DbRegistry) {
    reg.register_with_options(TYPE_NAME, |cfg, (), options| async move {
        let cfg: SqliteConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        Ok(Arc::new(SqliteDatabase::open_with(cfg, options).await?) as Arc<dyn Database>)
    });
}

#[cfg(test)]
mod tests;
