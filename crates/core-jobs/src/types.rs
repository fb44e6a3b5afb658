//! The values the [`crate::Jobs`] trait takes and returns.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use truststream_core::{echo, Error};

use crate::backoff::Backoff;
use crate::JobsResult;

/// Longest job type name, in bytes.
pub const MAX_JOB_TYPE_BYTES: usize = 128;
/// Longest unique key, in bytes.
pub const MAX_UNIQUE_KEY_BYTES: usize = 512;
/// Most attempts a job may be given.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;
/// Default number of attempts (the first run and four retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Longest error text kept per attempt, in bytes (longer texts are cut).
pub const MAX_ERROR_BYTES: usize = 4096;
/// Most attempts kept in a job's history (the oldest are dropped first).
pub const MAX_HISTORY: usize = 50;

/// The identifier of a job: a random (v4) UUID, shown hyphenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub uuid::Uuid);

impl JobId {
    /// A new random id.
    pub fn new() -> Self {
        JobId(uuid::Uuid::new_v4())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = Error;
    fn from_str(s: &str) -> JobsResult<Self> {
        uuid::Uuid::parse_str(s).map(JobId).map_err(|_| {
            Error::invalid_input(format!(
                "{:?} is not a job id (a UUID)",
                echo(s).to_string()
            ))
        })
    }
}

/// Where a job is in its life.
///
/// ```text
/// queued --claim--> running --complete--> completed
///   ^  |               |  \--fail, attempts left--> queued (run_at = now + backoff)
///   |  cancel          |   \-fail, none left / permanent--> dead --retry_dead--> queued
///   |  v               \--lease expires--> claimable again (or dead when no attempts are left)
///   | cancelled        \--release (graceful stop)--> queued, the attempt not counted
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting to run at or after `run_at` (also a failed job waiting for its
    /// retry).
    Queued,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Finished successfully.
    Completed,
    /// Failed its last attempt (or failed permanently); kept with its history
    /// until retried with [`crate::Jobs::retry_dead`] or purged.
    Dead,
    /// Cancelled while queued; it never runs.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// Stable snake_case name (`queued`, `running`, ...), as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether a job in this state holds its unique key (queued or running).
    pub fn holds_unique_key(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }

    /// Whether the job is finished for good (completed or cancelled) and may
    /// be purged. Dead jobs are not: they wait for a person.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> JobsResult<Self> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "unknown job state {:?}; known states: queued, running, completed, dead, cancelled",
                    echo(s).to_string()
                ))
            })
    }
}

/// A job to enqueue, built fluently.
///
/// ```
/// use std::time::Duration;
/// use truststream_core_jobs::{Backoff, NewJob};
///
/// let job = NewJob::new("trust_score_update", &serde_json::json!({"agent_id": "a1"}))
///     .unwrap()
///     .priority(10)
///     .max_attempts(3)
///     .backoff(Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60)))
///     .unique_key("trust_score_update:a1")
///     .timeout(Duration::from_secs(30));
/// job.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The id the job will have (random unless set with [`NewJob::id`]).
    pub id: JobId,
    /// Which handler runs it (`"trust_score_update"`): letters, digits and
    /// `_ . : -`, at most [`MAX_JOB_TYPE_BYTES`].
    pub job_type: String,
    /// The handler's input.
    pub payload: serde_json::Value,
    /// Not before this time; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    /// Higher runs first among claimable jobs (default 0).
    pub priority: i32,
    /// Runs allowed, the first included (default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Delay before each retry.
    pub backoff: Backoff,
    /// While a job with this key is queued or running, enqueueing another
    /// with the same key returns the existing one
    /// ([`Enqueued::Duplicate`]).
    pub unique_key: Option<String>,
    /// How long one attempt may run before the worker fails it; `None`: no
    /// limit beyond the lease (which a live worker keeps extending).
    #[serde(with = "crate::serde_ms::option")]
    pub timeout: Option<Duration>,
}

impl NewJob {
    /// A job of `job_type` with `payload` serialized to JSON, to run now.
    pub fn new<P: Serialize + ?Sized>(job_type: &str, payload: &P) -> JobsResult<Self> {
        let payload = serde_json::to_value(payload).map_err(|e| {
            Error::invalid_input("the job payload could not be serialized to JSON")
                .with_context("job_type", job_type)
                .with_source(e)
        })?;
        Ok(Self::from_json(job_type, payload))
    }

