//! The concurrency limit: calls beyond max_in_flight wait in a bounded
//! queue, and are shed (RateLimited, unapplied) beyond it or after
//! queue_timeout.

#![allow(clippy::unwrap_used)] // test helpers, not library code
mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use support::{agent, agents, memory_db, stacked, Act, Fault};
use tokio::time::Instant;
use truststream_core::{ErrorKind, Result};
use truststream_layer_resilience::{Limit, LimitConfig};

fn limit(max_in_flight: usize, queue: usize, queue_timeout_ms: u64) -> Arc<Limit> {
    Arc::new(Limit::new(LimitConfig {
        max_in_flight,
        queue,
        queue_timeout_ms,
    }))
}

fn assert_shed(result: &Result<()>, why: &str) {
    let e = result.as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert!(e.is_unapplied(), "it never reached the provider");
    assert!(e.is_retryable());
    assert!(e.message().contains(why), "{e}");
    assert!(
        e.message()
            .contains("concurrency limit (2 calls in flight)"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn calls_beyond_in_flight_and_queue_are_shed_at_once() {
    let db = memory_db().await;
    let fault = Fault::new(|_, _| Act::Slow(Duration::from_millis(400)));
    let l = limit(2, 2, 1000);
    let layered = stacked(&db, &fault, Arc::clone(&l));
    let started = Instant::now();
    let id = json!("a");
    let results: Vec<Result<()>> = join_all((0..7).map(|_| async {
        let r = layered.get("agents", &id).await.map(drop);
        (r, started.elapsed())
    }))
    .await
    .into_iter()
    .map(|(r, at)| {
        // Two run at once (400 ms), two wait for them (800 ms), three are
        // refused at once.
        let expected = match &r {
            Ok(()) => [400, 800].map(Duration::from_millis).to_vec(),
            Err(_) => vec![Duration::ZERO],
        };
        assert!(expected.contains(&at), "{r:?} at {at:?}");
        r
    })
    .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    for r in results.iter().filter(|r| r.is_err()) {
        assert_shed(r, "the queue is full");
    }
    assert_eq!(fault.attempts(), 4, "shed calls never reached the provider");
    assert_eq!(l.shed(), 3);
    assert_eq!((l.in_flight(), l.waiting()), (0, 0));

    // Calls succeed again afterwards.
    layered.create("agents", agent("a", "Ada")).await.unwrap();
    assert_eq!(agents(&db).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_past_queue_timeout_is_shed() {
    let db = memory_db().await;
    let fault = Fault::new(|n, _| {
        if n <= 2 {
            Act::Slow(Duration::from_secs(5))
        } else {
            Act::Pass
        }
    });
    let l = limit(2, 10, 1000);
    let layered = stacked(&db, &fault, Arc::clone(&l));
    let started = Instant::now();
    let id = json!("a");
    let slow = join_all((0..2).map(|_| layered.get("agents", &id)));
    let waiting = async {
        // Let the two slow calls take their places first.
        tokio::task::yield_now().await;
        let r = layered.create("agents", agent("w", "W")).await.map(drop);
        (r, started.elapsed())
    };
    let (slow, (waited, at)) = tokio::join!(slow, waiting);
    for r in slow {
        r.unwrap();
    }
    assert_shed(&waited, "no place within 1000 ms");
    assert_eq!(at, Duration::from_millis(1000));
    assert_eq!(fault.attempts(), 2);
    assert!(
        agents(&db).await.is_empty(),
        "the shed create changed nothing"
    );
    assert_eq!((l.in_flight(), l.waiting(), l.shed()), (0, 0, 1));

    // A legitimate call succeeds afterwards.
    layered.create("agents", agent("w", "W")).await.unwrap();
    assert_eq!(agents(&db).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn queued_calls_get_places_in_arrival_order() {
    let db = memory_db().await;
    let fault = Fault::new(|_, _| Act::Slow(Duration::from_millis(100)));
    let layered = stacked(&db, &fault, limit(1, 100, 10_000));
    let started = Instant::now();
    let id = json!("a");
    let done: Vec<Duration> = join_all((0..5).map(|_| async {
        layered.get("agents", &id).await.unwrap();
        started.elapsed()
    }))
    .await;
    let expected: Vec<Duration> = (1..=5).map(|i| Duration::from_millis(100 * i)).collect();
    assert_eq!(done, expected);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_leaves_the_queue() {
    let db = memory_db().await;
    let fault = Fault::new(|_, _| Act::Slow(Duration::from_secs(5)));
    let l = limit(1, 1, 10_000);
    let layered = stacked(&db, &fault, Arc::clone(&l));
    let id = json!("a");
    let running = layered.get("agents", &id);
    let quitter = async {
        tokio::task::yield_now().await;
        assert_eq!(l.in_flight(), 1);
        let cut = tokio::time::timeout(Duration::from_millis(10), layered.get("agents", &id)).await;
        assert!(cut.is_err());
        // Its place in the queue is free again: the next one may wait.
        assert_eq!(l.waiting(), 0);
        layered.get("agents", &id).await.map(drop)
    };
    let (a, b) = tokio::join!(running, quitter);
    a.unwrap();
    b.unwrap();
    assert_eq!(l.shed(), 0);
}
