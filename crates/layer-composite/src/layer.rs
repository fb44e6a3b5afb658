//! The composite layer over the primary: writes with their outbox entries,
//! schema calls, reads with fallback, health.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use truststream_core::{echo, Error, ErrorKind, Health, Result};
use truststream_core_db::{
    AlterTable, ColumnType, Database, DbCapabilities, Filter, IndexSpec, Operation,
    OperationOutput, Params, Query, RequestScope, Row, TableSchema, Value,
};
use truststream_layer::{DatabaseLayer, LayeredDatabase};

use crate::config::CompositeConfig;
use crate::outbox::{self, Entry};
use crate::replicator::{self, Replicator};
use crate::watch::{Fallbacks, Labels, Verdict};

/// How far the secondary is behind: the entries waiting in the outbox and
/// the age of the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicationLag {
    /// Entries waiting in the outbox.
    pub entries: u64,
    /// Age of the oldest waiting entry; zero when the outbox is empty.
    pub oldest: Duration,
}

/// What the layer has done since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompositeStats {
    /// Reads answered by the secondary because the primary answered
    /// `Unavailable` or `Timeout`.
    pub read_fallbacks: u64,
    /// Outbox entries applied to the secondary and removed.
    pub applied: u64,
    /// Replication passes that stopped on an error.
    pub failed_passes: u64,
}

/// The state the layer and its replicator share.
pub(crate) struct Shared {
    pub primary: Arc<dyn Database>,
    pub secondary: Arc<dyn Database>,
    pub config: CompositeConfig,
    pub catalog_table: String,
    /// Replicated tables by name (a copy of the catalog table).
    pub catalog: RwLock<HashMap<String, TableSchema>>,
    pub replicator: Replicator,
    fallbacks: Fallbacks,
    pub labels: Labels,
}

impl Shared {
    pub(crate) fn schema(&self, table: &str) -> Option<TableSchema> {
        read_lock(&self.catalog).get(table).cloned()
    }
}

pub(crate) fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// The composite (primary/secondary) layer: see the crate documentation.
///
/// Built by [`CompositeLayer::wrap`]; the replicator runs in the
/// background until the layer is dropped.
pub struct CompositeLayer {
    shared: Arc<Shared>,
    // Dropping the layer drops the sender, which stops the replicator.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for CompositeLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositeLayer")
            .field("primary", &self.shared.primary.info().name)
            .field("secondary", &self.shared.secondary.info().name)
            .field("outbox_table", &self.shared.config.outbox_table)
            .finish()
    }
}

