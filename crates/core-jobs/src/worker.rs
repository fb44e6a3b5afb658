//! The worker runtime: typed handlers by job type, N jobs at a time, leases
//! kept alive while a job runs, panics and timeouts as failures, and a
//! graceful stop.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use truststream_core_jobs::{JobContext, JobError, Jobs, Worker};
//!
//! #[derive(serde::Deserialize)]
//! struct ScoreUpdate { agent_id: String }
//!
//! # async fn run(jobs: Arc<dyn Jobs>) -> Result<(), truststream_core_jobs::Error> {
//! let worker = Worker::builder(jobs)
//!     .concurrency(8)
//!     .register("trust_score_update", |ctx: JobContext, p: ScoreUpdate| async move {
//!         println!("attempt {} for {}", ctx.attempt(), p.agent_id);
//!         Ok::<(), JobError>(())
//!     })?
//!     .start()?;
//! // ... on shutdown: stop claiming, give running jobs 10 s, release the rest.
//! let report = worker.stop(Duration::from_secs(10)).await;
//! println!("{report:?}");
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use truststream_core::{BoxFuture, Error, ErrorKind};

use crate::metrics::{self as observe, outcome};
use crate::types::{validate_job_type, ClaimRequest, ClaimedJob, Job, JobError, Lease};
use crate::{Jobs, JobsResult};

/// What a handler is given besides its payload.
///
/// A handler that writes to the database the jobs live in can complete its
/// job **in its own transaction**, so its writes and the completion commit
/// together or not at all (the exactly-once path): it takes
/// [`JobContext::completion_lease`] and hands it to the provider's
/// transactional completion — jobs-postgres `PgJobs::complete_with` (or
/// `complete_in` on a `sqlx` transaction of its own), jobs-db
/// `DbJobs::complete_with` (its operations and the completion in one
/// `Database::transaction`). A lease lost before the commit (it expired
/// and another worker claimed the job) fails that transaction with
/// [`ErrorKind::Conflict`] and none of the handler's writes are applied;
/// the other worker's run is the one that counts.
#[derive(Debug, Clone)]
pub struct JobContext {
    job: Job,
    worker_id: Arc<str>,
    lease: Lease,
    completes_itself: Arc<AtomicBool>,
}

impl JobContext {
    /// The job as claimed (state `running`).
    pub fn job(&self) -> &Job {
        &self.job
    }
    /// The job's id.
    pub fn id(&self) -> crate::JobId {
        self.job.id
    }
    /// This run's number, 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.job.attempts
    }
    /// The worker running it.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The lease this run holds (read-only: to complete the job in the
    /// handler's own transaction, use [`JobContext::completion_lease`]).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The lease, for completing the job in the handler's own database
    /// transaction (see [`JobContext`]). From this call on the handler
    /// owns the completion: when it returns `Ok`, the worker counts the
    /// job completed and does not complete it again, so a handler must
    /// return `Ok` only once its transaction committed (a handler that
    /// returns `Ok` without committing leaves the job running, and it runs
    /// again after its lease). A handler that returns `Err` is recorded as
    /// a failed attempt as usual (a lease already used by a committed
    /// completion makes that record a lost lease, changing nothing). Lease
    /// extensions that the open transaction blocks, and that find the job
    /// completed once it commits, do not abandon the run.
    pub fn completion_lease(&self) -> &Lease {
        self.completes_itself.store(true, Ordering::SeqCst);
        &self.lease
    }
}

/// A registered handler: the job's context in, success or a [`JobError`] out.
pub type Handler =
    Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync>;

/// Counts of what a worker did, from [`WorkerHandle::report`] and
/// [`WorkerHandle::stop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerReport {
    /// Jobs claimed.
    pub claimed: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that failed (errors, panics, timeouts), retried or dead.
    pub failed: u64,
    /// Of those, handlers that panicked.
    pub panicked: u64,
    /// Of those, attempts that ran past the job's timeout.
    pub timed_out: u64,
    /// Jobs whose lease was lost while running (not completed here).
    pub lost_leases: u64,
    /// Jobs released at a stop because they did not finish by the deadline.
    pub released: u64,
    /// Calls to the store that failed (claims, completions, extensions).
    pub store_errors: u64,
}

