//! The jobs table's layout, shared by the providers that keep jobs in a
//! database (jobs-db over any core-db `Database`, jobs-postgres over its own
//! pool): its core-db schema, a [`Job`] as a core-db [`Row`] and back, and
//! the column readers. Both providers read and write the same table, so
//! the format lives here once.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use truststream_core::Error;
use truststream_core_db::{value::format_timestamp, ColumnDef, Row, TableSchema};

use crate::{Job, JobId, JobState, JobsResult};

/// A job as stored: the job, its lease token, and the row version every
/// compare-and-set write compares and bumps.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// The job.
    pub job: Job,
    /// The token of the running lease, if any.
    pub lease_token: Option<String>,
    /// The row version.
    pub version: i64,
}

/// The jobs table named `table`. `unique_slot` holds the unique key while
/// the job is queued or running and is NULL otherwise, so the database's
/// unique constraint (NULLs never collide) de-duplicates live jobs only.
pub fn schema(table: &str) -> TableSchema {
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

/// The `unique_slot` column: the unique key while the job holds it
/// (queued or running), else `None`.
pub fn unique_slot(job: &Job) -> Option<&str> {
    job.unique_key
        .as_deref()
        .filter(|_| job.state.holds_unique_key())
}

/// The `timeout_ms` column (saturating at `i64::MAX`).
pub fn timeout_ms(job: &Job) -> Option<i64> {
    job.timeout
        .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
}

/// The `backoff` column.
pub fn backoff(job: &Job) -> Value {
    serde_json::to_value(job.backoff).unwrap_or(Value::Null)
}

/// The `history` column.
pub fn history(job: &Job) -> Value {
    serde_json::to_value(&job.history).unwrap_or_else(|_| json!([]))
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

impl Job {
    /// The job as a row of the jobs table ([`schema`]): every column, so a
    /// write replaces the whole job, with lease `lease_token` and row
    /// `version` (a new job: `None`, 0).
    pub fn to_row(&self, lease_token: Option<&str>, version: i64) -> Row {
        let mut r = Row::new();
        r.insert("id".into(), json!(self.id.to_string()));
        r.insert("job_type".into(), json!(self.job_type));
        r.insert("payload".into(), self.payload.clone());
        r.insert("state".into(), json!(self.state.as_str()));
        r.insert("priority".into(), json!(self.priority));
        r.insert("run_at".into(), time(self.run_at));
        r.insert("attempts".into(), json!(self.attempts));
        r.insert("max_attempts".into(), json!(self.max_attempts));
        r.insert("backoff".into(), backoff(self));
        r.insert(
            "timeout_ms".into(),
            timeout_ms(self).map(Value::from).unwrap_or(Value::Null),
        );
        r.insert("unique_key".into(), opt_text(self.unique_key.as_deref()));
        r.insert("unique_slot".into(), opt_text(unique_slot(self)));
        r.insert("worker_id".into(), opt_text(self.worker_id.as_deref()));
        r.insert("lease_token".into(), opt_text(lease_token));
        r.insert("lease_expires_at".into(), opt_time(self.lease_expires_at));
        r.insert("started_at".into(), opt_time(self.started_at));
        r.insert("last_error".into(), opt_text(self.last_error.as_deref()));
        r.insert("history".into(), history(self));
        r.insert("created_at".into(), time(self.created_at));
        r.insert("updated_at".into(), time(self.updated_at));
        r.insert("finished_at".into(), opt_time(self.finished_at));
        r.insert("version".into(), json!(version));
        r
    }
}

/// The error for a value of `column` that is not what the jobs table holds.
pub fn unexpected(column: &str, v: Option<&Value>) -> Error {
    Error::internal(format!(
        "the jobs table holds an unexpected value in column {column}: {}",
        v.map(|v| truststream_core::echo(&v.to_string()).to_string())
            .unwrap_or_else(|| "nothing".into())
    ))
}

/// A text column.
pub fn text<'a>(r: &'a Row, c: &str) -> JobsResult<&'a str> {
    r.get(c)
        .and_then(Value::as_str)
        .ok_or_else(|| unexpected(c, r.get(c)))
}

