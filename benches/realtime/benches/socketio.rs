//! Fan-out over Socket.IO: realtime-socketio's server mode vs the Node
//! `socket.io` server of the fan-out bench (`socketio/server.cjs`), with
//! the same Socket.IO subscribers (websocket transport) on loopback.
//!
//! - `truststream-socketio`: the server mode; every subscriber joins
//!   channel `bench` (`rt:join`); an in-process handle broadcasts event `m`
//!   (subscribers get `rt:message` `{channel, event, payload}`);
//! - `socket.io`: Node socket.io 4 emitting `m` to room `bench`.
//!
//! Each server runs in its own process (this binary with
//! `BENCH_ROLE=server`, or node), the subscribers in another
//! (`BENCH_ROLE=clients`). Per target: memory per idle connection (the
//! server's RSS after N joined connections minus before, over N) and
//! delivered messages per second for a burst of B messages
//! (N * B / (last receipt - first send)).
//!
//! Run: `cargo bench -p truststream-bench-realtime --bench socketio` (the
//! Node rows need `npm ci` in `benches/realtime/socketio`). `BENCH_N`
//! (default 1000) and `BENCH_BURST` (default 100) set the sizes;
//! `BENCH_SMOKE=1` runs 10 connections and 5 messages, to check it works.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_tungstenite::tungstenite::protocol::Message;
use truststream_bench_realtime::{env_usize, now_micros, rss_of, socketio_connect};
use truststream_core_realtime::{ChannelOptions, Realtime};
use truststream_realtime_socketio::{SocketIoConfig, SocketIoRealtime};

const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
const TARGETS: [&str; 2] = ["truststream-socketio", "socket.io"];

// ------------------------------------------------------------------ server

/// `BENCH_ROLE=server`: the server mode, driven by the line protocol of
/// `socketio/server.cjs` (`burst <n>`, `rss`, `quit`).
fn server_main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = SocketIoConfig::server("127.0.0.1:0");
        config.allow_anonymous = true;
        config.max_connections = 100_000;
        let server = SocketIoRealtime::start(config, None, None).await.unwrap();
        let ch = server
            .channel("bench", ChannelOptions::default())
            .await
            .unwrap();
        ch.join().await.unwrap();
        println!("listening {}", server.local_addr().unwrap().port());
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut seq = 0usize;
        while let Ok(Some(line)) = lines.next_line().await {
            let mut parts = line.split_whitespace();
            match parts.next() {
                Some("burst") => {
                    let n: usize = parts.next().unwrap().parse().unwrap();
                    for _ in 0..n {
                        let payload = json!({"t": now_micros(), "i": seq, "pad": PAD});
                        seq += 1;
                        ch.send("m", payload).await.unwrap();
                    }
                    println!("sent");
                }
                Some("rss") => println!("rss {}", rss_of(std::process::id())),
                _ => break,
            }
        }
    });
}

// ------------------------------------------------------------------ clients

#[derive(Default)]
struct Phase {
    expect: AtomicUsize,
    done: AtomicUsize,
    delivered: AtomicU64,
    last_recv: AtomicU64,
}

async fn subscriber(
    target: String,
    url: String,
    ready: Arc<AtomicUsize>,
    phase: Arc<std::sync::Mutex<Arc<Phase>>>,
) {
    let mut ws = socketio_connect(&url).await;
    if target == "truststream-socketio" {
        ws.send(Message::text(r#"421["rt:join",{"channel":"bench"}]"#))
            .await
            .unwrap();
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                if t.starts_with("431") {
                    assert!(t.contains("\"ok\":true"), "join failed: {t}");
                    break;
                }
            }
        }
    }
    ready.fetch_add(1, Ordering::SeqCst);
    let mut mine = 0usize;
    let mut current: Option<Arc<Phase>> = None;
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        if t.as_str() == "2" {
            let _ = ws.send(Message::text("3")).await;
            continue;
        }
        let Some(rest) = t.strip_prefix("42") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(rest) else {
            continue;
        };
        let is_message = v[0] == "m" || (v[0] == "rt:message" && v[1]["event"] == "m");
        if !is_message {
            continue;
        }
        let recv = now_micros();
        let p = phase.lock().unwrap().clone();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &p)) {
            current = Some(p.clone());
            mine = 0;
        }
        p.delivered.fetch_add(1, Ordering::Relaxed);
        p.last_recv.fetch_max(recv, Ordering::Relaxed);
        mine += 1;
        if mine == p.expect.load(Ordering::Relaxed) {
            p.done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `BENCH_ROLE=clients`: N subscribers; `expect <b>` arms a phase and
/// prints `{delivered, last_recv}` once every subscriber got b messages
/// (or after 120 s).
fn clients_main() {
    let target = std::env::var("BENCH_TARGET").unwrap();
    let url = std::env::var("BENCH_URL").unwrap();
    let n: usize = std::env::var("BENCH_N").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ready = Arc::new(AtomicUsize::new(0));
        let phase = Arc::new(std::sync::Mutex::new(Arc::new(Phase::default())));
        for opened in 1..=n {
            tokio::spawn(subscriber(
                target.clone(),
                url.clone(),
                ready.clone(),
                phase.clone(),
            ));
            // At most 256 handshakes in flight.
            while opened - ready.load(Ordering::SeqCst) > 256 {
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
            let p = Arc::new(Phase::default());
            p.expect
                .store(parts.next().unwrap().parse().unwrap(), Ordering::SeqCst);
            *phase.lock().unwrap() = p.clone();
            println!("armed");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while p.done.load(Ordering::SeqCst) < n && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            println!(
                "{}",
                json!({
                    "delivered": p.delivered.load(Ordering::SeqCst),
                    "last_recv": p.last_recv.load(Ordering::SeqCst),
                })
            );
        }
    });
}

