//! The jobs table: its DDL, and sqlx rows to jobs (the core-db row for
//! `enqueue_operation` is `Job::to_row`, shared with jobs-db).

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row as _;
use truststream_core::Error;
use truststream_core_jobs::{Job, JobId, JobsResult};

/// Every column, in the order [`decode`] reads and inserts write them.
pub(crate) const COLUMNS: &str = "id, job_type, payload, state, priority, run_at, attempts, \
     max_attempts, backoff, timeout_ms, unique_key, unique_slot, worker_id, lease_token, \
     lease_expires_at, started_at, last_error, history, created_at, updated_at, finished_at, \
     version";

/// The statements that create the table, its indexes and its wake-up
/// trigger when missing. `qt` is the quoted, qualified table name; `name`
/// the bare table name (index names are made from it); `func` the quoted,
/// qualified notify function; `channel` the NOTIFY channel.
///
/// The layout is jobs-db's (`truststream_jobs`), so either provider can
/// read the other's table. `unique_slot` holds the unique key while the job
/// is queued or running and is NULL otherwise: a unique index on the
/// non-NULL values de-duplicates live jobs only, and a job without a key
/// (most of them) puts no entry in it, so the claim's and the completion's
/// updates write one index entry fewer each ([`full_unique_constraints_sql`]
/// moves tables made before this to the partial index).
pub(crate) fn ddl(qt: &str, name: &str, func: &str) -> Vec<String> {
    let idx = |suffix: &str| truststream_core_db::ident::quote(&index_name(name, suffix));
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {qt} (
                id UUID PRIMARY KEY,
                job_type TEXT NOT NULL,
                payload JSONB,
                state TEXT NOT NULL,
                priority BIGINT NOT NULL,
                run_at TIMESTAMPTZ NOT NULL,
                attempts BIGINT NOT NULL,
                max_attempts BIGINT NOT NULL,
                backoff JSONB NOT NULL,
                timeout_ms BIGINT,
                unique_key TEXT,
                unique_slot TEXT,
                worker_id TEXT,
                lease_token TEXT,
                lease_expires_at TIMESTAMPTZ,
                started_at TIMESTAMPTZ,
                last_error TEXT,
                history JSONB NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL,
                finished_at TIMESTAMPTZ,
                version BIGINT NOT NULL
            )"
        ),
        format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {qt} (unique_slot) \
             WHERE unique_slot IS NOT NULL",
            idx("live_unique")
        ),
        // The queued rows only, in claim order: running and finished jobs
        // never enter it, so a claim's ordered scan starts at the first
        // queued row instead of walking past every running one.
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {qt} (priority DESC, run_at, id) \
             WHERE state = 'queued'",
            idx("queued")
        ),
        // The running rows by lease end: a claim finds the expired leases
        // at its head (usually none: one page).
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {qt} (lease_expires_at) \
             WHERE state = 'running'",
            idx("running")
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {qt} (finished_at) \
             WHERE state IN ('completed', 'cancelled')",
            idx("finished")
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {qt} (created_at, id)",
            idx("created")
        ),
        format!(
            "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_notify(TG_ARGV[0], ''); RETURN NULL; END $$"
        ),
    ]
}

/// Names the unique constraints of table `$1` (a regclass text) that
/// cover `unique_slot` alone: the full unique constraint of tables made by
/// earlier versions (and by jobs-db's `TableSchema`), which indexes every
/// job's NULL. [`ddl`]'s partial index enforces the same rule, so the
/// provider drops these once it exists.
pub(crate) fn full_unique_constraints_sql() -> &'static str {
    "SELECT c.conname::text FROM pg_constraint AS c \
     JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attname = 'unique_slot' \
     WHERE c.conrelid = $1::regclass AND c.contype = 'u' AND c.conkey = ARRAY[a.attnum]"
}

/// The index of tables made before the queued and running indexes: one
/// index of queued and running rows, which every claim walked from its
/// head, past every running row. The provider drops it once the two exist.
pub(crate) const OLD_CLAIM_INDEX: &str = "claim";

