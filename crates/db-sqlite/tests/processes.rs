//! SQLite files shared by processes: two processes writing one file, and a
//! writer killed (SIGKILL) in the middle of its transactions. The children
//! are this test binary run again with `TS_SQLITE_CHILD` set (the ignored
//! `child` test below is the writer).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use truststream_core_db::{ColumnDef, Database, Operation, Query, Row, TableSchema};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};

const CHILD: &str = "TS_SQLITE_CHILD";

fn row(id: i64, batch: i64) -> Row {
    json!({"id": id, "batch": batch, "note": "x".repeat(200)})
        .as_object()
        .cloned()
        .expect("object")
}

fn table() -> TableSchema {
    TableSchema::new("writes")
        .if_not_exists()
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::integer("batch").not_null())
        .column(ColumnDef::text("note"))
}

/// The child writer: `TS_SQLITE_CHILD=<path>:<mode>:<first id>`.
/// Mode `fixed`: 200 single creates and 20 two-row transactions, then exit.
/// Mode `forever`: batches of 500 rows in one `create_many` each, until
/// killed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the child process of the tests below, not a test of its own"]
async fn child() {
    let spec = std::env::var(CHILD).expect("run by the tests below with TS_SQLITE_CHILD set");
    let mut parts = spec.rsplitn(3, ':');
    let first: i64 = parts.next().and_then(|s| s.parse().ok()).expect("first id");
    let mode = parts.next().expect("mode").to_string();
    let path = parts.next().expect("path").to_string();
    let db = SqliteDatabase::open(SqliteConfig::file(&path))
        .await
        .expect("open");
    db.create_table(&table()).await.expect("table");
    match mode.as_str() {
        "fixed" => {
            for i in 0..200 {
                db.create("writes", row(first + i, 0))
                    .await
                    .expect("create");
            }
            for i in 0..20 {
                let id = first + 1000 + 2 * i;
                db.transaction(vec![
                    Operation::Create {
                        table: "writes".into(),
                        data: row(id, 1),
                    },
                    Operation::Create {
                        table: "writes".into(),
                        data: row(id + 1, 1),
                    },
                ])
                .await
                .expect("transaction");
            }
        }
        _ => {
            let mut batch = 0i64;
            loop {
                let start = first + batch * 500;
                let rows: Vec<Row> = (0..500).map(|i| row(start + i, batch)).collect();
                db.create_many("writes", rows).await.expect("batch");
                batch += 1;
            }
        }
    }
}

fn spawn(path: &std::path::Path, mode: &str, first: i64) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD, format!("{}:{mode}:{first}", path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

async fn integrity(db: &SqliteDatabase) {
    let r = db
        .raw_query("PRAGMA integrity_check", &Default::default())
        .await
        .expect("integrity_check");
    assert_eq!(r[0]["integrity_check"], "ok", "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_write_one_file() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = spawn(&path, "fixed", 0);
    let b = spawn(&path, "fixed", 100_000);
    for c in [a, b] {
        let out = c.wait_with_output().expect("child");
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let db = SqliteDatabase::open(SqliteConfig::file(&path))
        .await
        .unwrap();
    integrity(&db).await;
    let rows = db.read("writes", &Query::new()).await.unwrap();
    assert_eq!(rows.len(), 2 * (200 + 40), "every write of both processes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_killed_mid_transaction_leaves_a_consistent_file() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.db");
    for round in 0..3 {
        let mut child = spawn(&path, "forever", round * 10_000_000);
        // Let it commit some batches, then kill it wherever it is.
        let t = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(Some(status)) = child.try_wait() {
                panic!("writer exited early: {status}");
            }
            let committed = match SqliteDatabase::open(SqliteConfig::file(&path)).await {
                Ok(db) => db
                    .read("writes", &Query::new().select(["id"]).limit(2000))
                    .await
                    .map(|r| r.len())
                    .unwrap_or(0),
                Err(_) => 0,
            };
            if committed >= 1000 || t.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(37 * (round as u64 + 1))).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();

        let db = SqliteDatabase::open(SqliteConfig::file(&path))
            .await
            .unwrap();
        integrity(&db).await;
        let rows = db.read("writes", &Query::new()).await.unwrap();
        assert!(!rows.is_empty());
        // All or nothing per batch: every batch present is complete.
        let mut per_batch = std::collections::HashMap::<(i64, i64), usize>::new();
        for r in rows.iter().filter(|r| r["batch"] != -1) {
            let id = r["id"].as_i64().unwrap();
            *per_batch
                .entry((id / 10_000_000, r["batch"].as_i64().unwrap()))
                .or_default() += 1;
        }
        for (batch, n) in &per_batch {
            assert_eq!(*n, 500, "batch {batch:?} is torn");
        }
        // The file takes writes again.
        db.create("writes", row(-1 - round, -1)).await.unwrap();
    }
}
