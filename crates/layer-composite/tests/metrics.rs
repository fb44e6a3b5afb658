//! Replication lag and read fallbacks reach the `metrics` facade; fallbacks
//! are logged at warn once per outage.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use serde_json::json;
use truststream_core::{BoxFuture, Error, ErrorKind, Result};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_db_memory::MemoryDatabase;
use truststream_layer::{around_database, Around, Next, Op};
use truststream_layer_composite::{CompositeConfig, CompositeLayer};

type Values = Arc<Mutex<BTreeMap<String, f64>>>;

/// Keeps the last value of each gauge and the total of each counter, by
/// `name{labels}`.
#[derive(Default)]
struct Capture(Values);

struct Slot(String, Values);

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.1.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.1.lock().unwrap().insert(self.0.clone(), value as f64);
    }
}

fn name(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Slot(name(key), Arc::clone(&self.0))))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Slot(name(key), Arc::clone(&self.0))))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[derive(Default)]
struct Switch(AtomicBool);

impl Around for Switch {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        if self.0.load(Ordering::SeqCst) {
            return Box::pin(async { Err(Error::new(ErrorKind::Timeout, "switched off")) });
        }
        next.run()
    }
}

// A current-thread runtime: the local recorder sees every call of the test.
#[tokio::test]
async fn lag_and_fallbacks_are_published() {
    let capture = Capture::default();
    let values = Arc::clone(&capture.0);
    let _guard = metrics::set_default_local_recorder(&capture);
    let logs = Logs::default();
    let _log_guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish(),
    );

    let switch = Arc::new(Switch::default());
    let primary = around_database(Arc::new(MemoryDatabase::new()), Arc::clone(&switch));
    let mut config = CompositeConfig::new("memory", json!({}));
    config.interval = Duration::from_secs(3600);
    let db = CompositeLayer::wrap(primary, Arc::new(MemoryDatabase::new()), &config)
        .await
        .unwrap();
    db.create_table(&TableSchema::new("t").column(ColumnDef::text("id").primary_key()))
        .await
        .unwrap();
    db.create("t", json!({"id": "a"}).as_object().unwrap().clone())
        .await
        .unwrap();
    let lag = db.layer().lag().await.unwrap();
    assert_eq!(lag.entries, 2);
    let labels = "{primary=memory,secondary=memory}";
    let get = |n: &str| values.lock().unwrap().get(&format!("{n}{labels}")).copied();
    assert_eq!(get("truststream_composite_outbox_entries"), Some(2.0));
    let seconds = get("truststream_composite_lag_seconds").unwrap();
    assert!((0.0..60.0).contains(&seconds), "{seconds}");

    db.layer().catch_up().await.unwrap();
    db.layer().lag().await.unwrap();
    assert_eq!(get("truststream_composite_outbox_entries"), Some(0.0));
    assert_eq!(get("truststream_composite_lag_seconds"), Some(0.0));

    switch.0.store(true, Ordering::SeqCst);
    assert!(db.get("t", &json!("a")).await.unwrap().is_some());
    assert!(db.get("t", &json!("a")).await.unwrap().is_some());
    assert_eq!(get("truststream_composite_read_fallbacks_total"), Some(2.0));
    assert_eq!(db.layer().stats().read_fallbacks, 2);

    // One warning for the outage, one note when the primary is back, and
    // again for the next outage.
    switch.0.store(false, Ordering::SeqCst);
    db.get("t", &json!("a")).await.unwrap();
    db.get("t", &json!("a")).await.unwrap();
    switch.0.store(true, Ordering::SeqCst);
    db.get("t", &json!("a")).await.unwrap();
    let text = logs.text();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("does not answer reads"))
        .collect();
    assert_eq!(warns.len(), 2, "{text}");
    assert!(warns.iter().all(|l| l.contains("WARN")), "{text}");
    assert_eq!(text.matches("answers reads again").count(), 1, "{text}");
}

/// Log lines, for a test subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

// The storage composite's own series, on a current-thread runtime as above
// (its write tasks run on the test's thread).
#[tokio::test]
async fn storage_lag_and_fallbacks_are_published() {
    use bytes::Bytes;
    use truststream_core_storage::{Storage, UploadOptions};
    use truststream_layer_composite::{StorageCompositeConfig, StorageCompositeLayer};
    use truststream_storage_memory::MemoryStorage;

    let capture = Capture::default();
    let values = Arc::clone(&capture.0);
    let _guard = metrics::set_default_local_recorder(&capture);

    let switch = Arc::new(Switch::default());
    let primary =
        truststream_layer::around_storage(Arc::new(MemoryStorage::new()), Arc::clone(&switch));
    let mut config = StorageCompositeConfig::new("memory", "memory");
    config.interval = Duration::from_secs(3600);
    let store = StorageCompositeLayer::wrap(
        primary,
        Arc::new(MemoryStorage::new()),
        Arc::new(MemoryDatabase::new()),
        &config,
    )
    .await
    .unwrap();
    store.create_bucket("bbb").await.unwrap();
    store
        .upload("bbb", "k", Bytes::from_static(b"v"), &UploadOptions::new())
        .await
        .unwrap();
    assert_eq!(store.layer().lag().await.unwrap().entries, 2);
    let labels = "{primary=memory,secondary=memory}";
    let get = |n: &str| values.lock().unwrap().get(&format!("{n}{labels}")).copied();
    assert_eq!(
        get("truststream_composite_storage_journal_entries"),
        Some(2.0)
    );
    let seconds = get("truststream_composite_storage_lag_seconds").unwrap();
    assert!((0.0..60.0).contains(&seconds), "{seconds}");

    store.layer().catch_up().await.unwrap();
    store.layer().lag().await.unwrap();
    assert_eq!(
        get("truststream_composite_storage_journal_entries"),
        Some(0.0)
    );

    switch.0.store(true, Ordering::SeqCst);
    assert_eq!(&store.download("bbb", "k").await.unwrap()[..], b"v");
    assert!(store.get_metadata("bbb", "k").await.is_ok());
    assert_eq!(
        get("truststream_composite_storage_read_fallbacks_total"),
        Some(2.0)
    );
    // A pass with the primary down fails and is counted.
    assert!(store
        .upload("bbb", "k2", Bytes::from_static(b"v"), &UploadOptions::new())
        .await
        .is_err());
    assert!(store.layer().replicate_once().await.is_err());
    assert_eq!(
        get("truststream_composite_storage_failed_passes_total"),
        Some(1.0)
    );
}