#[derive(Default)]
struct Counters {
    claimed: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    timed_out: AtomicU64,
    lost_leases: AtomicU64,
    released: AtomicU64,
    store_errors: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> WorkerReport {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerReport {
            claimed: g(&self.claimed),
            completed: g(&self.completed),
            failed: g(&self.failed),
            panicked: g(&self.panicked),
            timed_out: g(&self.timed_out),
            lost_leases: g(&self.lost_leases),
            released: g(&self.released),
            store_errors: g(&self.store_errors),
        }
    }
}

/// Configures a [`Worker`]; from [`Worker::builder`].
pub struct WorkerBuilder {
    jobs: Arc<dyn Jobs>,
    handlers: BTreeMap<String, Handler>,
    concurrency: usize,
    lease: Duration,
    poll_interval: Duration,
    refill_wait: Duration,
    worker_id: String,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("provider", &self.jobs.info().name)
            .field("job_types", &self.handlers.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("poll_interval", &self.poll_interval)
            .field("refill_wait", &self.refill_wait)
            .field("worker_id", &self.worker_id)
            .finish()
    }
}

/// Runs jobs from a [`Jobs`] provider; see the [module docs](self).
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// A worker on `jobs` with defaults: 4 jobs at a time, 30 s leases
    /// (extended every 10 s while a job runs), polling every second when
    /// idle and not woken earlier, a freed slot waiting at most
    /// [`DEFAULT_REFILL_WAIT`] for others before it is claimed for, a random
    /// worker id.
    pub fn builder(jobs: Arc<dyn Jobs>) -> WorkerBuilder {
        WorkerBuilder {
            jobs,
            handlers: BTreeMap::new(),
            concurrency: 4,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            refill_wait: DEFAULT_REFILL_WAIT,
            worker_id: format!(
                "{}-{}-{:04x}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
                std::process::id(),
                rand::random::<u16>()
            ),
        }
    }
}

impl WorkerBuilder {
    /// Runs jobs of `job_type` with `handler`, their payload decoded into
    /// `P`. A payload that does not decode fails the job permanently (a
    /// retry cannot fix it). An invalid type name is
    /// [`ErrorKind::InvalidInput`]; registering a type twice replaces the
    /// handler.
    pub fn register<P, F, Fut>(mut self, job_type: &str, handler: F) -> JobsResult<Self>
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(JobContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        validate_job_type(job_type)?;
        let handler = Arc::new(handler);
        let h: Handler = Arc::new(move |ctx: JobContext| {
            let handler = handler.clone();
            Box::pin(async move {
                let payload: P = ctx
                    .job
                    .payload_as()
                    .map_err(|e| JobError::permanent(e.display_chain().to_string()))?;
                handler(ctx, payload).await
            })
        });
        self.handlers.insert(job_type.to_string(), h);
        Ok(self)
    }

    /// Runs jobs of `job_type` with a handler that takes the raw context.
    pub fn register_raw(mut self, job_type: &str, handler: Handler) -> JobsResult<Self> {
        validate_job_type(job_type)?;
        self.handlers.insert(job_type.to_string(), handler);
        Ok(self)
    }

    /// How many handlers run at once (at least 1). A busy worker claims
    /// again, for every free slot in one batch, once all of them are free
    /// or once the first freed slot has waited as long as the worker's
    /// last claim took (at most [`refill_wait`](Self::refill_wait)), or
    /// when woken or its poll interval passes: a claim costs the store
    /// about the same for one job as for a dozen, so short jobs are claimed
    /// in batches, and a store that slows down under load gets fewer,
    /// larger claims. A slot is free as soon as its handler returns: the job's outcome
    /// is recorded after that (the job task ends once it is durable), so
    /// the next claim overlaps the write; at most three times `n` jobs are
    /// held at once, handlers and outcomes being recorded together (a
    /// store that writes outcomes in batches keeps two batches in flight
    /// while the next jobs run).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How long a claim's lease lasts; a running job's lease is extended
    /// every third of it. A worker killed outright loses its jobs to other
    /// workers this long after its last extension.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Longest idle wait between claims when the provider does not wake the
    /// worker earlier ([`Jobs::wait_for_work`]).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Longest wait of a freed slot for more slots to be freed before the
    /// busy worker claims for those it has (default
    /// [`DEFAULT_REFILL_WAIT`]; zero: a claim for each freed slot at once).
    /// The wait is the last claim's duration, cut to this: a slot freed by
    /// a long job stays empty about one more claim's time, at most this
    /// long.
    pub fn refill_wait(mut self, wait: Duration) -> Self {
        self.refill_wait = wait;
        self
    }

    /// Sets the worker id shown on claimed jobs and in their history.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }

