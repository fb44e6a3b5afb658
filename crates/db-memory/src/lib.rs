#![doc = include_str!("../README.md")]

mod foreign;
mod query;
mod table;
mod value;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use async_trait::async_trait;
use truststream_core_db::{
    ident, AlterTable, ChangeFeed, ChangeFeedScope, ChangeKind, ChangeStream, Database,
    DbCapabilities, DbRegistry, DbResult, Error, Filter, Health, IndexSpec, Operation,
    OperationOutput, Params, ProviderInfo, Query, Row, RowChange, TableSchema, Value,
};

use crate::foreign::Pending;
use crate::query::{Bound, Source};
use crate::table::Table;

/// Type name under which [`register`] adds the provider.
pub const TYPE_NAME: &str = "memory";

/// Configuration of the memory provider (all optional).
///
/// ```
/// let cfg: truststream_db_memory::MemoryConfig =
///     serde_json::from_value(serde_json::json!({"max_rows_per_table": 10_000})).unwrap();
/// assert_eq!(cfg.max_rows_per_table, Some(10_000));
/// assert_eq!(cfg.change_feed_capacity, 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Largest number of rows one table may hold; an insert beyond it is
    /// [`truststream_core_db::ErrorKind::TooLarge`]. Protects tests from
    /// runaway loops. `None` (the default): no limit.
    pub max_rows_per_table: Option<usize>,
    /// How many changes the change feed buffers per subscriber before a slow
    /// subscriber loses changes (it then gets one `Unavailable` error saying
    /// how many). Default 1024; at least 1.
    pub change_feed_capacity: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_rows_per_table: None,
            change_feed_capacity: 1024,
        }
    }
}

/// Every table, and which table each index name belongs to.
#[derive(Debug, Default)]
pub(crate) struct State {
    tables: HashMap<String, Table>,
    index_names: HashMap<String, String>,
}

impl State {
    pub(crate) fn table(&self, name: &str) -> Result<&Table, Error> {
        self.tables.get(name).ok_or_else(|| missing_table(name))
    }

    fn table_mut(&mut self, name: &str) -> Result<&mut Table, Error> {
        self.tables.get_mut(name).ok_or_else(|| missing_table(name))
    }
}

fn missing_table(name: &str) -> Error {
    Error::not_found(format!("table {name} does not exist")).with_context("table", name.to_string())
}

/// The in-memory database: a complete [`Database`] that keeps its tables in
/// process memory. See the crate documentation for its semantics.
pub struct MemoryDatabase {
    config: MemoryConfig,
    state: RwLock<State>,
    connected: AtomicBool,
    changes: ChangeFeed,
}

impl std::fmt::Debug for MemoryDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables = self.read_state().tables.len();
        f.debug_struct("MemoryDatabase")
            .field("config", &self.config)
            .field("tables", &tables)
            .field("connected", &self.connected.load(Ordering::SeqCst))
            .finish()
    }
}

impl Default for MemoryDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDatabase {
    /// An empty database with the default configuration.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// An empty database with `config`.
    pub fn with_config(config: MemoryConfig) -> Self {
        let changes = ChangeFeed::new(config.change_feed_capacity);
        MemoryDatabase {
            config,
            state: RwLock::new(State::default()),
            connected: AtomicBool::new(true),
            changes,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    // A panic while holding the lock cannot leave a half-applied change
    // (writes are undone on error before the guard drops), so a poisoned lock
    // is still consistent and is used as is.
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn ensure_connected(&self, op: &'static str) -> DbResult<()> {
        if self.connected.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(
                Error::unavailable("the memory database is disconnected; call connect() first")
                    .with_operation(op),
            )
        }
    }

    /// Runs a write: `f` works on a [`Writer`]; on error everything it did is
    /// undone, on success its changes are published (under the lock, so the
    /// feed order is the commit order).
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Writer<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        self.ensure_connected(op)?;
        let mut state = self.write_state();
        let foreign_keys = state
            .tables
            .values()
            .any(|t| !t.schema.foreign_keys.is_empty());
        let mut w = Writer {
            state: &mut state,
            max_rows: self.config.max_rows_per_table,
            undo: Vec::new(),
            changes: Vec::new(),
            foreign_keys,
            pending: Vec::new(),
        };
        match f(&mut w).and_then(|v| w.end_statement().map(|()| v)) {
            Ok(v) => {
                let now = chrono::Utc::now();
                self.changes
                    .publish(std::mem::take(&mut w.changes).into_iter().map(|mut c| {
                        c.committed_at = now;
                        c
                    }));
                Ok(v)
            }
            Err(e) => {
                w.rollback();
                Err(e.with_operation(op))
            }
        }
    }
}

