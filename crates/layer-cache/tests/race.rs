//! Read-after-write through the cache under concurrency: a read that
//! started before a write and finishes after it stores nothing (shown
//! step by step), 8 writers and 8 readers on one table never read a value
//! older than the last write acknowledged before the read started
//! (db-memory and db-sqlite on a file), and the database conformance suite
//! passes through the cache.

#![allow(clippy::unwrap_used)] // test helpers, not library code

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use truststream_conformance::{db as suite, factory};
use truststream_core::Result;
use truststream_core_db::{col, ColumnDef, Database, Operation, Query, Row, TableSchema, Value};
use truststream_db_memory::MemoryDatabase;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_layer::{DatabaseLayer, LayeredDatabase};
use truststream_layer_cache::{Admission, Cache, CacheConfig};

/// The cache's defaults, but storing every miss ([`Admission::FirstMiss`]):
/// these tests are about serving and invalidation, from the second read on.
fn first_miss() -> CacheConfig {
    CacheConfig {
        admission: Admission::FirstMiss,
        ..CacheConfig::default()
    }
}

fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}

/// Below the cache: when armed, a `get` reads the provider, then waits for
/// `release` before answering (the answer is then older than any write
/// made meanwhile).
#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    reached: Notify,
    release: Notify,
}

#[async_trait]
impl DatabaseLayer for Gate {
    async fn get(&self, next: &dyn Database, table: &str, id: &Value) -> Result<Option<Row>> {
        let row = next.get(table, id).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
        Ok(row)
    }
}

/// Table `t` holding the row `r` (`v = 1`) in a memory database, under a
/// [`Gate`] (not armed).
async fn gated_row() -> (Arc<dyn Database>, Arc<Gate>) {
    let raw: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    raw.create_table(
        &TableSchema::new("t")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::integer("v")),
    )
    .await
    .unwrap();
    raw.create("t", row(json!({"id": "r", "v": 1})))
        .await
        .unwrap();
    let gate = Arc::new(Gate::default());
    let gated: Arc<dyn Database> = Arc::new(LayeredDatabase::new(raw, Arc::clone(&gate)));
    (gated, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_overlaps_a_write_stores_nothing() {
    let (gated, gate) = gated_row().await;
    let db = Cache::wrap(gated, first_miss()).await.unwrap();

    // The read starts (a miss), reads v = 1 from the provider, and waits.
    gate.armed.store(true, Ordering::SeqCst);
    let reader = {
        let db = Arc::clone(&db);
        tokio::spawn(async move { db.get("t", &json!("r")).await.unwrap().unwrap()["v"].clone() })
    };
    gate.reached.notified().await;
    // A write is acknowledged meanwhile.
    db.update("t", &json!("r"), row(json!({"v": 2})))
        .await
        .unwrap();
    // The old read finishes with the old value (it started first) ...
    gate.release.notify_one();
    assert_eq!(reader.await.unwrap(), 1);
    // ... and did not store it: every later read sees the write.
    let s = db.layer().stats();
    assert_eq!((s.stale, s.inserts), (1, 0), "{s:?}");
    for _ in 0..3 {
        assert_eq!(
            db.get("t", &json!("r")).await.unwrap().unwrap()["v"],
            2,
            "read after the acknowledged write"
        );
    }
    let s = db.layer().stats();
    assert_eq!((s.inserts, s.hits), (1, 2), "{s:?}");
}

/// The same with the cache's defaults ([`Admission::SecondMiss`]): the key
/// is read once (remembered by the doorkeeper), so the gated read is the
/// admitted second miss; a write acknowledged while it waits keeps its
/// older answer out of the cache, and every read after the write sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_miss_that_overlaps_a_write_stores_nothing_with_the_defaults() {
    let (gated, gate) = gated_row().await;
    let db = Cache::wrap(gated, CacheConfig::default()).await.unwrap();
    let v = |row: Option<Row>| row.expect("the row exists")["v"].clone();

    // First miss: remembered, not stored.
    assert_eq!(v(db.get("t", &json!("r")).await.unwrap()), 1);
    let s = db.layer().stats();
    assert_eq!((s.not_admitted, s.inserts), (1, 0), "{s:?}");

    // The second miss (admitted) reads v = 1 from the provider and waits.
    gate.armed.store(true, Ordering::SeqCst);
    let reader = {
        let db = Arc::clone(&db);
        tokio::spawn(async move { db.get("t", &json!("r")).await.unwrap() })
    };
    gate.reached.notified().await;
    db.update("t", &json!("r"), row(json!({"v": 2})))
        .await
        .unwrap();
    gate.release.notify_one();
    assert_eq!(v(reader.await.unwrap()), 1);
    let s = db.layer().stats();
    assert_eq!((s.stale, s.inserts), (1, 0), "{s:?}");
    for _ in 0..3 {
        assert_eq!(
            v(db.get("t", &json!("r")).await.unwrap()),
            2,
            "read after the acknowledged write"
        );
    }
    // Still remembered: stored by its next miss, then served.
    let s = db.layer().stats();
    assert_eq!((s.inserts, s.hits), (1, 2), "{s:?}");
}

