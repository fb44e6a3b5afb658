//! Fan-out of broadcasts to 1,000 and 10,000 subscribed WebSocket
//! connections on loopback, side by side:
//!
//! - `truststream`: the realtime-ws hub (vsn 2.0.0 clients, kind 4 binary
//!   broadcasts), published from an in-process handle; its subscribers
//!   split each frame in place (`protocol::split_user_broadcast`) and parse
//!   the payload, the UTF-8 checked once, as the floor's subscribers do
//!   with their text frames (until 2026-12-05 they decoded the frame into
//!   owned strings and parsed with `serde_json::from_slice`: ~640 more
//!   instructions per message on the subscriber side);
//! - `socket.io`: a Node socket.io 4 server (`socketio/server.cjs`, websocket
//!   transport) emitting to a room;
//! - `floor`: a bare tokio-tungstenite loop writing one prepared frame to
//!   every connection (bounded queue + writer task per connection): a text
//!   frame of the JSON payload, ~17 % smaller than the hub's (which carries
//!   the topic and event, as the protocol needs);
//! - `floor-kind4`: the same loop writing the hub's own bytes, the kind 4
//!   frame of the same broadcast, which its subscribers split and parse as
//!   the truststream subscribers do: the same work on the wire and in the
//!   subscribers, so the ratio to it is the hub's own overhead.
//!
//! Every server runs in its own fresh process (this binary with
//! `BENCH_ROLE=server`, or node), driven by lines on its stdin, and the
//! subscribers in another (`BENCH_ROLE=clients`): each side has its own
//! file-descriptor budget and each server's memory is measured alone, with
//! no allocator state left over from another target. Per target and size:
//!
//! 1. memory per idle connection: the server's RSS after N idle joined
//!    connections minus before, divided by N;
//! 2. latency: 20 messages, one every 50 ms (50 µs per connection when
//!    longer); p50/p99 of send-to-receive;
//! 3. throughput: a burst of B messages back to back; delivered messages per
//!    second = N * B / (last receipt - first send). B is 200 below 10,000
//!    connections and 50 at 10,000, the same for every target;
//!    `BENCH_BURST` sets it (at most 1,024: the floor's queue per
//!    connection holds 1,024 messages and drops what does not fit). A
//!    burst of 200 to 1,000 connections lasts about 0.2 s: single runs move
//!    by +-0.1 in the truststream / floor ratio, so compare medians.
//!
//! Run: `cargo bench -p truststream-bench-realtime` (needs `npm ci` in
//! `benches/realtime/socketio`; 10,000 connections need `ulimit -n` of at
//! least 10,100 per process: the bench raises nothing itself and says so).
//! `BENCH_SIZES=1000` limits the sizes, `BENCH_TARGETS=truststream,floor`
//! the targets, `BENCH_BURST` the burst length. `BENCH_ROUNDS=5` runs every
//! target 5 times, alternated, and prints the median of the per-round
//! ratios with each of them. Each row also gives the CPU time the server
//! process and the subscriber process used per delivery in the burst (their
//! threads' run time from `/proc/<pid>/task/*/schedstat`): what each side's
//! work costs, which moves far less with the machine's other load than the
//! delivery rate does. `BENCH_PERF=<dir>` records each server process
//! during its burst with `perf record` (`<dir>/perf-<target>-burst.data`;
//! the sampling costs the server CPU, so such a run's figures are not
//! compared with others).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Message;
use truststream_bench_realtime::{
    cpu_ns_of, env_usize, main_thread_cpu_ns, now_micros, phoenix_join, rss_of, socketio_connect,
};
use truststream_core_realtime::{Channel, ChannelOptions, Realtime};
use truststream_realtime_ws::{WsRealtime, WsRealtimeConfig};

const PACED: usize = 20;

/// The gap between paced messages: 50 ms, or 50 µs per connection when that
/// is longer (one message to 10,000 connections is 10,000 deliveries: the
/// paced phase measures latency well below saturation).
fn pace(n: usize) -> Duration {
    Duration::from_millis(50).max(Duration::from_micros(50 * n as u64))
}
const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn message(i: usize) -> Value {
    json!({"t": now_micros(), "i": i, "pad": PAD})
}

