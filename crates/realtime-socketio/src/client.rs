//! Client mode: one WebSocket connection (engine.io v4, socket.io v5) to
//! an existing Socket.IO server that speaks the protocol of
//! [`crate::wire`]; several handles share it, each with its own handle id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use truststream_core::{Error, ErrorKind};
use truststream_core_realtime::{
    not_joined, validate_broadcast, ChangeSpec, Channel, ChannelOptions, Handler, Message,
    PresenceDiff, PresenceEvent, PresenceState, RowChange, RtResult, Subscription,
};

use crate::codec::{self, Packet};
use crate::handlers::Handlers;
use crate::hub::lock;
use crate::wire::{self, Target};
use crate::SocketIoConfig;

/// What `rt:hello` answered.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub(crate) max_payload_bytes: usize,
    pub(crate) row_changes: bool,
}

/// A handle's state, shared with the reader that routes deliveries.
struct HandleState {
    handlers: Arc<Handlers>,
    joined: AtomicBool,
    removed: Mutex<Option<String>>,
}

struct Inner {
    out: mpsc::Sender<String>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next_id: AtomicU64,
    handles: Mutex<HashMap<(String, String), Arc<HandleState>>>,
    rows: Mutex<HashMap<u64, Handler<RowChange>>>,
    /// Why the connection ended, once it did.
    closed: Mutex<Option<String>>,
    config: SocketIoConfig,
}

/// A client-mode connection.
pub(crate) struct Client {
    inner: Arc<Inner>,
    hello: Hello,
    url: String,
    io: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.io.abort();
    }
}

/// The WebSocket URL of a Socket.IO server's engine.io endpoint.
fn ws_url(url: &str, path: &str) -> RtResult<String> {
    let base = url.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("ws://") {
        base.to_string()
    } else if base.starts_with("https://") || base.starts_with("wss://") {
        return Err(Error::unsupported(
            "realtime socketio: TLS (https:// or wss://) is not built into client mode; use a \
             plain http:// URL behind a TLS-terminating proxy or a private network",
        ));
    } else {
        return Err(Error::invalid_input(format!(
            "realtime socketio: url must start with http:// or ws://, got {:?}",
            truststream_core::echo(url)
        )));
    };
    Ok(format!(
        "{ws}{}/?EIO=4&transport=websocket",
        path.trim_end_matches('/')
    ))
}

fn lost(e: impl std::fmt::Display) -> Error {
    Error::unavailable(format!(
        "realtime socketio: the connection to the Socket.IO server failed: {e}"
    ))
}

