//! The hub's channel engine: topics, members, presence, fan-out and the
//! database change feed. It knows nothing about sockets: a member is anything
//! with a [`Sink`] (a WebSocket connection, an in-process handle).
//!
//! Architecture invariant: a delivery never waits. Fan-out calls
//! [`Sink::push`] under the topic's lock, and every sink only queues into a
//! bounded queue (`try_send`). A member whose queue is full is removed at
//! once (a WebSocket member's whole connection is closed with a reason), so
//! a slow reader costs at most its queue, never unbounded memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;
use tokio_tungstenite::tungstenite::Bytes;
use truststream_core::Error;
use truststream_core_auth::Auth;
use truststream_core_db::{ChangeKind, ChangeStream, Database, Filter, RequestScope};
use truststream_core_realtime::feed::{
    self, filter_matches, filter_row, follow_change_feed, DatabaseFeed, FeedHealth, FeedTarget,
    RowSubscriptions,
};
use truststream_core_realtime::{
    check_json_size, presence_state_of, PresenceDiff, PresenceMeta, PresenceState, RowChange,
    RtResult,
};

use crate::cluster::{wire::SnapshotEntry, Cluster};
use crate::filter::WireFilter;
use crate::protocol::{self, Vsn};
use crate::rls;
use crate::WsHubConfig;
use truststream_core_realtime::access::{Publication, Viewer, Visibility};

/// A member's id, unique in the hub.
pub(crate) type MemberId = u64;

/// What a broadcast carries: a JSON value, or raw bytes (a kind 3 frame
/// with encoding 0, as realtime-js sends an `ArrayBuffer` payload).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BroadcastPayload {
    Json(Value),
    Binary(Bytes),
}

/// A user broadcast, encoded at most once for vsn 2.0.0 receivers however
/// many members receive it.
///
/// A binary payload only reaches receivers that can represent bytes: vsn
/// 2.0.0 WebSocket clients (a kind 4 frame with encoding 0). vsn 1.0.0
/// clients (JSON text frames only) and in-process handles (whose
/// `Message.payload` is JSON) do not receive it; the sender's `ack` does
/// not depend on who received it.
#[derive(Debug)]
pub(crate) struct Broadcast {
    pub topic: String,
    pub event: String,
    pub payload: BroadcastPayload,
    /// The sender's metadata (kind 3 metadata, or `meta` of a JSON push),
    /// forwarded as kind 4 metadata / the `meta` field.
    pub meta: Option<Value>,
    v2: OnceLock<Option<WsMessage>>,
}

impl Broadcast {
    /// A JSON broadcast without metadata.
    pub(crate) fn new(topic: &str, event: &str, payload: Value) -> Self {
        Self::with(topic, event, BroadcastPayload::Json(payload), None)
    }

    pub(crate) fn with(
        topic: &str,
        event: &str,
        payload: BroadcastPayload,
        meta: Option<Value>,
    ) -> Self {
        Broadcast {
            topic: topic.to_string(),
            event: event.to_string(),
            payload,
            meta,
            v2: OnceLock::new(),
        }
    }

    /// The JSON payload (`None` for a binary one).
    pub(crate) fn json(&self) -> Option<&Value> {
        match &self.payload {
            BroadcastPayload::Json(v) => Some(v),
            BroadcastPayload::Binary(_) => None,
        }
    }

    /// The `{type, event, payload[, meta]}` object of a JSON `broadcast`
    /// message (`None` for a binary payload).
    pub(crate) fn body(&self) -> Option<Value> {
        let mut body = json!({"type": "broadcast", "event": self.event, "payload": self.json()?});
        if let (Some(meta), Some(o)) = (&self.meta, body.as_object_mut()) {
            o.insert("meta".into(), meta.clone());
        }
        Some(body)
    }

    /// The frame for vsn 2.0.0 clients (kind 4 binary, shared by every
    /// receiver; a JSON text frame when the topic, event or metadata is too
    /// long for kind 4), or a text frame for vsn 1.0.0 (it names the
    /// member's join_ref). `None`: this receiver does not get the broadcast
    /// (a binary payload for vsn 1.0.0, or a binary payload whose topic or
    /// event is too long for kind 4).
    pub(crate) fn encoded(&self, vsn: Vsn, join_ref: &str) -> Option<WsMessage> {
        match vsn {
            Vsn::V2 => self.v2.get_or_init(|| self.encode_v2()).clone(),
            Vsn::V1 => Some(protocol::encode(
                Vsn::V1,
                Some(join_ref),
                None,
                &self.topic,
                "broadcast",
                &self.body()?,
            )),
        }
    }

    fn encode_v2(&self) -> Option<WsMessage> {
        let metadata = self.meta.as_ref().map(Value::to_string).unwrap_or_default();
        match &self.payload {
            BroadcastPayload::Json(v) => serde_json::to_vec(v)
                .ok()
                .and_then(|json| {
                    protocol::encode_user_broadcast(
                        &self.topic,
                        &self.event,
                        &metadata,
                        false,
                        &json,
                    )
                })
                .or_else(|| {
                    Some(protocol::encode(
                        Vsn::V2,
                        None,
                        None,
                        &self.topic,
                        "broadcast",
                        &self.body()?,
                    ))
                }),
            // Metadata over 255 bytes cannot travel in kind 4: the bytes go
            // without it.
            BroadcastPayload::Binary(b) => {
                protocol::encode_user_broadcast(&self.topic, &self.event, &metadata, true, b)
                    .or_else(|| {
                        protocol::encode_user_broadcast(&self.topic, &self.event, "", true, b)
                    })
            }
        }
    }
}

