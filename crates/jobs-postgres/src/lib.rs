#![doc = include_str!("../README.md")]

mod error;
mod row;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Row as _, Transaction};
use truststream_core::{BoxFuture, Error, ErrorKind, Health, ProviderInfo, Secret};
use truststream_core_db::{ident, Operation};
use truststream_core_jobs::batch::{fan_out, BatchStats, Batcher, Flush};
use truststream_core_jobs::lifecycle::{self, Start};
use truststream_core_jobs::{
    ClaimRequest, ClaimedJob, EnqueueOperation, Enqueued, FailOutcome, Job, JobError, JobId,
    JobQuery, JobState, JobStats, Jobs, JobsCapabilities, JobsRegistry, JobsResult, Lease, NewJob,
    RunTimes, StateCount, Wake, RUN_TIME_SAMPLE,
};

use error::map;
use row::{decode, Stored, COLUMNS};

/// A sqlx error as the TrustStream error of its kind (by SQLSTATE:
/// constraint violations `Conflict`, bad data `InvalidInput`, lost
/// connections, deadlocks and serialization failures `Unavailable`, ...),
/// the sqlx error kept as its source: for the writes of
/// [`PgJobs::complete_with`]'s closure.
pub fn sql_error(e: sqlx::Error) -> Error {
    map(e)
}

/// The type name the provider registers under.
pub const TYPE_NAME: &str = "postgres";

/// The default jobs table (the same as jobs-db's).
pub const DEFAULT_TABLE: &str = "truststream_jobs";

/// Rows one `purge_finished` statement deletes.
const PURGE_BATCH: i64 = 1000;

/// Default most completions written in one batch.
pub const DEFAULT_COMPLETE_BATCH: usize = 256;

/// Default longest wait for more completions before a batch is written.
pub const DEFAULT_COMPLETE_LINGER_MS: u64 = 2;

/// Default jobs this instance claims or completes between two `VACUUM`s
/// of the jobs table ([`PgJobsConfig::vacuum_every`]).
pub const DEFAULT_VACUUM_EVERY: u64 = 10_000;

/// Rows one insert statement carries (its arrays bounded).
const INSERT_BATCH: usize = 1000;

/// Configuration of the PostgreSQL jobs provider.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PgJobsConfig {
    /// Connection URL (`postgres://user:password@host:port/database`). A
    /// secret: never printed. Default `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: Secret,
    /// The schema the jobs table lives in (created when missing). `None`:
    /// the connection's default (`public`). Use the schema of the
    /// db-postgres database that runs transactional enqueues.
    pub schema: Option<String>,
    /// The jobs table (default `truststream_jobs`).
    pub table: String,
    /// Create the table, its indexes and its wake-up trigger when missing
    /// (default true); when false they must exist.
    pub create_table: bool,
    /// Largest number of pooled connections (default 10; one more is held
    /// by the `LISTEN` connection).
    pub max_connections: u32,
    /// How long a call waits for a connection before failing with
    /// `Unavailable` (default 5000 ms).
    pub acquire_timeout_ms: u64,
    /// Most completions written in one transaction (default
    /// [`DEFAULT_COMPLETE_BATCH`], 1 to 1,000): concurrent
    /// [`Jobs::complete`] calls of this instance (all its workers) are
    /// collected and written together; each call still returns once its
    /// job's completion is committed.
    pub complete_batch: usize,
    /// Longest wait, in milliseconds, for more completions once one is
    /// waiting (default [`DEFAULT_COMPLETE_LINGER_MS`]; 0: write whatever
    /// is waiting at once). Completions arriving while a batch is written
    /// go into the next one whatever this is.
    pub complete_linger_ms: u64,
    /// Jobs this instance claims or completes between two `VACUUM
    /// (SKIP_LOCKED)`s of the jobs table (default
    /// [`DEFAULT_VACUUM_EVERY`]; 0: never, leave it to autovacuum). Each
    /// claim and completion leaves a dead row version and dead index
    /// entries; the claimed jobs' entries sit at the head of the queued
    /// index, where every claim's scan starts, and stay there, pages of
    /// them, until a VACUUM removes them (autovacuum waits for a fifth of
    /// the table to change, and may be off). The VACUUM runs in the
    /// background on a pooled connection, one at a time per instance; one
    /// that another process's VACUUM holds the table for is skipped. A
    /// role that does not own the table gets PostgreSQL's warning and
    /// nothing is vacuumed.
    pub vacuum_every: u64,
}

impl Default for PgJobsConfig {
    fn default() -> Self {
        PgJobsConfig {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/postgres"),
            schema: None,
            table: DEFAULT_TABLE.to_string(),
            create_table: true,
            max_connections: 10,
            acquire_timeout_ms: 5000,
            complete_batch: DEFAULT_COMPLETE_BATCH,
            complete_linger_ms: DEFAULT_COMPLETE_LINGER_MS,
            vacuum_every: DEFAULT_VACUUM_EVERY,
        }
    }
}

impl PgJobsConfig {
    /// The default configuration for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgJobsConfig {
            url: Secret::new(url.into()),
            ..PgJobsConfig::default()
        }
    }

    /// Sets the schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

/// Jobs in a PostgreSQL table, claimed with `FOR UPDATE SKIP LOCKED`,
/// idle workers woken by `LISTEN/NOTIFY`. See the crate docs.
pub struct PgJobs {
    pool: PgPool,
    /// The jobs, sample and sequence names, quoted and qualified, for this
    /// provider's statements.
    names: Arc<Tables>,
    /// Completions of every worker on this instance, written in batches,
    /// and claims, each of which takes the completions queued with it into
    /// its statement ([`write_batch`]); `None` when built read-only (no
    /// background writer: each completion and claim is written on its
    /// own).
    completions: Option<Batcher<Write, Written>>,
    /// The writer's background VACUUM, stopped by `close`.
    vacuum: Arc<Vacuum>,
    /// Bare, for `enqueue_operation` (resolved by the database's schema).
    table: String,
    wake: Arc<Wake>,
    /// The `LISTEN` task; taken by [`Jobs::close`].
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Built read-only ([`PgJobs::open_with`]): the tables it found
    /// missing and did not create (reported by `health`).
    missing_tables: Vec<String>,
}

impl std::fmt::Debug for PgJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJobs")
            .field("table", &self.names.qt)
            .finish()
    }
}

