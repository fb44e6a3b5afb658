//! Delay before a retry: exponential, capped, with jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use truststream_core::Error;

use crate::JobsResult;

/// How long a failed job waits before its next attempt.
///
/// The delay after attempt `n` (1-based) is `initial * factor^(n-1)`, capped
/// at `max`, then reduced by a random part of up to `jitter` of itself, so
/// jobs that failed together do not all retry at the same instant:
/// `delay ∈ [base * (1 - jitter), base]`.
///
/// ```
/// use std::time::Duration;
/// use truststream_core_jobs::Backoff;
///
/// let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60)).jitter(0.0);
/// assert_eq!(b.delay(1, 0.5), Duration::from_secs(1));
/// assert_eq!(b.delay(3, 0.5), Duration::from_secs(4));
/// assert_eq!(b.delay(30, 0.5), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    #[serde(rename = "initial_ms", with = "crate::serde_ms")]
    pub initial: Duration,
    /// Longest delay.
    #[serde(rename = "max_ms", with = "crate::serde_ms")]
    pub max: Duration,
    /// Growth per attempt (1 or more; 1 means a fixed delay).
    pub factor: f64,
    /// Part of each delay that is random, from 0 (none) to 1.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 1 s, doubling, at most 1 hour, 20 % jitter.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            factor: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Doubling from `initial` up to `max`, 20 % jitter.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            factor: 2.0,
            jitter: 0.2,
        }
    }

    /// The same delay every time, 20 % jitter.
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            initial: delay,
            max: delay,
            factor: 1.0,
            jitter: 0.2,
        }
    }

    /// Sets the growth factor.
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the jitter (0 to 1).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the numbers: `factor` finite and at least 1, `jitter` in
    /// `0..=1`, `initial <= max`.
    pub fn validate(&self) -> JobsResult<()> {
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(Error::invalid_input(format!(
                "backoff factor must be a finite number of at least 1, got {}",
                self.factor
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid_input(format!(
                "backoff jitter must be between 0 and 1, got {}",
                self.jitter
            )));
        }
        if self.initial > self.max {
            return Err(Error::invalid_input(format!(
                "backoff initial delay {:?} is longer than its maximum {:?}",
                self.initial, self.max
            )));
        }
        Ok(())
    }

    /// The un-jittered delay after attempt `attempt` (1-based).
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(1024) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let max = self.max.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay after attempt `attempt` with `random` (in `0..1`) choosing
    /// the jitter: `base * (1 - jitter * random)`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let base = self.base_delay(attempt);
        let cut = (self.jitter * random.clamp(0.0, 1.0)).clamp(0.0, 1.0);
        base.mul_f64(1.0 - cut)
    }

    /// The delay after attempt `attempt`, jittered at random.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(2), Duration::from_millis(200));
        assert_eq!(b.base_delay(5), Duration::from_secs(1));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(1));
        for r in [0.0, 0.3, 0.999] {
            let d = b.delay(2, r);
            assert!(
                d <= Duration::from_millis(200) && d >= Duration::from_millis(160),
                "{d:?}"
            );
        }
        for _ in 0..100 {
            let d = b.next_delay(1);
            assert!(
                d <= Duration::from_millis(100) && d >= Duration::from_millis(80),
                "{d:?}"
            );
        }
    }

    #[test]
    fn bad_numbers_are_invalid_input() {
        let ok = Backoff::default();
        assert!(ok.validate().is_ok());
        for bad in [
            ok.factor(0.5),
            ok.factor(f64::NAN),
            ok.jitter(-0.1),
            ok.jitter(1.5),
            Backoff::exponential(Duration::from_secs(10), Duration::from_secs(1)),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stored_as_milliseconds() {
        let v = serde_json::to_value(Backoff::fixed(Duration::from_millis(1500))).expect("json");
        assert_eq!(v["initial_ms"], 1500);
        assert_eq!(v["max_ms"], 1500);
        let back: Backoff = serde_json::from_value(v).expect("back");
        assert_eq!(back.initial, Duration::from_millis(1500));
    }
}