/// The hub's frame for a JSON broadcast to vsn 2.0.0 clients (kind 4, no
/// metadata; see `truststream_realtime_ws::protocol`): kind, the
/// topic, event and metadata lengths, the encoding (1: JSON), then the
/// topic, the event and the payload. What `floor-kind4` sends, so that it
/// puts the hub's bytes on the wire.
fn kind4_frame(topic: &str, event: &str, json: &[u8]) -> Vec<u8> {
    let len = |s: &str| u8::try_from(s.len()).expect("kind 4 names are at most 255 bytes");
    let mut out = Vec::with_capacity(5 + topic.len() + event.len() + json.len());
    out.extend_from_slice(&[4, len(topic), len(event), 0, 1]);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(json);
    out
}

fn fd_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    TrustStream,
    SocketIo,
    Floor,
    FloorKind4,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::TrustStream => "truststream",
            Target::SocketIo => "socket.io",
            Target::Floor => "floor",
            Target::FloorKind4 => "floor-kind4",
        }
    }
    fn parse(s: &str) -> Target {
        match s {
            "truststream" => Target::TrustStream,
            "socket.io" => Target::SocketIo,
            "floor-kind4" => Target::FloorKind4,
            _ => Target::Floor,
        }
    }
}

// ------------------------------------------------------------------ clients

/// What the subscribers measured in one phase.
#[derive(Default)]
struct Phase {
    expect: AtomicUsize,
    delivered: AtomicU64,
    done_clients: AtomicUsize,
    first_recv: AtomicU64,
    last_recv: AtomicU64,
    latencies: Mutex<Vec<u32>>,
}

async fn client_task(
    target: Target,
    url: String,
    ready: Arc<AtomicUsize>,
    phase: Arc<Mutex<Arc<Phase>>>,
) {
    let mut ws = match target {
        Target::TrustStream => phoenix_join(&url, "bench").await,
        // The server puts every socket in room "bench" on connection.
        Target::SocketIo => socketio_connect(&url).await,
        Target::Floor | Target::FloorKind4 => {
            tokio_tungstenite::connect_async(url.as_str())
                .await
                .expect("connect")
                .0
        }
    };
    ready.fetch_add(1, Ordering::SeqCst);
    let mut mine = 0usize;
    let mut current: Option<Arc<Phase>> = None;
    while let Some(Ok(m)) = ws.next().await {
        let body: Option<Value> = match (&m, target) {
            // The frame's parts borrowed, its payload parsed: the floor's
            // text is checked as UTF-8 (by tungstenite) and parsed the same
            // way.
            (Message::Binary(b), Target::TrustStream | Target::FloorKind4) => {
                truststream_realtime_ws::protocol::split_user_broadcast(b).and_then(|u| u.json())
            }
            (Message::Text(t), Target::SocketIo) => {
                if t.as_str() == "2" {
                    let _ = ws.send(Message::text("3")).await;
                    None
                } else if let Some(rest) = t.strip_prefix("42") {
                    serde_json::from_str::<Value>(rest)
                        .ok()
                        .map(|v| v[1].clone())
                } else {
                    None
                }
            }
            (Message::Text(t), Target::Floor) => serde_json::from_str(t).ok(),
            _ => None,
        };
        let Some(body) = body else { continue };
        let recv = now_micros();
        let sent = body["t"].as_u64().unwrap_or(recv);
        let p = phase.lock().unwrap().clone();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &p)) {
            current = Some(p.clone());
            mine = 0;
        }
        p.delivered.fetch_add(1, Ordering::Relaxed);
        let _ = p
            .first_recv
            .compare_exchange(0, recv, Ordering::Relaxed, Ordering::Relaxed);
        p.last_recv.fetch_max(recv, Ordering::Relaxed);
        p.latencies
            .lock()
            .unwrap()
            .push(recv.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
        mine += 1;
        if mine == p.expect.load(Ordering::Relaxed) {
            p.done_clients.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn clients_main() {
    let target = Target::parse(&std::env::var("BENCH_TARGET").unwrap());
    let url = std::env::var("BENCH_URL").unwrap();
    let n: usize = std::env::var("BENCH_N").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ready = Arc::new(AtomicUsize::new(0));
        let phase = Arc::new(Mutex::new(Arc::new(Phase::default())));
        let mut opening = 0;
        for _ in 0..n {
            tokio::spawn(client_task(
                target,
                url.clone(),
                ready.clone(),
                phase.clone(),
            ));
            opening += 1;
            // Keep the accept backlog short: at most 256 handshakes in flight.
            while opening - ready.load(Ordering::SeqCst) > 256 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        while ready.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("ready");
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("expect") {
                break;
            }
            let expect: usize = parts.next().unwrap().parse().unwrap();
            let p = Arc::new(Phase::default());
            p.expect.store(expect, Ordering::SeqCst);
            *phase.lock().unwrap() = p.clone();
            println!("armed");
            let deadline = Instant::now() + Duration::from_secs(120);
            while p.done_clients.load(Ordering::SeqCst) < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut lat = std::mem::take(&mut *p.latencies.lock().unwrap());
            lat.sort_unstable();
            let pct = |q: f64| {
                lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0)
            };
            println!(
                "{}",
                json!({
                    "delivered": p.delivered.load(Ordering::SeqCst),
                    "complete_clients": p.done_clients.load(Ordering::SeqCst),
                    "first_recv": p.first_recv.load(Ordering::SeqCst),
                    "last_recv": p.last_recv.load(Ordering::SeqCst),
                    "p50_us": pct(0.50),
                    "p99_us": pct(0.99),
                    "max_us": lat.last().copied().unwrap_or(0),
                })
            );
        }
    });
}

