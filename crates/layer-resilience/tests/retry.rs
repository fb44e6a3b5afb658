//! The retry layer: what it repeats, how often, how long it waits, and what
//! it gives up on.

#![allow(clippy::unwrap_used)] // test helpers, not library code
mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use support::{agent, agents, memory_db, stacked, Act, Fault};
use tokio::time::Instant;
use truststream_core::{Error, ErrorKind};
use truststream_core_storage::{Storage, UploadOptions};
use truststream_layer::{around_database, around_storage};
use truststream_layer_resilience::{Retry, RetryConfig, Timeout, TimeoutConfig};
use truststream_storage_memory::MemoryStorage;

fn retry(attempts: u32, base_ms: u64, max_ms: u64, budget_ms: u64) -> Arc<Retry> {
    Arc::new(Retry::new(RetryConfig {
        attempts,
        base_ms,
        max_ms,
        budget_ms,
    }))
}

fn unavailable() -> Error {
    Error::unavailable("injected: connection reset")
}

fn unapplied() -> Error {
    Error::unavailable("injected: no connection").unapplied()
}

#[tokio::test(start_paused = true)]
async fn a_read_is_repeated_until_it_succeeds() {
    let db = memory_db().await;
    db.create("agents", agent("a", "Ada")).await.unwrap();
    let fault = Fault::first(2, unavailable);
    let r = retry(3, 50, 2000, 5000);
    let layered = stacked(&db, &fault, Arc::clone(&r));
    let got = layered.get("agents", &json!("a")).await.unwrap().unwrap();
    assert_eq!(got["name"], "Ada");
    assert_eq!(fault.attempts(), 3);
    let stats = r.stats();
    assert_eq!((stats.calls, stats.retries, stats.give_ups), (1, 2, 0));
    assert_eq!(stats.attempts(), 3);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_bounded_and_the_give_up_is_permanent() {
    let db = memory_db().await;
    let fault = Fault::always(unavailable);
    let r = retry(4, 50, 2000, 60_000);
    let layered = stacked(&db, &fault, Arc::clone(&r));
    let started = Instant::now();
    let e = layered.get("agents", &json!("a")).await.unwrap_err();
    assert_eq!(fault.attempts(), 4);
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(e.message(), "injected: connection reset");
    assert!(!e.is_retryable(), "a give-up is permanent");
    // Full jitter: each backoff is at most 50, 100, 200 ms.
    assert!(started.elapsed() <= Duration::from_millis(350));
    assert_eq!(r.stats().give_ups, 1);
}

#[tokio::test(start_paused = true)]
async fn backoffs_double_with_full_jitter_up_to_max_ms() {
    let db = memory_db().await;
    let fault = Fault::always(unavailable);
    let layered = stacked(&db, &fault, retry(12, 100, 400, 600_000));
    layered.get("agents", &json!("a")).await.unwrap_err();
    let times = fault.times();
    assert_eq!(times.len(), 12);
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let bound = Duration::from_millis((100u64 << i).min(400));
        assert!(*gap <= bound, "backoff {i} was {gap:?}, over {bound:?}");
    }
    // Jittered, not fixed: the nine draws bounded by 400 ms are not all
    // the bound, nor all 0.
    assert!(gaps[2..].iter().any(|g| *g < Duration::from_millis(399)));
    assert!(gaps.iter().any(|g| *g > Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_never_slept_past() {
    let db = memory_db().await;
    for _ in 0..20 {
        // Each attempt takes 300 ms; backoffs up to 1 s; 2.5 s in all.
        let fault = Fault::new(|_, _| Act::SlowFail(Duration::from_millis(300), unavailable()));
        let r = retry(100, 1000, 1000, 2500);
        let layered = stacked(&db, &fault, Arc::clone(&r));
        let started = Instant::now();
        let e = layered.get("agents", &json!("a")).await.unwrap_err();
        let elapsed = started.elapsed();
        // The last attempt starts within the budget and takes 300 ms.
        assert!(
            elapsed <= Duration::from_millis(2800),
            "{elapsed:?} past the budget"
        );
        let last = *fault.times().last().unwrap() - started;
        assert!(last <= Duration::from_millis(2500), "{last:?}");
        assert!(fault.attempts() >= 2 && fault.attempts() < 100);
        assert!(!e.is_retryable());
        assert_eq!(r.stats().give_ups, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_create_with_an_unknown_outcome_is_never_repeated() {
    let db = memory_db().await;
    let fault = Fault::always(unavailable);
    let r = retry(5, 10, 100, 5000);
    let layered = stacked(&db, &fault, Arc::clone(&r));
    let e = layered.create("agents", agent("c", "C")).await.unwrap_err();
    assert_eq!(fault.attempts(), 1);
    // The original error, as it was.
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(e.message(), "injected: connection reset");
    assert!(e.is_retryable());
    assert_eq!(r.stats().retries, 0);

    // The same through a timeout below the retry: the create timed out
    // after the provider got it, so it is not sent again.
    let fault = Fault::new(|_, _| Act::Slow(Duration::from_secs(30)));
    let timeout = Timeout::new(TimeoutConfig {
        write_ms: 100,
        ..TimeoutConfig::default()
    });
    let layered = around_database(
        stacked(&db, &fault, Arc::new(timeout)),
        retry(5, 10, 100, 5000),
    );
    let e = layered.create("agents", agent("t", "T")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(fault.attempts(), 1);

    // ... while a read that timed out is repeated.
    let fault = Fault::new(|n, _| {
        if n == 1 {
            Act::Slow(Duration::from_secs(30))
        } else {
            Act::Pass
        }
    });
    let timeout = Timeout::new(TimeoutConfig {
        read_ms: 100,
        ..TimeoutConfig::default()
    });
    let layered = around_database(
        stacked(&db, &fault, Arc::new(timeout)),
        retry(5, 10, 100, 5000),
    );
    assert!(layered.get("agents", &json!("t")).await.unwrap().is_none());
    assert_eq!(fault.attempts(), 2);
    assert!(agents(&db).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_unapplied_create_is_repeated_with_its_row_intact() {
    let db = memory_db().await;
    let fault = Fault::first(2, unapplied);
    let layered = stacked(&db, &fault, retry(3, 10, 100, 5000));
    let stored = layered.create("agents", agent("u", "Una")).await.unwrap();
    assert_eq!(stored["name"], "Una");
    assert_eq!(fault.attempts(), 3);
    assert_eq!(fault.reached(), 1);
    let rows = agents(&db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "u");
    assert_eq!(rows[0]["name"], "Una");
}

#[tokio::test(start_paused = true)]
async fn errors_that_a_retry_cannot_help_are_not_repeated() {
    let db = memory_db().await;
    for make in [
        (|| Error::not_found("gone")) as fn() -> Error,
        || Error::conflict("taken"),
        || Error::invalid_input("bad"),
        || Error::unavailable("down for good").permanent(),
    ] {
        let fault = Fault::always(make);
        let layered = stacked(&db, &fault, retry(5, 10, 100, 5000));
        let e = layered.get("agents", &json!("a")).await.unwrap_err();
        assert_eq!(fault.attempts(), 1, "{e}");
        assert_eq!(e.message(), make().message());
    }
}

#[tokio::test(start_paused = true)]
async fn stacked_retries_do_not_multiply() {
    let db = memory_db().await;
    let fault = Fault::always(unavailable);
    let inner = retry(3, 10, 100, 5000);
    let outer = retry(3, 10, 100, 5000);
    let layered = around_database(stacked(&db, &fault, Arc::clone(&inner)), Arc::clone(&outer));
    let e = layered.get("agents", &json!("a")).await.unwrap_err();
    assert_eq!(fault.attempts(), 3, "3 attempts, not 3 x 3");
    assert!(!e.is_retryable());
    assert_eq!(inner.stats().give_ups, 1);
    assert_eq!(outer.stats().retries, 0);
    assert_eq!(outer.stats().give_ups, 0);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_upload_is_never_repeated_but_a_buffered_one_is() {
    let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    store.create_bucket("docs").await.unwrap();

    let fault = Fault::first(1, unapplied);
    let layered = around_storage(
        around_storage(Arc::clone(&store), Arc::clone(&fault)),
        retry(5, 10, 100, 5000),
    );
    let body: truststream_core_storage::ByteStream = Box::pin(futures::stream::iter(vec![Ok(
        Bytes::from_static(b"streamed"),
    )]));
    let e = layered
        .upload_stream("docs", "s.txt", body, &UploadOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(fault.attempts(), 1);
    assert!(store.download("docs", "s.txt").await.is_err());

    let fault = Fault::first(1, unavailable);
    let layered = around_storage(
        around_storage(Arc::clone(&store), Arc::clone(&fault)),
        retry(5, 10, 100, 5000),
    );
    layered
        .upload(
            "docs",
            "b.txt",
            Bytes::from_static(b"buffered"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(fault.attempts(), 2);
    assert_eq!(store.download("docs", "b.txt").await.unwrap(), "buffered");
}

#[tokio::test(start_paused = true)]
async fn one_attempt_means_no_repeat() {
    let db = memory_db().await;
    let fault = Fault::always(unavailable);
    let layered = stacked(&db, &fault, retry(1, 10, 100, 5000));
    let started = Instant::now();
    let e = layered.get("agents", &json!("a")).await.unwrap_err();
    assert_eq!(fault.attempts(), 1);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(!e.is_retryable());
}
