//! Channels, members and their bounded delivery queues.
//!
//! Architecture invariant: every delivery to a member goes through its
//! bounded queue (`try_send`, never an await under a lock). A member whose
//! queue is full is removed from the channel at once, so a slow handler can
//! cost at most `member_queue_capacity` queued deliveries, never unbounded
//! memory. Handlers run on the member's own delivery task, in queue order,
//! and never under a lock.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use tokio::sync::mpsc;
use truststream_core::Error;
use truststream_core_realtime::{
    check_json_size, not_joined, presence_key, presence_state_of, validate_broadcast, Channel,
    ChannelOptions, Handler, Message, PresenceDiff, PresenceEvent, PresenceMeta, PresenceState,
    RtResult, Subscription, Value,
};

use crate::hub::{lock, runtime, Hub, TaskGuard};

/// One item of a member's queue. Shared, so a broadcast to a thousand
/// members is allocated once.
#[derive(Clone)]
enum Delivery {
    Broadcast(Arc<Message>),
    Presence(Arc<PresenceEvent>),
}

/// Shared by a handle and its current member entry: why the handle was
/// removed from the channel by the hub (queue overflow, shutdown).
#[derive(Default)]
struct Removal(Mutex<Option<String>>);

impl Removal {
    fn set(&self, reason: String) {
        *lock(&self.0) = Some(reason);
    }
    fn clear(&self) {
        *lock(&self.0) = None;
    }
    fn get(&self) -> Option<String> {
        lock(&self.0).clone()
    }
}

/// A joined handle, as the channel sees it.
struct Member {
    tx: mpsc::Sender<Delivery>,
    key: String,
    meta: Option<PresenceMeta>,
    /// Cleared when the member leaves or is removed: its delivery task then
    /// drops whatever is still queued.
    active: Arc<AtomicBool>,
    removal: Arc<Removal>,
}

type Members = BTreeMap<u64, Member>;

/// A channel: its members, by join order.
pub(crate) struct ChannelState {
    name: String,
    hub: Weak<Hub>,
    /// Queue capacity of each member.
    capacity: usize,
    members: Mutex<Members>,
}

impl ChannelState {
    pub(crate) fn new(name: &str, hub: Weak<Hub>, capacity: usize) -> Self {
        ChannelState {
            name: name.to_string(),
            hub,
            capacity,
            members: Mutex::new(BTreeMap::new()),
        }
    }

    /// Removes every member (shutdown). No presence diffs: nobody is left to
    /// receive them.
    pub(crate) fn close(&self, reason: &str) {
        let removed = std::mem::take(&mut *lock(&self.members));
        for m in removed.into_values() {
            m.active.store(false, Ordering::Release);
            m.removal.set(reason.to_string());
        }
    }

    /// Queues `item` for every member `to` accepts; members whose queue is
    /// full are removed (see [`ChannelState::remove_members`]).
    fn fan_out(&self, members: &mut Members, item: &Delivery, to: impl Fn(u64) -> bool) {
        let mut failed = Vec::new();
        for (&id, m) in members.iter() {
            if !to(id) {
                continue;
            }
            if let Err(e) = m.tx.try_send(item.clone()) {
                failed.push((id, self.removal_reason(&e)));
            }
        }
        self.remove_members(members, failed);
    }

    fn removal_reason<T>(&self, e: &mpsc::error::TrySendError<T>) -> String {
        match e {
            mpsc::error::TrySendError::Full(_) => format!(
                "removed from channel {:?} because {} deliveries were waiting for its handlers \
                 (member_queue_capacity); keep handlers short and hand work off to a task",
                self.name, self.capacity
            ),
            mpsc::error::TrySendError::Closed(_) => format!(
                "removed from channel {:?} because its delivery task ended (runtime shut down?)",
                self.name
            ),
        }
    }

    /// Removes members and tells the others about the presence they had.
    /// Telling them may overflow more queues; the work list handles that
    /// without recursion.
    fn remove_members(&self, members: &mut Members, mut pending: Vec<(u64, String)>) {
        while let Some((id, reason)) = pending.pop() {
            let Some(m) = members.remove(&id) else {
                continue;
            };
            m.active.store(false, Ordering::Release);
            m.removal.set(reason);
            if let Some(meta) = m.meta {
                let diff = leaves_diff(m.key, meta);
                for (&other, om) in members.iter() {
                    if let Err(e) = om.tx.try_send(diff.clone()) {
                        pending.push((other, self.removal_reason(&e)));
                    }
                }
            }
        }
    }
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.forget_channel(&self.name);
        }
    }
}

fn leaves_diff(key: String, meta: PresenceMeta) -> Delivery {
    let diff = PresenceDiff::leave(key, meta);
    Delivery::Presence(Arc::new(PresenceEvent::Diff(diff)))
}

