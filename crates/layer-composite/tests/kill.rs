//! kill -9 in the middle of replication: a child process (this test binary
//! run again for one test, with `TS_COMPOSITE_CHILD` set) writes through a
//! composite layer whose replicator is slow (batch 5, and a secondary that takes 50 ms a call) and
//! prints each acknowledged write; the parent SIGKILLs it while the outbox
//! is still full, then opens the same primary and secondary with a fresh
//! layer. Replication resumes from the outbox: every acknowledged write is
//! on both sides, the row sets are equal, each row's update counter equals
//! the number of updates made (none applied twice), the outbox ends empty.
//!
//! Two variants: SQLite files for both sides, and a PostgreSQL primary on a
//! private cluster (`testing::PrivateCluster`) with a SQLite secondary.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use truststream_core::{BoxFuture, Result};
use truststream_core_db::{ColumnDef, Database, Query, Row, TableSchema};
use truststream_db_postgres::testing::PrivateCluster;
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_layer::{around_database, Around, Next, Op};
use truststream_layer_composite::{CompositeConfig, CompositeLayer};

/// Set in the child: `<primary>|<secondary file>`, the primary being
/// `sqlite:<file>` or `postgres:<url>`.
const CHILD: &str = "TS_COMPOSITE_CHILD";

fn items() -> TableSchema {
    TableSchema::new("items")
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::integer("counter").not_null().default_value(0))
        .column(ColumnDef::text("note"))
        .if_not_exists()
}

async fn open(primary: &str, secondary: &str) -> (Arc<dyn Database>, Arc<dyn Database>) {
    let p: Arc<dyn Database> = if let Some(file) = primary.strip_prefix("sqlite:") {
        Arc::new(
            SqliteDatabase::open(SqliteConfig::file(file))
                .await
                .unwrap(),
        )
    } else {
        let url = primary.strip_prefix("postgres:").unwrap();
        let mut config = PgConfig::new(url);
        config.acquire_timeout_ms = 2_000;
        Arc::new(PgDatabase::open(config).await.unwrap())
    };
    let s: Arc<dyn Database> = Arc::new(
        SqliteDatabase::open(SqliteConfig::file(secondary))
            .await
            .unwrap(),
    );
    (p, s)
}

/// Waits after each call.
struct SlowAfter(Duration);

impl Around for SlowAfter {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let result = next.run().await;
            tokio::time::sleep(self.0).await;
            result
        })
    }
}

