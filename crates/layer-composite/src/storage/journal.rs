//! The journal: which objects and buckets the replicator still has to
//! bring to the secondary, one row per write, in a database table.

use std::time::Duration;

use truststream_core::{Error, Result};
use truststream_core_db::{
    col, ColumnDef, ColumnDefault, Database, Query, Row, TableSchema, Value,
};

use crate::outbox::{self, now_ms};

/// What a journal entry names: the replicator makes it on the secondary
/// what it is on the primary when the entry is applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// One object.
    Object { bucket: String, key: String },
    /// A bucket (created or deleted).
    Bucket(String),
}

impl Target {
    pub(crate) fn object(bucket: &str, key: &str) -> Self {
        Target::Object {
            bucket: bucket.to_string(),
            key: key.to_string(),
        }
    }

    fn to_row(&self, due_ms: i64) -> Row {
        let (kind, bucket, key) = match self {
            Target::Object { bucket, key } => ("object", bucket.as_str(), key.as_str()),
            Target::Bucket(bucket) => ("bucket", bucket.as_str(), ""),
        };
        let mut row = Row::new();
        row.insert("kind".into(), kind.into());
        row.insert("bucket".into(), bucket.into());
        row.insert("key".into(), key.into());
        row.insert("created_ms".into(), now_ms().into());
        row.insert("due_ms".into(), due_ms.into());
        row
    }

    fn from_row(row: &Row) -> Result<(i64, Target)> {
        let text = |name: &str| row.get(name).and_then(Value::as_str).unwrap_or_default();
        let id = row
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::internal("composite: a journal row has no integer id"))?;
        let target = match text("kind") {
            "object" => Target::object(text("bucket"), text("key")),
            "bucket" => Target::Bucket(text("bucket").to_string()),
            other => {
                return Err(Error::internal(format!(
                    "composite: journal entry {id} has an unknown kind {:?}",
                    truststream_core::echo(other).to_string()
                )))
            }
        };
        Ok((id, target))
    }
}

/// The journal table.
pub(crate) fn schema(name: &str) -> TableSchema {
    TableSchema::new(name)
        .column(
            ColumnDef::integer("id")
                .primary_key()
                .default(ColumnDefault::AutoIncrement),
        )
        .column(ColumnDef::text("kind").not_null())
        .column(ColumnDef::text("bucket").not_null())
        .column(ColumnDef::text("key").not_null())
        .column(ColumnDef::integer("created_ms").not_null())
        .column(ColumnDef::integer("due_ms").not_null())
        .if_not_exists()
}

/// Records `targets`, to be applied from `due_ms` on (now, for a write about
/// to happen; a signed upload URL's expiry for the writes it allows).
pub(crate) async fn record(
    journal: &dyn Database,
    table: &str,
    targets: &[Target],
    due_ms: i64,
) -> Result<()> {
    match targets {
        [] => Ok(()),
        [one] => journal.create(table, one.to_row(due_ms)).await.map(|_| ()),
        many => journal
            .create_many(table, many.iter().map(|t| t.to_row(due_ms)).collect())
            .await
            .map(|_| ()),
    }
}

/// The entries due now with an id above `after`, at most `limit`, in id
/// order.
pub(crate) async fn due(
    journal: &dyn Database,
    table: &str,
    after: i64,
    limit: u64,
) -> Result<Vec<(i64, Target)>> {
    let query = Query::new()
        .filter(col("due_ms").lte(now_ms()))
        .filter(col("id").gt(after))
        .order_by_asc("id")
        .limit(limit);
    journal
        .read(table, &query)
        .await?
        .iter()
        .map(Target::from_row)
        .collect()
}

/// Removes the entries `ids`.
pub(crate) async fn remove(journal: &dyn Database, table: &str, ids: &[i64]) -> Result<()> {
    for chunk in ids.chunks(200) {
        journal
            .delete_many(table, &col("id").is_in(chunk.iter().copied()))
            .await?;
    }
    Ok(())
}

/// The number of entries due and the age of the oldest (since it became
/// due).
pub(crate) async fn lag(journal: &dyn Database, table: &str) -> Result<(u64, Duration)> {
    let due = col("due_ms").lte(now_ms());
    outbox::count_and_age(journal, table, Some(due), "due_ms").await
}
