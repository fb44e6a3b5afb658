//! Cluster mode: hubs joined through a broker (NATS or Redis pub/sub).
//!
//! Each hub (node) publishes on one broker subject (`prefix`) and listens
//! on it:
//!
//! - **Broadcasts**: after the local fan-out, one publish per broadcast
//!   (not one per member). Receiving nodes fan it out to their own members
//!   of the topic; a node that has none drops it. The sender's node does
//!   not take its own messages back (NATS `no_echo`, and every node drops
//!   messages carrying its own id). One ordered publish queue per node and
//!   one receiving task per node keep each sender's order.
//! - **Presence**: every join/update/leave of a tracked member is published
//!   under the topic's lock; every node keeps the other nodes' tracked
//!   members (`Remote`) and merges them into the state its clients see.
//! - **Liveness**: every node publishes a heartbeat each `heartbeat_ms`; a
//!   node not heard from for `node_timeout_ms` is dropped with its members,
//!   and `leave` diffs go to the local members of their topics. A node
//!   that (re)connects says `Hello`; every node answers with a snapshot of
//!   its tracked members (`SnapshotBegin`, one `TopicSnapshot` per topic
//!   taken under that topic's lock, `SnapshotEnd`), so late joiners and
//!   nodes back from a broker outage converge.
//!
//! Without `cluster` in the configuration none of this exists: the hub
//! holds `None` and its paths only test that.

pub(crate) mod wire;

#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Bytes;
use truststream_core::{Error, Secret};
use truststream_core_realtime::{
    presence_state_of, PresenceDiff, PresenceMeta, PresenceState, RtResult,
};

use self::wire::{Body, Envelope, Kind, PresenceEvent, SnapshotEntry, TopicSnapshot};
use crate::hub::{lock, Broadcast, Hub, MemberId, TaskGuard};

/// The brokers this build knows, by `cluster.broker` name.
pub const BROKERS: &[&str] = &["nats", "redis"];

/// How many messages may wait for the broker before new ones are dropped
/// (and the cluster reported degraded).
const QUEUE: usize = 65_536;
/// Messages published to the broker in one call (Redis: one pipeline).
const BATCH: usize = 256;

/// Cluster mode of a hub (`cluster = { broker, url, node_id }` in the
/// `[realtime]` section). See the crate README.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `"nats"` (feature `nats`) or `"redis"` (feature `redis`).
    pub broker: String,
    /// The broker's URL (`nats://127.0.0.1:4222`, `redis://127.0.0.1:6379`);
    /// it may hold credentials, so it is never shown.
    pub url: Secret,
    /// This node's name, unique in the cluster: 1-64 bytes of ASCII
    /// letters, digits, `-`, `_` and `.`.
    pub node_id: String,
    /// The broker subject (NATS) or channel (Redis) the cluster talks on
    /// (default `truststream.realtime`). Hubs with different prefixes are
    /// different clusters on the same broker.
    pub prefix: String,
    /// How often a node says it is alive (default 1000 ms).
    pub heartbeat_ms: u64,
    /// A node not heard from for this long is dropped with its members
    /// (default 3000 ms; at least twice `heartbeat_ms`). Its members'
    /// `leave` diffs reach clients within `node_timeout_ms` + 250 ms of its
    /// last heartbeat.
    pub node_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            broker: String::new(),
            url: Secret::default(),
            node_id: String::new(),
            prefix: "truststream.realtime".into(),
            heartbeat_ms: 1000,
            node_timeout_ms: 3000,
        }
    }
}

impl ClusterConfig {
    /// A configuration for `broker` at `url`, as node `node_id`.
    pub fn new(broker: &str, url: &str, node_id: &str) -> Self {
        ClusterConfig {
            broker: broker.into(),
            url: Secret::from(url),
            node_id: node_id.into(),
            ..Self::default()
        }
    }

