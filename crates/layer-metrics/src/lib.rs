//! TrustStream metrics and tracing layer (the usage guide's
//! PerformanceMonitor): per interface, provider, operation and target
//! (table, bucket or channel), the number of calls, the errors by kind and
//! the latency p50 / p95 / p99 / max from an HDR histogram.
//!
//! - [`Metrics`] is a generic layer ([`truststream_layer::Around`]) for all
//!   four interfaces, built from configuration as `metrics` (settings:
//!   [`MetricsConfig`]) at [`truststream_layer::rank::METRICS`], the
//!   outermost place: it sees what the caller sees, cache hits and retries
//!   included.
//! - It records into a [`MetricsRegistry`] ([`MetricsRegistry::global`]
//!   for layers built from configuration), read with
//!   [`MetricsRegistry::snapshot`] as [`SeriesStats`] and printed with
//!   [`render_table`] (`truststream stats`).
//! - The same numbers go through the `metrics` crate's facade
//!   ([`CALLS_TOTAL`], [`CALL_DURATION_SECONDS`]) to whatever recorder is
//!   installed; [`install_prometheus`] installs one whose
//!   [`PrometheusExporter::render`] gives the Prometheus text (served by the
//!   gateway at `/metrics`; this crate opens no listener).
//! - Each call runs in a `tracing` span `truststream.call`.
//!
//! Label cardinality is bounded: after [`MetricsConfig::max_targets`]
//! distinct targets, calls on new ones are counted under [`OTHER_TARGET`],
//! as are calls on targets longer than [`MAX_TARGET_LEN`] or holding a
//! control character.
//!
//! ```
//! use serde_json::json;
//! use truststream_layer::{Interface, LayerDeps, LayerRegistry};
//!
//! let mut registry = LayerRegistry::new();
//! truststream_layer_metrics::register(&mut registry);
//! let layers = json!({ "metrics": { "max_targets": 200 } });
//! let stack = registry
//!     .stack(Interface::Storage, layers.as_object().unwrap(), &LayerDeps::default())
//!     .unwrap();
//! assert_eq!(stack.describe(), ["metrics(tracing=true, max_targets=200)"]);
//! ```

mod config;
mod facade;
mod layer;
mod registry;
mod table;

use std::sync::Arc;

use async_trait::async_trait;
use truststream_core::Result;
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_core_storage::Storage;
use truststream_layer::{
    around_auth, around_database, around_realtime, around_storage, rank, Around, Interface,
    LayerRegistry, LayerSpec,
};

pub use config::MetricsConfig;
pub use facade::{
    describe_metrics, install_prometheus, prometheus_recorder, PrometheusExporter, CALLS_TOTAL,
    CALL_DURATION_SECONDS,
};
pub use layer::Metrics;
pub use registry::{
    MetricsRegistry, SeriesStats, HISTOGRAM_MAX, MAX_TARGET_LEN, NO_TARGET, OTHER_TARGET,
};
pub use table::{format_duration, render_table};

/// The layer's name in configuration.
pub const NAME: &str = "metrics";

/// Registers the `metrics` layer, recording into
/// [`MetricsRegistry::global`].
pub fn register(registry: &mut LayerRegistry) {
    register_with(registry, MetricsRegistry::global());
}

/// Registers the `metrics` layer, recording into `metrics` (a test's own
/// registry).
pub fn register_with(registry: &mut LayerRegistry, metrics: Arc<MetricsRegistry>) {
    registry.register(NAME, rank::METRICS, move |settings, _deps| {
        let config = MetricsConfig::from_settings(settings)?;
        Ok(Arc::new(Spec {
            config,
            registry: Arc::clone(&metrics),
        }) as Arc<dyn LayerSpec>)
    });
}

struct Spec {
    config: MetricsConfig,
    registry: Arc<MetricsRegistry>,
}

impl Spec {
    fn layer(&self) -> Arc<Metrics> {
        Arc::new(Metrics::with_config(
            Arc::clone(&self.registry),
            self.config.clone(),
        ))
    }
}

#[async_trait]
impl LayerSpec for Spec {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> String {
        let mut out = format!(
            "tracing={}, max_targets={}",
            self.config.tracing, self.config.max_targets
        );
        if self.config.channel_names {
            out.push_str(", channel_names=true");
        }
        out
    }

    fn around(&self, _interface: Interface, _provider: &'static str) -> Option<Arc<dyn Around>> {
        Some(self.layer())
    }

    async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        Ok(around_database(inner, self.layer()))
    }

    async fn wrap_auth(&self, inner: Arc<dyn Auth>) -> Result<Arc<dyn Auth>> {
        Ok(around_auth(inner, self.layer()))
    }

    async fn wrap_storage(&self, inner: Arc<dyn Storage>) -> Result<Arc<dyn Storage>> {
        Ok(around_storage(inner, self.layer()))
    }

    async fn wrap_realtime(&self, inner: Arc<dyn Realtime>) -> Result<Arc<dyn Realtime>> {
        Ok(around_realtime(inner, self.layer()))
    }
}
