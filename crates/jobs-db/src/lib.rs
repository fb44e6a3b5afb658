#![doc = include_str!("../README.md")]

mod row;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use truststream_core::{BuildOptions, Error, ErrorKind, Health, ProviderInfo};
use truststream_core_db::{
    and, col, or, value::format_timestamp, AggFunc, ChangeFeedScope, ChangeKind, Database, Filter,
    IndexSpec, Operation, OperationOutput, Query, SelectItem,
};
use truststream_core_jobs::batch::{self, BatchStats, Batcher};
use truststream_core_jobs::lifecycle::{self, Start};
use truststream_core_jobs::{
    ClaimRequest, ClaimedJob, EnqueueOperation, Enqueued, FailOutcome, Job, JobError, JobId,
    JobQuery, JobState, JobStats, Jobs, JobsCapabilities, JobsRegistry, JobsResult, Lease, NewJob,
    RunTimes, StateCount, Wake, RUN_TIME_SAMPLE,
};

use row::Stored;

/// The type name the provider registers under.
pub const TYPE_NAME: &str = "database";

/// The default jobs table.
pub const DEFAULT_TABLE: &str = "truststream_jobs";

/// How many compare-and-set rounds one claim makes before it answers with
/// what it has (each round reads a fresh page of candidates).
const CLAIM_ROUNDS: usize = 4;

/// Configuration of the database jobs provider.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DbJobsConfig {
    /// The jobs table (created if missing when the database can create
    /// tables).
    pub table: String,
    /// Create the table and its indexes when missing (default true).
    pub create_table: bool,
}

impl Default for DbJobsConfig {
    fn default() -> Self {
        DbJobsConfig {
            table: DEFAULT_TABLE.to_string(),
            create_table: true,
        }
    }
}

/// Jobs kept in a table of any [`Database`]. See the crate docs.
pub struct DbJobs {
    db: Arc<dyn Database>,
    table: String,
    wake: Arc<Wake>,
    /// The change feed task waking idle workers; taken by [`Jobs::close`].
    feed: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Whether the feed task was started (with a database-wide feed it
    /// also sees other processes' jobs: `cross_process_wakeups`).
    listening: bool,
    /// Built read-only ([`DbJobs::open_with`]): the jobs table when it was
    /// missing (reported by `health`).
    missing_tables: Vec<String>,
    /// The jobs outlive this process (not db-memory, not SQLite `:memory:`).
    durable: bool,
    /// Group commit of completions, on a database with transactions (see
    /// [`complete_batch`]); `None` without transactions or read-only.
    completions: Option<Batcher<Lease, ()>>,
}

impl std::fmt::Debug for DbJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbJobs")
            .field("database", &self.db.info().name)
            .field("table", &self.table)
            .finish()
    }
}

impl Drop for DbJobs {
    fn drop(&mut self) {
        let feed = self.feed.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feed.take() {
            feed.abort();
        }
    }
}

fn tolerate_conflict(r: JobsResult<()>) -> JobsResult<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::Conflict => Ok(()),
        other => other,
    }
}

fn at(t: DateTime<Utc>) -> Value {
    Value::String(format_timestamp(t))
}

fn claimable_filter(types: &[String], now: DateTime<Utc>) -> Filter {
    and([
        col("job_type").is_in(types.iter().cloned()),
        or([
            and([
                col("state").eq(JobState::Queued.as_str()),
                col("run_at").lte(at(now)),
            ]),
            and([
                col("state").eq(JobState::Running.as_str()),
                col("lease_expires_at").lte(at(now)),
            ]),
        ]),
    ])
}

/// The job `id` as stored, if any.
async fn load(db: &dyn Database, table: &str, id: JobId) -> JobsResult<Option<Stored>> {
    db.get(table, &json!(id.to_string()))
        .await?
        .map(|r| Stored::from_row(&r))
        .transpose()
}

/// Whether `lease` still holds the job stored as `s`: it is running under
/// the lease's token.
fn held_by(s: &Stored, lease: &Lease) -> bool {
    s.job.state == JobState::Running && s.lease_token.as_deref() == Some(lease.token.as_str())
}

/// The row of `job` while its version is still `version`.
fn cas_filter(job: &Job, version: i64) -> Filter {
    and([col("id").eq(job.id.to_string()), col("version").eq(version)])
}

