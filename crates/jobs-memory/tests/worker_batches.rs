//! A busy worker refills in batches: a freed slot waits about as long as
//! the worker's last claim took for more slots to be freed, so with claims
//! that take a few milliseconds (as a database's do under load) jobs
//! finishing one at a time are claimed for together, not once per finished
//! job. Jobs claimed together share their `started_at` (one claim, one
//! clock reading), so the claims are read back from the completed jobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use truststream_core_jobs::{
    ClaimRequest, ClaimedJob, EnqueueOperation, Enqueued, FailOutcome, Health, Job, JobContext,
    JobError, JobId, JobQuery, JobState, JobStats, Jobs, JobsCapabilities, JobsResult, Lease,
    NewJob, ProviderInfo, Worker,
};
use truststream_jobs_memory::MemoryJobs;

const JOBS: u64 = 64;

/// How long each claim of [`SlowClaims`] takes.
const CLAIM_TAKES: Duration = Duration::from_millis(4);

#[derive(serde::Deserialize)]
struct Payload {
    n: u64,
}

/// The memory store with claims that take [`CLAIM_TAKES`], and
/// completions that wait for a permit of `completions` when it is set.
struct SlowClaims(MemoryJobs, Option<Arc<tokio::sync::Semaphore>>);

#[async_trait]
impl Jobs for SlowClaims {
    fn info(&self) -> ProviderInfo {
        self.0.info()
    }
    fn capabilities(&self) -> JobsCapabilities {
        self.0.capabilities()
    }
    async fn health(&self) -> Health {
        self.0.health().await
    }
    async fn enqueue(&self, job: NewJob) -> JobsResult<Enqueued> {
        self.0.enqueue(job).await
    }
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> JobsResult<Vec<Enqueued>> {
        self.0.enqueue_many(jobs).await
    }
    fn enqueue_operation(&self, job: &NewJob) -> JobsResult<EnqueueOperation> {
        self.0.enqueue_operation(job)
    }
    async fn claim(&self, request: &ClaimRequest) -> JobsResult<Vec<ClaimedJob>> {
        tokio::time::sleep(CLAIM_TAKES).await;
        self.0.claim(request).await
    }
    async fn extend_lease(&self, lease: &Lease, by: Duration) -> JobsResult<DateTime<Utc>> {
        self.0.extend_lease(lease, by).await
    }
    async fn complete(&self, lease: &Lease) -> JobsResult<()> {
        if let Some(gate) = &self.1 {
            gate.acquire().await.expect("the gate stays open").forget();
        }
        self.0.complete(lease).await
    }
    async fn fail(&self, lease: &Lease, error: &JobError) -> JobsResult<FailOutcome> {
        self.0.fail(lease, error).await
    }
    async fn release(&self, lease: &Lease) -> JobsResult<()> {
        self.0.release(lease).await
    }
    async fn cancel(&self, id: JobId) -> JobsResult<Job> {
        self.0.cancel(id).await
    }
    async fn retry_dead(&self, id: JobId) -> JobsResult<Job> {
        self.0.retry_dead(id).await
    }
    async fn get(&self, id: JobId) -> JobsResult<Option<Job>> {
        self.0.get(id).await
    }
    async fn list(&self, query: &JobQuery) -> JobsResult<Vec<Job>> {
        self.0.list(query).await
    }
    async fn stats(&self) -> JobsResult<JobStats> {
        self.0.stats().await
    }
    async fn purge_finished(&self, before: DateTime<Utc>) -> JobsResult<u64> {
        self.0.purge_finished(before).await
    }
    async fn wait_for_work(&self, max_wait: Duration) {
        self.0.wait_for_work(max_wait).await
    }
}

