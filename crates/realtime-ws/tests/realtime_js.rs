//! The published `@supabase/realtime-js` client against the hub: runs
//! `tests/realtime-js/scenario.cjs` under Node (packages pinned by its
//! lockfile, installed with `npm ci`), answers its requests (database
//! writes, a hub restart) and fails if any of its steps fails.
//!
//! Without node or the installed packages the test fails under `CI=true`
//! and is skipped with a message otherwise.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_ws::{WsRealtime, WsRealtimeConfig};

fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/realtime-js")
}

/// Whether node and the npm packages are there; panics under CI when not.
fn node_ready() -> bool {
    truststream_core::node_packages_ready(
        "the realtime-js test",
        &project_dir(),
        &["@supabase/realtime-js", "ws"],
    )
}

async fn start(addr: &str, db: Arc<dyn Database>) -> WsRealtime {
    let mut config = WsRealtimeConfig::hub(addr);
    config.path = "/realtime/v1/websocket".into();
    config.publish = vec!["agents".into()];
    WsRealtime::start(config, Some(db), Some(common::auth()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_realtime_js_drives_the_hub() {
    if !node_ready() {
        return;
    }
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("status"))
            .column(ColumnDef::integer("score")),
    )
    .await
    .unwrap();
    let mut hub = Some(start("127.0.0.1:0", db.clone()).await);
    let addr = hub.as_ref().unwrap().local_addr().unwrap();

    let mut child = tokio::process::Command::new("node")
        .arg("scenario.cjs")
        .current_dir(project_dir())
        .env("HUB_URL", format!("ws://{addr}/realtime/v1"))
        .env("TOKEN", common::token("user-1", 3600))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let row = |v: Value| v.as_object().cloned().unwrap();
    let mut steps = Vec::new();
    let mut done = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Some(line) = tokio::time::timeout_at(deadline, out.next_line())
        .await
        .expect("the node scenario took over 120 s")
        .unwrap()
    {
        println!("node: {line}");
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if msg["ok"] == json!(false) {
            panic!("realtime-js step {} failed: {}", msg["step"], msg["error"]);
        }
        if let Some(step) = msg["step"].as_str() {
            steps.push(step.to_string());
        }
        match msg["need"].as_str() {
            Some("db_writes") => {
                db.create(
                    "agents",
                    row(json!({"id": "a1", "status": "idle", "score": 1})),
                )
                .await
                .unwrap();
                // A row the filtered binding must not see.
                db.create(
                    "agents",
                    row(json!({"id": "b2", "status": "x", "score": 5})),
                )
                .await
                .unwrap();
                db.update("agents", &json!("b2"), row(json!({"score": 6})))
                    .await
                    .unwrap();
                db.delete("agents", &json!("b2")).await.unwrap();
                db.update(
                    "agents",
                    &json!("a1"),
                    row(json!({"status": "active", "score": 2})),
                )
                .await
                .unwrap();
                db.delete("agents", &json!("a1")).await.unwrap();
                stdin.write_all(b"go\n").await.unwrap();
            }
            Some("short_token") => {
                let t = common::token("user-1", 3);
                stdin.write_all(format!("{t}\n").as_bytes()).await.unwrap();
            }
            Some("restart") => {
                let counters = hub.as_ref().unwrap().counters().unwrap();
                drop(hub.take());
                common::eventually("the old hub's connections to close", || {
                    counters
                        .connections
                        .load(std::sync::atomic::Ordering::SeqCst)
                        == 0
                })
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                hub = Some(start(&addr.to_string(), db.clone()).await);
                stdin.write_all(b"go\n").await.unwrap();
            }
            _ => {}
        }
        if msg["done"] == json!(true) {
            done = true;
        }
    }
    let status = child.wait().await.unwrap();
    assert!(
        status.success(),
        "node exited with {status}; steps: {steps:?}"
    );
    assert!(done, "the scenario did not finish; steps: {steps:?}");
    assert_eq!(
        steps,
        [
            "connect_and_join",
            "broadcast_self_and_ack",
            "broadcast_without_self",
            "binary_broadcast",
            "ack_error_on_oversized_payload",
            "presence_sync_join_leave",
            "postgres_changes",
            "postgres_changes_refused_off_publication",
            "heartbeats_answered",
            "join_refused_with_bad_token",
            "token_expiry_closes_channel",
            "token_refresh_keeps_channel",
            "reconnect_after_hub_restart",
        ]
    );
}