/// A presence diff, encoded at most once for vsn 2.0.0 receivers (with a
/// null join_ref, as Phoenix accepts) however many members get it.
pub(crate) struct DiffPush {
    pub diff: Arc<PresenceDiff>,
    v2: OnceLock<WsMessage>,
}

impl DiffPush {
    pub(crate) fn new(diff: PresenceDiff) -> Self {
        DiffPush {
            diff: Arc::new(diff),
            v2: OnceLock::new(),
        }
    }

    fn body(&self) -> Value {
        json!({
            "joins": presence_to_wire(&self.diff.joins),
            "leaves": presence_to_wire(&self.diff.leaves),
        })
    }

    /// The `presence_diff` frame for a member of `topic`.
    pub(crate) fn encoded(&self, vsn: Vsn, topic: &str, join_ref: &str) -> WsMessage {
        match vsn {
            Vsn::V2 => self
                .v2
                .get_or_init(|| {
                    protocol::encode(Vsn::V2, None, None, topic, "presence_diff", &self.body())
                })
                .clone(),
            Vsn::V1 => protocol::encode(
                Vsn::V1,
                Some(join_ref),
                None,
                topic,
                "presence_diff",
                &self.body(),
            ),
        }
    }
}

/// What the hub delivers to a member.
pub(crate) enum Push {
    Broadcast(Arc<Broadcast>),
    PresenceDiff(Arc<DiffPush>),
    /// A row change matching the member's bindings `ids`.
    Change {
        ids: Vec<u32>,
        change: Arc<RowChange>,
    },
}

/// Where a member's deliveries go.
pub(crate) trait Sink: Send + Sync {
    /// Queues `push` without waiting; `Err(reason)` when the member cannot
    /// take it (its queue is full or gone): the hub then removes it.
    fn push(&self, topic: &str, join_ref: &str, push: &Push) -> Result<(), String>;
    /// The hub removed the member for `reason` (a failed push, shutdown).
    fn removed(&self, topic: &str, join_ref: &str, reason: &str);
}

/// One `postgres_changes` binding of a member.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub id: u32,
    pub event: Option<ChangeKind>,
    /// A published table (a binding always names one).
    pub table: String,
    pub filter: Option<WireFilter>,
    /// TrustStream extension: only the row with this primary key.
    pub key: Option<Value>,
    /// TrustStream extension: a core-db filter tree.
    pub filter_tree: Option<Filter>,
}

impl Binding {
    fn matches(&self, change: &RowChange) -> bool {
        self.event.is_none_or(|e| e == change.kind)
            && self.table == change.table
            && self.key.as_ref().is_none_or(|k| *k == change.key)
            && self
                .filter
                .as_ref()
                .is_none_or(|f| filter_row(change).is_some_and(|r| f.matches(r)))
            && self
                .filter_tree
                .as_ref()
                .is_none_or(|f| filter_matches(f, change))
    }
}

/// A joined member of a topic.
pub(crate) struct Member {
    pub sink: Arc<dyn Sink>,
    pub join_ref: String,
    /// The connection it belongs to (0: in-process).
    pub owner: u64,
    pub broadcast_self: bool,
    pub key: String,
    pub meta: Option<PresenceMeta>,
    pub bindings: Vec<Binding>,
    /// Who the member is, for the per-row check of its bindings' changes.
    pub viewer: Viewer,
    /// Who the member is to the database, for tables checked with
    /// row-level security ([`truststream_core_realtime::access::scope_of`]).
    pub scope: Option<Arc<RequestScope>>,
    /// The database feeds of its bindings' tables, held while it is a
    /// member.
    pub _feeds: Vec<FeedLease>,
}

type Members = BTreeMap<MemberId, Member>;

/// A topic and its members, by join order.
pub(crate) struct Topic {
    name: String,
    members: Mutex<Members>,
    /// Members removed by failed pushes since the hub last accounted for
    /// them (see [`Hub::settle`]), and how many of those had row bindings.
    evicted: AtomicUsize,
    evicted_bound: AtomicUsize,
    /// The hub's cluster link (cluster mode), told about evicted members'
    /// presence.
    cluster: Option<Arc<Cluster>>,
}

impl Topic {
    /// Pushes `item` to every member `to` accepts; removes the members that
    /// cannot take it.
    fn fan_out(&self, members: &mut Members, item: &Push, to: impl Fn(MemberId, &Member) -> bool) {
        let mut failed = Vec::new();
        for (&id, m) in members.iter() {
            if to(id, m) {
                if let Err(reason) = m.sink.push(&self.name, &m.join_ref, item) {
                    failed.push((id, reason));
                }
            }
        }
        self.remove_members(members, failed);
    }

