//! The provider's side of core-db's shared SQL engine
//! (`truststream_core_db::sql::engine`): connections and their write lock,
//! binding compiled values and decoding rows, the change feed's publishing
//! after commit, raw SQL, and SQLite's `alter_table` checks.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow,
};
use sqlx::{
    Column as _, Row as _, Sqlite, Transaction, TransactionManager as _, TypeInfo as _,
    ValueRef as _,
};
use truststream_core_db::sql::compile::{Bind, SqlDialect, Statement};
use truststream_core_db::sql::engine::{schema_of, ColumnHints, SqlProvider, SqlState};
use truststream_core_db::sql::rows::{decode_all, decode_into, decode_one_into, ResultColumns};
use truststream_core_db::sql::write::AlterStep;
use truststream_core_db::{
    ident, Cell, CellRows, ChangeFeedScope, ChangeStream, ColumnType, DbResult, Error, ErrorKind,
    ProviderInfo, ResultSet, Row, RowChange, Value,
};

use crate::value::{decode, encode, Sv};
use crate::{error, SqliteDatabase, SCHEMA_TABLE, TYPE_NAME};

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

/// The columns of a result set whose first row is `row`, typed by `hints`.
fn columns_of(row: &SqliteRow, hints: ColumnHints<'_>) -> ResultColumns {
    ResultColumns::new(row.columns().iter().map(|c| c.name()), hints)
}

/// sqlx's rows of one result, handed to a [`ResultSet`] as they are: a
/// typed read takes text straight from them ([`Cell`]), and the rows'
/// maps decode each cell as [`decode_column`] does.
struct SqliteCells {
    rows: Vec<SqliteRow>,
    /// The type each column decodes as, when known.
    types: Vec<Option<ColumnType>>,
}

impl SqliteCells {
    /// Checks what a cell read could fail on (text that is not UTF-8),
    /// so every cell is readable afterwards.
    fn new(rows: Vec<SqliteRow>, hints: ColumnHints<'_>) -> DbResult<Self> {
        let types = rows.first().map_or_else(Vec::new, |first| {
            first
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| hints.get(i, c.name()))
                .collect()
        });
        for row in &rows {
            for (i, ty) in types.iter().enumerate() {
                let raw = row.try_get_raw(i).map_err(error::map)?;
                // What `decode_column` reads as text: every storage class
                // but these.
                let text = !matches!(raw.type_info().name(), "INTEGER" | "REAL" | "BLOB");
                if !raw.is_null() && text {
                    if let Err(e) = <&str as sqlx::Decode<Sqlite>>::decode(raw) {
                        // The same error the map path gives.
                        let name = row.columns().get(i).map_or("?", |c| c.name());
                        debug_assert!(decode_column(row, i, *ty).is_err());
                        return Err(Error::internal(format!("cannot decode column {name}: {e}")));
                    }
                }
            }
        }
        Ok(SqliteCells { rows, types })
    }
}

impl CellRows for SqliteCells {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn width(&self) -> usize {
        self.types.len()
    }

    fn name(&self, column: usize) -> &str {
        self.rows[0].columns()[column].name()
    }

    /// Text and integers as they are stored, where [`decode`] keeps them
    /// (text of any type but JSON and numeric, integers of any type but
    /// boolean and float); JSON text for the core to read; anything else
    /// decoded.
    fn cell(&self, row: usize, column: usize) -> Cell<'_> {
        let r = &self.rows[row];
        let ty = self.types[column];
        let Ok(raw) = r.try_get_raw(column) else {
            // In range: `new` read every cell.
            return Cell::Null;
        };
        if raw.is_null() {
            return Cell::Null;
        }
        match raw.type_info().name() {
            "TEXT" if !matches!(ty, Some(ColumnType::Numeric)) => {
                match <&str as sqlx::Decode<Sqlite>>::decode(raw) {
                    Ok(t) if ty == Some(ColumnType::Json) => Cell::Json(t),
                    Ok(t) => Cell::Text(t),
                    // Checked by `new`.
                    Err(_) => Cell::Null,
                }
            }
            "INTEGER" if !matches!(ty, Some(ColumnType::Boolean | ColumnType::Float)) => {
                match <i64 as sqlx::Decode<Sqlite>>::decode(raw) {
                    Ok(i) => Cell::Int(i),
                    Err(_) => Cell::Null,
                }
            }
            _ => Cell::Value(decode_column(r, column, ty).unwrap_or(Value::Null)),
        }
    }
}

