//! The realtime provider a read-only check builds in place of a server.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    ChangeSpec, Channel, ChannelOptions, Error, Handler, Health, ProviderInfo, Realtime,
    RealtimeCapabilities, RowChange, RtResult, Subscription,
};

/// A server-mode realtime provider built by a read-only check
/// ([`truststream_core::BuildOptions::read_only`], `truststream health`):
/// its configuration was checked (addresses, publication, access rules)
/// but it binds no port, joins no cluster and starts no task, so a health
/// check run beside the running application does not fail because the
/// application holds the port.
///
/// [`Realtime::health`] is healthy with a note saying so (the check proves
/// the configuration, not that a server answers); channels and row
/// subscriptions are `Unavailable`.
#[derive(Debug, Clone)]
pub struct NotServing {
    info: ProviderInfo,
    capabilities: RealtimeCapabilities,
    what: String,
}

impl NotServing {
    /// A provider `info` with `capabilities` that would serve on `what`
    /// (e.g. `realtime.listen 127.0.0.1:4000`).
    pub fn new(
        info: ProviderInfo,
        capabilities: RealtimeCapabilities,
        what: impl Into<String>,
    ) -> Self {
        NotServing {
            info,
            capabilities,
            what: what.into(),
        }
    }

    /// A remote server provider `name` (version `version`) that would
    /// listen on `listen` (the `realtime.listen` setting): channels, row
    /// changes when `db` has a change feed, payloads up to
    /// `max_payload_bytes` — the capabilities the running server reports.
    pub fn server(
        name: &'static str,
        version: &'static str,
        listen: &str,
        max_payload_bytes: usize,
        db: Option<&Arc<dyn truststream_core_db::Database>>,
    ) -> Self {
        let mut caps = RealtimeCapabilities::channels();
        caps.remote = true;
        caps.row_changes = crate::feed::row_changes_available(db);
        caps.max_payload_bytes = Some(max_payload_bytes);
        NotServing::new(
            ProviderInfo { name, version },
            caps,
            format!("realtime.listen {listen}"),
        )
    }

    /// The note [`Realtime::health`] reports.
    pub fn note(&self) -> String {
        format!(
            "configuration valid; not serving in this process: a read-only check \
             (`truststream health`) does not bind {} (the running application serves it)",
            self.what
        )
    }

    fn refused(&self) -> Error {
        Error::unavailable(format!(
            "realtime {:?} was built by a read-only check and serves nothing: {}",
            self.info.name,
            self.note()
        ))
        .permanent()
    }
}

#[async_trait]
impl Realtime for NotServing {
    fn info(&self) -> ProviderInfo {
        self.info.clone()
    }

    fn capabilities(&self) -> RealtimeCapabilities {
        self.capabilities.clone()
    }

    async fn health(&self) -> Health {
        let mut h = Health::healthy(Duration::ZERO);
        h.message = Some(self.note());
        h
    }

    async fn channel(&self, _name: &str, _options: ChannelOptions) -> RtResult<Arc<dyn Channel>> {
        Err(self.refused())
    }

    async fn subscribe_changes(
        &self,
        _spec: ChangeSpec,
        _handler: Handler<RowChange>,
    ) -> RtResult<Subscription> {
        Err(self.refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use truststream_core::HealthStatus;

    #[tokio::test]
    async fn reports_healthy_with_a_note_and_refuses_channels() {
        let rt = NotServing::new(
            ProviderInfo {
                name: "ws",
                version: "0",
            },
            RealtimeCapabilities::channels(),
            "realtime.listen 127.0.0.1:4000",
        );
        let h = rt.health().await;
        assert_eq!(h.status, HealthStatus::Healthy);
        let note = h.message.unwrap_or_default();
        assert!(note.contains("not serving in this process"), "{note}");
        assert!(note.contains("realtime.listen 127.0.0.1:4000"), "{note}");
        let e = rt
            .channel("room", ChannelOptions::default())
            .await
            .err()
            .expect("refused");
        assert_eq!(e.kind(), crate::ErrorKind::Unavailable);
    }
}
