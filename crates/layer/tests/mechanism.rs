//! The layer mechanism over real in-memory providers: values pass through,
//! ops describe the calls, repeats follow `Op::may_repeat`, and interface
//! layers override single methods.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::json;
use truststream_core::{BoxFuture, Error, ErrorKind, Result};
use truststream_core_db::{ColumnDef, Database, Row, TableSchema, Value};
use truststream_core_storage::{UploadOptions, WriteCondition};
use truststream_db_memory::MemoryDatabase;
use truststream_layer::{
    around_database, around_storage, Access, Around, DatabaseLayer, Interface, LayerDeps,
    LayerRegistry, LayerSpec, LayeredDatabase, Next, Op,
};
use truststream_storage_memory::MemoryStorage;

/// Records every op it sees as `interface.method target access idempotent`.
#[derive(Default)]
struct Record(Mutex<Vec<String>>);

impl Around for Record {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        self.0.lock().unwrap().push(format!(
            "{}.{} {} {} {}",
            op.interface,
            op.method,
            op.target.unwrap_or("-"),
            op.access.as_str(),
            op.idempotent
        ));
        assert_eq!(op.provider, "memory");
        next.run()
    }
}

/// Fails the first `fail` attempts below it with a retryable error, then
/// lets calls through; counts attempts.
struct Flaky {
    fail: Mutex<u32>,
    attempts: Mutex<u32>,
    unapplied: bool,
}

impl Around for Flaky {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            *self.attempts.lock().unwrap() += 1;
            {
                let mut fail = self.fail.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    let e = Error::unavailable("injected");
                    return Err(if self.unapplied { e.unapplied() } else { e });
                }
            }
            next.run().await
        })
    }
}

/// Repeats the call below while `Op::may_repeat` allows, at most 5 times.
struct Repeat;

impl Around for Repeat {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for _ in 0..4 {
                match next.run_again_later().await {
                    Err(e) if op.may_repeat(&e) => continue,
                    other => return other,
                }
            }
            next.run().await
        })
    }
}

fn flaky(fail: u32, unapplied: bool) -> Arc<Flaky> {
    Arc::new(Flaky {
        fail: Mutex::new(fail),
        attempts: Mutex::new(0),
        unapplied,
    })
}

async fn agents(db: &dyn Database) {
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("name")),
    )
    .await
    .unwrap();
}

fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}

