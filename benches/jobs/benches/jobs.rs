//! jobs-postgres against apalis-postgres on one PostgreSQL server.
//!
//! ```text
//! cargo bench -p truststream-bench-jobs --bench jobs [-- --smoke]
//! ```
//!
//! The bench makes a database of its own on the server at `DATABASE_URL`
//! (apalis keeps its tables in a fixed `apalis` schema), runs both sides in
//! it with the server's default durability (`synchronous_commit` on, each
//! claim and completion committed), and drops it at the end.
//!
//! - **no-op jobs/s**: `JOBS` jobs enqueued first, then one worker with
//!   `CONCURRENCY` jobs at a time (TrustStream: `Worker` as configured by
//!   default, claiming the free slots once a quarter of them are free;
//!   apalis: `WorkerBuilder` with `concurrency` and its default
//!   `batch_size` of 10) works them; the time from the worker's start to the
//!   last handler's start, the same on both sides. Each round starts on an
//!   empty table on both sides. Rounds alternate between the sides. A
//!   second, labelled apalis row sets `batch_size` to `CONCURRENCY` (a
//!   tuned configuration, not the default).
//! - **enqueue-to-start on an idle queue**: a running, idle worker (woken
//!   by `LISTEN/NOTIFY` on both sides, polling once a second otherwise);
//!   `PINGS` single jobs enqueued 20 ms apart; each handler measures the
//!   time since its job's enqueue began. p50 and p99.
//!
//! `--smoke` runs a few jobs once per side to check that the bench works;
//! its figures mean nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_postgres::{Config as ApalisConfig, PostgresStorage, Pubsub};
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use tokio::sync::Notify;
use truststream_core_jobs::{JobContext, JobError, Jobs, NewJob, Worker};
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

const CONCURRENCY: usize = 16;

/// A job's payload: when its enqueue began, in ns since [`epoch`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Ping {
    t: u64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Counts handled jobs and records enqueue-to-start times;
/// [`Tally::wait_done`] returns once `target` jobs were handled.
#[derive(Default)]
struct Tally {
    handled: AtomicU64,
    target: AtomicU64,
    waits: Mutex<Vec<Duration>>,
    done: Notify,
}

