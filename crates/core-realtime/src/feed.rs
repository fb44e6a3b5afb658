//! What a realtime provider needs to feed row subscriptions from a
//! database change feed, written once: the subscriptions themselves
//! ([`RowSubscriptions`]), the feed's health record ([`FeedHealth`]) and the
//! reader loop that re-subscribes to a feed that ended
//! ([`follow_change_feed`]).
//!
//! No I/O here: the reader is plain async code over a [`FeedSource`] and a
//! `sleep` the provider passes in (its runtime's timer); the provider
//! spawns it, and stops it by dropping (or aborting) the task.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use truststream_core::{Error, Health, HealthStatus};
use truststream_core_db::{eval, ChangeKind, ChangeStream, ColumnRef, Database, Filter, Row};

use crate::{ChangeSpec, Handler, RowChange, RtResult, Subscription};

/// The row a row filter looks at: the new row, the old row for deletes
/// (whichever the change has when the other is missing).
pub fn filter_row(change: &RowChange) -> Option<&Row> {
    match change.kind {
        ChangeKind::Delete => change.old.as_ref().or(change.new.as_ref()),
        ChangeKind::Insert | ChangeKind::Update => change.new.as_ref().or(change.old.as_ref()),
    }
}

/// Whether `change`'s [`filter_row`] matches `filter`. A column the row
/// does not have is NULL, so comparisons with it are unknown and do not
/// match; a change without a row matches nothing.
pub fn filter_matches(filter: &Filter, change: &RowChange) -> bool {
    let Some(row) = filter_row(change) else {
        return false;
    };
    let lookup =
        |c: &ColumnRef| -> Result<Option<&serde_json::Value>, Error> { Ok(row.get(&c.column)) };
    eval::matches(filter, &lookup).unwrap_or(false)
}

/// Whether row subscriptions can be fed: a database is configured and has
/// a change feed.
pub fn row_changes_available(db: Option<&Arc<dyn Database>>) -> bool {
    db.is_some_and(|db| db.capabilities().change_feed)
}

/// One registered row subscription.
struct RowSub {
    spec: ChangeSpec,
    handler: Handler<RowChange>,
    /// Held while registered (see [`RowSubscriptions::add`]).
    _keep: Box<dyn Any + Send + Sync>,
}

/// The row subscriptions of a provider
/// ([`Realtime::subscribe_changes`](crate::Realtime::subscribe_changes)):
/// registered with [`RowSubscriptions::add`], called by
/// [`RowSubscriptions::dispatch`] for each change the feed delivers.
#[derive(Default)]
pub struct RowSubscriptions {
    next_id: AtomicU64,
    subs: Mutex<BTreeMap<u64, Arc<RowSub>>>,
}

impl RowSubscriptions {
    /// No subscriptions.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers `handler` for the changes `spec` matches, once `spec` is
    /// valid ([`ChangeSpec::validate`]). Dropping the returned
    /// [`Subscription`] (or [`RowSubscriptions::clear`]) removes it and
    /// drops `keep`, which it holds until then (e.g. the provider's hold on
    /// a table's feed; `()` for nothing).
    pub fn add(
        self: &Arc<Self>,
        spec: ChangeSpec,
        handler: Handler<RowChange>,
        keep: impl Any + Send + Sync,
    ) -> RtResult<Subscription> {
        spec.validate()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = RowSub {
            spec,
            handler,
            _keep: Box::new(keep),
        };
        lock(&self.subs).insert(id, Arc::new(sub));
        let weak = Arc::downgrade(self);
        Ok(Subscription::new(move || {
            if let Some(subs) = weak.upgrade() {
                let removed = lock(&subs.subs).remove(&id);
                // Dropped outside the lock: the handler may own
                // subscriptions.
                drop(removed);
            }
        }))
    }

    /// Calls the handler of every subscription `change` matches, in
    /// registration order, outside every lock. A panicking handler is
    /// reported by the panic hook and does not stop the others.
    pub fn dispatch(&self, change: &RowChange) {
        let subs: Vec<Arc<RowSub>> = lock(&self.subs)
            .values()
            .filter(|s| s.spec.matches(change))
            .cloned()
            .collect();
        for sub in subs {
            let handler = &sub.handler;
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handler(change.clone())));
        }
    }

    /// Removes every subscription (the provider shuts down); their handlers
    /// and what they keep are dropped outside the lock.
    pub fn clear(&self) {
        let removed = std::mem::take(&mut *lock(&self.subs));
        drop(removed);
    }

    /// How many subscriptions are registered.
    pub fn len(&self) -> usize {
        lock(&self.subs).len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for RowSubscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowSubscriptions")
            .field("len", &self.len())
            .finish()
    }
}