/// Decodes every row of a result set (one [`ResultColumns`] for all).
fn decode_rows(rows: &[SqliteRow], hints: ColumnHints<'_>) -> DbResult<Vec<Row>> {
    decode_all(rows, |first| columns_of(first, hints), decode_column)
}

/// Decodes column `i` of `row` by its storage class, to `ty` when known.
fn decode_column(row: &SqliteRow, i: usize, ty: Option<ColumnType>) -> DbResult<Value> {
    enum Class {
        Int,
        Real,
        Blob,
        Text,
    }
    let raw = row.try_get_raw(i).map_err(error::map)?;
    // Decoded straight from the value by its storage class: no second
    // lookup and type check per column (`try_get`), no allocation for the
    // class name.
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
            let name = row.columns().get(i).map_or("?", |c| c.name());
            Error::internal(format!("cannot decode column {name}: {e}"))
        };
        match class {
            Class::Int => Sv::Int(<i64 as sqlx::Decode<Sqlite>>::decode(raw).map_err(bad)?),
            Class::Real => Sv::Real(<f64 as sqlx::Decode<Sqlite>>::decode(raw).map_err(bad)?),
            Class::Blob => Sv::Blob(<Vec<u8> as sqlx::Decode<Sqlite>>::decode(raw).map_err(bad)?),
            Class::Text => Sv::Text(<String as sqlx::Decode<Sqlite>>::decode(raw).map_err(bad)?),
        }
    };
    Ok(decode(sv, ty))
}

/// Who the provider is, as [`Database::info`](truststream_core_db::Database::info) says.
pub(crate) const INFO: ProviderInfo = ProviderInfo {
    name: TYPE_NAME,
    version: env!("CARGO_PKG_VERSION"),
};

pub(crate) const DIALECT: SqlDialect = SqlDialect::Sqlite;

/// This process's write side: the lock that serializes its writes and,
/// for a database file, the one connection they all run on.
///
/// Writes on one connection find their statements prepared: the pool
/// hands out its idle connections in turn, so each statement shape used
/// to be parsed again on every connection it landed on (a 10,000-row
/// `createMany` parsed its 32,766-parameter `INSERT` on most batches), and
/// every write paid the pool's liveness check. SQLite has one writer at a
/// time, so one write connection costs no concurrency. The connection is
/// detached from the pool (the pool may open a replacement for readers)
/// and closed with it. An in-memory database is its pool's one
/// connection: its writes take that connection from the pool.
pub(crate) struct Writer {
    conn: Option<SqliteConnection>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer { conn: None }
    }

    /// Closes the write connection (the pool is closing).
    pub(crate) async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            use sqlx::Connection as _;
            let _ = conn.close().await;
        }
    }
}

/// sqlx's transaction handling of a SQLite connection, as its own
/// `Transaction` uses it: a cancelled `BEGIN` or `COMMIT` is settled by
/// the connection's worker, and a rollback started on drop runs before any
/// later statement.
type TxManager = <Sqlite as sqlx::Database>::TransactionManager;

/// A connection of the shared engine: in a transaction or not, and for a
/// write, holding this process's write lock until it is committed or
/// rolled back.
pub struct SqliteConn {
    exec: Exec,
    _write: Option<tokio::sync::OwnedMutexGuard<Writer>>,
}

