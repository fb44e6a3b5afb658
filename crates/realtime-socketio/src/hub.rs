//! The server mode's state: channels and their members (Socket.IO
//! connections and this process's own handles), presence, fan-out, and
//! the row subscriptions fed by the database change feed.
//!
//! Fan-out never waits: a member whose queue is full is removed (a
//! connection is disconnected with a reason, see [`crate::outbox`]; an
//! in-process handle is told why on its next call).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;
use truststream_core::Error;
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_realtime::access::{ChannelAccess, Publication};
use truststream_core_realtime::feed::{
    follow_change_feed, row_changes_available, DatabaseFeed, FeedHealth, FeedTarget,
    RowSubscriptions,
};
use truststream_core_realtime::{
    presence_key, presence_state_of, ChangeSpec, Handler, Message, PresenceDiff, PresenceEvent,
    PresenceMeta, PresenceState, RowChange, RtResult, Subscription,
};

use crate::outbox::Outbox;
use crate::wire::{self, Target};
use crate::SocketIoConfig;

/// Live counts of the server mode, readable after the provider is dropped.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connected Socket.IO clients.
    pub connections: AtomicUsize,
    /// Channel memberships (connections' and in-process handles').
    pub members: AtomicUsize,
    /// Bytes queued for connections, not yet handed to socketioxide.
    pub queued_bytes: AtomicUsize,
    /// Connections disconnected because their queue was full.
    pub slow_disconnects: AtomicU64,
    /// Connections refused at the handshake (bad or missing token).
    pub refused: AtomicU64,
}

/// What an in-process handle receives.
#[derive(Debug)]
pub(crate) enum Delivery {
    Message(Message),
    Presence(PresenceEvent),
}

/// Where a member's deliveries go.
#[derive(Clone)]
pub(crate) enum Sink {
    /// A Socket.IO connection's queue; `handle` is the client's handle id.
    Socket { outbox: Arc<Outbox>, handle: String },
    /// An in-process handle's bounded queue.
    Local {
        tx: mpsc::Sender<Delivery>,
        removed: Arc<Mutex<Option<String>>>,
    },
}

struct Member {
    sink: Sink,
    broadcast_self: bool,
    key: String,
    meta: Option<PresenceMeta>,
}

#[derive(Default)]
struct Room {
    members: BTreeMap<u64, Member>,
}

/// The server mode's hub.
pub(crate) struct Hub {
    pub(crate) config: SocketIoConfig,
    rooms: Mutex<HashMap<String, Room>>,
    next_id: AtomicU64,
    pub(crate) db: Option<Arc<dyn Database>>,
    pub(crate) auth: Option<Arc<dyn Auth>>,
    /// Which tables clients may subscribe to, and what each may read.
    pub(crate) publication: Publication,
    /// Which channels are private, and who may join them.
    pub(crate) channels: ChannelAccess,
    pub(crate) row_subs: Arc<RowSubscriptions>,
    pub(crate) feed_health: FeedHealth,
    /// Each watched table's feed reader, alive while a subscription holds it.
    feeds: tokio::sync::Mutex<HashMap<String, std::sync::Weak<TableFeed>>>,
    pub(crate) counters: Arc<Counters>,
    shut_down: AtomicBool,
}

/// One table's feed reader; dropping the last hold stops it (and drops
/// the database subscription).
pub(crate) struct TableFeed(tokio::task::JoinHandle<()>);

