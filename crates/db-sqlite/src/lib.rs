#![doc = include_str!("../README.md")]

mod error;
mod value;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow,
};
use sqlx::{Column as _, Row as _, Sqlite, Transaction, TypeInfo as _, ValueRef as _};
use truststream_core_db::sql::compile::{self, Bind, SqlDialect, Statement};
use truststream_core_db::sql::keyed::StatementCache;
use truststream_core_db::sql::rewrite_named;
use truststream_core_db::sql::write::{
    is_single_insert, normalize_defaults, plan_alter, reserved, AlterStep, RowWriter,
    SqlTransaction,
};
use truststream_core_db::{
    ident, AlterTable, ChangeFeed, ChangeFeedScope, ChangeStream, ColumnType, Database,
    DbCapabilities, DbRegistry, DbResult, Error, Filter, Health, IndexSpec, Operation,
    OperationOutput, Params, ProviderInfo, Query, Row, RowChange, TableSchema, Value,
};

use crate::value::{decode, encode, Sv};

/// Type name under which [`register`] adds the provider.
pub const TYPE_NAME: &str = "sqlite";

/// The table where the provider keeps each table's [`TableSchema`] (as JSON),
/// so values decode back to their declared types.
pub const SCHEMA_TABLE: &str = "_truststream_schema";

const DIALECT: SqlDialect = SqlDialect::Sqlite;

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
pub struct SqliteDatabase {
    config: SqliteConfig,
    pool: Mutex<Option<SqlitePool>>,
    /// Table schemas by name (a cache of [`SCHEMA_TABLE`]).
    schemas: Mutex<HashMap<String, TableSchema>>,
    /// Compiled `get`, insert and update-by-key statements by shape
    /// (reused while the table's schema stays).
    statements: StatementCache,
    /// Serializes this process's writes (SQLite has one writer at a time
    /// anyway), so the change feed publishes in commit order.
    write_lock: tokio::sync::Mutex<()>,
    changes: ChangeFeed,
}

