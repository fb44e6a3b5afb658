//! Cluster mode with real processes and real brokers: hub processes (this
//! test binary run again as a node, see [`node_process_entry`]) joined
//! through the machine's NATS (127.0.0.1:4222) or Redis (127.0.0.1:6379),
//! driven by the published `@supabase/realtime-js` client
//! (`tests/cluster/scenario.cjs`); a broker restart with a private
//! nats-server; the conformance suite over a two-node cluster.
//!
//! Every test talks on a subject/channel prefix of its own, so tests running
//! in parallel never see each other's messages. A missing broker, node or
//! npm package fails the test under `CI=true` and skips it (with a message)
//! otherwise.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use truststream_conformance::{factory, realtime};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_core_realtime::{handler, ChannelOptions, Realtime};
use truststream_db_memory::MemoryDatabase;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_realtime_ws::{ClusterConfig, TableRule, WsRealtime, WsRealtimeConfig};

/// Set (to a JSON [`NodeSpec`]) when this binary runs as a hub process.
const NODE_ENV: &str = "RTWS_CLUSTER_NODE";
/// The broker URL of a hub process (kept out of the spec, which is logged).
const NODE_URL_ENV: &str = "RTWS_CLUSTER_URL";

const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

/// The bound within which a dead node's members must be gone everywhere.
const DEAD_NODE_BOUND: Duration = Duration::from_secs(5);

/// What a hub process runs.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct NodeSpec {
    broker: String,
    prefix: String,
    node_id: String,
    /// PostgreSQL URL and schema of the shared database, if any.
    pg: Option<(String, String)>,
    /// Members this node tracks in-process on `TOPIC`: (topic, count).
    track: Option<(String, usize)>,
}

/// Not a test: the entry point of the hub processes the other tests start
/// (they run this binary with `--exact node_process_entry` and
/// `RTWS_CLUSTER_NODE` set). Run by the harness without it, it returns.
#[test]
fn node_process_entry() {
    let Ok(spec) = std::env::var(NODE_ENV) else {
        return;
    };
    let spec: NodeSpec = serde_json::from_str(&spec).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run_node(spec));
}

fn hub_config(broker: &str, url: &str, prefix: &str, node_id: &str) -> WsRealtimeConfig {
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.publish = vec!["rt_*".into()];
    config.tables.insert(
        "rt_*".into(),
        TableRule {
            anon: true,
            ..TableRule::default()
        },
    );
    let mut cluster = ClusterConfig::new(broker, url, node_id);
    cluster.prefix = prefix.into();
    config.cluster = Some(cluster);
    config
}

async fn run_node(spec: NodeSpec) {
    let url = std::env::var(NODE_URL_ENV).unwrap();
    let config = hub_config(&spec.broker, &url, &spec.prefix, &spec.node_id);
    let db: Option<Arc<dyn Database>> = match &spec.pg {
        Some((url, schema)) => Some(Arc::new(
            PgDatabase::open(PgConfig::new(url.clone()).with_schema(schema.clone()))
                .await
                .unwrap(),
        )),
        None => None,
    };
    let hub = WsRealtime::start(config, db, None).await.unwrap();
    println!("LISTENING {}", hub.local_addr().unwrap());
    let mut held = Vec::new();
    if let Some((topic, n)) = &spec.track {
        for i in 0..*n {
            let ch = hub
                .channel(
                    topic,
                    ChannelOptions::new().presence_key(format!("m{i:03}")),
                )
                .await
                .unwrap();
            ch.join().await.unwrap();
            ch.track(json!({"i": i})).await.unwrap();
            held.push(ch);
        }
        println!("TRACKED {n}");
    }
    // Until the test kills the process.
    std::future::pending::<()>().await;
}

/// A hub process.
struct Node {
    child: Child,
    addr: String,
    out: Lines<BufReader<ChildStdout>>,
}