#[tokio::test]
async fn a_generic_layer_sees_every_call_and_values_pass_through() {
    let record = Arc::new(Record::default());
    let db = around_database(Arc::new(MemoryDatabase::new()), Arc::clone(&record));
    agents(&*db).await;
    let stored = db
        .create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    assert_eq!(stored["name"], "Ada");
    let got = db.get("agents", &json!("a1")).await.unwrap().unwrap();
    assert_eq!(got, stored);
    assert!(db.get("agents", &json!("nope")).await.unwrap().is_none());
    let e = db
        .create("agents", row(json!({"id": "a1", "name": "again"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(db.delete("agents", &json!("a1")).await.unwrap());
    assert_eq!(db.info().name, "memory");
    assert!(db.capabilities().transactions);
    assert_eq!(
        *record.0.lock().unwrap(),
        vec![
            "database.create_table agents schema false",
            "database.create agents write false",
            "database.get agents read true",
            "database.get agents read true",
            "database.create agents write false",
            "database.delete agents write true",
        ]
    );
}

#[tokio::test]
async fn describe_table_goes_through_generic_and_interface_layers() {
    let record = Arc::new(Record::default());
    let db = around_database(Arc::new(MemoryDatabase::new()), Arc::clone(&record));
    agents(&*db).await;
    let schema = db.describe_table("agents").await.unwrap().unwrap();
    assert_eq!(schema.primary_key().unwrap().name, "id");
    assert!(db.describe_table("nope").await.unwrap().is_none());
    assert_eq!(
        record.0.lock().unwrap()[1..],
        [
            "database.describe_table agents read true",
            "database.describe_table nope read true",
        ]
    );
    // An interface layer that overrides nothing forwards it.
    struct Nothing;
    impl DatabaseLayer for Nothing {}
    let layered = LayeredDatabase::new(db, Arc::new(Nothing));
    assert_eq!(
        layered.describe_table("agents").await.unwrap().unwrap(),
        schema
    );
}

#[tokio::test]
async fn idempotent_calls_are_repeated_and_unknown_outcomes_are_not() {
    let inner: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    agents(&*inner).await;

    // A read is idempotent: repeated until it succeeds.
    let f = flaky(2, false);
    let db = around_database(
        around_database(Arc::clone(&inner), Arc::clone(&f)),
        Arc::new(Repeat),
    );
    assert!(db.get("agents", &json!("x")).await.unwrap().is_none());
    assert_eq!(*f.attempts.lock().unwrap(), 3);

    // A create whose outcome is unknown is never repeated.
    let f = flaky(1, false);
    let db = around_database(
        around_database(Arc::clone(&inner), Arc::clone(&f)),
        Arc::new(Repeat),
    );
    let e = db
        .create("agents", row(json!({"id": "c1", "name": "C"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(*f.attempts.lock().unwrap(), 1);

    // ... but one that certainly changed nothing is, with its row intact.
    let f = flaky(2, true);
    let db = around_database(
        around_database(Arc::clone(&inner), Arc::clone(&f)),
        Arc::new(Repeat),
    );
    let stored = db
        .create("agents", row(json!({"id": "c2", "name": "C2"})))
        .await
        .unwrap();
    assert_eq!(stored["name"], "C2");
    assert_eq!(*f.attempts.lock().unwrap(), 3);
    assert_eq!(
        inner
            .read("agents", &Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn storage_ops_say_which_uploads_may_repeat() {
    let record = Arc::new(Record::default());
    let inner = Arc::new(MemoryStorage::new());
    let store = around_storage(inner, Arc::clone(&record));
    store.create_bucket("docs").await.unwrap();
    let meta = store
        .upload(
            "docs",
            "a.txt",
            Bytes::from_static(b"hi"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, 2);
    let create_only = UploadOptions::new().condition(WriteCondition::IfNotExists);
    let e = store
        .upload("docs", "a.txt", Bytes::from_static(b"no"), &create_only)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(store.download("docs", "a.txt").await.unwrap(), "hi");
    assert_eq!(
        *record.0.lock().unwrap(),
        vec![
            "storage.create_bucket docs schema false",
            "storage.upload docs write true",
            "storage.upload docs write false",
            "storage.download docs read true",
        ]
    );
}

/// Runs the call twice with `run` (a layer bug): the second finds no
/// arguments and the caller gets `Internal`, not a wrong value.
struct RunTwice;

impl Around for RunTwice {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            next.run().await?;
            next.run().await
        })
    }
}

/// Answers `Ok` without running anything (a layer bug).
struct Skip;

impl Around for Skip {
    fn around<'a>(&'a self, _op: Op<'a>, _next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn layer_bugs_are_internal_errors_never_made_up_values() {
    let inner: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    agents(&*inner).await;
    let db = around_database(Arc::clone(&inner), Arc::new(RunTwice));
    let e = db
        .create("agents", row(json!({"id": "t", "name": "T"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(e.message().contains("after its last attempt"), "{e}");
    let db = around_database(Arc::clone(&inner), Arc::new(Skip));
    let e = db.get("agents", &json!("t")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
}

/// Overrides one method: `get` of a hidden table answers `None`.
struct HideTable(&'static str);

#[async_trait]
impl DatabaseLayer for HideTable {
    async fn get(&self, next: &dyn Database, table: &str, id: &Value) -> Result<Option<Row>> {
        if table == self.0 {
            return Ok(None);
        }
        next.get(table, id).await
    }
}

#[tokio::test]
async fn an_interface_layer_overrides_one_method_and_forwards_the_rest() {
    let db: Arc<dyn Database> = Arc::new(LayeredDatabase::new(
        Arc::new(MemoryDatabase::new()),
        Arc::new(HideTable("agents")),
    ));
    agents(&*db).await;
    db.create("agents", row(json!({"id": "h", "name": "H"})))
        .await
        .unwrap();
    assert!(db.get("agents", &json!("h")).await.unwrap().is_none());
    assert_eq!(
        db.read("agents", &Default::default()).await.unwrap().len(),
        1
    );
}

struct Named(&'static str);

#[async_trait]
impl LayerSpec for Named {
    fn name(&self) -> &'static str {
        self.0
    }
    fn describe(&self) -> String {
        String::new()
    }
    fn interfaces(&self) -> &'static [Interface] {
        &[Interface::Database]
    }
    async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        Ok(inner)
    }
}

#[test]
fn stacks_follow_rank_and_bad_keys_are_named() {
    let mut reg = LayerRegistry::new();
    reg.register("outer", 100, |_, _| {
        Ok(Arc::new(Named("outer")) as Arc<dyn LayerSpec>)
    });
    reg.register("inner", 700, |v, _| {
        if v.get("ms").is_some_and(|ms| !ms.is_u64()) {
            return Err(Error::invalid_input("ms must be a whole number"));
        }
        Ok(Arc::new(Named("inner")) as Arc<dyn LayerSpec>)
    });
    let deps = LayerDeps::default();
    let table = |v: Value| v.as_object().unwrap().clone();

    let stack = reg
        .stack(
            Interface::Database,
            &table(json!({"inner": {"ms": 5}, "outer": true})),
            &deps,
        )
        .unwrap();
    assert_eq!(stack.describe(), vec!["outer()", "inner()"]);
    let stack = reg
        .stack(
            Interface::Database,
            &table(json!({"inner": {}, "outer": false})),
            &deps,
        )
        .unwrap();
    assert_eq!(stack.describe(), vec!["inner()"]);

    let e = reg
        .stack(Interface::Database, &table(json!({"retyr": {}})), &deps)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        e.message(),
        "unknown layer database.layers.retyr; known layers: inner, outer"
    );
    let e = reg
        .stack(
            Interface::Database,
            &table(json!({"inner": {"ms": "x"}})),
            &deps,
        )
        .unwrap_err();
    assert_eq!(
        e.message(),
        "database.layers.inner: ms must be a whole number"
    );
    let e = reg
        .stack(Interface::Storage, &table(json!({"inner": {}})), &deps)
        .unwrap_err();
    assert!(
        e.message()
            .contains("does not apply to the storage interface"),
        "{e}"
    );
    let _ = Access::Read;
}

/// Refuses every call, as an open breaker or a full queue would.
struct Refuse;

impl Around for Refuse {
    fn around<'a>(&'a self, op: Op<'a>, _next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Err(Error::unavailable(format!("refused {}", op.method))) })
    }
}

#[tokio::test]
async fn health_goes_through_generic_layers_and_a_refusal_reads_unhealthy() {
    let record = Arc::new(Record::default());
    let db = around_database(Arc::new(MemoryDatabase::new()), Arc::clone(&record));
    assert!(db.health().await.is_healthy());
    assert_eq!(
        *record.0.lock().unwrap(),
        vec!["database.health - admin true"]
    );
    let db = around_database(Arc::new(MemoryDatabase::new()), Arc::new(Refuse));
    let health = db.health().await;
    assert_eq!(health.status, truststream_core::HealthStatus::Unhealthy);
    assert_eq!(
        health.message.as_deref(),
        Some("unavailable: refused health")
    );
    let store = around_storage(Arc::new(MemoryStorage::new()), Arc::new(Refuse));
    assert!(!store.health().await.is_healthy());
}
