//! The server mode's guards: the handshake's token check (deny by
//! default), the publication of tables, and the slow-client disconnect.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core::ErrorKind;
use truststream_core_auth::{Auth, SignUp};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_core_realtime::{handler, ChangeSpec, ChannelOptions, Realtime, RowChange};
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_socketio::{SocketIoConfig, SocketIoRealtime};

async fn jwt(db: Arc<dyn Database>) -> Arc<JwtAuth> {
    let mut cfg = JwtAuthConfig::with_secret("socketio test secret, at least 32 bytes");
    cfg.argon2 = Argon2Cost::minimal();
    Arc::new(JwtAuth::new(cfg, db).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_and_anonymous_clients_refused_by_default() {
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let auth = jwt(db.clone()).await;
    let token = auth
        .sign_up(SignUp::new("ada@example.com", "a long enough password 1"))
        .await
        .unwrap()
        .access_token
        .expose()
        .to_string();
    let dyn_auth: Arc<dyn Auth> = auth;
    let server = SocketIoRealtime::start(
        SocketIoConfig::server("127.0.0.1:0"),
        Some(db),
        Some(dyn_auth),
    )
    .await
    .unwrap();
    let url = server.url().unwrap();
    for bad in [None, Some("not a token"), Some(&token[..token.len() - 2])] {
        let e = SocketIoRealtime::connect(SocketIoConfig::client(&url, bad))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{bad:?}: {e}");
        if let Some(b) = bad {
            assert!(!e.to_string().contains(b), "the token leaked: {e}");
        }
    }
    let ok = SocketIoRealtime::connect(SocketIoConfig::client(&url, Some(&token)))
        .await
        .unwrap();
    assert!(ok.health().await.is_healthy());
    assert_eq!(
        server.counters().unwrap().refused.load(Ordering::Relaxed),
        3
    );

    // Without an auth provider, clients are refused unless allowed.
    let closed = SocketIoRealtime::start(SocketIoConfig::server("127.0.0.1:0"), None, None)
        .await
        .unwrap();
    let e = SocketIoRealtime::connect(SocketIoConfig::client(
        closed.url().unwrap(),
        Some("anything"),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(e.message().contains("anonymous"), "{e}");
}

#[tokio::test]
async fn private_tables_cannot_be_published_and_limits_are_checked() {
    for publish in ["auth_users", "auth*", "*", "_truststream_jobs", "a*"] {
        let mut config = SocketIoConfig::server("127.0.0.1:0");
        config.allow_anonymous = true;
        config.publish = vec![publish.into()];
        let e = SocketIoRealtime::embedded(config, None, None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{publish}: {e}");
    }
    let mut config = SocketIoConfig::server("127.0.0.1:0");
    config.outgoing_queue_bytes = 1000;
    let e = SocketIoRealtime::embedded(config, None, None)
        .await
        .unwrap_err();
    assert!(e.message().contains("outgoing_queue_bytes"), "{e}");
    let config = SocketIoConfig::client("https://example.invalid", None);
    let e = SocketIoRealtime::connect(config).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    // The token never shows in Debug.
    let config = SocketIoConfig::client("http://127.0.0.1:1", Some("hunter2-secret"));
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_subscriptions_per_connection_are_bounded() {
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    db.create_table(&TableSchema::new("items").column(ColumnDef::text("id").primary_key()))
        .await
        .unwrap();
    let mut config = SocketIoConfig::server("127.0.0.1:0");
    config.allow_anonymous = true;
    config.max_channels_per_connection = 2;
    config.publish = vec!["items".into()];
    config.tables.insert(
        "items".into(),
        truststream_realtime_socketio::TableRule {
            anon: true,
            ..Default::default()
        },
    );
    let server = SocketIoRealtime::start(config, Some(db), None)
        .await
        .unwrap();
    let client = SocketIoRealtime::connect(SocketIoConfig::client(server.url().unwrap(), None))
        .await
        .unwrap();
    let spec = || ChangeSpec::table("items");
    let first = client
        .subscribe_changes(spec(), handler(|_: RowChange| {}))
        .await
        .unwrap();
    let _second = client
        .subscribe_changes(spec(), handler(|_: RowChange| {}))
        .await
        .unwrap();
    let e = client
        .subscribe_changes(spec(), handler(|_: RowChange| {}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert!(e.message().contains("max_channels_per_connection"), "{e}");
    // Ending one makes room (the unsubscribe goes ahead on the connection).
    drop(first);
    let _third = client
        .subscribe_changes(spec(), handler(|_: RowChange| {}))
        .await
        .unwrap();
}

/// A raw engine.io client that joins `bench` and then stops reading.
async fn raw_member(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let target = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(target).await.unwrap();
    ws.next().await.unwrap().unwrap(); // engine.io open
    ws.send(WsMessage::text("40")).await.unwrap();
    loop {
        if let Some(Ok(WsMessage::Text(t))) = ws.next().await {
            if t.starts_with("40") {
                break;
            }
        }
    }
    ws.send(WsMessage::text(r#"421["rt:join",{"channel":"bench"}]"#))
        .await
        .unwrap();
    loop {
        if let Some(Ok(WsMessage::Text(t))) = ws.next().await {
            if t.starts_with("431") {
                assert!(t.contains("\"ok\":true"), "{t}");
                break;
            }
        }
    }
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected_with_a_reason() {
    let mut config = SocketIoConfig::server("127.0.0.1:0");
    config.allow_anonymous = true;
    config.max_payload_bytes = 2048;
    config.outgoing_queue_bytes = 2048 + 65536;
    config.engine_buffer_packets = 16;
    let server = SocketIoRealtime::start(config, None, None).await.unwrap();
    let counters = server.counters().unwrap();
    let mut ws = raw_member(&server.url().unwrap()).await;
    let sender = server
        .channel("bench", ChannelOptions::default())
        .await
        .unwrap();
    sender.join().await.unwrap();
    assert_eq!(counters.members.load(Ordering::Relaxed), 2);
    // The client reads nothing: fan-out never waits, and its queue goes
    // over the budget after the kernel's socket buffers fill.
    let pad = "x".repeat(1000);
    let mut sent = 0;
    while counters.slow_disconnects.load(Ordering::Relaxed) == 0 {
        sender
            .send("m", json!({"i": sent, "pad": pad}))
            .await
            .unwrap();
        sent += 1;
        assert!(sent < 200_000, "the slow client was never disconnected");
        if sent % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // It was removed from the channel at once, and its queue dropped.
    assert_eq!(counters.members.load(Ordering::Relaxed), 1);
    assert_eq!(counters.queued_bytes.load(Ordering::Relaxed), 0);
    // Reading again, it gets its backlog, then the reason, then the end.
    let mut reason = None;
    let mut disconnected = false;
    let read_all = async {
        while let Some(Ok(frame)) = ws.next().await {
            match frame {
                WsMessage::Text(t) if t.starts_with("42[\"rt:error\"") => {
                    reason = Some(t.to_string());
                }
                WsMessage::Text(t) if t.as_str() == "41" => {
                    disconnected = true;
                    break;
                }
                WsMessage::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("the connection ended within 30 s");
    let reason = reason.expect("the slow client was told why");
    assert!(
        reason.contains("slow_client") && reason.contains("outgoing_queue_bytes"),
        "{reason}"
    );
    assert!(
        disconnected,
        "a socket.io disconnect packet followed the reason"
    );
}
