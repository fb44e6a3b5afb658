//! The cache layer: lookups by generation-stamped keys, writes that bump
//! generations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use truststream_core::Result;
use truststream_core_db::{
    ident, AlterTable, ChangeFeedScope, Database, Filter, IndexSpec, Operation, OperationOutput,
    Params, Query, RequestScope, Row, TableSchema, Value,
};
use truststream_core_realtime::feed::FeedHealth;
use truststream_layer::{DatabaseLayer, LayeredDatabase};

use crate::config::CacheConfig;
use crate::feed;

/// Generation counters per table are striped: a table's writes bump the
/// counter its (ASCII-lowercased) name hashes to. Two tables sharing a
/// stripe only invalidate each other's entries more often than needed.
const STRIPES: usize = 1024;

/// The database read cache: a [`DatabaseLayer`] serving `get` and `read`
/// from memory and forgetting a table's results on every write through it.
///
/// Build it with [`Cache::wrap`] (or from configuration through
/// [`crate::register`]).
///
/// # What is cached
/// - `get(table, id)`: keyed by table and the id's JSON; a missing row
///   (`None`) is cached too.
/// - `read(table, query)`: keyed by table and the query's JSON
///   serialization (every field of [`Query`], so two queries share an
///   entry only when they are equal). A query that joins other tables is
///   keyed under every table it reads: a write to any of them invalidates
///   it, and its time to live is the shortest of theirs.
/// - Errors are never cached; `raw_query` results are never cached.
///
/// # Invalidation
/// Each table has a generation counter, and there is one for everything
/// (raw SQL, a lost change feed, `disconnect`). A key holds the sum of
/// the generations of the tables it reads, taken before the provider is
/// asked. Every write path through the layer — `create`, `update`,
/// `delete`, the `*_many` calls, `transaction` (each table its operations
/// name), `create_table`, `drop_table`, `alter_table`, `create_index`,
/// `raw_query` (every table) and `disconnect` — bumps the counters it
/// touches after the provider returned, whether it succeeded or failed
/// (the outcome may be unknown), or when the call is dropped midway.
///
/// So a read that starts after a write was acknowledged computes a sum no
/// earlier read could have computed, and never finds an entry made before
/// the write. A read that started before the write and finishes after it
/// stores nothing (its generation is no longer current); had it stored
/// its result, that entry would sit under the old sum, which no later read
/// looks up. Entries made stale by a write are never looked up again and
/// age out (time to live, or eviction by size).
///
/// # Writes of other processes
/// When the provider's change feed sees every writer of the database
/// ([`ChangeFeedScope::Database`]: PostgreSQL), the layer follows the feed
/// of every table in a background task and bumps a table's generation for
/// each change, so a write made elsewhere is invalidated as soon as its
/// change arrives. A change lost by the feed (an error item) invalidates
/// everything; while the feed is down (it ended, the task subscribes again
/// with backoff) reads bypass the cache, and everything is invalidated
/// once it is back. The task stops when the layer is dropped.
///
/// On PostgreSQL, following every table means a change trigger on every
/// table of the schema while the layer lives (the provider's feed
/// installs them on the tables that exist when it subscribes, and on
/// tables created later through the same provider instance), with the
/// feed's costs: commits to watched tables are numbered one at a time. A
/// table another process creates afterwards is not watched until the
/// feed is subscribed again; its foreign writes are bounded by the time
/// to live only.
///
/// With a feed of scope [`ChangeFeedScope::Instance`] (db-memory,
/// db-sqlite) or no feed, writes that do not go through this layer (another
/// process on the same SQLite file, another provider instance) are not
/// seen: the time to live bounds how stale a result may be.
///
/// A request-scoped handle ([`Database::scoped`], row-level security)
/// gets a cache layer of its own that never serves nor stores (what a
/// scoped read returns depends on who asks): its reads go to the provider
/// (counted as [`CacheStats::bypassed`]), and its writes still invalidate
/// the shared entries of the tables they touch.
pub struct Cache {
    shared: Arc<Shared>,
    /// The change-feed task, aborted on drop.
    feed: Option<tokio::task::AbortHandle>,
    /// The layer of a request-scoped handle: reads bypass the cache.
    scoped: bool,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(task) = self.feed.take() {
            task.abort();
        }
    }
}

