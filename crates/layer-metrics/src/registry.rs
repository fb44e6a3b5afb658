//! Where the layer's numbers live: one series per interface, provider,
//! operation and target, each with a count, errors by kind and an HDR
//! latency histogram, read back as [`SeriesStats`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use truststream_core::ErrorKind;
use truststream_layer::{Interface, Op};

use crate::facade::Facade;

/// The target label of calls that name no table, bucket or channel.
pub const NO_TARGET: &str = "-";

/// The target label that targets beyond the registry's limit are folded
/// into (see [`crate::MetricsConfig::max_targets`]).
pub const OTHER_TARGET: &str = "other";

/// The longest target name that gets a label of its own, in bytes (table
/// and bucket names are at most 63 in PostgreSQL and S3): a longer one is
/// not a name any provider accepts, and is counted under [`OTHER_TARGET`]
/// so that hostile names cannot fill the labels (as is a name holding a
/// control character).
pub const MAX_TARGET_LEN: usize = 128;

/// Whether `target` may be a label of its own: at most [`MAX_TARGET_LEN`]
/// bytes and no control characters (a caller's name must not carry line
/// breaks or terminal escapes into `truststream stats` and the exported
/// labels).
fn fits_a_label(target: &str) -> bool {
    target.len() <= MAX_TARGET_LEN && !target.chars().any(char::is_control)
}

/// The longest latency the histograms tell apart: 60 s. Longer calls are
/// recorded as 60 s in the percentiles; [`SeriesStats::max`] keeps the
/// exact value.
pub const HISTOGRAM_MAX: Duration = Duration::from_secs(60);

/// [`HISTOGRAM_MAX`] in microseconds.
const HISTOGRAM_MAX_US: u64 = 60_000_000;

/// Significant decimal digits the histograms keep: percentiles are within
/// 1 % of the recorded latency (at microsecond resolution).
const SIGNIFICANT_DIGITS: u8 = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The numbers of one series.
struct SeriesData {
    count: u64,
    /// Failed calls by kind, in the order the kinds were first seen.
    errors: Vec<(ErrorKind, u64)>,
    /// Latencies in microseconds, saturated at [`HISTOGRAM_MAX`]. It grows
    /// with the longest latency recorded (about 2 KiB for 1 ms, 6 KiB for
    /// 100 ms, 10 KiB for 60 s), and its counts saturate at `u32::MAX`
    /// per bucket.
    latency: Histogram<u32>,
    /// The exact longest latency, in microseconds.
    max_us: u64,
    /// The same series in the `metrics` facade's current recorder.
    facade: Option<Facade>,
}

impl SeriesData {
    fn new() -> Self {
        let latency = Histogram::new(SIGNIFICANT_DIGITS)
            .expect("a constant precision hdrhistogram accepts (at most 5 digits)");
        SeriesData {
            count: 0,
            errors: Vec::new(),
            latency,
            max_us: 0,
            facade: None,
        }
    }
}

/// A fast hasher for the short keys of the hot path (SipHash would cost
/// more than the rest of the look-up); keys are not attacker-chosen beyond
/// the bounded targets.
type Hasher = foldhash::fast::RandomState;

/// Series of one interface, provider and operation, by target label.
type Targets = HashMap<Box<str>, Mutex<SeriesData>, Hasher>;

#[derive(Default)]
struct State {
    /// The target names admitted as labels of their own.
    targets: HashSet<Box<str>, Hasher>,
    series: HashMap<(Interface, &'static str, &'static str), Targets, Hasher>,
}

impl State {
    /// The label `target` is counted under, if it needs no new admission:
    /// itself when admitted (or [`NO_TARGET`]), [`OTHER_TARGET`] when the
    /// registry is full; `None` when it would be admitted now.
    fn label<'t>(&self, target: Option<&'t str>, max_targets: usize) -> Option<&'t str> {
        match target {
            None => Some(NO_TARGET),
            Some(t) if !fits_a_label(t) => Some(OTHER_TARGET),
            Some(t) if self.targets.contains(t) => Some(t),
            Some(_) if self.targets.len() >= max_targets => Some(OTHER_TARGET),
            Some(_) => None,
        }
    }
}

