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
    around_database, around_storage, Access, Around, Chain, DatabaseLayer, Interface, LayerDeps,
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

/// Logs `name` when a call goes through it, and again when it ends.
struct Tag {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Around for Tag {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.log.lock().unwrap().push(format!("{} in", self.name));
            let result = next.run().await;
            self.log.lock().unwrap().push(format!("{} out", self.name));
            result
        })
    }
}

fn tags(log: &Arc<Mutex<Vec<String>>>, names: &[&'static str]) -> Vec<Arc<dyn Around>> {
    names
        .iter()
        .map(|&name| {
            Arc::new(Tag {
                name,
                log: Arc::clone(log),
            }) as Arc<dyn Around>
        })
        .collect()
}

#[tokio::test]
async fn a_chain_runs_its_layers_as_if_wrapped_one_by_one() {
    let inner: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    agents(&*inner).await;

    // The same order in and out as the layers wrapped one by one.
    let log = Arc::new(Mutex::new(Vec::new()));
    let chained = around_database(
        Arc::clone(&inner),
        Arc::new(Chain::new(tags(&log, &["a", "b", "c"]))),
    );
    chained
        .create("agents", row(json!({"id": "x", "name": "X"})))
        .await
        .unwrap();
    let by_chain = std::mem::take(&mut *log.lock().unwrap());
    let nested = tags(&log, &["a", "b", "c"])
        .into_iter()
        .rev()
        .fold(Arc::clone(&inner), around_database);
    assert_eq!(
        nested.get("agents", &json!("x")).await.unwrap().unwrap()["name"],
        "X"
    );
    let one_by_one = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(
        by_chain,
        ["a in", "b in", "c in", "c out", "b out", "a out"]
    );
    assert_eq!(by_chain, one_by_one);

    // An outer layer that may run the call again gets the arguments back
    // for every attempt, though the layer below it in the chain runs each
    // attempt with `Next::run`: the row of a `create` that certainly
    // changed nothing (failed below the chain) is intact on the third
    // attempt.
    let f = flaky(2, true);
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut repeat_then_tag: Vec<Arc<dyn Around>> = vec![Arc::new(Repeat)];
    repeat_then_tag.extend(tags(&log, &["t"]));
    let db = around_database(
        around_database(Arc::clone(&inner), Arc::clone(&f)),
        Arc::new(Chain::new(repeat_then_tag)),
    );
    let stored = db
        .create("agents", row(json!({"id": "c2", "name": "C2"})))
        .await
        .unwrap();
    assert_eq!(stored["name"], "C2");
    assert_eq!(*f.attempts.lock().unwrap(), 3);
    assert_eq!(log.lock().unwrap().len(), 6);
    // An unknown outcome is still not repeated.
    let f = flaky(1, false);
    let mut repeat_then_tag: Vec<Arc<dyn Around>> = vec![Arc::new(Repeat)];
    repeat_then_tag.extend(tags(&log, &["t"]));
    let db = around_database(
        around_database(Arc::clone(&inner), Arc::clone(&f)),
        Arc::new(Chain::new(repeat_then_tag)),
    );
    let e = db
        .create("agents", row(json!({"id": "c3", "name": "C3"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(*f.attempts.lock().unwrap(), 1);

    // A chain inside a chain, and an empty one, run the same way.
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut outer = tags(&log, &["a"]);
    outer.push(Arc::new(Chain::new(tags(&log, &["b", "c"]))));
    outer.push(Arc::new(Chain::new(Vec::new())));
    let db = around_database(Arc::clone(&inner), Arc::new(Chain::new(outer)));
    assert!(db.get("agents", &json!("x")).await.unwrap().is_some());
    assert_eq!(
        *log.lock().unwrap(),
        ["a in", "b in", "c in", "c out", "b out", "a out"]
    );

    // A layer that answers without running the rest is still caught.
    let db = around_database(
        Arc::clone(&inner),
        Arc::new(Chain::new(vec![Arc::new(Liar) as Arc<dyn Around>])),
    );
    let e = db.get("agents", &json!("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
}

/// Answers `Ok` without running the call: a layer bug.
struct Liar;

impl Around for Liar {
    fn around<'a>(&'a self, _op: Op<'a>, _next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// A configured generic layer: `Tag` with its name, for a stack.
struct TagSpec {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    /// Providers it was made for, as `around` was told.
    made_for: Arc<Mutex<Vec<&'static str>>>,
}

#[async_trait]
impl LayerSpec for TagSpec {
    fn name(&self) -> &'static str {
        self.name
    }
    fn describe(&self) -> String {
        String::new()
    }
    fn around(&self, _interface: Interface, provider: &'static str) -> Option<Arc<dyn Around>> {
        self.made_for.lock().unwrap().push(provider);
        Some(Arc::new(Tag {
            name: self.name,
            log: Arc::clone(&self.log),
        }))
    }
    async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        // Not called by a stack (it uses `around`): marked if it were.
        self.made_for.lock().unwrap().push("wrap_database");
        let layer = Arc::new(Tag {
            name: self.name,
            log: Arc::clone(&self.log),
        });
        Ok(around_database(inner, layer))
    }
}

/// An interface layer that logs the `get`s through it.
struct LogGets(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl DatabaseLayer for LogGets {
    async fn get(&self, next: &dyn Database, table: &str, id: &Value) -> Result<Option<Row>> {
        self.0.lock().unwrap().push("cache in".into());
        let got = next.get(table, id).await;
        self.0.lock().unwrap().push("cache out".into());
        got
    }
}

struct LogGetsSpec(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl LayerSpec for LogGetsSpec {
    fn name(&self) -> &'static str {
        "cache"
    }
    fn describe(&self) -> String {
        String::new()
    }
    async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        Ok(Arc::new(LayeredDatabase::new(
            inner,
            Arc::new(LogGets(Arc::clone(&self.0))),
        )))
    }
}

#[tokio::test]
async fn a_stack_runs_consecutive_generic_layers_as_one_chain_in_rank_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let made_for = Arc::new(Mutex::new(Vec::new()));
    let mut reg = LayerRegistry::new();
    for (name, rank) in [
        ("metrics", 100),
        ("retry", 400),
        ("limit", 600),
        ("timeout", 700),
    ] {
        let (log, made_for) = (Arc::clone(&log), Arc::clone(&made_for));
        reg.register(name, rank, move |_, _| {
            Ok(Arc::new(TagSpec {
                name,
                log: Arc::clone(&log),
                made_for: Arc::clone(&made_for),
            }) as Arc<dyn LayerSpec>)
        });
    }
    let cache_log = Arc::clone(&log);
    reg.register("cache", 200, move |_, _| {
        Ok(Arc::new(LogGetsSpec(Arc::clone(&cache_log))) as Arc<dyn LayerSpec>)
    });
    let config =
        json!({"timeout": true, "cache": true, "retry": true, "metrics": true, "limit": true});
    let stack = reg
        .stack(
            Interface::Database,
            config.as_object().unwrap(),
            &LayerDeps::default(),
        )
        .unwrap();
    let inner: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    agents(&*inner).await;
    let db = stack.wrap_database(Arc::clone(&inner)).await.unwrap();
    assert_eq!(db.info().name, "memory");
    // Every generic layer was made through `around`, for the provider
    // below the stack (the cache between them splits them into two).
    assert_eq!(*made_for.lock().unwrap(), ["memory"; 4]);
    log.lock().unwrap().clear();
    assert!(db.get("agents", &json!("nobody")).await.unwrap().is_none());
    assert_eq!(
        *log.lock().unwrap(),
        [
            "metrics in",
            "cache in",
            "retry in",
            "limit in",
            "timeout in",
            "timeout out",
            "limit out",
            "retry out",
            "cache out",
            "metrics out"
        ]
    );
}

/// Records whether each call's rest of the stack failed.
#[derive(Default)]
struct SeesErrors(Mutex<Vec<bool>>);

impl Around for SeesErrors {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let result = next.run().await;
            self.0.lock().unwrap().push(result.is_err());
            result
        })
    }
}

#[tokio::test]
async fn a_chain_hands_a_health_refusal_up_as_nested_wrappers_do() {
    let inner: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    // Wrapped one by one, the refusal below becomes an unhealthy report
    // and the layer above sees `Ok` (a retry would not repeat the probe).
    let above = Arc::new(SeesErrors::default());
    let nested = around_database(
        around_database(Arc::clone(&inner), Arc::new(Refuse)),
        Arc::clone(&above),
    );
    let by_nesting = nested.health().await;
    assert!(!by_nesting.is_healthy());
    assert_eq!(*above.0.lock().unwrap(), [false]);

    let above = Arc::new(SeesErrors::default());
    let chained = around_database(
        Arc::clone(&inner),
        Arc::new(Chain::new(vec![
            Arc::clone(&above) as Arc<dyn Around>,
            Arc::new(Refuse),
        ])),
    );
    let by_chain = chained.health().await;
    assert!(!by_chain.is_healthy());
    assert_eq!(by_chain.message, by_nesting.message);
    assert_eq!(*above.0.lock().unwrap(), [false]);

    // A healthy provider under a chain reads healthy.
    let above = Arc::new(SeesErrors::default());
    let chained = around_database(
        inner,
        Arc::new(Chain::new(vec![
            Arc::clone(&above) as Arc<dyn Around>,
            Arc::new(SeesErrors::default()),
        ])),
    );
    assert!(chained.health().await.is_healthy());
    assert_eq!(*above.0.lock().unwrap(), [false]);
}
