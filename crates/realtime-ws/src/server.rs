//! The WebSocket side of the hub: the accept loop, the handshake (path,
//! limits, apikey), and one reader and one writer task per connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message as WsMessage, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use truststream_core::{Error, ErrorKind};
use truststream_core_auth::Principal;
use truststream_core_realtime::{
    check_json_size, presence_key, validate_channel_name, validate_event,
};

use crate::bindings;
use crate::hub::{
    change_to_wire, lock, new_key, presence_to_wire, BroadcastPayload, Counters, Hub, Member,
    MemberId, Push, Sink, TaskGuard,
};
use crate::protocol::{self, Frame, Vsn};
use truststream_core_realtime::access::{scope_of, Viewer};

/// Longest HTTP request head accepted at the handshake.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused handshake's HTTP response may take to send.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a closing connection waits for its close handshake: the writer
/// to deliver the close frame (after what was already written: a client
/// disconnected for reading too slowly gets this long to read its backlog
/// and learn why), the reader for the client's close reply. Only then is
/// the socket dropped.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);
/// How many frames the writer feeds between two looks at whether its
/// connection was closed.
const WRITE_BATCH: usize = 32;
/// The room (in frames) the writer's emptied batch keeps once its queue
/// is empty; a larger one, left by a backlog, is freed.
const SHRINK_FRAMES: usize = 128;

/// Runs the accept loop until the hub shuts down. The hub counts the
/// loop in [`Hub::listening`] from this call until the listen socket is
/// closed, so whoever shuts the hub down can wait for the port to be free.
pub(crate) fn accept_loop(
    hub: Arc<Hub>,
    listener: TcpListener,
    guard: TaskGuard,
) -> impl std::future::Future<Output = ()> + Send {
    let listening = Listening::new(hub.clone());
    async move {
        accept(hub, listener, guard).await;
        // `accept` dropped the socket; `listening` is dropped after it.
        drop(listening);
    }
}

/// One count in [`Hub::listening`], taken back when dropped: when the
/// accept loop returns, and also when it panics (unwinding drops it) or
/// its future is dropped before it ran, so `close` never waits for a loop
/// that is gone.
struct Listening(Arc<Hub>);

impl Listening {
    fn new(hub: Arc<Hub>) -> Self {
        hub.listening.send_modify(|n| *n += 1);
        Listening(hub)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.listening.send_modify(|n| *n -= 1);
    }
}

async fn accept(hub: Arc<Hub>, listener: TcpListener, _guard: TaskGuard) {
    // Subscribed when the loop first runs, which may be after the hub was
    // shut down (a `truststream check` builds and closes the hub at once):
    // the flag's value is looked at, not only its changes, or the loop
    // would never see that shutdown and `close` would wait for ever.
    let mut shutdown = hub.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|down| *down) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let guard = TaskGuard::new(&hub.counters);
                tokio::spawn(serve(hub.clone(), tcp, peer, guard));
            }
            Err(e) => {
                // Out of file descriptors and friends: back off a little.
                tracing::warn!(error = %e, "realtime-ws: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a connection while it lives.
struct ConnGuard(Arc<Hub>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.counters.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the handshake learned.
struct Handshake {
    vsn: Vsn,
    /// Whom the apikey names (with an auth provider).
    principal: Option<Arc<Principal>>,
}

async fn serve(hub: Arc<Hub>, mut tcp: TcpStream, peer: SocketAddr, _guard: TaskGuard) {
    let live = hub.counters.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let conn_guard = ConnGuard(hub.clone());
    let head = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_head(&mut tcp)).await {
        Ok(Ok(head)) => head,
        Ok(Err(refusal)) => {
            refuse(&mut tcp, refusal).await;
            return;
        }
        Err(_) => {
            refuse(&mut tcp, (408, "request head not received in time".into())).await;
            return;
        }
    };
    if live > hub.config.max_connections {
        let msg = format!(
            "too many connections: this hub accepts {} (max_connections)",
            hub.config.max_connections
        );
        refuse(&mut tcp, (429, msg)).await;
        return;
    }
    let handshake = match check_request(&hub, &head).await {
        Ok(h) => h,
        Err(refusal) => {
            refuse(&mut tcp, refusal).await;
            return;
        }
    };
    let stream: Box<dyn Io> = Box::new(Prefixed {
        prefix: head,
        pos: 0,
        inner: tcp,
    });
    let ws = match tokio_tungstenite::accept_async_with_config(stream, Some(ws_config(&hub))).await
    {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "realtime-ws: handshake failed");
            return;
        }
    };
    run_connection(hub, ws, handshake).await;
    drop(conn_guard);
}

/// Runs one accepted WebSocket connection until it ends.
async fn run_connection(hub: Arc<Hub>, ws: Ws, handshake: Handshake) {
    let (sink, stream) = ws.split();
    let (kill_tx, _) = watch::channel(None);
    let outbox = Arc::new(Outbox::new(hub.counters.clone()));
    let out = Arc::new(ConnOut {
        outbox: outbox.clone(),
        kill: kill_tx,
        vsn: handshake.vsn,
        hub: hub.clone(),
    });
    tokio::spawn(write_loop(sink, outbox, TaskGuard::new(&hub.counters)));
    let conn = Conn {
        id: hub.next_id(),
        hub: hub.clone(),
        out: out.clone(),
        vsn: handshake.vsn,
        principal: handshake.principal,
        joined: HashMap::new(),
    };
    conn.run(stream).await;
}