    /// Checks the broker name (and that this build has it), the node id,
    /// the prefix and the timings.
    pub fn validate(&self) -> RtResult<()> {
        let bad = |m: String| Err(Error::invalid_input(format!("realtime.cluster: {m}")));
        if !BROKERS.contains(&self.broker.as_str()) {
            return bad(format!(
                "broker {:?} is unknown; known brokers: {}",
                truststream_core::echo(&self.broker),
                BROKERS.join(", ")
            ));
        }
        if !compiled(&self.broker) {
            return bad(format!(
                "broker {:?} is not in this build: build truststream-realtime-ws with feature \
                 \"{}\" (the truststream runtime and CLI: feature \"realtime-ws-{}\")",
                self.broker, self.broker, self.broker
            ));
        }
        if self.url.is_empty() {
            return bad("url is required (e.g. nats://127.0.0.1:4222)".into());
        }
        let name_ok = |s: &str, extra: &[char]| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c) || extra.contains(&c))
        };
        if !name_ok(&self.node_id, &['.']) {
            return bad(format!(
                "node_id {:?} must be 1-64 bytes of ASCII letters, digits, '-', '_' and '.'",
                truststream_core::echo(&self.node_id)
            ));
        }
        if !name_ok(&self.prefix, &['.', ':'])
            || self.prefix.starts_with('.')
            || self.prefix.ends_with('.')
            || self.prefix.contains("..")
        {
            return bad(format!(
                "prefix {:?} must be 1-64 bytes of ASCII letters, digits, '-', '_', ':' and \
                 '.' (no empty '.'-separated part; NATS wildcards are not allowed)",
                truststream_core::echo(&self.prefix)
            ));
        }
        if self.heartbeat_ms < 50 {
            return bad("heartbeat_ms must be at least 50".into());
        }
        if self.node_timeout_ms < self.heartbeat_ms.saturating_mul(2) {
            return bad(format!(
                "node_timeout_ms ({}) must be at least twice heartbeat_ms ({})",
                self.node_timeout_ms, self.heartbeat_ms
            ));
        }
        Ok(())
    }
}

fn compiled(broker: &str) -> bool {
    (broker == "nats" && cfg!(feature = "nats")) || (broker == "redis" && cfg!(feature = "redis"))
}

/// Traffic counters of a node's broker link (tests and benches read them).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Messages handed to the broker.
    pub published: AtomicU64,
    /// Bytes of those messages (payloads as published).
    pub published_bytes: AtomicU64,
    /// Broadcasts published (one message each, whatever the member count).
    pub broadcasts: AtomicU64,
    /// Bytes of the published broadcasts.
    pub broadcast_bytes: AtomicU64,
    /// Messages received from other nodes.
    pub received: AtomicU64,
    /// Messages dropped: the publish queue was full, or the broker refused
    /// them (it was down).
    pub dropped: AtomicU64,
    /// Received messages that were not understood (logged and dropped).
    pub malformed: AtomicU64,
    /// Other nodes' messages this node's broker client dropped because the
    /// node took them too slowly (NATS: async-nats's slow-consumer events;
    /// a lower bound, since async-nats reports them on a bounded channel).
    /// The node asks the others for a snapshot at its next heartbeat.
    pub missed: AtomicU64,
}

/// The broker's side: ordered publishing. Incoming messages and the
/// connection state reach the node through [`Links`].
#[async_trait]
pub(crate) trait Broker: Send + Sync {
    /// Publishes `batch` on the cluster subject, in order.
    async fn publish(&self, batch: &[Bytes]) -> Result<(), String>;
}

/// What a broker implementation reports to its node.
#[cfg_attr(not(any(feature = "nats", feature = "redis")), allow(dead_code))]
pub(crate) struct Links {
    /// Messages from the subject (other nodes' included; filtered later).
    pub incoming: mpsc::Sender<Bytes>,
    /// Connection state: `(up, times connected)`; a reconnection shows as
    /// a new count even if the node never saw it down.
    pub state: watch::Sender<(bool, u64)>,
    /// The node's counters (`missed`: messages the broker client dropped).
    pub stats: Arc<ClusterStats>,
}

#[cfg_attr(not(any(feature = "nats", feature = "redis")), allow(dead_code))]
impl Links {
    pub(crate) fn connected(&self) {
        self.state.send_modify(|(up, n)| {
            *up = true;
            *n += 1;
        });
    }

    pub(crate) fn disconnected(&self) {
        self.state.send_modify(|(up, _)| *up = false);
    }

