//! Worker cases: the `truststream_core_jobs::Worker` runtime against the
//! provider (handlers, panics, timeouts, lease extension, graceful stop).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use truststream_core::BoxFuture;
use truststream_core_jobs::{
    Backoff, JobContext, JobError, JobState, Worker, WorkerBuilder, WorkerHandle,
};

use super::{case, enqueue, get, job, request, wait_for, JobsFixture};
use crate::harness::Case;
use crate::{ensure, ensure_eq, CaseResult, Failure};

/// The worker cases, in run order.
pub fn cases() -> Vec<Case<JobsFixture>> {
    vec![
        case!("worker.runs_typed_handlers_once", [], runs_handlers),
        case!("worker.panic_is_a_failure", [], panic_is_failure),
        case!("worker.poison_job_dies_queue_moves", [], poison_job),
        case!("worker.timeout_is_a_failure", [], timeout_is_failure),
        case!("worker.extends_running_leases", [], extends_leases),
        case!("worker.graceful_stop_releases", [], graceful_stop),
        case!(
            "worker.idle_wakes_on_enqueue",
            ["local_wakeups"],
            wakes_on_enqueue
        ),
    ]
}

#[derive(serde::Deserialize)]
struct Payload {
    n: u64,
}

fn seen() -> Arc<Mutex<BTreeMap<u64, u32>>> {
    Arc::new(Mutex::new(BTreeMap::new()))
}

fn record(seen: &Mutex<BTreeMap<u64, u32>>, n: u64) {
    *seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(n)
        .or_default() += 1;
}

async fn wait_state(fx: &JobsFixture, job_type: &str, state: JobState, n: u64) -> CaseResult {
    wait_for(&format!("{n} {job_type} jobs {state}"), || async {
        Ok((fx.jobs.stats().await?.count(job_type, state) >= n).then_some(()))
    })
    .await
}

/// A worker on the fixture's provider that polls every 50 ms when idle.
fn builder(fx: &JobsFixture) -> WorkerBuilder {
    Worker::builder(fx.jobs.clone()).poll_interval(Duration::from_millis(50))
}

async fn stop(worker: WorkerHandle) -> truststream_core_jobs::WorkerReport {
    worker.stop(Duration::from_secs(20)).await
}

async fn runs_handlers(fx: JobsFixture) -> CaseResult {
    let s = seen();
    let s2 = s.clone();
    let worker = builder(&fx)
        .concurrency(4)
        .register("w_typed", move |ctx: JobContext, p: Payload| {
            let s = s2.clone();
            async move {
                if ctx.attempt() != 1 {
                    return Err(JobError::permanent("ran twice"));
                }
                record(&s, p.n);
                Ok(())
            }
        })?
        .start()?;
    fx.jobs
        .enqueue_many((0..30).map(|n| job("w_typed", n)).collect())
        .await?;
    // One with a payload that does not decode fails permanently.
    let bad = enqueue(
        &fx,
        truststream_core_jobs::NewJob::from_json("w_typed", serde_json::json!("x")),
    )
    .await?;
    wait_state(&fx, "w_typed", JobState::Completed, 30).await?;
    wait_state(&fx, "w_typed", JobState::Dead, 1).await?;
    let report = stop(worker).await;
    let counts = s.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ensure_eq!(counts.len(), 30, "every job ran");
    ensure!(counts.values().all(|&c| c == 1), "each once: {counts:?}");
    ensure_eq!(report.completed, 30, "{report:?}");
    let b = get(&fx, bad).await?;
    ensure_eq!(
        (b.state, b.attempts),
        (JobState::Dead, 1),
        "an undecodable payload is not retried"
    );
    Ok(())
}

async fn panic_is_failure(fx: JobsFixture) -> CaseResult {
    let id = enqueue(
        &fx,
        job("w_panic", 1)
            .max_attempts(3)
            .backoff(Backoff::fixed(Duration::from_millis(20))),
    )
    .await?;
    let worker = builder(&fx)
        .concurrency(2)
        .register("w_panic", |ctx: JobContext, _p: Payload| async move {
            if ctx.attempt() == 1 {
                panic!("handler bug on the first attempt");
            }
            Ok(())
        })?
        .start()?;
    wait_state(&fx, "w_panic", JobState::Completed, 1).await?;
    let report = stop(worker).await;
    let j = get(&fx, id).await?;
    ensure_eq!(j.attempts, 2);
    ensure!(
        j.history[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("panicked") && e.contains("handler bug")),
        "{:?}",
        j.history
    );
    ensure!(report.panicked >= 1, "{report:?}");
    Ok(())
}

