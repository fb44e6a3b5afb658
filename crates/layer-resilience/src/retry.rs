//! Retries with exponential backoff, full jitter, bounded attempts and a
//! total time budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use tokio::time::Instant;
use truststream_core::{BoxFuture, Error, Result};
use truststream_layer::{Around, Next, Op};

use crate::config::{at_least, at_most};

/// Settings of the `retry` layer.
///
/// ```toml
/// retry = { attempts = 4, base_ms = 50, max_ms = 2000, budget_ms = 5000 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = never repeat). Default 3;
    /// at most 100.
    pub attempts: u32,
    /// The backoff before the first repeat is drawn from `0..=base_ms`,
    /// and the bound doubles with each repeat. Default 50; at least 1.
    pub base_ms: u64,
    /// The bound of a backoff never exceeds this. Default 2000; at least
    /// `base_ms`.
    pub max_ms: u64,
    /// Time for all attempts and backoffs together, from the first
    /// attempt's start: the layer never sleeps past it and gives up early
    /// when the next backoff would cross it. Default 5000; at least 1.
    /// (It does not cut an attempt short: that is the timeout layer's job.)
    pub budget_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            base_ms: 50,
            max_ms: 2_000,
            budget_ms: 5_000,
        }
    }
}

/// One day: longer is almost certainly a unit mistake.
const MAX_MS: u64 = 86_400_000;
const MAX_ATTEMPTS: u32 = 100;

impl RetryConfig {
    /// Checks every value: `InvalidInput` naming the key of the first one
    /// out of range.
    pub fn validate(&self) -> Result<()> {
        at_least("attempts", self.attempts.into(), 1)?;
        at_most("attempts", self.attempts.into(), MAX_ATTEMPTS.into())?;
        at_least("base_ms", self.base_ms, 1)?;
        at_most("base_ms", self.base_ms, MAX_MS)?;
        if self.max_ms < self.base_ms {
            return Err(Error::invalid_input(format!(
                "max_ms must be at least base_ms ({}), not {}",
                self.base_ms, self.max_ms
            )));
        }
        at_most("max_ms", self.max_ms, MAX_MS)?;
        at_least("budget_ms", self.budget_ms, 1)?;
        at_most("budget_ms", self.budget_ms, MAX_MS)?;
        Ok(())
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "attempts={}, base_ms={}, max_ms={}, budget_ms={}",
            self.attempts, self.base_ms, self.max_ms, self.budget_ms
        )
    }
}

/// What a [`Retry`] layer did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// Calls through the layer.
    pub calls: u64,
    /// Attempts beyond each call's first.
    pub retries: u64,
    /// Calls it gave up on with a repeatable error (attempts or budget
    /// exhausted); their error was returned marked permanent.
    pub give_ups: u64,
}

impl RetryStats {
    /// Attempts in all: `calls + retries`.
    pub fn attempts(&self) -> u64 {
        self.calls + self.retries
    }
}

/// The `retry` layer: repeats a call that failed when
/// [`Op::may_repeat`] allows it (a retryable error, replayable arguments,
/// and an idempotent call or an error certain to have changed nothing), with
/// exponential backoff and full jitter, at most `attempts` times in all and
/// within `budget_ms`.
///
/// - A non-idempotent write whose outcome is unknown (a `create` that timed
///   out) is never repeated: it fails with its own error.
/// - An error it gives up on is returned [`Error::permanent`], so an outer
///   retry layer does not repeat it again (stacked retries never multiply).
/// - Retries are logged at `debug`, give-ups at `warn` (interface, provider,
///   method, target and error kind; never the call's values), and counted
///   ([`Retry::stats`], and through the `metrics` facade as
///   `truststream_retries_total` and `truststream_retry_give_ups_total`
///   `{interface, provider, method}`).
///
/// ```
/// use std::sync::Arc;
/// use truststream_core_db::Database;
/// use truststream_layer::around_database;
/// use truststream_layer_resilience::{Retry, RetryConfig};
///
/// fn retried(db: Arc<dyn Database>) -> Arc<dyn Database> {
///     let config = RetryConfig { attempts: 4, ..RetryConfig::default() };
///     around_database(db, Arc::new(Retry::new(config)))
/// }
/// ```
#[derive(Debug)]
pub struct Retry {
    attempts: u32,
    base: Duration,
    max: Duration,
    budget: Duration,
    calls: AtomicU64,
    retries: AtomicU64,
    give_ups: AtomicU64,
}

