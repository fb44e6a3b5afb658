//! The replicator: takes outbox entries in id order, applies them to the
//! secondary idempotently, then removes them from the outbox.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use truststream_core::{Error, ErrorKind, Result};
use truststream_core_db::{
    col, AlterTable, Database, Filter, IndexSpec, Operation, Query, TableSchema, Value,
};

use crate::layer::{parse_schema, ReplicationLag, Shared};
use crate::outbox::{self, Entry, Stored};
use crate::watch::Passes;

/// Keys read or synced per statement.
const CHUNK: usize = 200;

/// The replicator's own state.
pub(crate) struct Replicator {
    /// Serializes passes (the background task and explicit calls).
    pass: tokio::sync::Mutex<()>,
    /// The lag gauges last showed an empty outbox.
    shown_empty: AtomicBool,
    pub passes: Passes,
}

impl Default for Replicator {
    fn default() -> Self {
        Replicator {
            pass: tokio::sync::Mutex::new(()),
            shown_empty: AtomicBool::new(false),
            passes: Passes::new("truststream_composite_failed_passes_total", "database"),
        }
    }
}

/// The background task: a pass every `interval` (straight away again while
/// passes come back full), until `stopped` fires (the layer was dropped).
pub(crate) async fn run(shared: Arc<Shared>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let interval = shared.config.interval;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let mut idle = true;
        loop {
            match pass(&shared).await {
                Ok(0) => break,
                Ok(n) => {
                    idle = false;
                    if (n as u64) < shared.config.batch {
                        break;
                    }
                    if stopped.try_recv() != Err(tokio::sync::oneshot::error::TryRecvError::Empty) {
                        return;
                    }
                }
                Err(_) => {
                    idle = false;
                    break;
                }
            }
        }
        // Keeps the gauges current (an error is already logged by the
        // pass); not read again while the outbox stays empty.
        if !(idle && shared.replicator.shown_empty.load(Ordering::Relaxed)) {
            let _ = lag(&shared).await;
        }
    }
}

/// One pass: at most `batch` entries, in id order. Entries applied before a
/// failure are removed; the failing one and those after it stay.
pub(crate) async fn pass(shared: &Shared) -> Result<usize> {
    let r = &shared.replicator;
    let _guard = r.pass.lock().await;
    let result = pass_locked(shared).await;
    r.passes.note(&result, &shared.labels);
    result
}