/// The claim's candidates: claimable rows in claim order (priority, then
/// run time, then id), rows another claimer holds locked skipped, not
/// waited for. `types`, `now` and `batch` are the SQL expressions of the
/// job types, the claim time and the batch size (`$1`.. in a statement, a
/// function's parameters in its body).
///
/// Two ordered index scans, each stopped by its `LIMIT`: the running rows
/// whose lease expired (the running index, by lease end) and the queued
/// rows due (the queued index, in claim order); the two are merged in claim
/// order and cut to the batch (a sort of at most twice the batch; the
/// queued rows the cut leaves out stay locked, untouched, until the
/// statement's transaction ends). Each scan reads a few pages however deep
/// the queue and however many jobs run; but on a table without statistics (never
/// analyzed: a new table, autovacuum off or not yet run after a burst)
/// PostgreSQL estimates one claimable row and prefers a bitmap scan of
/// every claimable row plus a sort, whose cost grows with the queue (20,000
/// queued rows: 511 pages and 13 ms per claim, against 19 pages and 0.1 ms
/// through the index). So this select is only ever planned with
/// `enable_sort = off`: the claim function is declared with it, and
/// `PgJobs::claim_plan` sets it for its transaction.
pub(crate) fn candidates(qt: &str, types: &str, now: &str, batch: &str) -> String {
    format!(
        "WITH e AS (SELECT j.id, j.state, j.priority, j.run_at FROM {qt} AS j \
           WHERE j.state = 'running' AND j.lease_expires_at <= {now} \
             AND j.job_type = ANY({types}) \
           ORDER BY j.lease_expires_at LIMIT {batch} FOR UPDATE SKIP LOCKED), \
         q AS (SELECT j.id, j.state, j.priority, j.run_at FROM {qt} AS j \
           WHERE j.state = 'queued' AND j.run_at <= {now} AND j.job_type = ANY({types}) \
           ORDER BY j.priority DESC, j.run_at, j.id LIMIT {batch} FOR UPDATE SKIP LOCKED) \
         SELECT u.id, u.state FROM (SELECT * FROM e UNION ALL SELECT * FROM q) AS u \
         ORDER BY u.priority DESC, u.run_at, u.id LIMIT {batch}"
    )
}

/// The claim function `func` of the table `qt`: one statement, one round
/// trip, no transaction of its own. It locks the candidates
/// ([`candidates`]), starts the queued ones as `Job::start` does (running,
/// one more attempt, the worker, a fresh random lease token, started now,
/// leased until `p_until`) and returns them as updated, followed by the
/// running candidates whose lease expired, unchanged (their lease
/// `<= p_now`, where a started row's is `p_until > p_now`): those the
/// caller claims through the shared lifecycle, which records the lost
/// attempt and may declare the job dead.
///
/// PL/pgSQL, so each connection plans the statement once and keeps the
/// plan; `SET enable_sort = off` holds for the call only. So does `SET
/// jit = off`: the sort the merge of the two scans needs is costed at
/// `enable_sort = off`'s penalty (10^10), far past `jit_above_cost`, and
/// PostgreSQL would compile every claim (about 115 ms here) to run a plan
/// that takes half a millisecond.
pub(crate) fn claim_function_ddl(qt: &str, func: &str) -> String {
    let candidates = candidates(qt, "p_types", "p_now", "p_batch");
    format!(
        "CREATE OR REPLACE FUNCTION {func}(p_types text[], p_now timestamptz, p_batch bigint, \
           p_until timestamptz, p_worker text) \
         RETURNS SETOF {qt} LANGUAGE plpgsql SET enable_sort = off SET jit = off AS $claim$ \
         BEGIN \
           RETURN QUERY \
           WITH c AS ({candidates}), \
           started AS ( \
             UPDATE {qt} AS j SET state = 'running', attempts = j.attempts + 1, \
               worker_id = p_worker, lease_token = replace(gen_random_uuid()::text, '-', ''), \
               started_at = p_now, lease_expires_at = p_until, updated_at = p_now, \
               version = j.version + 1 \
             FROM c WHERE j.id = c.id AND c.state = 'queued' \
             RETURNING j.*) \
           SELECT * FROM started \
           UNION ALL \
           SELECT j.* FROM {qt} AS j JOIN c ON j.id = c.id WHERE c.state = 'running'; \
         END $claim$"
    )
}