/// A transaction, or one connection (reads, single-statement writes).
enum Exec {
    Tx(Transaction<'static, Sqlite>),
    Conn(PoolConnection<Sqlite>),
    /// A write on the writer's connection (a database file).
    Write(WriteConn),
}

/// A write on [`Writer`]'s connection, holding the write lock.
struct WriteConn {
    guard: tokio::sync::OwnedMutexGuard<Writer>,
    /// A transaction may be open: set before `BEGIN IMMEDIATE` is sent,
    /// cleared when it fails or a `COMMIT` or `ROLLBACK` succeeds. Dropped
    /// while set, the connection's worker rolls back before it runs any
    /// later statement (nothing happens when no transaction is open).
    in_tx: bool,
    /// The connection failed outside SQLite (I/O, its worker thread): it
    /// is dropped, and the next write opens another.
    broken: bool,
}

impl WriteConn {
    fn conn(&mut self) -> DbResult<&mut SqliteConnection> {
        self.guard
            .conn
            .as_mut()
            .ok_or_else(|| Error::internal("the SQLite write connection is gone"))
    }

    async fn begin(&mut self) -> DbResult<()> {
        self.in_tx = true;
        let conn = self.conn()?;
        let r = TxManager::begin(conn, Some("BEGIN IMMEDIATE".into())).await;
        r.map_err(|e| {
            self.in_tx = false;
            self.failed(e)
        })
    }

    async fn commit(&mut self) -> DbResult<()> {
        let conn = self.conn()?;
        let r = TxManager::commit(conn).await;
        self.in_tx = r.is_err();
        r.map_err(|e| self.failed(e))
    }

    async fn rollback(&mut self) {
        if let Ok(conn) = self.conn() {
            let r = TxManager::rollback(conn).await;
            self.in_tx = r.is_err();
        }
    }

    /// Maps `e`, marking the connection broken when the failure is not
    /// SQLite's answer to a statement.
    fn failed(&mut self, e: sqlx::Error) -> Error {
        if matches!(
            e,
            sqlx::Error::Io(_)
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolClosed
        ) {
            self.broken = true;
        }
        error::map(e)
    }
}

impl Drop for WriteConn {
    fn drop(&mut self) {
        if self.broken {
            self.guard.conn = None;
            return;
        }
        if self.in_tx {
            if let Some(conn) = self.guard.conn.as_mut() {
                TxManager::start_rollback(conn);
            }
        }
    }
}

impl SqliteConn {
    fn raw(&mut self) -> DbResult<&mut SqliteConnection> {
        match &mut self.exec {
            Exec::Tx(tx) => Ok(tx),
            Exec::Conn(c) => Ok(c),
            Exec::Write(w) => w.conn(),
        }
    }

    /// Maps a failed statement's error (marking a broken write connection).
    fn failed(&mut self, e: sqlx::Error) -> Error {
        match &mut self.exec {
            Exec::Write(w) => w.failed(e),
            _ => error::map(e),
        }
    }
}

impl SqliteDatabase {
    /// A failure opening the database file: names the file and the
    /// filesystem's own reason when the file can be probed (SQLite's
    /// "unable to open database file" says neither).
    fn open_error(&self, e: sqlx::Error) -> Error {
        let mapped = error::map(e);
        if self.config.is_memory() {
            return mapped;
        }
        let path = Path::new(&self.config.path);
        match probe(path) {
            Err(io) => cannot_open(path, io.to_string(), io_kind(&io)),
            Ok(()) => cannot_open(path, mapped.message().to_string(), mapped.kind()),
        }
    }
}

/// The context key naming the setting an error is about (`path`), for a
/// caller that knows where it was set (the runtime names `database.path`).
const SETTING: &str = "setting";

/// `cannot open the SQLite database file <path>: <reason>`, naming the
/// `path` setting.
fn cannot_open(path: &Path, reason: String, kind: ErrorKind) -> Error {
    Error::new(
        kind,
        format!(
            "cannot open the SQLite database file {}: {reason}",
            path.display()
        ),
    )
    .with_context(SETTING, "path")
}

/// Whether the file can be opened for reading and writing (or created:
/// then removed again), as SQLite needs; the filesystem's error when not.
fn probe(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(drop)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        std::fs::remove_file(path)
    }
}

