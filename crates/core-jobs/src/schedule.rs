//! Recurring jobs from cron expressions.
//!
//! A [`Scheduler`] turns each [`Schedule`] (a name, a cron expression in UTC
//! and a job template) into one job per occurrence, enqueued with
//! `run_at` = the occurrence. Any number of processes may run the same
//! schedules against one provider: each occurrence is enqueued once,
//! because its job carries
//!
//! - the unique key `cron:<name>:<occurrence RFC 3339>`, which turns a
//!   second enqueue into [`Enqueued::Duplicate`] while the first job is
//!   queued or running, and
//! - an id derived from that key ([`Schedule::job_id`]), which turns a
//!   second enqueue into [`ErrorKind::Conflict`] after the first job
//!   finished (completed, dead or cancelled), for as long as that job is
//!   kept. Only [`Jobs::purge_finished`] removes it: keep finished jobs
//!   longer than the scheduler's look-ahead plus one period of the
//!   expression, or a restarted process with [`CatchUp::LastMissed`] may
//!   enqueue a purged occurrence again.
//!
//! The scheduler sleeps until the next occurrence (minus the look-ahead)
//! instead of polling.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Enqueued, Error, ErrorKind, JobId, Jobs, JobsResult, NewJob};

/// Longest schedule name, in bytes.
pub const MAX_SCHEDULE_NAME_BYTES: usize = 128;
/// Longest look-ahead a [`Scheduler`] accepts.
pub const MAX_LOOK_AHEAD: Duration = Duration::from_secs(24 * 3600);
/// Most occurrences one schedule enqueues per wake-up (a per-second
/// expression with a long look-ahead stays bounded).
pub const MAX_OCCURRENCES_PER_TICK: usize = 1000;
/// Longest sleep between wake-ups, so a clock jump is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Pause after an enqueue failed before trying again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// What a scheduler does about occurrences that passed while no scheduler
/// ran (it cannot tell which of them were enqueued, so it looks only at
/// the time it starts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CatchUp {
    /// Occurrences before the start are dropped (the default).
    #[default]
    Skip,
    /// The most recent occurrence at or before the start is enqueued (once
    /// across processes, like any other occurrence), older ones dropped.
    LastMissed,
}

/// One recurring job: a name, a cron expression evaluated in UTC, and the
/// job each occurrence enqueues.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    expression: String,
    cron: croner::Cron,
    template: NewJob,
    catch_up: CatchUp,
}

impl Schedule {
    /// A schedule. `expression` is a cron pattern with 5 fields (minute
    /// precision) or 6 (a leading seconds field), evaluated in UTC. The
    /// template's job type, payload, priority, attempts, backoff and
    /// timeout are copied into each occurrence's job; its id, `run_at` and
    /// unique key are replaced. A bad name, expression or template is
    /// [`ErrorKind::InvalidInput`] naming the schedule.
    pub fn new(name: &str, expression: &str, template: NewJob) -> JobsResult<Self> {
        if name.is_empty()
            || name.len() > MAX_SCHEDULE_NAME_BYTES
            || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::invalid_input(format!(
                "schedule name {name:?}: must be 1 to {MAX_SCHEDULE_NAME_BYTES} bytes without \
                 spaces or control characters"
            )));
        }
        let cron = croner::Cron::from_str(expression).map_err(|e| {
            Error::invalid_input(format!(
                "schedule {name:?}: bad cron expression {expression:?}: {e}"
            ))
        })?;
        template.validate().map_err(|e| {
            Error::invalid_input(format!("schedule {name:?}: bad job template: {e}"))
        })?;
        Ok(Self {
            name: name.to_owned(),
            expression: expression.to_owned(),
            cron,
            template,
            catch_up: CatchUp::default(),
        })
    }

    /// Sets the catch-up policy (default [`CatchUp::Skip`]).
    pub fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = policy;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cron expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first occurrence strictly after `t`, or `None` when there is
    /// none (an expression that never matches again).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The last occurrence at or before `t`, if any.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t, true).ok()
    }

    /// Occurrences in `(after, until]`, oldest first, at most `max`.
    pub fn occurrences(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < max {
            match self.next_after(t) {
                Some(next) if next <= until => {
                    out.push(next);
                    t = next;
                }
                _ => break,
            }
        }
        out
    }

    /// The unique key of the occurrence at `at`:
    /// `cron:<name>:<RFC 3339, UTC, seconds>`.
    pub fn unique_key(&self, at: DateTime<Utc>) -> String {
        format!(
            "cron:{}:{}",
            self.name,
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }

    /// The id of the occurrence at `at`'s job: the same in every process
    /// (a 128-bit FNV-1a hash of the unique key, stamped as a version 8
    /// UUID), so an occurrence whose job already finished is refused as
    /// an id already taken.
    pub fn job_id(&self, at: DateTime<Utc>) -> JobId {
        JobId(stable_uuid(&self.unique_key(at)))
    }

    /// The job for the occurrence at `at`.
    pub fn job(&self, at: DateTime<Utc>) -> NewJob {
        self.template
            .clone()
            .id(self.job_id(at))
            .run_at(at)
            .unique_key(self.unique_key(at))
    }
}