/// Applies `change` to the running job `lease` holds, by compare-and-set
/// (a few rounds when the row changes in between).
async fn with_lease<T>(
    db: &dyn Database,
    table: &str,
    lease: &Lease,
    operation: &'static str,
    change: impl Fn(&mut Job, DateTime<Utc>) -> T,
) -> JobsResult<T> {
    for _ in 0..CLAIM_ROUNDS {
        let Some(mut s) = load(db, table, lease.job_id).await? else {
            return Err(lifecycle::not_found(&lease.job_id, operation));
        };
        if !held_by(&s, lease) {
            return Err(lifecycle::lease_lost(&lease.job_id, operation));
        }
        let out = change(&mut s.job, lifecycle::now());
        let token = (s.job.state == JobState::Running).then_some(lease.token.as_str());
        let n = db
            .update_many(
                table,
                &cas_filter(&s.job, s.version),
                s.job.to_row(token, s.version + 1),
            )
            .await?;
        if n == 1 {
            return Ok(out);
        }
    }
    Err(lifecycle::lease_lost(&lease.job_id, operation))
}

/// Completions queued at once, at most (one transaction each).
const COMPLETE_BATCH: usize = 256;

/// The group commit of [`Jobs::complete`] on a database with transactions:
/// the completions every worker of this instance asks for while one batch
/// is written are written together as the next ([`complete_batch`]), with
/// no added wait (a completion alone is written at once).
fn completion_batcher(db: Arc<dyn Database>, table: String) -> Batcher<Lease, ()> {
    let table: Arc<str> = table.into();
    Batcher::start(
        "jobs.complete",
        COMPLETE_BATCH,
        Duration::ZERO,
        Arc::new(move |leases: Vec<Lease>| {
            let (db, table) = (db.clone(), table.clone());
            Box::pin(async move { complete_batch(&*db, &table, leases).await })
        }),
    )
}

/// Completes the jobs `leases` hold: one read of their rows and one
/// transaction of compare-and-sets (on each row's `id` and `version`), so a
/// batch costs one commit (on SQLite one fsync) instead of one per job.
/// Each lease gets its own answer: `NotFound` for a job that is gone,
/// `Conflict` for a lease that is no longer the job's. A row whose version
/// changed between the read and the write (its lease was extended in
/// between) is completed again on its own, as [`Jobs::complete`] without
/// batching does. A failed transaction fails every completion of the batch
/// with its error (nothing of it was written).
async fn complete_batch(db: &dyn Database, table: &str, leases: Vec<Lease>) -> Vec<JobsResult<()>> {
    const OPERATION: &str = "jobs.complete";
    let n = leases.len();
    let ids: Vec<String> = leases.iter().map(|l| l.job_id.to_string()).collect();
    let query = Query::new().filter(col("id").is_in(ids)).limit(n as u64);
    let rows = match db.read(table, &query).await {
        Ok(rows) => rows,
        Err(e) => return batch::fan_out(&e, n, OPERATION),
    };
    let mut stored = std::collections::HashMap::with_capacity(rows.len());
    for r in &rows {
        match Stored::from_row(r) {
            Ok(s) => {
                stored.insert(s.job.id, s);
            }
            Err(e) => return batch::fan_out(&e, n, OPERATION),
        }
    }
    let now = lifecycle::now();
    let mut answers: Vec<Option<JobsResult<()>>> = Vec::with_capacity(n);
    let mut ops = Vec::new();
    // Which lease each operation completes.
    let mut written = Vec::new();
    for (i, lease) in leases.iter().enumerate() {
        match stored.get_mut(&lease.job_id) {
            None => answers.push(Some(Err(lifecycle::not_found(&lease.job_id, OPERATION)))),
            Some(s) if !held_by(s, lease) => {
                answers.push(Some(Err(lifecycle::lease_lost(&lease.job_id, OPERATION))))
            }
            Some(s) => {
                s.job.complete(now);
                ops.push(Operation::UpdateMany {
                    table: table.to_string(),
                    filter: cas_filter(&s.job, s.version),
                    data: s.job.to_row(None, s.version + 1),
                });
                written.push(i);
                answers.push(None);
            }
        }
    }
    if !ops.is_empty() {
        let outputs = match db.transaction(ops).await {
            Ok(out) => out,
            Err(e) => return batch::fan_out(&e, n, OPERATION),
        };
        for (i, out) in written.into_iter().zip(outputs) {
            let answer = match out {
                OperationOutput::Affected(1) => Ok(()),
                // Changed since the read: once more, on its own.
                _ => {
                    with_lease(db, table, &leases[i], OPERATION, |job, now| {
                        job.complete(now)
                    })
                    .await
                }
            };
            answers[i] = Some(answer);
        }
    }
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                Err(Error::new(
                    ErrorKind::Internal,
                    "the database answered fewer operations than the transaction had",
                )
                .with_operation(OPERATION))
            })
        })
        .collect()
}

