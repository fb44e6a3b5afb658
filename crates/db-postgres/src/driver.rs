//! The provider's side of core-db's shared SQL engine
//! (`truststream_core_db::sql::engine`): connections, typed binds and
//! decoding, raw SQL bound by the types PostgreSQL infers, the change
//! feed's triggers with new tables, PostgreSQL's own `alter_table`
//! message, and the schema of tables made outside TrustStream (from the
//! catalog).
//!
//! **Transaction-mode pooler** (`pooler = "transaction"`: pgbouncer,
//! Supavisor). A server connection belongs to a client only for one
//! transaction, so nothing may outlive one. What a direct connection keeps
//! per session, and what this mode does instead:
//! - named prepared statements (sqlx's statement cache, `prepare_with` for
//!   raw queries): the cache is off, every query runs as the unnamed
//!   statement (`persistent(false)`), and a raw query learns its parameter
//!   types from an SQL-level `PREPARE` that it deallocates in the same
//!   transaction;
//! - the startup `options` (`search_path`, `statement_timeout`,
//!   `standard_conforming_strings`): not sent (pgbouncer refuses or drops
//!   them); each transaction starts with `SET LOCAL` of each instead, in
//!   the same round trip as its `BEGIN`;
//! - the `extra_float_digits` startup parameter: not sent (pgbouncer
//!   refuses unknown startup parameters);
//! - every operation, reads and single-statement writes included, runs in
//!   an explicit transaction (an unnamed statement is parsed and executed
//!   in two round trips; outside a transaction the pooler may send them to
//!   two different server connections);
//! - the change feed (`LISTEN` on a long-lived connection, session-level
//!   shared advisory locks per watched table): refused — capability
//!   `change_feed` is false and `subscribe_changes` is `Unsupported`. The
//!   triggers' commit-order lock (`pg_advisory_xact_lock`) is
//!   transaction-scoped and stays valid.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTypeInfo;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Either, Executor as _, Postgres, Row as _, Statement as _, Transaction};
use truststream_core_db::sql::compile::{SqlDialect, Statement};
use truststream_core_db::sql::engine::{schema_of, ColumnHints, SqlProvider, SqlState};
use truststream_core_db::{
    ident, ChangeFeedScope, ChangeStream, ColumnDef, ColumnDefault, ColumnType, DbCapabilities,
    DbResult, Error, ErrorKind, ProviderInfo, ResultSet, Row, RowChange, TableSchema, Value,
};

use crate::value::{
    self, arguments, decode_result_set, decode_row_into, decode_rows, decode_rows_into,
};
use crate::{error, feed, PgDatabase, Pooler, SCHEMA_TABLE, TYPE_NAME};

/// Who the provider is, as [`Database::info`](truststream_core_db::Database::info) says.
pub(crate) const INFO: ProviderInfo = ProviderInfo {
    name: TYPE_NAME,
    version: env!("CARGO_PKG_VERSION"),
};

pub(crate) const DIALECT: SqlDialect = SqlDialect::Postgres;

/// The provider's pool as the shared engine holds it: sqlx's pool, and how
/// a transaction starts when connections go through a transaction-mode
/// pooler.
// No Debug: nothing here is worth printing, and the pool's options hold
// the URL's parts.
#[derive(Clone)]
pub struct Pool {
    pub(crate) pg: PgPool,
    /// `Some` through a transaction-mode pooler: `BEGIN` and the
    /// `SET LOCAL`s of the session settings, sent as one simple query.
    pooled: Option<Arc<str>>,
}

impl Pool {
    /// A direct pool (no pooler).
    pub(crate) fn direct(pg: PgPool) -> Self {
        Pool { pg, pooled: None }
    }

    /// A transaction through the pooler, its settings applied.
    async fn begin_pooled(&self, begin: &str) -> DbResult<Transaction<'static, Postgres>> {
        self.pg
            .begin_with(begin.to_string())
            .await
            .map_err(|e| error::acquire(e, &self.pg))
    }
}

