//! The composite layer over real providers: db-memory primary, db-memory or
//! db-sqlite secondary. Outages are made by a layer that answers
//! `Unavailable` while switched off.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use truststream_core::{BoxFuture, Error, ErrorKind, HealthStatus, Result};
use truststream_core_db::{
    col, AlterTable, ColumnDef, ColumnDefault, Database, IndexSpec, Operation, Params, Query, Row,
    TableSchema, Value,
};
use truststream_db_memory::MemoryDatabase;
use truststream_db_sqlite::SqliteDatabase;
use truststream_layer::{
    around_database, Around, Interface, LayerDeps, LayerRegistry, LayeredDatabase, Next, Op,
};
use truststream_layer_composite::{CompositeConfig, CompositeLayer};

/// Answers `Unavailable` to every call while off (`health()` included,
/// which then reads unhealthy).
#[derive(Default)]
struct Switch {
    off: AtomicBool,
}

impl Switch {
    fn set_off(&self, off: bool) {
        self.off.store(off, Ordering::SeqCst);
    }
}

impl Around for Switch {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        if self.off.load(Ordering::SeqCst) {
            return Box::pin(async { Err(Error::unavailable("switched off").unapplied()) });
        }
        next.run()
    }
}

/// `db` behind a switch.
fn switched(db: Arc<dyn Database>) -> (Arc<dyn Database>, Arc<Switch>) {
    let switch = Arc::new(Switch::default());
    (around_database(db, Arc::clone(&switch)), switch)
}

/// Settings whose replicator stays idle during a test (the tests run passes
/// themselves).
fn idle() -> CompositeConfig {
    let mut c = CompositeConfig::new("memory", json!({}));
    c.interval = Duration::from_secs(3600);
    c
}

struct Setup {
    db: Arc<LayeredDatabase<CompositeLayer>>,
    primary: Arc<dyn Database>,
    primary_switch: Arc<Switch>,
    secondary: Arc<dyn Database>,
    secondary_switch: Arc<Switch>,
}

impl Setup {
    fn layer(&self) -> &CompositeLayer {
        self.db.layer()
    }
}

async fn setup_with(secondary: Arc<dyn Database>, config: CompositeConfig) -> Setup {
    let primary: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let (p, primary_switch) = switched(Arc::clone(&primary));
    let (s, secondary_switch) = switched(Arc::clone(&secondary));
    let db = CompositeLayer::wrap(p, s, &config).await.unwrap();
    Setup {
        db,
        primary,
        primary_switch,
        secondary,
        secondary_switch,
    }
}

async fn setup() -> Setup {
    setup_with(Arc::new(MemoryDatabase::new()), idle()).await
}

fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}

fn agents() -> TableSchema {
    TableSchema::new("agents")
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("name").unique())
        .column(ColumnDef::text("status").default_value("active"))
        .column(ColumnDef::integer("n").default_value(0))
}

async fn all(db: &dyn Database, table: &str) -> Vec<Row> {
    db.read(table, &Query::new().order_by_asc("id"))
        .await
        .unwrap()
}

