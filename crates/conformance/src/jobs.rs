//! The jobs suite: every `core-jobs` provider runs these cases.
//!
//! The factory must return a fresh, empty queue per case. Providers that
//! keep jobs in a database hand over that database too
//! ([`JobsFixture::with_database`]), for the transactional-enqueue cases;
//! without one those cases are skipped by name.
//!
//! Cases wait for conditions (a retry's `run_at`, a lease running out) with
//! generous deadlines and never assert on elapsed time, so they hold on a
//! loaded machine. The worker cases ([`worker`]) run the
//! `truststream_core_jobs::Worker` runtime against the provider.
//!
//! ```rust,no_run
//! use std::sync::Arc;
//! use truststream_conformance::{factory, jobs};
//! # fn my_provider() -> Arc<dyn truststream_core_jobs::Jobs> { unimplemented!() }
//! # async fn run() {
//! let report = jobs::run(
//!     "mine",
//!     factory(|| async { Ok(jobs::JobsFixture::new(my_provider())) }),
//!     None,
//! )
//! .await;
//! report.print_table();
//! assert_eq!(report.failed(), 0, "{}", report.summary());
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use truststream_core::{BoxFuture, ErrorKind};
use truststream_core_db::{ColumnDef, Database, Operation, TableSchema};
use truststream_core_jobs::{
    Backoff, ClaimRequest, ClaimedJob, Enqueued, FailOutcome, Job, JobError, JobId, JobQuery,
    JobState, Jobs, JobsCapabilities, NewJob,
};

use crate::harness::{run_cases, Case, Factory};
use crate::{ensure, ensure_eq, expect_kind, CaseResult, Failure, Report};

pub mod cron;
pub mod shared;
pub mod worker;

/// What a jobs case gets: the provider, and the database it keeps its jobs
/// in when it has one.
#[derive(Clone)]
pub struct JobsFixture {
    /// The provider under test, with an empty queue.
    pub jobs: Arc<dyn Jobs>,
    /// The database the jobs live in, for
    /// `Jobs::enqueue_operation` in a transaction; `None` skips those cases.
    pub database: Option<Arc<dyn Database>>,
}

impl JobsFixture {
    /// A fixture without a database.
    pub fn new(jobs: Arc<dyn Jobs>) -> Self {
        JobsFixture {
            jobs,
            database: None,
        }
    }

    /// Sets the database the provider keeps its jobs in.
    pub fn with_database(mut self, database: Arc<dyn Database>) -> Self {
        self.database = Some(database);
        self
    }
}

/// Builds a fresh fixture per case.
pub type JobsFactory = Factory<JobsFixture>;

/// Runs the jobs suite against `provider`; `only` keeps the cases whose name
/// contains it.
pub async fn run(provider: &str, factory: JobsFactory, only: Option<&str>) -> Report {
    run_cases(
        "jobs",
        provider,
        factory,
        &cases(),
        |f| serde_json::to_value(f.jobs.capabilities()).unwrap_or_default(),
        only,
    )
    .await
}

macro_rules! case {
    ($name:literal, [$($need:literal),*], $body:path) => {
        Case {
            name: $name,
            needs: &[$($need),*],
            run: |fx| -> BoxFuture<'static, CaseResult> { Box::pin($body(fx)) },
        }
    };
}
pub(crate) use case;

/// Every case of the suite, in run order.
pub fn cases() -> Vec<Case<JobsFixture>> {
    let mut all = vec![
        case!("health.healthy_with_info", [], health_healthy),
        case!("enqueue.claim_complete", [], enqueue_claim_complete),
        case!("enqueue.many", [], enqueue_many),
        case!("enqueue.invalid_input", [], enqueue_invalid_input),
        case!("claim.only_requested_types", [], claim_only_requested_types),
        case!("claim.priority_then_run_at", [], claim_priority_order),
        case!("claim.batch_limit", [], claim_batch_limit),
        case!("claim.run_at_in_the_future", [], claim_run_at_future),
        case!("claim.concurrent_claims_split_jobs", [], claim_concurrent),
        case!("retry.after_backoff", [], retry_after_backoff),
        case!("retry.exponential_growth", [], retry_exponential),
        case!("dead.after_max_attempts_with_history", [], dead_after_max),
        case!("dead.permanent_error", [], dead_permanent),
        case!("dead.retry_requeues", [], dead_retry_requeues),
        case!("cancel.queued_only", [], cancel_queued_only),
        case!("unique.dedup_while_queued_or_running", [], unique_dedup),
        case!(
            "unique.concurrent_enqueues",
            ["unique_keys"],
            unique_concurrent
        ),
        case!("lease.expiry_makes_job_claimable", [], lease_expiry),
        case!("lease.extend_keeps_it", [], lease_extend),
        case!(
            "lease.expired_without_attempts_is_dead",
            [],
            lease_expired_dead
        ),
        case!("release.attempt_not_counted", [], release_not_counted),
        case!("stats.counts_and_oldest_age", [], stats_counts),
        case!("stats.run_time_percentiles", [], stats_run_times),
        case!("list.filters_and_pages", [], list_filters),
        case!("purge.finished_only", [], purge_finished),
        case!("tx.capability", [], tx_capability),
        case!(
            "tx.rollback_never_runs",
            ["transactional_enqueue"],
            tx_rollback
        ),
        case!("tx.commit_runs_once", ["transactional_enqueue"], tx_commit),
    ];
    all.extend(worker::cases());
    all.extend(cron::cases());
    all
}

