//! What a jobs provider can do, as data.

/// Capabilities of a jobs provider. Conformance cases declare the flags they
/// need and are skipped (by name) when a flag is `false`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct JobsCapabilities {
    /// [`crate::Jobs::enqueue_operation`] gives an operation for
    /// `Database::transaction`, so a job exists if and only if the
    /// transaction commits.
    pub transactional_enqueue: bool,
    /// Unique keys de-duplicate even when two processes enqueue at once
    /// (the store enforces them). Without it a unique key is still checked,
    /// but two racing enqueues may both succeed.
    pub unique_keys: bool,
    /// Several processes (or machines) may share the queue; without it the
    /// queue lives in one process.
    pub shared: bool,
    /// Jobs survive a restart of the process.
    pub durable: bool,
    /// [`crate::Jobs::wait_for_work`] wakes as soon as a job is enqueued,
    /// retried or released through this instance (without it, idle workers
    /// see new jobs at their next poll).
    pub local_wakeups: bool,
    /// [`crate::Jobs::wait_for_work`] wakes as soon as another process
    /// enqueues; without it only enqueues through this instance wake it
    /// early, and other processes' jobs are seen at the next poll.
    pub cross_process_wakeups: bool,
    /// Most jobs one claim returns, if limited.
    pub max_claim_batch: Option<usize>,
    /// The jobs live in the `Database` the provider was built with (the
    /// registry's dependency), so a provider on another database is
    /// needed when that database is replaced. Without it the jobs live
    /// elsewhere, and replacing the database must keep the provider (a
    /// new one would start without the queued jobs of an in-memory queue).
    pub in_database: bool,
}

impl JobsCapabilities {
    /// Everything off.
    pub const fn none() -> Self {
        JobsCapabilities {
            transactional_enqueue: false,
            unique_keys: false,
            shared: false,
            durable: false,
            local_wakeups: false,
            cross_process_wakeups: false,
            max_claim_batch: None,
            in_database: false,
        }
    }
}

impl Default for JobsCapabilities {
    fn default() -> Self {
        Self::none()
    }
}