impl Drop for PgJobs {
    fn drop(&mut self) {
        let listener = self.listener.get_mut();
        if let Some(task) = listener.unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// The NOTIFY channel of a table: one per schema and table, cut to 63
/// bytes (identifiers are ASCII once validated).
fn channel(schema: Option<&str>, table: &str) -> String {
    let mut c = format!("tsjobs_{}_{table}", schema.unwrap_or("public"));
    c.truncate(63);
    c
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgJobs {
    /// Connects, creates the schema, table, indexes and wake-up trigger when
    /// missing (and `config.create_table`), and starts listening for new
    /// jobs.
    pub async fn open(config: PgJobsConfig) -> JobsResult<Self> {
        Self::open_with(config, truststream_core::BuildOptions::default()).await
    }

    /// [`PgJobs::open`], told how to build. Read-only
    /// ([`truststream_core::BuildOptions::read_only`], `truststream
    /// health`): nothing is
    /// created whatever `create_table` says; tables found missing are
    /// reported by [`Jobs::health`] as degraded, by name, instead; no
    /// `LISTEN` connection is opened and no completion-batching task is
    /// started (a completion, if one is asked for, is written on its own).
    pub async fn open_with(
        config: PgJobsConfig,
        build: truststream_core::BuildOptions,
    ) -> JobsResult<Self> {
        ident::validate(&config.table)?;
        if let Some(s) = &config.schema {
            ident::validate(s)?;
        }
        let options: PgConnectOptions = config.url.expose().parse().map_err(|e| {
            Error::invalid_input("invalid PostgreSQL URL for the jobs provider").with_source(e)
        })?;
        let options = options.application_name("truststream-jobs");
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
            .connect_lazy_with(options);
        if !(1..=RUN_TIME_SAMPLE).contains(&config.complete_batch) {
            return Err(Error::invalid_input(format!(
                "complete_batch must be between 1 and {RUN_TIME_SAMPLE}, got {}",
                config.complete_batch
            )));
        }
        let qualified = |name: &str| match &config.schema {
            Some(s) => format!("{}.{}", ident::quote(s), ident::quote(name)),
            None => ident::quote(name),
        };
        let names = Arc::new(Tables::new(
            qualified(&config.table),
            qualified(&row::index_name(&config.table, "run_samples")),
            qualified(&row::index_name(&config.table, "run_slot")),
            qualified(&row::index_name(&config.table, "claim_batch")),
            qualified(&row::index_name(&config.table, "complete_claim")),
        ));
        let channel = channel(config.schema.as_deref(), &config.table);
        let mut missing_tables = Vec::new();
        if build.read_only {
            let shown = |name: String| match &config.schema {
                Some(s) => format!("{s}.{name}"),
                None => name,
            };
            for (table, name) in [
                (&names.qt, shown(config.table.clone())),
                (
                    &names.qs,
                    shown(row::index_name(&config.table, "run_samples")),
                ),
            ] {
                let absent: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NULL")
                    .bind(table)
                    .fetch_one(&pool)
                    .await
                    .map_err(map)?;
                if absent {
                    missing_tables.push(name);
                }
            }
        } else if config.create_table {
            Self::create(&pool, &config, &names, &channel).await?;
        } else {
            for (what, table) in [
                ("jobs table", &names.qt),
                ("run-time sample table", &names.qs),
            ] {
                sqlx::query(&format!("SELECT 1 FROM {table} LIMIT 1"))
                    .execute(&pool)
                    .await
                    .map_err(|e| {
                        let e = map(e);
                        Error::new(
                            e.kind(),
                            format!(
                                "the {what} of {} cannot be read; create it or enable create_table",
                                config.table
                            ),
                        )
                        .with_source(e)
                    })?;
            }
            for function in [&names.claim_fn, &names.complete_claim_fn] {
                let present: bool = sqlx::query_scalar("SELECT to_regproc($1) IS NOT NULL")
                    .bind(function)
                    .fetch_one(&pool)
                    .await
                    .map_err(map)?;
                if !present {
                    return Err(Error::invalid_input(format!(
                        "the claim function {function} of {} is missing (this version claims \
                         through it; open once with create_table enabled to create it)",
                        config.table
                    )));
                }
            }
        }
        let wake = Arc::new(Wake::new());
        if build.read_only {
            // No `LISTEN` connection and no completion writer: a read-only
            // build only looks (its workers, if any, wake on local enqueues
            // and their poll interval).
            return Ok(PgJobs {
                pool,
                names,
                completions: None,
                vacuum: Arc::new(Vacuum::new(0)),
                table: config.table,
                wake,
                listener: std::sync::Mutex::new(None),
                missing_tables,
            });
        }
        let mut listener = PgListener::connect_with(&pool).await.map_err(map)?;
        listener.listen(&channel).await.map_err(map)?;
        let listener = tokio::spawn(Self::listen(listener, wake.clone()));
        let vacuum = Arc::new(Vacuum::new(config.vacuum_every));
        let flush: Flush<Write, Written> = {
            let pool = pool.clone();
            let names = names.clone();
            let vacuum = vacuum.clone();
            Arc::new(move |items: Vec<Write>| {
                let pool = pool.clone();
                let names = names.clone();
                let vacuum = vacuum.clone();
                Box::pin(async move {
                    let answers = write_batch(&pool, &names, items).await;
                    let jobs = answers
                        .iter()
                        .map(|a| match a {
                            Ok(Written::Completed) => 1,
                            Ok(Written::Claimed(rows, _)) => rows.len() as u64,
                            Err(_) => 0,
                        })
                        .sum();
                    vacuum.count(jobs, &pool, &names.qt);
                    answers
                })
            })
        };
        let completions = Batcher::start_with(
            "jobs.complete",
            config.complete_batch,
            Duration::from_millis(config.complete_linger_ms),
            WRITES_AT_ONCE,
            is_claim,
            flush,
        );
        Ok(PgJobs {
            pool,
            names,
            completions: Some(completions),
            vacuum,
            table: config.table,
            wake,
            listener: std::sync::Mutex::new(Some(listener)),
            missing_tables,
        })
    }

    /// The DDL, under a transaction-scoped advisory lock so processes
    /// starting together do not race on the catalog.
    async fn create(
        pool: &PgPool,
        config: &PgJobsConfig,
        names: &Tables,
        channel: &str,
    ) -> JobsResult<()> {
        let qt = names.qt.as_str();
        let func = match &config.schema {
            Some(s) => format!("{}.truststream_jobs_notify", ident::quote(s)),
            None => "truststream_jobs_notify".to_string(),
        };
        let trigger = row::index_name(&config.table, "notify");
        let mut tx = pool.begin().await.map_err(map)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("truststream-jobs-ddl {qt}"))
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        if let Some(s) = &config.schema {
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident::quote(s)))
                .execute(&mut *tx)
                .await
                .map_err(map)?;
        }
        let statements = row::ddl(qt, &config.table, &func)
            .into_iter()
            .chain(row::run_samples_ddl(&names.qs, &names.seq))
            .chain([
                row::claim_function_ddl(qt, &names.claim_fn),
                complete_claim_ddl(qt, &names.qs, &names.complete_claim_fn, &names.claim_fn),
            ]);
        for statement in statements {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(map)?;
        }
        // Tables made before the queued and running indexes.
        let old_claim = row::index_name(&config.table, row::OLD_CLAIM_INDEX);
        let old_claim = match &config.schema {
            Some(s) => format!("{}.{}", ident::quote(s), ident::quote(&old_claim)),
            None => ident::quote(&old_claim),
        };
        sqlx::query(&format!("DROP INDEX IF EXISTS {old_claim}"))
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        // Tables made before the partial unique index: their full unique
        // constraint indexes every job's NULL; the partial index (made
        // above) now enforces the rule, in the same transaction.
        let full: Vec<String> = sqlx::query_scalar(row::full_unique_constraints_sql())
            .bind(qt)
            .fetch_all(&mut *tx)
            .await
            .map_err(map)?;
        for name in full {
            sqlx::query(&format!(
                "ALTER TABLE {qt} DROP CONSTRAINT {}",
                ident::quote(&name)
            ))
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        }
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2)",
        )
        .bind(qt)
        .bind(&trigger)
        .fetch_one(&mut *tx)
        .await
        .map_err(map)?;
        if !exists {
            // Inserted jobs and jobs queued again (retried, released) wake
            // listeners; PostgreSQL folds a transaction's identical
            // notifications into one.
            sqlx::query(&format!(
                "CREATE TRIGGER {} AFTER INSERT OR UPDATE OF state ON {qt} FOR EACH ROW \
                 WHEN (NEW.state = 'queued') EXECUTE FUNCTION {func}('{channel}')",
                ident::quote(&trigger)
            ))
            .execute(&mut *tx)
            .await
            .map_err(map)?;
        }
        tx.commit().await.map_err(map)
    }

    /// Wakes waiting workers on every notification. A lost connection is
    /// re-established (and re-`LISTEN`ed) by the listener; notifications
    /// sent meanwhile are lost, so every reconnect wakes the workers too.
    async fn listen(mut listener: PgListener, wake: Arc<Wake>) {
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => wake.wake(),
                Ok(None) => wake.wake(),
                Err(e) => {
                    tracing::warn!(error = %e, "jobs-postgres: LISTEN connection failed; retrying");
                    wake.wake();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The bare jobs table name (as `enqueue_operation` names it).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Runs `work` — the handler's own writes, on the connection of a
    /// transaction — and completes the job `lease` holds in the same
    /// transaction, then commits: the writes and the completion are applied
    /// together or not at all (the exactly-once path; in a worker's handler
    /// the lease is [`JobContext::completion_lease`]).
    ///
    /// The completion is a compare-and-set on the lease, after `work`: the
    /// job's row is locked (`FOR UPDATE`, so no claimer takes it until the
    /// transaction ends) and must still be running under this lease. When
    /// the lease was lost (it expired and another worker claimed the job)
    /// the answer is [`ErrorKind::Conflict`] and the transaction is rolled
    /// back, `work`'s writes with it; an error of `work` rolls it back too
    /// and is returned as it is (map sqlx errors with [`sql_error`]). A
    /// lease that expired but that no one claimed yet still completes.
    /// Write only to this provider's server through the connection; `work`
    /// should not take longer than the lease (the worker keeps extending
    /// it meanwhile).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use truststream_core_jobs::{JobContext, JobError, Worker};
    /// use truststream_jobs_postgres::{sql_error, PgJobs};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Credit { account: String, cents: i64 }
    ///
    /// # fn build(jobs: Arc<PgJobs>) -> Result<(), truststream_core_jobs::Error> {
    /// let pg = jobs.clone();
    /// let worker = Worker::builder(jobs)
    ///     .register("credit", move |ctx: JobContext, c: Credit| {
    ///         let pg = pg.clone();
    ///         async move {
    ///             pg.complete_with(ctx.completion_lease(), move |conn| {
    ///                 Box::pin(async move {
    ///                     sqlx::query("UPDATE accounts SET cents = cents + $1 WHERE id = $2")
    ///                         .bind(c.cents)
    ///                         .bind(&c.account)
    ///                         .execute(&mut *conn)
    ///                         .await
    ///                         .map_err(sql_error)?;
    ///                     Ok(())
    ///                 })
    ///             })
    ///             .await
    ///             .map_err(|e| JobError::retry(e.to_string()))
    ///         }
    ///     })?
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`JobContext::completion_lease`]: truststream_core_jobs::JobContext::completion_lease
    pub async fn complete_with<T, F>(&self, lease: &Lease, work: F) -> JobsResult<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, JobsResult<T>> + Send,
    {
        let mut tx = self.pool.begin().await.map_err(map)?;
        let r = async {
            let out = work(&mut tx).await?;
            self.complete_in(&mut tx, lease).await?;
            Ok(out)
        }
        .await;
        finish(tx, r).await
    }

    /// Completes the job `lease` holds inside `tx`, the caller's own
    /// transaction on this provider's server: the completion commits with
    /// the caller's writes, or rolls back with them. Call it last, right
    /// before committing: it locks the job's row (`FOR UPDATE`) and one
    /// run-time sample row until the transaction ends, so claims skip the
    /// job and this instance's lease extensions wait meanwhile.
    ///
    /// A lease no longer held is [`ErrorKind::Conflict`] and a missing job
    /// [`ErrorKind::NotFound`]; either way nothing is written, and the
    /// caller must roll the transaction back (`tx.rollback().await`: a
    /// dropped sqlx transaction rolls back only when its connection is next
    /// used, keeping its locks until then), so its own writes are not
    /// applied by a run that lost its job. [`PgJobs::complete_with`] does
    /// all of this.
    pub async fn complete_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        lease: &Lease,
    ) -> JobsResult<()> {
        const OPERATION: &str = "jobs.complete_in";
        let mut answers =
            complete_leases(tx, &self.names, std::slice::from_ref(lease), OPERATION).await?;
        answers.pop().unwrap_or_else(|| {
            Err(Error::internal("a completion gave no answer").with_operation(OPERATION))
        })
    }

    /// The plan PostgreSQL runs `request`'s claim with: `EXPLAIN (ANALYZE,
    /// BUFFERS, FORMAT JSON)` of the claim function's candidate select
    /// ([`Jobs::claim`] runs it inside the function, with the same
    /// `enable_sort = off`), in a transaction that is rolled back: no job
    /// changes state. For tests and diagnosis: a claim's plan should read
    /// the queued and running indexes in order and stop after the batch.
    pub async fn claim_plan(&self, request: &ClaimRequest) -> JobsResult<serde_json::Value> {
        request.validate()?;
        let mut tx = self.pool.begin_with(PLAN_BEGIN).await.map_err(map)?;
        let plan = sqlx::query_scalar(&format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
            row::candidates(&self.names.qt, "$1", "$2", "$3")
        ))
        .bind(&request.job_types)
        .bind(lifecycle::now())
        .bind(i64::try_from(request.batch).unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await
        .map_err(map);
        let _ = tx.rollback().await;
        plan
    }

    /// How many batches this instance's writer wrote, and how many calls
    /// they held: completions, and the claims that took the completions
    /// queued with them into their statement (see
    /// [`PgJobsConfig::complete_batch`]).
    pub fn completion_batches(&self) -> BatchStats {
        self.completions
            .as_ref()
            .map(Batcher::stats)
            .unwrap_or_default()
    }

    /// Loads one job and locks its row until the transaction ends.
    async fn lock(
        tx: &mut Transaction<'_, Postgres>,
        qt: &str,
        id: JobId,
    ) -> JobsResult<Option<Stored>> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {qt} WHERE id = $1 FOR UPDATE"
        ))
        .bind(id.0)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map)?;
        r.as_ref().map(decode).transpose()
    }

    /// Writes the changeable columns of `job` back, with lease `token`.
    async fn write(
        tx: &mut Transaction<'_, Postgres>,
        qt: &str,
        job: &Job,
        token: Option<&str>,
    ) -> JobsResult<()> {
        Self::write_many(tx, qt, &[(job, token)]).await
    }

    /// Writes the changeable columns of many jobs back (with their lease
    /// tokens) in one statement, and bumps each row's version.
    async fn write_many(
        tx: &mut Transaction<'_, Postgres>,
        qt: &str,
        jobs: &[(&Job, Option<&str>)],
    ) -> JobsResult<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let column = |f: &dyn Fn(&Job, Option<&str>) -> Option<String>| -> Vec<Option<String>> {
            jobs.iter().map(|(j, t)| f(j, *t)).collect()
        };
        let time = |f: &dyn Fn(&Job) -> Option<DateTime<Utc>>| -> Vec<Option<DateTime<Utc>>> {
            jobs.iter().map(|(j, _)| f(j)).collect()
        };
        sqlx::query(&format!(
            "UPDATE {qt} AS t SET state = u.state, run_at = u.run_at, attempts = u.attempts, \
             unique_slot = u.unique_slot, worker_id = u.worker_id, lease_token = u.lease_token, \
             lease_expires_at = u.lease_expires_at, started_at = u.started_at, \
             last_error = u.last_error, history = u.history, updated_at = u.updated_at, \
             finished_at = u.finished_at, version = t.version + 1 \
             FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::int8[], $5::text[], \
               $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[], $10::text[], \
               $11::jsonb[], $12::timestamptz[], $13::timestamptz[]) \
             AS u(id, state, run_at, attempts, unique_slot, worker_id, lease_token, \
               lease_expires_at, started_at, last_error, history, updated_at, finished_at) \
             WHERE t.id = u.id"
        ))
        .bind(jobs.iter().map(|(j, _)| j.id.0).collect::<Vec<_>>())
        .bind(column(&|j, _| Some(j.state.as_str().to_string())))
        .bind(time(&|j| Some(j.run_at)))
        .bind(
            jobs.iter()
                .map(|(j, _)| i64::from(j.attempts))
                .collect::<Vec<_>>(),
        )
        .bind(column(&|j, _| row::slot(j)))
        .bind(column(&|j, _| j.worker_id.clone()))
        .bind(column(&|_, t| t.map(str::to_string)))
        .bind(time(&|j| j.lease_expires_at))
        .bind(time(&|j| j.started_at))
        .bind(column(&|j, _| j.last_error.clone()))
        .bind(
            jobs.iter()
                .map(|(j, _)| row::history(j))
                .collect::<Vec<_>>(),
        )
        .bind(time(&|j| Some(j.updated_at)))
        .bind(time(&|j| j.finished_at))
        .execute(&mut **tx)
        .await
        .map_err(map)?;
        Ok(())
    }

    /// Applies `change` to the running job `lease` holds, its row locked.
    async fn with_lease<T>(
        &self,
        lease: &Lease,
        operation: &'static str,
        change: impl FnOnce(&mut Job, DateTime<Utc>) -> T,
    ) -> JobsResult<T> {
        let mut tx = self.pool.begin().await.map_err(map)?;
        let r = async {
            let Some(mut s) = Self::lock(&mut tx, &self.names.qt, lease.job_id).await? else {
                return Err(lifecycle::not_found(&lease.job_id, operation));
            };
            if s.job.state != JobState::Running || s.token.as_deref() != Some(lease.token.as_str())
            {
                return Err(lifecycle::lease_lost(&lease.job_id, operation));
            }
            let out = change(&mut s.job, lifecycle::now());
            let token = (s.job.state == JobState::Running).then_some(lease.token.as_str());
            Self::write(&mut tx, &self.names.qt, &s.job, token).await?;
            Ok(out)
        }
        .await;
        finish(tx, r).await
    }

    /// Applies a state change that needs no lease (cancel, retry-dead).
    async fn change(
        &self,
        id: JobId,
        operation: &'static str,
        change: impl FnOnce(&mut Job, DateTime<Utc>) -> JobsResult<()>,
    ) -> JobsResult<Job> {
        let mut tx = self.pool.begin().await.map_err(map)?;
        let r = async {
            let Some(mut s) = Self::lock(&mut tx, &self.names.qt, id).await? else {
                return Err(lifecycle::not_found(&id, operation));
            };
            change(&mut s.job, lifecycle::now())?;
            match Self::write(&mut tx, &self.names.qt, &s.job, None).await {
                Ok(()) => Ok(s.job),
                Err(e) if e.kind() == ErrorKind::Conflict => Err(Error::conflict(format!(
                    "job {id} cannot be queued again: another queued or running job holds its unique key"
                ))
                .with_operation(operation)
                .with_source(e)),
                Err(e) => Err(e),
            }
        }
        .await;
        finish(tx, r).await
    }

    /// Inserts jobs in one statement (all or none): one array per column,
    /// so the statement's text, and the plan the connection keeps for it,
    /// are the same whatever the number of jobs. `unique`: a job whose
    /// unique key a live job holds is skipped (`ON CONFLICT (unique_slot)
    /// WHERE unique_slot IS NOT NULL DO NOTHING`, which the partial unique
    /// index answers), not an error.
    async fn insert<'a, E>(&self, executor: E, jobs: &[Job], unique: bool) -> JobsResult<u64>
    where
        E: sqlx::Executor<'a, Database = Postgres>,
    {
        fn col<'j, T>(jobs: &'j [Job], f: impl Fn(&'j Job) -> T) -> Vec<T> {
            jobs.iter().map(f).collect()
        }
        let unique_sql;
        let sql = if unique {
            unique_sql = format!(
                "{} ON CONFLICT (unique_slot) WHERE unique_slot IS NOT NULL DO NOTHING",
                self.names.insert
            );
            &unique_sql
        } else {
            &self.names.insert
        };
        let done = sqlx::query(sql)
            .bind(col(jobs, |j| j.id.0))
            .bind(col(jobs, |j| j.job_type.as_str()))
            .bind(col(jobs, |j| &j.payload))
            .bind(col(jobs, |j| j.state.as_str()))
            .bind(col(jobs, |j| i64::from(j.priority)))
            .bind(col(jobs, |j| j.run_at))
            .bind(col(jobs, |j| i64::from(j.attempts)))
            .bind(col(jobs, |j| i64::from(j.max_attempts)))
            .bind(col(jobs, row::backoff))
            .bind(col(jobs, row::timeout_ms))
            .bind(col(jobs, |j| j.unique_key.as_deref()))
            .bind(col(jobs, |j| truststream_core_jobs::row::unique_slot(j)))
            .bind(col(jobs, |j| j.worker_id.as_deref()))
            .bind(col(jobs, |_| None::<&str>))
            .bind(col(jobs, |j| j.lease_expires_at))
            .bind(col(jobs, |j| j.started_at))
            .bind(col(jobs, |j| j.last_error.as_deref()))
            .bind(col(jobs, row::history))
            .bind(col(jobs, |j| j.created_at))
            .bind(col(jobs, |j| j.updated_at))
            .bind(col(jobs, |j| j.finished_at))
            .bind(col(jobs, |_| 0_i64))
            .execute(executor)
            .await
            .map_err(map)?;
        Ok(done.rows_affected())
    }

    async fn insert_one(&self, job: NewJob) -> JobsResult<Enqueued> {
        let id = job.id;
        let Some(key) = job.unique_key.clone() else {
            self.insert(&self.pool, &[job.into_job(lifecycle::now())], false)
                .await
                .map_err(|e| id_taken(e, id))?;
            return Ok(Enqueued::Created(id));
        };
        let job = job.into_job(lifecycle::now());
        // A key held by a job that finishes between the insert and the
        // look-up is free again: try a few times.
        for _ in 0..4 {
            let n = self
                .insert(&self.pool, std::slice::from_ref(&job), true)
                .await
                .map_err(|e| id_taken(e, id))?;
            if n == 1 {
                return Ok(Enqueued::Created(id));
            }
            let holder: Option<uuid::Uuid> = sqlx::query_scalar(&format!(
                "SELECT id FROM {} WHERE unique_slot = $1",
                self.names.qt
            ))
            .bind(&key)
            .fetch_optional(&self.pool)
            .await
            .map_err(map)?;
            if let Some(h) = holder {
                return Ok(Enqueued::Duplicate(JobId(h)));
            }
        }
        Err(
            Error::conflict("the unique key kept changing hands; try again")
                .with_operation("jobs.enqueue"),
        )
    }
}

