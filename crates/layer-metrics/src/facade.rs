//! The same numbers through the `metrics` crate's facade, so any recorder
//! sees them, and a Prometheus text exporter for the gateway's `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use truststream_core::{Error, ErrorKind, Result};
use truststream_layer::Interface;

/// The counter of calls: labels `interface`, `provider`, `operation`,
/// `target` and `outcome` (`"ok"` or the error kind, `"timeout"`).
pub const CALLS_TOTAL: &str = "truststream_calls_total";

/// The histogram of call latencies in seconds: labels `interface`,
/// `provider`, `operation` and `target`.
pub const CALL_DURATION_SECONDS: &str = "truststream_call_duration_seconds";

/// A series' handles in the recorder that was current when they were
/// registered. Registering builds a key with owned labels (allocations and
/// a map look-up in the recorder), so a series does it once per recorder,
/// not once per call.
pub(crate) struct Facade {
    /// Identity of the recorder the handles belong to (its address).
    recorder: usize,
    ok: Counter,
    errors: Vec<(ErrorKind, Counter)>,
    duration: Histogram,
}

fn current_recorder() -> usize {
    metrics::with_recorder(|r| (r as *const dyn Recorder).cast::<()>() as usize)
}

fn labels(
    (interface, provider, operation): (Interface, &'static str, &'static str),
    target: &str,
) -> Vec<metrics::Label> {
    vec![
        metrics::Label::from_static_parts("interface", interface.as_str()),
        metrics::Label::from_static_parts("provider", provider),
        metrics::Label::from_static_parts("operation", operation),
        metrics::Label::new("target", target.to_owned()),
    ]
}

fn outcome_counter(
    key: (Interface, &'static str, &'static str),
    target: &str,
    outcome: &'static str,
) -> Counter {
    let mut labels = labels(key, target);
    labels.push(metrics::Label::from_static_parts("outcome", outcome));
    metrics::counter!(CALLS_TOTAL, labels)
}

impl Facade {
    /// Records one call in the current recorder, (re)registering the
    /// series' handles when the recorder is not the one they belong to.
    pub(crate) fn record(
        slot: &mut Option<Facade>,
        key: (Interface, &'static str, &'static str),
        target: &str,
        elapsed: Duration,
        error: Option<ErrorKind>,
    ) {
        let recorder = current_recorder();
        let facade = match slot {
            Some(f) if f.recorder == recorder => f,
            _ => slot.insert(Facade {
                recorder,
                ok: outcome_counter(key, target, "ok"),
                errors: Vec::new(),
                duration: metrics::histogram!(CALL_DURATION_SECONDS, labels(key, target)),
            }),
        };
        facade.duration.record(elapsed.as_secs_f64());
        match error {
            None => facade.ok.increment(1),
            Some(kind) => {
                if let Some((_, c)) = facade.errors.iter().find(|(k, _)| *k == kind) {
                    c.increment(1);
                } else {
                    let c = outcome_counter(key, target, kind.as_str());
                    c.increment(1);
                    facade.errors.push((kind, c));
                }
            }
        }
    }
}

/// Describes the layer's metrics (help text and units) to the current
/// recorder, and those job workers record
/// (`truststream_core_jobs::metrics`: runs by type and outcome, run times,
/// queue waits). [`install_prometheus`] and [`prometheus_recorder`] do this
/// for theirs; call it once after installing another recorder.
pub fn describe_metrics() {
    truststream_core_jobs::metrics::describe();
    metrics::describe_counter!(
        CALLS_TOTAL,
        Unit::Count,
        SharedString::const_str(
            "Calls through the metrics layer, by interface, provider, operation, target and outcome"
        )
    );
    metrics::describe_histogram!(
        CALL_DURATION_SECONDS,
        Unit::Seconds,
        SharedString::const_str(
            "Latency of calls through the metrics layer, by interface, provider, operation and target"
        )
    );
}

/// Renders the metrics of a Prometheus recorder as Prometheus text (the
/// exposition format a `/metrics` endpoint serves).
#[derive(Clone, Debug)]
pub struct PrometheusExporter {
    handle: PrometheusHandle,
}

impl PrometheusExporter {
    /// Every metric recorded so far, as Prometheus text.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains the recorder's histogram buffers into their summaries (so
    /// they do not grow between scrapes). [`install_prometheus`] runs it
    /// every few seconds; call it yourself for a [`prometheus_recorder`].
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// How often the exporter installed by [`install_prometheus`] drains its
/// histogram buffers.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs a Prometheus recorder as the process's `metrics` recorder (no
/// network listener: serve [`PrometheusExporter::render`] yourself, as the
/// gateway does at `/metrics`) and returns its exporter. Histograms are
/// rendered as summaries (quantiles 0, 0.5, 0.9, 0.95, 0.99, 0.999, 1). A
/// background thread drains the histogram buffers every few seconds.
///
/// Calling it again returns the same exporter. Fails with `Conflict` when
/// another recorder was installed first.
pub fn install_prometheus() -> Result<PrometheusExporter> {
    static INSTALLED: OnceLock<std::result::Result<PrometheusExporter, String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let exporter = PrometheusExporter {
            handle: recorder.handle(),
        };
        metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
        describe_metrics();
        let upkeep = exporter.clone();
        std::thread::Builder::new()
            .name("truststream-metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            })
            .map_err(|e| format!("cannot start the upkeep thread: {e}"))?;
        Ok(exporter)
    });
    installed.clone().map_err(|e| {
        Error::new(
            ErrorKind::Conflict,
            format!("cannot install the Prometheus recorder: {e}"),
        )
    })
}

/// A Prometheus recorder that is not installed, and its exporter: for
/// tests and for embedding with `metrics::set_default_local_recorder` /
/// `metrics::with_local_recorder`. Its metrics are described already.
///
/// ```
/// let (recorder, exporter) = truststream_layer_metrics::prometheus_recorder();
/// metrics::with_local_recorder(&recorder, || {
///     metrics::counter!("demo_total").increment(2);
/// });
/// assert!(exporter.render().contains("demo_total 2"));
/// ```
pub fn prometheus_recorder() -> (impl Recorder + Send + Sync + 'static, PrometheusExporter) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let exporter = PrometheusExporter {
        handle: recorder.handle(),
    };
    metrics::with_local_recorder(&recorder, describe_metrics);
    (recorder, exporter)
}
