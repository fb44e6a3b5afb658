//! Layers through the runtime: the `layers` table of a section (present,
//! absent, `true`, `false`, environment overrides, a type change), errors
//! naming the key, the stack order in `check`, calls actually going through
//! the layers (dependents included), switching keeping them, and health
//! under a deadline.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use truststream_core::{BoxFuture, Error, ErrorKind, Health, HealthStatus, Result};
use truststream_core_db::{ColumnDef, Database, Row, TableSchema};
use truststream_core_storage::Storage;
use truststream_db_memory::MemoryDatabase;
use truststream_runtime::layer::{
    around_database, around_storage, Around, DatabaseLayer, Interface as LayerInterface, LayerDeps,
    LayerSpec, LayeredDatabase, Next, Op,
};
use truststream_runtime::{
    CompatibilityReport, Config, ConfigSources, HealthReport, Interface, Registries, Runtime,
    RuntimeBuilder, Services,
};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Memory database and storage: nothing written to the working directory.
const MEMORY: &[(&str, &str)] = &[
    ("TRUSTSTREAM_DATABASE__TYPE", "memory"),
    ("TRUSTSTREAM_STORAGE__TYPE", "memory"),
];

fn load(toml: &str, extra_env: &[(&str, &str)]) -> Result<Config> {
    let mut vars = env(MEMORY);
    vars.extend(env(extra_env));
    ConfigSources::new().toml_str(toml).env(vars).load()
}

/// Counts the calls (by method) that go through it.
#[derive(Default)]
struct Calls(Mutex<Vec<String>>);

impl Calls {
    fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, method: &str) -> usize {
        self.seen().iter().filter(|m| *m == method).count()
    }
}

impl Around for Calls {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}.{}", op.interface, op.method));
        next.run()
    }
}

/// The `count` layer (rank 150): records every call of the database and
/// storage into the test's [`Calls`]; its one setting, `label`, must be a
/// string.
struct CountSpec {
    calls: Arc<Calls>,
    label: String,
}

#[async_trait]
impl LayerSpec for CountSpec {
    fn name(&self) -> &'static str {
        "count"
    }
    fn describe(&self) -> String {
        format!("label={}", self.label)
    }
    fn interfaces(&self) -> &'static [LayerInterface] {
        &[LayerInterface::Database, LayerInterface::Storage]
    }
    async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        Ok(around_database(inner, Arc::clone(&self.calls)))
    }
    async fn wrap_storage(&self, inner: Arc<dyn Storage>) -> Result<Arc<dyn Storage>> {
        Ok(around_storage(inner, Arc::clone(&self.calls)))
    }
}

/// A layer that only names itself (rank given at registration).
struct Named(&'static str, String);

#[async_trait]
impl LayerSpec for Named {
    fn name(&self) -> &'static str {
        self.0
    }
    fn describe(&self) -> String {
        self.1.clone()
    }
    async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        Ok(inner)
    }
    async fn wrap_storage(&self, inner: Arc<dyn Storage>) -> Result<Arc<dyn Storage>> {
        Ok(inner)
    }
}

fn count_parse(
    calls: &Arc<Calls>,
) -> impl Fn(serde_json::Value, &LayerDeps) -> Result<Arc<dyn LayerSpec>> + Send + Sync + 'static {
    let calls = Arc::clone(calls);
    move |v, _deps| {
        let label = match v.get("label") {
            None => "none".to_string(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err(Error::invalid_input("label: must be a string")),
        };
        Ok(Arc::new(CountSpec {
            calls: Arc::clone(&calls),
            label,
        }) as Arc<dyn LayerSpec>)
    }
}

/// The compiled-in registries plus `count` (rank 150), `outer` (rank 50)
/// and `inner` (rank 900).
fn registries(calls: &Arc<Calls>) -> Arc<Registries> {
    let mut r = Registries::compiled_in();
    r.layers.register("count", 150, count_parse(calls));
    r.layers.register("outer", 50, |v, _| {
        Ok(Arc::new(Named("outer", v.to_string())) as Arc<dyn LayerSpec>)
    });
    r.layers.register("inner", 900, |v, _| {
        Ok(Arc::new(Named("inner", v.to_string())) as Arc<dyn LayerSpec>)
    });
    Arc::new(r)
}