    /// Removes members and tells the others about the presence they had.
    /// Telling them may fail more pushes; the work list handles that
    /// without recursion.
    fn remove_members(&self, members: &mut Members, mut pending: Vec<(MemberId, String)>) {
        while let Some((id, reason)) = pending.pop() {
            let Some(m) = members.remove(&id) else {
                continue;
            };
            self.evicted.fetch_add(1, Ordering::Relaxed);
            if !m.bindings.is_empty() {
                self.evicted_bound.fetch_add(1, Ordering::Relaxed);
            }
            m.sink.removed(&self.name, &m.join_ref, &reason);
            if let (Some(c), Some(_)) = (&self.cluster, &m.meta) {
                c.publish_presence(&self.name, id, &m.key, None);
            }
            if let Some(meta) = m.meta {
                let diff = leaves_diff(m.key, meta);
                for (&other, om) in members.iter() {
                    if let Err(r) = om.sink.push(&self.name, &om.join_ref, &diff) {
                        pending.push((other, r));
                    }
                }
            }
        }
    }
}

fn leaves_diff(key: String, meta: PresenceMeta) -> Push {
    Push::PresenceDiff(Arc::new(DiffPush::new(PresenceDiff::leave(key, meta))))
}

fn presence_of(members: &Members) -> PresenceState {
    presence_state_of(
        members
            .values()
            .filter_map(|m| Some((m.key.as_str(), m.meta.as_ref()?))),
    )
}

/// A new presence key: a UUID.
pub(crate) fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Live counters, readable without locks (tests and benches assert on them).
#[derive(Debug, Default)]
pub struct Counters {
    /// WebSocket connections past the handshake, not yet torn down.
    pub connections: AtomicUsize,
    /// Background tasks the hub started that are still running (connection
    /// readers and writers, the accept loop, the change feed reader,
    /// in-process delivery tasks).
    pub tasks: AtomicUsize,
    /// Joined members over all topics.
    pub members: AtomicUsize,
    /// Tables whose database change feed the hub subscribes to (one per
    /// table some binding or row subscription names; dropped with the
    /// last of them).
    pub table_feeds: AtomicUsize,
    /// Connections closed because their outgoing queue went over its byte
    /// budget (`outgoing_queue_bytes`).
    pub slow_disconnects: AtomicU64,
    /// Bytes of frames waiting in the outgoing queues of all connections,
    /// with those their writers took and have not yet handed to the
    /// WebSocket layer (each connection's share is bounded by
    /// `outgoing_queue_bytes`).
    pub queued_bytes: AtomicUsize,
}

/// Counts a background task while it lives.
pub(crate) struct TaskGuard(Arc<Counters>);

impl TaskGuard {
    pub(crate) fn new(counters: &Arc<Counters>) -> Self {
        counters.tasks.fetch_add(1, Ordering::SeqCst);
        TaskGuard(counters.clone())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.tasks.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The hub's subscription to one table's change feed.
struct TableFeed {
    /// Leases held (bindings and row subscriptions of the table).
    leases: usize,
    /// The task reading the table's change stream.
    reader: tokio::task::JoinHandle<()>,
}

/// A hold on a table's change feed: the hub subscribes to the table while
/// one lease lives, and drops the subscription with the last.
pub(crate) struct FeedLease {
    hub: Weak<Hub>,
    table: String,
}

impl Drop for FeedLease {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.release_table(&self.table);
        }
    }
}

/// The engine shared by the server, its connections and in-process handles.
pub(crate) struct Hub {
    pub config: WsHubConfig,
    pub db: Option<Arc<dyn Database>>,
    pub auth: Option<Arc<dyn Auth>>,
    /// The tables clients may bind and their rules.
    pub publication: Publication,
    /// Table -> the hub's subscription to its change feed.
    feeds: Mutex<HashMap<String, TableFeed>>,
    /// Serializes subscribing to tables' feeds (so one table is subscribed
    /// once).
    feed_gate: tokio::sync::Mutex<()>,
    pub counters: Arc<Counters>,
    next_id: AtomicU64,
    next_binding: AtomicU32,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Topics with at least one `postgres_changes` binding, and how many
    /// members there have one.
    pg_topics: Mutex<HashMap<String, usize>>,
    /// Row subscriptions of in-process callers (`Realtime::subscribe_changes`
    /// on a hub-mode provider); each keeps its table's [`FeedLease`].
    pub row_subs: Arc<RowSubscriptions>,
    pub feed_health: FeedHealth,
    /// `true` once the hub shuts down; background tasks watch it.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// How many accept loops hold a listen socket (`Realtime::close`
    /// waits for none).
    pub listening: tokio::sync::watch::Sender<usize>,
    /// Changes of tables checked with row-level security, on their way to
    /// the checking task (`None`: no published table asks for it).
    rls: Option<rls::Queue>,
    /// Cluster mode: the link to the other nodes (`None`: a single hub, and
    /// no path of it does cluster work).
    pub cluster: Option<Arc<Cluster>>,
}

/// A failed hub operation, answered to WebSocket clients as an error reply.
pub(crate) type HubResult<T> = RtResult<T>;

