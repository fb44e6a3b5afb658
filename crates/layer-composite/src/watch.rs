//! What both composites (database and storage) count and log the same
//! way: reads answered by the secondary, and replication passes that fail.
//! Each is counted every time and logged once per transition.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use truststream_core::{ErrorKind, Result};

/// The provider labels of the metrics: `primary` and `secondary` names.
pub(crate) type Labels = [(&'static str, String); 2];

/// Reads that fell back to the secondary.
pub(crate) struct Fallbacks {
    /// The metric counting them.
    metric: &'static str,
    /// Which interface, for the log lines (`"database"`, `"storage"`).
    what: &'static str,
    active: AtomicBool,
    count: AtomicU64,
}

impl Fallbacks {
    pub(crate) fn new(metric: &'static str, what: &'static str) -> Self {
        Fallbacks {
            metric,
            what,
            active: AtomicBool::new(false),
            count: AtomicU64::new(0),
        }
    }

    /// How many reads fell back.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the primary's answer to a read calls for the secondary
    /// (`Unavailable` / `Timeout`), counting it.
    pub(crate) fn note<T>(&self, result: &Result<T>, labels: &Labels) -> bool {
        match result {
            Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout) => {
                self.count.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(self.metric, labels).increment(1);
                if !self.active.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        primary = labels[0].1,
                        secondary = labels[1].1,
                        error = %e,
                        "composite: the primary {} does not answer reads; reading from the secondary",
                        self.what
                    );
                }
                true
            }
            Ok(_) => {
                if self.active.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        primary = labels[0].1,
                        "composite: the primary {} answers reads again",
                        self.what
                    );
                }
                false
            }
            Err(_) => false,
        }
    }
}

/// Replication passes that failed.
pub(crate) struct Passes {
    metric: &'static str,
    what: &'static str,
    failing: AtomicBool,
    failed: AtomicU64,
    /// Entries applied and removed.
    pub applied: AtomicU64,
}

impl Passes {
    pub(crate) fn new(metric: &'static str, what: &'static str) -> Self {
        Passes {
            metric,
            what,
            failing: AtomicBool::new(false),
            failed: AtomicU64::new(0),
            applied: AtomicU64::new(0),
        }
    }

    /// How many passes failed.
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Counts and logs the outcome of a pass.
    pub(crate) fn note<T>(&self, result: &Result<T>, labels: &Labels) {
        match result {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        secondary = labels[1].1,
                        "composite: {} replication to the secondary works again",
                        self.what
                    );
                }
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(self.metric, labels).increment(1);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        secondary = labels[1].1,
                        error = %e,
                        "composite: {} replication stopped on an error; retrying every interval",
                        self.what
                    );
                }
            }
        }
    }
}