impl DbJobs {
    /// Jobs in `config.table` of `db`, creating the table and its indexes
    /// when missing (and `config.create_table`), and listening to the
    /// database's change feed for new jobs when it has one.
    pub async fn open(db: Arc<dyn Database>, config: DbJobsConfig) -> JobsResult<Self> {
        Self::open_with(db, config, BuildOptions::default()).await
    }

    /// [`DbJobs::open`], told how to build. Read-only
    /// ([`BuildOptions::read_only`], `truststream health`): the table and
    /// its indexes are not created and the change feed is not followed
    /// (on PostgreSQL it installs a trigger); a missing table is reported
    /// by [`Jobs::health`] as degraded, by name, instead.
    pub async fn open_with(
        db: Arc<dyn Database>,
        config: DbJobsConfig,
        options: BuildOptions,
    ) -> JobsResult<Self> {
        truststream_core_db::ident::validate(&config.table)?;
        let caps = db.capabilities();
        if options.read_only {
            let missing =
                truststream_core_db::missing_tables(&*db, std::slice::from_ref(&config.table))
                    .await
                    .map_err(|e| e.with_operation("jobs.check_tables"))?;
            return Ok(DbJobs {
                durable: is_durable(&*db).await,
                db,
                table: config.table,
                wake: Arc::new(Wake::new()),
                feed: std::sync::Mutex::new(None),
                listening: false,
                missing_tables: missing,
                completions: None,
            });
        }
        if config.create_table && caps.schema {
            let mut schema = row::schema(&config.table);
            schema.if_not_exists = true;
            // Processes starting together may race to create the table:
            // the loser's `Conflict` means it exists now.
            tolerate_conflict(db.create_table(&schema).await)?;
            for cols in [
                vec!["state", "job_type", "run_at"],
                vec!["state", "lease_expires_at"],
                vec!["created_at"],
            ] {
                let mut idx = IndexSpec::new(&config.table, cols);
                idx.if_not_exists = true;
                tolerate_conflict(db.create_index(&idx).await)?;
            }
        } else {
            // The table must exist already (made by a migration).
            db.read(&config.table, &Query::new().limit(1))
                .await
                .map_err(|e| {
                    Error::new(
                        e.kind(),
                        format!(
                            "the jobs table {} cannot be read; create it or enable create_table",
                            config.table
                        ),
                    )
                    .with_source(e)
                })?;
        }
        let durable = is_durable(&*db).await;
        let wake = Arc::new(Wake::new());
        let feed = if caps.change_feed {
            Self::listen(db.clone(), &config.table, wake.clone()).await
        } else {
            None
        };
        let completions = caps
            .transactions
            .then(|| completion_batcher(db.clone(), config.table.clone()));
        Ok(DbJobs {
            db,
            table: config.table,
            wake,
            listening: feed.is_some(),
            feed: std::sync::Mutex::new(feed),
            missing_tables: Vec::new(),
            durable,
            completions,
        })
    }

