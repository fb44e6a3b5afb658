//! The realtime conformance suite over the server mode in-process, over
//! the client mode against the server mode (two client connections), and
//! mixed (an in-process handle talking to a remote client). The client
//! mode against the Node `socket.io` server is in `node.rs`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use truststream_conformance::{factory, realtime};
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_socketio::{SocketIoConfig, SocketIoRealtime};

/// A server without auth (anonymous clients allowed) that publishes the
/// suite's tables (`rt_items_*`).
async fn server(db: Arc<dyn Database>) -> Result<Arc<SocketIoRealtime>, String> {
    let mut config = SocketIoConfig::server("127.0.0.1:0");
    config.allow_anonymous = true;
    config.publish = vec!["rt_items_*".into()];
    // Its clients are anonymous: the tables must say they may read them.
    config.tables.insert(
        "rt_items_*".into(),
        truststream_realtime_socketio::TableRule {
            anon: true,
            ..Default::default()
        },
    );
    SocketIoRealtime::start(config, Some(db), None)
        .await
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

async fn client(url: &str) -> Result<Arc<dyn Realtime>, String> {
    let rt = SocketIoRealtime::connect(SocketIoConfig::client(url, None))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(rt))
}

fn check(report: &truststream_conformance::Report) {
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(
        report.passed(),
        realtime::cases().len(),
        "{}",
        report.summary()
    );
    assert_eq!(report.skipped_cases(), Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_mode_in_process_passes_the_realtime_suite() {
    let report = realtime::run(
        "socketio-server",
        factory(|| async {
            let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
            let rt: Arc<dyn Realtime> = server(db.clone()).await?;
            Ok(realtime::RealtimeFixture {
                realtime: rt.clone(),
                peer: rt,
                db: Some(db),
            })
        }),
        None,
    )
    .await;
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_mode_against_the_server_mode_passes_the_realtime_suite() {
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let srv = server(db.clone()).await.unwrap();
    let url = srv.url().unwrap();
    let report = realtime::run(
        "socketio-client",
        factory(move || {
            let url = url.clone();
            let db = db.clone();
            async move {
                Ok(realtime::RealtimeFixture {
                    realtime: client(&url).await?,
                    peer: client(&url).await?,
                    db: Some(db),
                })
            }
        }),
        None,
    )
    .await;
    check(&report);
    drop(srv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_and_client_mixed_pass_the_realtime_suite() {
    let report = realtime::run(
        "socketio-mixed",
        factory(|| async {
            let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
            let srv = server(db.clone()).await?;
            let url = srv.url().ok_or("no url")?;
            Ok(realtime::RealtimeFixture {
                realtime: srv,
                peer: client(&url).await?,
                db: Some(db),
            })
        }),
        None,
    )
    .await;
    check(&report);
}
