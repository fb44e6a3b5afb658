//! Fan-out across a 3-node realtime-ws cluster (hubs joined through the
//! machine's NATS on 127.0.0.1:4222) vs one hub, with the same WebSocket
//! clients (vsn 2.0.0, spread evenly over the nodes) and the same sender
//! (an in-process handle on the first node):
//!
//! 1. latency: 20 paced messages, p50/p99 of send-to-receive;
//! 2. throughput: a burst of B messages; delivered messages per second =
//!    N * B / (last receipt - first send);
//! 3. bytes on the broker per broadcast (the first node's published
//!    broadcast bytes / broadcasts: one publish per broadcast, whatever N).
//!
//! Run: `cargo bench -p truststream-bench-realtime --bench cluster`
//! (`BENCH_N`, default 1000, `BENCH_BURST`, default 200). Without `--bench`
//! (under `cargo test`) it is a smoke run with 30 clients. Everything runs
//! in this one process (hubs, clients), and the broker shares the cores.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark binary

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::Message;
use truststream_core_realtime::{ChannelOptions, Realtime};
use truststream_realtime_ws::{ClusterConfig, WsRealtime, WsRealtimeConfig};

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[derive(Default)]
struct Tally {
    delivered: AtomicUsize,
    last_recv: AtomicU64,
    latencies: Mutex<Vec<u32>>,
}

async fn client(url: String, ready: Arc<AtomicUsize>, tally: Arc<Mutex<Arc<Tally>>>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    let join = json!(["1", "1", "realtime:bench", "phx_join",
        {"config": {"broadcast": {"self": false}, "presence": {"key": ""}, "postgres_changes": []}}]);
    ws.send(Message::text(join.to_string())).await.unwrap();
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            if t.contains("phx_reply") {
                assert!(t.contains("\"ok\""), "join failed: {t}");
                break;
            }
        }
    }
    ready.fetch_add(1, Ordering::SeqCst);
    while let Some(Ok(m)) = ws.next().await {
        let Message::Binary(b) = &m else { continue };
        let Some((_, _, body)) = truststream_realtime_ws::protocol::decode_user_broadcast(b) else {
            continue;
        };
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
    nodes: usize,
    p50_us: u32,
    p99_us: u32,
    msgs_per_s: f64,
    broker_bytes_per_broadcast: Option<f64>,
}

async fn run(nodes: usize, n: usize, burst: usize) -> Row {
    let prefix = format!("bench.cluster.{}.{}", std::process::id(), now_micros());
    let mut hubs = Vec::new();
    for i in 0..nodes {
        let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
        config.max_connections = n + 100;
        if nodes > 1 {
            let mut c = ClusterConfig::new("nats", "nats://127.0.0.1:4222", &format!("n{i}"));
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
                "the nodes did not hear each other (is NATS up?)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ready = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Arc::new(Tally::default())));
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = format!("{}?vsn=2.0.0", hubs[i % nodes].url().unwrap());
        tasks.push(tokio::spawn(client(url, ready.clone(), tally.clone())));
    }
    while ready.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sender = hubs[0]
        .channel("bench", ChannelOptions::new())
        .await
        .unwrap();
    sender.join().await.unwrap();
    let wait_all = |t: Arc<Tally>, expect: usize| async move {
        let end = Instant::now() + Duration::from_secs(120);
        while t.delivered.load(Ordering::Relaxed) < expect {
            assert!(Instant::now() < end, "deliveries stalled");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    // Latency: paced.
    let paced = Arc::new(Tally::default());
    *tally.lock().unwrap() = paced.clone();
    for i in 0..20 {
        sender
            .send("m", json!({"i": i, "t": now_micros()}))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_all(paced.clone(), 20 * n).await;
    let mut lat = std::mem::take(&mut *paced.latencies.lock().unwrap());
    let (p50_us, p99_us) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    // Throughput: a burst.
    let t = Arc::new(Tally::default());
    *tally.lock().unwrap() = t.clone();
    let broadcasts_before = hubs[0].cluster_stats().map(|s| {
        (
            s.broadcasts.load(Ordering::Relaxed),
            s.broadcast_bytes.load(Ordering::Relaxed),
        )
    });
    let start = now_micros();
    for i in 0..burst {
        sender
            .send("m", json!({"i": i, "t": now_micros()}))
            .await
            .unwrap();
    }
    wait_all(t.clone(), burst * n).await;
    let secs = (t.last_recv.load(Ordering::Relaxed).saturating_sub(start)).max(1) as f64 / 1e6;
    let broker_bytes_per_broadcast =
        hubs[0]
            .cluster_stats()
            .zip(broadcasts_before)
            .map(|(s, (b0, bytes0))| {
                let b = s.broadcasts.load(Ordering::Relaxed) - b0;
                (s.broadcast_bytes.load(Ordering::Relaxed) - bytes0) as f64 / b.max(1) as f64
            });
    for task in tasks {
        task.abort();
    }
    drop(hubs);
    Row {
        nodes,
        p50_us,
        p99_us,
        msgs_per_s: (burst * n) as f64 / secs,
        broker_bytes_per_broadcast,
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, burst) = if smoke {
        (30, 20)
    } else {
        (env("BENCH_N", 1000), env("BENCH_BURST", 200))
    };
    let nats_up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:4222".parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_ok();
    if !nats_up {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and the cluster bench needs NATS on 127.0.0.1:4222");
        }
        eprintln!("SKIPPED cluster bench: NATS is not answering on 127.0.0.1:4222");
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
    println!("nodes  p50_us  p99_us  delivered_msgs_per_s  broker_bytes_per_broadcast");
    let mut rows = Vec::new();
    for nodes in [1, 3] {
        let r = rt.block_on(run(nodes, n, burst));
        println!(
            "{:>5}  {:>6}  {:>6}  {:>20.0}  {}",
            r.nodes,
            r.p50_us,
            r.p99_us,
            r.msgs_per_s,
            r.broker_bytes_per_broadcast
                .map_or("-".to_string(), |b| format!("{b:.0}"))
        );
        rows.push(r);
    }
    let ratio = rows[1].msgs_per_s / rows[0].msgs_per_s;
    println!("3 nodes / 1 node delivered msgs/s: {ratio:.2}x (goal >= 0.7x)");
}
