//! Row change subscriptions, fed by the database's change feed.
//!
//! One reader task per hub consumes `db.subscribe_changes(None)` and calls
//! the handlers of every matching subscription, in feed order. A lag error
//! from the feed (changes were lost) is counted and degrades `health()`; a
//! feed that ends is re-subscribed with backoff.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use truststream_core::Error;
use truststream_core_db::{eval, ident, ChangeKind, ChangeStream, ColumnRef, Database, Filter};
use truststream_core_realtime::{ChangeSpec, Handler, RowChange, RtResult, Subscription, Value};

use crate::hub::{lock, runtime, Hub, TaskGuard};

/// One row subscription.
pub(crate) struct RowSub {
    spec: ChangeSpec,
    handler: Handler<RowChange>,
}

/// What `health()` reports about the change feed.
#[derive(Debug, Default)]
pub(crate) struct FeedStatus {
    /// Lag errors and disconnections seen.
    pub(crate) problems: u64,
    pub(crate) last_problem_at: Option<Instant>,
    pub(crate) last_error: Option<String>,
    /// The feed ended and the reader is re-subscribing.
    pub(crate) disconnected: bool,
}

/// Longest wait between two attempts to re-subscribe to an ended feed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) async fn subscribe(
    hub: &Arc<Hub>,
    spec: ChangeSpec,
    handler: Handler<RowChange>,
) -> RtResult<Subscription> {
    hub.check_open()?;
    let Some(db) = hub.db.clone() else {
        return Err(Error::unsupported(
            "row change subscriptions need a database change feed: build the hub with \
             MemoryRealtime::with_change_feed(db), or configure a database for the runtime",
        ));
    };
    if !db.capabilities().change_feed {
        return Err(Error::unsupported(format!(
            "row change subscriptions need a change feed, and the {:?} database provider has none",
            db.info().name
        )));
    }
    validate_spec(&spec)?;
    ensure_feed(hub, &db).await?;
    let id = hub.next_id();
    lock(&hub.row_subs).insert(id, Arc::new(RowSub { spec, handler }));
    let weak = Arc::downgrade(hub);
    Ok(Subscription::new(move || {
        if let Some(hub) = weak.upgrade() {
            let removed = lock(&hub.row_subs).remove(&id);
            // Dropped outside the lock: the handler may own subscriptions.
            drop(removed);
        }
    }))
}

