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
    let stream = futures::stream::unfold((rx, lost, sub), |(mut rx, lost, sub)| async move {
        let n = lost.swap(0, Ordering::AcqRel);
        if n > 0 {
            let e = Error::unavailable(format!(
                "change feed subscriber fell behind and lost {n} changes; re-read the data it \
                 needs (raise change_feed_capacity to buffer more)"
            ))
            .with_operation("db.subscribe_changes");
            return Some((Err(e), (rx, lost, sub)));
        }
        let change = rx.recv().await?;
        Some((Ok(change), (rx, lost, sub)))
    });
    Ok(ChangeStream::new(stream))
}
