//! Completion in the handler's own transaction (`PgJobs::complete_with`,
//! `complete_in`), with the failures it exists for injected:
//!
//! - a lease that ran out and was taken by another worker: the first run's
//!   completion is refused with `Conflict` and its writes roll back, the
//!   second run's writes are there once;
//! - a handler that fails or panics after its writes: nothing committed,
//!   the job retried, its effect there once;
//! - 200 jobs, 3 workers (each with its own pool), every fifth job's first
//!   run stalled past its lease (its extensions swallowed) until another
//!   worker re-claimed it: each job's effect exactly once, every stalled
//!   run refused (each worker has more slots than there are stalled runs);
//! - a worker process killed (SIGKILL) with its transactions open — half
//!   of them after the handler's writes, half after the completion too,
//!   before the commit: after the leases run out, each job's effect is
//!   there exactly once, written by the survivor.
//!
//! The effects table has no unique constraint, so a write applied twice
//! shows as two rows.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use truststream_conformance::jobs::shared::wait_completed;
use truststream_core_jobs::{
    Backoff, ClaimRequest, ClaimedJob, EnqueueOperation, Enqueued, ErrorKind, FailOutcome, Health,
    Job, JobContext, JobError, JobId, JobQuery, JobState, JobStats, Jobs, JobsCapabilities,
    JobsResult, Lease, NewJob, ProviderInfo, Worker, WorkerHandle,
};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_jobs_postgres::{sql_error, PgJobs, PgJobsConfig};

const JOB_TYPE: &str = "credit";

async fn open(url: &str, schema: &str, max_connections: u32) -> Arc<PgJobs> {
    let mut config = PgJobsConfig::new(url.to_string()).with_schema(schema.to_string());
    config.max_connections = max_connections;
    Arc::new(PgJobs::open(config).await.expect("open the jobs table"))
}

/// A scratch schema with the jobs table and an effects table.
async fn setup(scratch: &Scratch, url: &str, tag: &str) -> (String, Arc<PgJobs>) {
    let schema = scratch.config(tag).schema.expect("scratch schema");
    let jobs = open(url, &schema, 10).await;
    sqlx::query(&format!(
        "CREATE TABLE \"{schema}\".effects (n int8 NOT NULL, run text NOT NULL, attempt int8 NOT NULL)"
    ))
    .execute(jobs.pool())
    .await
    .expect("effects table");
    (schema, jobs)
}

async fn enqueue(jobs: &PgJobs, total: u64) -> Vec<JobId> {
    let batch = (0..total)
        .map(|n| {
            NewJob::from_json(JOB_TYPE, serde_json::json!({ "n": n }))
                .max_attempts(5)
                .backoff(Backoff::fixed(Duration::from_millis(10)).jitter(0.0))
        })
        .collect();
    jobs.enqueue_many(batch)
        .await
        .expect("enqueue")
        .into_iter()
        .map(Enqueued::id)
        .collect()
}

/// The handler's own write: one effect row.
async fn write_effect(
    conn: &mut PgConnection,
    schema: &str,
    n: i64,
    run: &str,
    attempt: u32,
) -> JobsResult<()> {
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".effects (n, run, attempt) VALUES ($1, $2, $3)"
    ))
    .bind(n)
    .bind(run)
    .bind(i64::from(attempt))
    .execute(conn)
    .await
    .map_err(sql_error)?;
    Ok(())
}

/// The effect rows: job number -> (run, attempt) of each.
async fn effects(jobs: &PgJobs, schema: &str) -> BTreeMap<i64, Vec<(String, i64)>> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
        "SELECT n, run, attempt FROM \"{schema}\".effects ORDER BY n, run"
    ))
    .fetch_all(jobs.pool())
    .await
    .expect("read effects");
    let mut out: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    for (n, run, attempt) in rows {
        out.entry(n).or_default().push((run, attempt));
    }
    out
}