    /// Starts claiming and running jobs on the current tokio runtime. No
    /// handler, a concurrency of 0, a lease under 30 ms or a zero poll
    /// interval is [`ErrorKind::InvalidInput`].
    pub fn start(self) -> JobsResult<WorkerHandle> {
        if self.handlers.is_empty() {
            return Err(Error::invalid_input(
                "a worker needs at least one registered job type",
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::invalid_input(
                "worker concurrency must be at least 1",
            ));
        }
        if self.lease < Duration::from_millis(30) {
            return Err(Error::invalid_input(
                "a worker lease must be at least 30 ms",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::invalid_input(
                "a worker poll interval must be longer than zero",
            ));
        }
        let request = ClaimRequest {
            job_types: self.handlers.keys().cloned().collect(),
            batch: self.concurrency,
            lease: self.lease,
            worker_id: self.worker_id.clone(),
        };
        request.validate()?;
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop_rx) = watch::channel(None);
        let state = Loop {
            jobs: self.jobs,
            handlers: Arc::new(self.handlers),
            concurrency: self.concurrency,
            refill_wait: self.refill_wait,
            lease: self.lease,
            poll_interval: self.poll_interval,
            request,
            counters: counters.clone(),
        };
        let task = tokio::spawn(state.run(stop_rx));
        Ok(WorkerHandle {
            stop_tx,
            task,
            counters,
        })
    }
}

/// A running worker. Dropping it without [`WorkerHandle::stop`] leaves the
/// worker running until the runtime shuts down.
pub struct WorkerHandle {
    stop_tx: watch::Sender<Option<Duration>>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("report", &self.report())
            .finish()
    }
}

impl WorkerHandle {
    /// What the worker did so far.
    pub fn report(&self) -> WorkerReport {
        self.counters.snapshot()
    }

    /// Stops claiming, lets running jobs finish for up to `deadline`, then
    /// aborts the rest and releases their jobs (claimable at once elsewhere,
    /// the attempt not counted). Returns the final counts.
    pub async fn stop(self, deadline: Duration) -> WorkerReport {
        let _ = self.stop_tx.send(Some(deadline));
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the job worker loop ended abnormally");
        }
        self.counters.snapshot()
    }
}

/// Claims a worker keeps in flight at once: the next claim starts while the
/// previous one's answer travels back.
const CLAIMS_IN_FLIGHT: usize = 2;

/// The longest a busy worker's freed slot waits, by default, for more
/// slots to be freed before the worker claims ([`WorkerBuilder::refill_wait`];
/// the wait is the last claim's duration, below this).
pub const DEFAULT_REFILL_WAIT: Duration = Duration::from_millis(10);

struct Loop {
    jobs: Arc<dyn Jobs>,
    handlers: Arc<BTreeMap<String, Handler>>,
    concurrency: usize,
    /// The longest a free slot waits for the others before it is claimed
    /// for (see `claim_took` in `run`).
    refill_wait: Duration,
    lease: Duration,
    poll_interval: Duration,
    request: ClaimRequest,
    counters: Arc<Counters>,
}