async fn outbox_len(primary: &dyn Database) -> usize {
    primary
        .read("truststream_outbox", &Query::new())
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn the_outbox_entry_is_written_with_the_write_and_only_with_it() {
    let s = setup().await;
    s.db.create_table(&agents()).await.unwrap();
    let before = outbox_len(&*s.primary).await;
    s.db.create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    assert_eq!(outbox_len(&*s.primary).await, before + 1);

    // A duplicate key fails: no row, no entry.
    let e =
        s.db.create("agents", row(json!({"id": "a1", "name": "again"})))
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(outbox_len(&*s.primary).await, before + 1);

    // A transaction whose second operation fails: nothing at all.
    let e =
        s.db.transaction(vec![
            Operation::Create {
                table: "agents".into(),
                data: row(json!({"id": "a2", "name": "Bob"})),
            },
            Operation::Update {
                table: "agents".into(),
                id: json!("missing"),
                data: row(json!({"name": "x"})),
            },
        ])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(outbox_len(&*s.primary).await, before + 1);
    assert!(s
        .primary
        .get("agents", &json!("a2"))
        .await
        .unwrap()
        .is_none());

    // A write while the primary is down fails and reaches nothing.
    s.primary_switch.set_off(true);
    let e =
        s.db.create("agents", row(json!({"id": "a3", "name": "Cy"})))
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    s.primary_switch.set_off(false);
    assert_eq!(outbox_len(&*s.primary).await, before + 1);
    s.layer().catch_up().await.unwrap();
    assert_eq!(outbox_len(&*s.primary).await, 0);
    assert_eq!(all(&*s.secondary, "agents").await.len(), 1);
}

#[tokio::test]
async fn every_write_path_reaches_the_secondary() {
    let s = setup_with(Arc::new(SqliteDatabase::in_memory().await.unwrap()), idle()).await;
    let db = &s.db;
    db.create_table(&agents()).await.unwrap();
    db.create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    let rows: Vec<Row> = (2..=9)
        .map(|i| row(json!({"id": format!("a{i}"), "name": format!("n{i}"), "n": i})))
        .collect();
    db.create_many("agents", rows).await.unwrap();
    db.update("agents", &json!("a1"), row(json!({"n": 100})))
        .await
        .unwrap();
    assert!(db.delete("agents", &json!("a2")).await.unwrap());
    // Moves rows out of the filter: the secondary's copies must follow.
    assert_eq!(
        db.update_many(
            "agents",
            &col("n").gte(5),
            row(json!({"status": "retired"}))
        )
        .await
        .unwrap(),
        6
    );
    assert_eq!(db.delete_many("agents", &col("n").lt(4)).await.unwrap(), 1);
    db.transaction(vec![
        Operation::Update {
            table: "agents".into(),
            id: json!("a4"),
            data: row(json!({"name": "four"})),
        },
        Operation::Delete {
            table: "agents".into(),
            id: json!("a5"),
        },
        Operation::Create {
            table: "agents".into(),
            data: row(json!({"id": "a10", "name": "ten"})),
        },
    ])
    .await
    .unwrap();
    // Schema calls follow the rows, in order.
    db.alter_table(
        "agents",
        &[AlterTable::AddColumn(
            ColumnDef::text("team").default_value("core"),
        )],
    )
    .await
    .unwrap();
    db.update("agents", &json!("a6"), row(json!({"team": "ops"})))
        .await
        .unwrap();

    assert!(s.layer().lag().await.unwrap().entries > 0);
    s.layer().catch_up().await.unwrap();
    assert_eq!(s.layer().lag().await.unwrap().entries, 0);
    let primary = all(&*s.primary, "agents").await;
    assert_eq!(primary.len(), 7);
    assert_eq!(all(&*s.secondary, "agents").await, primary);

    db.drop_table("agents", false).await.unwrap();
    s.layer().catch_up().await.unwrap();
    let e = s.secondary.read("agents", &Query::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn entries_applied_twice_or_late_give_the_same_secondary() {
    let s = setup().await;
    let db = &s.db;
    db.create_table(&agents()).await.unwrap();
    for i in 0..20 {
        db.create(
            "agents",
            row(json!({"id": format!("a{i:02}"), "name": format!("n{i}")})),
        )
        .await
        .unwrap();
    }
    for i in 0..20 {
        db.update("agents", &json!(format!("a{i:02}")), row(json!({"n": i})))
            .await
            .unwrap();
    }
    db.delete_many("agents", &col("n").lt(5)).await.unwrap();
    // A crash after applying, before removing the entries: the same
    // entries come again.
    let pending = s
        .primary
        .read("truststream_outbox", &Query::new().order_by_asc("id"))
        .await
        .unwrap();
    assert!(pending.len() > 40);
    s.layer().catch_up().await.unwrap();
    let expected = all(&*s.primary, "agents").await;
    assert_eq!(all(&*s.secondary, "agents").await, expected);
    let again: Vec<Row> = pending
        .into_iter()
        .map(|mut r| {
            r.remove("id");
            r
        })
        .collect();
    s.primary
        .create_many("truststream_outbox", again)
        .await
        .unwrap();
    s.layer().catch_up().await.unwrap();
    assert_eq!(all(&*s.secondary, "agents").await, expected);

    // A full resync changes nothing either.
    s.layer().resync_table("agents").await.unwrap();
    s.layer().catch_up().await.unwrap();
    assert_eq!(all(&*s.secondary, "agents").await, expected);
    assert_eq!(expected.len(), 15);
}

#[tokio::test]
async fn reads_fall_back_to_the_secondary_while_the_primary_is_down() {
    let s = setup().await;
    let db = &s.db;
    db.create_table(&agents()).await.unwrap();
    db.create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    s.layer().catch_up().await.unwrap();
    // Not yet replicated: the secondary answers what it has.
    db.create("agents", row(json!({"id": "a2", "name": "Bob"})))
        .await
        .unwrap();

    s.primary_switch.set_off(true);
    let got = db.get("agents", &json!("a1")).await.unwrap().unwrap();
    assert_eq!(got["name"], "Ada");
    assert!(db.get("agents", &json!("a2")).await.unwrap().is_none());
    assert_eq!(all(&**db, "agents").await.len(), 1);
    assert_eq!(s.layer().stats().read_fallbacks, 3);
    let h = db.health().await;
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert!(h.message.unwrap().contains("primary unreachable"));

    // Both down: the primary's error, and unhealthy.
    s.secondary_switch.set_off(true);
    let e = db.get("agents", &json!("a1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(db.health().await.status, HealthStatus::Unhealthy);
    s.secondary_switch.set_off(false);

    // Errors other than Unavailable/Timeout are the primary's answer.
    s.primary_switch.set_off(false);
    let e = db.get("nope", &json!("a1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(s.layer().stats().read_fallbacks, 4);
    assert_eq!(all(&**db, "agents").await.len(), 2);
    assert_eq!(s.layer().stats().read_fallbacks, 4);
}

#[tokio::test]
async fn lag_and_an_unreachable_secondary_show_in_health() {
    let mut config = idle();
    config.lag_degraded = Duration::from_secs(30);
    let s = setup_with(Arc::new(MemoryDatabase::new()), config).await;
    let db = &s.db;
    db.create_table(&agents()).await.unwrap();
    s.layer().catch_up().await.unwrap();
    assert_eq!(db.health().await.status, HealthStatus::Healthy);

    db.create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    let lag = s.layer().lag().await.unwrap();
    assert_eq!(lag.entries, 1);
    assert!(lag.oldest < Duration::from_secs(30));
    let h = db.health().await;
    assert_eq!(h.status, HealthStatus::Healthy);
    assert!(h.message.unwrap().contains("1 outbox entries"));

    // An entry a minute old: past lag_degraded_s.
    let mut old = s
        .primary
        .read("truststream_outbox", &Query::new())
        .await
        .unwrap()
        .remove(0);
    old.remove("id");
    let minute_ago = old["created_ms"].as_i64().unwrap() - 60_000;
    old.insert("created_ms".into(), json!(minute_ago));
    s.primary.create("truststream_outbox", old).await.unwrap();
    let lag = s.layer().lag().await.unwrap();
    assert_eq!(lag.entries, 2);
    assert!(lag.oldest >= Duration::from_secs(60));
    let h = db.health().await;
    assert_eq!(h.status, HealthStatus::Degraded);
    assert!(h.message.unwrap().contains("replication lag"));

    // The secondary down: replication fails (entries stay), health degraded.
    s.secondary_switch.set_off(true);
    let e = s.layer().replicate_once().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(s.layer().lag().await.unwrap().entries, 2);
    assert_eq!(s.layer().stats().failed_passes, 1);
    let h = db.health().await;
    assert_eq!(h.status, HealthStatus::Degraded);
    assert!(h.message.unwrap().contains("secondary unhealthy"));
    s.secondary_switch.set_off(false);
    s.layer().catch_up().await.unwrap();
    assert_eq!(db.health().await.status, HealthStatus::Healthy);
    assert_eq!(all(&*s.secondary, "agents").await.len(), 1);
}

#[tokio::test]
async fn keys_are_filled_when_the_layer_can_and_refused_otherwise() {
    let s = setup().await;
    let db = &s.db;
    db.create_table(&agents()).await.unwrap();
    db.create_table(
        &TableSchema::new("events")
            .column(
                ColumnDef::uuid("id")
                    .primary_key()
                    .default(ColumnDefault::RandomUuid),
            )
            .column(ColumnDef::text("what")),
    )
    .await
    .unwrap();
    db.create_table(
        &TableSchema::new("counters")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::integer("v")),
    )
    .await
    .unwrap();
    let a = db
        .create("agents", row(json!({"name": "Ada"})))
        .await
        .unwrap();
    assert_eq!(a["id"].as_str().unwrap().len(), 36);
    let e = db
        .create("events", row(json!({"what": "x"})))
        .await
        .unwrap();
    assert_eq!(e["id"].as_str().unwrap().len(), 36);
    let err = db
        .create("counters", row(json!({"v": 1})))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("counters") && err.message().contains("key"));
    db.create("counters", row(json!({"id": 7, "v": 1})))
        .await
        .unwrap();
    s.layer().catch_up().await.unwrap();
    for t in ["agents", "events", "counters"] {
        assert_eq!(
            all(&*s.secondary, t).await,
            all(&*s.primary, t).await,
            "{t}"
        );
        assert_eq!(all(&*s.secondary, t).await.len(), 1);
    }
}

#[tokio::test]
async fn raw_sql_unknown_tables_and_the_layers_own_tables_are_refused() {
    let s = setup().await;
    let db = &s.db;
    assert!(!db.capabilities().raw_sql);
    let e = db
        .raw_query("DELETE FROM agents", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("resync_table"));

    s.primary.create_table(&agents()).await.unwrap();
    let e = db
        .create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("not replicated"));
    let e = db
        .create("truststream_outbox", row(json!({"kind": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = db.drop_table("truststream_outbox", true).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    // Adopting an existing table copies its rows.
    s.primary
        .create("agents", row(json!({"id": "a0", "name": "Old"})))
        .await
        .unwrap();
    db.create_table(&agents().if_not_exists()).await.unwrap();
    db.create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    s.layer().catch_up().await.unwrap();
    assert_eq!(all(&*s.secondary, "agents").await.len(), 2);
}

#[tokio::test]
async fn the_catalog_survives_a_new_layer_and_the_replicator_resumes() {
    let primary: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let secondary: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let first = CompositeLayer::wrap(Arc::clone(&primary), Arc::clone(&secondary), &idle())
        .await
        .unwrap();
    // Another layer on the same primary (another process, say), built
    // before the table existed, learns it from the catalog table.
    let other = CompositeLayer::wrap(Arc::clone(&primary), Arc::clone(&secondary), &idle())
        .await
        .unwrap();
    first.create_table(&agents()).await.unwrap();
    other
        .create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    drop((first, other));

    // A new layer knows the table and replicates what the first left, in
    // the background.
    let mut config = idle();
    config.interval = Duration::from_millis(10);
    let second = CompositeLayer::wrap(Arc::clone(&primary), Arc::clone(&secondary), &config)
        .await
        .unwrap();
    second
        .create("agents", row(json!({"id": "a2", "name": "Bob"})))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while second.layer().lag().await.unwrap().entries > 0 {
        assert!(tokio::time::Instant::now() < deadline, "replicator idle");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        all(&*secondary, "agents").await,
        all(&*primary, "agents").await
    );
    assert_eq!(all(&*secondary, "agents").await.len(), 2);
    assert!(second.layer().stats().applied >= 3);
    assert_eq!(all(&*secondary, "agents").await[0]["name"], "Ada");

    // Dropped, its replicator lets go of the secondary.
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while Arc::strong_count(&secondary) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicator still running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn built_from_config_through_the_registry() {
    let mut registry = LayerRegistry::new();
    truststream_layer_composite::register(&mut registry);
    let build: truststream_layer::ProviderBuilder<dyn Database> =
        Arc::new(|name: String, settings: serde_json::Value| {
            Box::pin(async move {
                assert_eq!(name, "memory");
                assert_eq!(settings, json!({}));
                Ok(Arc::new(MemoryDatabase::new()) as Arc<dyn Database>)
            }) as BoxFuture<'static, Result<Arc<dyn Database>>>
        });
    let deps = LayerDeps {
        database: Some(build),
        storage: None,
    };
    let layers = json!({"composite": {"secondary": {"type": "memory"}, "batch": 3}});
    let stack = registry
        .stack(Interface::Database, layers.as_object().unwrap(), &deps)
        .unwrap();
    assert_eq!(
        stack.describe(),
        vec![
            "composite(secondary=memory, outbox_table=truststream_outbox, interval_ms=200, batch=3, lag_degraded_s=30)"
        ]
    );
    let db = stack
        .wrap_database(Arc::new(MemoryDatabase::new()))
        .await
        .unwrap();
    db.create_table(&agents()).await.unwrap();
    db.create("agents", row(json!({"id": "a1"}))).await.unwrap();
    assert_eq!(db.health().await.status, HealthStatus::Healthy);

    for (bad, key) in [
        (
            json!({"composite": {}}),
            "database.layers.composite: secondary: required",
        ),
        (
            json!({"composite": {"secondary": {"type": "memory"}, "batch": 0}}),
            "database.layers.composite: batch: must be above 0",
        ),
        (
            json!({"composite": {"secondary": {"type": "memory"}, "bogus": 1}}),
            "bogus",
        ),
    ] {
        let e = registry
            .stack(Interface::Database, bad.as_object().unwrap(), &deps)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains(key), "{e}");
    }
    // Over storage the same settings lack the storage composite's journal:
    // wrapping says so.
    let e = registry
        .stack(Interface::Storage, layers.as_object().unwrap(), &deps)
        .unwrap()
        .wrap_storage(Arc::new(truststream_storage_memory::MemoryStorage::new()))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("journal: required"), "{e}");
    // No builder: wrapping says so.
    let stack = registry
        .stack(
            Interface::Database,
            layers.as_object().unwrap(),
            &LayerDeps::default(),
        )
        .unwrap();
    let e = stack
        .wrap_database(Arc::new(MemoryDatabase::new()))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[tokio::test]
async fn schema_changes_behind_waiting_rows_replicate_in_any_pass_layout() {
    for (batch, sqlite) in [(1, true), (3, true), (500, true), (1, false), (500, false)] {
        let mut config = idle();
        config.batch = batch;
        let secondary: Arc<dyn Database> = if sqlite {
            Arc::new(SqliteDatabase::in_memory().await.unwrap())
        } else {
            Arc::new(MemoryDatabase::new())
        };
        let s = setup_with(secondary, config).await;
        let db = &s.db;
        db.create_table(&agents()).await.unwrap();
        db.create("agents", row(json!({"id": "a1", "name": "Ada", "n": 1})))
            .await
            .unwrap();
        db.alter_table(
            "agents",
            &[
                AlterTable::RenameColumn {
                    from: "n".into(),
                    to: "score".into(),
                },
                AlterTable::DropColumn("status".into()),
                AlterTable::AddColumn(ColumnDef::text("team").default_value("core")),
            ],
        )
        .await
        .unwrap();
        db.create(
            "agents",
            row(json!({"id": "a2", "name": "Bob", "score": 2})),
        )
        .await
        .unwrap();
        // Dropped and made again with other columns.
        db.create_table(
            &TableSchema::new("events")
                .column(ColumnDef::text("id").primary_key())
                .column(ColumnDef::text("old")),
        )
        .await
        .unwrap();
        db.create("events", row(json!({"id": "e1", "old": "x"})))
            .await
            .unwrap();
        db.drop_table("events", false).await.unwrap();
        db.create_table(
            &TableSchema::new("events")
                .column(ColumnDef::text("id").primary_key())
                .column(ColumnDef::integer("new").not_null().default_value(0)),
        )
        .await
        .unwrap();
        db.create("events", row(json!({"id": "e2", "new": 5})))
            .await
            .unwrap();
        // Gone before its rows were copied; and a filter naming a column
        // renamed since.
        db.create_table(&TableSchema::new("gone").column(ColumnDef::text("id").primary_key()))
            .await
            .unwrap();
        db.create("gone", row(json!({"id": "g1"}))).await.unwrap();
        db.update_many("gone", &col("id").eq("g1"), row(json!({"id": "g1"})))
            .await
            .unwrap();
        db.drop_table("gone", false).await.unwrap();
        db.update_many("agents", &col("score").gte(2), row(json!({"team": "ops"})))
            .await
            .unwrap();
        db.alter_table(
            "agents",
            &[AlterTable::RenameColumn {
                from: "score".into(),
                to: "points".into(),
            }],
        )
        .await
        .unwrap();
        s.layer().catch_up().await.unwrap();
        let e = s.secondary.read("gone", &Query::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        for t in ["agents", "events"] {
            let primary = all(&*s.primary, t).await;
            assert_eq!(all(&*s.secondary, t).await, primary, "batch {batch}, {t}");
        }
        assert_eq!(all(&*s.secondary, "agents").await.len(), 2);
        assert_eq!(all(&*s.secondary, "events").await.len(), 1);
    }
}

/// Refuses `method` while on (`Unavailable`, with `message`).
struct Refuse {
    on: AtomicBool,
    method: &'static str,
    message: &'static str,
}

impl Refuse {
    fn new(method: &'static str, message: &'static str) -> Arc<Refuse> {
        Arc::new(Refuse {
            on: AtomicBool::new(false),
            method,
            message,
        })
    }
}

impl Around for Refuse {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        if self.on.load(Ordering::SeqCst) && op.method == self.method {
            let e = Error::unavailable(self.message).unapplied();
            return Box::pin(async { Err(e) });
        }
        next.run()
    }
}

#[tokio::test]
async fn a_pass_reports_its_first_failure_and_counts_only_removed_entries() {
    let memory: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    // On the primary the layer only deletes many for outbox entries.
    let removal = Refuse::new("delete_many", "no removal");
    let primary = around_database(Arc::clone(&memory), Arc::clone(&removal));
    let no_index = Refuse::new("create_index", "no index");
    let secondary = around_database(Arc::new(MemoryDatabase::new()), Arc::clone(&no_index));
    let db = CompositeLayer::wrap(primary, secondary, &idle())
        .await
        .unwrap();
    db.create_table(&agents()).await.unwrap();
    db.layer().catch_up().await.unwrap();
    let applied = db.layer().stats().applied;

    // The row entry is applied, the index entry after it fails, and the
    // applied entry cannot be removed: the pass reports the index failure
    // (the first), counts nothing, and both entries stay.
    removal.on.store(true, Ordering::SeqCst);
    no_index.on.store(true, Ordering::SeqCst);
    db.create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    db.create_index(&IndexSpec::new("agents", ["status"]))
        .await
        .unwrap();
    let e = db.layer().replicate_once().await.unwrap_err();
    assert_eq!(e.message(), "no index");
    assert_eq!(db.layer().stats().applied, applied);
    assert_eq!(outbox_len(&*memory).await, 2);

    // Only the removal fails: its error.
    no_index.on.store(false, Ordering::SeqCst);
    let e = db.layer().replicate_once().await.unwrap_err();
    assert_eq!(e.message(), "no removal");
    assert_eq!(db.layer().stats().applied, applied);
    assert_eq!(outbox_len(&*memory).await, 2);

    removal.on.store(false, Ordering::SeqCst);
    db.layer().catch_up().await.unwrap();
    assert_eq!(db.layer().stats().applied, applied + 2);
    assert_eq!(outbox_len(&*memory).await, 0);
    assert_eq!(
        all(&**db.layer().secondary(), "agents").await,
        all(&*memory, "agents").await
    );
}

#[tokio::test]
async fn a_secondary_built_for_a_layer_that_fails_is_disconnected() {
    let mut registry = LayerRegistry::new();
    truststream_layer_composite::register(&mut registry);
    let built = Arc::new(MemoryDatabase::new());
    let handed = Arc::clone(&built);
    let build: truststream_layer::ProviderBuilder<dyn Database> =
        Arc::new(move |_: String, _: serde_json::Value| {
            let db = Arc::clone(&handed);
            Box::pin(async move { Ok(db as Arc<dyn Database>) })
                as BoxFuture<'static, Result<Arc<dyn Database>>>
        });
    let deps = LayerDeps {
        database: Some(build),
        storage: None,
    };
    let layers = json!({"composite": {"secondary": {"type": "memory"}}});
    let stack = registry
        .stack(Interface::Database, layers.as_object().unwrap(), &deps)
        .unwrap();
    // The primary is down: the outbox cannot be created.
    let (primary, switch) = switched(Arc::new(MemoryDatabase::new()));
    switch.set_off(true);
    let e = stack.wrap_database(primary).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(
        built
            .read("anything", &Query::new())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unavailable
    );
}

#[tokio::test]
async fn an_index_on_columns_gone_since_does_not_stop_replication() {
    for sqlite in [false, true] {
        let secondary: Arc<dyn Database> = if sqlite {
            Arc::new(SqliteDatabase::in_memory().await.unwrap())
        } else {
            Arc::new(MemoryDatabase::new())
        };
        let s = setup_with(secondary, idle()).await;
        // Indexed, then the column renamed, before a pass.
        s.db.create_table(&agents()).await.unwrap();
        s.db.create_index(&IndexSpec::new("agents", ["status"]))
            .await
            .unwrap();
        s.db.alter_table(
            "agents",
            &[AlterTable::RenameColumn {
                from: "status".into(),
                to: "state".into(),
            }],
        )
        .await
        .unwrap();
        // Indexed, then dropped and made again without the column.
        let t = TableSchema::new("t")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("a"));
        s.db.create_table(&t).await.unwrap();
        s.db.create_index(&IndexSpec::new("t", ["a"]))
            .await
            .unwrap();
        s.db.drop_table("t", false).await.unwrap();
        s.db.create_table(
            &TableSchema::new("t")
                .column(ColumnDef::text("id").primary_key())
                .column(ColumnDef::text("b")),
        )
        .await
        .unwrap();
        s.db.create(
            "agents",
            row(json!({"id": "a1", "name": "Ada", "state": "on"})),
        )
        .await
        .unwrap();
        s.db.create("t", row(json!({"id": "t1", "b": "x"})))
            .await
            .unwrap();

        s.layer().catch_up().await.unwrap();
        assert_eq!(outbox_len(&*s.primary).await, 0);
        for table in ["agents", "t"] {
            assert_eq!(
                all(&*s.secondary, table).await,
                all(&*s.primary, table).await
            );
        }
    }
}