/// Runs `JOBS` jobs finishing one at a time (1 to 7 ms each) on a worker
/// with 8 slots over `jobs`, and returns the size of each claim.
async fn claim_sizes(jobs: Arc<dyn Jobs>, refill_wait: Duration) -> Vec<u64> {
    jobs.enqueue_many(
        (0..JOBS)
            .map(|n| NewJob::new("batch", &serde_json::json!({ "n": n })))
            .collect::<Result<Vec<_>, _>>()
            .expect("valid jobs"),
    )
    .await
    .expect("enqueue");
    let worker = Worker::builder(jobs.clone())
        .concurrency(8)
        .refill_wait(refill_wait)
        // No poll runs out during the test: every claim after the first is
        // a refill or the one kept wake-up of the enqueue.
        .poll_interval(Duration::from_secs(600))
        .register("batch", |_ctx: JobContext, p: Payload| async move {
            // Finishing at different times, one at a time.
            tokio::time::sleep(Duration::from_millis(1 + p.n % 7)).await;
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = jobs
            .stats()
            .await
            .expect("stats")
            .count("batch", JobState::Completed);
        if done == JOBS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "only {done} of {JOBS} jobs completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker.stop(Duration::from_secs(10)).await;
    assert_eq!(report.completed, JOBS, "{report:?}");

    let done = jobs
        .list(&JobQuery::new().job_type("batch").limit(1000))
        .await
        .expect("list");
    assert_eq!(done.len() as u64, JOBS);
    let mut claims: BTreeMap<_, u64> = BTreeMap::new();
    for j in &done {
        assert_eq!(j.attempts, 1, "{j:?}");
        *claims
            .entry(j.started_at.expect("a completed job started"))
            .or_default() += 1;
    }
    claims.values().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_claims_for_the_slots_freed_while_a_claim_takes() {
    let default = claim_sizes(
        Arc::new(SlowClaims(MemoryJobs::new(), None)),
        truststream_core_jobs::DEFAULT_REFILL_WAIT,
    )
    .await;
    assert_eq!(
        default[0], 8,
        "the first claim fills every slot: {default:?}"
    );
    // Single-job claims: the kept wake-up of the enqueue, the last claim
    // when one job is left, and a slot freed by a long job that waited out
    // the claim's time alone: a few, where every claim but the first would
    // be one without the wait.
    let singles = default.iter().filter(|s| **s < 2).count();
    assert!(
        singles * 3 <= default.len(),
        "claims of one job: {default:?}"
    );
    // Without the wait, every freed slot is claimed for at once (as long
    // as fewer than two claims are in flight): about twice the claims
    // here, most of them for one job.
    let eager = claim_sizes(
        Arc::new(SlowClaims(MemoryJobs::new(), None)),
        Duration::ZERO,
    )
    .await;
    assert!(
        eager.len() > default.len() * 3 / 2,
        "no wait: {eager:?}; the default wait: {default:?}"
    );
}

/// A store that does not record outcomes does not get more jobs: the
/// worker holds at most three times its concurrency (handlers running and
/// outcomes being recorded), then claims again as outcomes are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_not_yet_recorded_hold_back_the_claims() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let jobs = Arc::new(SlowClaims(MemoryJobs::new(), Some(gate.clone())));
    jobs.enqueue_many(
        (0..40)
            .map(|n| NewJob::new("held", &serde_json::json!({ "n": n })))
            .collect::<Result<Vec<_>, _>>()
            .expect("valid jobs"),
    )
    .await
    .expect("enqueue");
    let worker = Worker::builder(jobs.clone())
        .concurrency(4)
        .poll_interval(Duration::from_millis(20))
        .register("held", |_ctx: JobContext, _p: Payload| async move {
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(worker.report().claimed, 12, "{:?}", worker.report());
    gate.add_permits(40);
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while worker.report().completed < 40 {
        assert!(tokio::time::Instant::now() < until, "{:?}", worker.report());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = worker.stop(Duration::from_secs(5)).await;
    assert_eq!(report.claimed, 40, "{report:?}");
}

/// CPU time this process has used (user + system), from `/proc/self/stat`
/// (in clock ticks, 100 a second on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// A worker whose claims came back short (the queue drained) waits to be
/// woken: it does not claim again and again on its free slots (a spinning
/// claim loop would burn a core here, on a queue that has nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_leaves_the_worker_idle() {
    let jobs: Arc<dyn Jobs> = Arc::new(MemoryJobs::new());
    jobs.enqueue_many(
        (0..3)
            .map(|n| NewJob::new("few", &serde_json::json!({ "n": n })))
            .collect::<Result<Vec<_>, _>>()
            .expect("valid jobs"),
    )
    .await
    .expect("enqueue");
    let worker = Worker::builder(jobs.clone())
        .concurrency(16)
        .poll_interval(Duration::from_secs(600))
        .register("few", |_ctx: JobContext, _p: Payload| async move {
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while worker.report().completed < 3 {
        assert!(tokio::time::Instant::now() < until, "{:?}", worker.report());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = cpu_ticks();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let used = cpu_ticks() - before;
    assert!(
        used <= 20,
        "an idle worker used {used} ticks of CPU in one second"
    );
    // Woken by an enqueue, it claims again.
    jobs.enqueue(NewJob::new("few", &serde_json::json!({ "n": 9 })).expect("job"))
        .await
        .expect("enqueue");
    while worker.report().completed < 4 {
        assert!(tokio::time::Instant::now() < until, "{:?}", worker.report());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = worker.stop(Duration::from_secs(5)).await;
    assert_eq!(report.claimed, 4, "{report:?}");
}
