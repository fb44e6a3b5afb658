//! A PostgreSQL server stopped and started again under a running writer.
//!
//! The test makes its own throw-away cluster ([`PrivateCluster`]) so
//! restarting it cannot disturb other tests sharing the machine's server. What it proves:
//! - writes while the server is down fail with `Unavailable` (retryable)
//!   within the acquire timeout, none hangs;
//! - the pool recovers by itself once the server is back (same process,
//!   same provider);
//! - every write that returned `Ok` is in the table afterwards;
//! - a change-feed subscriber is told that changes may have been lost, and
//!   receives changes again after the restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use truststream_core_db::{ColumnDef, Database, ErrorKind, Query, TableSchema};
use truststream_db_postgres::testing::PrivateCluster;
use truststream_db_postgres::{PgConfig, PgDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_from_a_server_restart_and_keeps_every_acknowledged_write() {
    let Some(cluster) = PrivateCluster::create() else {
        return;
    };
    let mut config = PgConfig::new(cluster.url());
    config.acquire_timeout_ms = 1_000;
    config.max_connections = 4;
    let db = Arc::new(PgDatabase::open(config).await.expect("open"));
    db.create_table(
        &TableSchema::new("writes")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("note")),
    )
    .await
    .unwrap();
    let mut feed = db.subscribe_changes(Some("writes")).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let t = Instant::now();
                let r = db
                    .create(
                        "writes",
                        json!({"id": i, "note": "w"}).as_object().unwrap().clone(),
                    )
                    .await;
                slowest = slowest.max(t.elapsed());
                match r {
                    Ok(_) => acked.push((i, Instant::now())),
                    Err(e) => {
                        failures.push((e.kind(), e.is_retryable(), e.to_string()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (acked, failures, slowest)
        })
    };

    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopper = tokio::task::spawn_blocking(move || {
        cluster.stop();
        std::thread::sleep(Duration::from_millis(1_500));
        cluster.start();
        cluster
    });
    let cluster = stopper.await.unwrap();
    let restarted_at = Instant::now();
    // Let the writer run against the restarted server.
    let resumed_from = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = db.read("writes", &Query::new()).await.map(|r| r.len());
        if n.is_ok() || resumed_from.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, failures, slowest) = writer.await.unwrap();

    eprintln!(
        "{} writes acknowledged, {} refused during the outage, slowest call {slowest:?}",
        acked.len(),
        failures.len()
    );
    assert!(!failures.is_empty(), "the outage was seen by the writer");
    for (kind, retryable, msg) in &failures {
        assert_eq!(*kind, ErrorKind::Unavailable, "{msg}");
        assert!(*retryable, "{msg}");
    }
    // Acquire timeout 1 s; a call may also wait for a connect attempt and a
    // statement already sent when the server went away.
    assert!(
        slowest < Duration::from_secs(5),
        "a write hung for {slowest:?}"
    );

    // Same provider, same process: the pool came back by itself.
    let stored: std::collections::HashSet<i64> = db
        .read("writes", &Query::new())
        .await
        .expect("reads after the restart")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let missing: Vec<i64> = acked
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| !stored.contains(i))
        .collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let after_restart = acked.iter().filter(|(_, at)| *at > restarted_at).count();
    assert!(after_restart > 0, "writes resumed after the restart");

    // The feed reported the gap, then delivers again.
    let mut saw_gap = false;
    let fresh = db
        .create(
            "writes",
            json!({"id": -1, "note": "after"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let item = tokio::time::timeout_at(deadline.into(), feed.recv())
            .await
            .expect("the feed delivers after the restart")
            .expect("feed open");
        match item {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                saw_gap = true;
            }
            Ok(c) if c.key == fresh["id"] => break,
            Ok(_) => {}
        }
    }
    assert!(saw_gap, "subscribers are told changes may have been lost");
    drop(feed);
    drop(db);
    drop(cluster);
}
