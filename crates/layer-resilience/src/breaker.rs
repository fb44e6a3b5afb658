//! Circuit breaker per provider instance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use truststream_core::{BoxFuture, Error, ErrorKind, Result};
use truststream_layer::{Access, Around, Next, Op};

use crate::config::{at_least, at_most};
use crate::layer_error;

/// Settings of the `circuit_breaker` layer.
///
/// ```toml
/// circuit_breaker = { failure_ratio = 0.5, min_calls = 20, window_s = 10, open_s = 30 }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// The breaker opens when at least this share of the calls in the
    /// window failed (more than 0, at most 1). Default 0.5.
    pub failure_ratio: f64,
    /// ... and the window holds at least this many calls (1 to 1,000,000).
    /// Default 20.
    pub min_calls: u64,
    /// The sliding window, in seconds (1 to 86400), kept as ten time
    /// buckets: the calls of the last nine to ten tenths count. Default 10.
    pub window_s: u64,
    /// How long it stays open before one probe call may go through, in
    /// seconds (1 to 86400). Default 30.
    pub open_s: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_ratio: 0.5,
            min_calls: 20,
            window_s: 10,
            open_s: 30,
        }
    }
}

const MAX_S: u64 = 86_400;
const MAX_MIN_CALLS: u64 = 1_000_000;

impl BreakerConfig {
    /// Checks every value: `InvalidInput` naming the key of the first one
    /// out of range.
    pub fn validate(&self) -> Result<()> {
        // Written so that NaN fails too.
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(Error::invalid_input(format!(
                "failure_ratio must be more than 0 and at most 1, not {}",
                self.failure_ratio
            )));
        }
        at_least("min_calls", self.min_calls, 1)?;
        at_most("min_calls", self.min_calls, MAX_MIN_CALLS)?;
        at_least("window_s", self.window_s, 1)?;
        at_most("window_s", self.window_s, MAX_S)?;
        at_least("open_s", self.open_s, 1)?;
        at_most("open_s", self.open_s, MAX_S)?;
        Ok(())
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "failure_ratio={}, min_calls={}, window_s={}, open_s={}",
            self.failure_ratio, self.min_calls, self.window_s, self.open_s
        )
    }
}

/// Where a [`CircuitBreaker`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through and are counted.
    Closed,
    /// Calls are answered `Unavailable` at once. Stays so (as seen by
    /// [`CircuitBreaker::state`]) until a call comes after `open_s`.
    Open,
    /// One probe call is in flight; other calls are answered as while open.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"`, `"half_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often a [`CircuitBreaker`] changed state, by the state it entered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerCounts {
    /// Closed -> open, and half-open -> open (a failed or abandoned probe).
    pub opened: u64,
    /// Open -> half-open (a probe went through).
    pub half_opened: u64,
    /// Half-open -> closed (a probe succeeded).
    pub closed: u64,
}

// The state word: the state in the low two bits, the time it was entered
// (nanoseconds since the breaker's epoch) above them, so that each
// transition is one atomic compare-and-swap.
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const STATE_BITS: u64 = 0b11;

fn word(state: u64, at_nanos: u64) -> u64 {
    (at_nanos << 2) | state
}

// A window bucket, packed in one atomic: which tick it holds (24 bits),
// its calls (20 bits) and its failures (20 bits).
const BUCKETS: u64 = 10;
const COUNT_MASK: u64 = (1 << 20) - 1;
const TAG_MASK: u64 = (1 << 24) - 1;

fn bucket(tag: u64, calls: u64, failures: u64) -> u64 {
    (tag << 40) | (calls.min(COUNT_MASK) << 20) | failures.min(COUNT_MASK)
}

/// How a call's outcome counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The provider answered (a success, or an answer such as `NotFound`).
    Answered,
    /// A temporary failure of the provider (`Unavailable`, `Timeout`).
    Failed,
    /// Says nothing about the provider: not counted.
    Ignored,
}

fn outcome(result: &Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Answered,
        Err(e) => match e.kind() {
            ErrorKind::Unavailable | ErrorKind::Timeout => Outcome::Failed,
            // Load shedding (a concurrency limit below, or the service
            // asking to slow down) is pressure, not an outage: opening the
            // breaker would turn a slow-down into a refusal of every call
            // for `open_s`, and counting it as an answer would dilute the
            // ratio of real failures.
            ErrorKind::RateLimited => Outcome::Ignored,
            _ => Outcome::Answered,
        },
    }
}

