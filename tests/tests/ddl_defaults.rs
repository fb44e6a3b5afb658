//! Column defaults are inlined into DDL (they cannot be bound): a default
//! that would break out of a string literal is stored verbatim by every
//! database provider, through `create_table` and `alter_table`.
//!
//! PostgreSQL runs in a scratch schema on the server at `DATABASE_URL`
//! (skipped with a message when there is none, failing under `CI=true`);
//! `crates/db-postgres/tests/postgres.rs` also runs it with
//! `standard_conforming_strings = off`.

use std::sync::Arc;

use serde_json::json;
use truststream_core_db::{AlterTable, ColumnDef, Database, TableSchema};
use truststream_db_postgres::testing::{self, Scratch};

/// Ends a `'...'` literal where backslashes are escapes, or a `"..."`
/// identifier, and comments out the rest.
const HOSTILE: [&str; 4] = [
    "\\' || current_user) --",
    "'); DROP TABLE canary; --",
    "\" || 'x' --",
    "\\\\''\\",
];

async fn check(db: Arc<dyn Database>) {
    let mut schema = TableSchema::new("defaults").column(ColumnDef::integer("id").primary_key());
    for (i, v) in HOSTILE.iter().enumerate() {
        schema = schema.column(ColumnDef::text(&format!("t{i}")).default_value(*v));
    }
    schema = schema.column(ColumnDef::json("j").default_value(json!({ "k": HOSTILE })));
    db.create_table(&schema).await.expect("create_table");
    let added: Vec<AlterTable> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, v)| AlterTable::AddColumn(ColumnDef::text(&format!("a{i}")).default_value(*v)))
        .collect();
    db.alter_table("defaults", &added)
        .await
        .expect("alter_table");
    let mut row = truststream_core_db::Row::new();
    row.insert("id".into(), json!(1));
    let stored = db.create("defaults", row).await.expect("insert");
    for (i, v) in HOSTILE.iter().enumerate() {
        assert_eq!(stored[&format!("t{i}")], *v, "{stored:?}");
        assert_eq!(stored[&format!("a{i}")], *v, "{stored:?}");
    }
    assert_eq!(stored["j"], json!({ "k": HOSTILE }));
    assert_eq!(
        db.get("defaults", &json!(1)).await.expect("get"),
        Some(stored)
    );
}

#[tokio::test]
async fn memory_stores_hostile_defaults_verbatim() {
    check(Arc::new(truststream_db_memory::MemoryDatabase::new())).await;
}

#[tokio::test]
async fn sqlite_stores_hostile_defaults_verbatim() {
    let db = truststream_db_sqlite::SqliteDatabase::in_memory()
        .await
        .expect("in-memory SQLite database");
    check(Arc::new(db)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stores_hostile_defaults_verbatim() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let db = scratch.database("defaults").await.expect("scratch schema");
    check(Arc::new(db)).await;
    scratch.cleanup().await.expect("drop the scratch schema");
}