impl Loop {
    async fn run(self, mut stop_rx: watch::Receiver<Option<Duration>>) {
        let mut running: JoinSet<()> = JoinSet::new();
        let mut leases: HashMap<tokio::task::Id, Lease> = HashMap::new();
        let slots = Slots::default();
        // Claims in flight, each with the number of slots it reserved: the
        // next claim may start while one's answer is on its way back.
        let mut claims = futures::stream::FuturesUnordered::new();
        let mut in_flight = 0_usize;
        // Claim on the first pass, after a wake-up or an idle poll, and once
        // every slot is free or the first free one has waited (below); a
        // job finishing before that only frees its slot.
        let mut woken = true;
        // The last claim came back short: the queue had no more, so free
        // slots alone do not call for another claim until a handler ends or
        // the worker is woken (or its poll interval passes).
        let mut drained = false;
        // Since when slots have been free without a claim for them.
        let mut free_since: Option<tokio::time::Instant> = None;
        // How long the last claim took: the first freed slot waits as long
        // for more (at most `refill_wait`), then the worker claims however
        // few are free. Waiting a claim's time at most doubles a slot's
        // refill time, and a store that slows down under load gets fewer,
        // larger claims.
        let mut claim_took = Duration::ZERO;
        let deadline = loop {
            if let Some(d) = *stop_rx.borrow() {
                break d;
            }
            let free = slots.free(self.concurrency, running.len(), in_flight);
            if free == 0 {
                free_since = None;
            } else if free_since.is_none() {
                free_since = Some(tokio::time::Instant::now());
            }
            let wait = claim_took.min(self.refill_wait);
            let waited = free_since.is_some_and(|t| t.elapsed() >= wait);
            let wanted = woken || (!drained && (free == self.concurrency || waited));
            if free > 0 && claims.len() < CLAIMS_IN_FLIGHT && wanted {
                free_since = None;
                slots.reserve(free);
                in_flight += free;
                let jobs = self.jobs.clone();
                let mut request = self.request.clone();
                request.batch = free;
                claims.push(async move {
                    let began = tokio::time::Instant::now();
                    let claimed = jobs.claim(&request).await;
                    (free, claimed, began.elapsed())
                });
                woken = false;
                continue;
            }
            let idle =
                claims.is_empty() && slots.free(self.concurrency, running.len(), in_flight) > 0;
            // A wait for more free slots that can end in a claim.
            let refill = free_since
                .filter(|_| !drained && claims.len() < CLAIMS_IN_FLIGHT)
                .map(|t| t + wait);
            tokio::select! {
                _ = stop_rx.changed() => {}
                Some((reserved, claimed, took)) = claims.next(), if !claims.is_empty() => {
                    in_flight -= reserved;
                    claim_took = took;
                    match claimed {
                        Ok(claimed) => {
                            drained = claimed.len() < reserved;
                            self.spawn_claimed(&mut running, &mut leases, &slots, reserved, claimed);
                        }
                        Err(e) => {
                            slots.unreserve(reserved);
                            Counters::bump(&self.counters.store_errors);
                            tracing::warn!(error = %e.display_chain(), "claiming jobs failed; retrying after the poll interval");
                            tokio::select! {
                                _ = stop_rx.changed() => {}
                                _ = tokio::time::sleep(self.poll_interval) => {}
                            }
                        }
                    }
                }
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    finished(&mut leases, done);
                }
                () = slots.freed.notified() => drained = false,
                () = tokio::time::sleep_until(refill.unwrap_or_else(tokio::time::Instant::now)), if refill.is_some() => {}
                _ = self.jobs.wait_for_work(self.poll_interval), if idle => {
                    woken = true;
                    drained = false;
                }
            }
        };
        // Claims still in flight: their jobs run like the others (and are
        // released below if they cannot finish by the deadline).
        while let Some((reserved, claimed, _)) = claims.next().await {
            match claimed {
                Ok(claimed) => {
                    self.spawn_claimed(&mut running, &mut leases, &slots, reserved, claimed)
                }
                Err(_) => slots.unreserve(reserved),
            }
        }
        let until = tokio::time::Instant::now() + deadline;
        while !running.is_empty() {
            tokio::select! {
                Some(done) = running.join_next_with_id() => finished(&mut leases, done),
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        running.abort_all();
        while let Some(done) = running.join_next_with_id().await {
            finished(&mut leases, done);
        }
        for (_, lease) in leases {
            match self.jobs.release(&lease).await {
                Ok(()) => Counters::bump(&self.counters.released),
                Err(e) => {
                    Counters::bump(&self.counters.store_errors);
                    tracing::warn!(job = %lease.job_id, error = %e.display_chain(), "could not release a job at stop; it runs again when its lease expires");
                }
            }
        }
    }

    /// Starts the jobs a claim returned on the `reserved` slots it held,
    /// giving back the ones it did not fill without waking the claim loop
    /// (a claim that came back short found the queue drained: claiming
    /// again at once would spin).
    fn spawn_claimed(
        &self,
        running: &mut JoinSet<()>,
        leases: &mut HashMap<tokio::task::Id, Lease>,
        slots: &Slots,
        reserved: usize,
        claimed: Vec<ClaimedJob>,
    ) {
        let mut left = reserved;
        for c in claimed {
            Counters::bump(&self.counters.claimed);
            let slot = if left > 0 {
                left -= 1;
                slots.reserved()
            } else {
                // More than asked for (a provider bug), but the jobs are
                // claimed: run them.
                slots.take()
            };
            let lease = c.lease.clone();
            let handle = running.spawn(self.run_job(c, slot));
            leases.insert(handle.id(), lease);
        }
        slots.unreserve(left);
    }

    /// A claimed job's task: its handler, supervised, holds `slot`; the
    /// slot is given back as soon as the handler ends, and the outcome is
    /// recorded after that, so the next claim overlaps this job's
    /// completion write.
    fn run_job(
        &self,
        claimed: ClaimedJob,
        slot: Slot,
    ) -> impl Future<Output = ()> + Send + 'static {
        let jobs = self.jobs.clone();
        let handler = self.handlers.get(&claimed.job.job_type).cloned();
        let counters = self.counters.clone();
        let lease_len = self.lease;
        let worker_id: Arc<str> = Arc::from(self.request.worker_id.as_str());
        async move {
            let ClaimedJob { job, lease } = claimed;
            let timeout = job.timeout;
            let job_type = job.job_type.clone();
            if let Some(claimed_at) = job.started_at {
                observe::queue_wait(
                    &job_type,
                    (claimed_at - job.run_at).to_std().unwrap_or_default(),
                );
            }
            let Some(handler) = handler else {
                drop(slot);
                // Claims name only registered types, so this is a provider bug.
                let err = JobError::retry(format!("no handler for job type {job_type}"));
                let recorded = finish(&*jobs, &lease, Err(err), outcome::FAILED, &counters).await;
                observe::finished(&job_type, recorded);
                return;
            };
            let completes_itself = Arc::new(AtomicBool::new(false));
            let ctx = JobContext {
                job,
                worker_id,
                lease: lease.clone(),
                completes_itself: completes_itself.clone(),
            };
            let started = tokio::time::Instant::now();
            let task = AbortOnDrop(tokio::spawn(handler(ctx)));
            let supervised = supervise(
                &*jobs,
                &lease,
                lease_len,
                timeout,
                task,
                &counters,
                &completes_itself,
            )
            .await;
            drop(slot);
            let recorded = match supervised {
                Some((Ok(()), kind)) if completes_itself.load(Ordering::SeqCst) => {
                    // The handler committed the completion with its writes.
                    observe::run_time(&job_type, started.elapsed());
                    Counters::bump(&counters.completed);
                    kind
                }
                Some((result, kind)) => {
                    observe::run_time(&job_type, started.elapsed());
                    finish(&*jobs, &lease, result, kind, &counters).await
                }
                None => outcome::LOST_LEASE,
            };
            observe::finished(&job_type, recorded);
        }
    }
}