impl Client {
    pub(crate) async fn connect(config: SocketIoConfig) -> RtResult<Self> {
        let url = config
            .url
            .clone()
            .ok_or_else(|| Error::invalid_input("realtime socketio: client mode needs url"))?;
        let target = ws_url(&url, &config.path)?;
        let timeout = config.request_timeout();
        let (mut ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(&target))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("realtime socketio: connecting to {url} timed out"),
                )
            })?
            .map_err(lost)?;
        // engine.io open, then socket.io connect with the token.
        let auth = config.token.as_ref().map(|t| json!({"token": t.expose()}));
        let handshake = async {
            let mut sent_connect = false;
            loop {
                let Some(frame) = ws.next().await else {
                    return Err(lost("closed during the handshake"));
                };
                let WsMessage::Text(text) = frame.map_err(lost)? else {
                    continue;
                };
                match codec::decode(&text) {
                    Packet::Open(_) if !sent_connect => {
                        ws.send(WsMessage::text(codec::connect(auth.as_ref())))
                            .await
                            .map_err(lost)?;
                        sent_connect = true;
                    }
                    Packet::Ping => ws.send(WsMessage::text(codec::PONG)).await.map_err(lost)?,
                    Packet::Connect => return Ok(()),
                    Packet::ConnectError(v) => {
                        let message = v
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("refused");
                        return Err(Error::unauthenticated(format!(
                            "realtime socketio: the server refused the connection: {}",
                            truststream_core::echo(message)
                        )));
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    "realtime socketio: the Socket.IO handshake timed out",
                )
            })??;

        let (out, out_rx) = mpsc::channel(config.member_queue_capacity);
        let inner = Arc::new(Inner {
            out,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            handles: Mutex::new(HashMap::new()),
            rows: Mutex::new(HashMap::new()),
            closed: Mutex::new(None),
            config,
        });
        let io = tokio::spawn(run(ws, out_rx, Arc::downgrade(&inner)));
        let reply = inner.request(wire::HELLO, json!({})).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "realtime socketio: {url} did not answer rt:hello (does it speak the \
                     TrustStream realtime protocol?): {}",
                    e.message()
                ),
            )
        })?;
        let hello = Hello {
            max_payload_bytes: reply
                .get("max_payload_bytes")
                .and_then(Value::as_u64)
                .map_or(inner.config.max_payload_bytes, |n| n as usize),
            row_changes: reply
                .get("row_changes")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        Ok(Client {
            inner,
            hello,
            url,
            io,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn config(&self) -> &SocketIoConfig {
        &self.inner.config
    }

    pub(crate) fn hello(&self) -> Hello {
        self.hello.clone()
    }

    pub(crate) async fn ping(&self) -> RtResult<()> {
        self.inner.request(wire::HELLO, json!({})).await.map(|_| ())
    }

    pub(crate) fn channel(
        &self,
        name: &str,
        options: ChannelOptions,
    ) -> RtResult<Arc<dyn Channel>> {
        if let Some(key) = options.presence_key.as_deref() {
            truststream_core_realtime::validate_presence_key(key)?;
        }
        let handle = format!("h{}", self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        Ok(Arc::new(ClientChannel {
            inner: self.inner.clone(),
            max_payload_bytes: self.hello.max_payload_bytes,
            target: Target {
                channel: name.to_string(),
                handle,
            },
            options,
            state: Arc::new(HandleState {
                handlers: Arc::new(Handlers::default()),
                joined: AtomicBool::new(false),
                removed: Mutex::new(None),
            }),
        }))
    }

    pub(crate) async fn subscribe_changes(
        &self,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> RtResult<Subscription> {
        if !self.hello.row_changes {
            return Err(Error::unsupported(
                "the Socket.IO server does not offer row change subscriptions (rt:hello said \
                 row_changes: false)",
            ));
        }
        spec.validate()?;
        // The id is ours, so a change that follows the ack at once finds
        // its handler.
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.rows).insert(id, handler);
        let reply = self
            .inner
            .request(wire::SUBSCRIBE_ROWS, json!({"spec": spec, "id": id}))
            .await;
        if let Err(e) = reply {
            lock(&self.inner.rows).remove(&id);
            return Err(e);
        }
        let weak = Arc::downgrade(&self.inner);
        Ok(Subscription::new(move || {
            if let Some(inner) = weak.upgrade() {
                let removed = lock(&inner.rows).remove(&id);
                drop(removed);
                let _ = inner.out.try_send(codec::event(
                    None,
                    wire::UNSUBSCRIBE_ROWS,
                    &json!({"id": id}),
                ));
            }
        }))
    }
}

impl Inner {
    fn check_open(&self) -> RtResult<()> {
        match lock(&self.closed).as_deref() {
            Some(reason) => Err(Error::unavailable(format!(
                "realtime socketio: the connection to the server is closed: {reason}"
            ))),
            None => Ok(()),
        }
    }

    /// Sends `event` and waits for its acknowledgement.
    async fn request(&self, event: &str, data: Value) -> RtResult<Value> {
        self.check_open()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let sent = self.out.send(codec::event(Some(id), event, &data)).await;
        if sent.is_err() {
            lock(&self.pending).remove(&id);
            return Err(lost("the connection task ended"));
        }
        match tokio::time::timeout(self.config.request_timeout(), rx).await {
            Ok(Ok(reply)) => wire::parse_reply(reply),
            Ok(Err(_)) => Err(self.check_open().err().unwrap_or_else(|| lost("closed"))),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "realtime socketio: {event} was not acknowledged within {}s",
                        self.config.request_timeout_secs
                    ),
                ))
            }
        }
    }

    /// Sends `event` without asking for an acknowledgement.
    async fn emit(&self, event: &str, data: Value) -> RtResult<()> {
        self.check_open()?;
        self.out
            .send(codec::event(None, event, &data))
            .await
            .map_err(|_| lost("the connection task ended"))
    }

    fn handle_of(&self, v: &Value) -> Option<Arc<HandleState>> {
        let t: Target = serde_json::from_value(v.clone()).ok()?;
        lock(&self.handles).get(&(t.channel, t.handle)).cloned()
    }

    /// Routes one event from the server.
    fn dispatch(&self, name: &str, data: Value) {
        match name {
            wire::MESSAGE => {
                let Ok(m) = serde_json::from_value::<wire::MessageOut>(data) else {
                    return;
                };
                let key = (m.target.channel.clone(), m.target.handle.clone());
                let h = lock(&self.handles).get(&key).cloned();
                if let Some(h) = h {
                    h.handlers.message(&Message {
                        channel: m.target.channel,
                        event: m.event,
                        payload: m.payload,
                    });
                }
            }
            wire::PRESENCE_STATE => {
                let Some(h) = self.handle_of(&data) else {
                    return;
                };
                if let Ok(s) = serde_json::from_value::<wire::PresenceStateOut>(data) {
                    h.handlers.presence(&PresenceEvent::State(s.state));
                }
            }
            wire::PRESENCE_DIFF => {
                let Some(h) = self.handle_of(&data) else {
                    return;
                };
                if let Ok(d) = serde_json::from_value::<wire::PresenceDiffOut>(data) {
                    h.handlers.presence(&PresenceEvent::Diff(PresenceDiff {
                        joins: d.joins,
                        leaves: d.leaves,
                    }));
                }
            }
            wire::ROW_CHANGE => {
                let Ok(r) = serde_json::from_value::<wire::RowChangeOut>(data) else {
                    return;
                };
                let h = lock(&self.rows).get(&r.id).cloned();
                if let Some(h) = h {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(r.change)));
                }
            }
            wire::CLOSED => {
                let Ok(c) = serde_json::from_value::<wire::ClosedOut>(data) else {
                    return;
                };
                let key = (c.target.channel.clone(), c.target.handle);
                if let Some(h) = lock(&self.handles).remove(&key) {
                    *lock(&h.removed) = Some(format!(
                        "removed from channel {:?} by the server because {}",
                        c.target.channel, c.reason
                    ));
                }
            }
            wire::ERROR => {
                let message = data
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_string();
                tracing::warn!(%message, "realtime socketio: the server reported an error");
                *lock(&self.closed) = Some(message);
            }
            _ => {}
        }
    }

    /// The connection ended: every request and handle learns why.
    fn ended(&self, reason: String) {
        lock(&self.closed).get_or_insert(reason.clone());
        lock(&self.pending).clear();
        let handles: Vec<_> = lock(&self.handles).drain().map(|(_, h)| h).collect();
        for h in handles {
            lock(&h.removed).get_or_insert_with(|| {
                format!("removed because the connection to the server ended: {reason}")
            });
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads frames and writes what the handles send, until either side ends.
async fn run(ws: Ws, mut out: mpsc::Receiver<String>, inner: Weak<Inner>) {
    let (mut sink, mut stream) = ws.split();
    let reason = loop {
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_))) | None => break "the server closed the connection".to_string(),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break format!("read error: {e}"),
                };
                let Some(inner) = inner.upgrade() else { return };
                match codec::decode(&text) {
                    Packet::Ping if sink.send(WsMessage::text(codec::PONG)).await.is_err() => {
                        break "write error".to_string();
                    }
                    Packet::Ack { id, mut args } => {
                        let tx = lock(&inner.pending).remove(&id);
                        if let Some(tx) = tx {
                            let reply = if args.is_empty() { Value::Null } else { args.swap_remove(0) };
                            let _ = tx.send(reply);
                        }
                    }
                    Packet::Event { args, .. } => {
                        let mut args = args.into_iter();
                        if let (Some(Value::String(name)), data) = (args.next(), args.next()) {
                            inner.dispatch(&name, data.unwrap_or(Value::Null));
                        }
                    }
                    Packet::Disconnect | Packet::Close => break "the server disconnected this client".to_string(),
                    _ => {}
                }
            }
            text = out.recv() => {
                let Some(text) = text else { return };
                if let Err(e) = sink.send(WsMessage::text(text)).await {
                    break format!("write error: {e}");
                }
            }
        }
    };
    if let Some(inner) = inner.upgrade() {
        inner.ended(reason);
    }
}

