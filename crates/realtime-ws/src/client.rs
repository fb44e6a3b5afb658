//! Client mode: the realtime interface over one WebSocket connection to a
//! remote hub, speaking vsn 1.0.0 (whose pushes name the member's join_ref,
//! so several handles may share a topic on one connection).
//!
//! The connection is opened at start and re-opened by the next call that
//! needs it after it was lost; handles joined on a lost connection report
//! not joined (with the reason) and can join again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;
use truststream_core::{Error, ErrorKind};
use truststream_core_realtime::{
    not_joined, presence_key, validate_broadcast, ChangeSpec, Channel, ChannelOptions, Handler,
    Message, PresenceDiff, PresenceEvent, PresenceState, RowChange, RtResult, Subscription,
    Value as JsonValue,
};

use crate::deliver::{Delivery, Inbox, Queue};
use crate::hub::{change_from_wire, lock, new_key, presence_from_wire, Broadcast, Counters};
use crate::protocol::{self, Vsn};
use crate::WsRealtimeConfig;

/// How long a call waits for the hub's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the connection sends a heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(25);
/// Frames waiting to be written to the hub.
const OUT_QUEUE: usize = 4096;

/// What the hub said about itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubInfo {
    pub row_changes: bool,
    pub max_payload_bytes: usize,
}

pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: WsRealtimeConfig,
    url: String,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    info: Mutex<HubInfo>,
    counters: Arc<Counters>,
}

/// The hub's answer to a push.
type Reply = Result<Value, Error>;

/// What a member of this connection is.
enum Kind {
    Channel,
    Rows(Handler<RowChange>),
}

struct ClientMember {
    kind: Kind,
    inbox: Arc<Inbox>,
    queue: Option<Arc<Queue>>,
    presence: Mutex<PresenceState>,
}

/// One live connection.
struct Conn {
    out: mpsc::Sender<WsMessage>,
    next_ref: AtomicU64,
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    members: Mutex<HashMap<String, Arc<ClientMember>>>,
    alive: AtomicBool,
    closed: Mutex<Option<String>>,
}

impl Conn {
    fn next_ref(&self) -> String {
        self.next_ref.fetch_add(1, Ordering::Relaxed).to_string()
    }

    fn frame(
        &self,
        join_ref: Option<&str>,
        reference: &str,
        topic: &str,
        event: &str,
        payload: &Value,
    ) -> WsMessage {
        protocol::encode(Vsn::V1, join_ref, Some(reference), topic, event, payload)
    }

    fn lost(&self) -> Error {
        let why = lock(&self.closed)
            .clone()
            .unwrap_or_else(|| "connection closed".into());
        Error::unavailable(format!(
            "the connection to the realtime hub was lost: {why}"
        ))
    }

