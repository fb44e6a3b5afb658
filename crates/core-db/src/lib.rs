#![doc = include_str!("../README.md")]

mod capabilities;
mod changes;
pub mod eval;
mod ext;
pub mod ident;
mod missing;
mod operation;
mod query;
mod result_set;
mod schema;
mod scope;
pub mod sql;
pub mod value;

use async_trait::async_trait;

pub use capabilities::{ChangeFeedScope, DbCapabilities};
pub use changes::{ChangeFeed, ChangeKind, ChangeStream, RowChange};
pub use ext::{to_row, DatabaseExt, Page, MAX_PAGE_SIZE};
pub use missing::{missing_tables, missing_tables_health, missing_tables_message};
pub use operation::{check_updated, Operation, OperationOutput};
pub use query::{
    and, col, not, or, validate_text_search_config, AggFunc, CmpOp, ColumnRef, Cursor, Filter,
    Join, JoinKind, NullsOrder, OrderBy, Query, SelectItem, SortDirection, TextSearchKind,
    MAX_JSON_OPERAND_DEPTH, MAX_JSON_OPERAND_NODES,
};
pub use result_set::{Cell, CellRows, ResultSet};
pub use schema::{
    AlterTable, ColumnDef, ColumnDefault, ColumnType, ForeignKey, IndexSpec, TableSchema,
};
pub use scope::RequestScope;
pub use truststream_core::{Error, ErrorKind, Health, HealthStatus, ProviderInfo};

/// A row: column name -> JSON value, in column order.
pub type Row = serde_json::Map<String, serde_json::Value>;
/// A column value.
pub use serde_json::Value;
/// Named parameters for [`Database::raw_query`] (`:name` -> value).
pub type Params = std::collections::BTreeMap<String, Value>;
/// `Result` of database operations.
pub type DbResult<T> = Result<T, Error>;
/// The database error type (the shared TrustStream [`Error`]).
pub type DbError = Error;

/// Database provider factories by type name (see [`truststream_core::Registry`]).
pub type DbRegistry = truststream_core::Registry<dyn Database>;

