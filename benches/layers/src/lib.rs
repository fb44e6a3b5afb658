//! Benchmarks only: see `benches/layers.rs` and docs/benchmarks.md ("Layers").
//!
//! What the bench and the instruction-count example (`examples/gets.rs`)
//! share, so that both measure the same rows: the table, its seed and the
//! default stack.

use serde_json::{json, Value};
use truststream_core_db::{ColumnDef, Database, Row, TableSchema};

/// The table every row reads.
pub const TABLE: &str = "bench";

/// The layers of the default stack, outermost first (the registry orders
/// them by rank whatever the order here).
pub const DEFAULT_STACK: [&str; 6] = [
    "metrics",
    "cache",
    "retry",
    "circuit_breaker",
    "limit",
    "timeout",
];

/// The schema of [`TABLE`].
pub fn schema() -> TableSchema {
    TableSchema::new(TABLE)
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::float("score"))
        .column(ColumnDef::text("status"))
}

/// Creates [`TABLE`] with rows `1..=n`.
///
/// # Panics
/// When the table cannot be created or seeded (a bench has no other way
/// to go on).
pub async fn seed(db: &dyn Database, n: usize) {
    db.create_table(&schema()).await.expect("create table");
    let rows: Vec<Row> = (1..=n as i64)
        .map(|id| {
            let v = json!({
                "id": id,
                "name": format!("agent-{id}"),
                "score": (id % 100) as f64 + 0.5,
                "status": if id % 3 == 0 { "inactive" } else { "active" },
            });
            match v {
                Value::Object(m) => m,
                _ => unreachable!("rows are objects"),
            }
        })
        .collect();
    db.create_many(TABLE, rows).await.expect("seed");
}
