//! What a layer costs on a `get`, and what a cache hit and an open circuit
//! breaker answer in.
//!
//! ```text
//! cargo bench -p truststream-bench-layers --bench layers [-- --rounds 41 --only memory|pending|sqlite]
//! ```
//!
//! Three providers: db-memory; db-memory under a layer that answers
//! `Pending` once per call before running it ("pending once": what layers
//! do while a provider waits for I/O — a timeout's timer armed, a permit
//! held across polls — measured without the I/O's noise); and db-sqlite on
//! a file in a temporary directory with its default configuration (WAL, 8
//! connections). Each is seeded with a few more rows than one row of the
//! first table reads in a run (db-memory 215,000, db-sqlite 8,600 with the
//! defaults: the whole file fits SQLite's page cache). Every row of the
//! first table reads its own run of keys from 1 up (`get("bench", id)`,
//! each key once), through one provider instance, bare or wrapped:
//!
//! - the bare provider;
//! - the mechanism alone: a pass-through generic layer (`Around` via
//!   `around_database`), a pass-through interface layer (`DatabaseLayer` via
//!   `LayeredDatabase`), six pass-through generic layers each wrapped on
//!   its own and the same six as one `Chain` (as a configured stack runs
//!   consecutive generic layers);
//! - each configured layer alone, built from its configuration name with
//!   default settings through the `LayerRegistry` (as the runtime builds
//!   it): timeout, retry, circuit_breaker (closed), limit, metrics (no
//!   `metrics` recorder installed: see the third table), and the cache
//!   six times: on its miss path ([`CACHE_MISS`]) with its defaults (a
//!   key read once is not stored), with its defaults and every key read
//!   twice (the second get stores: the defaults' whole miss path),
//!   storing every miss (`admission = "first_miss"`) with the defaults'
//!   size, with room for every key and when full (every store evicts),
//!   and on a table it does not cache (TTL 0: the look-up is skipped);
//! - the whole default stack (metrics, cache, retry, circuit_breaker,
//!   limit, timeout), the cache missing (defaults with every key read
//!   once, then twice, then storing every miss), and again on a table the
//!   cache does not cache.
//!
//! Then (second table) a cache hit — one key, read again and again —
//! against the bare provider's `get` of that key, and the answer time of an
//! open circuit breaker (opened by a layer below it that fails every call).
//! Last (third table), metrics alone and the whole stack again after a
//! Prometheus recorder is installed as the process's `metrics` recorder (as
//! a process serving `/metrics` has). The run ends with the issue's targets
//! in a list, each with its ratio: the whole default stack's rows, the
//! cache hits on db-sqlite, the open breaker.
//!
//! Method: all rows of a provider run in the same process, in rounds. A
//! round times a batch of `get`s of the bare provider, then of each other
//! row followed by the bare provider again (`B c1 B c2 B ... B`, the order
//! of the rows rotating from round to round), and compares each row's
//! batch with the mean of the two bare batches around it. A row's figures
//! are medians over the rounds: ns per `get`, the extra ns per `get` over
//! the bare provider, and the ratio to it with the interquartile range of
//! the per-round ratios as the spread. Each batch's figure is its fastest
//! of 8 sub-batches: on a shared machine another process taking the core
//! only ever adds time.
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --benches`) the
//! bench makes a quick smoke run (3 short rounds).

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use truststream_bench_layers::{seed, DEFAULT_STACK, TABLE};
use truststream_core::{BoxFuture, Error, ErrorKind, Result};
use truststream_core_db::Database;
use truststream_db_memory::MemoryDatabase;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_layer::{
    around_database, Around, Chain, DatabaseLayer, Interface, LayerDeps, LayerRegistry,
    LayeredDatabase, Next, Op,
};
use truststream_layer_cache::CacheHandles;

/// How the cache layer is made to miss on every `get`: each row reads
/// its own run through the seeded keys, never the same key twice in a run
/// but for the rows that read each key twice in a row (there are more keys
/// than a row reads). Each `get` misses and the
/// provider answers. The headline rows use the cache's defaults
/// (`max_entries = 100000`, `admission = "second_miss"`): a key's first
/// miss is remembered by the doorkeeper, not stored, so these rows measure
/// the miss of a key read once, the cheapest miss the defaults have; the
/// "every key read twice" rows keep the defaults and read each key twice
/// in a row (the first get remembered, the second stored: ns per `get` is
/// the mean of the two), so that the default configuration's store is
/// measured and judged too (the provider reads the same row twice there,
/// against distinct rows for the bare batches). The labelled rows store every miss
/// (`admission = "first_miss"`: a copy of the row and moka's insert on
/// every `get`, the cost a key read twice pays once): with the defaults'
/// 100,000 entries (on db-memory the later stores evict), with room for
/// every key, and with 16 entries (every store evicts). The table prints
/// the hits measured.
const CACHE_MISS: &str = "every get reads a key not read before (the \"read twice\" rows: each \
     key twice in a row); the cache's defaults (max_entries = 100,000, admission = second_miss: \
     a key read once is not stored, a key read twice is stored by its second get), and for the \
     labelled rows admission = first_miss (every miss stored) with 100,000 / 1,000,000 / 16 \
     entries";

/// The cache settings of the rows that store every miss.
fn cache_store_settings() -> Value {
    json!({ "admission": "first_miss" })
}

/// The cache settings of the "room for every key" row.
fn cache_room_settings() -> Value {
    json!({ "max_entries": 1_000_000, "admission": "first_miss" })
}

/// The cache settings of the full-cache row: every store evicts.
fn cache_full_settings() -> Value {
    json!({ "max_entries": 16, "admission": "first_miss" })
}

/// The cache settings of the row on a table the cache does not cache.
fn cache_off_settings() -> Value {
    json!({ "tables": { TABLE: 0 } })
}

/// A generic layer that only runs the call: the mechanism's own cost.
struct PassAround;

impl Around for PassAround {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        next.run()
    }
}

/// An interface layer that overrides nothing: every method forwards.
struct PassDatabase;

impl DatabaseLayer for PassDatabase {}

/// Answers `Pending` once before running the call, as a provider waiting
/// for I/O does: the layers above go through their waiting path (a timer
/// armed, a permit held across a poll) with no I/O to blur the figures.
struct YieldOnce;

impl Around for YieldOnce {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            next.run().await
        })
    }
}

/// Fails every call with a temporary error (`Unavailable`), counting the
/// calls that reach it: what an open breaker above it must stop.
#[derive(Default)]
struct Failing(AtomicU64);

impl Around for Failing {
    fn around<'a>(&'a self, _op: Op<'a>, _next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Err(Error::unavailable("bench: injected failure")) })
    }
}

/// Every layer that applies to a database but the composite, registered
/// as the runtime registers them; the caches' stats go to `caches`.
fn registry(caches: &CacheHandles) -> LayerRegistry {
    let mut reg = LayerRegistry::new();
    truststream_layer_resilience::register(&mut reg);
    truststream_layer_metrics::register(&mut reg);
    truststream_layer_cache::register_with_handles(&mut reg, caches);
    reg
}

/// A row's database, or why it cannot run.
type Built = std::result::Result<Arc<dyn Database>, String>;

/// `inner` wrapped in `layers` (`name -> settings`) built through a fresh
/// registry (as the runtime builds a stack), with the handles of the
/// caches it made.
async fn stacked(layers: &[(&str, Value)], inner: &Arc<dyn Database>) -> (Built, CacheHandles) {
    let caches = CacheHandles::new();
    let config: serde_json::Map<String, Value> = layers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let built = match registry(&caches).stack(Interface::Database, &config, &LayerDeps::default()) {
        Ok(stack) => stack
            .wrap_database(Arc::clone(inner))
            .await
            .map_err(|e| format!("cannot wrap: {e}")),
        Err(e) => Err(format!("bad bench configuration: {e}")),
    };
    (built, caches)
}

/// Hits, misses and stores of the caches in `caches`, for the row's label.
fn cache_note(caches: &CacheHandles) -> String {
    let (mut hits, mut misses, mut bypassed, mut inserts) = (0, 0, 0, 0);
    for c in caches.caches() {
        let s = c.stats();
        hits += s.hits;
        misses += s.misses;
        bypassed += s.bypassed;
        inserts += s.inserts;
    }
    if hits + misses == 0 {
        return format!("{bypassed} gets passed through, no look-up");
    }
    format!(
        "{:.1} % hits of {} cacheable gets, {inserts} results stored",
        100.0 * hits as f64 / (hits + misses) as f64,
        hits + misses
    )
}

/// Which target a row is held to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The reference row.
    Bare,
    /// No target: the mechanism alone, for reading the others.
    Info,
    /// One layer: under 3 % or 1 µs over the bare provider.
    Layer,
    /// The whole default stack: under 10 %.
    Stack,
}

struct Contender {
    label: String,
    db: Built,
    target: Target,
    /// The row's caches, for their hit rate.
    caches: Option<CacheHandles>,
    /// How many gets in a row read each key (1: every get a key not read
    /// before).
    reads_per_key: usize,
}

impl Contender {
    fn new(label: impl Into<String>, db: Built, target: Target) -> Self {
        Contender {
            label: label.into(),
            db,
            target,
            caches: None,
            reads_per_key: 1,
        }
    }

    /// The same row, reading each key `n` times in a row.
    fn reading_each_key(mut self, n: usize) -> Self {
        self.reads_per_key = n;
        self
    }

    /// A row built through the registry.
    async fn stacked(
        label: impl Into<String>,
        layers: &[(&str, Value)],
        bare: &Arc<dyn Database>,
        target: Target,
    ) -> Self {
        let (db, caches) = stacked(layers, bare).await;
        Contender {
            label: label.into(),
            db,
            target,
            caches: Some(caches),
            reads_per_key: 1,
        }
    }
}

/// The keys one row reads, in turn, from where it left off: each row has
/// its own, so a row never reads a key again (beyond its `repeat` reads in
/// a row) until it went through all of them.
struct Keys {
    ids: Arc<Vec<Value>>,
    next: Cell<usize>,
    /// Gets in a row of each key.
    repeat: usize,
}

impl Keys {
    fn new(ids: &Arc<Vec<Value>>) -> Self {
        Keys::repeating(ids, 1)
    }

    /// Each key read `repeat` times in a row.
    fn repeating(ids: &Arc<Vec<Value>>, repeat: usize) -> Self {
        Keys {
            ids: Arc::clone(ids),
            next: Cell::new(0),
            repeat: repeat.max(1),
        }
    }
}

/// Times `n` gets of the next `n` keys (every key is a row that exists).
async fn time_gets(db: &dyn Database, keys: &Keys, n: usize) -> Duration {
    let start = keys.next.get();
    keys.next.set(start + n);
    let ids = &keys.ids;
    let t = Instant::now();
    for i in 0..n {
        let id = &ids[((start + i) / keys.repeat) % ids.len()];
        let row = db.get(TABLE, black_box(id)).await;
        black_box(row.expect("get").expect("the warm row exists"));
    }
    t.elapsed()
}

/// Sub-batches of one timing.
const SUB_BATCHES: usize = 8;

/// ns per `get` over a batch of `batch` gets: the fastest of
/// [`SUB_BATCHES`] sub-batches (another process taking the core only ever
/// adds time, and on a shared 2-core machine it does so often).
async fn per_get(db: &dyn Database, keys: &Keys, batch: usize) -> f64 {
    let n = (batch / SUB_BATCHES).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..SUB_BATCHES {
        let d = time_gets(db, keys, n).await;
        best = best.min(d.as_nanos() as f64 / n as f64);
    }
    best
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// The `q` quantile (nearest rank) of `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Settings of one run.
struct Plan {
    rounds: usize,
    /// Gets per round and row on db-memory / db-sqlite.
    memory_batch: usize,
    sqlite_batch: usize,
}