    /// The broker client dropped a message from the subject because this
    /// node read too slowly; the receiver resynchronises at its next
    /// heartbeat.
    pub(crate) fn missed(&self) {
        self.stats.missed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A remote member: (node, its id there).
type Slot = (String, u64);

/// A remote member's presence key and entry, by [`Slot`].
type Entries = BTreeMap<Slot, (String, PresenceMeta)>;

/// Other nodes' tracked members, by topic.
#[derive(Default)]
struct Remote {
    nodes: HashMap<String, NodeState>,
    topics: HashMap<String, Entries>,
}

struct NodeState {
    incarnation: u64,
    last_seen: Instant,
    /// During a snapshot: the (topic, id) entries held before it that the
    /// snapshot has not confirmed yet (removed at its end).
    unconfirmed: Option<HashSet<(String, u64)>>,
}

/// The node's side of the cluster, held by its hub.
pub(crate) struct Cluster {
    node: String,
    incarnation: u64,
    config: ClusterConfig,
    out: mpsc::Sender<Bytes>,
    remote: Mutex<Remote>,
    up: AtomicBool,
    /// The last publish failure (for health; cleared by a later success).
    publish_error: Mutex<Option<String>>,
    /// Set at a heartbeat after the broker client dropped incoming
    /// messages (for health; cleared at a heartbeat with no new drops).
    receive_error: Mutex<Option<String>>,
    /// Set when messages were dropped (queue full, publish failed): the
    /// others' view of this node's presence may be wrong, so the next
    /// heartbeat sends a snapshot, which replaces it.
    resync: AtomicBool,
    pub stats: Arc<ClusterStats>,
    /// Set up by [`Cluster::new`], taken by [`start`].
    pending: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

impl Cluster {
    /// The cluster side of a hub about to be built (checked config); no
    /// task runs before [`start`].
    pub(crate) fn new(config: ClusterConfig) -> Arc<Cluster> {
        let (out, rx) = mpsc::channel(QUEUE);
        Arc::new(Cluster {
            node: config.node_id.clone(),
            incarnation: rand_u64(),
            config,
            out,
            remote: Mutex::new(Remote::default()),
            up: AtomicBool::new(false),
            publish_error: Mutex::new(None),
            receive_error: Mutex::new(None),
            resync: AtomicBool::new(false),
            stats: Arc::new(ClusterStats::default()),
            pending: Mutex::new(Some(rx)),
        })
    }

    /// What health should say, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        if !self.up.load(Ordering::Relaxed) {
            return Some(format!(
                "cluster degraded: node {} cannot reach its {} broker; local members are \
                 still served, other nodes' are not",
                self.node, self.config.broker
            ));
        }
        lock(&self.publish_error)
            .clone()
            .or_else(|| lock(&self.receive_error).clone())
            .map(|e| format!("cluster degraded: node {}: {e}", self.node))
    }

    /// At a heartbeat: if the broker client dropped messages from other
    /// nodes since `seen` (they may have held presence changes), say so
    /// (one log line per heartbeat at most, and health until a heartbeat
    /// passes without drops) and ask every node for a snapshot (`Hello`),
    /// which replaces what this node holds of theirs. Returns whether it
    /// asked.
    fn recover_missed(&self, seen: &mut u64) -> bool {
        let missed = self.stats.missed.load(Ordering::Relaxed);
        let new = missed.saturating_sub(*seen);
        if new == 0 {
            *lock(&self.receive_error) = None;
            return false;
        }
        *seen = missed;
        tracing::warn!(
            node = %self.node,
            dropped = new,
            "realtime cluster: the broker client dropped messages from other nodes (this node \
             read them too slowly); asking the others for their presence again"
        );
        *lock(&self.receive_error) = Some(format!(
            "at least {new} messages from other nodes were dropped (this node read them too \
             slowly); presence is being resynchronised"
        ));
        self.send_empty(Kind::Hello);
        true
    }

    fn send(&self, msg: Bytes) {
        if self.out.try_send(msg).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.resync.store(true, Ordering::Relaxed);
            *lock(&self.publish_error) = Some(format!(
                "over {QUEUE} messages waited for the broker; some were dropped"
            ));
        }
    }

    fn send_empty(&self, kind: Kind) {
        self.send(wire::encode_empty(kind, &self.node, self.incarnation));
    }

    fn send_json<T: serde::Serialize>(&self, kind: Kind, body: &T) {
        match wire::encode_json(kind, &self.node, self.incarnation, body) {
            Ok(m) => self.send(m),
            Err(e) => tracing::warn!(node = %self.node, "realtime cluster: {e}"),
        }
    }

