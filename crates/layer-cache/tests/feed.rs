//! Writes that do not go through the cache: followed through the
//! provider's change feed when it sees the whole database.
//!
//! - A scripted feed (db-memory under a layer that claims a database-wide
//!   feed and hands out streams the test drives): a change invalidates its
//!   table, a lost change everything; an ended feed makes reads bypass the
//!   cache until the layer has subscribed again; the task stops with the
//!   layer.
//! - PostgreSQL: two provider instances on one scratch schema (two
//!   processes, as far as the server can tell); a write through B is seen
//!   by A's cache once the feed delivered it. Under `CI=true` a missing
//!   server fails the test.

#![allow(clippy::unwrap_used)] // test helpers, not library code

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::mpsc;
use truststream_core::{Error, Result};
use truststream_core_db::{
    ChangeFeedScope, ChangeKind, ChangeStream, ColumnDef, Database, DbCapabilities, DbResult,
    Query, Row, RowChange, TableSchema, Value,
};
use truststream_db_memory::MemoryDatabase;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
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

/// Polls `check` every 10 ms until it holds; panics after `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A database-wide change feed the test drives: each subscription gets a
/// fresh channel, the latest one's sender is kept in `sender`.
#[derive(Default)]
struct Scripted {
    sender: Mutex<Option<mpsc::UnboundedSender<DbResult<RowChange>>>>,
    subscriptions: AtomicUsize,
    live: Arc<AtomicUsize>,
    refuse: AtomicBool,
}

struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Scripted {
    fn send(&self, item: DbResult<RowChange>) {
        let sender = self.sender.lock().unwrap();
        sender.as_ref().unwrap().send(item).unwrap();
    }

    fn end(&self) {
        self.sender.lock().unwrap().take();
    }
}

#[async_trait]
impl DatabaseLayer for Scripted {
    fn capabilities(&self, next: &dyn Database) -> DbCapabilities {
        let mut c = next.capabilities();
        c.change_feed_scope = Some(ChangeFeedScope::Database);
        c
    }

    async fn subscribe_changes(
        &self,
        _next: &dyn Database,
        table: Option<&str>,
    ) -> Result<ChangeStream> {
        assert_eq!(table, None, "the cache follows every table");
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Error::unavailable("feed refused by the test"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *self.sender.lock().unwrap() = Some(tx);
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        self.live.fetch_add(1, Ordering::SeqCst);
        let live = Live(Arc::clone(&self.live));
        Ok(ChangeStream::new(futures::stream::unfold(
            (rx, live),
            |(mut rx, live)| async move { rx.recv().await.map(|item| (item, (rx, live))) },
        )))
    }
}

fn change(table: &str) -> RowChange {
    RowChange {
        table: table.into(),
        kind: ChangeKind::Update,
        key: json!("a1"),
        old: None,
        new: None,
        committed_at: chrono::Utc::now(),
    }
}

/// db-memory with `agents` a1 (Ada), the scripted feed over it, and the
/// cache over that.
async fn scripted(
    refuse: bool,
) -> (
    Arc<dyn Database>,
    Arc<Scripted>,
    Arc<LayeredDatabase<Cache>>,
) {
    scripted_with(refuse, first_miss()).await
}

/// [`scripted`] with the cache configured by `config`.
async fn scripted_with(
    refuse: bool,
    config: CacheConfig,
) -> (
    Arc<dyn Database>,
    Arc<Scripted>,
    Arc<LayeredDatabase<Cache>>,
) {
    let raw: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    raw.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("name")),
    )
    .await
    .unwrap();
    raw.create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    let feed = Arc::new(Scripted::default());
    feed.refuse.store(refuse, Ordering::SeqCst);
    let under: Arc<dyn Database> =
        Arc::new(LayeredDatabase::new(Arc::clone(&raw), Arc::clone(&feed)));
    let db = Cache::wrap(under, config).await.unwrap();
    (raw, feed, db)
}

async fn name(db: &dyn Database) -> Value {
    db.get("agents", &json!("a1")).await.unwrap().unwrap()["name"].clone()
}

