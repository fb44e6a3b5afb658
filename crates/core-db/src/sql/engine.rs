//! The [`Database`] implementation every SQL provider shares, written once
//! over the small [`SqlProvider`] trait a provider implements with its
//! driver (connections, binding and decoding values, error mapping). No I/O
//! here: every statement runs through the provider's methods.
//!
//! A provider implements [`SqlProvider`] and gets [`Database`] by the
//! blanket implementation in this module: schema metadata in
//! [`SCHEMA_TABLE`] with a cache ([`SqlState`]), reads compiled by
//! [`compile`], the `get` / insert / update statement cache
//! ([`StatementCache`]), the write paths of [`RowWriter`] committed or
//! rolled back as one, and the DDL flow (compiled statements and the
//! metadata change in one transaction). What differs between databases
//! stays with the provider: how it connects, how a write is serialized and
//! whether it runs in autocommit, how raw SQL binds its parameters, the
//! change feed, and a few DDL quirks ([`SqlProvider::extend_create_table`],
//! [`SqlProvider::table_created`], [`SqlProvider::prepare_alter_step`],
//! [`SqlProvider::alter_error`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;

use super::compile::{self, Bind, SqlDialect, Statement};
use super::keyed::{KeyedSelect, StatementCache};
use super::rewrite_named;
use super::write::{
    copies_rows, is_single_insert, normalize_defaults, plan_alter, reserved, same_prepared_columns,
    AlterStep, RowWriter, SqlTransaction,
};
use crate::{
    ident, AlterTable, ChangeFeedScope, ChangeStream, ColumnDef, ColumnType, Database,
    DbCapabilities, DbResult, Error, ErrorKind, Filter, Health, IndexSpec, Operation,
    OperationOutput, Params, ProviderInfo, Query, ResultSet, Row, RowChange, TableSchema, Value,
};

/// The table where a SQL provider keeps each table's [`TableSchema`] (as
/// JSON, `name TEXT PRIMARY KEY, schema TEXT`), so values decode back to
/// their declared types. The provider creates it when it connects.
pub const SCHEMA_TABLE: &str = "_truststream_schema";

/// What a SQL provider keeps for the shared engine: the pool slot, the
/// schema cache (of [`SCHEMA_TABLE`]) and the statement cache.
pub struct SqlState<Pool> {
    info: ProviderInfo,
    dialect: SqlDialect,
    pool: Mutex<Option<Pool>>,
    /// Table schemas by name (a cache of [`SCHEMA_TABLE`]), shared: a
    /// lookup clones the `Arc`, not the schema. Hashed with foldhash
    /// (seeded per process): looked up by every call, keyed by names that
    /// exist.
    schemas: Mutex<foldhash::HashMap<String, Arc<TableSchema>>>,
    /// Compiled `get`, insert and update-by-key statements by shape
    /// (reused while the table's schema stays).
    statements: StatementCache,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is a cache or a pool handle: always consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<Pool: Clone> SqlState<Pool> {
    /// Empty state, disconnected, of the provider `info` names (its
    /// [`Database::info`]), which speaks `dialect`.
    pub fn new(info: ProviderInfo, dialect: SqlDialect) -> Self {
        SqlState {
            info,
            dialect,
            pool: Mutex::new(None),
            schemas: Mutex::default(),
            statements: StatementCache::new(dialect),
        }
    }

    /// The provider's type name and crate version.
    pub fn info(&self) -> &ProviderInfo {
        &self.info
    }

    /// The dialect statements are compiled for.
    pub fn dialect(&self) -> SqlDialect {
        self.dialect
    }

    /// The pool; `None` when disconnected.
    pub fn pool(&self) -> Option<Pool> {
        lock(&self.pool).clone()
    }

    /// The pool, or `Unavailable` naming `op` when disconnected (marked
    /// [`Error::unapplied`]: nothing was sent).
    pub fn pool_for(&self, op: &'static str) -> DbResult<Pool> {
        self.pool().ok_or_else(|| {
            let product = match self.dialect {
                SqlDialect::Postgres => "PostgreSQL",
                SqlDialect::Sqlite => "SQLite",
            };
            Error::unavailable(format!(
                "the {product} database is disconnected; call connect() first"
            ))
            .with_operation(op)
            .unapplied()
        })
    }

    /// The statement cache of the hot paths.
    pub fn statements(&self) -> &StatementCache {
        &self.statements
    }

    fn cached(&self, table: &str) -> Option<Arc<TableSchema>> {
        lock(&self.schemas).get(table).cloned()
    }

    /// Caches `schema` under `table`, a name already checked
    /// ([`ident::table`]): a cache hit skips the check.
    fn remember(&self, table: &str, schema: Arc<TableSchema>) {
        lock(&self.schemas).insert(table.to_string(), schema);
    }

    fn forget(&self, table: &str) {
        lock(&self.schemas).remove(table);
    }
}

/// How a provider decodes each result column: the type it should come back
/// as, when known.
#[derive(Debug, Clone, Copy)]
pub enum ColumnHints<'a> {
    /// By position (compiled selects).
    Position(&'a [ColumnType]),
    /// By name, from a table's schema (rows a write returns).
    Schema(&'a TableSchema),
}

impl ColumnHints<'_> {
    /// The type of result column `index`, named `name`.
    #[inline]
    pub fn get(self, index: usize, name: &str) -> Option<ColumnType> {
        match self {
            ColumnHints::Position(types) => types.get(index).copied(),
            ColumnHints::Schema(schema) => schema.find(name).map(|c| c.ty),
        }
    }
}

/// A SQL database driver as the shared engine uses it. Implementing it
/// makes the type a [`Database`] (the blanket implementation below).
///
/// Futures are `Send` and dispatched statically: the engine adds no boxing
/// and no allocation per row to the provider's own.
pub trait SqlProvider: Send + Sync + 'static {
    /// Which writes the change feed sees.
    const CHANGE_FEED_SCOPE: ChangeFeedScope;

