#![allow(clippy::unwrap_used)] // test helpers, not library code
//! Which failed writes say they certainly changed nothing
//! ([`Error::is_unapplied`](truststream_core_db::Error::is_unapplied)), on a
//! [`PrivateCluster`] of the test's own:
//! - a create while the server is stopped (no connection could be had) is
//!   `Unavailable`, retryable and unapplied;
//! - a create whose statement was running when its server process was
//!   terminated is `Unavailable` and retryable but NOT unapplied (its
//!   outcome is unknown to the caller).

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection as _;
use truststream_core_db::{ColumnDef, Database, ErrorKind, Query, Row, TableSchema};
use truststream_db_postgres::testing::PrivateCluster;
use truststream_db_postgres::{PgConfig, PgDatabase};

fn row(id: i64) -> Row {
    json!({"id": id, "note": "x"}).as_object().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_writes_that_never_reached_the_server_are_unapplied() {
    let Some(cluster) = PrivateCluster::create() else {
        return;
    };
    let mut config = PgConfig::new(cluster.url());
    config.acquire_timeout_ms = 1_000;
    config.max_connections = 2;
    let db = std::sync::Arc::new(PgDatabase::open(config).await.unwrap());
    db.create_table(
        &TableSchema::new("t")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("note")),
    )
    .await
    .unwrap();

    // Mid-flight: the insert waits on a lock another session holds, and
    // its server process is terminated while it waits.
    let mut locker = sqlx::PgConnection::connect(&cluster.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let blocked = {
        let db = db.clone();
        tokio::spawn(async move { db.create("t", row(1)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: i32 = loop {
        let waiting: Option<(i32,)> = sqlx::query_as(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = 'truststream' AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&mut locker)
        .await
        .unwrap();
        if let Some((pid,)) = waiting {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the insert never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut locker)
        .await
        .unwrap();
    let e = blocked.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable(), "{e}");
    assert!(!e.is_unapplied(), "killed mid-statement: unknown, {e:?}");
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();

    // Server down: no connection, nothing sent.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let started = Instant::now();
    let e = db.create("t", row(2)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable(), "{e}");
    assert!(e.is_unapplied(), "server down: {e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refused create took {:?}",
        started.elapsed()
    );
    // An update too (the same write path).
    let e = db.update("t", &json!(2), row(2)).await.unwrap_err();
    assert!(e.is_unapplied(), "server down: {e:?}");

    // Back up: the same provider writes again, and neither failed create
    // left a row.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start();
        cluster
    })
    .await
    .unwrap();
    db.create("t", row(3)).await.unwrap();
    let ids: Vec<i64> = db
        .read("t", &Query::new())
        .await
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![3]);
    drop(db);
    drop(cluster);
}
