//! Scheduler cases: `truststream_core_jobs::Scheduler` runs against the
//! provider; several schedulers with the same schedule enqueue each
//! occurrence once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use truststream_core::BoxFuture;
use truststream_core_jobs::{CatchUp, JobQuery, Jobs, NewJob, Schedule, Scheduler};

use super::{case, request, wait_for, JobsFixture};
use crate::harness::Case;
use crate::{ensure, ensure_eq, CaseResult, Failure};

/// The scheduler cases, in run order.
pub fn cases() -> Vec<Case<JobsFixture>> {
    vec![case!("cron.each_occurrence_once", [], each_occurrence_once)]
}

const TYPE: &str = "cron_tick";

fn schedule(catch_up: CatchUp) -> Result<Schedule, Failure> {
    Ok(Schedule::new(
        "conformance-tick",
        "* * * * * *",
        NewJob::from_json(TYPE, serde_json::json!({"tick": true})),
    )?
    .catch_up(catch_up))
}

async fn each_occurrence_once(fx: JobsFixture) -> CaseResult {
    each_occurrence_once_across(&[fx.jobs.clone(), fx.jobs.clone(), fx.jobs]).await
}

/// Three schedulers with one per-second schedule, one on each of
/// `instances` (at least one; they share one queue, e.g. provider
/// instances in separate "processes" on one database), while a claimer
/// completes the jobs as they come due; the third starts late with
/// [`CatchUp::LastMissed`], so it offers an occurrence that may already be
/// completed. Every occurrence must exist exactly once.
pub async fn each_occurrence_once_across(instances: &[Arc<dyn Jobs>]) -> CaseResult {
    ensure!(!instances.is_empty(), "no provider instances");
    let on = |i: usize| instances[i % instances.len()].clone();
    let start = |i: usize, catch_up| -> Result<_, Failure> {
        Ok(Scheduler::new(on(i))
            .schedule(schedule(catch_up)?)?
            .look_ahead(Duration::from_secs(1))?
            .start()?)
    };
    let first = start(0, CatchUp::Skip)?;
    let second = start(1, CatchUp::Skip)?;
    let jobs = on(1);
    let completer = tokio::spawn(async move {
        let mut completed = 0u64;
        loop {
            let claimed = jobs
                .claim(&request(&[TYPE], 10, Duration::from_secs(60), "cron-w"))
                .await?;
            for c in &claimed {
                jobs.complete(&c.lease).await?;
                completed += 1;
            }
            if completed >= 2 {
                return Ok::<u64, truststream_core::Error>(completed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // The late one starts after an occurrence completed.
    let completed = tokio::time::timeout(super::WAIT, completer)
        .await
        .map_err(|_| Failure::new("no scheduled job became claimable"))?
        .map_err(|e| Failure::new(format!("completer task: {e}")))??;
    let third = start(2, CatchUp::LastMissed)?;
    let listed = wait_for("five occurrences to be enqueued", || async {
        let all = on(0)
            .list(&JobQuery::new().job_type(TYPE).limit(10_000))
            .await?;
        Ok((all.len() >= 5).then_some(()))
    })
    .await;
    let reports = [first.stop().await, second.stop().await, third.stop().await];
    listed?;
    let all = on(2)
        .list(&JobQuery::new().job_type(TYPE).limit(10_000))
        .await?;
    let sched = schedule(CatchUp::Skip)?;
    let mut by_key: BTreeMap<String, u32> = BTreeMap::new();
    for j in &all {
        let key = j
            .unique_key
            .clone()
            .ok_or_else(|| Failure::new(format!("job {} has no unique key", j.id)))?;
        ensure_eq!(key, sched.unique_key(j.run_at), "key names the run_at");
        ensure_eq!(j.id, sched.job_id(j.run_at), "id derived from the key");
        *by_key.entry(key).or_default() += 1;
    }
    for (key, n) in &by_key {
        ensure!(*n == 1, "occurrence {key} was enqueued {n} times");
    }
    let created: u64 = reports.iter().map(|r| r.created).sum();
    ensure_eq!(
        created,
        all.len() as u64,
        "jobs the schedulers say they created ({reports:?})"
    );
    ensure!(completed >= 2, "completed {completed}");
    Ok(())
}