/// What a cache has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Cacheable reads the provider answered.
    pub misses: u64,
    /// Reads passed through without a look at the cache: a table with a
    /// time to live of 0, or the change feed down.
    pub bypassed: u64,
    /// Results stored.
    pub inserts: u64,
    /// Results not stored because a write (or a change) touched their
    /// tables while the provider was answering.
    pub stale: u64,
    /// Generation bumps: one per table a write touched, one per change the
    /// feed delivered, one per "everything" (raw SQL, a lost feed).
    pub invalidations: u64,
    /// Changes the provider's change feed delivered (foreign writes
    /// included).
    pub feed_changes: u64,
    /// Times the feed lost changes, ended, or was subscribed again (each
    /// invalidates everything).
    pub feed_resets: u64,
    /// Whether the layer follows the provider's change feed
    /// ([`ChangeFeedScope::Database`]).
    pub follows_feed: bool,
    /// Whether that feed is down right now (reads bypass the cache).
    pub feed_down: bool,
    /// Entries held (moka's estimate; expired and stale ones linger until
    /// moka's housekeeping runs).
    pub entries: u64,
    /// Their weight: estimated bytes with `max_bytes`, else the count.
    pub weight: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypassed: AtomicU64,
    inserts: AtomicU64,
    stale: AtomicU64,
    invalidations: AtomicU64,
    pub(crate) feed_changes: AtomicU64,
    pub(crate) feed_resets: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One cached result.
struct Entry {
    value: Cached,
    expires_at: Instant,
    ttl: Duration,
    weight: u32,
}

enum Cached {
    Row(Option<Row>),
    Rows(Vec<Row>),
}

/// Expires each entry after its table's time to live (moka's clock; the
/// layer also checks `expires_at` on the tokio clock, so tests can pause
/// time).
struct ByTable;

