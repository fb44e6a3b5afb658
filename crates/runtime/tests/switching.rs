//! Run-time switching: in-flight calls finish on the old provider, new calls
//! go to the new one, unhealthy or unbuildable candidates are refused, the
//! providers built on a switched one are rebuilt with it, concurrent switches
//! keep providers and configuration agreeing, and a drain waits for the
//! calls still running on the old providers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::Notify;
use truststream_core::{ErrorKind, Health, ProviderInfo};
#[cfg(feature = "auth-jwt")]
use truststream_core_auth::SignUp;
use truststream_core_db::{ColumnDef, Database, DbResult, Query, Row, TableSchema, Value};
use truststream_core_realtime::{handler, ChangeSpec, Realtime, RowChange, Subscription};
use truststream_db_memory::MemoryDatabase;
use truststream_runtime::layer::{DatabaseLayer, LayeredDatabase};
use truststream_runtime::{ConfigSources, Interface, Runtime};

/// Over a memory database: reads wait `delay` (announcing their start),
/// health is whatever the configuration says (and, when `gated`, waits for
/// the test to open the gate), `get("tag", ..)` returns the configured
/// `tag`, and the provider is named `slow`. Every other method is the
/// memory database's (the layer mechanism forwards them).
struct Slow {
    delay: Duration,
    healthy: bool,
    tag: u64,
    password: Option<String>,
    gate: Option<Arc<Gate>>,
    started: Arc<Notify>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowConfig {
    delay_ms: u64,
    #[serde(default = "yes")]
    healthy: bool,
    #[serde(default)]
    tag: u64,
    #[serde(default)]
    gated: bool,
    /// Echoed by an unhealthy health check (as a careless driver might).
    #[serde(default)]
    password: Option<String>,
}

/// Every `slow` database built in this test process (nextest runs each
/// test in its own process).
static BUILT: std::sync::Mutex<Vec<Arc<dyn Database>>> = std::sync::Mutex::new(Vec::new());

/// Holds a gated provider's health check until the test opens it.
#[derive(Default)]
struct Gate {
    entered: Notify,
    open: Notify,
}

fn yes() -> bool {
    true
}

#[async_trait]
impl DatabaseLayer for Slow {
    fn info(&self, _next: &dyn Database) -> ProviderInfo {
        ProviderInfo {
            name: "slow",
            version: "0.0.0",
        }
    }
    async fn health(&self, _next: &dyn Database) -> Health {
        if let Some(gate) = &self.gate {
            gate.entered.notify_one();
            gate.open.notified().await;
        }
        if self.healthy {
            Health::healthy(Duration::from_micros(5))
        } else if let Some(pw) = &self.password {
            Health::unhealthy(
                Duration::from_micros(5),
                format!("disk on fire (connected as app:{pw})"),
            )
        } else {
            Health::unhealthy(Duration::from_micros(5), "disk on fire")
        }
    }
    async fn read(&self, next: &dyn Database, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        self.started.notify_one();
        tokio::time::sleep(self.delay).await;
        next.read(table, query).await
    }
    async fn get(&self, next: &dyn Database, table: &str, id: &Value) -> DbResult<Option<Row>> {
        if table == "tag" {
            return Ok(Some(row(json!({ "tag": self.tag }))));
        }
        next.get(table, id).await
    }
}

async fn runtime_on_slow(started: Arc<Notify>) -> Runtime {
    runtime_with(started, Arc::new(Gate::default()), "").await
}

/// A runtime on the `slow` database (400 ms reads), storage in memory, and
/// `toml` on top; gated `slow` providers wait on `gate`.
async fn runtime_with(started: Arc<Notify>, gate: Arc<Gate>, toml: &str) -> Runtime {
    let config = ConfigSources::new()
        .toml_str(toml)
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
            let gate = gate.clone();
            async move {
                let c: SlowConfig = truststream_core::parse_config("slow", cfg)?;
                let slow = Slow {
                    delay: Duration::from_millis(c.delay_ms),
                    healthy: c.healthy,
                    tag: c.tag,
                    password: c.password,
                    gate: c.gated.then_some(gate),
                    started,
                };
                let built: Arc<dyn Database> = Arc::new(LayeredDatabase::new(
                    Arc::new(MemoryDatabase::new()),
                    Arc::new(slow),
                ));
                BUILT
                    .lock()
                    .expect("the list of built databases")
                    .push(built.clone());
                Ok(built)
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
    let old_db = old.database().expect("the database was replaced");
    assert_eq!(old_db.provider().info().name, "slow");
    assert_eq!(old_db.kind(), "slow");
    assert_eq!(old_db.calls_in_flight(), 1, "the slow read");
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
    assert!(e.message().contains("known types: none, memory, "), "{e}");
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
    assert_eq!(old.replaced(), [Interface::Storage]);
    let old = old.storage().expect("storage was replaced").provider();
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
    assert_eq!(old_rt.replaced(), [Interface::Realtime]);
    let old_rt = old_rt.realtime().expect("realtime was replaced").provider();
    assert!(!Arc::ptr_eq(old_rt, &rt.realtime()));
    let report = rt.check().await;
    assert!(report.is_ok(), "{report}");
    let text = report.to_string();
    assert!(text.contains("database: memory 0.1.0"), "{text}");
    assert!(text.contains("auth: none"), "{text}");
    assert!(text.contains("  max_object_size: 10"), "{text}");
}

/// An auth section for `jwt` with cheap hashing (tests only).
const JWT_AUTH: &str = r#"
[default.auth]
type = "jwt"
jwt_secret = "switching test secret of at least 32 bytes"
argon2 = { memory_kib = 8, iterations = 1, parallelism = 1 }
"#;

/// Rows changed on `table`, as the realtime provider reports them.
async fn watch(
    realtime: &dyn Realtime,
    table: &str,
) -> (
    Subscription,
    tokio::sync::mpsc::UnboundedReceiver<RowChange>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = realtime
        .subscribe_changes(
            ChangeSpec::table(table),
            handler(move |c: RowChange| {
                let _ = tx.send(c);
            }),
        )
        .await
        .expect("subscribe to row changes");
    (sub, rx)
}

async fn agents_table(db: &dyn Database) {
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("name")),
    )
    .await
    .expect("create agents");
}