/// A connection of the shared engine: a transaction, or one connection
/// (reads, and single-statement writes, which PostgreSQL runs atomically on
/// their own without `BEGIN`/`COMMIT` round trips).
pub enum PgConn {
    /// A transaction (writes of more than one statement, DDL).
    Tx(Transaction<'static, Postgres>),
    /// A connection in autocommit.
    Single(PoolConnection<Postgres>),
    /// A transaction through a transaction-mode pooler (every operation):
    /// its statements are never named.
    Pooled(Transaction<'static, Postgres>),
}

impl PgConn {
    fn raw(&mut self) -> &mut PgConnection {
        match self {
            PgConn::Tx(tx) | PgConn::Pooled(tx) => tx,
            PgConn::Single(c) => c,
        }
    }

    /// Whether its statements may be named and cached on the server.
    fn persistent(&self) -> bool {
        !matches!(self, PgConn::Pooled(_))
    }
}

impl PgDatabase {
    fn pooled(&self) -> bool {
        self.config.pooler == Pooler::Transaction
    }

    /// Through a transaction-mode pooler: the statement that starts each
    /// transaction (`BEGIN` and the session settings as `SET LOCAL`).
    fn pooled_begin(&self) -> Option<Arc<str>> {
        if !self.pooled() {
            return None;
        }
        let mut sql = "BEGIN; SET LOCAL standard_conforming_strings = on".to_string();
        if let Some(s) = &self.config.schema {
            // A validated identifier, quoted.
            sql.push_str(&format!("; SET LOCAL search_path TO {}", ident::quote(s)));
        }
        if let Some(ms) = self.config.statement_timeout_ms.filter(|ms| *ms > 0) {
            sql.push_str(&format!("; SET LOCAL statement_timeout = {ms}"));
        }
        Some(sql.into())
    }

    fn connect_options(&self) -> DbResult<PgConnectOptions> {
        let url = self.config.url.expose();
        check_scheme(url)?;
        let mut opts = PgConnectOptions::from_str(url).map_err(|e| {
            // The URL may hold a password: say what is wrong, not what it is.
            Error::invalid_input(format!("the PostgreSQL url is invalid: {}", redact(&e)))
                .with_context(SETTING, "url")
        })?;
        if self.pooled() {
            // No named statements, no startup options a pooler refuses or
            // drops: the settings go with each transaction (`pooled_begin`).
            return Ok(opts
                .statement_cache_capacity(0)
                .extra_float_digits(None)
                .application_name("truststream"));
        }
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
}

/// Bytes per `CopyData` message of a bulk copy.
const COPY_PIECE: usize = 256 * 1024;

impl SqlProvider for PgDatabase {
    /// The triggers see every committed write, from any process.
    const CHANGE_FEED_SCOPE: ChangeFeedScope = ChangeFeedScope::Database;

    type Pool = Pool;
    type Conn = PgConn;

    fn sql_state(&self) -> &SqlState<Pool> {
        &self.sql
    }

    async fn open_pool(&self) -> DbResult<Pool> {
        let opts = self.connect_options()?;
        let c = &self.config;
        first_connection(&opts, c.acquire_timeout_ms).await?;
        let pg = PgPoolOptions::new()
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
        let pool = Pool {
            pg,
            pooled: self.pooled_begin(),
        };
        let mut setup = Vec::new();
        if let Some(s) = &c.schema {
            setup.push(format!("CREATE SCHEMA IF NOT EXISTS {}", ident::quote(s)));
        }
        setup.extend(feed::bookkeeping_ddl());
        if self.read_only {
            // A read-only build (a health check) creates nothing.
            setup.clear();
        }
        for ddl in setup {
            // Concurrent first starts may race on CREATE SCHEMA / TABLE: a
            // conflict means another one made it.
            match setup_statement(&pool, &ddl).await {
                Err(e) if e.kind() != ErrorKind::Conflict => return Err(e),
                _ => {}
            }
        }
        let current = current_schema(&pool).await?.ok_or_else(|| {
            Error::invalid_input("the connection's search_path names no existing schema")
        })?;
        self.feed.set_schema(current);
        Ok(pool)
    }

    async fn close_pool(&self, pool: Option<Pool>) {
        self.feed.stop_and_wait().await;
        if let Some(p) = pool {
            p.pg.close().await;
            // A connection given back (by a spawned task) while `close`
            // waited for the last checked-out one stays idle in sqlx's
            // pool; a second `close` closes what is idle.
            p.pg.close().await;
        }
    }

    async fn ping(&self, pool: &Pool) -> Result<(), String> {
        let probe = tokio::time::timeout(
            Duration::from_millis(self.config.acquire_timeout_ms.max(1)),
            // A simple query: nothing named, one round trip, through a
            // pooler too.
            sqlx::raw_sql("SELECT 1").execute(&pool.pg),
        )
        .await;
        match probe {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(error::map(e).message().to_string()),
            Err(_) => Err("PostgreSQL did not answer in time".to_string()),
        }
    }

    /// Through a pooler, a transaction (rolled back when the engine drops
    /// it after reading).
    async fn acquire(pool: &Pool) -> DbResult<PgConn> {
        Ok(match &pool.pooled {
            Some(begin) => PgConn::Pooled(pool.begin_pooled(begin).await?),
            None => PgConn::Single(
                pool.pg
                    .acquire()
                    .await
                    .map_err(|e| error::acquire(e, &pool.pg))?,
            ),
        })
    }

    /// The change feed comes from the database's own triggers (it sees
    /// every writer), so the write paths record nothing. Through a pooler
    /// every write is a transaction, also a single statement.
    async fn begin(&self, pool: &Pool, single: bool) -> DbResult<(PgConn, bool)> {
        let conn = match &pool.pooled {
            Some(begin) => PgConn::Pooled(pool.begin_pooled(begin).await?),
            None if single => PgConn::Single(
                pool.pg
                    .acquire()
                    .await
                    .map_err(|e| error::acquire(e, &pool.pg))?,
            ),
            None => PgConn::Tx(
                pool.pg
                    .begin()
                    .await
                    .map_err(|e| error::acquire(e, &pool.pg))?,
            ),
        };
        Ok((conn, false))
    }

    async fn commit(&self, conn: PgConn, _changes: Vec<RowChange>) -> DbResult<()> {
        match conn {
            PgConn::Tx(tx) | PgConn::Pooled(tx) => tx.commit().await.map_err(error::map),
            PgConn::Single(_) => Ok(()),
        }
    }

    async fn rollback(conn: PgConn) {
        // If the rollback fails too, the connection is dropped and the
        // server rolls back.
        if let PgConn::Tx(tx) | PgConn::Pooled(tx) = conn {
            let _ = tx.rollback().await;
        }
    }

    async fn fetch_all(
        conn: &mut PgConn,
        stmt: Statement,
        hints: ColumnHints<'_>,
    ) -> DbResult<Vec<Row>> {
        Self::fetch_all_into(conn, stmt, hints, Vec::new()).await
    }

    /// The returned rows fill the husks that fit (the inserted rows' maps).
    async fn fetch_all_into(
        conn: &mut PgConn,
        stmt: Statement,
        hints: ColumnHints<'_>,
        husks: Vec<Row>,
    ) -> DbResult<Vec<Row>> {
        let args = arguments(stmt.binds)?;
        let persistent = conn.persistent();
        sqlx::query_with(&stmt.sql, args)
            .persistent(persistent)
            .fetch_all(conn.raw())
            .await
            .map_err(error::map)
            .and_then(|rows| decode_rows_into(&rows, hints, husks))
    }

    async fn fetch_optional(
        conn: &mut PgConn,
        stmt: Statement,
        hints: ColumnHints<'_>,
    ) -> DbResult<Option<Row>> {
        Self::fetch_optional_into(conn, stmt, hints, None).await
    }

    /// The returned row fills the husk when it fits (the inserted row's map).
    async fn fetch_optional_into(
        conn: &mut PgConn,
        stmt: Statement,
        hints: ColumnHints<'_>,
        husk: Option<Row>,
    ) -> DbResult<Option<Row>> {
        let args = arguments(stmt.binds)?;
        let persistent = conn.persistent();
        let Some(row) = sqlx::query_with(&stmt.sql, args)
            .persistent(persistent)
            .fetch_optional(conn.raw())
            .await
            .map_err(error::map)?
        else {
            return Ok(None);
        };
        decode_row_into(&row, hints, husk).map(Some)
    }

    /// The column names once per result, every row's values in order.
    async fn fetch_set(
        conn: &mut PgConn,
        stmt: Statement,
        hints: ColumnHints<'_>,
        at_most_one: bool,
    ) -> DbResult<ResultSet> {
        let args = arguments(stmt.binds)?;
        let persistent = conn.persistent();
        let query = sqlx::query_with(&stmt.sql, args).persistent(persistent);
        let rows = if at_most_one {
            let row = query.fetch_optional(conn.raw()).await;
            row.map(Vec::from_iter)
        } else {
            query.fetch_all(conn.raw()).await
        };
        decode_result_set(&rows.map_err(error::map)?, hints)
    }

    /// The triggers record changes, not the write paths.
    const COPY_IN: bool = true;

    /// `COPY table (columns) FROM STDIN` in the text format, streamed: the
    /// rows are encoded into pieces of 256 KiB, each sent as
    /// soon as it is full, so the server stores one piece while the next
    /// is encoded. A value that cannot be encoded aborts the copy, which
    /// then stores nothing (it is one statement). Row triggers (the change
    /// feed's) fire as for `INSERT`.
    async fn copy_in(
        conn: &mut PgConn,
        table: &str,
        columns: &[&ColumnDef],
        rows: Vec<Row>,
    ) -> DbResult<u64> {
        let names: Vec<String> = columns.iter().map(|c| ident::quote(&c.name)).collect();
        let sql = format!(
            "COPY {} ({}) FROM STDIN",
            ident::quote(table),
            names.join(", ")
        );
        let many = rows.len() > 1;
        let mut copy = conn.raw().copy_in_raw(&sql).await.map_err(error::map)?;
        let mut piece = Vec::with_capacity(COPY_PIECE + 4096);
        for (i, row) in rows.into_iter().enumerate() {
            let encoded = value::copy_text_row(&mut piece, columns, &row);
            drop(row);
            let step = match encoded {
                Err(e) => Err(if many {
                    e.with_context("row_index", i.to_string())
                } else {
                    e
                }),
                Ok(()) if piece.len() >= COPY_PIECE => {
                    let sent = copy.send(piece.as_slice()).await.map(drop);
                    piece.clear();
                    sent.map_err(error::map)
                }
                Ok(()) => Ok(()),
            };
            if let Err(e) = step {
                // The server ends the copy and stores nothing; this tells
                // it why (and fails quietly when the connection is gone).
                let _ = copy.abort(e.message().to_string()).await;
                return Err(e);
            }
        }
        if !piece.is_empty() {
            if let Err(e) = copy.send(piece.as_slice()).await {
                let _ = copy.abort("the client could not send the rows").await;
                return Err(error::map(e));
            }
        }
        copy.finish().await.map_err(error::map)
    }

    /// [`SqlProvider::execute_count`] with the count dropped.
    async fn execute(conn: &mut PgConn, stmt: Statement) -> DbResult<()> {
        Self::execute_count(conn, stmt).await.map(drop)
    }

    /// The count of the server's `UPDATE n` / `DELETE n`: no row sent back
    /// per changed row.
    async fn execute_count(conn: &mut PgConn, stmt: Statement) -> DbResult<u64> {
        let args = arguments(stmt.binds)?;
        let persistent = conn.persistent();
        let done = sqlx::query_with(&stmt.sql, args)
            .persistent(persistent)
            .execute(conn.raw())
            .await;
        done.map(|d| d.rows_affected()).map_err(error::map)
    }

    /// Prepared first (cached per connection) so each parameter is bound
    /// as the type PostgreSQL inferred for it. Through a pooler: in one
    /// transaction, the types from an SQL-level `PREPARE` deallocated
    /// before the query runs unnamed.
    async fn query_raw(&self, pool: &Pool, sql: String, values: Vec<Value>) -> DbResult<Vec<Row>> {
        if let Some(begin) = &pool.pooled {
            return query_raw_pooled(pool, begin, sql, values).await;
        }
        // Taking a connection and preparing change nothing.
        let mut conn = pool
            .pg
            .acquire()
            .await
            .map_err(|e| error::acquire(e, &pool.pg).unapplied())?;
        let types = prepared_parameter_types(&mut conn, &sql).await?;
        check_parameter_count(types.len(), values.len())?;
        let args = value::raw_arguments(&values, &types)?;
        let rows = sqlx::query_with(&sql, args)
            .fetch_all(&mut *conn)
            .await
            .map_err(error::map)?;
        decode_rows(&rows, ColumnHints::Position(&[]))
    }

    /// A scoped handle's raw query, in its transaction: each parameter is
    /// bound as the type PostgreSQL infers for it, as [`Self::query_raw`]
    /// binds (prepared on the connection; through a pooler, from an
    /// SQL-level `PREPARE` deallocated in the same transaction), so
    /// scoped and unscoped raw queries take the same SQL (no `:id::uuid`
    /// casts needed).
    async fn query_raw_in(
        conn: &mut PgConn,
        sql: String,
        values: Vec<Value>,
    ) -> DbResult<Vec<Row>> {
        let persistent = conn.persistent();
        let types = if persistent {
            prepared_parameter_types(conn.raw(), &sql).await?
        } else {
            named_parameter_types(conn.raw(), &sql, values.len()).await?
        };
        check_parameter_count(types.len(), values.len())?;
        let args = value::raw_arguments(&values, &types)?;
        sqlx::query_with(&sql, args)
            .persistent(persistent)
            .fetch_all(conn.raw())
            .await
            .map_err(error::map)
            .and_then(|rows| decode_rows(&rows, ColumnHints::Position(&[])))
    }

    async fn subscribe(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        if self.pooled() {
            return Err(Error::unsupported(
                "the change feed needs LISTEN/NOTIFY and session-level locks on a long-lived \
                 connection, which a transaction-mode pooler cannot carry (pooler = \
                 \"transaction\"); subscribe through a provider configured with a direct \
                 connection to the same database",
            ));
        }
        let pool = self.sql.pool_for("db.subscribe_changes")?.pg;
        let tables = match table {
            Some(t) => {
                schema_of(self, t).await?;
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
    }

    /// A table some subscriber here watches (or every table) gets its
    /// trigger with it (also one dropped and made again while watched).
    async fn extend_create_table(
        &self,
        table: &str,
        statements: &mut Vec<String>,
    ) -> DbResult<bool> {
        let watched = self.feed.watches(table).await;
        if watched {
            statements.push(feed::trigger_ddl(
                self.feed.schema()?,
                table,
                &self.config.change_channel,
            ));
        }
        Ok(watched)
    }

    /// Its trigger went in with it: hold it like the others.
    async fn table_created(&self, table: &str) -> DbResult<()> {
        let pool = self.sql.pool_for("db.create_table")?.pg;
        self.feed.created(&pool, table).await
    }

    /// PostgreSQL refuses a NOT NULL column without a default on a table
    /// with rows (23502); say so as the memory provider does.
    fn alter_error(table: &str, e: Error) -> Error {
        if e.kind() == ErrorKind::InvalidInput && e.message().contains("contains null values") {
            Error::invalid_input(format!(
                "cannot add a NOT NULL column without a default to table {table}, which has rows"
            ))
            .with_operation("db.alter_table")
            .with_context("table", table.to_string())
            .with_source(e)
        } else {
            e
        }
    }

    /// A table made outside TrustStream (migrations, `psql`), from the
    /// catalog (the mapping is in the crate documentation).
    async fn describe_unregistered(
        conn: &mut PgConn,
        table: &str,
    ) -> DbResult<Option<TableSchema>> {
        describe_from_catalog(conn, table).await
    }

    /// No change feed through a transaction-mode pooler.
    fn adjust_capabilities(&self, capabilities: &mut DbCapabilities) {
        if self.pooled() {
            capabilities.change_feed = false;
            capabilities.change_feed_scope = None;
        }
    }
}

/// One statement of the provider's setup (schema, metadata tables): in
/// autocommit, or through a pooler in a transaction with the session
/// settings.
async fn setup_statement(pool: &Pool, sql: &str) -> DbResult<()> {
    match &pool.pooled {
        Some(begin) => {
            let mut tx = pool.begin_pooled(begin).await?;
            // A `&str` without arguments is a simple query.
            (&mut *tx).execute(sql).await.map_err(error::map)?;
            tx.commit().await.map_err(error::map)
        }
        None => sqlx::query(sql)
            .execute(&pool.pg)
            .await
            .map(drop)
            .map_err(error::map),
    }
}

/// The schema the connections' `search_path` names first.
async fn current_schema(pool: &Pool) -> DbResult<Option<String>> {
    let q = "SELECT current_schema()";
    match &pool.pooled {
        Some(begin) => {
            let mut tx = pool.begin_pooled(begin).await?;
            let (current,): (Option<String>,) = sqlx::query_as(q)
                .persistent(false)
                .fetch_one(&mut *tx)
                .await
                .map_err(error::map)?;
            tx.commit().await.map_err(error::map)?;
            Ok(current)
        }
        None => {
            let (current,): (Option<String>,) = sqlx::query_as(q)
                .fetch_one(&pool.pg)
                .await
                .map_err(error::map)?;
            Ok(current)
        }
    }
}

fn check_parameter_count(types: usize, values: usize) -> DbResult<()> {
    if types != values {
        return Err(Error::invalid_input(format!(
            "the statement takes {types} parameters, {values} were given"
        )));
    }
    Ok(())
}

/// Numbers the SQL-level prepared statements of raw queries through a
/// pooler (unique per process; each is deallocated in its transaction).
static RAW_STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`SqlProvider::query_raw`] through a transaction-mode pooler: one
/// transaction; the parameter types from `PREPARE` and
/// `pg_prepared_statements` (then `DEALLOCATE`, so nothing named outlives
/// the transaction), the query itself as the unnamed statement.
async fn query_raw_pooled(
    pool: &Pool,
    begin: &str,
    sql: String,
    values: Vec<Value>,
) -> DbResult<Vec<Row>> {
    let mut tx = pool.begin_pooled(begin).await.map_err(Error::unapplied)?;
    let types = named_parameter_types(&mut tx, &sql, values.len()).await?;
    check_parameter_count(types.len(), values.len())?;
    let args = value::raw_arguments(&values, &types)?;
    let rows = sqlx::query_with(&sql, args)
        .persistent(false)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::map)?;
    tx.commit().await.map_err(error::map)?;
    decode_rows(&rows, ColumnHints::Position(&[]))
}

/// The parameter types PostgreSQL infers for `sql`, through an SQL-level
/// `PREPARE` in the open transaction on `conn` and
/// `pg_prepared_statements` (then `DEALLOCATE`, so nothing named outlives
/// the transaction): what works through a transaction-mode pooler.
/// `values`: how many are given (none: nothing to infer).
async fn named_parameter_types(
    conn: &mut PgConnection,
    sql: &str,
    values: usize,
) -> DbResult<Vec<PgTypeInfo>> {
    let mut types = Vec::new();
    if values > 0 {
        // Without parameters there is nothing to infer (and utility
        // statements, which PREPARE refuses, take none).
        let n = RAW_STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("_truststream_raw_{}_{n}", std::process::id());
        // The newline ends a trailing `--` comment of the query.
        let prepare = format!("PREPARE {name} AS {sql}\n");
        // A `&str` without arguments is a simple query.
        (&mut *conn)
            .execute(prepare.as_str())
            .await
            .map_err(|e| error::map(e).unapplied())?;
        let lookup = format!(
            "SELECT upper(t.typname::text) FROM pg_prepared_statements p \
             CROSS JOIN LATERAL unnest(p.parameter_types) WITH ORDINALITY AS u(ty, n) \
             JOIN pg_type t ON t.oid = u.ty WHERE p.name = '{name}' ORDER BY u.n; \
             DEALLOCATE {name}"
        );
        let rows = (&mut *conn)
            .fetch_all(lookup.as_str())
            .await
            .map_err(|e| error::map(e).unapplied())?;
        for (i, r) in rows.iter().enumerate() {
            let ty: String = r.try_get(0).map_err(|e| error::map(e).unapplied())?;
            types.push(builtin_type(&ty).ok_or_else(|| {
                Error::invalid_input(format!(
                    "parameter {} has PostgreSQL type {}, which raw_query cannot bind from \
                     JSON; cast it in the SQL (for example `:value::text`)",
                    i + 1,
                    ty.to_lowercase()
                ))
            })?);
        }
    }
    Ok(types)
}

/// The parameter types PostgreSQL infers for `sql`, by preparing it on
/// `conn` (the protocol-level statement, cached per connection).
async fn prepared_parameter_types(conn: &mut PgConnection, sql: &str) -> DbResult<Vec<PgTypeInfo>> {
    let stmt = conn
        .prepare_with(sql, &[])
        .await
        .map_err(|e| error::map(e).unapplied())?;
    Ok(match stmt.parameters() {
        Some(Either::Left(types)) => types.to_vec(),
        _ => Vec::new(),
    })
}

/// The types raw queries bind (as `value::raw_arguments` knows them), by
/// their upper-case `pg_type` name.
fn builtin_type(name: &str) -> Option<PgTypeInfo> {
    const KNOWN: [&str; 20] = [
        "TEXT",
        "VARCHAR",
        "BPCHAR",
        "NAME",
        "CHAR",
        "CITEXT",
        "INT8",
        "INT4",
        "INT2",
        "FLOAT8",
        "FLOAT4",
        "BOOL",
        "TIMESTAMPTZ",
        "TIMESTAMP",
        "DATE",
        "UUID",
        "JSONB",
        "JSON",
        "BYTEA",
        "NUMERIC",
    ];
    KNOWN
        .iter()
        .find(|k| **k == name)
        .map(|k| PgTypeInfo::with_name(k))
}

/// The catalog query of [`describe_from_catalog`]: the columns of relation
/// `$1` in the current schema, in order, with their base types, defaults
/// and keys.
const DESCRIBE_SQL: &str = "SELECT a.attname::text AS name,
       (CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END)::text AS ty,
       a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       (a.attidentity <> '' OR a.attgenerated <> '') AS generated,
       COALESCE(a.attnum = ANY (pk.indkey::int2[]), false) AS in_pk,
       COALESCE(pk.indnkeyatts, 0)::int8 AS pk_width,
       EXISTS (SELECT 1 FROM pg_index u WHERE u.indrelid = c.oid AND u.indisunique
               AND NOT u.indisprimary AND u.indnkeyatts = 1 AND u.indkey[0] = a.attnum
               AND u.indpred IS NULL AND u.indexprs IS NULL) AS uniq
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
  LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
 WHERE n.nspname = current_schema() AND c.relname = $1
   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
 ORDER BY a.attnum";

/// The foreign keys of relation `$1` in the current schema that reference
/// a table of the same schema: constraint name, referenced table, and both
/// column lists in key order.
const FOREIGN_KEYS_SQL: &str = "SELECT con.conname::text AS name,
       ft.relname::text AS referenced_table,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, i)
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
              ORDER BY k.i) AS columns,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, i)
               JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
              ORDER BY k.i) AS referenced_columns
  FROM pg_constraint con
  JOIN pg_class c ON c.oid = con.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_class ft ON ft.oid = con.confrelid
  JOIN pg_namespace fn ON fn.oid = ft.relnamespace
 WHERE con.contype = 'f' AND n.nspname = current_schema() AND c.relname = $1
   AND fn.nspname = current_schema()
 ORDER BY con.conname";