/// An upgrade request another HTTP server accepted on the hub's behalf
/// (see [`crate::WsRealtime::check_upgrade`]): once the server has sent
/// `101 Switching Protocols` and has the upgraded connection, [`Upgrade::run`]
/// serves it. Counts as a connection from the check on.
pub struct Upgrade {
    hub: Arc<Hub>,
    handshake: Handshake,
    _conn: ConnGuard,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("vsn", &self.handshake.vsn)
            .finish()
    }
}

impl Upgrade {
    /// Serves the upgraded connection until it ends (run it on a task of
    /// its own).
    pub async fn run<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(self, io: S) {
        let _guard = TaskGuard::new(&self.hub.counters);
        let io: Box<dyn Io> = Box::new(io);
        let ws = WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            Some(ws_config(&self.hub)),
        )
        .await;
        run_connection(self.hub.clone(), ws, self.handshake).await;
    }
}

/// Checks an upgrade request another HTTP server received: connection
/// limit, path, vsn, apikey. `target` is the request's path and query,
/// `header` looks a request header up by name (any case).
pub(crate) async fn check_upgrade(
    hub: &Arc<Hub>,
    target: &str,
    header: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<Upgrade, (u16, String)> {
    let live = hub.counters.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let conn = ConnGuard(hub.clone());
    if live > hub.config.max_connections {
        return Err((
            429,
            format!(
                "too many connections: this hub accepts {} (max_connections)",
                hub.config.max_connections
            ),
        ));
    }
    let handshake = check_target(hub, target, header).await?;
    Ok(Upgrade {
        hub: hub.clone(),
        handshake,
        _conn: conn,
    })
}

/// The `Sec-WebSocket-Accept` value answering a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
}

pub(crate) fn ws_config(hub: &Hub) -> WebSocketConfig {
    // A text frame carries the payload plus the envelope.
    let max = hub.config.max_frame_bytes();
    // Small buffers: tungstenite's default 128 KiB read buffer per
    // connection would dominate an idle connection's memory. Reads grow the
    // buffer as a frame needs; writes are batched up to 8 KiB, then flushed.
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .max_write_buffer_size(max.saturating_add(256 * 1024))
}

/// Reads the HTTP request head (through the blank line).
async fn read_head(tcp: &mut TcpStream) -> Result<Vec<u8>, (u16, String)> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = tcp
            .read(&mut buf)
            .await
            .map_err(|e| (400, format!("reading the request failed: {e}")))?;
        if n == 0 {
            return Err((
                400,
                "the connection closed before the request head ended".into(),
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err((431, format!("request head over {MAX_REQUEST_HEAD} bytes")));
        }
    }
}

/// Checks path, vsn and token of the upgrade request.
async fn check_request(hub: &Hub, head: &[u8]) -> Result<Handshake, (u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err((400, "incomplete request head".into())),
        Err(e) => return Err((400, format!("malformed request: {e}"))),
    }
    let target = req.path.unwrap_or("/");
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::to_string)
    };
    check_target(hub, target, &header).await
}

/// Checks the path, vsn and apikey of an upgrade request.
async fn check_target(
    hub: &Hub,
    target: &str,
    header: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<Handshake, (u16, String)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path.trim_end_matches('/') != hub.config.path.trim_end_matches('/') {
        return Err((
            404,
            format!(
                "no WebSocket endpoint at this path; connect to {}",
                hub.config.path
            ),
        ));
    }
    let params: HashMap<String, String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let vsn = Vsn::parse(params.get("vsn").map(String::as_str)).ok_or_else(|| {
        (
            400,
            "unsupported vsn: this hub speaks 1.0.0 and 2.0.0".to_string(),
        )
    })?;
    let token = params
        .get("apikey")
        .cloned()
        .or_else(|| header("x-api-key"))
        .or_else(|| header("apikey"))
        .filter(|t| !t.is_empty());
    let mut principal = None;
    if let Some(auth) = &hub.auth {
        let Some(t) = &token else {
            return Err((
                401,
                "an apikey (query parameter or x-api-key header) is required".into(),
            ));
        };
        match auth.validate_token(t).await {
            Ok(p) => principal = Some(Arc::new(p)),
            Err(e) => {
                return Err((
                    http_status(e.kind()),
                    format!("invalid apikey: {}", e.message()),
                ))
            }
        }
    }
    Ok(Handshake { vsn, principal })
}

fn http_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::PermissionDenied => 403,
        ErrorKind::RateLimited => 429,
        ErrorKind::Unavailable | ErrorKind::Timeout => 503,
        ErrorKind::Internal => 500,
        _ => 401,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers a refused handshake with a plain HTTP response and a JSON body.