/// Creates `agents/id` in the current database and requires the current
/// realtime provider to report it: the change feed follows the database.
async fn realtime_follows_database(rt: &Runtime, id: &str) {
    let (_sub, mut rx) = watch(rt.realtime().as_ref(), "agents").await;
    rt.db()
        .create("agents", row(json!({"id": id, "name": "x"})))
        .await
        .expect("create an agent");
    let change = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no change for {id}: realtime is not on the current database"))
        .expect("feed open");
    assert_eq!(
        change.new.as_ref().map(|r| r["id"].clone()),
        Some(json!(id))
    );
}

#[cfg(feature = "auth-jwt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_switch_rewires_auth_and_realtime() {
    let rt = runtime_with(Arc::new(Notify::new()), Arc::default(), JWT_AUTH).await;
    let auth = rt.auth().expect("jwt configured");
    auth.sign_up(SignUp::new("ada@example.com", "correct horse battery"))
        .await
        .unwrap();
    let realtime_before = rt.realtime();

    let old = rt.switch_database("memory", json!({})).await.unwrap();
    assert_eq!(
        old.replaced(),
        [Interface::Database, Interface::Auth, Interface::Realtime]
    );
    assert!(Arc::ptr_eq(
        old.realtime().expect("realtime retired").provider(),
        &realtime_before
    ));
    assert!(old.auth().is_some());

    // Auth keeps its users in the new database: the address is free there,
    // and the new user's row is in the new database.
    let auth = rt.auth().expect("still jwt");
    auth.sign_up(SignUp::new("ada@example.com", "correct horse battery"))
        .await
        .expect("auth is on the new (empty) database");
    let users = rt.db().read("auth_users", &Query::new()).await.unwrap();
    assert_eq!(users.len(), 1);
    // Realtime's row change feed follows the new database.
    assert!(!Arc::ptr_eq(&realtime_before, &rt.realtime()));
    agents_table(rt.db().as_ref()).await;
    realtime_follows_database(&rt, "a1").await;
    assert_eq!(rt.config().section(Interface::Auth).kind(), "jwt");
}

