//! jobs-postgres against apalis-postgres on one PostgreSQL server.
//!
//! ```text
//! cargo bench -p truststream-bench-jobs --bench jobs [-- --smoke]
//! cargo bench -p truststream-bench-jobs --bench jobs -- --jobs 20000 --rounds 5 --pings 200
//! ```
//!
//! The default run takes a few minutes on 2 cores and reports each step on
//! stderr; the table (with a ratio per row) goes to stdout. `--jobs N`
//! (jobs per round, default 10,000), `--rounds N` (default 3), `--singles N`
//! (jobs enqueued one at a time per round, default 500) and `--pings N`
//! (default 200) make longer runs; `--only procs` runs the multi-process
//! rows alone (`procs-ts` or `procs-apalis`: one side's, to profile it).
//!
//! The bench makes a database of its own on the server at `DATABASE_URL`
//! (apalis keeps its tables in a fixed `apalis` schema), runs both sides in
//! it with the server's default durability (`synchronous_commit` on, each
//! enqueue, claim and completion committed), each side with one pool of 10
//! connections plus one `LISTEN` connection, and drops it at the end.
//!
//! Each round, per side (rounds alternate which side goes first, and each
//! starts on an empty table):
//!
//! - **enqueue, single**: `SINGLES` jobs enqueued one at a time, each
//!   awaited (TrustStream `Jobs::enqueue`, apalis `TaskSink::push`).
//! - **enqueue, batched**: the other `JOBS - SINGLES` jobs in batches of
//!   1,000 (TrustStream `Jobs::enqueue_many`, apalis `TaskSink::push_all`
//!   of 1,000 tasks, which apalis writes as one multi-row `INSERT`).
//! - **no-op jobs/s**: the `JOBS` jobs just enqueued, worked by one worker
//!   with `CONCURRENCY` jobs at a time (TrustStream: `Worker` as configured
//!   by default, claiming the free slots once a quarter of them are free;
//!   apalis: `WorkerBuilder` with `concurrency` and its default
//!   `batch_size` of 10); the time from the worker's start to the last
//!   handler's start, the same on both sides. A second, labelled apalis
//!   row sets `batch_size` to `CONCURRENCY` (a tuned configuration, not the
//!   default); its enqueue figures are not reported (the same calls).
//!
//! - **no-op jobs/s, `PROCS` worker processes**: the same `JOBS` jobs
//!   (enqueued in batches, untimed) worked by `PROCS` child processes of
//!   this binary (`--child ts|apalis URL`), each one worker as above with
//!   its own pool and `LISTEN` connection; started together once each has
//!   connected, timed until the table holds `JOBS` completed jobs
//!   (TrustStream state `completed`, apalis status `Done`; polled every
//!   20 ms by the parent, the same query shape on both sides).
//!
//! By default nothing analyzes the tables: the server the bench is run on
//! has autovacuum off, so the tables have no planner statistics, as a new
//! queue or a burst before autovacuum's next pass would. `--analyze` runs
//! an untimed `VACUUM ANALYZE` on each side's table between its enqueue and
//! its worker (a flattering mode: fresh statistics and no dead rows).
//!
//! Then **enqueue-to-start on an idle queue**: a running, idle worker
//! (woken by `LISTEN/NOTIFY` on both sides, polling once a second
//! otherwise); `PINGS` single jobs enqueued 20 ms apart; each handler
//! measures the time since its job's enqueue began. p50 and p99.
//!
//! apalis' SQLite backend is in `benches/jobs_sqlite.rs`.
//!
//! `--smoke` (and `cargo test --benches`, which does not pass `--bench`)
//! runs a few jobs once per side to check that the bench works; its
//! figures mean nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_postgres::{Config as ApalisConfig, PostgresStorage, Pubsub};
use sqlx::Connection;
use truststream_bench_jobs::{
    child_args, epoch, ms, print_rows, progress, say_ready, since_epoch, stdin_line, ts_child,
    ts_enqueue, ts_fill, ts_latency, ts_work, Children, Ping, ProcsRows, Round, Settings, Side,
    Tally, CONCURRENCY, PROCS,
};
use truststream_core_jobs::Jobs;
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

/// The URL of database `name` on the server of `url`.
fn with_database(url: &str, name: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    match base.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
        _ => format!("{base}/{name}"),
    }
}

// ---------------------------------------------------------------- TrustStream

