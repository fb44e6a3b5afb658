//! The Socket.IO endpoint: socketioxide on axum, the handshake's token
//! check, and each connection's commands.
//!
//! socketioxide runs every event handler in a task of its own, so two
//! events of one client could be handled out of order. The handlers here
//! only queue the event (synchronously, in arrival order) into the
//! connection's bounded command queue; one task per connection handles
//! them in order.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::SocketIo;
use tokio::sync::{mpsc, watch};
use truststream_core::{Error, ErrorKind};
use truststream_core_auth::Principal;
use truststream_core_db::eval::filter_columns;
use truststream_core_realtime::access::Viewer;
use truststream_core_realtime::{
    handler, validate_channel_name, RowChange, RtResult, Subscription,
};

use crate::hub::{lock, Frame, Hub, Sink};
use crate::outbox::{self, Outbox};
use crate::wire::{self, Target};

/// Builds the socketioxide layer and its `/` namespace for `hub`.
pub(crate) fn build(hub: &Arc<Hub>) -> (socketioxide::layer::SocketIoLayer, SocketIo) {
    let c = &hub.config;
    let (layer, io) = SocketIo::builder()
        .req_path(c.path.clone())
        .max_payload(c.max_frame_bytes() as u64)
        .ws_max_message_size(c.max_frame_bytes())
        .max_buffer_size(c.engine_buffer_packets)
        .ping_interval(std::time::Duration::from_secs(c.ping_interval_secs))
        .ping_timeout(std::time::Duration::from_secs(c.ping_timeout_secs))
        .build_layer();
    let weak = Arc::downgrade(hub);
    let check = {
        let weak = weak.clone();
        move |s: SocketRef, TryData(auth): TryData<Value>| {
            let weak = weak.clone();
            async move {
                authenticate(&weak, &s, auth.ok()).await?;
                connected(weak, s);
                Ok::<(), Refused>(())
            }
        }
    };
    // The connection is set up in the middleware, once the token passed:
    // socketioxide sends the connect packet before it calls the connect
    // handler, in a task of its own, so an event the client sends right
    // after connecting could find no handler registered yet. What emits to
    // the client starts in the connect handler ([`on_connect`]).
    io.ns("/", on_connect.with(check));
    (layer, io)
}

/// Why a handshake was refused: the `message` socket.io-client's
/// `connect_error` carries.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The connect middleware: the `auth` payload's `token` is checked by the
/// auth provider (deny by default: a server without one accepts clients
/// only with `allow_anonymous`).
async fn authenticate(hub: &Weak<Hub>, s: &SocketRef, auth: Option<Value>) -> Result<(), Refused> {
    let Some(hub) = hub.upgrade() else {
        return Err(Refused("the realtime server was shut down".into()));
    };
    if hub.is_shut_down() {
        return Err(Refused("the realtime server was shut down".into()));
    }
    let refuse = |msg: &str| {
        hub.counters.refused.fetch_add(1, Ordering::Relaxed);
        Err(Refused(msg.to_string()))
    };
    if hub.counters.connections.load(Ordering::Relaxed) >= hub.config.max_connections {
        return refuse("too many connections (max_connections); try again later");
    }
    let token = auth
        .as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    match (&hub.auth, token) {
        (Some(auth), Some(token)) => match auth.validate_token(token).await {
            Ok(principal) => {
                s.extensions.insert(Arc::new(principal));
                Ok(())
            }
            Err(e) => {
                tracing::debug!(kind = %e.kind(), "realtime socketio: a handshake token was refused");
                refuse("unauthenticated: the access token is invalid or expired")
            }
        },
        (Some(_), None) => refuse("unauthenticated: connect with auth: { token: <access token> }"),
        (None, _) if hub.config.allow_anonymous => Ok(()),
        (None, _) => {
            refuse("unauthenticated: no anonymous clients (the server has no auth provider)")
        }
    }
}

/// One command of a connection, queued in arrival order.
struct Command {
    event: &'static str,
    data: Value,
    ack: AckSender,
}