    /// The driver's connection pool (cloning it is cheap).
    type Pool: Clone + Send + Sync + 'static;
    /// One connection taken from the pool, possibly in a transaction (and
    /// holding whatever serializes the provider's writes).
    type Conn: Send + 'static;

    /// The engine's state kept by the provider (which also says who the
    /// provider is and its dialect).
    fn sql_state(&self) -> &SqlState<Self::Pool>;

    /// Opens a pool (`connect`), creating [`SCHEMA_TABLE`] and whatever else
    /// the provider keeps when missing.
    fn open_pool(&self) -> impl Future<Output = DbResult<Self::Pool>> + Send;

    /// Closes `pool` (`disconnect`; `None` when there was none) and stops
    /// what uses it.
    fn close_pool(&self, pool: Option<Self::Pool>) -> impl Future<Output = ()> + Send;

    /// A round trip for [`Database::health`]; `Err` is the message to report.
    fn ping(&self, pool: &Self::Pool) -> impl Future<Output = Result<(), String>> + Send;

    /// A connection for reads.
    ///
    /// It must not change data: the engine marks its errors
    /// [`Error::unapplied`] when a write needed it (a schema read).
    fn acquire(pool: &Self::Pool) -> impl Future<Output = DbResult<Self::Conn>> + Send;

    /// A connection for a write (serialized as the provider needs), and
    /// whether the write paths record the [`RowChange`]s they make (handed
    /// to [`SqlProvider::commit`]). `single`: the write is one statement,
    /// atomic on its own, so it may run without `BEGIN`/`COMMIT`; otherwise
    /// it must run in a transaction.
    ///
    /// It must not change data (at most `BEGIN`): the engine marks its
    /// errors [`Error::unapplied`], so that a retry layer may repeat a
    /// write that failed here (no connection, the server down).
    fn begin(
        &self,
        pool: &Self::Pool,
        single: bool,
    ) -> impl Future<Output = DbResult<(Self::Conn, bool)>> + Send;

    /// [`SqlProvider::begin`] for a write made of `INSERT`s only (`create`,
    /// `create_many`, `insert_many`), whose changes are recorded from the
    /// rows the statement returns, without reading first: with `single` it
    /// may run without `BEGIN`/`COMMIT` even while changes are recorded.
    /// By default the same as [`SqlProvider::begin`].
    fn begin_insert(
        &self,
        pool: &Self::Pool,
        single: bool,
    ) -> impl Future<Output = DbResult<(Self::Conn, bool)>> + Send {
        self.begin(pool, single)
    }

    /// Commits a write begun by [`SqlProvider::begin`] (a no-op outside a
    /// transaction) and publishes the changes it recorded.
    fn commit(
        &self,
        conn: Self::Conn,
        changes: Vec<RowChange>,
    ) -> impl Future<Output = DbResult<()>> + Send;

    /// Rolls back a write begun by [`SqlProvider::begin`] (best effort: a
    /// transaction dropped unfinished rolls back too).
    fn rollback(conn: Self::Conn) -> impl Future<Output = ()> + Send;

    /// Runs `statement` and returns its rows, decoded with `hints`.
    fn fetch_all(
        conn: &mut Self::Conn,
        statement: Statement,
        hints: ColumnHints<'_>,
    ) -> impl Future<Output = DbResult<Vec<Row>>> + Send;

    /// [`SqlProvider::fetch_all`] of an `INSERT ... RETURNING` whose input
    /// rows come back as `husks` (row by row, values taken as binds): a
    /// provider decoding with [`super::rows::decode_into`] fills a husk
    /// with the names of the result instead of copying them. The rows are
    /// those `fetch_all` returns; the default is `fetch_all`.
    fn fetch_all_into(
        conn: &mut Self::Conn,
        statement: Statement,
        hints: ColumnHints<'_>,
        husks: Vec<Row>,
    ) -> impl Future<Output = DbResult<Vec<Row>>> + Send {
        drop(husks);
        Self::fetch_all(conn, statement, hints)
    }

    /// Runs `statement`, which returns at most one row (without the
    /// driver's row streaming).
    fn fetch_optional(
        conn: &mut Self::Conn,
        statement: Statement,
        hints: ColumnHints<'_>,
    ) -> impl Future<Output = DbResult<Option<Row>>> + Send;

    /// [`SqlProvider::fetch_optional`] of an `INSERT ... RETURNING` of one
    /// row whose input row comes back as `husk` (its values taken as
    /// binds): a provider decoding with [`super::rows::decode_one_into`]
    /// fills it instead of copying the names. The row is the one
    /// `fetch_optional` returns; the default is `fetch_optional`.
    fn fetch_optional_into(
        conn: &mut Self::Conn,
        statement: Statement,
        hints: ColumnHints<'_>,
        husk: Option<Row>,
    ) -> impl Future<Output = DbResult<Option<Row>>> + Send {
        drop(husk);
        Self::fetch_optional(conn, statement, hints)
    }

