#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod compile;
mod config;
mod feed;
mod http;
mod paging;
mod types;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use reqwest::Method;
use truststream_core::{Health, Secret};
use truststream_core_db::{
    col, ident, AlterTable, ChangeFeedScope, ChangeStream, Database, DbCapabilities, DbRegistry,
    DbResult, Error, ErrorKind, Filter, IndexSpec, Operation, OperationOutput, Params,
    ProviderInfo, Query, RequestScope, Row, TableSchema, Value,
};
use truststream_core_realtime::Realtime;

pub use config::{BytesFormat, Prefer, SupabaseDbConfig, DEFAULT_MAX_ROWS};

use compile::{Compiled, NeedsSql};
use http::{Call, Rest};

/// The type name this provider registers under.
pub const TYPE_NAME: &str = "supabase";

/// What every handle of one provider shares.
struct Shared {
    config: SupabaseDbConfig,
    rest: Rest,
    closed: AtomicBool,
    /// Table schemas learned from the SQL backend (primary keys, column
    /// types and order).
    schemas: Mutex<HashMap<String, Arc<TableSchema>>>,
    /// REST only: the primary keys the server's OpenAPI description
    /// states, fetched once (empty when it serves none).
    rest_keys: Mutex<Option<Arc<HashMap<String, String>>>>,
}

/// The Supabase database provider: a client of a PostgREST-compatible
/// `/rest/v1`, with an optional SQL backend (see the crate documentation).
#[derive(Clone)]
pub struct SupabaseDb {
    shared: Arc<Shared>,
    sql: Option<Arc<dyn Database>>,
    /// The unscoped SQL backend, for table schemas only (a scoped handle's
    /// `sql` is the backend's scoped handle, or none).
    catalog: Option<Arc<dyn Database>>,
    feed: Option<Arc<dyn Realtime>>,
    /// The caller's token on a scoped handle.
    bearer: Option<Secret>,
}

impl std::fmt::Debug for SupabaseDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupabaseDb")
            .field("config", &self.shared.config)
            .field("sql_backend", &self.sql.as_ref().map(|s| s.info().name))
            .field("change_feed", &self.feed.as_ref().map(|r| r.info().name))
            .field("scoped", &self.bearer.is_some())
            .finish()
    }
}

/// Registers the provider under `"supabase"` (REST only: the runtime
/// attaches the SQL backend built from `pooler_url`).
pub fn register(reg: &mut DbRegistry) {
    reg.register(TYPE_NAME, |cfg, ()| async move {
        let cfg: SupabaseDbConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        Ok(Arc::new(SupabaseDb::new(cfg)?) as Arc<dyn Database>)
    });
}

fn needs_setting(what: &str) -> Error {
    Error::unsupported(format!(
        "{what} cannot be done over the Supabase REST API; set pooler_url so the runtime \
         attaches the SQL backend (SupabaseDb::with_sql)"
    ))
}

impl SupabaseDb {
    /// A provider for `config` (checked with [`SupabaseDbConfig::validate`]).
    /// No connection is made until the first call.
    pub fn new(config: SupabaseDbConfig) -> DbResult<Self> {
        config.validate()?;
        let rest = Rest::new(&config)?;
        Ok(SupabaseDb {
            shared: Arc::new(Shared {
                config,
                rest,
                closed: AtomicBool::new(false),
                schemas: Mutex::new(HashMap::new()),
                rest_keys: Mutex::new(None),
            }),
            sql: None,
            catalog: None,
            feed: None,
            bearer: None,
        })
    }

    /// Attaches the SQL backend that serves raw SQL, transactions, schema
    /// changes, joins, aggregates and `describe_table` (and everything with
    /// `prefer = "sql"`).
    pub fn with_sql(mut self, db: Arc<dyn Database>) -> Self {
        self.catalog = Some(db.clone());
        self.sql = Some(db);
        self
    }

