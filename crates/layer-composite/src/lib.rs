//! TrustStream composite layer: primary/secondary replication through a durable outbox, reads that fall back to the secondary.
//!
//! (Being built: see issue 20.)

use truststream_layer::LayerRegistry;

/// Registers this crate's layers.
pub fn register(registry: &mut LayerRegistry) {
    let _ = registry;
}