/// A connection's memberships and row subscriptions.
struct Conn {
    hub: Weak<Hub>,
    outbox: Arc<Outbox>,
    /// (channel, handle) -> member id.
    members: Mutex<HashMap<(String, String), u64>>,
    rows: Mutex<HashMap<u64, RowSub>>,
    /// Whom the token names (`None` without an auth provider); replaced by
    /// `rt:access_token`.
    principal: Mutex<Option<Arc<Principal>>>,
    /// Who the client is to the table rules; fixed for the connection (a
    /// new token must name the same user).
    viewer: Viewer,
    /// `true` once the connection is closed.
    closed: watch::Sender<bool>,
}

/// A client's row subscription and what it was authorized for.
struct RowSub {
    table: String,
    /// The spec's filter columns (checked against hidden columns).
    columns: Vec<String>,
    _sub: Subscription,
}

fn connected(hub: Weak<Hub>, s: SocketRef) {
    let Some(h) = hub.upgrade() else {
        let _ = s.disconnect();
        return;
    };
    h.counters.connections.fetch_add(1, Ordering::Relaxed);
    let outbox = Outbox::new(h.config.outgoing_queue_bytes, h.counters.clone());
    let principal = s.extensions.get::<Arc<Principal>>();
    let conn = Arc::new(Conn {
        hub: hub.clone(),
        outbox,
        members: Mutex::new(HashMap::new()),
        rows: Mutex::new(HashMap::new()),
        viewer: Viewer::of(principal.as_deref()),
        principal: Mutex::new(principal),
        closed: watch::channel(false).0,
    });
    let (tx, rx) = mpsc::channel::<Command>(h.config.command_queue_capacity);
    for event in wire::CLIENT_EVENTS {
        let tx = tx.clone();
        s.on(
            event,
            move |sock: SocketRef, TryData(data): TryData<Value>, ack: AckSender| {
                let data = data.unwrap_or(Value::Null);
                if tx.try_send(Command { event, data, ack }).is_err() {
                    tracing::info!(sid = %sock.id, "realtime socketio: a client sent commands faster than they were handled; disconnecting it");
                    let _ = sock.emit(
                        wire::ERROR,
                        &json!({"code": "rate_limited", "message": "too many commands waiting (command_queue_capacity)"}),
                    );
                    let _ = sock.disconnect();
                }
                std::future::ready(())
            },
        );
    }
    let on_close = conn.clone();
    s.on_disconnect(move || {
        let conn = on_close.clone();
        async move { conn.close() }
    });
    s.extensions.insert(conn.clone());
    tokio::spawn(run(conn, rx));
    drop(tx);
}

/// The connect handler: starts the tasks that emit to the client (the
/// outbox's writer, the token expiry). socketioxide marks a socket
/// connected only after the middleware has passed and the connect packet
/// is queued, then calls this; until then `emit` refuses with `Closed`,
/// which the writer takes for a disconnect, while acknowledgements go out
/// (they do not check). So a writer started in the middleware that met a
/// frame in that window (a loaded machine preempting the thread in
/// between, while the client's hello and join were answered) ended, and
/// the connection got no delivery again. Frames queued before this runs
/// wait in the outbox.
async fn on_connect(s: SocketRef) {
    let Some(conn) = s.extensions.remove::<Arc<Conn>>() else {
        return;
    };
    tokio::spawn(outbox::writer(conn.outbox.clone(), s.clone()));
    tokio::spawn(expire_at_token_expiry(conn, s));
}