impl Plan {
    /// Rows to seed for `batch`: more than a row reads in a run (rounds,
    /// warm-up), so that no row reads a key twice.
    fn keys(&self, batch: usize) -> usize {
        (self.rounds + 2) * batch
    }
}

/// Runs every contender in rounds and prints the table rows of `backend`.
///
/// A round times a batch of the bare provider, then each other row in turn
/// followed by the bare provider again (`B c1 B c2 B ... cN B`, the rows'
/// order rotating from round to round): each row is compared with the mean
/// of the two bare batches around it, so drift on a shared machine hits
/// both sides of every comparison alike.
async fn compare(
    backend: &str,
    contenders: &[Contender],
    batch: usize,
    plan: &Plan,
) -> Vec<String> {
    let rounds = plan.rounds;
    let ids: Arc<Vec<Value>> =
        Arc::new((1..=plan.keys(batch) as i64).map(|id| json!(id)).collect());
    let ids = &ids;
    let bare = contenders[0].db.as_ref().expect("the bare provider");
    let others: Vec<(usize, &Arc<dyn Database>)> = contenders
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(i, c)| c.db.as_ref().ok().map(|db| (i, db)))
        .collect();
    let bare_keys = Keys::new(ids);
    let keys: Vec<Keys> = contenders
        .iter()
        .map(|c| Keys::repeating(ids, c.reads_per_key))
        .collect();
    // Warm-up: every row once (connections, statement caches, allocator).
    time_gets(&**bare, &bare_keys, batch).await;
    for (i, db) in &others {
        time_gets(&***db, &keys[*i], batch / 4 + 1).await;
    }
    let n = contenders.len();
    let (mut ns, mut extra, mut ratio) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    for round in 0..rounds {
        let mut before = per_get(&**bare, &bare_keys, batch).await;
        ns[0].push(before);
        for k in 0..others.len() {
            let (i, db) = others[(round + k) % others.len()];
            let x = per_get(&**db, &keys[i], batch).await;
            let after = per_get(&**bare, &bare_keys, batch).await;
            ns[0].push(after);
            let b = (before + after) / 2.0;
            ns[i].push(x);
            extra[i].push(x - b);
            ratio[i].push(x / b);
            before = after;
        }
    }
    let mut targets = Vec::new();
    for (i, c) in contenders.iter().enumerate() {
        if let Err(why) = &c.db {
            println!("| {backend} | {} | ({why}) | | | |", c.label);
            continue;
        }
        if c.target == Target::Bare {
            println!(
                "| {backend} | {} | {} ({}-{}) | | 1 | |",
                c.label,
                fmt_ns(median(&ns[0])),
                fmt_ns(quantile(&ns[0], 0.25)),
                fmt_ns(quantile(&ns[0], 0.75)),
            );
            continue;
        }
        let (r, lo, hi) = (
            median(&ratio[i]),
            quantile(&ratio[i], 0.25),
            quantile(&ratio[i], 0.75),
        );
        let more = median(&extra[i]);
        let verdict = match c.target {
            Target::Bare | Target::Info => String::new(),
            Target::Layer => {
                let met = r < 1.03 || more < 1000.0;
                format!("< 3 % or 1 µs: {}", if met { "met" } else { "**not met**" })
            }
            Target::Stack => {
                let met = r < 1.10;
                format!("< 10 %: {}", if met { "met" } else { "**not met**" })
            }
        };
        let sign = if more < 0.0 { "-" } else { "+" };
        let label = match &c.caches {
            Some(caches) if !caches.caches().is_empty() => {
                format!("{} ({})", c.label, cache_note(caches))
            }
            _ => c.label.clone(),
        };
        println!(
            "| {backend} | {label} | {} | {sign}{} | {r:.3} ({lo:.3}-{hi:.3}) | {verdict} |",
            fmt_ns(median(&ns[i])),
            fmt_ns(more.abs()),
        );
        if c.target == Target::Stack {
            targets.push(format!(
                "{backend}, {}: {r:.3}x the bare get ({sign}{}; IQR {lo:.3}-{hi:.3}), {verdict}",
                c.label,
                fmt_ns(more.abs())
            ));
        }
    }
    targets
}

