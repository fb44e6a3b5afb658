//! The cache layer: lookups by generation-stamped keys, writes that bump
//! generations.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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

use crate::config::{Admission, CacheConfig};
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
/// - By default a result is stored on its key's second miss, not its
///   first ([`Admission`]): a doorkeeper remembers a fingerprint of the
///   keys missed recently (one slot per entry the cache may hold), and a
///   key read only once costs a hash and a slot, not a copy of its rows
///   and a moka insert.
///
/// The key's JSON is streamed into a keyed hash, never built, on every
/// read; moka's key is that hash mixed with the generation. An entry
/// holds the key's JSON (written when it is stored) and its generation,
/// and a hit is compared with them: two keys sharing a hash only miss.
/// A key whose doorkeeper slot another key took since it was stored is
/// not looked up: it is read from the provider once more.
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
    /// Misses whose result was not stored: the key's first miss
    /// remembered by the doorkeeper ([`Admission::SecondMiss`]).
    pub not_admitted: u64,
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
    not_admitted: AtomicU64,
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
    /// The generation it was stored under.
    generation: u64,
    /// What it answers: the table, a NUL, the kind (`g`et or `r`ead) and
    /// the JSON of the id or query. The moka key is only a hash of it and
    /// the generation; a hit is checked against it.
    ident: Box<[u8]>,
    value: Cached,
    expires_at: Instant,
    ttl: Duration,
    weight: u32,
}

impl Entry {
    /// Whether this entry answers `what` of kind `kind` on `table` at
    /// `generation` (a moka key shared by two idents is only a miss).
    fn answers<W: serde::Serialize + ?Sized>(
        &self,
        generation: u64,
        table: &str,
        kind: u8,
        what: &W,
    ) -> bool {
        let head = table.len() + 2;
        if self.generation != generation
            || self.ident.len() < head
            || &self.ident[..table.len()] != table.as_bytes()
            || self.ident[table.len()..head] != [0, kind]
        {
            return false;
        }
        let mut rest = Matching(&self.ident[head..]);
        serde_json::to_writer(&mut rest, what).is_ok() && rest.0.is_empty()
    }
}

/// Compares what is written with the bytes it holds, consuming them; an
/// error at the first difference.
struct Matching<'a>(&'a [u8]);