    /// Publishes a local broadcast to the other nodes (once, whatever the
    /// member count).
    pub(crate) fn publish_broadcast(&self, b: &Broadcast) {
        match wire::encode_broadcast(&self.node, self.incarnation, b) {
            Ok(m) => {
                self.stats.broadcasts.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .broadcast_bytes
                    .fetch_add(m.len() as u64, Ordering::Relaxed);
                self.send(m);
            }
            Err(e) => tracing::warn!(node = %self.node, "realtime cluster: {e}"),
        }
    }

    /// Publishes a local member's presence (`None`: it has none any more).
    /// Called under the topic's lock, so it is ordered with snapshots.
    pub(crate) fn publish_presence(
        &self,
        topic: &str,
        id: MemberId,
        key: &str,
        meta: Option<&PresenceMeta>,
    ) {
        let ev = PresenceEvent {
            topic: topic.to_string(),
            id,
            key: key.to_string(),
            meta: meta.cloned(),
        };
        self.send_json(Kind::Presence, &ev);
    }

    /// Publishes a snapshot of one topic's tracked local members (called
    /// under the topic's lock).
    pub(crate) fn publish_topic_snapshot(&self, topic: &str, entries: Vec<SnapshotEntry>) {
        self.send_json(
            Kind::TopicSnapshot,
            &TopicSnapshot {
                topic: topic.to_string(),
                entries,
            },
        );
    }

    /// The presence state of `topic`: `local` merged with the other nodes'.
    pub(crate) fn merged_presence<'a>(
        &self,
        topic: &str,
        local: impl Iterator<Item = (&'a str, &'a PresenceMeta)>,
    ) -> PresenceState {
        let remote = lock(&self.remote);
        let mut all: Vec<(&str, &PresenceMeta)> = local.collect();
        if let Some(m) = remote.topics.get(topic) {
            all.extend(m.values().map(|(k, meta)| (k.as_str(), meta)));
        }
        presence_state_of(all)
    }

    /// The hub shuts down: tell the others at once (best effort).
    pub(crate) fn bye(&self) {
        self.send_empty(Kind::Bye);
    }
}

fn rand_u64() -> u64 {
    let u = uuid::Uuid::new_v4().as_u128();
    (u >> 64) as u64 ^ u as u64
}

/// Connects the broker and starts the node's tasks (publisher, receiver
/// with heartbeats and node expiry). The hub starts even when the broker is
/// unreachable (degraded); the link keeps trying.
pub(crate) async fn start(cluster: &Arc<Cluster>, hub: &Arc<Hub>) -> RtResult<()> {
    let Some(out_rx) = lock(&cluster.pending).take() else {
        return Err(Error::internal("realtime cluster: started twice"));
    };
    let (incoming, in_rx) = mpsc::channel(4096);
    let (state, state_rx) = watch::channel((false, 0));
    let links = Links {
        incoming,
        state,
        stats: cluster.stats.clone(),
    };
    let broker = connect(&cluster.config, links).await?;
    tokio::spawn(publisher(
        cluster.clone(),
        broker,
        out_rx,
        hub.shutdown.subscribe(),
        TaskGuard::new(&hub.counters),
    ));
    tokio::spawn(receiver(
        cluster.clone(),
        Arc::downgrade(hub),
        in_rx,
        state_rx,
        hub.shutdown.subscribe(),
        TaskGuard::new(&hub.counters),
    ));
    Ok(())
}

#[allow(unused_variables)] // without broker features
async fn connect(config: &ClusterConfig, links: Links) -> RtResult<Box<dyn Broker>> {
    match config.broker.as_str() {
        #[cfg(feature = "nats")]
        "nats" => nats::connect(config, links).await,
        #[cfg(feature = "redis")]
        "redis" => redis::connect(config, links).await,
        other => Err(Error::invalid_input(format!(
            "realtime.cluster: broker {:?} is not in this build",
            truststream_core::echo(other)
        ))),
    }
}

/// Publishes the node's queue in order, in batches; after the hub shuts
/// down, what is queued (the `Bye`) is still sent.
async fn publisher(
    cluster: Arc<Cluster>,
    broker: Box<dyn Broker>,
    mut rx: mpsc::Receiver<Bytes>,
    mut shutdown: watch::Receiver<bool>,
    _guard: TaskGuard,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            _ = shutdown.wait_for(|down| *down) => None,
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        flush(&cluster, broker.as_ref(), &mut batch).await;
    }
    // Shutting down: send what waits (the Bye), briefly.
    while let Ok(m) = rx.try_recv() {
        batch.push(m);
    }
    if !batch.is_empty() {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            flush(&cluster, broker.as_ref(), &mut batch),
        )
        .await;
    }
}