impl moka::Expiry<Vec<u8>, Arc<Entry>> for ByTable {
    fn expire_after_create(
        &self,
        _key: &Vec<u8>,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The state shared by the layer and its change-feed task.
pub(crate) struct Shared {
    cache: moka::sync::Cache<Vec<u8>, Arc<Entry>>,
    /// Time to live by lowercased table name (`None`: never cached).
    table_ttls: HashMap<Box<str>, Option<Duration>>,
    default_ttl: Option<Duration>,
    /// Least weight of an entry with `max_bytes` (so `max_entries` holds
    /// too); `None` without `max_bytes`.
    min_weight: Option<u64>,
    global: AtomicU64,
    stripes: Box<[AtomicU64]>,
    /// The change feed this layer follows is down: reads bypass the cache.
    feed_down: AtomicBool,
    follows_feed: AtomicBool,
    pub(crate) feed_health: FeedHealth,
    pub(crate) counters: Counters,
}

impl Shared {
    fn new(config: &CacheConfig) -> Shared {
        let (table_ttls, default_ttl) = config.ttls();
        let mut builder = moka::sync::Cache::builder().expire_after(ByTable);
        let min_weight = match config.max_bytes {
            Some(bytes) => {
                builder = builder
                    .max_capacity(bytes)
                    .weigher(|_k: &Vec<u8>, v: &Arc<Entry>| v.weight);
                Some((bytes / config.max_entries).max(1))
            }
            None => {
                builder = builder.max_capacity(config.max_entries);
                None
            }
        };
        Shared {
            cache: builder.build(),
            table_ttls,
            default_ttl,
            min_weight,
            global: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            feed_down: AtomicBool::new(false),
            follows_feed: AtomicBool::new(false),
            feed_health: FeedHealth::default(),
            counters: Counters::default(),
        }
    }

    /// How long `table`'s results are kept; `None`: not cached.
    fn ttl(&self, table: &str) -> Option<Duration> {
        if self.table_ttls.is_empty() {
            return self.default_ttl;
        }
        // Valid table names are short ASCII: lowercase on the stack. A name
        // that is not one is refused by the provider; do not cache it.
        let mut buf = [0u8; ident::MAX_LEN];
        if table.len() > buf.len() || !table.is_ascii() {
            return None;
        }
        for (b, c) in buf.iter_mut().zip(table.bytes()) {
            *b = c.to_ascii_lowercase();
        }
        let lower = std::str::from_utf8(&buf[..table.len()]).ok()?;
        match self.table_ttls.get(lower) {
            Some(ttl) => *ttl,
            None => self.default_ttl,
        }
    }

    /// The shortest time to live of `tables`; `None` if one is not cached.
    fn ttl_of<'t>(&self, tables: impl Iterator<Item = &'t str>) -> Option<Duration> {
        let mut ttl: Option<Duration> = None;
        for t in tables {
            let this = self.ttl(t)?;
            ttl = Some(ttl.map_or(this, |d| d.min(this)));
        }
        ttl
    }

    fn stripe(&self, table: &str) -> &AtomicU64 {
        // FNV-1a over the lowercased name.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in table.bytes() {
            h ^= u64::from(b.to_ascii_lowercase());
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        &self.stripes[(h % STRIPES as u64) as usize]
    }

    /// The generation of what reads `tables`: the global counter plus each
    /// table's. Every counter only grows, so any bump of one of them makes
    /// the sum larger than every sum taken before the bump.
    fn generation<'t>(&self, tables: impl Iterator<Item = &'t str>) -> u64 {
        let mut g = self.global.load(Ordering::SeqCst);
        for t in tables {
            g = g.wrapping_add(self.stripe(t).load(Ordering::SeqCst));
        }
        g
    }

    /// Invalidates every entry that reads `table`.
    pub(crate) fn bump_table(&self, table: &str) {
        self.stripe(table).fetch_add(1, Ordering::SeqCst);
        inc(&self.counters.invalidations);
    }

    /// Invalidates every entry.
    pub(crate) fn bump_all(&self) {
        self.global.fetch_add(1, Ordering::SeqCst);
        inc(&self.counters.invalidations);
    }

    pub(crate) fn set_feed_down(&self, down: bool) {
        self.feed_down.store(down, Ordering::SeqCst);
    }

    pub(crate) fn set_follows_feed(&self) {
        self.follows_feed.store(true, Ordering::SeqCst);
    }

    fn feed_down(&self) -> bool {
        self.feed_down.load(Ordering::SeqCst)
    }

    /// A live entry under `key`.
    fn lookup(&self, key: &[u8]) -> Option<Arc<Entry>> {
        let entry = self.cache.get(key)?;
        (Instant::now() < entry.expires_at).then_some(entry)
    }

    /// Stores `value` under `key` if the generation of `tables` is still
    /// `generation` (no write or change touched them since the provider
    /// was asked) and the feed is up.
    fn store<'t>(
        &self,
        key: Vec<u8>,
        generation: u64,
        tables: impl Iterator<Item = &'t str>,
        ttl: Duration,
        value: Cached,
    ) {
        if self.generation(tables) != generation || self.feed_down() {
            inc(&self.counters.stale);
            return;
        }
        let weight = match self.min_weight {
            Some(min) => {
                let size = key.len() as u64 + 64 + value.approx_size();
                u32::try_from(size.max(min)).unwrap_or(u32::MAX)
            }
            None => 1,
        };
        self.cache.insert(
            key,
            Arc::new(Entry {
                value,
                expires_at: Instant::now() + ttl,
                ttl,
                weight,
            }),
        );
        inc(&self.counters.inserts);
    }

    fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            bypassed: get(&c.bypassed),
            inserts: get(&c.inserts),
            stale: get(&c.stale),
            invalidations: get(&c.invalidations),
            feed_changes: get(&c.feed_changes),
            feed_resets: get(&c.feed_resets),
            follows_feed: self.follows_feed.load(Ordering::SeqCst),
            feed_down: self.feed_down(),
            entries: self.cache.entry_count(),
            weight: self.cache.weighted_size(),
        }
    }
}