impl std::io::Write for Matching<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.strip_prefix(buf) {
            Some(rest) => {
                self.0 = rest;
                Ok(buf.len())
            }
            None => Err(std::io::ErrorKind::InvalidData.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Feeds what is written to a hasher: a key's JSON hashed without being
/// built.
struct Hashing<'a, H>(&'a mut H);

impl<H: Hasher> std::io::Write for Hashing<'_, H> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// moka's hasher for keys that are hashes already (the layer's keyed
/// SipHash, mixed with the generation): passes a `u64` through.
#[derive(Clone, Default)]
struct PreHashed;

impl BuildHasher for PreHashed {
    type Hasher = PassThrough;

    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

/// See [`PreHashed`]; other writes than a `u64` are folded in (FNV-1a),
/// though moka only hashes the `u64` keys.
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// The moka key of an ident's hash at `generation`: both mixed (the
/// SplitMix64 finalizer), so that every bit depends on both.
fn moka_key(hash: u64, generation: u64) -> u64 {
    let mut z = hash ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The doorkeeper's slot states, in the low bit of a slot; the other bits
/// are the key's fingerprint.
const SEEN: u32 = 0;
const STORED: u32 = 1;

/// A cacheable read under way: what the store after the provider's
/// answer needs.
struct Probe<'q, W: ?Sized> {
    table: &'q str,
    kind: u8,
    what: &'q W,
    hash: u64,
    generation: u64,
    ttl: Duration,
    /// Store the provider's answer (the key missed before, or
    /// [`Admission::FirstMiss`]).
    admit: bool,
}

/// What a cacheable read does.
enum Lookup<'q, W: ?Sized> {
    /// Ask the provider; store nothing (TTL 0, feed down, scoped handle,
    /// a key that does not serialize).
    Bypass,
    /// Served from the cache.
    Hit(Arc<Entry>),
    /// Ask the provider, then [`Shared::store`] if admitted.
    Miss(Probe<'q, W>),
}

enum Cached {
    Row(Option<Row>),
    Rows(Vec<Row>),
}

/// Expires each entry after its table's time to live (moka's clock; the
/// layer also checks `expires_at` on the tokio clock, so tests can pause
/// time). Used when tables have different times to live; with one for
/// every cached table, moka's cheaper `time_to_live` does the same.
struct ByTable;

impl moka::Expiry<u64, Arc<Entry>> for ByTable {
    fn expire_after_create(
        &self,
        _key: &u64,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The state shared by the layer and its change-feed task.
pub(crate) struct Shared {
    /// Keyed by [`moka_key`]; each entry holds what it answers.
    cache: moka::sync::Cache<u64, Arc<Entry>, PreHashed>,
    /// Keys the idents' hashes (random per cache: nobody outside can aim
    /// keys at one moka key or doorkeeper slot).
    hasher: RandomState,
    /// The doorkeeper: per slot, the fingerprint of the last key hashed to
    /// it and whether its result was stored ([`SEEN`], [`STORED`]).
    /// Relaxed and racy on purpose: a lost update costs one more miss.
    doorkeeper: Box<[AtomicU32]>,
    admission: Admission,
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
        let mut ttls: Vec<Duration> = table_ttls
            .values()
            .chain([&default_ttl])
            .flatten()
            .copied()
            .collect();
        ttls.sort_unstable();
        ttls.dedup();
        let mut builder = moka::sync::Cache::builder();
        builder = match ttls.as_slice() {
            [] => builder,
            [one] => builder.time_to_live(*one),
            _ => builder.expire_after(ByTable),
        };
        let min_weight = match config.max_bytes {
            Some(bytes) => {
                builder = builder
                    .max_capacity(bytes)
                    .weigher(|_k: &u64, v: &Arc<Entry>| v.weight);
                Some((bytes / config.max_entries).max(1))
            }
            None => {
                builder = builder.max_capacity(config.max_entries);
                None
            }
        };
        // As many slots as entries (a power of two), within bounds: a key
        // is remembered over about as many other keys' misses as the
        // cache holds entries.
        let slots = usize::try_from(config.max_entries)
            .unwrap_or(usize::MAX)
            .clamp(1 << 10, 1 << 20)
            .next_power_of_two();
        Shared {
            cache: builder.build_with_hasher(PreHashed),
            hasher: RandomState::new(),
            doorkeeper: (0..slots).map(|_| AtomicU32::new(u32::MAX)).collect(),
            admission: config.admission,
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

    /// The hash of what `kind` on `table` with `what` answers (the
    /// table, a NUL, the kind, the JSON of `what`, streamed into the
    /// hasher); `None` if `what` does not serialize.
    fn ident_hash<W: serde::Serialize + ?Sized>(
        &self,
        table: &str,
        kind: u8,
        what: &W,
    ) -> Option<u64> {
        let mut h = self.hasher.build_hasher();
        h.write(table.as_bytes());
        // Table names never hold a NUL byte.
        h.write(&[0, kind]);
        serde_json::to_writer(Hashing(&mut h), what).ok()?;
        Some(h.finish())
    }

    /// The doorkeeper slot of `hash` and the fingerprint it holds for it
    /// (state bit clear).
    fn slot(&self, hash: u64) -> (&AtomicU32, u32) {
        let i = (hash as usize) & (self.doorkeeper.len() - 1);
        (&self.doorkeeper[i], ((hash >> 32) as u32) & !STORED)
    }

    /// How a read of `what` (kind `kind`) on `table`, reading `tables`,
    /// goes: bypassed, served, or a miss to store after the provider
    /// answered (if admitted). Counts it.
    ///
    /// A key the doorkeeper does not remember as stored is not looked up
    /// (with either [`Admission`]): its result cannot be in the cache, or
    /// was stored before its slot was taken by another key, and is then
    /// read from the provider once more.
    fn begin<'q, 't, W: serde::Serialize + ?Sized>(
        &self,
        scoped: bool,
        table: &'q str,
        kind: u8,
        what: &'q W,
        tables: impl Iterator<Item = &'t str> + Clone,
    ) -> Lookup<'q, W> {
        let Some(ttl) = self
            .ttl_of(tables.clone())
            .filter(|_| !self.feed_down() && !scoped)
        else {
            inc(&self.counters.bypassed);
            return Lookup::Bypass;
        };
        let generation = self.generation(tables);
        let Some(hash) = self.ident_hash(table, kind, what) else {
            inc(&self.counters.bypassed);
            return Lookup::Bypass;
        };
        let (slot, tag) = self.slot(hash);
        let held = slot.load(Ordering::Relaxed);
        let first_miss = self.admission == Admission::FirstMiss;
        if held == tag | STORED {
            if let Some(entry) = self.cache.get(&moka_key(hash, generation)) {
                if Instant::now() < entry.expires_at && entry.answers(generation, table, kind, what)
                {
                    inc(&self.counters.hits);
                    return Lookup::Hit(entry);
                }
            }
        }
        inc(&self.counters.misses);
        let admit = held == tag | STORED || held == tag | SEEN || first_miss;
        if !admit {
            // Remembered: stored if it misses again.
            slot.store(tag | SEEN, Ordering::Relaxed);
            inc(&self.counters.not_admitted);
        }
        Lookup::Miss(Probe {
            table,
            kind,
            what,
            hash,
            generation,
            ttl,
            admit,
        })
    }

    /// Stores the provider's answer to `probe` if admitted, and if the
    /// generation of `tables` is still the probe's (no write or change
    /// touched them since the provider was asked) and the feed is up.
    fn store<'t, W: serde::Serialize + ?Sized>(
        &self,
        probe: &Probe<'_, W>,
        tables: impl Iterator<Item = &'t str>,
        value: impl FnOnce() -> Cached,
    ) {
        if !probe.admit {
            return;
        }
        if self.generation(tables) != probe.generation || self.feed_down() {
            inc(&self.counters.stale);
            return;
        }
        let mut ident = Vec::with_capacity(probe.table.len() + 2 + 32);
        ident.extend_from_slice(probe.table.as_bytes());
        ident.extend_from_slice(&[0, probe.kind]);
        if serde_json::to_writer(&mut ident, probe.what).is_err() {
            return;
        }
        let value = value();
        let weight = match self.min_weight {
            Some(min) => {
                let size = ident.len() as u64 + 64 + value.approx_size();
                u32::try_from(size.max(min)).unwrap_or(u32::MAX)
            }
            None => 1,
        };
        self.cache.insert(
            moka_key(probe.hash, probe.generation),
            Arc::new(Entry {
                generation: probe.generation,
                ident: ident.into_boxed_slice(),
                value,
                expires_at: Instant::now() + probe.ttl,
                ttl: probe.ttl,
                weight,
            }),
        );
        let (slot, tag) = self.slot(probe.hash);
        slot.store(tag | STORED, Ordering::Relaxed);
        inc(&self.counters.inserts);
    }

    fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            bypassed: get(&c.bypassed),
            not_admitted: get(&c.not_admitted),
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
    /// db.get("agents", &json!("a1")).await?; // from the provider (remembered)
    /// db.get("agents", &json!("a1")).await?; // from the provider, stored
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
        match s.begin(self.scoped, table, b'g', id, tables()) {
            Lookup::Hit(entry) => match &entry.value {
                Cached::Row(row) => Ok(row.clone()),
                // Never: the kind is part of what an entry answers.
                Cached::Rows(_) => next.get(table, id).await,
            },
            Lookup::Miss(probe) => {
                let row = next.get(table, id).await?;
                s.store(&probe, tables(), || Cached::Row(row.clone()));
                Ok(row)
            }
            Lookup::Bypass => next.get(table, id).await,
        }
    }

    async fn read(&self, next: &dyn Database, table: &str, query: &Query) -> Result<Vec<Row>> {
        let s = &*self.shared;
        let tables = read_tables(table, query);
        match s.begin(self.scoped, table, b'r', query, tables.clone()) {
            Lookup::Hit(entry) => match &entry.value {
                Cached::Rows(rows) => Ok(rows.clone()),
                // Never: the kind is part of what an entry answers.
                Cached::Row(_) => next.read(table, query).await,
            },
            Lookup::Miss(probe) => {
                let rows = next.read(table, query).await?;
                s.store(&probe, tables, || Cached::Rows(rows.clone()));
                Ok(rows)
            }
            Lookup::Bypass => next.read(table, query).await,
        }
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

    async fn insert_many(&self, next: &dyn Database, table: &str, rows: Vec<Row>) -> Result<u64> {
        let _bump = self.bump_on_drop(Touched::Table(table));
        next.insert_many(table, rows).await
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
    fn an_entry_answers_only_its_own_key_at_its_own_generation() {
        let entry = Entry {
            generation: 7,
            ident: b"agents\0g\"a1\"".to_vec().into_boxed_slice(),
            value: Cached::Row(None),
            expires_at: Instant::now(),
            ttl: Duration::from_secs(1),
            weight: 1,
        };
        let a1 = serde_json::json!("a1");
        assert!(entry.answers(7, "agents", b'g', &a1));
        assert!(!entry.answers(8, "agents", b'g', &a1), "another generation");
        assert!(!entry.answers(7, "agent", b'g', &a1), "another table");
        assert!(!entry.answers(7, "agentsx", b'g', &a1), "another table");
        assert!(!entry.answers(7, "agents", b'r', &a1), "another kind");
        for other in [
            serde_json::json!("a"),
            serde_json::json!("a10"),
            serde_json::json!(1),
        ] {
            assert!(!entry.answers(7, "agents", b'g', &other), "{other}");
        }
    }

    #[test]
    fn equal_keys_hash_alike_and_share_a_doorkeeper_slot() {
        let s = Shared::new(&CacheConfig::default());
        let h = |t: &str, k: u8, v: serde_json::Value| s.ident_hash(t, k, &v).unwrap();
        let a1 = h("agents", b'g', serde_json::json!("a1"));
        assert_eq!(a1, h("agents", b'g', serde_json::json!("a1")));
        assert_ne!(a1, h("agents", b'r', serde_json::json!("a1")));
        assert_ne!(a1, h("agent", b'g', serde_json::json!("sa1")));
        assert_ne!(moka_key(a1, 1), moka_key(a1, 2));
        let (slot, tag) = s.slot(a1);
        assert_eq!(tag & STORED, 0);
        assert!(std::ptr::eq(slot, s.slot(a1).0));
        // 100,000 entries: 131,072 slots.
        assert_eq!(s.doorkeeper.len(), 1 << 17);
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
