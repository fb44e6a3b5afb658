//! TrustStream database read cache layer (moka), invalidated on every write path.
//!
//! (Being built: see issue 20.)

use truststream_layer::LayerRegistry;

/// Registers this crate's layers.
pub fn register(registry: &mut LayerRegistry) {
    let _ = registry;
}
