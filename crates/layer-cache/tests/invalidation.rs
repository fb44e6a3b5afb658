//! Every write path through the cache invalidates what it touches (one
//! test per method, over db-memory; raw SQL over db-sqlite too), per-table
//! time to live on tokio's paused clock, and configuration errors through
//! the layer registry.
//!
//! Each invalidation test first proves the cache serves: a change made
//! under the layer (straight to the provider) is not seen. Then the write
//! through the layer makes the next read see the provider's current state
//! — that change included, so the whole table was invalidated, not only
//! the row written.

#![allow(clippy::unwrap_used)] // test helpers, not library code

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use truststream_core::{ErrorKind, Result};
use truststream_core_db::{
    col, AlterTable, ColumnDef, Database, IndexSpec, Operation, Params, Query, Row, TableSchema,
    Value,
};
use truststream_db_memory::MemoryDatabase;
use truststream_db_sqlite::SqliteDatabase;
use truststream_layer::{DatabaseLayer, Interface, LayerDeps, LayerRegistry, LayeredDatabase};
use truststream_layer_cache::{Admission, Cache, CacheConfig, CacheHandles};

type Cached = Arc<LayeredDatabase<Cache>>;

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

fn agents() -> TableSchema {
    TableSchema::new("agents")
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("name"))
        .column(ColumnDef::text("team"))
}

fn teams() -> TableSchema {
    TableSchema::new("teams")
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("title"))
}

/// A provider with `agents` a1, a2 (team t1) and `teams` t1, and the cache
/// over it.
async fn setup_on(raw: Arc<dyn Database>, config: CacheConfig) -> (Arc<dyn Database>, Cached) {
    raw.create_table(&agents()).await.unwrap();
    raw.create_table(&teams()).await.unwrap();
    for id in ["a1", "a2"] {
        raw.create(
            "agents",
            row(json!({"id": id, "name": "Ada", "team": "t1"})),
        )
        .await
        .unwrap();
    }
    raw.create("teams", row(json!({"id": "t1", "title": "Blue"})))
        .await
        .unwrap();
    let db = Cache::wrap(Arc::clone(&raw), config).await.unwrap();
    (raw, db)
}

async fn setup() -> (Arc<dyn Database>, Cached) {
    setup_on(Arc::new(MemoryDatabase::new()), first_miss()).await
}

async fn name_of(db: &dyn Database, id: &str) -> Value {
    db.get("agents", &json!(id)).await.unwrap().unwrap()["name"].clone()
}

fn all() -> Query {
    Query::new().order_by_asc("id")
}

async fn names(db: &dyn Database) -> Vec<Value> {
    db.read("agents", &all())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r["name"].clone())
        .collect()
}

async fn title(db: &dyn Database) -> Value {
    db.get("teams", &json!("t1")).await.unwrap().unwrap()["title"].clone()
}

/// Primes `get(a1)` and the full `read`, changes a1 under the layer, and
/// checks the cache still answers the old name: it serves.
async fn prime_and_sneak(raw: &dyn Database, db: &Cached) {
    assert_eq!(name_of(&**db, "a1").await, "Ada");
    assert_eq!(names(&**db).await, ["Ada", "Ada"]);
    raw.update("agents", &json!("a1"), row(json!({"name": "Sneaky"})))
        .await
        .unwrap();
    let hits = db.layer().stats().hits;
    assert_eq!(name_of(&**db, "a1").await, "Ada", "the cache serves get");
    assert_eq!(names(&**db).await, ["Ada", "Ada"], "the cache serves read");
    assert_eq!(db.layer().stats().hits, hits + 2);
}

/// After the write through the layer: both reads see the provider again.
async fn assert_fresh(db: &Cached) {
    let before = db.layer().stats().invalidations;
    assert!(before > 0);
    assert_eq!(name_of(&**db, "a1").await, "Sneaky");
    assert_eq!(names(&**db).await[0], "Sneaky");
}

