//! The row change feed: what realtime's "subscribe to row" is built on.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};

use crate::{DbResult, Error, Row, Value};

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeKind {
    /// A row was inserted.
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
}

/// One committed change to one row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RowChange {
    /// The table the row belongs to.
    pub table: String,
    /// Insert, update or delete.
    pub kind: ChangeKind,
    /// The row's primary-key value.
    pub key: Value,
    /// The row before the change (update, delete).
    pub old: Option<Row>,
    /// The row after the change (insert, update).
    pub new: Option<Row>,
    /// When the change was committed.
    pub committed_at: chrono::DateTime<chrono::Utc>,
}

/// A stream of committed row changes, returned by
/// [`crate::Database::subscribe_changes`].
///
/// An `Err` item means changes were lost (the subscriber fell behind, or the
/// provider's connection to the feed broke); the stream goes on after it.
/// Dropping the stream unsubscribes.
pub struct ChangeStream {
    inner: Pin<Box<dyn Stream<Item = DbResult<RowChange>> + Send>>,
}

impl ChangeStream {
    /// Wraps any stream of changes.
    pub fn new(stream: impl Stream<Item = DbResult<RowChange>> + Send + 'static) -> Self {
        ChangeStream {
            inner: Box::pin(stream),
        }
    }

    /// The next change; `None` when the feed has ended (provider closed).
    pub async fn recv(&mut self) -> Option<DbResult<RowChange>> {
        self.inner.next().await
    }
}

impl Stream for ChangeStream {
    type Item = DbResult<RowChange>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeStream").finish_non_exhaustive()
    }
}

/// The in-process fan-out behind a provider's change feed: a bounded
/// broadcast buffer shared by every subscriber.
///
/// Providers [`publish`](ChangeFeed::publish) committed changes (in commit
/// order) and hand out [`subscribe`](ChangeFeed::subscribe)d streams. A
/// subscriber that falls more than `capacity` changes behind gets one
/// [`crate::ErrorKind::Unavailable`] item saying how many it lost, then the
/// stream goes on with the newest changes.
///
/// ```
/// # use truststream_core_db::{ChangeFeed, ChangeKind, RowChange};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let feed = ChangeFeed::new(64);
/// let mut agents = feed.subscribe(Some("agents".into()));
/// feed.publish([RowChange {
///     table: "agents".into(),
///     kind: ChangeKind::Insert,
///     key: serde_json::json!(1),
///     old: None,
///     new: None,
///     committed_at: chrono::Utc::now(),
/// }]);
/// assert_eq!(agents.recv().await.unwrap().unwrap().table, "agents");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    sender: tokio::sync::broadcast::Sender<FeedItem>,
}

#[derive(Debug, Clone)]
enum FeedItem {
    Change(Box<RowChange>),
    /// Changes were lost upstream (the provider's link to the database's
    /// feed broke); the message says what happened.
    Gap(String),
}

impl ChangeFeed {
    /// A feed buffering up to `capacity` changes per subscriber (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = tokio::sync::broadcast::channel(capacity.max(1));
        ChangeFeed { sender }
    }

    /// Publishes committed changes, in order. Having no subscriber is fine.
    pub fn publish(&self, changes: impl IntoIterator<Item = RowChange>) {
        for change in changes {
            // An error only means nobody is subscribed right now.
            let _ = self.sender.send(FeedItem::Change(Box::new(change)));
        }
    }

    /// Tells every subscriber that changes were lost upstream (each gets one
    /// [`crate::ErrorKind::Unavailable`] item carrying `message`); the feed
    /// goes on.
    pub fn publish_gap(&self, message: impl Into<String>) {
        let _ = self.sender.send(FeedItem::Gap(message.into()));
    }

    /// How many subscribers are attached (a provider may skip building
    /// changes nobody will read).
    pub fn subscriber_count(&self) -> usize {
        self.sender.receiver_count()
    }

    /// A stream of the changes published from now on, of one table or of
    /// all (`None`). The table name is not checked here; providers check
    /// that it exists first.
    pub fn subscribe(&self, table: Option<String>) -> ChangeStream {
        use tokio::sync::broadcast::error::RecvError;
        let rx = self.sender.subscribe();
        let stream = futures::stream::unfold((rx, table), |(mut rx, table)| async move {
            loop {
                match rx.recv().await {
                    Ok(FeedItem::Change(change)) => {
                        if table.as_ref().is_some_and(|t| *t != change.table) {
                            continue;
                        }
                        return Some((Ok(*change), (rx, table)));
                    }
                    Ok(FeedItem::Gap(message)) => {
                        let e = Error::unavailable(message)
                            .with_retryable(true)
                            .with_operation("db.subscribe_changes");
                        return Some((Err(e), (rx, table)));
                    }
                    Err(RecvError::Lagged(n)) => {
                        let e = Error::unavailable(format!(
                            "change feed subscriber fell behind and lost {n} changes; \
                             re-read the data it needs (raise change_feed_capacity to buffer more)"
                        ))
                        .with_operation("db.subscribe_changes");
                        return Some((Err(e), (rx, table)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        ChangeStream::new(stream)
    }
}