async fn pass_locked(shared: &Shared) -> Result<usize> {
    let outbox_table = &shared.config.outbox_table;
    let query = Query::new().order_by_asc("id").limit(shared.config.batch);
    let rows = shared.primary.read(outbox_table, &query).await?;
    let mut done: Vec<i64> = Vec::with_capacity(rows.len());
    let mut pending: Vec<(i64, RowKey)> = Vec::new();
    let mut failure = None;
    for row in &rows {
        let stored = match Stored::from_row(row) {
            Ok(s) => s,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        if let Entry::Row {
            table,
            key_column,
            key,
        } = stored.entry
        {
            pending.push((
                stored.id,
                RowKey {
                    table,
                    key_column,
                    key,
                },
            ));
            continue;
        }
        // Other entries are barriers: the rows before them go first.
        if let Err(e) = flush(shared, &mut pending, &mut done).await {
            failure = Some(e);
            break;
        }
        match apply(shared, &stored.entry).await {
            Ok(()) => done.push(stored.id),
            Err(e) => {
                failure = Some(e.with_context("outbox_id", stored.id.to_string()));
                break;
            }
        }
    }
    if failure.is_none() {
        if let Err(e) = flush(shared, &mut pending, &mut done).await {
            failure = Some(e);
        }
    }
    // Removes the applied entries. A failed removal leaves them to be
    // applied again (harmless); the pass reports its first failure, and
    // counts only the entries removed.
    let mut applied = 0;
    for ids in done.chunks(CHUNK) {
        if let Err(e) = shared
            .primary
            .delete_many(outbox_table, &col("id").is_in(ids.iter().copied()))
            .await
        {
            failure.get_or_insert(e);
            break;
        }
        applied += ids.len();
    }
    shared
        .replicator
        .passes
        .applied
        .fetch_add(applied as u64, Ordering::Relaxed);
    match failure {
        Some(e) => Err(e),
        None => Ok(applied),
    }
}

#[derive(Debug, Clone)]
struct RowKey {
    table: String,
    key_column: String,
    key: Value,
}

async fn flush(
    shared: &Shared,
    pending: &mut Vec<(i64, RowKey)>,
    done: &mut Vec<i64>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let keys: Vec<RowKey> = pending.iter().map(|(_, k)| k.clone()).collect();
    sync_rows(shared, keys).await?;
    done.extend(pending.drain(..).map(|(id, _)| id));
    Ok(())
}

fn key_text(v: &Value) -> String {
    v.to_string()
}

/// Makes each keyed row on the secondary what it is on the primary now:
/// deleted when the primary has none, else replaced by the primary's row.
async fn sync_rows(shared: &Shared, mut keys: Vec<RowKey>) -> Result<()> {
    // One sync per row however often it appears.
    let mut seen = HashSet::new();
    keys.retain(|k| seen.insert((k.table.clone(), key_text(&k.key))));
    // Group by table, keeping first-seen order.
    let mut tables: Vec<(String, String, Vec<Value>)> = Vec::new();
    for k in keys {
        match tables.iter_mut().find(|(t, _, _)| *t == k.table) {
            Some((_, _, v)) => v.push(k.key),
            None => tables.push((k.table, k.key_column, vec![k.key])),
        }
    }
    for (table, key_column, keys) in tables {
        for chunk in keys.chunks(CHUNK) {
            let rows = match shared
                .primary
                .read(
                    &table,
                    &Query::new().filter(col(&key_column).is_in(chunk.iter().cloned())),
                )
                .await
            {
                Ok(rows) => rows,
                // Dropped on the primary since: its `drop_table` entry
                // follows and removes the secondary's copy.
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            let mut ops = Vec::with_capacity(chunk.len() * 2);
            let mut found = HashSet::new();
            for row in rows {
                if let Some(k) = row.get(&key_column) {
                    found.insert(key_text(k));
                    ops.push(Operation::Delete {
                        table: table.clone(),
                        id: k.clone(),
                    });
                    ops.push(Operation::Create {
                        table: table.clone(),
                        data: row,
                    });
                }
            }
            for key in chunk {
                if found.contains(&key_text(key)) {
                    continue;
                }
                // Not found by value: ask by key, in case the provider
                // spells the key differently (case of a UUID).
                match shared.primary.get(&table, key).await? {
                    Some(row) => {
                        let k = row.get(&key_column).cloned().unwrap_or_else(|| key.clone());
                        if !found.insert(key_text(&k)) {
                            continue;
                        }
                        ops.push(Operation::Delete {
                            table: table.clone(),
                            id: k,
                        });
                        ops.push(Operation::Create {
                            table: table.clone(),
                            data: row,
                        });
                    }
                    None => ops.push(Operation::Delete {
                        table: table.clone(),
                        id: key.clone(),
                    }),
                }
            }
            apply_ops(shared, &table, ops).await?;
        }
    }
    Ok(())
}

/// Runs `ops` on the secondary, in one transaction when it has them. A
/// missing table is created from the catalog once (a crash between a
/// `create_table` and its outbox entry).
async fn apply_ops(shared: &Shared, table: &str, ops: Vec<Operation>) -> Result<()> {
    let secondary = &shared.secondary;
    let run = |ops: Vec<Operation>| async move {
        if secondary.capabilities().transactions {
            secondary.transaction(ops).await.map(|_| ())
        } else {
            for op in ops {
                match op {
                    Operation::Delete { table, id } => {
                        secondary.delete(&table, &id).await?;
                    }
                    Operation::Create { table, data } => {
                        secondary.create(&table, data).await?;
                    }
                    _ => return Err(Error::internal("composite: unexpected operation")),
                }
            }
            Ok(())
        }
    };
    match run(ops.clone()).await {
        Err(e) if e.kind() == ErrorKind::NotFound => match shared.schema(table) {
            Some(schema) => {
                secondary.create_table(&replica_schema(&schema)).await?;
                run(ops).await
            }
            None => Err(e),
        },
        // Rows are copied as the primary has them now, which may be after
        // an `alter_table` still waiting in the outbox: apply the table's
        // waiting changes early (they are skipped when their turn comes),
        // then copy again.
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            if alter_early(shared, table).await? == 0 {
                return Err(e);
            }
            run(ops).await
        }
        other => other,
    }
}

/// Applies the `alter_table` entries of `table` waiting in the outbox, in
/// order, leaving them there; returns how many there were.
async fn alter_early(shared: &Shared, table: &str) -> Result<usize> {
    let query = Query::new()
        .filter(col("kind").eq("alter_table"))
        .filter(col("target").eq(table))
        .order_by_asc("id");
    let rows = shared
        .primary
        .read(&shared.config.outbox_table, &query)
        .await?;
    for row in &rows {
        let stored = Stored::from_row(row)?;
        Box::pin(apply(shared, &stored.entry)).await?;
    }
    Ok(rows.len())
}

/// The secondary's copy of a table: the same columns and key, without
/// unique constraints or foreign keys (the primary enforces them; rows
/// copied in any order — a child before its parent, a parent's delete
/// before its children's — must never be refused by the replica), created
/// if it does not exist.
fn replica_schema(schema: &TableSchema) -> TableSchema {
    let mut s = schema.clone();
    for c in &mut s.columns {
        if !c.primary_key {
            c.unique = false;
        }
    }
    s.foreign_keys.clear();
    s.if_not_exists = true;
    s
}

async fn keys_matching(
    db: &dyn Database,
    table: &str,
    key_column: &str,
    filter: &Option<Filter>,
) -> Result<Vec<Value>> {
    let mut query = Query::new().select([key_column]);
    query.filter = filter.clone();
    let rows = db.read(table, &query).await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut r| r.remove(key_column))
        .collect())
}

