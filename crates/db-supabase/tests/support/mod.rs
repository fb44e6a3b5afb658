//! A `truststream serve` in process over a database, and a SupabaseDb
//! pointed at it; a recording wrapper that shows which calls reached the
//! SQL backend.

#![allow(dead_code)] // each test binary uses part of it
#![allow(clippy::unwrap_used)] // test helpers

pub mod postrust;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_auth::Auth;
use truststream_core_db::{
    AlterTable, ChangeStream, Database, DbCapabilities, DbResult, Filter, Health, IndexSpec,
    Operation, OperationOutput, Params, ProviderInfo, Query, RequestScope, Row, TableSchema, Value,
};
use truststream_db_supabase::{BytesFormat, SupabaseDb, SupabaseDbConfig};
use truststream_serve::{ApiKeys, Providers, Running, ServeConfig, Server, TablePolicy};

/// Values that mean something to PostgREST's grammar, to URLs, to SQL.
pub const HOSTILE: &[&str] = &[
    "a,b",
    "(x)",
    "x)",
    "\"q\"",
    "back\\slash",
    "plus+sign",
    "100%",
    "amp&x=1",
    "hash#frag",
    "é漢字🤖",
    " lead",
    "trail ",
    "or=(id.eq.1)",
    "not.eq.x",
    "in.(1,2)",
    "a.b",
    "{}",
    "{a,b}",
    "*",
    "null",
    "",
    "'; drop table items; --",
    "%2C",
    "+",
    "a:b",
    "x\ny",
];

/// `v` (a JSON object) as a row.
pub fn row(v: serde_json::Value) -> Row {
    v.as_object().cloned().expect("a JSON object")
}

pub const SECRET: &str = "an HS256 secret for the db-supabase tests, 32+ bytes";

/// Which SQL backend calls were made (method name, and for reads whether
/// the query needed SQL: joins, aggregates or group_by).
#[derive(Debug, Default)]
pub struct Calls(pub Mutex<Vec<String>>);