    /// Attaches the realtime provider whose row changes feed
    /// [`Database::subscribe_changes`].
    pub fn with_change_feed(mut self, rt: Arc<dyn Realtime>) -> Self {
        self.feed = Some(rt);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SupabaseDbConfig {
        &self.shared.config
    }

    fn pg_bytes(&self) -> bool {
        self.shared.config.bytes_format == BytesFormat::Postgres
    }

    fn prefer_sql(&self) -> bool {
        self.shared.config.prefer == Prefer::Sql
    }

    fn check_open(&self) -> DbResult<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::unavailable(
                "the supabase database provider is disconnected; call connect() first",
            )
            .unapplied());
        }
        Ok(())
    }

    /// The SQL backend, or `Unsupported` naming the setting.
    fn sql_for(&self, what: &str) -> DbResult<&Arc<dyn Database>> {
        self.sql.as_ref().ok_or_else(|| needs_setting(what))
    }

    /// The SQL backend when `prefer = "sql"`.
    fn preferred(&self) -> DbResult<Option<&Arc<dyn Database>>> {
        if self.prefer_sql() {
            return self
                .sql
                .as_ref()
                .map(Some)
                .ok_or_else(|| needs_setting("prefer = \"sql\" without a SQL backend: any call"));
        }
        Ok(None)
    }

    /// [`compile::check_text_search`] when the table's schema is known (a
    /// SQL backend is attached); the schema is only read for a filter that
    /// searches text.
    async fn check_text_search(&self, table: &str, filter: &Filter) -> DbResult<()> {
        if !compile::has_text_search(filter) {
            return Ok(());
        }
        match self.schema_of(table).await? {
            Some(s) => compile::check_text_search(&s, filter),
            None => Ok(()),
        }
    }

    async fn send(&self, mut call: Call<'_>) -> DbResult<http::Answer> {
        self.check_open()?;
        call.bearer = self.bearer.as_ref();
        self.shared.rest.send(call).await
    }

    /// The schema of `table` from the SQL backend (cached); `None` without
    /// a backend. A table the backend does not know is `NotFound`.
    /// Shared, not cloned: every call of a known table asks for it.
    async fn schema_of(&self, table: &str) -> DbResult<Option<Arc<TableSchema>>> {
        let Some(sql) = &self.catalog else {
            return Ok(None);
        };
        if let Some(s) = self.lock_schemas().get(table) {
            return Ok(Some(s.clone()));
        }
        let schema = Arc::new(sql.describe_table(table).await?.ok_or_else(|| {
            Error::not_found(format!("table {table} does not exist")).with_context("table", table)
        })?);
        self.lock_schemas()
            .insert(table.to_string(), schema.clone());
        Ok(Some(schema))
    }

    /// The primary-key column of `table`: from the SQL backend when there
    /// is one, else `id` (as core-db documents).
    async fn key_of(&self, table: &str) -> DbResult<String> {
        Ok(self
            .schema_of(table)
            .await?
            .and_then(|s| s.primary_key().map(|c| c.name.clone()))
            .unwrap_or_else(|| "id".to_string()))
    }

    /// The primary-key column of `table` when it is known: from the SQL
    /// backend's schema, or (REST only) the server's OpenAPI description
    /// (PostgREST marks key columns `<pk/>`; fetched once per client).
    async fn primary_key(&self, table: &str) -> DbResult<Option<String>> {
        if self.catalog.is_some() {
            return Ok(self
                .schema_of(table)
                .await?
                .and_then(|s| s.primary_key().map(|c| c.name.clone())));
        }
        let cached = self.lock_rest_keys().clone();
        let keys = match cached {
            Some(k) => k,
            None => {
                self.check_open()?;
                let Some(doc) = self.shared.rest.openapi().await else {
                    // Not reached (or a 5xx): try again on the next call.
                    return Ok(None);
                };
                let k = Arc::new(
                    doc.as_ref()
                        .map(paging::openapi_primary_keys)
                        .unwrap_or_default(),
                );
                *self.lock_rest_keys() = Some(k.clone());
                k
            }
        };
        Ok(keys.get(table).cloned())
    }

    fn lock_rest_keys(&self) -> std::sync::MutexGuard<'_, Option<Arc<HashMap<String, String>>>> {
        self.shared
            .rest_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_schemas(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TableSchema>>> {
        self.shared
            .schemas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn forget_key(&self, table: &str) {
        self.lock_schemas().remove(table);
        *self.lock_rest_keys() = None;
    }

    /// A row to write, checked and converted when the schema is known.
    async fn encode(&self, table: &str, row: Row) -> DbResult<Row> {
        match self.schema_of(table).await? {
            Some(s) => types::encode(&s, row, self.pg_bytes()),
            None => Ok(row),
        }
    }

    /// Rows read back, in core-db's forms when the schema is known.
    async fn decode(
        &self,
        table: &str,
        rows: Vec<Row>,
        query: Option<&Query>,
    ) -> DbResult<Vec<Row>> {
        let Some(schema) = self.schema_of(table).await? else {
            return Ok(rows);
        };
        let select = query.map(|q| q.select.as_slice()).unwrap_or(&[]);
        let all = select.is_empty()
            || select
                .iter()
                .any(|s| matches!(s, truststream_core_db::SelectItem::All { .. }));
        let order: Vec<String> = select
            .iter()
            .filter_map(|s| match s {
                truststream_core_db::SelectItem::Column { column, alias } => {
                    Some(alias.clone().unwrap_or_else(|| column.column.clone()))
                }
                _ => None,
            })
            .collect();
        let alias = |name: &str| {
            select.iter().find_map(|s| match s {
                truststream_core_db::SelectItem::Column {
                    column,
                    alias: Some(a),
                } if a == name => Some(column.column.clone()),
                _ => None,
            })
        };
        Ok(rows
            .into_iter()
            .map(|r| types::decode(&schema, r, all, &order, &alias))
            .collect())
    }

    /// Parameters selecting the row with primary key `id`.
    async fn by_key(&self, table: &str, id: &Value) -> DbResult<Vec<(String, String)>> {
        if id.is_null() || id.is_array() || id.is_object() {
            return Err(Error::invalid_input(
                "a primary-key value must be a string, number or bool",
            )
            .with_context("table", table));
        }
        let key = self.key_of(table).await?;
        match compile::filter(table, Some(&col(&key).eq(id.clone()))) {
            Ok(Ok(Compiled::Params(p))) => Ok(p),
            Ok(Ok(Compiled::Nothing)) => Err(Error::internal("a key filter folded to nothing")),
            Ok(Err(e)) => Err(e.with_context("table", table)),
            Err(NeedsSql(r)) => Err(Error::internal(r)),
        }
    }

    /// Checks that `table` exists (a read of no rows).
    async fn touch(&self, table: &str, op: &'static str) -> DbResult<()> {
        let params = [("limit".to_string(), "0".to_string())];
        self.send(Call {
            op,
            method: Method::GET,
            table,
            params: &params,
            prefer: &[],
            body: None,
            bearer: None,
        })
        .await
        .map(|_| ())
    }

    fn body(row: &impl serde::Serialize) -> DbResult<Vec<u8>> {
        serde_json::to_vec(row)
            .map_err(|e| Error::invalid_input(format!("the row is not encodable as JSON: {e}")))
    }

    async fn get_rows(
        &self,
        op: &'static str,
        table: &str,
        params: &[(String, String)],
    ) -> DbResult<Vec<Row>> {
        let a = self
            .send(Call {
                op,
                method: Method::GET,
                table,
                params,
                prefer: &[],
                body: None,
                bearer: None,
            })
            .await?;
        http::rows(&a)
    }

    /// A read the server would cut at `max_rows` rows, in pages of at most
    /// that many. Pages are ordered by the query's keys and then the
    /// primary key; with the key known, each page after the first is read
    /// as "the rows after the last one seen" (keyset), so rows written or
    /// deleted between pages neither repeat nor hide others; key columns
    /// the select list leaves out are read too and removed from the rows
    /// ([`paging::missing_keys`]). Without a known key (or where such a
    /// column cannot be added) pages fall back to an ordered offset.
    async fn read_pages(&self, table: &str, query: &Query, max_rows: u64) -> DbResult<Vec<Row>> {
        // The caller's filter with the caller's cursor folded in.
        let base = query
            .effective_filter()
            .map_err(|e| e.with_operation("db.read").with_context("table", table))?;
        let mut pk = self.primary_key(table).await?;
        let (order, mut total) = paging::total_order(&query.order_by, pk.as_deref());
        let mut q = query.clone();
        q.order_by = order;
        q.after = None;
        // Keys the select list leaves out are read too (then dropped), so
        // pages go by keyset rather than by offset.
        let mut extra = paging::missing_keys(&q.order_by, &query.select);
        let with_extra = |q: &mut Query, extra: &[String]| {
            q.select = query.select.clone();
            q.select.extend(
                extra
                    .iter()
                    .map(|c| truststream_core_db::SelectItem::Column {
                        column: truststream_core_db::ColumnRef {
                            table: None,
                            column: c.clone(),
                        },
                        alias: None,
                    }),
            );
        };
        with_extra(&mut q, &extra);
        let start = query.offset.unwrap_or(0);
        let mut offset = start;
        let mut after: Option<Filter> = None;
        let mut out: Vec<Row> = Vec::new();
        loop {
            let seen = out.len() as u64;
            let want = query
                .limit
                .map_or(max_rows, |l| l.saturating_sub(seen))
                .min(max_rows);
            if want == 0 {
                return Ok(out);
            }
            q.limit = Some(want);
            q.offset = (offset > 0).then_some(offset);
            q.filter = match (&base, after.take()) {
                (Some(b), Some(a)) => Some(Filter::And(vec![b.clone(), a])),
                (b, a) => a.or_else(|| b.clone()),
            };
            let params = match compile::read(table, &q) {
                Ok(Ok(Compiled::Params(p))) => p,
                Ok(Ok(Compiled::Nothing)) => return Ok(out),
                Ok(Err(e)) => return Err(e.with_context("table", table)),
                Err(NeedsSql(r)) => return Err(Error::internal(r)),
            };
            let mut page = self.get_rows("db.read", table, &params).await?;
            let n = page.len() as u64;
            if n == want && pk.is_none() && out.is_empty() {
                // More pages follow and no key is known (no SQL backend, no
                // OpenAPI description): the rows show an `id`, the key
                // core-db assumes then, so start over with it as the last
                // ordering key (one page read twice, instead of pages whose
                // ties the server may order differently each time).
                if page
                    .first()
                    .is_some_and(|r| paging::shows(r, "id", &query.select))
                {
                    pk = Some("id".to_string());
                    (q.order_by, total) = paging::total_order(&query.order_by, pk.as_deref());
                    extra = paging::missing_keys(&q.order_by, &query.select);
                    with_extra(&mut q, &extra);
                    continue;
                }
            }
            after = if total {
                page.last()
                    .and_then(|r| paging::after_row(r, &q.order_by, &q.select))
            } else {
                None
            };
            if !extra.is_empty() {
                for r in &mut page {
                    for c in &extra {
                        r.shift_remove(c);
                    }
                }
            }
            out.extend(page);
            if n < want {
                return Ok(out);
            }
            offset = match after {
                Some(_) => 0,
                None => start.saturating_add(out.len() as u64),
            };
        }
    }

    /// Rows an update changed, from `Content-Range` (the request asked
    /// `count=exact`): the total after `/` (PostgREST, serve), else the
    /// length of the range (`0-4/*`: postrust-server reports no total for
    /// mutations), `*/*` being none.
    fn updated(a: &http::Answer) -> DbResult<u64> {
        let range = a.content_range.as_deref();
        http::total(range)
            .or_else(|| http::range_len(range))
            .ok_or_else(|| {
                Error::unavailable(
                    "the Supabase REST API did not report how many rows changed (Content-Range)",
                )
            })
    }

    /// `select=<key>` for a delete's representation when the key is known
    /// (from the SQL backend); else whole rows.
    async fn key_select(&self, table: &str) -> DbResult<Option<(String, String)>> {
        if self.catalog.is_none() {
            return Ok(None);
        }
        Ok(Some(("select".to_string(), self.key_of(table).await?)))
    }

    async fn write_many(
        &self,
        op: &'static str,
        method: Method,
        table: &str,
        filter: &Filter,
        patch: Option<Row>,
    ) -> DbResult<u64> {
        let original = filter;
        self.check_text_search(table, filter).await?;
        let encoded = match self.pg_bytes() {
            true => self
                .schema_of(table)
                .await?
                .map(|s| types::encode_filter(&s, filter)),
            false => None,
        };
        let filter = encoded.as_ref().unwrap_or(filter);
        let compiled = match compile::filter(table, Some(filter)) {
            Ok(c) => c.map_err(|e| e.with_operation(op).with_context("table", table))?,
            Err(NeedsSql(reason)) => {
                let sql = self.sql_for(&format!("a filter with {reason}"))?;
                return match patch {
                    Some(p) => sql.update_many(table, original, p).await,
                    None => sql.delete_many(table, original).await,
                };
            }
        };
        let params = match compiled {
            Compiled::Params(p) => p,
            Compiled::Nothing => {
                self.touch(table, op).await?;
                return Ok(0);
            }
        };
        let body = patch.as_ref().map(Self::body).transpose()?;
        if method == Method::DELETE {
            // Deleted rows are counted from the representation: servers
            // disagree on what `Content-Range` says for a DELETE
            // (postrust-server reports `*/*` whatever was deleted).
            let mut params = params;
            if let Some(sel) = self.key_select(table).await? {
                params.insert(0, sel);
            }
            let a = self
                .send(Call {
                    op,
                    method,
                    table,
                    params: &params,
                    prefer: &["return=representation"],
                    body,
                    bearer: None,
                })
                .await?;
            return Ok(http::rows(&a)?.len() as u64);
        }
        let a = self
            .send(Call {
                op,
                method,
                table,
                params: &params,
                prefer: &["return=minimal", "count=exact"],
                body,
                bearer: None,
            })
            .await?;
        Self::updated(&a)
    }
}

#[async_trait]
impl Database for SupabaseDb {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> DbCapabilities {
        let sql = self.sql.as_ref().map(|s| s.capabilities());
        if self.prefer_sql() {
            let mut c = sql.unwrap_or_else(DbCapabilities::none);
            if self.feed.is_some() {
                c.change_feed = true;
                c.change_feed_scope = Some(ChangeFeedScope::Database);
            }
            return c;
        }
        let mut c = DbCapabilities::none();
        if let Some(s) = &sql {
            c.transactions = s.transactions;
            c.raw_sql = s.raw_sql;
            c.sql_dialect = s.sql_dialect;
            c.joins = s.joins;
            c.aggregates = s.aggregates;
            c.schema = s.schema;
            // Schema changes (`alter_table`) go through the SQL path.
            c.add_foreign_keys = s.add_foreign_keys;
        }
        c.unique_constraints = true;
        c.row_security = true;
        // PostgREST's `cs`/`cd` (jsonb) and `fts`/`plfts`/`phfts`/`wfts`;
        // `ov` goes as an `or` of `cs` (PostgREST's own `ov` is for native
        // arrays only, see `compile`). Supabase
        // is PostgreSQL; with a SQL backend (the database the server
        // serves) the backend says, so a `truststream serve` over SQLite or
        // memory is not promised text search it answers `Unsupported`.
        c.json_containment = sql.as_ref().is_none_or(|s| s.json_containment);
        c.full_text_search = sql.as_ref().is_none_or(|s| s.full_text_search);
        if self.feed.is_some() {
            c.change_feed = true;
            c.change_feed_scope = Some(ChangeFeedScope::Database);
        }
        c
    }

    async fn health(&self) -> Health {
        let started = Instant::now();
        if let Some(sql) = &self.sql {
            if self.prefer_sql() {
                return sql.health().await;
            }
            let h = sql.health().await;
            if !h.is_healthy() {
                return h;
            }
        }
        if self.prefer_sql() {
            return Health::unhealthy(started.elapsed(), "prefer = \"sql\" without a SQL backend");
        }
        if let Err(e) = self.check_open() {
            return Health::unhealthy(started.elapsed(), e.to_string());
        }
        match self.shared.rest.probe().await {
            Ok(()) => Health::healthy(started.elapsed()),
            Err(e) => Health::unhealthy(started.elapsed(), e.to_string()),
        }
    }

    async fn connect(&self) -> DbResult<()> {
        self.shared.closed.store(false, Ordering::Release);
        if let Some(sql) = &self.sql {
            sql.connect().await?;
        }
        if !self.prefer_sql() {
            self.shared.rest.probe().await?;
        }
        Ok(())
    }

    async fn disconnect(&self) -> DbResult<()> {
        self.shared.closed.store(true, Ordering::Release);
        if let Some(sql) = &self.sql {
            sql.disconnect().await?;
        }
        Ok(())
    }

    async fn create(&self, table: &str, row: Row) -> DbResult<Row> {
        ident::table(table)?;
        if let Some(sql) = self.preferred()? {
            return sql.create(table, row).await;
        }
        let a = self
            .send(Call {
                op: "db.create",
                method: Method::POST,
                table,
                params: &[],
                prefer: &["return=representation"],
                body: Some(Self::body(&self.encode(table, row).await?)?),
                bearer: None,
            })
            .await?;
        let rows = self.decode(table, http::rows(&a)?, None).await?;
        rows.into_iter().next().ok_or_else(|| {
            Error::permission_denied(
                "the row was inserted but the server returned none (a row-level security policy may hide it)",
            )
            .with_operation("db.create")
            .with_context("table", table)
        })
    }

    async fn read(&self, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        ident::table(table)?;
        if let Some(sql) = self.preferred()? {
            return sql.read(table, query).await;
        }
        let original = query;
        if let Some(f) = &query.filter {
            self.check_text_search(table, f).await?;
        }
        let encoded;
        let query = match self.schema_of(table).await? {
            Some(s) if query.filter.is_some() && self.pg_bytes() => {
                let mut q = query.clone();
                q.filter = q.filter.as_ref().map(|f| types::encode_filter(&s, f));
                encoded = q;
                &encoded
            }
            _ => query,
        };
        let compiled = match compile::read(table, query) {
            Ok(c) => c.map_err(|e| e.with_operation("db.read").with_context("table", table))?,
            Err(NeedsSql(reason)) => {
                return self
                    .sql_for(&format!("a query with {reason}"))?
                    .read(table, original)
                    .await
            }
        };
        let params = match compiled {
            Compiled::Params(p) => p,
            Compiled::Nothing => {
                self.touch(table, "db.read").await?;
                return Ok(Vec::new());
            }
        };
        let rows = match self.shared.config.max_rows {
            Some(m) if m > 0 && query.limit.is_none_or(|l| l > m) => {
                self.read_pages(table, query, m).await?
            }
            _ => self.get_rows("db.read", table, &params).await?,
        };
        self.decode(table, rows, Some(query)).await
    }

    async fn get(&self, table: &str, id: &Value) -> DbResult<Option<Row>> {
        ident::table(table)?;
        if let Some(sql) = self.preferred()? {
            return sql.get(table, id).await;
        }
        let mut params = self.by_key(table, id).await?;
        params.push(("limit".into(), "1".into()));
        let a = self
            .send(Call {
                op: "db.get",
                method: Method::GET,
                table,
                params: &params,
                prefer: &[],
                body: None,
                bearer: None,
            })
            .await?;
        Ok(self
            .decode(table, http::rows(&a)?, None)
            .await?
            .into_iter()
            .next())
    }

    async fn update(&self, table: &str, id: &Value, patch: Row) -> DbResult<Row> {
        ident::table(table)?;
        if let Some(sql) = self.preferred()? {
            return sql.update(table, id, patch).await;
        }
        if patch.is_empty() {
            return Err(Error::invalid_input(format!(
                "an update of table {table} needs at least one column to set"
            )));
        }
        let params = self.by_key(table, id).await?;
        let a = self
            .send(Call {
                op: "db.update",
                method: Method::PATCH,
                table,
                params: &params,
                prefer: &["return=representation"],
                body: Some(Self::body(&self.encode(table, patch).await?)?),
                bearer: None,
            })
            .await?;
        let rows = self.decode(table, http::rows(&a)?, None).await?;
        rows.into_iter().next().ok_or_else(|| {
            Error::not_found(format!(
                "no row of table {table} has the key {}",
                truststream_core_db::value::describe(id)
            ))
            .with_operation("db.update")
            .with_context("table", table)
        })
    }

    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool> {
        ident::table(table)?;
        if let Some(sql) = self.preferred()? {
            return sql.delete(table, id).await;
        }
        let mut params = self.by_key(table, id).await?;
        if let Some(sel) = self.key_select(table).await? {
            params.insert(0, sel);
        }
        let a = self
            .send(Call {
                op: "db.delete",
                method: Method::DELETE,
                table,
                params: &params,
                prefer: &["return=representation"],
                body: None,
                bearer: None,
            })
            .await?;
        Ok(!http::rows(&a)?.is_empty())
    }

    async fn create_many(&self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>> {
        ident::table(table)?;
        if let Some(sql) = self.preferred()? {
            return sql.create_many(table, rows).await;
        }
        if rows.is_empty() {
            self.touch(table, "db.create_many").await?;
            return Ok(Vec::new());
        }
        let rows = match self.schema_of(table).await? {
            Some(s) => rows
                .into_iter()
                .map(|r| types::encode(&s, r, self.pg_bytes()))
                .collect::<DbResult<Vec<_>>>()?,
            None => rows,
        };
        let mut columns: Vec<&String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            for k in r.keys() {
                if seen.insert(k.as_str()) {
                    ident::validate(k).map_err(|e| e.with_context("table", table))?;
                    columns.push(k);
                }
            }
        }
        let params = if columns.is_empty() {
            Vec::new()
        } else {
            vec![("columns".to_string(), compile::columns_param(columns))]
        };
        let n = rows.len();
        let a = self
            .send(Call {
                op: "db.create_many",
                method: Method::POST,
                table,
                params: &params,
                prefer: &["return=representation", "missing=default"],
                body: Some(Self::body(&rows)?),
                bearer: None,
            })
            .await?;
        let out = self.decode(table, http::rows(&a)?, None).await?;
        if out.len() != n {
            return Err(Error::permission_denied(format!(
                "{n} rows were inserted but the server returned {} (a row-level security policy may hide them)",
                out.len()
            ))
            .with_operation("db.create_many")
            .with_context("table", table));
        }
        Ok(out)
    }

    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64> {
        ident::table(table)?;
        if let Some(sql) = self.preferred()? {
            return sql.update_many(table, filter, patch).await;
        }
        if patch.is_empty() {
            return Err(Error::invalid_input(format!(
                "an update of table {table} needs at least one column to set"
            )));
        }
        let patch = self.encode(table, patch).await?;
        self.write_many("db.update_many", Method::PATCH, table, filter, Some(patch))
            .await
    }

    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64> {
        ident::table(table)?;
        if let Some(sql) = self.preferred()? {
            return sql.delete_many(table, filter).await;
        }
        self.write_many("db.delete_many", Method::DELETE, table, filter, None)
            .await
    }

    async fn raw_query(&self, sql: &str, params: &Params) -> DbResult<Vec<Row>> {
        self.check_open()?;
        self.sql_for("raw SQL (raw_query)")?
            .raw_query(sql, params)
            .await
    }

    async fn transaction(&self, operations: Vec<Operation>) -> DbResult<Vec<OperationOutput>> {
        self.check_open()?;
        self.sql_for("a multi-operation transaction")?
            .transaction(operations)
            .await
    }

    async fn create_table(&self, schema: &TableSchema) -> DbResult<()> {
        self.check_open()?;
        let r = self
            .sql_for("a schema change (create_table)")?
            .create_table(schema)
            .await;
        self.forget_key(&schema.name);
        r
    }

    async fn drop_table(&self, table: &str, if_exists: bool) -> DbResult<()> {
        self.check_open()?;
        let r = self
            .sql_for("a schema change (drop_table)")?
            .drop_table(table, if_exists)
            .await;
        self.forget_key(table);
        r
    }

    async fn alter_table(&self, table: &str, changes: &[AlterTable]) -> DbResult<()> {
        self.check_open()?;
        let r = self
            .sql_for("a schema change (alter_table)")?
            .alter_table(table, changes)
            .await;
        self.forget_key(table);
        r
    }

    async fn create_index(&self, index: &IndexSpec) -> DbResult<()> {
        self.check_open()?;
        self.sql_for("a schema change (create_index)")?
            .create_index(index)
            .await
    }

    async fn describe_table(&self, table: &str) -> DbResult<Option<TableSchema>> {
        self.check_open()?;
        self.sql_for("describing a table")?
            .describe_table(table)
            .await
    }

    fn scoped(self: Arc<Self>, scope: RequestScope) -> DbResult<Arc<dyn Database>> {
        if self.prefer_sql() {
            let sql = self.sql_for("prefer = \"sql\" without a SQL backend: scoped")?;
            return sql.clone().scoped(scope);
        }
        let Some(token) = scope.token.clone().filter(|t| !t.is_empty()) else {
            return Err(Error::invalid_input(
                "a scoped Supabase REST handle needs the caller's token (RequestScope::with_token): \
                 the server verifies it and applies row-level security",
            )
            .with_operation("db.scoped"));
        };
        if token.bytes().any(|b| b < 0x21 || b == 0x7f) {
            return Err(Error::invalid_input(
                "the caller's token contains spaces or control characters",
            )
            .with_operation("db.scoped"));
        }
        // The SQL backend runs as the same scope, or not at all: an
        // unscoped backend behind a scoped handle would bypass row-level
        // security.
        let sql = match &self.sql {
            Some(s) => s.clone().scoped(scope).ok(),
            None => None,
        };
        Ok(Arc::new(SupabaseDb {
            shared: self.shared.clone(),
            sql,
            catalog: self.catalog.clone(),
            feed: self.feed.clone(),
            bearer: Some(Secret::new(token)),
        }))
    }

    async fn subscribe_changes(&self, table: Option<&str>) -> DbResult<ChangeStream> {
        self.check_open()?;
        if let Some(rt) = &self.feed {
            return feed::subscribe(rt.as_ref(), table, self.shared.config.change_feed_capacity)
                .await;
        }
        if self.prefer_sql() {
            if let Some(sql) = &self.sql {
                return sql.subscribe_changes(table).await;
            }
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            "the supabase database provider has no change feed; attach a realtime provider \
             (SupabaseDb::with_change_feed) pointed at the project's /realtime/v1",
        )
        .with_operation("db.subscribe_changes"))
    }
}
