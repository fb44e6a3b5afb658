//! The circuit breaker: when it opens, what it answers while open, the one
//! half-open probe, and closing again.

#![allow(clippy::unwrap_used)] // test helpers, not library code
mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use support::{memory_db, stacked, Act, Fault};
use tokio::time::Instant;
use truststream_core::{Error, ErrorKind, Result};
use truststream_core_db::Database;
use truststream_layer_resilience::{BreakerConfig, BreakerCounts, BreakerState, CircuitBreaker};

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_ratio: 0.5,
        min_calls: 10,
        window_s: 10,
        open_s: 30,
    }
}

/// The behaviour of the fault layer below the breaker, switched by a test:
/// each attempt passes, passes slowly, or fails with the kind named.
struct Switch {
    mode: AtomicU32,
}

const PASS: u32 = 0;
const DOWN: u32 = 1;
const SLOW_PASS: u32 = 2;
const NOT_FOUND: u32 = 3;
const CONFLICT: u32 = 4;
const TIMEOUT: u32 = 5;
const SHED: u32 = 6;

impl Switch {
    fn set(&self, mode: u32) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

struct Rig {
    switch: Arc<Switch>,
    fault: Arc<Fault>,
    breaker: Arc<CircuitBreaker>,
    db: Arc<dyn Database>,
}

async fn rig(config: BreakerConfig) -> Rig {
    let switch = Arc::new(Switch {
        mode: AtomicU32::new(PASS),
    });
    let s = Arc::clone(&switch);
    let fault = Fault::new(move |_, _| match s.mode.load(Ordering::SeqCst) {
        DOWN => Act::Fail(Error::unavailable("injected: connection refused")),
        SLOW_PASS => Act::Slow(Duration::from_millis(100)),
        NOT_FOUND => Act::Fail(Error::not_found("no such row")),
        CONFLICT => Act::Fail(Error::conflict("duplicate key")),
        TIMEOUT => Act::Fail(Error::new(ErrorKind::Timeout, "injected: slow")),
        SHED => Act::Fail(Error::new(ErrorKind::RateLimited, "shed").unapplied()),
        _ => Act::Pass,
    });
    let breaker = Arc::new(CircuitBreaker::new(config));
    let db = memory_db().await;
    let layered = stacked(&db, &fault, Arc::clone(&breaker));
    Rig {
        switch,
        fault,
        breaker,
        db: layered,
    }
}

async fn calls(db: &Arc<dyn Database>, n: usize) -> Vec<Result<()>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(db.get("agents", &json!("a")).await.map(drop));
    }
    out
}

fn counts(opened: u64, half_opened: u64, closed: u64) -> BreakerCounts {
    BreakerCounts {
        opened,
        half_opened,
        closed,
    }
}