#[tokio::test]
async fn create_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    db.create("agents", row(json!({"id": "a3", "name": "Cy"})))
        .await
        .unwrap();
    assert_fresh(&db).await;
    assert_eq!(names(&*db).await, ["Sneaky", "Ada", "Cy"]);
}

#[tokio::test]
async fn update_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    db.update("agents", &json!("a2"), row(json!({"name": "Bo"})))
        .await
        .unwrap();
    assert_fresh(&db).await;
    assert_eq!(names(&*db).await, ["Sneaky", "Bo"]);
}

#[tokio::test]
async fn delete_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    assert!(db.delete("agents", &json!("a2")).await.unwrap());
    assert_fresh(&db).await;
    assert_eq!(names(&*db).await, ["Sneaky"]);
    assert!(db.get("agents", &json!("a2")).await.unwrap().is_none());
}

#[tokio::test]
async fn create_many_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    db.create_many(
        "agents",
        vec![
            row(json!({"id": "a3", "name": "Cy"})),
            row(json!({"id": "a4", "name": "Di"})),
        ],
    )
    .await
    .unwrap();
    assert_fresh(&db).await;
    assert_eq!(names(&*db).await.len(), 4);
}

#[tokio::test]
async fn update_many_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    let n = db
        .update_many("agents", &col("id").eq("a2"), row(json!({"name": "Bo"})))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_fresh(&db).await;
    assert_eq!(names(&*db).await, ["Sneaky", "Bo"]);
}

#[tokio::test]
async fn delete_many_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    assert_eq!(
        db.delete_many("agents", &col("id").eq("a2")).await.unwrap(),
        1
    );
    assert_fresh(&db).await;
    assert_eq!(names(&*db).await, ["Sneaky"]);
}

#[tokio::test]
async fn transaction_invalidates_every_table_it_names() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    assert_eq!(title(&*db).await, "Blue");
    raw.update("teams", &json!("t1"), row(json!({"title": "Sneaky"})))
        .await
        .unwrap();
    assert_eq!(title(&*db).await, "Blue", "the cache serves teams");
    db.transaction(vec![
        Operation::Create {
            table: "agents".into(),
            data: row(json!({"id": "a3", "name": "Cy"})),
        },
        Operation::Delete {
            table: "teams".into(),
            id: json!("t9"),
        },
    ])
    .await
    .unwrap();
    assert_fresh(&db).await;
    assert_eq!(title(&*db).await, "Sneaky");
}

#[tokio::test]
async fn a_failed_transaction_invalidates_too() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    let e = db
        .transaction(vec![Operation::Update {
            table: "agents".into(),
            id: json!("missing"),
            data: row(json!({"name": "x"})),
        }])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_fresh(&db).await;
}

#[tokio::test]
async fn create_table_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    db.create_table(&agents().if_not_exists()).await.unwrap();
    assert_fresh(&db).await;
}

#[tokio::test]
async fn drop_table_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    db.drop_table("agents", false).await.unwrap();
    let e = db.get("agents", &json!("a1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = db.read("agents", &all()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // Made again: empty, not the cached rows.
    db.create_table(&agents()).await.unwrap();
    assert!(db.get("agents", &json!("a1")).await.unwrap().is_none());
    assert!(names(&*db).await.is_empty());
}

#[tokio::test]
async fn alter_table_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    db.alter_table(
        "agents",
        &[AlterTable::AddColumn(ColumnDef::integer("score"))],
    )
    .await
    .unwrap();
    assert_fresh(&db).await;
    let a1 = db.get("agents", &json!("a1")).await.unwrap().unwrap();
    assert!(a1.contains_key("score"), "{a1:?}");
}

#[tokio::test]
async fn create_index_invalidates() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    db.create_index(&IndexSpec::new("agents", ["name"]))
        .await
        .unwrap();
    assert_fresh(&db).await;
}

