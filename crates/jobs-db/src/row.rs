//! The jobs table: its schema, and jobs to rows and back.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use truststream_core::Error;
use truststream_core_db::{value::format_timestamp, ColumnDef, Row, TableSchema};
use truststream_core_jobs::{Job, JobId, JobState, JobsResult};

/// A job as stored: the job, its lease token, and the row version every
/// write compares and bumps.
pub(crate) struct Stored {
    pub(crate) job: Job,
    pub(crate) token: Option<String>,
    pub(crate) version: i64,
}

/// The jobs table. `unique_slot` holds the unique key while the job is
/// queued or running and is NULL otherwise, so the database's unique
/// constraint (NULLs never collide) enforces de-duplication.
pub(crate) fn schema(table: &str) -> TableSchema {
    TableSchema::new(table)
        .column(ColumnDef::uuid("id").primary_key())
        .column(ColumnDef::text("job_type").not_null())
        .column(ColumnDef::json("payload"))
        .column(ColumnDef::text("state").not_null())
        .column(ColumnDef::integer("priority").not_null())
        .column(ColumnDef::timestamp("run_at").not_null())
        .column(ColumnDef::integer("attempts").not_null())
        .column(ColumnDef::integer("max_attempts").not_null())
        .column(ColumnDef::json("backoff").not_null())
        .column(ColumnDef::integer("timeout_ms"))
        .column(ColumnDef::text("unique_key"))
        .column(ColumnDef::text("unique_slot").unique())
        .column(ColumnDef::text("worker_id"))
        .column(ColumnDef::text("lease_token"))
        .column(ColumnDef::timestamp("lease_expires_at"))
        .column(ColumnDef::timestamp("started_at"))
        .column(ColumnDef::text("last_error"))
        .column(ColumnDef::json("history").not_null())
        .column(ColumnDef::timestamp("created_at").not_null())
        .column(ColumnDef::timestamp("updated_at").not_null())
        .column(ColumnDef::timestamp("finished_at"))
        .column(ColumnDef::integer("version").not_null())
}

fn time(t: DateTime<Utc>) -> Value {
    Value::String(format_timestamp(t))
}

fn opt_time(t: Option<DateTime<Utc>>) -> Value {
    t.map(time).unwrap_or(Value::Null)
}

fn opt_text(s: Option<&str>) -> Value {
    s.map(|s| Value::String(s.to_string()))
        .unwrap_or(Value::Null)
}

/// The row for `job` (every column but none left out, so a write replaces
/// the whole job), with lease `token` and row `version`.
pub(crate) fn job_to_row(job: &Job, token: Option<&str>, version: i64) -> Row {
    let slot = if job.state.holds_unique_key() {
        job.unique_key.as_deref()
    } else {
        None
    };
    let mut r = Row::new();
    r.insert("id".into(), json!(job.id.to_string()));
    r.insert("job_type".into(), json!(job.job_type));
    r.insert("payload".into(), job.payload.clone());
    r.insert("state".into(), json!(job.state.as_str()));
    r.insert("priority".into(), json!(job.priority));
    r.insert("run_at".into(), time(job.run_at));
    r.insert("attempts".into(), json!(job.attempts));
    r.insert("max_attempts".into(), json!(job.max_attempts));
    r.insert(
        "backoff".into(),
        serde_json::to_value(job.backoff).unwrap_or(Value::Null),
    );
    r.insert(
        "timeout_ms".into(),
        job.timeout
            .map(|t| {
                json!(u64::try_from(t.as_millis())
                    .unwrap_or(u64::MAX)
                    .min(i64::MAX as u64))
            })
            .unwrap_or(Value::Null),
    );
    r.insert("unique_key".into(), opt_text(job.unique_key.as_deref()));
    r.insert("unique_slot".into(), opt_text(slot));
    r.insert("worker_id".into(), opt_text(job.worker_id.as_deref()));
    r.insert("lease_token".into(), opt_text(token));
    r.insert("lease_expires_at".into(), opt_time(job.lease_expires_at));
    r.insert("started_at".into(), opt_time(job.started_at));
    r.insert("last_error".into(), opt_text(job.last_error.as_deref()));
    r.insert(
        "history".into(),
        serde_json::to_value(&job.history).unwrap_or_else(|_| json!([])),
    );
    r.insert("created_at".into(), time(job.created_at));
    r.insert("updated_at".into(), time(job.updated_at));
    r.insert("finished_at".into(), opt_time(job.finished_at));
    r.insert("version".into(), json!(version));
    r
}

