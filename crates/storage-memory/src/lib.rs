//! In-memory storage provider (stub: being written).
#![allow(missing_docs)]
use std::sync::Arc;
use truststream_core_storage::{Storage, StorageRegistry};

/// Configuration of the memory provider.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct MemoryStorageConfig {}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStorage {}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Registers the provider as `"memory"`.
pub fn register(reg: &mut StorageRegistry) {
    reg.register("memory", |cfg, ()| async move {
        let _cfg: MemoryStorageConfig = truststream_core::parse_config("memory", cfg)?;
        Err::<Arc<dyn Storage>, _>(truststream_core::Error::unsupported(
            "storage-memory is being written",
        ))
    });
}