impl PgJobs {
    /// Claims running jobs whose lease expired (`ids`, found by the claim
    /// function, which let go of their locks when its statement ended):
    /// each still expired and not locked by another claimer is started
    /// through the shared lifecycle, which records the lost attempt and
    /// declares a job with no attempts left dead instead.
    async fn claim_expired(
        &self,
        ids: &[uuid::Uuid],
        request: &ClaimRequest,
        now: DateTime<Utc>,
    ) -> JobsResult<Vec<ClaimedJob>> {
        let mut tx = self.pool.begin().await.map_err(map)?;
        let r = async {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM {} WHERE id = ANY($1) AND state = 'running' \
                 AND lease_expires_at <= $2 ORDER BY id FOR UPDATE SKIP LOCKED",
                self.names.qt
            ))
            .bind(ids)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(map)?;
            let mut started = Vec::with_capacity(rows.len());
            for r in &rows {
                let mut s = decode(r)?;
                let token = lifecycle::new_token();
                let outcome = s.job.start(now, request.lease, &request.worker_id);
                started.push((s.job, (outcome == Start::Started).then_some(token)));
            }
            let writes: Vec<(&Job, Option<&str>)> =
                started.iter().map(|(j, t)| (j, t.as_deref())).collect();
            Self::write_many(&mut tx, &self.names.qt, &writes).await?;
            Ok(started
                .into_iter()
                .filter_map(|(job, token)| {
                    Some(ClaimedJob {
                        lease: Lease {
                            job_id: job.id,
                            token: token?,
                            expires_at: job.lease_expires_at.unwrap_or(now),
                        },
                        job,
                    })
                })
                .collect())
        }
        .await;
        finish(tx, r).await
    }
}