async fn flush(cluster: &Cluster, broker: &dyn Broker, batch: &mut Vec<Bytes>) {
    let n = batch.len() as u64;
    let bytes: usize = batch.iter().map(Bytes::len).sum();
    match broker.publish(batch).await {
        Ok(()) => {
            cluster.stats.published.fetch_add(n, Ordering::Relaxed);
            cluster
                .stats
                .published_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            let mut err = lock(&cluster.publish_error);
            if err.is_some() {
                *err = None;
            }
        }
        Err(e) => {
            cluster.stats.dropped.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(node = %cluster.node, "realtime cluster: publishing failed: {e}");
            *lock(&cluster.publish_error) = Some(format!("publishing to the broker failed: {e}"));
            cluster.resync.store(true, Ordering::Relaxed);
        }
    }
    batch.clear();
}

/// The node's single receiving task: other nodes' messages, connection
/// changes, heartbeats and node expiry, in one place so the remote state
/// changes in order.
async fn receiver(
    cluster: Arc<Cluster>,
    hub: Weak<Hub>,
    mut rx: mpsc::Receiver<Bytes>,
    mut state: watch::Receiver<(bool, u64)>,
    mut shutdown: watch::Receiver<bool>,
    _guard: TaskGuard,
) {
    let heartbeat = Duration::from_millis(cluster.config.heartbeat_ms);
    let timeout = Duration::from_millis(cluster.config.node_timeout_ms);
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expiry = tokio::time::interval(Duration::from_millis(250));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen_connections = 0;
    let mut seen_missed = 0;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|down| *down) => return,
            m = rx.recv() => {
                let Some(m) = m else { return };
                let Some(hub) = hub.upgrade() else { return };
                handle(&cluster, &hub, &m);
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                let (up, connections) = *state.borrow_and_update();
                cluster.up.store(up, Ordering::Relaxed);
                if up && connections != seen_connections {
                    seen_connections = connections;
                    tracing::info!(node = %cluster.node, "realtime cluster: connected to the broker");
                    let Some(hub) = hub.upgrade() else { return };
                    // Ask everyone for their state, and give ours.
                    cluster.send_empty(Kind::Hello);
                    send_snapshot(&cluster, &hub);
                } else if !up {
                    tracing::warn!(node = %cluster.node, "realtime cluster: lost the broker; serving local members only");
                }
            }
            _ = beat.tick() => {
                cluster.send_empty(Kind::Heartbeat);
                // Messages were lost (a presence change among them,
                // perhaps): once the broker is up and the queue has room
                // again, a snapshot puts the others right (if it is cut
                // short too, the flag is set again and the next heartbeat
                // retries). A reconnection sends one anyway.
                if cluster.up.load(Ordering::Relaxed)
                    && cluster.out.capacity() > QUEUE / 2
                    && cluster.resync.swap(false, Ordering::Relaxed)
                {
                    let Some(hub) = hub.upgrade() else { return };
                    send_snapshot(&cluster, &hub);
                }
                // Messages from the others were lost on the way in: ask
                // them for their state (once the broker is up; a
                // reconnection asks anyway).
                if cluster.up.load(Ordering::Relaxed) {
                    cluster.recover_missed(&mut seen_missed);
                }
            }
            _ = expiry.tick() => {
                let Some(hub) = hub.upgrade() else { return };
                let now = Instant::now();
                let dead: Vec<String> = lock(&cluster.remote)
                    .nodes
                    .iter()
                    .filter(|(_, n)| now.duration_since(n.last_seen) > timeout)
                    .map(|(id, _)| id.clone())
                    .collect();
                for node in dead {
                    tracing::warn!(node = %cluster.node, gone = %node, "realtime cluster: a node stopped heartbeating; removing its members");
                    drop_node(&cluster, &hub, &node);
                }
            }
        }
    }
}

/// Publishes this node's tracked members, topic by topic.
fn send_snapshot(cluster: &Cluster, hub: &Hub) {
    cluster.send_empty(Kind::SnapshotBegin);
    hub.snapshot_presence(|topic, entries| cluster.publish_topic_snapshot(topic, entries));
    cluster.send_empty(Kind::SnapshotEnd);
}