/// The contenders over `bare`: the mechanism, each layer alone, the stack.
async fn contenders(bare: &Arc<dyn Database>) -> Vec<Contender> {
    let pass_generic = around_database(Arc::clone(bare), Arc::new(PassAround));
    let pass_interface: Arc<dyn Database> = Arc::new(LayeredDatabase::new(
        Arc::clone(bare),
        Arc::new(PassDatabase),
    ));
    let six = (0..6).fold(Arc::clone(bare), |db, _| {
        around_database(db, Arc::new(PassAround))
    });
    let six_chained = around_database(
        Arc::clone(bare),
        Arc::new(Chain::new(
            (0..6)
                .map(|_| Arc::new(PassAround) as Arc<dyn Around>)
                .collect(),
        )),
    );
    let mut out = vec![
        Contender::new("bare provider", Ok(Arc::clone(bare)), Target::Bare),
        Contender::new(
            "+ pass-through generic layer (Around)",
            Ok(pass_generic),
            Target::Layer,
        ),
        Contender::new(
            "+ pass-through interface layer (DatabaseLayer)",
            Ok(pass_interface),
            Target::Layer,
        ),
        Contender::new(
            "+ 6 pass-through generic layers, each its own wrapper",
            Ok(six),
            Target::Info,
        ),
        Contender::new(
            "+ 6 pass-through generic layers as one chain (as a configured stack runs them)",
            Ok(six_chained),
            Target::Info,
        ),
    ];
    for name in ["timeout", "retry", "circuit_breaker", "limit", "metrics"] {
        let label = if name == "circuit_breaker" {
            "+ circuit_breaker (closed)".to_string()
        } else {
            format!("+ {name}")
        };
        out.push(Contender::stacked(label, &[(name, json!(true))], bare, Target::Layer).await);
    }
    out.push(
        Contender::stacked(
            "+ cache, missing (defaults)",
            &[("cache", json!(true))],
            bare,
            Target::Layer,
        )
        .await,
    );
    out.push(
        Contender::stacked(
            "+ cache, missing, every key read twice (defaults: the second get stores)",
            &[("cache", json!(true))],
            bare,
            Target::Layer,
        )
        .await
        .reading_each_key(2),
    );
    out.push(
        Contender::stacked(
            "+ cache, missing, storing every miss (admission = first_miss)",
            &[("cache", cache_store_settings())],
            bare,
            Target::Layer,
        )
        .await,
    );
    out.push(
        Contender::stacked(
            "+ cache, missing, storing every miss, room for every key (1,000,000 entries)",
            &[("cache", cache_room_settings())],
            bare,
            Target::Layer,
        )
        .await,
    );
    out.push(
        Contender::stacked(
            "+ cache, missing, storing every miss, full (16 entries)",
            &[("cache", cache_full_settings())],
            bare,
            Target::Layer,
        )
        .await,
    );
    out.push(
        Contender::stacked(
            "+ cache, table not cached (TTL 0)",
            &[("cache", cache_off_settings())],
            bare,
            Target::Layer,
        )
        .await,
    );
    out.push(
        Contender::stacked(
            "+ whole default stack, cache missing",
            &default_stack(json!(true)),
            bare,
            Target::Stack,
        )
        .await,
    );
    out.push(
        Contender::stacked(
            "+ whole default stack, cache missing, every key read twice (the second get stores)",
            &default_stack(json!(true)),
            bare,
            Target::Stack,
        )
        .await
        .reading_each_key(2),
    );
    out.push(
        Contender::stacked(
            "+ whole default stack, cache missing, storing every miss (admission = first_miss)",
            &default_stack(cache_store_settings()),
            bare,
            Target::Info,
        )
        .await,
    );
    out.push(
        Contender::stacked(
            "+ whole default stack, table not cached (TTL 0)",
            &default_stack(cache_off_settings()),
            bare,
            Target::Stack,
        )
        .await,
    );
    out
}