/// A client-mode handle on a channel.
struct ClientChannel {
    inner: Arc<Inner>,
    max_payload_bytes: usize,
    target: Target,
    options: ChannelOptions,
    state: Arc<HandleState>,
}

impl ClientChannel {
    fn key(&self) -> (String, String) {
        (self.target.channel.clone(), self.target.handle.clone())
    }

    fn check_joined(&self, op: &str) -> RtResult<()> {
        if self.state.joined.load(Ordering::Acquire) {
            if let Some(reason) = lock(&self.state.removed).as_deref() {
                return Err(not_joined(&self.target.channel, op, Some(reason)));
            }
            return Ok(());
        }
        Err(not_joined(&self.target.channel, op, None))
    }

    fn target_json(&self) -> Value {
        serde_json::to_value(&self.target).unwrap_or(Value::Null)
    }
}

#[async_trait]
impl Channel for ClientChannel {
    fn name(&self) -> &str {
        &self.target.channel
    }

    async fn join(&self) -> RtResult<()> {
        if self.check_joined("join").is_ok() {
            return Ok(());
        }
        *lock(&self.state.removed) = None;
        // Registered first: the presence state follows the ack at once.
        lock(&self.inner.handles).insert(self.key(), self.state.clone());
        let request = wire::JoinRequest {
            target: self.target.clone(),
            broadcast_self: self.options.broadcast_self,
            presence_key: self.options.presence_key.clone(),
        };
        let data = serde_json::to_value(&request).unwrap_or(Value::Null);
        match self.inner.request(wire::JOIN, data).await {
            Ok(_) => {
                self.state.joined.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                lock(&self.inner.handles).remove(&self.key());
                Err(e)
            }
        }
    }

