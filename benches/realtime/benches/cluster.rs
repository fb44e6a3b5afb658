//! Fan-out across a 3-node cluster vs one hub, with the same WebSocket
//! clients (spread evenly over the nodes) and the same sender (on the first
//! node), side by side with socket.io's Redis adapter:
//!
//! - `realtime-ws, 1 node`: one hub, no cluster;
//! - `realtime-ws, 3 nodes, NATS`: 3 hubs joined through the machine's
//!   NATS (127.0.0.1:4222), the recommended broker;
//! - `realtime-ws, 3 nodes, Redis`: the same through Redis pub/sub
//!   (127.0.0.1:6379), labelled: the broker socket.io uses;
//! - `socket.io + redis-adapter, 3 nodes`: 3 Node processes running
//!   socket.io 4.8.1 with `@socket.io/redis-adapter` 8.3.0 and node-redis
//!   4.7.1 (`socketio-cluster/`, pinned by its lockfile) on the same Redis.
//!
//! Same work on every row: the same number of in-process WebSocket clients
//! (realtime-ws: vsn 2.0.0 joins; socket.io: websocket transport, every
//! socket in room "bench"), client i on node i % nodes; event "m" with the
//! same payload `{"i": i, "t": <send time in µs>}`; no durability (NATS
//! core and Redis pub/sub); one broker publish per broadcast. The
//! realtime-ws sender is an in-process channel on node 0, socket.io's is
//! `io.to("bench").emit` in node 0's process (driven over its stdin).
//!
//! 1. latency: 20 paced messages (50 ms apart), p50/p99 of send-to-receive;
//! 2. throughput: a burst of B messages; delivered messages per second =
//!    N * B / (last receipt - first send);
//! 3. bytes on the broker per broadcast: what node 0 published for the
//!    burst over the number of broadcasts (realtime-ws: its envelope;
//!    socket.io: the adapter's msgpack message).
//!
//! Run: `(cd benches/realtime/socketio-cluster && npm ci)`, then
//! `cargo bench -p truststream-bench-realtime --bench cluster`
//! (`BENCH_N`, default 1000, `BENCH_BURST`, default 200). Without `--bench`
//! (under `cargo test`) it is a smoke run with 30 clients. The hubs and the
//! clients run in this process, socket.io's nodes in their own; the brokers
//! share the cores. Without `npm ci` the bench stops and says so; a missing
//! NATS or Redis skips it (fails it under `CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_tungstenite::tungstenite::protocol::Message;
use truststream_bench_realtime::{env_usize, now_micros, phoenix_join, socketio_connect};
use truststream_core_realtime::{Channel, ChannelOptions, Realtime};
use truststream_realtime_ws::{ClusterConfig, WsRealtime, WsRealtimeConfig};

const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";
const PACED: usize = 20;

/// The Node project of the socket.io nodes.
const SOCKETIO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/socketio-cluster");

#[derive(Default)]
struct Tally {
    delivered: AtomicUsize,
    last_recv: AtomicU64,
    latencies: Mutex<Vec<u32>>,
}

/// The clients' wire protocol.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// realtime-ws: Phoenix vsn 2.0.0, binary user broadcasts.
    Phoenix,
    /// socket.io over its websocket transport.
    SocketIo,
}

