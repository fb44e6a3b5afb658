//! The process-wide path, alone in its own test binary: `register` records
//! into `MetricsRegistry::global`, and `install_prometheus` makes the
//! global recorder whose text has the same calls.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::sync::Arc;

use serde_json::json;
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_db_memory::MemoryDatabase;
use truststream_layer::{Interface, LayerDeps, LayerRegistry};
use truststream_layer_metrics::{install_prometheus, render_table, MetricsRegistry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_layers_record_into_the_global_registry_and_recorder() {
    let exporter = install_prometheus().unwrap();
    // Installing again hands back the same exporter.
    let again = install_prometheus().unwrap();

    let mut layers = LayerRegistry::new();
    truststream_layer_metrics::register(&mut layers);
    let stack = layers
        .stack(
            Interface::Database,
            json!({"metrics": true}).as_object().unwrap(),
            &LayerDeps::default(),
        )
        .unwrap();
    let db: Arc<dyn Database> = stack
        .wrap_database(Arc::new(MemoryDatabase::new()))
        .await
        .unwrap();
    db.create_table(&TableSchema::new("agents").column(ColumnDef::text("id").primary_key()))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let db = Arc::clone(&db);
            tokio::spawn(async move {
                for _ in 0..50 {
                    db.get("agents", &json!("x")).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }

    let stats = MetricsRegistry::global().snapshot();
    let get = stats.iter().find(|s| s.operation == "get").unwrap();
    assert_eq!((get.target.as_str(), get.count), ("agents", 400));
    assert!(render_table(&stats).contains("agents"));

    let line = r#"truststream_calls_total{interface="database",provider="memory",operation="get",target="agents",outcome="ok"} 400"#;
    for text in [exporter.render(), again.render()] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        assert!(
            text.contains("# HELP truststream_calls_total Calls through the metrics layer"),
            "{text}"
        );
    }
}