/// The longest a case waits for a condition that needs time to pass.
pub const WAIT: Duration = Duration::from_secs(25);

pub(crate) fn caps(fx: &JobsFixture) -> JobsCapabilities {
    fx.jobs.capabilities()
}

/// A job of `job_type` with payload `n`.
pub(crate) fn job(job_type: &str, n: u64) -> NewJob {
    NewJob::from_json(job_type, json!({ "n": n }))
}

pub(crate) fn request(types: &[&str], batch: usize, lease: Duration, worker: &str) -> ClaimRequest {
    ClaimRequest {
        job_types: types.iter().map(|t| t.to_string()).collect(),
        batch,
        lease,
        worker_id: worker.to_string(),
    }
}

/// Claims with a one-minute lease as worker `w1`.
pub(crate) async fn claim(
    fx: &JobsFixture,
    types: &[&str],
    batch: usize,
) -> Result<Vec<ClaimedJob>, Failure> {
    Ok(fx
        .jobs
        .claim(&request(types, batch, Duration::from_secs(60), "w1"))
        .await?)
}

pub(crate) async fn get(fx: &JobsFixture, id: JobId) -> Result<Job, Failure> {
    fx.jobs
        .get(id)
        .await?
        .ok_or_else(|| Failure::new(format!("job {id} is missing")))
}

pub(crate) async fn enqueue(fx: &JobsFixture, j: NewJob) -> Result<JobId, Failure> {
    match fx.jobs.enqueue(j).await? {
        Enqueued::Created(id) => Ok(id),
        other => Err(Failure::new(format!("expected a new job, got {other:?}"))),
    }
}

