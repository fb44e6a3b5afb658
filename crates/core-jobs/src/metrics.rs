//! What a [`crate::Worker`] records through the `metrics` crate's facade:
//! per job type, the runs by outcome, their run times and how long jobs
//! waited in the queue. Any recorder sees them; TrustStream's metrics layer
//! (`truststream-layer-metrics`, whose Prometheus exporter the gateway
//! serves at `/metrics`) describes them. With no recorder installed the
//! calls cost next to nothing. This crate depends on the facade only, not
//! on any recorder.
//!
//! Label values are job type names a worker registered (bounded by its
//! handlers, checked by [`crate::validate_job_type`]) and the fixed
//! [`outcome`] names: no payload, error text or worker id.

use std::time::Duration;

use ::metrics::{SharedString, Unit};

/// Counter of finished runs: labels `job_type` and `outcome` (one of
/// [`outcome`]'s names).
pub const JOBS_TOTAL: &str = "truststream_jobs_total";

/// Histogram of run times in seconds (from the handler's start to its
/// end, successes and failures alike): label `job_type`.
pub const JOB_RUN_SECONDS: &str = "truststream_job_run_seconds";

/// Histogram of queue waits in seconds (from the job's `run_at` to its
/// claim): label `job_type`.
pub const JOB_QUEUE_WAIT_SECONDS: &str = "truststream_job_queue_wait_seconds";

/// The `outcome` label values of [`JOBS_TOTAL`].
pub mod outcome {
    /// The handler succeeded and the completion was recorded.
    pub const COMPLETED: &str = "completed";
    /// The handler returned an error (recorded as a failed attempt).
    pub const FAILED: &str = "failed";
    /// The handler panicked (a failed attempt).
    pub const PANICKED: &str = "panicked";
    /// The handler ran past the job's timeout (a failed attempt).
    pub const TIMED_OUT: &str = "timed_out";
    /// The lease was lost while the job ran or before its outcome was
    /// recorded: another worker may run it again.
    pub const LOST_LEASE: &str = "lost_lease";
    /// The outcome could not be recorded (store errors): the job runs
    /// again after its lease.
    pub const UNRECORDED: &str = "unrecorded";
}

/// Describes the three metrics (help text and unit) to the current
/// recorder.
pub fn describe() {
    ::metrics::describe_counter!(
        JOBS_TOTAL,
        Unit::Count,
        SharedString::const_str("Background job runs by job type and outcome")
    );
    ::metrics::describe_histogram!(
        JOB_RUN_SECONDS,
        Unit::Seconds,
        SharedString::const_str("Run time of background jobs by job type")
    );
    ::metrics::describe_histogram!(
        JOB_QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        SharedString::const_str("Time background jobs waited from run-at to claim, by job type")
    );
}

/// A claimed job waited `wait` in the queue.
pub(crate) fn queue_wait(job_type: &str, wait: Duration) {
    ::metrics::histogram!(JOB_QUEUE_WAIT_SECONDS, "job_type" => job_type.to_owned())
        .record(wait.as_secs_f64());
}

/// A handler ran for `run`.
pub(crate) fn run_time(job_type: &str, run: Duration) {
    ::metrics::histogram!(JOB_RUN_SECONDS, "job_type" => job_type.to_owned())
        .record(run.as_secs_f64());
}

/// A run ended with `outcome` (one of [`outcome`]'s names).
pub(crate) fn finished(job_type: &str, outcome: &'static str) {
    ::metrics::counter!(JOBS_TOTAL, "job_type" => job_type.to_owned(), "outcome" => outcome)
        .increment(1);
}