/// Applies one non-row entry.
async fn apply(shared: &Shared, entry: &Entry) -> Result<()> {
    let secondary = &*shared.secondary;
    match entry {
        Entry::Row { .. } => Err(Error::internal("composite: row entries go through flush")),
        Entry::Rows {
            table,
            key_column,
            filter,
        } => {
            // Rows matching now on the primary, and rows matching on the
            // secondary (what the change may have moved out of the filter).
            let mut keys = match keys_matching(&*shared.primary, table, key_column, filter).await {
                Ok(keys) => keys,
                // Dropped since (its `drop_table` entry follows).
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                // The filter names a column renamed or dropped since:
                // every row of the table instead.
                Err(e) if e.kind() == ErrorKind::InvalidInput && filter.is_some() => {
                    return Box::pin(apply(
                        shared,
                        &Entry::Rows {
                            table: table.clone(),
                            key_column: key_column.clone(),
                            filter: None,
                        },
                    ))
                    .await
                }
                Err(e) => return Err(e),
            };
            match keys_matching(secondary, table, key_column, filter).await {
                Ok(more) => keys.extend(more),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                // The secondary is behind on columns: compare all its rows.
                Err(e) if e.kind() == ErrorKind::InvalidInput => {
                    keys.extend(keys_matching(secondary, table, key_column, &None).await?)
                }
                Err(e) => return Err(e),
            }
            let keys = keys
                .into_iter()
                .map(|key| RowKey {
                    table: table.clone(),
                    key_column: key_column.clone(),
                    key,
                })
                .collect();
            sync_rows(shared, keys).await
        }
        Entry::CreateTable(schema) => {
            // With the table's current columns when the layer knows them:
            // the rows copied next are the primary's current rows (the
            // `alter_table` entries after this one are then skipped).
            let current = shared.schema(&schema.name);
            let schema = current.as_ref().unwrap_or(schema);
            secondary.create_table(&replica_schema(schema)).await?;
            // The table may have been adopted with rows in it.
            let key_column = schema
                .primary_key()
                .map(|c| c.name.clone())
                .unwrap_or_else(|| "id".to_string());
            Box::pin(apply(
                shared,
                &Entry::Rows {
                    table: schema.name.clone(),
                    key_column,
                    filter: None,
                },
            ))
            .await
        }
        Entry::AlterTable { table, changes } => {
            // One change at a time, each only when the secondary's columns
            // say it is not made yet: the entry may come again after a
            // crash, and a table created (or changed early) from the
            // current catalog already has it.
            for change in changes {
                let due = match change {
                    AlterTable::AddColumn(c) => !has_column(secondary, table, &c.name).await?,
                    AlterTable::DropColumn(name) => has_column(secondary, table, name).await?,
                    AlterTable::RenameColumn { from, to } => {
                        has_column(secondary, table, from).await?
                            && !has_column(secondary, table, to).await?
                    }
                    // The secondary keeps no foreign keys (its tables are
                    // created without them): the primary checks them.
                    AlterTable::AddForeignKey(_) => false,
                };
                if !due {
                    continue;
                }
                let change = match change {
                    AlterTable::AddColumn(c) => {
                        let mut c = c.clone();
                        c.unique = false;
                        AlterTable::AddColumn(c)
                    }
                    other => other.clone(),
                };
                secondary
                    .alter_table(table, std::slice::from_ref(&change))
                    .await?;
            }
            Ok(())
        }
        Entry::DropTable { table } => secondary.drop_table(table, true).await,
        Entry::CreateIndex(index) => {
            let mut index = index.clone();
            index.unique = false;
            index.if_not_exists = true;
            match secondary.create_index(&index).await {
                // A column renamed or dropped since, or the table dropped
                // (and maybe created again): the secondary's table was
                // made from the current catalog, so the index can never
                // apply there. Skipped rather than stopping replication.
                Err(e)
                    if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::NotFound)
                        && !index_applies(shared, &index).await? =>
                {
                    tracing::warn!(
                        secondary = shared.labels[1].1,
                        table = index.table,
                        error = %e,
                        "composite: an index on columns the table no longer has is not \
                         made on the secondary"
                    );
                    Ok(())
                }
                other => other,
            }
        }
    }
}