/// Undo log entries of a [`Writer`].
enum Undo {
    Inserted { table: String, seq: u64 },
    Removed { table: String, seq: u64, row: Row },
    Replaced { table: String, seq: u64, old: Row },
    AutoInc { table: String, value: i64 },
}

/// Applies row writes to the state, recording how to undo them and which
/// changes to publish on commit.
struct Writer<'a> {
    state: &'a mut State,
    max_rows: Option<usize>,
    undo: Vec<Undo>,
    changes: Vec<RowChange>,
    /// Whether any table has a foreign key (else nothing is recorded in
    /// `pending`).
    foreign_keys: bool,
    /// Rows to check against foreign keys when the statement ends.
    pending: Vec<Pending>,
}

impl Writer<'_> {
    fn pend(&mut self, p: impl FnOnce() -> Pending) {
        if self.foreign_keys {
            self.pending.push(p());
        }
    }

    /// Checks the foreign keys of what the statement wrote.
    fn end_statement(&mut self) -> DbResult<()> {
        let pending = std::mem::take(&mut self.pending);
        foreign::check(self.state, &pending)
    }

    fn rollback(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Inserted { table, seq } => {
                    if let Some(t) = self.state.tables.get_mut(&table) {
                        t.remove(seq);
                    }
                }
                Undo::Removed { table, seq, row } => {
                    if let Some(t) = self.state.tables.get_mut(&table) {
                        t.restore(seq, row);
                    }
                }
                Undo::Replaced { table, seq, old } => {
                    if let Some(t) = self.state.tables.get_mut(&table) {
                        t.replace_unchecked(seq, old);
                    }
                }
                Undo::AutoInc { table, value } => {
                    if let Some(t) = self.state.tables.get_mut(&table) {
                        t.auto_inc = value;
                    }
                }
            }
        }
        self.changes.clear();
    }

    fn change(
        &mut self,
        table: &str,
        kind: ChangeKind,
        key: Value,
        old: Option<Row>,
        new: Option<Row>,
    ) {
        self.changes.push(RowChange {
            table: table.to_string(),
            kind,
            key,
            old,
            new,
            committed_at: chrono::Utc::now(),
        });
    }

    fn create_many(&mut self, table: &str, rows: &[Row]) -> DbResult<Vec<Row>> {
        ident::table(table)?;
        rows.iter().try_for_each(check_row_keys)?;
        let max_rows = self.max_rows;
        let t = self.state.table_mut(table)?;
        if let Some(max) = max_rows {
            if t.rows.len().saturating_add(rows.len()) > max {
                return Err(Error::too_large(format!(
                    "table {table} would hold {} rows, more than max_rows_per_table = {max}",
                    t.rows.len().saturating_add(rows.len())
                ))
                .with_context("table", table.to_string()));
            }
        }
        let prev_auto = t.auto_inc;
        self.undo.push(Undo::AutoInc {
            table: table.to_string(),
            value: prev_auto,
        });
        let mut out = Vec::with_capacity(rows.len());
        for (i, input) in rows.iter().enumerate() {
            let t = self.state.table_mut(table)?;
            let result = t.prepare_insert(input).and_then(|row| {
                let seq = t.insert(row.clone())?;
                Ok((seq, row))
            });
            let (seq, row) = match result {
                Ok(v) => v,
                Err(e) if rows.len() > 1 => return Err(e.with_context("row_index", i.to_string())),
                Err(e) => return Err(e),
            };
            let key = row.get(&t.pk).cloned().unwrap_or(Value::Null);
            self.undo.push(Undo::Inserted {
                table: table.to_string(),
                seq,
            });
            self.change(table, ChangeKind::Insert, key, None, Some(row.clone()));
            self.pend(|| Pending::Written {
                table: table.to_string(),
                row: row.clone(),
            });
            out.push(row);
        }
        Ok(out)
    }

    fn update_seq(&mut self, table: &str, seq: u64, patch: &Row) -> DbResult<Row> {
        let t = self.state.table_mut(table)?;
        let old = t
            .rows
            .get(&seq)
            .cloned()
            .ok_or_else(|| Error::internal("row vanished during update"))?;
        let new = Table::patched(&old, patch);
        t.replace(seq, new.clone())?;
        let key = new.get(&t.pk).cloned().unwrap_or(Value::Null);
        self.undo.push(Undo::Replaced {
            table: table.to_string(),
            seq,
            old: old.clone(),
        });
        self.pend(|| Pending::Gone {
            table: table.to_string(),
            row: old.clone(),
        });
        self.pend(|| Pending::Written {
            table: table.to_string(),
            row: new.clone(),
        });
        self.change(table, ChangeKind::Update, key, Some(old), Some(new.clone()));
        Ok(new)
    }

    fn update(&mut self, table: &str, id: &Value, patch: &Row) -> DbResult<Row> {
        ident::table(table)?;
        check_row_keys(patch)?;
        let t = self.state.table(table)?;
        let patch = t.prepare_patch(patch)?;
        let seq = t.find(id)?.ok_or_else(|| {
            Error::not_found(format!(
                "table {table} has no row with {} = {}",
                t.pk,
                value::describe(id)
            ))
            .with_context("table", table.to_string())
        })?;
        self.update_seq(table, seq, &patch)
    }

    fn delete_seq(&mut self, table: &str, seq: u64) -> DbResult<()> {
        let t = self.state.table_mut(table)?;
        let row = t
            .remove(seq)
            .ok_or_else(|| Error::internal("row vanished during delete"))?;
        let key = row.get(&t.pk).cloned().unwrap_or(Value::Null);
        self.undo.push(Undo::Removed {
            table: table.to_string(),
            seq,
            row: row.clone(),
        });
        self.pend(|| Pending::Gone {
            table: table.to_string(),
            row: row.clone(),
        });
        self.change(table, ChangeKind::Delete, key, Some(row), None);
        Ok(())
    }

    fn delete(&mut self, table: &str, id: &Value) -> DbResult<bool> {
        ident::table(table)?;
        match self.state.table(table)?.find(id)? {
            Some(seq) => self.delete_seq(table, seq).map(|()| true),
            None => Ok(false),
        }
    }

    /// Sequence numbers of the rows of `table` matching `filter`.
    fn matching(&self, table: &str, filter: &Filter) -> DbResult<Vec<u64>> {
        ident::table(table)?;
        filter.validate()?;
        let t = self.state.table(table)?;
        let sources = [Source {
            qualifier: table.to_string(),
            table: t,
        }];
        let bound = Bound::new(&sources, filter)?;
        let mut out = Vec::new();
        for (seq, row) in &t.rows {
            if bound.matches(&[Some(row)])? {
                out.push(*seq);
            }
        }
        Ok(out)
    }

    fn update_many(&mut self, table: &str, filter: &Filter, patch: &Row) -> DbResult<u64> {
        ident::table(table)?;
        check_row_keys(patch)?;
        filter.validate()?;
        let patch = self.state.table(table)?.prepare_patch(patch)?;
        let seqs = self.matching(table, filter)?;
        for &seq in &seqs {
            self.update_seq(table, seq, &patch)?;
        }
        Ok(seqs.len() as u64)
    }

    fn delete_many(&mut self, table: &str, filter: &Filter) -> DbResult<u64> {
        let seqs = self.matching(table, filter)?;
        for &seq in &seqs {
            self.delete_seq(table, seq)?;
        }
        Ok(seqs.len() as u64)
    }

    fn apply(&mut self, op: &Operation) -> DbResult<OperationOutput> {
        let out = self.apply_one(op)?;
        self.end_statement()?;
        Ok(out)
    }

    fn apply_one(&mut self, op: &Operation) -> DbResult<OperationOutput> {
        Ok(match op {
            Operation::Create { table, data } => {
                let mut rows = self.create_many(table, std::slice::from_ref(data))?;
                OperationOutput::Row(
                    rows.pop()
                        .ok_or_else(|| Error::internal("insert returned no row"))?,
                )
            }
            Operation::CreateMany { table, rows } => {
                OperationOutput::Rows(self.create_many(table, rows)?)
            }
            Operation::InsertMany { table, rows } => {
                OperationOutput::Affected(self.create_many(table, rows)?.len() as u64)
            }
            Operation::Update { table, id, data } => {
                OperationOutput::Row(self.update(table, id, data)?)
            }
            Operation::UpdateMany {
                table,
                filter,
                data,
            } => OperationOutput::Affected(self.update_many(table, filter, data)?),
            Operation::UpdateChecked {
                table,
                filter,
                data,
                expected,
            } => {
                let n = self.update_many(table, filter, data)?;
                OperationOutput::Affected(truststream_core_db::check_updated(table, *expected, n)?)
            }
            Operation::Delete { table, id } => OperationOutput::Deleted(self.delete(table, id)?),
            Operation::DeleteMany { table, filter } => {
                OperationOutput::Affected(self.delete_many(table, filter)?)
            }
        })
    }
}

