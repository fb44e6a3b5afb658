//! The published npm packages (tests/socketio-js, pinned by its lockfile,
//! installed with `npm ci`): `socket.io-client` drives the server mode
//! (scenario.cjs; access.cjs for private channels, table rules and token
//! expiry), and the client mode runs the realtime conformance suite
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
use truststream_core_auth::{Auth, SignIn, SignUp};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_core_realtime::{ChannelOptions, Realtime};
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_socketio::{ChannelRule, SocketIoConfig, SocketIoRealtime, TableRule};

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

const SECRET: &str = "socketio test secret, at least 32 bytes";
const PASSWORD: &str = "a long enough password 1";

async fn auth(db: Arc<dyn Database>) -> Arc<JwtAuth> {
    let mut cfg = JwtAuthConfig::with_secret(SECRET);
    cfg.argon2 = Argon2Cost::minimal();
    Arc::new(JwtAuth::new(cfg, db).await.unwrap())
}

async fn token(auth: &JwtAuth, email: &str) -> String {
    let session = auth.sign_up(SignUp::new(email, PASSWORD)).await.unwrap();
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

    let mut run = Scenario::start(
        "scenario.cjs",
        &[
            ("SERVER_URL", server.url().unwrap()),
            ("TOKEN_A", token_a),
            ("TOKEN_B", token_b),
        ],
    );
    // The in-process member of step server_process_is_a_member.
    let mut member = None;
    while let Some(need) = run.next_need().await {
        match need.as_str() {
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
                db.create("agents", row(json!({"id": "a1", "status": "active"})))
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
        run.done(&need).await;
    }
    let steps = run.finish().await;
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

fn row(v: Value) -> truststream_core_db::Row {
    v.as_object().cloned().unwrap()
}

/// A node script (tests/socketio-js) talking to the test: one JSON line per
/// step on its stdout, `{need}` requests answered with `{"done": need}`.
struct Scenario {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    steps: Vec<String>,
    finished: bool,
    deadline: tokio::time::Instant,
}

impl Scenario {
    fn start(script: &str, env: &[(&str, String)]) -> Scenario {
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .current_dir(project_dir())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        Scenario {
            stdin: child.stdin.take().unwrap(),
            out: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            steps: Vec::new(),
            finished: false,
            deadline: tokio::time::Instant::now() + Duration::from_secs(120),
        }
    }

    /// The next request of the script (`None`: its output ended); panics
    /// on a failed step.
    async fn next_need(&mut self) -> Option<String> {
        while let Some(line) = tokio::time::timeout_at(self.deadline, self.out.next_line())
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
                self.steps.push(step.to_string());
            }
            if msg["done"] == json!(true) {
                self.finished = true;
            }
            if let Some(need) = msg["need"].as_str() {
                return Some(need.to_string());
            }
        }
        None
    }

    async fn done(&mut self, need: &str) {
        self.stdin
            .write_all(format!("{}\n", json!({"done": need})).as_bytes())
            .await
            .unwrap();
    }

    /// Waits for the script to exit successfully; the steps it passed.
    async fn finish(mut self) -> Vec<String> {
        let status = self.child.wait().await.unwrap();
        let steps = self.steps;
        assert!(
            status.success(),
            "node exited with {status}; steps: {steps:?}"
        );
        assert!(
            self.finished,
            "the scenario did not finish; steps: {steps:?}"
        );
        steps
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_clients_are_held_to_channel_and_row_rules() {
    if !node_ready() {
        return;
    }
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    db.create_table(
        &TableSchema::new("notes")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("owner"))
            .column(ColumnDef::text("secret")),
    )
    .await
    .unwrap();
    let jwt = auth(db.clone()).await;
    let admin = jwt
        .sign_up(SignUp::new("alice@example.com", PASSWORD))
        .await
        .unwrap();
    jwt.set_user_roles(&admin.user.id, &["admin".to_string()])
        .await
        .unwrap();
    // Signed in again: the token carries the role.
    let admin = jwt
        .sign_in(SignIn::new("alice@example.com", PASSWORD))
        .await
        .unwrap();
    let plain = jwt
        .sign_up(SignUp::new("bob@example.com", PASSWORD))
        .await
        .unwrap();
    // Carol's tokens: one that expires within 4 s, one within 8 s (same
    // secret and users; only the lifetime differs).
    let issuer = |ttl: u64| {
        let db = db.clone();
        async move {
            let mut cfg = JwtAuthConfig::with_secret(SECRET);
            cfg.argon2 = Argon2Cost::minimal();
            cfg.access_token_ttl_secs = ttl;
            JwtAuth::new(cfg, db).await.unwrap()
        }
    };
    issuer(4)
        .await
        .sign_up(SignUp::new("carol@example.com", PASSWORD))
        .await
        .unwrap();
    let short = issuer(4)
        .await
        .sign_in(SignIn::new("carol@example.com", PASSWORD))
        .await
        .unwrap();
    let longer = issuer(8)
        .await
        .sign_in(SignIn::new("carol@example.com", PASSWORD))
        .await
        .unwrap();

    let mut config = SocketIoConfig::server("127.0.0.1:0");
    config.publish = vec!["notes".into()];
    config.tables.insert(
        "notes".into(),
        TableRule {
            owner_column: Some("owner".into()),
            hidden: vec!["secret".into()],
            ..TableRule::default()
        },
    );
    config.channels.insert(
        "admin:*".into(),
        ChannelRule {
            roles: vec!["admin".into()],
            permission: None,
        },
    );
    let dyn_auth: Arc<dyn Auth> = jwt.clone();
    let server = SocketIoRealtime::start(config, Some(db.clone()), Some(dyn_auth))
        .await
        .unwrap();
    let token = |s: &truststream_core_auth::Session| s.access_token.expose().to_string();
    let mut run = Scenario::start(
        "access.cjs",
        &[
            ("SERVER_URL", server.url().unwrap()),
            ("TOKEN_ADMIN", token(&admin)),
            ("TOKEN_PLAIN", token(&plain)),
            ("TOKEN_SHORT", token(&short)),
            ("TOKEN_LONGER", token(&longer)),
        ],
    );
    while let Some(need) = run.next_need().await {
        assert_eq!(need, "db_write");
        for (id, owner) in [
            ("n1", &admin.user.id),
            ("n2", &plain.user.id),
            ("n3", &admin.user.id),
            ("n4", &plain.user.id),
        ] {
            db.create(
                "notes",
                row(json!({"id": id, "owner": owner, "secret": "s3cr3t"})),
            )
            .await
            .unwrap();
        }
        run.done(&need).await;
    }
    assert_eq!(
        run.finish().await,
        [
            "private_channel_needs_the_role",
            "rows_only_as_the_rule_allows",
            "token_refresh_and_expiry"
        ]
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