    /// [`SqlProvider::fetch_all`] (or, when `at_most_one`,
    /// [`SqlProvider::fetch_optional`]) as a [`ResultSet`] holding exactly
    /// those rows. The default builds the rows and hands them over; a
    /// provider overrides it to keep the column names once per result
    /// ([`super::rows::decode_set`]), which the typed reads
    /// ([`crate::DatabaseExt::get_as`], [`crate::DatabaseExt::read_as`])
    /// deserialize from without a JSON object per row.
    fn fetch_set(
        conn: &mut Self::Conn,
        statement: Statement,
        hints: ColumnHints<'_>,
        at_most_one: bool,
    ) -> impl Future<Output = DbResult<ResultSet>> + Send {
        async move {
            if at_most_one {
                let row = Self::fetch_optional(conn, statement, hints).await?;
                Ok(ResultSet::from_rows(Vec::from_iter(row)))
            } else {
                Self::fetch_all(conn, statement, hints)
                    .await
                    .map(ResultSet::from_rows)
            }
        }
    }

    /// Whether [`SqlProvider::copy_in`] is implemented: `insert_many` then
    /// sends rows giving the same columns as one bulk copy, outside a
    /// transaction. Only for a provider whose write paths record no
    /// changes ([`SqlProvider::begin`] returns `false`): a recording
    /// provider's `insert_many` takes the `INSERT` path, in chunks, and a
    /// chunked insert outside a transaction would not be all or none.
    const COPY_IN: bool = false;

    /// Inserts `rows` (prepared: values normalized, defaults filled in,
    /// each row giving exactly `columns`, in schema order) through the
    /// driver's bulk path as one statement, and returns how many rows it
    /// stored. Called only when [`SqlProvider::COPY_IN`] is set; the
    /// default refuses.
    fn copy_in(
        conn: &mut Self::Conn,
        table: &str,
        columns: &[&ColumnDef],
        rows: Vec<Row>,
    ) -> impl Future<Output = DbResult<u64>> + Send {
        let _ = (conn, columns, rows);
        let table = table.to_string();
        async move {
            Err(Error::internal(format!(
                "this provider has no bulk copy (table {table})"
            )))
        }
    }

    /// Runs `statement` for its effect (DDL, metadata writes).
    fn execute(
        conn: &mut Self::Conn,
        statement: Statement,
    ) -> impl Future<Output = DbResult<()>> + Send;

    /// Runs `statement`, an `UPDATE` or `DELETE` without `RETURNING`, and
    /// returns how many rows it changed (what the driver reports, as
    /// `UPDATE n` does), for the writes that only count their rows. A
    /// provider answers from the statement's own count, without a row per
    /// changed row (SQLite also builds no temporary table for the result).
    /// The default appends `RETURNING 1` and counts the rows
    /// [`SqlProvider::fetch_all`] returns.
    fn execute_count(
        conn: &mut Self::Conn,
        mut statement: Statement,
    ) -> impl Future<Output = DbResult<u64>> + Send {
        async move {
            statement.sql = format!("{} RETURNING 1", statement.sql).into();
            let rows = Self::fetch_all(conn, statement, ColumnHints::Position(&[])).await?;
            Ok(rows.len() as u64)
        }
    }

    /// Runs a raw query already checked and rewritten by [`rewrite_named`]
    /// (`values` in placeholder order) and returns its rows.
    fn query_raw(
        &self,
        pool: &Self::Pool,
        sql: String,
        values: Vec<Value>,
    ) -> impl Future<Output = DbResult<Vec<Row>>> + Send;

    /// Runs a raw query (as [`SqlProvider::query_raw`]) on `conn`, an open
    /// transaction: the `raw_query` of a request-scoped handle
    /// ([`super::scoped`]). By default each value is bound by its JSON type
    /// (strings as text, integers as 64-bit, ...), so the SQL casts where
    /// the database needs another type (`:id::uuid`).
    fn query_raw_in(
        conn: &mut Self::Conn,
        sql: String,
        values: Vec<Value>,
    ) -> impl Future<Output = DbResult<Vec<Row>>> + Send {
        let binds = values
            .into_iter()
            .map(|value| Bind {
                value,
                ty: None,
                column: "parameter".into(),
            })
            .collect();
        let sql = sql.into();
        Self::fetch_all(conn, Statement { sql, binds }, ColumnHints::Position(&[]))
    }

    /// [`Database::subscribe_changes`].
    fn subscribe(&self, table: Option<&str>)
        -> impl Future<Output = DbResult<ChangeStream>> + Send;

    /// Adds statements to run with a new table's DDL, in the same
    /// transaction, and says whether [`SqlProvider::table_created`] should
    /// run once the table is made. Nothing and `false` by default.
    fn extend_create_table(
        &self,
        table: &str,
        statements: &mut Vec<String>,
    ) -> impl Future<Output = DbResult<bool>> + Send {
        let _ = (table, statements);
        async { Ok(false) }
    }