impl Tally {
    fn reset(&self, target: u64) {
        self.handled.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
        self.waits.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    /// Records a start; `true` when it was the last one wanted.
    fn start(&self, p: Ping) -> bool {
        let wait = Duration::from_nanos(since_epoch().saturating_sub(p.t));
        self.waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(wait);
        let n = self.handled.fetch_add(1, Ordering::SeqCst) + 1;
        let last = n == self.target.load(Ordering::SeqCst);
        if last {
            // Wakes the waiter of this round only: no wake-up is kept for a
            // later round (a kept one ended the next round at once).
            self.done.notify_waiters();
        }
        last
    }
    /// Waits until `target` jobs were handled in this round.
    async fn wait_done(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.handled.load(Ordering::SeqCst) >= self.target.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut w = self.waits.lock().unwrap_or_else(|e| e.into_inner()).clone();
        w.sort_unstable();
        if w.is_empty() {
            return Duration::ZERO;
        }
        let r = ((p * w.len() as f64).ceil() as usize).clamp(1, w.len());
        w[r - 1]
    }
}

struct Settings {
    jobs: u64,
    pings: u64,
    rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The URL of database `name` on the server of `url`.
fn with_database(url: &str, name: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    match base.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
        _ => format!("{base}/{name}"),
    }
}

// ---------------------------------------------------------------- TrustStream

async fn ts_throughput(jobs: &Arc<PgJobs>, tally: &Arc<Tally>, n: u64) -> f64 {
    tally.reset(n);
    let all: Vec<u64> = (0..n).collect();
    for chunk in all.chunks(1000) {
        let batch = chunk
            .iter()
            .map(|_| NewJob::new("noop", &Ping { t: since_epoch() }).expect("job"))
            .collect();
        jobs.enqueue_many(batch).await.expect("enqueue");
    }
    let start = Instant::now();
    let worker = ts_worker(jobs, tally);
    tally.wait_done().await;
    let secs = start.elapsed().as_secs_f64();
    worker.stop(Duration::from_secs(10)).await;
    jobs.purge_finished(truststream_core_jobs::lifecycle::now())
        .await
        .expect("purge");
    n as f64 / secs
}

fn ts_worker(jobs: &Arc<PgJobs>, tally: &Arc<Tally>) -> truststream_core_jobs::WorkerHandle {
    let tally = tally.clone();
    Worker::builder(jobs.clone() as Arc<dyn Jobs>)
        .concurrency(CONCURRENCY)
        .register("noop", move |_ctx: JobContext, p: Ping| {
            let tally = tally.clone();
            async move {
                tally.start(p);
                Ok::<(), JobError>(())
            }
        })
        .expect("register")
        .start()
        .expect("start")
}

async fn ts_latency(jobs: &Arc<PgJobs>, tally: &Arc<Tally>, pings: u64) -> (Duration, Duration) {
    tally.reset(pings);
    let worker = ts_worker(jobs, tally);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..pings {
        jobs.enqueue(NewJob::new("noop", &Ping { t: since_epoch() }).expect("job"))
            .await
            .expect("enqueue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally.wait_done().await;
    worker.stop(Duration::from_secs(10)).await;
    (tally.percentile(0.50), tally.percentile(0.99))
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
async fn apalis_throughput(
    pool: &apalis_postgres::PgPool,
    cleaner: &mut sqlx::PgConnection,
    tally: &Arc<Tally>,
    n: u64,
    batch: usize,
) -> f64 {
    tally.reset(n);
    let mut storage = apalis_storage(pool, batch);
    let mut tasks =
        futures::stream::iter((0..n).map(|_| TaskBuilder::new(Ping { t: since_epoch() }).build()));
    storage.push_all(&mut tasks).await.expect("apalis push");
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
    n as f64 / secs
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

// ----------------------------------------------------------------------- main

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let settings = if smoke {
        Settings {
            jobs: 200,
            pings: 5,
            rounds: 1,
        }
    } else {
        Settings {
            jobs: 20_000,
            pings: 200,
            rounds: 3,
        }
    };
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
    let _ = epoch();

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

    let (mut ts_rates, mut ap_rates, mut ap16_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..settings.rounds {
        ts_rates.push(ts_throughput(&ts, &tally, settings.jobs).await);
        ap_rates.push(
            apalis_throughput(
                &pool,
                &mut cleaner,
                &tally,
                settings.jobs,
                APALIS_DEFAULT_BATCH,
            )
            .await,
        );
        ap16_rates
            .push(apalis_throughput(&pool, &mut cleaner, &tally, settings.jobs, CONCURRENCY).await);
    }
    let (ts_p50, ts_p99) = ts_latency(&ts, &tally, settings.pings).await;
    let (ap_p50, ap_p99) = apalis_latency(&pool, &tally, settings.pings).await;

    let (ts_rate, ap_rate, ap16_rate) = (
        median(ts_rates.clone()),
        median(ap_rates.clone()),
        median(ap16_rates.clone()),
    );
    println!(
        "no-op jobs/s ({} jobs, {CONCURRENCY} at a time, median of {} rounds)",
        settings.jobs, settings.rounds
    );
    println!("  truststream jobs-postgres  {ts_rate:>10.0}  rounds {ts_rates:.0?}");
    println!("  apalis-postgres            {ap_rate:>10.0}  rounds {ap_rates:.0?}");
    println!("  ratio                      {:>10.2}x", ts_rate / ap_rate);
    println!(
        "  apalis-postgres, batch_size {CONCURRENCY} (tuned, not the default)  {ap16_rate:>10.0}  rounds {ap16_rates:.0?}"
    );
    println!(
        "enqueue-to-start on an idle queue ({} jobs)",
        settings.pings
    );
    println!(
        "  truststream jobs-postgres  p50 {}  p99 {}",
        ms(ts_p50),
        ms(ts_p99)
    );
    println!(
        "  apalis-postgres            p50 {}  p99 {}",
        ms(ap_p50),
        ms(ap_p99)
    );
    if smoke {
        println!("(smoke run: the figures mean nothing)");
    }

    drop(ts);
    drop(cleaner);
    pool.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
}
