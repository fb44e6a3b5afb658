//! TrustStream's SQL providers vs raw sqlx, same SQL, same server, one run.
//!
//! ```text
//! cargo bench -p truststream-bench-db [-- --iters 2000 --only sqlite|postgres]
//! ```
//!
//! For each backend (SQLite: a WAL file in a temporary directory; PostgreSQL:
//! a scratch schema on `DATABASE_URL`, default 127.0.0.1:5432/test) the
//! bench creates two identical tables, one written through the provider and
//! one through a raw sqlx pool with the same settings, and times the same
//! operations on both with the SQL text the provider's compiler produces:
//! insert one row, select by primary key, update by key, a filtered and
//! ordered read of 50 rows, a two-operation transaction, and createMany of
//! 10,000 rows (also against inserting the same rows one by one through the
//! provider). Rounds alternate between the two sides so drift (caches,
//! checkpoints, other load) hits both alike. Output: ops/s per side and the
//! ratio TrustStream / raw.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use truststream_bench_db::{
    agent, agent_of, input, postgres, read50_query, row, sql_for, sqlite, Agent, BatchSql, BATCH,
};
use truststream_core_db::sql::compile::SqlDialect;
use truststream_core_db::{Database, DatabaseExt, Operation, Row};

const ROUNDS: usize = 5;

/// A bench row as the caller's own serde type (the columns of [`Agent`]),
/// for the typed read (`read_as`).
#[derive(serde::Deserialize)]
#[allow(dead_code)] // read for the decoding, not the values
struct AgentRow {
    id: i64,
    name: String,
    score: Option<f64>,
    status: Option<String>,
}

/// Timings of one operation on both sides.
#[derive(Default)]
struct Pair {
    ts: Duration,
    raw: Duration,
    n_ts: u64,
    n_raw: u64,
}

impl Pair {
    fn ops(d: Duration, n: u64) -> f64 {
        n as f64 / d.as_secs_f64()
    }
    fn line(&self, backend: &str, op: &str) -> String {
        let ts = Self::ops(self.ts, self.n_ts);
        let raw = Self::ops(self.raw, self.n_raw);
        format!(
            "| {backend} | {op} | {ts:.0} | {raw:.0} | {:.2}x |",
            ts / raw
        )
    }
}

macro_rules! timed {
    ($acc:expr, $n:expr, $body:expr) => {{
        let t = Instant::now();
        $body;
        $acc += t.elapsed();
        $n
    }};
}