impl std::fmt::Debug for SqliteDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDatabase")
            .field("config", &self.config)
            .field("connected", &self.current_pool().is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data is a cache or a pool handle: always consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SqliteDatabase {
    /// Opens (creating if needed) the database `config` describes.
    pub async fn open(config: SqliteConfig) -> DbResult<Self> {
        let changes = ChangeFeed::new(config.change_feed_capacity);
        let db = SqliteDatabase {
            config,
            pool: Mutex::new(None),
            schemas: Mutex::new(HashMap::new()),
            statements: StatementCache::new(DIALECT),
            write_lock: tokio::sync::Mutex::new(()),
            changes,
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

    fn current_pool(&self) -> Option<SqlitePool> {
        lock(&self.pool).clone()
    }

    fn pool(&self, op: &'static str) -> DbResult<SqlitePool> {
        self.current_pool().ok_or_else(|| {
            Error::unavailable("the SQLite database is disconnected; call connect() first")
                .with_operation(op)
        })
    }

    async fn make_pool(&self) -> DbResult<SqlitePool> {
        let c = &self.config;
        let busy = Duration::from_millis(c.busy_timeout_ms);
        let mut opts = if c.is_memory() {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(error::map)?
        } else {
            let path = Path::new(&c.path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::unavailable(format!(
                        "cannot create the directory {} for the SQLite database: {e}",
                        parent.display()
                    ))
                    .with_source(e)
                })?;
            }
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        };
        opts = opts
            .foreign_keys(true)
            .busy_timeout(busy)
            .pragma("case_sensitive_like", "ON");
        let mut pool = SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_millis(c.acquire_timeout_ms.max(1)));
        pool = if c.is_memory() {
            // One connection that lives as long as the pool: the database.
            pool.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool.max_connections(c.max_connections.max(1))
                .min_connections(c.min_connections.min(c.max_connections.max(1)))
                .idle_timeout(c.idle_timeout_ms.map(Duration::from_millis))
        };
        let pool = pool.connect_with(opts).await.map_err(error::map)?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY NOT NULL, schema TEXT NOT NULL)",
            ident::quote(SCHEMA_TABLE)
        ))
        .execute(&pool)
        .await
        .map_err(error::map)?;
        Ok(pool)
    }

    /// The schema of `table`, from the cache or else [`SCHEMA_TABLE`].
    async fn schema_of(&self, table: &str) -> DbResult<TableSchema> {
        ident::table(table)?;
        if let Some(s) = lock(&self.schemas).get(table) {
            return Ok(s.clone());
        }
        let pool = self.pool("db.schema")?;
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

    fn publish(&self, changes: Vec<RowChange>) {
        let now = chrono::Utc::now();
        self.changes.publish(changes.into_iter().map(|mut c| {
            c.committed_at = now;
            c
        }));
    }

    /// Starts a write, serialized with this process's other writes (so
    /// the change feed publishes in commit order). End it with
    /// [`SqliteDatabase::finish`].
    ///
    /// Changes are recorded only while someone subscribes to the feed (a
    /// subscription sees the changes committed after it starts). A write
    /// that is one statement (`single`) and records nothing runs in
    /// autocommit mode — atomic on its own, without `BEGIN`/`COMMIT`.
    async fn begin(&self, op: &'static str, single: bool) -> DbResult<Writer<'_>> {
        let pool = self.pool(op)?;
        let guard = self.write_lock.lock().await;
        let record = self.changes.subscriber_count() > 0;
        let exec = if single && !record {
            Exec::Conn(
                pool.acquire()
                    .await
                    .map_err(|e| error::map(e).with_operation(op))?,
            )
        } else {
            // IMMEDIATE takes the write lock up front (waiting up to the
            // busy timeout for other processes), so a transaction that
            // reads before it writes never fails to upgrade its lock.
            Exec::Tx(
                pool.begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(|e| error::map(e).with_operation(op))?,
            )
        };
        let tx = SqliteTx {
            db: self,
            exec,
            _guard: guard,
        };
        Ok(if record {
            RowWriter::new(tx)
        } else {
            RowWriter::without_changes(tx)
        })
    }

    /// Commits and publishes the changes when `result` is `Ok`, else rolls
    /// back (nothing is published).
    async fn finish<T>(&self, op: &'static str, w: Writer<'_>, result: DbResult<T>) -> DbResult<T> {
        let (SqliteTx { exec, _guard, .. }, changes) = w.into_parts();
        match (exec, result) {
            (Exec::Tx(tx), Ok(v)) => {
                tx.commit()
                    .await
                    .map_err(|e| error::map(e).with_operation(op))?;
                self.publish(changes);
                Ok(v)
            }
            (Exec::Tx(tx), Err(e)) => {
                // If the rollback fails too, dropping the transaction rolls
                // back when the connection is returned.
                let _ = tx.rollback().await;
                Err(e.with_operation(op))
            }
            (Exec::Conn(_), Ok(v)) => {
                self.publish(changes);
                Ok(v)
            }
            (Exec::Conn(_), Err(e)) => Err(e.with_operation(op)),
        }
    }

    /// Runs a DDL change in one transaction and updates the schema cache.
    async fn ddl(
        &self,
        op: &'static str,
        table: &str,
        statements: Vec<String>,
        new_schema: Option<TableSchema>,
    ) -> DbResult<()> {
        let mut w = self.begin(op, false).await?;
        let r = async {
            for s in &statements {
                sqlx::query(s)
                    .execute(w.tx().conn())
                    .await
                    .map_err(error::map)?;
            }
            let meta = ident::quote(SCHEMA_TABLE);
            match &new_schema {
                Some(schema) => {
                    let json = serde_json::to_string(schema).map_err(|e| {
                        Error::internal("cannot serialize a table schema").with_source(e)
                    })?;
                    sqlx::query(&format!(
                        "INSERT INTO {meta} (name, schema) VALUES (?, ?) \
                         ON CONFLICT (name) DO UPDATE SET schema = excluded.schema"
                    ))
                    .bind(table)
                    .bind(json)
                    .execute(w.tx().conn())
                    .await
                    .map_err(error::map)?;
                }
                None => {
                    sqlx::query(&format!("DELETE FROM {meta} WHERE name = ?"))
                        .bind(table)
                        .execute(w.tx().conn())
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
        let pool = self.pool(op)?;
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
        let hints: Vec<Option<ColumnType>> = s.columns.iter().map(|c| Some(c.ty)).collect();
        rows.iter()
            .map(|r| decode_row(r, |i, _| hints.get(i).copied().flatten()))
            .collect()
    }
}

/// Reads a table's schema from [`SCHEMA_TABLE`]; `NotFound` when there is none.
async fn load_schema<'e, E>(executor: E, table: &str) -> DbResult<TableSchema>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let found: Option<(String,)> = sqlx::query_as(&format!(
        "SELECT schema FROM {} WHERE name = ?",
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

/// Binds compiled values (normalized to their column types) as sqlx arguments.
fn arguments(binds: Vec<Bind>) -> DbResult<SqliteArguments<'static>> {
    use sqlx::Arguments as _;
    let mut args = SqliteArguments::default();
    for b in binds {
        let sv = encode(&b.column, b.ty, b.value)?;
        let r = match sv {
            Sv::Null => args.add(Option::<i64>::None),
            Sv::Int(i) => args.add(i),
            Sv::Real(f) => args.add(f),
            Sv::Text(s) => args.add(s),
            Sv::Blob(v) => args.add(v),
        };
        r.map_err(|e| Error::internal(format!("cannot bind a value: {e}")))?;
    }
    Ok(args)
}

/// Decodes a result row; `hint(index, name)` gives a column's type.
fn decode_row(row: &SqliteRow, hint: impl Fn(usize, &str) -> Option<ColumnType>) -> DbResult<Row> {
    enum Class {
        Int,
        Real,
        Blob,
        Text,
    }
    let mut out = Row::with_capacity(row.columns().len());
    for (i, c) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).map_err(error::map)?;
        // Decoded straight from the value by its storage class: no second
        // lookup and type check per column (`try_get`), no allocation for
        // the class name.
        let sv = if raw.is_null() {
            Sv::Null
        } else {
            let class = match raw.type_info().name() {
                "INTEGER" => Class::Int,
                "REAL" => Class::Real,
                "BLOB" => Class::Blob,
                _ => Class::Text,
            };
            let bad = |e: sqlx::error::BoxDynError| {
                Error::internal(format!("cannot decode column {}: {e}", c.name()))
            };
            match class {
                Class::Int => Sv::Int(<i64 as sqlx::Decode<Sqlite>>::decode(raw).map_err(bad)?),
                Class::Real => Sv::Real(<f64 as sqlx::Decode<Sqlite>>::decode(raw).map_err(bad)?),
                Class::Blob => {
                    Sv::Blob(<Vec<u8> as sqlx::Decode<Sqlite>>::decode(raw).map_err(bad)?)
                }
                Class::Text => {
                    Sv::Text(<String as sqlx::Decode<Sqlite>>::decode(raw).map_err(bad)?)
                }
            }
        };
        out.insert(c.name().to_string(), decode(sv, hint(i, c.name())));
    }
    Ok(out)
}

fn schema_hint(schema: &TableSchema) -> impl Fn(usize, &str) -> Option<ColumnType> + '_ {
    move |_, name| schema.find(name).map(|c| c.ty)
}