impl Drop for TableFeed {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A member removed because its queue was full, to be told why.
struct Overflow {
    channel: String,
    id: u64,
}

impl Hub {
    pub(crate) fn new(
        config: SocketIoConfig,
        db: Option<Arc<dyn Database>>,
        auth: Option<Arc<dyn Auth>>,
        publication: Publication,
        channels: ChannelAccess,
    ) -> Arc<Self> {
        Arc::new(Hub {
            config,
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            db,
            auth,
            publication,
            channels,
            row_subs: RowSubscriptions::new(),
            feed_health: FeedHealth::default(),
            feeds: tokio::sync::Mutex::new(HashMap::new()),
            counters: Arc::new(Counters::default()),
            shut_down: AtomicBool::new(false),
        })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn check_open(&self) -> RtResult<()> {
        if self.is_shut_down() {
            return Err(Error::unavailable(
                "the Socket.IO realtime server was shut down",
            ));
        }
        Ok(())
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    pub(crate) fn row_changes_available(&self) -> bool {
        row_changes_available(self.db.as_ref())
    }

    /// Adds member `id` to `channel` and sends it the presence state.
    /// `requested_key` empty or `None` gets a UUID.
    pub(crate) fn join(
        &self,
        channel: &str,
        id: u64,
        sink: Sink,
        broadcast_self: bool,
        requested_key: Option<&str>,
    ) -> RtResult<String> {
        self.check_open()?;
        let key = presence_key(requested_key, || uuid::Uuid::new_v4().to_string())?;
        let mut overflow = Vec::new();
        {
            let mut rooms = lock(&self.rooms);
            let room = rooms.entry(channel.to_string()).or_default();
            let member = Member {
                sink,
                broadcast_self,
                key: key.clone(),
                meta: None,
            };
            if room.members.insert(id, member).is_none() {
                self.counters.members.fetch_add(1, Ordering::Relaxed);
            }
            let state = state_of(room);
            if let Some(m) = room.members.get(&id) {
                if !deliver_state(channel, m, state) {
                    overflow.push(Overflow {
                        channel: channel.to_string(),
                        id,
                    });
                }
            }
        }
        self.remove_overflowed(overflow);
        Ok(key)
    }

    /// Removes member `id` from `channel` (a presence leave when it
    /// tracked something). `false` when it was not a member.
    pub(crate) fn leave(&self, channel: &str, id: u64) -> bool {
        let mut overflow = Vec::new();
        let removed = {
            let mut rooms = lock(&self.rooms);
            let Some(room) = rooms.get_mut(channel) else {
                return false;
            };
            let Some(member) = room.members.remove(&id) else {
                return false;
            };
            self.counters.members.fetch_sub(1, Ordering::Relaxed);
            if let Some(meta) = member.meta.clone() {
                let diff = PresenceDiff::leave(member.key.clone(), meta);
                overflow = fan_out_diff(channel, room, &diff);
            }
            if room.members.is_empty() {
                rooms.remove(channel);
            }
            member
        };
        drop(removed);
        self.remove_overflowed(overflow);
        true
    }

    /// Broadcasts `event` from member `from` to the channel's members
    /// (`from` itself only when it asked for its own broadcasts).
    pub(crate) fn broadcast(
        &self,
        channel: &str,
        from: u64,
        event: &str,
        payload: Value,
    ) -> RtResult<()> {
        wire_check(self, event, &payload)?;
        let mut overflow = Vec::new();
        {
            let rooms = lock(&self.rooms);
            let room = rooms.get(channel).filter(|r| r.members.contains_key(&from));
            let Some(room) = room else {
                return Err(truststream_core_realtime::not_joined(channel, "send", None));
            };
            let message = Message {
                channel: channel.to_string(),
                event: event.to_string(),
                payload,
            };
            // One frame for every connection's default handle.
            let shared = Frame::new(
                wire::MESSAGE,
                &wire::MessageOut {
                    target: Target {
                        channel: channel.to_string(),
                        handle: String::new(),
                    },
                    event: message.event.clone(),
                    payload: message.payload.clone(),
                },
            );
            for (id, m) in &room.members {
                if *id == from && !m.broadcast_self {
                    continue;
                }
                let ok = match &m.sink {
                    Sink::Socket { outbox, handle } if handle.is_empty() => {
                        outbox.push(shared.clone())
                    }
                    Sink::Socket { outbox, handle } => outbox.push(Frame::new(
                        wire::MESSAGE,
                        &wire::MessageOut {
                            target: Target {
                                channel: channel.to_string(),
                                handle: handle.clone(),
                            },
                            event: message.event.clone(),
                            payload: message.payload.clone(),
                        },
                    )),
                    Sink::Local { tx, .. } => {
                        tx.try_send(Delivery::Message(message.clone())).is_ok()
                    }
                };
                if !ok {
                    overflow.push(Overflow {
                        channel: channel.to_string(),
                        id: *id,
                    });
                }
            }
        }
        self.remove_overflowed(overflow);
        Ok(())
    }

    /// Publishes (`Some`) or removes (`None`) member `id`'s presence state.
    pub(crate) fn set_presence(
        &self,
        channel: &str,
        id: u64,
        state: Option<Value>,
        op: &str,
    ) -> RtResult<()> {
        let overflow;
        {
            let mut rooms = lock(&self.rooms);
            let Some(room) = rooms.get_mut(channel) else {
                return Err(truststream_core_realtime::not_joined(channel, op, None));
            };
            let Some(member) = room.members.get_mut(&id) else {
                return Err(truststream_core_realtime::not_joined(channel, op, None));
            };
            let mut diff = PresenceDiff::default();
            if let Some(old) = member.meta.take() {
                diff.leaves.insert(member.key.clone(), vec![old]);
            }
            if let Some(state) = state {
                let meta = PresenceMeta {
                    presence_ref: self.next_id().to_string(),
                    state,
                };
                member.meta = Some(meta.clone());
                diff.joins.insert(member.key.clone(), vec![meta]);
            }
            if diff.joins.is_empty() && diff.leaves.is_empty() {
                return Ok(());
            }
            overflow = fan_out_diff(channel, room, &diff);
        }
        self.remove_overflowed(overflow);
        Ok(())
    }

    /// The channel's presence state.
    pub(crate) fn presence_state(&self, channel: &str) -> PresenceState {
        lock(&self.rooms)
            .get(channel)
            .map(state_of)
            .unwrap_or_default()
    }

    /// Removes members whose queue was full: a connection is disconnected
    /// by its outbox (which saw the overflow); an in-process handle is
    /// marked with the reason. Their presence leaves are sent.
    fn remove_overflowed(&self, overflow: Vec<Overflow>) {
        for o in overflow {
            let sink = {
                let rooms = lock(&self.rooms);
                rooms
                    .get(&o.channel)
                    .and_then(|r| r.members.get(&o.id))
                    .map(|m| m.sink.clone())
            };
            if let Some(Sink::Local { removed, .. }) = &sink {
                *lock(removed) = Some(format!(
                    "removed from channel {:?} because its queue of {} deliveries was full (a \
                     handler that does not keep up)",
                    o.channel, self.config.member_queue_capacity
                ));
            }
            self.leave(&o.channel, o.id);
        }
    }

    /// Subscribes `handler` to row changes. Each table has one feed
    /// reader (`Database::subscribe_changes(Some(table))`), started by its
    /// first subscription and stopped with its last, so only watched tables
    /// are fed (on PostgreSQL, only they carry the change trigger: never
    /// the auth tables unless the application itself subscribes to them).
    pub(crate) async fn subscribe_rows(
        self: &Arc<Self>,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
    ) -> RtResult<Subscription> {
        self.check_open()?;
        let Some(db) = self.db.clone().filter(|_| self.row_changes_available()) else {
            return Err(Error::unsupported(
                "row change subscriptions need a database with a change feed; start the Socket.IO \
                 server with one (or configure a database for the runtime)",
            ));
        };
        spec.validate()?;
        let feed = {
            let mut feeds = self.feeds.lock().await;
            match feeds.get(&spec.table).and_then(std::sync::Weak::upgrade) {
                Some(feed) => feed,
                None => {
                    let table = spec.table.clone();
                    let stream = db.subscribe_changes(Some(&table)).await.map_err(|e| {
                        e.with_context("while", "subscribing to the database change feed")
                    })?;
                    let source = DatabaseFeed {
                        db,
                        table: Some(table.clone()),
                    };
                    let weak = Arc::downgrade(self);
                    let task = tokio::spawn(async move {
                        follow_change_feed(weak, &source, stream, tokio::time::sleep).await;
                    });
                    let feed = Arc::new(TableFeed(task));
                    feeds.retain(|_, f| f.strong_count() > 0);
                    feeds.insert(table, Arc::downgrade(&feed));
                    feed
                }
            }
        };
        // The subscription keeps its table's feed while it lives.
        self.row_subs.add(spec, handler, feed)
    }

    /// Ends every membership and the feed readers.
    pub(crate) fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let rooms = std::mem::take(&mut *lock(&self.rooms));
        let n: usize = rooms.values().map(|r| r.members.len()).sum();
        self.counters.members.fetch_sub(n, Ordering::Relaxed);
        drop(rooms);
        // Dropping the subscriptions drops their tables' feed readers.
        self.row_subs.clear();
    }
}

impl FeedTarget for Hub {
    fn deliver(&self, change: RowChange) {
        self.row_subs.dispatch(&change);
    }
    fn feed_health(&self) -> &FeedHealth {
        &self.feed_health
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Checks a broadcast against the limits.
fn wire_check(hub: &Hub, event: &str, payload: &Value) -> RtResult<()> {
    truststream_core_realtime::validate_broadcast(event, payload, hub.config.max_payload_bytes)
}

fn state_of(room: &Room) -> PresenceState {
    presence_state_of(
        room.members
            .values()
            .filter_map(|m| m.meta.as_ref().map(|meta| (m.key.as_str(), meta))),
    )
}

fn target(channel: &str, handle: &str) -> Target {
    Target {
        channel: channel.to_string(),
        handle: handle.to_string(),
    }
}

/// Sends the full state to one member; `false` when its queue is full.
fn deliver_state(channel: &str, m: &Member, state: PresenceState) -> bool {
    match &m.sink {
        Sink::Socket { outbox, handle } => outbox.push(Frame::new(
            wire::PRESENCE_STATE,
            &wire::PresenceStateOut {
                target: target(channel, handle),
                state,
            },
        )),
        Sink::Local { tx, .. } => tx
            .try_send(Delivery::Presence(PresenceEvent::State(state)))
            .is_ok(),
    }
}

/// Sends `diff` to every member; returns the members whose queue was full.
fn fan_out_diff(channel: &str, room: &Room, diff: &PresenceDiff) -> Vec<Overflow> {
    let mut overflow = Vec::new();
    for (id, m) in &room.members {
        let ok = match &m.sink {
            Sink::Socket { outbox, handle } => outbox.push(Frame::new(
                wire::PRESENCE_DIFF,
                &wire::PresenceDiffOut {
                    target: target(channel, handle),
                    joins: diff.joins.clone(),
                    leaves: diff.leaves.clone(),
                },
            )),
            Sink::Local { tx, .. } => tx
                .try_send(Delivery::Presence(PresenceEvent::Diff(diff.clone())))
                .is_ok(),
        };
        if !ok {
            overflow.push(Overflow {
                channel: channel.to_string(),
                id: *id,
            });
        }
    }
    overflow
}

/// One event for a connection: its name and data, serialized size known.
#[derive(Clone)]
pub(crate) struct Frame {
    pub(crate) event: &'static str,
    pub(crate) data: Arc<Value>,
    pub(crate) bytes: usize,
}

impl Frame {
    pub(crate) fn new(event: &'static str, data: &impl serde::Serialize) -> Self {
        let data = serde_json::to_value(data).unwrap_or(Value::Null);
        Frame::of_value(event, data)
    }

    pub(crate) fn of_value(event: &'static str, data: Value) -> Self {
        let bytes = json_len(&data) + event.len() + 8;
        Frame {
            event,
            data: Arc::new(data),
            bytes,
        }
    }
}

/// The serialized length of `v`, without keeping the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Locks a mutex, recovering from poisoning: every critical section leaves
/// the data consistent, and no handler runs under a lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