/// Counts, errors by kind and latency histograms per interface, provider,
/// operation and target. [`crate::Metrics`] layers record into one; read it
/// with [`MetricsRegistry::snapshot`].
///
/// The layers built from configuration share [`MetricsRegistry::global`];
/// a test or an embedding application can give a layer a registry of its
/// own ([`MetricsRegistry::new`]).
///
/// Recording a call takes a read lock and the series' own mutex, and
/// allocates nothing once the series exists; only a series' first call
/// takes the write lock.
#[derive(Default)]
pub struct MetricsRegistry {
    state: RwLock<State>,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("MetricsRegistry")
            .field("targets", &state.targets.len())
            .field(
                "series",
                &state.series.values().map(HashMap::len).sum::<usize>(),
            )
            .finish()
    }
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry that layers built from configuration
    /// record into (what `truststream stats` shows).
    pub fn global() -> Arc<MetricsRegistry> {
        static GLOBAL: OnceLock<Arc<MetricsRegistry>> = OnceLock::new();
        Arc::clone(GLOBAL.get_or_init(|| Arc::new(MetricsRegistry::new())))
    }

    /// Records one call of `op` that took `elapsed` and failed with `error`
    /// (`None`: succeeded). Its target gets a label of its own while the
    /// registry holds fewer than `max_targets` targets; later new targets
    /// are counted under [`OTHER_TARGET`].
    pub fn record(
        &self,
        op: &Op<'_>,
        elapsed: Duration,
        error: Option<ErrorKind>,
        max_targets: usize,
    ) {
        let key = (op.interface, op.provider, op.method);
        {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(targets) = state.series.get(&key) {
                // The common case: an admitted target (or none) whose series
                // exists. Then a folded one, whose "other" series exists.
                let own = op.target.unwrap_or(NO_TARGET);
                let found = match targets.get(own) {
                    Some(series) => Some((own, series)),
                    None => match state.label(op.target, max_targets) {
                        Some(OTHER_TARGET) => targets.get(OTHER_TARGET).map(|s| (OTHER_TARGET, s)),
                        _ => None,
                    },
                };
                if let Some((label, series)) = found {
                    record_into(&mut lock(series), key, label, elapsed, error);
                    return;
                }
            }
        }
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let label: &str = match state.label(op.target, max_targets) {
            Some(label) => label,
            None => {
                let target = op.target.unwrap_or(NO_TARGET);
                state.targets.insert(target.into());
                target
            }
        };
        let series = state
            .series
            .entry(key)
            .or_default()
            .entry(label.into())
            .or_insert_with(|| Mutex::new(SeriesData::new()));
        record_into(
            series.get_mut().unwrap_or_else(PoisonError::into_inner),
            key,
            label,
            elapsed,
            error,
        );
    }

    /// Every series so far, sorted by interface (in [`Interface::ALL`]
    /// order), provider, operation and target.
    pub fn snapshot(&self) -> Vec<SeriesStats> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for ((interface, provider, operation), targets) in &state.series {
            for (target, series) in targets {
                let data = lock(series);
                let at = |q: f64| {
                    let us = data.latency.value_at_quantile(q).min(data.max_us);
                    Duration::from_micros(us)
                };
                let mut errors = data.errors.clone();
                errors.sort_by_key(|(kind, _)| kind.as_str());
                out.push(SeriesStats {
                    interface: *interface,
                    provider: (*provider).to_string(),
                    operation: (*operation).to_string(),
                    target: target.to_string(),
                    count: data.count,
                    errors,
                    p50: at(0.50),
                    p95: at(0.95),
                    p99: at(0.99),
                    max: Duration::from_micros(data.max_us),
                });
            }
        }
        out.sort_by(|a, b| {
            (a.interface, &a.provider, &a.operation, &a.target).cmp(&(
                b.interface,
                &b.provider,
                &b.operation,
                &b.target,
            ))
        });
        out
    }

    /// Forgets every series and admitted target.
    pub fn clear(&self) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        *state = State::default();
    }
}

fn record_into(
    data: &mut SeriesData,
    key: (Interface, &'static str, &'static str),
    label: &str,
    elapsed: Duration,
    error: Option<ErrorKind>,
) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    data.count += 1;
    // Grows the histogram when needed (rarely: each growth doubles its
    // range); only a failed growth, which 60 s cannot cause, saturates.
    let bounded = us.min(HISTOGRAM_MAX_US);
    if data.latency.record(bounded).is_err() {
        data.latency.saturating_record(bounded);
    }
    data.max_us = data.max_us.max(us);
    if let Some(kind) = error {
        match data.errors.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => data.errors.push((kind, 1)),
        }
    }
    Facade::record(&mut data.facade, key, label, elapsed, error);
}