/// A write transaction in progress, serialized with this process's other
/// writes by the guard.
struct SqliteTx<'a> {
    db: &'a SqliteDatabase,
    exec: Exec,
    _guard: tokio::sync::MutexGuard<'a, ()>,
}

/// A transaction, or one connection for a single-statement write.
enum Exec {
    Tx(Transaction<'static, Sqlite>),
    Conn(PoolConnection<Sqlite>),
}

impl SqliteTx<'_> {
    fn conn(&mut self) -> &mut SqliteConnection {
        match &mut self.exec {
            Exec::Tx(tx) => tx,
            Exec::Conn(c) => c,
        }
    }
}

type Writer<'a> = RowWriter<SqliteTx<'a>>;

#[async_trait]
impl SqlTransaction for SqliteTx<'_> {
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
            .map(|r| decode_row(r, schema_hint(schema)))
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
            .map(|r| decode_row(r, schema_hint(schema)))
            .transpose()
    }
}

#[async_trait]
impl Database for SqliteDatabase {
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
        c.change_feed_scope = Some(ChangeFeedScope::Instance);
        c.unique_constraints = true;
        c.max_bind_params = Some(DIALECT.max_binds());
        c
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        let Some(pool) = self.current_pool() else {
            return Health::unhealthy(start.elapsed(), "disconnected; call connect()");
        };
        match sqlx::query("SELECT 1").execute(&pool).await {
            Ok(_) => Health::healthy(start.elapsed()),
            Err(e) => Health::unhealthy(start.elapsed(), error::map(e).message().to_string()),
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
        let pool = lock(&self.pool).take();
        if let Some(p) = pool {
            p.close().await;
        }
        lock(&self.schemas).clear();
        Ok(())
    }