fn opt_str(r: &Row, c: &str) -> Option<String> {
    r.get(c).and_then(Value::as_str).map(str::to_string)
}

/// An integer column (some stores hand integers back as text).
pub fn int(r: &Row, c: &str) -> JobsResult<i64> {
    match r.get(c) {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| unexpected(c, r.get(c))),
        Some(Value::String(s)) => s.parse().map_err(|_| unexpected(c, r.get(c))),
        other => Err(unexpected(c, other)),
    }
}

fn small(r: &Row, c: &str) -> JobsResult<u32> {
    u32::try_from(int(r, c)?).map_err(|_| unexpected(c, r.get(c)))
}

/// A timestamp column.
pub fn time_of(r: &Row, c: &str) -> JobsResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text(r, c)?)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| unexpected(c, r.get(c)))
}

fn opt_time_of(r: &Row, c: &str) -> JobsResult<Option<DateTime<Utc>>> {
    match r.get(c) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => time_of(r, c).map(Some),
    }
}

fn json_of(r: &Row, c: &str) -> Value {
    r.get(c).cloned().unwrap_or(Value::Null)
}

fn decode<T: serde::de::DeserializeOwned>(r: &Row, c: &str) -> JobsResult<T> {
    serde_json::from_value(json_of(r, c)).map_err(|e| unexpected(c, r.get(c)).with_source(e))
}

/// The `id` column.
pub fn id_of(r: &Row) -> JobsResult<JobId> {
    text(r, "id")?.parse()
}

/// The `state` column.
pub fn state_of(r: &Row) -> JobsResult<JobState> {
    text(r, "state")?
        .parse()
        .map_err(|_| unexpected("state", r.get("state")))
}

impl StoredJob {
    /// Reads a whole row of the jobs table, as written by [`Job::to_row`].
    pub fn from_row(r: &Row) -> JobsResult<Self> {
        let timeout = match r.get("timeout_ms") {
            None | Some(Value::Null) => None,
            Some(_) => Some(std::time::Duration::from_millis(
                u64::try_from(int(r, "timeout_ms")?)
                    .map_err(|_| unexpected("timeout_ms", r.get("timeout_ms")))?,
            )),
        };
        let job = Job {
            id: id_of(r)?,
            job_type: text(r, "job_type")?.to_string(),
            payload: json_of(r, "payload"),
            state: state_of(r)?,
            priority: i32::try_from(int(r, "priority")?)
                .map_err(|_| unexpected("priority", r.get("priority")))?,
            run_at: time_of(r, "run_at")?,
            attempts: small(r, "attempts")?,
            max_attempts: small(r, "max_attempts")?,
            backoff: decode(r, "backoff")?,
            timeout,
            unique_key: opt_str(r, "unique_key"),
            worker_id: opt_str(r, "worker_id"),
            lease_expires_at: opt_time_of(r, "lease_expires_at")?,
            started_at: opt_time_of(r, "started_at")?,
            last_error: opt_str(r, "last_error"),
            history: decode(r, "history")?,
            created_at: time_of(r, "created_at")?,
            updated_at: time_of(r, "updated_at")?,
            finished_at: opt_time_of(r, "finished_at")?,
        };
        Ok(StoredJob {
            lease_token: opt_str(r, "lease_token"),
            version: int(r, "version")?,
            job,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewJob;

    #[test]
    fn a_job_survives_the_row_and_back() {
        let job = NewJob::new("mail", &json!({"to": "a"}))
            .expect("valid job")
            .unique_key("k")
            .into_job(crate::lifecycle::now());
        let row = job.to_row(Some("tok"), 7);
        assert_eq!(row.get("unique_slot"), Some(&json!("k")));
        assert_eq!(row.keys().count(), schema("t").columns.len());
        let back = StoredJob::from_row(&row).expect("decodes");
        assert_eq!(back.lease_token.as_deref(), Some("tok"));
        assert_eq!(back.version, 7);
        assert_eq!(back.job.id, job.id);
        assert_eq!(back.job.to_row(Some("tok"), 7), row);
    }
}
