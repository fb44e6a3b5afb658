//! The realtime fan-out benchmark lives in `benches/fanout.rs`; run it with
//! `cargo bench -p truststream-bench-realtime` (see `docs/benchmarks.md`).
//! This library holds the helpers the bench binaries share.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch: the send and receipt stamps, which
/// cross processes (and the Node server's `performance` clock).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The resident set size of process `pid` in bytes (`/proc/<pid>/statm`,
/// 4 KiB pages); 0 when it cannot be read.
pub fn rss_of(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The CPU time process `pid` has used so far, in nanoseconds: the sum of
/// its threads' run time (`/proc/<pid>/task/*/schedstat`), which counts
/// every thread alive now (a thread that ended is not in it; the bench's
/// processes keep theirs). 0 when it cannot be read.
pub fn cpu_ns_of(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .map(|t| run_ns(&t.path()))
        .sum()
}

/// The CPU time of process `pid`'s main thread so far, in nanoseconds
/// (`/proc/<pid>/task/<pid>`); 0 when it cannot be read.
pub fn main_thread_cpu_ns(pid: u32) -> u64 {
    run_ns(std::path::Path::new(&format!("/proc/{pid}/task/{pid}")))
}

/// A thread's run time so far: the first field of its `schedstat`, in
/// nanoseconds (0 when it cannot be read).
fn run_ns(task: &std::path::Path) -> u64 {
    std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The environment variable `name` as a number, or `default` when unset or
/// not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A WebSocket client connection, as the bench clients hold them.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects a realtime-ws client (`url` names `vsn=2.0.0`) and joins
/// `realtime:<channel>` for broadcasts only (not to itself, no presence, no
/// row changes). Panics when the join is refused.
pub async fn phoenix_join(url: &str, channel: &str) -> Ws {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let join = format!(
        r#"["1","1","realtime:{channel}","phx_join",{{"config":{{"broadcast":{{"self":false}},"presence":{{"key":""}},"postgres_changes":[]}}}}]"#
    );
    ws.send(Message::text(join)).await.expect("phx_join");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("phx_reply") => {
                assert!(t.contains("\"ok\""), "join failed: {t}");
                return ws;
            }
            Some(Ok(_)) => {}
            other => panic!("the hub closed the connection during the join: {other:?}"),
        }
    }
}

/// Connects a socket.io client over the websocket transport
/// (`ws://host:port/socket.io/?EIO=4&transport=websocket`): the Engine.IO
/// open packet, then the socket.io CONNECT of the main namespace. Panics
/// when the server refuses (a benchmark cannot go on without it).
pub async fn socketio_connect(url: &str) -> Ws {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws.next()
        .await
        .expect("the engine.io open packet")
        .expect("open");
    ws.send(Message::text("40"))
        .await
        .expect("socket.io connect");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.starts_with("40") => return ws,
            Some(Ok(Message::Text(t))) if t.starts_with("44") => {
                panic!("socket.io refused the connection: {t}")
            }
            Some(Ok(_)) => {}
            other => panic!("socket.io connection ended during the handshake: {other:?}"),
        }
    }
}