/// The `circuit_breaker` layer, one per provider instance: counts the
/// calls of a sliding window and opens when, with at least `min_calls`
/// calls in it, the share of temporary failures reaches `failure_ratio`.
///
/// - Only `Unavailable` and `Timeout` count as failures. `NotFound`,
///   `Conflict`, `InvalidInput`, `PermissionDenied`, `Unauthenticated`,
///   `TooLarge`, `Unsupported` and `Internal` are answers of a working
///   provider; `RateLimited` is not counted at all (load shedding is not an
///   outage).
/// - While open, every call is answered at once with `Unavailable`, marked
///   [`Error::unapplied`] (nothing reached the provider) and
///   [`Error::permanent`] (a retry layer above does not wait on it); the
///   message says how long the breaker stays open.
/// - After `open_s`, exactly one call goes through as a probe (half-open;
///   concurrent calls are refused as while open): an answer closes the
///   breaker with an empty window, a failure opens it for `open_s` again. A
///   probe abandoned by its caller (or shed by a limit below) lets the next
///   call probe at once. A probe that never answers keeps the breaker
///   half-open: keep a timeout below it (a configured stack does).
/// - Transitions are logged (`warn` on opening, `info` otherwise), counted
///   ([`CircuitBreaker::transitions`]) and reported to the `metrics` facade
///   as `truststream_breaker_transitions_total{interface, provider, to}`.
///
/// ```
/// use std::sync::Arc;
/// use truststream_core_db::Database;
/// use truststream_layer::around_database;
/// use truststream_layer_resilience::{BreakerConfig, BreakerState, CircuitBreaker};
///
/// fn guarded(db: Arc<dyn Database>) -> (Arc<dyn Database>, Arc<CircuitBreaker>) {
///     let breaker = Arc::new(CircuitBreaker::new(BreakerConfig::default()));
///     assert_eq!(breaker.state(), BreakerState::Closed);
///     (around_database(db, Arc::clone(&breaker)), breaker)
/// }
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_ratio: f64,
    min_calls: u64,
    open_for: Duration,
    bucket_nanos: u64,
    epoch: Instant,
    state: AtomicU64,
    buckets: [AtomicU64; BUCKETS as usize],
    opened: AtomicU64,
    half_opened: AtomicU64,
    closed: AtomicU64,
}

impl CircuitBreaker {
    /// A closed breaker with `config` (values out of range are brought into
    /// it; [`BreakerConfig::validate`] rejects them).
    pub fn new(config: BreakerConfig) -> Self {
        let ratio = if config.failure_ratio.is_nan() {
            1.0
        } else {
            config.failure_ratio.clamp(f64::MIN_POSITIVE, 1.0)
        };
        let window_s = config.window_s.clamp(1, MAX_S);
        CircuitBreaker {
            failure_ratio: ratio,
            min_calls: config.min_calls.clamp(1, MAX_MIN_CALLS),
            open_for: Duration::from_secs(config.open_s.clamp(1, MAX_S)),
            bucket_nanos: window_s * 1_000_000_000 / BUCKETS,
            epoch: Instant::now(),
            state: AtomicU64::new(word(CLOSED, 0)),
            buckets: Default::default(),
            opened: AtomicU64::new(0),
            half_opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) & STATE_BITS {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// How often the breaker changed state so far.
    pub fn transitions(&self) -> BreakerCounts {
        BreakerCounts {
            opened: self.opened.load(Ordering::Relaxed),
            half_opened: self.half_opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }

    /// The calls and failures in the window now.
    pub fn window(&self) -> (u64, u64) {
        self.totals(self.now() / self.bucket_nanos)
    }

    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX >> 2)
    }

    fn record(&self, tick: u64, failed: bool) {
        let slot = &self.buckets[(tick % BUCKETS) as usize];
        let tag = tick & TAG_MASK;
        let failed = u64::from(failed);
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let new = if current >> 40 == tag {
                let calls = (current >> 20) & COUNT_MASK;
                let failures = current & COUNT_MASK;
                bucket(tag, calls + 1, failures + failed)
            } else {
                bucket(tag, 1, failed)
            };
            match slot.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    fn totals(&self, tick: u64) -> (u64, u64) {
        let tag = tick & TAG_MASK;
        let (mut calls, mut failures) = (0, 0);
        for slot in &self.buckets {
            let v = slot.load(Ordering::Relaxed);
            if (tag.wrapping_sub(v >> 40) & TAG_MASK) < BUCKETS {
                calls += (v >> 20) & COUNT_MASK;
                failures += v & COUNT_MASK;
            }
        }
        (calls, failures)
    }

    fn clear_window(&self) {
        for slot in &self.buckets {
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a call made while closed, and opens on too many failures.
    fn after_closed_call(&self, op: &Op<'_>, result: &Result<()>) {
        let failed = match outcome(result) {
            Outcome::Ignored => return,
            Outcome::Answered => false,
            Outcome::Failed => true,
        };
        let now = self.now();
        let tick = now / self.bucket_nanos;
        self.record(tick, failed);
        if !failed {
            return;
        }
        let (calls, failures) = self.totals(tick);
        #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
        let tripped =
            calls >= self.min_calls && failures as f64 >= self.failure_ratio * calls as f64;
        if tripped {
            let current = self.state.load(Ordering::Acquire);
            if current & STATE_BITS == CLOSED
                && self
                    .state
                    .compare_exchange(
                        current,
                        word(OPEN, now),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
            {
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    interface = %op.interface,
                    provider = op.provider,
                    calls,
                    failures,
                    open_s = self.open_for.as_secs(),
                    "circuit breaker opened"
                );
                count_transition(op, BreakerState::Open);
            }
        }
    }

    fn refuse(&self, op: &Op<'_>, word_seen: u64, now: u64) -> Error {
        let message = if word_seen & STATE_BITS == OPEN {
            let since = Duration::from_nanos(now.saturating_sub(word_seen >> 2));
            let left = self.open_for.saturating_sub(since);
            format!(
                "circuit breaker open for {} provider {}: too many recent calls failed; \
                 it lets a probe call through in {} ms",
                op.interface,
                op.provider,
                left.as_millis()
            )
        } else {
            format!(
                "circuit breaker half-open for {} provider {}: a probe call is in flight",
                op.interface, op.provider
            )
        };
        layer_error(Error::unavailable(message), op)
            .unapplied()
            .permanent()
    }
}

fn count_transition(op: &Op<'_>, to: BreakerState) {
    metrics::counter!(
        "truststream_breaker_transitions_total",
        "interface" => op.interface.as_str(),
        "provider" => op.provider,
        "to" => to.as_str()
    )
    .increment(1);
}

/// The one call let through while half-open. Dropped without an outcome
/// (its caller gave up on it), it puts the breaker back to open as it was,
/// so that the next call probes at once.
struct Probe<'a> {
    breaker: &'a CircuitBreaker,
    op: Op<'a>,
    opened_at: u64,
    settled: bool,
}

impl Probe<'_> {
    fn settle(&mut self, result: &Result<()>) {
        self.settled = true;
        let b = self.breaker;
        let op = &self.op;
        match outcome(result) {
            Outcome::Answered => {
                b.clear_window();
                b.state.store(word(CLOSED, b.now()), Ordering::Release);
                b.closed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    interface = %op.interface,
                    provider = op.provider,
                    "circuit breaker closed: the probe call succeeded"
                );
                count_transition(op, BreakerState::Closed);
            }
            Outcome::Failed => {
                b.state.store(word(OPEN, b.now()), Ordering::Release);
                b.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    interface = %op.interface,
                    provider = op.provider,
                    open_s = b.open_for.as_secs(),
                    "circuit breaker opened again: the probe call failed"
                );
                count_transition(op, BreakerState::Open);
            }
            Outcome::Ignored => self.abandon("the probe call was shed"),
        }
    }

