//! Several provider instances (e.g. separate processes, each with its own
//! pool) on one queue: every job runs exactly once, and the instances share
//! the work. Run by each provider's own multi-instance tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use truststream_core_jobs::{JobContext, JobError, JobState, Jobs, NewJob, Worker};

use crate::{ensure, ensure_eq, CaseResult, Failure};

/// The job type the run enqueues.
pub const TYPE: &str = "shared";

/// How long the run waits for every job to complete.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(serde::Deserialize)]
struct Payload {
    n: u64,
}

/// A worker (4 at a time, polling every `poll` when idle) on each of
/// `instances`, which each enqueue `per_instance` jobs of type [`TYPE`] in
/// batches of 50. Every job must run exactly once (every handler succeeds,
/// so nothing is retried), the workers' reports must add up, and at least
/// two workers must have run some. The workers are stopped before it
/// returns; the completed jobs are left in the queue.
pub async fn each_job_once_across(
    instances: &[Arc<dyn Jobs>],
    per_instance: u64,
    poll: Duration,
) -> CaseResult {
    ensure!(instances.len() >= 2, "needs two instances or more");
    let seen: Arc<Mutex<BTreeMap<u64, Vec<String>>>> = Arc::default();
    let mut workers = Vec::new();
    for (i, jobs) in instances.iter().enumerate() {
        let seen = seen.clone();
        let w = Worker::builder(jobs.clone())
            .concurrency(4)
            .poll_interval(poll)
            .worker_id(format!("worker-{i}"))
            .register(TYPE, move |ctx: JobContext, p: Payload| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(p.n)
                        .or_default()
                        .push(ctx.worker_id().to_string());
                    Ok::<(), JobError>(())
                }
            })?
            .start()?;
        workers.push(w);
    }
    for (i, jobs) in instances.iter().enumerate() {
        let first = i as u64 * per_instance;
        for chunk in (first..first + per_instance).collect::<Vec<_>>().chunks(50) {
            let batch = chunk
                .iter()
                .map(|n| NewJob::new(TYPE, &serde_json::json!({ "n": n })))
                .collect::<Result<Vec<_>, _>>()?;
            jobs.enqueue_many(batch).await?;
        }
    }
    let total = instances.len() as u64 * per_instance;
    let watcher = &instances[instances.len() - 1];
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let done = watcher.stats().await?.count(TYPE, JobState::Completed);
        if done == total {
            break;
        }
        if tokio::time::Instant::now() >= until {
            return Err(Failure::new(format!(
                "only {done} of {total} jobs completed in {DEADLINE:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reports = Vec::new();
    for w in workers {
        reports.push(w.stop(Duration::from_secs(20)).await);
    }
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ensure_eq!(seen.len() as u64, total, "every job ran");
    let twice: Vec<_> = seen.iter().filter(|(_, w)| w.len() != 1).collect();
    ensure!(twice.is_empty(), "jobs run more than once: {twice:?}");
    let completed: u64 = reports.iter().map(|r| r.completed).sum();
    ensure_eq!(completed, total, "{reports:?}");
    ensure!(
        reports.iter().filter(|r| r.completed > 0).count() >= 2,
        "the queue was shared: {reports:?}"
    );
    Ok(())
}
