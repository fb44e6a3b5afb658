#![doc = include_str!("../README.md")]

mod error;
mod feed;
#[cfg(feature = "testing")]
pub mod testing;
mod value;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Either, Executor as _, Postgres, Statement as _, Transaction};
use truststream_core::Secret;
use truststream_core_db::sql::compile::{self, SqlDialect, Statement};
use truststream_core_db::sql::keyed::StatementCache;
use truststream_core_db::sql::rewrite_named;
use truststream_core_db::sql::write::{
    is_single_insert, normalize_defaults, plan_alter, reserved, RowWriter, SqlTransaction,
};
use truststream_core_db::{
    ident, AlterTable, ChangeFeed, ChangeStream, ColumnType, Database, DbCapabilities, DbRegistry,
    DbResult, Error, ErrorKind, Filter, Health, IndexSpec, Operation, OperationOutput, Params,
    ProviderInfo, Query, Row, TableSchema, Value,
};

use crate::value::{arguments, decode_row};

/// Type name under which [`register`] adds the provider.
pub const TYPE_NAME: &str = "postgres";

/// The table where the provider keeps each table's [`TableSchema`] (as JSON),
/// in the configured schema.
pub const SCHEMA_TABLE: &str = "_truststream_schema";

const DIALECT: SqlDialect = SqlDialect::Postgres;

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
pub struct PgDatabase {
    config: PgConfig,
    pool: Mutex<Option<PgPool>>,
    /// Table schemas by name (a cache of [`SCHEMA_TABLE`]).
    schemas: Mutex<HashMap<String, TableSchema>>,
    /// Compiled `get`, insert and update-by-key statements by shape
    /// (reused while the table's schema stays).
    statements: StatementCache,
    feed: feed::Feed,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("config", &self.config)
            .field("connected", &self.current_pool().is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data is a cache or a pool handle: always consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PgDatabase {
    /// Connects to the server `config` describes (creating the schema and
    /// the provider's metadata table when missing). A server that cannot be
    /// reached within the acquire timeout is `Unavailable`.
    pub async fn open(config: PgConfig) -> DbResult<Self> {
        config
            .validate()
            .map_err(|e| e.with_operation("db.connect"))?;
        let feed = feed::Feed::new(
            ChangeFeed::new(config.change_feed_capacity),
            config.change_channel.clone(),
        );
        let db = PgDatabase {
            config,
            pool: Mutex::new(None),
            schemas: Mutex::new(HashMap::new()),
            statements: StatementCache::new(DIALECT),
            feed,
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
        self.current_pool()
    }

    fn current_pool(&self) -> Option<PgPool> {
        lock(&self.pool).clone()
    }

    fn pool_for(&self, op: &'static str) -> DbResult<PgPool> {
        self.current_pool().ok_or_else(|| {
            Error::unavailable("the PostgreSQL database is disconnected; call connect() first")
                .with_operation(op)
        })
    }

    fn connect_options(&self) -> DbResult<PgConnectOptions> {
        let mut opts = PgConnectOptions::from_str(self.config.url.expose()).map_err(|e| {
            // The URL may hold a password: say what is wrong, not what it is.
            Error::invalid_input(format!("the PostgreSQL url is invalid: {}", redact(&e)))
        })?;
        // Backslashes are ordinary characters in '...' literals on every
        // connection, whatever a role, database or server setting says (the
        // DDL literals are escape strings that read the same either way:
        // this is the second belt).
        let mut options: Vec<(&str, String)> =
            vec![("standard_conforming_strings", "on".to_string())];
        if let Some(s) = &self.config.schema {
            options.push(("search_path", ident::quote(s)));
        }
        if let Some(ms) = self.config.statement_timeout_ms.filter(|ms| *ms > 0) {
            options.push(("statement_timeout", ms.to_string()));
        }
        opts = opts.options(options);
        Ok(opts.application_name("truststream"))
    }

    async fn make_pool(&self) -> DbResult<PgPool> {
        let c = &self.config;
        let opts = self.connect_options()?;
        let pool = PgPoolOptions::new()
            .max_connections(c.max_connections.max(1))
            .min_connections(c.min_connections.min(c.max_connections.max(1)))
            .acquire_timeout(Duration::from_millis(c.acquire_timeout_ms.max(1)))
            .idle_timeout(c.idle_timeout_ms.map(Duration::from_millis))
            // A connection broken by a server restart is found and replaced
            // before a caller gets it.
            .test_before_acquire(true)
            .connect_with(opts)
            .await
            .map_err(error::map)?;
        if let Some(s) = &c.schema {
            // Concurrent first starts may race on CREATE SCHEMA: a conflict
            // means another one made it.
            match sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident::quote(s)))
                .execute(&pool)
                .await
                .map_err(error::map)
            {
                Err(e) if e.kind() != ErrorKind::Conflict => return Err(e),
                _ => {}
            }
        }
        for ddl in feed::bookkeeping_ddl() {
            match sqlx::query(&ddl).execute(&pool).await.map_err(error::map) {
                Err(e) if e.kind() != ErrorKind::Conflict => return Err(e),
                _ => {}
            }
        }
        let (current,): (Option<String>,) = sqlx::query_as("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(error::map)?;
        let current = current.ok_or_else(|| {
            Error::invalid_input("the connection's search_path names no existing schema")
        })?;
        self.feed.set_schema(current);
        Ok(pool)
    }

    /// The schema of `table`, from the cache or else [`SCHEMA_TABLE`].
    async fn schema_of(&self, table: &str) -> DbResult<TableSchema> {
        ident::table(table)?;
        if let Some(s) = lock(&self.schemas).get(table) {
            return Ok(s.clone());
        }
        let pool = self.pool_for("db.schema")?;
        let schema = load_schema(&pool, table).await?;
        lock(&self.schemas).insert(table.to_string(), schema.clone());
        Ok(schema)
    }

    async fn catalog_for(
        &self,
        table: &str,
        query: &Query,
    ) -> DbResult<HashMap<String, TableSchema>> {
        let mut cat = HashMap::new();
        cat.insert(table.to_string(), self.schema_of(table).await?);
        for j in &query.joins {
            if !cat.contains_key(&j.table) {
                cat.insert(j.table.clone(), self.schema_of(&j.table).await?);
            }
        }
        Ok(cat)
    }

    /// Starts a write. End it with [`PgDatabase::finish`].
    ///
    /// `Mode::Single` is for a write that is one statement (one `INSERT`,
    /// `UPDATE` or `DELETE ... RETURNING`): PostgreSQL runs it atomically on
    /// its own, so it needs no `BEGIN`/`COMMIT` round trips. Anything that
    /// may run more than one statement is `Mode::Transaction`.
    async fn begin(&self, op: &'static str, mode: Mode) -> DbResult<Writer<'_>> {
        let pool = self.pool_for(op)?;
        let exec = match mode {
            Mode::Transaction => Exec::Tx(
                pool.begin()
                    .await
                    .map_err(|e| error::map(e).with_operation(op))?,
            ),
            Mode::Single => Exec::Conn(
                pool.acquire()
                    .await
                    .map_err(|e| error::map(e).with_operation(op))?,
            ),
        };
        // The change feed comes from the database's own triggers (it sees
        // every writer), so the write paths record nothing.
        Ok(RowWriter::without_changes(PgTx { db: self, exec }))
    }

    /// Commits when `result` is `Ok`, else rolls back.
    async fn finish<T>(&self, op: &'static str, w: Writer<'_>, result: DbResult<T>) -> DbResult<T> {
        let (PgTx { exec, .. }, _) = w.into_parts();
        match (exec, result) {
            (Exec::Tx(tx), Ok(v)) => {
                tx.commit()
                    .await
                    .map_err(|e| error::map(e).with_operation(op))?;
                Ok(v)
            }
            (Exec::Tx(tx), Err(e)) => {
                // If the rollback fails too, the connection is dropped and
                // the server rolls back.
                let _ = tx.rollback().await;
                Err(e.with_operation(op))
            }
            (Exec::Conn(_), r) => r.map_err(|e| e.with_operation(op)),
        }
    }

    /// Runs DDL and the metadata change in one transaction (PostgreSQL DDL
    /// is transactional), then updates the schema cache.
    async fn ddl(
        &self,
        op: &'static str,
        table: &str,
        statements: Vec<String>,
        new_schema: Option<TableSchema>,
    ) -> DbResult<()> {
        let mut w = self.begin(op, Mode::Transaction).await?;
        let r = async {
            let tx = w.tx().conn();
            for s in &statements {
                sqlx::query(s).execute(&mut *tx).await.map_err(error::map)?;
            }
            let meta = ident::quote(SCHEMA_TABLE);
            match &new_schema {
                Some(schema) => {
                    let json = serde_json::to_string(schema).map_err(|e| {
                        Error::internal("cannot serialize a table schema").with_source(e)
                    })?;
                    sqlx::query(&format!(
                        "INSERT INTO {meta} (name, schema) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET schema = excluded.schema"
                    ))
                    .bind(table)
                    .bind(json)
                    .execute(&mut *tx)
                    .await
                    .map_err(error::map)?;
                }
                None => {
                    sqlx::query(&format!("DELETE FROM {meta} WHERE name = $1"))
                        .bind(table)
                        .execute(&mut *tx)
                        .await
                        .map_err(error::map)?;
                }
            }
            Ok(())
        }
        .await;
        self.finish(op, w, r).await?;
        let mut cache = lock(&self.schemas);
        match new_schema {
            Some(s) => cache.insert(table.to_string(), s),
            None => cache.remove(table),
        };
        Ok(())
    }

    async fn read_rows(&self, op: &'static str, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        let pool = self.pool_for(op)?;
        let cat = self.catalog_for(table, query).await?;
        let s = compile::select(DIALECT, &cat, table, query)?;
        let args = arguments(s.statement.binds)?;
        let q = sqlx::query_with(&s.statement.sql, args);
        // A one-row read skips the driver's row streaming.
        let rows = if query.limit == Some(1) {
            Vec::from_iter(q.fetch_optional(&pool).await.map_err(error::map)?)
        } else {
            q.fetch_all(&pool).await.map_err(error::map)?
        };
        let hints: Vec<ColumnType> = s.columns.iter().map(|c| c.ty).collect();
        rows.iter()
            .map(|r| decode_row(r, |i, _| hints.get(i).copied()))
            .collect()
    }
}

/// Removes anything that looks like a URL from an error message (sqlx's
/// configuration errors may quote the URL, password included).
fn redact(e: &sqlx::Error) -> String {
    let s = e.to_string();
    match s.find("://") {
        Some(_) => "check its syntax (postgres://user:password@host:port/database)".to_string(),
        None => s,
    }
}

/// Reads a table's schema from [`SCHEMA_TABLE`]; `NotFound` when there is none.
async fn load_schema<'e, E>(executor: E, table: &str) -> DbResult<TableSchema>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let found: Option<(String,)> = sqlx::query_as(&format!(
        "SELECT schema FROM {} WHERE name = $1",
        ident::quote(SCHEMA_TABLE)
    ))
    .bind(table)
    .fetch_optional(executor)
    .await
    .map_err(error::map)?;
    let Some((json,)) = found else {
        return Err(compile::missing_table(table));
    };
    serde_json::from_str(&json).map_err(|e| {
        Error::internal(format!("the stored schema of table {table} is unreadable")).with_source(e)
    })
}

