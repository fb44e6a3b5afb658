//! `truststream jobs`: the configured job queue from the command line —
//! list, inspect, retry a dead job, cancel a queued one, and stats.
//!
//! Exit codes (see [`JobsExit`]): 0 done; 1 the configuration, the provider
//! or the store failed; 2 bad arguments (an id that is not a UUID, an
//! unknown state, a limit out of range); 3 no job with that id; 4 the job
//! is in a state that does not allow the action (retrying a job that is not
//! dead, cancelling one that is not queued, a unique key now held by
//! another job).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use truststream_core::{Error, ErrorKind, Result};
use truststream_core_db::Database;
use truststream_core_jobs::{Job, JobId, JobQuery, JobState, JobStats, Jobs};

use truststream_runtime::{Config, Registries, JOBS_NONE};

/// What `truststream jobs` does.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first: id, type, state, attempts, run-at and last error.
    List {
        /// Only jobs in this state: queued, running, completed, dead,
        /// cancelled.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only jobs of this type.
        #[arg(long = "type", value_name = "TYPE")]
        job_type: Option<String>,
        /// Most jobs shown (1 to 10000).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
        /// Jobs skipped first (paging).
        #[arg(long, value_name = "N", default_value_t = 0)]
        offset: u64,
        /// Print the jobs as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One job in full: state, times, lease holder, last error and the
    /// history of its attempts.
    Inspect {
        /// The job's id (a UUID).
        id: String,
        /// Print the job as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queues a dead job again with a fresh set of attempts (its history is
    /// kept).
    Retry {
        /// The job's id (a UUID).
        id: String,
    },
    /// Cancels a queued job: it never runs.
    Cancel {
        /// The job's id (a UUID).
        id: String,
    },
    /// Counts by type and state, the age of the oldest waiting job, and
    /// run-time percentiles per type (over the most recently completed
    /// jobs).
    Stats {
        /// Print the stats as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The exit status of a `truststream jobs` command, by what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobsExit {
    /// 0: done.
    Done,
    /// 1: the configuration, the provider or the store failed.
    Failed,
    /// 2: bad arguments.
    BadInput,
    /// 3: no job with that id.
    NotFound,
    /// 4: the job's state does not allow the action.
    Conflict,
}

impl JobsExit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            JobsExit::Done => 0,
            JobsExit::Failed => 1,
            JobsExit::BadInput => 2,
            JobsExit::NotFound => 3,
            JobsExit::Conflict => 4,
        }
    }

    /// The exit status for an error of this kind.
    pub fn of(e: &Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidInput => JobsExit::BadInput,
            ErrorKind::NotFound => JobsExit::NotFound,
            ErrorKind::Conflict => JobsExit::Conflict,
            _ => JobsExit::Failed,
        }
    }
}

impl From<JobsExit> for ExitCode {
    fn from(e: JobsExit) -> Self {
        ExitCode::from(e.code())
    }
}

/// Builds the configured jobs provider (and the database it is given, see
/// [`provider`]) and runs `command`, printing its answer on stdout and an
/// error (with its cause) on stderr.
pub async fn run(config: &Config, command: JobsCommand) -> ExitCode {
    let (jobs, db) = match provider(config).await {
        Ok(built) => built,
        Err(e) => {
            eprintln!("error: {}", e.display_chain());
            return JobsExit::Failed.into();
        }
    };
    if !jobs.capabilities().shared {
        eprintln!(
            "note: the {} jobs provider keeps its queue in one process; this command sees its own, empty queue",
            jobs.info().name
        );
    }
    let result = execute(&*jobs, command).await;
    // Stop the provider's tasks and flush what it holds before its
    // database goes (the order of `Services::close`).
    if let Err(e) = jobs.close().await {
        eprintln!("warning: closing the jobs provider: {}", e.display_chain());
    }
    drop(jobs);
    if let Some(db) = db {
        let _ = db.disconnect().await;
    }
    match result {
        Ok(out) => {
            print!("{out}");
            JobsExit::Done.into()
        }
        Err(e) => {
            eprintln!("error: {}", e.display_chain());
            JobsExit::of(&e).into()
        }
    }
}