    async fn leave(&self) -> RtResult<()> {
        if !self.state.joined.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        lock(&self.inner.handles).remove(&self.key());
        if lock(&self.state.removed).is_some() {
            return Ok(());
        }
        self.inner
            .request(wire::LEAVE, self.target_json())
            .await
            .map(|_| ())
    }

    fn is_joined(&self) -> bool {
        self.check_joined("is_joined").is_ok()
    }

    fn on(&self, event: &str, handler: Handler<Message>) -> Subscription {
        self.state.handlers.on(event, handler)
    }

    async fn send(&self, event: &str, payload: Value) -> RtResult<()> {
        self.check_joined("send")?;
        validate_broadcast(event, &payload, self.max_payload_bytes)?;
        let mut data = self.target_json();
        if let Some(map) = data.as_object_mut() {
            map.insert("event".into(), Value::String(event.to_string()));
            map.insert("payload".into(), payload);
        }
        if self.options.ack {
            self.inner.request(wire::SEND, data).await.map(|_| ())
        } else {
            self.inner.emit(wire::SEND, data).await
        }
    }

    async fn track(&self, state: Value) -> RtResult<()> {
        self.check_joined("track")?;
        truststream_core_realtime::check_json_size(
            &state,
            self.max_payload_bytes,
            "the presence state",
        )?;
        let mut data = self.target_json();
        if let Some(map) = data.as_object_mut() {
            map.insert("state".into(), state);
        }
        self.inner.request(wire::TRACK, data).await.map(|_| ())
    }

    async fn untrack(&self) -> RtResult<()> {
        if self.check_joined("untrack").is_err() {
            return Ok(());
        }
        self.inner
            .request(wire::UNTRACK, self.target_json())
            .await
            .map(|_| ())
    }

    async fn presence_state(&self) -> RtResult<PresenceState> {
        let reply = self
            .inner
            .request(wire::PRESENCE, self.target_json())
            .await?;
        serde_json::from_value(reply.get("state").cloned().unwrap_or(Value::Null)).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("realtime socketio: the server's presence state is malformed: {e}"),
            )
        })
    }

    fn on_presence(&self, handler: Handler<PresenceEvent>) -> Subscription {
        self.state.handlers.on_presence(handler)
    }
}

impl Drop for ClientChannel {
    fn drop(&mut self) {
        if self.state.joined.swap(false, Ordering::AcqRel) {
            lock(&self.inner.handles).remove(&self.key());
            let _ = self
                .inner
                .out
                .try_send(codec::event(None, wire::LEAVE, &self.target_json()));
        }
    }
}
