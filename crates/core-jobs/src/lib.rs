#![doc = include_str!("../README.md")]

mod backoff;
pub mod batch;
mod capabilities;
pub mod lifecycle;
pub mod metrics;
pub mod row;
mod run_times;
pub mod schedule;
mod serde_ms;
mod types;
mod wake;
pub mod worker;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use backoff::Backoff;
pub use batch::{BatchStats, Batcher};
pub use capabilities::JobsCapabilities;
pub use run_times::{RunTimes, RUN_TIME_SAMPLE};
pub use schedule::{CatchUp, Schedule, Scheduler, SchedulerHandle, SchedulerReport};
pub use truststream_core::{Error, ErrorKind, Health, HealthStatus, ProviderInfo};
pub use types::{
    validate_job_type, Attempt, ClaimRequest, ClaimedJob, EnqueueOperation, Enqueued, FailOutcome,
    Job, JobError, JobId, JobQuery, JobState, JobStats, Lease, NewJob, StateCount,
    DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT, MAX_ERROR_BYTES, MAX_HISTORY, MAX_JOB_TYPE_BYTES,
    MAX_UNIQUE_KEY_BYTES,
};
pub use wake::Wake;
pub use worker::{
    Handler, JobContext, Worker, WorkerBuilder, WorkerHandle, WorkerReport, DEFAULT_REFILL_WAIT,
};

/// `Result` of jobs operations.
pub type JobsResult<T> = Result<T, Error>;

/// Jobs provider factories by type name (see [`truststream_core::Registry`]).
/// The dependency is the configured database, for providers that keep their
/// jobs in it.
pub type JobsRegistry =
    truststream_core::Registry<dyn Jobs, Option<std::sync::Arc<dyn truststream_core_db::Database>>>;

