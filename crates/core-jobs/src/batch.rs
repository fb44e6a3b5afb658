//! Group commit: many concurrent calls written in one store round trip.
//!
//! A provider whose [`crate::Jobs::complete`] costs a round trip per job
//! puts the completions of all its workers through a [`Batcher`]: each
//! call hands its item to one background task and waits for its own
//! answer; the task takes the first waiting item, lingers a little for
//! more (at most `linger`, at most `max` items), writes them with one
//! `flush` call, and answers each caller. Items that arrive while a flush
//! runs wait for the next one, so a busy store gets bigger batches and an
//! idle one answers after at most `linger`.
//!
//! A call returns only after its batch was written (or failed), so the
//! caller's contract is the same as without batching: an `Ok` is durable,
//! and a process that dies before the write loses only calls that had not
//! returned yet (for completions: those jobs run again after their lease,
//! as any job whose completion was not recorded). Dropping the batcher
//! closes its queue; the task writes what is still queued, then ends.
//! [`Batcher::close`] does the same and waits for it: every call queued
//! before it is written and answered, later calls are refused.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::{mpsc, oneshot};
use truststream_core::{BoxFuture, Error};

use crate::JobsResult;

/// Writes a batch: one answer per item, in the items' order.
pub type Flush<T, R> = Arc<dyn Fn(Vec<T>) -> BoxFuture<'static, Vec<JobsResult<R>>> + Send + Sync>;

/// What a [`Batcher`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Flushes (store writes) so far.
    pub batches: u64,
    /// Items written in them.
    pub items: u64,
    /// The largest batch.
    pub largest: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    items: AtomicU64,
    largest: AtomicU64,
}

type Pending<T, R> = (T, oneshot::Sender<JobsResult<R>>);

/// Collects concurrent calls into batches; see the [module docs](self).
pub struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<Pending<T, R>>,
    counters: Arc<Counters>,
    operation: &'static str,
    /// Tells the task to close its queue ([`Batcher::close`]).
    stop: Arc<tokio::sync::Notify>,
    /// The task, until [`Batcher::close`] has waited for it.
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("operation", &self.operation)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the batching task on the current tokio runtime: batches of at
    /// most `max` items (at least 1), each flushed at most `linger` after
    /// its first item arrived (zero: whatever is queued at once).
    /// `operation` names the call in errors (`"jobs.complete"`).
    pub fn start(
        operation: &'static str,
        max: usize,
        linger: Duration,
        flush: Flush<T, R>,
    ) -> Self {
        Self::start_with(operation, max, linger, 1, |_| false, flush)
    }

    /// [`Batcher::start`], where an item for which `urgent` is true ends
    /// the linger: its batch is flushed as soon as it is taken, with
    /// whatever else is queued by then (a provider that writes completions
    /// and claims in one round trip lets completions wait for company, a
    /// claim not); and up to `parallel` flushes (at least 1) run at once:
    /// the next batch gathers while a flush runs, and is flushed beside it
    /// when fewer than `parallel` run (with 1, as [`Batcher::start`]: the
    /// next batch waits for the flush).
    pub fn start_with(
        operation: &'static str,
        max: usize,
        linger: Duration,
        parallel: usize,
        urgent: fn(&T) -> bool,
        flush: Flush<T, R>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let rules = Rules {
            max: max.max(1),
            linger,
            parallel: parallel.max(1),
            urgent,
        };
        let task = tokio::spawn(run(rx, rules, flush, counters.clone(), stop.clone()));
        Batcher {
            tx,
            counters,
            operation,
            stop,
            task: tokio::sync::Mutex::new(Some(task)),
        }
    }

    /// Queues `item` for the next batch and waits for its answer. When the
    /// batching task is gone (its runtime shut down) the answer is
    /// `Unavailable`: unapplied when the item was never queued, of unknown
    /// outcome when the task stopped after taking it.
    pub async fn submit(&self, item: T) -> JobsResult<R> {
        let (answer, wait) = oneshot::channel();
        self.tx.send((item, answer)).map_err(|_| {
            Error::unavailable(
                "the batching task has stopped (the provider was closed or its runtime shut \
                 down); nothing was written",
            )
            .with_operation(self.operation)
            .unapplied()
        })?;
        wait.await.map_err(|_| {
            Error::unavailable(
                "the batching task stopped before answering; the write may or may not have happened",
            )
            .with_operation(self.operation)
        })?
    }
}