// ------------------------------------------------------------------ servers

/// The publishing side of a Rust target, run in its own process
/// (`BENCH_ROLE=server`) with the line protocol of `socketio/server.cjs`.
enum Publisher {
    TrustStream {
        _hub: WsRealtime,
        channel: Arc<dyn Channel>,
    },
    Floor {
        conns: Arc<Mutex<Vec<mpsc::Sender<Message>>>>,
        /// Send the hub's kind 4 frame (`floor-kind4`), not a text frame.
        kind4: bool,
    },
}

impl Publisher {
    async fn start(target: Target) -> (Publisher, u16) {
        match target {
            Target::TrustStream => {
                let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
                config.max_connections = 20_000;
                config.heartbeat_timeout_secs = 3600;
                let hub = WsRealtime::start(config, None, None).await.unwrap();
                let port = hub.local_addr().unwrap().port();
                let channel = hub
                    .channel("bench", ChannelOptions::default())
                    .await
                    .unwrap();
                channel.join().await.unwrap();
                (Publisher::TrustStream { _hub: hub, channel }, port)
            }
            _ => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                let conns: Arc<Mutex<Vec<mpsc::Sender<Message>>>> = Arc::default();
                let c = conns.clone();
                tokio::spawn(async move {
                    loop {
                        let (tcp, _) = listener.accept().await.unwrap();
                        let _ = tcp.set_nodelay(true);
                        let c = c.clone();
                        tokio::spawn(async move {
                            // The hub's buffer sizes, so the floor is the
                            // same socket work without the protocol.
                            let config =
                                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default(
                                )
                                .read_buffer_size(4 * 1024)
                                .write_buffer_size(8 * 1024);
                            let ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config))
                                .await
                                .unwrap();
                            let (mut sink, mut stream) = ws.split();
                            let (tx, mut rx) = mpsc::channel::<Message>(1024);
                            c.lock().unwrap().push(tx);
                            tokio::spawn(
                                async move { while let Some(Ok(_)) = stream.next().await {} },
                            );
                            while let Some(m) = rx.recv().await {
                                if sink.feed(m).await.is_err() {
                                    return;
                                }
                                while let Ok(m) = rx.try_recv() {
                                    if sink.feed(m).await.is_err() {
                                        return;
                                    }
                                }
                                if sink.flush().await.is_err() {
                                    return;
                                }
                            }
                        });
                    }
                });
                (
                    Publisher::Floor {
                        conns,
                        kind4: target == Target::FloorKind4,
                    },
                    port,
                )
            }
        }
    }

    async fn publish(&self, i: usize) {
        match self {
            Publisher::TrustStream { channel, .. } => {
                channel.send("m", message(i)).await.unwrap();
            }
            Publisher::Floor { conns, kind4 } => {
                let text = message(i).to_string();
                let m = if *kind4 {
                    Message::binary(kind4_frame("realtime:bench", "m", text.as_bytes()))
                } else {
                    Message::text(text)
                };
                for tx in conns.lock().unwrap().iter() {
                    let _ = tx.try_send(m.clone());
                }
            }
        }
    }
}

