//! What a layer costs on a `get`, and what a cache hit and an open circuit
//! breaker answer in.
//!
//! ```text
//! cargo bench -p truststream-bench-layers --bench layers [-- --rounds 41 --only memory|sqlite]
//! ```
//!
//! Two providers: db-memory, and db-sqlite on a file in a temporary
//! directory with its default configuration (WAL, 8 connections). Every row
//! reads the same warm row by key (`get("bench", 1)`) through one provider
//! instance, bare or wrapped:
//!
//! - the bare provider;
//! - the mechanism alone: a pass-through generic layer (`Around` via
//!   `around_database`), a pass-through interface layer (`DatabaseLayer` via
//!   `LayeredDatabase`), six pass-through generic layers;
//! - each configured layer alone, built from its configuration name with
//!   default settings through the `LayerRegistry` (as the runtime builds
//!   it): timeout, retry, circuit_breaker (closed), limit, metrics, and the
//!   cache on its miss path (see [`CACHE_MISS`]);
//! - the whole default stack (metrics, cache, retry, circuit_breaker,
//!   limit, timeout), the cache missing.
//!
//! Then a cache hit against the bare provider's `get`, and the answer time
//! of an open circuit breaker (opened by a layer below it that fails every
//! call).
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
//! only ever adds time. A layer not registered by its crate (yet) is
//! listed as such.
//!
//! `cargo bench` passes `--bench`; without it (`cargo test --benches`) the
//! bench makes a quick smoke run (3 short rounds).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use truststream_core::{BoxFuture, Error, ErrorKind, Result};
use truststream_core_db::{ColumnDef, Database, Row, TableSchema};
use truststream_db_memory::MemoryDatabase;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_layer::{
    around_database, Around, DatabaseLayer, Interface, LayerDeps, LayerRegistry, LayeredDatabase,
    Next, Op,
};

/// The table every row reads.
const TABLE: &str = "bench";

/// Rows seeded in [`TABLE`].
const SEEDED: i64 = 1_000;

/// How the cache layer is made to miss on every `get`: the bench table's
/// TTL is 0 (the entry expires at once), so each `get` looks the key up,
/// misses, reads the provider and stores the answer — the whole miss path.
const CACHE_MISS: &str = "tables = { bench = 0 } (TTL 0: every get misses)";

/// The cache settings of the miss rows.
fn cache_miss_settings() -> Value {
    json!({ "tables": { TABLE: 0 } })
}

/// The layers of the default stack, outermost first (the registry orders
/// them by rank whatever the order here).
const DEFAULT_STACK: [&str; 6] = [
    "metrics",
    "cache",
    "retry",
    "circuit_breaker",
    "limit",
    "timeout",
];

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

fn registry() -> LayerRegistry {
    let mut reg = LayerRegistry::new();
    truststream_layer_resilience::register(&mut reg);
    reg
}

/// A row's database, or why it cannot run.
type Built = std::result::Result<Arc<dyn Database>, String>;

/// `inner` wrapped in the layers of `layers` (`name -> settings`), built
/// through the registry; `Err(names)` when some are not registered.
async fn stacked(
    reg: &LayerRegistry,
    layers: &[(&str, Value)],
    inner: &Arc<dyn Database>,
) -> Built {
    let known = reg.names();
    let missing: Vec<&str> = layers
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !known.contains(n))
        .collect();
    if !missing.is_empty() {
        return Err(format!("not registered yet: {}", missing.join(", ")));
    }
    let config: serde_json::Map<String, Value> = layers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let stack = reg
        .stack(Interface::Database, &config, &LayerDeps::default())
        .map_err(|e| format!("bad bench configuration: {e}"))?;
    stack
        .wrap_database(Arc::clone(inner))
        .await
        .map_err(|e| format!("cannot wrap: {e}"))
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
}

/// Times `n` gets of the warm row.
async fn time_gets(db: &dyn Database, n: usize) -> Duration {
    let id = json!(1);
    let t = Instant::now();
    for _ in 0..n {
        let row = db.get(TABLE, black_box(&id)).await;
        black_box(row.expect("get").expect("the warm row exists"));
    }
    t.elapsed()
}

/// Sub-batches of one timing.
const SUB_BATCHES: usize = 8;