/// The schema of `table`, a table (or view) of the current schema that
/// TrustStream did not create, from `pg_catalog`; `None` when there is
/// none. Names starting with `_truststream` are the provider's own and
/// never described.
///
/// - Types: by the column's base type (a domain's underlying type):
///   `text`/`varchar`/`char`/`name`/`citext` → `Text`, `int2`/`int4`/`int8`
///   → `Integer`, `float4`/`float8` → `Float`, `bool` → `Boolean`,
///   `timestamptz`/`timestamp`/`date` → `Timestamp`, `uuid` → `Uuid`,
///   `json`/`jsonb` → `Json`, `bytea` → `Bytes`, `numeric` → `Numeric`;
///   arrays → `Json`; anything else (enums, composite types, `interval`,
///   `inet`, ...) → `Text`.
/// - The primary key: a single-column primary key. A table without one,
///   or with a composite one, has no primary-key column: reads, inserts
///   and filtered updates/deletes work, by-id calls are `InvalidInput`.
/// - Defaults: identity, generated and `nextval(...)` columns, and every
///   other server-side default expression, are left to the server when an
///   insert does not give them (`ColumnDefault::AutoIncrement`); `now()` /
///   `CURRENT_TIMESTAMP` are `Now`, `gen_random_uuid()` is `RandomUuid`.
/// - A single-column unique index (not partial, not on an expression)
///   marks its column unique.
/// - Foreign keys to tables of the same schema are reported (by constraint
///   name) when every name in them is an identifier core-db accepts.
pub(crate) async fn describe_from_catalog(
    conn: &mut PgConn,
    table: &str,
) -> DbResult<Option<TableSchema>> {
    if table.starts_with("_truststream") {
        return Ok(None);
    }
    let persistent = conn.persistent();
    let rows = sqlx::query(DESCRIBE_SQL)
        .bind(table)
        .persistent(persistent)
        .fetch_all(conn.raw())
        .await
        .map_err(error::map)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut schema = TableSchema::new(table);
    for r in &rows {
        let get = |e: sqlx::Error| {
            Error::internal(format!("cannot read the catalog entry of table {table}"))
                .with_source(error::map(e))
        };
        let name: String = r.try_get("name").map_err(get)?;
        let ty: String = r.try_get("ty").map_err(get)?;
        let not_null: bool = r.try_get("not_null").map_err(get)?;
        let default_expr: Option<String> = r.try_get("default_expr").map_err(get)?;
        let generated: bool = r.try_get("generated").map_err(get)?;
        let in_pk: bool = r.try_get("in_pk").map_err(get)?;
        let pk_width: i64 = r.try_get("pk_width").map_err(get)?;
        let unique: bool = r.try_get("uniq").map_err(get)?;
        let ty = catalog_type(&ty);
        let primary_key = in_pk && pk_width == 1;
        let default = if generated {
            Some(ColumnDefault::AutoIncrement)
        } else {
            default_expr.as_deref().map(|e| catalog_default(ty, e))
        };
        schema = schema.column(ColumnDef {
            name,
            ty,
            nullable: !not_null && !primary_key,
            unique: unique && !primary_key,
            primary_key,
            default,
        });
    }
    let fks = sqlx::query(FOREIGN_KEYS_SQL)
        .bind(table)
        .persistent(persistent)
        .fetch_all(conn.raw())
        .await
        .map_err(error::map)?;
    for r in &fks {
        let get = |e: sqlx::Error| {
            Error::internal(format!(
                "cannot read the foreign keys of table {table} from the catalog"
            ))
            .with_source(error::map(e))
        };
        let name: String = r.try_get("name").map_err(get)?;
        let referenced_table: String = r.try_get("referenced_table").map_err(get)?;
        let columns: Vec<String> = r.try_get("columns").map_err(get)?;
        let referenced_columns: Vec<String> = r.try_get("referenced_columns").map_err(get)?;
        let fk =
            truststream_core_db::ForeignKey::new(columns, &referenced_table, referenced_columns)
                .named(&name);
        if fk.validate(table).is_ok() {
            schema = schema.foreign_key(fk);
        }
    }
    Ok(Some(schema))
}