async fn client(proto: Proto, url: String, ready: Arc<AtomicUsize>, tally: Arc<Mutex<Arc<Tally>>>) {
    let mut ws = match proto {
        Proto::Phoenix => phoenix_join(&url, "bench").await,
        // The server puts every socket in room "bench" on connection.
        Proto::SocketIo => socketio_connect(&url).await,
    };
    ready.fetch_add(1, Ordering::SeqCst);
    while let Some(Ok(m)) = ws.next().await {
        let body: Option<Value> = match (&m, proto) {
            (Message::Binary(b), Proto::Phoenix) => {
                truststream_realtime_ws::protocol::decode_user_broadcast(b).map(|(_, _, p)| p)
            }
            (Message::Text(t), Proto::SocketIo) => {
                if t.as_str() == "2" {
                    let _ = ws.send(Message::text("3")).await;
                    None
                } else {
                    t.strip_prefix("42")
                        .and_then(|rest| serde_json::from_str::<Value>(rest).ok())
                        .filter(|v| v[0] == "m")
                        .map(|v| v[1].clone())
                }
            }
            _ => None,
        };
        let Some(body) = body else { continue };
        let recv = now_micros();
        let sent = body["t"].as_u64().unwrap_or(recv);
        let t = tally.lock().unwrap().clone();
        t.delivered.fetch_add(1, Ordering::Relaxed);
        t.last_recv.fetch_max(recv, Ordering::Relaxed);
        t.latencies
            .lock()
            .unwrap()
            .push(recv.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
    }
}

fn percentile(v: &mut [u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

struct Row {
    label: &'static str,
    p50_us: u32,
    p99_us: u32,
    msgs_per_s: f64,
    broker_bytes_per_broadcast: Option<f64>,
}

/// What a row runs on: its node URLs (client i joins node i % len) and
/// its sender.
struct Setup {
    proto: Proto,
    urls: Vec<String>,
    sender: Sender,
}

enum Sender {
    /// A channel on node 0 of realtime-ws hubs (kept alive with them).
    Hub {
        hubs: Vec<WsRealtime>,
        channel: Arc<dyn Channel>,
    },
    /// socket.io's node 0, driven over its stdin.
    Node { nodes: Vec<NodeProcess> },
}

impl Sender {
    async fn one(&mut self, i: usize) {
        match self {
            Sender::Hub { channel, .. } => channel
                .send("m", json!({"i": i, "t": now_micros()}))
                .await
                .unwrap(),
            Sender::Node { nodes } => nodes[0].command("one").await,
        }
    }

    async fn burst(&mut self, b: usize) {
        match self {
            Sender::Hub { channel, .. } => {
                for i in 0..b {
                    channel
                        .send("m", json!({"i": i, "t": now_micros()}))
                        .await
                        .unwrap();
                }
            }
            Sender::Node { nodes } => {
                nodes[0].command(&format!("burst {b}")).await;
                nodes[0].expect("sent").await;
            }
        }
    }

    /// Broadcasts node 0 published so far, and their bytes.
    async fn published(&mut self) -> Option<(u64, u64)> {
        match self {
            Sender::Hub { hubs, .. } => hubs[0].cluster_stats().map(|s| {
                (
                    s.broadcasts.load(Ordering::Relaxed),
                    s.broadcast_bytes.load(Ordering::Relaxed),
                )
            }),
            Sender::Node { nodes } => {
                nodes[0].command("stats").await;
                let line = nodes[0].expect("stats ").await;
                let mut it = line.split_whitespace().skip(1).map(|v| v.parse().unwrap());
                Some((it.next().unwrap(), it.next().unwrap()))
            }
        }
    }
}

/// One socket.io node (`socketio-cluster/server.cjs`).
struct NodeProcess {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl NodeProcess {
    async fn start(key: &str) -> (NodeProcess, u16) {
        let mut child = tokio::process::Command::new("node")
            .arg("server.cjs")
            .arg(key)
            .env("REDIS_URL", REDIS)
            .current_dir(SOCKETIO_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run `node` (Node 20 is needed for the socket.io row)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut node = NodeProcess {
            _child: child,
            stdin,
            stdout,
        };
        let line = node.expect("listening ").await;
        let port = line["listening ".len()..].trim().parse().unwrap();
        (node, port)
    }

    async fn command(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("the socket.io node is gone");
    }

    /// The next line starting with `prefix` (others are skipped).
    async fn expect(&mut self, prefix: &str) -> String {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line()).await {
                Ok(Ok(Some(l))) if l.starts_with(prefix) => return l,
                Ok(Ok(Some(_))) => {}
                other => {
                    panic!("the socket.io node ended or hung waiting for {prefix:?}: {other:?}")
                }
            }
        }
    }
}

/// `nodes` realtime-ws hubs (joined through `broker` when more than one),
/// each of which has heard the others.
async fn hubs(nodes: usize, broker: &str, n: usize) -> Setup {
    let prefix = format!("bench.cluster.{}.{}", std::process::id(), now_micros());
    let url = if broker == "redis" { REDIS } else { NATS };
    let mut hubs = Vec::new();
    for i in 0..nodes {
        let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
        config.max_connections = n + 100;
        if nodes > 1 {
            let mut c = ClusterConfig::new(broker, url, &format!("n{i}"));
            c.prefix = prefix.clone();
            config.cluster = Some(c);
        }
        hubs.push(WsRealtime::start(config, None, None).await.expect("hub"));
    }
    // Every node heard the others before measuring.
    if nodes > 1 {
        let end = Instant::now() + Duration::from_secs(10);
        while !hubs.iter().all(|h| {
            h.cluster_stats()
                .is_some_and(|s| s.received.load(Ordering::Relaxed) >= (nodes - 1) as u64)
        }) {
            assert!(
                Instant::now() < end,
                "the nodes did not hear each other through {broker}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let urls = hubs
        .iter()
        .map(|h| format!("{}?vsn=2.0.0", h.url().unwrap()))
        .collect();
    let channel = hubs[0]
        .channel("bench", ChannelOptions::new())
        .await
        .unwrap();
    channel.join().await.unwrap();
    Setup {
        proto: Proto::Phoenix,
        urls,
        sender: Sender::Hub { hubs, channel },
    }
}

/// Three socket.io nodes on one Redis adapter key, all subscribed.
async fn socketio_nodes() -> Setup {
    let key = format!("bench.socketio.{}.{}", std::process::id(), now_micros());
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (node, port) = NodeProcess::start(&key).await;
        nodes.push(node);
        urls.push(format!(
            "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
        ));
    }
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        nodes[0].command("nodes").await;
        if nodes[0].expect("nodes ").await == "nodes 3" {
            break;
        }
        assert!(
            Instant::now() < end,
            "the socket.io nodes did not all subscribe to Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Setup {
        proto: Proto::SocketIo,
        urls,
        sender: Sender::Node { nodes },
    }
}

async fn run(label: &'static str, setup: Setup, n: usize, burst: usize) -> Row {
    let Setup {
        proto,
        urls,
        mut sender,
    } = setup;
    let ready = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Arc::new(Tally::default())));
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = urls[i % urls.len()].clone();
        tasks.push(tokio::spawn(client(
            proto,
            url,
            ready.clone(),
            tally.clone(),
        )));
    }
    while ready.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wait_all = |t: Arc<Tally>, expect: usize| async move {
        let end = Instant::now() + Duration::from_secs(120);
        while t.delivered.load(Ordering::Relaxed) < expect {
            assert!(
                Instant::now() < end,
                "{label}: deliveries stalled at {} of {expect}",
                t.delivered.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    // Latency: paced.
    let paced = Arc::new(Tally::default());
    *tally.lock().unwrap() = paced.clone();
    for i in 0..PACED {
        sender.one(i).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_all(paced.clone(), PACED * n).await;
    let mut lat = std::mem::take(&mut *paced.latencies.lock().unwrap());
    let (p50_us, p99_us) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    // Throughput: a burst.
    let t = Arc::new(Tally::default());
    *tally.lock().unwrap() = t.clone();
    let before = sender.published().await;
    let start = now_micros();
    sender.burst(burst).await;
    wait_all(t.clone(), burst * n).await;
    let secs = (t.last_recv.load(Ordering::Relaxed).saturating_sub(start)).max(1) as f64 / 1e6;
    let after = sender.published().await;
    // A single hub publishes nothing.
    let broker_bytes_per_broadcast = before
        .zip(after)
        .map(|((b0, bytes0), (b1, bytes1))| (bytes1 - bytes0) as f64 / (b1 - b0).max(1) as f64);
    for task in tasks {
        task.abort();
    }
    drop(sender);
    Row {
        label,
        p50_us,
        p99_us,
        msgs_per_s: (burst * n) as f64 / secs,
        broker_bytes_per_broadcast,
    }
}

/// Whether `addr` answers; under `CI=true` a missing broker fails the run.
fn broker_up(name: &str, addr: &str) -> bool {
    let up = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
        .is_ok();
    if !up {
        if truststream_core::in_ci() {
            panic!("CI=true and the cluster bench needs {name} on {addr}");
        }
        eprintln!("SKIPPED cluster bench: {name} is not answering on {addr}");
    }
    up
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (n, burst) = if smoke {
        (30, 20)
    } else {
        (env_usize("BENCH_N", 1000), env_usize("BENCH_BURST", 200))
    };
    let installed = std::path::Path::new(SOCKETIO_DIR)
        .join("node_modules/@socket.io/redis-adapter")
        .exists();
    assert!(
        installed,
        "the socket.io row needs its npm packages: run `npm ci` in benches/realtime/socketio-cluster"
    );
    if !(broker_up("NATS", "127.0.0.1:4222") && broker_up("Redis", "127.0.0.1:6379")) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "clients={n} burst={burst}{}",
        if smoke { " (smoke)" } else { "" }
    );
    println!(
        "{:<36}  p50_us  p99_us  delivered_msgs_per_s  broker_bytes_per_broadcast",
        "row"
    );
    let mut rows = Vec::new();
    for label in [
        "realtime-ws, 1 node",
        "realtime-ws, 3 nodes, NATS",
        "realtime-ws, 3 nodes, Redis",
        "socket.io + redis-adapter, 3 nodes",
    ] {
        let r = rt.block_on(async {
            let setup = match label {
                "realtime-ws, 1 node" => hubs(1, "nats", n).await,
                "realtime-ws, 3 nodes, NATS" => hubs(3, "nats", n).await,
                "realtime-ws, 3 nodes, Redis" => hubs(3, "redis", n).await,
                _ => socketio_nodes().await,
            };
            run(label, setup, n, burst).await
        });
        println!(
            "{:<36}  {:>6}  {:>6}  {:>20.0}  {}",
            r.label,
            r.p50_us,
            r.p99_us,
            r.msgs_per_s,
            r.broker_bytes_per_broadcast
                .map_or("-".to_string(), |b| format!("{b:.0}"))
        );
        rows.push(r);
    }
    let [one, nats, redis, socketio] = &rows[..] else {
        unreachable!("four rows")
    };
    println!(
        "3 nodes (NATS) / 1 node delivered msgs/s: {:.2}x (goal >= 0.7x)",
        nats.msgs_per_s / one.msgs_per_s
    );
    println!(
        "realtime-ws 3 nodes (NATS) / socket.io 3 nodes delivered msgs/s: {:.2}x (goal >= 2x)",
        nats.msgs_per_s / socketio.msgs_per_s
    );
    println!(
        "realtime-ws 3 nodes (Redis) / socket.io 3 nodes (Redis) delivered msgs/s: {:.2}x",
        redis.msgs_per_s / socketio.msgs_per_s
    );
}