fn validate_spec(spec: &ChangeSpec) -> RtResult<()> {
    ident::table(&spec.table)?;
    if let Some(key) = &spec.key {
        if key.is_null() || key.is_array() || key.is_object() {
            return Err(Error::invalid_input(format!(
                "a row subscription's key must be a primary-key value (string, number or bool), got {key}"
            ))
            .with_context("table", spec.table.clone()));
        }
    }
    if let Some(filter) = &spec.filter {
        filter
            .validate()
            .map_err(|e| e.with_context("table", spec.table.clone()))?;
        for column in eval::filter_columns(filter) {
            if let Some(t) = &column.table {
                if *t != spec.table {
                    return Err(Error::invalid_input(format!(
                        "the filter of a subscription to table {} refers to column {column} of another table",
                        spec.table
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Starts the feed reader unless it runs. Returns once the database has
/// accepted the subscription, so every change committed after it is seen.
async fn ensure_feed(hub: &Arc<Hub>, db: &Arc<dyn Database>) -> RtResult<()> {
    let mut started = hub.feed_started.lock().await;
    if *started {
        return Ok(());
    }
    let rt = runtime()?;
    let stream = db
        .subscribe_changes(None)
        .await
        .map_err(|e| e.with_context("while", "subscribing to the database change feed"))?;
    rt.spawn(read_feed(
        Arc::downgrade(hub),
        db.clone(),
        stream,
        hub.shutdown.subscribe(),
        TaskGuard::new(&hub.tasks),
    ));
    *started = true;
    Ok(())
}

async fn read_feed(
    hub: Weak<Hub>,
    db: Arc<dyn Database>,
    mut stream: ChangeStream,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    _guard: TaskGuard,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let item = tokio::select! {
            _ = shutdown.changed() => return,
            item = stream.recv() => item,
        };
        let Some(h) = hub.upgrade() else {
            return;
        };
        match item {
            Some(Ok(change)) => h.dispatch(&change),
            Some(Err(e)) => h.record_feed_problem(format!("{e}"), false),
            None => {
                h.record_feed_problem("the database change feed ended".to_string(), true);
                drop(h);
                match resubscribe(&hub, &db, &mut shutdown).await {
                    Some(s) => stream = s,
                    None => return,
                }
            }
        }
    }
}

/// Re-subscribes to an ended feed with backoff; `None` when the hub shuts
/// down first.
async fn resubscribe(
    hub: &Weak<Hub>,
    db: &Arc<dyn Database>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<ChangeStream> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        if *shutdown.borrow() {
            return None;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let result = db.subscribe_changes(None).await;
        let h = hub.upgrade()?;
        match result {
            Ok(stream) => {
                h.record_feed_connected();
                return Some(stream);
            }
            Err(e) => h.record_feed_problem(
                format!("re-subscribing to the database change feed failed: {e}"),
                true,
            ),
        }
    }
}

impl Hub {
    /// Calls the handlers of the subscriptions `change` matches, outside
    /// every lock.
    fn dispatch(&self, change: &RowChange) {
        let subs: Vec<Arc<RowSub>> = lock(&self.row_subs)
            .values()
            .filter(|s| s.spec.matches_head(change))
            .cloned()
            .collect();
        for sub in subs {
            let wanted = sub
                .spec
                .filter
                .as_ref()
                .is_none_or(|f| filter_matches(f, change));
            if wanted {
                let handler = &sub.handler;
                // A panicking handler is reported by the panic hook and does
                // not stop the feed.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    handler(change.clone())
                }));
            }
        }
    }
}

/// Whether the new row (the old row for deletes) matches `filter`. A column
/// the row does not have is NULL, so comparisons with it are unknown and do
/// not match.
fn filter_matches(filter: &Filter, change: &RowChange) -> bool {
    let row = match change.kind {
        ChangeKind::Delete => change.old.as_ref().or(change.new.as_ref()),
        ChangeKind::Insert | ChangeKind::Update => change.new.as_ref().or(change.old.as_ref()),
    };
    let Some(row) = row else {
        return false;
    };
    let lookup = |c: &ColumnRef| -> Result<Option<&Value>, Error> { Ok(row.get(&c.column)) };
    eval::matches(filter, &lookup).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use truststream_core_db::{col, Row};

    fn row(v: Value) -> Option<Row> {
        v.as_object().cloned()
    }

    fn change(kind: ChangeKind, old: Option<Row>, new: Option<Row>) -> RowChange {
        RowChange {
            table: "items".into(),
            kind,
            key: json!("a"),
            old,
            new,
            committed_at: chrono_now(),
        }
    }

    fn chrono_now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    #[test]
    fn filter_uses_new_row_and_old_row_for_deletes() {
        let f = col("status").eq("active");
        let active = row(json!({"id": "a", "status": "active"}));
        let idle = row(json!({"id": "a", "status": "idle"}));
        assert!(filter_matches(
            &f,
            &change(ChangeKind::Insert, None, active.clone())
        ));
        assert!(!filter_matches(
            &f,
            &change(ChangeKind::Insert, None, idle.clone())
        ));
        assert!(!filter_matches(
            &f,
            &change(ChangeKind::Update, active.clone(), idle.clone())
        ));
        assert!(filter_matches(
            &f,
            &change(ChangeKind::Delete, active, None)
        ));
        assert!(!filter_matches(&f, &change(ChangeKind::Delete, idle, None)));
    }

    #[test]
    fn missing_column_is_null() {
        let r = row(json!({"id": "a"}));
        assert!(!filter_matches(
            &col("status").eq("x"),
            &change(ChangeKind::Insert, None, r.clone())
        ));
        assert!(filter_matches(
            &col("status").is_null(),
            &change(ChangeKind::Insert, None, r)
        ));
    }

    #[test]
    fn specs_are_validated() {
        let bad = [
            ChangeSpec::table("bad name"),
            ChangeSpec::table("items").key(Value::Null),
            ChangeSpec::table("items").key(json!([1])),
            ChangeSpec::table("items").filter(col("x;y").eq(1)),
            ChangeSpec::table("items").filter(col("other.x").eq(1)),
        ];
        for spec in bad {
            let e = validate_spec(&spec).expect_err("must be rejected");
            assert_eq!(
                e.kind(),
                truststream_core::ErrorKind::InvalidInput,
                "{spec:?}"
            );
        }
        validate_spec(
            &ChangeSpec::table("items")
                .key("a")
                .filter(col("items.status").eq("x")),
        )
        .expect("valid spec");
    }
}