/// The jobs provider `config` describes, and the configured database (in
/// its layers) when the provider keeps its jobs there (`jobs.type =
/// "database"`): nothing else. Storage, realtime and auth are never built,
/// nor the database for a provider with a store of its own (`postgres`,
/// `memory`), so a listen port in use, an unreachable storage service, an
/// auth provider that cannot start or an application database that is down
/// does not stop the command. An error when `config` configures no jobs
/// provider (nothing is built then).
pub async fn provider(config: &Config) -> Result<(Arc<dyn Jobs>, Option<Arc<dyn Database>>)> {
    let kind = config.jobs_section().kind();
    if kind == JOBS_NONE {
        return Err(Error::invalid_input(format!(
            "no jobs provider is configured for profile {}: set [{}.jobs] type (memory, database or postgres)",
            config.profile(),
            config.profile()
        )));
    }
    let registries = Arc::new(Registries::compiled_in());
    let db = if keeps_jobs_in_the_database(kind) {
        Some(registries.build_database(config).await?)
    } else {
        None
    };
    let built = registries
        .build_jobs(config, db.clone())
        .await
        .and_then(|jobs| jobs.ok_or_else(|| Error::internal("the jobs section names no provider")));
    match built {
        Ok(jobs) => Ok((jobs, db)),
        Err(e) => {
            if let Some(db) = db {
                let _ = db.disconnect().await;
            }
            Err(e)
        }
    }
}

/// Whether jobs of provider type `kind` live in the configured database.
fn keeps_jobs_in_the_database(kind: &str) -> bool {
    #[cfg(feature = "jobs-db")]
    {
        kind == truststream_jobs_db::TYPE_NAME
    }
    #[cfg(not(feature = "jobs-db"))]
    {
        let _ = kind;
        false
    }
}

