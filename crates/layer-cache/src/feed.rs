//! Following the provider's change feed: each change invalidates its
//! table; a lost change, an ended feed or a new subscription invalidates
//! everything. The re-subscribing reader is core-realtime's
//! [`follow_change_feed`], shared with the realtime providers.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use truststream_core_db::{ChangeStream, Database, RowChange};
use truststream_core_realtime::feed::{follow_change_feed, FeedHealth, FeedSource, FeedTarget};
use truststream_core_realtime::RtResult;

use crate::cache::Shared;

impl FeedTarget for Shared {
    fn deliver(&self, change: RowChange) {
        self.counters
            .feed_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.bump_table(&change.table);
    }

    fn feed_health(&self) -> &FeedHealth {
        &self.feed_health
    }
}

/// Every table's changes of `db`, each subscription watched by [`watched`].
struct Source {
    db: Arc<dyn Database>,
    shared: Weak<Shared>,
}

#[async_trait]
impl FeedSource for Source {
    async fn subscribe(&self) -> RtResult<ChangeStream> {
        let stream = self.db.subscribe_changes(None).await?;
        if let Some(shared) = self.shared.upgrade() {
            // What was written while no feed was followed is unknown: once
            // the feed is back, forget everything, then serve again.
            reset(&shared);
            shared.set_feed_down(false);
        }
        Ok(watched(stream, Weak::clone(&self.shared)))
    }
}

/// Everything is invalidated: changes were, or may have been, missed.
fn reset(shared: &Shared) {
    shared
        .counters
        .feed_resets
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared.bump_all();
}

/// `stream`, with a lost change (an error item) invalidating everything,
/// and its end marking the feed down (reads bypass the cache) before
/// invalidating everything.
fn watched(stream: ChangeStream, shared: Weak<Shared>) -> ChangeStream {
    ChangeStream::new(futures::stream::unfold(
        Some((stream, shared)),
        |state| async move {
            let (mut stream, shared) = state?;
            match stream.recv().await {
                Some(item) => {
                    if item.is_err() {
                        if let Some(s) = shared.upgrade() {
                            reset(&s);
                        }
                    }
                    Some((item, Some((stream, shared))))
                }
                None => {
                    if let Some(s) = shared.upgrade() {
                        s.set_feed_down(true);
                        reset(&s);
                    }
                    None
                }
            }
        },
    ))
}

/// Subscribes to every table's changes of `db` and follows them in a
/// task that ends when `shared` is dropped (or the returned handle is
/// aborted). A failed first subscription is retried by the task, with
/// the feed marked down until then.
pub(crate) async fn follow(
    shared: &Arc<Shared>,
    db: Arc<dyn Database>,
) -> tokio::task::AbortHandle {
    let source = Source {
        db,
        shared: Arc::downgrade(shared),
    };
    let first = match source.subscribe().await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cache: cannot follow the database's change feed yet; reads bypass the cache until it can"
            );
            shared.set_feed_down(true);
            shared.feed_health.record_problem(
                format!("subscribing to the database change feed failed: {e}"),
                true,
            );
            // An ended stream: the reader subscribes again with backoff.
            ChangeStream::new(futures::stream::empty())
        }
    };
    let target = Arc::downgrade(shared);
    tokio::spawn(async move {
        follow_change_feed(target, &source, first, tokio::time::sleep).await;
    })
    .abort_handle()
}