/// Commits on success; on failure rolls back at once (a dropped sqlx
/// transaction rolls back only when its connection is next used, and keeps
/// its row locks until then, hiding the rows from `SKIP LOCKED` claims).
async fn finish<T>(tx: Transaction<'_, Postgres>, r: JobsResult<T>) -> JobsResult<T> {
    match r {
        Ok(v) => {
            tx.commit().await.map_err(map)?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Opens [`PgJobs::claim_plan`]'s transaction as the claim function runs
/// its statement: no plan may sort (see [`row::candidates`]).
const PLAN_BEGIN: &str = "BEGIN; SET LOCAL enable_sort = off; SET LOCAL jit = off";

/// The provider's quoted, qualified names, and the statements built from
/// them once.
struct Tables {
    /// The jobs table.
    qt: String,
    /// The run-time sample table.
    qs: String,
    /// The sequence that picks sample slots.
    seq: String,
    /// The claim function ([`row::claim_function_ddl`]).
    claim_fn: String,
    /// The function that completes and claims in one statement
    /// ([`complete_claim_ddl`]).
    complete_claim_fn: String,
    /// Calls it (`$1` job ids, `$2` tokens, `$3` the slot sequence, then
    /// the claim's `$4` job types, `$5` now, `$6` batch, `$7` lease end,
    /// `$8` worker).
    complete_claim: String,
    /// Calls the claim function (`$1` job types, `$2` now, `$3` batch, `$4`
    /// lease end, `$5` worker).
    claim: String,
    /// Completes leases ([`complete_sql`]).
    complete: String,
    /// Inserts jobs, one array per column (`$1`.. in [`COLUMNS`] order).
    insert: String,
}

impl Tables {
    fn new(
        qt: String,
        qs: String,
        seq: String,
        claim_fn: String,
        complete_claim_fn: String,
    ) -> Tables {
        let claim = format!("SELECT * FROM {claim_fn}($1, $2, $3, $4, $5)");
        let complete_claim =
            format!("SELECT * FROM {complete_claim_fn}($1, $2, $3, $4, $5, $6, $7, $8)");
        let complete = complete_sql(&qt, &qs);
        let insert = format!(
            "INSERT INTO {qt} ({COLUMNS}) SELECT * FROM UNNEST($1::uuid[], $2::text[], \
             $3::jsonb[], $4::text[], $5::int8[], $6::timestamptz[], $7::int8[], $8::int8[], \
             $9::jsonb[], $10::int8[], $11::text[], $12::text[], $13::text[], $14::text[], \
             $15::timestamptz[], $16::timestamptz[], $17::text[], $18::jsonb[], \
             $19::timestamptz[], $20::timestamptz[], $21::timestamptz[], $22::int8[])"
        );
        Tables {
            qt,
            qs,
            seq,
            claim_fn,
            complete_claim_fn,
            complete_claim,
            claim,
            complete,
            insert,
        }
    }
}

/// An attempt of `Job::complete`'s history, as JSON in the shape
/// `truststream_core_jobs::Attempt` serializes to, built from the running
/// row `j` (`finished` is the SQL expression of the end time).
fn attempt_sql(finished: &str) -> String {
    let time =
        |t: &str| format!("to_char({t} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    format!(
        "jsonb_build_array(jsonb_build_object('attempt', j.attempts, \
           'worker_id', coalesce(j.worker_id, ''), \
           'started_at', {}, 'finished_at', {}, 'error', NULL))",
        time(&format!("coalesce(j.started_at, {finished})")),
        time(finished)
    )
}

/// Completes leases in one statement (`$1` job ids, `$2` their lease
/// tokens, `$3` now, `$4` the slot sequence), as `Job::complete` does: each
/// running job whose token matches becomes completed with its attempt
/// appended to its history (the oldest dropped past
/// `truststream_core_jobs::MAX_HISTORY`), its lease and unique key let go;
/// the run time of each goes into the sample table (a slot of the cycling
/// sequence each, replacing that slot's older sample of the type; one
/// statement may draw a slot twice when the sequence wraps, which `ON
/// CONFLICT DO UPDATE` refuses within a statement, so one of the two is
/// kept). Returns each completed job's id with the token that completed
/// it. Rows are locked in the order of `$1`
/// (callers sort it), sample rows in slot order, so concurrent batches
/// take their locks in the same order.
fn complete_sql(qt: &str, qs: &str) -> String {
    format!(
        "{} SELECT id, token FROM done",
        completion_ctes(qt, qs, ["$1", "$2", "$3", "$4"])
    )
}

/// The `WITH` part of [`complete_sql`] (its CTE `done` returns `id`,
/// `token`, `job_type`, `started_at`), over the SQL expressions `[ids,
/// tokens, now, sequence name]`.
fn completion_ctes(qt: &str, qs: &str, [ids, tokens, now, seq]: [&str; 4]) -> String {
    let max = truststream_core_jobs::MAX_HISTORY;
    let entry = attempt_sql(now);
    format!(
        "WITH l AS (SELECT * FROM UNNEST({ids}::uuid[], {tokens}::text[]) AS l(id, token)), \
         done AS ( \
           UPDATE {qt} AS j SET state = 'completed', finished_at = {now}, updated_at = {now}, \
             worker_id = NULL, lease_token = NULL, lease_expires_at = NULL, \
             unique_slot = NULL, version = j.version + 1, \
             history = CASE WHEN jsonb_array_length(j.history) < {max} \
               THEN j.history || {entry} \
               ELSE (SELECT jsonb_agg(x.e ORDER BY x.o) \
                     FROM jsonb_array_elements(j.history || {entry}) WITH ORDINALITY AS x(e, o) \
                     WHERE x.o > jsonb_array_length(j.history) + 1 - {max}) END \
           FROM l WHERE j.id = l.id AND j.state = 'running' AND j.lease_token = l.token \
           RETURNING j.id, l.token, j.job_type, j.started_at), \
         sampled AS ( \
           INSERT INTO {qs} (job_type, slot, run_us, finished_at) \
           SELECT DISTINCT ON (s.job_type, s.slot) s.job_type, s.slot, s.run_us, {now} \
           FROM (SELECT d.job_type, nextval({seq}::text::regclass)::int AS slot, \
                   GREATEST(0, floor(EXTRACT(EPOCH FROM ({now} - d.started_at)) * 1000000))::int8 \
                     AS run_us \
                 FROM done AS d WHERE d.started_at IS NOT NULL) AS s \
           ORDER BY s.job_type, s.slot \
           ON CONFLICT (job_type, slot) DO UPDATE \
           SET run_us = EXCLUDED.run_us, finished_at = EXCLUDED.finished_at)"
    )
}

/// The function `func` that completes leases and claims in one statement
/// and one commit (one WAL flush where there were two): [`complete_sql`]'s
/// update over `p_ids`/`p_tokens` (at `p_now`, sample slots from `p_seq`),
/// whose completed jobs it returns first as rows that carry only `id`,
/// state `completed` and the token that completed them in `lease_token`
/// (every other column NULL: the caller needs no more, and formatting a
/// finished job's payload and history for the wire cost the server as
/// much as the update); then the rows of the claim function `claim_fn`
/// called with the claim's parameters (state `running`: started by this
/// claim, or expired candidates as they were). The update runs first and
/// the claim after it, as two statements, so the claim sees the completed
/// rows as completed.
fn complete_claim_ddl(qt: &str, qs: &str, func: &str, claim_fn: &str) -> String {
    let ctes = completion_ctes(qt, qs, ["p_ids", "p_tokens", "p_now", "p_seq"]);
    format!(
        "CREATE OR REPLACE FUNCTION {func}(p_ids uuid[], p_tokens text[], p_seq text, \
           p_types text[], p_now timestamptz, p_batch bigint, p_until timestamptz, \
           p_worker text) \
         RETURNS SETOF {qt} LANGUAGE plpgsql AS $complete_claim$ \
         DECLARE v_done record; v_row {qt}; \
         BEGIN \
           IF cardinality(p_ids) > 0 THEN \
             v_row.state := 'completed'; \
             FOR v_done IN {ctes} SELECT id, token FROM done LOOP \
               v_row.id := v_done.id; v_row.lease_token := v_done.token; RETURN NEXT v_row; \
             END LOOP; \
           END IF; \
           RETURN QUERY SELECT * FROM {claim_fn}(p_types, p_now, p_batch, p_until, p_worker); \
         END $complete_claim$"
    )
}

/// Completes `leases` on `conn` (one statement; a second, to tell a lost
/// lease from a missing job, only when some did not complete). Each lease
/// gets its own answer, as [`Jobs::complete`] would have given it alone: a
/// lease no longer held is `Conflict` and changes nothing, a missing job
/// `NotFound`, the same lease twice completes once (the second is
/// `Conflict`), and of two leases of one job only the one whose token the
/// job held is answered `Ok`. A failed statement is the `Err`.
async fn complete_leases(
    conn: &mut PgConnection,
    t: &Tables,
    leases: &[Lease],
    operation: &'static str,
) -> JobsResult<Vec<JobsResult<()>>> {
    let (ids, tokens) = lease_binds(leases);
    let done: Vec<(uuid::Uuid, String)> = sqlx::query_as(&t.complete)
        .bind(&ids)
        .bind(&tokens)
        .bind(lifecycle::now())
        .bind(&t.seq)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?;
    answer_leases(conn, t, leases, done, operation).await
}

/// The completion statement's job ids and tokens for `leases`: sorted by
/// id (rows are locked in this order) without repeats.
fn lease_binds(leases: &[Lease]) -> (Vec<uuid::Uuid>, Vec<&str>) {
    let mut order: Vec<(uuid::Uuid, &str)> = leases
        .iter()
        .map(|l| (l.job_id.0, l.token.as_str()))
        .collect();
    order.sort_unstable();
    order.dedup();
    order.into_iter().unzip()
}

/// Each lease's answer, given the `(id, token)` pairs the completion
/// statement completed ([`complete_leases`]).
async fn answer_leases(
    conn: &mut PgConnection,
    t: &Tables,
    leases: &[Lease],
    done: Vec<(uuid::Uuid, String)>,
    operation: &'static str,
) -> JobsResult<Vec<JobsResult<()>>> {
    let completed: std::collections::HashSet<uuid::Uuid> = done.iter().map(|(id, _)| *id).collect();
    // Answered by the lease (id and token) that completed its job: a stale
    // lease of the same job in the same batch is `Conflict`.
    let mut done: HashMap<(uuid::Uuid, String), bool> =
        done.into_iter().map(|k| (k, false)).collect();
    let missed: Vec<uuid::Uuid> = leases
        .iter()
        .map(|l| l.job_id.0)
        .filter(|id| !completed.contains(id))
        .collect();
    let existing: std::collections::HashSet<uuid::Uuid> = if missed.is_empty() {
        Default::default()
    } else {
        sqlx::query_scalar::<_, uuid::Uuid>(&format!("SELECT id FROM {} WHERE id = ANY($1)", t.qt))
            .bind(&missed)
            .fetch_all(&mut *conn)
            .await
            .map_err(map)?
            .into_iter()
            .collect()
    };
    Ok(leases
        .iter()
        .map(|l| match done.get_mut(&(l.job_id.0, l.token.clone())) {
            Some(answered) if !*answered => {
                *answered = true;
                Ok(())
            }
            Some(_) => Err(lifecycle::lease_lost(&l.job_id, operation)),
            None if completed.contains(&l.job_id.0) || existing.contains(&l.job_id.0) => {
                Err(lifecycle::lease_lost(&l.job_id, operation))
            }
            None => Err(lifecycle::not_found(&l.job_id, operation)),
        })
        .collect())
}

/// Batches the writer has in flight at once: one may gather while one is
/// written, and is written beside it (a claim does not wait for a
/// completion batch's commit, nor the other way round).
const WRITES_AT_ONCE: usize = 2;

/// A call queued for the provider's writer ([`write_batch`]).
enum Write {
    Complete(Lease),
    Claim(ClaimRequest),
}

/// Its answer.
enum Written {
    Completed,
    /// The claim function's rows, and the claim time they were claimed at.
    Claimed(Vec<row::Stored>, DateTime<Utc>),
}

/// The writer's `VACUUM` of the jobs table every `every` jobs it claimed
/// or completed ([`PgJobsConfig::vacuum_every`]).
struct Vacuum {
    every: u64,
    jobs: std::sync::atomic::AtomicU64,
    /// The VACUUM running, if any (one at a time).
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Vacuum {
    fn new(every: u64) -> Self {
        Vacuum {
            every,
            jobs: std::sync::atomic::AtomicU64::new(0),
            task: std::sync::Mutex::new(None),
        }
    }

    /// Stops the VACUUM in progress, if any, and waits until its
    /// connection is dropped.
    async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Counts `jobs` more; starts a `VACUUM` of `qt` in the background
    /// when they cross a multiple of `every` and none of this instance's
    /// is running.
    fn count(&self, jobs: u64, pool: &PgPool, qt: &str) {
        use std::sync::atomic::Ordering;
        if self.every == 0 || jobs == 0 {
            return;
        }
        let before = self.jobs.fetch_add(jobs, Ordering::Relaxed);
        if (before + jobs) / self.every == before / self.every {
            return;
        }
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let pool = pool.clone();
        let statement = format!("VACUUM (SKIP_LOCKED) {qt}");
        *task = Some(tokio::spawn(async move {
            if let Err(e) = sqlx::query(&statement).execute(&pool).await {
                tracing::warn!(error = %e, "jobs-postgres: VACUUM of the jobs table failed");
            }
        }));
    }
}

/// Claims do not wait for the linger: a worker waits on them.
fn is_claim(w: &Write) -> bool {
    matches!(w, Write::Claim(_))
}

/// Binds a claim's parameters to `query` after the ones it already has:
/// job types, `now`, batch, lease end, worker (the claim function's
/// `p_types .. p_worker`).
fn bind_claim<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    request: &'q ClaimRequest,
    now: DateTime<Utc>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&request.job_types)
        .bind(now)
        .bind(i64::try_from(request.batch).unwrap_or(i64::MAX))
        .bind(lifecycle::add(now, request.lease))
        .bind(&request.worker_id)
}

/// One copy of `e` for a call of `operation` ([`fan_out`] of one).
fn copy_error(e: &Error, operation: &'static str) -> Error {
    fan_out::<()>(e, 1, operation)
        .pop()
        .and_then(Result::err)
        .unwrap_or_else(|| Error::internal(e.message().to_owned()).with_operation(operation))
}

/// The rows of the claim function for `request` at `now` ([`row::decode`]).
async fn claim_rows(
    conn: &mut PgConnection,
    t: &Tables,
    request: &ClaimRequest,
    now: DateTime<Utc>,
) -> JobsResult<Vec<row::Stored>> {
    bind_claim(sqlx::query(&t.claim), request, now)
        .fetch_all(&mut *conn)
        .await
        .map_err(map)?
        .iter()
        .map(row::decode)
        .collect()
}

/// Writes a batch of the provider's writer: completions alone in one
/// statement ([`complete_many`]); with a claim, the completions and the
/// first claim in one statement and one commit ([`complete_claim_ddl`]),
/// any further claim of the batch after it on its own. A failed statement
/// fails the calls it carried with its error's kind.
async fn write_batch(pool: &PgPool, t: &Tables, items: Vec<Write>) -> Vec<JobsResult<Written>> {
    const COMPLETE: &str = "jobs.complete";
    const CLAIM: &str = "jobs.claim";
    let failed = |e: &Error, operation| Err(copy_error(e, operation));
    let n = items.len();
    let mut slots = Vec::new();
    let mut leases = Vec::new();
    let mut claims = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Write::Complete(lease) => {
                slots.push(i);
                leases.push(lease);
            }
            Write::Claim(request) => claims.push((i, request)),
        }
    }
    if claims.is_empty() {
        return complete_many(pool, t, leases)
            .await
            .into_iter()
            .map(|r| r.map(|()| Written::Completed))
            .collect();
    }
    let mut answers: Vec<Option<JobsResult<Written>>> = (0..n).map(|_| None).collect();
    match pool.acquire().await.map_err(map) {
        Err(e) => {
            for &i in &slots {
                answers[i] = Some(failed(&e, COMPLETE));
            }
            for (i, _) in &claims {
                answers[*i] = Some(failed(&e, CLAIM));
            }
        }
        Ok(mut conn) => {
            // The first claim, with the claims of the batch asking for the
            // same (the same worker's claims in flight), as one claim of
            // their total: each gets its share of the rows, in order.
            let mut claims = claims.into_iter();
            let mut others = Vec::new();
            if let Some((at, mut request)) = claims.next() {
                let mut shares = vec![(at, request.batch)];
                for (i, r) in claims.by_ref() {
                    if r.job_types == request.job_types
                        && r.worker_id == request.worker_id
                        && r.lease == request.lease
                    {
                        shares.push((i, r.batch));
                        request.batch = request.batch.saturating_add(r.batch);
                    } else {
                        others.push((i, r));
                    }
                }
                let now = lifecycle::now();
                let (completions, claimed) =
                    complete_and_claim(&mut conn, t, &leases, &request, now).await;
                for (&i, r) in slots.iter().zip(completions) {
                    answers[i] = Some(r.map(|()| Written::Completed));
                }
                match claimed {
                    Ok(rows) => {
                        let mut rows = rows.into_iter();
                        for (i, share) in shares {
                            let mine: Vec<row::Stored> = rows.by_ref().take(share).collect();
                            answers[i] = Some(Ok(Written::Claimed(mine, now)));
                        }
                    }
                    Err(e) => {
                        for (i, _) in shares {
                            answers[i] = Some(failed(&e, CLAIM));
                        }
                    }
                }
            }
            for (at, request) in others {
                let now = lifecycle::now();
                answers[at] = Some(
                    claim_rows(&mut conn, t, &request, now)
                        .await
                        .map(|rows| Written::Claimed(rows, now)),
                );
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(Error::internal("a queued write got no answer"))))
        .collect()
}

/// Completes `leases` and claims for `request` at `now` in one statement
/// ([`complete_claim_ddl`]): each lease's answer as [`complete_leases`]
/// gives it, and the claim's rows. A failed statement fails all of them.
async fn complete_and_claim(
    conn: &mut PgConnection,
    t: &Tables,
    leases: &[Lease],
    request: &ClaimRequest,
    now: DateTime<Utc>,
) -> (Vec<JobsResult<()>>, JobsResult<Vec<row::Stored>>) {
    const COMPLETE: &str = "jobs.complete";
    let (ids, tokens) = lease_binds(leases);
    let query = sqlx::query(&t.complete_claim)
        .bind(&ids)
        .bind(&tokens)
        .bind(&t.seq);
    let rows = bind_claim(query, request, now)
        .fetch_all(&mut *conn)
        .await
        .map_err(map);
    // Completed rows first (state `completed`, the completing token in
    // `lease_token`), then the claim function's (state `running`). A row
    // that cannot be read leaves no way to tell which completions were
    // written: every call of the statement gets the error (a completion's
    // job may be completed already; a claimed job runs again after its
    // lease, as after any claim whose answer was lost).
    let read = rows.and_then(|rows| {
        let mut done = Vec::new();
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let state: &str = r.try_get("state").map_err(map)?;
            if state == JobState::Completed.as_str() {
                done.push((
                    r.try_get("id").map_err(map)?,
                    r.try_get("lease_token").map_err(map)?,
                ));
            } else {
                claimed.push(row::decode(r)?);
            }
        }
        Ok((done, claimed))
    });
    let (done, claimed) = match read {
        Ok(read) => read,
        Err(e) => {
            let claim = Err(copy_error(&e, "jobs.claim"));
            return (fan_out(&e, leases.len(), COMPLETE), claim);
        }
    };
    let claimed: JobsResult<Vec<row::Stored>> = Ok(claimed);
    let completions = answer_leases(conn, t, leases, done, COMPLETE)
        .await
        .unwrap_or_else(|e| fan_out(&e, leases.len(), COMPLETE));
    (completions, claimed)
}

