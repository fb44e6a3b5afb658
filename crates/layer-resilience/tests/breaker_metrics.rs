//! Breaker transitions reach the `metrics` facade (a process-wide recorder,
//! so this file holds one test), and one probe goes through when callers on
//! several threads race for it.

#![allow(clippy::unwrap_used)] // test helpers, not library code
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use serde_json::json;
use support::{memory_db, stacked, Act, Fault};
use tokio::sync::Semaphore;
use truststream_core::{BoxFuture, Error, ErrorKind, Result};
use truststream_layer::{around_database, Around, Next, Op};
use truststream_layer_resilience::{BreakerConfig, BreakerCounts, BreakerState, CircuitBreaker};

/// Counters by `name{label=value,...}`.
#[derive(Default)]
struct Counters(Mutex<BTreeMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl Recorder for &'static Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let counter = Arc::clone(self.0.lock().unwrap().entry(name).or_default());
        Counter::from_arc(counter)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Holds each call until the test lets one through.
struct Gate(Semaphore);

impl Around for Gate {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.0.acquire().await.unwrap().forget();
            next.run().await
        })
    }
}

fn transitions(counters: &Counters, to: &str) -> u64 {
    counters.get(&format!(
        "truststream_breaker_transitions_total{{interface=database,provider=memory,to={to}}}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_are_counted_and_one_probe_wins_a_race() {
    let counters: &'static Counters = Box::leak(Box::default());
    metrics::set_global_recorder(counters).unwrap();

    let down = Arc::new(AtomicBool::new(true));
    let d = Arc::clone(&down);
    let fault = Fault::new(move |_, _| {
        if d.load(Ordering::SeqCst) {
            Act::Fail(Error::unavailable("injected"))
        } else {
            Act::Pass
        }
    });
    let breaker = Arc::new(CircuitBreaker::new(BreakerConfig {
        failure_ratio: 0.5,
        min_calls: 4,
        window_s: 60,
        open_s: 1,
    }));
    // The probe waits at the gate until every other racer was refused.
    let gate = Arc::new(Gate(Semaphore::new(0)));
    let inner = around_database(memory_db().await, Arc::clone(&gate));
    let db = stacked(&inner, &fault, Arc::clone(&breaker));
    for _ in 0..4 {
        db.get("agents", &json!("a")).await.unwrap_err();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(transitions(counters, "open"), 1);

    down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = fault.attempts();
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..16 {
        let db = Arc::clone(&db);
        let start = Arc::clone(&start);
        let tx = tx.clone();
        tokio::spawn(async move {
            start.wait().await;
            tx.send(db.get("agents", &json!("a")).await.map(drop))
                .unwrap();
        });
    }
    let wait = Duration::from_secs(30);
    for _ in 0..15 {
        let e = tokio::time::timeout(wait, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.is_unapplied(), "{e}");
        assert!(e.message().contains("half-open"), "{e}");
    }
    gate.0.add_permits(1);
    tokio::time::timeout(wait, rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(fault.attempts(), before + 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(
        breaker.transitions(),
        BreakerCounts {
            opened: 1,
            half_opened: 1,
            closed: 1
        }
    );
    assert_eq!(transitions(counters, "half_open"), 1);
    assert_eq!(transitions(counters, "closed"), 1);
    assert_eq!(transitions(counters, "open"), 1);
}
