//! The handlers a channel handle calls (shared by the server mode's
//! in-process handles and the client mode's handles).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use truststream_core_realtime::{Handler, Message, PresenceEvent, Subscription};

use crate::hub::lock;

type Entries<T> = Mutex<Vec<(u64, T)>>;

/// Broadcast and presence handlers of one handle.
#[derive(Default)]
pub(crate) struct Handlers {
    next: AtomicU64,
    messages: Entries<(String, Handler<Message>)>,
    presence: Entries<Handler<PresenceEvent>>,
}

impl Handlers {
    pub(crate) fn on(self: &Arc<Self>, event: &str, h: Handler<Message>) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.messages).push((id, (event.to_string(), h)));
        let weak = Arc::downgrade(self);
        Subscription::new(move || {
            if let Some(hs) = weak.upgrade() {
                let removed: Vec<_> = {
                    let mut m = lock(&hs.messages);
                    let (gone, kept): (Vec<_>, Vec<_>) = m.drain(..).partition(|(i, _)| *i == id);
                    *m = kept;
                    gone
                };
                drop(removed);
            }
        })
    }

    pub(crate) fn on_presence(self: &Arc<Self>, h: Handler<PresenceEvent>) -> Subscription {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.presence).push((id, h));
        let weak = Arc::downgrade(self);
        Subscription::new(move || {
            if let Some(hs) = weak.upgrade() {
                let removed: Vec<_> = {
                    let mut p = lock(&hs.presence);
                    let (gone, kept): (Vec<_>, Vec<_>) = p.drain(..).partition(|(i, _)| *i == id);
                    *p = kept;
                    gone
                };
                drop(removed);
            }
        })
    }

    /// Calls the handlers of `m.event` and `"*"`, outside the lock; a
    /// panicking handler does not stop the others.
    pub(crate) fn message(&self, m: &Message) {
        let hs: Vec<Handler<Message>> = lock(&self.messages)
            .iter()
            .filter(|(_, (ev, _))| ev == "*" || *ev == m.event)
            .map(|(_, (_, h))| h.clone())
            .collect();
        for h in hs {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| h(m.clone())));
        }
    }

    /// Calls the presence handlers.
    pub(crate) fn presence(&self, ev: &PresenceEvent) {
        let hs: Vec<Handler<PresenceEvent>> = lock(&self.presence)
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        for h in hs {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| h(ev.clone())));
        }
    }
}
