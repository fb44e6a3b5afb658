//! In-process realtime provider (stub: being written).
#![allow(missing_docs)]
use std::sync::Arc;
use truststream_core_realtime::{Realtime, RealtimeDeps, RealtimeRegistry};

/// Configuration of the memory provider.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct MemoryRealtimeConfig {}

/// The in-process realtime hub.
#[derive(Default)]
pub struct MemoryRealtime {}

impl MemoryRealtime {
    /// A hub with no change feed.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Registers the provider as `"memory"`.
pub fn register(reg: &mut RealtimeRegistry) {
    reg.register("memory", |cfg, _deps: RealtimeDeps| async move {
        let _cfg: MemoryRealtimeConfig = truststream_core::parse_config("memory", cfg)?;
        Err::<Arc<dyn Realtime>, _>(truststream_core::Error::unsupported(
            "realtime-memory is being written",
        ))
    });
}
