//! The outbox: what the replicator still has to bring to the secondary,
//! written on the primary in the same transaction as the change it records.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use truststream_core::{echo, Error, Result};
use truststream_core_db::{
    AggFunc, AlterTable, ColumnDef, ColumnDefault, ColumnRef, Database, Filter, IndexSpec,
    Operation, Query, Row, SelectItem, TableSchema, Value,
};

/// One outbox entry. Row entries name rows, not changes: the replicator
/// copies the row's current state from the primary, so applying an entry
/// twice, or after a later change of the same row, gives the same result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Entry {
    /// One row by key: copy it from the primary, or delete it on the
    /// secondary when the primary has none.
    Row {
        table: String,
        key_column: String,
        key: Value,
    },
    /// The rows matching a filter on either side (`None`: every row of the
    /// table), each synced as a `Row` entry would be. Written by
    /// `update_many` / `delete_many` and by table resyncs.
    Rows {
        table: String,
        key_column: String,
        filter: Option<Filter>,
    },
    /// A table created on the primary.
    CreateTable(TableSchema),
    /// A table changed on the primary.
    AlterTable {
        table: String,
        changes: Vec<AlterTable>,
    },
    /// A table dropped on the primary.
    DropTable { table: String },
    /// An index created on the primary.
    CreateIndex(IndexSpec),
}

impl Entry {
    fn kind(&self) -> &'static str {
        match self {
            Entry::Row { .. } => "row",
            Entry::Rows { .. } => "rows",
            Entry::CreateTable(_) => "create_table",
            Entry::AlterTable { .. } => "alter_table",
            Entry::DropTable { .. } => "drop_table",
            Entry::CreateIndex(_) => "create_index",
        }
    }

    fn target(&self) -> &str {
        match self {
            Entry::Row { table, .. }
            | Entry::Rows { table, .. }
            | Entry::AlterTable { table, .. }
            | Entry::DropTable { table } => table,
            Entry::CreateTable(schema) => &schema.name,
            Entry::CreateIndex(index) => &index.table,
        }
    }

    /// The outbox row (its `id` is generated).
    pub(crate) fn to_row(&self) -> Result<Row> {
        let body = serde_json::to_value(self).map_err(|e| {
            Error::internal("composite: cannot encode an outbox entry").with_source(e)
        })?;
        let mut row = Row::new();
        row.insert("kind".into(), self.kind().into());
        row.insert("target".into(), self.target().into());
        row.insert("body".into(), body);
        row.insert("created_ms".into(), now_ms().into());
        Ok(row)
    }
}

/// An entry read back from the outbox.
#[derive(Debug)]
pub(crate) struct Stored {
    pub id: i64,
    pub entry: Entry,
}

impl Stored {
    pub(crate) fn from_row(row: &Row) -> Result<Stored> {
        let id = row
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::internal("composite: an outbox row has no integer id"))?;
        let body = row.get("body").cloned().unwrap_or(Value::Null);
        // A provider may hand a JSON column back as its text.
        let body = match body {
            Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            other => other,
        };
        let entry = serde_json::from_value(body).map_err(|e| {
            Error::internal(format!("composite: outbox entry {id} cannot be read"))
                .with_context("entry", echo(&e.to_string()).to_string())
        })?;
        Ok(Stored { id, entry })
    }
}

/// The outbox table.
pub(crate) fn outbox_schema(name: &str) -> TableSchema {
    TableSchema::new(name)
        .column(
            ColumnDef::integer("id")
                .primary_key()
                .default(ColumnDefault::AutoIncrement),
        )
        .column(ColumnDef::text("kind").not_null())
        .column(ColumnDef::text("target").not_null())
        .column(ColumnDef::json("body").not_null())
        .column(ColumnDef::integer("created_ms").not_null())
        .if_not_exists()
}

/// The catalog table: each replicated table's schema.
pub(crate) fn catalog_schema(name: &str) -> TableSchema {
    TableSchema::new(name)
        .column(ColumnDef::text("name").primary_key())
        .column(ColumnDef::json("schema").not_null())
        .if_not_exists()
}

/// Operations that record `entries` in the outbox (none for no entries).
pub(crate) fn insert(outbox: &str, entries: &[Entry]) -> Result<Option<Operation>> {
    if entries.is_empty() {
        return Ok(None);
    }
    let rows = entries.iter().map(Entry::to_row).collect::<Result<_>>()?;
    Ok(Some(Operation::CreateMany {
        table: outbox.to_string(),
        rows,
    }))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The age of an entry written at `created_ms`.
pub(crate) fn age(created_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms().saturating_sub(created_ms)).unwrap_or(0))
}

/// How many rows of `table` match `filter`, and the age of the smallest
/// `column` (milliseconds since the epoch) among them: an outbox's or a
/// journal's size and lag. Zero for no rows.
pub(crate) async fn count_and_age(
    db: &dyn Database,
    table: &str,
    filter: Option<Filter>,
    column: &str,
) -> Result<(u64, Duration)> {
    let mut query = Query::new()
        .select_item(SelectItem::aggregate(AggFunc::Count, None, "n"))
        .select_item(SelectItem::Aggregate {
            func: AggFunc::Min,
            column: Some(ColumnRef::parse(column)),
            filter: None,
            alias: "oldest".to_string(),
        });
    query.filter = filter;
    let rows = db.read(table, &query).await?;
    let row = rows.first();
    let count = row
        .and_then(|r| r.get("n"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let oldest = row
        .and_then(|r| r.get("oldest"))
        .and_then(Value::as_i64)
        .map(age)
        .unwrap_or_default();
    Ok((count, oldest))
}
