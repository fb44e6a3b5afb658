//! The primary stopped mid-load: a PostgreSQL primary on a private cluster
//! (`testing::PrivateCluster`, never the shared server), a SQLite secondary
//! on a temporary file, a writer and a reader running through the composite
//! layer. While the primary is down, writes fail with `Unavailable` and
//! reads keep answering from the secondary; once it is back, writes resume,
//! the secondary catches up, and the row sets are equal at the end.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use truststream_core::{ErrorKind, HealthStatus};
use truststream_core_db::{ColumnDef, Database, Query, Row, TableSchema};
use truststream_db_postgres::testing::PrivateCluster;
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_layer_composite::{CompositeConfig, CompositeLayer};

fn by_id(rows: Vec<Row>) -> HashMap<String, Row> {
    rows.into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect()
}

#[derive(Default)]
struct Tally {
    acked: Vec<String>,
    refused: Vec<(ErrorKind, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_stopped_primary_and_the_secondary_catches_up() {
    let Some(cluster) = PrivateCluster::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut pg = PgConfig::new(cluster.url());
    pg.acquire_timeout_ms = 500;
    pg.max_connections = 4;
    let primary: Arc<dyn Database> = Arc::new(PgDatabase::open(pg).await.unwrap());
    let secondary: Arc<dyn Database> = Arc::new(
        SqliteDatabase::open(SqliteConfig::file(dir.path().join("replica.db")))
            .await
            .unwrap(),
    );
    let mut config = CompositeConfig::new("sqlite", json!({}));
    config.interval = Duration::from_millis(50);
    config.batch = 100;
    let db = CompositeLayer::wrap(Arc::clone(&primary), Arc::clone(&secondary), &config)
        .await
        .unwrap();
    db.create_table(
        &TableSchema::new("items")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::integer("counter").not_null().default_value(0)),
    )
    .await
    .unwrap();

    // The writer: creates, and updates of earlier rows.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let writer = {
        let (db, stop, tally) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&tally));
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = format!("w{i:06}");
                let r = db
                    .create("items", json!({"id": id}).as_object().unwrap().clone())
                    .await;
                let target = {
                    let mut t = tally.lock().unwrap();
                    match r {
                        Ok(_) => {
                            t.acked.push(id);
                            Some(t.acked[(i as usize * 31) % t.acked.len()].clone())
                        }
                        Err(e) => {
                            t.refused.push((e.kind(), e.to_string()));
                            None
                        }
                    }
                };
                let Some(target) = target else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let patch = json!({"counter": i}).as_object().unwrap().clone();
                let _ = db.update("items", &json!(target), patch).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // What the secondary holds when the primary goes away.
    let replicated: Vec<String> = by_id(secondary.read("items", &Query::new()).await.unwrap())
        .into_keys()
        .collect();
    assert!(!replicated.is_empty(), "nothing replicated under load");
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();

    // The outage: reads of replicated rows answer, from the secondary.
    let outage = Instant::now();
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    // Without a circuit breaker under the layer each fallback first waits
    // for the pool's acquire timeout (500 ms): a sample of ten rows.
    while outage.elapsed() < Duration::from_secs(2) {
        for id in replicated.iter().step_by(replicated.len() / 10 + 1) {
            let t = Instant::now();
            let row = db.get("items", &json!(id)).await;
            slowest = slowest.max(t.elapsed());
            let row = row.unwrap_or_else(|e| panic!("read of {id} failed in the outage: {e}"));
            assert!(row.is_some(), "{id} is on the secondary");
            answered += 1;
        }
        let all = db.read("items", &Query::new()).await.unwrap();
        assert!(all.len() >= replicated.len());
    }
    let health = db.health().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    let fallbacks = db.layer().stats().read_fallbacks;
    assert!(fallbacks >= answered);
    let refused_in_outage = tally.lock().unwrap().refused.len();
    assert!(refused_in_outage > 0, "the writer saw the outage");

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start();
        cluster
    })
    .await
    .unwrap();
    // Writes resume by themselves.
    let back = Instant::now();
    let acked_at_restart = tally.lock().unwrap().acked.len();
    while tally.lock().unwrap().acked.len() < acked_at_restart + 50 {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "writes did not resume"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    // The secondary catches up (the background replicator, and a last
    // drain to be sure).
    let catching = Instant::now();
    while db.layer().lag().await.unwrap().entries > 0 {
        assert!(
            catching.elapsed() < Duration::from_secs(60),
            "replication did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.layer().catch_up().await.unwrap();

    let t = std::mem::take(&mut *tally.lock().unwrap());
    for (kind, msg) in &t.refused {
        assert_eq!(*kind, ErrorKind::Unavailable, "{msg}");
    }
    let p = by_id(primary.read("items", &Query::new()).await.unwrap());
    let s = by_id(secondary.read("items", &Query::new()).await.unwrap());
    for id in &t.acked {
        assert!(p.contains_key(id), "acknowledged {id} lost");
    }
    assert_eq!(s.len(), p.len());
    assert_eq!(s, p);
    eprintln!(
        "{} writes acknowledged, {} refused while the primary was down; {} rows replicated \
         before the stop; {answered} reads answered by the secondary in the outage \
         (slowest {slowest:?}, {fallbacks} fallbacks); caught up in {:?}; {} rows equal on both sides",
        t.acked.len(),
        t.refused.len(),
        replicated.len(),
        catching.elapsed(),
        p.len()
    );
    drop(db);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
