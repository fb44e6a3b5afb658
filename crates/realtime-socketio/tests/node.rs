//! The published npm packages (tests/socketio-js, pinned by its lockfile,
//! installed with `npm ci`): `socket.io-client` drives the server mode
//! (scenario.cjs), and the client mode runs the realtime conformance suite
//! against a plain Node `socket.io` server (server.cjs).
//!
//! Without node or the installed packages the tests fail under `CI=true`
//! and are skipped with a message otherwise.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_conformance::{factory, realtime};
use truststream_core_auth::{Auth, SignUp};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_core_realtime::{ChannelOptions, Realtime};
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_socketio::{SocketIoConfig, SocketIoRealtime};

fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/socketio-js")
}

/// Whether node and the npm packages are there; panics under CI when not.
fn node_ready() -> bool {
    truststream_core::node_packages_ready(
        "the socket.io test",
        &project_dir(),
        &["socket.io", "socket.io-client"],
    )
}

async fn auth(db: Arc<dyn Database>) -> Arc<JwtAuth> {
    let mut cfg = JwtAuthConfig::with_secret("socketio test secret, at least 32 bytes");
    cfg.argon2 = Argon2Cost::minimal();
    Arc::new(JwtAuth::new(cfg, db).await.unwrap())
}

async fn token(auth: &JwtAuth, email: &str) -> String {
    let session = auth
        .sign_up(SignUp::new(email, "a long enough password 1"))
        .await
        .unwrap();
    session.access_token.expose().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_drives_the_server_mode() {
    if !node_ready() {
        return;
    }
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("status")),
    )
    .await
    .unwrap();
    let jwt = auth(db.clone()).await;
    let (token_a, token_b) = (
        token(&jwt, "alice@example.com").await,
        token(&jwt, "bob@example.com").await,
    );
    let mut config = SocketIoConfig::server("127.0.0.1:0");
    config.publish = vec!["agents".into()];
    let dyn_auth: Arc<dyn Auth> = jwt.clone();
    let server = SocketIoRealtime::start(config, Some(db.clone()), Some(dyn_auth))
        .await
        .unwrap();
    let counters = server.counters().unwrap();

    let mut child = tokio::process::Command::new("node")
        .arg("scenario.cjs")
        .current_dir(project_dir())
        .env("SERVER_URL", server.url().unwrap())
        .env("TOKEN_A", &token_a)
        .env("TOKEN_B", &token_b)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut steps = Vec::new();
    let mut done = false;
    // The in-process member of step server_process_is_a_member.
    let mut member = None;
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
            panic!(
                "socket.io-client step {} failed: {}",
                msg["step"], msg["error"]
            );
        }
        if let Some(step) = msg["step"].as_str() {
            steps.push(step.to_string());
        }
        if msg["done"] == json!(true) {
            done = true;
        }
        let Some(need) = msg["need"].as_str() else {
            continue;
        };
        match need {
            "rust_member" => {
                let ch = server
                    .channel("document:42", ChannelOptions::new().presence_key("server"))
                    .await
                    .unwrap();
                ch.join().await.unwrap();
                ch.send("notice", json!({"from": "rust"})).await.unwrap();
                ch.track(json!({"role": "server"})).await.unwrap();
                member = Some(ch);
            }
            "rust_echo" => {
                let ch: &Arc<dyn truststream_core_realtime::Channel> = member.as_ref().unwrap();
                ch.send("echoed", json!({"from": "alice", "seen": true}))
                    .await
                    .unwrap();
            }
            "db_write" => {
                db.create(
                    "agents",
                    json!({"id": "a1", "status": "active"})
                        .as_object()
                        .cloned()
                        .unwrap(),
                )
                .await
                .unwrap();
            }
            "check_cleanup" => {
                // Alice's connection is gone: one connection left (bob),
                // and alice's presence with it.
                let ch: &Arc<dyn truststream_core_realtime::Channel> = member.as_ref().unwrap();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    let state = ch.presence_state().await.unwrap();
                    let conns = counters
                        .connections
                        .load(std::sync::atomic::Ordering::Relaxed);
                    if conns == 1 && !state.contains_key("alice") {
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "after alice disconnected: {conns} connections, presence {state:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            other => panic!("the scenario asked for {other:?}"),
        }
        stdin
            .write_all(format!("{}\n", json!({"done": need})).as_bytes())
            .await
            .unwrap();
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
            "bad_token_refused",
            "connect_with_auth",
            "join_and_presence_sync",
            "presence_join_diff",
            "emit_receive_with_ack",
            "errors_are_acknowledged",
            "server_process_is_a_member",
            "row_changes",
            "disconnect_cleanup"
        ]
    );
    assert!(
        counters.refused.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "the bad and missing tokens were counted as refused"
    );
}

/// A Node `socket.io` server running server.cjs, killed when dropped.
struct NodeServer {
    _child: tokio::process::Child,
    url: String,
}

async fn node_server(token: Option<&str>) -> NodeServer {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("server.cjs")
        .current_dir(project_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(t) = token {
        cmd.env("TOKEN", t);
    }
    let mut child = cmd.spawn().expect("node starts");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), out.next_line())
        .await
        .expect("server.cjs did not start within 30 s")
        .unwrap()
        .expect("server.cjs printed its port");
    let port = serde_json::from_str::<Value>(&line).unwrap()["port"]
        .as_u64()
        .unwrap();
    NodeServer {
        _child: child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_mode_against_a_node_socket_io_server_passes_the_realtime_suite() {
    if !node_ready() {
        return;
    }
    let server = Arc::new(node_server(None).await);
    let url = server.url.clone();
    let connect = |url: String| async move {
        SocketIoRealtime::connect(SocketIoConfig::client(&url, None))
            .await
            .map(|rt| Arc::new(rt) as Arc<dyn Realtime>)
            .map_err(|e| e.to_string())
    };
    let report = realtime::run(
        "socketio-client-node",
        factory(move || {
            let url = url.clone();
            async move {
                Ok(realtime::RealtimeFixture {
                    realtime: connect(url.clone()).await?,
                    peer: connect(url).await?,
                    db: None,
                })
            }
        }),
        None,
    )
    .await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    // A Node server has no database change feed: rt:hello says
    // row_changes: false, so the row cases are skipped by capability (and
    // capability.row_changes checks that subscribing is Unsupported).
    let rows: Vec<&str> = realtime::cases()
        .iter()
        .map(|c| c.name)
        .filter(|n| n.starts_with("rows."))
        .collect();
    assert_eq!(report.skipped_cases(), rows, "{}", report.summary());
    assert_eq!(
        report.passed() + rows.len(),
        realtime::cases().len(),
        "{}",
        report.summary()
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mode_sends_its_token_and_a_refusal_is_unauthenticated() {
    if !node_ready() {
        return;
    }
    let server = node_server(Some("the right token")).await;
    let e = SocketIoRealtime::connect(SocketIoConfig::client(&server.url, Some("wrong")))
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        truststream_core::ErrorKind::Unauthenticated,
        "{e}"
    );
    assert!(!e.to_string().contains("wrong"), "the token leaked: {e}");
    let rt =
        SocketIoRealtime::connect(SocketIoConfig::client(&server.url, Some("the right token")))
            .await
            .unwrap();
    assert!(rt.health().await.is_healthy());
    assert!(!rt.capabilities().row_changes);
}