impl Node {
    async fn start(broker: &str, url: &str, spec: NodeSpec) -> Node {
        let spec = NodeSpec {
            broker: broker.into(),
            ..spec
        };
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "node_process_entry",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(NODE_ENV, serde_json::to_string(&spec).unwrap())
            .env(NODE_URL_ENV, url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), out.next_line())
                .await
                .expect("the hub process did not start within 60 s")
                .unwrap()
                .expect("the hub process ended before listening");
            // libtest's "test node_process_entry ... " may precede it.
            if let Some((_, a)) = line.split_once("LISTENING ") {
                break a.trim().to_string();
            }
        };
        Node { child, addr, out }
    }

    /// Waits for a line holding `prefix` on the node's stdout.
    async fn wait_line(&mut self, prefix: &str) {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.out.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {prefix:?} from the hub process within 60 s"))
                .unwrap()
                .expect("the hub process ended");
            if line.contains(prefix) {
                return;
            }
        }
    }

    fn js_url(&self) -> String {
        format!("ws://{}/realtime/v1", self.addr)
    }
}

/// A prefix no other test (or run) uses.
fn prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("tstest.{tag}.{}.{nanos}", std::process::id())
}

/// Whether the broker at `addr` answers; panics under CI when it does not.
fn broker_ready(name: &str, addr: &str) -> bool {
    let ok = addr
        .parse()
        .ok()
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !ok {
        let msg = format!("{name} is not answering on {addr} (see crates/realtime-ws/README.md)");
        if truststream_core::in_ci() {
            panic!("CI=true and the cluster test needs {msg}");
        }
        eprintln!("SKIPPED cluster test: {msg}");
    }
    ok
}

fn broker_of(kind: &str) -> Option<&'static str> {
    match kind {
        "nats" => broker_ready("NATS", "127.0.0.1:4222").then_some(NATS),
        _ => broker_ready("Redis", "127.0.0.1:6379").then_some(REDIS),
    }
}

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/realtime-js")
}

/// Whether node and the npm packages are there; panics under CI when not.
fn node_ready() -> bool {
    truststream_core::node_packages_ready(
        "the cluster realtime-js test",
        &js_dir(),
        &["@supabase/realtime-js"],
    )
}

/// Runs the realtime-js scenario; `on_need` answers its requests (the
/// line it returns is written back). Returns the steps' details by name.
async fn run_js<F, Fut>(env: &[(&str, String)], mut on_need: F) -> Vec<(String, Value)>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/scenario.cjs");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script)
        .current_dir(js_dir())
        .env("NODE_PATH", js_dir().join("node_modules"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut steps = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while let Some(line) = tokio::time::timeout_at(deadline, out.next_line())
        .await
        .expect("the realtime-js scenario took over 180 s")
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
            steps.push((step.to_string(), msg["detail"].clone()));
        }
        if let Some(need) = msg["need"].as_str() {
            let answer = on_need(need.to_string()).await;
            stdin
                .write_all(format!("{answer}\n").as_bytes())
                .await
                .unwrap();
        }
        if msg["done"] == json!(true) {
            break;
        }
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "the scenario exited with {status}");
    steps
}

fn row(v: Value) -> truststream_core_db::Row {
    v.as_object().cloned().unwrap()
}

