//! `truststream stats`' self-test run through the library: the metrics
//! layer is forced on, sees every call of the workload, and the scratch
//! table and objects are gone afterwards.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::sync::Arc;

use truststream_core::ErrorKind;
use truststream_core_db::{Database, Query};
use truststream_core_storage::{ListOptions, Storage};
use truststream_db_memory::MemoryDatabase;
use truststream_runtime::layer::Interface as LayerInterface;
use truststream_runtime::stats::self_test;
use truststream_runtime::{ConfigSources, Registries};
use truststream_storage_memory::MemoryStorage;

#[tokio::test]
async fn the_self_test_records_every_call_and_leaves_nothing_behind() {
    // Shared providers, so that the test can look at them afterwards.
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let mut registries = Registries::compiled_in();
    let shared = Arc::clone(&db);
    registries.database.register("shared", move |_, ()| {
        let db = Arc::clone(&shared);
        async move { Ok(db) }
    });
    let shared = Arc::clone(&storage);
    registries.storage.register("shared", move |_, ()| {
        let s = Arc::clone(&shared);
        async move { Ok(s) }
    });
    storage.create_bucket("media").await.unwrap();
    let config = ConfigSources::new()
        .toml_str(
            // metrics = false is overridden for the run; its settings are
            // kept when given.
            "[default.database]\ntype = \"shared\"\n[default.database.layers]\nmetrics = false\n\
             [default.storage]\ntype = \"shared\"\n\
             [default.storage.layers]\nmetrics = { max_targets = 10 }\n",
        )
        .load()
        .unwrap();

    let run = self_test(registries, &config, 3).await.unwrap();
    assert_eq!(run.failure, None);
    assert_eq!(
        (run.database.as_str(), run.storage.as_str()),
        ("shared", "shared")
    );
    let count = |interface: LayerInterface, op: &str| {
        run.series
            .iter()
            .filter(|s| s.interface == interface && s.operation == op)
            .map(|s| s.count)
            .sum::<u64>()
    };
    for op in ["create", "get", "update", "delete"] {
        assert_eq!(count(LayerInterface::Database, op), 3, "database {op}");
    }
    assert_eq!(count(LayerInterface::Database, "create_table"), 1);
    assert_eq!(count(LayerInterface::Database, "drop_table"), 1);
    for op in ["upload", "download", "get_metadata", "delete"] {
        assert_eq!(count(LayerInterface::Storage, op), 3, "storage {op}");
    }
    assert_eq!(
        count(LayerInterface::Database, "disconnect"),
        0,
        "not part of the run"
    );
    // The existing bucket was used: none made, none deleted.
    assert_eq!(count(LayerInterface::Storage, "create_bucket"), 0);
    assert!(run.series.iter().all(|s| s.error_count() == 0));
    let table = run.table();
    assert!(
        table.starts_with("self-test: 3 rows on database \"shared\""),
        "{table}"
    );
    assert!(table.contains("\ninterface "), "{table}");
    let json = serde_json::to_value(&run).unwrap();
    assert_eq!(json["rows"], 3);
    assert!(json["series"][0]["p99_us"].is_u64(), "{json}");

    // Nothing left: the scratch table is dropped, the objects deleted.
    let table_name = &run
        .series
        .iter()
        .find(|s| s.operation == "create_table")
        .unwrap()
        .target;
    // (The run disconnects the database when done.)
    db.connect().await.unwrap();
    let e = db.read(table_name, &Query::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let page = storage
        .list("media", &ListOptions::default())
        .await
        .unwrap();
    assert!(page.objects.is_empty(), "{:?}", page.objects);
    assert_eq!(storage.list_buckets().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_provider_that_cannot_be_built_fails_the_run() {
    let config = ConfigSources::new()
        .env([("TRUSTSTREAM_DATABASE__TYPE", "nope")])
        .load()
        .unwrap();
    let e = self_test(Registries::compiled_in(), &config, 3)
        .await
        .unwrap_err();
    assert!(e.message().contains("database.type"), "{e}");
}

/// A database layer that fails every call, quoting its `password` setting.
struct Leaky(String);

impl truststream_runtime::layer::Around for Leaky {
    fn around<'a>(
        &'a self,
        _op: truststream_runtime::layer::Op<'a>,
        _next: truststream_runtime::layer::Next<'a>,
    ) -> truststream_core::BoxFuture<'a, truststream_core::Result<()>> {
        let message = format!("refused for password {}", self.0);
        Box::pin(async move { Err(truststream_core::Error::unavailable(message)) })
    }
}

struct LeakySpec(String);

#[async_trait::async_trait]
impl truststream_runtime::layer::LayerSpec for LeakySpec {
    fn name(&self) -> &'static str {
        "leaky"
    }
    fn describe(&self) -> String {
        String::new()
    }
    async fn wrap_database(
        &self,
        inner: Arc<dyn Database>,
    ) -> truststream_core::Result<Arc<dyn Database>> {
        Ok(truststream_runtime::layer::around_database(
            inner,
            Arc::new(Leaky(self.0.clone())),
        ))
    }
}

#[tokio::test]
async fn a_failure_of_the_run_is_scrubbed_of_the_sections_secrets() {
    let mut registries = Registries::compiled_in();
    registries.layers.register("leaky", 100, |v, _| {
        let password = v["password"].as_str().unwrap_or_default().to_string();
        Ok(Arc::new(LeakySpec(password)) as Arc<dyn truststream_runtime::layer::LayerSpec>)
    });
    let config = ConfigSources::new()
        .toml_str(
            "[default.database]\ntype = \"memory\"\n\
             [default.database.layers.leaky]\npassword = \"leaked-pw\"\n\
             [default.storage]\ntype = \"memory\"\n",
        )
        .load()
        .unwrap();
    let run = self_test(registries, &config, 1).await.unwrap();
    let failure = run.failure.unwrap();
    assert!(failure.contains("refused for password"), "{failure}");
    assert!(!failure.contains("leaked-pw"), "{failure}");
}
