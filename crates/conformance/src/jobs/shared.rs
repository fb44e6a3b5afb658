//! Several provider instances (e.g. separate processes, each with its own
//! pool) on one queue: every job runs exactly once, and the instances share
//! the work. Run by each provider's own multi-instance tests.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use truststream_core_db::{ColumnDef, ColumnDefault, Database, Query, Row, TableSchema};
use truststream_core_jobs::{
    JobContext, JobError, JobQuery, JobState, Jobs, JobsResult, NewJob, Worker, WorkerHandle,
    WorkerReport,
};

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

/// The job type of the effect runs ([`effect_worker`]).
pub const EFFECT_TYPE: &str = "effect";

/// The table effect handlers write to: one row per run of a job (an
/// integer key from a sequence, the job's number `n`, the worker), with
/// nothing unique about `n`, so a job run twice leaves two rows.
pub const EFFECTS_TABLE: &str = "job_effects";

/// The [`EFFECTS_TABLE`] schema (created if missing).
pub fn effects_schema() -> TableSchema {
    TableSchema::new(EFFECTS_TABLE)
        .if_not_exists()
        .column(
            ColumnDef::integer("id")
                .primary_key()
                .default(ColumnDefault::AutoIncrement),
        )
        .column(ColumnDef::integer("n"))
        .column(ColumnDef::text("worker"))
}

/// Enqueues jobs `0..total` of type [`EFFECT_TYPE`] (payload `{"n": n}`)
/// in batches of `batch`.
pub async fn enqueue_numbered(jobs: &dyn Jobs, total: u64, batch: usize) -> CaseResult {
    let all: Vec<u64> = (0..total).collect();
    for chunk in all.chunks(batch.max(1)) {
        let jobs_batch = chunk
            .iter()
            .map(|n| NewJob::new(EFFECT_TYPE, &serde_json::json!({ "n": n })))
            .collect::<Result<Vec<_>, _>>()?;
        jobs.enqueue_many(jobs_batch).await?;
    }
    Ok(())
}

/// A worker on `jobs` whose handler for [`EFFECT_TYPE`] writes one row to
/// [`EFFECTS_TABLE`] of `db` per run (a failed write fails the attempt).
pub fn effect_worker(
    jobs: Arc<dyn Jobs>,
    db: Arc<dyn Database>,
    worker_id: &str,
    concurrency: usize,
    lease: Duration,
    poll: Duration,
) -> JobsResult<WorkerHandle> {
    let id = worker_id.to_string();
    Worker::builder(jobs)
        .concurrency(concurrency)
        .lease(lease)
        .poll_interval(poll)
        .worker_id(worker_id)
        .register(EFFECT_TYPE, move |_ctx: JobContext, p: Payload| {
            let db = db.clone();
            let id = id.clone();
            async move {
                let mut row = Row::new();
                row.insert("n".into(), serde_json::json!(p.n));
                row.insert("worker".into(), serde_json::json!(id));
                db.create(EFFECTS_TABLE, row)
                    .await
                    .map(|_| ())
                    .map_err(JobError::from)
            }
        })?
        .start()
}