/// What a provider's `health()` says about its change feed: lost changes
/// and lost connections, and whether the feed is down right now.
#[derive(Debug, Default)]
pub struct FeedHealth(Mutex<FeedStatus>);

#[derive(Debug, Default)]
struct FeedStatus {
    /// Lag errors and disconnections seen.
    problems: u64,
    last_problem_at: Option<Instant>,
    last_error: Option<String>,
    /// The feed ended and the reader is re-subscribing.
    disconnected: bool,
}

impl FeedHealth {
    /// How long a problem keeps the provider degraded.
    pub const DEGRADED_FOR: Duration = Duration::from_secs(60);

    /// Records a problem: changes were lost (`disconnected == false`), or
    /// the feed is down (`true`, until [`FeedHealth::record_connected`]).
    pub fn record_problem(&self, message: impl Into<String>, disconnected: bool) {
        let mut status = lock(&self.0);
        status.problems += 1;
        status.last_problem_at = Some(Instant::now());
        status.last_error = Some(message.into());
        status.disconnected = disconnected;
    }

    /// The feed is back.
    pub fn record_connected(&self) {
        lock(&self.0).disconnected = false;
    }

    /// Why the provider is degraded, if it is: the feed is down, or it had
    /// a problem within [`FeedHealth::DEGRADED_FOR`].
    pub fn problem(&self) -> Option<String> {
        let status = lock(&self.0);
        if status.disconnected {
            return Some(format!(
                "change feed disconnected, reconnecting: {}",
                status.last_error.as_deref().unwrap_or("feed ended")
            ));
        }
        match status.last_problem_at {
            Some(at) if at.elapsed() < Self::DEGRADED_FOR => Some(format!(
                "the change feed lost changes or its connection {} time(s) so far, the last {}s ago \
                 (row subscribers may have missed changes): {}",
                status.problems,
                at.elapsed().as_secs(),
                status.last_error.as_deref().unwrap_or("unknown")
            )),
            _ => None,
        }
    }
}

/// A health report measured since `started`: healthy, or degraded with
/// `problem`.
pub fn health_report(started: Instant, problem: Option<String>) -> Health {
    let latency = started.elapsed();
    match problem {
        None => Health::healthy(latency),
        Some(message) => Health {
            status: HealthStatus::Degraded,
            latency,
            message: Some(message),
        },
    }
}

/// Where a change feed comes from, again after it ended.
#[async_trait]
pub trait FeedSource: Send + Sync {
    /// A new subscription to the feed.
    async fn subscribe(&self) -> RtResult<ChangeStream>;
}

/// The change feed of a database: of one table, or of all (`None`).
#[derive(Clone)]
pub struct DatabaseFeed {
    /// The database.
    pub db: Arc<dyn Database>,
    /// The table, or `None` for every table.
    pub table: Option<String>,
}

#[async_trait]
impl FeedSource for DatabaseFeed {
    async fn subscribe(&self) -> RtResult<ChangeStream> {
        self.db.subscribe_changes(self.table.as_deref()).await
    }
}

/// What a feed reader delivers to: the provider's hub.
pub trait FeedTarget: Send + Sync {
    /// A committed change, in feed order.
    fn deliver(&self, change: RowChange);
    /// Where the reader records lost changes and connections.
    fn feed_health(&self) -> &FeedHealth;
}

/// The first wait before subscribing again to a feed that ended; it doubles
/// up to [`MAX_BACKOFF`] while attempts fail.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to subscribe again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reads `stream` into `target` until `target` is dropped. An error item
/// (changes were lost) is recorded in its [`FeedHealth`]; a stream that
/// ends is recorded as a disconnection and `source` is subscribed again,
/// after `sleep(backoff)` ([`FIRST_BACKOFF`] doubling to [`MAX_BACKOFF`]),
/// until it succeeds.
///
/// It ends only when `target` is gone: stop it earlier by dropping the
/// future (aborting its task, or racing it against a shutdown signal).
pub async fn follow_change_feed<T, S, F>(
    target: Weak<T>,
    source: &dyn FeedSource,
    mut stream: ChangeStream,
    sleep: S,
) where
    T: FeedTarget + ?Sized,
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    loop {
        let item = stream.recv().await;
        let Some(t) = target.upgrade() else {
            return;
        };
        match item {
            Some(Ok(change)) => t.deliver(change),
            Some(Err(e)) => t.feed_health().record_problem(e.to_string(), false),
            None => {
                t.feed_health()
                    .record_problem("the database change feed ended", true);
                drop(t);
                match subscribe_again(&target, source, &sleep).await {
                    Some(s) => stream = s,
                    None => return,
                }
            }
        }
    }
}