fn handle(cluster: &Cluster, hub: &Hub, msg: &Bytes) {
    // Its own messages (Redis echoes them) are dropped before decoding.
    if let Ok((node, incarnation)) = wire::sender(msg) {
        if node == cluster.node {
            if incarnation != cluster.incarnation {
                tracing::error!(node = %cluster.node, "realtime cluster: another process uses this node_id; give every node its own");
            }
            return;
        }
    }
    let env = match wire::decode(msg) {
        Ok(env) => env,
        Err(e) => {
            cluster.stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %cluster.node, "realtime cluster: dropped a message: {e}");
            return;
        }
    };
    cluster.stats.received.fetch_add(1, Ordering::Relaxed);
    let Envelope {
        node,
        incarnation,
        body,
    } = env;
    // Who sent it: a new node, a restarted one, or a known one.
    let known = {
        let mut remote = lock(&cluster.remote);
        match remote.nodes.get_mut(&node) {
            Some(n) if n.incarnation == incarnation => {
                n.last_seen = Instant::now();
                Some(true)
            }
            Some(_) => None,
            None => Some(false),
        }
    };
    match known {
        Some(true) => {}
        // A restarted node: what its old process held is gone.
        None => {
            drop_node(cluster, hub, &node);
            add_node(cluster, &node, incarnation);
        }
        Some(false) => {
            add_node(cluster, &node, incarnation);
            // A node we did not know (or had given up on) that did not say
            // Hello to us: ask for everyone's state.
            if !matches!(body, Body::Hello | Body::Bye) {
                cluster.send_empty(Kind::Hello);
                send_snapshot(cluster, hub);
            }
        }
    }
    match body {
        Body::Broadcast(b) => hub.remote_broadcast(b),
        Body::Presence(ev) => {
            let topic = ev.topic.clone();
            hub.change_remote_presence(&topic, || {
                let mut remote = lock(&cluster.remote);
                if let Some(n) = remote.nodes.get_mut(&node) {
                    if let Some(u) = &mut n.unconfirmed {
                        u.remove(&(ev.topic.clone(), ev.id));
                    }
                }
                set_entry(&mut remote, &node, ev)
            });
        }
        Body::Hello => send_snapshot(cluster, hub),
        Body::Heartbeat => {}
        Body::SnapshotBegin => {
            let mut remote = lock(&cluster.remote);
            let held: HashSet<(String, u64)> = remote
                .topics
                .iter()
                .flat_map(|(t, m)| {
                    m.keys()
                        .filter(|(n, _)| *n == node)
                        .map(|(_, id)| (t.clone(), *id))
                })
                .collect();
            if let Some(n) = remote.nodes.get_mut(&node) {
                n.unconfirmed = Some(held);
            }
        }
        Body::TopicSnapshot(s) => {
            let topic = s.topic.clone();
            hub.change_remote_presence(&topic, || {
                let mut remote = lock(&cluster.remote);
                if let Some(n) = remote.nodes.get_mut(&node) {
                    if let Some(u) = &mut n.unconfirmed {
                        u.retain(|(t, _)| *t != s.topic);
                    }
                }
                replace_topic(&mut remote, &node, s)
            });
        }
        Body::SnapshotEnd => {
            let stale = lock(&cluster.remote)
                .nodes
                .get_mut(&node)
                .and_then(|n| n.unconfirmed.take())
                .unwrap_or_default();
            let mut by_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for (t, id) in stale {
                by_topic.entry(t).or_default().push(id);
            }
            for (topic, ids) in by_topic {
                hub.change_remote_presence(&topic, || {
                    let mut remote = lock(&cluster.remote);
                    remove_entries(&mut remote, &topic, |(n, id)| {
                        *n == node && ids.contains(id)
                    })
                });
            }
        }
        Body::Bye => drop_node(cluster, hub, &node),
    }
}

fn add_node(cluster: &Cluster, node: &str, incarnation: u64) {
    lock(&cluster.remote).nodes.insert(
        node.to_string(),
        NodeState {
            incarnation,
            last_seen: Instant::now(),
            unconfirmed: None,
        },
    );
}