    /// Runs after `create_table` made `table` (not when another process
    /// made it first) when [`SqlProvider::extend_create_table`] asked for
    /// it. Nothing by default.
    fn table_created(&self, table: &str) -> impl Future<Output = DbResult<()>> + Send {
        let _ = table;
        async { Ok(()) }
    }

    /// Checks one `alter_table` step against the data and adds statements
    /// to run before its own (compiled by [`compile::alter_table`]). None by
    /// default.
    fn prepare_alter_step(
        &self,
        pool: &Self::Pool,
        table: &str,
        step: &AlterStep,
        statements: &mut Vec<String>,
    ) -> impl Future<Output = DbResult<()>> + Send {
        let _ = (pool, table, step, statements);
        async { Ok(()) }
    }

    /// Rewrites an `alter_table` error the database reports in its own
    /// words. As it is by default.
    fn alter_error(table: &str, error: Error) -> Error {
        let _ = table;
        error
    }

    /// The schema of `table` when [`SCHEMA_TABLE`] has no row for it (a
    /// table made by migrations or other tools, not by `create_table`),
    /// read from the database's own catalog through `conn`; `None` when
    /// there is no such table either. The engine calls it only then, and
    /// caches what it returns like a stored schema. `None` by default: such
    /// a table is `NotFound`.
    fn describe_unregistered(
        conn: &mut Self::Conn,
        table: &str,
    ) -> impl Future<Output = DbResult<Option<TableSchema>>> + Send {
        let _ = (conn, table);
        async { Ok(None) }
    }

    /// Corrects the capabilities the engine reports for what this
    /// provider's configuration cannot do (for example no change feed
    /// through a transaction-mode pooler). Nothing by default.
    fn adjust_capabilities(&self, capabilities: &mut DbCapabilities) {
        let _ = capabilities;
    }
}

/// The schema of `table`, from the cache or else [`SCHEMA_TABLE`]; a
/// missing table is [`ErrorKind::NotFound`]. Shared with the cache: no
/// copy of the schema is made.
pub async fn schema_of<P: SqlProvider>(db: &P, table: &str) -> DbResult<Arc<TableSchema>> {
    let state = db.sql_state();
    // Only checked names are ever cached: a name found is a valid one.
    if let Some(s) = state.cached(table) {
        return Ok(s);
    }
    ident::table(table)?;
    let pool = state.pool_for("db.schema")?;
    let schema = Arc::new(load_schema::<P>(state.dialect(), &pool, table).await?);
    state.remember(table, Arc::clone(&schema));
    Ok(schema)
}

/// Checks that every table and column a new table's foreign keys reference
/// exists (SQLite would only notice at the first write), so a bad
/// reference is `InvalidInput` on every dialect.
async fn check_references<P: SqlProvider>(db: &P, schema: &TableSchema) -> DbResult<()> {
    for fk in &schema.foreign_keys {
        let target = if fk.referenced_table == schema.name {
            Some(schema.clone())
        } else {
            match schema_of(db, &fk.referenced_table).await {
                Ok(t) => Some(TableSchema::clone(&t)),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            }
        };
        fk.check_target(&schema.name, target.as_ref())?;
    }
    Ok(())
}

/// Reads a table's schema from [`SCHEMA_TABLE`] (no cache); `NotFound` when
/// there is none.
pub async fn load_schema<P: SqlProvider>(
    dialect: SqlDialect,
    pool: &P::Pool,
    table: &str,
) -> DbResult<TableSchema> {
    // Before any statement of a write that needs the schema.
    let mut conn = P::acquire(pool).await.map_err(Error::unapplied)?;
    read_schema::<P>(dialect, &mut conn, table).await
}

async fn read_schema<P: SqlProvider>(
    dialect: SqlDialect,
    conn: &mut P::Conn,
    table: &str,
) -> DbResult<TableSchema> {
    let meta = ident::quote(SCHEMA_TABLE);
    let select = Statement {
        sql: format!(
            "SELECT schema FROM {meta} WHERE name = {}",
            placeholder(dialect, 1)
        )
        .into(),
        binds: vec![text_bind("name", table)],
    };
    let found = P::fetch_optional(conn, select, ColumnHints::Position(&[ColumnType::Text])).await?;
    let Some(row) = found else {
        return P::describe_unregistered(conn, table)
            .await?
            .ok_or_else(|| compile::missing_table(table));
    };
    let unreadable =
        || Error::internal(format!("the stored schema of table {table} is unreadable"));
    let json = row
        .get("schema")
        .and_then(Value::as_str)
        .ok_or_else(unreadable)?;
    serde_json::from_str(json).map_err(|e| unreadable().with_source(e))
}

fn placeholder(dialect: SqlDialect, n: usize) -> String {
    match dialect {
        SqlDialect::Sqlite => "?".to_string(),
        SqlDialect::Postgres => format!("${n}"),
    }
}

fn text_bind(column: &str, value: &str) -> Bind {
    Bind {
        value: Value::String(value.to_string()),
        ty: Some(ColumnType::Text),
        column: column.into(),
    }
}