/// The `ColumnType` of a `pg_type` name (see [`describe_from_catalog`]).
pub(crate) fn catalog_type(typname: &str) -> ColumnType {
    match typname {
        "text" | "varchar" | "bpchar" | "name" | "char" | "citext" => ColumnType::Text,
        "int8" | "int4" | "int2" => ColumnType::Integer,
        "float8" | "float4" => ColumnType::Float,
        "bool" => ColumnType::Boolean,
        "timestamptz" | "timestamp" | "date" => ColumnType::Timestamp,
        "uuid" => ColumnType::Uuid,
        "json" | "jsonb" => ColumnType::Json,
        "bytea" => ColumnType::Bytes,
        "numeric" => ColumnType::Numeric,
        // Arrays are `_elem`.
        t if t.starts_with('_') => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

/// A server-side default as a `ColumnDefault` (see [`describe_from_catalog`]).
fn catalog_default(ty: ColumnType, expr: &str) -> ColumnDefault {
    let e = expr.trim().to_ascii_lowercase();
    match (ty, e.as_str()) {
        (ColumnType::Timestamp, "now()" | "current_timestamp" | "transaction_timestamp()") => {
            ColumnDefault::Now
        }
        (ColumnType::Uuid, "gen_random_uuid()" | "uuid_generate_v4()") => ColumnDefault::RandomUuid,
        // Left to the server (sequences and any other expression).
        _ => ColumnDefault::AutoIncrement,
    }
}

/// Removes anything that looks like a URL from an error message (sqlx's
/// configuration errors may quote the URL, password included).
/// The context key naming the setting an error is about (`url`), for a
/// caller that knows where it was set (the runtime names
/// `database.url`).
const SETTING: &str = "setting";

/// Refuses a URL of another database (`mysql://`, `sqlite:`): sqlx would
/// read its host and port and speak PostgreSQL to whatever listens there.
/// Only the scheme is quoted (the URL may hold a password).
fn check_scheme(url: &str) -> DbResult<()> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some(s) if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql") => {
            Ok(())
        }
        Some(s) => Err(Error::invalid_input(format!(
            "the url is not a PostgreSQL URL: its scheme is {:?}; the postgres provider takes \
             postgres://user:password@host:port/database (or postgresql://)",
            truststream_core::echo(s).to_string()
        ))
        .with_context(SETTING, "url")),
        None => Err(Error::invalid_input(
            "the url is not a PostgreSQL URL: it has no postgres:// scheme; the postgres \
             provider takes postgres://user:password@host:port/database",
        )
        .with_context(SETTING, "url")),
    }
}