    fn abandon(&self, why: &str) {
        let b = self.breaker;
        b.state.store(word(OPEN, self.opened_at), Ordering::Release);
        b.opened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            interface = %self.op.interface,
            provider = self.op.provider,
            "circuit breaker open again: {why}; the next call probes"
        );
        count_transition(&self.op, BreakerState::Open);
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.abandon("the probe call was abandoned");
        }
    }
}

impl Around for CircuitBreaker {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        if op.access == Access::Admin && op.method == "health" {
            // A health check always answers (its report is the provider's
            // own), so it is neither counted nor ever the half-open probe.
            return next.run();
        }
        let current = self.state.load(Ordering::Acquire);
        if current & STATE_BITS == CLOSED {
            let call = next.run();
            return Box::pin(async move {
                let result = call.await;
                self.after_closed_call(&op, &result);
                result
            });
        }
        let now = self.now();
        let opened_at = current >> 2;
        let due = current & STATE_BITS == OPEN
            && Duration::from_nanos(now.saturating_sub(opened_at)) >= self.open_for;
        let won = if due {
            self.state.compare_exchange(
                current,
                word(HALF_OPEN, now),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
        } else {
            Err(current)
        };
        if let Err(seen) = won {
            if seen & STATE_BITS == CLOSED {
                // Closed meanwhile by a probe: an ordinary call.
                return self.around(op, next);
            }
            let e = self.refuse(&op, seen, now);
            return Box::pin(async move { Err(e) });
        }
        self.half_opened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            interface = %op.interface,
            provider = op.provider,
            "circuit breaker half-open: one probe call goes through"
        );
        count_transition(&op, BreakerState::HalfOpen);
        let mut probe = Probe {
            breaker: self,
            op,
            opened_at,
            settled: false,
        };
        let call = next.run();
        Box::pin(async move {
            let result = call.await;
            probe.settle(&result);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_within_the_window_only() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        b.record(5, false);
        b.record(5, true);
        b.record(6, true);
        assert_eq!(b.totals(6), (3, 2));
        assert_eq!(b.totals(14), (3, 2));
        assert_eq!(b.totals(15), (1, 1));
        assert_eq!(b.totals(16), (0, 0));
        // A slot reused for a later tick starts from zero.
        b.record(15, false);
        assert_eq!(b.totals(15), (2, 1));
        b.clear_window();
        assert_eq!(b.totals(15), (0, 0));
    }

    #[test]
    fn counts_saturate_instead_of_spilling() {
        let b = CircuitBreaker::new(BreakerConfig::default());
        b.buckets[0].store(bucket(0, COUNT_MASK, COUNT_MASK), Ordering::Relaxed);
        b.record(0, true);
        assert_eq!(b.totals(0), (COUNT_MASK, COUNT_MASK));
    }
}