impl Conn {
    fn close(&self) {
        self.closed.send_replace(true);
        self.outbox.close();
        let members = std::mem::take(&mut *lock(&self.members));
        let rows = std::mem::take(&mut *lock(&self.rows));
        drop(rows);
        if let Some(hub) = self.hub.upgrade() {
            for ((channel, _), id) in members {
                hub.leave(&channel, id);
            }
            hub.counters.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn member(&self, target: &Target) -> Option<u64> {
        lock(&self.members)
            .get(&(target.channel.clone(), target.handle.clone()))
            .copied()
    }

    fn joined(&self, target: &Target, op: &str) -> RtResult<u64> {
        self.member(target)
            .ok_or_else(|| truststream_core_realtime::not_joined(&target.channel, op, None))
    }

    async fn handle(self: &Arc<Self>, hub: &Arc<Hub>, event: &str, data: Value) -> RtResult<Value> {
        match event {
            wire::HELLO => Ok(json!({
                "protocol": wire::PROTOCOL_VERSION,
                "max_payload_bytes": hub.config.max_payload_bytes,
                "row_changes": hub.row_changes_available(),
            })),
            wire::JOIN => {
                let req: wire::JoinRequest = parse(data)?;
                validate_channel_name(&req.target.channel)?;
                check_handle(&req.target.handle)?;
                if self.member(&req.target).is_some() {
                    return Ok(json!({"joined": true}));
                }
                let principal = self.principal();
                hub.channels
                    .authorize(hub.auth.as_ref(), principal.as_deref(), &req.target.channel)
                    .await?;
                let per_conn = lock(&self.members).len();
                if per_conn >= hub.config.max_channels_per_connection {
                    return Err(Error::new(
                        ErrorKind::RateLimited,
                        format!(
                            "a connection may be a member of at most {} channels \
                         (max_channels_per_connection)",
                            hub.config.max_channels_per_connection
                        ),
                    ));
                }
                let id = hub.next_id();
                lock(&self.members)
                    .insert((req.target.channel.clone(), req.target.handle.clone()), id);
                let sink = Sink::Socket {
                    outbox: self.outbox.clone(),
                    handle: req.target.handle.clone(),
                };
                match hub.join(
                    &req.target.channel,
                    id,
                    sink,
                    req.broadcast_self,
                    req.presence_key.as_deref(),
                ) {
                    Ok(key) => Ok(json!({"presence_key": key})),
                    Err(e) => {
                        lock(&self.members).remove(&(req.target.channel, req.target.handle));
                        Err(e)
                    }
                }
            }
            wire::LEAVE => {
                let t: Target = parse(data)?;
                let id = lock(&self.members).remove(&(t.channel.clone(), t.handle.clone()));
                if let Some(id) = id {
                    hub.leave(&t.channel, id);
                }
                Ok(json!({}))
            }
            wire::SEND => {
                let req: wire::SendRequest = parse(data)?;
                let id = self.joined(&req.target, "send")?;
                hub.broadcast(&req.target.channel, id, &req.event, req.payload)?;
                Ok(json!({}))
            }
            wire::TRACK => {
                let req: wire::TrackRequest = parse(data)?;
                let id = self.joined(&req.target, "track")?;
                truststream_core_realtime::check_json_size(
                    &req.state,
                    hub.config.max_payload_bytes,
                    "the presence state",
                )?;
                hub.set_presence(&req.target.channel, id, Some(req.state), "track")?;
                Ok(json!({}))
            }
            wire::UNTRACK => {
                let t: Target = parse(data)?;
                let id = self.joined(&t, "untrack")?;
                hub.set_presence(&t.channel, id, None, "untrack")?;
                Ok(json!({}))
            }
            wire::PRESENCE => {
                let t: Target = parse(data)?;
                self.joined(&t, "presence")?;
                Ok(json!({"state": hub.presence_state(&t.channel)}))
            }
            wire::SUBSCRIBE_ROWS => {
                let req: wire::SubscribeRows = parse(data)?;
                req.spec.validate()?;
                let columns: Vec<String> = req
                    .spec
                    .filter
                    .as_ref()
                    .map(|f| {
                        filter_columns(f)
                            .into_iter()
                            .map(|c| c.column.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                let principal = self.principal();
                let table = req.spec.table.clone();
                let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                hub.publication
                    .authorize(hub.auth.as_ref(), principal.as_deref(), &table, &names)
                    .await?;
                let rule = hub.publication.rule(&table)?.clone();
                // Each subscription holds a handler and its table's feed:
                // bounded per connection like memberships.
                let held = lock(&self.rows).len();
                if held >= hub.config.max_channels_per_connection {
                    return Err(Error::new(
                        ErrorKind::RateLimited,
                        format!(
                            "a connection may hold at most {} row subscriptions \
                             (max_channels_per_connection)",
                            hub.config.max_channels_per_connection
                        ),
                    ));
                }
                let id = match req.id {
                    Some(id) if lock(&self.rows).contains_key(&id) => {
                        return Err(Error::invalid_input(format!(
                            "row subscription id {id} is in use on this connection"
                        )))
                    }
                    Some(id) => id,
                    None => loop {
                        let id = hub.next_id();
                        if !lock(&self.rows).contains_key(&id) {
                            break id;
                        }
                    },
                };
                let outbox = self.outbox.clone();
                let viewer = self.viewer.clone();
                let spec = req.spec.clone();
                let h = handler(move |change: RowChange| {
                    // Only what the table's rule lets this client read; a
                    // key filter matches the change as the client gets it,
                    // so it cannot probe a hidden primary key.
                    let Some(change) = rule.visible_to(&viewer, change) else {
                        return;
                    };
                    if rule.hidden.is_empty() || spec.matches_head(&change) {
                        outbox.push(Frame::new(
                            wire::ROW_CHANGE,
                            &wire::RowChangeOut { id, change },
                        ));
                    }
                });
                let sub = hub.subscribe_rows(req.spec, h).await?;
                lock(&self.rows).insert(
                    id,
                    RowSub {
                        table,
                        columns,
                        _sub: sub,
                    },
                );
                Ok(json!({"id": id}))
            }
            wire::UNSUBSCRIBE_ROWS => {
                let req: wire::UnsubscribeRows = parse(data)?;
                let sub = lock(&self.rows).remove(&req.id);
                drop(sub);
                Ok(json!({}))
            }
            wire::ACCESS_TOKEN => {
                let req: wire::AccessToken = parse(data)?;
                self.refresh(hub, &req.token).await?;
                Ok(json!({}))
            }
            other => Err(Error::invalid_input(format!("unknown event {other:?}"))),
        }
    }

    fn principal(&self) -> Option<Arc<Principal>> {
        lock(&self.principal).clone()
    }

    /// Whether the connection's token has expired.
    fn expired(&self) -> bool {
        self.principal()
            .is_some_and(|p| p.expires_at <= chrono::Utc::now())
    }

    /// `rt:access_token`: a new token of the same user replaces the
    /// connection's (and its expiry). Its roles and permissions are checked
    /// again: a membership or row subscription it no longer allows ends
    /// (`rt:closed`, `rt:rows_closed`).
    async fn refresh(&self, hub: &Arc<Hub>, token: &str) -> RtResult<()> {
        let Some(auth) = &hub.auth else {
            return Err(Error::invalid_input(
                "this server has no auth provider: there is no token to refresh",
            ));
        };
        let new = auth.validate_token(token).await.map_err(refused_token)?;
        let same_user = self
            .principal()
            .is_some_and(|old| old.user_id == new.user_id)
            && Viewer::of(Some(&new)) == self.viewer;
        if !same_user {
            return Err(Error::unauthenticated(
                "the new access token names another user: reconnect to change users",
            ));
        }
        let new = Arc::new(new);
        *lock(&self.principal) = Some(new.clone());
        let members: Vec<((String, String), u64)> = lock(&self.members)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for ((channel, handle), id) in members {
            if let Err(e) = hub
                .channels
                .authorize(Some(auth), Some(&new), &channel)
                .await
            {
                lock(&self.members).remove(&(channel.clone(), handle.clone()));
                hub.leave(&channel, id);
                self.outbox.push(Frame::new(
                    wire::CLOSED,
                    &wire::ClosedOut {
                        target: Target { channel, handle },
                        reason: for_client(e).message().to_string(),
                    },
                ));
            }
        }
        let rows: Vec<(u64, String, Vec<String>)> = lock(&self.rows)
            .iter()
            .map(|(id, r)| (*id, r.table.clone(), r.columns.clone()))
            .collect();
        for (id, table, columns) in rows {
            let names: Vec<&str> = columns.iter().map(String::as_str).collect();
            if let Err(e) = hub
                .publication
                .authorize(Some(auth), Some(&new), &table, &names)
                .await
            {
                let sub = lock(&self.rows).remove(&id);
                drop(sub);
                self.outbox.push(Frame::new(
                    wire::ROWS_CLOSED,
                    &wire::RowsClosedOut {
                        id,
                        reason: for_client(e).message().to_string(),
                    },
                ));
            }
        }
        Ok(())
    }
}

/// Disconnects the client when its token expires (unless `rt:access_token`
/// brought a later expiry first): `rt:error` `{code: "token_expired"}`,
/// then the disconnect. Ends when the connection closes.
async fn expire_at_token_expiry(conn: Arc<Conn>, s: SocketRef) {
    let mut closed = conn.closed.subscribe();
    loop {
        let Some(expires_at) = conn.principal().map(|p| p.expires_at) else {
            return;
        };
        let wait = (expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or(std::time::Duration::ZERO);
        tokio::select! {
            _ = closed.wait_for(|c| *c) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if conn.expired() {
            tracing::debug!(sid = %s.id, "realtime socketio: a client's token expired; disconnecting it");
            let _ = s.emit(
                wire::ERROR,
                &json!({
                    "code": wire::TOKEN_EXPIRED,
                    "message": "the access token expired: reconnect with a new one, or send \
                                rt:access_token before it expires",
                }),
            );
            let _ = s.disconnect();
            return;
        }
    }
}

/// Handles a connection's commands in order until it disconnects.
async fn run(conn: Arc<Conn>, mut rx: mpsc::Receiver<Command>) {
    while let Some(Command { event, data, ack }) = rx.recv().await {
        let Some(hub) = conn.hub.upgrade() else {
            return;
        };
        // A command after the token's expiry is refused; the expiry task
        // disconnects the client.
        let result = if conn.expired() && event != wire::ACCESS_TOKEN {
            Err(Error::unauthenticated(
                "token_expired: the access token expired; send rt:access_token or reconnect",
            ))
        } else {
            conn.handle(&hub, event, data).await
        };
        let reply = match result {
            Ok(v) => wire::ok_reply(v),
            Err(e) => wire::error_reply(&for_client(e)),
        };
        drop(hub);
        // A client that asked for no acknowledgement gets none.
        let _ = ack.send(&reply);
    }
}

/// What a client is told of a failed command: the kind always, the message
/// when the client caused it (bad input, limits, permissions, membership).
/// A failure of the server or its database (`internal`, `unavailable`,
/// `timeout`) is logged here and told in general terms: the database's
/// error text (tables, hosts, SQL) stays on the server.
fn for_client(e: Error) -> Error {
    match e.kind() {
        ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::Timeout => {
            tracing::warn!(error = %e.display_chain(), "realtime socketio: a client's command failed");
            Error::new(
                e.kind(),
                "the realtime server could not do this now; the server's log has the cause",
            )
        }
        _ => e,
    }
}

/// What a client is told when the auth provider did not accept the token
/// it sent with `rt:access_token`: `unauthenticated` when the token is at
/// fault; when the provider could not check it now (`unavailable`,
/// `timeout`, `internal`), that kind in general terms ([`for_client`]), so
/// the client retries instead of taking a good token for a bad one.
fn refused_token(e: Error) -> Error {
    match e.kind() {
        ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::Timeout => for_client(e),
        kind => {
            tracing::debug!(%kind, "realtime socketio: a refreshed token was refused");
            Error::unauthenticated("the new access token is invalid or expired")
        }
    }
}

fn parse<T: DeserializeOwned>(data: Value) -> RtResult<T> {
    serde_json::from_value(data)
        .map_err(|e| Error::invalid_input(format!("malformed request: {e}")))
}

/// A handle id is up to 64 printable bytes.
fn check_handle(handle: &str) -> RtResult<()> {
    if handle.len() > 64 || handle.chars().any(char::is_control) {
        return Err(Error::invalid_input(
            "a handle id is at most 64 bytes without control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use truststream_core_realtime::access::ChannelAccess;

    use crate::codec::{self, Packet};
    use crate::SocketIoConfig;

    /// The next socket.io event's arguments (the engine.io open answered
    /// with a connect, pings with pongs), within 5 s.
    async fn next_event<S>(ws: &mut S) -> Vec<Value>
    where
        S: StreamExt<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
            + SinkExt<WsMessage>
            + Unpin,
        <S as futures::Sink<WsMessage>>::Error: std::fmt::Debug,
    {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("no event within 5 s")
                .expect("the server closed the connection")
                .unwrap();
            let WsMessage::Text(text) = frame else {
                continue;
            };
            match codec::decode(&text) {
                Packet::Open(_) => ws
                    .send(WsMessage::text(codec::connect(None)))
                    .await
                    .unwrap(),
                Packet::Ping => ws.send(WsMessage::text(codec::PONG)).await.unwrap(),
                Packet::Event { args, .. } => return args,
                _ => {}
            }
        }
    }

    /// A frame queued for a connection before socketioxide has marked its
    /// socket connected (a join acknowledged in that window, on a loaded
    /// machine) is delivered once it has, and so are the later ones: a
    /// writer that tried to emit it earlier was refused and ended, and the
    /// connection got no delivery again (the conformance case
    /// `presence.dropped_handle_leaves` once waited in vain for its
    /// presence state). Here the middleware queues the frame itself, then
    /// gives an early writer time to meet it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_queued_before_the_socket_is_connected_are_delivered() {
        let mut config = SocketIoConfig::server("127.0.0.1:0");
        config.allow_anonymous = true;
        let publication = config.publication().unwrap();
        let channels = ChannelAccess::check_config(&config.channels).unwrap();
        let hub = Hub::new(config, None, None, publication, channels);
        let (layer, io) = SocketIo::builder().build_layer();
        let weak = Arc::downgrade(&hub);
        let slot: Arc<Mutex<Option<Arc<Conn>>>> = Arc::default();
        let check = {
            let slot = slot.clone();
            move |s: SocketRef| {
                let (weak, slot) = (weak.clone(), slot.clone());
                async move {
                    connected(weak, s.clone());
                    let conn = s.extensions.get::<Arc<Conn>>().unwrap();
                    assert!(conn
                        .outbox
                        .push(Frame::of_value(wire::MESSAGE, json!({"n": 1}))));
                    *lock(&slot) = Some(conn);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<(), Refused>(())
                }
            }
        };
        io.ns("/", on_connect.with(check));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().layer(layer);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(
            next_event(&mut ws).await,
            vec![json!(wire::MESSAGE), json!({"n": 1})]
        );
        let conn = lock(&slot).clone().unwrap();
        assert!(conn
            .outbox
            .push(Frame::of_value(wire::MESSAGE, json!({"n": 2}))));
        assert_eq!(
            next_event(&mut ws).await,
            vec![json!(wire::MESSAGE), json!({"n": 2})]
        );
        server.abort();
    }

    #[test]
    fn clients_get_their_own_mistakes_but_not_the_servers_internals() {
        for e in [
            Error::internal("pool for postgres://app@db.internal:5432 poisoned"),
            Error::unavailable("relation \"secret_audit\" is locked at db.internal"),
            Error::new(ErrorKind::Timeout, "db.internal did not answer"),
        ] {
            let kind = e.kind();
            let told = for_client(e);
            assert_eq!(told.kind(), kind);
            assert!(!told.message().contains("db.internal"), "{told}");
        }
        let mine = for_client(Error::invalid_input("a handle id is at most 64 bytes"));
        assert_eq!(mine.kind(), ErrorKind::InvalidInput);
        assert!(mine.message().contains("64 bytes"), "{mine}");
    }

    #[test]
    fn a_refreshed_token_the_provider_could_not_check_is_not_called_invalid() {
        let down = refused_token(Error::unavailable("auth_sessions at db.internal: timeout"));
        assert_eq!(down.kind(), ErrorKind::Unavailable);
        assert!(!down.message().contains("db.internal"), "{down}");
        let bad = refused_token(Error::unauthenticated("InvalidSignature"));
        assert_eq!(bad.kind(), ErrorKind::Unauthenticated);
        assert!(!bad.message().contains("InvalidSignature"), "{bad}");
    }
}