/// The statement that records `schema` as `table`'s in [`SCHEMA_TABLE`]
/// (`None`: forgets the table).
fn store_schema(
    dialect: SqlDialect,
    table: &str,
    schema: Option<&TableSchema>,
) -> DbResult<Statement> {
    let meta = ident::quote(SCHEMA_TABLE);
    let (p1, p2) = (placeholder(dialect, 1), placeholder(dialect, 2));
    Ok(match schema {
        Some(schema) => {
            let json = serde_json::to_string(schema)
                .map_err(|e| Error::internal("cannot serialize a table schema").with_source(e))?;
            Statement {
                sql: format!(
                    "INSERT INTO {meta} (name, schema) VALUES ({p1}, {p2}) \
                     ON CONFLICT (name) DO UPDATE SET schema = excluded.schema"
                )
                .into(),
                binds: vec![text_bind("name", table), text_bind("schema", &json)],
            }
        }
        None => Statement {
            sql: format!("DELETE FROM {meta} WHERE name = {p1}").into(),
            binds: vec![text_bind("name", table)],
        },
    })
}

/// A write in progress, as the shared write paths ([`RowWriter`]) see it.
struct SqlTx<'a, P: SqlProvider> {
    db: &'a P,
    conn: P::Conn,
}

#[async_trait]
impl<P: SqlProvider> SqlTransaction for SqlTx<'_, P> {
    fn dialect(&self) -> SqlDialect {
        self.db.sql_state().dialect()
    }

    fn statement_cache(&self) -> Option<&StatementCache> {
        Some(self.db.sql_state().statements())
    }

    async fn schema(&mut self, table: &str) -> DbResult<Arc<TableSchema>> {
        let state = self.db.sql_state();
        // As in `schema_of`: a cached name was checked.
        if let Some(s) = state.cached(table) {
            return Ok(s);
        }
        ident::table(table)?;
        // Through this connection: the pool may have no other free one.
        let schema = Arc::new(read_schema::<P>(state.dialect(), &mut self.conn, table).await?);
        state.remember(table, Arc::clone(&schema));
        Ok(schema)
    }

    async fn fetch(&mut self, statement: Statement, schema: &TableSchema) -> DbResult<Vec<Row>> {
        P::fetch_all(&mut self.conn, statement, ColumnHints::Schema(schema)).await
    }

    async fn fetch_optional(
        &mut self,
        statement: Statement,
        schema: &TableSchema,
    ) -> DbResult<Option<Row>> {
        P::fetch_optional(&mut self.conn, statement, ColumnHints::Schema(schema)).await
    }

    async fn fetch_optional_into(
        &mut self,
        statement: Statement,
        schema: &TableSchema,
        husk: Option<Row>,
    ) -> DbResult<Option<Row>> {
        P::fetch_optional_into(&mut self.conn, statement, ColumnHints::Schema(schema), husk).await
    }

    async fn execute_count(&mut self, statement: Statement) -> DbResult<u64> {
        P::execute_count(&mut self.conn, statement).await
    }

    async fn fetch_into(
        &mut self,
        statement: Statement,
        schema: &TableSchema,
        husks: Vec<Row>,
    ) -> DbResult<Vec<Row>> {
        P::fetch_all_into(
            &mut self.conn,
            statement,
            ColumnHints::Schema(schema),
            husks,
        )
        .await
    }

    fn copies(&self) -> bool {
        P::COPY_IN
    }

    async fn copy_in(
        &mut self,
        table: &str,
        columns: &[&ColumnDef],
        rows: Vec<Row>,
    ) -> DbResult<u64> {
        P::copy_in(&mut self.conn, table, columns, rows).await
    }
}

type Writer<'a, P> = RowWriter<SqlTx<'a, P>>;

/// Starts a write. End it with [`finish`].
/// What a write is made of: `INSERT`s only (begun with
/// [`SqlProvider::begin_insert`]) or anything.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    Inserts,
    Any,
}

async fn begin<'a, P: SqlProvider>(
    db: &'a P,
    op: &'static str,
    single: bool,
    writes: Writes,
) -> DbResult<Writer<'a, P>> {
    let pool = db.sql_state().pool_for(op)?;
    let begun = match writes {
        Writes::Inserts => db.begin_insert(&pool, single).await,
        Writes::Any => db.begin(&pool, single).await,
    };
    let (conn, record) = begun.map_err(|e| e.with_operation(op).unapplied())?;
    let tx = SqlTx { db, conn };
    Ok(if record {
        RowWriter::new(tx)
    } else {
        RowWriter::without_changes(tx)
    })
}

/// Commits (and publishes) when `result` is `Ok`, else rolls back.
async fn finish<P: SqlProvider, T>(
    op: &'static str,
    w: Writer<'_, P>,
    result: DbResult<T>,
) -> DbResult<T> {
    let (SqlTx { db, conn }, changes) = w.into_parts();
    match result {
        Ok(v) => {
            db.commit(conn, changes)
                .await
                .map_err(|e| e.with_operation(op))?;
            Ok(v)
        }
        Err(e) => {
            P::rollback(conn).await;
            Err(e.with_operation(op))
        }
    }
}

/// Runs DDL and the metadata change in one transaction, then updates the
/// schema cache.
async fn ddl<P: SqlProvider>(
    db: &P,
    op: &'static str,
    table: &str,
    statements: Vec<String>,
    new_schema: Option<TableSchema>,
) -> DbResult<()> {
    let mut w = begin(db, op, false, Writes::Any).await?;
    let r = async {
        let conn = &mut w.tx().conn;
        for sql in statements {
            let binds = Vec::new();
            let sql = sql.into();
            P::execute(conn, Statement { sql, binds }).await?;
        }
        let dialect = db.sql_state().dialect();
        P::execute(conn, store_schema(dialect, table, new_schema.as_ref())?).await
    }
    .await;
    finish::<P, _>(op, w, r).await?;
    let state = db.sql_state();
    match new_schema {
        Some(s) => state.remember(table, Arc::new(s)),
        None => state.forget(table),
    }
    Ok(())
}

