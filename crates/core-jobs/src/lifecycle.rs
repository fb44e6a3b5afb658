//! The rules of a job's life, written once for every provider.
//!
//! A provider keeps [`Job`] values (in memory, or as rows it converts) and
//! changes them only through these methods, under its own concurrency
//! control (a lock, or a compare-and-set on a version column). So retry
//! timing, attempt counting, history and the dead state are the same on
//! every provider, and the conformance suite checks them once.

use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use truststream_core::Error;

use crate::types::{Attempt, FailOutcome, Job, JobError, JobState, MAX_ERROR_BYTES, MAX_HISTORY};
use crate::JobsResult;

/// The current time at the precision every store keeps (microseconds), so a
/// job read back equals the job written.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    t.duration_trunc(chrono::Duration::microseconds(1))
        .unwrap_or(t)
}

/// `t + d`, saturating at the largest time chrono represents.
pub fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A fresh lease token (random, 32 hex digits).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What [`Job::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The job now runs under the new lease.
    Started,
    /// Its lease had expired with no attempts left: it is dead instead, and
    /// must not be handed to the worker.
    Dead,
}

fn cut(message: &str) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        return message.to_string();
    }
    let mut end = MAX_ERROR_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... (cut, {} bytes in all)",
        &message[..end],
        message.len()
    )
}

impl Job {
    /// Whether a claim at `now` may take the job: queued with `run_at`
    /// passed, or running with its lease expired.
    pub fn is_claimable(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            JobState::Queued => self.run_at <= now,
            JobState::Running => self.lease_expires_at.is_some_and(|t| t <= now),
            _ => false,
        }
    }

    fn record(&mut self, now: DateTime<Utc>, error: Option<String>) {
        self.history.push(Attempt {
            attempt: self.attempts,
            worker_id: self.worker_id.clone().unwrap_or_default(),
            started_at: self.started_at.unwrap_or(now),
            finished_at: now,
            error,
        });
        if self.history.len() > MAX_HISTORY {
            let extra = self.history.len() - MAX_HISTORY;
            self.history.drain(..extra);
        }
    }

    fn end_lease(&mut self) {
        self.lease_expires_at = None;
        self.worker_id = None;
    }

    /// Claims a claimable job for `worker_id` until `now + lease`. A job
    /// whose lease expired first gets that attempt recorded as failed
    /// (`lease expired`); when it had no attempts left it goes dead instead
    /// ([`Start::Dead`]). The caller must have checked
    /// [`Job::is_claimable`].
    pub fn start(&mut self, now: DateTime<Utc>, lease: Duration, worker_id: &str) -> Start {
        if self.state == JobState::Running {
            let msg = format!(
                "lease expired: worker {} stopped extending it (crashed or cut off)",
                self.worker_id.as_deref().unwrap_or("?")
            );
            self.record(now, Some(msg.clone()));
            self.last_error = Some(msg);
            self.end_lease();
            if self.attempts >= self.max_attempts {
                self.state = JobState::Dead;
                self.finished_at = Some(now);
                self.updated_at = now;
                return Start::Dead;
            }
        }
        self.state = JobState::Running;
        self.attempts += 1;
        self.worker_id = Some(worker_id.to_string());
        self.started_at = Some(now);
        self.lease_expires_at = Some(add(now, lease));
        self.updated_at = now;
        Start::Started
    }

    /// Moves the lease end to `now + by`; returns the new end.
    pub fn extend(&mut self, now: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
        let until = add(now, by);
        self.lease_expires_at = Some(until);
        self.updated_at = now;
        until
    }

    /// Marks the running job completed and records the attempt.
    pub fn complete(&mut self, now: DateTime<Utc>) {
        self.record(now, None);
        self.state = JobState::Completed;
        self.finished_at = Some(now);
        self.updated_at = now;
        self.end_lease();
    }

    /// Records a failed attempt: queued again after the backoff delay
    /// (`random` in `0..1` picks the jitter) while attempts are left and the
    /// error is not permanent, dead otherwise.
    pub fn fail(&mut self, now: DateTime<Utc>, error: &JobError, random: f64) -> FailOutcome {
        let message = cut(&error.message);
        self.record(now, Some(message.clone()));
        self.last_error = Some(message);
        self.end_lease();
        self.updated_at = now;
        if error.permanent || self.attempts >= self.max_attempts {
            self.state = JobState::Dead;
            self.finished_at = Some(now);
            FailOutcome::Dead
        } else {
            self.state = JobState::Queued;
            self.run_at = add(now, self.backoff.delay(self.attempts, random));
            FailOutcome::Retrying(self.run_at)
        }
    }

    /// Gives a running job back without counting the attempt (a worker
    /// stopping before it could finish): queued, claimable now.
    pub fn release(&mut self, now: DateTime<Utc>) {
        self.state = JobState::Queued;
        self.attempts = self.attempts.saturating_sub(1);
        self.run_at = now;
        self.started_at = None;
        self.updated_at = now;
        self.end_lease();
    }

    /// Cancels a queued job; any other state is
    /// [`truststream_core::ErrorKind::Conflict`].
    pub fn cancel(&mut self, now: DateTime<Utc>) -> JobsResult<()> {
        if self.state != JobState::Queued {
            return Err(Error::conflict(format!(
                "job {} is {}; only a queued job can be cancelled",
                self.id, self.state
            ))
            .with_operation("jobs.cancel"));
        }
        self.state = JobState::Cancelled;
        self.finished_at = Some(now);
        self.updated_at = now;
        Ok(())
    }

    /// Queues a dead job again with a fresh set of attempts (its history
    /// and last error are kept); any other state is
    /// [`truststream_core::ErrorKind::Conflict`].
    pub fn requeue_dead(&mut self, now: DateTime<Utc>) -> JobsResult<()> {
        if self.state != JobState::Dead {
            return Err(Error::conflict(format!(
                "job {} is {}; only a dead job can be retried",
                self.id, self.state
            ))
            .with_operation("jobs.retry_dead"));
        }
        self.state = JobState::Queued;
        self.attempts = 0;
        self.run_at = now;
        self.finished_at = None;
        self.started_at = None;
        self.updated_at = now;
        Ok(())
    }
}

/// The error for a lease that is no longer the job's.
pub fn lease_lost(job: &crate::JobId, operation: &'static str) -> Error {
    Error::conflict(format!(
        "the lease on job {job} is no longer held (it expired and the job was claimed again, or the job finished)"
    ))
    .with_operation(operation)
}

/// The error for a job that does not exist.
pub fn not_found(job: &crate::JobId, operation: &'static str) -> Error {
    Error::not_found(format!("no job {job}")).with_operation(operation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backoff, NewJob};

    fn job(max: u32) -> Job {
        NewJob::from_json("t", serde_json::json!(1))
            .max_attempts(max)
            .backoff(Backoff::fixed(Duration::from_secs(10)).jitter(0.0))
            .into_job(now())
    }

    #[test]
    fn failures_retry_then_die_with_history() {
        let mut j = job(2);
        let t0 = j.created_at;
        assert!(j.is_claimable(t0));
        assert_eq!(j.start(t0, Duration::from_secs(5), "w1"), Start::Started);
        assert!(!j.is_claimable(t0));
        assert!(j.is_claimable(add(t0, Duration::from_secs(5))));
        let out = j.fail(t0, &JobError::retry("boom"), 0.0);
        assert_eq!(out, FailOutcome::Retrying(add(t0, Duration::from_secs(10))));
        assert_eq!(j.state, JobState::Queued);
        assert!(!j.is_claimable(t0));
        j.start(t0, Duration::from_secs(5), "w2");
        assert_eq!(j.attempts, 2);
        assert_eq!(j.fail(t0, &JobError::retry("bang"), 0.0), FailOutcome::Dead);
        assert_eq!(j.state, JobState::Dead);
        let errors: Vec<_> = j.history.iter().map(|a| a.error.clone()).collect();
        assert_eq!(errors, vec![Some("boom".into()), Some("bang".into())]);
        assert_eq!(j.history[1].worker_id, "w2");
        j.requeue_dead(t0).expect("dead job requeues");
        assert_eq!(
            (j.state, j.attempts, j.history.len()),
            (JobState::Queued, 0, 2)
        );
    }

    #[test]
    fn an_expired_lease_counts_the_attempt() {
        let mut j = job(1);
        let t0 = j.created_at;
        j.start(t0, Duration::from_secs(1), "w1");
        let later = add(t0, Duration::from_secs(2));
        assert!(j.is_claimable(later));
        assert_eq!(j.start(later, Duration::from_secs(1), "w2"), Start::Dead);
        assert_eq!(j.state, JobState::Dead);
        assert!(j.history[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired")));
        let mut k = job(3);
        k.start(t0, Duration::from_secs(1), "w1");
        assert_eq!(k.start(later, Duration::from_secs(1), "w2"), Start::Started);
        assert_eq!((k.attempts, k.history.len()), (2, 1));
    }

    #[test]
    fn release_and_permanent_failures() {
        let mut j = job(5);
        let t0 = j.created_at;
        j.start(t0, Duration::from_secs(1), "w");
        j.release(t0);
        assert_eq!((j.state, j.attempts), (JobState::Queued, 0));
        j.start(t0, Duration::from_secs(1), "w");
        assert_eq!(
            j.fail(t0, &JobError::permanent("no"), 0.5),
            FailOutcome::Dead
        );
        assert!(j.cancel(t0).is_err());
        let long = "é".repeat(MAX_ERROR_BYTES);
        let mut k = job(5);
        k.start(t0, Duration::from_secs(1), "w");
        k.fail(t0, &JobError::retry(long), 0.0);
        assert!(k
            .last_error
            .as_ref()
            .is_some_and(|e| e.len() < MAX_ERROR_BYTES + 64));
        let mut q = job(5);
        q.cancel(t0).expect("queued cancels");
        assert_eq!(q.state, JobState::Cancelled);
        assert!(q.requeue_dead(t0).is_err());
    }
}