/// Completes a batch of leases in one statement, outside any transaction
/// ([`complete_leases`]); a failed statement fails every call of the batch
/// with its error's kind.
async fn complete_many(pool: &PgPool, t: &Tables, leases: Vec<Lease>) -> Vec<JobsResult<()>> {
    const OPERATION: &str = "jobs.complete";
    let written = async {
        let mut conn = pool.acquire().await.map_err(map)?;
        complete_leases(&mut conn, t, &leases, OPERATION).await
    }
    .await;
    written.unwrap_or_else(|e| fan_out(&e, leases.len(), OPERATION))
}

fn id_taken(e: Error, id: JobId) -> Error {
    if e.kind() == ErrorKind::Conflict {
        Error::conflict(format!("a job with id {id} exists"))
            .with_operation("jobs.enqueue")
            .with_source(e)
    } else {
        e
    }
}

#[async_trait]
impl Jobs for PgJobs {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> JobsCapabilities {
        let mut c = JobsCapabilities::none();
        c.transactional_enqueue = true;
        c.unique_keys = true;
        c.shared = true;
        c.durable = true;
        c.local_wakeups = true;
        c.cross_process_wakeups = true;
        c
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        if let Some(missing) = truststream_core_db::missing_tables_health(
            "jobs-postgres",
            &self.missing_tables,
            start.elapsed(),
        ) {
            return missing;
        }
        match sqlx::query(&format!("SELECT id FROM {} LIMIT 1", self.names.qt))
            .execute(&self.pool)
            .await
        {
            Ok(_) => Health::healthy(start.elapsed()),
            Err(e) => Health::unhealthy(start.elapsed(), map(e).to_string()),
        }
    }

