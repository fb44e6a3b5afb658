//! The NATS broker: one connection per node (core pub/sub, `no_echo` so a
//! node never receives its own publishes), reconnecting forever with a
//! delay of at most one second. Messages async-nats drops because the node
//! reads too slowly (its slow-consumer events) are counted as `missed`, and
//! the node resynchronises.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Bytes;
use truststream_core::Error;
use truststream_core_realtime::RtResult;

use super::{Broker, ClusterConfig, Links};

/// Messages async-nats holds for the node's subscription before it drops
/// new ones (async-nats's default, stated here).
const SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

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

/// Credentials written in the broker URL.
#[derive(Debug, PartialEq)]
enum Credentials {
    /// `nats://user:password@host`
    UserPassword(String, String),
    /// `nats://token@host`
    Token(String),
}

/// Takes the credentials out of the broker URL. async-nats ignores a URL's
/// user and password (nats-io/nats.rs#1623: it would connect without them)
/// and logs the address it dials at debug level: it gets them through its
/// options instead, and an address without them. As other NATS clients do,
/// `user:password@` is a user and password and a bare `user@` a token.
fn split_credentials(url: &str) -> RtResult<(async_nats::ServerAddr, Option<Credentials>)> {
    // Neither error repeats the URL (it may hold credentials).
    let unusable = || Error::invalid_input("realtime.cluster: the NATS url is not a valid URL");
    let addr: async_nats::ServerAddr = url.parse().map_err(|_| unusable())?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| unusable())
    };
    let credentials = match (addr.username(), addr.password()) {
        (None, None) => return Ok((addr, None)),
        (Some(user), Some(password)) => Credentials::UserPassword(decode(user)?, decode(password)?),
        (Some(token), None) => Credentials::Token(decode(token)?),
        (None, Some(password)) => Credentials::UserPassword(String::new(), decode(password)?),
    };
    let mut bare = addr.into_inner();
    bare.set_username("").map_err(|()| unusable())?;
    bare.set_password(None).map_err(|()| unusable())?;
    let addr = async_nats::ServerAddr::from_url(bare).map_err(|_| unusable())?;
    Ok((addr, Some(credentials)))
}

pub(super) async fn connect(config: &ClusterConfig, links: Links) -> RtResult<Box<dyn Broker>> {
    connect_with(config, links, SUBSCRIPTION_CAPACITY).await
}

async fn connect_with(
    config: &ClusterConfig,
    links: Links,
    subscription_capacity: usize,
) -> RtResult<Box<dyn Broker>> {
    let (addr, credentials) = split_credentials(config.url.expose())?;
    let links = std::sync::Arc::new(links);
    let events = links.clone();
    let options = match credentials {
        None => async_nats::ConnectOptions::new(),
        Some(Credentials::UserPassword(user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        Some(Credentials::Token(token)) => async_nats::ConnectOptions::with_token(token),
    };
    let client = options
        .name(format!("truststream-realtime {}", config.node_id))
        .no_echo()
        .subscription_capacity(subscription_capacity)
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
                    // One per message dropped (as far as async-nats's own
                    // bounded event queue lets them through).
                    async_nats::Event::SlowConsumer(_) => links.missed(),
                    _ => {}
                }
            }
        })
        .connect(addr)
        .await
        // The error may repeat the URL: not shown.
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::sync::{mpsc, watch};

    use super::super::ClusterStats;
    use super::*;

    /// A node that does not keep up: async-nats drops what its
    /// subscription cannot hold, and the node counts it (on the machine's
    /// NATS, on a subject of the test's own).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_a_slow_node_misses_are_counted() {
        const NATS: &str = "nats://127.0.0.1:4222";
        let up = std::net::TcpStream::connect_timeout(
            &"127.0.0.1:4222".parse().unwrap(),
            Duration::from_secs(2),
        )
        .is_ok();
        if !up {
            assert!(
                !truststream_core::in_ci(),
                "CI=true and this test needs NATS on 127.0.0.1:4222"
            );
            eprintln!("SKIPPED: NATS is not answering on 127.0.0.1:4222");
            return;
        }
        let stats = Arc::new(ClusterStats::default());
        // The node never reads: one message waits in this queue, one in the
        // forwarding task, 4 in the subscription; async-nats drops the rest.
        let (incoming, _never_read) = mpsc::channel(1);
        let (state, mut state_rx) = watch::channel((false, 0));
        let mut config = ClusterConfig::new("nats", NATS, "slow");
        config.prefix = format!("test.slow.{}", uuid::Uuid::new_v4().simple());
        let links = Links {
            incoming,
            state,
            stats: stats.clone(),
        };
        let _broker = connect_with(&config, links, 4).await.unwrap();
        state_rx.wait_for(|(up, _)| *up).await.unwrap();
        let other = async_nats::connect(NATS).await.unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while stats.missed.load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < end,
                "no dropped message was counted in 10 s"
            );
            for _ in 0..50 {
                other
                    .publish(config.prefix.clone(), Bytes::from_static(b"x"))
                    .await
                    .unwrap();
            }
            other.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn credentials_leave_the_url_for_the_options() {
        let (addr, c) = split_credentials("nats://alice:p%40ss@127.0.0.1:4222").unwrap();
        assert_eq!(addr.as_url_str(), "nats://127.0.0.1:4222");
        assert_eq!(
            c,
            Some(Credentials::UserPassword("alice".into(), "p@ss".into()))
        );
        let (addr, c) = split_credentials("nats://s3cr3t@10.0.0.5:4222").unwrap();
        assert_eq!(addr.as_url_str(), "nats://10.0.0.5:4222");
        assert_eq!(c, Some(Credentials::Token("s3cr3t".into())));
        let (addr, c) = split_credentials("127.0.0.1:4222").unwrap();
        assert_eq!(addr.as_url_str(), "nats://127.0.0.1:4222");
        assert_eq!(c, None);
        let e = split_credentials("http://alice:hunter2@x").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
