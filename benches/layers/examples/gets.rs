//! `n` gets through one configuration, for an instruction count under
//! callgrind (the shared build machine makes wall time meaningless, an
//! instruction count is not disturbed by other processes):
//!
//! ```text
//! cargo build --release -p truststream-bench-layers --example gets
//! valgrind --tool=callgrind target/release/examples/gets memory cache 20000
//! ```
//!
//! Arguments: the provider (`memory` or `sqlite`), the row (`bare`,
//! `cache` — the cache's defaults, every key read once —, `cache-store`
//! — the same storing every miss (`admission = "first_miss"`) —,
//! `cache-twice` — the defaults, every key read twice, counted as two
//! gets —, `cache-off` — a table
//! the cache does not cache —, `stack` — the whole default stack, every
//! key read once —, `hit` — one key read again and again through the
//! cache), and the number of gets. The provider is seeded with
//! [`ROWS`] rows ([`SQLITE_ROWS`]) whatever `n` is, so the difference between the counts of
//! two runs (`n` and `2n` gets) divided by `n` is the count of one `get`,
//! setup excluded.

use std::hint::black_box;
use std::sync::Arc;

use serde_json::{json, Value};
use truststream_bench_layers::{seed, DEFAULT_STACK, TABLE};
use truststream_core_db::Database;
use truststream_db_memory::MemoryDatabase;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_layer::{Interface, LayerDeps, LayerRegistry};

/// Rows seeded in db-memory, whatever the number of gets.
const ROWS: i64 = 50_000;

/// Rows seeded in db-sqlite (as the bench: the file fits SQLite's page
/// cache; a smaller seed also leaves less of the setup's variation in the
/// counts).
const SQLITE_ROWS: i64 = 10_000;

/// `inner` under `layers`, built through the registry as the runtime does.
async fn stacked(layers: &[(&str, Value)], inner: Arc<dyn Database>) -> Arc<dyn Database> {
    let mut reg = LayerRegistry::new();
    truststream_layer_resilience::register(&mut reg);
    truststream_layer_metrics::register(&mut reg);
    truststream_layer_cache::register(&mut reg);
    let config: serde_json::Map<String, Value> = layers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    reg.stack(Interface::Database, &config, &LayerDeps::default())
        .expect("bench configuration")
        .wrap_database(inner)
        .await
        .expect("wrap")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (provider, row, n, multi) = match args.as_slice() {
        [p, r, n] => (p, r, n, false),
        [p, r, n, m] if m == "multi" => (p, r, n, true),
        _ => {
            eprintln!(
                "usage: gets memory|sqlite bare|cache|cache-store|cache-twice|cache-off|stack|hit|layer:NAME N [multi]"
            );
            std::process::exit(2);
        }
    };
    let n: i64 = n.parse().expect("N: a number of gets");
    let rows = if provider == "sqlite" {
        SQLITE_ROWS
    } else {
        ROWS
    };
    assert!(n <= rows - 100, "at most {} gets", rows - 100);
    let rt = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build()
    .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let bare: Arc<dyn Database> = match provider.as_str() {
            "memory" => Arc::new(MemoryDatabase::new()),
            "sqlite" => Arc::new(
                SqliteDatabase::open(SqliteConfig::file(dir.path().join("bench.db")))
                    .await
                    .expect("open sqlite"),
            ),
            other => panic!("unknown provider {other}"),
        };
        seed(&*bare, rows as usize).await;
        let stack = DEFAULT_STACK.map(|l| (l, json!(true)));
        let db = match row.as_str() {
            "bare" => bare,
            "cache" | "cache-twice" | "hit" => stacked(&[("cache", json!(true))], bare).await,
            "cache-store" => stacked(&[("cache", json!({"admission": "first_miss"}))], bare).await,
            "cache-off" => stacked(&[("cache", json!({"tables": {TABLE: 0}}))], bare).await,
            "stack" => stacked(&stack, bare).await,
            other if other.starts_with("layer:") => {
                stacked(&[(&other["layer:".len()..], json!(true))], bare).await
            }
            other => panic!("unknown row {other}"),
        };
        let ids: Vec<Value> = (1..=rows).map(|i| json!(i)).collect();
        // Warm up on the last keys (never read by the measured gets).
        for id in &ids[ids.len() - 100..] {
            black_box(db.get(TABLE, id).await.expect("get"));
        }
        let (keys, times) = match row.as_str() {
            "cache-twice" => (n / 2, 2),
            "hit" => (1, n),
            _ => (n, 1),
        };
        for id in &ids[..keys as usize] {
            for _ in 0..times {
                let got = db.get(TABLE, black_box(id)).await.expect("get");
                black_box(got.expect("the row exists"));
            }
        }
    });
}