/// ns per `get` over a batch of `batch` gets: the fastest of
/// [`SUB_BATCHES`] sub-batches (another process taking the core only ever
/// adds time, and on a shared 2-core machine it does so often).
async fn per_get(db: &dyn Database, batch: usize) -> f64 {
    let n = (batch / SUB_BATCHES).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..SUB_BATCHES {
        let d = time_gets(db, n).await;
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

/// Runs every contender in rounds and prints the table rows of `backend`.
///
/// A round times a batch of the bare provider, then each other row in turn
/// followed by the bare provider again (`B c1 B c2 B ... cN B`, the rows'
/// order rotating from round to round): each row is compared with the mean
/// of the two bare batches around it, so drift on a shared machine hits
/// both sides of every comparison alike.
async fn compare(backend: &str, contenders: &[Contender], batch: usize, rounds: usize) {
    let bare = contenders[0].db.as_ref().expect("the bare provider");
    let others: Vec<(usize, &Arc<dyn Database>)> = contenders
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(i, c)| c.db.as_ref().ok().map(|db| (i, db)))
        .collect();
    // Warm-up: every row once (connections, statement caches, allocator).
    time_gets(&**bare, batch).await;
    for (_, db) in &others {
        time_gets(&***db, batch / 4 + 1).await;
    }
    let n = contenders.len();
    let (mut ns, mut extra, mut ratio) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    for round in 0..rounds {
        let mut before = per_get(&**bare, batch).await;
        ns[0].push(before);
        for k in 0..others.len() {
            let (i, db) = others[(round + k) % others.len()];
            let x = per_get(&**db, batch).await;
            let after = per_get(&**bare, batch).await;
            ns[0].push(after);
            let b = (before + after) / 2.0;
            ns[i].push(x);
            extra[i].push(x - b);
            ratio[i].push(x / b);
            before = after;
        }
    }
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
        println!(
            "| {backend} | {} | {} | {sign}{} | {r:.3} ({lo:.3}-{hi:.3}) | {verdict} |",
            c.label,
            fmt_ns(median(&ns[i])),
            fmt_ns(more.abs()),
        );
    }
}