/// The worker's handler slots: how many handlers run now, and a wake-up
/// for the claim loop when one ends.
#[derive(Default)]
struct Slots {
    busy: Arc<AtomicUsize>,
    freed: Arc<tokio::sync::Notify>,
}

impl Slots {
    /// Slots free for a claim: handlers running below `concurrency`, and job
    /// tasks (handlers plus outcomes still being recorded) below three times
    /// that, so a store slower than the handlers cannot pile up
    /// completions, while one that records outcomes in batches can have
    /// two batches of them in flight as the next jobs run.
    /// `reserved`: slots held by claims in flight (busy, not yet tasks).
    fn free(&self, concurrency: usize, tasks: usize, reserved: usize) -> usize {
        let handlers = concurrency.saturating_sub(self.busy.load(Ordering::SeqCst));
        handlers.min((3 * concurrency).saturating_sub(tasks + reserved))
    }

    /// Takes a slot for a claimed job.
    fn take(&self) -> Slot {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.reserved()
    }

    /// Holds `n` slots for a claim in flight.
    fn reserve(&self, n: usize) {
        self.busy.fetch_add(n, Ordering::SeqCst);
    }

    /// One of the reserved slots, for a job the claim returned.
    fn reserved(&self) -> Slot {
        Slot {
            busy: self.busy.clone(),
            freed: self.freed.clone(),
        }
    }

    /// Gives back `n` reserved slots the claim did not fill, without waking
    /// the claim loop.
    fn unreserve(&self, n: usize) {
        self.busy.fetch_sub(n, Ordering::SeqCst);
    }
}

/// A taken handler slot; given back when dropped (the handler ended, or its
/// task was aborted).
struct Slot {
    busy: Arc<AtomicUsize>,
    freed: Arc<tokio::sync::Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_one();
    }
}

/// Forgets the lease of a job task that ran to its end (it recorded the
/// outcome, or found the lease lost). A task that was aborted (a stop past
/// its deadline) keeps its lease in the map, to be released.
fn finished(
    leases: &mut HashMap<tokio::task::Id, Lease>,
    done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) {
    match done {
        Ok((id, ())) => {
            leases.remove(&id);
        }
        Err(e) if e.is_panic() => {
            tracing::error!(error = %e, "a job task panicked outside its handler");
            leases.remove(&e.id());
        }
        Err(_) => {}
    }
}