/// A durable job queue.
///
/// Producers [`enqueue`](Jobs::enqueue) jobs; workers (see [`Worker`])
/// [`claim`](Jobs::claim) them in batches under a lease, run them, and
/// [`complete`](Jobs::complete) or [`fail`](Jobs::fail) them with the
/// lease. A worker that dies stops extending its leases, and its jobs become
/// claimable again when the leases run out, so every job runs **at least
/// once**: make handlers idempotent, or complete the job in the handler's
/// own database transaction, so that its writes and the completion commit
/// together (exactly once; see [`JobContext`]). That completion takes the
/// provider's transaction type, so it is offered by the providers that keep
/// jobs in a database (jobs-postgres `PgJobs::complete_with` /
/// `complete_in`, jobs-db `DbJobs::complete_with`), not by this trait.
///
/// The state machine (attempt counting, backoff, history, dead jobs) is
/// [`lifecycle`], shared by every provider. A method the provider cannot
/// serve returns [`ErrorKind::Unsupported`] and its [`JobsCapabilities`]
/// flag is `false`.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    /// Provider type name and crate version.
    fn info(&self) -> ProviderInfo;

    /// What this provider can do.
    fn capabilities(&self) -> JobsCapabilities;

    /// Probes the store and reports status and latency. Never fails.
    async fn health(&self) -> Health;

    /// Shuts the provider down for good: commits what it holds back
    /// (batched completions waiting for their flush), then stops its
    /// background tasks (wake-up listeners, batchers) and closes the
    /// connections it owns (not a database it was given). Idempotent.
    /// Later calls fail with [`ErrorKind::Unavailable`] instead of
    /// waiting. The default does nothing: for providers with nothing to
    /// close.
    async fn close(&self) -> JobsResult<()> {
        Ok(())
    }

    /// Stores a job ([`NewJob::validate`] first). While a job with the same
    /// unique key is queued or running, nothing is stored and the answer is
    /// [`Enqueued::Duplicate`] with that job's id. An id already taken is
    /// [`ErrorKind::Conflict`].
    async fn enqueue(&self, job: NewJob) -> JobsResult<Enqueued>;

    /// Stores many jobs; answers in the same order. When none of them has a
    /// unique key, all are stored or none (one bad job fails the call and
    /// stores nothing). Jobs with unique keys are de-duplicated one by one
    /// as [`Jobs::enqueue`] does.
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> JobsResult<Vec<Enqueued>>;

    /// The job as an operation for [`truststream_core_db::Database::transaction`]
    /// on the database this provider keeps its jobs in: the job exists if
    /// and only if that transaction commits. A unique key that collides
    /// with a queued or running job fails the transaction with
    /// [`ErrorKind::Conflict`] (no [`Enqueued::Duplicate`] here: the
    /// transaction cannot continue without the row). Workers waiting in
    /// [`Jobs::wait_for_work`] see the job at their next poll. Requires
    /// [`JobsCapabilities::transactional_enqueue`].
    fn enqueue_operation(&self, job: &NewJob) -> JobsResult<EnqueueOperation>;

    /// Claims up to `request.batch` claimable jobs of the requested types:
    /// queued ones whose `run_at` has passed, highest priority first, then
    /// oldest `run_at`; and running ones whose lease expired (see
    /// [`Job::start`]: one with no attempts left goes dead instead). Each
    /// comes with a new lease. No job is handed to two claimers while a
    /// lease on it is valid. An empty answer means nothing is claimable.
    async fn claim(&self, request: &ClaimRequest) -> JobsResult<Vec<ClaimedJob>>;

    /// Moves the end of a held lease to `now + by`; returns the new end.
    /// A lease no longer held is [`ErrorKind::Conflict`]: stop working on
    /// the job, another worker may have it.
    async fn extend_lease(&self, lease: &Lease, by: Duration) -> JobsResult<DateTime<Utc>>;

    /// Marks the job completed. A lease no longer held is
    /// [`ErrorKind::Conflict`] and changes nothing.
    async fn complete(&self, lease: &Lease) -> JobsResult<()>;

    /// Records a failed attempt: retried after the job's backoff while
    /// attempts are left (and the error is not permanent), dead otherwise,
    /// with the error in its history. A lease no longer held is
    /// [`ErrorKind::Conflict`] and changes nothing.
    async fn fail(&self, lease: &Lease, error: &JobError) -> JobsResult<FailOutcome>;

    /// Gives a running job back, claimable at once, without counting the
    /// attempt (a worker stopping before the job could finish). A lease no
    /// longer held is [`ErrorKind::Conflict`].
    async fn release(&self, lease: &Lease) -> JobsResult<()>;

    /// Cancels a queued job (it never runs) and returns it. A missing job is
    /// [`ErrorKind::NotFound`]; one in another state is
    /// [`ErrorKind::Conflict`].
    async fn cancel(&self, id: JobId) -> JobsResult<Job>;

    /// Queues a dead job again with a fresh set of attempts, keeping its
    /// history, and returns it. A missing job is [`ErrorKind::NotFound`];
    /// one in another state is [`ErrorKind::Conflict`], as is a unique key
    /// now held by another queued or running job.
    async fn retry_dead(&self, id: JobId) -> JobsResult<Job>;

    /// One job, in any state.
    async fn get(&self, id: JobId) -> JobsResult<Option<Job>>;

    /// Jobs matching `query`, newest first.
    async fn list(&self, query: &JobQuery) -> JobsResult<Vec<Job>>;

    /// Counts by type and state, the age of the oldest waiting job, and
    /// run-time percentiles per type over recently completed jobs (at most
    /// [`RUN_TIME_SAMPLE`] per type; which ones is the provider's to say).
    /// Meant to be cheap enough to poll: a provider keeps its run-time
    /// sample bounded rather than reading every completed job.
    async fn stats(&self) -> JobsResult<JobStats>;

    /// Deletes completed and cancelled jobs that finished before `before`;
    /// returns how many. Dead jobs are kept (they wait for a person).
    async fn purge_finished(&self, before: DateTime<Utc>) -> JobsResult<u64>;

    /// Returns when jobs may have become claimable (a job enqueued, retried
    /// or released that this provider hears of) or after `max_wait`,
    /// whichever is first. Workers call it between empty claims, so a
    /// provider with notifications lets idle workers sleep instead of
    /// polling fast. See [`JobsCapabilities::cross_process_wakeups`].
    async fn wait_for_work(&self, max_wait: Duration);
}
