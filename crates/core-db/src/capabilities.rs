//! What a database provider can do, as data.

use crate::sql::SqlDialect;

/// Capabilities of a database provider. Conformance cases declare the flags
/// they need and are skipped (by name) when a flag is `false`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DbCapabilities {
    /// All-or-nothing [`crate::Database::transaction`].
    pub transactions: bool,
    /// [`crate::Database::raw_query`] runs SQL.
    pub raw_sql: bool,
    /// The SQL dialect of `raw_query` (serialized as `"postgres"`,
    /// `"sqlite"`); `None` without `raw_sql`.
    pub sql_dialect: Option<SqlDialect>,
    /// Queries may join other tables.
    pub joins: bool,
    /// Aggregates and `group_by` in [`crate::Query`].
    pub aggregates: bool,
    /// Create, drop and alter tables; create indexes.
    pub schema: bool,
    /// [`crate::Database::subscribe_changes`] delivers row changes.
    pub change_feed: bool,
    /// Which writes the change feed sees; `None` without `change_feed`.
    pub change_feed_scope: Option<ChangeFeedScope>,
    /// Unique constraints are enforced (duplicate keys are `Conflict`).
    pub unique_constraints: bool,
    /// Most values one SQL statement may bind (the dialect's limit), if
    /// limited. It bounds statements, not calls: `create_many` of any
    /// number of rows sends `max_bind_params / columns` rows per `INSERT`,
    /// all in one transaction.
    pub max_bind_params: Option<usize>,
    /// [`crate::Database::scoped`] runs calls as a request's role with its
    /// claims, and the database's row-level security policies apply.
    pub row_security: bool,
    /// Foreign keys declared in [`crate::TableSchema::foreign_keys`] are
    /// enforced: a value with no referenced row, and deleting or re-keying
    /// a referenced row still referenced, are [`crate::ErrorKind::Conflict`].
    /// `false`: the provider refuses to declare one
    /// ([`crate::ErrorKind::Unsupported`]), or keeps it as metadata only
    /// (reported by `describe_table`) and promises nothing about it.
    pub foreign_keys: bool,
    /// [`crate::AlterTable::AddForeignKey`] adds a foreign key to an
    /// existing table, checking its rows. `false`: it is
    /// [`crate::ErrorKind::Unsupported`] (SQLite cannot alter a table's
    /// constraints).
    pub add_foreign_keys: bool,
    /// The JSON document operators [`crate::CmpOp::Contains`] (`cs`),
    /// [`crate::CmpOp::ContainedBy`] (`cd`) and [`crate::CmpOp::Overlaps`]
    /// (`ov`) work on JSON columns. `false`: they are
    /// [`crate::ErrorKind::Unsupported`].
    pub json_containment: bool,
    /// [`crate::Filter::TextSearch`] (`fts`, `plfts`, `phfts`, `wfts`) works
    /// with PostgreSQL's text-search semantics (stemming, stop words,
    /// configurations). `false`: it is [`crate::ErrorKind::Unsupported`].
    pub full_text_search: bool,
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
            max_bind_params: None,
            row_security: false,
            foreign_keys: false,
            add_foreign_keys: false,
            json_containment: false,
            full_text_search: false,
        }
    }
}

impl Default for DbCapabilities {
    fn default() -> Self {
        Self::none()
    }
}

/// Which writes a provider's change feed sees
/// ([`DbCapabilities::change_feed_scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChangeFeedScope {
    /// Only writes made through this provider instance: another instance
    /// (in this process or another) on the same database is not seen.
    Instance,
    /// Every committed write to the database, whoever made it.
    Database,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sets_serialize_as_names() {
        let mut c = DbCapabilities::none();
        c.sql_dialect = Some(SqlDialect::Postgres);
        c.change_feed_scope = Some(ChangeFeedScope::Instance);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["sql_dialect"], "postgres");
        assert_eq!(v["change_feed_scope"], "instance");
        assert!(v.get("max_bind_params").is_some());
        let v = serde_json::to_value(ChangeFeedScope::Database).unwrap();
        assert_eq!(v, "database");
        assert_eq!(serde_json::to_value(SqlDialect::Sqlite).unwrap(), "sqlite");
    }
}
