#![allow(clippy::unwrap_used)] // test helpers, not library code
//! PostgreSQL stopped, then crashed, under a steady write load, through
//! `retry` + `circuit_breaker` + `timeout` built from a JSON layer
//! configuration over one db-postgres provider.
//!
//! The server is a [`PrivateCluster`] of the test's own (never the shared
//! server on 5432). Writer tasks create rows whose key the client chose
//! (the table's primary key is a server sequence, the key column is NOT
//! unique, so a create repeated after it had been applied would leave a
//! duplicate) and update rows they created (idempotent). Twice the server
//! goes down for longer than the breaker needs to open: once by a fast
//! stop, once by an immediate stop (a crash, recovered at the next start).
//!
//! Afterwards, reading the table through a fresh provider without layers:
//! - every acknowledged create is there, exactly once, with its id;
//! - no key is there twice;
//! - a failed create is absent or there once (its outcome may be unknown),
//!   and absent when its error said it changed nothing (`is_unapplied`);
//! - every acknowledged update is there;
//! - failures were only `Unavailable` or `Timeout`;
//! - the breaker opened and closed again in each outage, and is closed;
//! - every call went through the one stack made at the start (the same
//!   provider instance survived both restarts of the server).
//!
//! Under `CI=true` a missing `initdb`/`pg_ctl` fails the test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use truststream_core_db::{ColumnDef, ColumnDefault, Database, ErrorKind, Query, Row, TableSchema};
use truststream_db_postgres::testing::PrivateCluster;
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_layer::{Interface, LayerDeps, LayerRegistry};
use truststream_layer_resilience::{
    register_with_handles, BreakerCounts, BreakerState, CircuitBreaker, Handles,
};

const WRITERS: usize = 4;
const TABLE: &str = "writes";
/// How long each outage lasts: the breaker (window 1 s, 4 calls) must
/// open within it, and probe (after `open_s` = 1 s) at least once.
const DOWN: Duration = Duration::from_secs(3);

fn obj(v: serde_json::Value) -> Row {
    v.as_object().cloned().unwrap()
}

/// What one writer saw.
#[derive(Default)]
struct Tally {
    calls: u64,
    /// Acknowledged creates: key, id the server gave, when.
    created: Vec<(String, i64, Instant)>,
    /// Failed creates: key, error kind, unapplied, message.
    create_failed: Vec<(String, ErrorKind, bool, String)>,
    /// Acknowledged updates: row id.
    updated: Vec<i64>,
    /// Failed updates: error kind, unapplied, message.
    update_failed: Vec<(ErrorKind, bool, String)>,
    slowest: Duration,
}

