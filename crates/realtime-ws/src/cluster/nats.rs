//! The NATS broker: one connection per node (core pub/sub, `no_echo` so a
//! node never receives its own publishes), reconnecting forever with a
//! delay of at most one second.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Bytes;
use truststream_core::Error;
use truststream_core_realtime::RtResult;

use super::{Broker, ClusterConfig, Links};

struct Nats {
    client: async_nats::Client,
    subject: String,
}

#[async_trait]
impl Broker for Nats {
    async fn publish(&self, batch: &[Bytes]) -> Result<(), String> {
        for m in batch {
            self.client
                .publish(self.subject.clone(), m.clone())
                .await
                .map_err(|e| format!("NATS publish: {e}"))?;
        }
        Ok(())
    }
}

pub(super) async fn connect(config: &ClusterConfig, links: Links) -> RtResult<Box<dyn Broker>> {
    let links = std::sync::Arc::new(links);
    let events = links.clone();
    let client = async_nats::ConnectOptions::new()
        .name(format!("truststream-realtime {}", config.node_id))
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100u64.saturating_mul(attempts as u64).min(1000))
        })
        .event_callback(move |event| {
            let links = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => links.connected(),
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        links.disconnected()
                    }
                    _ => {}
                }
            }
        })
        .connect(config.url.expose())
        .await
        // The error may repeat the URL (and its credentials): not shown.
        .map_err(|e| {
            Error::invalid_input(format!(
                "realtime.cluster: cannot use the NATS url ({:?})",
                e.kind()
            ))
        })?;
    let mut sub = client
        .subscribe(config.prefix.clone())
        .await
        .map_err(|e| Error::unavailable(format!("realtime.cluster: NATS subscribe: {e}")))?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if links.incoming.send(msg.payload).await.is_err() {
                break;
            }
        }
    });
    Ok(Box::new(Nats {
        client,
        subject: config.prefix.clone(),
    }))
}