/// The run-time sample table and its slot sequence: at most
/// [`truststream_core_jobs::RUN_TIME_SAMPLE`] rows per job type (the slot
/// is the primary key with the type; the sequence cycles through the
/// slots), so reading run times costs the same however many completed jobs
/// the jobs table keeps. `qs` and `qseq` are quoted and qualified.
pub(crate) fn run_samples_ddl(qs: &str, qseq: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {qs} (
                job_type TEXT NOT NULL,
                slot INTEGER NOT NULL,
                run_us BIGINT NOT NULL,
                finished_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (job_type, slot)
            )"
        ),
        format!(
            "CREATE SEQUENCE IF NOT EXISTS {qseq} AS INTEGER MINVALUE 0 MAXVALUE {} START 0 CYCLE",
            truststream_core_jobs::RUN_TIME_SAMPLE - 1
        ),
    ]
}

/// `<table>_<suffix>`, cut to PostgreSQL's 63-byte identifiers.
pub(crate) fn index_name(table: &str, suffix: &str) -> String {
    let mut base = table.to_string();
    let room = 63 - suffix.len() - 1;
    while base.len() > room {
        base.pop();
    }
    format!("{base}_{suffix}")
}

fn bad(column: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::internal(format!(
        "the jobs table holds an unexpected value in column {column}"
    ))
    .with_source(e)
}

fn small(r: &PgRow, c: &str) -> JobsResult<u32> {
    let v: i64 = r.try_get(c).map_err(|e| bad(c, e))?;
    u32::try_from(v).map_err(|e| bad(c, e))
}

/// A job as stored, with its lease token.
pub(crate) struct Stored {
    pub(crate) job: Job,
    pub(crate) token: Option<String>,
}

/// Reads a row selected with [`COLUMNS`].
pub(crate) fn decode(r: &PgRow) -> JobsResult<Stored> {
    fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
        r: &'r PgRow,
        c: &str,
    ) -> JobsResult<T> {
        r.try_get(c).map_err(|e| bad(c, e))
    }
    let state: String = get(r, "state")?;
    let timeout: Option<i64> = get(r, "timeout_ms")?;
    let job = Job {
        id: JobId(get(r, "id")?),
        job_type: get(r, "job_type")?,
        payload: get::<Option<Value>>(r, "payload")?.unwrap_or(Value::Null),
        state: state.parse().map_err(|_| {
            Error::internal(format!("the jobs table holds an unknown state {state:?}"))
        })?,
        priority: i32::try_from(get::<i64>(r, "priority")?).map_err(|e| bad("priority", e))?,
        run_at: get(r, "run_at")?,
        attempts: small(r, "attempts")?,
        max_attempts: small(r, "max_attempts")?,
        backoff: serde_json::from_value(get(r, "backoff")?).map_err(|e| bad("backoff", e))?,
        timeout: timeout
            .map(|t| u64::try_from(t).map(std::time::Duration::from_millis))
            .transpose()
            .map_err(|e| bad("timeout_ms", e))?,
        unique_key: get(r, "unique_key")?,
        worker_id: get(r, "worker_id")?,
        lease_expires_at: get(r, "lease_expires_at")?,
        started_at: get(r, "started_at")?,
        last_error: get(r, "last_error")?,
        history: serde_json::from_value(get(r, "history")?).map_err(|e| bad("history", e))?,
        created_at: get(r, "created_at")?,
        updated_at: get(r, "updated_at")?,
        finished_at: get(r, "finished_at")?,
    };
    Ok(Stored {
        token: get(r, "lease_token")?,
        job,
    })
}

/// The key column while the job holds its unique key, else NULL.
pub(crate) fn slot(job: &Job) -> Option<String> {
    truststream_core_jobs::row::unique_slot(job).map(str::to_string)
}

pub(crate) use truststream_core_jobs::row::{backoff, history, timeout_ms};