/// How a write runs (see [`PgDatabase::begin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    Transaction,
}

enum Exec {
    Tx(Transaction<'static, Postgres>),
    Conn(PoolConnection<Postgres>),
}

/// A write in progress: a transaction, or one connection for a
/// single-statement write.
struct PgTx<'a> {
    db: &'a PgDatabase,
    exec: Exec,
}

impl PgTx<'_> {
    fn conn(&mut self) -> &mut PgConnection {
        match &mut self.exec {
            Exec::Tx(tx) => tx,
            Exec::Conn(c) => c,
        }
    }
}

type Writer<'a> = RowWriter<PgTx<'a>>;

#[async_trait]
impl SqlTransaction for PgTx<'_> {
    fn dialect(&self) -> SqlDialect {
        DIALECT
    }

    fn statement_cache(&self) -> Option<&StatementCache> {
        Some(&self.db.statements)
    }

    async fn schema(&mut self, table: &str) -> DbResult<TableSchema> {
        ident::table(table)?;
        if let Some(s) = lock(&self.db.schemas).get(table) {
            return Ok(s.clone());
        }
        let schema = load_schema(self.conn(), table).await?;
        lock(&self.db.schemas).insert(table.to_string(), schema.clone());
        Ok(schema)
    }

    async fn fetch(&mut self, stmt: Statement, schema: &TableSchema) -> DbResult<Vec<Row>> {
        let args = arguments(stmt.binds)?;
        let rows = sqlx::query_with(&stmt.sql, args)
            .fetch_all(self.conn())
            .await
            .map_err(error::map)?;
        rows.iter()
            .map(|r| decode_row(r, |_, name| schema.find(name).map(|c| c.ty)))
            .collect()
    }

    async fn fetch_optional(
        &mut self,
        stmt: Statement,
        schema: &TableSchema,
    ) -> DbResult<Option<Row>> {
        let args = arguments(stmt.binds)?;
        let row = sqlx::query_with(&stmt.sql, args)
            .fetch_optional(self.conn())
            .await
            .map_err(error::map)?;
        row.as_ref()
            .map(|r| decode_row(r, |_, name| schema.find(name).map(|c| c.ty)))
            .transpose()
    }
}

