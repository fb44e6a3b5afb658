//! TrustStream layers for resilience: timeout, retry with backoff, circuit breaker, concurrency limit.
//!
//! (Being built: see issue 20.)

use truststream_layer::LayerRegistry;

/// Registers this crate's layers.
pub fn register(registry: &mut LayerRegistry) {
    let _ = registry;
}
