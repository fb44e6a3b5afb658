//! Row-level security per subscriber ([`TableRule::row_security`]): a change
//! of such a table reaches a member only after the database, read as that
//! member, returns the changed row.
//!
//! [`Hub::dispatch`] runs the table rules synchronously and hands what is
//! left to one checking task through a bounded queue. The task takes the
//! changes in order; for each it reads the row by its primary key through
//! [`Database::scoped`] once per distinct subscriber identity (several
//! members with the same claims share one read), then sends the change to
//! the members whose read returned the row, before taking the next change.
//! A member's changes therefore stay in order. The row read must still be
//! the version the change carries: a row written again since is not
//! evidence for the older values (its later change is checked in turn).
//!
//! Everything that cannot be checked is not sent: a change without a
//! primary key, a read that fails or times out, a queue that is full. Each
//! such loss is recorded in the hub's feed health, like a lost change.
//!
//! [`TableRule::row_security`]: crate::TableRule::row_security
//! [`Hub::dispatch`]: crate::hub::Hub

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use truststream_core_db::{Database, RequestScope, Row, RowChange};

use crate::hub::{Hub, MemberId};

/// Changes waiting for their checks; beyond it a change is not sent (and
/// the loss recorded).
pub(crate) const QUEUE: usize = 4096;

/// Reads of one change run at most this many at a time.
const CONCURRENT_READS: usize = 16;

/// A read that takes longer counts as a refusal.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One member's copy of a change, waiting for its check.
pub(crate) struct Pending {
    /// The topic the member joined.
    pub topic: String,
    pub id: MemberId,
    /// Its bindings the change matched.
    pub ids: Vec<u32>,
    /// What the member may get of the change (hidden columns removed).
    pub change: Arc<RowChange>,
    /// Who the member is to the database; `None` (never checkable) is
    /// refused.
    pub scope: Option<Arc<RequestScope>>,
    /// `false`: the table's rules already decided (a delete the owner
    /// column vouched for); the change only keeps its place in the queue.
    pub check: bool,
}

/// One change and its members.
pub(crate) struct Batch {
    pub table: String,
    /// The row's primary key (as committed, hidden or not).
    pub key: Value,
    pub pending: Vec<Pending>,
}

/// The sending half, kept by the hub.
pub(crate) type Queue = mpsc::Sender<Batch>;

/// A queue and the task that empties it into `hub`'s members.
pub(crate) fn start(hub: Weak<Hub>) -> Queue {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(hub, rx));
    tx
}

async fn run(hub: Weak<Hub>, mut rx: mpsc::Receiver<Batch>) {
    while let Some(batch) = rx.recv().await {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        if hub.is_shut_down() {
            return;
        }
        let Some(db) = hub.db.clone() else {
            continue;
        };
        // A hub shut down mid-check lets go at once (of itself and its
        // database) instead of when the reads end, up to READ_TIMEOUT later.
        let mut down = hub.shutdown.subscribe();
        let allowed = tokio::select! {
            allowed = verdicts(&hub, &db, &batch) => allowed,
            _ = down.wait_for(|down| *down) => return,
        };
        for (p, ok) in batch.pending.into_iter().zip(allowed) {
            if ok {
                hub.deliver_to(&p.topic, p.id, p.ids, p.change);
            }
        }
    }
}

/// For each pending member, whether it may have the change.
async fn verdicts(hub: &Hub, db: &Arc<dyn Database>, batch: &Batch) -> Vec<bool> {
    // The distinct identities to check, and which one each member is.
    // Claims are compared only within a (role, subject) group, so many
    // members of many users cost one lookup each, not one per identity.
    let mut scopes: Vec<Arc<RequestScope>> = Vec::new();
    let mut groups: HashMap<(&str, Option<&str>), Vec<usize>> = HashMap::new();
    let which: Vec<Option<usize>> = batch
        .pending
        .iter()
        .map(|p| {
            let scope = p.scope.as_ref().filter(|_| p.check)?;
            let group = groups
                .entry((scope.role.as_str(), scope.subject()))
                .or_default();
            Some(match group.iter().find(|&&i| scopes[i] == *scope) {
                Some(&i) => i,
                None => {
                    scopes.push(Arc::clone(scope));
                    group.push(scopes.len() - 1);
                    scopes.len() - 1
                }
            })
        })
        .collect();
    let results: Vec<Option<Row>> = if scopes.is_empty() {
        Vec::new()
    } else if batch.key.is_null() {
        hub.feed_health.record_problem(
            format!(
                "a change of table {} has no primary key, so row-level security cannot be \
                 checked: it was not sent",
                batch.table
            ),
            false,
        );
        vec![None; scopes.len()]
    } else {
        futures::stream::iter(scopes)
            .map(|scope| readable(hub, db, scope, &batch.table, &batch.key))
            .buffered(CONCURRENT_READS)
            .collect()
            .await
    };
    batch
        .pending
        .iter()
        .zip(which)
        .map(|(p, w)| match w {
            Some(i) => results[i]
                .as_ref()
                .is_some_and(|row| is_version_of(row, &p.change)),
            // Nothing to check: the rules decided (or no identity: refused).
            None => !p.check,
        })
        .collect()
}

/// Whether `row`, read back as the subscriber, is still the version
/// `change` carries (on every column the change shows). The read tells
/// whether the subscriber may see the row *now*: a row written again since
/// the change (moved to the subscriber, say) says nothing about the values
/// the change carries, so that change is not sent; the later change is
/// checked on its own turn.
fn is_version_of(row: &Row, change: &RowChange) -> bool {
    change.new.as_ref().is_some_and(|new| {
        new.iter()
            .all(|(column, value)| row.get(column).is_none_or(|now| now == value))
    })
}

/// The row `key` of `table` as `scope` reads it (`None`: it cannot).
async fn readable(
    hub: &Hub,
    db: &Arc<dyn Database>,
    scope: Arc<RequestScope>,
    table: &str,
    key: &Value,
) -> Option<Row> {
    let read = async {
        Arc::clone(db)
            .scoped(RequestScope::clone(&scope))?
            .get(table, key)
            .await
    };
    let failure = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(row)) => return row,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {READ_TIMEOUT:?}"),
    };
    // The database's words stay in the operator's log and health report;
    // the subscriber only misses the change.
    tracing::warn!(
        table,
        role = %scope.role,
        error = %failure,
        "realtime: a row-level security check failed; the change was not sent"
    );
    hub.feed_health.record_problem(
        format!("a row-level security check on table {table} failed: {failure}"),
        false,
    );
    None
}