    /// Wakes waiting workers on inserted jobs and on jobs queued again, as
    /// the database's change feed reports them. A feed that cannot start or
    /// that ends leaves polling in charge.
    async fn listen(
        db: Arc<dyn Database>,
        table: &str,
        wake: Arc<Wake>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut stream = match db.subscribe_changes(Some(table)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "jobs-db: no change feed; idle workers poll");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while let Some(change) = stream.recv().await {
                let Ok(change) = change else { continue };
                let queued = change.new.as_ref().and_then(|r| r.get("state"))
                    == Some(&json!(JobState::Queued.as_str()));
                if change.kind == ChangeKind::Insert || queued {
                    wake.wake();
                }
            }
        }))
    }

    /// How many batches of completions this instance wrote, and how many
    /// completions they held (all zero on a database without
    /// transactions, where each completion is written on its own).
    pub fn completion_batches(&self) -> BatchStats {
        self.completions
            .as_ref()
            .map(Batcher::stats)
            .unwrap_or_default()
    }

    /// The database the jobs live in (run transactions with
    /// [`Jobs::enqueue_operation`] on it).
    pub fn database(&self) -> &Arc<dyn Database> {
        &self.db
    }

    /// The jobs table.
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn load(&self, id: JobId) -> JobsResult<Option<Stored>> {
        load(&*self.db, &self.table, id).await
    }

    /// Writes `job` over the row if its version is still `version`; `true`
    /// when it did.
    async fn cas(&self, job: &Job, token: Option<&str>, version: i64) -> JobsResult<bool> {
        let n = self
            .db
            .update_many(
                &self.table,
                &cas_filter(job, version),
                job.to_row(token, version + 1),
            )
            .await?;
        Ok(n == 1)
    }

    /// Applies `change` to the running job `lease` holds, by compare-and-set.
    async fn with_lease<T>(
        &self,
        lease: &Lease,
        operation: &'static str,
        change: impl Fn(&mut Job, DateTime<Utc>) -> T,
    ) -> JobsResult<T> {
        with_lease(&*self.db, &self.table, lease, operation, change).await
    }

    /// Runs `operations` — the handler's own writes — and the completion of
    /// the job `lease` holds in one [`Database::transaction`]: they commit
    /// together or not at all (the exactly-once path; in a worker's
    /// handler the lease is [`JobContext::completion_lease`]). Returns the
    /// outputs of `operations`.
    ///
    /// The completion is the transaction's first operation, an
    /// [`Operation::UpdateChecked`] on the job's `id` and row `version` that
    /// must change exactly one row (the lifecycle applied to the row read
    /// just before). When the lease was lost (it expired and another worker
    /// claimed the job) the answer is [`ErrorKind::Conflict`] and nothing is
    /// written, `operations` included. A row changed by this lease's own
    /// extension in between is read again and the transaction retried, a
    /// few times. An error of `operations` fails the transaction as it is.
    /// The database needs transactions (`DbCapabilities::transactions`).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use truststream_core_db::{to_row, Operation};
    /// use truststream_core_jobs::{JobContext, JobError, Worker};
    /// use truststream_jobs_db::DbJobs;
    ///
    /// #[derive(serde::Deserialize, serde::Serialize)]
    /// struct Score { agent_id: String, score: f64 }
    ///
    /// # fn build(jobs: Arc<DbJobs>) -> Result<(), truststream_core_jobs::Error> {
    /// let db_jobs = jobs.clone();
    /// let worker = Worker::builder(jobs)
    ///     .register("score", move |ctx: JobContext, s: Score| {
    ///         let db_jobs = db_jobs.clone();
    ///         async move {
    ///             let data = to_row(&s).map_err(|e| JobError::permanent(e.to_string()))?;
    ///             let write = Operation::Create { table: "scores".into(), data };
    ///             db_jobs
    ///                 .complete_with(ctx.completion_lease(), vec![write])
    ///                 .await
    ///                 .map(|_| ())
    ///                 .map_err(|e| JobError::retry(e.to_string()))
    ///         }
    ///     })?
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`JobContext::completion_lease`]: truststream_core_jobs::JobContext::completion_lease
    pub async fn complete_with(
        &self,
        lease: &Lease,
        operations: Vec<Operation>,
    ) -> JobsResult<Vec<OperationOutput>> {
        const OPERATION: &str = "jobs.complete_with";
        let mut seen_version = None;
        let mut last_conflict = None;
        for _ in 0..CLAIM_ROUNDS {
            let Some(mut s) = self.load(lease.job_id).await? else {
                return Err(lifecycle::not_found(&lease.job_id, OPERATION));
            };
            if !held_by(&s, lease) {
                return Err(lifecycle::lease_lost(&lease.job_id, OPERATION));
            }
            if seen_version == Some(s.version) {
                // The completion matched the row it read: the conflict
                // was one of `operations`'.
                break;
            }
            seen_version = Some(s.version);
            s.job.complete(lifecycle::now());
            let completion = Operation::UpdateChecked {
                table: self.table.clone(),
                filter: and([
                    col("id").eq(s.job.id.to_string()),
                    col("version").eq(s.version),
                ]),
                data: s.job.to_row(None, s.version + 1),
                expected: 1,
            };
            let mut ops = Vec::with_capacity(operations.len() + 1);
            ops.push(completion);
            ops.extend(operations.iter().cloned());
            match self.db.transaction(ops).await {
                Ok(mut out) => {
                    out.remove(0);
                    return Ok(out);
                }
                // The row changed since it was read, or `operations`
                // conflicted: the next round reads the row to tell which.
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    last_conflict = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_conflict.unwrap_or_else(|| lifecycle::lease_lost(&lease.job_id, OPERATION)))
    }

    /// Applies a state change that needs no lease (cancel, retry-dead).
    async fn change(
        &self,
        id: JobId,
        operation: &'static str,
        change: impl Fn(&mut Job, DateTime<Utc>) -> JobsResult<()>,
    ) -> JobsResult<Job> {
        for _ in 0..CLAIM_ROUNDS {
            let Some(mut s) = self.load(id).await? else {
                return Err(lifecycle::not_found(&id, operation));
            };
            change(&mut s.job, lifecycle::now())?;
            match self.cas(&s.job, None, s.version).await {
                Ok(true) => return Ok(s.job),
                Ok(false) => continue,
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    return Err(Error::conflict(format!(
                        "job {id} cannot be queued again: another queued or running job holds its unique key"
                    ))
                    .with_operation(operation)
                    .with_source(e))
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!("job {id} kept changing; try again")).with_operation(operation))
    }

    async fn insert_one(&self, job: NewJob) -> JobsResult<Enqueued> {
        let id = job.id;
        let key = job.unique_key.clone();
        let unique_enforced = self.db.capabilities().unique_constraints;
        for _ in 0..CLAIM_ROUNDS {
            if let (Some(k), false) = (&key, unique_enforced) {
                if let Some(holder) = self.holder(k).await? {
                    return Ok(Enqueued::Duplicate(holder));
                }
            }
            let row = job.clone().into_job(lifecycle::now()).to_row(None, 0);
            match self.db.create(&self.table, row).await {
                Ok(_) => return Ok(Enqueued::Created(id)),
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    if self.load(id).await?.is_some() {
                        return Err(Error::conflict(format!("a job with id {id} exists"))
                            .with_operation("jobs.enqueue")
                            .with_source(e));
                    }
                    let Some(k) = &key else { return Err(e) };
                    if let Some(holder) = self.holder(k).await? {
                        return Ok(Enqueued::Duplicate(holder));
                    }
                    // The holder finished between the insert and the look-up: try again.
                }
                Err(e) => return Err(e),
            }
        }
        Err(
            Error::conflict("the unique key kept changing hands; try again")
                .with_operation("jobs.enqueue"),
        )
    }

    /// Run-time percentiles of the most recently completed jobs of `job_type`.
    async fn run_times(&self, job_type: &str) -> JobsResult<Option<RunTimes>> {
        let rows = self
            .db
            .read(
                &self.table,
                &Query::new()
                    .select(["started_at", "finished_at"])
                    .filter(and([
                        col("state").eq(JobState::Completed.as_str()),
                        col("job_type").eq(job_type),
                    ]))
                    .order_by_desc("finished_at")
                    .limit(RUN_TIME_SAMPLE as u64),
            )
            .await?;
        let mut samples = Vec::with_capacity(rows.len());
        for r in &rows {
            if r.get("started_at").is_some_and(|v| !v.is_null()) {
                let d = row::time_of(r, "finished_at")? - row::time_of(r, "started_at")?;
                samples.push(d.to_std().unwrap_or_default());
            }
        }
        Ok(RunTimes::from_samples(job_type, samples))
    }

    /// The queued or running job holding unique key `key`.
    async fn holder(&self, key: &str) -> JobsResult<Option<JobId>> {
        let rows = self
            .db
            .read(
                &self.table,
                &Query::new()
                    .select(["id"])
                    .filter(col("unique_slot").eq(key))
                    .limit(1),
            )
            .await?;
        rows.into_iter().next().map(|r| row::id_of(&r)).transpose()
    }
}