/// A path that names no usable file (no permission, not a directory, a
/// directory, a read-only filesystem) is a configuration problem; other
/// I/O failures may pass.
fn io_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as Io;
    match e.kind() {
        Io::PermissionDenied
        | Io::NotFound
        | Io::NotADirectory
        | Io::IsADirectory
        | Io::ReadOnlyFilesystem
        | Io::AlreadyExists
        | Io::InvalidFilename => ErrorKind::InvalidInput,
        _ => ErrorKind::Unavailable,
    }
}

impl SqliteDatabase {
    /// [`SqlProvider::begin`] and [`SqlProvider::begin_insert`]: a write
    /// of one statement (`single`) runs in autocommit mode when it records
    /// nothing, or when it is an `INSERT` (`insert`); any other in a
    /// `BEGIN IMMEDIATE` transaction.
    async fn begin_write(
        &self,
        pool: &SqlitePool,
        single: bool,
        insert: bool,
    ) -> DbResult<(SqliteConn, bool)> {
        let mut guard = Arc::clone(&self.writer).lock_owned().await;
        let record = self.changes.subscriber_count() > 0;
        let tx = !(single && (!record || insert));
        if !self.config.is_memory() {
            if guard.conn.is_none() {
                let conn = pool.acquire().await.map_err(error::map)?;
                guard.conn = Some(conn.detach());
            }
            let mut write = WriteConn {
                guard,
                in_tx: false,
                broken: false,
            };
            if tx {
                // IMMEDIATE takes the write lock up front (waiting up to
                // the busy timeout for other processes), so a transaction
                // that reads before it writes never fails to upgrade its
                // lock.
                write.begin().await?;
            }
            let conn = SqliteConn {
                exec: Exec::Write(write),
                _write: None,
            };
            return Ok((conn, record));
        }
        let exec = if tx {
            Exec::Tx(
                pool.begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(error::map)?,
            )
        } else {
            Exec::Conn(pool.acquire().await.map_err(error::map)?)
        };
        let conn = SqliteConn {
            exec,
            _write: Some(guard),
        };
        Ok((conn, record))
    }
}

impl SqlProvider for SqliteDatabase {
    /// Changes are published after commit from this instance's own write
    /// paths.
    const CHANGE_FEED_SCOPE: ChangeFeedScope = ChangeFeedScope::Instance;

    type Pool = SqlitePool;
    type Conn = SqliteConn;

    fn sql_state(&self) -> &SqlState<SqlitePool> {
        &self.sql
    }