#[async_trait]
impl Database for PgDatabase {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> DbCapabilities {
        let mut c = DbCapabilities::none();
        c.transactions = true;
        c.raw_sql = true;
        c.sql_dialect = Some(DIALECT);
        c.joins = true;
        c.aggregates = true;
        c.schema = true;
        c.change_feed = true;
        c.change_feed_scope = Some(truststream_core_db::ChangeFeedScope::Database);
        c.unique_constraints = true;
        c.max_bind_params = Some(DIALECT.max_binds());
        c
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        let Some(pool) = self.current_pool() else {
            return Health::unhealthy(start.elapsed(), "disconnected; call connect()");
        };
        let probe = tokio::time::timeout(
            Duration::from_millis(self.config.acquire_timeout_ms.max(1)),
            sqlx::query("SELECT 1").execute(&pool),
        )
        .await;
        match probe {
            Ok(Ok(_)) => Health::healthy(start.elapsed()),
            Ok(Err(e)) => Health::unhealthy(start.elapsed(), error::map(e).message().to_string()),
            Err(_) => Health::unhealthy(start.elapsed(), "PostgreSQL did not answer in time"),
        }
    }

    async fn connect(&self) -> DbResult<()> {
        if self.current_pool().is_some() {
            return Ok(());
        }
        let pool = self
            .make_pool()
            .await
            .map_err(|e| e.with_operation("db.connect"))?;
        let mut slot = lock(&self.pool);
        if slot.is_none() {
            *slot = Some(pool);
        }
        Ok(())
    }