fn presence_of(members: &Members) -> PresenceState {
    presence_state_of(
        members
            .values()
            .filter_map(|m| Some((m.key.as_str(), m.meta.as_ref()?))),
    )
}

/// A new presence key: a UUID.
fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The handlers of one handle.
#[derive(Default)]
struct Handlers {
    next: AtomicU64,
    broadcast: Mutex<Vec<(u64, String, Handler<Message>)>>,
    presence: Mutex<Vec<(u64, Handler<PresenceEvent>)>>,
}

impl Handlers {
    fn id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
    fn for_event(&self, event: &str) -> Vec<Handler<Message>> {
        lock(&self.broadcast)
            .iter()
            .filter(|(_, e, _)| e == "*" || e == event)
            .map(|(_, _, h)| h.clone())
            .collect()
    }
    fn presence(&self) -> Vec<Handler<PresenceEvent>> {
        lock(&self.presence)
            .iter()
            .map(|(_, h)| h.clone())
            .collect()
    }
}

/// Calls a handler; a panicking handler does not stop delivery to the others.
fn call<T>(handler: &Handler<T>, value: T) {
    // The panic itself is reported by the panic hook.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handler(value)));
}

/// A member's delivery task: runs its handlers in queue order until the
/// member leaves or is removed (its sender is dropped or `active` cleared).
async fn deliver(
    mut rx: mpsc::Receiver<Delivery>,
    handlers: Arc<Handlers>,
    active: Arc<AtomicBool>,
    _guard: TaskGuard,
) {
    while let Some(item) = rx.recv().await {
        if !active.load(Ordering::Acquire) {
            break;
        }
        match item {
            Delivery::Broadcast(msg) => {
                for h in handlers.for_event(&msg.event) {
                    call(&h, Message::clone(&msg));
                }
            }
            Delivery::Presence(event) => {
                for h in handlers.presence() {
                    call(&h, PresenceEvent::clone(&event));
                }
            }
        }
    }
}

/// One member's handle on a channel (what [`crate::MemoryRealtime`]'s
/// `channel` returns). Dropping it leaves the channel.
pub(crate) struct MemoryChannel {
    hub: Arc<Hub>,
    state: Arc<ChannelState>,
    options: ChannelOptions,
    key: String,
    handlers: Arc<Handlers>,
    /// The member id while joined.
    member: Mutex<Option<u64>>,
    removal: Arc<Removal>,
}

impl MemoryChannel {
    pub(crate) fn new(hub: &Arc<Hub>, name: &str, options: ChannelOptions) -> RtResult<Self> {
        hub.check_open()?;
        let key = presence_key(options.presence_key.as_deref(), new_key)?;
        Ok(MemoryChannel {
            hub: hub.clone(),
            state: hub.channel(name),
            options,
            key,
            handlers: Arc::new(Handlers::default()),
            member: Mutex::new(None),
            removal: Arc::new(Removal::default()),
        })
    }

    /// The error for an operation that needs a joined handle.
    fn not_joined(&self, op: &str) -> Error {
        if let Err(e) = self.hub.check_open() {
            return e;
        }
        not_joined(&self.state.name, op, self.removal.get().as_deref())
    }

    /// The member id, if still a member.
    fn joined_id(&self, members: &Members) -> Option<u64> {
        lock(&self.member).filter(|id| members.contains_key(id))
    }

    fn leave_now(&self) {
        let mut members = lock(&self.state.members);
        let Some(id) = lock(&self.member).take() else {
            return;
        };
        self.removal.clear();
        if let Some(m) = members.remove(&id) {
            m.active.store(false, Ordering::Release);
            if let Some(meta) = m.meta {
                let diff = leaves_diff(m.key, meta);
                self.state.fan_out(&mut members, &diff, |_| true);
            }
        }
    }
}

impl Drop for MemoryChannel {
    fn drop(&mut self) {
        self.leave_now();
    }
}

#[async_trait]
impl Channel for MemoryChannel {
    fn name(&self) -> &str {
        &self.state.name
    }

    async fn join(&self) -> RtResult<()> {
        let op = "channel.join";
        self.hub.check_open().map_err(|e| e.with_operation(op))?;
        let rt = runtime().map_err(|e| e.with_operation(op))?;
        let (rx, active) = {
            // Lock order everywhere: the channel's members, then the handle's
            // member id.
            let mut members = lock(&self.state.members);
            // Checked under the channel lock: a shutdown either happened
            // before (refuse) or will remove this member after.
            self.hub.check_open().map_err(|e| e.with_operation(op))?;
            let mut member = lock(&self.member);
            if member.is_some_and(|id| members.contains_key(&id)) {
                return Ok(());
            }
            let id = self.hub.next_id();
            let (tx, rx) = mpsc::channel(self.state.capacity);
            let active = Arc::new(AtomicBool::new(true));
            let snapshot =
                Delivery::Presence(Arc::new(PresenceEvent::State(presence_of(&members))));
            // The queue is new and has room for at least one item.
            if tx.try_send(snapshot).is_err() {
                return Err(
                    Error::internal("a new member queue refused its first item").with_operation(op)
                );
            }
            members.insert(
                id,
                Member {
                    tx,
                    key: self.key.clone(),
                    meta: None,
                    active: active.clone(),
                    removal: self.removal.clone(),
                },
            );
            *member = Some(id);
            self.removal.clear();
            (rx, active)
        };
        rt.spawn(deliver(
            rx,
            self.handlers.clone(),
            active,
            TaskGuard::new(&self.hub.tasks),
        ));
        Ok(())
    }