impl Cached {
    /// Bytes of the results' JSON, roughly, plus per-value overhead.
    fn approx_size(&self) -> u64 {
        match self {
            Cached::Row(None) => 8,
            Cached::Row(Some(row)) => row_size(row),
            Cached::Rows(rows) => rows.iter().map(row_size).sum::<u64>() + 24,
        }
    }
}

fn row_size(row: &Row) -> u64 {
    row.iter()
        .map(|(k, v)| k.len() as u64 + 32 + value_size(v))
        .sum::<u64>()
        + 48
}

fn value_size(v: &Value) -> u64 {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() as u64 + 24,
        Value::Array(a) => a.iter().map(value_size).sum::<u64>() + 24,
        Value::Object(o) => row_size(o),
    }
}

/// `generation`, table, kind and the JSON of what identifies the result.
fn key<T: serde::Serialize + ?Sized>(
    generation: u64,
    table: &str,
    kind: u8,
    what: &T,
) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(8 + table.len() + 2 + 32);
    key.extend_from_slice(&generation.to_le_bytes());
    key.extend_from_slice(table.as_bytes());
    // Table names never hold a NUL byte.
    key.push(0);
    key.push(kind);
    serde_json::to_writer(&mut key, what).ok()?;
    Some(key)
}

/// The tables a query reads: its own, then each joined one.
fn read_tables<'a>(table: &'a str, query: &'a Query) -> impl Iterator<Item = &'a str> + Clone {
    std::iter::once(table).chain(query.joins.iter().map(|j| j.table.as_str()))
}

/// What a write touches, bumped when the write ends (returns, fails, or
/// is dropped midway).
enum Touched<'a> {
    Table(&'a str),
    Tables(Vec<String>),
    Everything,
}

struct BumpOnDrop<'a> {
    shared: &'a Shared,
    touched: Touched<'a>,
}

impl Drop for BumpOnDrop<'_> {
    fn drop(&mut self) {
        match &self.touched {
            Touched::Table(t) => self.shared.bump_table(t),
            Touched::Tables(ts) => {
                for t in ts {
                    self.shared.bump_table(t);
                }
            }
            Touched::Everything => self.shared.bump_all(),
        }
    }
}

impl Cache {
    /// `inner` with a read cache over it. When `inner`'s change feed sees
    /// every writer of its database ([`ChangeFeedScope::Database`]), the
    /// layer subscribes to it first (a failure there is retried in the
    /// background; reads bypass the cache meanwhile), unless
    /// [`CacheConfig::follow_changes`] is `false`.
    ///
    /// `config` is [`CacheConfig::validate`]d. Needs a tokio runtime (the
    /// feed task).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use serde_json::json;
    /// use truststream_core_db::{ColumnDef, Database, TableSchema};
    /// use truststream_db_memory::MemoryDatabase;
    /// use truststream_layer_cache::{Cache, CacheConfig};
    ///
    /// let db = Cache::wrap(Arc::new(MemoryDatabase::new()), CacheConfig::default()).await?;
    /// db.create_table(&TableSchema::new("agents").column(ColumnDef::text("id").primary_key()))
    ///     .await?;
    /// db.create("agents", json!({"id": "a1"}).as_object().unwrap().clone()).await?;
    /// db.get("agents", &json!("a1")).await?; // from the provider
    /// db.get("agents", &json!("a1")).await?; // from the cache
    /// assert_eq!(db.layer().stats().hits, 1);
    /// # Ok::<(), truststream_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn wrap(
        inner: Arc<dyn Database>,
        config: CacheConfig,
    ) -> Result<Arc<LayeredDatabase<Cache>>> {
        config.validate()?;
        let shared = Arc::new(Shared::new(&config));
        let caps = inner.capabilities();
        let feed = if config.follow_changes
            && caps.change_feed
            && caps.change_feed_scope == Some(ChangeFeedScope::Database)
        {
            shared.set_follows_feed();
            Some(feed::follow(&shared, Arc::clone(&inner)).await)
        } else {
            None
        };
        let cache = Arc::new(Cache {
            shared,
            feed,
            scoped: false,
        });
        Ok(Arc::new(LayeredDatabase::new(inner, cache)))
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        self.shared.stats()
    }

    /// Invalidates every entry (as raw SQL does).
    pub fn invalidate_all(&self) {
        self.shared.bump_all();
    }

    /// Runs moka's pending housekeeping (expiry, eviction) now, so that
    /// [`CacheStats::entries`] is exact; tests use it.
    pub fn run_pending_tasks(&self) {
        self.shared.cache.run_pending_tasks();
    }

    fn bump_on_drop<'a>(&'a self, touched: Touched<'a>) -> BumpOnDrop<'a> {
        BumpOnDrop {
            shared: &self.shared,
            touched,
        }
    }
}