/// Forgets `node` and removes its members, sending their leaves.
fn drop_node(cluster: &Cluster, hub: &Hub, node: &str) {
    let topics: Vec<String> = {
        let mut remote = lock(&cluster.remote);
        remote.nodes.remove(node);
        remote
            .topics
            .iter()
            .filter(|(_, m)| m.keys().any(|(n, _)| n == node))
            .map(|(t, _)| t.clone())
            .collect()
    };
    for topic in topics {
        hub.change_remote_presence(&topic, || {
            let mut remote = lock(&cluster.remote);
            remove_entries(&mut remote, &topic, |(n, _)| n == node)
        });
    }
}

/// Sets or removes one remote member's presence; the diff to send.
fn set_entry(remote: &mut Remote, node: &str, ev: PresenceEvent) -> PresenceDiff {
    let mut diff = PresenceDiff::default();
    let slot = (node.to_string(), ev.id);
    let entries = remote.topics.entry(ev.topic.clone()).or_default();
    let old = match ev.meta {
        Some(meta) => {
            diff.joins
                .entry(ev.key.clone())
                .or_default()
                .push(meta.clone());
            entries.insert(slot, (ev.key, meta))
        }
        None => entries.remove(&slot),
    };
    if let Some((key, meta)) = old {
        diff.leaves.entry(key).or_default().push(meta);
    }
    if entries.is_empty() {
        remote.topics.remove(&ev.topic);
    }
    diff
}

/// Replaces `node`'s members of a topic with a snapshot's; the diff.
fn replace_topic(remote: &mut Remote, node: &str, s: TopicSnapshot) -> PresenceDiff {
    let mut diff = PresenceDiff::default();
    let entries = remote.topics.entry(s.topic.clone()).or_default();
    let mut fresh: Entries = s
        .entries
        .into_iter()
        .map(|e| ((node.to_string(), e.id), (e.key, e.meta)))
        .collect();
    entries.retain(|slot, (key, meta)| {
        if slot.0 != node {
            return true;
        }
        match fresh.get(slot) {
            Some((k, m)) if k == key && m == meta => {
                fresh.remove(slot);
                true
            }
            _ => {
                diff.leaves
                    .entry(key.clone())
                    .or_default()
                    .push(meta.clone());
                false
            }
        }
    });
    for (slot, (key, meta)) in fresh {
        diff.joins
            .entry(key.clone())
            .or_default()
            .push(meta.clone());
        entries.insert(slot, (key, meta));
    }
    if entries.is_empty() {
        remote.topics.remove(&s.topic);
    }
    diff
}