    /// A job of `job_type` with a JSON payload, to run now.
    pub fn from_json(job_type: &str, payload: serde_json::Value) -> Self {
        NewJob {
            id: JobId::new(),
            job_type: job_type.to_string(),
            payload,
            run_at: None,
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            unique_key: None,
            timeout: None,
        }
    }

    /// Sets the id (for callers that record it before enqueueing).
    pub fn id(mut self, id: JobId) -> Self {
        self.id = id;
        self
    }
    /// Runs no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
    /// Runs no earlier than `delay` from now.
    pub fn delay(self, delay: Duration) -> Self {
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.run_at(at)
    }
    /// Sets the priority (higher runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
    /// Sets the number of runs allowed (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Sets the retry backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Sets the unique key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Checks every field; a bad one is [`truststream_core::ErrorKind::InvalidInput`]
    /// naming it. Providers call this before storing anything.
    pub fn validate(&self) -> JobsResult<()> {
        validate_job_type(&self.job_type)?;
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(Error::invalid_input(format!(
                "max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, got {}",
                self.max_attempts
            ))
            .with_context("job_type", self.job_type.clone()));
        }
        if let Some(key) = &self.unique_key {
            if key.is_empty() || key.len() > MAX_UNIQUE_KEY_BYTES {
                return Err(Error::invalid_input(format!(
                    "a unique key must be 1 to {MAX_UNIQUE_KEY_BYTES} bytes, got {}",
                    key.len()
                ))
                .with_context("job_type", self.job_type.clone()));
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(
                Error::invalid_input("a job timeout must be longer than zero")
                    .with_context("job_type", self.job_type.clone()),
            );
        }
        self.backoff.validate()
    }

    /// The job as stored right after enqueueing at `now`.
    pub fn into_job(self, now: DateTime<Utc>) -> Job {
        Job {
            id: self.id,
            job_type: self.job_type,
            payload: self.payload,
            state: JobState::Queued,
            priority: self.priority,
            run_at: self.run_at.unwrap_or(now),
            attempts: 0,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout: self.timeout,
            unique_key: self.unique_key,
            worker_id: None,
            lease_expires_at: None,
            started_at: None,
            last_error: None,
            history: Vec::new(),
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }
}

/// Checks a job type name (also the names handlers are registered under).
pub fn validate_job_type(name: &str) -> JobsResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_JOB_TYPE_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "invalid job type {:?}: use 1 to {MAX_JOB_TYPE_BYTES} letters, digits, '_', '.', ':' or '-'",
            echo(name).to_string()
        )))
    }
}

/// One finished attempt of a job, kept in [`Job::history`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first run.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker_id: String,
    /// When it was claimed.
    pub started_at: DateTime<Utc>,
    /// When it ended (for an expired lease: when the expiry was noticed).
    pub finished_at: DateTime<Utc>,
    /// `None` for a success; otherwise what went wrong (cut to
    /// [`MAX_ERROR_BYTES`]).
    pub error: Option<String>,
}

/// A stored job, as [`crate::Jobs::get`] and [`crate::Jobs::list`] return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Which handler runs it.
    pub job_type: String,
    /// The handler's input.
    pub payload: serde_json::Value,
    /// Where it is in its life.
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Claimable from this time (queued jobs).
    pub run_at: DateTime<Utc>,
    /// Runs started so far (a released run is not counted).
    pub attempts: u32,
    /// Runs allowed.
    pub max_attempts: u32,
    /// Delay before each retry.
    pub backoff: Backoff,
    /// Per-attempt timeout.
    #[serde(with = "crate::serde_ms::option")]
    pub timeout: Option<Duration>,
    /// The de-duplication key.
    pub unique_key: Option<String>,
    /// The worker holding the lease (running jobs).
    pub worker_id: Option<String>,
    /// When the lease runs out (running jobs).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the current (or last) attempt was claimed.
    pub started_at: Option<DateTime<Utc>>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// Finished attempts, oldest first (at most [`MAX_HISTORY`]).
    pub history: Vec<Attempt>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it completed, died or was cancelled.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Job {
    /// Decodes the payload into `P`; a mismatch is
    /// [`truststream_core::ErrorKind::InvalidInput`].
    pub fn payload_as<P: serde::de::DeserializeOwned>(&self) -> JobsResult<P> {
        serde_json::from_value(self.payload.clone()).map_err(|e| {
            Error::invalid_input(format!(
                "the payload of job {} does not match {}",
                self.id,
                std::any::type_name::<P>()
            ))
            .with_context("job_type", self.job_type.clone())
            .with_source(e)
        })
    }
}