    /// Sends a push and waits for its reply.
    async fn request(
        &self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: &Value,
    ) -> Reply {
        let reference = self.next_ref();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(reference.clone(), tx);
        if !self.alive.load(Ordering::Acquire) {
            lock(&self.pending).remove(&reference);
            return Err(self.lost());
        }
        let msg = self.frame(join_ref, &reference, topic, event, payload);
        if self.out.send(msg).await.is_err() {
            lock(&self.pending).remove(&reference);
            return Err(self.lost());
        }
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => {
                lock(&self.pending).remove(&reference);
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!("the realtime hub did not answer {event} within {REPLY_TIMEOUT:?}"),
                ))
            }
        }
    }

    /// Sends a push without waiting for a reply (never blocks; a full
    /// queue drops it, which only happens when the hub stopped reading).
    fn push(&self, join_ref: Option<&str>, topic: &str, event: &str, payload: &Value) -> bool {
        let reference = self.next_ref();
        self.out
            .try_send(self.frame(join_ref, &reference, topic, event, payload))
            .is_ok()
    }

    fn has_member(&self, join_ref: &str) -> bool {
        self.alive.load(Ordering::Acquire) && lock(&self.members).contains_key(join_ref)
    }

    fn remove_member(&self, join_ref: &str, reason: Option<&str>) {
        let m = lock(&self.members).remove(join_ref);
        if let Some(m) = m {
            if let Some(q) = &m.queue {
                q.deactivate();
            }
            if let Some(r) = reason {
                m.inbox.set_removal(r);
            }
        }
    }

    /// The connection ended: every member and pending call learns why.
    fn close(&self, why: String) {
        self.alive.store(false, Ordering::Release);
        *lock(&self.closed) = Some(why.clone());
        let members: Vec<Arc<ClientMember>> = lock(&self.members).drain().map(|(_, m)| m).collect();
        let reason = format!("removed because the connection to the hub was lost ({why})");
        for m in members {
            if let Some(q) = &m.queue {
                q.deactivate();
            }
            m.inbox.set_removal(&reason);
        }
        lock(&self.pending).clear();
    }

    /// Routes one frame from the hub.
    fn dispatch(&self, f: protocol::Frame) {
        if f.event == "phx_reply" {
            let Some(reference) = &f.reference else {
                return;
            };
            let Some(tx) = lock(&self.pending).remove(reference) else {
                return;
            };
            let status = f.payload.get("status").and_then(Value::as_str);
            let response = f.payload.get("response").cloned().unwrap_or(Value::Null);
            let _ = tx.send(match status {
                Some("ok") => Ok(response),
                _ => Err(reply_error(&response)),
            });
            return;
        }
        let Some(join_ref) = f.join_ref.as_deref() else {
            return;
        };
        let Some(m) = lock(&self.members).get(join_ref).cloned() else {
            return;
        };
        let offer = |d: Delivery| {
            if let Some(q) = &m.queue {
                if let Err(reason) = q.offer(d) {
                    self.remove_member(join_ref, Some(&reason));
                    self.push(Some(join_ref), &f.topic, "phx_leave", &json!({}));
                }
            }
        };
        match f.event.as_str() {
            "broadcast" => {
                let event = f.payload.get("event").and_then(Value::as_str).unwrap_or("");
                let payload = f.payload.get("payload").cloned().unwrap_or(Value::Null);
                let name = m.inbox.channel.clone();
                offer(Delivery::Broadcast(Arc::new(Broadcast::new(
                    &name, event, payload,
                ))));
            }
            "presence_state" => {
                let state = presence_from_wire(&f.payload);
                *lock(&m.presence) = state.clone();
                offer(Delivery::State(Arc::new(state)));
            }
            "presence_diff" => {
                let diff = PresenceDiff {
                    joins: presence_from_wire(f.payload.get("joins").unwrap_or(&Value::Null)),
                    leaves: presence_from_wire(f.payload.get("leaves").unwrap_or(&Value::Null)),
                };
                apply_diff(&mut lock(&m.presence), &diff);
                offer(Delivery::Diff(Arc::new(diff)));
            }
            "postgres_changes" => {
                if let (Kind::Rows(handler), Some(change)) =
                    (&m.kind, f.payload.get("data").and_then(change_from_wire))
                {
                    let handler = handler.clone();
                    let _ =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(change)));
                }
            }
            "phx_close" | "phx_error" => {
                let why = f
                    .payload
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("the hub closed the channel");
                self.remove_member(join_ref, Some(&format!("removed by the hub: {why}")));
            }
            "system" if f.payload.get("status").and_then(Value::as_str) == Some("error") => {
                let why = f
                    .payload
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("system error");
                self.remove_member(join_ref, Some(&format!("removed by the hub: {why}")));
            }
            _ => {}
        }
    }
}

/// Applies a diff to a presence state: leaves by presence_ref, then joins.
fn apply_diff(state: &mut PresenceState, diff: &PresenceDiff) {
    for (key, metas) in &diff.leaves {
        if let Some(list) = state.get_mut(key) {
            list.retain(|m| !metas.iter().any(|l| l.presence_ref == m.presence_ref));
            if list.is_empty() {
                state.remove(key);
            }
        }
    }
    for (key, metas) in &diff.joins {
        let list = state.entry(key.clone()).or_default();
        for m in metas {
            if !list.iter().any(|x| x.presence_ref == m.presence_ref) {
                list.push(m.clone());
            }
        }
    }
}

/// An error reply `{reason, code}` as an [`Error`] of the hub's kind.
fn reply_error(response: &Value) -> Error {
    let reason = response
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("the realtime hub refused the request");
    let kind = match response.get("code").and_then(Value::as_str) {
        Some("not_found") => ErrorKind::NotFound,
        Some("conflict") => ErrorKind::Conflict,
        Some("unauthenticated") => ErrorKind::Unauthenticated,
        Some("permission_denied") => ErrorKind::PermissionDenied,
        Some("unsupported") => ErrorKind::Unsupported,
        Some("unavailable") => ErrorKind::Unavailable,
        Some("timeout") => ErrorKind::Timeout,
        Some("rate_limited") => ErrorKind::RateLimited,
        Some("too_large") => ErrorKind::TooLarge,
        Some("internal") => ErrorKind::Internal,
        _ => ErrorKind::InvalidInput,
    };
    Error::new(kind, format!("realtime hub: {reason}"))
}

