//! `/realtime/v1/websocket`: the realtime-ws hub mounted on the server's
//! listener. The whole realtime conformance suite runs through it in
//! client mode (two WebSocket clients per case, with the anon key); the
//! handshake refuses bad keys and non-upgrade requests; a graceful stop
//! closes open sockets with a reason.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;
use truststream_auth_jwt::{JwtAuth, JwtAuthConfig};
use truststream_conformance::{factory, realtime};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_ws::{TableRule, WsRealtime, WsRealtimeConfig};
use truststream_serve::{ApiKeys, Providers, Running, ServeConfig, Server};
use truststream_storage_memory::MemoryStorage;

async fn serve(db: Arc<dyn Database>) -> Running {
    let auth: Arc<dyn Auth> = Arc::new(
        JwtAuth::new(
            JwtAuthConfig::with_secret("a-test-secret-that-is-long-enough-0123456789"),
            db.clone(),
        )
        .await
        .unwrap(),
    );
    let mut config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        ..ServeConfig::default()
    };
    config.realtime.publish = vec!["rt_items_*".into()];
    config.realtime.tables.insert(
        "rt_items_*".into(),
        TableRule {
            anon: true,
            ..TableRule::default()
        },
    );
    let providers = Providers {
        db,
        auth,
        storage: Arc::new(MemoryStorage::new()),
        metrics: None,
    };
    Server::bind(providers, ApiKeys::generate(), config)
        .await
        .unwrap()
        .spawn()
}

fn ws_url(server: &Running) -> String {
    format!("ws://{}/realtime/v1/websocket", server.addr)
}

async fn client(url: &str, key: &str) -> Result<Arc<dyn Realtime>, String> {
    let rt = WsRealtime::connect(WsRealtimeConfig::client(url, Some(key)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(rt))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mounted_hub_passes_the_realtime_suite() {
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let server = serve(db.clone()).await;
    let url = ws_url(&server);
    let anon = server.keys.anon().to_string();
    let report = realtime::run(
        "serve",
        factory(move || {
            let url = url.clone();
            let anon = anon.clone();
            let db = db.clone();
            async move {
                Ok(realtime::RealtimeFixture {
                    realtime: client(&url, &anon).await?,
                    peer: client(&url, &anon).await?,
                    db: Some(db),
                })
            }
        }),
        None,
    )
    .await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(
        report.passed(),
        realtime::cases().len(),
        "{}",
        report.summary()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_handshake_refuses_bad_keys_and_plain_requests() {
    let server = serve(Arc::new(MemoryDatabase::new())).await;
    let url = ws_url(&server);
    // A key that is neither of the server's nor a valid access token.
    let bad = tokio_tungstenite::connect_async(format!("{url}?apikey=forged&vsn=1.0.0")).await;
    match bad {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 401, "{r:?}")
        }
        other => panic!("a forged apikey was not refused: {other:?}"),
    }
    // No key at all.
    let none = tokio_tungstenite::connect_async(format!("{url}?vsn=1.0.0")).await;
    match none {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 401, "{r:?}")
        }
        other => panic!("a missing apikey was not refused: {other:?}"),
    }
    // A plain GET is not an upgrade.
    let plain = reqwest::get(format!(
        "http://{}/realtime/v1/websocket?apikey={}",
        server.addr,
        server.keys.anon()
    ))
    .await
    .unwrap();
    assert_eq!(plain.status(), 400);
    // The anon key and the service-role key both open a socket.
    for key in [server.keys.anon(), server.keys.service_role()] {
        let (ws, resp) = tokio_tungstenite::connect_async(format!("{url}?apikey={key}&vsn=1.0.0"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 101);
        drop(ws);
    }
}

#[tokio::test]
async fn a_graceful_stop_closes_sockets_with_a_reason() {
    let server = serve(Arc::new(MemoryDatabase::new())).await;
    let url = format!(
        "{}?apikey={}&vsn=1.0.0",
        ws_url(&server),
        server.keys.anon()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let stopped = tokio::spawn(server.stop());
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Close(f))) => return f,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the socket was closed in time")
    .expect("the close frame has a code and a reason");
    assert_eq!(u16::from(frame.code), 1001);
    assert!(!frame.reason.is_empty());
    drop(ws);
    tokio::time::timeout(Duration::from_secs(15), stopped)
        .await
        .expect("the server stopped in time")
        .unwrap()
        .unwrap();
}