/// The default stack with `cache` as the cache's settings.
fn default_stack(cache: Value) -> Vec<(&'static str, Value)> {
    DEFAULT_STACK
        .iter()
        .map(|&n| {
            (
                n,
                if n == "cache" {
                    cache.clone()
                } else {
                    json!(true)
                },
            )
        })
        .collect()
}

/// A cache hit (one row read until stored — twice with the defaults —,
/// then served by the cache) against the
/// bare provider's `get` of the same row, in alternating rounds.
async fn cache_hit(backend: &str, bare: &Arc<dyn Database>, plan: &Plan) -> Vec<String> {
    let mut targets = Vec::new();
    let rows: Vec<(&str, Built)> = vec![
        (
            "cache alone (defaults)",
            stacked(&[("cache", json!(true))], bare).await.0,
        ),
        (
            "whole default stack",
            stacked(&default_stack(json!(true)), bare).await.0,
        ),
    ];
    let one = Arc::new(vec![json!(1)]);
    let (hit_key, bare_key) = (Keys::new(&one), Keys::new(&one));
    for (label, db) in rows {
        let db = match db {
            Ok(db) => db,
            Err(why) => {
                println!("| {backend} | cache hit: {label} | ({why}) | | | |");
                continue;
            }
        };
        time_gets(&*db, &hit_key, 10).await;
        let batch = plan.memory_batch;
        let slow_batch = if backend.starts_with("db-sqlite") {
            plan.sqlite_batch
        } else {
            plan.memory_batch
        };
        let (mut hit, mut raw) = (Vec::new(), Vec::new());
        for round in 0..plan.rounds {
            for side in [round % 2 == 0, round % 2 != 0] {
                if side {
                    hit.push(per_get(&*db, &hit_key, batch).await);
                } else {
                    raw.push(per_get(&**bare, &bare_key, slow_batch).await);
                }
            }
        }
        let speedups: Vec<f64> = raw.iter().zip(&hit).map(|(r, h)| r / h).collect();
        let s = median(&speedups);
        let verdict = if backend.starts_with("db-sqlite") {
            format!(">= 20x: {}", if s >= 20.0 { "met" } else { "**not met**" })
        } else {
            String::new()
        };
        println!(
            "| {backend} | cache hit: {label} | {} | bare get {} | {s:.1}x faster ({:.1}-{:.1}) | {verdict} |",
            fmt_ns(median(&hit)),
            fmt_ns(median(&raw)),
            quantile(&speedups, 0.25),
            quantile(&speedups, 0.75),
        );
        if !verdict.is_empty() {
            targets.push(format!(
                "{backend}, cache hit ({label}): {s:.1}x faster than the bare get, {verdict}"
            ));
        }
    }
    targets
}

