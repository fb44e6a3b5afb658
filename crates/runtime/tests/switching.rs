//! Run-time switching: in-flight calls finish on the old provider, new calls
//! go to the new one, unhealthy or unbuildable candidates are refused.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::Notify;
use truststream_core::{ErrorKind, Health, ProviderInfo};
use truststream_core_db::{
    AlterTable, ChangeStream, ColumnDef, Database, DbCapabilities, DbResult, Filter, IndexSpec,
    Operation, OperationOutput, Params, Query, Row, TableSchema, Value,
};
use truststream_db_memory::MemoryDatabase;
use truststream_runtime::{ConfigSources, Interface, Runtime};

/// A memory database whose reads wait `delay` (announcing their start) and
/// whose health is whatever the configuration says.
struct Slow {
    inner: MemoryDatabase,
    delay: Duration,
    healthy: bool,
    started: Arc<Notify>,
}

#[derive(serde::Deserialize)]
struct SlowConfig {
    delay_ms: u64,
    #[serde(default = "yes")]
    healthy: bool,
}

fn yes() -> bool {
    true
}

#[async_trait]
impl Database for Slow {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "slow",
            version: "0.0.0",
        }
    }
    fn capabilities(&self) -> DbCapabilities {
        self.inner.capabilities()
    }
    async fn health(&self) -> Health {
        if self.healthy {
            Health::healthy(Duration::from_micros(5))
        } else {
            Health::unhealthy(Duration::from_micros(5), "disk on fire")
        }
    }
    async fn connect(&self) -> DbResult<()> {
        self.inner.connect().await
    }
    async fn disconnect(&self) -> DbResult<()> {
        self.inner.disconnect().await
    }
    async fn create(&self, table: &str, row: Row) -> DbResult<Row> {
        self.inner.create(table, row).await
    }
    async fn read(&self, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        self.started.notify_one();
        tokio::time::sleep(self.delay).await;
        self.inner.read(table, query).await
    }
    async fn get(&self, table: &str, id: &Value) -> DbResult<Option<Row>> {
        self.inner.get(table, id).await
    }
    async fn update(&self, table: &str, id: &Value, patch: Row) -> DbResult<Row> {
        self.inner.update(table, id, patch).await
    }
    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool> {
        self.inner.delete(table, id).await
    }
    async fn create_many(&self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>> {
        self.inner.create_many(table, rows).await
    }
    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64> {
        self.inner.update_many(table, filter, patch).await
    }
    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64> {
        self.inner.delete_many(table, filter).await
    }
    async fn raw_query(&self, sql: &str, params: &Params) -> DbResult<Vec<Row>> {
        self.inner.raw_query(sql, params).await
    }
    async fn transaction(&self, operations: Vec<Operation>) -> DbResult<Vec<OperationOutput>> {
        self.inner.transaction(operations).await
    }
    async fn create_table(&self, schema: &TableSchema) -> DbResult<()> {
        self.inner.create_table(schema).await
    }
    async fn drop_table(&self, table: &str, if_exists: bool) -> DbResult<()> {
        self.inner.drop_table(table, if_exists).await
    }
    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> DbResult<()> {
        self.inner.alter_table(table, changes).await
    }
    async fn create_index(&self, index: &IndexSpec) -> DbResult<()> {
        self.inner.create_index(index).await
    }
    async fn subscribe_changes(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        self.inner.subscribe_changes(table).await
    }
}

async fn runtime_on_slow(started: Arc<Notify>) -> Runtime {
    let config = ConfigSources::new()
        .env([
            ("TRUSTSTREAM_DATABASE__TYPE", "slow"),
            ("TRUSTSTREAM_DATABASE__DELAY_MS", "400"),
            // Not about storage: keep files out of the working directory.
            ("TRUSTSTREAM_STORAGE__TYPE", "memory"),
        ])
        .load()
        .expect("config loads");
    Runtime::builder()
        .register_database("slow", move |cfg, ()| {
            let started = started.clone();
            async move {
                let c: SlowConfig = truststream_core::parse_config("slow", cfg)?;
                Ok(Arc::new(Slow {
                    inner: MemoryDatabase::new(),
                    delay: Duration::from_millis(c.delay_ms),
                    healthy: c.healthy,
                    started,
                }) as Arc<dyn Database>)
            }
        })
        .config(config)
        .build()
        .await
        .expect("runtime builds")
}