#[async_trait]
impl Jobs for DbJobs {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> JobsCapabilities {
        let db = self.db.capabilities();
        let durable = self.durable;
        let mut c = JobsCapabilities::none();
        c.transactional_enqueue = db.transactions;
        c.unique_keys = db.unique_constraints;
        c.shared = durable;
        c.durable = durable;
        c.local_wakeups = true;
        c.in_database = true;
        c.cross_process_wakeups =
            self.listening && db.change_feed_scope == Some(ChangeFeedScope::Database);
        c
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        if let Some(missing) = truststream_core_db::missing_tables_health(
            "jobs-db",
            &self.missing_tables,
            start.elapsed(),
        ) {
            return missing;
        }
        match self
            .db
            .read(&self.table, &Query::new().select(["id"]).limit(1))
            .await
        {
            Ok(_) => Health::healthy(start.elapsed()),
            Err(e) => Health::unhealthy(start.elapsed(), e.to_string()),
        }
    }

    /// Stops the change feed task that wakes idle workers and wakes them
    /// once more. The jobs live in the database the provider was given:
    /// its owner closes it (`Runtime::shutdown` disconnects it after this),
    /// and calls fail with its `Unavailable` from then on.
    async fn close(&self) -> JobsResult<()> {
        if let Some(batcher) = &self.completions {
            batcher.close().await;
        }
        let feed = self.feed.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = feed {
            task.abort();
            let _ = task.await;
        }
        self.wake.wake();
        Ok(())
    }

