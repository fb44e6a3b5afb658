//! db-postgres in transaction-pooler mode vs raw sqlx, both through the same
//! private pgbouncer (transaction mode, 4 server connections) in front of
//! the server at `DATABASE_URL` (default 127.0.0.1:5432/test).
//!
//! ```text
//! cargo bench -p truststream-bench-pooler [-- --iters 4000]
//! ```
//!
//! Single-row operations, one task: insert one row and get one row by
//! primary key. The raw side does what a hand-written sqlx application
//! must do through such a pooler: a pool with the statement cache off,
//! each operation in its own transaction started with the same
//! `BEGIN; SET LOCAL ...` statement, the query unnamed
//! (`persistent(false)`) with the SQL text the provider's compiler makes,
//! then `COMMIT` (an insert) or dropping the transaction (a get: the
//! `ROLLBACK` is sent as the connection returns to the pool, as the
//! provider does). Both pools have the same size and settings. Rounds
//! alternate between the sides so drift hits both alike. Output: ops/s per
//! side and the ratio TrustStream / raw.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use truststream_core::Secret;
use truststream_core_db::sql::compile::{self, SqlDialect};
use truststream_core_db::{col, ColumnDef, Database, Query, Row, TableSchema};
use truststream_db_postgres::testing::{self, PgBouncer, Scratch};
use truststream_db_postgres::{PgDatabase, Pooler};

const ROUNDS: usize = 6;

fn row(v: Value) -> Row {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("rows are objects"),
    }
}

fn schema(name: &str) -> TableSchema {
    TableSchema::new(name)
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::float("score"))
}

fn input(id: i64) -> Row {
    row(json!({"id": id, "name": format!("agent-{id}"), "score": (id % 100) as f64 + 0.5}))
}

#[derive(Default)]
struct Pair {
    ts: Duration,
    raw: Duration,
    /// Operations per side.
    n: u64,
}

impl Pair {
    fn line(&self, op: &str) -> String {
        let ts = self.n as f64 / self.ts.as_secs_f64();
        let raw = self.n as f64 / self.raw.as_secs_f64();
        format!("| {op} | {ts:.0} | {raw:.0} | {:.2}x |", ts / raw)
    }
}

async fn raw_begin(pool: &PgPool, begin: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    pool.begin_with(begin.to_string()).await.expect("BEGIN")
}

fn main() {
    let iters: usize = std::env::args()
        .skip_while(|a| a != "--iters")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(iters));
}

async fn run(iters: usize) {
    let Some(url) = testing::server().await else {
        return;
    };
    let target = url.clone();
    let Some(bouncer) = tokio::task::spawn_blocking(move || PgBouncer::start(&target, 4))
        .await
        .expect("start pgbouncer")
    else {
        return;
    };
    let scratch = Scratch::new(url);
    let mut cfg = scratch
        .config("bench_pool")
        .with_pooler(Pooler::Transaction);
    cfg.url = Secret::new(bouncer.url());
    let schema_name = cfg.schema.clone().expect("a scratch schema");
    let db = Arc::new(
        PgDatabase::open(cfg.clone())
            .await
            .expect("open through pgbouncer"),
    );
    for t in ["bench_ts", "bench_raw"] {
        db.create_table(&schema(t)).await.expect("create table");
    }

    // The raw side: the provider's pool settings, its BEGIN statement.
    let opts: PgConnectOptions = bouncer.url().parse().expect("url");
    let raw = PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .test_before_acquire(true)
        .connect_with(
            opts.statement_cache_capacity(0)
                .extra_float_digits(None)
                .application_name("truststream"),
        )
        .await
        .expect("raw pool");
    let begin = format!(
        "BEGIN; SET LOCAL standard_conforming_strings = on; SET LOCAL search_path TO \"{schema_name}\"; \
         SET LOCAL statement_timeout = {}",
        cfg.statement_timeout_ms.unwrap_or(0)
    );
    let cat: HashMap<String, TableSchema> = [("bench_raw".to_string(), schema("bench_raw"))].into();
    let insert_sql = compile::insert(SqlDialect::Postgres, &cat, "bench_raw", &[input(1)])
        .expect("insert sql")
        .sql;
    let select_sql = compile::select(
        SqlDialect::Postgres,
        &cat,
        "bench_raw",
        &Query::new().filter(col("id").eq(1)).limit(1),
    )
    .expect("select sql")
    .statement
    .sql;

    let per_round = (iters / ROUNDS).max(1);
    let (mut insert, mut get) = (Pair::default(), Pair::default());
    let (mut next_ts, mut next_raw) = (0i64, 0i64);
    for round in 0..ROUNDS {
        let ts_first = round % 2 == 0;
        for ts_side in [ts_first, !ts_first] {
            let t = Instant::now();
            for _ in 0..per_round {
                if ts_side {
                    next_ts += 1;
                    db.create("bench_ts", input(next_ts)).await.expect("insert");
                } else {
                    next_raw += 1;
                    let r = input(next_raw);
                    let mut tx = raw_begin(&raw, &begin).await;
                    sqlx::query(&insert_sql)
                        .bind(next_raw)
                        .bind(r["name"].as_str().expect("name").to_string())
                        .bind(r["score"].as_f64())
                        .persistent(false)
                        .fetch_optional(&mut *tx)
                        .await
                        .expect("raw insert");
                    tx.commit().await.expect("COMMIT");
                }
            }
            if ts_side {
                insert.ts += t.elapsed();
            } else {
                insert.raw += t.elapsed();
            }
        }
        insert.n += per_round as u64;
        for ts_side in [ts_first, !ts_first] {
            let t = Instant::now();
            for i in 0..per_round {
                let id = 1 + (i as i64 % next_ts.min(next_raw).max(1));
                if ts_side {
                    db.get("bench_ts", &json!(id))
                        .await
                        .expect("get")
                        .expect("a row");
                } else {
                    let mut tx = raw_begin(&raw, &begin).await;
                    sqlx::query(&select_sql)
                        .bind(id)
                        .persistent(false)
                        .fetch_optional(&mut *tx)
                        .await
                        .expect("raw get")
                        .expect("a row");
                    // As the provider does after a read: dropped, the
                    // ROLLBACK goes out as the connection returns to the
                    // pool (off the caller's path).
                    drop(tx);
                }
            }
            if ts_side {
                get.ts += t.elapsed();
            } else {
                get.raw += t.elapsed();
            }
        }
        get.n += per_round as u64;
    }
    println!("| operation (through pgbouncer, transaction mode) | TrustStream ops/s | raw sqlx ops/s | ratio |");
    println!("|---|---|---|---|");
    println!("{}", insert.line("insert one row"));
    println!("{}", get.line("get by primary key"));
    raw.close().await;
    drop(db);
    scratch.cleanup().await.expect("drop the scratch schema");
}
