//! Layers over [`Database`].

use std::sync::Arc;

use async_trait::async_trait;
use truststream_core::{BoxFuture, Health, ProviderInfo, Result};
use truststream_core_db::{
    AlterTable, ChangeStream, Database, DbCapabilities, Filter, IndexSpec, Operation,
    OperationOutput, Params, Query, RequestScope, ResultSet, Row, TableSchema, Value,
};

use crate::around::{
    copy_clone, copy_unit, health_through, through, Access, Around, Interface, Op,
};
use crate::Generic;

/// A layer over [`Database`]: every method has a default that calls the
/// same method of `next` (the layer or provider below), so a layer overrides
/// only the methods it changes. Wrap a provider with [`LayeredDatabase`].
///
/// Generic layers ([`Around`]) get this through [`Generic`].
#[allow(missing_docs)] // each method is the `Database` method of that name
#[async_trait]
pub trait DatabaseLayer: Send + Sync + 'static {
    fn info(&self, next: &dyn Database) -> ProviderInfo {
        next.info()
    }
    fn capabilities(&self, next: &dyn Database) -> DbCapabilities {
        next.capabilities()
    }
    async fn health(&self, next: &dyn Database) -> Health {
        next.health().await
    }
    async fn connect(&self, next: &dyn Database) -> Result<()> {
        next.connect().await
    }
    async fn disconnect(&self, next: &dyn Database) -> Result<()> {
        next.disconnect().await
    }
    async fn create(&self, next: &dyn Database, table: &str, row: Row) -> Result<Row> {
        next.create(table, row).await
    }
    async fn read(&self, next: &dyn Database, table: &str, query: &Query) -> Result<Vec<Row>> {
        next.read(table, query).await
    }
    async fn get(&self, next: &dyn Database, table: &str, id: &Value) -> Result<Option<Row>> {
        next.get(table, id).await
    }
    async fn update(
        &self,
        next: &dyn Database,
        table: &str,
        id: &Value,
        patch: Row,
    ) -> Result<Row> {
        next.update(table, id, patch).await
    }
    async fn delete(&self, next: &dyn Database, table: &str, id: &Value) -> Result<bool> {
        next.delete(table, id).await
    }
    async fn create_many(
        &self,
        next: &dyn Database,
        table: &str,
        rows: Vec<Row>,
    ) -> Result<Vec<Row>> {
        next.create_many(table, rows).await
    }
    /// The one exception to "calls the same method of `next`": by default
    /// this layer's own [`DatabaseLayer::create_many`], counted, so a layer
    /// that acts on `create_many` (a cache invalidating, a composite
    /// writing twice) covers bulk loads without knowing of them. A layer
    /// that passes writes through unchanged overrides it to keep the
    /// provider's bulk path.
    async fn insert_many(&self, next: &dyn Database, table: &str, rows: Vec<Row>) -> Result<u64> {
        Ok(self.create_many(next, table, rows).await?.len() as u64)
    }
    async fn update_many(
        &self,
        next: &dyn Database,
        table: &str,
        filter: &Filter,
        patch: Row,
    ) -> Result<u64> {
        next.update_many(table, filter, patch).await
    }
    async fn delete_many(&self, next: &dyn Database, table: &str, filter: &Filter) -> Result<u64> {
        next.delete_many(table, filter).await
    }
    async fn raw_query(&self, next: &dyn Database, sql: &str, params: &Params) -> Result<Vec<Row>> {
        next.raw_query(sql, params).await
    }
    async fn transaction(
        &self,
        next: &dyn Database,
        operations: Vec<Operation>,
    ) -> Result<Vec<OperationOutput>> {
        next.transaction(operations).await
    }
    async fn create_table(&self, next: &dyn Database, schema: &TableSchema) -> Result<()> {
        next.create_table(schema).await
    }
    async fn drop_table(&self, next: &dyn Database, table: &str, if_exists: bool) -> Result<()> {
        next.drop_table(table, if_exists).await
    }
    async fn alter_table(
        &self,
        next: &dyn Database,
        table: &str,
        changes: &[AlterTable],
    ) -> Result<()> {
        next.alter_table(table, changes).await
    }
    async fn create_index(&self, next: &dyn Database, index: &IndexSpec) -> Result<()> {
        next.create_index(index).await
    }
    async fn describe_table(
        &self,
        next: &dyn Database,
        table: &str,
    ) -> Result<Option<TableSchema>> {
        next.describe_table(table).await
    }
    async fn subscribe_changes(
        &self,
        next: &dyn Database,
        table: Option<&str>,
    ) -> Result<ChangeStream> {
        next.subscribe_changes(table).await
    }
    /// The layer over a request-scoped handle of the provider below
    /// ([`Database::scoped`] of a [`LayeredDatabase`]). `Ok(None)`, the
    /// default: this same layer (metrics, retries, breaker, timeouts and
    /// limits apply to scoped calls as to the others). A layer whose state
    /// must not mix scoped and unscoped calls returns another layer for
    /// the scoped handle (a cache: one that never serves or stores), or
    /// refuses (`Err`).
    fn scoped_layer(&self, scope: &RequestScope) -> Result<Option<Arc<dyn DatabaseLayer>>> {
        let _ = scope;
        Ok(None)
    }
}

