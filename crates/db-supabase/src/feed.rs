//! The change feed: a realtime provider's row-change subscription
//! (`postgres_changes` on Supabase Realtime, through `realtime-ws` client
//! mode) as a core-db [`ChangeStream`].
//!
//! Changes go through a bounded buffer; a subscriber that falls more than
//! `capacity` changes behind gets one
//! [`ErrorKind::Unavailable`](truststream_core::ErrorKind::Unavailable)
//! item saying how many were lost, then the stream goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use truststream_core_db::{ident, ChangeStream, DbResult, Error};
use truststream_core_realtime::{handler, ChangeSpec, Realtime};

pub(crate) async fn subscribe(
    rt: &dyn Realtime,
    table: Option<&str>,
    capacity: usize,
) -> DbResult<ChangeStream> {
    let Some(table) = table else {
        return Err(Error::unsupported(
            "the supabase change feed subscribes per table (Supabase Realtime's postgres_changes); \
             name the table",
        )
        .with_operation("db.subscribe_changes"));
    };
    ident::table(table)?;
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    let lost = Arc::new(AtomicU64::new(0));
    let lost_in = lost.clone();
    let sub = rt
        .subscribe_changes(
            ChangeSpec::table(table),
            handler(move |change| {
                if tx.try_send(change).is_err() {
                    lost_in.fetch_add(1, Ordering::AcqRel);
                }
            }),
        )
        .await
        .map_err(|e| e.with_operation("db.subscribe_changes"))?;
    let state = Feed {
        rx: Some(rx),
        lost,
        _sub: sub,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        let n = state.lost.swap(0, Ordering::AcqRel);
        if n > 0 {
            let e = Error::unavailable(format!(
                "change feed subscriber fell behind and lost {n} changes; re-read the data it \
                 needs (raise change_feed_capacity to buffer more)"
            ))
            .with_operation("db.subscribe_changes");
            return Some((Err(e), state));
        }
        let rx = state.rx.as_mut()?;
        match rx.recv().await {
            Some(change) => Some((Ok(change), state)),
            None => {
                // The realtime provider dropped the subscription: its
                // connection to the server was lost, and changes made
                // until a new subscription may never arrive. Say so once,
                // then end (a reader such as core-realtime's feed follower
                // subscribes again).
                state.rx = None;
                Some((Err(ended()), state))
            }
        }
    });
    Ok(ChangeStream::new(stream))
}

/// A subscription's state: the buffer, the count of changes it dropped,
/// and the realtime subscription (dropping it unsubscribes).
struct Feed {
    /// `None` once the realtime side has ended.
    rx: Option<tokio::sync::mpsc::Receiver<truststream_core_db::RowChange>>,
    lost: Arc<AtomicU64>,
    _sub: truststream_core_realtime::Subscription,
}

/// The error item of a feed whose realtime subscription ended.
fn ended() -> Error {
    Error::unavailable(
        "the change feed's realtime subscription ended (the connection to the realtime server \
         was lost); changes made since may be missing: re-read the data you need and subscribe \
         again",
    )
    .with_operation("db.subscribe_changes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// A realtime provider whose row subscriptions end at once (the
    /// connection to its server is lost), after delivering one change.
    struct Dropping;

    #[async_trait::async_trait]
    impl Realtime for Dropping {
        fn info(&self) -> truststream_core::ProviderInfo {
            truststream_core::ProviderInfo {
                name: "dropping",
                version: "0",
            }
        }
        fn capabilities(&self) -> truststream_core_realtime::RealtimeCapabilities {
            truststream_core_realtime::RealtimeCapabilities::channels()
        }
        async fn health(&self) -> truststream_core::Health {
            truststream_core::Health::healthy(std::time::Duration::ZERO)
        }
        async fn channel(
            &self,
            _: &str,
            _: truststream_core_realtime::ChannelOptions,
        ) -> truststream_core_realtime::RtResult<Arc<dyn truststream_core_realtime::Channel>>
        {
            Err(Error::unsupported("no channels"))
        }
        async fn subscribe_changes(
            &self,
            spec: ChangeSpec,
            handler: truststream_core_realtime::Handler<truststream_core_db::RowChange>,
        ) -> truststream_core_realtime::RtResult<truststream_core_realtime::Subscription> {
            handler(truststream_core_db::RowChange {
                table: spec.table,
                kind: truststream_core_db::ChangeKind::Insert,
                key: serde_json::json!(1),
                old: None,
                new: None,
                committed_at: chrono::Utc::now(),
            });
            // The handler (and with it the feed's sender) is dropped here.
            Ok(truststream_core_realtime::Subscription::new(|| {}))
        }
    }

    #[tokio::test]
    async fn a_realtime_subscription_that_ends_is_reported_as_a_gap_once() {
        let mut stream = subscribe(&Dropping, Some("notes"), 8)
            .await
            .expect("subscribed");
        let first = stream.next().await.expect("an item");
        assert_eq!(first.expect("the change").table, "notes");
        let gap = stream.next().await.expect("an item").expect_err("a gap");
        assert_eq!(gap.kind(), truststream_core::ErrorKind::Unavailable);
        assert!(gap.to_string().contains("subscribe"), "{gap}");
        assert!(
            stream.next().await.is_none(),
            "the stream ends after the gap"
        );
    }
}