    async fn create(&self, table: &str, row: Row) -> DbResult<Row> {
        let mut w = self.begin("db.create", true).await?;
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
            let pool = self.pool("db.get")?;
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
        let mut w = self.begin("db.update", true).await?;
        let r = w.update(table, id, &patch).await;
        self.finish("db.update", w, r).await
    }

    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool> {
        let mut w = self.begin("db.delete", true).await?;
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
        let single = is_single_insert(DIALECT, &schema, &rows);
        let mut w = self.begin("db.create_many", single).await?;
        let r = w.create_many(table, &rows).await;
        self.finish("db.create_many", w, r).await
    }

    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64> {
        let mut w = self.begin("db.update_many", true).await?;
        let r = w
            .update_where(table, filter, &patch)
            .await
            .map(|rows| rows.len() as u64);
        self.finish("db.update_many", w, r).await
    }

    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64> {
        let mut w = self.begin("db.delete_many", true).await?;
        let r = w.delete_where(table, filter).await;
        self.finish("db.delete_many", w, r).await
    }

    async fn raw_query(&self, sql: &str, params: &Params) -> DbResult<Vec<Row>> {
        let run = async {
            let pool = self.pool("db.raw_query")?;
            let (sql, values) = rewrite_named(sql, params, DIALECT)?;
            let binds: Vec<Bind> = values
                .into_iter()
                .map(|value| Bind {
                    value,
                    ty: None,
                    column: "".into(),
                })
                .collect();
            let args = arguments(binds)?;
            let _guard = self.write_lock.lock().await;
            let rows = sqlx::query_with(&sql, args)
                .fetch_all(&pool)
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
        let mut w = self.begin("db.transaction", false).await?;
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
                Err(e) if e.kind() == truststream_core_db::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let statements = compile::create_table(DIALECT, &normalized)?;
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
                Err(e)
                    if e.kind() == truststream_core_db::ErrorKind::Conflict
                        && schema.if_not_exists =>
                {
                    lock(&self.schemas).remove(&schema.name);
                    self.schema_of(&schema.name)
                        .await
                        .map(|_| ())
                        .map_err(|_| e)
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
                Err(e) if e.kind() == truststream_core_db::ErrorKind::NotFound && if_exists => {
                    return Ok(())
                }
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
            let pool = self.pool("db.alter_table")?;
            let (schema, steps) = plan_alter(&self.schema_of(table).await?, changes)?;
            let mut statements = Vec::new();
            for step in &steps {
                match step {
                    AlterStep::Add(def) if !def.nullable && def.default.is_none() => {
                        let (has_rows,): (i64,) = sqlx::query_as(&format!(
                            "SELECT EXISTS (SELECT 1 FROM {})",
                            ident::quote(table)
                        ))
                        .fetch_one(&pool)
                        .await
                        .map_err(error::map)?;
                        if has_rows != 0 {
                            return Err(Error::invalid_input(format!(
                                "cannot add NOT NULL column {} without a default to table {table}, which has rows",
                                def.name
                            )));
                        }
                    }
                    AlterStep::Drop(c) => {
                        // SQLite refuses to drop an indexed column: drop the
                        // indexes using it first, as the memory provider does.
                        let indexes: Vec<(String,)> = sqlx::query_as(
                            "SELECT DISTINCT il.name FROM pragma_index_list(?1) AS il \
                             JOIN pragma_index_info(il.name) AS ii WHERE ii.name = ?2",
                        )
                        .bind(table)
                        .bind(c)
                        .fetch_all(&pool)
                        .await
                        .map_err(error::map)?;
                        for (name,) in indexes {
                            statements.push(format!("DROP INDEX {}", ident::quote(&name)));
                        }
                    }
                    _ => {}
                }
                statements.extend(compile::alter_table(DIALECT, table, &step.to_change())?);
            }
            self.ddl("db.alter_table", table, statements, Some(schema))
                .await
        };
        run.await.map_err(|e: Error| {
            e.with_operation("db.alter_table")
                .with_context("table", table.to_string())
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
        let filter = match table {
            Some(t) => {
                self.schema_of(t)
                    .await
                    .map_err(|e| e.with_operation("db.subscribe_changes"))?;
                Some(t.to_string())
            }
            None => {
                self.pool("db.subscribe_changes")?;
                None
            }
        };
        Ok(self.changes.subscribe(filter))
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
    reg.register(TYPE_NAME, |cfg, ()| async move {
        let cfg: SqliteConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        Ok(Arc::new(SqliteDatabase::open(cfg).await?) as Arc<dyn Database>)
    });
}

#[cfg(test)]
mod tests;