/// Opens one connection to the server before the pool is made, so that a
/// server that refuses or cannot be reached fails the open at once, saying
/// which host and port (a pool would retry a refused connection until
/// `acquire_timeout_ms` and then report a timeout). Every failure names
/// the `url` setting ([`SETTING`]).
async fn first_connection(opts: &PgConnectOptions, timeout_ms: u64) -> DbResult<()> {
    use sqlx::ConnectOptions as _;
    let at = format!("{}:{}", opts.get_host(), opts.get_port());
    let attempt =
        tokio::time::timeout(Duration::from_millis(timeout_ms.max(1)), opts.connect()).await;
    let e = match attempt {
        Ok(Ok(conn)) => {
            // Only a probe: the pool opens its own.
            let _ = sqlx::Connection::close(conn).await;
            return Ok(());
        }
        Ok(Err(e)) => e,
        Err(_) => {
            return Err(Error::unavailable(format!(
                "PostgreSQL at {at} did not answer within {timeout_ms} ms \
                 (acquire_timeout_ms): check the host and port of the url"
            ))
            .with_context(SETTING, "url")
            .unapplied())
        }
    };
    let error = match &e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            Error::unavailable(format!(
                "PostgreSQL at {at} refused the connection ({io}): is the server running, and \
                 are these the host and port of the url?"
            ))
            .with_retryable(true)
            .with_source(e)
        }
        sqlx::Error::Io(io) => Error::unavailable(format!(
            "cannot reach PostgreSQL at {at}: {io} (check the host and port of the url)"
        ))
        .with_retryable(true)
        .with_source(e),
        // The server answered and refused the session (password, database,
        // role) or TLS failed: its own reason, after where it was.
        _ => {
            let mapped = error::map(e);
            Error::new(
                mapped.kind(),
                format!("PostgreSQL at {at}: {}", mapped.message()),
            )
            .with_retryable(mapped.is_retryable())
        }
    };
    Err(error.with_context(SETTING, "url").unapplied())
}