#[async_trait]
impl DatabaseLayer for Cache {
    async fn get(&self, next: &dyn Database, table: &str, id: &Value) -> Result<Option<Row>> {
        let s = &*self.shared;
        let tables = || std::iter::once(table);
        let Some(ttl) = s.ttl(table).filter(|_| !s.feed_down() && !self.scoped) else {
            inc(&s.counters.bypassed);
            return next.get(table, id).await;
        };
        let generation = s.generation(tables());
        let Some(key) = key(generation, table, b'g', id) else {
            inc(&s.counters.bypassed);
            return next.get(table, id).await;
        };
        if let Some(entry) = s.lookup(&key) {
            if let Cached::Row(row) = &entry.value {
                inc(&s.counters.hits);
                return Ok(row.clone());
            }
        }
        inc(&s.counters.misses);
        let row = next.get(table, id).await?;
        s.store(key, generation, tables(), ttl, Cached::Row(row.clone()));
        Ok(row)
    }

    async fn read(&self, next: &dyn Database, table: &str, query: &Query) -> Result<Vec<Row>> {
        let s = &*self.shared;
        let tables = read_tables(table, query);
        let Some(ttl) = s
            .ttl_of(tables.clone())
            .filter(|_| !s.feed_down() && !self.scoped)
        else {
            inc(&s.counters.bypassed);
            return next.read(table, query).await;
        };
        let generation = s.generation(tables.clone());
        let Some(key) = key(generation, table, b'r', query) else {
            inc(&s.counters.bypassed);
            return next.read(table, query).await;
        };
        if let Some(entry) = s.lookup(&key) {
            if let Cached::Rows(rows) = &entry.value {
                inc(&s.counters.hits);
                return Ok(rows.clone());
            }
        }
        inc(&s.counters.misses);
        let rows = next.read(table, query).await?;
        s.store(key, generation, tables, ttl, Cached::Rows(rows.clone()));
        Ok(rows)
    }

    /// A scoped handle's cache layer: shares the generations (its writes
    /// invalidate), never serves nor stores.
    fn scoped_layer(&self, _scope: &RequestScope) -> Result<Option<Arc<dyn DatabaseLayer>>> {
        Ok(Some(Arc::new(Cache {
            shared: Arc::clone(&self.shared),
            feed: None,
            scoped: true,
        })))
    }

    async fn disconnect(&self, next: &dyn Database) -> Result<()> {
        // Later calls fail until `connect`: no cached answer in between.
        let _bump = self.bump_on_drop(Touched::Everything);
        next.disconnect().await
    }

    async fn create(&self, next: &dyn Database, table: &str, row: Row) -> Result<Row> {
        let _bump = self.bump_on_drop(Touched::Table(table));
        next.create(table, row).await
    }