impl Retry {
    /// A retry layer with `config` (values out of range are brought into
    /// it; [`RetryConfig::validate`] rejects them).
    pub fn new(config: RetryConfig) -> Self {
        let base = config.base_ms.clamp(1, MAX_MS);
        Retry {
            attempts: config.attempts.clamp(1, MAX_ATTEMPTS),
            base: Duration::from_millis(base),
            max: Duration::from_millis(config.max_ms.clamp(base, MAX_MS)),
            budget: Duration::from_millis(config.budget_ms.clamp(1, MAX_MS)),
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            give_ups: AtomicU64::new(0),
        }
    }

    /// What the layer did so far.
    pub fn stats(&self) -> RetryStats {
        RetryStats {
            calls: self.calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            give_ups: self.give_ups.load(Ordering::Relaxed),
        }
    }

    /// The bound of the backoff after failed attempt `n` (1-based):
    /// `base * 2^(n-1)`, at most `max`.
    fn bound(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A backoff drawn uniformly from `0..=bound(n)` (full jitter).
    fn backoff(&self, n: u32) -> Duration {
        let bound = u64::try_from(self.bound(n).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::thread_rng().gen_range(0..=bound))
    }

    fn give_up(&self, op: &Op<'_>, e: Error, attempts: u32, started: Instant, why: &str) -> Error {
        self.give_ups.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "truststream_retry_give_ups_total",
            "interface" => op.interface.as_str(),
            "provider" => op.provider,
            "method" => op.method
        )
        .increment(1);
        tracing::warn!(
            interface = %op.interface,
            provider = op.provider,
            method = op.method,
            target = op.target.unwrap_or(""),
            attempts,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            kind = %e.kind(),
            "retry gave up: {why}"
        );
        e.permanent()
    }
}

impl Around for Retry {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let started = Instant::now();
            let mut attempt = 1;
            loop {
                let last = attempt >= self.attempts;
                let result = if last {
                    next.run().await
                } else {
                    next.run_again_later().await
                };
                let e = match result {
                    Ok(()) => return Ok(()),
                    Err(e) if !op.may_repeat(&e) => return Err(e),
                    Err(e) => e,
                };
                if last {
                    return Err(self.give_up(&op, e, attempt, started, "attempts exhausted"));
                }
                let delay = self.backoff(attempt);
                if started.elapsed() + delay > self.budget {
                    return Err(self.give_up(&op, e, attempt, started, "time budget exhausted"));
                }
                tracing::debug!(
                    interface = %op.interface,
                    provider = op.provider,
                    method = op.method,
                    target = op.target.unwrap_or(""),
                    attempt,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    kind = %e.kind(),
                    "retrying"
                );
                tokio::time::sleep(delay).await;
                self.retries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(
                    "truststream_retries_total",
                    "interface" => op.interface.as_str(),
                    "provider" => op.provider,
                    "method" => op.method
                )
                .increment(1);
                attempt += 1;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let r = Retry::new(RetryConfig {
            attempts: 10,
            base_ms: 50,
            max_ms: 300,
            budget_ms: 10_000,
        });
        let bounds: Vec<u128> = (1..=6).map(|n| r.bound(n).as_millis()).collect();
        assert_eq!(bounds, vec![50, 100, 200, 300, 300, 300]);
        assert_eq!(r.bound(200), Duration::from_millis(300));
        for n in 1..=6 {
            assert!(r.backoff(n) <= r.bound(n));
        }
    }
}
