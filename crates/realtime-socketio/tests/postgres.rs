//! The server mode on PostgreSQL: the realtime suite with row
//! subscriptions fed by db-postgres's change feed (triggers + NOTIFY),
//! with an in-process handle as the subscriber and a client-mode
//! connection as the other member.
//!
//! Uses the server at `DATABASE_URL` (a scratch schema per run); without
//! one the test fails under `CI=true` and is skipped otherwise.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use truststream_conformance::{factory, realtime};
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_realtime_socketio::{SocketIoConfig, SocketIoRealtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_mode_on_postgres_passes_the_realtime_suite() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Arc::new(Scratch::new(url));
    let db: Arc<dyn Database> = Arc::new(scratch.database("rtsocketio").await.unwrap());
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
    let server = Arc::new(
        SocketIoRealtime::start(config, Some(db.clone()), None)
            .await
            .unwrap(),
    );
    let url = server.url().unwrap();
    let report = realtime::run(
        "socketio-server-postgres",
        factory(move || {
            let server = server.clone();
            let db = db.clone();
            let url = url.clone();
            async move {
                let client = SocketIoRealtime::connect(SocketIoConfig::client(&url, None))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(realtime::RealtimeFixture {
                    realtime: server as Arc<dyn Realtime>,
                    peer: Arc::new(client),
                    db: Some(db),
                })
            }
        }),
        None,
    )
    .await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(report.skipped_cases(), Vec::<&str>::new());
    assert_eq!(report.passed(), realtime::cases().len());
}
