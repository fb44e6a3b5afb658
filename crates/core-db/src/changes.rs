//! The row change feed: what realtime's "subscribe to row" is built on.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};

use crate::{DbResult, Row, Value};

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
