//! Copying a table's rows: keyset pages of the source in primary-key order,
//! each written to the target as one all-or-nothing `insert_many` (a bulk
//! `COPY` on PostgreSQL), the
//! checkpoint recorded after the commit. A reader task stays one page
//! ahead of the writer (a channel of one page), so memory holds at most
//! three pages whatever the table's size.

use std::collections::HashSet;
use std::sync::Arc;

use truststream_core::{Error, Result};
use truststream_core_db::sql::SqlDialect;
use truststream_core_db::{
    col, ident, AlterTable, ColumnDefault, Database, Params, Query, Row, TableSchema, Value,
};

use crate::digest::key_text;
use crate::progress::{Progress, Task};
use crate::schema::TablePlan;
use crate::state::{StateFile, TableState};

/// A page of rows, read in primary-key order after `after`.
pub(crate) async fn read_page(
    db: &dyn Database,
    schema: &TableSchema,
    after: Option<&Value>,
    limit: usize,
) -> Result<Vec<Row>> {
    let key = schema
        .primary_key()
        .map(|c| c.name.as_str())
        .ok_or_else(|| Error::invalid_input(format!("table {} has no primary key", schema.name)))?;
    let mut q = Query::new().order_by_asc(key).limit(limit as u64);
    if let Some(a) = after {
        q = q.filter(col(key).gt(a.clone()));
    }
    db.read(&schema.name, &q).await
}

/// The rows of `keys` on `db` (one read with an `in` filter).
pub(crate) async fn rows_by_keys(
    db: &dyn Database,
    schema: &TableSchema,
    keys: Vec<Value>,
) -> Result<Vec<Row>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let key = schema
        .primary_key()
        .map(|c| c.name.as_str())
        .ok_or_else(|| Error::invalid_input(format!("table {} has no primary key", schema.name)))?;
    let q = Query::new().filter(col(key).is_in(keys));
    db.read(&schema.name, &q).await
}

/// The last row's key of a page.
fn last_key(schema: &TableSchema, rows: &[Row]) -> Option<Value> {
    let key = schema.primary_key()?.name.as_str();
    rows.last().and_then(|r| r.get(key)).cloned()
}

/// Creates the table on the target (unless it exists); without its
/// foreign keys when [`add_foreign_keys`] adds them after the rows.
pub(crate) async fn create_table(
    target: &dyn Database,
    plan: &TablePlan,
    without_foreign_keys: bool,
) -> Result<()> {
    if plan.exists_on_target {
        return Ok(());
    }
    let mut schema = plan.schema.clone();
    schema.if_not_exists = true;
    if without_foreign_keys {
        schema.foreign_keys.clear();
    }
    target.create_table(&schema).await
}

/// Adds to the target's tables the source's foreign keys they lack (by
/// constraint name): after the rows, so each is checked once over the
/// table (a run resumed after a crash adds those the crash left out).
pub(crate) async fn add_foreign_keys(
    target: &dyn Database,
    tables: &[TablePlan],
    progress: &Progress,
) -> Result<()> {
    let mut announced = false;
    for plan in tables {
        let schema = &plan.schema;
        if schema.foreign_keys.is_empty() {
            continue;
        }
        let present: HashSet<String> = target
            .describe_table(&schema.name)
            .await?
            .map(|t| {
                t.foreign_keys
                    .iter()
                    .map(|fk| fk.resolved_name(&t.name))
                    .collect()
            })
            .unwrap_or_default();
        for fk in &schema.foreign_keys {
            if present.contains(&fk.resolved_name(&schema.name)) {
                continue;
            }
            if !announced {
                progress.message("migrate: rows copied; adding foreign keys");
                announced = true;
            }
            target
                .alter_table(&schema.name, &[AlterTable::AddForeignKey(fk.clone())])
                .await
                .map_err(|e| {
                    e.with_context("table", schema.name.clone())
                        .with_context("foreign_key", fk.resolved_name(&schema.name))
                })?;
        }
    }
    Ok(())
}

/// Makes the source's secondary indexes on the target and moves an
/// auto-increment key's sequence past the copied keys (PostgreSQL's
/// identity columns do not advance on explicit values).
pub(crate) async fn finish_table(target: &dyn Database, plan: &TablePlan) -> Result<()> {
    for ix in &plan.indexes {
        target.create_index(ix).await?;
    }
    advance_sequence(target, plan).await
}