impl Calls {
    pub fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Runs after the `n`th read (1-based) has been answered: a write made
/// "between" two pages of a paged read.
pub type AfterRead = Arc<dyn Fn(usize) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Forwards every call to `inner` and records its name; keeps the server
/// alive as long as the provider using it.
pub struct Recording {
    pub inner: Arc<dyn Database>,
    pub calls: Arc<Calls>,
    pub server: Option<Arc<Running>>,
    /// Run after each read (given the count of reads so far).
    pub after_read: Option<AfterRead>,
}

#[async_trait]
impl Database for Recording {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> DbCapabilities {
        self.inner.capabilities()
    }
    async fn health(&self) -> Health {
        self.inner.health().await
    }
    async fn connect(&self) -> DbResult<()> {
        self.inner.connect().await
    }
    async fn disconnect(&self) -> DbResult<()> {
        self.inner.disconnect().await
    }
    async fn create(&self, table: &str, row: Row) -> DbResult<Row> {
        self.calls.push("create");
        self.inner.create(table, row).await
    }
    async fn read(&self, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        let needs_sql = !query.joins.is_empty()
            || !query.group_by.is_empty()
            || query
                .select
                .iter()
                .any(|s| matches!(s, truststream_core_db::SelectItem::Aggregate { .. }));
        self.calls
            .push(if needs_sql { "read(sql-only)" } else { "read" });
        let rows = self.inner.read(table, query).await;
        if let Some(hook) = &self.after_read {
            let n = self
                .calls
                .all()
                .iter()
                .filter(|c| c.starts_with("read"))
                .count();
            hook(n).await;
        }
        rows
    }
    async fn get(&self, table: &str, id: &Value) -> DbResult<Option<Row>> {
        self.calls.push("get");
        self.inner.get(table, id).await
    }
    async fn update(&self, table: &str, id: &Value, patch: Row) -> DbResult<Row> {
        self.calls.push("update");
        self.inner.update(table, id, patch).await
    }
    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool> {
        self.calls.push("delete");
        self.inner.delete(table, id).await
    }
    async fn create_many(&self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>> {
        self.calls.push("create_many");
        self.inner.create_many(table, rows).await
    }
    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64> {
        self.calls.push("update_many");
        self.inner.update_many(table, filter, patch).await
    }
    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64> {
        self.calls.push("delete_many");
        self.inner.delete_many(table, filter).await
    }
    async fn raw_query(&self, sql: &str, params: &Params) -> DbResult<Vec<Row>> {
        self.calls.push("raw_query");
        self.inner.raw_query(sql, params).await
    }
    async fn transaction(&self, operations: Vec<Operation>) -> DbResult<Vec<OperationOutput>> {
        self.calls.push("transaction");
        self.inner.transaction(operations).await
    }
    async fn create_table(&self, schema: &TableSchema) -> DbResult<()> {
        self.calls.push("create_table");
        self.inner.create_table(schema).await
    }
    async fn drop_table(&self, table: &str, if_exists: bool) -> DbResult<()> {
        self.calls.push("drop_table");
        self.inner.drop_table(table, if_exists).await
    }
    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> DbResult<()> {
        self.calls.push("alter_table");
        self.inner.alter_table(table, changes).await
    }
    async fn create_index(&self, index: &IndexSpec) -> DbResult<()> {
        self.calls.push("create_index");
        self.inner.create_index(index).await
    }
    async fn describe_table(&self, table: &str) -> DbResult<Option<TableSchema>> {
        self.calls.push("describe_table");
        self.inner.describe_table(table).await
    }
    fn scoped(self: Arc<Self>, scope: RequestScope) -> DbResult<Arc<dyn Database>> {
        self.calls.push("scoped");
        self.inner.clone().scoped(scope)
    }
    async fn subscribe_changes(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        self.calls.push("subscribe_changes");
        self.inner.subscribe_changes(table).await
    }
}

/// A running server over `db`, with an auth provider over a database of
/// its own.
pub struct Served {
    pub server: Arc<Running>,
    pub auth: Arc<JwtAuth>,
}

pub async fn serve(
    db: Arc<dyn Database>,
    policies: Vec<(&str, TablePolicy)>,
) -> Result<Served, String> {
    serve_with(db, policies, false).await
}

/// [`serve`], with `serve.row_security` set as given (PostgreSQL: anon
/// and signed-in requests run as their role with their claims).
pub async fn serve_with(
    db: Arc<dyn Database>,
    policies: Vec<(&str, TablePolicy)>,
    row_security: bool,
) -> Result<Served, String> {
    let auth_db = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let mut cfg = JwtAuthConfig::with_secret(SECRET);
    cfg.argon2 = Argon2Cost::minimal();
    let auth = Arc::new(
        JwtAuth::new(cfg, auth_db)
            .await
            .map_err(|e| e.to_string())?,
    );
    let providers = Providers {
        db,
        auth: auth.clone() as Arc<dyn Auth>,
        storage: Arc::new(truststream_storage_memory::MemoryStorage::new()),
        metrics: None,
    };
    let config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        // The suite stores a 1 MiB value; the default limit is 1 MiB of JSON.
        max_json_body_bytes: 8 * 1024 * 1024,
        row_security,
        tables: policies
            .into_iter()
            .map(|(t, p)| (t.to_string(), p))
            .collect::<BTreeMap<_, _>>(),
        ..ServeConfig::default()
    };
    let server = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .map_err(|e| e.to_string())?
        .spawn();
    Ok(Served {
        server: Arc::new(server),
        auth,
    })
}

/// A service-role SupabaseDb against `served`, REST only.
pub fn rest_only(served: &Served) -> SupabaseDb {
    let mut cfg = SupabaseDbConfig::service_role(
        served.server.url.clone(),
        served.server.keys.service_role().to_string(),
    );
    // serve takes and answers bytes as base64 (core-db's form).
    cfg.bytes_format = BytesFormat::Base64;
    SupabaseDb::new(cfg).unwrap()
}

/// A service-role SupabaseDb against a server over `db`, with `db` (recorded
/// into `calls`) as its SQL backend.
pub async fn with_sql_backend(
    db: Arc<dyn Database>,
    calls: Arc<Calls>,
) -> Result<Arc<dyn Database>, String> {
    let served = serve(db.clone(), vec![]).await?;
    let backend = Recording {
        inner: db,
        calls,
        server: Some(served.server.clone()),
        after_read: None,
    };
    Ok(Arc::new(rest_only(&served).with_sql(Arc::new(backend))) as Arc<dyn Database>)
}

/// As [`with_sql_backend`], with realtime-memory over `db` as the change
/// feed (the way serve's realtime hub is fed by the database it serves).
pub async fn with_sql_backend_and_feed(
    db: Arc<dyn Database>,
    calls: Arc<Calls>,
) -> Result<Arc<dyn Database>, String> {
    let served = serve(db.clone(), vec![]).await?;
    let rt = Arc::new(truststream_realtime_memory::MemoryRealtime::with_change_feed(db.clone()));
    let backend = Recording {
        inner: db,
        calls,
        server: Some(served.server.clone()),
        after_read: None,
    };
    Ok(Arc::new(
        rest_only(&served)
            .with_sql(Arc::new(backend))
            .with_change_feed(rt),
    ) as Arc<dyn Database>)
}