/// The answer of [`crate::Jobs::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "id")]
pub enum Enqueued {
    /// The job was stored under this id.
    Created(JobId),
    /// A job with the same unique key is queued or running: nothing was
    /// stored, and this is that job's id.
    Duplicate(JobId),
}

impl Enqueued {
    /// The id of the stored job (new or existing).
    pub fn id(self) -> JobId {
        match self {
            Enqueued::Created(id) | Enqueued::Duplicate(id) => id,
        }
    }
    /// Whether a new job was stored.
    pub fn is_created(self) -> bool {
        matches!(self, Enqueued::Created(_))
    }
}

/// What [`crate::Jobs::claim`] is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Only jobs of these types (the worker's registered handlers); must not
    /// be empty.
    pub job_types: Vec<String>,
    /// Most jobs to claim (1 or more).
    pub batch: usize,
    /// How long the lease lasts unless extended.
    pub lease: Duration,
    /// Who claims (shown in [`Job::worker_id`] and the history).
    pub worker_id: String,
}

impl ClaimRequest {
    /// Checks the request: types valid and not empty, batch at least 1,
    /// a lease of at least a millisecond, a worker id.
    pub fn validate(&self) -> JobsResult<()> {
        if self.job_types.is_empty() {
            return Err(Error::invalid_input(
                "a claim must name the job types it can run",
            ));
        }
        for t in &self.job_types {
            validate_job_type(t)?;
        }
        if self.batch == 0 {
            return Err(Error::invalid_input("a claim batch must be at least 1"));
        }
        if self.lease < Duration::from_millis(1) {
            return Err(Error::invalid_input(
                "a lease must last at least a millisecond",
            ));
        }
        if self.worker_id.is_empty() || self.worker_id.len() > 256 {
            return Err(Error::invalid_input("a worker id must be 1 to 256 bytes"));
        }
        Ok(())
    }
}

/// The right to finish one running job, returned by a claim. Completing,
/// failing, extending or releasing with a lease that is no longer the job's
/// (it expired and another worker claimed the job) is
/// [`truststream_core::ErrorKind::Conflict`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// Secret of this claim.
    pub token: String,
    /// When it runs out unless extended.
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("job_id", &self.job_id)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A job a worker now runs, and its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    /// The job (state `running`, `attempts` counting this run).
    pub job: Job,
    /// The lease.
    pub lease: Lease,
}

/// Why an attempt failed, as a handler reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// What went wrong (kept in the history, cut to [`MAX_ERROR_BYTES`]).
    pub message: String,
    /// `true`: do not retry, the job goes dead now.
    pub permanent: bool,
}

impl JobError {
    /// A failure that is retried while attempts are left.
    pub fn retry(message: impl Into<String>) -> Self {
        JobError {
            message: message.into(),
            permanent: false,
        }
    }
    /// A failure that makes the job dead at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        JobError {
            message: message.into(),
            permanent: true,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}

impl From<Error> for JobError {
    /// A TrustStream error: retried when it is retryable or of a kind a
    /// retry may cure; `InvalidInput`, `NotFound` and the like are permanent.
    fn from(e: Error) -> Self {
        JobError {
            message: e.display_chain().to_string(),
            permanent: !e.is_retryable(),
        }
    }
}

/// What [`crate::Jobs::fail`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "at")]
pub enum FailOutcome {
    /// Queued again, claimable from this time.
    Retrying(DateTime<Utc>),
    /// No attempts left (or a permanent failure): dead.
    Dead,
}

/// Which jobs [`crate::Jobs::list`] returns: newest first (by
/// `created_at`, then id), filtered, paged by offset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// Most jobs returned (default [`JobQuery::DEFAULT_LIMIT`], at most
    /// [`JobQuery::MAX_LIMIT`]).
    pub limit: Option<u32>,
    /// Jobs skipped first.
    pub offset: u64,
}

impl JobQuery {
    /// Default page size.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// Largest page size.
    pub const MAX_LIMIT: u32 = 10_000;