/// A database provider.
///
/// Every method is available on every provider; a method the provider cannot
/// serve returns [`ErrorKind::Unsupported`] and its [`DbCapabilities`] flag is
/// `false`. Tables and columns are validated identifiers
/// ([`ident::validate`]); values are always bound, never spliced into SQL.
///
/// Each table has a single-column primary key (declared in [`TableSchema`];
/// `id` where the provider cannot tell). `id` arguments are values of that key.
#[async_trait]
pub trait Database: Send + Sync + 'static {
    /// Provider type name and crate version.
    fn info(&self) -> ProviderInfo;

    /// What this provider can do.
    fn capabilities(&self) -> DbCapabilities;

    /// Probes the provider and reports status and latency. Never fails: an
    /// unreachable provider reports [`HealthStatus::Unhealthy`].
    async fn health(&self) -> Health;

    /// Opens connections (idempotent). Providers connect lazily too, so calling
    /// this is only needed to fail fast at start-up.
    async fn connect(&self) -> DbResult<()>;

    /// Closes connections; later calls fail with [`ErrorKind::Unavailable`]
    /// until [`Database::connect`] is called again.
    async fn disconnect(&self) -> DbResult<()>;

    /// Inserts one row and returns it as stored (defaults and generated keys
    /// filled in). A duplicate key is [`ErrorKind::Conflict`]. A column given
    /// as JSON `null` is stored as NULL, as in SQL: leave the key out to get
    /// the column's default (with serde, `#[serde(skip_serializing_if =
    /// "Option::is_none")]` on optional fields).
    async fn create(&self, table: &str, row: Row) -> DbResult<Row>;

    /// Runs a query against `table` and returns the matching rows.
    async fn read(&self, table: &str, query: &Query) -> DbResult<Vec<Row>>;

    /// Fetches one row by primary key.
    async fn get(&self, table: &str, id: &Value) -> DbResult<Option<Row>>;

    /// [`Database::read`] as a [`ResultSet`]: the same rows, which a
    /// provider may hand over without building a JSON object per row (the
    /// SQL providers keep the column names once). The typed reads
    /// ([`DatabaseExt::read_as`]) deserialize from it. The default is
    /// [`Database::read`]'s rows; an implementation must return exactly
    /// those rows (same columns in the same order, same values).
    async fn read_set(&self, table: &str, query: &Query) -> DbResult<ResultSet> {
        self.read(table, query).await.map(ResultSet::from_rows)
    }

    /// [`Database::get`] as a [`ResultSet`] of at most one row, as
    /// [`Database::read_set`] is to [`Database::read`];
    /// [`DatabaseExt::get_as`] deserializes from it.
    async fn get_set(&self, table: &str, id: &Value) -> DbResult<ResultSet> {
        let row = self.get(table, id).await?;
        Ok(ResultSet::from_rows(Vec::from_iter(row)))
    }

    /// [`Database::get_set`] of the named columns only, in the order given
    /// (every column when `columns` is empty): the row a read selecting
    /// `columns` where the primary key is `id` returns. Each name is a
    /// plain column name, given once (no `table.` prefix, alias or `*`);
    /// anything else, or a column the table lacks, is
    /// [`ErrorKind::InvalidInput`]. [`DatabaseExt::get_columns_as`]
    /// deserializes from it.
    ///
    /// The default is [`project_get`]: [`Database::get`]'s row, projected.
    /// The SQL providers select only those columns, with one statement
    /// compiled and kept per column list.
    async fn get_columns_set(
        &self,
        table: &str,
        id: &Value,
        columns: &[&str],
    ) -> DbResult<ResultSet> {
        project_get(self, table, id, columns).await
    }

    /// Sets the columns in `patch` on the row with primary key `id` and returns
    /// the updated row. A missing row is [`ErrorKind::NotFound`].
    async fn update(&self, table: &str, id: &Value, patch: Row) -> DbResult<Row>;

    /// Deletes the row with primary key `id`; `Ok(false)` when there was none.
    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool>;

    /// Inserts many rows, all or none, and returns them as stored.
    async fn create_many(&self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>>;

    /// Inserts many rows, all or none, as [`Database::create_many`] does
    /// (the same checks, defaults and errors), and returns how many: a bulk
    /// load that does not need the stored rows back. A provider may take a
    /// faster path for it (PostgreSQL streams the rows with `COPY`); by
    /// default it is `create_many` with the rows dropped.
    async fn insert_many(&self, table: &str, rows: Vec<Row>) -> DbResult<u64> {
        Ok(self.create_many(table, rows).await?.len() as u64)
    }

    /// Sets `patch` on every row matching `filter`; returns how many changed.
    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64>;

    /// Deletes every row matching `filter`; returns how many were deleted.
    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64>;

    /// Runs provider-specific SQL with `:name` parameters bound as values.
    /// Requires [`DbCapabilities::raw_sql`].
    async fn raw_query(&self, sql: &str, params: &Params) -> DbResult<Vec<Row>>;

    /// Runs the operations in order, all or nothing. On the first failure
    /// nothing is applied and that operation's error is returned, with the
    /// context `operation_index`. Requires [`DbCapabilities::transactions`].
    async fn transaction(&self, operations: Vec<Operation>) -> DbResult<Vec<OperationOutput>>;

    /// Creates a table. An existing table is [`ErrorKind::Conflict`] unless
    /// `schema.if_not_exists`. Requires [`DbCapabilities::schema`].
    async fn create_table(&self, schema: &TableSchema) -> DbResult<()>;

    /// Drops a table. A missing table is [`ErrorKind::NotFound`] unless
    /// `if_exists`. Requires [`DbCapabilities::schema`].
    async fn drop_table(&self, table: &str, if_exists: bool) -> DbResult<()>;

    /// Changes a table's columns. Requires [`DbCapabilities::schema`].
    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> DbResult<()>;

    /// Creates an index. Requires [`DbCapabilities::schema`].
    async fn create_index(&self, index: &IndexSpec) -> DbResult<()>;

    /// The schema of `table` (columns in order, types, primary key) as the
    /// provider knows it, or `Ok(None)` when there is no such table. Used by
    /// front ends (the REST API) to type filter values and name unknown
    /// columns. The default answers [`ErrorKind::Unsupported`], so providers
    /// written before this method keep compiling.
    async fn describe_table(&self, table: &str) -> DbResult<Option<TableSchema>> {
        let _ = table;
        Err(Error::unsupported(format!(
            "the {} database provider cannot describe tables",
            self.info().name
        ))
        .with_operation("db.describe_table"))
    }

    /// A handle on the same database whose every call runs as `scope` (a
    /// database role and the caller's verified claims), so the database's
    /// row-level security policies decide what the caller may read and
    /// change. Requires [`DbCapabilities::row_security`]; the default
    /// answers [`ErrorKind::Unsupported`].
    ///
    /// Handles are cheap (no connection is held between calls). Never cache
    /// a scoped call's result where an unscoped or differently scoped call
    /// could read it.
    fn scoped(
        self: std::sync::Arc<Self>,
        scope: RequestScope,
    ) -> DbResult<std::sync::Arc<dyn Database>> {
        let _ = scope;
        Err(Error::unsupported(format!(
            "the {} database provider does not run calls as a request's role (no row-level security)",
            self.info().name
        ))
        .with_operation("db.scoped"))
    }

    /// Subscribes to committed row changes of one table (`Some`) or all tables.
    /// Requires [`DbCapabilities::change_feed`]; which writes are seen is
    /// [`DbCapabilities::change_feed_scope`].
    async fn subscribe_changes(&self, table: Option<&str>) -> DbResult<ChangeStream>;
}