fn builder(calls: &Arc<Calls>, config: Config) -> RuntimeBuilder {
    Runtime::builder()
        .register_layer("count", 150, count_parse(calls))
        .config(config)
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

fn row(v: serde_json::Value) -> Row {
    v.as_object().unwrap().clone()
}

// ---- configuration ----

#[test]
fn the_layers_table_is_kept_apart_from_the_provider_settings() {
    let cfg = load(
        r#"
[default.database]
type = "memory"
[default.database.layers]
count = { label = "a" }
metrics = true
retry = false
"#,
        &[],
    )
    .unwrap();
    let db = cfg.section(Interface::Database);
    assert!(db.settings().is_empty(), "{:?}", db.settings());
    assert_eq!(
        serde_json::Value::Object(db.layers().clone()),
        json!({"count": {"label": "a"}, "metrics": true, "retry": false})
    );
    assert_eq!(db.settings_json(), json!({}));
    assert_eq!(cfg.origin("database.layers.count"), Some("inline TOML"));
    // No layers table: no layers.
    assert!(cfg.section(Interface::Storage).layers().is_empty());
    // `truststream config` shows them, under the section.
    assert_eq!(cfg.redacted()["database"]["layers"]["metrics"], true);
}

#[test]
fn environment_variables_set_layer_settings() {
    let toml = "[default.database.layers]\nretry = { attempts = 3, base_ms = 50 }\n";
    let cfg = load(
        toml,
        &[("TRUSTSTREAM_DATABASE__LAYERS__RETRY__ATTEMPTS", "5")],
    )
    .unwrap();
    let layers = cfg.section(Interface::Database).layers();
    assert_eq!(layers["retry"], json!({"attempts": 5, "base_ms": 50}));
    assert_eq!(
        cfg.origin("database.layers.retry"),
        Some("the environment (TRUSTSTREAM_* variables)")
    );
    // On and off from the environment.
    let cfg = load(toml, &[("TRUSTSTREAM_DATABASE__LAYERS__RETRY", "false")]).unwrap();
    assert_eq!(cfg.section(Interface::Database).layers()["retry"], false);
    let cfg = load("", &[("TRUSTSTREAM_STORAGE__LAYERS__METRICS", "true")]).unwrap();
    assert_eq!(cfg.section(Interface::Storage).layers()["metrics"], true);
}

/// Layers are the interface's policy, not a provider's settings: a profile
/// (or variable) that changes the type drops the settings below it and
/// keeps the layers; `name = false` turns one off.
#[test]
fn a_type_change_starts_the_settings_afresh_and_keeps_the_layers() {
    let toml = r#"
[default.storage]
type = "fs"
root = "/srv/files"
[default.storage.layers]
count = { label = "fs" }
metrics = true

[production.storage]
type = "memory"
[production.storage.layers]
metrics = false
"#;
    let cfg = ConfigSources::new()
        .toml_str(toml)
        .profile("production")
        .env(env(&[("TRUSTSTREAM_DATABASE__TYPE", "memory")]))
        .load()
        .unwrap();
    let s = cfg.section(Interface::Storage);
    assert_eq!(s.kind(), "memory");
    assert!(s.settings().is_empty(), "{:?}", s.settings());
    assert_eq!(
        serde_json::Value::Object(s.layers().clone()),
        json!({"count": {"label": "fs"}, "metrics": false})
    );
    // The same through the environment.
    let cfg = ConfigSources::new()
        .toml_str(toml)
        .env(env(&[
            ("TRUSTSTREAM_STORAGE__TYPE", "memory"),
            ("TRUSTSTREAM_DATABASE__TYPE", "memory"),
        ]))
        .load()
        .unwrap();
    let s = cfg.section(Interface::Storage);
    assert!(s.settings().is_empty(), "{:?}", s.settings());
    assert_eq!(s.layers()["metrics"], true);
}

#[test]
fn layers_that_are_not_a_table_are_refused_naming_the_key() {
    let e = load("[default.database]\ntype = \"memory\"\nlayers = 5\n", &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.message()
            .starts_with("`database.layers` (set in inline TOML)"),
        "{e}"
    );
    assert!(e.message().contains("got a number"), "{e}");
}

#[test]
fn secrets_in_layer_settings_are_redacted() {
    let cfg = load(
        r#"
[default.database.layers.composite.secondary]
type = "postgres"
url = "postgres://app:pg-secret-1@replica/app"
password = "pg-secret-2"
"#,
        &[],
    )
    .unwrap();
    let shown = format!("{} {cfg:?}", cfg.redacted());
    assert!(!shown.contains("pg-secret-1"), "{shown}");
    assert!(!shown.contains("pg-secret-2"), "{shown}");
    assert_eq!(
        cfg.redacted()["database"]["layers"]["composite"]["secondary"]["type"],
        "postgres"
    );
}

// ---- building ----

#[tokio::test]
async fn an_unknown_layer_fails_the_build_naming_the_key_and_the_known_layers() {
    let calls = Arc::new(Calls::default());
    let cfg = load("[default.database.layers]\ncuont = true\n", &[]).unwrap();
    let Err(e) = builder(&calls, cfg).build().await else {
        panic!("an unknown layer must fail the build");
    };
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let m = e.message();
    assert!(m.starts_with("unknown layer database.layers.cuont"), "{m}");
    assert!(m.contains("known layers: ") && m.contains("count"), "{m}");
    assert!(m.ends_with("(set in inline TOML)"), "{m}");

    // Checked even where no provider is configured (auth `none`).
    let cfg = load("[default.auth.layers]\ncuont = true\n", &[]).unwrap();
    let Err(e) = builder(&calls, cfg).build().await else {
        panic!("an unknown auth layer must fail the build");
    };
    assert!(
        e.message().starts_with("unknown layer auth.layers.cuont"),
        "{e}"
    );
}

#[tokio::test]
async fn a_bad_layer_value_names_the_key_without_echoing_secrets() {
    let calls = Arc::new(Calls::default());
    let cfg = load("", &[("TRUSTSTREAM_DATABASE__LAYERS__COUNT__LABEL", "7")]).unwrap();
    let Err(e) = builder(&calls, cfg).build().await else {
        panic!("a bad layer value must fail the build");
    };
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.message()
            .starts_with("database.layers.count.label: must be a string"),
        "{e}"
    );
    assert!(
        e.message()
            .ends_with("(set in the environment (TRUSTSTREAM_* variables))"),
        "{e}"
    );

    // A layer for an interface it does not apply to.
    let cfg = load("[default.realtime.layers]\ncount = true\n", &[]).unwrap();
    let Err(e) = builder(&calls, cfg).build().await else {
        panic!("a layer on the wrong interface must fail the build");
    };
    assert!(
        e.message()
            .contains("layer realtime.layers.count does not apply to the realtime interface"),
        "{e}"
    );

    // A layer's error that quotes a secret of the section is scrubbed.
    let mut r = Registries::compiled_in();
    r.layers.register("leaky", 100, |v, _| {
        Err(Error::invalid_input(format!("cannot reach {}", v["url"])))
    });
    let cfg = load(
        "[default.database.layers.leaky]\nurl = \"postgres://u:leaked-pw@h/db\"\n",
        &[],
    )
    .unwrap();
    let Err(e) = Services::build(&Arc::new(r), &cfg).await else {
        panic!("the leaky layer fails");
    };
    assert!(!e.message().contains("leaked-pw"), "{e}");
    assert!(e.message().starts_with("database.layers.leaky: "), "{e}");
}

