//! Run-time percentiles of completed jobs, per job type, for
//! [`crate::JobStats::run_times`]. Providers collect samples (a completed
//! job's `finished_at - started_at`: the run that succeeded, claim to
//! completion) and [`RunTimes::from_samples`] turns them into percentiles,
//! so every provider computes them the same way.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most completed jobs per type that [`crate::Jobs::stats`] samples for run
/// times: the most recently finished ones still kept (completed jobs are
/// sampled until `purge_finished` removes them).
pub const RUN_TIME_SAMPLE: usize = 1_000;

/// Run times of the most recently completed jobs of one type (at most
/// [`RUN_TIME_SAMPLE`] of them), nearest-rank percentiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimes {
    /// The job type.
    pub job_type: String,
    /// How many completed jobs were sampled.
    pub sampled: u64,
    /// Median run time.
    #[serde(with = "crate::serde_ms")]
    pub p50: Duration,
    /// 95th percentile.
    #[serde(with = "crate::serde_ms")]
    pub p95: Duration,
    /// 99th percentile.
    #[serde(with = "crate::serde_ms")]
    pub p99: Duration,
    /// The longest sampled run.
    #[serde(with = "crate::serde_ms")]
    pub max: Duration,
}

impl RunTimes {
    /// Percentiles of `samples` (any order); `None` when there is none.
    pub fn from_samples(job_type: &str, mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            // Nearest rank: the smallest sample with at least p of them at or below it.
            let n = samples.len();
            let r = ((p * n as f64).ceil() as usize).clamp(1, n);
            samples[r - 1]
        };
        Some(RunTimes {
            job_type: job_type.to_string(),
            sampled: samples.len() as u64,
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        })
    }

    /// Groups `(job type, run time)` samples by type (sorted by type),
    /// keeping the first [`RUN_TIME_SAMPLE`] of each type as given (give
    /// the most recent first).
    pub fn by_type(samples: impl IntoIterator<Item = (String, Duration)>) -> Vec<RunTimes> {
        let mut groups: std::collections::BTreeMap<String, Vec<Duration>> = Default::default();
        for (t, d) in samples {
            let g = groups.entry(t).or_default();
            if g.len() < RUN_TIME_SAMPLE {
                g.push(d);
            }
        }
        groups
            .into_iter()
            .filter_map(|(t, s)| RunTimes::from_samples(&t, s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let r = RunTimes::from_samples("t", samples).expect("samples");
        assert_eq!(
            (r.p50, r.p95, r.p99, r.max),
            (ms(50), ms(95), ms(99), ms(100))
        );
        assert_eq!(r.sampled, 100);
        let one = RunTimes::from_samples("t", vec![ms(7)]).expect("one");
        assert_eq!((one.p50, one.p99, one.max), (ms(7), ms(7), ms(7)));
        assert!(RunTimes::from_samples("t", Vec::new()).is_none());
    }

    #[test]
    fn grouped_by_type_and_capped() {
        let mut samples: Vec<(String, Duration)> = (0..RUN_TIME_SAMPLE + 10)
            .map(|_| ("a".to_string(), ms(1)))
            .collect();
        samples.push(("b".into(), ms(3)));
        let r = RunTimes::by_type(samples);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].job_type, "a");
        assert_eq!(r[0].sampled, RUN_TIME_SAMPLE as u64);
        assert_eq!((r[1].job_type.as_str(), r[1].p50), ("b", ms(3)));
    }
}