/// Every job in `0..total` has exactly one effect.
fn assert_once(effects: &BTreeMap<i64, Vec<(String, i64)>>, total: u64) {
    let missing: Vec<i64> = (0..total as i64)
        .filter(|n| !effects.contains_key(n))
        .collect();
    let repeated: Vec<(&i64, &Vec<(String, i64)>)> =
        effects.iter().filter(|(_, v)| v.len() != 1).collect();
    assert!(missing.is_empty(), "effects missing for jobs {missing:?}");
    assert!(
        repeated.is_empty(),
        "effects applied more than once: {repeated:?}"
    );
    assert_eq!(
        effects.len() as u64,
        total,
        "effects of unknown jobs: {effects:?}"
    );
}

fn payload_n(ctx: &JobContext) -> i64 {
    ctx.job().payload["n"].as_i64().expect("payload n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_lost_its_lease_cannot_complete_and_its_writes_roll_back() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let (schema, jobs) = setup(&scratch, &url, "pgjobs_tx_lost").await;
    let id = enqueue(&jobs, 1).await[0];
    let claim = |worker: &str, lease_ms: u64| ClaimRequest {
        job_types: vec![JOB_TYPE.to_string()],
        batch: 1,
        lease: Duration::from_millis(lease_ms),
        worker_id: worker.to_string(),
    };
    let first: ClaimedJob = jobs
        .claim(&claim("w1", 50))
        .await
        .expect("claim")
        .pop()
        .expect("w1 claims the job");
    // Let w1's lease run out, then w2 takes the job.
    let second = loop {
        tokio::time::sleep(Duration::from_millis(60)).await;
        if let Some(c) = jobs.claim(&claim("w2", 60_000)).await.expect("claim").pop() {
            break c;
        }
    };
    assert_eq!((second.job.id, second.job.attempts), (id, 2));

    // w1 finishes its handler: writes, then the completion, in one
    // transaction — refused, and its write is gone.
    let s = schema.clone();
    let refused = jobs
        .complete_with(&first.lease, move |conn| {
            Box::pin(async move { write_effect(conn, &s, 0, "w1", 1).await })
        })
        .await
        .expect_err("a lost lease cannot complete");
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert!(
        effects(&jobs, &schema).await.is_empty(),
        "w1's write was applied"
    );

    // The same with complete_in on the caller's own transaction.
    let mut tx = jobs.pool().begin().await.expect("begin");
    write_effect(&mut tx, &schema, 0, "w1", 1)
        .await
        .expect("write");
    let refused = jobs
        .complete_in(&mut tx, &first.lease)
        .await
        .expect_err("a lost lease cannot complete in a transaction");
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    tx.rollback().await.expect("rollback");

    // w2's run completes with its write.
    let s = schema.clone();
    jobs.complete_with(&second.lease, move |conn| {
        Box::pin(async move { write_effect(conn, &s, 0, "w2", 2).await })
    })
    .await
    .expect("w2 completes");
    let job = jobs.get(id).await.expect("get").expect("job");
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(
        effects(&jobs, &schema).await,
        BTreeMap::from([(0, vec![("w2".to_string(), 2)])])
    );
    // A completion already committed is not repeated.
    let s = schema.clone();
    let again = jobs
        .complete_with(&second.lease, move |conn| {
            Box::pin(async move { write_effect(conn, &s, 0, "w2", 2).await })
        })
        .await
        .expect_err("completed once");
    assert_eq!(again.kind(), ErrorKind::Conflict, "{again}");
    assert_eq!(effects(&jobs, &schema).await.len(), 1);
    assert_eq!(effects(&jobs, &schema).await[&0].len(), 1);
    scratch.cleanup().await.expect("drop the scratch schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_or_panics_after_its_writes_commits_nothing() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let (schema, jobs) = setup(&scratch, &url, "pgjobs_tx_fail").await;
    const TOTAL: u64 = 20;
    enqueue(&jobs, TOTAL).await;
    let (pg, s) = (jobs.clone(), schema.clone());
    let worker = Worker::builder(jobs.clone())
        .concurrency(8)
        .poll_interval(Duration::from_millis(50))
        .register(JOB_TYPE, move |ctx: JobContext, _: serde_json::Value| {
            let (pg, s) = (pg.clone(), s.clone());
            async move {
                let n = payload_n(&ctx);
                let attempt = ctx.attempt();
                pg.complete_with(ctx.completion_lease(), move |conn| {
                    Box::pin(async move {
                        write_effect(conn, &s, n, "worker", attempt).await?;
                        match (attempt, n % 2) {
                            (1, 0) => Err(truststream_core_jobs::Error::invalid_input(
                                "the handler failed after its write",
                            )),
                            (1, _) => panic!("the handler panicked after its write"),
                            _ => Ok(()),
                        }
                    })
                })
                .await
                .map_err(|e| JobError::retry(e.to_string()))
            }
        })
        .expect("register")
        .start()
        .expect("start");
    wait_completed(&*jobs, JOB_TYPE, TOTAL, Duration::from_secs(60))
        .await
        .expect("every job completes on its second attempt");
    let report = worker.stop(Duration::from_secs(10)).await;
    assert_eq!(report.completed, TOTAL, "{report:?}");
    assert_eq!(report.failed, TOTAL, "{report:?}");
    assert_eq!(report.panicked, TOTAL / 2, "{report:?}");
    assert_eq!(report.lost_leases, 0, "{report:?}");
    let effects = effects(&jobs, &schema).await;
    assert_once(&effects, TOTAL);
    assert!(
        effects.values().all(|v| v[0].1 == 2),
        "a first attempt's write was committed: {effects:?}"
    );
    for job in jobs
        .list(&JobQuery::default())
        .await
        .expect("list")
        .into_iter()
    {
        assert_eq!((job.state, job.attempts), (JobState::Completed, 2));
        assert!(job.history[0].error.is_some(), "{:?}", job.history);
    }
    scratch.cleanup().await.expect("drop the scratch schema");
}

/// Forwards to the provider but swallows the lease extensions of the runs
/// in `stalled` (by lease token): the worker believes it extended, the
/// lease runs out, as for a worker cut off from the database or paused.
struct Stalling {
    inner: Arc<PgJobs>,
    stalled: Arc<Mutex<HashSet<String>>>,
}

#[async_trait]
impl Jobs for Stalling {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> JobsCapabilities {
        self.inner.capabilities()
    }
    async fn health(&self) -> Health {
        self.inner.health().await
    }
    async fn enqueue(&self, job: NewJob) -> JobsResult<Enqueued> {
        self.inner.enqueue(job).await
    }
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> JobsResult<Vec<Enqueued>> {
        self.inner.enqueue_many(jobs).await
    }
    fn enqueue_operation(&self, job: &NewJob) -> JobsResult<EnqueueOperation> {
        self.inner.enqueue_operation(job)
    }
    async fn claim(&self, request: &ClaimRequest) -> JobsResult<Vec<ClaimedJob>> {
        self.inner.claim(request).await
    }
    async fn extend_lease(&self, lease: &Lease, by: Duration) -> JobsResult<DateTime<Utc>> {
        if self
            .stalled
            .lock()
            .expect("stalled set")
            .contains(&lease.token)
        {
            return Ok(lease.expires_at);
        }
        self.inner.extend_lease(lease, by).await
    }
    async fn complete(&self, lease: &Lease) -> JobsResult<()> {
        self.inner.complete(lease).await
    }
    async fn fail(&self, lease: &Lease, error: &JobError) -> JobsResult<FailOutcome> {
        self.inner.fail(lease, error).await
    }
    async fn release(&self, lease: &Lease) -> JobsResult<()> {
        self.inner.release(lease).await
    }
    async fn cancel(&self, id: JobId) -> JobsResult<Job> {
        self.inner.cancel(id).await
    }
    async fn retry_dead(&self, id: JobId) -> JobsResult<Job> {
        self.inner.retry_dead(id).await
    }
    async fn get(&self, id: JobId) -> JobsResult<Option<Job>> {
        self.inner.get(id).await
    }
    async fn list(&self, query: &JobQuery) -> JobsResult<Vec<Job>> {
        self.inner.list(query).await
    }
    async fn stats(&self) -> JobsResult<JobStats> {
        self.inner.stats().await
    }
    async fn purge_finished(&self, before: DateTime<Utc>) -> JobsResult<u64> {
        self.inner.purge_finished(before).await
    }
    async fn wait_for_work(&self, max_wait: Duration) {
        self.inner.wait_for_work(max_wait).await
    }
}

#[derive(Default)]
struct Tally {
    stalled: AtomicU64,
    refused: AtomicU64,
}

fn stalling_worker(
    pg: Arc<PgJobs>,
    schema: String,
    name: &'static str,
    tally: Arc<Tally>,
) -> WorkerHandle {
    let stalled = Arc::new(Mutex::new(HashSet::new()));
    let wrapped = Arc::new(Stalling {
        inner: pg.clone(),
        stalled: stalled.clone(),
    });
    Worker::builder(wrapped)
        .worker_id(name)
        // More slots than stalled runs (40), so a stalled run never keeps
        // the job it waits for from being claimed again.
        .concurrency(16)
        .lease(Duration::from_secs(1))
        .poll_interval(Duration::from_millis(50))
        .register(JOB_TYPE, move |ctx: JobContext, _: serde_json::Value| {
            let (pg, schema, stalled, tally) =
                (pg.clone(), schema.clone(), stalled.clone(), tally.clone());
            async move {
                let n = payload_n(&ctx);
                let attempt = ctx.attempt();
                let stall = n % 5 == 0 && attempt == 1;
                if stall {
                    tally.stalled.fetch_add(1, Ordering::Relaxed);
                    stalled
                        .lock()
                        .expect("stalled set")
                        .insert(ctx.lease().token.clone());
                    // Paused until another worker has taken the job.
                    loop {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let job = pg
                            .get(ctx.id())
                            .await
                            .map_err(|e| JobError::retry(e.to_string()))?;
                        if job.is_some_and(|j| j.attempts > 1) {
                            break;
                        }
                    }
                }
                let r = pg
                    .complete_with(ctx.completion_lease(), move |conn| {
                        Box::pin(async move { write_effect(conn, &schema, n, name, attempt).await })
                    })
                    .await;
                match r {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        if stall && e.kind() == ErrorKind::Conflict {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(JobError::retry(e.to_string()))
                    }
                }
            }
        })
        .expect("register")
        .start()
        .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_with_expired_leases_apply_each_effect_once() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let (schema, jobs) = setup(&scratch, &url, "pgjobs_tx_three").await;
    const TOTAL: u64 = 200;
    enqueue(&jobs, TOTAL).await;
    let tally = Arc::new(Tally::default());
    let mut workers = Vec::new();
    for name in ["w1", "w2", "w3"] {
        let pg = open(&url, &schema, 10).await;
        workers.push(stalling_worker(pg, schema.clone(), name, tally.clone()));
    }
    wait_completed(&*jobs, JOB_TYPE, TOTAL, Duration::from_secs(120))
        .await
        .expect("every job completes");
    let mut completed = 0;
    let mut lost = 0;
    for w in workers {
        let r = w.stop(Duration::from_secs(10)).await;
        completed += r.completed;
        lost += r.lost_leases;
    }
    let stalled = TOTAL / 5;
    assert_eq!(tally.stalled.load(Ordering::Relaxed), stalled);
    assert_eq!(
        tally.refused.load(Ordering::Relaxed),
        stalled,
        "every stalled run's completion is refused"
    );
    assert_eq!(completed, TOTAL, "one completed run per job");
    assert!(
        lost >= stalled,
        "{lost} lost leases for {stalled} stalled runs"
    );
    let effects = effects(&jobs, &schema).await;
    assert_once(&effects, TOTAL);
    for (n, runs) in &effects {
        if n % 5 == 0 {
            assert!(
                runs[0].1 >= 2,
                "job {n}'s effect is a later run's: {runs:?}"
            );
        }
    }
    scratch.cleanup().await.expect("drop the scratch schema");
}

const CHILD: &str = "TS_PGJOBS_TX_KILL";
const KILL_JOBS: u64 = 20;

/// The child: runs every job up to its commit and stops there — even jobs
/// after their write (inside `complete_with`), odd ones after the
/// completion too (`complete_in`) — noting each in the file it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the test below, not a test of its own"]
async fn stuck_before_commit() {
    let spec = std::env::var(CHILD).expect("run by the test below with TS_PGJOBS_TX_KILL set");
    let parts: Vec<String> = spec.split('\t').map(str::to_string).collect();
    let [url, schema, notes] = parts.as_slice() else {
        panic!("url<TAB>schema<TAB>file");
    };
    let pg = open(url, schema, KILL_JOBS as u32 + 15).await;
    let notes = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(notes)
            .expect("notes file"),
    ));
    let note = move |n: i64| {
        let mut f = notes.lock().expect("notes file");
        writeln!(f, "{n}").expect("note");
        f.flush().expect("flush");
    };
    let schema = schema.clone();
    let _worker = Worker::builder(pg.clone())
        .worker_id("doomed")
        .concurrency(KILL_JOBS as usize)
        .lease(Duration::from_secs(2))
        .register(JOB_TYPE, move |ctx: JobContext, _: serde_json::Value| {
            let (pg, schema, note) = (pg.clone(), schema.clone(), note.clone());
            async move {
                let n = payload_n(&ctx);
                let attempt = ctx.attempt();
                if n % 2 == 0 {
                    let _ = pg
                        .complete_with(ctx.completion_lease(), move |conn| {
                            Box::pin(async move {
                                write_effect(conn, &schema, n, "doomed", attempt).await?;
                                note(n);
                                std::future::pending::<()>().await;
                                Ok(())
                            })
                        })
                        .await;
                } else {
                    let mut tx = pg.pool().begin().await.expect("begin");
                    write_effect(&mut tx, &schema, n, "doomed", attempt)
                        .await
                        .expect("write");
                    pg.complete_in(&mut tx, ctx.completion_lease())
                        .await
                        .expect("complete in the transaction");
                    note(n);
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        })
        .expect("register")
        .start()
        .expect("start");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_before_its_commits_leaves_one_effect_per_job() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let (schema, jobs) = setup(&scratch, &url, "pgjobs_tx_kill").await;
    enqueue(&jobs, KILL_JOBS).await;
    let notes = std::env::temp_dir().join(format!("{schema}.notes"));
    std::fs::write(&notes, "").expect("notes file");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["stuck_before_commit", "--exact", "--ignored", "--quiet"])
        .env(CHILD, format!("{url}\t{schema}\t{}", notes.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child worker");
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let noted = std::fs::read_to_string(&notes)
            .expect("notes")
            .lines()
            .count();
        if noted as u64 == KILL_JOBS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the child reached the commit of only {noted} of {KILL_JOBS} jobs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    let _ = std::fs::remove_file(&notes);

    let (pg, s) = (jobs.clone(), schema.clone());
    let survivor = Worker::builder(jobs.clone())
        .worker_id("survivor")
        .concurrency(8)
        .lease(Duration::from_secs(30))
        .poll_interval(Duration::from_millis(200))
        .register(JOB_TYPE, move |ctx: JobContext, _: serde_json::Value| {
            let (pg, s) = (pg.clone(), s.clone());
            async move {
                let n = payload_n(&ctx);
                let attempt = ctx.attempt();
                pg.complete_with(ctx.completion_lease(), move |conn| {
                    Box::pin(async move { write_effect(conn, &s, n, "survivor", attempt).await })
                })
                .await
                .map_err(|e| JobError::retry(e.to_string()))
            }
        })
        .expect("register")
        .start()
        .expect("start the survivor");
    wait_completed(&*jobs, JOB_TYPE, KILL_JOBS, Duration::from_secs(120))
        .await
        .expect("the survivor completes every job after the leases run out");
    let report = survivor.stop(Duration::from_secs(10)).await;
    assert_eq!(report.completed, KILL_JOBS, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    let effects = effects(&jobs, &schema).await;
    assert_once(&effects, KILL_JOBS);
    assert!(
        effects
            .values()
            .all(|v| v[0] == ("survivor".to_string(), 2)),
        "a killed run's write was committed: {effects:?}"
    );
    scratch.cleanup().await.expect("drop the scratch schema");
}