async fn writer(db: Arc<dyn Database>, w: usize, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let started = Instant::now();
        let failed = if n % 4 == 0 && !t.created.is_empty() {
            // An idempotent update of a row this writer created.
            let pick = usize::try_from(n.wrapping_mul(7_919)).unwrap() % t.created.len();
            let id = t.created[pick].1;
            t.calls += 1;
            match db
                .update(TABLE, &json!(id), obj(json!({"note": "updated"})))
                .await
            {
                Ok(_) => {
                    t.updated.push(id);
                    false
                }
                Err(e) => {
                    t.update_failed
                        .push((e.kind(), e.is_unapplied(), e.to_string()));
                    true
                }
            }
        } else {
            let key = format!("w{w}-{n}");
            t.calls += 1;
            let row = obj(json!({"key": key, "writer": w, "note": "created"}));
            match db.create(TABLE, row).await {
                Ok(row) => {
                    t.created
                        .push((key, row["id"].as_i64().unwrap(), Instant::now()));
                    false
                }
                Err(e) => {
                    t.create_failed
                        .push((key, e.kind(), e.is_unapplied(), e.to_string()));
                    true
                }
            }
        };
        t.slowest = t.slowest.max(started.elapsed());
        // A steady load, gentle on a shared machine; slower while failing
        // (an open breaker answers at once).
        let pause = if failed { 20 } else { 2 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    t
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `pg_ctl stop -m fast`.
    Stop,
    /// `pg_ctl stop -m immediate`: a crash, recovered at the next start.
    Kill,
}

/// Takes the server down for [`DOWN`] and starts it again; the time it
/// was unreachable.
async fn outage(cluster: PrivateCluster, how: Outage) -> (PrivateCluster, Duration) {
    tokio::task::spawn_blocking(move || {
        let began = Instant::now();
        match how {
            Outage::Stop => cluster.stop(),
            Outage::Kill => cluster.kill(),
        }
        std::thread::sleep(DOWN);
        cluster.start();
        (cluster, began.elapsed())
    })
    .await
    .unwrap()
}

/// Waits until the breaker closed again after `before` (a writer's probe
/// call succeeded); the time since `since`.
async fn recovered(breaker: &CircuitBreaker, before: BreakerCounts, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let closed_again =
            breaker.transitions().closed > before.closed && breaker.state() == BreakerState::Closed;
        if closed_again {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "not recovered 15 s after the restart: breaker {:?}, {:?}",
            breaker.state(),
            breaker.transitions()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_postgres_restarts_through_retry_breaker_and_timeout() {
    let Some(cluster) = PrivateCluster::create() else {
        return;
    };
    let test_started = Instant::now();

    // The provider: short acquire timeout, so that a call with the server
    // down fails (unapplied) in half a second.
    let mut config = PgConfig::new(cluster.url());
    config.acquire_timeout_ms = 500;
    config.max_connections = u32::try_from(WRITERS).unwrap();
    let provider: Arc<dyn Database> = Arc::new(PgDatabase::open(config).await.unwrap());

    // The layers, from configuration as the runtime builds them.
    let handles = Handles::new();
    let mut registry = LayerRegistry::new();
    register_with_handles(&mut registry, &handles);
    let layers = json!({
        "timeout": { "read_ms": 3000, "write_ms": 3000, "schema_ms": 10000 },
        "retry": { "attempts": 4, "base_ms": 50, "max_ms": 400, "budget_ms": 2000 },
        "circuit_breaker": { "failure_ratio": 0.5, "min_calls": 4, "window_s": 1, "open_s": 1 },
    });
    let stack = registry
        .stack(
            Interface::Database,
            layers.as_object().unwrap(),
            &LayerDeps::default(),
        )
        .unwrap();
    let db = stack.wrap_database(Arc::clone(&provider)).await.unwrap();
    let breaker = handles.breakers().pop().unwrap().layer;
    let retry = handles.retries().pop().unwrap().layer;

    db.create_table(
        &TableSchema::new(TABLE)
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            // Not unique: a create applied twice shows as two rows.
            .column(ColumnDef::text("key").not_null())
            .column(ColumnDef::integer("writer").not_null())
            .column(ColumnDef::text("note")),
    )
    .await
    .unwrap();
    let server_started = |rows: Vec<Row>| rows[0]["t"].as_str().unwrap().to_string();
    let boot_first = server_started(
        provider
            .raw_query(
                "SELECT pg_postmaster_start_time()::text AS t",
                &Default::default(),
            )
            .await
            .unwrap(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(Arc::clone(&db), w, Arc::clone(&stop))))
        .collect();

    // Steady load, then the two outages, each followed by recovery.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut cluster = cluster;
    let mut downtime = Vec::new();
    let mut recovery = Vec::new();
    let mut per_outage = Vec::new();
    for how in [Outage::Stop, Outage::Kill] {
        let before = breaker.transitions();
        let (c, down) = outage(cluster, how).await;
        cluster = c;
        let during = breaker.transitions();
        assert!(
            during.opened > before.opened,
            "the breaker opened during the {how:?} outage ({down:?} down): {during:?}"
        );
        downtime.push(down);
        recovery.push(recovered(&breaker, before, Instant::now()).await);
        per_outage.push((how, during.opened - before.opened));
        // Steady load again on the restarted server.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    // The last outage's recovery: just before the last second of load.
    let last_recovery = Instant::now() - Duration::from_millis(1_000);
    stop.store(true, Ordering::SeqCst);
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.unwrap());
    }

    // The same stack and provider throughout, and the server restarted.
    let boot_last = server_started(
        provider
            .raw_query(
                "SELECT pg_postmaster_start_time()::text AS t",
                &Default::default(),
            )
            .await
            .unwrap(),
    );
    assert_ne!(boot_first, boot_last, "the server was restarted");
    assert_eq!(handles.breakers().len(), 1, "one stack, made once");
    assert_eq!(handles.retries().len(), 1, "one stack, made once");

    // Read the table directly: a fresh provider, no layers.
    let direct = PgDatabase::open(PgConfig::new(cluster.url()))
        .await
        .unwrap();
    let stored = direct.read(TABLE, &Query::new()).await.unwrap();
    let mut by_key: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for r in &stored {
        by_key
            .entry(r["key"].as_str().unwrap().to_string())
            .or_default()
            .push((
                r["id"].as_i64().unwrap(),
                r["note"].as_str().unwrap().to_string(),
            ));
    }
    let duplicated: Vec<&String> = by_key
        .iter()
        .filter(|(_, rows)| rows.len() > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(duplicated.is_empty(), "duplicated rows: {duplicated:?}");

    let mut acked = 0usize;
    let mut acked_after_last_recovery = 0usize;
    let mut calls = 0u64;
    let mut slowest = Duration::ZERO;
    let mut lost = Vec::new();
    let mut failed_by_kind: HashMap<(&'static str, ErrorKind, bool), usize> = HashMap::new();
    let mut failed_present = 0usize;
    let mut unapplied_but_present = Vec::new();
    let mut known: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut updates_acked = 0usize;
    let mut update_lost = Vec::new();
    let id_to_note: HashMap<i64, &str> = by_key
        .values()
        .flatten()
        .map(|(id, note)| (*id, note.as_str()))
        .collect();
    for t in &tallies {
        calls += t.calls;
        slowest = slowest.max(t.slowest);
        for (key, id, at) in &t.created {
            acked += 1;
            known.insert(key);
            if *at > last_recovery {
                acked_after_last_recovery += 1;
            }
            match by_key.get(key).map(Vec::as_slice) {
                Some([(stored_id, _)]) if stored_id == id => {}
                other => lost.push((key.clone(), *id, format!("{other:?}"))),
            }
        }
        for (key, kind, unapplied, msg) in &t.create_failed {
            known.insert(key);
            assert!(
                matches!(kind, ErrorKind::Unavailable | ErrorKind::Timeout),
                "a create failed with {kind:?}: {msg}"
            );
            *failed_by_kind
                .entry(("create", *kind, *unapplied))
                .or_default() += 1;
            if by_key.contains_key(key) {
                failed_present += 1;
                if *unapplied {
                    unapplied_but_present.push(msg.clone());
                }
            }
        }
        for id in &t.updated {
            updates_acked += 1;
            if id_to_note.get(id) != Some(&"updated") {
                update_lost.push(*id);
            }
        }
        for (kind, unapplied, msg) in &t.update_failed {
            assert!(
                matches!(kind, ErrorKind::Unavailable | ErrorKind::Timeout),
                "an update failed with {kind:?}: {msg}"
            );
            *failed_by_kind
                .entry(("update", *kind, *unapplied))
                .or_default() += 1;
        }
    }
    let stats = retry.stats();
    let counts = breaker.transitions();
    let failed: usize = failed_by_kind.values().sum();
    let mut kinds: Vec<String> = failed_by_kind
        .iter()
        .map(|((method, kind, unapplied), n)| {
            let mark = if *unapplied { "unapplied" } else { "unknown" };
            format!("{method} {kind:?} {mark}: {n}")
        })
        .collect();
    kinds.sort();
    eprintln!(
        "pg_restart: {acked} creates and {updates_acked} updates acknowledged \
         ({acked_after_last_recovery} after the last recovery), {failed} failed [{}], \
         {failed_present} failed creates applied anyway (unknown outcome), \
         {} retries and {} give-ups over {} calls, breaker opened {} / half-opened {} / closed {} \
         (per outage {per_outage:?}), downtime {downtime:?}, recovered {recovery:?} after start, \
         slowest call {slowest:?}, test {:?}",
        kinds.join(", "),
        stats.retries,
        stats.give_ups,
        stats.calls,
        counts.opened,
        counts.half_opened,
        counts.closed,
        test_started.elapsed(),
    );

    assert!(lost.is_empty(), "acknowledged creates lost: {lost:?}");
    assert!(
        update_lost.is_empty(),
        "acknowledged updates lost: {update_lost:?}"
    );
    assert!(
        unapplied_but_present.is_empty(),
        "creates that said they changed nothing were applied: {unapplied_but_present:?}"
    );
    let strangers: Vec<&String> = by_key
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    assert!(strangers.is_empty(), "rows nobody wrote: {strangers:?}");
    assert!(failed > 0, "the outages were seen by the writers");
    assert!(
        failed_by_kind.iter().any(|((_, _, u), _)| *u),
        "the open breaker refused calls (unapplied)"
    );
    assert!(stats.retries > 0, "the retry layer repeated calls");
    assert_eq!(
        stats.calls,
        calls + 1,
        "every writer call (and create_table) went through the one retry layer"
    );
    assert!(counts.opened >= 2 && counts.closed >= 2, "{counts:?}");
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(acked_after_last_recovery > 0, "writes resumed");
    // Timeout 3 s per attempt, retry budget 2 s: a call is bounded.
    assert!(slowest < Duration::from_secs(8), "a call took {slowest:?}");

    drop(direct);
    drop(db);
    drop(provider);
    drop(cluster);
}