/// Runs `iters` of each single-row operation, alternating sides by round.
/// Each side builds its input inside the timed loop in its own form (a
/// JSON row for the provider, a typed tuple for raw sqlx), runs the same
/// statements (the transaction's update is the `score` update of
/// [`sql_for`] on both) and decodes every returned row.
// One closure per raw operation keeps each side's code next to the other's.
#[allow(clippy::too_many_arguments)]
async fn single_row_ops<RawInsert, RawSelect, RawUpdate, RawRead, RawTx, F1, F2, F3, F4, F5>(
    backend: &str,
    db: &dyn Database,
    iters: usize,
    raw_insert: RawInsert,
    raw_select: RawSelect,
    raw_update: RawUpdate,
    raw_read: RawRead,
    raw_tx: RawTx,
) -> Vec<String>
where
    RawInsert: Fn(i64) -> F1,
    RawSelect: Fn(i64) -> F2,
    RawUpdate: Fn(i64) -> F3,
    RawRead: Fn() -> F4,
    RawTx: Fn(i64) -> F5,
    F1: std::future::Future<Output = ()>,
    F2: std::future::Future<Output = ()>,
    F3: std::future::Future<Output = ()>,
    F4: std::future::Future<Output = ()>,
    F5: std::future::Future<Output = ()>,
{
    let per_round = (iters / ROUNDS).max(1);
    let mut insert = Pair::default();
    let mut select = Pair::default();
    let mut update = Pair::default();
    let mut read = Pair::default();
    let mut read_typed = Pair::default();
    let mut tx = Pair::default();
    let mut next_ts = 1_000_000i64;
    let mut next_raw = 1_000_000i64;
    for round in 0..ROUNDS {
        // Insert.
        let ts_first = round % 2 == 0;
        for side in [ts_first, !ts_first] {
            if side {
                insert.n_ts += timed!(insert.ts, per_round as u64, {
                    for _ in 0..per_round {
                        next_ts += 1;
                        db.create("bench_ts", input(next_ts)).await.unwrap();
                    }
                });
            } else {
                insert.n_raw += timed!(insert.raw, per_round as u64, {
                    for _ in 0..per_round {
                        next_raw += 1;
                        raw_insert(next_raw).await;
                    }
                });
            }
        }
        // Select by key, update by key (keys that exist: 1..=seeded).
        for side in [ts_first, !ts_first] {
            if side {
                select.n_ts += timed!(select.ts, per_round as u64, {
                    for i in 0..per_round {
                        let id = 1 + (i as i64 % 1000);
                        db.get("bench_ts", &json!(id)).await.unwrap().unwrap();
                    }
                });
                update.n_ts += timed!(update.ts, per_round as u64, {
                    for i in 0..per_round {
                        let id = 1 + (i as i64 % 1000);
                        db.update("bench_ts", &json!(id), row(json!({"score": i as f64})))
                            .await
                            .unwrap();
                    }
                });
            } else {
                select.n_raw += timed!(select.raw, per_round as u64, {
                    for i in 0..per_round {
                        raw_select(1 + (i as i64 % 1000)).await;
                    }
                });
                update.n_raw += timed!(update.raw, per_round as u64, {
                    for i in 0..per_round {
                        raw_update(1 + (i as i64 % 1000)).await;
                    }
                });
            }
        }
        // Filtered, ordered read of 50 rows.
        let reads = (per_round / 4).max(1);
        let q = read50_query();
        for side in [ts_first, !ts_first] {
            if side {
                read.n_ts += timed!(read.ts, reads as u64, {
                    for _ in 0..reads {
                        let rows = db.read("bench_ts", &q).await.unwrap();
                        assert_eq!(rows.len(), 50);
                    }
                });
            } else {
                read.n_raw += timed!(read.raw, reads as u64, {
                    for _ in 0..reads {
                        raw_read().await;
                    }
                });
            }
        }
        // The same read into the caller's type (`read_as`): what the raw
        // side does with its rows.
        for side in [ts_first, !ts_first] {
            if side {
                read_typed.n_ts += timed!(read_typed.ts, reads as u64, {
                    for _ in 0..reads {
                        let rows: Vec<AgentRow> = db.read_as("bench_ts", &q).await.unwrap();
                        assert_eq!(rows.len(), 50);
                    }
                });
            } else {
                read_typed.n_raw += timed!(read_typed.raw, reads as u64, {
                    for _ in 0..reads {
                        raw_read().await;
                    }
                });
            }
        }
        // Two-operation transaction: insert a row, update another.
        let txs = (per_round / 2).max(1);
        for side in [ts_first, !ts_first] {
            if side {
                tx.n_ts += timed!(tx.ts, txs as u64, {
                    for i in 0..txs {
                        next_ts += 1;
                        db.transaction(vec![
                            Operation::Create {
                                table: "bench_ts".into(),
                                data: input(next_ts),
                            },
                            Operation::Update {
                                table: "bench_ts".into(),
                                id: json!(1 + (i as i64 % 1000)),
                                data: row(json!({"score": 1.0})),
                            },
                        ])
                        .await
                        .unwrap();
                    }
                });
            } else {
                tx.n_raw += timed!(tx.raw, txs as u64, {
                    for _ in 0..txs {
                        next_raw += 1;
                        raw_tx(next_raw).await;
                    }
                });
            }
        }
    }
    vec![
        insert.line(backend, "insert one row"),
        select.line(backend, "select by primary key"),
        update.line(backend, "update by primary key"),
        read.line(backend, "filtered + ordered read, 50 rows"),
        read_typed.line(backend, "same read, typed (`read_as`)"),
        tx.line(backend, "transaction: insert + update"),
    ]
}