#[async_trait]
impl Database for MemoryDatabase {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> DbCapabilities {
        let mut c = DbCapabilities::none();
        c.transactions = true;
        c.raw_sql = false;
        c.sql_dialect = None;
        c.joins = true;
        c.aggregates = true;
        c.schema = true;
        c.change_feed = true;
        c.change_feed_scope = Some(ChangeFeedScope::Instance);
        c.unique_constraints = true;
        c.foreign_keys = true;
        c.json_containment = true;
        c.max_bind_params = None;
        c
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        if !self.connected.load(Ordering::SeqCst) {
            return Health::unhealthy(start.elapsed(), "disconnected; call connect()");
        }
        drop(self.read_state());
        Health::healthy(start.elapsed())
    }

    async fn connect(&self) -> DbResult<()> {
        self.connected.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn disconnect(&self) -> DbResult<()> {
        self.connected.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn create(&self, table: &str, row: Row) -> DbResult<Row> {
        self.write("db.create", |w| {
            let mut rows = w.create_many(table, std::slice::from_ref(&row))?;
            rows.pop()
                .ok_or_else(|| Error::internal("insert returned no row"))
        })
    }

    async fn read(&self, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        self.ensure_connected("db.read")?;
        ident::table(table).map_err(|e| e.with_operation("db.read"))?;
        let state = self.read_state();
        query::read(&state, table, query).map_err(|e| e.with_operation("db.read"))
    }

    async fn get(&self, table: &str, id: &Value) -> DbResult<Option<Row>> {
        self.ensure_connected("db.get")?;
        let run = || {
            ident::table(table)?;
            let state = self.read_state();
            let t = state.table(table)?;
            Ok(t.find(id)?.and_then(|seq| t.rows.get(&seq).cloned()))
        };
        run().map_err(|e: Error| e.with_operation("db.get"))
    }

    async fn update(&self, table: &str, id: &Value, patch: Row) -> DbResult<Row> {
        self.write("db.update", |w| w.update(table, id, &patch))
    }

    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool> {
        self.write("db.delete", |w| w.delete(table, id))
    }

    async fn create_many(&self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>> {
        self.write("db.create_many", |w| w.create_many(table, &rows))
    }

    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64> {
        self.write("db.update_many", |w| w.update_many(table, filter, &patch))
    }

    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64> {
        self.write("db.delete_many", |w| w.delete_many(table, filter))
    }

    async fn raw_query(&self, _sql: &str, _params: &Params) -> DbResult<Vec<Row>> {
        self.ensure_connected("db.raw_query")?;
        Err(Error::unsupported(
            "the memory database does not run SQL (capability raw_sql is false); use read() with a Query",
        )
        .with_operation("db.raw_query"))
    }

    async fn transaction(&self, operations: Vec<Operation>) -> DbResult<Vec<OperationOutput>> {
        self.write("db.transaction", |w| {
            let mut out = Vec::with_capacity(operations.len());
            for (i, op) in operations.iter().enumerate() {
                let result = w.apply(op).map_err(|e| {
                    e.with_context("operation_index", i.to_string())
                        .with_context("operation", op.name())
                })?;
                out.push(result);
            }
            Ok(out)
        })
    }

    async fn describe_table(&self, table: &str) -> DbResult<Option<TableSchema>> {
        self.ensure_connected("db.describe_table")?;
        ident::table(table).map_err(|e| e.with_operation("db.describe_table"))?;
        let state = self.read_state();
        Ok(state.tables.get(table).map(|t| {
            let mut schema = t.schema.clone();
            schema.if_not_exists = false;
            schema
        }))
    }

    async fn create_table(&self, schema: &TableSchema) -> DbResult<()> {
        self.ensure_connected("db.create_table")?;
        let run = || {
            schema.validate()?;
            let mut state = self.write_state();
            if state.tables.contains_key(&schema.name) {
                if schema.if_not_exists {
                    return Ok(());
                }
                return Err(
                    Error::conflict(format!("table {} already exists", schema.name))
                        .with_context("table", schema.name.clone()),
                );
            }
            for fk in &schema.foreign_keys {
                let target = if fk.referenced_table == schema.name {
                    Some(schema)
                } else {
                    state.tables.get(&fk.referenced_table).map(|t| &t.schema)
                };
                fk.check_target(&schema.name, target)?;
            }
            let table = Table::new(schema.clone())?;
            for idx in &table.indexes {
                if let Some(other) = state.index_names.get(&idx.name) {
                    return Err(Error::conflict(format!(
                        "an index named {} already exists (on table {other})",
                        idx.name
                    )));
                }
            }
            for idx in &table.indexes {
                state
                    .index_names
                    .insert(idx.name.clone(), schema.name.clone());
            }
            state.tables.insert(schema.name.clone(), table);
            Ok(())
        };
        run().map_err(|e: Error| e.with_operation("db.create_table"))
    }

    async fn drop_table(&self, table: &str, if_exists: bool) -> DbResult<()> {
        self.ensure_connected("db.drop_table")?;
        let run = || {
            ident::table(table)?;
            let mut state = self.write_state();
            match state.tables.remove(table) {
                Some(_) => {
                    state.index_names.retain(|_, t| t != table);
                    Ok(())
                }
                None if if_exists => Ok(()),
                None => Err(missing_table(table)),
            }
        };
        run().map_err(|e: Error| e.with_operation("db.drop_table"))
    }

    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> DbResult<()> {
        self.ensure_connected("db.alter_table")?;
        let run = || {
            ident::table(table)?;
            changes.iter().try_for_each(AlterTable::validate)?;
            let mut state = self.write_state();
            // All or nothing: work on a copy, swap it in at the end.
            let mut t = state.table(table)?.clone();
            let mut dropped_indexes = Vec::new();
            for change in changes {
                if let AlterTable::DropColumn(c) = change {
                    referenced_elsewhere(&state, table, c)?;
                }
                alter(&mut t, change, &mut dropped_indexes)?;
            }
            // Other tables' references follow a renamed column.
            for change in changes {
                if let AlterTable::RenameColumn { from, to } = change {
                    for (name, other) in state.tables.iter_mut() {
                        if name == table {
                            continue;
                        }
                        for fk in &mut other.schema.foreign_keys {
                            if fk.referenced_table == table {
                                for c in &mut fk.referenced_columns {
                                    if c == from {
                                        *c = to.clone();
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for name in dropped_indexes {
                state.index_names.remove(&name);
            }
            state.tables.insert(table.to_string(), t);
            Ok(())
        };
        run().map_err(|e: Error| {
            e.with_operation("db.alter_table")
                .with_context("table", table.to_string())
        })
    }

    async fn create_index(&self, index: &IndexSpec) -> DbResult<()> {
        self.ensure_connected("db.create_index")?;
        let run = || {
            index.validate()?;
            let name = index.resolved_name();
            let mut state = self.write_state();
            let t = state.table(&index.table)?;
            for c in &index.columns {
                if t.schema.find(c).is_none() {
                    return Err(Error::invalid_input(format!(
                        "table {} has no column {c}",
                        index.table
                    )));
                }
            }
            if let Some(other) = state.index_names.get(&name) {
                if index.if_not_exists {
                    return Ok(());
                }
                return Err(Error::conflict(format!(
                    "an index named {name} already exists (on table {other})"
                )));
            }
            let t = state.table_mut(&index.table)?;
            t.add_index(name.clone(), index.columns.clone(), index.unique)?;
            state.index_names.insert(name, index.table.clone());
            Ok(())
        };
        run().map_err(|e: Error| e.with_operation("db.create_index"))
    }

    async fn subscribe_changes(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        self.ensure_connected("db.subscribe_changes")?;
        let filter = match table {
            Some(t) => {
                ident::table(t)?;
                self.read_state().table(t)?;
                Some(t.to_string())
            }
            None => None,
        };
        Ok(self.changes.subscribe(filter))
    }
}

/// Checks the column names of a row or patch before anything else, so a
/// hostile key is `InvalidInput` whatever else is wrong.
fn check_row_keys(row: &Row) -> DbResult<()> {
    row.keys().try_for_each(|k| ident::validate(k))
}

/// Applies one `alter_table` change to a copy of the table.
fn alter(t: &mut Table, change: &AlterTable, dropped_indexes: &mut Vec<String>) -> DbResult<()> {
    let table = t.schema.name.clone();
    match change {
        AlterTable::AddColumn(def) => {
            if t.schema.find(&def.name).is_some() {
                return Err(Error::conflict(format!(
                    "table {table} already has a column {}",
                    def.name
                )));
            }
            let mut probe = TableSchema::new(&table).column(def.clone());
            probe.columns[0].primary_key = true;
            // Normalizes a constant default (and checks it fits the type).
            let normalized = Table::new(probe)?.schema.columns.remove(0);
            let mut def = def.clone();
            def.default = normalized.default;
            if !def.nullable && def.default.is_none() && !t.rows.is_empty() {
                return Err(Error::invalid_input(format!(
                    "cannot add NOT NULL column {} without a default to table {table}, which has rows",
                    def.name
                )));
            }
            let mut rows: Vec<u64> = t.rows.keys().copied().collect();
            rows.sort_unstable();
            for seq in rows {
                let v = match &def.default {
                    None | Some(truststream_core_db::ColumnDefault::AutoIncrement) => Value::Null,
                    Some(truststream_core_db::ColumnDefault::Value(v)) => v.clone(),
                    Some(truststream_core_db::ColumnDefault::Now) => value::now(),
                    Some(truststream_core_db::ColumnDefault::RandomUuid) => {
                        Value::String(uuid::Uuid::new_v4().hyphenated().to_string())
                    }
                };
                if let Some(row) = t.rows.get_mut(&seq) {
                    row.insert(def.name.clone(), v);
                }
            }
            let unique = def.unique;
            let name = def.name.clone();
            t.schema.columns.push(def);
            if unique {
                let mut idx_name = format!("{table}_{name}_key");
                idx_name.truncate(ident::MAX_LEN);
                t.add_index(idx_name, vec![name], true)?;
            }
            Ok(())
        }
        AlterTable::DropColumn(c) => {
            if t.schema.find(c).is_none() {
                return Err(Error::invalid_input(format!(
                    "table {table} has no column {c}"
                )));
            }
            if *c == t.pk {
                return Err(Error::invalid_input(format!(
                    "cannot drop column {c}: it is the primary key of table {table}"
                )));
            }
            t.schema.check_droppable(c)?;
            dropped_indexes.extend(t.drop_column(c));
            Ok(())
        }
        AlterTable::RenameColumn { from, to } => {
            if t.schema.find(from).is_none() {
                return Err(Error::invalid_input(format!(
                    "table {table} has no column {from}"
                )));
            }
            if from == to {
                return Ok(());
            }
            if t.schema.find(to).is_some() {
                return Err(Error::conflict(format!(
                    "table {table} already has a column {to}"
                )));
            }
            t.rename_column(from, to);
            Ok(())
        }
        // Not yet: declared in create_table only (`add_foreign_keys` off).
        AlterTable::AddForeignKey(fk) => Err(Error::unsupported(format!(
            "the memory provider cannot add foreign key {} to existing table {table}: declare it in create_table",
            fk.resolved_name(&table)
        ))),
    }
}

/// `InvalidInput` when a foreign key of another table references column
/// `column` of `table`.
fn referenced_elsewhere(state: &State, table: &str, column: &str) -> DbResult<()> {
    for (name, other) in &state.tables {
        if let Some(fk) = other.schema.foreign_keys.iter().find(|fk| {
            name != table
                && fk.referenced_table == table
                && fk.referenced_columns.iter().any(|c| c == column)
        }) {
            return Err(Error::invalid_input(format!(
                "cannot drop column {column} of table {table}: foreign key {} of table {name} references it",
                fk.resolved_name(name)
            )));
        }
    }
    Ok(())
}

/// Registers the provider under [`TYPE_NAME`] (`"memory"`). Each build returns
/// a new, empty database configured by [`MemoryConfig`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut reg = truststream_core_db::DbRegistry::new("database");
/// truststream_db_memory::register(&mut reg);
/// let db = reg.build("memory", serde_json::json!({}), ()).await.unwrap();
/// assert_eq!(db.info().name, "memory");
/// # });
/// ```
pub fn register(reg: &mut DbRegistry) {
    reg.register(TYPE_NAME, |cfg, ()| async move {
        let cfg: MemoryConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        Ok(Arc::new(MemoryDatabase::with_config(cfg)) as Arc<dyn Database>)
    });
}