/// Subscribes to `source` again with backoff; `None` once `target` is gone.
async fn subscribe_again<T, S, F>(
    target: &Weak<T>,
    source: &dyn FeedSource,
    sleep: &S,
) -> Option<ChangeStream>
where
    T: FeedTarget + ?Sized,
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let result = source.subscribe().await;
        let t = target.upgrade()?;
        match result {
            Ok(stream) => {
                t.feed_health().record_connected();
                return Some(stream);
            }
            Err(e) => t.feed_health().record_problem(
                format!("re-subscribing to the database change feed failed: {e}"),
                true,
            ),
        }
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here
/// leaves the data consistent, and handlers never run under a lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::{json, Value};
    use std::collections::VecDeque;
    use truststream_core_db::col;

    fn row(v: Value) -> Option<Row> {
        v.as_object().cloned()
    }

    fn change(table: &str, kind: ChangeKind, old: Option<Row>, new: Option<Row>) -> RowChange {
        RowChange {
            table: table.into(),
            kind,
            key: json!("a"),
            old,
            new,
            committed_at: chrono::Utc::now(),
        }
    }

    fn insert(table: &str, v: Value) -> RowChange {
        change(table, ChangeKind::Insert, None, row(v))
    }

    #[test]
    fn filters_look_at_the_new_row_and_at_the_old_row_of_deletes() {
        let f = col("status").eq("active");
        let active = row(json!({"id": "a", "status": "active"}));
        let idle = row(json!({"id": "a", "status": "idle"}));
        let t = "items";
        assert!(filter_matches(
            &f,
            &change(t, ChangeKind::Insert, None, active.clone())
        ));
        assert!(!filter_matches(
            &f,
            &change(t, ChangeKind::Insert, None, idle.clone())
        ));
        assert!(!filter_matches(
            &f,
            &change(t, ChangeKind::Update, active.clone(), idle.clone())
        ));
        assert!(filter_matches(
            &f,
            &change(t, ChangeKind::Delete, active, None)
        ));
        assert!(!filter_matches(
            &f,
            &change(t, ChangeKind::Delete, idle, None)
        ));
        // A missing column is NULL.
        let bare = insert(t, json!({"id": "a"}));
        assert!(!filter_matches(&col("status").eq("x"), &bare));
        assert!(filter_matches(&col("status").is_null(), &bare));
        assert!(!filter_matches(
            &f,
            &change(t, ChangeKind::Delete, None, None)
        ));
    }

    #[test]
    fn subscriptions_get_what_their_spec_matches_until_dropped() {
        let subs = RowSubscriptions::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = |name: &'static str| {
            let seen = seen.clone();
            crate::handler(move |c: RowChange| lock(&seen).push((name, c.table)))
        };
        let kept = Arc::new(());
        let all = subs
            .add(ChangeSpec::table("items"), record("all"), kept.clone())
            .unwrap();
        let active = subs
            .add(
                ChangeSpec::table("items").filter(col("status").eq("active")),
                record("active"),
                kept.clone(),
            )
            .unwrap();
        // A panicking handler does not stop the others.
        let _panics = subs
            .add(
                ChangeSpec::table("items"),
                crate::handler(|_| panic!("handler bug")),
                (),
            )
            .unwrap();
        assert_eq!(subs.len(), 3);
        subs.dispatch(&insert("items", json!({"status": "active"})));
        subs.dispatch(&insert("items", json!({"status": "idle"})));
        subs.dispatch(&insert("other", json!({"status": "active"})));
        assert_eq!(
            *lock(&seen),
            vec![
                ("all", "items".into()),
                ("active", "items".into()),
                ("all", "items".into())
            ]
        );
        // Dropping a subscription removes it and drops what it kept.
        assert_eq!(Arc::strong_count(&kept), 3);
        drop(all);
        assert_eq!(Arc::strong_count(&kept), 2);
        lock(&seen).clear();
        subs.dispatch(&insert("items", json!({"status": "active"})));
        assert_eq!(*lock(&seen), vec![("active", "items".into())]);
        // So does clearing them all (shutdown).
        subs.clear();
        assert!(subs.is_empty());
        assert_eq!(Arc::strong_count(&kept), 1);
        drop(active);
    }

    #[test]
    fn invalid_specs_are_refused() {
        let subs = RowSubscriptions::new();
        let e = subs
            .add(ChangeSpec::table("bad name"), crate::handler(|_| {}), ())
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(subs.is_empty());
    }

    #[test]
    fn health_is_degraded_while_disconnected_and_for_a_while_after_a_problem() {
        let h = FeedHealth::default();
        assert_eq!(h.problem(), None);
        h.record_problem("lost 3 changes", false);
        let p = h.problem().unwrap();
        assert!(
            p.contains("lost 3 changes") && p.contains("1 time(s)"),
            "{p}"
        );
        h.record_problem("the feed ended", true);
        assert!(h.problem().unwrap().starts_with("change feed disconnected"));
        h.record_connected();
        assert!(h.problem().unwrap().contains("2 time(s)"));
        let report = health_report(Instant::now(), h.problem());
        assert_eq!(report.status, HealthStatus::Degraded);
        assert_eq!(
            health_report(Instant::now(), None).status,
            HealthStatus::Healthy
        );
    }

    /// A target that records what it got.
    #[derive(Default)]
    struct Recorder {
        changes: Mutex<Vec<String>>,
        health: FeedHealth,
    }

    impl FeedTarget for Recorder {
        fn deliver(&self, change: RowChange) {
            lock(&self.changes).push(change.table);
        }
        fn feed_health(&self) -> &FeedHealth {
            &self.health
        }
    }

    /// A source that answers each subscription from a script, and counts
    /// them.
    struct Scripted(
        Mutex<VecDeque<RtResult<Vec<RtResult<RowChange>>>>>,
        AtomicU64,
    );

    #[async_trait]
    impl FeedSource for Scripted {
        async fn subscribe(&self) -> RtResult<ChangeStream> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let next = lock(&self.0).pop_front();
            match next {
                Some(Ok(items)) => Ok(stream_of(items)),
                Some(Err(e)) => Err(e),
                // Nothing scripted: a feed that never ends.
                None => Ok(ChangeStream::new(futures::stream::pending())),
            }
        }
    }

    fn stream_of(items: Vec<RtResult<RowChange>>) -> ChangeStream {
        ChangeStream::new(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn the_reader_delivers_records_problems_and_subscribes_again() {
        let target = Arc::new(Recorder::default());
        let source = Scripted(
            Mutex::new(VecDeque::from([
                Err(Error::unavailable("database restarting")),
                Ok(vec![Ok(insert("b", json!({})))]),
                Ok(vec![Ok(insert("c", json!({})))]),
            ])),
            AtomicU64::new(0),
        );
        let first = stream_of(vec![
            Ok(insert("a", json!({}))),
            Err(Error::unavailable("lagged: 2 changes lost")),
        ]);
        let waits = Arc::new(Mutex::new(Vec::new()));
        let w = waits.clone();
        let reader = follow_change_feed(Arc::downgrade(&target), &source, first, move |d| {
            lock(&w).push(d);
            std::future::ready(())
        });
        // After the script, a feed that never ends: stop once the reader
        // waits on it (the reader is polled first, on this one thread).
        tokio::select! {
            biased;
            _ = reader => panic!("the reader ended while its target lives"),
            _ = async {
                while source.1.load(Ordering::SeqCst) < 4 {
                    tokio::task::yield_now().await;
                }
            } => {}
        }
        assert_eq!(*lock(&target.changes), vec!["a", "b", "c"]);
        // A lag, an end, a failed subscription, two more ends: five
        // problems; connected again now.
        let p = target.health.problem().unwrap();
        assert!(
            p.starts_with("the change feed lost") && p.contains("5 time(s)"),
            "{p}"
        );
        // The backoff doubles while attempts fail, and starts over after a
        // success.
        assert_eq!(
            *lock(&waits),
            vec![
                FIRST_BACKOFF,
                FIRST_BACKOFF * 2,
                FIRST_BACKOFF,
                FIRST_BACKOFF
            ]
        );
    }

    #[tokio::test]
    async fn the_reader_ends_when_its_target_is_gone() {
        let target = Arc::new(Recorder::default());
        let weak = Arc::downgrade(&target);
        drop(target);
        let source = Scripted(Mutex::new(VecDeque::new()), AtomicU64::new(0));
        let first = stream_of(vec![Ok(insert("a", json!({})))]);
        follow_change_feed(weak, &source, first, |_| std::future::ready(())).await;
    }
}