/// Polls `check` every 50 ms until it answers `Some`, for up to [`WAIT`].
pub(crate) async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Failure>>,
{
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= until {
            return Err(Failure::new(format!(
                "gave up after {WAIT:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Claims until the job `id` comes back (other claimed jobs fail the case).
pub(crate) async fn claim_eventually(
    fx: &JobsFixture,
    job_type: &str,
    id: JobId,
    lease: Duration,
    worker: &str,
) -> Result<ClaimedJob, Failure> {
    wait_for(&format!("job {id} to be claimable"), || async {
        let mut got = fx
            .jobs
            .claim(&request(&[job_type], 1, lease, worker))
            .await?;
        match got.pop() {
            None => Ok(None),
            Some(c) if c.job.id == id => Ok(Some(c)),
            Some(c) => Err(Failure::new(format!(
                "claimed {} instead of {id}",
                c.job.id
            ))),
        }
    })
    .await
}

async fn health_healthy(fx: JobsFixture) -> CaseResult {
    let h = fx.jobs.health().await;
    ensure!(h.is_healthy(), "a fresh provider is healthy: {h:?}");
    let info = fx.jobs.info();
    ensure!(
        !info.name.is_empty() && !info.version.is_empty(),
        "{info:?}"
    );
    Ok(())
}

async fn enqueue_claim_complete(fx: JobsFixture) -> CaseResult {
    let id = enqueue(&fx, job("email", 1).priority(3)).await?;
    let queued = get(&fx, id).await?;
    ensure_eq!(queued.state, JobState::Queued);
    ensure_eq!(queued.attempts, 0);
    ensure_eq!(queued.payload, json!({"n": 1}));
    ensure_eq!(queued.priority, 3);
    let mut claimed = claim(&fx, &["email"], 10).await?;
    ensure_eq!(claimed.len(), 1, "one job claimed");
    let c = claimed.remove(0);
    ensure_eq!(c.job.id, id);
    ensure_eq!(c.job.state, JobState::Running);
    ensure_eq!(c.job.attempts, 1);
    ensure_eq!(c.job.worker_id.as_deref(), Some("w1"));
    ensure!(
        c.lease.expires_at > Utc::now(),
        "the lease ends in the future"
    );
    ensure!(
        claim(&fx, &["email"], 10).await?.is_empty(),
        "a running job is not claimed twice"
    );
    let running = get(&fx, id).await?;
    ensure_eq!(running.state, JobState::Running);
    fx.jobs.complete(&c.lease).await?;
    let done = get(&fx, id).await?;
    ensure_eq!(done.state, JobState::Completed);
    ensure!(done.finished_at.is_some(), "finished_at is set");
    ensure_eq!(done.history.len(), 1);
    ensure_eq!(done.history[0].error, None);
    ensure_eq!(done.history[0].worker_id, "w1");
    expect_kind(
        fx.jobs.complete(&c.lease).await,
        ErrorKind::Conflict,
        "completing twice",
    )?;
    ensure!(
        claim(&fx, &["email"], 10).await?.is_empty(),
        "a completed job is not claimed"
    );
    Ok(())
}

async fn enqueue_many(fx: JobsFixture) -> CaseResult {
    let out = fx
        .jobs
        .enqueue_many(vec![job("bulk", 1), job("bulk", 2), job("bulk", 3)])
        .await?;
    ensure_eq!(out.len(), 3);
    ensure!(out.iter().all(|e| e.is_created()), "{out:?}");
    for e in &out {
        ensure_eq!(get(&fx, e.id()).await?.state, JobState::Queued);
    }
    let bad = vec![job("bulk", 4), NewJob::from_json("bad type", json!(null))];
    expect_kind(
        fx.jobs.enqueue_many(bad).await,
        ErrorKind::InvalidInput,
        "a batch with an invalid job",
    )?;
    let listed = fx.jobs.list(&JobQuery::new().job_type("bulk")).await?;
    ensure_eq!(listed.len(), 3, "the bad batch stored nothing");
    ensure_eq!(fx.jobs.enqueue_many(Vec::new()).await?.len(), 0);
    Ok(())
}

async fn enqueue_invalid_input(fx: JobsFixture) -> CaseResult {
    for (what, bad) in [
        ("an empty type", NewJob::from_json("", json!(1))),
        ("a type with a space", NewJob::from_json("a b", json!(1))),
        ("zero attempts", job("t", 1).max_attempts(0)),
        (
            "a backoff factor below 1",
            job("t", 1).backoff(Backoff::default().factor(0.1)),
        ),
        ("an empty unique key", job("t", 1).unique_key("")),
    ] {
        expect_kind(fx.jobs.enqueue(bad).await, ErrorKind::InvalidInput, what)?;
    }
    expect_kind(
        fx.jobs
            .claim(&request(&[], 1, Duration::from_secs(1), "w"))
            .await,
        ErrorKind::InvalidInput,
        "a claim naming no types",
    )?;
    expect_kind(
        fx.jobs
            .claim(&request(&["t"], 0, Duration::from_secs(1), "w"))
            .await,
        ErrorKind::InvalidInput,
        "a claim of zero jobs",
    )?;
    expect_kind(
        fx.jobs.list(&JobQuery::new().limit(0)).await,
        ErrorKind::InvalidInput,
        "a list limit of 0",
    )?;
    let id = enqueue(&fx, job("t", 1)).await?;
    expect_kind(
        fx.jobs.enqueue(job("t", 2).id(id)).await,
        ErrorKind::Conflict,
        "a job id already taken",
    )?;
    ensure!(
        fx.jobs.list(&JobQuery::new()).await?.len() == 1,
        "only the valid job is stored"
    );
    ensure!(
        fx.jobs.get(JobId::new()).await?.is_none(),
        "a missing job is None"
    );
    Ok(())
}

async fn claim_only_requested_types(fx: JobsFixture) -> CaseResult {
    let a = enqueue(&fx, job("type_a", 1)).await?;
    let b = enqueue(&fx, job("type_b", 2)).await?;
    let got = claim(&fx, &["type_b", "type_c"], 10).await?;
    ensure_eq!(got.iter().map(|c| c.job.id).collect::<Vec<_>>(), vec![b]);
    ensure_eq!(get(&fx, a).await?.state, JobState::Queued);
    Ok(())
}

async fn claim_priority_order(fx: JobsFixture) -> CaseResult {
    let past = Utc::now() - chrono::Duration::seconds(60);
    let low = enqueue(&fx, job("p", 1).priority(0).run_at(past)).await?;
    let high = enqueue(&fx, job("p", 2).priority(10).run_at(past)).await?;
    let mid_later = enqueue(
        &fx,
        job("p", 3)
            .priority(5)
            .run_at(past + chrono::Duration::seconds(10)),
    )
    .await?;
    let mid_earlier = enqueue(&fx, job("p", 4).priority(5).run_at(past)).await?;
    let mut order = Vec::new();
    for _ in 0..4 {
        let got = claim(&fx, &["p"], 1).await?;
        ensure_eq!(got.len(), 1, "one job per claim of batch 1");
        order.push(got[0].job.id);
    }
    ensure_eq!(
        order,
        vec![high, mid_earlier, mid_later, low],
        "priority, then run_at"
    );
    Ok(())
}

async fn claim_batch_limit(fx: JobsFixture) -> CaseResult {
    fx.jobs
        .enqueue_many((0..5).map(|n| job("batch", n)).collect())
        .await?;
    ensure_eq!(claim(&fx, &["batch"], 3).await?.len(), 3);
    ensure_eq!(claim(&fx, &["batch"], 3).await?.len(), 2);
    ensure_eq!(claim(&fx, &["batch"], 3).await?.len(), 0);
    Ok(())
}

async fn claim_run_at_future(fx: JobsFixture) -> CaseResult {
    let later = enqueue(&fx, job("sched", 1).delay(Duration::from_secs(3600))).await?;
    ensure!(
        claim(&fx, &["sched"], 10).await?.is_empty(),
        "a job due in an hour is not claimable"
    );
    let soon = enqueue(&fx, job("sched", 2).delay(Duration::from_millis(300))).await?;
    let c = claim_eventually(&fx, "sched", soon, Duration::from_secs(60), "w1").await?;
    ensure!(
        c.job.run_at <= Utc::now(),
        "claimed no earlier than its run_at"
    );
    ensure_eq!(get(&fx, later).await?.state, JobState::Queued);
    Ok(())
}

async fn claim_concurrent(fx: JobsFixture) -> CaseResult {
    fx.jobs
        .enqueue_many((0..20).map(|n| job("race", n)).collect())
        .await?;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let jobs = fx.jobs.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = jobs
                    .claim(&request(
                        &["race"],
                        3,
                        Duration::from_secs(60),
                        &format!("w{w}"),
                    ))
                    .await?;
                if got.is_empty() {
                    return Ok::<_, truststream_core::Error>(mine);
                }
                mine.extend(got.into_iter().map(|c| c.job.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(
            t.await
                .map_err(|e| Failure::new(format!("claimer panicked: {e}")))??,
        );
    }
    let n = all.len();
    all.sort();
    all.dedup();
    ensure_eq!(n, 20, "every job claimed");
    ensure_eq!(all.len(), 20, "no job claimed twice");
    Ok(())
}

async fn fail_once(fx: &JobsFixture, c: &ClaimedJob, msg: &str) -> Result<FailOutcome, Failure> {
    Ok(fx.jobs.fail(&c.lease, &JobError::retry(msg)).await?)
}

async fn retry_after_backoff(fx: JobsFixture) -> CaseResult {
    let backoff = Backoff::fixed(Duration::from_millis(200)).jitter(0.0);
    let id = enqueue(&fx, job("flaky", 1).max_attempts(3).backoff(backoff)).await?;
    let c = claim(&fx, &["flaky"], 1).await?.remove(0);
    let before = Utc::now() - chrono::Duration::milliseconds(5);
    let out = fail_once(&fx, &c, "first failure").await?;
    let FailOutcome::Retrying(at) = out else {
        return Err(Failure::new(format!("expected a retry, got {out:?}")));
    };
    ensure!(
        at >= before + chrono::Duration::milliseconds(200),
        "retry at {at} is at least the backoff after {before}"
    );
    let j = get(&fx, id).await?;
    ensure_eq!(j.state, JobState::Queued);
    ensure_eq!(j.run_at, at);
    ensure_eq!(j.last_error.as_deref(), Some("first failure"));
    ensure_eq!(j.attempts, 1);
    expect_kind(
        fx.jobs.complete(&c.lease).await,
        ErrorKind::Conflict,
        "completing a failed attempt's lease",
    )?;
    let again = claim_eventually(&fx, "flaky", id, Duration::from_secs(60), "w2").await?;
    ensure_eq!(again.job.attempts, 2);
    ensure!(Utc::now() >= at, "not claimed before its retry time");
    // A retry an hour away is not claimable now.
    let slow = enqueue(
        &fx,
        job("slow_retry", 1).backoff(Backoff::fixed(Duration::from_secs(3600))),
    )
    .await?;
    let c = claim(&fx, &["slow_retry"], 1).await?.remove(0);
    fail_once(&fx, &c, "x").await?;
    ensure!(
        claim(&fx, &["slow_retry"], 1).await?.is_empty(),
        "job {slow} waits for its backoff"
    );
    Ok(())
}

async fn retry_exponential(fx: JobsFixture) -> CaseResult {
    let backoff =
        Backoff::exponential(Duration::from_millis(100), Duration::from_secs(60)).jitter(0.5);
    let id = enqueue(&fx, job("exp", 1).max_attempts(5).backoff(backoff)).await?;
    for (attempt, base_ms) in [(1u32, 100i64), (2, 200), (3, 400)] {
        let c = claim_eventually(&fx, "exp", id, Duration::from_secs(60), "w").await?;
        ensure_eq!(c.job.attempts, attempt);
        let before = Utc::now() - chrono::Duration::milliseconds(5);
        let out = fail_once(&fx, &c, &format!("failure {attempt}")).await?;
        let after = Utc::now() + chrono::Duration::milliseconds(5);
        let FailOutcome::Retrying(at) = out else {
            return Err(Failure::new(format!(
                "attempt {attempt}: expected a retry, got {out:?}"
            )));
        };
        // delay ∈ [base * (1 - jitter), base]
        ensure!(
            at >= before + chrono::Duration::milliseconds(base_ms / 2) && at <= after + chrono::Duration::milliseconds(base_ms),
            "attempt {attempt}: retry at {at} is not {base_ms} ms (jitter 50 %) after the failure ({before}..{after})"
        );
    }
    Ok(())
}

/// Fails job `id` until it is dead; returns the number of failures.
async fn fail_until_dead(fx: &JobsFixture, job_type: &str, id: JobId) -> Result<u32, Failure> {
    let mut n = 0;
    loop {
        let c =
            claim_eventually(fx, job_type, id, Duration::from_secs(60), &format!("w{n}")).await?;
        n += 1;
        if fail_once(fx, &c, &format!("failure {n}")).await? == FailOutcome::Dead {
            return Ok(n);
        }
        ensure!(n < 10, "job {id} is still not dead after {n} failures");
    }
}

async fn dead_after_max(fx: JobsFixture) -> CaseResult {
    let id = enqueue(
        &fx,
        job("poison", 1)
            .max_attempts(3)
            .backoff(Backoff::fixed(Duration::from_millis(20))),
    )
    .await?;
    ensure_eq!(
        fail_until_dead(&fx, "poison", id).await?,
        3,
        "dead after max_attempts failures"
    );
    let j = get(&fx, id).await?;
    ensure_eq!(j.state, JobState::Dead);
    ensure_eq!(j.attempts, 3);
    ensure_eq!(j.last_error.as_deref(), Some("failure 3"));
    ensure!(j.finished_at.is_some(), "finished_at is set");
    let errors: Vec<_> = j
        .history
        .iter()
        .map(|a| a.error.clone().unwrap_or_default())
        .collect();
    ensure_eq!(errors, vec!["failure 1", "failure 2", "failure 3"]);
    let attempts: Vec<_> = j.history.iter().map(|a| a.attempt).collect();
    ensure_eq!(attempts, vec![1, 2, 3]);
    let workers: Vec<_> = j.history.iter().map(|a| a.worker_id.as_str()).collect();
    ensure_eq!(workers, vec!["w0", "w1", "w2"]);
    ensure!(
        j.history.iter().all(|a| a.finished_at >= a.started_at),
        "attempt times are ordered"
    );
    ensure!(
        claim(&fx, &["poison"], 1).await?.is_empty(),
        "a dead job is not claimed"
    );
    ensure_eq!(fx.jobs.stats().await?.count("poison", JobState::Dead), 1);
    Ok(())
}

async fn dead_permanent(fx: JobsFixture) -> CaseResult {
    let id = enqueue(&fx, job("perm", 1).max_attempts(5)).await?;
    let c = claim(&fx, &["perm"], 1).await?.remove(0);
    let out = fx
        .jobs
        .fail(&c.lease, &JobError::permanent("bad payload"))
        .await?;
    ensure_eq!(out, FailOutcome::Dead);
    let j = get(&fx, id).await?;
    ensure_eq!((j.state, j.attempts), (JobState::Dead, 1));
    Ok(())
}

async fn dead_retry_requeues(fx: JobsFixture) -> CaseResult {
    let id = enqueue(&fx, job("requeue", 1).max_attempts(1)).await?;
    expect_kind(
        fx.jobs.retry_dead(id).await,
        ErrorKind::Conflict,
        "retrying a queued job",
    )?;
    expect_kind(
        fx.jobs.retry_dead(JobId::new()).await,
        ErrorKind::NotFound,
        "retrying a missing job",
    )?;
    let c = claim(&fx, &["requeue"], 1).await?.remove(0);
    ensure_eq!(fail_once(&fx, &c, "boom").await?, FailOutcome::Dead);
    let j = fx.jobs.retry_dead(id).await?;
    ensure_eq!((j.state, j.attempts), (JobState::Queued, 0));
    ensure_eq!(j.history.len(), 1, "the history is kept");
    let stored = get(&fx, id).await?;
    ensure_eq!(stored.state, JobState::Queued);
    ensure_eq!(stored.finished_at, None);
    let c = claim(&fx, &["requeue"], 1).await?.remove(0);
    ensure_eq!(c.job.attempts, 1);
    fx.jobs.complete(&c.lease).await?;
    let done = get(&fx, id).await?;
    ensure_eq!(done.state, JobState::Completed);
    ensure_eq!(done.history.len(), 2);
    Ok(())
}

async fn cancel_queued_only(fx: JobsFixture) -> CaseResult {
    let a = enqueue(&fx, job("cancel", 1)).await?;
    let b = enqueue(&fx, job("cancel", 2).delay(Duration::from_secs(3600))).await?;
    let cancelled = fx.jobs.cancel(b).await?;
    ensure_eq!(cancelled.state, JobState::Cancelled);
    ensure_eq!(get(&fx, b).await?.state, JobState::Cancelled);
    let c = claim(&fx, &["cancel"], 10).await?;
    ensure_eq!(
        c.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![a],
        "the cancelled job is never claimed"
    );
    expect_kind(
        fx.jobs.cancel(a).await,
        ErrorKind::Conflict,
        "cancelling a running job",
    )?;
    expect_kind(
        fx.jobs.cancel(b).await,
        ErrorKind::Conflict,
        "cancelling twice",
    )?;
    expect_kind(
        fx.jobs.cancel(JobId::new()).await,
        ErrorKind::NotFound,
        "cancelling a missing job",
    )?;
    ensure_eq!(
        get(&fx, a).await?.state,
        JobState::Running,
        "a refused cancel changes nothing"
    );
    Ok(())
}

async fn unique_dedup(fx: JobsFixture) -> CaseResult {
    let first = enqueue(&fx, job("uniq", 1).unique_key("k1")).await?;
    ensure_eq!(
        fx.jobs.enqueue(job("uniq", 2).unique_key("k1")).await?,
        Enqueued::Duplicate(first),
        "while queued"
    );
    let other = enqueue(&fx, job("uniq", 3).unique_key("k2")).await?;
    ensure!(other != first, "another key is another job");
    let many = fx
        .jobs
        .enqueue_many(vec![job("uniq", 4).unique_key("k1"), job("uniq", 5)])
        .await?;
    ensure_eq!(
        many[0],
        Enqueued::Duplicate(first),
        "enqueue_many de-duplicates too"
    );
    ensure!(many[1].is_created(), "{:?}", many[1]);
    let c = claim_eventually(&fx, "uniq", first, Duration::from_secs(60), "w").await?;
    ensure_eq!(
        fx.jobs.enqueue(job("uniq", 6).unique_key("k1")).await?,
        Enqueued::Duplicate(first),
        "while running"
    );
    fx.jobs.complete(&c.lease).await?;
    let next = fx.jobs.enqueue(job("uniq", 7).unique_key("k1")).await?;
    ensure!(
        next.is_created() && next.id() != first,
        "after completion the key is free: {next:?}"
    );
    let j = get(&fx, next.id()).await?;
    ensure_eq!(j.unique_key.as_deref(), Some("k1"));
    // A cancelled job frees its key; a dead job does too, and retrying it
    // while the key is held again is a conflict.
    fx.jobs.cancel(next.id()).await?;
    let dead = enqueue(&fx, job("uniq_dead", 1).unique_key("k3").max_attempts(1)).await?;
    let c = claim(&fx, &["uniq_dead"], 1).await?.remove(0);
    fail_once(&fx, &c, "x").await?;
    let holder = enqueue(&fx, job("uniq_dead", 2).unique_key("k3")).await?;
    expect_kind(
        fx.jobs.retry_dead(dead).await,
        ErrorKind::Conflict,
        "retrying a dead job whose key is held",
    )?;
    ensure_eq!(
        get(&fx, dead).await?.state,
        JobState::Dead,
        "the refused retry changed nothing"
    );
    fx.jobs.cancel(holder).await?;
    ensure_eq!(fx.jobs.retry_dead(dead).await?.state, JobState::Queued);
    Ok(())
}

async fn unique_concurrent(fx: JobsFixture) -> CaseResult {
    let mut tasks = Vec::new();
    for n in 0..10 {
        let jobs = fx.jobs.clone();
        tasks.push(tokio::spawn(async move {
            jobs.enqueue(job("uniq_race", n).unique_key("same")).await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(
            t.await
                .map_err(|e| Failure::new(format!("enqueuer panicked: {e}")))??,
        );
    }
    ensure_eq!(
        results.iter().filter(|r| r.is_created()).count(),
        1,
        "exactly one created: {results:?}"
    );
    let id = results[0].id();
    ensure!(
        results.iter().all(|r| r.id() == id),
        "every answer names the one job: {results:?}"
    );
    ensure_eq!(
        fx.jobs
            .list(&JobQuery::new().job_type("uniq_race"))
            .await?
            .len(),
        1
    );
    Ok(())
}

async fn lease_expiry(fx: JobsFixture) -> CaseResult {
    let id = enqueue(&fx, job("lease", 1).max_attempts(3)).await?;
    let first = fx
        .jobs
        .claim(&request(
            &["lease"],
            1,
            Duration::from_millis(300),
            "crashed",
        ))
        .await?;
    ensure_eq!(first.len(), 1);
    let old = first[0].lease.clone();
    let second = claim_eventually(&fx, "lease", id, Duration::from_secs(60), "rescuer").await?;
    ensure_eq!(second.job.attempts, 2);
    ensure_eq!(second.job.worker_id.as_deref(), Some("rescuer"));
    ensure!(second.lease.token != old.token, "a new lease");
    let j = get(&fx, id).await?;
    ensure_eq!(j.history.len(), 1, "the lost attempt is recorded");
    ensure!(
        j.history[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired")),
        "{:?}",
        j.history
    );
    ensure_eq!(j.history[0].worker_id, "crashed");
    expect_kind(
        fx.jobs.complete(&old).await,
        ErrorKind::Conflict,
        "completing with the expired lease",
    )?;
    expect_kind(
        fx.jobs.extend_lease(&old, Duration::from_secs(60)).await,
        ErrorKind::Conflict,
        "extending the expired lease",
    )?;
    expect_kind(
        fx.jobs.fail(&old, &JobError::retry("late")).await,
        ErrorKind::Conflict,
        "failing with the expired lease",
    )?;
    expect_kind(
        fx.jobs.release(&old).await,
        ErrorKind::Conflict,
        "releasing with the expired lease",
    )?;
    ensure_eq!(
        get(&fx, id).await?.state,
        JobState::Running,
        "the old lease changed nothing"
    );
    fx.jobs.complete(&second.lease).await?;
    ensure_eq!(get(&fx, id).await?.state, JobState::Completed);
    Ok(())
}

async fn lease_extend(fx: JobsFixture) -> CaseResult {
    let id = enqueue(&fx, job("extend", 1)).await?;
    let c = fx
        .jobs
        .claim(&request(&["extend"], 1, Duration::from_secs(2), "w"))
        .await?
        .remove(0);
    let until = fx
        .jobs
        .extend_lease(&c.lease, Duration::from_secs(3600))
        .await?;
    ensure!(
        until > Utc::now() + chrono::Duration::minutes(30),
        "extended to {until}"
    );
    ensure_eq!(get(&fx, id).await?.lease_expires_at, Some(until));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        claim(&fx, &["extend"], 1).await?.is_empty(),
        "an extended lease is still held after its first end"
    );
    fx.jobs.complete(&c.lease).await?;
    let missing = truststream_core_jobs::Lease {
        job_id: JobId::new(),
        ..c.lease.clone()
    };
    match fx.jobs.extend_lease(&missing, Duration::from_secs(1)).await {
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Conflict) => Ok(()),
        other => Err(Failure::new(format!(
            "extending a lease on a missing job: expected not_found or conflict, got {other:?}"
        ))),
    }
}

async fn lease_expired_dead(fx: JobsFixture) -> CaseResult {
    let id = enqueue(&fx, job("lease_dead", 1).max_attempts(1)).await?;
    fx.jobs
        .claim(&request(
            &["lease_dead"],
            1,
            Duration::from_millis(200),
            "crashed",
        ))
        .await?;
    wait_for("the job to go dead after its lease expired", || async {
        let got = claim(&fx, &["lease_dead"], 1).await?;
        ensure!(
            got.is_empty(),
            "a job with no attempts left was handed out again: {:?}",
            got[0].job
        );
        let j = get(&fx, id).await?;
        Ok((j.state == JobState::Dead).then_some(()))
    })
    .await?;
    let j = get(&fx, id).await?;
    ensure!(
        j.last_error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired")),
        "{:?}",
        j.last_error
    );
    ensure_eq!(j.history.len(), 1);
    Ok(())
}

async fn release_not_counted(fx: JobsFixture) -> CaseResult {
    let id = enqueue(&fx, job("release", 1)).await?;
    let c = claim(&fx, &["release"], 1).await?.remove(0);
    fx.jobs.release(&c.lease).await?;
    let j = get(&fx, id).await?;
    ensure_eq!((j.state, j.attempts), (JobState::Queued, 0));
    ensure_eq!(j.worker_id, None);
    expect_kind(
        fx.jobs.complete(&c.lease).await,
        ErrorKind::Conflict,
        "completing a released job",
    )?;
    let again = claim(&fx, &["release"], 1).await?;
    ensure_eq!(again.len(), 1, "released jobs are claimable at once");
    ensure_eq!(again[0].job.attempts, 1);
    Ok(())
}

async fn stats_counts(fx: JobsFixture) -> CaseResult {
    let empty = fx.jobs.stats().await?;
    ensure!(empty.counts.is_empty(), "{empty:?}");
    ensure_eq!(empty.oldest_queued_age, None);
    let past = Utc::now() - chrono::Duration::seconds(120);
    enqueue(&fx, job("sa", 1).run_at(past)).await?;
    enqueue(&fx, job("sa", 2).run_at(past)).await?;
    enqueue(&fx, job("sb", 3)).await?;
    enqueue(&fx, job("sb", 4).delay(Duration::from_secs(3600))).await?;
    claim(&fx, &["sa"], 1).await?;
    let s = fx.jobs.stats().await?;
    ensure_eq!(s.count("sa", JobState::Queued), 1);
    ensure_eq!(s.count("sa", JobState::Running), 1);
    ensure_eq!(s.count("sb", JobState::Queued), 2);
    ensure_eq!(s.in_state(JobState::Queued), 3);
    ensure_eq!(s.in_state(JobState::Completed), 0);
    ensure!(
        s.counts.iter().all(|c| c.count > 0),
        "no empty pairs: {s:?}"
    );
    let age = s
        .oldest_queued_age
        .ok_or_else(|| Failure::new("no oldest age"))?;
    ensure!(
        age >= Duration::from_secs(119) && age < Duration::from_secs(3600),
        "oldest age {age:?}"
    );
    Ok(())
}

/// Three `rt` jobs claimed together: two completed after at least 30 ms,
/// the third at least 60 ms later. Only completed jobs are sampled (a dead
/// `rt_dead` job has no entry); percentiles are ordered, and the slowest
/// run is the p99 of three. Lower bounds only: a loaded machine makes runs
/// slower, never faster.
async fn stats_run_times(fx: JobsFixture) -> CaseResult {
    ensure!(fx.jobs.stats().await?.run_times.is_empty());
    for n in 0..3 {
        enqueue(&fx, job("rt", n)).await?;
    }
    enqueue(&fx, job("rt_dead", 9).max_attempts(1)).await?;
    let claimed = claim(&fx, &["rt"], 3).await?;
    ensure_eq!(claimed.len(), 3);
    let dead = claim(&fx, &["rt_dead"], 1).await?;
    ensure_eq!(dead.len(), 1);
    fx.jobs
        .fail(&dead[0].lease, &JobError::retry("boom"))
        .await?;
    tokio::time::sleep(Duration::from_millis(30)).await;
    fx.jobs.complete(&claimed[0].lease).await?;
    fx.jobs.complete(&claimed[1].lease).await?;
    tokio::time::sleep(Duration::from_millis(60)).await;
    fx.jobs.complete(&claimed[2].lease).await?;
    let s = fx.jobs.stats().await?;
    ensure_eq!(s.run_times.len(), 1, "only completed types: {s:?}");
    let r = s
        .run_times_of("rt")
        .ok_or_else(|| Failure::new(format!("no run times for rt: {s:?}")))?;
    ensure_eq!(r.sampled, 3);
    ensure!(r.p50 >= Duration::from_millis(30), "{r:?}");
    ensure!(r.p50 <= r.p95 && r.p95 <= r.p99 && r.p99 <= r.max, "{r:?}");
    ensure_eq!(r.p99, r.max, "the p99 of three runs is the slowest");
    ensure!(
        r.max >= r.p50 + Duration::from_millis(60),
        "the third run ended at least 60 ms after the others: {r:?}"
    );
    Ok(())
}

async fn list_filters(fx: JobsFixture) -> CaseResult {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(enqueue(&fx, job("la", n)).await?);
        // created_at orders the list; keep the times apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    enqueue(&fx, job("lb", 9)).await?;
    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();
    let all_a = fx.jobs.list(&JobQuery::new().job_type("la")).await?;
    ensure_eq!(all_a.iter().map(|j| j.id).collect::<Vec<_>>(), newest_first);
    let page = fx
        .jobs
        .list(&JobQuery::new().job_type("la").limit(2).offset(1))
        .await?;
    ensure_eq!(
        page.iter().map(|j| j.id).collect::<Vec<_>>(),
        newest_first[1..3].to_vec()
    );
    let c = claim(&fx, &["lb"], 1).await?;
    ensure_eq!(c.len(), 1);
    let running = fx
        .jobs
        .list(&JobQuery::new().state(JobState::Running))
        .await?;
    ensure_eq!(
        running
            .iter()
            .map(|j| j.job_type.as_str())
            .collect::<Vec<_>>(),
        vec!["lb"]
    );
    ensure_eq!(fx.jobs.list(&JobQuery::new()).await?.len(), 6);
    ensure!(
        fx.jobs
            .list(&JobQuery::new().state(JobState::Dead))
            .await?
            .is_empty(),
        "no dead jobs"
    );
    Ok(())
}

async fn purge_finished(fx: JobsFixture) -> CaseResult {
    let done = enqueue(&fx, job("purge", 1)).await?;
    let c = claim(&fx, &["purge"], 1).await?.remove(0);
    fx.jobs.complete(&c.lease).await?;
    let cancelled = enqueue(&fx, job("purge", 2)).await?;
    fx.jobs.cancel(cancelled).await?;
    let dead = enqueue(&fx, job("purge_dead", 3).max_attempts(1)).await?;
    let c = claim(&fx, &["purge_dead"], 1).await?.remove(0);
    fail_once(&fx, &c, "x").await?;
    let queued = enqueue(&fx, job("purge", 4)).await?;
    ensure_eq!(
        fx.jobs
            .purge_finished(Utc::now() - chrono::Duration::seconds(3600))
            .await?,
        0,
        "nothing finished an hour ago"
    );
    ensure_eq!(
        fx.jobs
            .purge_finished(Utc::now() + chrono::Duration::seconds(1))
            .await?,
        2
    );
    ensure!(
        fx.jobs.get(done).await?.is_none() && fx.jobs.get(cancelled).await?.is_none(),
        "finished jobs purged"
    );
    ensure_eq!(
        get(&fx, dead).await?.state,
        JobState::Dead,
        "dead jobs are kept"
    );
    ensure_eq!(
        get(&fx, queued).await?.state,
        JobState::Queued,
        "queued jobs are kept"
    );
    Ok(())
}

async fn tx_capability(fx: JobsFixture) -> CaseResult {
    let r = fx.jobs.enqueue_operation(&job("tx", 1));
    if caps(&fx).transactional_enqueue {
        let op = r?;
        ensure!(
            matches!(
                op.operation,
                Operation::Create { .. } | Operation::CreateMany { .. }
            ),
            "an insert: {:?}",
            op.operation
        );
        ensure!(
            fx.jobs.get(op.id).await?.is_none(),
            "building the operation stores nothing"
        );
        expect_kind(
            fx.jobs
                .enqueue_operation(&NewJob::from_json("bad type", json!(1))),
            ErrorKind::InvalidInput,
            "an invalid job",
        )?;
    } else {
        expect_kind(
            r,
            ErrorKind::Unsupported,
            "enqueue_operation without transactional_enqueue",
        )?;
    }
    Ok(())
}

const ORDERS: &str = "conformance_jobs_orders";

async fn orders_table(fx: &JobsFixture) -> Result<Arc<dyn Database>, Failure> {
    let Some(db) = fx.database.clone() else {
        return Err(Failure::skip(
            "the fixture gives no database to run a transaction on",
        ));
    };
    let mut schema = TableSchema::new(ORDERS)
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("note"));
    schema.if_not_exists = true;
    db.create_table(&schema).await?;
    Ok(db)
}

fn order(id: &str) -> Operation {
    let mut data = truststream_core_db::Row::new();
    data.insert("id".into(), json!(id));
    data.insert("note".into(), json!("paid"));
    Operation::Create {
        table: ORDERS.into(),
        data,
    }
}

async fn tx_rollback(fx: JobsFixture) -> CaseResult {
    let db = orders_table(&fx).await?;
    let op = fx.jobs.enqueue_operation(&job("tx_job", 1))?;
    let missing = Operation::Update {
        table: ORDERS.into(),
        id: json!("no-such-order"),
        data: truststream_core_db::Row::new(),
    };
    let r = db
        .transaction(vec![order("o1"), op.operation, missing])
        .await;
    ensure!(r.is_err(), "the transaction fails on its last operation");
    ensure!(
        db.get(ORDERS, &json!("o1")).await?.is_none(),
        "the order rolled back"
    );
    ensure!(
        fx.jobs.get(op.id).await?.is_none(),
        "the job rolled back with it"
    );
    ensure!(
        claim(&fx, &["tx_job"], 10).await?.is_empty(),
        "a rolled-back job never runs"
    );
    ensure_eq!(fx.jobs.stats().await?.counts.len(), 0);
    Ok(())
}

async fn tx_commit(fx: JobsFixture) -> CaseResult {
    let db = orders_table(&fx).await?;
    let op = fx.jobs.enqueue_operation(&job("tx_job", 2).priority(4))?;
    db.transaction(vec![order("o2"), op.operation]).await?;
    ensure!(
        db.get(ORDERS, &json!("o2")).await?.is_some(),
        "the order committed"
    );
    let j = get(&fx, op.id).await?;
    ensure_eq!((j.state, j.priority, j.attempts), (JobState::Queued, 4, 0));
    let c = claim(&fx, &["tx_job"], 10).await?;
    ensure_eq!(
        c.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![op.id],
        "the committed job runs"
    );
    fx.jobs.complete(&c[0].lease).await?;
    ensure!(
        claim(&fx, &["tx_job"], 10).await?.is_empty(),
        "and runs once"
    );
    // A unique key held by a queued job fails the transaction.
    let held = enqueue(&fx, job("tx_job", 3).unique_key("tx-key")).await?;
    let dup = fx
        .jobs
        .enqueue_operation(&job("tx_job", 4).unique_key("tx-key"))?;
    expect_kind(
        db.transaction(vec![order("o3"), dup.operation]).await,
        ErrorKind::Conflict,
        "a transaction enqueueing a held unique key",
    )?;
    ensure!(
        db.get(ORDERS, &json!("o3")).await?.is_none(),
        "the conflicting transaction rolled back"
    );
    ensure!(fx.jobs.get(dup.id).await?.is_none(), "no duplicate job");
    ensure_eq!(get(&fx, held).await?.state, JobState::Queued);
    Ok(())
}