/// Aborts the handler's task when the job's task is dropped or aborted (a
/// stop past its deadline), so no handler runs on unsupervised.
struct AbortOnDrop(JoinHandle<Result<(), JobError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for the handler while extending the lease: its result and what
/// kind of end it was ([`outcome`]: completed, failed, panicked, timed
/// out). `None`: the lease was lost, so the outcome must not be recorded
/// here. While the handler owns its completion (`completes_itself`, see
/// [`JobContext::completion_lease`]), a lost lease stops the extensions
/// but not the run: its transaction may just have completed the job (an
/// extension waits for the row the transaction locked and then finds the
/// job completed), and if it did not, its completion fails on the lost
/// lease and rolls its writes back.
async fn supervise(
    jobs: &dyn Jobs,
    lease: &Lease,
    lease_len: Duration,
    timeout: Option<Duration>,
    mut task: AbortOnDrop,
    counters: &Counters,
    completes_itself: &AtomicBool,
) -> Option<(Result<(), JobError>, &'static str)> {
    let mut extending = true;
    let every = lease_len / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let time_limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(time_limit);
    loop {
        tokio::select! {
            joined = &mut task.0 => {
                return Some(match joined {
                    Ok(Ok(())) => (Ok(()), outcome::COMPLETED),
                    Ok(Err(e)) => (Err(e), outcome::FAILED),
                    Err(e) if e.is_panic() => {
                        Counters::bump(&counters.panicked);
                        let text = format!("the handler panicked: {}", panic_text(e.into_panic()));
                        (Err(JobError::retry(text)), outcome::PANICKED)
                    }
                    Err(e) => (
                        Err(JobError::retry(format!("the handler task was cancelled: {e}"))),
                        outcome::FAILED,
                    ),
                });
            }
            _ = &mut time_limit => {
                Counters::bump(&counters.timed_out);
                let t = timeout.unwrap_or_default();
                return Some((Err(JobError::retry(format!("timed out after {t:?}"))), outcome::TIMED_OUT));
            }
            _ = tick.tick(), if extending => {
                match jobs.extend_lease(lease, lease_len).await {
                    Ok(_) => {}
                    Err(e) if (e.kind() == ErrorKind::Conflict || e.kind() == ErrorKind::NotFound)
                        && completes_itself.load(Ordering::SeqCst) => {
                        // Completed by the handler's transaction, or lost:
                        // its own completion tells which.
                        extending = false;
                    }
                    Err(e) if e.kind() == ErrorKind::Conflict || e.kind() == ErrorKind::NotFound => {
                        Counters::bump(&counters.lost_leases);
                        tracing::warn!(job = %lease.job_id, error = %e, "lost the lease on a running job; abandoning it");
                        return None;
                    }
                    Err(e) => {
                        Counters::bump(&counters.store_errors);
                        tracing::warn!(job = %lease.job_id, error = %e.display_chain(), "extending a lease failed; trying again at the next tick");
                    }
                }
            }
        }
    }
}

/// Records the outcome, retrying a few times on errors a retry may cure.
/// Returns the [`outcome`] label of the run: `kind` when it was recorded,
/// lost lease or unrecorded otherwise.
async fn finish(
    jobs: &dyn Jobs,
    lease: &Lease,
    result: Result<(), JobError>,
    kind: &'static str,
    counters: &Counters,
) -> &'static str {
    if result.is_err() {
        Counters::bump(&counters.failed);
    }
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=5 {
        let r = match &result {
            Ok(()) => jobs.complete(lease).await,
            Err(e) => jobs.fail(lease, e).await.map(|_| ()),
        };
        match r {
            Ok(()) => {
                if result.is_ok() {
                    Counters::bump(&counters.completed);
                }
                return kind;
            }
            Err(e) if e.kind() == ErrorKind::Conflict => {
                Counters::bump(&counters.lost_leases);
                tracing::warn!(job = %lease.job_id, error = %e, "the lease ran out before the outcome was recorded; the job runs again");
                return outcome::LOST_LEASE;
            }
            Err(e) => {
                Counters::bump(&counters.store_errors);
                if !e.is_retryable() || attempt == 5 {
                    tracing::error!(job = %lease.job_id, error = %e.display_chain(), "could not record a job's outcome; it runs again when its lease expires");
                    return outcome::UNRECORDED;
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    outcome::UNRECORDED
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-text panic payload)".to_string()
    }
}
