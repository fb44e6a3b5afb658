//! In-memory database provider (stub: being written).
#![allow(missing_docs)]
use std::sync::Arc;
use truststream_core_db::{Database, DbRegistry};

/// Configuration of the memory provider.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct MemoryConfig {}

/// The in-memory database.
#[derive(Debug, Default)]
pub struct MemoryDatabase {}

impl MemoryDatabase {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Registers the provider as `"memory"`.
pub fn register(reg: &mut DbRegistry) {
    reg.register("memory", |cfg, ()| async move {
        let _cfg: MemoryConfig = truststream_core::parse_config("memory", cfg)?;
        Err::<Arc<dyn Database>, _>(truststream_core::Error::unsupported(
            "db-memory is being written",
        ))
    });
}