/// The longest column list [`Database::get_columns_set`] takes (SQLite's
/// default column limit; PostgreSQL's is 1,600): a longer one names a
/// column twice or one the table lacks, and is refused before it is
/// compared name by name.
pub const MAX_COLUMN_LIST: usize = 2000;

/// Checks the column list of [`Database::get_columns_set`]: at most
/// [`MAX_COLUMN_LIST`] plain identifiers ([`ident::validate`]), none named
/// twice.
pub fn check_column_list(columns: &[&str]) -> DbResult<()> {
    if columns.len() > MAX_COLUMN_LIST {
        return Err(Error::invalid_input(format!(
            "{} columns listed: at most {MAX_COLUMN_LIST}",
            columns.len()
        )));
    }
    for (i, c) in columns.iter().enumerate() {
        ident::validate(c)?;
        if columns[..i].contains(c) {
            return Err(Error::invalid_input(format!(
                "column {c} is named twice in the column list"
            )));
        }
    }
    Ok(())
}

/// [`Database::get_columns_set`] by way of [`Database::get`]: the row,
/// keeping `columns` in the order given. Without a row the names are
/// checked against [`Database::describe_table`] where the provider can
/// describe tables (a provider that cannot reports an unknown column only
/// when the row exists). The default of the trait method, and what a
/// wrapper that must see every read as a `get` calls.
pub async fn project_get<D: Database + ?Sized>(
    db: &D,
    table: &str,
    id: &Value,
    columns: &[&str],
) -> DbResult<ResultSet> {
    let op = "db.get";
    let unknown = |c: &str| {
        Error::invalid_input(format!("table {table} has no column {c}")).with_operation(op)
    };
    // The `get` first, as the SQL providers look the table up first: a
    // missing table is `NotFound` whatever the list. The names only ever
    // index the row's map.
    let row = db.get(table, id).await?;
    check_column_list(columns).map_err(|e| e.with_operation(op))?;
    let Some(mut row) = row else {
        if !columns.is_empty() {
            if let Ok(Some(schema)) = db.describe_table(table).await {
                if let Some(c) = columns.iter().find(|c| schema.find(c).is_none()) {
                    return Err(unknown(c));
                }
            }
        }
        return Ok(ResultSet::from_rows(Vec::new()));
    };
    if columns.is_empty() {
        return Ok(ResultSet::from_rows(vec![row]));
    }
    let mut out = Row::with_capacity(columns.len());
    for c in columns {
        let v = row.remove(*c).ok_or_else(|| unknown(c))?;
        out.insert((*c).to_string(), v);
    }
    Ok(ResultSet::from_rows(vec![out]))
}
