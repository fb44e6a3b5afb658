#![doc = include_str!("../README.md")]

mod channel;
mod feed;
mod hub;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use truststream_core::{Error, Health, ProviderInfo};
use truststream_core_db::Database;
use truststream_core_realtime::feed::health_report;
use truststream_core_realtime::{
    validate_channel_name, ChangeSpec, Channel, ChannelOptions, Handler, Realtime,
    RealtimeCapabilities, RealtimeDeps, RealtimeRegistry, RowChange, RtResult, Subscription,
};

use crate::hub::Hub;

/// The type name the provider registers under.
pub const TYPE_NAME: &str = "memory";

/// Configuration of the memory provider (`[realtime]` section with
/// `type = "memory"`). Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryRealtimeConfig {
    /// Largest broadcast payload or presence state, in bytes of serialized
    /// JSON (default 262144, 256 KiB, Supabase's free-tier limit). Larger
    /// ones are refused with `ErrorKind::TooLarge`.
    pub max_payload_bytes: usize,
    /// How many deliveries (broadcasts and presence events) may wait for one
    /// member's handlers (default 1024). A member whose queue is full is
    /// dropped from the channel instead of letting memory grow.
    pub member_queue_capacity: usize,
}

impl Default for MemoryRealtimeConfig {
    fn default() -> Self {
        MemoryRealtimeConfig {
            max_payload_bytes: 256 * 1024,
            member_queue_capacity: 1024,
        }
    }
}

impl MemoryRealtimeConfig {
    /// Checks the limits: both must be at least 1.
    pub fn validate(&self) -> RtResult<()> {
        if self.max_payload_bytes == 0 {
            return Err(Error::invalid_input(
                "realtime memory: max_payload_bytes must be at least 1",
            ));
        }
        if self.member_queue_capacity == 0 {
            return Err(Error::invalid_input(
                "realtime memory: member_queue_capacity must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The in-process realtime hub: channels, broadcast, presence and (when built
/// with a database) row change subscriptions, all inside one process.
///
/// Dropping the last reference shuts the hub down: its background tasks end,
/// every channel handle still around reports not joined, and further calls
/// on those handles fail with `ErrorKind::Unavailable`.
pub struct MemoryRealtime {
    hub: Arc<Hub>,
}

impl MemoryRealtime {
    /// A hub with the default configuration and no change feed (row
    /// subscriptions are `ErrorKind::Unsupported`).
    pub fn new() -> Self {
        MemoryRealtime {
            hub: Hub::new(MemoryRealtimeConfig::default(), None),
        }
    }

    /// A hub with the default configuration whose row subscriptions are fed
    /// by `db`'s change feed.
    pub fn with_change_feed(db: Arc<dyn Database>) -> Self {
        MemoryRealtime {
            hub: Hub::new(MemoryRealtimeConfig::default(), Some(db)),
        }
    }

    /// A hub with `config` and, optionally, a database change feed. An
    /// invalid configuration is `ErrorKind::InvalidInput`.
    pub fn from_config(
        config: MemoryRealtimeConfig,
        db: Option<Arc<dyn Database>>,
    ) -> RtResult<Self> {
        config.validate()?;
        Ok(MemoryRealtime {
            hub: Hub::new(config, db),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &MemoryRealtimeConfig {
        &self.hub.config
    }

    /// How many channels currently exist (a channel exists while at least
    /// one handle on it is alive). For leak tests.
    #[doc(hidden)]
    pub fn channel_count(&self) -> usize {
        self.hub.channel_count()
    }

    /// A gauge of the hub's live background tasks (member delivery tasks and
    /// the change feed reader). It stays readable after the hub is dropped,
    /// so tests can check that every task ended. For leak tests.
    #[doc(hidden)]
    pub fn task_gauge(&self) -> Arc<AtomicUsize> {
        self.hub.tasks.clone()
    }
}

impl Default for MemoryRealtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for MemoryRealtime {
    fn drop(&mut self) {
        self.hub.shutdown();
    }
}

impl std::fmt::Debug for MemoryRealtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRealtime")
            .field("config", &self.hub.config)
            .field("channels", &self.hub.channel_count())
            .field("change_feed", &self.hub.db.is_some())
            .finish()
    }
}

#[async_trait]
impl Realtime for MemoryRealtime {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> RealtimeCapabilities {
        let mut caps = RealtimeCapabilities::channels();
        caps.row_changes = self.hub.row_changes_available();
        caps.remote = false;
        caps.max_payload_bytes = Some(self.hub.config.max_payload_bytes);
        caps
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        health_report(start, self.hub.feed_health.problem())
    }

    /// Shuts the hub down as dropping the provider does: every channel
    /// closed, row subscriptions and the change feed reader stopped. Later
    /// calls fail with `Unavailable`.
    async fn close(&self) -> RtResult<()> {
        self.hub.shutdown();
        Ok(())
    }

    async fn channel(&self, name: &str, options: ChannelOptions) -> RtResult<Arc<dyn Channel>> {
        validate_channel_name(name).map_err(|e| e.with_operation("realtime.channel"))?;
        let handle = channel::MemoryChannel::new(&self.hub, name, options)
            .map_err(|e| e.with_operation("realtime.channel"))?;
        Ok(Arc::new(handle))
    }

    async fn subscribe_changes(
        &self,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> RtResult<Subscription> {
        feed::subscribe(&self.hub, spec, handler)
            .await
            .map_err(|e| e.with_operation("realtime.subscribe_changes"))
    }
}

/// Registers the provider as `"memory"`. When the runtime has a database
/// configured, its change feed feeds row subscriptions.
pub fn register(reg: &mut RealtimeRegistry) {
    reg.register(TYPE_NAME, |cfg, deps: RealtimeDeps| async move {
        let config: MemoryRealtimeConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        let rt = MemoryRealtime::from_config(config, deps.db)?;
        Ok(Arc::new(rt) as Arc<dyn Realtime>)
    });
}