/// A version 8 UUID from a 128-bit FNV-1a hash: stable across builds and
/// platforms (unlike `std`'s hasher).
fn stable_uuid(s: &str) -> uuid::Uuid {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for b in s.as_bytes() {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    // Version 8 (custom) and the RFC 4122 variant.
    h = (h & !(0xf << 76)) | (0x8 << 76);
    h = (h & !(0x3 << 62)) | (0x2 << 62);
    uuid::Uuid::from_u128(h)
}

/// What one occurrence's enqueue found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OccurrenceOutcome {
    /// This process stored the job.
    Created(JobId),
    /// Another process (or an earlier run) already enqueued it.
    AlreadyEnqueued(JobId),
}

/// Enqueues the occurrence at `at` of `schedule`: [`Enqueued::Duplicate`]
/// and an id already taken both mean another process got there first.
pub async fn enqueue_occurrence(
    jobs: &dyn Jobs,
    schedule: &Schedule,
    at: DateTime<Utc>,
) -> JobsResult<OccurrenceOutcome> {
    let id = schedule.job_id(at);
    match jobs.enqueue(schedule.job(at)).await {
        Ok(Enqueued::Created(id)) => Ok(OccurrenceOutcome::Created(id)),
        Ok(Enqueued::Duplicate(id)) => Ok(OccurrenceOutcome::AlreadyEnqueued(id)),
        Err(e) if e.kind() == ErrorKind::Conflict => Ok(OccurrenceOutcome::AlreadyEnqueued(id)),
        Err(e) => Err(e),
    }
}

/// Runs [`Schedule`]s against a provider. Build it, add schedules, then
/// [`start`](Scheduler::start) it on the current Tokio runtime.
pub struct Scheduler {
    jobs: Arc<dyn Jobs>,
    schedules: Vec<Schedule>,
    look_ahead: Duration,
}

impl Scheduler {
    /// A scheduler with no schedules and a look-ahead of 10 seconds.
    pub fn new(jobs: Arc<dyn Jobs>) -> Self {
        Self {
            jobs,
            schedules: Vec::new(),
            look_ahead: Duration::from_secs(10),
        }
    }

    /// Adds a schedule. Two schedules with one name are
    /// [`ErrorKind::InvalidInput`].
    pub fn schedule(mut self, schedule: Schedule) -> JobsResult<Self> {
        if self.schedules.iter().any(|s| s.name == schedule.name) {
            return Err(Error::invalid_input(format!(
                "schedule {:?} is defined twice",
                schedule.name
            )));
        }
        self.schedules.push(schedule);
        Ok(self)
    }

    /// How far ahead occurrences are enqueued (their jobs wait for their
    /// `run_at`), at most [`MAX_LOOK_AHEAD`].
    pub fn look_ahead(mut self, look_ahead: Duration) -> JobsResult<Self> {
        if look_ahead > MAX_LOOK_AHEAD {
            return Err(Error::invalid_input(format!(
                "a scheduler look-ahead is at most {MAX_LOOK_AHEAD:?}, got {look_ahead:?}"
            )));
        }
        self.look_ahead = look_ahead;
        Ok(self)
    }

    /// Starts the scheduling loop. A scheduler without schedules is
    /// [`ErrorKind::InvalidInput`].
    pub fn start(self) -> JobsResult<SchedulerHandle> {
        if self.schedules.is_empty() {
            return Err(Error::invalid_input(
                "a scheduler needs at least one schedule",
            ));
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(self, stop_rx));
        Ok(SchedulerHandle { stop_tx, task })
    }
}

/// A running [`Scheduler`].
pub struct SchedulerHandle {
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<SchedulerReport>,
}

/// What a scheduler did while it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerReport {
    /// Occurrences this scheduler stored.
    pub created: u64,
    /// Occurrences found already enqueued by another process.
    pub already_enqueued: u64,
    /// Enqueue attempts that failed (retried later).
    pub errors: u64,
}

impl SchedulerHandle {
    /// Stops the loop (an enqueue in flight finishes first) and reports.
    pub async fn stop(self) -> SchedulerReport {
        let _ = self.stop_tx.send(true);
        match self.task.await {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, "the job scheduler loop ended abnormally");
                SchedulerReport::default()
            }
        }
    }
}