impl Hub {
    pub(crate) fn new(
        config: WsHubConfig,
        db: Option<Arc<dyn Database>>,
        auth: Option<Arc<dyn Auth>>,
        publication: Publication,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Hub> {
        let checked = !publication.row_security_entries().is_empty();
        Arc::new_cyclic(|me| Hub {
            rls: checked.then(|| rls::start(me.clone())),
            config,
            db,
            auth,
            publication,
            feeds: Mutex::new(HashMap::new()),
            feed_gate: tokio::sync::Mutex::new(()),
            counters: Arc::new(Counters::default()),
            next_id: AtomicU64::new(1),
            next_binding: AtomicU32::new(1),
            topics: Mutex::new(HashMap::new()),
            pg_topics: Mutex::new(HashMap::new()),
            row_subs: RowSubscriptions::new(),
            feed_health: FeedHealth::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
            listening: tokio::sync::watch::Sender::new(0),
            cluster,
        })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_binding_id(&self) -> u32 {
        self.next_binding.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub(crate) fn check_open(&self) -> RtResult<()> {
        if self.is_shut_down() {
            return Err(Error::unavailable(
                "the realtime hub was shut down (its WsRealtime was closed or dropped); build a \
                 new one",
            )
            .permanent());
        }
        Ok(())
    }

    pub(crate) fn row_changes_available(&self) -> bool {
        feed::row_changes_available(self.db.as_ref())
    }

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        lock(&self.topics).get(name).cloned()
    }

    /// Joins `member` to `topic`. `first` runs under the topic's lock with
    /// the new id and the presence state the member joins into: whatever it
    /// queues (the join reply, the state) reaches the member before any
    /// delivery of the topic.
    pub(crate) fn join(
        &self,
        topic: &str,
        member: Member,
        first: impl FnOnce(MemberId, &PresenceState) -> Result<(), String>,
    ) -> HubResult<MemberId> {
        self.check_open()?;
        let mut topics = lock(&self.topics);
        let t = topics
            .entry(topic.to_string())
            .or_insert_with(|| {
                Arc::new(Topic {
                    name: topic.to_string(),
                    members: Mutex::new(BTreeMap::new()),
                    evicted: AtomicUsize::new(0),
                    evicted_bound: AtomicUsize::new(0),
                    cluster: self.cluster.clone(),
                })
            })
            .clone();
        let mut members = lock(&t.members);
        let id = self.next_id();
        let state = self.presence_state(topic, &members);
        if let Err(reason) = first(id, &state) {
            drop(members);
            if lock(&t.members).is_empty() {
                topics.remove(topic);
            }
            return Err(Error::unavailable(reason));
        }
        let has_bindings = !member.bindings.is_empty();
        members.insert(id, member);
        self.counters.members.fetch_add(1, Ordering::Relaxed);
        if has_bindings {
            *lock(&self.pg_topics).entry(topic.to_string()).or_default() += 1;
        }
        Ok(id)
    }

    /// Removes a member (its presence leaves). No-op when it is gone.
    pub(crate) fn leave(&self, topic: &str, id: MemberId) -> Option<Member> {
        let t = self.topic(topic)?;
        let removed = {
            let mut members = lock(&t.members);
            if !members.contains_key(&id) {
                return None;
            }
            let m = members.remove(&id)?;
            self.forget(&t.name, 1, usize::from(!m.bindings.is_empty()));
            if let (Some(c), Some(_)) = (&self.cluster, &m.meta) {
                c.publish_presence(&t.name, id, &m.key, None);
            }
            if let Some(meta) = &m.meta {
                let diff = leaves_diff(m.key.clone(), meta.clone());
                t.fan_out(&mut members, &diff, |_, _| true);
            }
            self.settle(&t);
            m
        };
        self.drop_topic_if_empty(topic);
        Some(removed)
    }

    fn drop_topic_if_empty(&self, topic: &str) {
        let mut topics = lock(&self.topics);
        if let Some(t) = topics.get(topic) {
            if lock(&t.members).is_empty() {
                topics.remove(topic);
            }
        }
    }

    /// Accounts for members that fan-outs on `topic` removed.
    fn settle(&self, topic: &Topic) {
        let gone = topic.evicted.swap(0, Ordering::Relaxed);
        let bound = topic.evicted_bound.swap(0, Ordering::Relaxed);
        if gone > 0 {
            self.forget(&topic.name, gone, bound);
        }
    }

    /// `gone` members left `topic`, `bound` of them with row bindings.
    fn forget(&self, topic: &str, gone: usize, bound: usize) {
        self.counters.members.fetch_sub(gone, Ordering::Relaxed);
        if bound > 0 {
            let mut pg = lock(&self.pg_topics);
            if let Some(n) = pg.get_mut(topic) {
                *n = n.saturating_sub(bound);
                if *n == 0 {
                    pg.remove(topic);
                }
            }
        }
    }

    /// Runs `f` on the topic's members; members that `f`'s fan-outs removed
    /// are accounted for.
    fn with_members<T>(
        &self,
        topic: &str,
        id: MemberId,
        f: impl FnOnce(&Topic, &mut Members) -> HubResult<T>,
    ) -> HubResult<T> {
        let Some(t) = self.topic(topic) else {
            return Err(not_member(topic));
        };
        let result = {
            let mut members = lock(&t.members);
            if !members.contains_key(&id) {
                return Err(not_member(topic));
            }
            let r = f(&t, &mut members);
            self.settle(&t);
            r
        };
        self.drop_topic_if_empty(topic);
        result
    }

    /// Whether `id` is still a member of `topic`.
    pub(crate) fn is_member(&self, topic: &str, id: MemberId) -> bool {
        self.topic(topic)
            .is_some_and(|t| lock(&t.members).contains_key(&id))
    }

    /// Broadcasts from member `from` (a binary payload reaches only the
    /// members whose sink can carry bytes; see [`Broadcast`]).
    pub(crate) fn broadcast(
        &self,
        topic: &str,
        from: MemberId,
        event: &str,
        payload: BroadcastPayload,
        meta: Option<Value>,
    ) -> HubResult<()> {
        let limit = self.config.max_payload_bytes;
        match &payload {
            BroadcastPayload::Json(v) => check_json_size(v, limit, "the broadcast payload")?,
            BroadcastPayload::Binary(b) if b.len() > limit => {
                return Err(Error::too_large(format!(
                    "the binary broadcast payload of {} bytes is larger than the limit of \
                     {limit} bytes (max_payload_bytes); send a reference to the data instead",
                    b.len()
                )))
            }
            BroadcastPayload::Binary(_) => {}
        }
        let item = Push::Broadcast(Arc::new(Broadcast::with(topic, event, payload, meta)));
        self.with_members(topic, from, |t, members| {
            let include_self = members.get(&from).is_some_and(|m| m.broadcast_self);
            t.fan_out(members, &item, |id, _| include_self || id != from);
            Ok(())
        })?;
        if let (Some(c), Push::Broadcast(b)) = (&self.cluster, &item) {
            c.publish_broadcast(b);
        }
        Ok(())
    }

    /// Publishes (or replaces) member `id`'s presence state.
    pub(crate) fn track(&self, topic: &str, id: MemberId, state: Value) -> HubResult<()> {
        if !state.is_object() {
            return Err(Error::invalid_input(
                "a presence state must be a JSON object (its fields become the presence meta)",
            ));
        }
        check_json_size(&state, self.config.max_payload_bytes, "the presence state")?;
        self.with_members(topic, id, |t, members| {
            let meta = PresenceMeta {
                presence_ref: uuid::Uuid::new_v4().simple().to_string(),
                state,
            };
            let Some(m) = members.get_mut(&id) else {
                return Err(not_member(topic));
            };
            let old = m.meta.replace(meta.clone());
            if let Some(c) = &self.cluster {
                c.publish_presence(&t.name, id, &m.key, Some(&meta));
            }
            let mut diff = PresenceDiff::default();
            diff.joins.insert(m.key.clone(), vec![meta]);
            if let Some(old) = old {
                diff.leaves.insert(m.key.clone(), vec![old]);
            }
            let item = Push::PresenceDiff(Arc::new(DiffPush::new(diff)));
            t.fan_out(members, &item, |_, _| true);
            Ok(())
        })
    }

    /// Removes member `id`'s presence state (a no-op when none).
    pub(crate) fn untrack(&self, topic: &str, id: MemberId) -> HubResult<()> {
        self.with_members(topic, id, |t, members| {
            let old = members.get_mut(&id).and_then(|m| {
                let key = m.key.clone();
                m.meta.take().map(|meta| (key, meta))
            });
            if let Some((key, meta)) = old {
                if let Some(c) = &self.cluster {
                    c.publish_presence(&t.name, id, &key, None);
                }
                t.fan_out(members, &leaves_diff(key, meta), |_, _| true);
            }
            Ok(())
        })
    }

    /// The topic's presence state, as member `id` sees it.
    pub(crate) fn presence(&self, topic: &str, id: MemberId) -> HubResult<PresenceState> {
        self.with_members(topic, id, |_, members| {
            Ok(self.presence_state(topic, members))
        })
    }

    /// The presence state members of `topic` see: its members', and in
    /// cluster mode the other nodes' too.
    fn presence_state(&self, topic: &str, members: &Members) -> PresenceState {
        match &self.cluster {
            None => presence_of(members),
            Some(c) => c.merged_presence(
                topic,
                members
                    .values()
                    .filter_map(|m| Some((m.key.as_str(), m.meta.as_ref()?))),
            ),
        }
    }

    /// Cluster mode: fans a broadcast of another node out to this node's
    /// members of its topic (none: dropped). Only joined members get it,
    /// so topic authorization holds as for local broadcasts.
    pub(crate) fn remote_broadcast(&self, broadcast: Broadcast) {
        let Some(t) = self.topic(&broadcast.topic) else {
            return;
        };
        let item = Push::Broadcast(Arc::new(broadcast));
        {
            let mut members = lock(&t.members);
            t.fan_out(&mut members, &item, |_, _| true);
        }
        self.settle(&t);
        self.drop_topic_if_empty(&t.name);
    }

    /// Cluster mode: runs `change` (which changes the other nodes' presence
    /// in `topic` and returns the diff) so that no join of the topic
    /// interleaves with it, and sends the diff to the topic's members.
    pub(crate) fn change_remote_presence(
        &self,
        topic: &str,
        change: impl FnOnce() -> PresenceDiff,
    ) {
        let topics = lock(&self.topics);
        let Some(t) = topics.get(topic).cloned() else {
            // No member here: a join waits on the topics lock meanwhile.
            let _ = change();
            return;
        };
        let mut members = lock(&t.members);
        drop(topics);
        let diff = change();
        if !diff.joins.is_empty() || !diff.leaves.is_empty() {
            let item = Push::PresenceDiff(Arc::new(DiffPush::new(diff)));
            t.fan_out(&mut members, &item, |_, _| true);
        }
        drop(members);
        self.settle(&t);
        self.drop_topic_if_empty(topic);
    }

    /// Cluster mode: calls `f` with each topic's tracked members, under
    /// the topic's lock (so the snapshot is ordered with presence events).
    pub(crate) fn snapshot_presence(&self, f: impl Fn(&str, Vec<SnapshotEntry>)) {
        let topics: Vec<Arc<Topic>> = lock(&self.topics).values().cloned().collect();
        for t in topics {
            let members = lock(&t.members);
            let entries: Vec<SnapshotEntry> = members
                .iter()
                .filter_map(|(&id, m)| {
                    Some(SnapshotEntry {
                        id,
                        key: m.key.clone(),
                        meta: m.meta.clone()?,
                    })
                })
                .collect();
            if !entries.is_empty() {
                f(&t.name, entries);
            }
        }
    }

    /// Removes every member of connection `owner` (the connection closed).
    pub(crate) fn remove_owner(&self, owner: u64, joined: &[(String, MemberId)]) {
        for (topic, id) in joined {
            if let Some(t) = self.topic(topic) {
                let owned = lock(&t.members).get(id).is_some_and(|m| m.owner == owner);
                if owned {
                    self.leave(topic, *id);
                }
            }
        }
    }

    /// Ends everything: every member is removed (told why), row
    /// subscriptions are dropped, background tasks see the shutdown flag.
    pub(crate) fn shutdown(&self) {
        if !self.is_shut_down() {
            if let Some(c) = &self.cluster {
                c.bye();
            }
        }
        self.shutdown.send_replace(true);
        let topics: Vec<Arc<Topic>> = lock(&self.topics).drain().map(|(_, t)| t).collect();
        for t in topics {
            let removed = std::mem::take(&mut *lock(&t.members));
            for m in removed.values() {
                m.sink
                    .removed(&t.name, &m.join_ref, "the realtime hub was shut down");
            }
            self.counters
                .members
                .fetch_sub(removed.len(), Ordering::Relaxed);
        }
        lock(&self.pg_topics).clear();
        self.row_subs.clear();
        let feeds: Vec<TableFeed> = lock(&self.feeds).drain().map(|(_, f)| f).collect();
        for f in feeds {
            f.reader.abort();
            self.counters.table_feeds.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Subscribes to `table`'s change feed unless the hub already does;
    /// the subscription lasts while the returned lease (or another) lives.
    pub(crate) async fn watch_table(self: &Arc<Self>, table: &str) -> RtResult<FeedLease> {
        let Some(db) = self.db.clone().filter(|db| db.capabilities().change_feed) else {
            return Err(Error::unsupported(
                "postgres_changes need a database with a change feed, and this hub has none",
            ));
        };
        let lease = || FeedLease {
            hub: Arc::downgrade(self),
            table: table.to_string(),
        };
        let held = |hub: &Hub| {
            let mut feeds = lock(&hub.feeds);
            let f = feeds.get_mut(table)?;
            f.leases += 1;
            Some(lease())
        };
        // Watched already: no need to wait for another table's subscription.
        if let Some(l) = held(self) {
            return Ok(l);
        }
        let _gate = self.feed_gate.lock().await;
        self.check_open()?;
        if let Some(l) = held(self) {
            return Ok(l);
        }
        let stream = db.subscribe_changes(Some(table)).await.map_err(|e| {
            e.with_context("while", "subscribing to the table's change feed")
                .with_context("table", table)
        })?;
        let source = DatabaseFeed {
            db,
            table: Some(table.to_string()),
        };
        let reader = tokio::spawn(read_feed(
            Arc::downgrade(self),
            source,
            stream,
            self.shutdown.subscribe(),
            TaskGuard::new(&self.counters),
        ));
        let mut feeds = lock(&self.feeds);
        if self.is_shut_down() {
            reader.abort();
            return Err(Error::unavailable("the realtime hub was shut down").permanent());
        }
        feeds.insert(table.to_string(), TableFeed { leases: 1, reader });
        self.counters.table_feeds.fetch_add(1, Ordering::Relaxed);
        Ok(lease())
    }

    /// A lease of `table` ended: the last one stops the table's feed
    /// (dropping its stream unsubscribes from the database).
    fn release_table(&self, table: &str) {
        let mut feeds = lock(&self.feeds);
        let Some(f) = feeds.get_mut(table) else {
            return;
        };
        f.leases = f.leases.saturating_sub(1);
        if f.leases == 0 {
            if let Some(f) = feeds.remove(table) {
                f.reader.abort();
                self.counters.table_feeds.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The tables member `id` of `topic` has bindings on.
    pub(crate) fn bound_tables(&self, topic: &str, id: MemberId) -> Vec<String> {
        let Some(t) = self.topic(topic) else {
            return Vec::new();
        };
        let members = lock(&t.members);
        let mut tables: Vec<String> = members
            .get(&id)
            .map(|m| m.bindings.iter().map(|b| b.table.clone()).collect())
            .unwrap_or_default();
        tables.sort();
        tables.dedup();
        tables
    }

    /// Sets who member `id` of `topic` is (a new access token).
    pub(crate) fn set_viewer(
        &self,
        topic: &str,
        id: MemberId,
        viewer: Viewer,
        scope: Option<Arc<RequestScope>>,
    ) {
        if let Some(t) = self.topic(topic) {
            if let Some(m) = lock(&t.members).get_mut(&id) {
                m.viewer = viewer;
                m.scope = scope;
            }
        }
    }

    /// Sends a checked change to member `id` of `topic`, if it is still
    /// there (see [`crate::rls`]).
    pub(crate) fn deliver_to(
        &self,
        topic: &str,
        id: MemberId,
        ids: Vec<u32>,
        change: Arc<RowChange>,
    ) {
        let Some(t) = self.topic(topic) else {
            return;
        };
        let mut members = lock(&t.members);
        let Some(m) = members.get(&id) else {
            return;
        };
        let item = Push::Change { ids, change };
        if let Err(reason) = m.sink.push(&t.name, &m.join_ref, &item) {
            t.remove_members(&mut members, vec![(id, reason)]);
        }
        drop(members);
        self.settle(&t);
    }

    /// Delivers a committed change to every member binding and in-process
    /// subscription it matches.
    ///
    /// A member receives it only as far as the table's rule lets its viewer
    /// read it (see [`truststream_core_realtime::access`]), without hidden columns.
    pub(crate) fn dispatch(&self, change: RowChange) {
        let change = Arc::new(change);
        let rule = self.publication.rule_for_change(&change.table);
        // What members may get: the change without hidden columns, and
        // (made when first needed) the same without its old row.
        let full = rule
            .and_then(|r| r.strip(&change))
            .map_or_else(|| change.clone(), Arc::new);
        let new_only: OnceLock<Arc<RowChange>> = OnceLock::new();
        let topics: Vec<String> = match rule {
            Some(_) => lock(&self.pg_topics).keys().cloned().collect(),
            // Not published: no client binding can name the table.
            None => Vec::new(),
        };
        let checked = rule.is_some_and(|r| r.row_security);
        let mut pending: Vec<rls::Pending> = Vec::new();
        for name in topics {
            let Some(t) = self.topic(&name) else {
                continue;
            };
            let mut members = lock(&t.members);
            let mut failed = Vec::new();
            for (&id, m) in members.iter() {
                let ids: Vec<u32> = m
                    .bindings
                    .iter()
                    // Matched on what members may get: a binding's `key`
                    // cannot probe a hidden primary key.
                    .filter(|b| b.matches(&full))
                    .map(|b| b.id)
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let Some(rule) = rule else {
                    continue;
                };
                let mut seen = rule.visibility(&m.viewer, &change);
                let mut check = false;
                if checked {
                    (seen, check) = rule.under_row_security(seen, &change);
                }
                let visible = match seen {
                    Visibility::Full => full.clone(),
                    Visibility::NewOnly => new_only
                        .get_or_init(|| {
                            Arc::new(RowChange {
                                old: None,
                                ..RowChange::clone(&full)
                            })
                        })
                        .clone(),
                    Visibility::None => continue,
                };
                if checked {
                    // In the checking queue's order, deletes included.
                    pending.push(rls::Pending {
                        topic: name.clone(),
                        id,
                        ids,
                        change: visible,
                        scope: m.scope.clone(),
                        check,
                    });
                    continue;
                }
                let item = Push::Change {
                    ids,
                    change: visible,
                };
                if let Err(r) = m.sink.push(&t.name, &m.join_ref, &item) {
                    failed.push((id, r));
                }
            }
            t.remove_members(&mut members, failed);
            drop(members);
            self.settle(&t);
        }
        if !pending.is_empty() {
            self.queue_checks(&change, pending);
        }
        self.row_subs.dispatch(&change);
    }
}

impl Hub {
    /// Hands a change of a table checked with row-level security to the
    /// checking task; a full queue loses it (recorded like a lost change).
    fn queue_checks(&self, change: &RowChange, pending: Vec<rls::Pending>) {
        let Some(queue) = &self.rls else {
            // Unreachable: the queue exists whenever a rule asks for checks.
            return;
        };
        let batch = rls::Batch {
            table: change.table.clone(),
            key: change.key.clone(),
            pending,
        };
        if let Err(e) = queue.try_send(batch) {
            let why = match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => format!(
                    "row-level security checks fell {} changes behind",
                    rls::QUEUE
                ),
                tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                    "the row-level security checking task has ended".to_string()
                }
            };
            tracing::warn!(table = %change.table, "realtime: {why}; a change was not sent");
            self.feed_health.record_problem(
                format!("{why}; a change of table {} was not sent", change.table),
                false,
            );
        }
    }
}

impl FeedTarget for Hub {
    fn deliver(&self, change: RowChange) {
        self.dispatch(change);
    }

    fn feed_health(&self) -> &FeedHealth {
        &self.feed_health
    }
}

fn not_member(topic: &str) -> Error {
    Error::invalid_input(format!("not a member of {topic:?}: join the channel first"))
}

/// Reads one table's change stream into [`Hub::dispatch`] until the hub
/// shuts down or the table's last lease ends (the task is aborted); a feed
/// that ends is subscribed again with a backoff (see
/// [`follow_change_feed`]).
async fn read_feed(
    hub: Weak<Hub>,
    source: DatabaseFeed,
    stream: ChangeStream,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    _guard: TaskGuard,
) {
    tokio::select! {
        _ = shutdown.wait_for(|down| *down) => {}
        () = follow_change_feed(hub, &source, stream, tokio::time::sleep) => {}
    }
}

/// The wire form of presence: `{key: {metas: [{phx_ref, ...state}]}}`.
pub(crate) fn presence_to_wire(state: &PresenceState) -> Value {
    let mut out = Map::new();
    for (key, metas) in state {
        let metas: Vec<Value> = metas.iter().map(meta_to_wire).collect();
        out.insert(key.clone(), json!({ "metas": metas }));
    }
    Value::Object(out)
}

fn meta_to_wire(meta: &PresenceMeta) -> Value {
    let mut m = match &meta.state {
        Value::Object(o) => o.clone(),
        other => {
            let mut m = Map::new();
            m.insert("state".into(), other.clone());
            m
        }
    };
    m.insert("phx_ref".into(), Value::String(meta.presence_ref.clone()));
    Value::Object(m)
}

/// Parses the wire form of presence back (the client side).
pub(crate) fn presence_from_wire(v: &Value) -> PresenceState {
    let mut state = PresenceState::new();
    let Some(o) = v.as_object() else {
        return state;
    };
    for (key, entry) in o {
        let metas = entry
            .get("metas")
            .and_then(Value::as_array)
            .map(|metas| {
                metas
                    .iter()
                    .filter_map(|m| {
                        let mut m = m.as_object()?.clone();
                        let presence_ref = match m.remove("phx_ref") {
                            Some(Value::String(s)) => s,
                            _ => return None,
                        };
                        m.remove("phx_ref_prev");
                        Some(PresenceMeta {
                            presence_ref,
                            state: Value::Object(m),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !metas.is_empty() {
            state.insert(key.clone(), metas);
        }
    }
    state
}

/// The wire form of a row change (`postgres_changes` payload `data`).
pub(crate) fn change_to_wire(change: &RowChange) -> Value {
    let columns_of = |r: &Map<String, Value>| -> Vec<Value> {
        r.iter()
            .map(|(name, v)| json!({"name": name, "type": pg_type(v)}))
            .collect()
    };
    let columns = change
        .new
        .as_ref()
        .or(change.old.as_ref())
        .map(columns_of)
        .unwrap_or_default();
    let kind = match change.kind {
        ChangeKind::Insert => "INSERT",
        ChangeKind::Update => "UPDATE",
        ChangeKind::Delete => "DELETE",
    };
    json!({
        "schema": "public",
        "table": change.table,
        "commit_timestamp": change.committed_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "type": kind,
        "columns": columns,
        "record": change.new.clone().map(Value::Object).unwrap_or_else(|| json!({})),
        "old_record": change.old.clone().map(Value::Object).unwrap_or_else(|| json!({})),
        "errors": null,
        // TrustStream extension: the primary key, for clients that need it
        // without knowing the key column.
        "key": change.key,
    })
}

/// A PostgreSQL type name for a JSON value (realtime-js converts record
/// values by these names).
fn pg_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float8",
        Value::Number(_) => "int8",
        Value::String(_) | Value::Null => "text",
        Value::Array(_) | Value::Object(_) => "jsonb",
    }
}

/// Parses the wire form of a row change back (the client side).
pub(crate) fn change_from_wire(data: &Value) -> Option<RowChange> {
    let kind = match data.get("type")?.as_str()? {
        "INSERT" => ChangeKind::Insert,
        "UPDATE" => ChangeKind::Update,
        "DELETE" => ChangeKind::Delete,
        _ => return None,
    };
    let row = |name: &str| -> Option<Map<String, Value>> {
        match data.get(name) {
            Some(Value::Object(o)) if !o.is_empty() => Some(o.clone()),
            _ => None,
        }
    };
    let committed_at = data
        .get("commit_timestamp")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(chrono::Utc::now);
    let (old, new) = match kind {
        ChangeKind::Insert => (None, row("record")),
        ChangeKind::Update => (row("old_record"), row("record")),
        ChangeKind::Delete => (row("old_record"), None),
    };
    Some(RowChange {
        table: data.get("table")?.as_str()?.to_string(),
        kind,
        key: data.get("key").cloned().unwrap_or(Value::Null),
        old,
        new,
        committed_at,
    })
}

/// Locks a mutex, recovering from poisoning: every critical section here
/// leaves the data consistent, and handlers never run under a lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
