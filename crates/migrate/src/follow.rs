//! `--follow`: the live cut-over. The source's change feed is subscribed
//! *before* the bulk copy reads anything, and a pump task moves every
//! change into a buffer as it arrives (so the feed's bounded fan-out never
//! drops changes while the copy is busy). After the copy the buffered
//! changes, then the live ones, are applied to the target in commit order
//! until the run is told to stop.
//!
//! Applying is idempotent, so it does not matter whether the bulk copy
//! already saw a change: an insert or update makes the target's row equal
//! to the change's new row (update by primary key, or create when the
//! target has no such row), a delete deletes by key (nothing to delete is
//! fine). Replaying every change committed since the subscription, in
//! order, leaves each touched row as the source's last change left it.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use truststream_core::{Error, ErrorKind, Result};
use truststream_core_db::{ChangeKind, ChangeStream, Database, Row, RowChange, TableSchema};

use crate::progress::Progress;

/// After the stop signal, changes keep being applied until none arrived for
/// this long (a database-wide feed such as PostgreSQL's delivers a change
/// shortly after its commit).
pub(crate) const SETTLE: Duration = Duration::from_millis(500);

/// What following applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowSummary {
    /// Changes applied as an update of an existing target row.
    pub updated: u64,
    /// Changes applied as a new target row.
    pub created: u64,
    /// Deletes applied (whether or not the target still had the row).
    pub deleted: u64,
    /// Changes of tables outside the migration (not applied).
    pub ignored: u64,
}

impl FollowSummary {
    /// Changes applied.
    pub fn applied(&self) -> u64 {
        self.updated + self.created + self.deleted
    }
}

/// The subscription, started before the bulk copy.
pub(crate) struct Follower {
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<RowChange>>,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Follower {
    /// Subscribes to every change of `source` and starts buffering.
    pub(crate) async fn subscribe(source: &dyn Database) -> Result<Self> {
        let stream = source
            .subscribe_changes(None)
            .await
            .map_err(|e| e.with_operation("migrate.follow"))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let pump = tokio::spawn(pump(stream, tx));
        Ok(Follower { rx, pump })
    }

    /// Applies buffered and live changes of `tables` to `target` until
    /// `stop` completes, then until none arrived for [`SETTLE`]. A gap in
    /// the feed (changes lost) or its end is an error: the target could
    /// miss writes. So is a source still written `wind_down` after the stop
    /// (`Conflict`): the application has not been switched to the target.
    pub(crate) async fn run(
        mut self,
        target: &dyn Database,
        tables: &[TableSchema],
        stop: impl Future<Output = ()>,
        wind_down: Duration,
        progress: &Progress,
    ) -> Result<FollowSummary> {
        let schemas: HashMap<&str, &TableSchema> =
            tables.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut summary = FollowSummary::default();
        let task = progress.task("follow", "changes", 0);
        progress.message(&format!(
            "migrate: bulk copy done; applying the source's changes ({} buffered) until stopped",
            self.rx.len()
        ));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                item = self.rx.recv() => {
                    let change = item.ok_or_else(feed_ended)??;
                    apply(target, &schemas, change, &mut summary)
                        .await
                        .map_err(|e| applied_before(e, &summary))?;
                    task.inc(1);
                }
            }
        }
        progress.message("migrate: stop requested; applying the changes still arriving");
        let deadline = tokio::time::Instant::now() + wind_down;
        while let Ok(item) = tokio::time::timeout(SETTLE, self.rx.recv()).await {
            let change = item.ok_or_else(feed_ended)??;
            apply(target, &schemas, change, &mut summary)
                .await
                .map_err(|e| applied_before(e, &summary))?;
            task.inc(1);
            if tokio::time::Instant::now() >= deadline {
                task.finish("source still written");
                return Err(Error::conflict(format!(
                    "the source was still being written {} s after the stop ({} changes \
                     applied while following): switch the application to the target \
                     before stopping; writes after this point are not on the target",
                    wind_down.as_secs_f32(),
                    summary.applied()
                ))
                .with_operation("migrate.follow"));
            }
        }
        task.finish("stopped");
        Ok(summary)
    }
}

async fn pump(mut stream: ChangeStream, tx: tokio::sync::mpsc::UnboundedSender<Result<RowChange>>) {
    while let Some(item) = stream.recv().await {
        let lost = item.is_err();
        if tx.send(item).is_err() || lost {
            return;
        }
    }
}

/// A failed apply's error, with how many changes were applied before it
/// (they are on the target; the failed one and those after are not).
fn applied_before(e: Error, summary: &FollowSummary) -> Error {
    e.with_context("applied_before", summary.applied().to_string())
}

fn feed_ended() -> Error {
    Error::unavailable(
        "the source's change feed ended while following (the source was closed): \
         writes after that point are not on the target",
    )
    .with_operation("migrate.follow")
}

/// Makes the target's row of `change` what the change left on the source.
async fn apply(
    target: &dyn Database,
    schemas: &HashMap<&str, &TableSchema>,
    change: RowChange,
    summary: &mut FollowSummary,
) -> Result<()> {
    let RowChange {
        table,
        kind,
        key: id,
        new,
        ..
    } = change;
    let Some(schema) = schemas.get(table.as_str()) else {
        summary.ignored += 1;
        return Ok(());
    };
    let context = |e: Error| {
        e.with_operation("migrate.follow")
            .with_context("table", table.clone())
    };
    match kind {
        ChangeKind::Delete => {
            target.delete(&table, &id).await.map_err(context)?;
            summary.deleted += 1;
        }
        ChangeKind::Insert | ChangeKind::Update => {
            let Some(new) = new else {
                return Err(context(Error::internal(
                    "an insert or update in the source's change feed carries no row",
                )));
            };
            let key = schema.primary_key().map(|c| c.name.as_str());
            // The patch is the row's one copy; the row itself moves into
            // the create when the target has no such row.
            let patch: Row = new
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != key)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let updated = if patch.is_empty() {
                // Nothing but the key: the row exists or it does not.
                target.get(&table, &id).await.map_err(context)?.is_some()
            } else {
                match target.update(&table, &id, patch).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == ErrorKind::NotFound => false,
                    Err(e) => return Err(context(e)),
                }
            };
            if updated {
                summary.updated += 1;
            } else {
                target.create(&table, new).await.map_err(context)?;
                summary.created += 1;
            }
        }
    }
    Ok(())
}
