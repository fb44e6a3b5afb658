//! The metrics layer over real in-memory providers, with a scripted layer
//! below it that delays or fails calls: counts, errors by kind, exact
//! latencies (tokio's paused clock), folding of targets, the Prometheus
//! text, and stacks built from configuration (the span: `tracing.rs`).

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use truststream_core::{BoxFuture, Error, ErrorKind, Result};
use truststream_core_db::{ColumnDef, Database, Row, TableSchema, Value};
use truststream_core_realtime::ChannelOptions;
use truststream_core_storage::UploadOptions;
use truststream_db_memory::MemoryDatabase;
use truststream_layer::{around_database, Around, Interface, LayerDeps, LayerRegistry, Next, Op};
use truststream_layer_metrics::{
    prometheus_recorder, render_table, Metrics, MetricsConfig, MetricsRegistry, SeriesStats,
    MAX_TARGET_LEN, NO_TARGET, OTHER_TARGET,
};
use truststream_realtime_memory::MemoryRealtime;
use truststream_storage_memory::MemoryStorage;

/// What the scripted layer does with one call.
#[derive(Clone, Copy)]
enum Step {
    /// Waits this long, then runs the call.
    Delay(Duration),
    /// Waits this long, then fails with this kind without running the call.
    Fail(Duration, ErrorKind),
}

/// Below the metrics layer: takes one step per call from its script (calls
/// beyond the script run at once).
#[derive(Default)]
struct Script(Mutex<VecDeque<Step>>);

impl Script {
    fn push(&self, step: Step) {
        self.0.lock().unwrap().push_back(step);
    }
}

impl Around for Script {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        let step = self.0.lock().unwrap().pop_front();
        Box::pin(async move {
            match step {
                None => next.run().await,
                Some(Step::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    next.run().await
                }
                Some(Step::Fail(d, kind)) => {
                    tokio::time::sleep(d).await;
                    Err(Error::new(kind, "scripted failure"))
                }
            }
        })
    }
}

struct Setup {
    db: Arc<dyn Database>,
    bare: Arc<dyn Database>,
    script: Arc<Script>,
    registry: Arc<MetricsRegistry>,
}

/// db-memory under the script under the metrics layer (own registry).
fn setup(config: MetricsConfig) -> Setup {
    let bare: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let script = Arc::new(Script::default());
    let registry = Arc::new(MetricsRegistry::new());
    let layer = Arc::new(Metrics::with_config(Arc::clone(&registry), config));
    let db = around_database(
        around_database(Arc::clone(&bare), Arc::clone(&script)),
        layer,
    );
    Setup {
        db,
        bare,
        script,
        registry,
    }
}

fn schema(name: &str) -> TableSchema {
    TableSchema::new(name)
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("name"))
}

fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}

fn series<'s>(stats: &'s [SeriesStats], operation: &str, target: &str) -> &'s SeriesStats {
    stats
        .iter()
        .find(|s| s.operation == operation && s.target == target)
        .unwrap_or_else(|| panic!("no series {operation} {target} in {stats:#?}"))
}

#[tokio::test(start_paused = true)]
async fn counts_and_errors_by_kind_per_series_and_values_pass_through() {
    let s = setup(MetricsConfig::default());
    s.db.create_table(&schema("agents")).await.unwrap();
    let stored =
        s.db.create("agents", row(json!({"id": "a1", "name": "Ada"})))
            .await
            .unwrap();
    assert_eq!(
        stored,
        s.bare.get("agents", &json!("a1")).await.unwrap().unwrap()
    );
    for _ in 0..3 {
        assert_eq!(
            s.db.get("agents", &json!("a1")).await.unwrap().unwrap(),
            stored
        );
    }
    assert!(s
        .db
        .get("agents", &json!("nobody"))
        .await
        .unwrap()
        .is_none());

    // The provider's own error passes through untouched...
    let ours =
        s.db.create("agents", row(json!({"id": "a1", "name": "again"})))
            .await
            .unwrap_err();
    let theirs = s
        .bare
        .create("agents", row(json!({"id": "a1", "name": "again"})))
        .await
        .unwrap_err();
    assert_eq!(ours.kind(), ErrorKind::Conflict);
    assert_eq!(ours.to_string(), theirs.to_string());
    // ... and so does one from below the layer.
    s.script
        .push(Step::Fail(Duration::ZERO, ErrorKind::Unavailable));
    s.script
        .push(Step::Fail(Duration::ZERO, ErrorKind::Timeout));
    s.script
        .push(Step::Fail(Duration::ZERO, ErrorKind::Unavailable));
    for kind in [
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Unavailable,
    ] {
        let e = s.db.get("agents", &json!("a1")).await.unwrap_err();
        assert_eq!((e.kind(), e.message()), (kind, "scripted failure"));
    }
    s.db.raw_query("SELECT 1", &Default::default()).await.ok();

    let stats = s.registry.snapshot();
    let get = series(&stats, "get", "agents");
    assert_eq!(
        (get.interface, get.provider.as_str(), get.count),
        (Interface::Database, "memory", 7)
    );
    assert_eq!(
        get.errors,
        vec![(ErrorKind::Timeout, 1), (ErrorKind::Unavailable, 2)]
    );
    assert_eq!(get.error_count(), 3);
    assert_eq!(get.errors_of(ErrorKind::Unavailable), 2);
    let create = series(&stats, "create", "agents");
    assert_eq!(create.count, 2);
    assert_eq!(create.errors, vec![(ErrorKind::Conflict, 1)]);
    assert_eq!(series(&stats, "create_table", "agents").count, 1);
    assert_eq!(series(&stats, "raw_query", NO_TARGET).count, 1);
    // Sorted by interface, provider, operation, target.
    let order: Vec<_> = stats.iter().map(|s| s.operation.as_str()).collect();
    assert_eq!(order, ["create", "create_table", "get", "raw_query"]);
}