/// createMany of 10,000 rows through the provider vs the same rows one by
/// one through the provider vs raw sqlx multi-row INSERTs in a transaction.
/// Each side gets its input built before the clock starts (JSON rows for
/// the provider, typed tuples for raw sqlx) and decodes every returned row
/// (JSON rows, typed tuples).
async fn batch_ops<RawBatch, F>(
    backend: &str,
    db: &dyn Database,
    raw_batch: RawBatch,
) -> Vec<String>
where
    RawBatch: Fn(Vec<Agent>) -> F,
    F: std::future::Future<Output = Vec<Agent>>,
{
    // Rounds alternate which side goes first; each side's median round
    // counts (a WAL checkpoint or an fsync landing in one round moves a
    // single 10,000-row batch a lot).
    const BATCH_ROUNDS: usize = 7;
    let mut many = Vec::new();
    let mut raw = Vec::new();
    let mut start = 10_000_000i64;
    for round in 0..BATCH_ROUNDS {
        for ts_side in [round % 2 == 0, round % 2 != 0] {
            if ts_side {
                let rows: Vec<Row> = (0..BATCH as i64).map(|i| input(start + i)).collect();
                let t = Instant::now();
                let created = db.create_many("bench_ts", rows).await.unwrap();
                many.push(t.elapsed());
                assert_eq!(created.len(), BATCH);
            } else {
                let rows: Vec<Agent> = (0..BATCH as i64).map(|i| agent(start + i)).collect();
                let t = Instant::now();
                let created = raw_batch(rows).await;
                raw.push(t.elapsed());
                assert_eq!(created.len(), BATCH);
            }
        }
        start += BATCH as i64;
    }
    // One by one: the same 10,000 rows, once (it is the slow side).
    let t = Instant::now();
    for i in 0..BATCH as i64 {
        db.create("bench_ts", input(start + i)).await.unwrap();
    }
    let one_by_one = t.elapsed();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let rows_per_s = |d: Duration, n: usize| n as f64 / d.as_secs_f64();
    let many_rps = rows_per_s(median(many), BATCH);
    let raw_rps = rows_per_s(median(raw), BATCH);
    let single_rps = rows_per_s(one_by_one, BATCH);
    vec![
        format!(
            "| {backend} | createMany 10,000 rows (rows/s) | {many_rps:.0} | {raw_rps:.0} | {:.2}x |",
            many_rps / raw_rps
        ),
        format!(
            "| {backend} | createMany vs 10,000 single creates (rows/s) | {many_rps:.0} | {single_rps:.0} (one by one) | {:.1}x faster |",
            many_rps / single_rps
        ),
    ]
}

async fn bench_sqlite(iters: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (db, pool) = sqlite::open(&dir.path().join("bench.db")).await;
    let sql = Arc::new(sql_for(SqlDialect::Sqlite, "bench_raw"));
    let batch_sql = Arc::new(BatchSql::new(SqlDialect::Sqlite));
    let (p, s) = (pool.clone(), sql.clone());
    let raw_insert = move |id: i64| {
        let (p, s) = (p.clone(), s.clone());
        async move {
            let (id, name, score, status) = agent(id);
            let row = sqlx::query(&s.insert)
                .bind(id)
                .bind(name)
                .bind(score)
                .bind(status)
                .fetch_one(&p)
                .await
                .unwrap();
            std::hint::black_box(agent_of(&row));
        }
    };
    let (p, s) = (pool.clone(), sql.clone());
    let raw_select = move |id: i64| {
        let (p, s) = (p.clone(), s.clone());
        async move {
            let r = sqlx::query(&s.select).bind(id).fetch_one(&p).await.unwrap();
            std::hint::black_box(agent_of(&r));
        }
    };
    let (p, s) = (pool.clone(), sql.clone());
    let raw_update = move |id: i64| {
        let (p, s) = (p.clone(), s.clone());
        async move {
            let row = sqlx::query(&s.update)
                .bind(id as f64)
                .bind(id)
                .fetch_one(&p)
                .await
                .unwrap();
            std::hint::black_box(agent_of(&row));
        }
    };
    let (p, s) = (pool.clone(), sql.clone());
    let raw_read = move || {
        let (p, s) = (p.clone(), s.clone());
        async move {
            std::hint::black_box(sqlite::read50(&p, &s).await);
        }
    };
    let (p, s) = (pool.clone(), sql.clone());
    let raw_tx = move |id: i64| {
        let (p, s) = (p.clone(), s.clone());
        async move {
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await.unwrap();
            let (id, name, score, status) = agent(id);
            let row = sqlx::query(&s.insert)
                .bind(id)
                .bind(name)
                .bind(score)
                .bind(status)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            std::hint::black_box(agent_of(&row));
            let row = sqlx::query(&s.update)
                .bind(1.0f64)
                .bind(1 + id % 1000)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            std::hint::black_box(agent_of(&row));
            tx.commit().await.unwrap();
        }
    };
    let mut out = single_row_ops(
        "SQLite (WAL file)",
        &db,
        iters,
        raw_insert,
        raw_select,
        raw_update,
        raw_read,
        raw_tx,
    )
    .await;
    let p = pool.clone();
    let raw_batch = move |rows: Vec<Agent>| {
        let (p, b) = (p.clone(), batch_sql.clone());
        async move { sqlite::create_many(&p, &b, rows).await }
    };
    out.extend(batch_ops("SQLite (WAL file)", &db, raw_batch).await);
    out
}

