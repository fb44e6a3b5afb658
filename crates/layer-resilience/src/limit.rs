//! Concurrency limit with a bounded, timed queue (load shedding).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;
use truststream_core::{BoxFuture, Error, ErrorKind, Result};
use truststream_layer::{Around, Next, Op};

use crate::config::{at_least, at_most};
use crate::layer_error;

/// Settings of the `limit` layer.
///
/// ```toml
/// limit = { max_in_flight = 64, queue = 1024, queue_timeout_ms = 1000 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Calls running at once, at most. Default: four per core
    /// ([`std::thread::available_parallelism`]), at least 16 (calls to a
    /// provider mostly wait on I/O). 1 to 1,000,000.
    pub max_in_flight: usize,
    /// Calls waiting for a place, at most (0 = none wait). Default 1024;
    /// at most 1,000,000.
    pub queue: usize,
    /// How long a call waits for a place, in milliseconds (1 to 86400000).
    /// Default 1000.
    pub queue_timeout_ms: u64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        LimitConfig {
            max_in_flight: (cores * 4).max(16),
            queue: 1024,
            queue_timeout_ms: 1_000,
        }
    }
}

const MAX_COUNT: usize = 1_000_000;
const MAX_MS: u64 = 86_400_000;

impl LimitConfig {
    /// Checks every value: `InvalidInput` naming the key of the first one
    /// out of range.
    pub fn validate(&self) -> Result<()> {
        let count = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        at_least("max_in_flight", count(self.max_in_flight), 1)?;
        at_most("max_in_flight", count(self.max_in_flight), count(MAX_COUNT))?;
        at_most("queue", count(self.queue), count(MAX_COUNT))?;
        at_least("queue_timeout_ms", self.queue_timeout_ms, 1)?;
        at_most("queue_timeout_ms", self.queue_timeout_ms, MAX_MS)?;
        Ok(())
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "max_in_flight={}, queue={}, queue_timeout_ms={}",
            self.max_in_flight, self.queue, self.queue_timeout_ms
        )
    }
}

/// The `limit` layer: at most `max_in_flight` calls run at once; up to
/// `queue` more wait, in arrival order, at most `queue_timeout_ms` each.
/// A call beyond the queue, or that waited too long, is answered
/// [`ErrorKind::RateLimited`] marked [`Error::unapplied`] (it never reached
/// the provider, so a retry layer may repeat even a `create`).
///
/// One limit per provider instance: each stack built from configuration
/// has its own. Refusals are counted ([`Limit::shed`], and through the
/// `metrics` facade as `truststream_limit_shed_total{interface, provider}`).
///
/// ```
/// use std::sync::Arc;
/// use truststream_core_db::Database;
/// use truststream_layer::around_database;
/// use truststream_layer_resilience::{Limit, LimitConfig};
///
/// fn limited(db: Arc<dyn Database>) -> Arc<dyn Database> {
///     let config = LimitConfig { max_in_flight: 32, ..LimitConfig::default() };
///     around_database(db, Arc::new(Limit::new(config)))
/// }
/// ```
#[derive(Debug)]
pub struct Limit {
    permits: Semaphore,
    max_in_flight: usize,
    queue: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
    shed: AtomicU64,
}

impl Limit {
    /// A limit with `config` (values out of range are brought into it;
    /// [`LimitConfig::validate`] rejects them).
    pub fn new(config: LimitConfig) -> Self {
        let max_in_flight = config.max_in_flight.clamp(1, MAX_COUNT);
        Limit {
            permits: Semaphore::new(max_in_flight),
            max_in_flight,
            queue: config.queue.min(MAX_COUNT),
            queue_timeout: Duration::from_millis(config.queue_timeout_ms.clamp(1, MAX_MS)),
            waiting: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
        }
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available_permits()
    }

    /// Calls waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Calls refused so far (queue full or waited too long).
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    fn refuse(&self, op: &Op<'_>, why: &str) -> Error {
        self.shed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "truststream_limit_shed_total",
            "interface" => op.interface.as_str(),
            "provider" => op.provider
        )
        .increment(1);
        let e = Error::new(
            ErrorKind::RateLimited,
            format!(
                "{} provider {} is at its concurrency limit ({} calls in flight): {why}",
                op.interface, op.provider, self.max_in_flight
            ),
        );
        layer_error(e, op).unapplied()
    }
}

/// A place in the queue, given back however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Around for Limit {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        if let Ok(permit) = self.permits.try_acquire() {
            let call = next.run();
            return Box::pin(async move {
                let result = call.await;
                drop(permit);
                result
            });
        }
        Box::pin(async move {
            if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.queue {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                return Err(self.refuse(&op, "the queue is full"));
            }
            let place = Waiting(&self.waiting);
            let permit = tokio::time::timeout(self.queue_timeout, self.permits.acquire()).await;
            drop(place);
            let _permit = match permit {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(Error::internal("the limit's semaphore was closed")),
                Err(_) => {
                    let why = format!("no place within {} ms", self.queue_timeout.as_millis());
                    return Err(self.refuse(&op, &why));
                }
            };
            next.run().await
        })
    }
}
