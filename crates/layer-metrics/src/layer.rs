//! The layer: times each call, records it, and runs it in a span.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;
use truststream_core::{echo, BoxFuture, Result};
use truststream_layer::{Around, Interface, Next, Op};

use crate::{MetricsConfig, MetricsRegistry, NO_TARGET};

/// The metrics and tracing layer (the usage guide's PerformanceMonitor):
/// every call through it is counted, timed and, on failure, counted by
/// error kind in a [`MetricsRegistry`] and in the `metrics` facade
/// ([`crate::CALLS_TOTAL`], [`crate::CALL_DURATION_SECONDS`]), and runs
/// inside a `tracing` span `truststream.call` (debug level, target
/// `truststream_layer_metrics`) with fields `interface`, `provider`,
/// `operation`, `target` and, when it fails, `error` (the kind). Neither the numbers nor the span hold arguments, row data or
/// error messages.
///
/// Time is read from tokio's clock, so a test with paused time sees exact
/// latencies.
///
/// ```
/// use std::sync::Arc;
/// use truststream_core_db::Database;
/// use truststream_layer::around_database;
/// use truststream_layer_metrics::{Metrics, MetricsRegistry};
///
/// fn measured(db: Arc<dyn Database>) -> (Arc<dyn Database>, Arc<MetricsRegistry>) {
///     let registry = Arc::new(MetricsRegistry::new());
///     let layer = Arc::new(Metrics::new(Arc::clone(&registry)));
///     (around_database(db, layer), registry)
/// }
/// ```
#[derive(Debug)]
pub struct Metrics {
    registry: Arc<MetricsRegistry>,
    config: MetricsConfig,
}

impl Metrics {
    /// A layer with the default settings, recording into `registry`.
    pub fn new(registry: Arc<MetricsRegistry>) -> Self {
        Metrics::with_config(registry, MetricsConfig::default())
    }

    /// A layer with `config`, recording into `registry`.
    pub fn with_config(registry: Arc<MetricsRegistry>, config: MetricsConfig) -> Self {
        Metrics { registry, config }
    }

    /// The registry it records into.
    pub fn registry(&self) -> &Arc<MetricsRegistry> {
        &self.registry
    }

    /// Its settings.
    pub fn config(&self) -> &MetricsConfig {
        &self.config
    }
}

impl Around for Metrics {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        // Channel names may name users: left out unless configured.
        let op = if op.interface == Interface::Realtime && !self.config.channel_names {
            Op { target: None, ..op }
        } else {
            op
        };
        Box::pin(async move {
            let start = Instant::now();
            let span = if self.config.tracing {
                tracing::debug_span!(
                    "truststream.call",
                    interface = op.interface.as_str(),
                    provider = op.provider,
                    operation = op.method,
                    target = %echo(op.target.unwrap_or(NO_TARGET)),
                    error = tracing::field::Empty,
                )
            } else {
                tracing::Span::none()
            };
            // A disabled span (no subscriber wants it) costs nothing more.
            let result = if span.is_disabled() {
                next.run().await
            } else {
                let result = next.run().instrument(span.clone()).await;
                if let Err(e) = &result {
                    span.record("error", e.kind().as_str());
                }
                result
            };
            let error = result.as_ref().err().map(|e| e.kind());
            self.registry
                .record(&op, start.elapsed(), error, self.config.max_targets);
            result
        })
    }
}
