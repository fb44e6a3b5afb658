//! The tracing span of each call, alone in its own test binary: tracing
//! caches whether a call site is enabled per process, so a test thread
//! without this subscriber could make the span look disabled to this one.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::sync::{Arc, Mutex};

use serde_json::json;
use truststream_core_db::{ColumnDef, Database, Row, TableSchema, Value};
use truststream_db_memory::MemoryDatabase;
use truststream_layer::around_database;
use truststream_layer_metrics::{Metrics, MetricsConfig, MetricsRegistry, NO_TARGET};

fn schema(name: &str) -> TableSchema {
    TableSchema::new(name)
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("name"))
}

fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}

/// db-memory under the metrics layer (own registry).
fn setup(config: MetricsConfig) -> (Arc<dyn Database>, Arc<MetricsRegistry>) {
    let registry = Arc::new(MetricsRegistry::new());
    let layer = Arc::new(Metrics::with_config(Arc::clone(&registry), config));
    (
        around_database(Arc::new(MemoryDatabase::new()), layer),
        registry,
    )
}

/// Captures spans (name and fields) and fields recorded later.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields(format!("span {}", attrs.metadata().name()));
        attrs.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn on_record(
        &self,
        _id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields("record".to_string());
        values.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

#[tokio::test]
async fn a_span_per_call_names_the_call_and_the_error_kind_never_the_data() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let (db, _) = setup(MetricsConfig::default());
    db.create_table(&schema("agents")).await.unwrap();
    let secret = row(json!({"id": "s1", "name": "hunter2-secret"}));
    db.create("agents", secret.clone()).await.unwrap();
    db.create("agents", secret).await.unwrap_err();
    db.raw_query("SELECT 'hunter2-secret'", &Default::default())
        .await
        .ok();
    let captured = capture.0.lock().unwrap().clone();
    let call = |op: &str, target: &str| {
        format!(
            "span truststream.call interface=database provider=memory operation={op} target={target}"
        )
    };
    assert_eq!(
        captured,
        [
            call("create_table", "agents"),
            call("create", "agents"),
            call("create", "agents"),
            "record error=conflict".to_string(),
            call("raw_query", NO_TARGET),
            "record error=unsupported".to_string(), // db-memory has no SQL
        ]
    );
    assert!(!captured.iter().any(|c| c.contains("hunter2")));

    // Without tracing, no span.
    capture.0.lock().unwrap().clear();
    let (db, registry) = setup(MetricsConfig {
        tracing: false,
        ..MetricsConfig::default()
    });
    db.create_table(&schema("agents")).await.unwrap();
    assert!(capture.0.lock().unwrap().is_empty());
    assert_eq!(registry.snapshot()[0].count, 1);
}