const ROWS: usize = 4;
const WRITERS: usize = 8;
const READERS: usize = 8;

/// What each writer has had acknowledged: `acked[row][writer]` is the last
/// value writer `w` wrote to column `v<w>` of row `row` and saw succeed.
struct Acked([[AtomicU64; WRITERS]; ROWS]);

impl Acked {
    fn new() -> Self {
        Acked(std::array::from_fn(|_| {
            std::array::from_fn(|_| AtomicU64::new(0))
        }))
    }

    fn snapshot(&self, r: usize) -> [u64; WRITERS] {
        std::array::from_fn(|w| self.0[r][w].load(Ordering::SeqCst))
    }
}

fn id(r: usize) -> Value {
    json!(format!("r{r}"))
}

fn row_index(row: &Row) -> usize {
    row["id"].as_str().unwrap()[1..].parse().unwrap()
}

/// Panics if `row` holds a value older than `floor` in some writer's
/// column.
fn check(row: &Row, floor: &[u64; WRITERS], how: &str) {
    for (w, min) in floor.iter().enumerate() {
        let v = row[&format!("v{w}")].as_u64().unwrap();
        assert!(
            v >= *min,
            "{how} of {} returned v{w} = {v}, older than {min}, acknowledged before the read started",
            row["id"]
        );
    }
}

