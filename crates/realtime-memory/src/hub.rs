//! The shared state behind a [`crate::MemoryRealtime`]: channels by name, row
//! subscriptions, the change feed's status, and the task gauge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use truststream_core::Error;
use truststream_core_db::Database;
use truststream_core_realtime::feed::{self, FeedHealth, RowSubscriptions};
use truststream_core_realtime::RtResult;

use crate::channel::ChannelState;
use crate::MemoryRealtimeConfig;

pub(crate) struct Hub {
    pub(crate) config: MemoryRealtimeConfig,
    pub(crate) db: Option<Arc<dyn Database>>,
    closed: AtomicBool,
    next_id: AtomicU64,
    /// Live background tasks (see [`TaskGuard`]).
    pub(crate) tasks: Arc<AtomicUsize>,
    /// Channels by name. Entries are weak: a channel lives while a handle on
    /// it does, and its `Drop` removes the entry.
    channels: Mutex<HashMap<String, Weak<ChannelState>>>,
    /// Row subscriptions.
    pub(crate) row_subs: Arc<RowSubscriptions>,
    /// Whether the change feed reader runs: started by the first row
    /// subscription (the async lock makes concurrent first subscriptions
    /// start one reader).
    pub(crate) feed_started: tokio::sync::Mutex<bool>,
    /// Set to `true` on shutdown; background tasks watch it.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    pub(crate) feed_health: FeedHealth,
}

impl Hub {
    pub(crate) fn new(config: MemoryRealtimeConfig, db: Option<Arc<dyn Database>>) -> Arc<Hub> {
        Arc::new(Hub {
            config,
            db,
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            tasks: Arc::new(AtomicUsize::new(0)),
            channels: Mutex::new(HashMap::new()),
            row_subs: RowSubscriptions::new(),
            feed_started: tokio::sync::Mutex::new(false),
            shutdown: tokio::sync::watch::Sender::new(false),
            feed_health: FeedHealth::default(),
        })
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// `Unavailable` once the provider was dropped.
    pub(crate) fn check_open(&self) -> RtResult<()> {
        if self.is_closed() {
            return Err(Error::unavailable(
                "the realtime provider was shut down (the MemoryRealtime was dropped); build a new one",
            )
            .permanent());
        }
        Ok(())
    }

    pub(crate) fn row_changes_available(&self) -> bool {
        feed::row_changes_available(self.db.as_ref())
    }

    /// The channel `name`, created if no handle holds it.
    pub(crate) fn channel(self: &Arc<Self>, name: &str) -> Arc<ChannelState> {
        let mut channels = lock(&self.channels);
        if let Some(existing) = channels.get(name).and_then(Weak::upgrade) {
            return existing;
        }
        let state = Arc::new(ChannelState::new(
            name,
            Arc::downgrade(self),
            self.config.member_queue_capacity,
        ));
        channels.insert(name.to_string(), Arc::downgrade(&state));
        state
    }

    /// Removes the entry of `name` if no handle holds it any more (called by
    /// the channel's `Drop`; a newer channel of the same name is kept).
    pub(crate) fn forget_channel(&self, name: &str) {
        let mut channels = lock(&self.channels);
        if channels.get(name).is_some_and(|w| w.strong_count() == 0) {
            channels.remove(name);
        }
    }

    pub(crate) fn channel_count(&self) -> usize {
        lock(&self.channels)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Ends everything: members are removed (their delivery tasks end), the
    /// change feed reader stops, row subscriptions are dropped.
    pub(crate) fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        // Upgrade under the lock, work outside it: dropping the last strong
        // reference runs the channel's Drop, which takes this lock again.
        let live: Vec<Arc<ChannelState>> = lock(&self.channels)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for ch in &live {
            ch.close("the realtime provider was shut down");
        }
        drop(live);
        self.shutdown.send_replace(true);
        self.row_subs.clear();
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here
/// leaves the data consistent, and handler panics never happen under a lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts a background task while it lives.
pub(crate) struct TaskGuard(Arc<AtomicUsize>);

impl TaskGuard {
    pub(crate) fn new(gauge: &Arc<AtomicUsize>) -> Self {
        gauge.fetch_add(1, Ordering::SeqCst);
        TaskGuard(gauge.clone())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The current tokio runtime, or `Unavailable` outside one.
pub(crate) fn runtime() -> RtResult<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|_| {
        Error::unavailable(
            "realtime memory needs a tokio runtime to deliver messages; call it from within one",
        )
        .permanent()
    })
}
