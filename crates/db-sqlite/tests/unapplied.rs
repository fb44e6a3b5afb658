#![allow(clippy::unwrap_used)] // test helpers, not library code
//! Which failed writes say they certainly changed nothing
//! ([`Error::is_unapplied`](truststream_core_db::Error::is_unapplied)):
//! one refused before it started (the database disconnected, the write lock
//! held by another connection past the busy timeout), and not one whose
//! statement ran.

use serde_json::json;
use sqlx::Connection as _;
use truststream_core_db::{ColumnDef, Database, ErrorKind, Operation, Query, Row, TableSchema};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};

fn row(id: i64) -> Row {
    json!({"id": id, "note": "x"}).as_object().cloned().unwrap()
}

async fn open(path: &std::path::Path) -> SqliteDatabase {
    let mut config = SqliteConfig::file(path);
    config.busy_timeout_ms = 200;
    let db = SqliteDatabase::open(config).await.unwrap();
    db.create_table(
        &TableSchema::new("t")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("note")),
    )
    .await
    .unwrap();
    db
}

#[tokio::test]
async fn a_write_refused_before_it_started_is_unapplied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let db = open(&path).await;

    // Another connection holds the write lock: BEGIN IMMEDIATE is refused
    // as busy, before the write's statements.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let e = db
        .transaction(vec![Operation::Create {
            table: "t".into(),
            data: row(1),
        }])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable(), "{e}");
    assert!(e.is_unapplied(), "refused at BEGIN: {e:?}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();

    // A statement that ran and failed is not marked.
    db.create("t", row(2)).await.unwrap();
    let e = db.create("t", row(2)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(!e.is_unapplied(), "{e:?}");

    // Disconnected: nothing can be sent.
    db.disconnect().await.unwrap();
    let e = db.create("t", row(3)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_unapplied(), "{e:?}");

    db.connect().await.unwrap();
    let ids: Vec<i64> = db
        .read("t", &Query::new())
        .await
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![2], "the refused writes changed nothing");
}