impl CompositeLayer {
    /// Wraps `primary`, replicating to `secondary`: creates the outbox and
    /// catalog tables on the primary (if they do not exist), loads the
    /// catalog, and starts the replicator (on the current tokio runtime),
    /// which resumes from whatever the outbox holds.
    ///
    /// The primary must support transactions (`Unsupported` otherwise) and
    /// be reachable.
    pub async fn wrap(
        primary: Arc<dyn Database>,
        secondary: Arc<dyn Database>,
        config: &CompositeConfig,
    ) -> Result<Arc<LayeredDatabase<CompositeLayer>>> {
        if !primary.capabilities().transactions {
            return Err(Error::unsupported(format!(
                "composite: the primary ({}) has no transactions; the outbox must be written in the write's transaction",
                primary.info().name
            )));
        }
        let catalog_table = config.catalog_table();
        primary
            .create_table(&outbox::outbox_schema(&config.outbox_table))
            .await?;
        primary
            .create_table(&outbox::catalog_schema(&catalog_table))
            .await?;
        let mut catalog = HashMap::new();
        for row in primary.read(&catalog_table, &Query::new()).await? {
            let schema = parse_schema(&catalog_table, &row)?;
            catalog.insert(schema.name.clone(), schema);
        }
        let labels = [
            ("primary", primary.info().name.to_string()),
            ("secondary", secondary.info().name.to_string()),
        ];
        let shared = Arc::new(Shared {
            primary: Arc::clone(&primary),
            secondary,
            config: config.clone(),
            catalog_table,
            catalog: RwLock::new(catalog),
            replicator: Replicator::default(),
            fallbacks: Fallbacks::new("truststream_composite_read_fallbacks_total", "database"),
            labels,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(replicator::run(Arc::clone(&shared), stopped));
        let layer = CompositeLayer {
            shared,
            _stop: stop,
        };
        Ok(Arc::new(LayeredDatabase::new(primary, Arc::new(layer))))
    }

    /// The secondary database.
    pub fn secondary(&self) -> &Arc<dyn Database> {
        &self.shared.secondary
    }

    /// The settings.
    pub fn config(&self) -> &CompositeConfig {
        &self.shared.config
    }

    /// The replication lag, read from the primary's outbox (also published
    /// as the gauges `truststream_composite_outbox_entries` and
    /// `truststream_composite_lag_seconds`).
    pub async fn lag(&self) -> Result<ReplicationLag> {
        replicator::lag(&self.shared).await
    }

    /// Runs one replication pass now (at most `batch` entries, in outbox
    /// order) and returns how many entries it applied. Passes never overlap:
    /// this waits for a running one.
    pub async fn replicate_once(&self) -> Result<usize> {
        replicator::pass(&self.shared).await
    }

    /// Runs passes until the outbox is empty; fails with the first pass
    /// that fails.
    pub async fn catch_up(&self) -> Result<()> {
        loop {
            if replicator::pass(&self.shared).await? == 0 && self.lag().await?.entries == 0 {
                return Ok(());
            }
        }
    }

    /// Queues a full resync of `table` (every row compared and copied),
    /// e.g. after writing to the primary without the layer.
    pub async fn resync_table(&self, table: &str) -> Result<()> {
        self.learn(table, false).await?;
        let key_column = self.key_column(table)?;
        self.record(vec![Entry::Rows {
            table: table.to_string(),
            key_column,
            filter: None,
        }])
        .await
    }

    /// Counters since the layer was built.
    pub fn stats(&self) -> CompositeStats {
        CompositeStats {
            read_fallbacks: self.shared.fallbacks.count(),
            applied: self
                .shared
                .replicator
                .passes
                .applied
                .load(Ordering::Relaxed),
            failed_passes: self.shared.replicator.passes.failed(),
        }
    }

    /// Writes `entries` to the outbox in a transaction of their own.
    async fn record(&self, entries: Vec<Entry>) -> Result<()> {
        let s = &self.shared;
        if let Some(op) = outbox::insert(&s.config.outbox_table, &entries)? {
            s.primary.transaction(vec![op]).await?;
        }
        Ok(())
    }

    fn reserved(&self, table: &str) -> Result<()> {
        let s = &self.shared;
        if table == s.config.outbox_table || table == s.catalog_table {
            return Err(Error::invalid_input(format!(
                "composite: table {table} is the layer's own and cannot be changed through it"
            )));
        }
        Ok(())
    }

    /// Reads `table`'s entry of the catalog table into the layer's copy
    /// (another process may have created or changed the table); `fresh`
    /// reads it even when the copy has the table.
    async fn learn(&self, table: &str, fresh: bool) -> Result<()> {
        let s = &self.shared;
        if (!fresh && s.schema(table).is_some()) || self.reserved(table).is_err() {
            return Ok(());
        }
        if let Some(row) = s
            .primary
            .get(&s.catalog_table, &Value::String(table.to_string()))
            .await?
        {
            let schema = parse_schema(&s.catalog_table, &row)?;
            write_lock(&s.catalog).insert(table.to_string(), schema);
        } else if s.schema(table).is_none() {
            // Not replicated: a table the primary does not have either is
            // `NotFound`, as the primary itself would answer.
            if let Err(e) = s.primary.read(table, &Query::default().limit(1)).await {
                if e.kind() == ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn table_schema(&self, table: &str) -> Result<TableSchema> {
        self.reserved(table)?;
        self.shared.schema(table).ok_or_else(|| {
            Error::invalid_input(format!(
                "composite: table {} is not replicated: create it through the composite layer \
                 (create_table with if_not_exists adopts an existing table)",
                echo(table)
            ))
            .with_context("table", table)
        })
    }

    fn key_column(&self, table: &str) -> Result<String> {
        let schema = self.table_schema(table)?;
        Ok(primary_key(&schema)?.name.clone())
    }

    /// The key of a row being created: the one given, or a generated UUID
    /// for a uuid or text key column. Other key types must be given.
    fn fill_key(&self, table: &str, row: &mut Row) -> Result<Entry> {
        let schema = self.table_schema(table)?;
        let pk = primary_key(&schema)?;
        let key = match row.get(&pk.name) {
            Some(v) if !v.is_null() => v.clone(),
            _ => match pk.ty {
                ColumnType::Uuid | ColumnType::Text => {
                    let key = Value::String(uuid::Uuid::new_v4().to_string());
                    row.insert(pk.name.clone(), key.clone());
                    key
                }
                other => {
                    return Err(Error::invalid_input(format!(
                        "composite: a row of {table} needs its key {} (a {other:?} key the \
                         database would generate): the outbox entry is written in the same \
                         transaction as the row, so the key must be known before; give it, \
                         or use a uuid or text key, which the layer fills",
                        pk.name
                    ))
                    .with_context("table", table))
                }
            },
        };
        Ok(Entry::Row {
            table: table.to_string(),
            key_column: pk.name.clone(),
            key,
        })
    }

    fn row_entry(&self, table: &str, key: &Value) -> Result<Entry> {
        Ok(Entry::Row {
            table: table.to_string(),
            key_column: self.key_column(table)?,
            key: key.clone(),
        })
    }

    /// The outbox entries of one operation (filling generated keys in).
    fn entries_for(&self, op: &mut Operation, entries: &mut Vec<Entry>) -> Result<()> {
        match op {
            Operation::Create { table, data } => entries.push(self.fill_key(table, data)?),
            Operation::CreateMany { table, rows } | Operation::InsertMany { table, rows } => {
                for row in rows.iter_mut() {
                    entries.push(self.fill_key(table, row)?);
                }
            }
            Operation::Update { table, id, data } => {
                entries.push(self.row_entry(table, id)?);
                // A patch that changes the key moves the row.
                let key_column = self.key_column(table)?;
                if let Some(new_key) = data.get(&key_column) {
                    if new_key != id {
                        entries.push(self.row_entry(table, new_key)?);
                    }
                }
            }
            Operation::Delete { table, id } => entries.push(self.row_entry(table, id)?),
            Operation::UpdateMany { table, filter, .. }
            | Operation::UpdateChecked { table, filter, .. }
            | Operation::DeleteMany { table, filter } => {
                entries.push(Entry::Rows {
                    table: table.clone(),
                    key_column: self.key_column(table)?,
                    filter: Some(filter.clone()),
                });
            }
        }
        Ok(())
    }

    /// Runs `operations` on the primary with their outbox entries appended,
    /// all in one transaction; returns the outputs of `operations`.
    async fn write(
        &self,
        next: &dyn Database,
        mut operations: Vec<Operation>,
    ) -> Result<Vec<OperationOutput>> {
        for op in &operations {
            self.learn(op.table(), false).await?;
        }
        let mut entries = Vec::with_capacity(operations.len());
        for op in operations.iter_mut() {
            self.entries_for(op, &mut entries)?;
        }
        let n = operations.len();
        if let Some(op) = outbox::insert(&self.shared.config.outbox_table, &entries)? {
            operations.push(op);
        }
        let mut outputs = next.transaction(operations).await?;
        outputs.truncate(n);
        Ok(outputs)
    }

    async fn write_one(&self, next: &dyn Database, op: Operation) -> Result<OperationOutput> {
        self.write(next, vec![op])
            .await?
            .pop()
            .ok_or_else(|| Error::internal("composite: the transaction returned no output"))
    }

    /// Records a catalog change and its outbox entry in one transaction.
    async fn catalog_change(
        &self,
        table: &str,
        schema: Option<&TableSchema>,
        entry: Entry,
    ) -> Result<()> {
        let s = &self.shared;
        let mut ops = vec![Operation::Delete {
            table: s.catalog_table.clone(),
            id: Value::String(table.to_string()),
        }];
        if let Some(schema) = schema {
            let mut row = Row::new();
            row.insert("name".into(), table.into());
            row.insert(
                "schema".into(),
                serde_json::to_value(schema).map_err(|e| {
                    Error::internal("composite: cannot encode a schema").with_source(e)
                })?,
            );
            ops.push(Operation::Create {
                table: s.catalog_table.clone(),
                data: row,
            });
        }
        ops.extend(outbox::insert(&s.config.outbox_table, &[entry])?);
        s.primary.transaction(ops).await?;
        let mut catalog = write_lock(&s.catalog);
        match schema {
            Some(schema) => catalog.insert(table.to_string(), schema.clone()),
            None => catalog.remove(table),
        };
        Ok(())
    }
}

pub(crate) fn parse_schema(catalog_table: &str, row: &Row) -> Result<TableSchema> {
    let schema = row.get("schema").cloned().unwrap_or(Value::Null);
    let schema = match schema {
        Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        other => other,
    };
    serde_json::from_value(schema).map_err(|e| {
        Error::internal(format!(
            "composite: a schema in {catalog_table} cannot be read"
        ))
        .with_source(e)
    })
}

fn primary_key(schema: &TableSchema) -> Result<&truststream_core_db::ColumnDef> {
    schema.primary_key().ok_or_else(|| {
        Error::invalid_input(format!(
            "composite: table {} has no primary key",
            schema.name
        ))
    })
}

/// A schema after `changes`.
fn altered(mut schema: TableSchema, changes: &[AlterTable]) -> TableSchema {
    for change in changes {
        match change {
            AlterTable::AddColumn(c) => schema.columns.push(c.clone()),
            AlterTable::DropColumn(name) => schema.columns.retain(|c| &c.name != name),
            AlterTable::RenameColumn { from, to } => {
                if let Some(c) = schema.columns.iter_mut().find(|c| &c.name == from) {
                    c.name = to.clone();
                }
            }
            AlterTable::AddForeignKey(fk) => schema.foreign_keys.push(fk.clone()),
        }
    }
    schema
}

#[async_trait]
impl DatabaseLayer for CompositeLayer {
    fn capabilities(&self, next: &dyn Database) -> DbCapabilities {
        let mut caps = next.capabilities();
        // Raw SQL may write anything and cannot share the outbox's
        // transaction: refused (see the crate documentation).
        caps.raw_sql = false;
        caps.sql_dialect = None;
        // Request-scoped handles are refused (see `scoped_layer`).
        caps.row_security = false;
        caps
    }

    /// Refused: a scoped write's outbox entry would be written as the
    /// request's role (which row-level security may hide it from, or
    /// refuse), the replicator copies rows whatever their policies, and a
    /// read falling back to the secondary would not be filtered by the
    /// primary's policies.
    fn scoped_layer(&self, _scope: &RequestScope) -> Result<Option<Arc<dyn DatabaseLayer>>> {
        Err(Error::unsupported(
            "the composite layer cannot run calls as a request's role: its outbox, replication \
             and secondary reads are not covered by the primary's row-level security",
        )
        .with_operation("db.scoped"))
    }

    async fn health(&self, next: &dyn Database) -> Health {
        let started = Instant::now();
        let s = &self.shared;
        let (primary, secondary) = tokio::join!(next.health(), s.secondary.health());
        let mut verdict = Verdict::of_sides(started, &primary, &secondary);
        if verdict.primary_answers() {
            verdict.lag(
                replicator::lag(s).await,
                s.config.lag_degraded,
                "outbox entries",
            );
        }
        verdict.into_health()
    }

    async fn connect(&self, next: &dyn Database) -> Result<()> {
        next.connect().await?;
        if let Err(e) = self.shared.secondary.connect().await {
            tracing::warn!(error = %e, "composite: the secondary does not connect; replication waits for it");
        }
        Ok(())
    }

    async fn disconnect(&self, next: &dyn Database) -> Result<()> {
        let secondary = self.shared.secondary.disconnect().await;
        next.disconnect().await?;
        secondary
    }

    async fn create(&self, next: &dyn Database, table: &str, row: Row) -> Result<Row> {
        let op = Operation::Create {
            table: table.to_string(),
            data: row,
        };
        self.write_one(next, op)
            .await?
            .into_row()
            .ok_or_else(|| Error::internal("composite: create returned no row"))
    }

    async fn read(&self, next: &dyn Database, table: &str, query: &Query) -> Result<Vec<Row>> {
        let s = &self.shared;
        s.fallbacks
            .read(&s.labels, next.read(table, query), || {
                s.secondary.read(table, query)
            })
            .await
    }

    async fn get(&self, next: &dyn Database, table: &str, id: &Value) -> Result<Option<Row>> {
        let s = &self.shared;
        s.fallbacks
            .read(&s.labels, next.get(table, id), || {
                s.secondary.get(table, id)
            })
            .await
    }

    async fn update(
        &self,
        next: &dyn Database,
        table: &str,
        id: &Value,
        patch: Row,
    ) -> Result<Row> {
        let op = Operation::Update {
            table: table.to_string(),
            id: id.clone(),
            data: patch,
        };
        self.write_one(next, op)
            .await?
            .into_row()
            .ok_or_else(|| Error::internal("composite: update returned no row"))
    }

    async fn delete(&self, next: &dyn Database, table: &str, id: &Value) -> Result<bool> {
        let op = Operation::Delete {
            table: table.to_string(),
            id: id.clone(),
        };
        match self.write_one(next, op).await? {
            OperationOutput::Deleted(d) => Ok(d),
            _ => Err(Error::internal("composite: delete returned no flag")),
        }
    }

    async fn create_many(
        &self,
        next: &dyn Database,
        table: &str,
        rows: Vec<Row>,
    ) -> Result<Vec<Row>> {
        let op = Operation::CreateMany {
            table: table.to_string(),
            rows,
        };
        match self.write_one(next, op).await? {
            OperationOutput::Rows(rows) => Ok(rows),
            _ => Err(Error::internal("composite: create_many returned no rows")),
        }
    }

    async fn update_many(
        &self,
        next: &dyn Database,
        table: &str,
        filter: &Filter,
        patch: Row,
    ) -> Result<u64> {
        let op = Operation::UpdateMany {
            table: table.to_string(),
            filter: filter.clone(),
            data: patch,
        };
        match self.write_one(next, op).await? {
            OperationOutput::Affected(n) => Ok(n),
            _ => Err(Error::internal("composite: update_many returned no count")),
        }
    }

    async fn delete_many(&self, next: &dyn Database, table: &str, filter: &Filter) -> Result<u64> {
        let op = Operation::DeleteMany {
            table: table.to_string(),
            filter: filter.clone(),
        };
        match self.write_one(next, op).await? {
            OperationOutput::Affected(n) => Ok(n),
            _ => Err(Error::internal("composite: delete_many returned no count")),
        }
    }

    async fn raw_query(
        &self,
        _next: &dyn Database,
        _sql: &str,
        _params: &Params,
    ) -> Result<Vec<Row>> {
        Err(Error::unsupported(
            "composite: raw SQL is refused: its writes cannot be recorded in the outbox in the same \
             transaction. Run it on the primary directly, then CompositeLayer::resync_table for \
             each table it changed",
        )
        .with_operation("raw_query"))
    }

    async fn transaction(
        &self,
        next: &dyn Database,
        operations: Vec<Operation>,
    ) -> Result<Vec<OperationOutput>> {
        self.write(next, operations).await
    }

    async fn create_table(&self, next: &dyn Database, schema: &TableSchema) -> Result<()> {
        self.reserved(&schema.name)?;
        schema.validate()?;
        next.create_table(schema).await?;
        self.catalog_change(
            &schema.name,
            Some(schema),
            Entry::CreateTable(schema.clone()),
        )
        .await
    }

    async fn drop_table(&self, next: &dyn Database, table: &str, if_exists: bool) -> Result<()> {
        self.reserved(table)?;
        next.drop_table(table, if_exists).await?;
        self.catalog_change(
            table,
            None,
            Entry::DropTable {
                table: table.to_string(),
            },
        )
        .await
    }

    async fn alter_table(
        &self,
        next: &dyn Database,
        table: &str,
        changes: &[AlterTable],
    ) -> Result<()> {
        self.learn(table, true).await?;
        let schema = self.table_schema(table)?;
        next.alter_table(table, changes).await?;
        let schema = altered(schema, changes);
        self.catalog_change(
            table,
            Some(&schema),
            Entry::AlterTable {
                table: table.to_string(),
                changes: changes.to_vec(),
            },
        )
        .await
    }

    async fn create_index(&self, next: &dyn Database, index: &IndexSpec) -> Result<()> {
        self.learn(&index.table, false).await?;
        self.table_schema(&index.table)?;
        next.create_index(index).await?;
        self.record(vec![Entry::CreateIndex(index.clone())]).await
    }
}