/// The answer time of an open breaker: a breaker over a layer that fails
/// every call, driven open, then timed; no call may reach the failing layer
/// while it is open.
async fn open_breaker(bare: &Arc<dyn Database>, plan: &Plan) -> Option<String> {
    let failing = Arc::new(Failing::default());
    let below = around_database(Arc::clone(bare), Arc::clone(&failing));
    let settings = json!({
        "failure_ratio": 0.5,
        "min_calls": 5,
        "window_s": 60,
        "open_s": 3600,
    });
    let db = match stacked(&[("circuit_breaker", settings)], &below).await.0 {
        Ok(db) => db,
        Err(why) => {
            println!("| db-memory | open circuit_breaker: answer | ({why}) | | | |");
            return None;
        }
    };
    let id = json!(1);
    let mut opened = false;
    for _ in 0..1_000 {
        let before = failing.0.load(Ordering::Relaxed);
        let e = db.get(TABLE, &id).await.expect_err("every call fails");
        if failing.0.load(Ordering::Relaxed) == before {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "an open breaker: {e}");
            opened = true;
            break;
        }
    }
    assert!(opened, "the breaker did not open after 1,000 failed calls");
    let reached = failing.0.load(Ordering::Relaxed);
    let batch = plan.memory_batch;
    let mut ns = Vec::new();
    let n = (batch / SUB_BATCHES).max(1);
    for _ in 0..plan.rounds {
        // As `per_get`: the fastest sub-batch.
        let mut best = f64::INFINITY;
        for _ in 0..SUB_BATCHES {
            let t = Instant::now();
            for _ in 0..n {
                let e = db.get(TABLE, black_box(&id)).await;
                black_box(e.expect_err("open"));
            }
            best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        ns.push(best);
    }
    assert_eq!(
        failing.0.load(Ordering::Relaxed),
        reached,
        "a call went through the open breaker"
    );
    let m = median(&ns);
    let met = if m < 2000.0 { "met" } else { "**not met**" };
    println!(
        "| db-memory | open circuit_breaker: answer (`Unavailable`) | {} ({}-{}) | | | < 2 µs: {met} |",
        fmt_ns(m),
        fmt_ns(quantile(&ns, 0.25)),
        fmt_ns(quantile(&ns, 0.75)),
    );
    Some(format!(
        "open circuit_breaker answers in {}, < 2 µs: {met}",
        fmt_ns(m)
    ))
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds = arg("--rounds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 3 } else { 41 });
    let (memory_batch, sqlite_batch) = if smoke { (200, 20) } else { (5_000, 200) };
    let plan = Plan {
        rounds,
        memory_batch,
        sqlite_batch,
    };
    let only = arg("--only");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!(
            "cache miss rows: {CACHE_MISS}; rows seeded: db-memory {}, db-sqlite {}; {} rounds{}",
            plan.keys(plan.memory_batch),
            plan.keys(plan.sqlite_batch),
            plan.rounds,
            if smoke { " (smoke run)" } else { "" }
        );
        let memory: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
        seed(&*memory, plan.keys(plan.memory_batch)).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite: Arc<dyn Database> = Arc::new(
            SqliteDatabase::open(SqliteConfig::file(dir.path().join("bench.db")))
                .await
                .expect("open sqlite"),
        );
        seed(&*sqlite, plan.keys(plan.sqlite_batch)).await;
        let pending = around_database(Arc::clone(&memory), Arc::new(YieldOnce));
        let backends = [
            ("memory", "db-memory", &memory, plan.memory_batch),
            ("pending", "db-memory, pending once", &pending, plan.memory_batch),
            ("sqlite", "db-sqlite (file)", &sqlite, plan.sqlite_batch),
        ];
        let chosen = || {
            backends
                .iter()
                .filter(|(key, ..)| only.as_deref().is_none_or(|o| o == *key))
        };

        println!();
        println!("| provider | row | ns per get (median) | extra per get | ratio to bare (IQR of rounds) | target |");
        println!("|---|---|---|---|---|---|");
        let mut targets = Vec::new();
        for (_, name, db, batch) in chosen() {
            let c = contenders(db).await;
            targets.extend(compare(name, &c, *batch, &plan).await);
        }

        println!();
        println!("| provider | row | ns per get (median) | reference | speed-up (IQR of rounds) | target |");
        println!("|---|---|---|---|---|---|");
        for (key, name, db, _) in chosen() {
            if *key != "pending" {
                targets.extend(cache_hit(name, db, &plan).await);
            }
        }
        targets.extend(open_breaker(&memory, &plan).await);

        // Last: a recorder is process-wide and cannot be removed.
        truststream_layer_metrics::install_prometheus().expect("install the Prometheus recorder");
        println!();
        println!("With a Prometheus recorder installed:");
        println!();
        println!("| provider | row | ns per get (median) | extra per get | ratio to bare (IQR of rounds) | target |");
        println!("|---|---|---|---|---|---|");
        for (_, name, db, batch) in chosen() {
            let c = vec![
                Contender::new("bare provider", Ok(Arc::clone(db)), Target::Bare),
                Contender::stacked("+ metrics", &[("metrics", json!(true))], db, Target::Layer)
                    .await,
                Contender::stacked(
                    "+ whole default stack, cache missing",
                    &default_stack(json!(true)),
                    db,
                    Target::Stack,
                )
                .await,
            ];
            let with_recorder = compare(name, &c, *batch, &plan).await;
            targets.extend(with_recorder.into_iter().map(|t| format!("{t} (Prometheus recorder)")));
        }

        // The issue's targets, each with its ratio (per-layer rows: the
        // first table's last column).
        println!();
        println!("Targets (whole default stack < 10 %, cache hit >= 20x, open breaker < 2 µs):");
        for t in &targets {
            println!("- {t}");
        }
    });
}