/// What autovacuum would do after the enqueue burst (the server the bench
/// is run on has autovacuum off): fresh planner statistics and no dead rows
/// from the previous round. Untimed, the same on both sides.
async fn vacuum_analyze(cleaner: &mut sqlx::PgConnection, table: &str, s: &Settings) {
    if s.analyze {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(cleaner)
            .await
            .expect("vacuum analyze");
    }
}

async fn ts_round(
    jobs: &Arc<PgJobs>,
    cleaner: &mut sqlx::PgConnection,
    tally: &Arc<Tally>,
    s: &Settings,
) -> Round {
    let (single, batched) = ts_enqueue(&**jobs, s).await;
    vacuum_analyze(cleaner, &format!("\"{}\"", jobs.table()), s).await;
    let worked = ts_work(&(jobs.clone() as Arc<dyn Jobs>), tally, s.jobs).await;
    Round {
        single,
        batched,
        worked,
    }
}

// --------------------------------------------------------------------- apalis

async fn noop(p: Ping, tally: Data<Arc<Tally>>, wrk: WorkerContext) -> Result<(), BoxDynError> {
    if tally.start(p) {
        wrk.stop()?;
    }
    Ok(())
}

/// The queue: one name, claims in batches of `batch` (apalis' default is
/// [`APALIS_DEFAULT_BATCH`]).
fn apalis_storage(pool: &apalis_postgres::PgPool, batch: usize) -> PostgresStorage<Ping> {
    let config = ApalisConfig::default().queue("noop").batch_size(batch);
    PostgresStorage::new(pool).with_config(config)
}

/// apalis-postgres' default `batch_size` (`Config::default()`).
const APALIS_DEFAULT_BATCH: usize = 10;

/// The worker's side of the queue: woken by `LISTEN/NOTIFY`.
fn apalis_listening(
    pool: &apalis_postgres::PgPool,
    batch: usize,
) -> PollWith<PostgresStorage<Ping>, StreamStrategy<Pubsub>> {
    apalis_storage(pool, batch).with_pubsub()
}

async fn apalis_run(pool: &apalis_postgres::PgPool, tally: &Arc<Tally>, batch: usize) {
    // A name per run: apalis holds each worker name with an advisory lock
    // on the pool connection that registered it, so a name is not reusable
    // from another connection of the pool.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let name = format!("apalis-bench-{}", RUNS.fetch_add(1, Ordering::SeqCst));
    let worker = WorkerBuilder::new(name)
        .backend(apalis_listening(pool, batch))
        .data(tally.clone())
        .concurrency(CONCURRENCY)
        .parallelize(tokio::spawn)
        .build(noop);
    worker.run().await.expect("the apalis worker runs");
}

/// `cleaner` (a connection to the bench database with the bench's sqlx;
/// apalis brings another) empties apalis' table after the round.
async fn apalis_round(
    pool: &apalis_postgres::PgPool,
    cleaner: &mut sqlx::PgConnection,
    tally: &Arc<Tally>,
    s: &Settings,
    batch: usize,
) -> Round {
    let n = s.jobs;
    tally.reset(n);
    let mut storage = apalis_storage(pool, batch);
    let start = Instant::now();
    for _ in 0..s.singles {
        storage
            .push(Ping { t: since_epoch() })
            .await
            .expect("apalis push");
    }
    let single = s.singles as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    apalis_fill(&mut storage, n - s.singles).await;
    let batched = (n - s.singles) as f64 / start.elapsed().as_secs_f64();
    vacuum_analyze(cleaner, "apalis.jobs", s).await;
    let start = Instant::now();
    // Timed like the TrustStream side: from the worker's start to the last
    // handler's start (the worker's shutdown is not counted).
    let timed = async {
        tally.wait_done().await;
        start.elapsed().as_secs_f64()
    };
    let ((), secs) = tokio::join!(apalis_run(pool, tally, batch), timed);
    // Like the TrustStream side's purge: every round starts on an empty table.
    sqlx::query("DELETE FROM apalis.jobs")
        .execute(cleaner)
        .await
        .expect("clear the apalis jobs");
    Round {
        single,
        batched,
        worked: n as f64 / secs,
    }
}