#[tokio::test]
async fn raw_query_invalidates_every_table_even_when_it_fails() {
    // db-memory has no SQL: the call fails, and still invalidates.
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    let e = db.raw_query("SELECT 1", &Params::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_fresh(&db).await;
}

#[tokio::test]
async fn raw_sql_that_writes_one_table_invalidates_every_table() {
    let sqlite = Arc::new(SqliteDatabase::in_memory().await.unwrap());
    let (raw, db) = setup_on(sqlite, first_miss()).await;
    prime_and_sneak(&*raw, &db).await;
    assert_eq!(title(&*db).await, "Blue");
    raw.update("teams", &json!("t1"), row(json!({"title": "Sneaky"})))
        .await
        .unwrap();
    assert_eq!(title(&*db).await, "Blue", "the cache serves teams");
    let params = Params::from([("id".to_string(), json!("a2"))]);
    db.raw_query("UPDATE agents SET name = 'Bo' WHERE id = :id", &params)
        .await
        .unwrap();
    assert_fresh(&db).await;
    assert_eq!(names(&*db).await, ["Sneaky", "Bo"]);
    assert_eq!(title(&*db).await, "Sneaky");
}

#[tokio::test]
async fn disconnect_invalidates_so_later_reads_fail_until_connect() {
    let (_raw, db) = setup().await;
    assert_eq!(name_of(&*db, "a1").await, "Ada");
    assert_eq!(name_of(&*db, "a1").await, "Ada");
    db.disconnect().await.unwrap();
    let e = db.get("agents", &json!("a1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    db.connect().await.unwrap();
    assert_eq!(name_of(&*db, "a1").await, "Ada");
}

#[tokio::test]
async fn a_write_to_one_table_leaves_the_others_cached() {
    let (raw, db) = setup().await;
    prime_and_sneak(&*raw, &db).await;
    db.create("teams", row(json!({"id": "t2", "title": "Red"})))
        .await
        .unwrap();
    assert_eq!(name_of(&*db, "a1").await, "Ada", "agents still cached");
}

#[tokio::test]
async fn a_join_is_invalidated_by_writes_to_the_joined_table() {
    let (raw, db) = setup().await;
    let q = Query::new()
        .select(["agents.id", "teams.title"])
        .inner_join("teams", "agents.team", "teams.id")
        .order_by_asc("agents.id");
    let titles =
        |rows: Vec<Row>| -> Vec<Value> { rows.into_iter().map(|r| r["title"].clone()).collect() };
    assert_eq!(
        titles(db.read("agents", &q).await.unwrap()),
        ["Blue", "Blue"]
    );
    raw.update("teams", &json!("t1"), row(json!({"title": "Sneaky"})))
        .await
        .unwrap();
    assert_eq!(
        titles(db.read("agents", &q).await.unwrap()),
        ["Blue", "Blue"],
        "the join is cached"
    );
    // A write to the joined table, not the queried one.
    db.create("teams", row(json!({"id": "t2", "title": "Red"})))
        .await
        .unwrap();
    assert_eq!(
        titles(db.read("agents", &q).await.unwrap()),
        ["Sneaky", "Sneaky"]
    );
}

/// Below the cache: `create` never finishes.
struct Hang;

#[async_trait]
impl DatabaseLayer for Hang {
    async fn create(&self, _next: &dyn Database, _table: &str, _row: Row) -> Result<Row> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_write_dropped_midway_invalidates() {
    let raw: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let hanging: Arc<dyn Database> =
        Arc::new(LayeredDatabase::new(Arc::clone(&raw), Arc::new(Hang)));
    let (raw, db) = setup_on_prepared(raw, hanging).await;
    prime_and_sneak(&*raw, &db).await;
    let cut = tokio::time::timeout(
        Duration::from_millis(20),
        db.create("agents", row(json!({"id": "a3"}))),
    )
    .await;
    assert!(cut.is_err(), "the create was cut short");
    assert_fresh(&db).await;
}

/// As [`setup_on`], with the tables made through `raw` and the cache over
/// `under` (a layer over `raw`).
async fn setup_on_prepared(
    raw: Arc<dyn Database>,
    under: Arc<dyn Database>,
) -> (Arc<dyn Database>, Cached) {
    let (raw, _unused) = setup_on(raw, first_miss()).await;
    let db = Cache::wrap(under, first_miss()).await.unwrap();
    (raw, db)
}

#[tokio::test]
async fn errors_and_raw_results_are_not_cached() {
    let (_raw, db) = setup().await;
    assert!(db.get("nope", &json!(1)).await.is_err());
    db.create_table(&TableSchema::new("nope").column(ColumnDef::integer("id").primary_key()))
        .await
        .unwrap();
    assert!(db.get("nope", &json!(1)).await.unwrap().is_none());
    let s = db.layer().stats();
    assert_eq!(s.inserts, 1, "{s:?}");
}

#[tokio::test]
async fn a_missing_row_is_cached_until_a_write() {
    let (raw, db) = setup().await;
    assert!(db.get("agents", &json!("a9")).await.unwrap().is_none());
    raw.create("agents", row(json!({"id": "a9"})))
        .await
        .unwrap();
    assert!(db.get("agents", &json!("a9")).await.unwrap().is_none());
    db.delete("agents", &json!("zz")).await.unwrap();
    assert!(db.get("agents", &json!("a9")).await.unwrap().is_some());
}

// ---- time to live ---------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn each_table_keeps_results_for_its_own_time_to_live() {
    let config = CacheConfig::from_settings(json!({"admission": "first_miss",
        "default_ttl_s": 300,
        "tables": { "teams": 60, "never": 0 },
    }))
    .unwrap();
    let (raw, db) = setup_on(Arc::new(MemoryDatabase::new()), config).await;
    raw.create_table(
        &TableSchema::new("never")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("v")),
    )
    .await
    .unwrap();
    raw.create("never", row(json!({"id": "n", "v": "old"})))
        .await
        .unwrap();
    let never = || async { db.get("never", &json!("n")).await.unwrap().unwrap()["v"].clone() };

    assert_eq!(name_of(&*db, "a1").await, "Ada");
    assert_eq!(title(&*db).await, "Blue");
    assert_eq!(never().await, "old");
    raw.update("agents", &json!("a1"), row(json!({"name": "New"})))
        .await
        .unwrap();
    raw.update("teams", &json!("t1"), row(json!({"title": "New"})))
        .await
        .unwrap();
    raw.update("never", &json!("n"), row(json!({"v": "new"})))
        .await
        .unwrap();
    // A table with a time to live of 0 is never cached.
    assert_eq!(never().await, "new");
    assert!(db.layer().stats().bypassed >= 2);

    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(title(&*db).await, "Blue");
    assert_eq!(name_of(&*db, "a1").await, "Ada");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(title(&*db).await, "New", "teams: 60 s");
    assert_eq!(name_of(&*db, "a1").await, "Ada");
    tokio::time::advance(Duration::from_secs(238)).await;
    assert_eq!(name_of(&*db, "a1").await, "Ada", "299 s");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(name_of(&*db, "a1").await, "New", "default: 300 s");
}

#[tokio::test(start_paused = true)]
async fn a_join_lives_as_long_as_its_shortest_lived_table() {
    let config =
        CacheConfig::from_settings(json!({"admission": "first_miss", "tables": { "teams": 10 }}))
            .unwrap();
    let (raw, db) = setup_on(Arc::new(MemoryDatabase::new()), config).await;
    let q = Query::new()
        .select(["agents.id", "teams.title"])
        .inner_join("teams", "agents.team", "teams.id");
    let first = |rows: Vec<Row>| rows[0]["title"].clone();
    assert_eq!(first(db.read("agents", &q).await.unwrap()), "Blue");
    raw.update("teams", &json!("t1"), row(json!({"title": "New"})))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(first(db.read("agents", &q).await.unwrap()), "Blue");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(first(db.read("agents", &q).await.unwrap()), "New");

    // A join with a table that is never cached is never cached.
    let config =
        CacheConfig::from_settings(json!({"admission": "first_miss", "tables": { "teams": 0 }}))
            .unwrap();
    let (raw, db) = setup_on(Arc::new(MemoryDatabase::new()), config).await;
    assert_eq!(first(db.read("agents", &q).await.unwrap()), "Blue");
    raw.update("teams", &json!("t1"), row(json!({"title": "New"})))
        .await
        .unwrap();
    assert_eq!(first(db.read("agents", &q).await.unwrap()), "New");
    assert_eq!(db.layer().stats().inserts, 0);
}

#[tokio::test]
async fn max_bytes_bounds_the_weight_and_max_entries_the_count() {
    let config = CacheConfig::from_settings(
        json!({"admission": "first_miss", "max_entries": 50, "max_bytes": 20000}),
    )
    .unwrap();
    let (raw, db) = setup_on(Arc::new(MemoryDatabase::new()), config).await;
    let big = "x".repeat(2000);
    for i in 0..40 {
        raw.create("agents", row(json!({"id": format!("b{i}"), "name": big})))
            .await
            .unwrap();
    }
    for i in 0..40 {
        db.get("agents", &json!(format!("b{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    db.layer().run_pending_tasks();
    let s = db.layer().stats();
    assert!(s.weight <= 20000, "{s:?}");
    assert!(s.entries < 40 && s.entries > 0, "{s:?}");

    // Small rows: the count bound holds (each entry weighs at least
    // max_bytes / max_entries).
    for i in 0..200 {
        db.get("agents", &json!(format!("missing{i}")))
            .await
            .unwrap();
    }
    db.layer().run_pending_tasks();
    let s = db.layer().stats();
    assert!(s.entries <= 50, "{s:?}");
}

// ---- configuration --------------------------------------------------------

fn registry() -> LayerRegistry {
    let mut r = LayerRegistry::new();
    truststream_layer_cache::register(&mut r);
    r
}

fn stack_err(interface: Interface, layers: Value) -> String {
    let e = registry()
        .stack(
            interface,
            layers.as_object().unwrap(),
            &LayerDeps::default(),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    e.message().to_string()
}

#[test]
fn configuration_errors_name_the_key() {
    assert_eq!(
        stack_err(
            Interface::Database,
            json!({"cache": {"tables": {"trust_scores": "60"}}})
        ),
        "database.layers.cache: tables.trust_scores: invalid type: expected u64"
    );
    assert_eq!(
        stack_err(Interface::Database, json!({"cache": {"default_ttl": 60}})),
        "database.layers.cache: unknown field `default_ttl`, expected one of \
         `default_ttl_s`, `tables`, `max_entries`, `max_bytes`, `follow_changes`, `admission`"
    );
    assert_eq!(
        stack_err(Interface::Database, json!({"cache": {"max_entries": 0}})),
        "database.layers.cache: max_entries must be at least 1 (leave the layer out to cache nothing)"
    );
    assert!(stack_err(
        Interface::Database,
        json!({"cache": {"tables": {"no-such-name": 5}}})
    )
    .starts_with("database.layers.cache: tables.no-such-name: not a table name"));
    assert!(stack_err(
        Interface::Database,
        json!({"cache": {"default_ttl_s": 400000000}})
    )
    .starts_with("database.layers.cache: default_ttl_s must be at most"));
    assert_eq!(
        stack_err(Interface::Storage, json!({"cache": true})),
        "layer storage.layers.cache does not apply to the storage interface"
    );
}

#[tokio::test]
async fn a_configured_stack_wraps_the_database_and_hands_out_the_cache() {
    let handles = CacheHandles::new();
    let mut r = LayerRegistry::new();
    truststream_layer_cache::register_with_handles(&mut r, &handles);
    let layers = json!({"cache": {"tables": {"teams": 0}}});
    let stack = r
        .stack(
            Interface::Database,
            layers.as_object().unwrap(),
            &LayerDeps::default(),
        )
        .unwrap();
    assert_eq!(
        stack.describe(),
        ["cache(default_ttl_s=300, max_entries=100000, tables={teams=0})"]
    );
    let raw: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    raw.create_table(&agents()).await.unwrap();
    raw.create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    let db = stack.wrap_database(raw).await.unwrap();
    assert_eq!(db.info().name, "memory");
    // The defaults store a result on its key's second miss.
    for _ in 0..3 {
        assert_eq!(name_of(&*db, "a1").await, "Ada");
    }
    let caches = handles.caches();
    assert_eq!(caches.len(), 1);
    let s = caches[0].stats();
    assert_eq!(
        (s.misses, s.not_admitted, s.inserts, s.hits),
        (2, 1, 1, 1),
        "{s:?}"
    );
    assert!(
        !caches[0].stats().follows_feed,
        "db-memory's feed is per instance"
    );
    drop((db, caches));
    assert!(handles.caches().is_empty());
}

// ---- admission on the second miss (the default) ----------------------------

#[tokio::test]
async fn the_defaults_store_a_result_on_its_second_miss_and_invalidate_it_as_ever() {
    let (raw, db) = setup_on(Arc::new(MemoryDatabase::new()), CacheConfig::default()).await;
    let stats = || db.layer().stats();
    // First miss: remembered, not stored.
    assert_eq!(name_of(&*db, "a1").await, "Ada");
    let s = stats();
    assert_eq!((s.misses, s.not_admitted, s.inserts), (1, 1, 0), "{s:?}");
    // Second miss: stored; third read: served, even past a write under
    // the layer (which the layer cannot see).
    assert_eq!(name_of(&*db, "a1").await, "Ada");
    assert_eq!(names(&*db).await, ["Ada", "Ada"]);
    assert_eq!(names(&*db).await, ["Ada", "Ada"]);
    raw.update("agents", &json!("a1"), row(json!({"name": "Sneaky"})))
        .await
        .unwrap();
    assert_eq!(name_of(&*db, "a1").await, "Ada", "served");
    assert_eq!(names(&*db).await, ["Ada", "Ada"], "served");
    let s = stats();
    assert_eq!((s.not_admitted, s.inserts, s.hits), (2, 2, 2), "{s:?}");
    // A write through the layer: the next reads see it, and a key the
    // doorkeeper remembers is stored again on its first miss after it.
    db.update("agents", &json!("a2"), row(json!({"name": "Bo"})))
        .await
        .unwrap();
    assert_eq!(name_of(&*db, "a1").await, "Sneaky");
    assert_eq!(names(&*db).await, ["Sneaky", "Bo"]);
    assert_eq!(name_of(&*db, "a1").await, "Sneaky");
    assert_eq!(names(&*db).await, ["Sneaky", "Bo"]);
    let s = stats();
    assert_eq!((s.not_admitted, s.inserts, s.hits), (2, 4, 4), "{s:?}");
}

#[tokio::test]
async fn keys_the_doorkeeper_forgot_are_read_again_never_stale() {
    // 16 entries: the doorkeeper has its least size (1,024 slots), so
    // 5,000 other keys take every slot, the stored key's included.
    let config = CacheConfig::from_settings(json!({"max_entries": 16})).unwrap();
    let (raw, db) = setup_on(Arc::new(MemoryDatabase::new()), config).await;
    for _ in 0..3 {
        assert_eq!(name_of(&*db, "a1").await, "Ada");
    }
    assert_eq!(db.layer().stats().hits, 1);
    for i in 0..5000 {
        assert_eq!(
            db.get("agents", &json!(format!("x{i}"))).await.unwrap(),
            None
        );
    }
    db.update("agents", &json!("a1"), row(json!({"name": "New"})))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(name_of(&*db, "a1").await, "New");
    }
    raw.update("agents", &json!("a1"), row(json!({"name": "Sneaky"})))
        .await
        .unwrap();
    // Stored again (second miss since the write), then served.
    assert_eq!(name_of(&*db, "a1").await, "New");
}