    /// Every job, newest first, first page.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only jobs in `state`.
    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }
    /// Only jobs of `job_type`.
    pub fn job_type(mut self, job_type: impl Into<String>) -> Self {
        self.job_type = Some(job_type.into());
        self
    }
    /// Sets the page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
    /// Sets the offset.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }
    /// The page size to use; an out-of-range limit is `InvalidInput`.
    pub fn effective_limit(&self) -> JobsResult<u32> {
        match self.limit {
            None => Ok(Self::DEFAULT_LIMIT),
            Some(n) if (1..=Self::MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(Error::invalid_input(format!(
                "a job list limit must be between 1 and {}, got {n}",
                Self::MAX_LIMIT
            ))),
        }
    }
    /// Checks the type name (when given) and the limit.
    pub fn validate(&self) -> JobsResult<()> {
        if let Some(t) = &self.job_type {
            validate_job_type(t)?;
        }
        self.effective_limit().map(|_| ())
    }
}

/// Jobs of one type in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCount {
    /// The type.
    pub job_type: String,
    /// The state.
    pub state: JobState,
    /// How many.
    pub count: u64,
}

/// The queue at a glance, from [`crate::Jobs::stats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStats {
    /// Counts by type and state, sorted by type then state; pairs with no
    /// job are left out.
    pub counts: Vec<StateCount>,
    /// How long the longest-waiting claimable job (queued, `run_at` passed)
    /// has waited since its `run_at`; `None` when none is waiting.
    #[serde(with = "crate::serde_ms::option")]
    pub oldest_queued_age: Option<Duration>,
    /// Run-time percentiles per job type (sorted by type) over the most
    /// recently completed jobs still kept; types with none are left out.
    #[serde(default)]
    pub run_times: Vec<crate::RunTimes>,
}

impl JobStats {
    /// Jobs in `state`, all types.
    pub fn in_state(&self, state: JobState) -> u64 {
        self.counts
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.count)
            .sum()
    }
    /// Jobs of `job_type` in `state`.
    pub fn count(&self, job_type: &str, state: JobState) -> u64 {
        self.counts
            .iter()
            .filter(|c| c.state == state && c.job_type == job_type)
            .map(|c| c.count)
            .sum()
    }
    /// The run times of `job_type`, if any of its jobs completed.
    pub fn run_times_of(&self, job_type: &str) -> Option<&crate::RunTimes> {
        self.run_times.iter().find(|r| r.job_type == job_type)
    }
}

/// A job ready to go into a [`truststream_core_db::Database::transaction`]
/// next to the business rows it belongs to, from
/// [`crate::Jobs::enqueue_operation`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueOperation {
    /// The id the job has once the transaction commits.
    pub id: JobId,
    /// The operation to put in the transaction's list.
    pub operation: truststream_core_db::Operation,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_and_states_round_trip_as_text() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().ok(), Some(id));
        assert!("nope".parse::<JobId>().is_err());
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().ok(), Some(s));
        }
        assert!("zombie".parse::<JobState>().is_err());
    }

    #[test]
    fn bad_new_jobs_are_invalid_input() {
        let ok = NewJob::from_json("a.b:c-d_e", serde_json::json!({}));
        assert!(ok.validate().is_ok());
        for bad in [
            NewJob::from_json("", serde_json::json!({})),
            NewJob::from_json("has space", serde_json::json!({})),
            NewJob::from_json(&"x".repeat(200), serde_json::json!({})),
            ok.clone().max_attempts(0),
            ok.clone().max_attempts(MAX_ATTEMPTS_LIMIT + 1),
            ok.clone().unique_key(""),
            ok.clone().timeout(Duration::ZERO),
        ] {
            let e = bad.validate().expect_err("invalid job");
            assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput, "{e}");
        }
    }

    #[test]
    fn a_lease_does_not_show_its_token() {
        let l = Lease {
            job_id: JobId::new(),
            token: "secret-token".into(),
            expires_at: Utc::now(),
        };
        assert!(!format!("{l:?}").contains("secret-token"));
    }

    #[test]
    fn claim_requests_are_checked() {
        let ok = ClaimRequest {
            job_types: vec!["t".into()],
            batch: 1,
            lease: Duration::from_secs(1),
            worker_id: "w".into(),
        };
        assert!(ok.validate().is_ok());
        let mut no_types = ok.clone();
        no_types.job_types.clear();
        let mut zero = ok.clone();
        zero.batch = 0;
        let mut no_worker = ok;
        no_worker.worker_id.clear();
        for bad in [no_types, zero, no_worker] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