async fn catalog_for<P: SqlProvider>(
    db: &P,
    table: &str,
    query: &Query,
) -> DbResult<HashMap<String, TableSchema>> {
    let mut cat = HashMap::new();
    cat.insert(
        table.to_string(),
        TableSchema::clone(&*schema_of(db, table).await?),
    );
    for j in &query.joins {
        if !cat.contains_key(&j.table) {
            let joined = schema_of(db, &j.table).await?;
            cat.insert(j.table.clone(), TableSchema::clone(&joined));
        }
    }
    Ok(cat)
}

/// A read's pool, compiled statement and result column types.
/// A query without joins goes through the statement cache
/// ([`StatementCache::read`]); one with joins is compiled every time.
async fn compiled_read<P: SqlProvider>(
    db: &P,
    table: &str,
    query: &Query,
) -> DbResult<(P::Pool, Statement, Arc<[ColumnType]>)> {
    let pool = db.sql_state().pool_for("db.read")?;
    if query.joins.is_empty() {
        let schema = schema_of(db, table).await?;
        let read = db.sql_state().statements().read(&schema, query)?;
        return Ok((pool, read.statement, read.column_types));
    }
    let cat = catalog_for(db, table, query).await?;
    let s = compile::select(db.sql_state().dialect(), &cat, table, query)?;
    let types = s.columns.iter().map(|c| c.ty).collect();
    Ok((pool, s.statement, types))
}

/// A `get`'s pool and (cached) statement, of `columns` (all when empty).
async fn keyed_get<P: SqlProvider>(
    db: &P,
    table: &str,
    id: &Value,
    columns: &[&str],
) -> DbResult<(P::Pool, KeyedSelect)> {
    let schema = schema_of(db, table).await?;
    let state = db.sql_state();
    let pool = state.pool_for("db.get")?;
    let select = state
        .statements()
        .select_columns_by_key(&schema, id, columns)?;
    Ok((pool, select))
}

#[async_trait]
impl<P: SqlProvider> Database for P {
    fn info(&self) -> ProviderInfo {
        self.sql_state().info().clone()
    }

    fn capabilities(&self) -> DbCapabilities {
        let dialect = self.sql_state().dialect();
        let mut c = DbCapabilities::none();
        c.transactions = true;
        c.raw_sql = true;
        c.sql_dialect = Some(dialect);
        c.joins = true;
        c.aggregates = true;
        c.schema = true;
        c.change_feed = true;
        c.change_feed_scope = Some(P::CHANGE_FEED_SCOPE);
        c.unique_constraints = true;
        // Declared as constraints in the DDL (SQLite providers turn
        // `foreign_keys` on for every connection).
        c.foreign_keys = true;
        // `ALTER TABLE ... ADD CONSTRAINT`: SQLite has none.
        c.add_foreign_keys = dialect == SqlDialect::Postgres;
        c.max_bind_params = Some(dialect.max_binds());
        // `scoped` (row-level security): PostgreSQL only.
        c.row_security = dialect == SqlDialect::Postgres;
        // `cs`/`cd`/`ov`: `@>`/`<@` on PostgreSQL, unrolled `json_each`
        // on SQLite. Text search: PostgreSQL only.
        c.json_containment = true;
        c.full_text_search = dialect == SqlDialect::Postgres;
        self.adjust_capabilities(&mut c);
        c
    }

    /// On PostgreSQL, a [`super::scoped::Scoped`] handle (one transaction
    /// per call, switched to the scope's role and claims); `Unsupported`
    /// on other dialects.
    fn scoped(
        self: std::sync::Arc<Self>,
        scope: crate::RequestScope,
    ) -> DbResult<std::sync::Arc<dyn Database>> {
        super::scoped::scoped(self, scope)
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        let Some(pool) = self.sql_state().pool() else {
            return Health::unhealthy(start.elapsed(), "disconnected; call connect()");
        };
        match self.ping(&pool).await {
            Ok(()) => Health::healthy(start.elapsed()),
            Err(message) => Health::unhealthy(start.elapsed(), message),
        }
    }

    async fn connect(&self) -> DbResult<()> {
        let state = self.sql_state();
        if state.pool().is_some() {
            return Ok(());
        }
        let pool = self
            .open_pool()
            .await
            .map_err(|e| e.with_operation("db.connect"))?;
        let mut slot = lock(&state.pool);
        if slot.is_none() {
            *slot = Some(pool);
        }
        Ok(())
    }

    async fn disconnect(&self) -> DbResult<()> {
        let state = self.sql_state();
        let pool = lock(&state.pool).take();
        self.close_pool(pool).await;
        lock(&state.schemas).clear();
        Ok(())
    }

    async fn create(&self, table: &str, row: Row) -> DbResult<Row> {
        let mut w = begin(self, "db.create", true, Writes::Inserts).await?;
        let r = match w.create_many_owned(table, vec![row]).await {
            Ok(mut rows) => rows
                .pop()
                .ok_or_else(|| Error::internal("insert returned no row")),
            Err(e) => Err(e),
        };
        finish::<P, _>("db.create", w, r).await
    }