impl Client {
    pub(crate) async fn connect(config: WsRealtimeConfig) -> RtResult<Client> {
        let url = config
            .url
            .clone()
            .ok_or_else(|| Error::invalid_input("realtime ws client mode needs a url"))?;
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(Error::invalid_input(format!(
                "realtime ws: url must start with ws:// or wss://, got {url:?}"
            )));
        }
        let inner = Arc::new(Inner {
            url,
            info: Mutex::new(HubInfo {
                row_changes: false,
                max_payload_bytes: config.max_payload_bytes,
            }),
            config,
            conn: tokio::sync::Mutex::new(None),
            counters: Arc::new(Counters::default()),
        });
        inner.connection().await?;
        Ok(Client { inner })
    }

    pub(crate) fn url(&self) -> &str {
        &self.inner.url
    }

    pub(crate) fn config(&self) -> &WsRealtimeConfig {
        &self.inner.config
    }

    pub(crate) fn hub_info(&self) -> HubInfo {
        *lock(&self.inner.info)
    }

    pub(crate) async fn ping(&self) -> RtResult<()> {
        let conn = self.inner.connection().await?;
        conn.request(None, "phoenix", "heartbeat", &json!({}))
            .await
            .map(|_| ())
    }

    pub(crate) fn channel(
        &self,
        name: &str,
        options: ChannelOptions,
    ) -> RtResult<Arc<dyn Channel>> {
        let key = presence_key(options.presence_key.as_deref(), new_key)?;
        Ok(Arc::new(ClientChannel {
            inner: self.inner.clone(),
            topic: format!("realtime:{name}"),
            options,
            key,
            inbox: Inbox::new(name),
            joined: Mutex::new(None),
        }))
    }

    pub(crate) async fn subscribe_changes(
        &self,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> RtResult<Subscription> {
        if !self.hub_info().row_changes {
            return Err(Error::unsupported(
                "the realtime hub has no database change feed, so row subscriptions are unsupported",
            ));
        }
        spec.validate()?;
        let conn = self.inner.connection().await?;
        let name = format!("truststream-rows:{}", uuid::Uuid::new_v4().simple());
        let topic = format!("realtime:{name}");
        let event = match spec.event {
            None => "*",
            Some(truststream_core_db::ChangeKind::Insert) => "INSERT",
            Some(truststream_core_db::ChangeKind::Update) => "UPDATE",
            Some(truststream_core_db::ChangeKind::Delete) => "DELETE",
        };
        let mut binding = json!({"event": event, "schema": "public", "table": spec.table});
        if let Some(key) = &spec.key {
            binding["key"] = key.clone();
        }
        if let Some(filter) = &spec.filter {
            binding["where"] = serde_json::to_value(filter)
                .map_err(|e| Error::internal(format!("serializing a filter: {e}")))?;
        }
        let join_ref = conn.next_ref();
        let member = Arc::new(ClientMember {
            kind: Kind::Rows(handler),
            inbox: Inbox::new(&name),
            queue: None,
            presence: Mutex::new(PresenceState::new()),
        });
        lock(&conn.members).insert(join_ref.clone(), member);
        let payload = json!({
            "config": {
                "broadcast": {"ack": false, "self": false},
                "presence": {"key": "", "enabled": false},
                "postgres_changes": [binding],
                "private": false,
                "truststream_multiplex": true,
            },
            "access_token": self.inner.config.api_key.as_ref().map(|k| k.expose().to_string()),
        });
        if let Err(e) = conn
            .request(Some(&join_ref), &topic, "phx_join", &payload)
            .await
        {
            conn.remove_member(&join_ref, None);
            return Err(e);
        }
        let weak = Arc::downgrade(&conn);
        Ok(Subscription::new(move || {
            if let Some(conn) = weak.upgrade() {
                conn.remove_member(&join_ref, None);
                conn.push(Some(&join_ref), &topic, "phx_leave", &json!({}));
            }
        }))
    }
}

