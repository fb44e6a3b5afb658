//! Row change subscriptions, fed by the database's change feed.
//!
//! One reader task per hub follows `db.subscribe_changes(None)` (see
//! `truststream_core_realtime::feed::follow_change_feed`) and calls the
//! handlers of every matching subscription, in feed order. A lag error from
//! the feed (changes were lost) is counted and degrades `health()`; a feed
//! that ends is re-subscribed with backoff.

use std::sync::{Arc, Weak};

use truststream_core::Error;
use truststream_core_db::{ChangeStream, Database};
use truststream_core_realtime::feed::{follow_change_feed, DatabaseFeed, FeedHealth, FeedTarget};
use truststream_core_realtime::{ChangeSpec, Handler, RowChange, RtResult, Subscription};

use crate::hub::{runtime, Hub, TaskGuard};

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
    spec.validate()?;
    ensure_feed(hub, &db).await?;
    hub.row_subs.add(spec, handler, ())
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
    let source = DatabaseFeed {
        db: db.clone(),
        table: None,
    };
    rt.spawn(read_feed(
        Arc::downgrade(hub),
        source,
        stream,
        hub.shutdown.subscribe(),
        TaskGuard::new(&hub.tasks),
    ));
    *started = true;
    Ok(())
}

/// Follows the feed until the hub shuts down or is dropped.
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

impl FeedTarget for Hub {
    fn deliver(&self, change: RowChange) {
        self.row_subs.dispatch(&change);
    }

    fn feed_health(&self) -> &FeedHealth {
        &self.feed_health
    }
}