    async fn enqueue(&self, job: NewJob) -> JobsResult<Enqueued> {
        job.validate()?;
        let out = self.insert_one(job).await?;
        self.wake.wake();
        Ok(out)
    }

    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> JobsResult<Vec<Enqueued>> {
        for j in &jobs {
            j.validate()?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let out = if jobs.iter().all(|j| j.unique_key.is_none()) {
            let now = lifecycle::now();
            let ids: Vec<Enqueued> = jobs.iter().map(|j| Enqueued::Created(j.id)).collect();
            let rows = jobs
                .into_iter()
                .map(|j| j.into_job(now).to_row(None, 0))
                .collect();
            self.db.create_many(&self.table, rows).await?;
            ids
        } else {
            let mut out = Vec::with_capacity(jobs.len());
            for j in jobs {
                out.push(self.insert_one(j).await?);
            }
            out
        };
        self.wake.wake();
        Ok(out)
    }

    fn enqueue_operation(&self, job: &NewJob) -> JobsResult<EnqueueOperation> {
        if !self.db.capabilities().transactions {
            return Err(Error::unsupported(format!(
                "the {} database has no transactions to enqueue a job in",
                self.db.info().name
            ))
            .with_operation("jobs.enqueue_operation"));
        }
        job.validate()?;
        Ok(EnqueueOperation {
            id: job.id,
            operation: Operation::Create {
                table: self.table.clone(),
                data: job.clone().into_job(lifecycle::now()).to_row(None, 0),
            },
        })
    }

    async fn claim(&self, request: &ClaimRequest) -> JobsResult<Vec<ClaimedJob>> {
        request.validate()?;
        // With transactions a round's compare-and-sets commit together
        // (one commit, on SQLite one fsync, per claim); without, one by one.
        let together = self.db.capabilities().transactions;
        let mut out = Vec::new();
        for _ in 0..CLAIM_ROUNDS {
            let want = request.batch - out.len();
            let now = lifecycle::now();
            let query = Query::new()
                .filter(claimable_filter(&request.job_types, now))
                .order_by_desc("priority")
                .order_by_asc("run_at")
                .order_by_asc("created_at")
                .order_by_asc("id")
                .limit((want * 2 + 8) as u64);
            let rows = self.db.read(&self.table, &query).await?;
            let found = rows.len();
            // The claimable rows, started, each with its new lease token:
            // `want` of them when they commit together; all, one by one
            // (the ones past a lost compare-and-set are the spares).
            let mut starts = Vec::new();
            for r in rows {
                if together && starts.len() >= want {
                    break;
                }
                let mut s = Stored::from_row(&r)?;
                if !s.job.is_claimable(now) {
                    continue;
                }
                let started = s.job.start(now, request.lease, &request.worker_id);
                starts.push((s, started == Start::Started, lifecycle::new_token()));
            }
            let row = |(s, started, token): &(Stored, bool, String)| {
                s.job
                    .to_row(started.then_some(token.as_str()), s.version + 1)
            };
            let won: Vec<bool> = if together {
                if starts.is_empty() {
                    break;
                }
                let ops = starts
                    .iter()
                    .map(|start| Operation::UpdateMany {
                        table: self.table.clone(),
                        filter: cas_filter(&start.0.job, start.0.version),
                        data: row(start),
                    })
                    .collect();
                let outputs = self.db.transaction(ops).await?;
                outputs
                    .iter()
                    .map(|o| matches!(o, OperationOutput::Affected(1)))
                    .collect()
            } else {
                // One by one, past the ones another claimer took, until
                // `want` are taken.
                let mut won = Vec::with_capacity(want);
                let mut taken = 0;
                for start in &starts {
                    if taken >= want {
                        break;
                    }
                    let filter = cas_filter(&start.0.job, start.0.version);
                    let w = self
                        .db
                        .update_many(&self.table, &filter, row(start))
                        .await?
                        == 1;
                    taken += usize::from(w && start.1);
                    won.push(w);
                }
                starts.truncate(won.len());
                won
            };
            let lost = won.iter().filter(|w| !**w).count();
            for ((s, started, token), won) in starts.into_iter().zip(won) {
                if !(won && started) {
                    continue;
                }
                let expires_at = s.job.lease_expires_at.unwrap_or(now);
                out.push(ClaimedJob {
                    lease: Lease {
                        job_id: s.job.id,
                        token,
                        expires_at,
                    },
                    job: s.job,
                });
            }
            // Done when full, or when the read found every claimable job
            // and no compare-and-set was lost to another claimer.
            if out.len() >= request.batch || (found < want * 2 + 8 && lost == 0) {
                break;
            }
        }
        Ok(out)
    }

    async fn extend_lease(&self, lease: &Lease, by: Duration) -> JobsResult<DateTime<Utc>> {
        self.with_lease(lease, "jobs.extend_lease", |job, now| job.extend(now, by))
            .await
    }

    async fn complete(&self, lease: &Lease) -> JobsResult<()> {
        match &self.completions {
            Some(batcher) => batcher.submit(lease.clone()).await,
            None => {
                self.with_lease(lease, "jobs.complete", |job, now| job.complete(now))
                    .await
            }
        }
    }

    async fn fail(&self, lease: &Lease, error: &JobError) -> JobsResult<FailOutcome> {
        let out = self
            .with_lease(lease, "jobs.fail", |job, now| {
                job.fail(now, error, rand::random::<f64>())
            })
            .await?;
        self.wake.wake();
        Ok(out)
    }

    async fn release(&self, lease: &Lease) -> JobsResult<()> {
        self.with_lease(lease, "jobs.release", |job, now| job.release(now))
            .await?;
        self.wake.wake();
        Ok(())
    }

    async fn cancel(&self, id: JobId) -> JobsResult<Job> {
        self.change(id, "jobs.cancel", |job, now| job.cancel(now))
            .await
    }

    async fn retry_dead(&self, id: JobId) -> JobsResult<Job> {
        let job = self
            .change(id, "jobs.retry_dead", |job, now| job.requeue_dead(now))
            .await?;
        self.wake.wake();
        Ok(job)
    }

    async fn get(&self, id: JobId) -> JobsResult<Option<Job>> {
        Ok(self.load(id).await?.map(|s| s.job))
    }

    async fn list(&self, query: &JobQuery) -> JobsResult<Vec<Job>> {
        query.validate()?;
        let mut filters = Vec::new();
        if let Some(s) = query.state {
            filters.push(col("state").eq(s.as_str()));
        }
        if let Some(t) = &query.job_type {
            filters.push(col("job_type").eq(t.as_str()));
        }
        let mut q = Query::new()
            .order_by_desc("created_at")
            .order_by_desc("id")
            .limit(u64::from(query.effective_limit()?))
            .offset(query.offset);
        if !filters.is_empty() {
            q = q.filter(and(filters));
        }
        self.db
            .read(&self.table, &q)
            .await?
            .into_iter()
            .map(|r| Stored::from_row(&r).map(|s| s.job))
            .collect()
    }

    async fn stats(&self) -> JobsResult<JobStats> {
        let now = lifecycle::now();
        let mut counts: std::collections::BTreeMap<(String, JobState), u64> = Default::default();
        if self.db.capabilities().aggregates {
            let q = Query::new()
                .select(["job_type", "state"])
                .select_item(SelectItem::aggregate(AggFunc::Count, None, "n"))
                .group_by("job_type")
                .group_by("state");
            for r in self.db.read(&self.table, &q).await? {
                let (t, s) = row::type_and_state(&r)?;
                *counts.entry((t, s)).or_default() += row::count_of(&r)?;
            }
        } else {
            // Without aggregates every row's type and state is read: fine
            // for small queues only (see the README).
            let q = Query::new().select(["job_type", "state"]);
            for r in self.db.read(&self.table, &q).await? {
                *counts.entry(row::type_and_state(&r)?).or_default() += 1;
            }
        }
        let completed_types: Vec<String> = counts
            .iter()
            .filter(|((_, s), n)| *s == JobState::Completed && **n > 0)
            .map(|((t, _), _)| t.clone())
            .collect();
        let mut run_times = Vec::new();
        for t in completed_types {
            if let Some(r) = self.run_times(&t).await? {
                run_times.push(r);
            }
        }
        let oldest = self
            .db
            .read(
                &self.table,
                &Query::new()
                    .select(["run_at"])
                    .filter(and([
                        col("state").eq(JobState::Queued.as_str()),
                        col("run_at").lte(at(now)),
                    ]))
                    .order_by_asc("run_at")
                    .limit(1),
            )
            .await?
            .into_iter()
            .next()
            .map(|r| row::time_of(&r, "run_at"))
            .transpose()?;
        Ok(JobStats {
            counts: counts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|((job_type, state), count)| StateCount {
                    job_type,
                    state,
                    count,
                })
                .collect(),
            oldest_queued_age: oldest.map(|t| (now - t).to_std().unwrap_or_default()),
            run_times,
        })
    }