#[cfg(feature = "realtime-ws")]
#[tokio::test]
async fn a_refused_candidate_database_is_disconnected_and_the_current_one_is_not() {
    let rt = runtime_on_slow(Arc::new(Notify::new())).await;
    rt.switch_database("slow", json!({"delay_ms": 1, "healthy": false}))
        .await
        .err()
        .unwrap();
    let candidate = BUILT
        .lock()
        .expect("the list of built databases")
        .last()
        .cloned()
        .unwrap();
    let e = candidate.read("agents", &Query::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "disconnected: {e}");
    // A candidate that could not be built leaves the current one connected.
    rt.switch_database("slow", json!({})).await.err().unwrap();
    assert!(rt.db().health().await.is_healthy());
    agents_table(rt.db().as_ref()).await;
    assert!(rt.db().read("agents", &Query::new()).await.is_ok());
}

#[tokio::test]
async fn a_refused_switch_does_not_repeat_a_secret_the_health_check_echoes() {
    let rt = runtime_on_slow(Arc::new(Notify::new())).await;
    let e = rt
        .switch_database(
            "slow",
            json!({"delay_ms": 1, "healthy": false, "password": "hunter2-pw"}),
        )
        .await
        .err()
        .unwrap();
    assert!(e.message().contains("disk on fire"), "{e}");
    assert!(!e.display_chain().to_string().contains("hunter2-pw"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_that_cannot_be_rebuilt_refuses_the_switch_naming_it() {
    // A hub on a fixed port cannot be rebuilt while the old one listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = format!("[default.realtime]\ntype = \"ws\"\nlisten = \"127.0.0.1:{port}\"\n");
    let rt = runtime_with(Arc::new(Notify::new()), Arc::default(), &toml).await;
    let (db, realtime) = (rt.db(), rt.realtime());

    let e = rt
        .switch_database("memory", json!({}))
        .await
        .expect_err("the hub cannot be rebuilt: the switch is refused");
    let msg = e.message();
    assert!(msg.contains("refusing to switch database"), "{msg}");
    assert!(msg.contains("the realtime provider \"ws\""), "{msg}");
    assert!(msg.contains("the current providers stay in place"), "{msg}");
    // Nothing changed.
    assert!(Arc::ptr_eq(&db, &rt.db()));
    assert!(Arc::ptr_eq(&realtime, &rt.realtime()));
    assert_eq!(rt.config().section(Interface::Database).kind(), "slow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_waits_for_a_concurrent_one_and_builds_on_its_result() {
    let gate = Arc::new(Gate::default());
    let rt = Arc::new(runtime_with(Arc::new(Notify::new()), gate.clone(), "").await);

    // A database switch, held in the new provider's health check...
    let rt1 = rt.clone();
    let db_switch = tokio::spawn(async move {
        rt1.switch_database("slow", json!({"delay_ms": 1, "tag": 7, "gated": true}))
            .await
            .map(drop)
    });
    gate.entered.notified().await;
    // ...while realtime is switched: it must end up on the new database.
    let rt2 = rt.clone();
    let rt_switch =
        tokio::spawn(async move { rt2.switch_realtime("memory", json!({})).await.map(drop) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.open.notify_one();
    db_switch.await.unwrap().unwrap();
    rt_switch.await.unwrap().unwrap();

    assert_eq!(
        rt.db().get("tag", &json!(0)).await.unwrap().unwrap()["tag"],
        7
    );
    assert_eq!(
        rt.config().section(Interface::Database).settings()["tag"],
        7
    );
    agents_table(rt.db().as_ref()).await;
    realtime_follows_database(&rt, "a1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_switches_leave_provider_and_config_agreeing() {
    let rt = Arc::new(runtime_on_slow(Arc::new(Notify::new())).await);
    // A reader never sees a provider with another provider's configuration.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (rt, done) = (rt.clone(), done.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let (services, config) = rt.snapshot();
                let live = services.db.get("tag", &json!(0)).await.unwrap().unwrap()["tag"].clone();
                // No `tag` configured is the provider's default, 0.
                let configured = config.section(Interface::Database).settings().get("tag");
                assert_eq!(live, *configured.unwrap_or(&json!(0)));
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    for round in 0..200u64 {
        let switch = |tag: u64| {
            let rt = rt.clone();
            tokio::spawn(async move {
                rt.switch_database("slow", json!({"delay_ms": 1, "tag": tag}))
                    .await
                    .map(drop)
            })
        };
        let (a, b) = (switch(2 * round), switch(2 * round + 1));
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        let live = rt.db().get("tag", &json!(0)).await.unwrap().unwrap()["tag"].clone();
        let configured = rt.config().section(Interface::Database).settings()["tag"].clone();
        assert_eq!(live, configured, "round {round}");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_calls_in_flight_then_disconnects_the_old_database() {
    let started = Arc::new(Notify::new());
    let rt = Arc::new(runtime_on_slow(started.clone()).await);
    agents_table(rt.db().as_ref()).await;
    let rt2 = rt.clone();
    let in_flight = tokio::spawn(async move { rt2.db().read("agents", &Query::new()).await });
    started.notified().await;
    let old_db = rt.db();

    let switch = rt.switch_database("memory", json!({})).await.unwrap();
    assert_eq!(switch.calls_in_flight(), 1);
    // A deadline too short for the 400 ms read: Timeout, saying what runs.
    let e = switch.close(Duration::from_millis(20)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        e.message()
            .contains("1 on the old database provider \"slow\""),
        "{e}"
    );
    // Nothing was closed: the old database still answers.
    assert!(old_db.health().await.is_healthy());

    switch.close(Duration::from_secs(30)).await.unwrap();
    // The read finished (on the old database, with its answer) before the
    // old database was disconnected.
    assert_eq!(switch.calls_in_flight(), 0);
    let rows = in_flight
        .await
        .unwrap()
        .expect("the in-flight read succeeded");
    assert!(rows.is_empty());
    let e = old_db.read("agents", &Query::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "closed: {e}");
    // The new database is untouched.
    assert!(rt.db().health().await.is_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_with_nothing_in_flight_returns_at_once() {
    let rt = runtime_on_slow(Arc::new(Notify::new())).await;
    let switch = rt.switch_storage("memory", json!({})).await.unwrap();
    assert_eq!(switch.calls_in_flight(), 0);
    switch.drain(Duration::ZERO).await.unwrap();
    switch.close(Duration::ZERO).await.unwrap();
}

#[cfg(feature = "auth-jwt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_switches_and_realtime_is_rebuilt_with_it() {
    let rt = runtime_with(Arc::new(Notify::new()), Arc::default(), JWT_AUTH).await;
    let session = rt
        .auth()
        .unwrap()
        .sign_up(SignUp::new("ada@example.com", "correct horse battery"))
        .await
        .unwrap();
    let realtime_before = rt.realtime();

    // Another secret: tokens of the old provider are not valid any more.
    let switch = rt
        .switch_auth(
            "jwt",
            json!({
                "jwt_secret": "another switching secret of 32 bytes",
                "argon2": {"memory_kib": 8, "iterations": 1, "parallelism": 1}
            }),
        )
        .await
        .unwrap();
    assert_eq!(switch.replaced(), [Interface::Auth, Interface::Realtime]);
    assert!(switch.database().is_none());
    let old = switch.auth().expect("the old auth provider");
    old.provider()
        .validate_token(session.access_token.expose())
        .await
        .expect("valid on the old provider");
    let e = rt
        .auth()
        .unwrap()
        .validate_token(session.access_token.expose())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(!Arc::ptr_eq(&realtime_before, &rt.realtime()));
    assert_eq!(
        rt.config().section(Interface::Auth).settings()["jwt_secret"],
        "another switching secret of 32 bytes"
    );

    // `none` removes auth; realtime is rebuilt without it.
    let switch = rt.switch_auth("none", json!({})).await.unwrap();
    assert!(switch.auth().is_some());
    assert!(rt.auth().is_none());
    assert_eq!(rt.config().section(Interface::Auth).kind(), "none");
    assert!(rt.check().await.to_string().contains("auth: none"));

    // An auth provider that cannot be built leaves everything in place.
    let realtime = rt.realtime();
    let e = rt.switch_auth("jwt", json!({})).await.unwrap_err();
    assert!(e.message().contains("refusing to switch auth"), "{e}");
    assert!(e.message().contains("auth.jwt_secret"), "{e}");
    assert!(rt.auth().is_none());
    assert!(Arc::ptr_eq(&realtime, &rt.realtime()));
}

/// A realtime provider (memory, in a layer) that counts its closes and
/// reports the health the static `FRAGILE_HEALTHY` says at build time.
struct Fragile {
    healthy: bool,
    closes: Arc<std::sync::atomic::AtomicUsize>,
}

static FRAGILE_HEALTHY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

#[async_trait]
impl truststream_runtime::layer::RealtimeLayer for Fragile {
    async fn health(&self, _next: &dyn Realtime) -> Health {
        if self.healthy {
            Health::healthy(Duration::from_micros(5))
        } else {
            Health::unhealthy(Duration::from_micros(5), "fragile")
        }
    }
    async fn close(&self, next: &dyn Realtime) -> truststream_core::Result<()> {
        self.closes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        next.close().await
    }
}

/// A runtime on memory providers with the `fragile` realtime provider;
/// `closes[i]` counts the closes of the i-th one built.
async fn runtime_on_fragile() -> (
    Runtime,
    Arc<std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicUsize>>>>,
) {
    let closes: Arc<std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicUsize>>>> = Arc::default();
    let config = ConfigSources::new()
        .env([
            ("TRUSTSTREAM_DATABASE__TYPE", "memory"),
            ("TRUSTSTREAM_STORAGE__TYPE", "memory"),
            ("TRUSTSTREAM_REALTIME__TYPE", "fragile"),
        ])
        .load()
        .expect("config loads");
    let all = closes.clone();
    let rt = Runtime::builder()
        .register_realtime("fragile", move |_cfg, _deps| {
            let all = all.clone();
            async move {
                let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                all.lock().expect("the counters").push(counter.clone());
                let layer = Fragile {
                    healthy: FRAGILE_HEALTHY.load(std::sync::atomic::Ordering::SeqCst),
                    closes: counter,
                };
                Ok(Arc::new(truststream_runtime::layer::LayeredRealtime::new(
                    Arc::new(truststream_realtime_memory::MemoryRealtime::new()),
                    Arc::new(layer),
                )) as Arc<dyn Realtime>)
            }
        })
        .config(config)
        .build()
        .await
        .expect("runtime builds");
    (rt, closes)
}

fn closes_of(counters: &std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicUsize>>>) -> Vec<usize> {
    counters
        .lock()
        .expect("the counters")
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::SeqCst))
        .collect()
}

/// A switch refused because a dependent rebuilt for it is unhealthy closes
/// that candidate (it was built for nothing) and leaves the current one
/// open; an accepted switch's `close` closes the retired realtime provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_of_a_refused_switch_are_closed_and_retired_ones_close_with_the_switch() {
    let (rt, closes) = runtime_on_fragile().await;
    assert_eq!(closes_of(&closes), [0], "the current realtime provider");

    FRAGILE_HEALTHY.store(false, std::sync::atomic::Ordering::SeqCst);
    let e = rt
        .switch_database("memory", json!({}))
        .await
        .expect_err("the rebuilt realtime provider is unhealthy");
    assert!(e.message().contains("realtime"), "{e}");
    assert_eq!(
        closes_of(&closes),
        [0, 1],
        "the unhealthy candidate is closed, the current provider is not"
    );

    FRAGILE_HEALTHY.store(true, std::sync::atomic::Ordering::SeqCst);
    let switch = rt.switch_realtime("fragile", json!({})).await.unwrap();
    assert_eq!(
        closes_of(&closes),
        [0, 1, 0],
        "nothing closed before close()"
    );
    switch.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        closes_of(&closes),
        [1, 1, 0],
        "the retired provider is closed, the new one is not"
    );
    rt.shutdown().await.unwrap();
    assert_eq!(closes_of(&closes), [1, 1, 1]);
}