async fn poison_job(fx: JobsFixture) -> CaseResult {
    let poison = enqueue(
        &fx,
        job("w_poison", 0)
            .max_attempts(3)
            .backoff(Backoff::fixed(Duration::from_millis(20))),
    )
    .await?;
    let worker = builder(&fx)
        .concurrency(2)
        .register("w_poison", |_ctx: JobContext, p: Payload| async move {
            if p.n == 0 {
                Err(JobError::retry("always fails"))
            } else {
                Ok(())
            }
        })?
        .start()?;
    fx.jobs
        .enqueue_many((1..=10).map(|n| job("w_poison", n)).collect())
        .await?;
    wait_state(&fx, "w_poison", JobState::Completed, 10).await?;
    wait_state(&fx, "w_poison", JobState::Dead, 1).await?;
    stop(worker).await;
    let j = get(&fx, poison).await?;
    ensure_eq!(
        (j.state, j.attempts, j.history.len()),
        (JobState::Dead, 3, 3)
    );
    ensure!(
        j.history
            .iter()
            .all(|a| a.error.as_deref() == Some("always fails")),
        "{:?}",
        j.history
    );
    Ok(())
}

async fn timeout_is_failure(fx: JobsFixture) -> CaseResult {
    let id = enqueue(
        &fx,
        job("w_slow", 1)
            .max_attempts(1)
            .timeout(Duration::from_millis(100)),
    )
    .await?;
    let worker = builder(&fx)
        .register("w_slow", |_ctx: JobContext, _p: Payload| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })?
        .start()?;
    wait_state(&fx, "w_slow", JobState::Dead, 1).await?;
    let report = stop(worker).await;
    let j = get(&fx, id).await?;
    ensure!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{:?}",
        j.last_error
    );
    ensure_eq!(report.timed_out, 1, "{report:?}");
    Ok(())
}

async fn extends_leases(fx: JobsFixture) -> CaseResult {
    let id = enqueue(&fx, job("w_long", 1)).await?;
    let worker = builder(&fx)
        .lease(Duration::from_secs(2))
        .register("w_long", |_ctx: JobContext, _p: Payload| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })?
        .start()?;
    wait_for("the worker to claim the job", || async {
        Ok((get(&fx, id).await?.state == JobState::Running).then_some(()))
    })
    .await?;
    // While the handler runs past several lease lengths, nobody else gets it.
    wait_for("the job to complete", || async {
        let stolen = fx
            .jobs
            .claim(&request(&["w_long"], 1, Duration::from_secs(60), "thief"))
            .await?;
        ensure!(
            stolen.is_empty(),
            "another worker claimed a job whose lease was being extended"
        );
        Ok((get(&fx, id).await?.state == JobState::Completed).then_some(()))
    })
    .await?;
    let report = stop(worker).await;
    ensure_eq!(get(&fx, id).await?.attempts, 1);
    ensure_eq!(report.lost_leases, 0, "{report:?}");
    Ok(())
}

async fn graceful_stop(fx: JobsFixture) -> CaseResult {
    let slow = enqueue(&fx, job("w_stuck", 1)).await?;
    let quick = enqueue(&fx, job("w_quick", 2)).await?;
    let started = Arc::new(tokio::sync::Notify::new());
    let st = started.clone();
    let handler = move |_ctx: JobContext, p: Payload| -> BoxFuture<'static, Result<(), JobError>> {
        let st = st.clone();
        Box::pin(async move {
            if p.n == 1 {
                st.notify_one();
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok(())
        })
    };
    let worker = builder(&fx)
        .concurrency(2)
        .register("w_stuck", handler.clone())?
        .register("w_quick", handler)?
        .start()?;
    tokio::time::timeout(super::WAIT, started.notified())
        .await
        .map_err(|_| Failure::new("the stuck job never started"))?;
    wait_state(&fx, "w_quick", JobState::Completed, 1).await?;
    let report = worker.stop(Duration::from_millis(200)).await;
    ensure_eq!(report.released, 1, "{report:?}");
    let j = get(&fx, slow).await?;
    ensure_eq!(
        (j.state, j.attempts),
        (JobState::Queued, 0),
        "released, the attempt not counted"
    );
    ensure_eq!(get(&fx, quick).await?.state, JobState::Completed);
    // Nothing claims after the stop.
    enqueue(&fx, job("w_quick", 3)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure_eq!(
        fx.jobs.stats().await?.count("w_quick", JobState::Queued),
        1,
        "a stopped worker claims nothing"
    );
    Ok(())
}

/// An idle worker polling once an hour still runs a job enqueued through
/// the same provider instance at once: `wait_for_work` wakes it.
async fn wakes_on_enqueue(fx: JobsFixture) -> CaseResult {
    let worker = Worker::builder(fx.jobs.clone())
        .poll_interval(Duration::from_secs(3600))
        .register("w_wake", |_ctx: JobContext, _p: Payload| async move {
            Ok::<(), JobError>(())
        })?
        .start()?;
    // Let the worker make its first (empty) claim and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = enqueue(&fx, job("w_wake", 1)).await?;
    wait_for("the woken worker to complete the job", || async {
        Ok((get(&fx, id).await?.state == JobState::Completed).then_some(()))
    })
    .await?;
    stop(worker).await;
    Ok(())
}