impl<T, R> Batcher<T, R> {
    /// Writes every call queued so far (each caller gets its answer), then
    /// ends the batching task; calls submitted afterwards fail with
    /// `Unavailable` (unapplied). Idempotent: a second call waits for the
    /// first to finish.
    pub async fn close(&self) {
        self.stop.notify_one();
        let mut task = self.task.lock().await;
        if let Some(t) = task.take() {
            // A task that panicked or was cancelled has nothing left to write.
            let _ = t.await;
        }
    }

    /// Batches and items written so far.
    pub fn stats(&self) -> BatchStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BatchStats {
            batches: g(&self.counters.batches),
            items: g(&self.counters.items),
            largest: g(&self.counters.largest),
        }
    }
}

/// How a [`Batcher`]'s task forms and flushes batches.
struct Rules<T> {
    max: usize,
    linger: Duration,
    parallel: usize,
    urgent: fn(&T) -> bool,
}

async fn run<T, R>(
    mut rx: mpsc::UnboundedReceiver<Pending<T, R>>,
    Rules {
        max,
        linger,
        parallel,
        urgent,
    }: Rules<T>,
    flush: Flush<T, R>,
    counters: Arc<Counters>,
    stop: Arc<tokio::sync::Notify>,
) where
    T: Send + 'static,
    R: Send + 'static,
{
    let mut closing = false;
    // A batch gathers only once it may be flushed: with one flight, items
    // that arrive while a flush runs wait for the next batch.
    let flights = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut flying = tokio::task::JoinSet::new();
    loop {
        let Ok(flight) = flights.clone().acquire_owned().await else {
            break;
        };
        while flying.try_join_next().is_some() {}
        let first = if closing {
            rx.recv().await
        } else {
            tokio::select! {
                p = rx.recv() => p,
                () = stop.notified() => {
                    // Refuse new items; the ones queued are still received.
                    closing = true;
                    rx.close();
                    rx.recv().await
                }
            }
        };
        let Some(first) = first else { break };
        let mut rush = urgent(&first.0);
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match rx.try_recv() {
                Ok(p) => {
                    rush |= urgent(&p.0);
                    batch.push(p);
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if linger.is_zero() || closing || rush {
                        break;
                    }
                    tokio::select! {
                        next = tokio::time::timeout_at(until, rx.recv()) => match next {
                            Ok(Some(p)) => {
                                rush |= urgent(&p.0);
                                batch.push(p);
                            }
                            Ok(None) | Err(_) => break,
                        },
                        () = stop.notified() => {
                            // Closing: no more lingering; take what is queued.
                            closing = true;
                            rx.close();
                        }
                    }
                }
            }
        }
        let (flush, counters) = (flush.clone(), counters.clone());
        flying.spawn(async move {
            write(batch, &flush, &counters).await;
            drop(flight);
        });
    }
    // Closing: every batch taken is written and answered before the task
    // ends.
    while flying.join_next().await.is_some() {}
}

/// Flushes `batch` and answers each of its callers.
async fn write<T, R>(batch: Vec<Pending<T, R>>, flush: &Flush<T, R>, counters: &Counters) {
    let n = batch.len();
    let (items, answers): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
    // A panicking flush fails its own batch, not the batcher: the task
    // (and every later call) would otherwise be gone for good.
    let mut results = match AssertUnwindSafe(async { flush(items).await })
        .catch_unwind()
        .await
    {
        Ok(results) => results,
        Err(_) => (0..n)
            .map(|_| {
                Err(Error::internal(
                    "the batch write panicked; whether it was written is unknown",
                ))
            })
            .collect(),
    };
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.items.fetch_add(n as u64, Ordering::Relaxed);
    counters.largest.fetch_max(n as u64, Ordering::Relaxed);
    if results.len() != n {
        results = (0..n)
            .map(|_| {
                Err(Error::internal(
                    "a batch write answered for a different number of items",
                ))
            })
            .collect();
    }
    for (answer, result) in answers.into_iter().zip(results) {
        // A caller that stopped waiting (its task aborted) needs no answer.
        let _ = answer.send(result);
    }
}