fn bad(column: &str, v: Option<&Value>) -> Error {
    Error::internal(format!(
        "the jobs table holds an unexpected value in column {column}: {}",
        v.map(|v| truststream_core::echo(&v.to_string()).to_string())
            .unwrap_or_else(|| "nothing".into())
    ))
}

fn text<'a>(r: &'a Row, c: &str) -> JobsResult<&'a str> {
    r.get(c)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(c, r.get(c)))
}

fn opt_str(r: &Row, c: &str) -> Option<String> {
    r.get(c).and_then(Value::as_str).map(str::to_string)
}

fn int(r: &Row, c: &str) -> JobsResult<i64> {
    match r.get(c) {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad(c, r.get(c))),
        Some(Value::String(s)) => s.parse().map_err(|_| bad(c, r.get(c))),
        other => Err(bad(c, other)),
    }
}

fn small(r: &Row, c: &str) -> JobsResult<u32> {
    u32::try_from(int(r, c)?).map_err(|_| bad(c, r.get(c)))
}

pub(crate) fn time_of(r: &Row, c: &str) -> JobsResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text(r, c)?)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad(c, r.get(c)))
}

fn opt_time_of(r: &Row, c: &str) -> JobsResult<Option<DateTime<Utc>>> {
    match r.get(c) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => time_of(r, c).map(Some),
    }
}

/// A JSON column: some stores hand JSON back as its text.
fn json_of(r: &Row, c: &str) -> Value {
    match r.get(c) {
        None => Value::Null,
        Some(v) => v.clone(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(r: &Row, c: &str) -> JobsResult<T> {
    serde_json::from_value(json_of(r, c)).map_err(|e| bad(c, r.get(c)).with_source(e))
}

pub(crate) fn id_of(r: &Row) -> JobsResult<JobId> {
    text(r, "id")?.parse()
}

pub(crate) fn type_and_state(r: &Row) -> JobsResult<(String, JobState)> {
    Ok((
        text(r, "job_type")?.to_string(),
        text(r, "state")?
            .parse()
            .map_err(|_| bad("state", r.get("state")))?,
    ))
}

pub(crate) fn count_of(r: &Row) -> JobsResult<u64> {
    u64::try_from(int(r, "n")?).map_err(|_| bad("n", r.get("n")))
}

pub(crate) fn row_to_job(r: Row) -> JobsResult<Stored> {
    let timeout = match r.get("timeout_ms") {
        None | Some(Value::Null) => None,
        Some(_) => Some(std::time::Duration::from_millis(
            u64::try_from(int(&r, "timeout_ms")?)
                .map_err(|_| bad("timeout_ms", r.get("timeout_ms")))?,
        )),
    };
    let job = Job {
        id: id_of(&r)?,
        job_type: text(&r, "job_type")?.to_string(),
        payload: json_of(&r, "payload"),
        state: text(&r, "state")?
            .parse()
            .map_err(|_| bad("state", r.get("state")))?,
        priority: i32::try_from(int(&r, "priority")?)
            .map_err(|_| bad("priority", r.get("priority")))?,
        run_at: time_of(&r, "run_at")?,
        attempts: small(&r, "attempts")?,
        max_attempts: small(&r, "max_attempts")?,
        backoff: decode(&r, "backoff")?,
        timeout,
        unique_key: opt_str(&r, "unique_key"),
        worker_id: opt_str(&r, "worker_id"),
        lease_expires_at: opt_time_of(&r, "lease_expires_at")?,
        started_at: opt_time_of(&r, "started_at")?,
        last_error: opt_str(&r, "last_error"),
        history: decode(&r, "history")?,
        created_at: time_of(&r, "created_at")?,
        updated_at: time_of(&r, "updated_at")?,
        finished_at: opt_time_of(&r, "finished_at")?,
    };
    Ok(Stored {
        token: opt_str(&r, "lease_token"),
        version: int(&r, "version")?,
        job,
    })
}