#[tokio::test(start_paused = true)]
async fn it_opens_on_the_ratio_only_after_min_calls() {
    let r = rig(config()).await;
    // Nine failures in a row: under min_calls, still closed.
    r.switch.set(DOWN);
    calls(&r.db, 9).await;
    assert_eq!(r.breaker.state(), BreakerState::Closed);
    assert_eq!(r.breaker.window(), (9, 9));
    // The tenth call fails too: 10 of 10, open.
    calls(&r.db, 1).await;
    assert_eq!(r.breaker.state(), BreakerState::Open);
    assert_eq!(r.breaker.transitions(), counts(1, 0, 0));

    // Under the ratio it stays closed, at the ratio it opens.
    let r = rig(config()).await;
    calls(&r.db, 6).await;
    r.switch.set(DOWN);
    calls(&r.db, 5).await; // 5 of 11
    assert_eq!(r.breaker.state(), BreakerState::Closed);
    assert_eq!(r.breaker.window(), (11, 5));
    calls(&r.db, 1).await; // 6 of 12 = 0.5
    assert_eq!(r.breaker.state(), BreakerState::Open);

    // Timeouts count as failures too.
    let r = rig(config()).await;
    r.switch.set(TIMEOUT);
    calls(&r.db, 10).await;
    assert_eq!(r.breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn answers_of_a_working_provider_never_open_it() {
    let r = rig(config()).await;
    for mode in [NOT_FOUND, CONFLICT] {
        r.switch.set(mode);
        for e in calls(&r.db, 30).await {
            let kind = e.unwrap_err().kind();
            assert!(matches!(kind, ErrorKind::NotFound | ErrorKind::Conflict));
        }
    }
    assert_eq!(r.breaker.state(), BreakerState::Closed);
    assert_eq!(r.breaker.window(), (60, 0));
    // Shed calls are not counted at all.
    r.switch.set(SHED);
    calls(&r.db, 30).await;
    assert_eq!(r.breaker.window(), (60, 0));
    assert_eq!(r.breaker.state(), BreakerState::Closed);
    assert_eq!(r.breaker.transitions(), BreakerCounts::default());
}

#[tokio::test(start_paused = true)]
async fn old_failures_leave_the_window() {
    let r = rig(config()).await;
    r.switch.set(DOWN);
    calls(&r.db, 9).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(r.breaker.window(), (0, 0));
    calls(&r.db, 9).await;
    assert_eq!(r.breaker.state(), BreakerState::Closed);
    calls(&r.db, 1).await;
    assert_eq!(r.breaker.state(), BreakerState::Open);
}

async fn open(r: &Rig) {
    r.switch.set(DOWN);
    calls(&r.db, 10).await;
    assert_eq!(r.breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn while_open_it_answers_at_once_without_reaching_the_provider() {
    let r = rig(config()).await;
    open(&r).await;
    let attempts = r.fault.attempts();
    r.switch.set(PASS);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    for result in calls(&r.db, 100).await {
        let e = result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_unapplied(), "nothing reached the provider");
        assert!(!e.is_retryable(), "a retry above does not wait on it");
        assert_eq!(e.operation(), Some("get"));
        assert!(
            e.message()
                .starts_with("circuit breaker open for database provider memory"),
            "{e}"
        );
        assert!(
            e.message().contains("probe call through in 20000 ms"),
            "{e}"
        );
    }
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(r.fault.attempts(), attempts, "no call reached the provider");
    // Writes too.
    let e =
        r.db.create("agents", support::agent("x", "X"))
            .await
            .unwrap_err();
    assert!(e.is_unapplied());
    assert_eq!(r.fault.attempts(), attempts);
}

#[tokio::test(start_paused = true)]
async fn exactly_one_probe_when_half_open_and_success_closes() {
    let r = rig(config()).await;
    open(&r).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let before = r.fault.attempts();
    r.switch.set(SLOW_PASS);
    // Eight concurrent callers: the first polled is the probe, the other
    // seven are refused while it is in flight.
    let id = json!("a");
    let results = join_all((0..8).map(|_| r.db.get("agents", &id))).await;
    assert_eq!(r.fault.attempts(), before + 1, "exactly one probe");
    let (ok, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
    assert_eq!(ok.len(), 1);
    for e in refused {
        let e = e.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_unapplied());
        assert!(e.message().contains("half-open"), "{e}");
    }
    assert_eq!(r.breaker.state(), BreakerState::Closed);
    assert_eq!(r.breaker.transitions(), counts(1, 1, 1));
    // Closed with an empty window: calls go through again.
    assert_eq!(r.breaker.window(), (0, 0));
    r.switch.set(PASS);
    for result in calls(&r.db, 5).await {
        result.unwrap();
    }
    assert_eq!(r.fault.attempts(), before + 6);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_it_again_for_open_s() {
    let r = rig(config()).await;
    open(&r).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let before = r.fault.attempts();
    // The probe fails: open again, and refusing for another 30 s.
    let e = calls(&r.db, 1).await.pop().unwrap().unwrap_err();
    assert!(!e.is_unapplied(), "the probe reached the provider");
    assert_eq!(r.fault.attempts(), before + 1);
    assert_eq!(r.breaker.state(), BreakerState::Open);
    assert_eq!(r.breaker.transitions(), counts(2, 1, 0));
    tokio::time::sleep(Duration::from_secs(29)).await;
    r.switch.set(PASS);
    let e = calls(&r.db, 1).await.pop().unwrap().unwrap_err();
    assert!(e.message().contains("in 1000 ms"), "{e}");
    assert_eq!(r.fault.attempts(), before + 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    calls(&r.db, 1).await.pop().unwrap().unwrap();
    assert_eq!(r.breaker.state(), BreakerState::Closed);
    assert_eq!(r.breaker.transitions(), counts(2, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_probe_answered_not_found_closes_it() {
    let r = rig(config()).await;
    open(&r).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    r.switch.set(NOT_FOUND);
    let e = calls(&r.db, 1).await.pop().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(r.breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_lets_the_next_call_probe() {
    let r = rig(config()).await;
    open(&r).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    r.switch.set(SLOW_PASS);
    // The caller gives up on the probe after 10 ms.
    let cut =
        tokio::time::timeout(Duration::from_millis(10), r.db.get("agents", &json!("a"))).await;
    assert!(cut.is_err());
    assert_eq!(r.breaker.state(), BreakerState::Open);
    assert_eq!(r.breaker.transitions(), counts(2, 1, 0));
    // No new wait of open_s: the next call is the probe.
    calls(&r.db, 1).await.pop().unwrap().unwrap();
    assert_eq!(r.breaker.state(), BreakerState::Closed);
    assert_eq!(r.breaker.transitions(), counts(2, 2, 1));

    // A probe shed below the breaker does the same.
    open(&r).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    r.switch.set(SHED);
    let e = calls(&r.db, 1).await.pop().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(r.breaker.state(), BreakerState::Open);
    r.switch.set(PASS);
    calls(&r.db, 1).await.pop().unwrap().unwrap();
    assert_eq!(r.breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn each_breaker_has_its_own_state() {
    let a = rig(config()).await;
    let b = rig(config()).await;
    open(&a).await;
    assert_eq!(b.breaker.state(), BreakerState::Closed);
    calls(&b.db, 3).await.into_iter().for_each(|r| r.unwrap());
}

#[tokio::test(start_paused = true)]
async fn health_checks_pass_an_open_breaker_and_are_never_the_probe() {
    let r = rig(config()).await;
    // Health answers do not count: twenty of them leave the window empty.
    for _ in 0..20 {
        assert!(r.db.health().await.is_healthy());
    }
    assert_eq!(r.breaker.window(), (0, 0));
    open(&r).await;
    // Open: the provider's own report still comes through, failing while
    // the fault layer below says it is down (and reaching it: one attempt).
    let attempts = r.fault.attempts();
    let health = r.db.health().await;
    assert!(!health.is_healthy());
    assert!(health
        .message
        .unwrap_or_default()
        .contains("connection refused"));
    assert_eq!(r.fault.attempts(), attempts + 1);
    r.switch.set(PASS);
    assert!(r.db.health().await.is_healthy());
    assert_eq!(r.breaker.state(), BreakerState::Open);
    // Due for a probe: a health check is not it, the next call is.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(r.db.health().await.is_healthy());
    assert_eq!(r.breaker.state(), BreakerState::Open);
    calls(&r.db, 1).await.remove(0).unwrap();
    assert_eq!(r.breaker.state(), BreakerState::Closed);
}