async fn refuse(tcp: &mut TcpStream, (status, message): (u16, String)) {
    let reason = match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let body = json!({ "error": message }).to_string();
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let _ = tcp.write_all(response.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// A TCP stream whose first bytes (the request head the hub already read)
/// are replayed to the WebSocket handshake.
pub(crate) struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Any byte stream a WebSocket runs over: the hub's own TCP connections
/// (with the replayed request head), or a connection another HTTP server
/// upgraded ([`crate::Upgrade::run`]).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// One connection's outgoing queue: the frames waiting for the writer task,
/// bounded in bytes (the `outgoing_queue_bytes` budget, mirrored in the
/// hub's [`Counters::queued_bytes`](crate::Counters::queued_bytes)).
///
/// One lock guards the frames, their byte count, the writer's waker and the
/// queue's end flags, and all of it (the lock word included) fits one cache
/// line: a frame costs the publishing thread one uncontended lock on one
/// line, which the writer (usually on another core) takes back once per
/// batch, not once per frame. The writer swaps the whole queue for its
/// emptied batch (no per-frame work under the lock), and the frames it took
/// stay in the byte count until it comes back for more, so the budget
/// bounds what is queued and what the writer holds together. The close
/// frame, written once, lives on the next line.
#[repr(C, align(64))]
struct Outbox {
    state: Mutex<OutboxState>,
    /// The close frame ([`ConnOut::close`]; the first one wins): once set,
    /// the writer drops what is queued and sends it. Set before the lock is
    /// taken to wake the writer, so a writer that saw it unset under the
    /// lock has its waker registered by then.
    close: OnceLock<CloseFrame>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct OutboxState {
    frames: Vec<WsMessage>,
    /// Bytes of `frames` and of the batch the writer last took.
    bytes: usize,
    /// The writer, when it sleeps on an empty queue (or on a blocked
    /// write).
    waiting: Option<Waker>,
    /// Every sender is gone: the writer sends what is queued, then ends.
    senders_gone: bool,
    /// The writer ended: nothing more is queued.
    writer_gone: bool,
}

/// Why [`Outbox::push`] refused a frame.
enum Refused {
    /// The frame would take the queue over its byte budget.
    OverBudget,
    /// The writer ended.
    Closed,
}

/// What the writer took from its queue.
enum Take {
    /// Frames were moved into the batch.
    Frames,
    /// The connection was closed, or every sender is gone and the queue is
    /// empty: the writer ends.
    End,
}

impl Outbox {
    fn new(counters: Arc<Counters>) -> Self {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            close: OnceLock::new(),
            counters,
        }
    }

    /// Queues `msg` unless that takes the queue over `budget` bytes (an
    /// empty queue takes one frame of any size).
    fn push(&self, msg: WsMessage, budget: usize) -> Result<(), Refused> {
        let len = msg.len();
        let waiting = {
            let mut s = lock(&self.state);
            if s.writer_gone {
                return Err(Refused::Closed);
            }
            if s.bytes != 0 && s.bytes.saturating_add(len) > budget {
                return Err(Refused::OverBudget);
            }
            s.bytes += len;
            s.frames.push(msg);
            // Counted under the lock, so the writer's release of these
            // bytes (under the same lock) comes after.
            self.counters.queued_bytes.fetch_add(len, Ordering::Relaxed);
            s.waiting.take()
        };
        if let Some(w) = waiting {
            w.wake();
        }
        Ok(())
    }

    /// Closes the queue with `frame` (unless it was closed before) and
    /// wakes the writer.
    fn kill(&self, frame: CloseFrame) {
        let _ = self.close.set(frame);
        let waiting = lock(&self.state).waiting.take();
        if let Some(w) = waiting {
            w.wake();
        }
    }

    /// Whether the connection was closed (a read of the line the close
    /// frame lives on, not of the queue's).
    fn is_killed(&self) -> bool {
        self.close.get().is_some()
    }

    /// Releases the `in_flight` bytes of the writer's last batch (it fed
    /// them all), then swaps the queued frames for `batch` (empty), their
    /// bytes in `in_flight`; `None` when the queue is empty (the writer is
    /// then woken by the next frame, close, or end when `cx` is given).
    fn take(
        &self,
        batch: &mut Vec<WsMessage>,
        in_flight: &mut usize,
        cx: Option<&Context<'_>>,
    ) -> Option<Take> {
        debug_assert!(batch.is_empty());
        let mut s = lock(&self.state);
        let done = std::mem::take(in_flight);
        if done != 0 {
            s.bytes -= done;
            self.counters
                .queued_bytes
                .fetch_sub(done, Ordering::Relaxed);
        }
        if self.is_killed() {
            return Some(Take::End);
        }
        if s.frames.is_empty() {
            if s.senders_gone {
                return Some(Take::End);
            }
            if let Some(cx) = cx {
                s.register(cx);
            }
            // A backlog's room goes back once it is gone (an idle
            // connection keeps no memory of its largest burst).
            if s.frames.capacity() > SHRINK_FRAMES {
                s.frames = Vec::new();
            }
            if batch.capacity() > SHRINK_FRAMES {
                *batch = Vec::new();
            }
            return None;
        }
        std::mem::swap(&mut s.frames, batch);
        *in_flight = s.bytes;
        Some(Take::Frames)
    }

    /// Waits for frames (swapped into `batch`) or the end of the queue.
    async fn next(&self, batch: &mut Vec<WsMessage>, in_flight: &mut usize) -> Take {
        std::future::poll_fn(|cx| match self.take(batch, in_flight, Some(cx)) {
            Some(t) => Poll::Ready(t),
            None => Poll::Pending,
        })
        .await
    }

    /// Whether the connection was closed; otherwise registers `cx` to be
    /// woken when it is (or when a frame arrives).
    fn poll_killed(&self, cx: &Context<'_>) -> bool {
        let mut s = lock(&self.state);
        if self.is_killed() {
            return true;
        }
        s.register(cx);
        false
    }

    /// Ends the queue for the writer: what is still queued or was in its
    /// last batch is dropped (and leaves the byte count); returns the close
    /// frame, if the connection was closed.
    fn end(&self) -> Option<CloseFrame> {
        let frames = {
            let mut s = lock(&self.state);
            s.writer_gone = true;
            s.waiting = None;
            let bytes = std::mem::take(&mut s.bytes);
            self.counters
                .queued_bytes
                .fetch_sub(bytes, Ordering::Relaxed);
            std::mem::take(&mut s.frames)
        };
        drop(frames);
        self.close.get().cloned()
    }
}

impl OutboxState {
    fn register(&mut self, cx: &Context<'_>) {
        match &self.waiting {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waiting = Some(cx.waker().clone()),
        }
    }
}

/// A connection's outgoing side: its queue, bounded in bytes (the
/// `outgoing_queue_bytes` budget), and its kill switch.
pub(crate) struct ConnOut {
    outbox: Arc<Outbox>,
    kill: watch::Sender<Option<CloseFrame>>,
    vsn: Vsn,
    hub: Arc<Hub>,
}

impl Drop for ConnOut {
    fn drop(&mut self) {
        // The last sender is gone: the writer sends what is queued, then
        // ends.
        let waiting = {
            let mut s = lock(&self.outbox.state);
            s.senders_gone = true;
            s.waiting.take()
        };
        if let Some(w) = waiting {
            w.wake();
        }
    }
}

impl ConnOut {
    /// Queues `msg` without waiting. A message that would take the queue
    /// over its byte budget closes the connection (1008, with the reason).
    fn send(&self, msg: WsMessage) -> Result<(), String> {
        let budget = self.hub.config.outgoing_queue_bytes;
        match self.outbox.push(msg, budget) {
            Ok(()) => Ok(()),
            Err(Refused::Closed) => Err("the connection is closed".to_string()),
            Err(Refused::OverBudget) => {
                let reason = format!(
                    "outgoing queue over {budget} bytes (outgoing_queue_bytes): \
                     the client does not read fast enough"
                );
                if self.close(CloseCode::Policy, &reason) {
                    self.hub
                        .counters
                        .slow_disconnects
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(reason)
            }
        }
    }

    /// Closes the connection with `code` and `reason` (the first reason
    /// wins). Returns whether this call set it.
    fn close(&self, code: CloseCode, reason: &str) -> bool {
        // Close reasons are at most 123 bytes on the wire.
        let mut reason = reason.to_string();
        if reason.len() > 123 {
            let mut cut = 120;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push_str("...");
        }
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let set = self.kill.send_if_modified(|k| {
            if k.is_some() {
                return false;
            }
            *k = Some(frame.clone());
            true
        });
        if set {
            self.outbox.kill(frame);
        }
        set
    }

    fn is_killed(&self) -> bool {
        self.kill.borrow().is_some()
    }

    fn frame(
        &self,
        join_ref: Option<&str>,
        reference: Option<&str>,
        topic: &str,
        event: &str,
        payload: &Value,
    ) -> WsMessage {
        protocol::encode(self.vsn, join_ref, reference, topic, event, payload)
    }
}

/// A WebSocket member's sink is its connection's outgoing side: it encodes
/// into the connection's queue.
impl Sink for ConnOut {
    fn push(&self, topic: &str, join_ref: &str, push: &Push) -> Result<(), String> {
        let out = self;
        let jr = Some(join_ref);
        let msg = match push {
            Push::Broadcast(b) => match b.encoded(out.vsn, join_ref) {
                Some(msg) => msg,
                // A binary payload this client cannot receive (vsn 1.0.0,
                // or a topic too long for kind 4).
                None => return Ok(()),
            },
            Push::PresenceDiff(d) => d.encoded(out.vsn, topic, join_ref),
            Push::Change { ids, change } => out.frame(
                jr,
                None,
                topic,
                "postgres_changes",
                &json!({"ids": ids, "data": change_to_wire(change)}),
            ),
        };
        out.send(msg)
    }

    fn removed(&self, topic: &str, join_ref: &str, reason: &str) {
        let out = self;
        if out.is_killed() {
            return;
        }
        let _ = out.send(out.frame(
            Some(join_ref),
            Some(join_ref),
            topic,
            "phx_error",
            &json!({"reason": reason}),
        ));
    }
}

/// The writer task: sends queued frames, flushing when the queue is empty,
/// until the connection is closed or
/// every sender is gone; then it sends the close frame, with a deadline
/// ([`CLOSE_DEADLINE`]).
async fn write_loop(mut sink: SplitSink<Ws, WsMessage>, outbox: Arc<Outbox>, _guard: TaskGuard) {
    // The frames taken from the queue (its buffer and the queue's trade
    // places at each take), and their bytes, still in the queue's count.
    let mut batch = Vec::new();
    let mut in_flight = 0;
    // Frames fed to tungstenite since the last flush (tungstenite itself
    // writes to the socket whenever it holds a write buffer's worth).
    let mut unflushed = false;
    // Whether the writer already let the other ready tasks run once since
    // its last flush.
    let mut yielded = false;
    loop {
        let taken = match outbox.take(&mut batch, &mut in_flight, None) {
            Some(t) => t,
            // The queue is empty with frames fed but not flushed: the
            // writer first lets the tasks that are ready run once (a
            // publisher fanning out to many connections queues more for
            // this one meanwhile, and they go out in the same write; with
            // nothing else ready that takes no time), then flushes before
            // it sleeps. Once per flush, so a trickle of frames cannot
            // hold a flush back.
            None if unflushed && !yielded => {
                yielded = true;
                tokio::task::yield_now().await;
                continue;
            }
            None if unflushed => {
                (unflushed, yielded) = (false, false);
                if !write_unless_killed(&outbox, sink.flush()).await {
                    break;
                }
                continue;
            }
            None => outbox.next(&mut batch, &mut in_flight).await,
        };
        if let Take::End = taken {
            break;
        }
        unflushed = true;
        let write = async {
            for (i, m) in batch.drain(..).enumerate() {
                // A closed connection stops a long batch within
                // `WRITE_BATCH` frames, even when the socket takes them.
                if i % WRITE_BATCH == WRITE_BATCH - 1 && outbox.is_killed() {
                    break;
                }
                sink.feed(m).await?;
            }
            Ok::<(), tokio_tungstenite::tungstenite::Error>(())
        };
        if !write_unless_killed(&outbox, write).await {
            break;
        }
    }
    // Whatever is still queued is dropped: the client is not going to get
    // it. What tungstenite already holds (what was fed since the last
    // flush, or what a blocked socket did not take) goes out before the
    // close frame, as the protocol needs whole frames.
    drop(batch);
    let frame = outbox.end();
    let _ = tokio::time::timeout(CLOSE_DEADLINE, async {
        let _ = sink.send(WsMessage::Close(frame)).await;
        let _ = sink.close().await;
    })
    .await;
}

/// Runs a write; `false` when it failed, or when the connection was closed
/// while the write waited (a client that reads nothing blocks it for ever).
/// A write that completes at once never looks at the queue.
async fn write_unless_killed<E>(
    outbox: &Outbox,
    write: impl std::future::Future<Output = Result<(), E>>,
) -> bool {
    let mut write = std::pin::pin!(write);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = write.as_mut().poll(cx) {
            return Poll::Ready(r.is_ok());
        }
        if outbox.poll_killed(cx) {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}

/// A member this connection joined.
struct Joined {
    id: MemberId,
    join_ref: String,
    ack: bool,
    expires_at: Option<DateTime<Utc>>,
}

/// A connection's reader side and its channel bookkeeping.
struct Conn {
    id: u64,
    hub: Arc<Hub>,
    out: Arc<ConnOut>,
    vsn: Vsn,
    /// Whom the apikey names (with an auth provider).
    principal: Option<Arc<Principal>>,
    /// Topic -> members joined through this connection.
    joined: HashMap<String, Vec<Joined>>,
}

/// An error answered as `phx_reply` `{status: "error", response: {reason, code}}`.
fn error_response(e: &Error) -> Value {
    json!({"reason": e.message(), "code": e.kind().as_str()})
}

impl Conn {
    async fn run(mut self, mut stream: SplitStream<Ws>) {
        let mut shutdown = self.hub.shutdown.subscribe();
        let mut kill = self.out.kill.subscribe();
        let idle = self.hub.config.heartbeat_timeout();
        let mut deadline = Instant::now() + idle;
        loop {
            if *shutdown.borrow() {
                self.out
                    .close(CloseCode::Away, "the realtime hub is shutting down");
                break;
            }
            let expiry = self.next_expiry();
            let item = tokio::select! {
                _ = shutdown.changed() => continue,
                _ = kill.changed() => break,
                _ = tokio::time::sleep_until(deadline) => {
                    self.out.close(
                        CloseCode::Policy,
                        &format!("no message for {}s: send heartbeats", idle.as_secs()),
                    );
                    break;
                }
                _ = sleep_until_opt(expiry) => {
                    self.expire_tokens();
                    continue;
                }
                item = stream.next() => item,
            };
            let Some(item) = item else {
                break;
            };
            deadline = Instant::now() + idle;
            match item {
                Ok(WsMessage::Text(text)) => match protocol::decode_text(self.vsn, &text) {
                    Ok(frame) => self.handle(frame).await,
                    Err(e) => self.malformed(e),
                },
                Ok(WsMessage::Binary(bytes)) => match protocol::decode_binary(&bytes) {
                    Ok(frame) => self.handle(frame).await,
                    Err(e) => self.malformed(e),
                },
                Ok(WsMessage::Close(_)) => break,
                Ok(_) => {} // ping/pong are answered by tungstenite
                Err(e) => {
                    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
                    match e {
                        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                            self.out.close(
                                CloseCode::Size,
                                &format!("message of {size} bytes over the limit of {max_size}"),
                            );
                        }
                        WsError::Utf8(_) => {
                            self.out
                                .close(CloseCode::Invalid, "text frame is not UTF-8");
                        }
                        other => {
                            self.out
                                .close(CloseCode::Protocol, &format!("protocol error: {other}"));
                        }
                    }
                    break;
                }
            }
            if self.out.is_killed() {
                break;
            }
        }
        self.teardown();
        // The close handshake, bounded: the writer sends the close frame
        // while this side reads (and drops) whatever the client still sends
        // until its close reply. Dropping a socket with unread input makes
        // the kernel answer with a reset, and the client would never see
        // the close frame and its reason.
        let _ = tokio::time::timeout(CLOSE_DEADLINE, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }

    fn teardown(&mut self) {
        let joined: Vec<(String, MemberId)> = self
            .joined
            .drain()
            .flat_map(|(t, ms)| ms.into_iter().map(move |m| (t.clone(), m.id)))
            .collect();
        self.hub.remove_owner(self.id, &joined);
        self.out.close(CloseCode::Normal, "bye");
    }

    fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.joined
            .values()
            .flatten()
            .filter_map(|j| j.expires_at)
            .min()
    }

    /// Closes every channel whose token has expired.
    fn expire_tokens(&mut self) {
        let now = Utc::now();
        let mut expired = Vec::new();
        for (topic, ms) in &mut self.joined {
            ms.retain(|j| {
                let gone = j.expires_at.is_some_and(|e| e <= now);
                if gone {
                    expired.push((topic.clone(), j.id, j.join_ref.clone()));
                }
                !gone
            });
        }
        self.joined.retain(|_, ms| !ms.is_empty());
        for (topic, id, join_ref) in expired {
            self.close_channel(&topic, id, &join_ref, "access token has expired");
        }
    }

    /// Removes a member and tells the client its channel is closed: a
    /// `system` error, then `phx_close`.
    fn close_channel(&self, topic: &str, id: MemberId, join_ref: &str, why: &str) {
        self.hub.leave(topic, id);
        let channel = topic.strip_prefix("realtime:").unwrap_or(topic);
        let _ = self.out.send(self.out.frame(
            Some(join_ref),
            None,
            topic,
            "system",
            &json!({"extension": "system", "status": "error", "message": why, "channel": channel}),
        ));
        let _ = self.out.send(self.out.frame(
            Some(join_ref),
            Some(join_ref),
            topic,
            "phx_close",
            &json!({}),
        ));
    }

    fn malformed(&self, e: protocol::DecodeError) {
        let topic = e.topic.as_deref().unwrap_or("phoenix");
        let _ = self.out.send(self.out.frame(
            None,
            e.reference.as_deref(),
            topic,
            "phx_reply",
            &json!({"status": "error", "response": {"reason": format!("malformed frame: {}", e.message), "code": "invalid_input"}}),
        ));
    }

    fn reply(&self, f: &Frame, result: Result<Value, Error>) {
        let payload = match result {
            Ok(response) => json!({"status": "ok", "response": response}),
            Err(e) => json!({"status": "error", "response": error_response(&e)}),
        };
        let _ = self.out.send(self.out.frame(
            f.join_ref.as_deref(),
            f.reference.as_deref(),
            &f.topic,
            "phx_reply",
            &payload,
        ));
    }

    /// The member a frame is for: the one with its join_ref, else the
    /// newest on its topic.
    fn member_for(&self, f: &Frame) -> Option<&Joined> {
        let ms = self.joined.get(&f.topic)?;
        match &f.join_ref {
            Some(jr) => ms.iter().find(|j| &j.join_ref == jr).or_else(|| ms.last()),
            None => ms.last(),
        }
    }

    async fn handle(&mut self, f: Frame) {
        if f.topic == "phoenix" {
            let result = match f.event.as_str() {
                "heartbeat" => Ok(json!({})),
                "truststream_info" => Ok(json!({
                    "row_changes": self.hub.row_changes_available(),
                    "max_payload_bytes": self.hub.config.max_payload_bytes,
                    "version": env!("CARGO_PKG_VERSION"),
                })),
                other => Err(Error::invalid_input(format!(
                    "unknown event {:?} on topic \"phoenix\" (heartbeat only)",
                    truncate(other)
                ))),
            };
            self.reply(&f, result);
            return;
        }
        if f.event == "phx_join" {
            let result = self.join(&f).await;
            if let Err(e) = result {
                self.reply(&f, Err(e));
            }
            return;
        }
        let Some(j) = self.member_for(&f) else {
            // access_token for a topic that was closed: nothing to do.
            if f.event != "access_token" {
                self.reply(
                    &f,
                    Err(Error::invalid_input(format!(
                        "unmatched topic {:?}: join it first",
                        truncate(&f.topic)
                    ))),
                );
            }
            return;
        };
        let (id, ack, join_ref) = (j.id, j.ack, j.join_ref.clone());
        match f.event.as_str() {
            "phx_leave" => {
                self.forget(&f.topic, id);
                self.hub.leave(&f.topic, id);
                self.reply(&f, Ok(json!({})));
                let _ = self.out.send(self.out.frame(
                    Some(&join_ref),
                    Some(&join_ref),
                    &f.topic,
                    "phx_close",
                    &json!({}),
                ));
            }
            "broadcast" => {
                let result = self.broadcast(&f, id);
                match result {
                    Ok(()) if ack => self.reply(&f, Ok(json!({}))),
                    Ok(()) => {}
                    Err(e) => self.reply(&f, Err(e)),
                }
            }
            "presence" => {
                let result = self.presence(&f, id);
                self.reply(&f, result.map(|()| json!({})));
            }
            "access_token" => self.refresh_token(&f, id, &join_ref).await,
            other => self.reply(
                &f,
                Err(Error::invalid_input(format!(
                    "unknown event {:?} (phx_leave, broadcast, presence, access_token)",
                    truncate(other)
                ))),
            ),
        }
    }

    fn forget(&mut self, topic: &str, id: MemberId) {
        if let Some(ms) = self.joined.get_mut(topic) {
            ms.retain(|j| j.id != id);
            if ms.is_empty() {
                self.joined.remove(topic);
            }
        }
    }

    fn broadcast(&self, f: &Frame, id: MemberId) -> Result<(), Error> {
        let body = f.payload.as_object().ok_or_else(|| {
            Error::invalid_input("a broadcast payload is {type: \"broadcast\", event, payload}")
        })?;
        let event = body
            .get("event")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid_input("a broadcast payload needs a string \"event\""))?;
        validate_event(event)?;
        let payload = match &f.binary {
            Some(bytes) => BroadcastPayload::Binary(bytes.clone()),
            None => BroadcastPayload::Json(body.get("payload").cloned().unwrap_or(json!({}))),
        };
        // A kind 3 frame's metadata is at most 255 bytes; a text frame's
        // `meta` is bounded like the payload.
        let meta = body.get("meta").cloned();
        if let Some(m) = &meta {
            check_json_size(m, self.hub.config.max_payload_bytes, "the broadcast's meta")?;
        }
        self.hub.broadcast(&f.topic, id, event, payload, meta)
    }

    fn presence(&self, f: &Frame, id: MemberId) -> Result<(), Error> {
        match f.payload.get("event").and_then(Value::as_str) {
            Some("track") => {
                let state = f.payload.get("payload").cloned().unwrap_or(json!({}));
                self.hub.track(&f.topic, id, state)
            }
            Some("untrack") => self.hub.untrack(&f.topic, id),
            _ => Err(Error::invalid_input(
                "a presence payload is {type: \"presence\", event: \"track\" | \"untrack\", payload}",
            )),
        }
    }

    async fn refresh_token(&mut self, f: &Frame, id: MemberId, join_ref: &str) {
        let Some(auth) = self.hub.auth.clone() else {
            return;
        };
        let token = f.payload.get("access_token").and_then(Value::as_str);
        let result = match token {
            Some(t) => auth.validate_token(t).await.map_err(|e| {
                Error::unauthenticated(format!("invalid access token: {}", e.message()))
            }),
            None => Err(Error::invalid_input(
                "access_token event without a string access_token",
            )),
        };
        // The new token's user must still be allowed to read the bound
        // tables (it may be another user, or have lost a permission).
        let result = match result {
            Ok(p) => bindings::reauthorize(&self.hub, &f.topic, id, &p)
                .await
                .map(|()| p),
            Err(e) => Err(e),
        };
        match result {
            Ok(p) => {
                let expires_at = p.expires_at;
                self.hub
                    .set_viewer(&f.topic, id, Viewer::of(Some(&p)), scope_of(Some(&p)));
                if let Some(j) = self
                    .joined
                    .get_mut(&f.topic)
                    .and_then(|ms| ms.iter_mut().find(|j| j.id == id))
                {
                    j.expires_at = Some(expires_at);
                }
            }
            Err(e) => {
                self.forget(&f.topic, id);
                self.close_channel(&f.topic, id, join_ref, e.message());
            }
        }
    }

    async fn join(&mut self, f: &Frame) -> Result<(), Error> {
        let topic = f.topic.as_str();
        let name = topic
            .strip_prefix("realtime:")
            .ok_or_else(|| Error::invalid_input("topics are \"realtime:<channel name>\""))?;
        // The channel name (the topic after `realtime:`) is 1-255 bytes, as
        // everywhere in TrustStream.
        validate_channel_name(name)?;
        let payload = f.payload.as_object().cloned().unwrap_or_default();
        let config = payload.get("config").cloned().unwrap_or(json!({}));
        if config.get("private").and_then(Value::as_bool) == Some(true) {
            return Err(Error::unsupported(
                "private channels (authorization policies) are not supported by this hub",
            ));
        }
        let multiplex = config
            .get("truststream_multiplex")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !multiplex {
            // A Phoenix client joins a topic once per socket: a new join
            // replaces the old one.
            if let Some(old) = self.joined.remove(topic) {
                for j in old {
                    self.hub.leave(topic, j.id);
                }
            }
        }
        let count: usize = self.joined.values().map(Vec::len).sum();
        if count >= self.hub.config.max_channels_per_connection {
            return Err(Error::new(
                ErrorKind::RateLimited,
                format!(
                    "too many channels on this connection (max_channels_per_connection = {})",
                    self.hub.config.max_channels_per_connection
                ),
            ));
        }
        let principal = self.check_join_token(&payload).await?;
        let broadcast = config.get("broadcast");
        let flag = |v: Option<&Value>, k: &str| {
            v.and_then(|v| v.get(k))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let broadcast_self = flag(broadcast, "self");
        let ack = flag(broadcast, "ack");
        let requested_key = config
            .get("presence")
            .and_then(|p| p.get("key"))
            .and_then(Value::as_str);
        let key = presence_key(requested_key, new_key)?;
        let bound = bindings::bind(
            &self.hub,
            config.get("postgres_changes"),
            principal.as_deref(),
        )
        .await?;
        let join_ref = f
            .join_ref
            .clone()
            .or_else(|| f.reference.clone())
            .unwrap_or_else(|| self.hub.next_id().to_string());
        let member = Member {
            sink: self.out.clone(),
            join_ref: join_ref.clone(),
            owner: self.id,
            broadcast_self,
            key,
            meta: None,
            bindings: bound.bindings,
            viewer: Viewer::of(principal.as_deref()),
            scope: scope_of(principal.as_deref()),
            _feeds: bound.feeds,
        };
        let out = self.out.clone();
        let reply = out.frame(
            Some(&join_ref),
            f.reference.as_deref(),
            topic,
            "phx_reply",
            &json!({"status": "ok", "response": {"postgres_changes": bound.echo}}),
        );
        let jr = join_ref.clone();
        let id = self.hub.join(topic, member, |_, state| {
            out.send(reply)?;
            out.send(out.frame(
                Some(&jr),
                None,
                topic,
                "presence_state",
                &presence_to_wire(state),
            ))
        })?;
        self.joined
            .entry(topic.to_string())
            .or_default()
            .push(Joined {
                id,
                join_ref,
                ack,
                expires_at: principal.as_ref().map(|p| p.expires_at),
            });
        Ok(())
    }

    /// The join's token (its `access_token`, else the connection's apikey),
    /// checked when the hub has an auth provider; returns whom it names
    /// (`None` without an auth provider).
    async fn check_join_token(
        &self,
        payload: &serde_json::Map<String, Value>,
    ) -> Result<Option<Arc<Principal>>, Error> {
        let Some(auth) = &self.hub.auth else {
            return Ok(None);
        };
        match payload.get("access_token").and_then(Value::as_str) {
            Some(t) => auth
                .validate_token(t)
                .await
                .map(|p| Some(Arc::new(p)))
                .map_err(|e| {
                    Error::unauthenticated(format!("invalid access token: {}", e.message()))
                }),
            None => match &self.principal {
                Some(p) if p.expires_at > Utc::now() => Ok(Some(p.clone())),
                Some(_) => Err(Error::unauthenticated("the apikey has expired")),
                _ => Err(Error::unauthenticated(
                    "an access token is required to join",
                )),
            },
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

async fn sleep_until_opt(at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => {
            let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(test)]
mod listening_tests {
    use super::*;

    /// `close` waits for `listening` to reach 0: a loop whose future is
    /// dropped unpolled, or that panics, must not leave its count behind.
    #[tokio::test]
    async fn a_gone_accept_loop_gives_its_listening_count_back() {
        let hub =
            crate::new_hub(crate::WsRealtimeConfig::hub("127.0.0.1:0"), None, None).expect("a hub");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let never_polled = accept_loop(hub.clone(), listener, TaskGuard::new(&hub.counters));
        assert_eq!(*hub.listening.borrow(), 1, "counted from the call");
        drop(never_polled);
        assert_eq!(
            *hub.listening.borrow(),
            0,
            "given back when dropped unpolled"
        );

        let listening = Listening::new(hub.clone());
        let panicked = tokio::spawn(async move {
            let _held = listening;
            panic!("an accept loop that panics");
        })
        .await;
        assert!(panicked.is_err(), "the task panicked");
        assert_eq!(*hub.listening.borrow(), 0, "given back when it panicked");
    }

    /// A hub shut down before its accept loop first runs: the loop ends
    /// (it once waited for a change of the shutdown flag that had already
    /// happened, and `close` hung for ever, about once in 70 `truststream
    /// check` runs).
    #[tokio::test]
    async fn an_accept_loop_started_after_the_shutdown_ends_at_once() {
        let hub =
            crate::new_hub(crate::WsRealtimeConfig::hub("127.0.0.1:0"), None, None).expect("a hub");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let late = accept_loop(hub.clone(), listener, TaskGuard::new(&hub.counters));
        hub.shutdown();
        tokio::time::timeout(Duration::from_secs(10), late)
            .await
            .expect("the accept loop ended");
        assert_eq!(*hub.listening.borrow(), 0);
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A byte stream that counts the writes that reach it.
    struct CountWrites {
        inner: tokio::io::DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for CountWrites {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountWrites {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = r {
                if n > 0 {
                    self.writes.fetch_add(1, Ordering::SeqCst);
                }
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// The frames the writer took count against the budget until it comes
    /// back for more (it has handed them to tungstenite by then), and the
    /// hub's gauge follows the same bytes.
    #[test]
    fn the_writers_batch_counts_against_the_budget_until_it_is_fed() {
        let counters = Arc::new(Counters::default());
        let outbox = Outbox::new(counters.clone());
        let frame = || WsMessage::binary(vec![0u8; 60]);
        let (mut batch, mut in_flight) = (Vec::new(), 0);
        assert!(outbox.push(frame(), 100).is_ok());
        assert!(matches!(
            outbox.take(&mut batch, &mut in_flight, None),
            Some(Take::Frames)
        ));
        assert_eq!((batch.len(), in_flight), (1, 60));
        // Taken but not yet fed: a second frame would hold 120 bytes.
        assert!(matches!(
            outbox.push(frame(), 100),
            Err(Refused::OverBudget)
        ));
        assert_eq!(counters.queued_bytes.load(Ordering::SeqCst), 60);
        batch.clear();
        // The writer comes back: the fed batch is released.
        assert!(outbox.take(&mut batch, &mut in_flight, None).is_none());
        assert_eq!(
            (in_flight, counters.queued_bytes.load(Ordering::SeqCst)),
            (0, 0)
        );
        assert!(outbox.push(frame(), 100).is_ok());
        // A closed queue ends the writer; what it held leaves the count.
        outbox.kill(CloseFrame {
            code: CloseCode::Away,
            reason: "bye".into(),
        });
        outbox.kill(CloseFrame {
            code: CloseCode::Error,
            reason: "second".into(),
        });
        assert!(matches!(
            outbox.take(&mut batch, &mut in_flight, None),
            Some(Take::End)
        ));
        let close = outbox.end().expect("the close frame");
        assert_eq!(close.code, CloseCode::Away, "the first close wins");
        assert_eq!(counters.queued_bytes.load(Ordering::SeqCst), 0);
        assert!(matches!(outbox.push(frame(), 100), Err(Refused::Closed)));
    }

    /// std's futex mutex (Linux): a lock word and a poison flag before the
    /// data.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_queue_a_push_touches_is_one_cache_line() {
        // The lock word, the frames, their byte count, the writer's waker
        // and the flags: a push touches one line (plus the frame's slot).
        assert!(std::mem::size_of::<Mutex<OutboxState>>() <= 64);
        assert_eq!(std::mem::align_of::<Outbox>(), 64);
        assert_eq!(std::mem::offset_of!(Outbox, state), 0);
    }

    /// A frame queued while the writer lets the other ready tasks run (as a
    /// fan-out to many connections queues the next broadcast meanwhile)
    /// goes out in the same socket write as the frame before it, not in a
    /// write of its own. No timing: the current-thread runtime runs the
    /// publisher and the writer in a fixed order.
    #[tokio::test]
    async fn a_frame_queued_while_the_writer_yields_shares_its_write() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let io: Box<dyn Io> = Box::new(CountWrites {
            inner: server_io,
            writes: writes.clone(),
        });
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (sink, _stream) = ws.split();
        let counters = Arc::new(Counters::default());
        let outbox = Arc::new(Outbox::new(counters.clone()));
        let writer = tokio::spawn(write_loop(sink, outbox.clone(), TaskGuard::new(&counters)));
        let frames = 2;
        for i in 0..frames {
            assert!(outbox.push(WsMessage::text(i.to_string()), 1 << 20).is_ok());
            tokio::task::yield_now().await;
        }
        // The writer finds its queue empty again, flushes, and sleeps.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            writes.load(Ordering::SeqCst),
            1,
            "one write for both frames"
        );
        assert_eq!(counters.queued_bytes.load(Ordering::SeqCst), 0);

        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        for i in 0..frames {
            let got = client.next().await.expect("a frame").expect("read");
            assert_eq!(got, WsMessage::text(i.to_string()));
        }
        outbox.kill(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        });
        writer.await.expect("the writer ends");
        match client.next().await {
            Some(Ok(WsMessage::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Normal),
            other => panic!("expected the close frame, got {other:?}"),
        }
    }
}