/// The child: writes until killed (or two minutes pass), printing
/// `ack create <id>` / `ack update <id> <counter>` after each acknowledged
/// write and `applied <n>` as the replicator progresses.
async fn child(spec: &str) {
    // libtest (one test thread) has printed "test <name> ... " with no
    // line end: end that line, or the first acknowledgement would share
    // it and the parent would not read it (an acknowledged write it does
    // not know of).
    println!();
    let (primary, secondary) = spec.split_once('|').unwrap();
    let (p, s) = open(primary, secondary).await;
    let mut config = CompositeConfig::new("sqlite", json!({}));
    config.batch = 5;
    config.interval = Duration::from_millis(100);
    // A slow secondary: each call waits 50 ms after it is done, so that the
    // kill most likely lands between a batch applied on the secondary and
    // its entries removed from the outbox.
    let s = around_database(s, Arc::new(SlowAfter(Duration::from_millis(50))));
    let db = CompositeLayer::wrap(p, s, &config).await.unwrap();
    db.create_table(&items()).await.unwrap();
    {
        let db = Arc::clone(&db);
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                let applied = db.layer().stats().applied;
                if applied != last {
                    println!("applied {applied}");
                    last = applied;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    let started = Instant::now();
    let mut created: Vec<String> = Vec::new();
    let mut i: u64 = 0;
    let mut lcg: u64 = 1;
    while started.elapsed() < Duration::from_secs(120) {
        i += 1;
        let id = format!("item{i:05}");
        let r = db
            .create(
                "items",
                json!({"id": id, "note": "new"})
                    .as_object()
                    .unwrap()
                    .clone(),
            )
            .await;
        if r.is_ok() {
            println!("ack create {id}");
            created.push(id);
        }
        // Read-modify-write of an earlier row: the counter counts updates.
        // Among the first 50 rows, so that rows are updated many times.
        lcg = lcg
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = ((lcg >> 33) % created.len().clamp(1, 50) as u64) as usize;
        let Some(target) = created.get(j) else {
            continue;
        };
        let Ok(Some(current)) = db.get("items", &json!(target)).await else {
            continue;
        };
        let next = current["counter"].as_i64().unwrap() + 1;
        let patch = json!({"counter": next, "note": format!("update {next}")});
        if db
            .update("items", &json!(target), patch.as_object().unwrap().clone())
            .await
            .is_ok()
        {
            println!("ack update {target} {next}");
        }
    }
}

fn by_id(rows: Vec<Row>) -> HashMap<String, Row> {
    rows.into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect()
}

/// The parent: runs the child for `test`, kills it mid-replication, then
/// checks the resumed replication.
async fn kill_mid_replication(test: &str, primary: &str, dir: &Path) {
    let secondary = dir.join("secondary.db");
    let secondary = secondary.to_str().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{primary}|{secondary}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut created: Vec<String> = Vec::new();
    let mut counters: HashMap<String, i64> = HashMap::new();
    let mut acks = 0usize;
    let mut applied = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    // Kill once plenty is written and the replicator is under way.
    while acks < 600 || applied < 30 {
        assert!(
            Instant::now() < deadline,
            "the child did not get going ({acks} acks, {applied} applied)"
        );
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            panic!("the child went quiet ({acks} acks, {applied} applied)");
        };
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["ack", "create", id] => {
                acks += 1;
                created.push(id.to_string());
            }
            ["ack", "update", id, n] => {
                acks += 1;
                counters.insert(id.to_string(), n.parse().unwrap());
            }
            ["applied", n] => applied = n.parse().unwrap(),
            _ => {}
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed: {status:?}");
    // Lines written before the kill.
    reader.join().unwrap();
    for line in rx.try_iter() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["ack", "create", id] => created.push(id.to_string()),
            ["ack", "update", id, n] => {
                counters.insert(id.to_string(), n.parse().unwrap());
            }
            _ => {}
        }
    }

    // A fresh layer on the same databases resumes from the outbox.
    let (p, s) = open(primary, secondary).await;
    let mut config = CompositeConfig::new("sqlite", json!({}));
    config.interval = Duration::from_secs(3600);
    let db = CompositeLayer::wrap(Arc::clone(&p), Arc::clone(&s), &config)
        .await
        .unwrap();
    let left = db.layer().lag().await.unwrap();
    let copied_before = s.read("items", &Query::new()).await.unwrap().len();
    let started = Instant::now();
    db.layer().catch_up().await.unwrap();
    eprintln!(
        "{primary}: {} creates and {} rows updated acknowledged before the kill; \
         {applied} entries applied by the child, {} left in the outbox \
         ({copied_before} rows on the secondary); caught up in {:?}",
        created.len(),
        counters.len(),
        left.entries,
        started.elapsed()
    );
    assert!(left.entries > 0, "the kill came after replication finished");
    assert_eq!(db.layer().lag().await.unwrap().entries, 0);

    let primary_rows = by_id(p.read("items", &Query::new()).await.unwrap());
    let secondary_rows = by_id(s.read("items", &Query::new()).await.unwrap());
    for id in &created {
        assert!(primary_rows.contains_key(id), "acknowledged {id} lost");
    }
    // At most the one write in flight at the kill is on top of the acks.
    assert!(primary_rows.len() <= created.len() + 1);
    for (id, acked) in &counters {
        let stored = primary_rows[id]["counter"].as_i64().unwrap();
        assert!(
            stored == *acked || stored == *acked + 1,
            "{id}: counter {stored}, {acked} updates acknowledged"
        );
    }
    for (id, row) in &primary_rows {
        if !counters.contains_key(id) {
            assert!(row["counter"].as_i64().unwrap() <= 1, "{id}: {row:?}");
        }
    }
    // The secondary equals the primary: every row once, every counter as
    // the primary counted it.
    assert_eq!(secondary_rows.len(), primary_rows.len());
    assert_eq!(secondary_rows, primary_rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_replication_sqlite_primary() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let primary = format!("sqlite:{}", dir.path().join("primary.db").display());
    kill_mid_replication(
        "kill_9_mid_replication_sqlite_primary",
        &primary,
        dir.path(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_replication_postgres_primary() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec).await;
    }
    let Some(cluster) = PrivateCluster::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let primary = format!("postgres:{}", cluster.url());
    kill_mid_replication(
        "kill_9_mid_replication_postgres_primary",
        &primary,
        dir.path(),
    )
    .await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