#[tokio::test(start_paused = true)]
async fn percentiles_and_max_from_known_latencies() {
    let s = setup(MetricsConfig::default());
    s.bare.create_table(&schema("agents")).await.unwrap();
    // 1 ms .. 100 ms, shuffled by a fixed stride so order does not matter.
    for i in 0..100u64 {
        let ms = (i * 37) % 100 + 1;
        s.script.push(Step::Delay(Duration::from_millis(ms)));
    }
    for _ in 0..100 {
        s.db.get("agents", &json!("x")).await.unwrap();
    }
    // Failed calls are timed too.
    s.script
        .push(Step::Fail(Duration::from_millis(250), ErrorKind::Timeout));
    s.db.get("agents", &json!("x")).await.unwrap_err();

    let stats = s.registry.snapshot();
    let get = series(&stats, "get", "agents");
    assert_eq!(get.count, 101);
    let near = |d: Duration, ms: f64| {
        let got = d.as_secs_f64() * 1e3;
        assert!(
            (got - ms).abs() <= ms * 0.01,
            "{got} ms is not within 1 % of {ms} ms"
        );
    };
    near(get.p50, 51.0); // the 51st of 101 values: 1..100 and 250
    near(get.p95, 96.0);
    near(get.p99, 100.0);
    assert_eq!(get.max, Duration::from_millis(250));

    let table = render_table(&stats);
    let line = table.lines().find(|l| l.contains(" get ")).unwrap();
    assert!(line.contains("101"), "{table}");
    assert!(line.contains("250ms"), "{table}");
    assert!(line.ends_with("timeout 1"), "{table}");
    // Aligned: every line has the header's column starts.
    let header = table.lines().next().unwrap();
    let p50_col = header.find("p50").unwrap() + "p50".len();
    for l in table.lines().skip(1) {
        assert!(
            l[..p50_col].ends_with(|c: char| c != ' '),
            "p50 column not right-aligned:\n{table}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn targets_beyond_the_limit_are_folded_into_other() {
    let s = setup(MetricsConfig {
        tracing: false,
        max_targets: 3,
        ..MetricsConfig::default()
    });
    for t in ["t0", "t1", "t2", "t3", "t4"] {
        s.db.create_table(&schema(t)).await.unwrap();
    }
    for t in ["t4", "t0", "t3"] {
        s.db.get(t, &json!("x")).await.unwrap();
    }
    // Calls that name no target take no place.
    s.db.raw_query("SELECT 1", &Default::default()).await.ok();
    // A name no provider would accept is folded even while there is room.
    let s2 = setup(MetricsConfig::default());
    let long = "x".repeat(MAX_TARGET_LEN + 1);
    s2.db.get(&long, &json!("x")).await.unwrap_err();
    s2.db.get(&long[1..], &json!("x")).await.unwrap_err();
    let folded: Vec<_> = s2
        .registry
        .snapshot()
        .iter()
        .map(|s| (s.target.len(), s.count))
        .collect();
    assert_eq!(folded, [(OTHER_TARGET.len(), 1), (MAX_TARGET_LEN, 1)]);

    let stats = s.registry.snapshot();
    let targets: Vec<_> = stats
        .iter()
        .map(|s| format!("{} {} {}", s.operation, s.target, s.count))
        .collect();
    assert_eq!(
        targets,
        [
            "create_table other 2",
            "create_table t0 1",
            "create_table t1 1",
            "create_table t2 1",
            "get other 2",
            "get t0 1",
            "raw_query - 1",
        ]
    );
    assert_eq!(OTHER_TARGET, "other");
}

#[tokio::test(start_paused = true)]
async fn the_prometheus_text_has_the_series() {
    let (recorder, exporter) = prometheus_recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let s = setup(MetricsConfig::default());
    s.db.create_table(&schema("agents")).await.unwrap();
    s.script.push(Step::Delay(Duration::from_millis(20)));
    s.db.get("agents", &json!("x")).await.unwrap();
    s.db.get("agents", &json!("x")).await.unwrap();
    s.script
        .push(Step::Fail(Duration::ZERO, ErrorKind::Unavailable));
    s.db.get("agents", &json!("x")).await.unwrap_err();

    let text = exporter.render();
    let labels = r#"interface="database",provider="memory",operation="get",target="agents""#;
    for line in [
        format!(r#"truststream_calls_total{{{labels},outcome="ok"}} 2"#),
        format!(r#"truststream_calls_total{{{labels},outcome="unavailable"}} 1"#),
        format!(r#"truststream_call_duration_seconds_count{{{labels}}} 3"#),
        format!(r#"truststream_call_duration_seconds{{{labels},quantile="1"}} 0.02"#),
        "# TYPE truststream_calls_total counter".to_string(),
        "# TYPE truststream_call_duration_seconds summary".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line} in\n{text}");
    }
    assert!(text.contains(r#"operation="create_table",target="agents",outcome="ok"} 1"#));
}

#[tokio::test(start_paused = true)]
async fn a_stack_from_configuration_records_into_its_registry() {
    let metrics = Arc::new(MetricsRegistry::new());
    let mut layers = LayerRegistry::new();
    truststream_layer_metrics::register_with(&mut layers, Arc::clone(&metrics));
    let deps = LayerDeps::default();
    let table = |v: Value| v.as_object().unwrap().clone();

    let stack = layers
        .stack(
            Interface::Database,
            &table(json!({"metrics": {"tracing": false, "max_targets": 5}})),
            &deps,
        )
        .unwrap();
    assert_eq!(stack.describe(), ["metrics(tracing=false, max_targets=5)"]);
    let db = stack
        .wrap_database(Arc::new(MemoryDatabase::new()))
        .await
        .unwrap();
    db.create_table(&schema("agents")).await.unwrap();
    db.create("agents", row(json!({"id": "a", "name": "A"})))
        .await
        .unwrap();
    assert_eq!(db.info().name, "memory");

    let stack = layers
        .stack(Interface::Storage, &table(json!({"metrics": true})), &deps)
        .unwrap();
    assert_eq!(
        stack.describe(),
        ["metrics(tracing=true, max_targets=1000)"]
    );
    let store = stack
        .wrap_storage(Arc::new(MemoryStorage::new()))
        .await
        .unwrap();
    store.create_bucket("docs").await.unwrap();
    store
        .upload(
            "docs",
            "a.txt",
            Bytes::from_static(b"hi"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(store.download("docs", "a.txt").await.unwrap(), "hi");
    let e = store.download("docs", "missing").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let stack = layers
        .stack(
            Interface::Realtime,
            &table(json!({"metrics": {"channel_names": true}})),
            &deps,
        )
        .unwrap();
    let rt = stack
        .wrap_realtime(Arc::new(MemoryRealtime::new()))
        .await
        .unwrap();
    let room = rt.channel("room", ChannelOptions::default()).await.unwrap();
    assert_eq!(room.name(), "room");

    let lines: Vec<_> = metrics
        .snapshot()
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {} {} {}",
                s.interface,
                s.provider,
                s.operation,
                s.target,
                s.count,
                s.error_count()
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            "database memory create agents 1 0",
            "database memory create_table agents 1 0",
            "storage memory create_bucket docs 1 0",
            "storage memory download docs 2 1",
            "storage memory upload docs 1 0",
            "realtime memory channel room 1 0",
        ]
    );

    let e = layers
        .stack(
            Interface::Database,
            &table(json!({"metrics": {"max_targets": -1}})),
            &deps,
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        e.message(),
        "database.layers.metrics: max_targets: invalid value: expected usize"
    );
    let e = layers
        .stack(
            Interface::Database,
            &table(json!({"metrics": {"buckets": 5}})),
            &deps,
        )
        .unwrap_err();
    assert!(
        e.message()
            .starts_with("database.layers.metrics: unknown field `buckets`"),
        "{e}"
    );
}

#[tokio::test]
async fn realtime_channel_names_are_left_out_unless_configured() {
    let registry = Arc::new(MetricsRegistry::new());
    let rt = truststream_layer::around_realtime(
        Arc::new(MemoryRealtime::new()),
        Arc::new(Metrics::new(Arc::clone(&registry))),
    );
    rt.channel("user:123", ChannelOptions::default())
        .await
        .unwrap();
    let targets: Vec<_> = registry
        .snapshot()
        .iter()
        .map(|s| format!("{} {}", s.operation, s.target))
        .collect();
    assert_eq!(targets, ["channel -"]);
}