/// The numbers of one series: calls of one operation of one provider on one
/// target (a table, bucket or channel; [`NO_TARGET`] when the call names
/// none, [`OTHER_TARGET`] for those beyond the limit).
///
/// Serialized (for `truststream stats --json`) with the interface as its
/// name, the errors as a map from kind to count and the latencies in whole
/// microseconds (`p50_us`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesStats {
    /// The interface.
    #[serde(with = "interface_name")]
    pub interface: Interface,
    /// The provider's type name (`"memory"`, `"postgres"`).
    pub provider: String,
    /// The method (`"get"`, `"upload"`).
    pub operation: String,
    /// The table, bucket or channel.
    pub target: String,
    /// Calls, failed ones included.
    pub count: u64,
    /// Failed calls by error kind, sorted by the kind's name.
    #[serde(with = "errors_by_kind")]
    pub errors: Vec<(ErrorKind, u64)>,
    /// Median latency (within 1 %).
    #[serde(rename = "p50_us", with = "micros")]
    pub p50: Duration,
    /// 95th percentile latency (within 1 %).
    #[serde(rename = "p95_us", with = "micros")]
    pub p95: Duration,
    /// 99th percentile latency (within 1 %).
    #[serde(rename = "p99_us", with = "micros")]
    pub p99: Duration,
    /// The longest call (exact, to the microsecond).
    #[serde(rename = "max_us", with = "micros")]
    pub max: Duration,
}

impl SeriesStats {
    /// Failed calls of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    /// Failed calls of `kind`.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

mod interface_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use truststream_layer::Interface;

    pub(super) fn serialize<S: Serializer>(i: &Interface, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(i.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Interface, D::Error> {
        let name = String::deserialize(d)?;
        Interface::ALL
            .into_iter()
            .find(|i| i.as_str() == name)
            .ok_or_else(|| serde::de::Error::custom("unknown interface"))
    }
}

mod errors_by_kind {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};
    use truststream_core::ErrorKind;

    pub(super) fn serialize<S: Serializer>(
        errors: &[(ErrorKind, u64)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(errors.iter().map(|(k, n)| (k.as_str(), n)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(ErrorKind, u64)>, D::Error> {
        let map = BTreeMap::<String, u64>::deserialize(d)?;
        map.into_iter()
            .map(|(k, n)| {
                let kind = ErrorKind::deserialize(serde::de::value::StrDeserializer::<
                    serde::de::value::Error,
                >::new(&k))
                .map_err(|_| serde::de::Error::custom("unknown error kind"))?;
                Ok((kind, n))
            })
            .collect()
    }
}

mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(target: Option<&str>) -> Op<'_> {
        Op {
            interface: Interface::Database,
            provider: "memory",
            method: "get",
            access: truststream_layer::Access::Read,
            target,
            idempotent: true,
            replayable: true,
        }
    }

    #[test]
    fn histograms_grow_with_the_latencies_they_hold() {
        let mut data = SeriesData::new();
        let key = (Interface::Database, "memory", "get");
        record_into(&mut data, key, "t", Duration::from_millis(100), None);
        let at_100ms = data.latency.len();
        record_into(&mut data, key, "t", Duration::from_secs(3600), None);
        let at_max = data.latency.len();
        assert!(at_100ms * 4 <= 6 * 1024, "{at_100ms} counts");
        assert!(at_max * 4 <= 10 * 1024, "{at_max} counts");
        assert_eq!(
            Duration::from_micros(HISTOGRAM_MAX_US),
            HISTOGRAM_MAX,
            "the two spellings of the bound agree"
        );
    }

    #[test]
    fn latencies_beyond_the_histogram_saturate_and_max_stays_exact() {
        let reg = MetricsRegistry::new();
        reg.record(&op(Some("t")), Duration::from_secs(3600), None, 10);
        reg.record(&op(Some("t")), Duration::from_millis(1), None, 10);
        let s = &reg.snapshot()[0];
        assert_eq!(s.count, 2);
        assert_eq!(s.max, Duration::from_secs(3600));
        let p99 = s.p99.as_secs_f64();
        assert!((59.0..=61.0).contains(&p99), "{p99}");
        assert!(s.p50 <= Duration::from_micros(1010), "{:?}", s.p50);
    }

    #[test]
    fn targets_with_control_characters_are_folded() {
        let reg = MetricsRegistry::new();
        reg.record(&op(Some("t\n\x1b[31m")), Duration::from_micros(5), None, 10);
        reg.record(&op(Some("t")), Duration::from_micros(5), None, 10);
        let targets: Vec<_> = reg.snapshot().into_iter().map(|s| s.target).collect();
        assert_eq!(targets, [OTHER_TARGET, "t"]);
    }

    #[test]
    fn stats_round_trip_through_json() {
        let reg = MetricsRegistry::new();
        reg.record(&op(None), Duration::from_micros(1500), None, 10);
        reg.record(
            &op(None),
            Duration::from_micros(700),
            Some(ErrorKind::Timeout),
            10,
        );
        let stats = reg.snapshot();
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json[0]["interface"], "database");
        assert_eq!(json[0]["target"], NO_TARGET);
        assert_eq!(json[0]["errors"]["timeout"], 1);
        assert_eq!(json[0]["max_us"], 1500);
        let back: Vec<SeriesStats> = serde_json::from_value(json).unwrap();
        assert_eq!(back, stats);
    }
}
