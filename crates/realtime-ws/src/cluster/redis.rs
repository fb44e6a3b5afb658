//! The Redis broker: a pub/sub connection that subscribes to the cluster
//! channel (reconnected with a backoff of at most one second when it
//! drops), and a multiplexed connection for publishing (a batch is one
//! pipeline, so a node's messages keep their order).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::Mutex as AsyncMutex;
use tokio_tungstenite::tungstenite::Bytes;
use truststream_core::Error;
use truststream_core_realtime::RtResult;

use super::{Broker, ClusterConfig, Links};

struct Redis {
    client: redis::Client,
    channel: String,
    conn: AsyncMutex<Option<redis::aio::MultiplexedConnection>>,
}

#[async_trait]
impl Broker for Redis {
    async fn publish(&self, batch: &[Bytes]) -> Result<(), String> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let c = tokio::time::timeout(
                Duration::from_secs(2),
                self.client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| "Redis: connecting timed out".to_string())?
            .map_err(|e| format!("Redis: cannot connect ({:?})", e.kind()))?;
            *conn = Some(c);
        }
        let Some(c) = conn.as_mut() else {
            return Err("Redis: no connection".into());
        };
        let mut pipe = redis::pipe();
        for m in batch {
            pipe.cmd("PUBLISH")
                .arg(&self.channel)
                .arg(m.as_ref())
                .ignore();
        }
        let sent = tokio::time::timeout(Duration::from_secs(2), pipe.query_async::<()>(c)).await;
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                *conn = None;
                Err(format!("Redis PUBLISH failed ({:?})", e.kind()))
            }
            Err(_) => {
                *conn = None;
                Err("Redis PUBLISH timed out".into())
            }
        }
    }
}

pub(super) async fn connect(config: &ClusterConfig, links: Links) -> RtResult<Box<dyn Broker>> {
    // The error may repeat the URL (and its credentials): not shown.
    let client = redis::Client::open(config.url.expose()).map_err(|e| {
        Error::invalid_input(format!(
            "realtime.cluster: cannot use the Redis url ({:?})",
            e.kind()
        ))
    })?;
    let links = Arc::new(links);
    tokio::spawn(subscribe_loop(client.clone(), config.prefix.clone(), links));
    Ok(Box::new(Redis {
        client,
        channel: config.prefix.clone(),
        conn: AsyncMutex::new(None),
    }))
}

/// Subscribes, forwards messages until the connection drops, and again.
/// Ends when the node's receiver is gone.
async fn subscribe_loop(client: redis::Client, channel: String, links: Arc<Links>) {
    let mut attempts: u64 = 0;
    loop {
        if links.incoming.is_closed() {
            return;
        }
        let connected = tokio::time::timeout(Duration::from_secs(2), async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        })
        .await;
        match connected {
            Ok(Ok(mut ps)) => {
                attempts = 0;
                links.connected();
                let mut stream = ps.on_message();
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            let bytes = Bytes::copy_from_slice(msg.get_payload_bytes());
                            if links.incoming.send(bytes).await.is_err() {
                                return;
                            }
                        }
                        () = links.incoming.closed() => return,
                    }
                }
                links.disconnected();
            }
            Ok(Err(e)) => {
                tracing::debug!("realtime cluster: Redis subscribe failed ({:?})", e.kind());
                links.disconnected();
            }
            Err(_) => links.disconnected(),
        }
        attempts += 1;
        tokio::time::sleep(Duration::from_millis((100 * attempts).min(1000))).await;
    }
}
