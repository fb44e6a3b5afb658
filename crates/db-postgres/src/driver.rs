//! The provider's side of core-db's shared SQL engine
//! (`truststream_core_db::sql::engine`): connections, typed binds and
//! decoding, raw SQL bound by the types PostgreSQL infers, the change
//! feed's triggers with new tables, and PostgreSQL's own `alter_table`
//! message.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Either, Executor as _, Postgres, Statement as _, Transaction};
use truststream_core_db::sql::compile::{SqlDialect, Statement};
use truststream_core_db::sql::engine::{schema_of, ColumnHints, SqlProvider, SqlState};
use truststream_core_db::{
    ident, ChangeFeedScope, ChangeStream, DbResult, Error, ErrorKind, ProviderInfo, Row, RowChange,
    Value,
};

use crate::value::{self, arguments, decode_row};
use crate::{error, feed, PgDatabase, SCHEMA_TABLE, TYPE_NAME};

/// Who the provider is, as [`Database::info`](truststream_core_db::Database::info) says.
pub(crate) const INFO: ProviderInfo = ProviderInfo {
    name: TYPE_NAME,
    version: env!("CARGO_PKG_VERSION"),
};

pub(crate) const DIALECT: SqlDialect = SqlDialect::Postgres;

/// A connection of the shared engine: a transaction, or one connection
/// (reads, and single-statement writes, which PostgreSQL runs atomically on
/// their own without `BEGIN`/`COMMIT` round trips).
pub enum PgConn {
    /// A transaction (writes of more than one statement, DDL).
    Tx(Transaction<'static, Postgres>),
    /// A connection in autocommit.
    Single(PoolConnection<Postgres>),
}

impl PgConn {
    fn raw(&mut self) -> &mut PgConnection {
        match self {
            PgConn::Tx(tx) => tx,
            PgConn::Single(c) => c,
        }
    }
}

impl PgDatabase {
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
}

impl SqlProvider for PgDatabase {
    /// The triggers see every committed write, from any process.
    const CHANGE_FEED_SCOPE: ChangeFeedScope = ChangeFeedScope::Database;

    type Pool = PgPool;
    type Conn = PgConn;

    fn sql_state(&self) -> &SqlState<PgPool> {
        &self.sql
    }

    async fn open_pool(&self) -> DbResult<PgPool> {
        let opts = self.connect_options()?;
        let c = &self.config;
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

    async fn close_pool(&self, pool: Option<PgPool>) {
        self.feed.stop();
        if let Some(p) = pool {
            p.close().await;
        }
    }

    async fn ping(&self, pool: &PgPool) -> Result<(), String> {
        let probe = tokio::time::timeout(
            Duration::from_millis(self.config.acquire_timeout_ms.max(1)),
            sqlx::query("SELECT 1").execute(pool),
        )
        .await;
        match probe {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(error::map(e).message().to_string()),
            Err(_) => Err("PostgreSQL did not answer in time".to_string()),
        }
    }

    async fn acquire(pool: &PgPool) -> DbResult<PgConn> {
        Ok(PgConn::Single(pool.acquire().await.map_err(error::map)?))
    }

    /// The change feed comes from the database's own triggers (it sees
    /// every writer), so the write paths record nothing.
    async fn begin(&self, pool: &PgPool, single: bool) -> DbResult<(PgConn, bool)> {
        let conn = if single {
            PgConn::Single(pool.acquire().await.map_err(error::map)?)
        } else {
            PgConn::Tx(pool.begin().await.map_err(error::map)?)
        };
        Ok((conn, false))
    }

    async fn commit(&self, conn: PgConn, _changes: Vec<RowChange>) -> DbResult<()> {
        match conn {
            PgConn::Tx(tx) => tx.commit().await.map_err(error::map),
            PgConn::Single(_) => Ok(()),
        }
    }

    async fn rollback(conn: PgConn) {
        // If the rollback fails too, the connection is dropped and the
        // server rolls back.
        if let PgConn::Tx(tx) = conn {
            let _ = tx.rollback().await;
        }
    }

    async fn fetch_all(
        conn: &mut PgConn,
        stmt: Statement,
        hints: ColumnHints<'_>,
    ) -> DbResult<Vec<Row>> {
        let args = arguments(stmt.binds)?;
        sqlx::query_with(&stmt.sql, args)
            .fetch_all(conn.raw())
            .await
            .map_err(error::map)?
            .iter()
            .map(|r| decode_row(r, |i, name| hints.get(i, name)))
            .collect()
    }

    async fn fetch_optional(
        conn: &mut PgConn,
        stmt: Statement,
        hints: ColumnHints<'_>,
    ) -> DbResult<Option<Row>> {
        let args = arguments(stmt.binds)?;
        let Some(row) = sqlx::query_with(&stmt.sql, args)
            .fetch_optional(conn.raw())
            .await
            .map_err(error::map)?
        else {
            return Ok(None);
        };
        decode_row(&row, |i, name| hints.get(i, name)).map(Some)
    }

    async fn execute(conn: &mut PgConn, stmt: Statement) -> DbResult<()> {
        let args = arguments(stmt.binds)?;
        let done = sqlx::query_with(&stmt.sql, args).execute(conn.raw()).await;
        done.map(drop).map_err(error::map)
    }

    /// Prepared first (cached per connection) so each parameter is bound
    /// as the type PostgreSQL inferred for it.
    async fn query_raw(
        &self,
        pool: &PgPool,
        sql: String,
        values: Vec<Value>,
    ) -> DbResult<Vec<Row>> {
        // Taking a connection and preparing change nothing.
        let mut conn = pool
            .acquire()
            .await
            .map_err(|e| error::map(e).unapplied())?;
        let stmt = (&mut *conn)
            .prepare_with(&sql, &[])
            .await
            .map_err(|e| error::map(e).unapplied())?;
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
    }

    async fn subscribe(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        let pool = self.sql.pool_for("db.subscribe_changes")?;
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
        let pool = self.sql.pool_for("db.create_table")?;
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
