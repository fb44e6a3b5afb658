//! What both composites (database and storage) count and log the same
//! way: reads answered by the secondary, and replication passes that fail.
//! Each is counted every time and logged once per transition.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use truststream_core::{ErrorKind, Health, HealthStatus, Result};

use crate::layer::ReplicationLag;

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
    fn note<T>(&self, result: &Result<T>, labels: &Labels) -> bool {
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

impl Fallbacks {
    /// What `primary` answers, or what `secondary()` answers when the
    /// primary's answer calls for it ([`Fallbacks::note`]: `Unavailable` /
    /// `Timeout`, counted); the primary's error when the secondary fails
    /// too. The read-fallback of both composites.
    pub(crate) async fn read<T, S>(
        &self,
        labels: &Labels,
        primary: impl Future<Output = Result<T>>,
        secondary: impl FnOnce() -> S,
    ) -> Result<T>
    where
        S: Future<Output = Result<T>>,
    {
        let result = primary.await;
        if self.note(&result, labels) {
            if let Ok(answer) = secondary().await {
                return Ok(answer);
            }
        }
        result
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

/// A composite's health, built from its sides' and its replication's.
pub(crate) struct Verdict {
    started: Instant,
    status: HealthStatus,
    notes: Vec<String>,
    primary_answers: bool,
}

impl Verdict {
    /// From the primary's and the secondary's health: unhealthy when both
    /// are unreachable; degraded when the primary is unreachable (reads
    /// served by the secondary) or degraded, or the secondary is not
    /// healthy.
    pub(crate) fn of_sides(started: Instant, primary: &Health, secondary: &Health) -> Self {
        let mut v = Verdict {
            started,
            status: HealthStatus::Healthy,
            notes: Vec::new(),
            primary_answers: primary.status != HealthStatus::Unhealthy,
        };
        let detail = |h: &Health| h.message.clone().unwrap_or_else(|| "no detail".into());
        if primary.status == HealthStatus::Unhealthy {
            if secondary.status == HealthStatus::Unhealthy {
                v.status = HealthStatus::Unhealthy;
                v.notes
                    .push("primary and secondary unreachable".to_string());
            } else {
                v.degrade(format!(
                    "primary unreachable ({}): reads served by the secondary, writes fail",
                    detail(primary)
                ));
            }
            return v;
        }
        if primary.status == HealthStatus::Degraded {
            v.degrade(format!("primary degraded: {}", detail(primary)));
        }
        if secondary.status != HealthStatus::Healthy {
            v.degrade(format!(
                "secondary {}: {}",
                secondary.status,
                detail(secondary)
            ));
        }
        v
    }

    /// Whether the primary answers (the replication checks read it).
    pub(crate) fn primary_answers(&self) -> bool {
        self.primary_answers
    }

    /// Degraded (unless worse already), saying why.
    pub(crate) fn degrade(&mut self, why: String) {
        if self.status == HealthStatus::Healthy {
            self.status = HealthStatus::Degraded;
        }
        self.notes.push(why);
    }

    /// The replication lag: a note while entries wait, degraded past
    /// `limit` or when it cannot be read. `what` names the entries
    /// (`"outbox entries"`).
    pub(crate) fn lag(&mut self, lag: Result<ReplicationLag>, limit: Duration, what: &str) {
        match lag {
            Ok(lag) => {
                let note = format!(
                    "replication lag {:.1} s ({} {what})",
                    lag.oldest.as_secs_f64(),
                    lag.entries
                );
                if lag.oldest > limit {
                    self.degrade(note);
                } else if lag.entries > 0 {
                    self.notes.push(note);
                }
            }
            Err(e) => self.degrade(format!("replication lag unknown: {e}")),
        }
    }

    pub(crate) fn into_health(self) -> Health {
        Health {
            status: self.status,
            latency: self.started.elapsed(),
            message: (!self.notes.is_empty()).then(|| self.notes.join("; ")),
        }
    }
}