/// One error for every item of a failed batch, keeping the kind, the
/// retry status, whether it is unapplied, the context pairs and the
/// message of `e` (which is not `Clone`), with the text of its sources
/// after the message.
pub fn fan_out<R>(e: &Error, n: usize, operation: &'static str) -> Vec<JobsResult<R>> {
    let mut message = e.message().to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    (0..n)
        .map(|_| {
            let mut copy = Error::new(e.kind(), message.clone())
                .with_retryable(e.is_retryable())
                .with_operation(operation);
            for (key, value) in e.context() {
                copy = copy.with_context(key, value.clone());
            }
            Err(if e.is_unapplied() {
                copy.unapplied()
            } else {
                copy
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_writes_what_is_queued_and_refuses_later_calls() {
        // A linger far longer than the test: only close() ends the wait.
        let b = Arc::new(Batcher::start(
            "test",
            100,
            Duration::from_secs(3600),
            doubler(Duration::ZERO),
        ));
        let mut calls = Vec::new();
        for i in 0..3u64 {
            let b = b.clone();
            calls.push(tokio::spawn(async move { b.submit(i).await }));
        }
        // Let every call queue its item (one thread: the spawned calls
        // run while this task yields).
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        b.close().await;
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.unwrap().unwrap(), 2 * i as u64);
        }
        assert_eq!(b.stats().items, 3);
        let late = b.submit(9).await.unwrap_err();
        assert_eq!(late.kind(), truststream_core::ErrorKind::Unavailable);
        assert!(late.is_unapplied(), "{late}");
        assert!(late.message().contains("closed"), "{late}");
        b.close().await; // idempotent
    }

    fn doubler(delay: Duration) -> Flush<u64, u64> {
        Arc::new(move |items: Vec<u64>| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                items.into_iter().map(|i| Ok(i * 2)).collect()
            })
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_share_batches_and_get_their_own_answers() {
        let b = Arc::new(Batcher::start(
            "test",
            16,
            Duration::from_millis(5),
            doubler(Duration::from_millis(5)),
        ));
        let mut tasks = Vec::new();
        for i in 0..100u64 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move { (i, b.submit(i).await) }));
        }
        for t in tasks {
            let (i, r) = t.await.expect("join");
            assert_eq!(r.expect("answer"), i * 2);
        }
        let s = b.stats();
        assert_eq!(s.items, 100);
        assert!(s.largest <= 16, "{s:?}");
        assert!(s.batches <= 50, "calls were batched: {s:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_urgent_item_ends_the_linger_and_takes_the_queued_ones_along() {
        // Odd items are urgent; the linger is an hour of (paused) time.
        let b = Arc::new(Batcher::start_with(
            "test",
            100,
            Duration::from_secs(3600),
            1,
            |i: &u64| i % 2 == 1,
            doubler(Duration::ZERO),
        ));
        let start = tokio::time::Instant::now();
        let lingering = {
            let b = b.clone();
            tokio::spawn(async move { b.submit(2).await })
        };
        // The first item waits for company...
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!lingering.is_finished());
        assert_eq!(b.stats().batches, 0);
        // ...until an urgent one arrives: one batch, both answered at once.
        assert_eq!(b.submit(3).await.expect("answer"), 6);
        assert_eq!(lingering.await.expect("join").expect("answer"), 4);
        assert!(start.elapsed() < Duration::from_secs(2));
        let s = b.stats();
        assert_eq!((s.batches, s.items), (1, 2), "{s:?}");
        // An urgent first item does not linger either.
        assert_eq!(b.submit(5).await.expect("answer"), 10);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(b.stats().batches, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_flushes_run_beside_each_other_and_close_waits_for_all() {
        for (parallel, took) in [(1, 2), (2, 1)] {
            // Every item is urgent; each flush takes 1 s of (paused) time.
            let b = Arc::new(Batcher::start_with(
                "test",
                100,
                Duration::from_secs(3600),
                parallel,
                |_: &u64| true,
                doubler(Duration::from_secs(1)),
            ));
            let start = tokio::time::Instant::now();
            let first = {
                let b = b.clone();
                tokio::spawn(async move { b.submit(1).await })
            };
            // The first batch is flying when the second item comes.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let second = {
                let b = b.clone();
                tokio::spawn(async move { b.submit(2).await })
            };
            tokio::time::sleep(Duration::from_millis(10)).await;
            b.close().await;
            assert_eq!(first.await.expect("join").expect("answer"), 2);
            assert_eq!(second.await.expect("join").expect("answer"), 4);
            let elapsed = start.elapsed().as_secs_f64();
            assert!(
                elapsed >= took as f64 && elapsed < took as f64 + 0.5,
                "{parallel} at once: {elapsed} s"
            );
            assert_eq!(b.stats().batches, 2);
        }
    }

    #[tokio::test]
    async fn a_lone_call_waits_at_most_the_linger() {
        let b = Batcher::start(
            "test",
            100,
            Duration::from_millis(20),
            doubler(Duration::ZERO),
        );
        let start = tokio::time::Instant::now();
        assert_eq!(b.submit(21).await.expect("answer"), 42);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(b.stats().batches, 1);
    }

    #[tokio::test]
    async fn a_panicking_write_fails_its_batch_and_later_batches_are_written() {
        let calls = Arc::new(AtomicU64::new(0));
        let flush: Flush<u64, u64> = {
            let calls = calls.clone();
            Arc::new(move |items: Vec<u64>| {
                let first = calls.fetch_add(1, Ordering::Relaxed) == 0;
                Box::pin(async move {
                    assert!(!first, "the first batch write panics");
                    items.into_iter().map(|i| Ok(i * 2)).collect()
                })
            })
        };
        let b = Batcher::start("test", 4, Duration::ZERO, flush);
        let e = b.submit(1).await.expect_err("the write panicked");
        assert_eq!(e.kind(), truststream_core::ErrorKind::Internal, "{e}");
        assert!(!e.is_unapplied(), "whether it was written is unknown");
        assert_eq!(b.submit(2).await.expect("the batcher still writes"), 4);
        assert_eq!(b.stats().batches, 2);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_call_with_its_kind() {
        let failing: Flush<u64, u64> = Arc::new(|items: Vec<u64>| {
            Box::pin(async move {
                let e = Error::unavailable("the store is down");
                fan_out(&e, items.len(), "test")
            })
        });
        let b = Batcher::start("test", 4, Duration::ZERO, failing);
        let e = b.submit(1).await.expect_err("the batch failed");
        assert_eq!(e.kind(), truststream_core::ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(e.message().contains("the store is down"), "{e}");
    }

    #[test]
    fn fan_out_copies_the_error_once_per_item() {
        let e = Error::unavailable("no connection")
            .with_operation("inner")
            .with_context("table", "jobs")
            .with_source(std::io::Error::other("connection refused"))
            .unapplied();
        let copies = fan_out::<()>(&e, 2, "jobs.complete");
        assert_eq!(copies.len(), 2);
        for c in copies {
            let c = c.expect_err("an error per item");
            assert_eq!(c.kind(), truststream_core::ErrorKind::Unavailable);
            assert_eq!(c.message(), "no connection: connection refused");
            assert_eq!(c.operation(), Some("jobs.complete"));
            assert_eq!(c.context(), e.context());
            assert!(c.is_retryable() && c.is_unapplied(), "{c:?}");
        }
    }
}
