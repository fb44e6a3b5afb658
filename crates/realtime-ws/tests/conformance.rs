//! The realtime conformance suite over the hub in-process, over the
//! WebSocket client mode (two client connections to a hub on 127.0.0.1:0),
//! and mixed (an in-process handle talking to a remote client).
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

use std::sync::Arc;

use truststream_conformance::{factory, realtime};
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_ws::{TableRule, WsRealtime, WsRealtimeConfig};

/// A hub without auth that publishes the suite's tables (`rt_items_*`) to
/// its (anonymous) clients.
async fn hub(db: Arc<dyn Database>) -> Result<Arc<WsRealtime>, String> {
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.publish = vec!["rt_items_*".into()];
    let rule = TableRule {
        anon: true,
        ..TableRule::default()
    };
    config.tables.insert("rt_items_*".into(), rule);
    WsRealtime::start(config, Some(db), None)
        .await
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

async fn client(url: &str) -> Result<Arc<dyn Realtime>, String> {
    let rt = WsRealtime::connect(WsRealtimeConfig::client(url, None))
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
async fn in_process_hub_passes_the_realtime_suite() {
    let report = realtime::run(
        "ws-hub",
        factory(|| async {
            let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
            let rt: Arc<dyn Realtime> = hub(db.clone()).await?;
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
async fn client_mode_passes_the_realtime_suite() {
    // One hub for every case (names are unique per case); each case gets
    // two fresh client connections.
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let server = hub(db.clone()).await.unwrap();
    let url = server.url().unwrap();
    let report = realtime::run(
        "ws-client",
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
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hub_and_client_mixed_pass_the_realtime_suite() {
    let report = realtime::run(
        "ws-mixed",
        factory(|| async {
            let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
            let server = hub(db.clone()).await?;
            let url = server.url().ok_or("no url")?;
            Ok(realtime::RealtimeFixture {
                realtime: server,
                peer: client(&url).await?,
                db: Some(db),
            })
        }),
        None,
    )
    .await;
    check(&report);
}