fn redact(e: &sqlx::Error) -> String {
    let s = e.to_string();
    match s.find("://") {
        Some(_) => "check its syntax (postgres://user:password@host:port/database)".to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_types_and_defaults() {
        assert_eq!(catalog_type("varchar"), ColumnType::Text);
        assert_eq!(catalog_type("int4"), ColumnType::Integer);
        assert_eq!(catalog_type("timestamp"), ColumnType::Timestamp);
        assert_eq!(catalog_type("_int4"), ColumnType::Json);
        assert_eq!(catalog_type("mood"), ColumnType::Text);
        assert_eq!(
            catalog_default(ColumnType::Timestamp, "now()"),
            ColumnDefault::Now
        );
        assert_eq!(
            catalog_default(ColumnType::Uuid, "gen_random_uuid()"),
            ColumnDefault::RandomUuid
        );
        assert_eq!(
            catalog_default(ColumnType::Integer, "nextval('t_id_seq'::regclass)"),
            ColumnDefault::AutoIncrement
        );
        assert_eq!(
            catalog_default(ColumnType::Text, "'active'::text"),
            ColumnDefault::AutoIncrement
        );
    }

    #[test]
    fn pooled_transactions_carry_the_session_settings() {
        let mut cfg = crate::PgConfig::new("postgres://u@h/d").with_schema("a\"b");
        cfg.statement_timeout_ms = Some(1500);
        let provider = |config: crate::PgConfig| PgDatabase {
            config,
            sql: SqlState::new(INFO, DIALECT),
            feed: feed::Feed::new(truststream_core_db::ChangeFeed::new(1), "c".into()),
            read_only: false,
        };
        assert_eq!(provider(cfg.clone()).pooled_begin(), None);
        let pooled = provider(cfg.with_pooler(Pooler::Transaction));
        assert_eq!(
            pooled.pooled_begin().as_deref(),
            Some(
                "BEGIN; SET LOCAL standard_conforming_strings = on; \
                 SET LOCAL search_path TO \"a\"\"b\"; SET LOCAL statement_timeout = 1500"
            )
        );
        let mut caps = DbCapabilities::none();
        caps.change_feed = true;
        pooled.adjust_capabilities(&mut caps);
        assert!(!caps.change_feed);
        let json = serde_json::json!({"pooler": "transaction"});
        let parsed: crate::PgConfig = serde_json::from_value(json).unwrap();
        assert_eq!(parsed.pooler, Pooler::Transaction);
        let bad = serde_json::json!({"pooler": "session"});
        assert!(serde_json::from_value::<crate::PgConfig>(bad).is_err());
    }
}