    /// Writes the completions waiting in the batch (their callers get
    /// their answers), stops the `LISTEN` task and closes the pool; later
    /// calls fail with `Unavailable` ("the jobs provider was closed").
    async fn close(&self) -> JobsResult<()> {
        if let Some(completions) = &self.completions {
            completions.close().await;
        }
        // A VACUUM in progress would hold its connection, and the pool's
        // close below would wait for it to finish: dropping it closes the
        // connection (the server finishes or abandons it on its own).
        self.vacuum.stop().await;
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = listener {
            task.abort();
            // Its connection is closed once the task is gone.
            let _ = task.await;
        }
        // Connections dropped just now (the last batch's, the listener's)
        // go back to the pool through tasks sqlx spawns: wait briefly until
        // they are back, so `close` finds them idle and closes them.
        let until = Instant::now() + Duration::from_secs(2);
        while self.pool.num_idle() < self.pool.size() as usize && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.pool.close().await;
        // A connection returned while `close` waited for the last checked-out
        // one (one still in use above) is left idle by sqlx; a second `close`
        // closes what is idle.
        self.pool.close().await;
        // Workers waiting for work look again (and find the pool closed).
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
            let out: Vec<Enqueued> = jobs.iter().map(|j| Enqueued::Created(j.id)).collect();
            let jobs: Vec<Job> = jobs.into_iter().map(|j| j.into_job(now)).collect();
            let mut tx = self.pool.begin().await.map_err(map)?;
            let r = async {
                for chunk in jobs.chunks(INSERT_BATCH) {
                    self.insert(&mut *tx, chunk, false).await.map_err(|e| {
                        if e.kind() == ErrorKind::Conflict {
                            Error::conflict(
                                "a job id in the batch exists already; nothing was stored",
                            )
                            .with_operation("jobs.enqueue_many")
                            .with_source(e)
                        } else {
                            e
                        }
                    })?;
                }
                Ok(())
            }
            .await;
            finish(tx, r).await?;
            out
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
        let (rows, now) = match &self.completions {
            Some(writer) => match writer.submit(Write::Claim(request.clone())).await {
                Ok(Written::Claimed(rows, now)) => (rows, now),
                Ok(Written::Completed) => {
                    return Err(
                        Error::internal("the writer answered a claim as a completion")
                            .with_operation("jobs.claim"),
                    )
                }
                Err(e) => return Err(e.with_operation("jobs.claim")),
            },
            None => {
                let now = lifecycle::now();
                let mut conn = self.pool.acquire().await.map_err(map)?;
                (claim_rows(&mut conn, &self.names, request, now).await?, now)
            }
        };
        let until = lifecycle::add(now, request.lease);
        let mut claimed = Vec::with_capacity(rows.len());
        let mut expired = Vec::new();
        for s in rows {
            // Started by this claim: leased until `until`, after `now`; a
            // candidate whose lease had expired comes back as it was.
            if s.job.lease_expires_at > Some(now) {
                let token = s.token.ok_or_else(|| {
                    Error::internal("the claim function returned a job without a lease token")
                        .with_operation("jobs.claim")
                })?;
                claimed.push(ClaimedJob {
                    lease: Lease {
                        job_id: s.job.id,
                        token,
                        expires_at: until,
                    },
                    job: s.job,
                });
            } else {
                expired.push(s.job.id.0);
            }
        }
        if !expired.is_empty() {
            claimed.extend(self.claim_expired(&expired, request, now).await?);
        }
        claimed.sort_by(|a, b| {
            (std::cmp::Reverse(a.job.priority), a.job.run_at, a.job.id).cmp(&(
                std::cmp::Reverse(b.job.priority),
                b.job.run_at,
                b.job.id,
            ))
        });
        Ok(claimed)
    }