async fn run(scheduler: Scheduler, mut stop: watch::Receiver<bool>) -> SchedulerReport {
    let Scheduler {
        jobs,
        schedules,
        look_ahead,
    } = scheduler;
    let look_ahead = chrono::Duration::from_std(look_ahead).unwrap_or_default();
    let mut report = SchedulerReport::default();
    let start = Utc::now();
    // Per schedule: occurrences up to and including the cursor are done.
    let mut cursors = Vec::with_capacity(schedules.len());
    for s in &schedules {
        let mut cursor = start;
        if s.catch_up == CatchUp::LastMissed {
            if let Some(last) = s.last_at_or_before(start) {
                // Enqueued below with the rest: start just before it.
                cursor = last - chrono::Duration::nanoseconds(1);
            }
        }
        cursors.push(cursor);
    }
    loop {
        if *stop.borrow() {
            break;
        }
        let horizon = Utc::now() + look_ahead;
        let mut failed = false;
        for (s, cursor) in schedules.iter().zip(cursors.iter_mut()) {
            for at in s.occurrences(*cursor, horizon, MAX_OCCURRENCES_PER_TICK) {
                match enqueue_occurrence(jobs.as_ref(), s, at).await {
                    Ok(OccurrenceOutcome::Created(_)) => report.created += 1,
                    Ok(OccurrenceOutcome::AlreadyEnqueued(_)) => report.already_enqueued += 1,
                    Err(e) => {
                        report.errors += 1;
                        failed = true;
                        tracing::warn!(schedule = %s.name, occurrence = %at, error = %e,
                            "enqueueing a scheduled job failed; retrying");
                        break;
                    }
                }
                *cursor = at;
            }
        }
        let sleep = if failed {
            RETRY_AFTER_ERROR
        } else {
            let now = Utc::now();
            schedules
                .iter()
                .zip(&cursors)
                .filter_map(|(s, c)| s.next_after(*c))
                .map(|next| (next - look_ahead - now).to_std().unwrap_or(Duration::ZERO))
                .min()
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP)
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => break,
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn template() -> NewJob {
        NewJob::from_json("report", serde_json::json!({"k": 1})).priority(3)
    }

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, s)
            .single()
            .expect("valid time")
    }

    #[test]
    fn five_field_expression_has_minute_occurrences() {
        let s = Schedule::new("every-15", "*/15 * * * *", template()).expect("valid");
        assert_eq!(s.next_after(at(10, 7, 30)), Some(at(10, 15, 0)));
        assert_eq!(s.next_after(at(10, 15, 0)), Some(at(10, 30, 0)));
        assert_eq!(s.last_at_or_before(at(10, 15, 0)), Some(at(10, 15, 0)));
        assert_eq!(
            s.occurrences(at(10, 0, 0), at(11, 0, 0), 100),
            vec![at(10, 15, 0), at(10, 30, 0), at(10, 45, 0), at(11, 0, 0)]
        );
        assert_eq!(s.occurrences(at(10, 0, 0), at(11, 0, 0), 2).len(), 2);
    }

    #[test]
    fn sub_second_cursors_never_go_back() {
        let s = Schedule::new("tick", "* * * * * *", template()).expect("valid");
        let half = at(0, 0, 0) + chrono::Duration::milliseconds(500);
        assert_eq!(s.next_after(half), Some(at(0, 0, 1)));
        // The catch-up cursor: just before the last missed occurrence.
        let before = at(0, 0, 0) - chrono::Duration::nanoseconds(1);
        assert_eq!(s.next_after(before), Some(at(0, 0, 0)));
        assert_eq!(s.last_at_or_before(half), Some(at(0, 0, 0)));
    }

    #[test]
    fn six_field_expression_has_seconds() {
        let s = Schedule::new("tick", "* * * * * *", template()).expect("valid");
        assert_eq!(
            s.occurrences(at(0, 0, 0), at(0, 0, 3), 10),
            vec![at(0, 0, 1), at(0, 0, 2), at(0, 0, 3)]
        );
    }

    #[test]
    fn bad_input_names_the_schedule() {
        for (name, expr) in [
            ("nightly", "61 * * * *"),
            ("nightly", "not cron"),
            ("", "* * * * *"),
        ] {
            let e = Schedule::new(name, expr, template()).expect_err("must be rejected");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            if !name.is_empty() {
                assert!(e.to_string().contains("nightly"), "{e}");
            }
        }
        let bad_template = NewJob::from_json("", serde_json::json!(null));
        let e = Schedule::new("nightly", "0 0 * * *", bad_template).expect_err("bad template");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("nightly"), "{e}");
    }

    #[test]
    fn occurrence_job_has_key_id_and_run_at() {
        let s = Schedule::new("nightly", "0 0 * * *", template()).expect("valid");
        let t = at(0, 0, 0);
        let j = s.job(t);
        assert_eq!(
            j.unique_key.as_deref(),
            Some("cron:nightly:2026-03-01T00:00:00Z")
        );
        assert_eq!(j.run_at, Some(t));
        assert_eq!(j.priority, 3);
        assert_eq!(j.job_type, "report");
        assert_eq!(j.id, s.job_id(t));
        assert_eq!(s.job_id(t), s.job(t).id, "the id is deterministic");
        assert_ne!(s.job_id(t), s.job_id(at(0, 0, 1)));
        assert_eq!(j.id.0.get_version_num(), 8);
        // Stable across builds: pinned.
        assert_eq!(
            stable_uuid("cron:nightly:2026-03-01T00:00:00Z"),
            stable_uuid("cron:nightly:2026-03-01T00:00:00Z")
        );
    }
}
