//! `Database::scoped` through layers: a [`LayeredDatabase`] re-wraps the
//! provider's scoped handle with the same layer (generic layers see scoped
//! calls), a layer may substitute another layer for the scoped handle or
//! refuse, and a provider without row-level security stays `Unsupported`.

#![allow(clippy::unwrap_used)] // test helpers, not library code
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;
use truststream_core::{BoxFuture, Error, ErrorKind, Health, ProviderInfo, Result};
use truststream_core_db::{
    AlterTable, ChangeStream, ColumnDef, Database, DbCapabilities, Filter, IndexSpec, Operation,
    OperationOutput, Params, Query, RequestScope, Row, TableSchema, Value,
};
use truststream_db_memory::MemoryDatabase;
use truststream_layer::{around_database, Around, DatabaseLayer, LayeredDatabase, Next, Op};

/// A provider over db-memory whose `scoped` works: every call records the
/// role it ran as (`-` unscoped).
struct ScopeAware {
    inner: Arc<MemoryDatabase>,
    role: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl ScopeAware {
    fn note(&self, method: &str) {
        let role = self.role.as_deref().unwrap_or("-");
        self.log.lock().unwrap().push(format!("{method} as {role}"));
    }
}

#[async_trait]
impl Database for ScopeAware {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> DbCapabilities {
        let mut c = self.inner.capabilities();
        c.row_security = true;
        c
    }
    async fn health(&self) -> Health {
        self.inner.health().await
    }
    async fn connect(&self) -> Result<()> {
        self.inner.connect().await
    }
    async fn disconnect(&self) -> Result<()> {
        self.inner.disconnect().await
    }
    async fn create(&self, table: &str, row: Row) -> Result<Row> {
        self.note("create");
        self.inner.create(table, row).await
    }
    async fn read(&self, table: &str, query: &Query) -> Result<Vec<Row>> {
        self.note("read");
        self.inner.read(table, query).await
    }
    async fn get(&self, table: &str, id: &Value) -> Result<Option<Row>> {
        self.note("get");
        self.inner.get(table, id).await
    }
    async fn update(&self, table: &str, id: &Value, patch: Row) -> Result<Row> {
        self.note("update");
        self.inner.update(table, id, patch).await
    }
    async fn delete(&self, table: &str, id: &Value) -> Result<bool> {
        self.note("delete");
        self.inner.delete(table, id).await
    }
    async fn create_many(&self, table: &str, rows: Vec<Row>) -> Result<Vec<Row>> {
        self.note("create_many");
        self.inner.create_many(table, rows).await
    }
    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> Result<u64> {
        self.note("update_many");
        self.inner.update_many(table, filter, patch).await
    }
    async fn delete_many(&self, table: &str, filter: &Filter) -> Result<u64> {
        self.note("delete_many");
        self.inner.delete_many(table, filter).await
    }
    async fn raw_query(&self, sql: &str, params: &Params) -> Result<Vec<Row>> {
        self.inner.raw_query(sql, params).await
    }
    async fn transaction(&self, operations: Vec<Operation>) -> Result<Vec<OperationOutput>> {
        self.note("transaction");
        self.inner.transaction(operations).await
    }
    async fn create_table(&self, schema: &TableSchema) -> Result<()> {
        self.inner.create_table(schema).await
    }
    async fn drop_table(&self, table: &str, if_exists: bool) -> Result<()> {
        self.inner.drop_table(table, if_exists).await
    }
    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> Result<()> {
        self.inner.alter_table(table, changes).await
    }
    async fn create_index(&self, index: &IndexSpec) -> Result<()> {
        self.inner.create_index(index).await
    }
    fn scoped(self: Arc<Self>, scope: RequestScope) -> Result<Arc<dyn Database>> {
        Ok(Arc::new(ScopeAware {
            inner: Arc::clone(&self.inner),
            role: Some(scope.role),
            log: Arc::clone(&self.log),
        }))
    }
    async fn subscribe_changes(&self, table: Option<&str>) -> Result<ChangeStream> {
        self.inner.subscribe_changes(table).await
    }
}

/// Counts the calls it sees, by method.
#[derive(Default)]
struct Count(Mutex<Vec<&'static str>>);

impl Around for Count {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        self.0.lock().unwrap().push(op.method);
        next.run()
    }
}

fn scope(role: &str) -> RequestScope {
    RequestScope::new(role, json!({"sub": "u1"}).as_object().unwrap().clone()).unwrap()
}

fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}