/// The contenders over `bare`: the mechanism, each layer alone, the stack.
async fn contenders(reg: &LayerRegistry, bare: &Arc<dyn Database>) -> Vec<Contender> {
    let mut out = vec![
        Contender {
            label: "bare provider".into(),
            db: Ok(Arc::clone(bare)),
            target: Target::Bare,
        },
        Contender {
            label: "+ pass-through generic layer (Around)".into(),
            db: Ok(around_database(Arc::clone(bare), Arc::new(PassAround))),
            target: Target::Layer,
        },
        Contender {
            label: "+ pass-through interface layer (DatabaseLayer)".into(),
            db: Ok(Arc::new(LayeredDatabase::new(
                Arc::clone(bare),
                Arc::new(PassDatabase),
            ))),
            target: Target::Layer,
        },
        Contender {
            label: "+ 6 pass-through generic layers".into(),
            db: Ok((0..6).fold(Arc::clone(bare), |db, _| {
                around_database(db, Arc::new(PassAround))
            })),
            target: Target::Info,
        },
    ];
    for name in ["timeout", "retry", "circuit_breaker", "limit", "metrics"] {
        let label = if name == "circuit_breaker" {
            "+ circuit_breaker (closed)".to_string()
        } else {
            format!("+ {name}")
        };
        out.push(Contender {
            label,
            db: stacked(reg, &[(name, json!(true))], bare).await,
            target: Target::Layer,
        });
    }
    out.push(Contender {
        label: "+ cache, missing".into(),
        db: stacked(reg, &[("cache", cache_miss_settings())], bare).await,
        target: Target::Layer,
    });
    out.push(Contender {
        label: "+ whole default stack, cache missing".into(),
        db: stacked(reg, &default_stack(cache_miss_settings()), bare).await,
        target: Target::Stack,
    });
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

/// A cache hit (the warm row read once, then served by the cache) against
/// the bare provider's `get`, in rotating rounds.
async fn cache_hit(backend: &str, reg: &LayerRegistry, bare: &Arc<dyn Database>, plan: &Plan) {
    let rows: Vec<(&str, Built)> = vec![
        (
            "cache alone (defaults)",
            stacked(reg, &[("cache", json!(true))], bare).await,
        ),
        (
            "whole default stack",
            stacked(reg, &default_stack(json!(true)), bare).await,
        ),
    ];
    for (label, db) in rows {
        let db = match db {
            Ok(db) => db,
            Err(why) => {
                println!("| {backend} | cache hit: {label} | ({why}) | | | |");
                continue;
            }
        };
        time_gets(&*db, 10).await;
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
                    hit.push(per_get(&*db, batch).await);
                } else {
                    raw.push(per_get(&**bare, slow_batch).await);
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
    }
}

/// The answer time of an open breaker: a breaker over a layer that fails
/// every call, driven open, then timed; no call may reach the failing layer
/// while it is open.
async fn open_breaker(reg: &LayerRegistry, bare: &Arc<dyn Database>, plan: &Plan) {
    let failing = Arc::new(Failing::default());
    let below = around_database(Arc::clone(bare), Arc::clone(&failing));
    let settings = json!({
        "failure_ratio": 0.5,
        "min_calls": 5,
        "window_s": 60,
        "open_s": 3600,
    });
    let db = match stacked(reg, &[("circuit_breaker", settings)], &below).await {
        Ok(db) => db,
        Err(why) => {
            println!("| db-memory | open circuit_breaker: answer | ({why}) | | | |");
            return;
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
    println!(
        "| db-memory | open circuit_breaker: answer (`Unavailable`) | {} ({}-{}) | | | < 2 µs: {} |",
        fmt_ns(m),
        fmt_ns(quantile(&ns, 0.25)),
        fmt_ns(quantile(&ns, 0.75)),
        if m < 2000.0 { "met" } else { "**not met**" }
    );
}

fn schema() -> TableSchema {
    TableSchema::new(TABLE)
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::float("score"))
        .column(ColumnDef::text("status"))
}

async fn seed(db: &dyn Database) {
    db.create_table(&schema()).await.expect("create table");
    let rows: Vec<Row> = (1..=SEEDED)
        .map(|id| {
            let v = json!({
                "id": id,
                "name": format!("agent-{id}"),
                "score": (id % 100) as f64 + 0.5,
                "status": if id % 3 == 0 { "inactive" } else { "active" },
            });
            match v {
                Value::Object(m) => m,
                _ => unreachable!("rows are objects"),
            }
        })
        .collect();
    db.create_many(TABLE, rows).await.expect("seed");
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
    let plan = if smoke {
        Plan {
            rounds,
            memory_batch: 200,
            sqlite_batch: 20,
        }
    } else {
        Plan {
            rounds,
            memory_batch: 5_000,
            sqlite_batch: 200,
        }
    };
    let only = arg("--only");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let reg = registry();
        println!(
            "layers registered: {}; cache miss rows: {CACHE_MISS}; {} rounds{}",
            reg.names().join(", "),
            plan.rounds,
            if smoke { " (smoke run)" } else { "" }
        );
        println!();
        println!("| provider | row | ns per get (median) | extra per get | ratio to bare (IQR of rounds) | target |");
        println!("|---|---|---|---|---|---|");
        let memory: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
        seed(&*memory).await;
        if only.as_deref().is_none_or(|o| o == "memory") {
            let c = contenders(&reg, &memory).await;
            compare("db-memory", &c, plan.memory_batch, plan.rounds).await;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite: Arc<dyn Database> = Arc::new(
            SqliteDatabase::open(SqliteConfig::file(dir.path().join("bench.db")))
                .await
                .expect("open sqlite"),
        );
        seed(&*sqlite).await;
        if only.as_deref().is_none_or(|o| o == "sqlite") {
            let c = contenders(&reg, &sqlite).await;
            compare("db-sqlite (file)", &c, plan.sqlite_batch, plan.rounds).await;
        }
        println!();
        println!("| provider | row | ns per get (median) | reference | speed-up (IQR of rounds) | target |");
        println!("|---|---|---|---|---|---|");
        if only.as_deref().is_none_or(|o| o == "sqlite") {
            cache_hit("db-sqlite (file)", &reg, &sqlite, &plan).await;
        }
        if only.as_deref().is_none_or(|o| o == "memory") {
            cache_hit("db-memory", &reg, &memory, &plan).await;
        }
        open_breaker(&reg, &memory, &plan).await;
    });
}