    async fn read(&self, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        let run = async {
            let (pool, s, types) = compiled_read(self, table, query).await?;
            let hints = ColumnHints::Position(&types);
            let mut conn = P::acquire(&pool).await?;
            // A one-row read skips the driver's row streaming.
            if query.limit == Some(1) {
                let row = P::fetch_optional(&mut conn, s, hints).await?;
                Ok(Vec::from_iter(row))
            } else {
                P::fetch_all(&mut conn, s, hints).await
            }
        };
        run.await.map_err(|e: Error| e.with_operation("db.read"))
    }

    /// [`Database::read`]'s statement, its rows kept as a [`ResultSet`].
    async fn read_set(&self, table: &str, query: &Query) -> DbResult<ResultSet> {
        let run = async {
            let (pool, s, types) = compiled_read(self, table, query).await?;
            let hints = ColumnHints::Position(&types);
            let mut conn = P::acquire(&pool).await?;
            P::fetch_set(&mut conn, s, hints, query.limit == Some(1)).await
        };
        run.await.map_err(|e: Error| e.with_operation("db.read"))
    }

    async fn get(&self, table: &str, id: &Value) -> DbResult<Option<Row>> {
        let run = async {
            let (pool, select) = keyed_get(self, table, id, &[]).await?;
            let mut conn = P::acquire(&pool).await?;
            let hints = ColumnHints::Position(&select.column_types);
            P::fetch_optional(&mut conn, select.statement, hints).await
        };
        run.await.map_err(|e: Error| e.with_operation("db.get"))
    }

    /// [`Database::get`]'s statement, its row kept as a [`ResultSet`]: the
    /// keyed select of every column.
    async fn get_set(&self, table: &str, id: &Value) -> DbResult<ResultSet> {
        self.get_columns_set(table, id, &[]).await
    }

    /// One statement per column list, compiled once and kept.
    async fn get_columns_set(
        &self,
        table: &str,
        id: &Value,
        columns: &[&str],
    ) -> DbResult<ResultSet> {
        let run = async {
            let (pool, select) = keyed_get(self, table, id, columns).await?;
            let mut conn = P::acquire(&pool).await?;
            let hints = ColumnHints::Position(&select.column_types);
            P::fetch_set(&mut conn, select.statement, hints, true).await
        };
        run.await.map_err(|e: Error| e.with_operation("db.get"))
    }

    async fn update(&self, table: &str, id: &Value, patch: Row) -> DbResult<Row> {
        let mut w = begin(self, "db.update", true, Writes::Any).await?;
        let r = w.update(table, id, &patch).await;
        finish::<P, _>("db.update", w, r).await
    }

    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool> {
        let mut w = begin(self, "db.delete", true, Writes::Any).await?;
        let r = w.delete(table, id).await;
        finish::<P, _>("db.delete", w, r).await
    }