/// 8 writers write increasing values (each its own column of the same
/// rows, through `update`, `update_many` and `transaction` in turn); 8
/// readers check every answer (`get`, a one-row `read`, a whole-table
/// `read`) against the values acknowledged before they asked. Returns the
/// number of reads checked.
async fn hammer(db: Arc<LayeredDatabase<Cache>>, writes_per_writer: u64) -> u64 {
    let mut schema = TableSchema::new("versions").column(ColumnDef::text("id").primary_key());
    for w in 0..WRITERS {
        schema = schema.column(ColumnDef::integer(&format!("v{w}")).not_null());
    }
    db.create_table(&schema).await.unwrap();
    for r in 0..ROWS {
        let mut data = row(json!({"id": id(r)}));
        for w in 0..WRITERS {
            data.insert(format!("v{w}"), json!(0));
        }
        db.create("versions", data).await.unwrap();
    }

    let acked = Arc::new(Acked::new());
    let writing = Arc::new(AtomicU64::new(WRITERS as u64));
    // Start together.
    let start = Arc::new(Semaphore::new(0));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (db, acked, writing, start) = (
            Arc::clone(&db),
            Arc::clone(&acked),
            Arc::clone(&writing),
            Arc::clone(&start),
        );
        tasks.push(tokio::spawn(async move {
            let _go = start.acquire().await.unwrap();
            let column = format!("v{w}");
            for n in 1..=writes_per_writer {
                let r = (n as usize + w) % ROWS;
                let patch = row(json!({ column.clone(): n }));
                match n % 3 {
                    0 => {
                        db.update("versions", &id(r), patch).await.unwrap();
                    }
                    1 => {
                        let changed = db
                            .update_many("versions", &col("id").eq(id(r)), patch)
                            .await
                            .unwrap();
                        assert_eq!(changed, 1);
                    }
                    _ => {
                        db.transaction(vec![Operation::Update {
                            table: "versions".into(),
                            id: id(r),
                            data: patch,
                        }])
                        .await
                        .unwrap();
                    }
                }
                acked.0[r][w].store(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
            writing.fetch_sub(1, Ordering::SeqCst);
            0u64
        }));
    }
    for k in 0..READERS {
        let (db, acked, writing, start) = (
            Arc::clone(&db),
            Arc::clone(&acked),
            Arc::clone(&writing),
            Arc::clone(&start),
        );
        tasks.push(tokio::spawn(async move {
            let _go = start.acquire().await.unwrap();
            let mut reads = 0u64;
            let mut i = k;
            while writing.load(Ordering::SeqCst) > 0 {
                i += 1;
                let r = i % ROWS;
                match i % 3 {
                    0 => {
                        let floor = acked.snapshot(r);
                        let got = db.get("versions", &id(r)).await.unwrap().unwrap();
                        check(&got, &floor, "get");
                    }
                    1 => {
                        let floor = acked.snapshot(r);
                        let q = Query::new().where_eq("id", id(r));
                        let got = db.read("versions", &q).await.unwrap();
                        check(&got[0], &floor, "read of one row");
                    }
                    _ => {
                        let floors: Vec<_> = (0..ROWS).map(|r| acked.snapshot(r)).collect();
                        let got = db
                            .read("versions", &Query::new().order_by_asc("id"))
                            .await
                            .unwrap();
                        assert_eq!(got.len(), ROWS);
                        for g in &got {
                            check(g, &floors[row_index(g)], "read of every row");
                        }
                    }
                }
                reads += 1;
                // db-memory answers without ever waiting: let the writers
                // (and the other readers) run.
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    start.add_permits(WRITERS + READERS);
    let mut reads = 0;
    for t in tasks {
        reads += t.await.unwrap();
    }
    // Quiet now: every read sees the last values.
    for r in 0..ROWS {
        let floor = acked.snapshot(r);
        let got = db.get("versions", &id(r)).await.unwrap().unwrap();
        check(&got, &floor, "final get");
        assert_eq!(got, db.get("versions", &id(r)).await.unwrap().unwrap());
    }
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_and_eight_readers_on_db_memory_never_read_the_past() {
    hammer_db_memory(CacheConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_storing_every_miss() {
    hammer_db_memory(first_miss()).await;
}

async fn hammer_db_memory(config: CacheConfig) {
    let db = Cache::wrap(Arc::new(MemoryDatabase::new()), config)
        .await
        .unwrap();
    let reads = hammer(Arc::clone(&db), 2000).await;
    let s = db.layer().stats();
    println!(
        "db-memory: {reads} reads checked, {} writes; {s:?}",
        2000 * WRITERS
    );
    assert!(reads >= 1000, "{reads}");
    assert!(
        s.hits > 0 && s.misses > 0,
        "the cache served and missed: {s:?}"
    );
    // Reads that overlapped a write happened, and were not stored.
    assert!(s.stale > 0, "the race was hit: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_and_eight_readers_on_a_sqlite_file_never_read_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteDatabase::open(SqliteConfig::file(dir.path().join("race.db")))
        .await
        .unwrap();
    let db = Cache::wrap(Arc::new(sqlite), CacheConfig::default())
        .await
        .unwrap();
    let reads = hammer(Arc::clone(&db), 250).await;
    let s = db.layer().stats();
    println!(
        "db-sqlite: {reads} reads checked, {} writes; {s:?}",
        250 * WRITERS
    );
    assert!(reads >= 1000, "{reads}");
    assert!(
        s.hits > 0 && s.misses > 0,
        "the cache served and missed: {s:?}"
    );
    // Reads that overlapped a write happened, and were not stored.
    assert!(s.stale > 0, "the race was hit: {s:?}");
}

// ---- the database conformance suite through the cache --------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_database_suite_passes_through_the_cache_on_db_memory() {
    let f = factory(|| async {
        let db = Cache::wrap(Arc::new(MemoryDatabase::new()), first_miss())
            .await
            .map_err(|e| e.to_string())?;
        Ok(db as Arc<dyn Database>)
    });
    let report = suite::run("memory+cache", f, None).await;
    report.print_table();
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    // Exactly what db-memory alone skips.
    assert_eq!(
        report.skipped_cases(),
        vec![
            "aggregate.raw_query_guide_sql",
            "raw.one_statement_per_call",
            "query.full_text_search"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_suite_passes_through_the_cache_on_db_sqlite() {
    let f = factory(|| async {
        let sqlite = SqliteDatabase::in_memory()
            .await
            .map_err(|e| e.to_string())?;
        let db = Cache::wrap(Arc::new(sqlite), CacheConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(db as Arc<dyn Database>)
    });
    let report = suite::run("sqlite+cache", f, None).await;
    report.print_table();
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    // Exactly what db-sqlite alone skips (no PostgreSQL text search).
    assert_eq!(report.skipped_cases(), vec!["query.full_text_search"]);
    assert_eq!(report.passed(), suite::cases().len() - 1);
}