    async fn disconnect(&self) -> DbResult<()> {
        self.feed.stop();
        let pool = lock(&self.pool).take();
        if let Some(p) = pool {
            p.close().await;
        }
        lock(&self.schemas).clear();
        Ok(())
    }

    async fn create(&self, table: &str, row: Row) -> DbResult<Row> {
        let mut w = self.begin("db.create", Mode::Single).await?;
        let r = match w.create_many(table, std::slice::from_ref(&row)).await {
            Ok(mut rows) => rows
                .pop()
                .ok_or_else(|| Error::internal("insert returned no row")),
            Err(e) => Err(e),
        };
        self.finish("db.create", w, r).await
    }

    async fn read(&self, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        self.read_rows("db.read", table, query)
            .await
            .map_err(|e| e.with_operation("db.read"))
    }

    async fn get(&self, table: &str, id: &Value) -> DbResult<Option<Row>> {
        let run = async {
            let schema = self.schema_of(table).await?;
            let pool = self.pool_for("db.get")?;
            let select = self.statements.select_by_key(&schema, id)?;
            let args = arguments(select.statement.binds)?;
            let row = sqlx::query_with(&select.statement.sql, args)
                .fetch_optional(&pool)
                .await
                .map_err(error::map)?;
            row.as_ref()
                .map(|r| decode_row(r, |i, _| select.column_types.get(i).copied()))
                .transpose()
        };
        run.await.map_err(|e: Error| e.with_operation("db.get"))
    }