/// Waits (polling `jobs.stats()` every 500 ms, a failed read retried) until
/// `total` jobs of `job_type` are completed, for at most `deadline`.
pub async fn wait_completed(
    jobs: &dyn Jobs,
    job_type: &str,
    total: u64,
    deadline: Duration,
) -> CaseResult {
    let until = tokio::time::Instant::now() + deadline;
    let mut done = 0;
    loop {
        if let Ok(s) = jobs.stats().await {
            done = s.count(job_type, JobState::Completed);
            if done >= total {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= until {
            return Err(Failure::new(format!(
                "only {done} of {total} {job_type} jobs completed in {deadline:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many times each job's effect was applied, from [`EFFECTS_TABLE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectCounts {
    /// Jobs `0..total` with no effect.
    pub missing: Vec<u64>,
    /// Jobs with more than one effect, and how many.
    pub repeated: BTreeMap<u64, u64>,
    /// Rows in the table.
    pub rows: u64,
}

/// Reads [`EFFECTS_TABLE`] of `db` and counts each job's effects.
pub async fn count_effects(db: &dyn Database, total: u64) -> Result<EffectCounts, Failure> {
    let mut per: BTreeMap<u64, u64> = BTreeMap::new();
    let mut rows = 0;
    let page = 5_000;
    let mut offset = 0;
    loop {
        let got = db
            .read(
                EFFECTS_TABLE,
                &Query::new()
                    .select(["id", "n"])
                    .order_by_asc("id")
                    .limit(page)
                    .offset(offset),
            )
            .await?;
        for r in &got {
            let n = r
                .get("n")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| Failure::new(format!("an effect row without n: {r:?}")))?;
            *per.entry(n).or_default() += 1;
            rows += 1;
        }
        if (got.len() as u64) < page {
            break;
        }
        offset += page;
    }
    Ok(EffectCounts {
        missing: (0..total).filter(|n| !per.contains_key(n)).collect(),
        repeated: per.into_iter().filter(|(_, c)| *c > 1).collect(),
        rows,
    })
}

/// The body of a worker process of a multi-process run: an
/// [`effect_worker`] (8 at a time, 30 s leases) named `name` works until
/// `total` effect jobs are completed, stops gracefully, and prints its
/// report as one `REPORT <json>` line on stdout for [`wait_workers`].
pub async fn worker_process(
    jobs: Arc<dyn Jobs>,
    db: Arc<dyn Database>,
    name: &str,
    total: u64,
) -> CaseResult {
    let worker = effect_worker(
        jobs.clone(),
        db,
        name,
        8,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )?;
    let drained = wait_completed(&*jobs, EFFECT_TYPE, total, Duration::from_secs(900)).await;
    let report = worker.stop(Duration::from_secs(30)).await;
    drained?;
    let line = serde_json::to_string(&report)
        .map_err(|e| Failure::new(format!("cannot render the report: {e}")))?;
    println!("REPORT {line}");
    Ok(())
}

/// Runs the current test binary again as a worker process: only the
/// (ignored) test `test`, with `env` set to `spec`.
pub fn spawn_worker_process(test: &str, env: &str, spec: &str) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args([test, "--exact", "--ignored", "--nocapture", "--quiet"])
        .env(env, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Waits for worker processes (blocking: call it in
/// `tokio::task::spawn_blocking`) and reads each one's report; a process
/// that failed or printed no report is a failure.
pub fn wait_workers(children: Vec<Child>) -> Result<Vec<WorkerReport>, Failure> {
    let mut reports = Vec::new();
    for c in children {
        let out = c
            .wait_with_output()
            .map_err(|e| Failure::new(format!("waiting for a worker process: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "a worker process failed: {:?}: {text}",
            out.status
        );
        let line = text
            .lines()
            // libtest's "test <name> ... " may precede it on its line.
            .find_map(|l| l.split_once("REPORT ").map(|(_, r)| r))
            .ok_or_else(|| Failure::new(format!("a worker process printed no report: {text}")))?;
        reports.push(
            serde_json::from_str(line)
                .map_err(|e| Failure::new(format!("a bad worker report {line:?}: {e}")))?,
        );
    }
    Ok(reports)
}

/// After a run with no failure injected: the workers completed `total`
/// jobs between them, every worker some, none failed or lost a lease, and
/// [`EFFECTS_TABLE`] holds each job's effect exactly once.
pub async fn check_exactly_once(
    db: &dyn Database,
    jobs: &dyn Jobs,
    total: u64,
    reports: &[WorkerReport],
) -> CaseResult {
    let completed: u64 = reports.iter().map(|r| r.completed).sum();
    ensure_eq!(completed, total, "{reports:?}");
    ensure!(
        reports.iter().all(|r| r.completed > 0),
        "every worker worked: {reports:?}"
    );
    ensure!(
        reports
            .iter()
            .all(|r| r.failed == 0 && r.lost_leases == 0 && r.released == 0),
        "no failure, no lost lease: {reports:?}"
    );
    let effects = count_effects(db, total).await?;
    ensure!(effects.missing.is_empty(), "lost: {:?}", effects.missing);
    ensure!(
        effects.repeated.is_empty(),
        "run more than once: {:?}",
        effects.repeated
    );
    ensure_eq!(effects.rows, total);
    let stats = jobs.stats().await?;
    ensure_eq!(stats.count(EFFECT_TYPE, JobState::Completed), total);
    let runs = stats
        .run_times_of(EFFECT_TYPE)
        .ok_or_else(|| Failure::new("no run times after the run"))?;
    ensure!(runs.sampled > 0 && runs.p50 <= runs.p99, "{runs:?}");
    Ok(())
}

/// Worker processes in a multi-process run.
pub const PROCESSES: usize = 3;

/// Jobs per multi-process run: `TS_JOBS_TOTAL`, else 5,000 (a few minutes
/// on 2 cores; `TS_JOBS_TOTAL=20000` runs the full count). Worker processes
/// inherit the variable, so both sides agree.
pub fn processes_total() -> u64 {
    std::env::var("TS_JOBS_TOTAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

/// The multi-process exactly-once run: creates [`EFFECTS_TABLE`] in `db`,
/// enqueues [`processes_total`] effect jobs on `jobs`, runs [`PROCESSES`]
/// worker processes (the current test binary's ignored test `test`, with
/// `env` set to `spec(i)` for process `i`; each runs [`worker_process`])
/// and checks the outcome with [`check_exactly_once`].
pub async fn exactly_once_across_processes(
    db: &dyn Database,
    jobs: &dyn Jobs,
    test: &str,
    env: &str,
    spec: impl Fn(usize) -> String,
) -> CaseResult {
    let total = processes_total();
    db.create_table(&effects_schema()).await?;
    enqueue_numbered(jobs, total, 1_000).await?;
    let children = (0..PROCESSES)
        .map(|i| {
            spawn_worker_process(test, env, &spec(i))
                .map_err(|e| Failure::new(format!("spawning a worker process: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let reports = tokio::task::spawn_blocking(move || wait_workers(children))
        .await
        .map_err(|e| Failure::new(format!("waiting for the worker processes: {e}")))??;
    check_exactly_once(db, jobs, total, &reports).await?;
    eprintln!("reports: {reports:?}");
    Ok(())
}

/// The worker id of [`doomed_worker`].
pub const DOOMED: &str = "doomed-child";

/// The worker of a process about to be killed: claims up to `n` jobs of
/// `job_type` with 2 s leases (polling every 100 ms) and never finishes
/// one.
pub fn doomed_worker(jobs: Arc<dyn Jobs>, job_type: &str, n: usize) -> JobsResult<WorkerHandle> {
    Worker::builder(jobs)
        .concurrency(n)
        .lease(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(100))
        .worker_id(DOOMED)
        .register(
            job_type,
            |_ctx: JobContext, _p: serde_json::Value| async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<(), JobError>(())
            },
        )?
        .start()
}

/// After a [`doomed_worker`]'s process was killed holding all `total` jobs
/// of `job_type` and worker `survivor` ran them: each job is completed on
/// its second attempt, the first one the killed worker's, ended by its
/// lease.
pub async fn check_ran_again_after_kill(
    jobs: &dyn Jobs,
    job_type: &str,
    total: u64,
    survivor: &str,
) -> CaseResult {
    let all = jobs
        .list(&JobQuery::new().job_type(job_type).limit(1000))
        .await?;
    ensure_eq!(all.len() as u64, total);
    for j in all {
        ensure_eq!(j.state, JobState::Completed, "{j:?}");
        ensure_eq!(j.attempts, 2, "the killed attempt counts: {j:?}");
        ensure_eq!(j.history.len(), 2, "{:?}", j.history);
        ensure_eq!(j.history[0].worker_id, DOOMED);
        ensure!(
            j.history[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("lease expired")),
            "{:?}",
            j.history[0]
        );
        ensure_eq!(j.history[1].worker_id, survivor);
    }
    Ok(())
}