#[tokio::test]
async fn check_lists_the_layers_outermost_first_whatever_the_order_in_the_file() {
    let calls = Arc::new(Calls::default());
    let cfg = load(
        r#"
[default.database.layers]
inner = { n = 1 }
count = { label = "db" }
outer = true
[default.storage.layers]
inner = false
count = true
"#,
        &[],
    )
    .unwrap();
    let report = CompatibilityReport::check(&registries(&calls), &cfg).await;
    assert!(report.is_ok(), "{report}");
    let db = &report.interfaces[0];
    assert_eq!(
        db.layers,
        ["outer({})", "count(label=db)", "inner({\"n\":1})"]
    );
    assert_eq!(report.interfaces[2].layers, ["count(label=none)"]);
    assert!(report.interfaces[3].layers.is_empty());
    let text = report.to_string();
    assert!(
        text.contains(
            "database: memory 0.1.0, layers: outer({}) > count(label=db) > inner({\"n\":1})\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("storage: memory 0.1.0, layers: count(label=none)\n"),
        "{text}"
    );
    assert!(text.contains("realtime: memory 0.1.0\n"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["interfaces"][0]["layers"][0], "outer({})");

    // A layer's description that quotes a secret setting is scrubbed.
    let leaky = load(
        "[default.database.layers]\nouter = { api_key = \"leaked-key\" }\n",
        &[],
    )
    .unwrap();
    let report = CompatibilityReport::check(&registries(&calls), &leaky).await;
    let layers = &report.interfaces[0].layers;
    assert!(layers[0].starts_with("outer("), "{layers:?}");
    assert!(!layers[0].contains("leaked-key"), "{layers:?}");

    // A failing layer fails the check of its interface only.
    let bad = load("[default.database.layers]\nretyr = {}\n", &[]).unwrap();
    let report = CompatibilityReport::check(&registries(&calls), &bad).await;
    assert!(!report.is_ok());
    let db = &report.interfaces[0];
    let error = db.error.as_deref().unwrap();
    assert!(
        error.contains("unknown layer database.layers.retyr; known layers: "),
        "{error}"
    );
    assert!(report.interfaces[2].is_ok(), "{report}");
}

#[tokio::test]
async fn calls_through_the_runtime_go_through_the_layers() {
    let calls = Arc::new(Calls::default());
    let cfg = load(
        "[default.database.layers]\ncount = true\n[default.storage.layers]\ncount = true\n",
        &[],
    )
    .unwrap();
    let rt = builder(&calls, cfg).build().await.unwrap();
    let db = rt.db();
    agents(&*db).await;
    db.create("agents", row(json!({"id": "a1", "name": "Ada"})))
        .await
        .unwrap();
    let got = db.get("agents", &json!("a1")).await.unwrap().unwrap();
    assert_eq!(got["name"], "Ada");
    rt.storage().create_bucket("docs").await.unwrap();
    assert_eq!(
        calls.seen(),
        [
            "database.create_table",
            "database.create",
            "database.get",
            "storage.create_bucket"
        ]
    );
    let report = rt.check().await;
    assert_eq!(report.interfaces[0].layers, ["count(label=none)"]);
}

/// auth-jwt keeps its users in the layered database: its reads and writes
/// go through the database's layers.
#[cfg(feature = "auth-jwt")]
#[tokio::test]
async fn auth_uses_the_layered_database() {
    use truststream_core_auth::SignUp;
    let calls = Arc::new(Calls::default());
    let cfg = load(
        r#"
[default.database.layers]
count = true
[default.auth]
type = "jwt"
jwt_secret = "runtime test secret of at least 32 bytes"
argon2 = { memory_kib = 8, iterations = 1, parallelism = 1 }
"#,
        &[],
    )
    .unwrap();
    let rt = builder(&calls, cfg).build().await.unwrap();
    let before = calls.seen().len();
    rt.auth()
        .unwrap()
        .sign_up(SignUp::new("ada@example.com", "correct horse battery"))
        .await
        .unwrap();
    let during: Vec<String> = calls.seen()[before..].to_vec();
    assert!(
        during.iter().any(|m| m == "database.create")
            || during.iter().any(|m| m == "database.transaction"),
        "sign-up wrote through the layer: {during:?}"
    );
}

// ---- switching ----

#[tokio::test]
async fn a_switch_wraps_the_new_provider_in_the_sections_layers() {
    let calls = Arc::new(Calls::default());
    let cfg = load(
        "[default.database.layers]\ncount = { label = \"x\" }\n",
        &[],
    )
    .unwrap();
    let rt = builder(&calls, cfg).build().await.unwrap();
    agents(&*rt.db()).await;

    let switch = rt.switch_database("memory", json!({})).await.unwrap();
    assert_eq!(
        switch.database().unwrap().layers(),
        ["count(label=x)".to_string()]
    );
    let n = calls.count("database.create_table");
    agents(&*rt.db()).await;
    assert_eq!(calls.count("database.create_table"), n + 1, "the new one");
    assert_eq!(rt.check().await.interfaces[0].layers, ["count(label=x)"]);
    assert_eq!(
        rt.config().section(Interface::Database).layers()["count"],
        json!({"label": "x"})
    );
    switch.close(Duration::from_secs(5)).await.unwrap();

    // Layers given with the switch replace the section's: `{}` for none.
    let switch = rt
        .switch_database("memory", json!({"layers": {}}))
        .await
        .unwrap();
    assert!(rt.check().await.interfaces[0].layers.is_empty());
    let n = calls.seen().len();
    agents(&*rt.db()).await;
    assert_eq!(calls.seen().len(), n, "no layer on the new provider");
    drop(switch);

    // A bad layer refuses the switch and changes nothing.
    let e = rt
        .switch_database("memory", json!({"layers": {"count": {"label": 1}}}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("database.layers.count"), "{e}");
    let e = rt
        .switch_database("memory", json!({"layers": "count"}))
        .await
        .unwrap_err();
    assert!(e.message().contains("must be a table of layers"), "{e}");
}

/// Holds each database call until the test lets it go, so that it is in
/// flight on the old provider while the switch happens.
struct Hold(tokio::sync::Semaphore, tokio::sync::Notify);

#[async_trait]
impl DatabaseLayer for Hold {
    async fn get(
        &self,
        next: &dyn Database,
        table: &str,
        id: &serde_json::Value,
    ) -> Result<Option<Row>> {
        self.1.notify_one();
        let _go = self.0.acquire().await.unwrap();
        next.get(table, id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_waits_for_a_call_inside_the_layers_of_the_old_provider() {
    let hold = Arc::new(Hold(
        tokio::sync::Semaphore::new(0),
        tokio::sync::Notify::new(),
    ));
    struct HoldSpec(Arc<Hold>);
    #[async_trait]
    impl LayerSpec for HoldSpec {
        fn name(&self) -> &'static str {
            "hold"
        }
        fn describe(&self) -> String {
            String::new()
        }
        async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
            Ok(Arc::new(LayeredDatabase::new(inner, Arc::clone(&self.0))))
        }
    }
    let spec_hold = Arc::clone(&hold);
    let cfg = load("[default.database.layers]\nhold = true\n", &[]).unwrap();
    let rt = Arc::new(
        Runtime::builder()
            .register_layer("hold", 100, move |_, _| {
                Ok(Arc::new(HoldSpec(Arc::clone(&spec_hold))) as Arc<dyn LayerSpec>)
            })
            .config(cfg)
            .build()
            .await
            .unwrap(),
    );
    agents(&*rt.db()).await;
    let old = rt.db();
    let in_flight = tokio::spawn(async move { old.get("agents", &json!("a")).await });
    hold.1.notified().await;

    let switch = rt.switch_database("memory", json!({})).await.unwrap();
    assert_eq!(switch.calls_in_flight(), 1);
    let e = switch.drain(Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(
        e.message().contains("1 on the old database provider"),
        "{e}"
    );
    hold.0.add_permits(1);
    switch.close(Duration::from_secs(10)).await.unwrap();
    assert_eq!(switch.calls_in_flight(), 0);
    assert!(in_flight.await.unwrap().unwrap().is_none());
}

// ---- health ----

/// Over a memory database: a health check that never answers, or answers
/// unhealthy quoting its password (as a careless driver might).
struct Stuck {
    answer: Option<String>,
}

#[async_trait]
impl DatabaseLayer for Stuck {
    async fn health(&self, _next: &dyn Database) -> Health {
        match &self.answer {
            None => std::future::pending().await,
            Some(password) => Health::unhealthy(
                Duration::from_millis(1),
                format!("auth failed for app:{password}"),
            ),
        }
    }
}

async fn runtime_on_stuck(settings: &str) -> Runtime {
    let cfg = ConfigSources::new()
        .toml_str(format!("[default.database]\ntype = \"stuck\"\n{settings}"))
        .env(env(&[("TRUSTSTREAM_STORAGE__TYPE", "memory")]))
        .load()
        .unwrap();
    Runtime::builder()
        .register_database("stuck", |v, ()| async move {
            let answer = v.get("password").and_then(|p| p.as_str()).map(String::from);
            let inner: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
            Ok(
                Arc::new(LayeredDatabase::new(inner, Arc::new(Stuck { answer })))
                    as Arc<dyn Database>,
            )
        })
        .config(cfg)
        .build()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_service_that_does_not_answer_in_time_is_unhealthy_and_the_rest_still_checked() {
    let rt = runtime_on_stuck("").await;
    let report = rt.health(Duration::from_millis(250)).await;
    assert_eq!(report.status, HealthStatus::Degraded, "{report:?}");
    assert!(!report.is_ok());
    assert_eq!(report.deadline_ms, 250);
    let db = &report.services[0];
    assert_eq!(db.service, Interface::Database);
    assert_eq!(db.provider, "stuck");
    assert_eq!(db.status, HealthStatus::Unhealthy);
    assert_eq!(db.message.as_deref(), Some("no answer within 250 ms"));
    assert!(db.response_time_ms >= 250.0, "{db:?}");
    let others: Vec<_> = report.services[1..]
        .iter()
        .map(|s| (s.service, s.status))
        .collect();
    assert_eq!(
        others,
        [
            (Interface::Storage, HealthStatus::Healthy),
            (Interface::Realtime, HealthStatus::Healthy)
        ]
    );
    assert_eq!(report.not_configured, [Interface::Auth]);
    let table = report.table();
    assert!(table.contains("no answer within 250 ms"), "{table}");
    assert!(
        table.ends_with("overall: degraded (deadline 250 ms)\n"),
        "{table}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["services"][0]["status"], "unhealthy");
}

#[tokio::test]
async fn health_and_check_messages_never_show_a_configured_secret() {
    let rt = runtime_on_stuck("password = \"s3cr3t-pw\"\n").await;
    let report = rt.health(Duration::from_secs(5)).await;
    let db = &report.services[0];
    assert_eq!(db.status, HealthStatus::Unhealthy);
    assert_eq!(
        db.message.as_deref(),
        Some("auth failed for app:<redacted>")
    );
    let check = rt.check().await;
    let line = check.interfaces[0].health_line();
    assert!(!line.contains("s3cr3t-pw"), "{line}");
    assert!(line.contains("auth failed for app:<redacted>"), "{line}");
}

#[tokio::test(start_paused = true)]
async fn overall_status_is_unhealthy_only_when_nothing_serves() {
    let cfg = ConfigSources::new()
        .env(env(&[
            ("TRUSTSTREAM_DATABASE__TYPE", "nope"),
            ("TRUSTSTREAM_STORAGE__TYPE", "nope"),
            ("TRUSTSTREAM_REALTIME__TYPE", "nope"),
        ]))
        .load()
        .unwrap();
    let registries = Arc::new(Registries::compiled_in());
    let report = HealthReport::check(&registries, &cfg, Duration::from_millis(100)).await;
    assert_eq!(report.status, HealthStatus::Unhealthy, "{report:?}");
    assert_eq!(report.services.len(), 3);
    for s in &report.services {
        assert_eq!(s.status, HealthStatus::Unhealthy);
        let m = s.message.as_deref().unwrap();
        assert!(m.starts_with("failed to build: "), "{m}");
        assert!(m.contains(&format!("{}.type", s.service)), "{m}");
    }
}

// ---- the compiled-in layers through the runtime ----

/// The `metrics` layer built from configuration records into the global
/// registry (what a running process will serve): the calls made through
/// `rt.db()` are there.
#[cfg(feature = "layer-metrics")]
#[tokio::test]
async fn the_metrics_layer_through_the_runtime_sees_the_calls() {
    use truststream_layer_metrics::MetricsRegistry;
    let cfg = load("[default.database.layers]\nmetrics = true\n", &[]).unwrap();
    let rt = Runtime::builder().config(cfg).build().await.unwrap();
    let db = rt.db();
    agents(&*db).await;
    for id in ["a", "b"] {
        assert!(db.get("agents", &json!(id)).await.unwrap().is_none());
    }
    let e = db.get("missing", &json!("a")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let snapshot = MetricsRegistry::global().snapshot();
    let series = |target: &str| {
        snapshot
            .iter()
            .find(|s| s.operation == "get" && s.target == target)
            .unwrap_or_else(|| panic!("no get on {target}: {snapshot:?}"))
    };
    assert_eq!(series("agents").count, 2);
    assert_eq!(series("agents").provider, "memory");
    assert_eq!(series("missing").errors_of(ErrorKind::NotFound), 1);
    assert!(rt.check().await.interfaces[0].layers[0].starts_with("metrics("));
}

/// The composite's secondary is built from the runtime's registries (a
/// provider registered on the builder included); an unknown secondary type
/// names the key.
#[cfg(feature = "layer-composite")]
#[tokio::test]
async fn the_composite_secondary_is_built_from_the_runtimes_registries() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let built = Arc::new(AtomicUsize::new(0));
    let replica = |built: &Arc<AtomicUsize>| {
        let built = Arc::clone(built);
        move |v: serde_json::Value, ()| {
            let built = Arc::clone(&built);
            async move {
                assert_eq!(v["name"], "r1");
                built.fetch_add(1, Ordering::SeqCst);
                Ok(Arc::new(MemoryDatabase::new()) as Arc<dyn Database>)
            }
        }
    };
    let cfg = load(
        "[default.database.layers.composite.secondary]\ntype = \"replica\"\nname = \"r1\"\n",
        &[],
    )
    .unwrap();
    let rt = Runtime::builder()
        .register_database("replica", replica(&built))
        .config(cfg)
        .build()
        .await
        .unwrap();
    assert_eq!(built.load(Ordering::SeqCst), 1);
    let layers = &rt.check().await.interfaces[0].layers;
    assert!(
        layers[0].starts_with("composite(secondary=replica"),
        "{layers:?}"
    );

    let cfg = load(
        "[default.database.layers.composite.secondary]\ntype = \"nope\"\n",
        &[],
    )
    .unwrap();
    let Err(e) = Runtime::builder()
        .register_database("replica", replica(&built))
        .config(cfg)
        .build()
        .await
    else {
        panic!("an unknown secondary type must fail the build");
    };
    let m = e.message();
    assert!(
        m.starts_with("database.layers.composite.secondary: "),
        "{m}"
    );
    assert!(m.contains("\"nope\"") && m.contains("replica"), "{m}");
}

/// The storage composite (`storage.layers.composite` with a `journal`):
/// its secondary storage and journal database are built from the runtime's
/// registries, `check` lists it, writes reach the secondary; a journal of
/// an unknown type names the key.
#[cfg(feature = "layer-composite")]
#[tokio::test]
async fn the_storage_composite_is_built_and_listed() {
    use truststream_core_storage::{StorageExt, UploadOptions};
    let secondary = Arc::new(truststream_storage_memory::MemoryStorage::new());
    let registered = Arc::clone(&secondary);
    let cfg = load(
        "[default.storage.layers.composite]\nsecondary = { type = \"replica\" }\n\
         journal = { type = \"memory\" }\ninterval_ms = 10\n",
        &[],
    )
    .unwrap();
    let rt = Runtime::builder()
        .register_storage("replica", move |_, ()| {
            let s = Arc::clone(&registered);
            async move { Ok(s as Arc<dyn Storage>) }
        })
        .config(cfg)
        .build()
        .await
        .unwrap();
    let report = rt.check().await;
    let storage = report
        .interfaces
        .iter()
        .find(|i| i.interface == Interface::Storage)
        .unwrap();
    assert!(
        storage.layers[0].starts_with("composite(secondary=replica, journal=memory"),
        "{:?}",
        storage.layers
    );
    let store = rt.storage();
    store.create_bucket("files").await.unwrap();
    store
        .upload("files", "a.txt", "a".into(), &UploadOptions::new())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !secondary.exists("files", "a.txt").await.unwrap_or(false) {
        assert!(std::time::Instant::now() < deadline, "never replicated");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let cfg = load(
        "[default.storage.layers.composite]\nsecondary = { type = \"memory\" }\n\
         journal = { type = \"nope\" }\n",
        &[],
    )
    .unwrap();
    let Err(e) = Runtime::builder().config(cfg).build().await else {
        panic!("an unknown journal type must fail the build");
    };
    assert!(
        e.message()
            .starts_with("storage.layers.composite.journal: "),
        "{e}"
    );
}

#[tokio::test]
async fn a_failed_build_disconnects_the_database_built_for_nothing() {
    let db = Arc::new(MemoryDatabase::new());
    let registries = || {
        let shared = Arc::clone(&db);
        let mut r = Registries::compiled_in();
        r.database.register("shared", move |_, ()| {
            let db: Arc<dyn Database> = shared.clone();
            async move { Ok(db) }
        });
        r
    };
    // The storage's misspelt layer fails the build after the database.
    let cfg = load(
        "[default.storage.layers]\nretyr = true\n",
        &[("TRUSTSTREAM_DATABASE__TYPE", "shared")],
    )
    .unwrap();
    for runtime in [false, true] {
        db.connect().await.unwrap();
        let e = if runtime {
            RuntimeBuilder::new()
                .registries(registries())
                .config(cfg.clone())
                .build()
                .await
                .unwrap_err()
        } else {
            Services::build(&Arc::new(registries()), &cfg)
                .await
                .unwrap_err()
        };
        assert!(e.message().contains("storage.layers.retyr"), "{e}");
        assert!(!db.health().await.is_healthy(), "runtime: {runtime}");
    }
}

#[tokio::test]
async fn check_and_health_disconnect_the_database_they_built() {
    let db = Arc::new(MemoryDatabase::new());
    let shared = Arc::clone(&db);
    let mut r = Registries::compiled_in();
    r.database.register("shared", move |_, ()| {
        let db: Arc<dyn Database> = shared.clone();
        async move { Ok(db) }
    });
    let r = Arc::new(r);
    let cfg = load("", &[("TRUSTSTREAM_DATABASE__TYPE", "shared")]).unwrap();
    db.connect().await.unwrap();
    let report = CompatibilityReport::check(&r, &cfg).await;
    assert!(report.is_ok(), "{report}");
    assert!(!db.health().await.is_healthy(), "check disconnects it");
    db.connect().await.unwrap();
    let health = HealthReport::check(&r, &cfg, Duration::from_secs(5)).await;
    assert!(health.is_ok(), "{}", health.table());
    assert!(!db.health().await.is_healthy(), "health disconnects it");
}