/// Removes the entries of `topic` that `which` picks; the leaves diff.
fn remove_entries(
    remote: &mut Remote,
    topic: &str,
    which: impl Fn(&(String, u64)) -> bool,
) -> PresenceDiff {
    let mut diff = PresenceDiff::default();
    if let Some(entries) = remote.topics.get_mut(topic) {
        entries.retain(|slot, (key, meta)| {
            if which(slot) {
                diff.leaves
                    .entry(key.clone())
                    .or_default()
                    .push(meta.clone());
                false
            } else {
                true
            }
        });
        if entries.is_empty() {
            remote.topics.remove(topic);
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(r: &str) -> PresenceMeta {
        PresenceMeta {
            presence_ref: r.into(),
            state: json!({"r": r}),
        }
    }

    fn ev(topic: &str, id: u64, key: &str, m: Option<&str>) -> PresenceEvent {
        PresenceEvent {
            topic: topic.into(),
            id,
            key: key.into(),
            meta: m.map(meta),
        }
    }

    #[test]
    fn an_update_is_a_join_and_a_leave_and_a_removal_a_leave() {
        let mut r = Remote::default();
        let d = set_entry(&mut r, "a", ev("t", 1, "k", Some("r1")));
        assert_eq!(d.joins["k"], vec![meta("r1")]);
        assert!(d.leaves.is_empty());
        let d = set_entry(&mut r, "a", ev("t", 1, "k", Some("r2")));
        assert_eq!(d.joins["k"], vec![meta("r2")]);
        assert_eq!(d.leaves["k"], vec![meta("r1")]);
        let d = set_entry(&mut r, "a", ev("t", 1, "k", None));
        assert_eq!(d.leaves["k"], vec![meta("r2")]);
        assert!(r.topics.is_empty());
    }

    #[test]
    fn a_snapshot_replaces_only_its_nodes_members_of_the_topic() {
        let mut r = Remote::default();
        set_entry(&mut r, "a", ev("t", 1, "k1", Some("r1")));
        set_entry(&mut r, "a", ev("t", 2, "k2", Some("r2")));
        set_entry(&mut r, "b", ev("t", 1, "kb", Some("rb")));
        let s = TopicSnapshot {
            topic: "t".into(),
            entries: vec![
                SnapshotEntry {
                    id: 1,
                    key: "k1".into(),
                    meta: meta("r1"),
                },
                SnapshotEntry {
                    id: 3,
                    key: "k3".into(),
                    meta: meta("r3"),
                },
            ],
        };
        let d = replace_topic(&mut r, "a", s);
        assert_eq!(d.leaves.keys().collect::<Vec<_>>(), vec!["k2"]);
        assert_eq!(d.joins.keys().collect::<Vec<_>>(), vec!["k3"]);
        assert_eq!(r.topics["t"].len(), 3);
        let d = remove_entries(&mut r, "t", |(n, _)| n == "a");
        assert_eq!(d.leaves.len(), 2);
        assert_eq!(r.topics["t"].len(), 1, "node b's member stays");
    }

    #[test]
    fn a_dropped_message_asks_for_a_snapshot() {
        let c = Cluster::new(ClusterConfig::new("nats", "nats://127.0.0.1:4222", "n"));
        for _ in 0..QUEUE {
            c.send_empty(Kind::Heartbeat);
        }
        assert!(!c.resync.load(Ordering::Relaxed), "nothing dropped yet");
        c.send_empty(Kind::Heartbeat);
        assert_eq!(c.stats.dropped.load(Ordering::Relaxed), 1);
        assert!(
            c.resync.load(Ordering::Relaxed),
            "a drop asks for a snapshot"
        );
        assert!(c.problem().is_some(), "and health says so");
    }

    #[test]
    fn messages_missed_on_the_way_in_ask_the_others_for_a_snapshot() {
        let c = Cluster::new(ClusterConfig::new("nats", "nats://127.0.0.1:4222", "n"));
        let mut out = lock(&c.pending).take().unwrap();
        c.up.store(true, Ordering::Relaxed);
        let mut seen = 0;
        assert!(!c.recover_missed(&mut seen), "nothing missed yet");
        assert!(out.try_recv().is_err());
        c.stats.missed.fetch_add(3, Ordering::Relaxed);
        assert!(c.recover_missed(&mut seen));
        let hello = wire::decode(&out.try_recv().unwrap()).unwrap();
        assert!(
            matches!(hello.body, Body::Hello),
            "a Hello asks for snapshots"
        );
        let problem = c.problem().unwrap();
        assert!(problem.contains("at least 3 messages"), "{problem}");
        // The next heartbeat with no new drops: no second Hello, healthy.
        assert!(!c.recover_missed(&mut seen));
        assert!(out.try_recv().is_err());
        assert_eq!(c.problem(), None);
    }

    #[test]
    fn the_hub_config_carries_the_cluster_table() {
        let c: crate::WsRealtimeConfig = serde_json::from_value(json!({
            "cluster": {"broker": "redis", "url": "redis://127.0.0.1:6379", "node_id": "a"}
        }))
        .unwrap();
        let cluster = c.cluster.clone().unwrap();
        assert_eq!(cluster.broker, "redis");
        assert_eq!(cluster.node_timeout_ms, 3000);
        c.validate().unwrap();
        let bad: Result<crate::WsRealtimeConfig, _> = serde_json::from_value(json!({
            "cluster": {"broker": "redis", "url": "redis://x", "node_id": "a", "nodes": 3}
        }));
        assert!(bad.is_err(), "unknown cluster keys are refused");
    }

    #[test]
    fn config_is_checked_and_never_shows_the_url() {
        let mut c = ClusterConfig::new("nats", "nats://user:hunter2@127.0.0.1:4222", "node-1");
        assert!(!format!("{c:?}").contains("hunter2"));
        c.broker = "kafka".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("nats, redis"), "{e}");
        c.broker = "nats".into();
        c.node_id = "a b".into();
        assert!(c.validate().is_err());
        c.node_id = "n1".into();
        c.prefix = "x.>".into();
        assert!(c.validate().is_err());
        c.prefix = "ok.prefix".into();
        c.node_timeout_ms = c.heartbeat_ms;
        assert!(c.validate().is_err());
    }
}