/// Three hub processes on `kind`, one realtime-js client on each:
/// broadcast, presence join/leave and (with PostgreSQL) postgres_changes
/// across nodes.
async fn three_nodes_with_realtime_js(kind: &str) {
    let Some(url) = broker_of(kind) else { return };
    if !node_ready() {
        return;
    }
    let scratch = testing::server().await.map(Scratch::new);
    let mut pg = None;
    let mut db: Option<PgDatabase> = None;
    if let Some(s) = &scratch {
        let config = s.config("rtcluster");
        let d = PgDatabase::open(config.clone()).await.unwrap();
        d.create_table(
            &TableSchema::new("rt_agents")
                .column(ColumnDef::text("id").primary_key())
                .column(ColumnDef::text("status")),
        )
        .await
        .unwrap();
        pg = Some((testing::database_url(), config.schema.clone().unwrap()));
        db = Some(d);
    }
    let p = prefix(&format!("basic-{kind}"));
    let mut nodes = Vec::new();
    for i in 0..3 {
        let spec = NodeSpec {
            prefix: p.clone(),
            node_id: format!("node-{i}"),
            pg: pg.clone(),
            ..NodeSpec::default()
        };
        nodes.push(Node::start(kind, url, spec).await);
    }
    let urls: Vec<String> = nodes.iter().map(Node::js_url).collect();
    let db = db.map(Arc::new);
    let steps = run_js(
        &[
            ("NODES", urls.join(",")),
            ("SCENARIO", "basic".into()),
            ("TOPIC", "room".into()),
            ("PG", if db.is_some() { "1" } else { "0" }.into()),
        ],
        |need| {
            let db = db.clone();
            async move {
                assert_eq!(need, "db_write");
                let db = db.unwrap();
                db.create("rt_agents", row(json!({"id": "a1", "status": "idle"})))
                    .await
                    .unwrap();
                "ok".to_string()
            }
        },
    )
    .await;
    let names: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
    let mut want = vec![
        "join_three_nodes",
        "presence_join_across_nodes",
        "broadcast_across_nodes_once_in_order",
    ];
    if db.is_some() {
        want.push("postgres_changes_once_on_every_node");
    } else {
        eprintln!("postgres_changes across nodes NOT checked: PostgreSQL is not running");
    }
    want.push("presence_leave_across_nodes");
    assert_eq!(names, want);
    drop(nodes);
    if let Some(s) = scratch {
        s.cleanup().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_three_nodes_serve_realtime_js_clients() {
    three_nodes_with_realtime_js("nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_nodes_serve_realtime_js_clients() {
    three_nodes_with_realtime_js("redis").await;
}

/// A node tracking 100 members is killed with SIGKILL: the realtime-js
/// clients on the two other nodes get 100 leaves within the bound.
async fn killed_node_members_leave(kind: &str) {
    let Some(url) = broker_of(kind) else { return };
    if !node_ready() {
        return;
    }
    let p = prefix(&format!("kill-{kind}"));
    let spec = |i: usize| NodeSpec {
        prefix: p.clone(),
        node_id: format!("node-{i}"),
        ..NodeSpec::default()
    };
    let a = Node::start(kind, url, spec(0)).await;
    let b = Node::start(kind, url, spec(1)).await;
    let mut victim = Node::start(
        kind,
        url,
        NodeSpec {
            track: Some(("room".into(), 100)),
            ..spec(2)
        },
    )
    .await;
    victim.wait_line("TRACKED").await;
    let victim = Arc::new(tokio::sync::Mutex::new(Some(victim)));
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let steps = run_js(
        &[
            ("NODES", [a.js_url(), b.js_url()].join(",")),
            ("SCENARIO", "observe".into()),
            ("TOPIC", "room".into()),
            ("MEMBERS", "100".into()),
        ],
        |need| {
            let victim = victim.clone();
            let killed_at = killed_at.clone();
            async move {
                assert_eq!(need, "kill");
                let mut node = victim.lock().await.take().unwrap();
                // SIGKILL: no Bye, no leave; only the heartbeats stop.
                node.child.start_kill().unwrap();
                *killed_at.lock().unwrap() = Some(Instant::now());
                node.child.wait().await.unwrap();
                "killed".to_string()
            }
        },
    )
    .await;
    let after_kill = killed_at.lock().unwrap().unwrap().elapsed();
    let (name, detail) = steps.last().unwrap();
    assert_eq!(name, "leaves_after_the_kill");
    println!("100 leaves on both observers {detail} after the kill (test side: {after_kill:?})");
    assert!(
        after_kill <= DEAD_NODE_BOUND + Duration::from_secs(1),
        "the leaves took {after_kill:?} (bound {DEAD_NODE_BOUND:?}, plus 1 s for the script)"
    );
    let elapsed = detail["elapsed_ms"].as_u64().unwrap();
    assert!(
        elapsed <= DEAD_NODE_BOUND.as_millis() as u64,
        "the leaves took {elapsed} ms after the kill (bound {DEAD_NODE_BOUND:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_node_members_leave_within_the_bound() {
    killed_node_members_leave("nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_node_members_leave_within_the_bound() {
    killed_node_members_leave("redis").await;
}

/// A private nats-server on a free port (never the machine's shared one).
struct PrivateNats {
    child: Option<std::process::Child>,
    port: u16,
    /// Further nats-server arguments (e.g. `--user`, `--pass`).
    args: Vec<String>,
}

impl PrivateNats {
    fn binary() -> Option<PathBuf> {
        let p = PathBuf::from("/usr/sbin/nats-server");
        if p.exists() {
            return Some(p);
        }
        if truststream_core::in_ci() {
            panic!("CI=true and the broker-restart test needs /usr/sbin/nats-server");
        }
        eprintln!("SKIPPED broker-restart test: /usr/sbin/nats-server is missing");
        None
    }

    fn start(port: u16) -> PrivateNats {
        Self::start_with(port, &[])
    }

    fn start_with(port: u16, args: &[&str]) -> PrivateNats {
        let mut n = PrivateNats {
            child: None,
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        n.restart();
        n
    }

    fn restart(&mut self) {
        let child = std::process::Command::new(Self::binary().unwrap())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private nats-server did not listen on {addr}");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Two hubs on a private nats-server that is killed and started again
/// while a member broadcasts: local delivery never stops, health says
/// degraded, then the hubs reconnect and presence converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_under_load_keeps_local_delivery_and_converges() {
    if PrivateNats::binary().is_none() {
        return;
    }
    let mut nats = PrivateNats::start(free_port());
    let p = prefix("restart");
    let a = WsRealtime::start(hub_config("nats", &nats.url(), &p, "a"), None, None)
        .await
        .unwrap();
    let b = WsRealtime::start(hub_config("nats", &nats.url(), &p, "b"), None, None)
        .await
        .unwrap();
    // On a: a sender and a local receiver; on b: a tracked member and a
    // receiver.
    let sender = a.channel("load", ChannelOptions::new()).await.unwrap();
    sender.join().await.unwrap();
    let local = a
        .channel("load", ChannelOptions::new().presence_key("a-watcher"))
        .await
        .unwrap();
    let local_got = Arc::new(AtomicUsize::new(0));
    let g = local_got.clone();
    let _s1 = local.on(
        "tick",
        handler(move |_| {
            g.fetch_add(1, Ordering::Relaxed);
        }),
    );
    local.join().await.unwrap();
    local.track(json!({"on": "a"})).await.unwrap();
    let remote = b
        .channel("load", ChannelOptions::new().presence_key("b-member"))
        .await
        .unwrap();
    let remote_got = Arc::new(AtomicUsize::new(0));
    let g = remote_got.clone();
    let _s2 = remote.on(
        "tick",
        handler(move |_| {
            g.fetch_add(1, Ordering::Relaxed);
        }),
    );
    remote.join().await.unwrap();
    remote.track(json!({"on": "b"})).await.unwrap();
    wait_until("a to see b's member", Duration::from_secs(10), async || {
        local
            .presence_state()
            .await
            .unwrap()
            .contains_key("b-member")
    })
    .await;
    // The load: one broadcast every 5 ms until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, sent, sender) = (stop.clone(), sent.clone(), sender.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sender.send("tick", json!({"n": 1})).await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    wait_until("b to get broadcasts", Duration::from_secs(10), async || {
        remote_got.load(Ordering::Relaxed) > 20
    })
    .await;

    nats.kill();
    wait_until(
        "a to report the cluster degraded",
        Duration::from_secs(10),
        async || {
            let h = a.health().await;
            h.message
                .as_deref()
                .is_some_and(|m| m.contains("cluster degraded"))
        },
    )
    .await;
    // Local delivery goes on while the broker is down.
    let before = local_got.load(Ordering::Relaxed);
    wait_until(
        "local delivery during the outage",
        Duration::from_secs(5),
        async || local_got.load(Ordering::Relaxed) >= before + 100,
    )
    .await;
    // The other node's member is removed after node_timeout_ms.
    wait_until(
        "a to drop b's member",
        Duration::from_secs(10),
        async || {
            !local
                .presence_state()
                .await
                .unwrap()
                .contains_key("b-member")
        },
    )
    .await;

    nats.restart();
    wait_until(
        "a and b healthy again",
        Duration::from_secs(15),
        async || a.health().await.is_healthy() && b.health().await.is_healthy(),
    )
    .await;
    wait_until(
        "presence to converge",
        Duration::from_secs(10),
        async || {
            local
                .presence_state()
                .await
                .unwrap()
                .contains_key("b-member")
                && remote
                    .presence_state()
                    .await
                    .unwrap()
                    .contains_key("a-watcher")
        },
    )
    .await;
    let before = remote_got.load(Ordering::Relaxed);
    wait_until(
        "b to get broadcasts again",
        Duration::from_secs(10),
        async || remote_got.load(Ordering::Relaxed) > before + 20,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    // Every broadcast reached the local member, outage or not.
    let sent = sent.load(Ordering::Relaxed);
    wait_until("every local delivery", Duration::from_secs(5), async || {
        local_got.load(Ordering::Relaxed) == sent
    })
    .await;
}

/// A NATS server that requires a user and password: the credentials
/// written in the cluster url are used (async-nats alone ignores them), so
/// two hubs connect, hear each other and carry a broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_in_the_url_are_used() {
    if PrivateNats::binary().is_none() {
        return;
    }
    let port = free_port();
    let _nats = PrivateNats::start_with(port, &["--user", "alice", "--pass", "p@ss w0rd"]);
    let url = format!("nats://alice:p%40ss%20w0rd@127.0.0.1:{port}");
    let p = prefix("auth");
    let a = WsRealtime::start(hub_config("nats", &url, &p, "a"), None, None)
        .await
        .unwrap();
    let b = WsRealtime::start(hub_config("nats", &url, &p, "b"), None, None)
        .await
        .unwrap();
    wait_until("both hubs connected", Duration::from_secs(10), async || {
        a.health().await.is_healthy() && b.health().await.is_healthy()
    })
    .await;
    wait_until(
        "the hubs to hear each other",
        Duration::from_secs(10),
        async || heard(&a) && heard(&b),
    )
    .await;
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    let receiver = b.channel("room", ChannelOptions::new()).await.unwrap();
    let _sub = receiver.on(
        "e",
        handler(move |_| {
            g.fetch_add(1, Ordering::Relaxed);
        }),
    );
    receiver.join().await.unwrap();
    let sender = a.channel("room", ChannelOptions::new()).await.unwrap();
    sender.join().await.unwrap();
    sender.send("e", json!({})).await.unwrap();
    wait_until("the broadcast on b", Duration::from_secs(10), async || {
        got.load(Ordering::Relaxed) == 1
    })
    .await;
    // A wrong password is refused by the server: degraded, never shown.
    let wrong = format!("nats://alice:hunter2@127.0.0.1:{port}");
    let c = WsRealtime::start(hub_config("nats", &wrong, &p, "c"), None, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = c.health().await;
    assert!(!health.is_healthy(), "{health:?}");
    assert!(!format!("{health:?}").contains("hunter2"), "{health:?}");
}

/// The realtime conformance suite over a two-node cluster on NATS: the
/// provider under test is one node, its peer the other; both hubs share
/// one database (each runs its own change feed). Every case passes but
/// `presence.state_on_join`, which may lose a race (see below).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_node_nats_cluster_passes_the_realtime_suite() {
    let Some(url) = broker_of("nats") else { return };
    let report = realtime::run(
        "ws-cluster-nats",
        factory(move || async move {
            let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
            let p = prefix("conformance");
            let start = |node: &'static str| {
                let (db, p) = (db.clone(), p.clone());
                async move {
                    WsRealtime::start(hub_config("nats", url, &p, node), Some(db), None)
                        .await
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                }
            };
            let a = start("a").await?;
            let b = start("b").await?;
            // Both connected and each heard the other.
            let end = Instant::now() + Duration::from_secs(10);
            while !(heard(&a) && heard(&b)) {
                if Instant::now() > end {
                    return Err("the two nodes did not hear each other within 10 s".into());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (a, b): (Arc<dyn Realtime>, Arc<dyn Realtime>) = (a, b);
            Ok(realtime::RealtimeFixture {
                realtime: a,
                peer: b,
                db: Some(db),
            })
        }),
        None,
    )
    .await;
    report.print_table();
    let failed: Vec<&str> = report
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, truststream_conformance::CaseOutcome::Failed(_)))
        .map(|c| c.case)
        .collect();
    // Presence across nodes is eventually consistent (as Phoenix
    // Presence's): a member tracked on one node an instant before a join on
    // the other may reach the joiner as a `presence_diff` right after its
    // (still empty) `presence_state` instead of inside it. That one case
    // asserts the state itself, so it may fail (it passes when the track
    // arrived first); every other case must pass. The crate README
    // (cluster mode, Presence) says why and what a fix would cost.
    let racy = ["presence.state_on_join"];
    let unexpected: Vec<&str> = failed
        .iter()
        .copied()
        .filter(|c| !racy.contains(c))
        .collect();
    assert_eq!(unexpected, Vec::<&str>::new(), "{}", report.summary());
    assert_eq!(
        report.passed() + failed.len(),
        realtime::cases().len(),
        "{}",
        report.summary()
    );
    assert_eq!(report.skipped_cases(), Vec::<&str>::new());
}

fn heard(rt: &WsRealtime) -> bool {
    rt.cluster_stats()
        .is_some_and(|s| s.received.load(Ordering::Relaxed) > 0)
}

/// A hub whose broker is unreachable starts all the same (serving its own
/// members) and reports the cluster degraded, with either broker; the
/// broker URL (which may hold credentials) is not in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_its_broker_serves_locally_and_reports_degraded() {
    for (broker, scheme) in [("nats", "nats"), ("redis", "redis")] {
        let url = format!("{scheme}://user:s3cret@127.0.0.1:{}", free_port());
        let hub = tokio::time::timeout(
            Duration::from_secs(10),
            WsRealtime::start(
                hub_config(broker, &url, &prefix("down"), "lonely"),
                None,
                None,
            ),
        )
        .await
        .expect("the hub starts without waiting for its broker")
        .unwrap();
        let ch = hub
            .channel("room", ChannelOptions::new().broadcast_self(true))
            .await
            .unwrap();
        let got = Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        let _sub = ch.on(
            "e",
            handler(move |_| {
                g.fetch_add(1, Ordering::Relaxed);
            }),
        );
        ch.join().await.unwrap();
        ch.send("e", json!({})).await.unwrap();
        wait_until("the local delivery", Duration::from_secs(5), async || {
            got.load(Ordering::Relaxed) == 1
        })
        .await;
        let health = hub.health().await;
        assert!(!health.is_healthy(), "{broker}: {health:?}");
        let message = health.message.unwrap_or_default();
        assert!(message.contains("cluster degraded"), "{broker}: {message}");
        assert!(!message.contains("s3cret"), "{broker}: {message}");
    }
}