fn server_main() {
    let target = Target::parse(&std::env::var("BENCH_TARGET").unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (publisher, port) = Publisher::start(target).await;
        println!("listening {port}");
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut parts = line.split_whitespace();
            let cmd = parts.next().unwrap_or("");
            let arg: usize = parts.next().and_then(|a| a.parse().ok()).unwrap_or(0);
            match cmd {
                "burst" => {
                    for i in 0..arg {
                        publisher.publish(i).await;
                    }
                    println!("sent");
                }
                "one" => publisher.publish(arg).await,
                "rss" => println!("rss {}", rss_of(std::process::id())),
                _ => break,
            }
        }
    });
}

/// A server process of any target, driven by lines on its stdin.
struct Server {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

impl Server {
    async fn start(target: Target) -> (Server, String) {
        let mut cmd = match target {
            Target::SocketIo => {
                let mut c = tokio::process::Command::new("node");
                c.arg("server.cjs")
                    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/socketio"));
                c
            }
            _ => {
                let mut c = tokio::process::Command::new(std::env::current_exe().unwrap());
                c.env("BENCH_ROLE", "server")
                    .env("BENCH_TARGET", target.name());
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the server process starts");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = out.next_line().await.unwrap().unwrap();
        let port = line.strip_prefix("listening ").unwrap().to_string();
        let url = match target {
            Target::TrustStream => format!("ws://127.0.0.1:{port}/realtime/v1/websocket?vsn=2.0.0"),
            Target::SocketIo => {
                format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")
            }
            Target::Floor | Target::FloorKind4 => format!("ws://127.0.0.1:{port}/"),
        };
        (Server { child, stdin, out }, url)
    }

    async fn rss(&mut self) -> u64 {
        self.stdin.write_all(b"rss\n").await.unwrap();
        loop {
            let line = self.out.next_line().await.unwrap().unwrap();
            if let Some(v) = line.strip_prefix("rss ") {
                return v.parse().unwrap();
            }
        }
    }

    async fn publish(&mut self, i: usize) {
        self.stdin
            .write_all(format!("one {i}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Sends `b` messages back to back; returns when the server sent them.
    async fn burst(&mut self, b: usize) {
        self.stdin
            .write_all(format!("burst {b}\n").as_bytes())
            .await
            .unwrap();
        while self.out.next_line().await.unwrap().as_deref() != Some("sent") {}
    }

    async fn stop(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        drop(self.stdin);
        let _ = self.child.kill().await;
    }
}

// ------------------------------------------------------------------ orchestration

struct Clients {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

impl Clients {
    async fn start(target: Target, url: &str, n: usize) -> Clients {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .env("BENCH_ROLE", "clients")
            .env("BENCH_TARGET", target.name())
            .env("BENCH_URL", url)
            .env("BENCH_N", n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(180), out.next_line())
            .await
            .expect("clients connect within 180 s")
            .unwrap();
        assert_eq!(line.as_deref(), Some("ready"));
        Clients { child, stdin, out }
    }

    async fn arm(&mut self, expect: usize) {
        self.stdin
            .write_all(format!("expect {expect}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            self.out.next_line().await.unwrap().as_deref(),
            Some("armed")
        );
    }

    async fn result(&mut self) -> Value {
        let line = self.out.next_line().await.unwrap().unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

struct Row {
    target: Target,
    n: usize,
    kib_per_conn: f64,
    p50_ms: f64,
    p99_ms: f64,
    burst_msgs_per_s: f64,
    burst_p99_ms: f64,
    /// Which of the `BENCH_ROUNDS` rounds it ran in.
    round: usize,
    /// CPU time per delivery in the burst, in nanoseconds: the server
    /// process's and the subscriber process's.
    server_ns: f64,
    clients_ns: f64,
    /// Of `server_ns`, the publishing thread's (a Rust server's main
    /// thread, which runs the fan-out loop; the socket writes run on the
    /// runtime's workers).
    publisher_ns: f64,
    complete: bool,
}

async fn run(target: Target, n: usize, burst: usize) -> Row {
    let (mut server, url) = Server::start(target).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss().await;
    let mut clients = Clients::start(target, &url, n).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss().await;
    let kib_per_conn = after.saturating_sub(before) as f64 / n as f64 / 1024.0;

    clients.arm(PACED).await;
    for i in 0..PACED {
        server.publish(i).await;
        tokio::time::sleep(pace(n)).await;
    }
    let paced = clients.result().await;

    clients.arm(burst).await;
    let (server_pid, clients_pid) = (
        server.child.id().unwrap_or(0),
        clients.child.id().unwrap_or(0),
    );
    // The server's profile over the burst alone, when asked for.
    let perf = std::env::var("BENCH_PERF").ok().map(|dir| {
        std::process::Command::new("perf")
            .args(["record", "-F", "4000", "-o"])
            .arg(format!("{dir}/perf-{}-burst.data", target.name()))
            .args(["-p", &server_pid.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("BENCH_PERF needs `perf` (Debian's linux-perf)")
    });
    if perf.is_some() {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let cpu_before = (cpu_ns_of(server_pid), cpu_ns_of(clients_pid));
    let publisher_before = main_thread_cpu_ns(server_pid);
    let first_send = now_micros();
    server.burst(burst).await;
    let bursted = clients.result().await;
    let cpu_after = (cpu_ns_of(server_pid), cpu_ns_of(clients_pid));
    let publisher_after = main_thread_cpu_ns(server_pid);
    if let Some(mut p) = perf {
        // perf writes its file on SIGINT.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
    let delivered = bursted["delivered"].as_u64().unwrap_or(0) as f64;
    let per_delivery =
        |before: u64, after: u64| after.saturating_sub(before) as f64 / delivered.max(1.0);
    let span_us = bursted["last_recv"]
        .as_u64()
        .unwrap_or(first_send)
        .saturating_sub(first_send)
        .max(1) as f64;
    let complete = paced["complete_clients"].as_u64() == Some(n as u64)
        && bursted["complete_clients"].as_u64() == Some(n as u64);

    drop(clients.stdin);
    let _ = clients.child.kill().await;
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Row {
        target,
        n,
        kib_per_conn,
        p50_ms: paced["p50_us"].as_f64().unwrap_or(0.0) / 1000.0,
        p99_ms: paced["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
        burst_msgs_per_s: delivered / (span_us / 1e6),
        burst_p99_ms: bursted["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
        round: 0,
        server_ns: per_delivery(cpu_before.0, cpu_after.0),
        publisher_ns: per_delivery(publisher_before, publisher_after),
        clients_ns: per_delivery(cpu_before.1, cpu_after.1),
        complete,
    }
}

/// The median of sorted `v` (not empty).
fn median(v: &[f64]) -> f64 {
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

fn main() {
    match std::env::var("BENCH_ROLE").as_deref() {
        Ok("clients") => return clients_main(),
        Ok("server") => return server_main(),
        _ => {}
    }
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // useful either way: a quick smoke run there.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = match std::env::var("BENCH_SIZES") {
        Ok(s) => s.split(',').filter_map(|v| v.trim().parse().ok()).collect(),
        Err(_) if smoke => vec![50],
        Err(_) => vec![1_000, 10_000],
    };
    let limit = fd_limit();
    let rounds = env_usize("BENCH_ROUNDS", 1).max(1);
    let socketio = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/socketio/node_modules/socket.io"
    ))
    .is_dir();
    if !socketio {
        eprintln!("socket.io is not installed: run `npm ci` in benches/realtime/socketio (its rows are skipped)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        for &n in &sizes {
            if (n as u64) + 100 > limit {
                eprintln!(
                    "skipping {n} connections: `ulimit -n` is {limit}; raise the soft limit to at least {} (ulimit -n {})",
                    n + 100,
                    n + 100
                );
                continue;
            }
            // Bursts stay under the floor's 1,024-message queue per
            // connection (the hub's is bounded in bytes: 4 MiB).
            let default_burst = if n >= 10_000 { 50 } else { 200 };
            let burst = env_usize("BENCH_BURST", default_burst).clamp(1, 1_024);

            let mut targets =
                VecDeque::from([Target::TrustStream, Target::Floor, Target::FloorKind4]);
            if socketio {
                targets.push_back(Target::SocketIo);
            }
            if let Ok(only) = std::env::var("BENCH_TARGETS") {
                targets.retain(|t| only.split(',').any(|o| o.trim() == t.name()));
            }
            for round in 0..rounds {
                for &target in &targets {
                    let mut row = run(target, n, burst).await;
                    row.round = round;
                    eprintln!(
                        "{:<12} n={:<6} {:>8.2} KiB/conn  paced p50 {:>7.2} ms p99 {:>7.2} ms  burst {:>10.0} msg/s (p99 {:>8.1} ms)  cpu/delivery server {:>6.0} ns (publisher {:>4.0}) clients {:>6.0} ns{}",
                        row.target.name(),
                        row.n,
                        row.kib_per_conn,
                        row.p50_ms,
                        row.p99_ms,
                        row.burst_msgs_per_s,
                        row.burst_p99_ms,
                        row.server_ns,
                        row.publisher_ns,
                        row.clients_ns,
                        if row.complete { "" } else { "  INCOMPLETE" }
                    );
                    rows.push(row);
                }
            }
        }
    });
    println!("\n| target | connections | msgs/s delivered (burst) | p50 / p99 latency (paced) | p99 in burst | memory / idle connection | CPU per delivery: server / subscribers |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} / {:.2} ms | {:.1} ms | {:.1} KiB | {:.0} / {:.0} ns |{}",
            r.target.name(),
            r.n,
            r.burst_msgs_per_s,
            r.p50_ms,
            r.p99_ms,
            r.burst_p99_ms,
            r.kib_per_conn,
            r.server_ns,
            r.clients_ns,
            if r.complete { "" } else { " (incomplete)" }
        );
    }
    for &n in &sizes {
        for other in [Target::SocketIo, Target::Floor, Target::FloorKind4] {
            // One ratio per round (the two targets of a round ran back to
            // back), then their median and range.
            let mut ratios: Vec<f64> = (0..rounds)
                .filter_map(|round| {
                    let get = |t: Target| {
                        rows.iter()
                            .find(|r| r.target == t && r.n == n && r.round == round)
                    };
                    Some(get(Target::TrustStream)?.burst_msgs_per_s / get(other)?.burst_msgs_per_s)
                })
                .collect();
            if ratios.is_empty() {
                continue;
            }
            ratios.sort_by(f64::total_cmp);
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "n={n}: truststream / {} delivered msgs/s = {:.2}x (median of {}: {})",
                other.name(),
                median(&ratios),
                ratios.len(),
                each.join(", ")
            );
        }
        for t in [
            Target::TrustStream,
            Target::Floor,
            Target::FloorKind4,
            Target::SocketIo,
        ] {
            // One figure of every row of `t` at `n`, sorted.
            let sorted = |f: fn(&Row) -> f64| {
                let mut v: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.target == t && r.n == n)
                    .map(f)
                    .collect();
                v.sort_by(f64::total_cmp);
                v
            };
            let server = sorted(|r| r.server_ns);
            if server.is_empty() {
                continue;
            }
            let publisher = sorted(|r| r.publisher_ns);
            let clients = sorted(|r| r.clients_ns);
            println!(
                "n={n}: {} CPU per delivery (median of {}): server {:.0} ns ({:.0}-{:.0}; publisher {:.0}), subscribers {:.0} ns ({:.0}-{:.0})",
                t.name(),
                server.len(),
                median(&server),
                server[0],
                server[server.len() - 1],
                median(&publisher),
                median(&clients),
                clients[0],
                clients[clients.len() - 1],
            );
        }
    }
    if rows.iter().any(|r| !r.complete) {
        eprintln!("some runs did not deliver every message to every client");
        std::process::exit(1);
    }
}
