//! Handlers of a channel handle and the bounded queue + task that calls
//! them, shared by in-process handles (hub mode) and client handles.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use truststream_core_realtime::{
    Handler, Message, PresenceDiff, PresenceEvent, PresenceState, Subscription,
};

use crate::hub::{lock, Broadcast, Counters, Push, Sink, TaskGuard};

/// One item of a handle's queue (shared: a fan-out allocates it once).
#[derive(Clone)]
pub(crate) enum Delivery {
    Broadcast(Arc<Broadcast>),
    State(Arc<PresenceState>),
    Diff(Arc<PresenceDiff>),
}

/// The handlers of one handle, and why the hub removed it (if it did).
pub(crate) struct Inbox {
    /// The channel name handlers see (without `realtime:`).
    pub channel: String,
    next: AtomicU64,
    broadcast: Mutex<Vec<(u64, String, Handler<Message>)>>,
    presence: Mutex<Vec<(u64, Handler<PresenceEvent>)>>,
    removal: Mutex<Option<String>>,
}

impl Inbox {
    pub(crate) fn new(channel: &str) -> Arc<Self> {
        Arc::new(Inbox {
            channel: channel.to_string(),
            next: AtomicU64::new(0),
            broadcast: Mutex::new(Vec::new()),
            presence: Mutex::new(Vec::new()),
            removal: Mutex::new(None),
        })
    }

    pub(crate) fn set_removal(&self, reason: &str) {
        *lock(&self.removal) = Some(reason.to_string());
    }

    pub(crate) fn clear_removal(&self) {
        *lock(&self.removal) = None;
    }

    pub(crate) fn removal(&self) -> Option<String> {
        lock(&self.removal).clone()
    }

    /// Registers a broadcast handler (`"*"`: every event).
    pub(crate) fn on(self: &Arc<Self>, event: &str, handler: Handler<Message>) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.broadcast).push((id, event.to_string(), handler));
        let weak = Arc::downgrade(self);
        Subscription::new(move || {
            if let Some(inbox) = weak.upgrade() {
                let removed = {
                    let mut list = lock(&inbox.broadcast);
                    list.iter()
                        .position(|(i, _, _)| *i == id)
                        .map(|pos| list.remove(pos))
                };
                // Dropped outside the lock: the handler may own subscriptions.
                drop(removed);
            }
        })
    }

    /// Registers a presence handler.
    pub(crate) fn on_presence(self: &Arc<Self>, handler: Handler<PresenceEvent>) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.presence).push((id, handler));
        let weak = Arc::downgrade(self);
        Subscription::new(move || {
            if let Some(inbox) = weak.upgrade() {
                let removed = {
                    let mut list = lock(&inbox.presence);
                    list.iter()
                        .position(|(i, _)| *i == id)
                        .map(|pos| list.remove(pos))
                };
                drop(removed);
            }
        })
    }

    fn deliver(&self, item: Delivery) {
        match item {
            Delivery::Broadcast(b) => {
                // Binary broadcasts never reach an inbox (see LocalSink).
                let Some(payload) = b.json() else {
                    return;
                };
                let handlers: Vec<Handler<Message>> = lock(&self.broadcast)
                    .iter()
                    .filter(|(_, e, _)| e == "*" || *e == b.event)
                    .map(|(_, _, h)| h.clone())
                    .collect();
                for h in handlers {
                    call(
                        &h,
                        Message {
                            channel: self.channel.clone(),
                            event: b.event.clone(),
                            payload: payload.clone(),
                        },
                    );
                }
            }
            Delivery::State(s) => {
                self.presence_event(PresenceEvent::State(PresenceState::clone(&s)))
            }
            Delivery::Diff(d) => self.presence_event(PresenceEvent::Diff(PresenceDiff::clone(&d))),
        }
    }

    fn presence_event(&self, event: PresenceEvent) {
        let handlers: Vec<Handler<PresenceEvent>> = lock(&self.presence)
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        for h in handlers {
            call(&h, event.clone());
        }
    }
}

/// Calls a handler; a panicking handler does not stop delivery to the others
/// (the panic itself is reported by the panic hook).
fn call<T>(handler: &Handler<T>, value: T) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handler(value)));
}

/// The queue of one joined handle. Dropping every sender (the hub removed
/// the member, or the handle left) ends its delivery task.
pub(crate) struct Queue {
    tx: mpsc::Sender<Delivery>,
    /// Cleared when the handle leaves or is removed: the delivery task then
    /// drops whatever is still queued.
    pub active: Arc<AtomicBool>,
    inbox: Arc<Inbox>,
    capacity: usize,
}

impl Queue {
    /// A queue of `capacity` deliveries and its delivery task.
    pub(crate) fn start(
        inbox: &Arc<Inbox>,
        capacity: usize,
        counters: &Arc<Counters>,
    ) -> Arc<Queue> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let active = Arc::new(AtomicBool::new(true));
        tokio::spawn(run(
            rx,
            inbox.clone(),
            active.clone(),
            TaskGuard::new(counters),
        ));
        Arc::new(Queue {
            tx,
            active,
            inbox: inbox.clone(),
            capacity,
        })
    }

    /// Queues `item` without waiting.
    pub(crate) fn offer(&self, item: Delivery) -> Result<(), String> {
        self.tx.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => format!(
                "removed from channel {:?} because {} deliveries were waiting for its handlers \
                 (queue capacity); keep handlers short and hand work off to a task",
                self.inbox.channel, self.capacity
            ),
            mpsc::error::TrySendError::Closed(_) => format!(
                "removed from channel {:?} because its delivery task ended",
                self.inbox.channel
            ),
        })
    }

    pub(crate) fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
    }
}

async fn run(
    mut rx: mpsc::Receiver<Delivery>,
    inbox: Arc<Inbox>,
    active: Arc<AtomicBool>,
    _guard: TaskGuard,
) {
    while let Some(item) = rx.recv().await {
        if !active.load(Ordering::Acquire) {
            break;
        }
        inbox.deliver(item);
    }
}

/// An in-process member's sink: its queue.
pub(crate) struct LocalSink(pub Arc<Queue>);

impl Sink for LocalSink {
    fn push(&self, _topic: &str, _join_ref: &str, push: &Push) -> Result<(), String> {
        let item = match push {
            // A handler's `Message.payload` is JSON: binary broadcasts are
            // not delivered in process.
            Push::Broadcast(b) if b.json().is_none() => return Ok(()),
            Push::Broadcast(b) => Delivery::Broadcast(b.clone()),
            Push::PresenceDiff(d) => Delivery::Diff(d.diff.clone()),
            // In-process handles have no postgres_changes bindings.
            Push::Change { .. } => return Ok(()),
        };
        self.0.offer(item)
    }

    fn removed(&self, _topic: &str, _join_ref: &str, reason: &str) {
        self.0.deactivate();
        self.0.inbox.set_removal(reason);
    }
}