async fn bench_postgres(iters: usize) -> Option<Vec<String>> {
    let (db, pool, scratch) = postgres::open().await?;
    let sql = Arc::new(sql_for(SqlDialect::Postgres, "bench_raw"));
    let batch_sql = Arc::new(BatchSql::new(SqlDialect::Postgres));
    let (p, s) = (pool.clone(), sql.clone());
    let raw_insert = move |id: i64| {
        let (p, s) = (p.clone(), s.clone());
        async move {
            let (id, name, score, status) = agent(id);
            let row = sqlx::query(&s.insert)
                .bind(id)
                .bind(name)
                .bind(score)
                .bind(status)
                .fetch_one(&p)
                .await
                .unwrap();
            std::hint::black_box(agent_of(&row));
        }
    };
    let (p, s) = (pool.clone(), sql.clone());
    let raw_select = move |id: i64| {
        let (p, s) = (p.clone(), s.clone());
        async move {
            let r = sqlx::query(&s.select).bind(id).fetch_one(&p).await.unwrap();
            std::hint::black_box(agent_of(&r));
        }
    };
    let (p, s) = (pool.clone(), sql.clone());
    let raw_update = move |id: i64| {
        let (p, s) = (p.clone(), s.clone());
        async move {
            let row = sqlx::query(&s.update)
                .bind(id as f64)
                .bind(id)
                .fetch_one(&p)
                .await
                .unwrap();
            std::hint::black_box(agent_of(&row));
        }
    };
    let (p, s) = (pool.clone(), sql.clone());
    let raw_read = move || {
        let (p, s) = (p.clone(), s.clone());
        async move {
            std::hint::black_box(postgres::read50(&p, &s).await);
        }
    };
    let (p, s) = (pool.clone(), sql.clone());
    let raw_tx = move |id: i64| {
        let (p, s) = (p.clone(), s.clone());
        async move {
            let mut tx = p.begin().await.unwrap();
            let (id, name, score, status) = agent(id);
            let row = sqlx::query(&s.insert)
                .bind(id)
                .bind(name)
                .bind(score)
                .bind(status)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            std::hint::black_box(agent_of(&row));
            let row = sqlx::query(&s.update)
                .bind(1.0f64)
                .bind(1 + id % 1000)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            std::hint::black_box(agent_of(&row));
            tx.commit().await.unwrap();
        }
    };
    let mut out = single_row_ops(
        "PostgreSQL 15 (loopback)",
        &db,
        iters,
        raw_insert,
        raw_select,
        raw_update,
        raw_read,
        raw_tx,
    )
    .await;
    let p = pool.clone();
    let raw_batch = move |rows: Vec<Agent>| {
        let (p, b) = (p.clone(), batch_sql.clone());
        async move { postgres::create_many(&p, &b, rows).await }
    };
    out.extend(batch_ops("PostgreSQL 15 (loopback)", &db, raw_batch).await);
    drop(db);
    pool.close().await;
    scratch.cleanup().await.unwrap();
    Some(out)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let iters: usize = arg("--iters").and_then(|s| s.parse().ok()).unwrap_or(2000);
    let only = arg("--only");
    let mut lines = vec![
        "| backend | operation | TrustStream ops/s | raw sqlx ops/s | TrustStream / raw |"
            .to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    if only.as_deref().is_none_or(|o| o == "sqlite") {
        lines.extend(bench_sqlite(iters).await);
    }
    if only.as_deref().is_none_or(|o| o == "postgres") {
        match bench_postgres(iters).await {
            Some(l) => lines.extend(l),
            None => lines.push("| PostgreSQL | (server not reachable: skipped) | | | |".into()),
        }
    }
    println!("{}", lines.join("\n"));
}