/// Enqueues `n` tasks in batches of 1,000 (one multi-row `INSERT` each).
async fn apalis_fill(storage: &mut PostgresStorage<Ping>, n: u64) {
    let all: Vec<u64> = (0..n).collect();
    for chunk in all.chunks(1000) {
        let mut tasks = futures::stream::iter(
            chunk
                .iter()
                .map(|_| TaskBuilder::new(Ping { t: since_epoch() }).build()),
        );
        storage.push_all(&mut tasks).await.expect("apalis push");
    }
}

async fn apalis_latency(
    pool: &apalis_postgres::PgPool,
    tally: &Arc<Tally>,
    pings: u64,
) -> (Duration, Duration) {
    tally.reset(pings);
    let push = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut storage = apalis_storage(pool, APALIS_DEFAULT_BATCH);
        for _ in 0..pings {
            storage
                .push(Ping { t: since_epoch() })
                .await
                .expect("apalis push");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // The worker (idle at first) and the producer, side by side.
    tokio::join!(apalis_run(pool, tally, APALIS_DEFAULT_BATCH), push);
    (tally.percentile(0.50), tally.percentile(0.99))
}

// ------------------------------------------------------------ worker processes

async fn child_noop(_p: Ping) -> Result<(), BoxDynError> {
    Ok(())
}

/// `--child ts|apalis URL`: one worker process of the multi-process rows.
/// Connects, says `ready` on stdout, starts its worker on a line of stdin
/// and works until stdin ends (the parent kills it then anyway).
async fn child(side: &str, url: &str) {
    match side {
        "ts" => {
            let jobs = PgJobs::open(PgJobsConfig::new(url))
                .await
                .expect("open jobs-postgres");
            ts_child(Arc::new(jobs)).await;
        }
        _ => {
            let pool = apalis_postgres::PgPool::connect(url)
                .await
                .expect("apalis pool");
            say_ready();
            if !stdin_line().await {
                return;
            }
            let worker = WorkerBuilder::new(format!("apalis-child-{}", std::process::id()))
                .backend(apalis_listening(&pool, APALIS_DEFAULT_BATCH))
                .concurrency(CONCURRENCY)
                .parallelize(tokio::spawn)
                .build(child_noop);
            tokio::select! {
                r = worker.run() => r.expect("the apalis worker runs"),
                _ = stdin_line() => {}
            }
        }
    }
}

/// One multi-process round of `side`: `n` jobs enqueued (untimed), the
/// children started together, timed until `n` jobs are completed.
async fn procs_round(
    side: Side,
    url: &str,
    ts: &PgJobs,
    apalis: &apalis_postgres::PgPool,
    cleaner: &mut sqlx::PgConnection,
    s: &Settings,
) -> f64 {
    let n = s.jobs;
    let mut children = Children::spawn(side, url);
    let (table, done) = match side {
        Side::TrustStream => {
            ts_fill(ts, n).await;
            let table = format!("\"{}\"", ts.table());
            let done = format!("SELECT count(*) FROM {table} WHERE state = 'completed'");
            (table, done)
        }
        Side::Apalis => {
            apalis_fill(&mut apalis_storage(apalis, APALIS_DEFAULT_BATCH), n).await;
            let table = "apalis.jobs".to_string();
            let done = format!("SELECT count(*) FROM {table} WHERE status = 'Done'");
            (table, done)
        }
    };
    vacuum_analyze(cleaner, &table, s).await;
    let start = Instant::now();
    children.start();
    loop {
        let completed: i64 = sqlx::query_scalar(&done)
            .fetch_one(&mut *cleaner)
            .await
            .expect("count completed jobs");
        if completed as u64 >= n {
            break;
        }
        children.assert_running();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(children);
    match side {
        Side::TrustStream => {
            ts.purge_finished(truststream_core_jobs::lifecycle::now())
                .await
                .expect("purge");
        }
        Side::Apalis => {
            sqlx::query("DELETE FROM apalis.jobs")
                .execute(&mut *cleaner)
                .await
                .expect("clear the apalis jobs");
        }
    }
    n as f64 / secs
}

// ----------------------------------------------------------------------- main

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Some((side, url)) = child_args() {
        child(&side, &url).await;
        return;
    }
    let settings = Settings::from_args();
    let smoke = settings.smoke;
    let _ = epoch();
    let Some(url) = truststream_db_postgres::testing::server().await else {
        eprintln!("no PostgreSQL server at DATABASE_URL: start one to run the jobs bench");
        return;
    };
    let name = format!("ts_bench_jobs_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to the server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create the bench database");
    let bench_url = with_database(&url, &name);
    progress(format_args!(
        "database {name}: {} rounds of {} jobs ({} enqueued singly), {} pings, VACUUM ANALYZE before each worker: {}",
        settings.rounds, settings.jobs, settings.singles, settings.pings, settings.analyze
    ));

    let ts = Arc::new(
        PgJobs::open(PgJobsConfig::new(bench_url.clone()))
            .await
            .expect("open jobs-postgres"),
    );
    let pool = apalis_postgres::PgPool::connect(&bench_url)
        .await
        .expect("apalis pool");
    PostgresStorage::setup(&pool).await.expect("apalis setup");
    let mut cleaner = sqlx::PgConnection::connect(&bench_url)
        .await
        .expect("connect to the bench database");
    let tally = Arc::new(Tally::default());

    let (mut ts_rounds, mut ap_rounds, mut ap16_rounds) = (Vec::new(), Vec::new(), Vec::new());
    let mut procs = ProcsRows::default();
    for round in 0..settings.rounds {
        // Alternate which side goes first.
        for side in 0..3 {
            if settings.procs_only {
                break;
            }
            match (side + round) % 3 {
                0 => {
                    let before = ts.completion_batches();
                    let r = ts_round(&ts, &mut cleaner, &tally, &settings).await;
                    let after = ts.completion_batches();
                    progress(format_args!(
                        "round {}: truststream {r:.0?}; completions: {} in {} batches, largest {}",
                        round + 1,
                        after.items - before.items,
                        after.batches - before.batches,
                        after.largest
                    ));
                    ts_rounds.push(r);
                }
                1 => {
                    let r =
                        apalis_round(&pool, &mut cleaner, &tally, &settings, APALIS_DEFAULT_BATCH)
                            .await;
                    progress(format_args!("round {}: apalis {r:.0?}", round + 1));
                    ap_rounds.push(r);
                }
                _ => {
                    let r = apalis_round(&pool, &mut cleaner, &tally, &settings, CONCURRENCY).await;
                    progress(format_args!(
                        "round {}: apalis batch_size {CONCURRENCY} {r:.0?}",
                        round + 1
                    ));
                    ap16_rounds.push(r);
                }
            }
        }
        // The multi-process rows, in the round's first side's order.
        for side in Side::in_round(round) {
            if settings.runs_procs(side) {
                let r = procs_round(side, &bench_url, &ts, &pool, &mut cleaner, &settings).await;
                procs.record(round, side, r);
            }
        }
    }
    if settings.procs_only {
        procs.print();
        finish(ts, cleaner, pool, admin, &name).await;
        return;
    }
    let (ts_p50, ts_p99) = ts_latency(&(ts.clone() as Arc<dyn Jobs>), &tally, settings.pings).await;
    progress(format_args!(
        "latency: truststream p50 {} p99 {}",
        ms(ts_p50),
        ms(ts_p99)
    ));
    let (ap_p50, ap_p99) = apalis_latency(&pool, &tally, settings.pings).await;
    progress(format_args!(
        "latency: apalis p50 {} p99 {}",
        ms(ap_p50),
        ms(ap_p99)
    ));

    println!(
        "jobs-postgres vs apalis-postgres: {} jobs per round ({} enqueued singly, the rest in \
         batches of 1,000), {CONCURRENCY} at a time per worker, one worker per side \
         (and {PROCS} worker processes per side where said); median of {} rounds \
         [min..max]; ratio = truststream / apalis for rates, apalis / truststream for times \
         (above 1: truststream better); VACUUM ANALYZE before each worker: {}",
        settings.jobs, settings.singles, settings.rounds, settings.analyze
    );
    print_rows(
        &ts_rounds,
        &ap_rounds,
        Some((
            &format!("apalis batch_size {CONCURRENCY} (tuned)"),
            &ap16_rounds,
        )),
        procs,
        [(ts_p50, ts_p99), (ap_p50, ap_p99)],
        settings.pings,
    );
    if smoke {
        println!("(smoke run: the figures mean nothing)");
    }

    finish(ts, cleaner, pool, admin, &name).await;
    progress(format_args!("done"));
}

/// Closes both sides' connections and drops the bench database `name`.
async fn finish(
    ts: Arc<PgJobs>,
    cleaner: sqlx::PgConnection,
    pool: apalis_postgres::PgPool,
    mut admin: sqlx::PgConnection,
    name: &str,
) {
    drop(ts);
    drop(cleaner);
    pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
}