fn row(v: serde_json::Value) -> Row {
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("test rows are objects"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_call_finishes_on_old_provider_new_calls_use_new_one() {
    let started = Arc::new(Notify::new());
    let rt = Arc::new(runtime_on_slow(started.clone()).await);
    let db = rt.db();
    assert_eq!(db.info().name, "slow");
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("name")),
    )
    .await
    .unwrap();
    db.create("agents", row(json!({"id": "a1", "name": "old"})))
        .await
        .unwrap();

    // A call in flight on the old provider.
    let rt2 = rt.clone();
    let in_flight = tokio::spawn(async move { rt2.db().read("agents", &Query::new()).await });
    started.notified().await;

    let old = rt.switch_database("memory", json!({})).await.unwrap();
    assert_eq!(old.info().name, "slow");
    assert_eq!(rt.db().info().name, "memory");
    assert_eq!(rt.config().section(Interface::Database).kind(), "memory");

    // New calls go to the new (empty) provider.
    let e = rt.db().read("agents", &Query::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // The old call completes, with the old provider's data.
    assert!(
        !in_flight.is_finished(),
        "the slow read must still be running after the switch"
    );
    let rows = in_flight.await.unwrap().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_or_unbuildable_candidates_are_refused() {
    let rt = runtime_on_slow(Arc::new(Notify::new())).await;
    let before = rt.db();

    let e = rt
        .switch_database("slow", json!({"delay_ms": 1, "healthy": false}))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("refusing to switch database"), "{e}");
    assert!(e.message().contains("disk on fire"), "{e}");
    assert!(
        Arc::ptr_eq(&before, &rt.db()),
        "the current provider must stay"
    );

    let e = rt.switch_database("oracle", json!({})).await.err().unwrap();
    assert!(e.message().contains("known types: memory, "), "{e}");
    assert!(e.message().contains(", slow"), "{e}");
    let e = rt.switch_database("slow", json!({})).await.err().unwrap();
    assert!(e.message().contains("`database.delay_ms`"), "{e}");
    let e = rt
        .switch_database("memory", json!([1]))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(Arc::ptr_eq(&before, &rt.db()));
    assert_eq!(rt.config().section(Interface::Database).kind(), "slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_and_realtime_switch_too() {
    // The default storage is files: keep them in a temporary directory.
    let root = tempfile::tempdir().unwrap();
    let sources = ConfigSources::new().env([
        (
            "TRUSTSTREAM_STORAGE__ROOT".to_string(),
            root.path().display().to_string(),
        ),
        // The default database is a SQLite file: keep it there too.
        (
            "TRUSTSTREAM_DATABASE__TYPE".to_string(),
            "memory".to_string(),
        ),
    ]);
    let rt = Runtime::builder()
        .config(sources.load().unwrap())
        .build()
        .await
        .unwrap();
    rt.storage().create_bucket("before").await.unwrap();
    let old = rt
        .switch_storage(
            "memory",
            json!({"buckets": ["after"], "max_object_size": 10}),
        )
        .await
        .unwrap();
    assert_eq!(old.list_buckets().await.unwrap()[0].name, "before");
    let now = rt.storage().list_buckets().await.unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].name, "after");
    assert_eq!(
        rt.config().section(Interface::Storage).settings()["max_object_size"],
        10
    );

    let e = rt
        .switch_storage("memory", json!({"signing_secret": "too-short"}))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!e.to_string().contains("too-short"), "secret leaked: {e}");
    assert_eq!(rt.storage().list_buckets().await.unwrap()[0].name, "after");

    let old_rt = rt.switch_realtime("memory", json!({})).await.unwrap();
    assert!(!Arc::ptr_eq(&old_rt, &rt.realtime()));
    let report = rt.check().await;
    assert!(report.is_ok(), "{report}");
    let text = report.to_string();
    assert!(text.contains("database: memory 0.1.0"), "{text}");
    assert!(text.contains("auth: none"), "{text}");
    assert!(text.contains("  max_object_size: 10"), "{text}");
}