// ------------------------------------------------------------------ driver

struct Proc {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    fn spawn(mut cmd: tokio::process::Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Proc { child, stdin, out }
    }

    async fn say(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The next line starting with `prefix`.
    async fn expect(&mut self, prefix: &str) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(180), self.out.next_line())
                .await
                .expect("the child answered within 180 s")
                .unwrap()
                .expect("the child ended early");
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    async fn rss(&mut self) -> u64 {
        self.say("rss").await;
        let line = self.expect("rss ").await;
        line[4..].trim().parse().unwrap()
    }
}

struct Row {
    target: &'static str,
    bytes_per_idle_conn: f64,
    msgs_per_sec: f64,
    delivered: u64,
}

async fn run(target: &'static str, n: usize, burst: usize) -> Row {
    let exe = std::env::current_exe().unwrap();
    let mut server = if target == "socket.io" {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg("server.cjs")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/socketio"));
        Proc::spawn(cmd)
    } else {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.env("BENCH_ROLE", "server");
        Proc::spawn(cmd)
    };
    let port: u16 = server.expect("listening ").await[10..]
        .trim()
        .parse()
        .unwrap();
    let before = server.rss().await;
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.env("BENCH_ROLE", "clients")
        .env("BENCH_TARGET", target)
        .env(
            "BENCH_URL",
            format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"),
        )
        .env("BENCH_N", n.to_string());
    let mut clients = Proc::spawn(cmd);
    clients.expect("ready").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss().await;
    clients.say(&format!("expect {burst}")).await;
    clients.expect("armed").await;
    let start = now_micros();
    server.say(&format!("burst {burst}")).await;
    server.expect("sent").await;
    let result: Value = serde_json::from_str(&clients.expect("{").await).unwrap();
    let delivered = result["delivered"].as_u64().unwrap_or(0);
    let last = result["last_recv"].as_u64().unwrap_or(start);
    let secs = (last.saturating_sub(start)).max(1) as f64 / 1e6;
    server.say("quit").await;
    clients.say("quit").await;
    let _ = server.child.wait().await;
    let _ = clients.child.wait().await;
    Row {
        target,
        bytes_per_idle_conn: after.saturating_sub(before) as f64 / n as f64,
        msgs_per_sec: delivered as f64 / secs,
        delivered,
    }
}

fn main() {
    match std::env::var("BENCH_ROLE").as_deref() {
        Ok("server") => return server_main(),
        Ok("clients") => return clients_main(),
        _ => {}
    }
    let smoke = std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1");
    let n = if smoke {
        10
    } else {
        env_usize("BENCH_N", 1000)
    };
    let burst = if smoke {
        5
    } else {
        env_usize("BENCH_BURST", 100)
    };
    let node = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/socketio/node_modules/socket.io"
    ))
    .is_dir();
    if !node {
        eprintln!(
            "socket.io is not installed: run `npm ci` in benches/realtime/socketio (its row is \
             skipped)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<Row> = rt.block_on(async {
        let mut rows = Vec::new();
        for target in TARGETS {
            if target == "socket.io" && !node {
                continue;
            }
            rows.push(run(target, n, burst).await);
        }
        rows
    });
    println!("fan-out over Socket.IO: {n} connections, burst of {burst} messages");
    println!(
        "{:<22} {:>18} {:>16} {:>12}",
        "target", "delivered msgs/s", "bytes/idle conn", "delivered"
    );
    for r in &rows {
        println!(
            "{:<22} {:>18.0} {:>16.0} {:>12}",
            r.target, r.msgs_per_sec, r.bytes_per_idle_conn, r.delivered
        );
        assert_eq!(
            r.delivered,
            (n * burst) as u64,
            "{}: every subscriber gets every message",
            r.target
        );
    }
    if let [ts, node] = &rows[..] {
        println!(
            "truststream-socketio / socket.io delivered msgs/s = {:.2}x",
            ts.msgs_per_sec / node.msgs_per_sec
        );
    }
}
