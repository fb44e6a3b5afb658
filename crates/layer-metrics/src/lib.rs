//! TrustStream metrics and tracing layer: counts, errors by kind and latency percentiles per call, Prometheus text.
//!
//! (Being built: see issue 20.)

use truststream_layer::LayerRegistry;

/// Registers this crate's layers.
pub fn register(registry: &mut LayerRegistry) {
    let _ = registry;
}
