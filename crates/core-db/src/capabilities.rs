//! What a database provider can do, as data.

/// Capabilities of a database provider. Conformance cases declare the flags
/// they need and are skipped (by name) when a flag is `false`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DbCapabilities {
    /// All-or-nothing [`crate::Database::transaction`].
    pub transactions: bool,
    /// [`crate::Database::raw_query`] runs SQL.
    pub raw_sql: bool,
    /// The SQL dialect of `raw_query` (`"postgres"`, `"sqlite"`), if any.
    pub sql_dialect: Option<&'static str>,
    /// Queries may join other tables.
    pub joins: bool,
    /// Aggregates and `group_by` in [`crate::Query`].
    pub aggregates: bool,
    /// Create, drop and alter tables; create indexes.
    pub schema: bool,
    /// [`crate::Database::subscribe_changes`] delivers row changes.
    pub change_feed: bool,
    /// Which writes the change feed sees: `"process"` (only writes made through
    /// this provider instance) or `"database"` (every write to the database).
    pub change_feed_scope: Option<&'static str>,
    /// Unique constraints are enforced (duplicate keys are `Conflict`).
    pub unique_constraints: bool,
    /// Largest number of rows `create_many` sends in one statement, if limited.
    pub max_batch_rows: Option<usize>,
}

impl DbCapabilities {
    /// Everything off: a starting point for providers, which switch on what
    /// they support.
    pub const fn none() -> Self {
        DbCapabilities {
            transactions: false,
            raw_sql: false,
            sql_dialect: None,
            joins: false,
            aggregates: false,
            schema: false,
            change_feed: false,
            change_feed_scope: None,
            unique_constraints: false,
            max_batch_rows: None,
        }
    }
}

impl Default for DbCapabilities {
    fn default() -> Self {
        Self::none()
    }
}