/// Moves an auto-increment key's PostgreSQL sequence past the keys on the
/// target (again after following, whose creates carry explicit keys).
pub(crate) async fn advance_sequence(target: &dyn Database, plan: &TablePlan) -> Result<()> {
    let caps = target.capabilities();
    let auto = plan
        .schema
        .primary_key()
        .filter(|c| c.default == Some(ColumnDefault::AutoIncrement));
    if let (Some(pk), true, Some(SqlDialect::Postgres)) = (auto, caps.raw_sql, caps.sql_dialect) {
        let table = ident::quote(&plan.schema.name);
        let column = ident::quote(&pk.name);
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence(:table, :column), \
             COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false) AS v"
        );
        let mut params = Params::new();
        params.insert("table".into(), Value::from(table));
        params.insert("column".into(), Value::from(pk.name.clone()));
        target.raw_query(&sql, &params).await?;
    }
    Ok(())
}

/// Of a page read from the source, the rows the target does not hold yet
/// (a resumed run: the batch after the checkpoint may have been committed
/// just before the crash, before its checkpoint was written).
async fn missing_on_target(
    target: &dyn Database,
    schema: &TableSchema,
    rows: Vec<Row>,
) -> Result<(Vec<Row>, usize)> {
    let Some(key) = schema.primary_key().map(|c| c.name.clone()) else {
        return Ok((rows, 0));
    };
    let keys: Vec<Value> = rows.iter().filter_map(|r| r.get(&key).cloned()).collect();
    let present: HashSet<String> = rows_by_keys(target, schema, keys)
        .await?
        .iter()
        .filter_map(|r| r.get(&key))
        .map(|k| key_text(schema, k))
        .collect();
    if present.is_empty() {
        return Ok((rows, 0));
    }
    let n = present.len();
    let rows = rows
        .into_iter()
        .filter(|r| {
            r.get(&key)
                .is_none_or(|k| !present.contains(&key_text(schema, k)))
        })
        .collect();
    Ok((rows, n))
}

/// Copies one table's rows from its checkpoint on, recording each
/// committed batch. With `reconcile` (a resumed run), batches are checked
/// against the target until one has none of its keys there.
pub(crate) async fn copy_rows(
    source: Arc<dyn Database>,
    target: Arc<dyn Database>,
    plan: &TablePlan,
    state: &StateFile,
    batch: usize,
    reconcile: bool,
    task: &Task,
) -> Result<u64> {
    let schema = plan.schema.clone();
    let mut st = state.table(plan.name()).await;
    if st.done {
        task.set(st.rows);
        return Ok(0);
    }
    task.set(st.rows);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Row>>>(1);
    let reader_schema = schema.clone();
    let start = st.last_key.clone();
    let reader = tokio::spawn(async move {
        let mut after = start;
        loop {
            let page = read_page(source.as_ref(), &reader_schema, after.as_ref(), batch).await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let full = page.len() == batch;
            after = last_key(&reader_schema, &page);
            if page.is_empty() || tx.send(Ok(page)).await.is_err() || !full {
                return;
            }
        }
    });
    let mut checking = reconcile;
    let mut copied = 0u64;
    let result: Result<()> = async {
        while let Some(page) = rx.recv().await {
            let page = page?;
            let Some(last) = last_key(&schema, &page) else {
                break;
            };
            let n = page.len() as u64;
            let rows = if checking {
                let (rows, present) = missing_on_target(target.as_ref(), &schema, page).await?;
                checking = present > 0;
                rows
            } else {
                page
            };
            if !rows.is_empty() {
                target
                    .insert_many(&schema.name, rows)
                    .await
                    .map_err(|e| e.with_context("table", schema.name.clone()))?;
            }
            st.last_key = Some(last);
            st.rows += n;
            copied += n;
            state.set_table(&schema.name, st.clone()).await?;
            task.inc(n);
        }
        Ok(())
    }
    .await;
    reader.abort();
    result?;
    finish_table(target.as_ref(), plan).await?;
    state
        .set_table(&schema.name, TableState { done: true, ..st })
        .await?;
    Ok(copied)
}