impl Inner {
    /// The live connection, opened (again) if needed.
    async fn connection(self: &Arc<Self>) -> RtResult<Arc<Conn>> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.alive.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        let conn = self.open().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn open(self: &Arc<Self>) -> RtResult<Arc<Conn>> {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        let mut url = format!("{}{sep}vsn=1.0.0", self.url);
        if let Some(key) = &self.config.api_key {
            url.push_str("&apikey=");
            url.push_str(&percent_encode(key.expose()));
        }
        let max = self.config.max_payload_bytes.saturating_add(64 * 1024);
        let ws_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config), true)
            .await
            .map_err(|e| connect_error(&self.url, e))?;
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::channel::<WsMessage>(OUT_QUEUE);
        let conn = Arc::new(Conn {
            out: tx,
            next_ref: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            closed: Mutex::new(None),
        });
        tokio::spawn(async move {
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
            let _ = sink.close().await;
        });
        let weak = Arc::downgrade(&conn);
        tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
            heartbeat.tick().await;
            let why = loop {
                let item = tokio::select! {
                    _ = heartbeat.tick() => {
                        match weak.upgrade() {
                            Some(c) => { c.push(None, "phoenix", "heartbeat", &json!({})); }
                            None => break "client dropped".to_string(),
                        }
                        continue;
                    }
                    item = stream.next() => item,
                };
                let Some(c) = weak.upgrade() else {
                    break "client dropped".to_string();
                };
                match item {
                    Some(Ok(WsMessage::Text(text))) => {
                        if let Ok(f) = protocol::decode_text(Vsn::V1, &text) {
                            c.dispatch(f);
                        }
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        break frame
                            .map(|f| {
                                format!("closed by the hub: {} ({})", f.reason, u16::from(f.code))
                            })
                            .unwrap_or_else(|| "closed by the hub".into());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("read error: {e}"),
                    None => break "connection closed".into(),
                }
            };
            if let Some(c) = weak.upgrade() {
                c.close(why);
            }
        });
        let info = conn
            .request(None, "phoenix", "truststream_info", &json!({}))
            .await?;
        *lock(&self.info) = HubInfo {
            row_changes: info
                .get("row_changes")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            max_payload_bytes: info
                .get("max_payload_bytes")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(self.config.max_payload_bytes),
        };
        Ok(conn)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(slot) = self.conn.try_lock() {
            if let Some(c) = slot.as_ref() {
                c.close("client dropped".into());
            }
        }
    }
}

fn connect_error(url: &str, e: tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            let kind = match status {
                401 => ErrorKind::Unauthenticated,
                403 => ErrorKind::PermissionDenied,
                404 => ErrorKind::NotFound,
                429 => ErrorKind::RateLimited,
                400 | 431 => ErrorKind::InvalidInput,
                _ => ErrorKind::Unavailable,
            };
            Error::new(
                kind,
                format!("the realtime hub at {url} refused the connection ({status}): {body}"),
            )
        }
        other => Error::unavailable(format!(
            "cannot connect to the realtime hub at {url}: {other}"
        ))
        .with_source(other),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A joined client handle's state.
#[derive(Clone)]
struct JoinedState {
    conn: Arc<Conn>,
    join_ref: String,
    member: Arc<ClientMember>,
}

/// A channel handle in client mode.
struct ClientChannel {
    inner: Arc<Inner>,
    topic: String,
    options: ChannelOptions,
    key: String,
    inbox: Arc<Inbox>,
    joined: Mutex<Option<JoinedState>>,
}

impl ClientChannel {
    fn current(&self) -> Option<JoinedState> {
        let j = lock(&self.joined).clone()?;
        j.conn.has_member(&j.join_ref).then_some(j)
    }

    fn not_joined(&self, op: &str) -> Error {
        not_joined(&self.inbox.channel, op, self.inbox.removal().as_deref())
    }

    fn leave_now(&self) -> Option<JoinedState> {
        let j = lock(&self.joined).take()?;
        j.conn.remove_member(&j.join_ref, None);
        Some(j)
    }
}

impl Drop for ClientChannel {
    fn drop(&mut self) {
        if let Some(j) = self.leave_now() {
            j.conn
                .push(Some(&j.join_ref), &self.topic, "phx_leave", &json!({}));
        }
    }
}

#[async_trait]
impl Channel for ClientChannel {
    fn name(&self) -> &str {
        &self.inbox.channel
    }