    async fn update(&self, table: &str, id: &Value, patch: Row) -> DbResult<Row> {
        let mut w = self.begin("db.update", Mode::Single).await?;
        let r = w.update(table, id, &patch).await;
        self.finish("db.update", w, r).await
    }

    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool> {
        let mut w = self.begin("db.delete", Mode::Single).await?;
        let r = w.delete(table, id).await;
        self.finish("db.delete", w, r).await
    }

    async fn create_many(&self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>> {
        if rows.is_empty() {
            ident::table(table).map_err(|e| e.with_operation("db.create_many"))?;
            self.schema_of(table)
                .await
                .map_err(|e| e.with_operation("db.create_many"))?;
            return Ok(Vec::new());
        }
        // One INSERT per chunk: more than one chunk needs a transaction.
        let schema = self
            .schema_of(table)
            .await
            .map_err(|e| e.with_operation("db.create_many"))?;
        let mode = if is_single_insert(DIALECT, &schema, &rows) {
            Mode::Single
        } else {
            Mode::Transaction
        };
        let mut w = self.begin("db.create_many", mode).await?;
        let r = w.create_many(table, &rows).await;
        self.finish("db.create_many", w, r).await
    }

    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64> {
        let mut w = self.begin("db.update_many", Mode::Single).await?;
        let r = w
            .update_where(table, filter, &patch)
            .await
            .map(|rows| rows.len() as u64);
        self.finish("db.update_many", w, r).await
    }

    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64> {
        let mut w = self.begin("db.delete_many", Mode::Single).await?;
        let r = w.delete_where(table, filter).await;
        self.finish("db.delete_many", w, r).await
    }

    async fn raw_query(&self, sql: &str, params: &Params) -> DbResult<Vec<Row>> {
        let run = async {
            let pool = self.pool_for("db.raw_query")?;
            let (sql, values) = rewrite_named(sql, params, DIALECT)?;
            let mut conn = pool.acquire().await.map_err(error::map)?;
            // Prepare first (cached per connection) so each parameter is
            // bound as the type PostgreSQL inferred for it.
            let stmt = (&mut *conn)
                .prepare_with(&sql, &[])
                .await
                .map_err(error::map)?;
            let types = match stmt.parameters() {
                Some(Either::Left(types)) => types.to_vec(),
                _ => Vec::new(),
            };
            if types.len() != values.len() {
                return Err(Error::invalid_input(format!(
                    "the statement takes {} parameters, {} were given",
                    types.len(),
                    values.len()
                )));
            }
            let args = value::raw_arguments(&values, &types)?;
            let rows = sqlx::query_with(&sql, args)
                .fetch_all(&mut *conn)
                .await
                .map_err(error::map)?;
            rows.iter()
                .map(|r| decode_row(r, |_, _| None))
                .collect::<DbResult<Vec<Row>>>()
        };
        run.await
            .map_err(|e: Error| e.with_operation("db.raw_query"))
    }

    async fn transaction(&self, operations: Vec<Operation>) -> DbResult<Vec<OperationOutput>> {
        let mut w = self.begin("db.transaction", Mode::Transaction).await?;
        let r = w.apply_all(&operations).await;
        self.finish("db.transaction", w, r).await
    }

    async fn create_table(&self, schema: &TableSchema) -> DbResult<()> {
        let run = async {
            schema.validate()?;
            reserved(&schema.name)?;
            let normalized = normalize_defaults(schema)?;
            match self.schema_of(&schema.name).await {
                Ok(_) if schema.if_not_exists => return Ok(()),
                Ok(_) => {
                    return Err(
                        Error::conflict(format!("table {} already exists", schema.name))
                            .with_context("table", schema.name.clone()),
                    )
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let mut statements = compile::create_table(DIALECT, &normalized)?;
            let watched = self.feed.watches(&schema.name).await;
            if watched {
                statements.push(feed::trigger_ddl(
                    self.feed.schema()?,
                    &schema.name,
                    &self.config.change_channel,
                ));
            }
            let created = self
                .ddl(
                    "db.create_table",
                    &schema.name,
                    statements,
                    Some(normalized),
                )
                .await;
            match created {
                // Another process created it between the check and the DDL.
                Err(e) if e.kind() == ErrorKind::Conflict && schema.if_not_exists => {
                    lock(&self.schemas).remove(&schema.name);
                    self.schema_of(&schema.name)
                        .await
                        .map(|_| ())
                        .map_err(|_| e)
                }
                Ok(()) if watched => {
                    // Its trigger went in with it: hold it like the others.
                    let pool = self.pool_for("db.create_table")?;
                    self.feed.created(&pool, &schema.name).await
                }
                r => r,
            }
        };
        run.await
            .map_err(|e: Error| e.with_operation("db.create_table"))
    }

    async fn drop_table(&self, table: &str, if_exists: bool) -> DbResult<()> {
        let run = async {
            ident::table(table)?;
            reserved(table)?;
            lock(&self.schemas).remove(table);
            match self.schema_of(table).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound && if_exists => return Ok(()),
                Err(e) => return Err(e),
            }
            let stmt = compile::drop_table(table, false)?;
            self.ddl("db.drop_table", table, vec![stmt], None).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("db.drop_table"))
    }

    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> DbResult<()> {
        let run = async {
            ident::table(table)?;
            reserved(table)?;
            lock(&self.schemas).remove(table);
            let (schema, steps) = plan_alter(&self.schema_of(table).await?, changes)?;
            let mut statements = Vec::new();
            for step in &steps {
                statements.extend(compile::alter_table(DIALECT, table, &step.to_change())?);
            }
            self.ddl("db.alter_table", table, statements, Some(schema))
                .await
        };
        run.await.map_err(|e: Error| {
            let e = e
                .with_operation("db.alter_table")
                .with_context("table", table.to_string());
            // PostgreSQL refuses a NOT NULL column without a default on a
            // table with rows (23502); say so as the memory provider does.
            if e.kind() == ErrorKind::InvalidInput && e.message().contains("contains null values")
            {
                Error::invalid_input(format!(
                    "cannot add a NOT NULL column without a default to table {table}, which has rows"
                ))
                .with_operation("db.alter_table")
                .with_context("table", table.to_string())
                .with_source(e)
            } else {
                e
            }
        })
    }

    async fn create_index(&self, index: &IndexSpec) -> DbResult<()> {
        let run = async {
            index.validate()?;
            reserved(&index.table)?;
            let schema = self.schema_of(&index.table).await?;
            for c in &index.columns {
                if schema.find(c).is_none() {
                    return Err(Error::invalid_input(format!(
                        "table {} has no column {c}",
                        index.table
                    )));
                }
            }
            let stmt = compile::create_index(index)?;
            self.ddl("db.create_index", &index.table, vec![stmt], Some(schema))
                .await
        };
        run.await
            .map_err(|e: Error| e.with_operation("db.create_index"))
    }

    async fn subscribe_changes(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        let run = async {
            let pool = self.pool_for("db.subscribe_changes")?;
            let tables = match table {
                Some(t) => {
                    self.schema_of(t).await?;
                    vec![t.to_string()]
                }
                None => {
                    let names: Vec<(String,)> =
                        sqlx::query_as(&format!("SELECT name FROM {}", ident::quote(SCHEMA_TABLE)))
                            .fetch_all(&pool)
                            .await
                            .map_err(error::map)?;
                    names.into_iter().map(|(n,)| n).collect()
                }
            };
            self.feed
                .subscribe(&pool, table.map(str::to_string), tables)
                .await
        };
        run.await
            .map_err(|e: Error| e.with_operation("db.subscribe_changes"))
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        self.feed.stop();
    }
}

/// Adds the provider to `registry` under [`TYPE_NAME`]; its configuration is
/// [`PgConfig`].
pub fn register(reg: &mut DbRegistry) {
    reg.register(TYPE_NAME, |cfg, ()| async move {
        let cfg: PgConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        Ok(Arc::new(PgDatabase::open(cfg).await?) as Arc<dyn Database>)
    });
}
