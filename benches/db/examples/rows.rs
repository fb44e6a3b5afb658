//! The multi-row paths of the db bench, one side at a time, for an
//! instruction count under callgrind (the shared build machine makes wall
//! time meaningless; an instruction count is not disturbed by other
//! processes):
//!
//! ```text
//! cargo build --release -p truststream-bench-db --example rows
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/rows.%p \
//!     target/release/examples/rows sqlite ts many 1
//! ```
//!
//! Arguments: the backend (`sqlite`: a WAL file in a temporary directory;
//! `postgres`: a scratch schema on `DATABASE_URL`, whose server's own
//! work is not counted, the same on both sides), the side (`ts`: the
//! provider's JSON rows, `ts-typed`: the provider's `read_as` into a serde
//! struct of the same four columns, read50 only; `raw`: raw sqlx with the
//! same SQL, [`truststream_bench_db`]),
//! the operation (`many`: `createMany` of [`BATCH`] rows; `read50`: the
//! filtered, ordered read of 50 rows) and how many times to run it.
//!
//! Setup (opening, seeding, one warm-up run of the operation so statement
//! caches are full, building every input) is the same whatever the count,
//! so the difference between the counts of two runs (`n` and `2n`) divided
//! by `n` is one operation, setup excluded. As in the bench, inputs are
//! built before the operation (JSON rows for the provider, typed tuples for
//! raw sqlx) and a `createMany`'s returned rows are not dropped inside it;
//! a read's rows are.

use std::hint::black_box;

use truststream_bench_db::{
    agent, input, postgres, read50_query, sql_for, sqlite, Agent, BatchSql, BATCH,
};
use truststream_core_db::sql::compile::SqlDialect;
use truststream_core_db::{Database, DatabaseExt, Row};

/// Most `createMany` batches a run may ask for (all inputs are built,
/// whatever the count, and the unused ones leaked: no count depends on n
/// but the operations').
const MAX_BATCHES: usize = 4;

/// What one run does with the provider or the raw pool of one backend.
enum Side<'a, P> {
    /// The provider's JSON rows (`read`, `create_many`).
    Ts(&'a dyn Database),
    /// The provider's typed rows (`read_as` into [`AgentRow`]).
    TsTyped(&'a dyn Database),
    Raw(&'a P),
}

fn side_of<'a, P>(ts: bool, typed: bool, db: &'a dyn Database, pool: &'a P) -> Side<'a, P> {
    match (ts, typed) {
        (true, false) => Side::Ts(db),
        (true, true) => Side::TsTyped(db),
        (false, _) => Side::Raw(pool),
    }
}

/// A bench row as the caller's own serde type: the columns of [`Agent`].
#[derive(serde::Deserialize)]
#[allow(dead_code)] // read for the decoding, not the values
struct AgentRow {
    id: i64,
    name: String,
    score: Option<f64>,
    status: Option<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend, side, op, n] = args.as_slice() else {
        eprintln!("usage: rows sqlite|postgres ts|ts-typed|raw many|read50 N");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N: a count");
    let (ts, typed) = match side.as_str() {
        "ts" => (true, false),
        "ts-typed" => (true, true),
        "raw" => (false, false),
        other => panic!("unknown side {other}"),
    };
    let many = match op.as_str() {
        "many" => true,
        "read50" => false,
        other => panic!("unknown operation {other}"),
    };
    assert!(!(typed && many), "ts-typed: read50 only");
    assert!(
        !many || n < MAX_BATCHES,
        "at most {} batches",
        MAX_BATCHES - 1
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match backend.as_str() {
            "sqlite" => {
                let dir = tempfile::tempdir().expect("temp dir");
                let (db, pool) = sqlite::open(&dir.path().join("rows.db")).await;
                let side = side_of(ts, typed, &db, &pool);
                let b = BatchSql::new(SqlDialect::Sqlite);
                let sql = sql_for(SqlDialect::Sqlite, "bench_raw");
                run(
                    side,
                    many,
                    n,
                    |p, rows| sqlite::create_many(p, &b, rows),
                    |p| sqlite::read50(p, &sql),
                )
                .await;
            }
            "postgres" => {
                let (db, pool, scratch) = postgres::open()
                    .await
                    .expect("a PostgreSQL server at DATABASE_URL");
                let side = side_of(ts, typed, &db, &pool);
                let b = BatchSql::new(SqlDialect::Postgres);
                let sql = sql_for(SqlDialect::Postgres, "bench_raw");
                run(
                    side,
                    many,
                    n,
                    |p, rows| postgres::create_many(p, &b, rows),
                    |p| postgres::read50(p, &sql),
                )
                .await;
                drop(db);
                scratch.cleanup().await.expect("drop the scratch schema");
            }
            other => panic!("unknown backend {other}"),
        }
    });
}

/// One warm-up run, then `n` measured runs of the operation on `side`.
async fn run<'a, P, M, MF, R, RF>(side: Side<'a, P>, many: bool, n: usize, raw_many: M, raw_read: R)
where
    M: Fn(&'a P, Vec<Agent>) -> MF,
    MF: std::future::Future<Output = Vec<Agent>>,
    R: Fn(&'a P) -> RF,
    RF: std::future::Future<Output = Vec<Agent>>,
{
    let start = |batch: usize| 10_000_000 + (batch * BATCH) as i64;
    if many {
        match side {
            Side::Ts(db) => {
                let mut inputs: Vec<Vec<Row>> = (0..MAX_BATCHES)
                    .map(|k| (0..BATCH as i64).map(|i| input(start(k) + i)).collect())
                    .collect();
                let mut kept = Vec::new();
                for rows in inputs.drain(..=n) {
                    let created = db.create_many("bench_ts", rows).await.expect("createMany");
                    assert_eq!(created.len(), BATCH);
                    kept.push(created);
                }
                std::mem::forget((inputs, kept));
            }
            Side::TsTyped(_) => unreachable!("ts-typed: read50 only"),
            Side::Raw(pool) => {
                let mut inputs: Vec<Vec<Agent>> = (0..MAX_BATCHES)
                    .map(|k| (0..BATCH as i64).map(|i| agent(start(k) + i)).collect())
                    .collect();
                let mut kept = Vec::new();
                for rows in inputs.drain(..=n) {
                    let created = raw_many(pool, rows).await;
                    assert_eq!(created.len(), BATCH);
                    kept.push(created);
                }
                std::mem::forget((inputs, kept));
            }
        }
    } else {
        let q = read50_query();
        for _ in 0..=n {
            match &side {
                Side::Ts(db) => {
                    let rows = db.read("bench_ts", &q).await.expect("read");
                    assert_eq!(rows.len(), 50);
                    black_box(rows);
                }
                Side::TsTyped(db) => {
                    let rows: Vec<AgentRow> = db.read_as("bench_ts", &q).await.expect("read");
                    assert_eq!(rows.len(), 50);
                    black_box(rows);
                }
                Side::Raw(pool) => {
                    black_box(raw_read(pool).await);
                }
            }
        }
    }
}
