//! Probe: one `get` through db-sqlite vs one raw sqlx `fetch_one` with the
//! same SQL, each in a tight loop of its own (no interleaving), to size the
//! single-row select gap seen in the db bench.
#![allow(clippy::unwrap_used)]
use std::time::Instant;

use serde_json::json;
use sqlx::Row as _;
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.db");
    let db = SqliteDatabase::open(SqliteConfig::file(&path))
        .await
        .unwrap();
    db.create_table(
        &TableSchema::new("t")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("name").not_null()),
    )
    .await
    .unwrap();
    for i in 1..=100i64 {
        let r = json!({"id": i, "name": format!("n{i}")});
        db.create("t", r.as_object().unwrap().clone())
            .await
            .unwrap();
    }
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal),
        )
        .await
        .unwrap();
    let sql = "SELECT \"t\".\"id\" AS \"id\", \"t\".\"name\" AS \"name\" FROM \"t\" WHERE \"t\".\"id\" = ? LIMIT 1";
    let n: usize = std::env::var("PROBE_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    for round in 0..3 {
        let t = Instant::now();
        for i in 0..n {
            db.get("t", &json!(1 + i % 100)).await.unwrap().unwrap();
        }
        let ts = t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            let r = sqlx::query(sql)
                .bind(1 + (i % 100) as i64)
                .fetch_one(&pool)
                .await
                .unwrap();
            let _: (i64, String) = (r.get(0), r.get(1));
        }
        let raw = t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            let r = sqlx::query(sql)
                .bind(1 + (i % 100) as i64)
                .fetch_optional(&pool)
                .await
                .unwrap();
            assert!(r.is_some());
        }
        let raw_opt = t.elapsed();
        let base = 1_000_000 * (round as i64 + 1);
        let t = Instant::now();
        for i in 0..n as i64 {
            let r = json!({"id": base + i, "name": "x"});
            db.create("t", r.as_object().unwrap().clone())
                .await
                .unwrap();
        }
        let ts_create = t.elapsed();
        let insert = "INSERT INTO \"t\" (\"id\", \"name\") VALUES (?, ?) RETURNING *";
        let t = Instant::now();
        for i in 0..n as i64 {
            let r = json!({"id": base + 500_000 + i, "name": "x"});
            let r = r.as_object().unwrap().clone();
            let row = sqlx::query(insert)
                .bind(r["id"].as_i64())
                .bind(r["name"].as_str().map(str::to_string))
                .fetch_one(&pool)
                .await
                .unwrap();
            let _: (i64, String) = (row.get(0), row.get(1));
        }
        let raw_create = t.elapsed();
        println!(
            "round {round}: ts create {:.1} us, raw insert {:.1} us",
            ts_create.as_secs_f64() * 1e6 / n as f64,
            raw_create.as_secs_f64() * 1e6 / n as f64
        );
        println!(
            "round {round}: ts get {:.1} us, raw fetch_one {:.1} us, raw fetch_optional {:.1} us",
            ts.as_secs_f64() * 1e6 / n as f64,
            raw.as_secs_f64() * 1e6 / n as f64,
            raw_opt.as_secs_f64() * 1e6 / n as f64
        );
    }
}