    async fn purge_finished(&self, before: DateTime<Utc>) -> JobsResult<u64> {
        let filter = and([
            col("state").is_in([JobState::Completed.as_str(), JobState::Cancelled.as_str()]),
            col("finished_at").lt(at(before)),
        ]);
        self.db.delete_many(&self.table, &filter).await
    }

    async fn wait_for_work(&self, max_wait: Duration) {
        self.wake.wait(max_wait).await;
    }
}

/// Whether jobs in `db` outlive the process: not for db-memory, nor for a
/// SQLite database whose main file is in memory (`:memory:`, asked of
/// SQLite itself when raw SQL is available; assumed durable otherwise).
async fn is_durable(db: &dyn Database) -> bool {
    if db.info().name == "memory" {
        return false;
    }
    let caps = db.capabilities();
    if !(caps.raw_sql && caps.sql_dialect == Some(truststream_core_db::sql::SqlDialect::Sqlite)) {
        return true;
    }
    let sql = "SELECT file FROM pragma_database_list WHERE name = 'main'";
    match db.raw_query(sql, &Default::default()).await {
        Ok(rows) => rows
            .first()
            .and_then(|r| r.get("file"))
            .and_then(Value::as_str)
            .is_some_and(|f| !f.is_empty()),
        Err(e) => {
            tracing::warn!(error = %e, "jobs-db: cannot tell whether the SQLite database is a file; assuming it is");
            true
        }
    }
}

/// Registers the provider as `"database"`: it keeps jobs in the configured
/// database (the registry's dependency), which must be given.
pub fn register(reg: &mut JobsRegistry) {
    reg.register_with_options(TYPE_NAME, |cfg, db, options| async move {
        let cfg: DbJobsConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        let Some(db) = db else {
            return Err(Error::invalid_input(
                "the database jobs provider needs a configured database",
            ));
        };
        Ok(Arc::new(DbJobs::open_with(db, cfg, options).await?) as Arc<dyn Jobs>)
    });
}