    async fn update(
        &self,
        next: &dyn Database,
        table: &str,
        id: &Value,
        patch: Row,
    ) -> Result<Row> {
        let _bump = self.bump_on_drop(Touched::Table(table));
        next.update(table, id, patch).await
    }

    async fn delete(&self, next: &dyn Database, table: &str, id: &Value) -> Result<bool> {
        let _bump = self.bump_on_drop(Touched::Table(table));
        next.delete(table, id).await
    }

    async fn create_many(
        &self,
        next: &dyn Database,
        table: &str,
        rows: Vec<Row>,
    ) -> Result<Vec<Row>> {
        let _bump = self.bump_on_drop(Touched::Table(table));
        next.create_many(table, rows).await
    }

    async fn update_many(
        &self,
        next: &dyn Database,
        table: &str,
        filter: &Filter,
        patch: Row,
    ) -> Result<u64> {
        let _bump = self.bump_on_drop(Touched::Table(table));
        next.update_many(table, filter, patch).await
    }

    async fn delete_many(&self, next: &dyn Database, table: &str, filter: &Filter) -> Result<u64> {
        let _bump = self.bump_on_drop(Touched::Table(table));
        next.delete_many(table, filter).await
    }

    async fn raw_query(&self, next: &dyn Database, sql: &str, params: &Params) -> Result<Vec<Row>> {
        // Raw SQL may write any table.
        let _bump = self.bump_on_drop(Touched::Everything);
        next.raw_query(sql, params).await
    }

    async fn transaction(
        &self,
        next: &dyn Database,
        operations: Vec<Operation>,
    ) -> Result<Vec<OperationOutput>> {
        let mut tables: Vec<String> = operations.iter().map(|o| o.table().to_string()).collect();
        tables.sort_unstable();
        tables.dedup();
        let _bump = self.bump_on_drop(Touched::Tables(tables));
        next.transaction(operations).await
    }

    async fn create_table(&self, next: &dyn Database, schema: &TableSchema) -> Result<()> {
        let _bump = self.bump_on_drop(Touched::Table(&schema.name));
        next.create_table(schema).await
    }

    async fn drop_table(&self, next: &dyn Database, table: &str, if_exists: bool) -> Result<()> {
        let _bump = self.bump_on_drop(Touched::Table(table));
        next.drop_table(table, if_exists).await
    }

    async fn alter_table(
        &self,
        next: &dyn Database,
        table: &str,
        changes: &[AlterTable],
    ) -> Result<()> {
        let _bump = self.bump_on_drop(Touched::Table(table));
        next.alter_table(table, changes).await
    }

    async fn create_index(&self, next: &dyn Database, index: &IndexSpec) -> Result<()> {
        let _bump = self.bump_on_drop(Touched::Table(&index.table));
        next.create_index(index).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_grow_with_every_bump_of_a_table_read() {
        let s = Shared::new(&CacheConfig::default());
        let g0 = s.generation(["a", "b"].into_iter());
        s.bump_table("B");
        let g1 = s.generation(["a", "b"].into_iter());
        assert!(g1 > g0);
        s.bump_all();
        assert!(s.generation(["a"].into_iter()) > g0);
        assert!(s.generation(["a", "b"].into_iter()) > g1);
    }

    #[test]
    fn table_ttls_ignore_case_and_zero_means_never() {
        let mut config = CacheConfig::default();
        config.tables.insert("Trust_Scores".into(), 60);
        config.tables.insert("audit".into(), 0);
        let s = Shared::new(&config);
        assert_eq!(s.ttl("trust_scores"), Some(Duration::from_secs(60)));
        assert_eq!(s.ttl("TRUST_SCORES"), Some(Duration::from_secs(60)));
        assert_eq!(s.ttl("audit"), None);
        assert_eq!(s.ttl("other"), Some(Duration::from_secs(300)));
        assert_eq!(
            s.ttl_of(["other", "trust_scores"].into_iter()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(s.ttl_of(["other", "AUDIT"].into_iter()), None);
        assert_eq!(s.ttl(&"x".repeat(100)), None);
    }
}