async fn provider() -> (Arc<dyn Database>, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let db = Arc::new(ScopeAware {
        inner: Arc::new(MemoryDatabase::new()),
        role: None,
        log: Arc::clone(&log),
    });
    db.create_table(&TableSchema::new("t").column(ColumnDef::text("id").primary_key()))
        .await
        .unwrap();
    (db, log)
}

#[tokio::test]
async fn layers_apply_to_scoped_calls_which_run_as_the_scope() {
    let (db, log) = provider().await;
    let count = Arc::new(Count::default());
    let layered = around_database(db, Arc::clone(&count));
    let scoped = Arc::clone(&layered).scoped(scope("authenticated")).unwrap();
    scoped.create("t", row(json!({"id": "a"}))).await.unwrap();
    assert!(scoped.get("t", &json!("a")).await.unwrap().is_some());
    layered.read("t", &Query::new()).await.unwrap();
    assert!(scoped.capabilities().row_security);
    assert_eq!(*count.0.lock().unwrap(), ["create", "get", "read"]);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "create as authenticated",
            "get as authenticated",
            "read as -"
        ]
    );
    // Stacked layers: every level re-wraps.
    let count2 = Arc::new(Count::default());
    let twice = around_database(layered, Arc::clone(&count2));
    let s2 = twice.scoped(scope("anon")).unwrap();
    s2.delete("t", &json!("a")).await.unwrap();
    assert_eq!(count.0.lock().unwrap().last(), Some(&"delete"));
    assert_eq!(*count2.0.lock().unwrap(), ["delete"]);
    assert_eq!(log.lock().unwrap().last().unwrap(), "delete as anon");
}

/// Serves `get` from a fixed answer; its scoped handle bypasses it.
struct Stub {
    scoped: bool,
}

#[async_trait]
impl DatabaseLayer for Stub {
    async fn get(&self, next: &dyn Database, table: &str, id: &Value) -> Result<Option<Row>> {
        if self.scoped {
            next.get(table, id).await
        } else {
            Ok(Some(row(json!({"id": "stub"}))))
        }
    }
    fn scoped_layer(&self, scope: &RequestScope) -> Result<Option<Arc<dyn DatabaseLayer>>> {
        if scope.role == "refused" {
            return Err(Error::unsupported("this layer refuses scoped handles"));
        }
        Ok(Some(Arc::new(Stub { scoped: true })))
    }
}

#[tokio::test]
async fn a_layer_may_replace_itself_or_refuse_for_scoped_handles() {
    let (db, log) = provider().await;
    db.create("t", row(json!({"id": "real"}))).await.unwrap();
    let layered = Arc::new(LayeredDatabase::new(db, Arc::new(Stub { scoped: false })));
    let got = layered.get("t", &json!("real")).await.unwrap().unwrap();
    assert_eq!(got["id"], "stub");
    let scoped = Arc::clone(&layered).scoped(scope("authenticated")).unwrap();
    let got = scoped.get("t", &json!("real")).await.unwrap().unwrap();
    assert_eq!(got["id"], "real");
    assert_eq!(log.lock().unwrap().last().unwrap(), "get as authenticated");
    let e = layered.scoped(scope("refused")).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[tokio::test]
async fn a_provider_without_row_security_stays_unsupported_through_layers() {
    let db = around_database(Arc::new(MemoryDatabase::new()), Arc::new(Count::default()));
    assert!(!db.capabilities().row_security);
    let e = db.scoped(scope("authenticated")).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}