    async fn open_pool(&self) -> DbResult<SqlitePool> {
        let c = &self.config;
        let busy = Duration::from_millis(c.busy_timeout_ms);
        let mut opts = if c.is_memory() {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(error::map)?
        } else {
            let path = Path::new(&c.path);
            if self.read_only && !path.exists() {
                return Err(Error::unavailable(format!(
                    "the SQLite database file {} does not exist yet, and a read-only check \
                     (`truststream health`) creates nothing: start the application once \
                     (`truststream serve`, or build the runtime) to create it",
                    path.display()
                ))
                .with_context("setting", "path"));
            }
            if let Some(parent) = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty() && !self.read_only)
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    let reason = format!("cannot create its directory {}: {e}", parent.display());
                    cannot_open(path, reason, io_kind(&e)).with_source(e)
                })?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(!self.read_only);
            if self.read_only {
                // Setting the journal mode writes the file's header.
                opts
            } else {
                opts.journal_mode(SqliteJournalMode::Wal)
            }
        };
        opts = opts
            .foreign_keys(true)
            .busy_timeout(busy)
            .pragma("case_sensitive_like", "ON");
        // No liveness ping when a connection is taken from the pool: sqlx
        // pings every connection as it is returned (and closes one that
        // does not answer), and an idle SQLite connection lives in this
        // process, with no peer that could hang up meanwhile. The ping on
        // taking was a round trip to the connection's worker thread on
        // every read.
        let mut pool = SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_millis(c.acquire_timeout_ms.max(1)))
            .test_before_acquire(false);
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
        let pool = pool
            .connect_with(opts)
            .await
            .map_err(|e| self.open_error(e))?;
        if self.read_only {
            return Ok(pool);
        }
        let made = sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY NOT NULL, schema TEXT NOT NULL)",
            ident::quote(SCHEMA_TABLE)
        ))
        .execute(&pool)
        .await;
        if let Err(e) = made {
            pool.close().await;
            return Err(self.open_error(e));
        }
        Ok(pool)
    }

    async fn close_pool(&self, pool: Option<SqlitePool>) {
        // After the writes in flight (the lock), before the pool.
        self.writer.lock().await.close().await;
        if let Some(p) = pool {
            p.close().await;
        }
    }

    async fn ping(&self, pool: &SqlitePool) -> Result<(), String> {
        match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => Ok(()),
            Err(e) => Err(error::map(e).message().to_string()),
        }
    }

    async fn acquire(pool: &SqlitePool) -> DbResult<SqliteConn> {
        let conn = pool.acquire().await.map_err(error::map)?;
        Ok(SqliteConn {
            exec: Exec::Conn(conn),
            _write: None,
        })
    }

    /// Serialized with this process's other writes (so the change feed
    /// publishes in commit order).
    ///
    /// Changes are recorded only while someone subscribes to the feed (a
    /// subscription sees the changes committed after it starts). A write
    /// that is one statement (`single`) and records nothing runs in
    /// autocommit mode — atomic on its own, without `BEGIN`/`COMMIT`.
    async fn begin(&self, pool: &SqlitePool, single: bool) -> DbResult<(SqliteConn, bool)> {
        self.begin_write(pool, single, false).await
    }

    /// An `INSERT` records its changes from the rows it returns, so one
    /// statement runs in autocommit mode even while changes are recorded:
    /// it commits as it finishes, under this process's write lock, before
    /// the changes are published.
    async fn begin_insert(&self, pool: &SqlitePool, single: bool) -> DbResult<(SqliteConn, bool)> {
        self.begin_write(pool, single, true).await
    }

    /// Commits, then publishes the changes (still under the write lock).
    async fn commit(&self, conn: SqliteConn, changes: Vec<RowChange>) -> DbResult<()> {
        match conn.exec {
            Exec::Tx(tx) => tx.commit().await.map_err(error::map)?,
            Exec::Write(mut w) if w.in_tx => w.commit().await?,
            Exec::Write(_) | Exec::Conn(_) => {}
        }
        let now = chrono::Utc::now();
        self.changes.publish(changes.into_iter().map(|mut c| {
            c.committed_at = now;
            c
        }));
        Ok(())
    }

    async fn rollback(conn: Self::Conn) {
        // If the rollback fails too, dropping the transaction rolls back
        // when the connection is returned.
        match conn.exec {
            Exec::Tx(tx) => {
                let _ = tx.rollback().await;
            }
            Exec::Write(mut w) if w.in_tx => w.rollback().await,
            Exec::Write(_) | Exec::Conn(_) => {}
        }
    }

    async fn fetch_all(
        conn: &mut Self::Conn,
        stmt: Statement,
        hints: ColumnHints<'_>,
    ) -> DbResult<Vec<Row>> {
        Self::fetch_all_into(conn, stmt, hints, Vec::new()).await
    }

    /// The returned rows fill the husks that fit (the inserted rows' maps).
    async fn fetch_all_into(
        conn: &mut Self::Conn,
        stmt: Statement,
        hints: ColumnHints<'_>,
        husks: Vec<Row>,
    ) -> DbResult<Vec<Row>> {
        let query = sqlx::query_with(&stmt.sql, arguments(stmt.binds)?);
        let r = query.fetch_all(conn.raw()?).await;
        let rows = r.map_err(|e| conn.failed(e))?;
        decode_into(
            &rows,
            husks,
            |first| columns_of(first, hints),
            decode_column,
        )
    }

    async fn fetch_optional(
        conn: &mut Self::Conn,
        stmt: Statement,
        hints: ColumnHints<'_>,
    ) -> DbResult<Option<Row>> {
        Self::fetch_optional_into(conn, stmt, hints, None).await
    }

    /// The returned row fills the husk when it fits (the inserted row's map).
    async fn fetch_optional_into(
        conn: &mut Self::Conn,
        stmt: Statement,
        hints: ColumnHints<'_>,
        husk: Option<Row>,
    ) -> DbResult<Option<Row>> {
        let query = sqlx::query_with(&stmt.sql, arguments(stmt.binds)?);
        let r = query.fetch_optional(conn.raw()?).await;
        let row = r.map_err(|e| conn.failed(e))?;
        row.as_ref()
            .map(|r| {
                let names = r.columns().iter().map(|c| c.name());
                decode_one_into(names, hints, husk, |i, ty| decode_column(r, i, ty))
            })
            .transpose()
    }

    /// The column names once per result, every row's values in order.
    async fn fetch_set(
        conn: &mut Self::Conn,
        stmt: Statement,
        hints: ColumnHints<'_>,
        at_most_one: bool,
    ) -> DbResult<ResultSet> {
        let query = sqlx::query_with(&stmt.sql, arguments(stmt.binds)?);
        let rows = if at_most_one {
            let r = query.fetch_optional(conn.raw()?).await;
            Vec::from_iter(r.map_err(|e| conn.failed(e))?)
        } else {
            let r = query.fetch_all(conn.raw()?).await;
            r.map_err(|e| conn.failed(e))?
        };
        if rows.is_empty() {
            return Ok(ResultSet::default());
        }
        SqliteCells::new(rows, hints).map(ResultSet::from_cells)
    }

    /// [`SqlProvider::execute_count`] with the count dropped.
    async fn execute(conn: &mut Self::Conn, stmt: Statement) -> DbResult<()> {
        Self::execute_count(conn, stmt).await.map(drop)
    }

    /// `sqlite3_changes` of the statement: no `RETURNING`, so no temporary
    /// table for the returned rows.
    async fn execute_count(conn: &mut Self::Conn, stmt: Statement) -> DbResult<u64> {
        let query = sqlx::query_with(&stmt.sql, arguments(stmt.binds)?);
        let r = query.execute(conn.raw()?).await;
        Ok(r.map_err(|e| conn.failed(e))?.rows_affected())
    }

    /// Parameters bind by their JSON kinds; the statement runs under the
    /// write lock (it may write).
    async fn query_raw(
        &self,
        pool: &SqlitePool,
        sql: String,
        values: Vec<Value>,
    ) -> DbResult<Vec<Row>> {
        let binds: Vec<Bind> = values
            .into_iter()
            .map(|value| Bind {
                value,
                ty: None,
                column: "".into(),
            })
            .collect();
        let args = arguments(binds)?;
        let _guard = self.writer.lock().await;
        let rows = sqlx::query_with(&sql, args)
            .fetch_all(pool)
            .await
            .map_err(error::map)?;
        decode_rows(&rows, ColumnHints::Position(&[]))
    }

    async fn subscribe(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        match table {
            Some(t) => {
                schema_of(self, t).await?;
            }
            None => {
                self.sql.pool_for("db.subscribe_changes")?;
            }
        }
        Ok(self.changes.subscribe(table.map(str::to_string)))
    }

    /// A NOT NULL column without a default needs an empty table; a dropped
    /// column's indexes go first (SQLite refuses to drop an indexed column;
    /// the memory provider drops them too).
    async fn prepare_alter_step(
        &self,
        pool: &SqlitePool,
        table: &str,
        step: &AlterStep,
        statements: &mut Vec<String>,
    ) -> DbResult<()> {
        match step {
            AlterStep::Add(def) if !def.nullable && def.default.is_none() => {
                let (has_rows,): (i64,) = sqlx::query_as(&format!(
                    "SELECT EXISTS (SELECT 1 FROM {})",
                    ident::quote(table)
                ))
                .fetch_one(pool)
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
                let indexes: Vec<(String,)> = sqlx::query_as(
                    "SELECT DISTINCT il.name FROM pragma_index_list(?1) AS il \
                     JOIN pragma_index_info(il.name) AS ii WHERE ii.name = ?2",
                )
                .bind(table)
                .bind(c)
                .fetch_all(pool)
                .await
                .map_err(error::map)?;
                for (name,) in indexes {
                    statements.push(format!("DROP INDEX {}", ident::quote(&name)));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