    async fn create_many(&self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>> {
        let op = "db.create_many";
        // Checks the name and that the table exists, also for no rows.
        let schema = schema_of(self, table)
            .await
            .map_err(|e| e.with_operation(op))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // One INSERT per chunk: more than one chunk needs a transaction.
        let single = is_single_insert(self.sql_state().dialect(), &schema, &rows);
        let mut w = begin(self, op, single, Writes::Inserts).await?;
        let r = w.create_many_owned(table, rows).await;
        finish::<P, _>(op, w, r).await
    }

    async fn insert_many(&self, table: &str, rows: Vec<Row>) -> DbResult<u64> {
        let op = "db.insert_many";
        let schema = schema_of(self, table)
            .await
            .map_err(|e| e.with_operation(op))?;
        if rows.is_empty() {
            return Ok(0);
        }
        // A provider's bulk copy is one statement whatever the row count,
        // for rows giving the same columns.
        let single = if P::COPY_IN && copies_rows(rows.len()) {
            same_prepared_columns(&schema, &rows)
        } else {
            is_single_insert(self.sql_state().dialect(), &schema, &rows)
        };
        let mut w = begin(self, op, single, Writes::Inserts).await?;
        let r = w.insert_many(table, rows).await;
        finish::<P, _>(op, w, r).await
    }

    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64> {
        let mut w = begin(self, "db.update_many", true, Writes::Any).await?;
        let r = w.update_count(table, filter, &patch).await;
        finish::<P, _>("db.update_many", w, r).await
    }

    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64> {
        let mut w = begin(self, "db.delete_many", true, Writes::Any).await?;
        let r = w.delete_where(table, filter).await;
        finish::<P, _>("db.delete_many", w, r).await
    }

    async fn raw_query(&self, sql: &str, params: &Params) -> DbResult<Vec<Row>> {
        let run = async {
            let pool = self.sql_state().pool_for("db.raw_query")?;
            let (sql, values) = rewrite_named(sql, params, self.sql_state().dialect())?;
            self.query_raw(&pool, sql, values).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("db.raw_query"))
    }

    async fn transaction(&self, operations: Vec<Operation>) -> DbResult<Vec<OperationOutput>> {
        let mut w = begin(self, "db.transaction", false, Writes::Any).await?;
        let r = w.apply_all_owned(operations).await;
        finish::<P, _>("db.transaction", w, r).await
    }

    async fn create_table(&self, schema: &TableSchema) -> DbResult<()> {
        let run = async {
            schema.validate()?;
            reserved(&schema.name)?;
            let normalized = normalize_defaults(schema)?;
            match schema_of(self, &schema.name).await {
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
            check_references(self, schema).await?;
            let dialect = self.sql_state().dialect();
            let mut statements = compile::create_table(dialect, &normalized)?;
            let follow_up = self
                .extend_create_table(&schema.name, &mut statements)
                .await?;
            let created = ddl(
                self,
                "db.create_table",
                &schema.name,
                statements,
                Some(normalized),
            )
            .await;
            match created {
                // Another process created it between the check and the DDL.
                Err(e) if e.kind() == ErrorKind::Conflict && schema.if_not_exists => {
                    self.sql_state().forget(&schema.name);
                    schema_of(self, &schema.name)
                        .await
                        .map(|_| ())
                        .map_err(|_| e)
                }
                Ok(()) if follow_up => self.table_created(&schema.name).await,
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
            self.sql_state().forget(table);
            match schema_of(self, table).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound && if_exists => return Ok(()),
                Err(e) => return Err(e),
            }
            let stmt = compile::drop_table(table, false)?;
            ddl(self, "db.drop_table", table, vec![stmt], None).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("db.drop_table"))
    }

    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> DbResult<()> {
        let run = async {
            ident::table(table)?;
            reserved(table)?;
            let pool = self.sql_state().pool_for("db.alter_table")?;
            // Read afresh: another process may have altered it.
            self.sql_state().forget(table);
            let (schema, steps) = plan_alter(&*schema_of(self, table).await?, changes)?;
            if steps
                .iter()
                .any(|s| matches!(s, AlterStep::AddForeignKey(_)))
            {
                check_references(self, &schema).await?;
            }
            let dialect = self.sql_state().dialect();
            let mut statements = Vec::new();
            for step in &steps {
                self.prepare_alter_step(&pool, table, step, &mut statements)
                    .await?;
                statements.extend(compile::alter_table(dialect, table, &step.to_change())?);
            }
            ddl(self, "db.alter_table", table, statements, Some(schema)).await
        };
        run.await.map_err(|e: Error| {
            let e = e
                .with_operation("db.alter_table")
                .with_context("table", table.to_string());
            P::alter_error(table, e)
        })
    }

    async fn create_index(&self, index: &IndexSpec) -> DbResult<()> {
        let run = async {
            index.validate()?;
            reserved(&index.table)?;
            let schema = schema_of(self, &index.table).await?;
            for c in &index.columns {
                if schema.find(c).is_none() {
                    return Err(Error::invalid_input(format!(
                        "table {} has no column {c}",
                        index.table
                    )));
                }
            }
            let stmt = compile::create_index(index)?;
            ddl(
                self,
                "db.create_index",
                &index.table,
                vec![stmt],
                Some(TableSchema::clone(&schema)),
            )
            .await
        };
        run.await
            .map_err(|e: Error| e.with_operation("db.create_index"))
    }

    async fn describe_table(&self, table: &str) -> DbResult<Option<TableSchema>> {
        let run = async {
            ident::table(table)?;
            match schema_of(self, table).await {
                Ok(shared) => {
                    let mut schema = TableSchema::clone(&shared);
                    schema.if_not_exists = false;
                    Ok(Some(schema))
                }
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        run.await
            .map_err(|e: Error| e.with_operation("db.describe_table"))
    }

    async fn subscribe_changes(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        self.subscribe(table)
            .await
            .map_err(|e| e.with_operation("db.subscribe_changes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ColumnDef;

    #[test]
    fn metadata_statements_bind_names_and_schemas_as_text() {
        let schema = TableSchema::new("t").column(ColumnDef::text("id").primary_key());
        let pg = store_schema(SqlDialect::Postgres, "t", Some(&schema)).unwrap();
        assert_eq!(
            &*pg.sql,
            "INSERT INTO \"_truststream_schema\" (name, schema) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET schema = excluded.schema"
        );
        assert_eq!(pg.binds.len(), 2);
        assert!(pg.binds.iter().all(|b| b.ty == Some(ColumnType::Text)));
        let stored: TableSchema =
            serde_json::from_str(pg.binds[1].value.as_str().unwrap()).unwrap();
        assert_eq!(stored, schema);
        let lite = store_schema(SqlDialect::Sqlite, "t", None).unwrap();
        assert_eq!(
            &*lite.sql,
            "DELETE FROM \"_truststream_schema\" WHERE name = ?"
        );
        assert_eq!(lite.values(), vec![Value::String("t".into())]);
    }

    #[test]
    fn hints_by_position_or_by_name() {
        let schema = TableSchema::new("t").column(ColumnDef::integer("n"));
        let types = [ColumnType::Boolean];
        assert_eq!(
            ColumnHints::Position(&types).get(0, "x"),
            Some(ColumnType::Boolean)
        );
        assert_eq!(ColumnHints::Position(&types).get(1, "x"), None);
        assert_eq!(
            ColumnHints::Schema(&schema).get(5, "n"),
            Some(ColumnType::Integer)
        );
        assert_eq!(ColumnHints::Schema(&schema).get(0, "zz"), None);
    }
}