    async fn leave(&self) -> RtResult<()> {
        self.leave_now();
        Ok(())
    }

    fn is_joined(&self) -> bool {
        let members = lock(&self.state.members);
        self.joined_id(&members).is_some()
    }

    fn on(&self, event: &str, handler: Handler<Message>) -> Subscription {
        let id = self.handlers.id();
        lock(&self.handlers.broadcast).push((id, event.to_string(), handler));
        let weak = Arc::downgrade(&self.handlers);
        Subscription::new(move || {
            if let Some(h) = weak.upgrade() {
                let removed = {
                    let mut list = lock(&h.broadcast);
                    list.iter()
                        .position(|(i, _, _)| *i == id)
                        .map(|pos| list.remove(pos))
                };
                // Dropped outside the lock: the handler may own subscriptions.
                drop(removed);
            }
        })
    }

    async fn send(&self, event: &str, payload: Value) -> RtResult<()> {
        let op = "channel.send";
        validate_broadcast(event, &payload, self.hub.config.max_payload_bytes)
            .map_err(|e| e.with_operation(op))?;
        let msg = Delivery::Broadcast(Arc::new(Message {
            channel: self.state.name.clone(),
            event: event.to_string(),
            payload,
        }));
        let mut members = lock(&self.state.members);
        let Some(me) = self.joined_id(&members) else {
            drop(members);
            return Err(self.not_joined("send").with_operation(op));
        };
        let include_self = self.options.broadcast_self;
        // Queued for every member before returning: this is also the `ack`
        // point (the hub has accepted the message).
        self.state
            .fan_out(&mut members, &msg, |id| include_self || id != me);
        Ok(())
    }

    async fn track(&self, state: Value) -> RtResult<()> {
        let op = "channel.track";
        check_json_size(
            &state,
            self.hub.config.max_payload_bytes,
            "the presence state",
        )
        .map_err(|e| e.with_operation(op))?;
        let mut members = lock(&self.state.members);
        let Some(me) = self.joined_id(&members) else {
            drop(members);
            return Err(self.not_joined("track").with_operation(op));
        };
        let meta = PresenceMeta {
            presence_ref: uuid::Uuid::new_v4().simple().to_string(),
            state,
        };
        let Some(m) = members.get_mut(&me) else {
            return Err(Error::internal("member vanished under the channel lock"));
        };
        let old = m.meta.replace(meta.clone());
        let mut diff = PresenceDiff::default();
        diff.joins.insert(self.key.clone(), vec![meta]);
        if let Some(old) = old {
            diff.leaves.insert(self.key.clone(), vec![old]);
        }
        let item = Delivery::Presence(Arc::new(PresenceEvent::Diff(diff)));
        self.state.fan_out(&mut members, &item, |_| true);
        Ok(())
    }

    async fn untrack(&self) -> RtResult<()> {
        let mut members = lock(&self.state.members);
        let Some(me) = self.joined_id(&members) else {
            // Not a member: nothing is tracked.
            return Ok(());
        };
        let old = members.get_mut(&me).and_then(|m| m.meta.take());
        if let Some(old) = old {
            let item = leaves_diff(self.key.clone(), old);
            self.state.fan_out(&mut members, &item, |_| true);
        }
        Ok(())
    }

    async fn presence_state(&self) -> RtResult<PresenceState> {
        let members = lock(&self.state.members);
        if self.joined_id(&members).is_none() {
            drop(members);
            return Err(self
                .not_joined("presence_state")
                .with_operation("channel.presence_state"));
        }
        Ok(presence_of(&members))
    }

    fn on_presence(&self, handler: Handler<PresenceEvent>) -> Subscription {
        let id = self.handlers.id();
        lock(&self.handlers.presence).push((id, handler));
        let weak = Arc::downgrade(&self.handlers);
        Subscription::new(move || {
            if let Some(h) = weak.upgrade() {
                let removed = {
                    let mut list = lock(&h.presence);
                    list.iter()
                        .position(|(i, _)| *i == id)
                        .map(|pos| list.remove(pos))
                };
                drop(removed);
            }
        })
    }
}