/// Whether the table of `index` has all its columns now, by the primary's
/// catalog (read afresh: another process may have changed the table).
async fn index_applies(shared: &Shared, index: &IndexSpec) -> Result<bool> {
    let Some(row) = shared
        .primary
        .get(&shared.catalog_table, &Value::String(index.table.clone()))
        .await?
    else {
        return Ok(false);
    };
    let schema = parse_schema(&shared.catalog_table, &row)?;
    Ok(index.columns.iter().all(|c| schema.find(c).is_some()))
}

/// Whether `table` on `db` has `column` (asked by selecting it: an unknown
/// column is `InvalidInput`).
async fn has_column(db: &dyn Database, table: &str, column: &str) -> Result<bool> {
    match db
        .read(table, &Query::new().select([column]).limit(1))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::InvalidInput => Ok(false),
        Err(e) => Err(e),
    }
}

/// The outbox's size and the age of its oldest entry; updates the gauges.
pub(crate) async fn lag(shared: &Shared) -> Result<ReplicationLag> {
    let (entries, oldest) = outbox::count_and_age(
        &*shared.primary,
        &shared.config.outbox_table,
        None,
        "created_ms",
    )
    .await?;
    let lag = ReplicationLag { entries, oldest };
    shared
        .replicator
        .shown_empty
        .store(entries == 0, Ordering::Relaxed);
    metrics::gauge!("truststream_composite_outbox_entries", &shared.labels).set(entries as f64);
    metrics::gauge!("truststream_composite_lag_seconds", &shared.labels).set(oldest.as_secs_f64());
    Ok(lag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use truststream_core_db::ColumnDef;

    #[test]
    fn the_replica_keeps_columns_and_key_but_no_constraint_the_primary_enforces() {
        let schema = TableSchema::new("comments")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("post_id"))
            .column(ColumnDef::text("slug").unique())
            .references("post_id", "posts", "id");
        let replica = replica_schema(&schema);
        assert!(
            replica.foreign_keys.is_empty(),
            "{:?}",
            replica.foreign_keys
        );
        assert!(replica.columns.iter().all(|c| c.primary_key || !c.unique));
        assert_eq!(replica.columns.len(), 3);
        assert!(replica.columns[0].primary_key);
        assert!(replica.if_not_exists);
    }
}