    async fn join(&self) -> RtResult<()> {
        let op = "channel.join";
        if self.current().is_some() {
            return Ok(());
        }
        self.leave_now();
        let conn = self
            .inner
            .connection()
            .await
            .map_err(|e| e.with_operation(op))?;
        let join_ref = conn.next_ref();
        let queue = Queue::start(
            &self.inbox,
            self.inner.config.member_queue_capacity,
            &self.inner.counters,
        );
        let member = Arc::new(ClientMember {
            kind: Kind::Channel,
            inbox: self.inbox.clone(),
            queue: Some(queue.clone()),
            presence: Mutex::new(PresenceState::new()),
        });
        // Registered before the join is sent: the state that follows the
        // reply must find it.
        lock(&conn.members).insert(join_ref.clone(), member.clone());
        let payload = json!({
            "config": {
                "broadcast": {"ack": self.options.ack, "self": self.options.broadcast_self},
                "presence": {"key": self.key, "enabled": true},
                "postgres_changes": [],
                "private": false,
                "truststream_multiplex": true,
            },
            "access_token": self.inner.config.api_key.as_ref().map(|k| k.expose().to_string()),
        });
        if let Err(e) = conn
            .request(Some(&join_ref), &self.topic, "phx_join", &payload)
            .await
        {
            conn.remove_member(&join_ref, None);
            queue.deactivate();
            return Err(e.with_operation(op));
        }
        self.inbox.clear_removal();
        *lock(&self.joined) = Some(JoinedState {
            conn,
            join_ref,
            member,
        });
        Ok(())
    }

    async fn leave(&self) -> RtResult<()> {
        if let Some(j) = self.leave_now() {
            // The hub's answer only confirms; the handle has left already.
            let _ = j
                .conn
                .request(Some(&j.join_ref), &self.topic, "phx_leave", &json!({}))
                .await;
        }
        Ok(())
    }

    fn is_joined(&self) -> bool {
        self.current().is_some()
    }

    fn on(&self, event: &str, handler: Handler<Message>) -> Subscription {
        self.inbox.on(event, handler)
    }

    async fn send(&self, event: &str, payload: JsonValue) -> RtResult<()> {
        let op = "channel.send";
        let limit = lock(&self.inner.info).max_payload_bytes;
        validate_broadcast(event, &payload, limit).map_err(|e| e.with_operation(op))?;
        let Some(j) = self.current() else {
            return Err(self.not_joined("send").with_operation(op));
        };
        let body = json!({"type": "broadcast", "event": event, "payload": payload});
        if self.options.ack {
            j.conn
                .request(Some(&j.join_ref), &self.topic, "broadcast", &body)
                .await
                .map(|_| ())
                .map_err(|e| e.with_operation(op))
        } else {
            let reference = j.conn.next_ref();
            let msg = j.conn.frame(
                Some(&j.join_ref),
                &reference,
                &self.topic,
                "broadcast",
                &body,
            );
            j.conn
                .out
                .send(msg)
                .await
                .map_err(|_| j.conn.lost().with_operation(op))
        }
    }

    async fn track(&self, state: JsonValue) -> RtResult<()> {
        let op = "channel.track";
        if !state.is_object() {
            return Err(Error::invalid_input(
                "a presence state must be a JSON object (its fields become the presence meta)",
            )
            .with_operation(op));
        }
        let Some(j) = self.current() else {
            return Err(self.not_joined("track").with_operation(op));
        };
        let body = json!({"type": "presence", "event": "track", "payload": state});
        j.conn
            .request(Some(&j.join_ref), &self.topic, "presence", &body)
            .await
            .map(|_| ())
            .map_err(|e| e.with_operation(op))
    }

    async fn untrack(&self) -> RtResult<()> {
        let Some(j) = self.current() else {
            return Ok(());
        };
        let body = json!({"type": "presence", "event": "untrack"});
        j.conn
            .request(Some(&j.join_ref), &self.topic, "presence", &body)
            .await
            .map(|_| ())
            .map_err(|e| e.with_operation("channel.untrack"))
    }

    async fn presence_state(&self) -> RtResult<PresenceState> {
        let Some(j) = self.current() else {
            return Err(self
                .not_joined("presence_state")
                .with_operation("channel.presence_state"));
        };
        let state = lock(&j.member.presence).clone();
        Ok(state)
    }

    fn on_presence(&self, handler: Handler<PresenceEvent>) -> Subscription {
        self.inbox.on_presence(handler)
    }
}