/// A [`Database`] provider with a layer over it. Itself a `Database`, so
/// layers stack by wrapping again (the last one wrapped is the outermost).
pub struct LayeredDatabase<L: ?Sized> {
    inner: Arc<dyn Database>,
    layer: Arc<L>,
}

impl<L: DatabaseLayer + ?Sized> LayeredDatabase<L> {
    /// `layer` over `inner`.
    pub fn new(inner: Arc<dyn Database>, layer: Arc<L>) -> Self {
        LayeredDatabase { inner, layer }
    }

    /// The provider (or layer) below.
    pub fn inner(&self) -> &Arc<dyn Database> {
        &self.inner
    }

    /// The layer.
    pub fn layer(&self) -> &Arc<L> {
        &self.layer
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<L: DatabaseLayer + ?Sized> Database for LayeredDatabase<L> {
    fn info(&self) -> ProviderInfo {
        self.layer.info(&*self.inner)
    }
    fn capabilities(&self) -> DbCapabilities {
        self.layer.capabilities(&*self.inner)
    }
    async fn health(&self) -> Health {
        self.layer.health(&*self.inner).await
    }
    async fn connect(&self) -> Result<()> {
        self.layer.connect(&*self.inner).await
    }
    async fn disconnect(&self) -> Result<()> {
        self.layer.disconnect(&*self.inner).await
    }
    async fn create(&self, table: &str, row: Row) -> Result<Row> {
        self.layer.create(&*self.inner, table, row).await
    }
    // As `get` below: the layer's own future.
    fn read<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        table: &'life1 str,
        query: &'life2 Query,
    ) -> BoxFuture<'async_trait, Result<Vec<Row>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        self.layer.read(&*self.inner, table, query)
    }
    // The layer's own future, not one more wrapped around it (one
    // allocation and one poll less per layer on the hottest read); the
    // signature is the one `async_trait` gives `async fn get`.
    fn get<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        table: &'life1 str,
        id: &'life2 Value,
    ) -> BoxFuture<'async_trait, Result<Option<Row>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        self.layer.get(&*self.inner, table, id)
    }
    async fn update(&self, table: &str, id: &Value, patch: Row) -> Result<Row> {
        self.layer.update(&*self.inner, table, id, patch).await
    }
    async fn delete(&self, table: &str, id: &Value) -> Result<bool> {
        self.layer.delete(&*self.inner, table, id).await
    }
    async fn create_many(&self, table: &str, rows: Vec<Row>) -> Result<Vec<Row>> {
        self.layer.create_many(&*self.inner, table, rows).await
    }
    async fn insert_many(&self, table: &str, rows: Vec<Row>) -> Result<u64> {
        self.layer.insert_many(&*self.inner, table, rows).await
    }
    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> Result<u64> {
        self.layer
            .update_many(&*self.inner, table, filter, patch)
            .await
    }
    async fn delete_many(&self, table: &str, filter: &Filter) -> Result<u64> {
        self.layer.delete_many(&*self.inner, table, filter).await
    }
    async fn raw_query(&self, sql: &str, params: &Params) -> Result<Vec<Row>> {
        self.layer.raw_query(&*self.inner, sql, params).await
    }
    async fn transaction(&self, operations: Vec<Operation>) -> Result<Vec<OperationOutput>> {
        self.layer.transaction(&*self.inner, operations).await
    }
    async fn create_table(&self, schema: &TableSchema) -> Result<()> {
        self.layer.create_table(&*self.inner, schema).await
    }
    async fn drop_table(&self, table: &str, if_exists: bool) -> Result<()> {
        self.layer.drop_table(&*self.inner, table, if_exists).await
    }
    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> Result<()> {
        self.layer.alter_table(&*self.inner, table, changes).await
    }
    async fn create_index(&self, index: &IndexSpec) -> Result<()> {
        self.layer.create_index(&*self.inner, index).await
    }
    async fn describe_table(&self, table: &str) -> Result<Option<TableSchema>> {
        self.layer.describe_table(&*self.inner, table).await
    }
    /// Through the layer's `read`, so the layer sees every read (the rows
    /// as the layer returns them).
    async fn read_set(&self, table: &str, query: &Query) -> Result<ResultSet> {
        self.read(table, query).await.map(ResultSet::from_rows)
    }
    /// Through the layer's `get`, as [`Database::read_set`] above.
    async fn get_set(&self, table: &str, id: &Value) -> Result<ResultSet> {
        let row = self.get(table, id).await?;
        Ok(ResultSet::from_rows(Vec::from_iter(row)))
    }
    /// Through the layer's `get`, as [`Database::get_set`] above.
    async fn get_columns_set(
        &self,
        table: &str,
        id: &Value,
        columns: &[&str],
    ) -> Result<ResultSet> {
        truststream_core_db::project_get(self, table, id, columns).await
    }
    async fn subscribe_changes(&self, table: Option<&str>) -> Result<ChangeStream> {
        self.layer.subscribe_changes(&*self.inner, table).await
    }
    /// The provider's scoped handle with this layer over it again
    /// ([`DatabaseLayer::scoped_layer`] says which layer, or refuses).
    fn scoped(self: Arc<Self>, scope: RequestScope) -> Result<Arc<dyn Database>> {
        let replacement = self.layer.scoped_layer(&scope)?;
        let inner = Arc::clone(&self.inner).scoped(scope)?;
        Ok(match replacement {
            None => Arc::new(LayeredDatabase::new(inner, Arc::clone(&self.layer))),
            Some(layer) => Arc::new(LayeredDatabase::<dyn DatabaseLayer>::new(inner, layer)),
        })
    }
}