/// Runs `command` on `jobs`; the text to print.
pub async fn execute(jobs: &dyn Jobs, command: JobsCommand) -> Result<String> {
    match command {
        JobsCommand::List {
            state,
            job_type,
            limit,
            offset,
            json,
        } => {
            let mut query = JobQuery::new().limit(limit).offset(offset);
            if let Some(s) = state {
                query = query.state(s.parse()?);
            }
            if let Some(t) = job_type {
                query = query.job_type(t);
            }
            let list = jobs.list(&query).await?;
            if json {
                to_json(&list)
            } else {
                Ok(list_table(&list))
            }
        }
        JobsCommand::Inspect { id, json } => {
            let id: JobId = id.parse()?;
            let job = jobs
                .get(id)
                .await?
                .ok_or_else(|| Error::not_found(format!("no job with id {id}")))?;
            if json {
                to_json(&job)
            } else {
                Ok(inspect_text(&job))
            }
        }
        JobsCommand::Retry { id } => {
            let job = jobs.retry_dead(id.parse()?).await?;
            Ok(format!(
                "job {} queued again (attempts 0 of {}, {} earlier attempts kept)\n",
                job.id,
                job.max_attempts,
                job.history.len()
            ))
        }
        JobsCommand::Cancel { id } => {
            let job = jobs.cancel(id.parse()?).await?;
            Ok(format!("job {} cancelled\n", job.id))
        }
        JobsCommand::Stats { json } => {
            let stats = jobs.stats().await?;
            if json {
                to_json(&stats)
            } else {
                Ok(stats_text(&stats))
            }
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| Error::internal("cannot render the answer as JSON").with_source(e))
}

/// `s` safe to print on a terminal: control characters (newlines, escape
/// sequences a job's error or payload may carry) shown as spaces.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One line of at most `max` characters (newlines shown as spaces).
fn one_line(s: &str, max: usize) -> String {
    let flat = printable(s);
    if flat.chars().count() <= max {
        flat
    } else {
        flat.chars().take(max.saturating_sub(1)).collect::<String>() + "…"
    }
}

fn list_table(list: &[Job]) -> String {
    let mut out = format!(
        "{:<36}  {:<24}  {:<9}  {:>8}  {:<20}  {}\n",
        "ID", "TYPE", "STATE", "ATTEMPTS", "RUN AT (UTC)", "LAST ERROR"
    );
    for j in list {
        let _ = writeln!(
            out,
            "{:<36}  {:<24}  {:<9}  {:>8}  {:<20}  {}",
            j.id,
            one_line(&j.job_type, 24),
            j.state,
            format!("{}/{}", j.attempts, j.max_attempts),
            j.run_at.format("%Y-%m-%d %H:%M:%S"),
            j.last_error
                .as_deref()
                .map_or(String::new(), |e| one_line(e, 60)),
        );
    }
    let _ = writeln!(out, "{} job(s)", list.len());
    out
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".to_string())
}

fn inspect_text(j: &Job) -> String {
    let mut out = String::new();
    let mut field = |k: &str, v: String| {
        let _ = writeln!(out, "{k:>13}: {v}");
    };
    field("id", j.id.to_string());
    field("type", printable(&j.job_type));
    field("state", j.state.to_string());
    field("attempts", format!("{} of {}", j.attempts, j.max_attempts));
    field("priority", j.priority.to_string());
    field("run at", j.run_at.to_rfc3339());
    field("created", j.created_at.to_rfc3339());
    field("updated", j.updated_at.to_rfc3339());
    field("started", or_dash(j.started_at.map(|t| t.to_rfc3339())));
    field("finished", or_dash(j.finished_at.map(|t| t.to_rfc3339())));
    field("worker", or_dash(j.worker_id.as_deref().map(printable)));
    field(
        "lease until",
        or_dash(j.lease_expires_at.map(|t| t.to_rfc3339())),
    );
    field(
        "timeout",
        j.timeout
            .map_or("-".into(), |t| format!("{} ms", t.as_millis())),
    );
    field(
        "unique key",
        or_dash(j.unique_key.as_deref().map(printable)),
    );
    field(
        "last error",
        or_dash(j.last_error.as_deref().map(printable)),
    );
    field("payload", printable(&j.payload.to_string()));
    let _ = writeln!(out, "history ({} attempt(s)):", j.history.len());
    for a in &j.history {
        let took = (a.finished_at - a.started_at).to_std().unwrap_or_default();
        let _ = writeln!(
            out,
            "  #{:<3} {}  {:>9}  {:<24}  {}",
            a.attempt,
            a.started_at.to_rfc3339(),
            fmt_ms(took),
            one_line(&a.worker_id, 24),
            a.error
                .as_deref()
                .map_or("ok".to_string(), |e| one_line(e, 200)),
        );
    }
    out
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn stats_text(s: &JobStats) -> String {
    let mut out = String::new();
    let mut types: Vec<&str> = s.counts.iter().map(|c| c.job_type.as_str()).collect();
    types.dedup();
    let _ = write!(out, "{:<24}", "TYPE");
    for st in JobState::ALL {
        let _ = write!(out, "  {:>9}", st.as_str().to_uppercase());
    }
    out.push('\n');
    for t in &types {
        let _ = write!(out, "{:<24}", one_line(t, 24));
        for st in JobState::ALL {
            let _ = write!(out, "  {:>9}", s.count(t, st));
        }
        out.push('\n');
    }
    let _ = write!(out, "{:<24}", "(all)");
    for st in JobState::ALL {
        let _ = write!(out, "  {:>9}", s.in_state(st));
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "oldest queued job waiting: {}",
        s.oldest_queued_age
            .map_or_else(|| "none waiting".to_string(), fmt_ms)
    );
    if !s.run_times.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24}  {:>7}  {:>11}  {:>11}  {:>11}  {:>11}",
            "RUN TIME", "SAMPLED", "P50", "P95", "P99", "MAX"
        );
        for r in &s.run_times {
            let _ = writeln!(
                out,
                "{:<24}  {:>7}  {:>11}  {:>11}  {:>11}  {:>11}",
                one_line(&r.job_type, 24),
                r.sampled,
                fmt_ms(r.p50),
                fmt_ms(r.p95),
                fmt_ms(r.p99),
                fmt_ms(r.max)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_prints_no_control_characters() {
        let mut job =
            truststream_core_jobs::NewJob::new("mail", &serde_json::json!({"s": "\u{9b}2J"}))
                .expect("a valid job")
                .unique_key("k\u{1b}[2J")
                .into_job(truststream_core_jobs::lifecycle::now());
        job.last_error = Some("smtp said no\n\u{1b}]0;owned\u{7}second line".into());
        job.worker_id = Some("w\u{1b}[31m".into());
        let text = inspect_text(&job);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("smtp said no"), "{text}");
        assert!(text.contains("second line"), "{text}");
    }
}