    async fn extend_lease(&self, lease: &Lease, by: Duration) -> JobsResult<DateTime<Utc>> {
        self.with_lease(lease, "jobs.extend_lease", |job, now| job.extend(now, by))
            .await
    }

    async fn complete(&self, lease: &Lease) -> JobsResult<()> {
        match &self.completions {
            Some(batch) => match batch.submit(Write::Complete(lease.clone())).await? {
                Written::Completed => Ok(()),
                Written::Claimed(..) => Err(Error::internal(
                    "the writer answered a completion as a claim",
                )
                .with_operation("jobs.complete")),
            },
            None => complete_many(&self.pool, &self.names, vec![lease.clone()])
                .await
                .pop()
                .unwrap_or_else(|| Err(Error::internal("a completion got no answer"))),
        }
    }

    async fn fail(&self, lease: &Lease, error: &JobError) -> JobsResult<FailOutcome> {
        let random = rand::random::<f64>();
        let out = self
            .with_lease(lease, "jobs.fail", |job, now| job.fail(now, error, random))
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
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {} WHERE id = $1",
            self.names.qt
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map)?;
        Ok(r.as_ref().map(decode).transpose()?.map(|s| s.job))
    }

    async fn list(&self, query: &JobQuery) -> JobsResult<Vec<Job>> {
        query.validate()?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {} \
             WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR job_type = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
            self.names.qt
        ))
        .bind(query.state.map(JobState::as_str))
        .bind(query.job_type.as_deref())
        .bind(i64::from(query.effective_limit()?))
        .bind(i64_of(query.offset))
        .fetch_all(&self.pool)
        .await
        .map_err(map)?;
        rows.iter().map(|r| decode(r).map(|s| s.job)).collect()
    }

    async fn stats(&self) -> JobsResult<JobStats> {
        let now = lifecycle::now();
        let rows = sqlx::query(&format!(
            "SELECT job_type, state, count(*) AS n FROM {} GROUP BY job_type, state \
             ORDER BY job_type, state",
            self.names.qt
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(map)?;
        let mut counts = Vec::with_capacity(rows.len());
        for r in &rows {
            let state: String = r.try_get("state").map_err(map)?;
            counts.push(StateCount {
                job_type: r.try_get("job_type").map_err(map)?,
                state: state.parse().map_err(|_| {
                    Error::internal(format!("the jobs table holds an unknown state {state:?}"))
                })?,
                count: u64::try_from(r.try_get::<i64, _>("n").map_err(map)?).unwrap_or(0),
            });
        }
        let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(&format!(
            "SELECT min(run_at) FROM {} WHERE state = 'queued' AND run_at <= $1",
            self.names.qt
        ))
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(map)?;
        // Percentiles over the bounded sample table (at most
        // RUN_TIME_SAMPLE rows per type): nearest rank, as RunTimes computes
        // them (percentile_disc answers the first sample whose cumulative
        // share reaches p).
        let runs = sqlx::query(&format!(
            "SELECT job_type, count(*) AS n, \
               percentile_disc(0.5) WITHIN GROUP (ORDER BY run_us) AS p50, \
               percentile_disc(0.95) WITHIN GROUP (ORDER BY run_us) AS p95, \
               percentile_disc(0.99) WITHIN GROUP (ORDER BY run_us) AS p99, \
               max(run_us) AS mx \
             FROM {} GROUP BY job_type ORDER BY job_type",
            self.names.qs
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(map)?;
        let mut run_times = Vec::with_capacity(runs.len());
        for r in &runs {
            let us = |c: &str| -> JobsResult<Duration> {
                let v: i64 = r.try_get(c).map_err(map)?;
                Ok(Duration::from_micros(u64::try_from(v).unwrap_or(0)))
            };
            run_times.push(RunTimes {
                job_type: r.try_get("job_type").map_err(map)?,
                sampled: u64::try_from(r.try_get::<i64, _>("n").map_err(map)?).unwrap_or(0),
                p50: us("p50")?,
                p95: us("p95")?,
                p99: us("p99")?,
                max: us("mx")?,
            });
        }
        Ok(JobStats {
            counts,
            oldest_queued_age: oldest.map(|t| (now - t).to_std().unwrap_or_default()),
            run_times,
        })
    }

    async fn purge_finished(&self, before: DateTime<Utc>) -> JobsResult<u64> {
        // In batches, so a large purge holds no long lock and bloats no
        // single transaction.
        let statement = format!(
            "DELETE FROM {qt} WHERE id IN (SELECT id FROM {qt} \
             WHERE state IN ('completed', 'cancelled') AND finished_at < $1 LIMIT $2)",
            qt = self.names.qt
        );
        let mut total = 0;
        loop {
            let n = sqlx::query(&statement)
                .bind(before)
                .bind(PURGE_BATCH)
                .execute(&self.pool)
                .await
                .map_err(map)?
                .rows_affected();
            total += n;
            if n < PURGE_BATCH as u64 {
                break;
            }
        }
        // Run times of purged jobs go with them.
        sqlx::query(&format!(
            "DELETE FROM {} WHERE finished_at < $1",
            self.names.qs
        ))
        .bind(before)
        .execute(&self.pool)
        .await
        .map_err(map)?;
        Ok(total)
    }

    async fn wait_for_work(&self, max_wait: Duration) {
        self.wake.wait(max_wait).await;
    }
}

/// Registers the provider as `"postgres"`. It connects with its own
/// `url` (the registry's database dependency is not used); give it the
/// `schema` of the db-postgres database that runs transactional enqueues.
pub fn register(reg: &mut JobsRegistry) {
    reg.register_with_options(TYPE_NAME, |cfg, _db, options| async move {
        let cfg: PgJobsConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        Ok(Arc::new(PgJobs::open_with(cfg, options).await?) as Arc<dyn Jobs>)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_and_index_names_fit_identifiers() {
        let long = "t".repeat(63);
        assert!(channel(Some(&long), &long).len() <= 63);
        assert_eq!(channel(None, "jobs"), "tsjobs_public_jobs");
        assert_eq!(row::index_name(&long, "claim").len(), 63);
        assert_eq!(row::index_name("jobs", "claim"), "jobs_claim");
    }

    #[test]
    fn config_debug_hides_the_url() {
        let c = PgJobsConfig::new("postgres://u:hunter2@h/db");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