fn op<'a>(
    next: &dyn Database,
    method: &'static str,
    access: Access,
    target: Option<&'a str>,
    idempotent: bool,
) -> Op<'a> {
    Op {
        interface: Interface::Database,
        provider: next.info().name,
        method,
        access,
        target,
        idempotent,
        replayable: true,
    }
}

/// Whether every operation of a transaction may run twice.
fn idempotent_operations(operations: &[Operation]) -> bool {
    operations.iter().all(|o| {
        matches!(
            o,
            Operation::Update { .. }
                | Operation::UpdateMany { .. }
                | Operation::Delete { .. }
                | Operation::DeleteMany { .. }
        )
    })
}

#[async_trait]
impl<A: Around + ?Sized> DatabaseLayer for Generic<A> {
    async fn health(&self, next: &dyn Database) -> Health {
        let op = Op {
            interface: Interface::Database,
            provider: next.info().name,
            method: "health",
            access: Access::Admin,
            target: None,
            idempotent: true,
            replayable: true,
        };
        health_through(&*self.0, op, || next.health()).await
    }
    async fn connect(&self, next: &dyn Database) -> Result<()> {
        let op = op(next, "connect", Access::Admin, None, true);
        through(&*self.0, op, (), copy_unit, |()| next.connect()).await
    }
    async fn disconnect(&self, next: &dyn Database) -> Result<()> {
        let op = op(next, "disconnect", Access::Admin, None, true);
        through(&*self.0, op, (), copy_unit, |()| next.disconnect()).await
    }
    async fn create(&self, next: &dyn Database, table: &str, row: Row) -> Result<Row> {
        let op = op(next, "create", Access::Write, Some(table), false);
        through(&*self.0, op, row, copy_clone, |row| next.create(table, row)).await
    }
    async fn read(&self, next: &dyn Database, table: &str, query: &Query) -> Result<Vec<Row>> {
        let op = op(next, "read", Access::Read, Some(table), true);
        through(&*self.0, op, (), copy_unit, |()| next.read(table, query)).await
    }
    async fn get(&self, next: &dyn Database, table: &str, id: &Value) -> Result<Option<Row>> {
        let op = op(next, "get", Access::Read, Some(table), true);
        through(&*self.0, op, (), copy_unit, |()| next.get(table, id)).await
    }
    async fn update(
        &self,
        next: &dyn Database,
        table: &str,
        id: &Value,
        patch: Row,
    ) -> Result<Row> {
        let op = op(next, "update", Access::Write, Some(table), true);
        through(&*self.0, op, patch, copy_clone, |patch| {
            next.update(table, id, patch)
        })
        .await
    }
    async fn delete(&self, next: &dyn Database, table: &str, id: &Value) -> Result<bool> {
        // Idempotent in effect; a repeat after a lost answer reports
        // `false` for a row the first attempt deleted.
        let op = op(next, "delete", Access::Write, Some(table), true);
        through(&*self.0, op, (), copy_unit, |()| next.delete(table, id)).await
    }
    async fn create_many(
        &self,
        next: &dyn Database,
        table: &str,
        rows: Vec<Row>,
    ) -> Result<Vec<Row>> {
        let op = op(next, "create_many", Access::Write, Some(table), false);
        through(&*self.0, op, rows, copy_clone, |rows| {
            next.create_many(table, rows)
        })
        .await
    }
    async fn insert_many(&self, next: &dyn Database, table: &str, rows: Vec<Row>) -> Result<u64> {
        let op = op(next, "insert_many", Access::Write, Some(table), false);
        through(&*self.0, op, rows, copy_clone, |rows| {
            next.insert_many(table, rows)
        })
        .await
    }
    async fn update_many(
        &self,
        next: &dyn Database,
        table: &str,
        filter: &Filter,
        patch: Row,
    ) -> Result<u64> {
        let op = op(next, "update_many", Access::Write, Some(table), true);
        through(&*self.0, op, patch, copy_clone, |patch| {
            next.update_many(table, filter, patch)
        })
        .await
    }
    async fn delete_many(&self, next: &dyn Database, table: &str, filter: &Filter) -> Result<u64> {
        let op = op(next, "delete_many", Access::Write, Some(table), true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.delete_many(table, filter)
        })
        .await
    }
    async fn raw_query(&self, next: &dyn Database, sql: &str, params: &Params) -> Result<Vec<Row>> {
        // Raw SQL may write anything: never repeated unless unapplied.
        let op = op(next, "raw_query", Access::Write, None, false);
        through(&*self.0, op, (), copy_unit, |()| {
            next.raw_query(sql, params)
        })
        .await
    }
    async fn transaction(
        &self,
        next: &dyn Database,
        operations: Vec<Operation>,
    ) -> Result<Vec<OperationOutput>> {
        let idempotent = idempotent_operations(&operations);
        let op = op(next, "transaction", Access::Write, None, idempotent);
        through(&*self.0, op, operations, copy_clone, |operations| {
            next.transaction(operations)
        })
        .await
    }
    async fn create_table(&self, next: &dyn Database, schema: &TableSchema) -> Result<()> {
        let op = op(
            next,
            "create_table",
            Access::Schema,
            Some(&schema.name),
            schema.if_not_exists,
        );
        through(&*self.0, op, (), copy_unit, |()| next.create_table(schema)).await
    }
    async fn drop_table(&self, next: &dyn Database, table: &str, if_exists: bool) -> Result<()> {
        let op = op(next, "drop_table", Access::Schema, Some(table), if_exists);
        through(&*self.0, op, (), copy_unit, |()| {
            next.drop_table(table, if_exists)
        })
        .await
    }
    async fn alter_table(
        &self,
        next: &dyn Database,
        table: &str,
        changes: &[AlterTable],
    ) -> Result<()> {
        let op = op(next, "alter_table", Access::Schema, Some(table), false);
        through(&*self.0, op, (), copy_unit, |()| {
            next.alter_table(table, changes)
        })
        .await
    }
    async fn create_index(&self, next: &dyn Database, index: &IndexSpec) -> Result<()> {
        let op = op(
            next,
            "create_index",
            Access::Schema,
            Some(&index.table),
            index.if_not_exists,
        );
        through(&*self.0, op, (), copy_unit, |()| next.create_index(index)).await
    }
    async fn describe_table(
        &self,
        next: &dyn Database,
        table: &str,
    ) -> Result<Option<TableSchema>> {
        // Reads metadata only: a read, safe to repeat.
        let op = op(next, "describe_table", Access::Read, Some(table), true);
        through(&*self.0, op, (), copy_unit, |()| next.describe_table(table)).await
    }
    async fn subscribe_changes(
        &self,
        next: &dyn Database,
        table: Option<&str>,
    ) -> Result<ChangeStream> {
        let op = op(next, "subscribe_changes", Access::Stream, table, true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.subscribe_changes(table)
        })
        .await
    }
}
