//! Shared fixtures: a five-table SQLite source with foreign keys, JSON,
//! timestamps, NULLs, unicode and binary values.

#![allow(clippy::unwrap_used)] // a failed setup step or assertion panics: this is a test
#![allow(dead_code)]

use std::sync::Arc;

use serde_json::json;
use truststream_core_db::{ColumnDef, ColumnDefault, Database, IndexSpec, Row, TableSchema, Value};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};

/// The five tables, referenced ones first.
pub fn schemas() -> Vec<TableSchema> {
    vec![
        TableSchema::new("orgs")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("name").not_null().unique())
            .column(ColumnDef::timestamp("created_at").not_null()),
        TableSchema::new("users")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::integer("org_id").not_null())
            .column(ColumnDef::text("email"))
            .column(ColumnDef::boolean("active").not_null().default_value(true))
            .column(ColumnDef::float("score"))
            .references("org_id", "orgs", "id"),
        TableSchema::new("docs")
            .column(ColumnDef::uuid("id").primary_key())
            .column(ColumnDef::text("owner").not_null())
            .column(ColumnDef::json("body"))
            .column(ColumnDef::bytes("blob"))
            .column(ColumnDef::numeric("price"))
            .references("owner", "users", "id"),
        TableSchema::new("tags")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("label").not_null()),
        TableSchema::new("doc_tags")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::uuid("doc_id").not_null())
            .column(ColumnDef::integer("tag_id").not_null())
            .column(ColumnDef::timestamp("at"))
            .references("doc_id", "docs", "id")
            .references("tag_id", "tags", "id"),
    ]
}

fn obj(v: Value) -> Row {
    v.as_object().cloned().expect("object")
}

fn uuid_of(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// Rows of table `t` number `i` (deterministic).
pub fn row(t: &str, i: usize, orgs: usize, users: usize, docs: usize, tags: usize) -> Row {
    match t {
        "orgs" => obj(
            json!({"id": i as i64 + 1, "name": format!("org {i} — Zürich ✓"), "created_at": format!("2024-01-{:02}T10:{:02}:{:02}.123456Z", i % 28 + 1, i % 60, (i * 7) % 60)}),
        ),
        "users" => obj(json!({
            "id": format!("user-{i:07}-ü"),
            "org_id": (i % orgs) as i64 + 1,
            "email": if i % 5 == 0 { Value::Null } else { json!(format!("u{i}@例え.jp")) },
            "active": i % 3 != 0,
            "score": if i % 7 == 0 { Value::Null } else { json!(i as f64 / 3.0) },
        })),
        "docs" => obj(json!({
            "id": uuid_of(i),
            "owner": format!("user-{:07}-ü", i % users),
            "body": if i % 4 == 0 { Value::Null } else { json!({"n": i, "title": format!("doc «{i}» 🚀"), "tags": [i % 3, "x"], "nested": {"b": true, "a": null}}) },
            "blob": if i % 6 == 0 { Value::Null } else { json!(base64_of(&[0u8, 255, (i % 256) as u8, 10, 13, 0])) },
            "price": if i % 2 == 0 { json!(format!("{}.{:02}", i, i % 100)) } else { Value::Null },
        })),
        "tags" => obj(json!({"id": i as i64, "label": format!("tag {i} 标签")})),
        "doc_tags" => obj(json!({
            "id": i as i64,
            "doc_id": uuid_of(i % docs),
            "tag_id": (i % tags) as i64,
            "at": if i % 9 == 0 { Value::Null } else { json!(format!("2025-06-{:02}T00:00:{:02}Z", i % 28 + 1, i % 60)) },
        })),
        _ => panic!("no table {t}"),
    }
}

fn base64_of(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (k, x)| acc | (u32::from(*x) << (16 - 8 * k)));
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Row counts per table for `total` rows over the five tables.
pub fn counts(total: usize) -> [(&'static str, usize); 5] {
    let orgs = (total / 50).max(1);
    let tags = (total / 50).max(1);
    let users = total / 5;
    let docs = total / 4;
    let doc_tags = total - orgs - tags - users - docs;
    [
        ("orgs", orgs),
        ("users", users),
        ("docs", docs),
        ("tags", tags),
        ("doc_tags", doc_tags),
    ]
}

/// Creates the five tables and `total` rows in `db`.
pub async fn fill(db: &dyn Database, total: usize) {
    for s in schemas() {
        db.create_table(&s).await.expect("create table");
    }
    db.create_index(&IndexSpec::new("docs", ["owner"]))
        .await
        .expect("index");
    let c = counts(total);
    let (orgs, users, docs, tags) = (c[0].1, c[1].1, c[2].1, c[3].1);
    for (t, n) in c {
        let mut i = 0;
        while i < n {
            let end = (i + 2000).min(n);
            let rows = (i..end)
                .map(|k| row(t, k, orgs, users, docs, tags))
                .collect();
            db.create_many(t, rows).await.expect("fill");
            i = end;
        }
    }
}

/// An SQLite file database in `dir`.
pub async fn sqlite(dir: &std::path::Path, name: &str) -> Arc<dyn Database> {
    Arc::new(
        SqliteDatabase::open(SqliteConfig::file(dir.join(name)))
            .await
            .expect("sqlite"),
    )
}

/// A PostgreSQL database on a fresh scratch schema, or `None` (skip)
/// outside CI when no server answers.
pub async fn postgres(
    scratch: &truststream_db_postgres::testing::Scratch,
    tag: &str,
) -> Arc<dyn Database> {
    Arc::new(scratch.database(tag).await.expect("postgres"))
}

/// How many rows the CI run uses (override with MIGRATE_TEST_ROWS).
pub fn test_rows() -> usize {
    std::env::var("MIGRATE_TEST_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}