/// A write under the cache (another process, as far as it can tell).
async fn foreign(raw: &dyn Database, name: &str) {
    raw.update("agents", &json!("a1"), row(json!({ "name": name })))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_gaps_and_ends_of_a_database_wide_feed() {
    let (raw, feed, db) = scripted(false).await;
    let cache = Arc::clone(db.layer());
    assert!(cache.stats().follows_feed);
    assert_eq!(feed.subscriptions.load(Ordering::SeqCst), 1);

    // A change invalidates its table.
    assert_eq!(name(&*db).await, "Ada");
    foreign(&*raw, "Foreign").await;
    assert_eq!(name(&*db).await, "Ada", "cached until the change arrives");
    feed.send(Ok(change("agents")));
    eventually(5, "the change invalidates agents", || async {
        name(&*db).await == "Foreign"
    })
    .await;
    assert_eq!(cache.stats().feed_changes, 1);

    // ... and only its table.
    foreign(&*raw, "Second").await;
    assert_eq!(name(&*db).await, "Foreign");
    feed.send(Ok(change("teams")));
    eventually(5, "the teams change arrives", || async {
        cache.stats().feed_changes == 2
    })
    .await;
    assert_eq!(
        name(&*db).await,
        "Foreign",
        "a change of teams leaves agents"
    );

    // A lost change invalidates everything.
    let resets = cache.stats().feed_resets;
    feed.send(Err(Error::unavailable("lost 3 changes")));
    eventually(5, "the gap invalidates everything", || async {
        name(&*db).await == "Second"
    })
    .await;
    assert_eq!(cache.stats().feed_resets, resets + 1);

    // The feed ends and cannot be subscribed again yet: reads bypass the
    // cache meanwhile.
    feed.refuse.store(true, Ordering::SeqCst);
    feed.end();
    eventually(5, "the feed is seen down", || async {
        cache.stats().feed_down
    })
    .await;
    foreign(&*raw, "While down").await;
    let bypassed = cache.stats().bypassed;
    assert_eq!(name(&*db).await, "While down");
    assert_eq!(name(&*db).await, "While down");
    assert_eq!(cache.stats().bypassed, bypassed + 2);

    // Back (after backoff): everything is forgotten, then cached again.
    feed.refuse.store(false, Ordering::SeqCst);
    eventually(10, "subscribed again", || async {
        feed.subscriptions.load(Ordering::SeqCst) == 2 && !cache.stats().feed_down
    })
    .await;
    assert_eq!(name(&*db).await, "While down");
    let hits = cache.stats().hits;
    foreign(&*raw, "After").await;
    assert_eq!(name(&*db).await, "While down", "cached again");
    assert_eq!(cache.stats().hits, hits + 1);
    feed.send(Ok(change("agents")));
    eventually(5, "the new feed invalidates", || async {
        name(&*db).await == "After"
    })
    .await;

    // The task stops with the layer: the stream is dropped.
    assert_eq!(feed.live.load(Ordering::SeqCst), 1);
    drop(cache);
    drop(db);
    eventually(5, "the feed task stops with the layer", || async {
        feed.live.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_cannot_be_followed_at_first_is_followed_later() {
    let (raw, feed, db) = scripted(true).await;
    let cache = Arc::clone(db.layer());
    let s = cache.stats();
    assert!(s.follows_feed && s.feed_down, "{s:?}");
    // No feed, no cache.
    assert_eq!(name(&*db).await, "Ada");
    foreign(&*raw, "Foreign").await;
    assert_eq!(name(&*db).await, "Foreign");
    assert_eq!(cache.stats().inserts, 0);

    feed.refuse.store(false, Ordering::SeqCst);
    eventually(10, "subscribed", || async { !cache.stats().feed_down }).await;
    assert_eq!(name(&*db).await, "Foreign");
    assert_eq!(name(&*db).await, "Foreign");
    assert_eq!(cache.stats().hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_changes_false_never_subscribes_and_ttl_bounds_foreign_writes() {
    let config = CacheConfig {
        follow_changes: false,
        ..first_miss()
    };
    let (raw, feed, db) = scripted_with(false, config).await;
    let cache = Arc::clone(db.layer());
    assert!(!cache.stats().follows_feed);
    assert_eq!(feed.subscriptions.load(Ordering::SeqCst), 0);
    // Cached, and a foreign write is not seen (the TTL bounds it).
    assert_eq!(name(&*db).await, "Ada");
    foreign(&*raw, "Foreign").await;
    assert_eq!(name(&*db).await, "Ada");
    assert_eq!(cache.stats().hits, 1);
    // The settings key parses.
    let parsed =
        CacheConfig::from_settings(json!({"follow_changes": false, "default_ttl_s": 5})).unwrap();
    assert!(!parsed.follow_changes);
}

// ---- PostgreSQL -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_of_another_instance_reach_the_cache_through_the_feed() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let config = s.config("cache");
    let a = PgDatabase::open(config.clone()).await.unwrap();
    let b = PgDatabase::open(config).await.unwrap();
    a.create_table(
        &TableSchema::new("scores")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::integer("score")),
    )
    .await
    .unwrap();
    a.create("scores", row(json!({"id": "s1", "score": 1})))
        .await
        .unwrap();
    let db = Cache::wrap(Arc::new(a), first_miss()).await.unwrap();
    let cache = Arc::clone(db.layer());
    let st = cache.stats();
    assert!(st.follows_feed && !st.feed_down, "{st:?}");

    let score =
        || async { db.get("scores", &json!("s1")).await.unwrap().unwrap()["score"].clone() };
    let all = Query::new().order_by_asc("id");
    let ids = || async {
        db.read("scores", &all)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r["id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(score().await, 1);
    assert_eq!(score().await, 1);
    assert_eq!(ids().await, ["s1"]);
    assert_eq!(ids().await, ["s1"]);
    assert!(cache.stats().hits >= 2);

    // B updates s1: A's cached get sees it once the change arrived.
    b.update("scores", &json!("s1"), row(json!({"score": 2})))
        .await
        .unwrap();
    eventually(20, "A's cache sees B's update", || async {
        score().await == 2
    })
    .await;
    assert!(cache.stats().feed_changes >= 1);

    // B inserts: A's cached read sees the new row.
    b.create("scores", row(json!({"id": "s2", "score": 5})))
        .await
        .unwrap();
    eventually(20, "A's cache sees B's insert", || async {
        ids().await == ["s1", "s2"]
    })
    .await;

    // Raw SQL through B (no provider call names the table).
    let params = Default::default();
    b.raw_query("UPDATE scores SET score = 3 WHERE id = 's1'", &params)
        .await
        .unwrap();
    eventually(20, "A's cache sees B's raw SQL", || async {
        score().await == 3
    })
    .await;

    // Cached again after the changes (served, not bypassed).
    let hits = cache.stats().hits;
    assert_eq!(score().await, 3);
    assert_eq!(score().await, 3);
    assert!(cache.stats().hits > hits);

    drop((db, cache, b));
    s.cleanup().await.unwrap();
}
