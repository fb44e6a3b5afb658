//! jobs-db on db-sqlite (TrustStream's embedded default) against
//! apalis-sqlite, each side on a SQLite file of its own in one temporary
//! directory.
//!
//! ```text
//! cargo bench -p truststream-bench-jobs --bench jobs_sqlite [-- --smoke]
//! cargo bench -p truststream-bench-jobs --bench jobs_sqlite -- --jobs 20000 --rounds 5
//! ```
//!
//! The rows, flags and rounds are those of the PostgreSQL bench
//! (`benches/jobs.rs`): enqueue one at a time and in batches of 1,000,
//! no-op jobs worked per second by one worker with `CONCURRENCY` jobs at a
//! time (to the last handler's start), the same by `PROCS` worker processes
//! on the one file (to the last completion, counted by the parent every
//! 20 ms), and enqueue-to-start p50/p99 on an idle queue. `TMPDIR` chooses
//! the directory (a disk, not a tmpfs, for figures that mean something).
//!
//! **Durability, the same on both sides:** WAL, `synchronous = FULL` on
//! every connection (sqlx's default, which db-sqlite keeps), a 5 s busy
//! timeout. TrustStream: `SqliteDatabase` with its default configuration
//! (a pool of 8) under `DbJobs` with its default configuration. apalis:
//! the pool of `SqliteStorage::connect_with_callback` (sqlx's default pool,
//! 10 connections, each with apalis' update hook, which wakes the worker
//! on an insert made through the pool), its migrations, and
//! `PRAGMA journal_mode = WAL`, with its `Config` defaults (`batch_size`
//! 10). Not apalis' `SqliteStorage::setup`: besides the WAL and the
//! migrations it sets `synchronous = OFF` (no fsync: a commit can be lost
//! on a power cut), and only on the one pooled connection that happens to
//! run it, so what a commit costs would depend on the connection it ran on.
//! The labelled `--apalis-setup` mode runs apalis' `setup` instead (both
//! sides' figures are printed; only apalis' configuration changes).
//!
//! Wake-ups: both sides wake an idle worker when a job is enqueued in the
//! same process (TrustStream: db-sqlite's change feed; apalis: the update
//! hook). A worker process of the multi-process row is not woken by
//! another process's enqueue on either side; the row's jobs are all queued
//! before the processes start.
//!
//! `--smoke` (and `cargo test --benches`, which does not pass `--bench`)
//! runs a few jobs once per side to check that the bench works; its
//! figures mean nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_sqlite::callback::HookCallbackListener;
use apalis_sqlite::{Config as ApalisConfig, SqlitePool, SqliteStorage};
use sqlx::Connection;
use truststream_bench_jobs::{
    child_args, epoch, ms, print_rows, progress, say_ready, stdin_line, ts_child, ts_enqueue,
    ts_fill, ts_latency, ts_work, Children, Ping, ProcsRows, Round, Settings, Side, Tally,
    CONCURRENCY, PROCS,
};
use truststream_core_jobs::Jobs;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_jobs_db::{DbJobs, DbJobsConfig, DEFAULT_TABLE};

// ---------------------------------------------------------------- TrustStream

/// jobs-db in its default table of a db-sqlite database on `path`, both
/// with their default configuration.
async fn ts_open(path: &Path) -> Arc<dyn Jobs> {
    let db = SqliteDatabase::open(SqliteConfig::file(path))
        .await
        .expect("open db-sqlite");
    let jobs = DbJobs::open(Arc::new(db), DbJobsConfig::default())
        .await
        .expect("open jobs-db");
    Arc::new(jobs)
}

async fn ts_round(jobs: &Arc<dyn Jobs>, tally: &Arc<Tally>, s: &Settings) -> Round {
    let (single, batched) = ts_enqueue(&**jobs, s).await;
    let worked = ts_work(jobs, tally, s.jobs).await;
    Round {
        single,
        batched,
        worked,
    }
}

// --------------------------------------------------------------------- apalis

/// apalis' side of one file: its pool (each connection with the update
/// hook) and the hook's listener.
struct Apalis {
    pool: SqlitePool,
    listener: HookCallbackListener,
}

impl Apalis {
    /// Opens `path` (already in WAL mode, [`cleaner`]) as described in the
    /// crate docs; `setup`: through apalis' `SqliteStorage::setup` (the
    /// labelled mode).
    async fn open(path: &Path, setup: bool) -> Apalis {
        let url = format!("sqlite://{}", path.display());
        let (pool, listener) =
            SqliteStorage::connect_with_callback(&url).expect("apalis sqlite pool");
        if setup {
            SqliteStorage::setup(&pool).await.expect("apalis setup");
        } else {
            SqliteStorage::migrations()
                .run(&pool)
                .await
                .expect("apalis migrations");
        }
        Apalis { pool, listener }
    }

    fn storage(&self) -> SqliteStorage<Ping> {
        SqliteStorage::new(&self.pool).with_config(ApalisConfig::default().queue("noop"))
    }

    /// The worker's side of the queue: woken by the update hook.
    fn listening(&self) -> apalis_sqlite::callback::SqliteStorageWithHook<Ping> {
        self.storage().with_callback(self.listener.clone())
    }
}

/// A connection of the bench's own (its sqlx, not apalis') to the file at
/// `path`, creating it in WAL mode: counts and clears each side's table.
async fn cleaner(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("open the bench's connection")
}

async fn noop(p: Ping, tally: Data<Arc<Tally>>, wrk: WorkerContext) -> Result<(), BoxDynError> {
    if tally.start(p) {
        wrk.stop()?;
    }
    Ok(())
}

async fn apalis_run(apalis: &Apalis, tally: &Arc<Tally>) {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let worker = WorkerBuilder::new(format!("apalis-bench-{n}"))
        .backend(apalis.listening())
        .data(tally.clone())
        .concurrency(CONCURRENCY)
        .parallelize(tokio::spawn)
        .build(noop);
    worker.run().await.expect("the apalis worker runs");
}

async fn apalis_round(
    apalis: &Apalis,
    cleaner: &mut sqlx::SqliteConnection,
    tally: &Arc<Tally>,
    s: &Settings,
) -> Round {
    let n = s.jobs;
    tally.reset(n);
    let mut storage = apalis.storage();
    let start = Instant::now();
    for _ in 0..s.singles {
        storage.push(Ping::now()).await.expect("apalis push");
    }
    let single = s.singles as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    apalis_fill(&mut storage, n - s.singles).await;
    let batched = (n - s.singles) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    // Timed like the TrustStream side: from the worker's start to the last
    // handler's start (the worker's shutdown is not counted).
    let timed = async {
        tally.wait_done().await;
        start.elapsed().as_secs_f64()
    };
    let ((), secs) = tokio::join!(apalis_run(apalis, tally), timed);
    apalis_clear(cleaner).await;
    Round {
        single,
        batched,
        worked: n as f64 / secs,
    }
}

/// Like the TrustStream side's purge: every round starts on an empty table.
async fn apalis_clear(cleaner: &mut sqlx::SqliteConnection) {
    sqlx::query("DELETE FROM Jobs")
        .execute(cleaner)
        .await
        .expect("clear the apalis jobs");
}

/// Enqueues `n` tasks in batches of 1,000 (`push_all`).
async fn apalis_fill(storage: &mut SqliteStorage<Ping>, n: u64) {
    let all: Vec<u64> = (0..n).collect();
    for chunk in all.chunks(1000) {
        let mut tasks =
            futures::stream::iter(chunk.iter().map(|_| TaskBuilder::new(Ping::now()).build()));
        storage.push_all(&mut tasks).await.expect("apalis push");
    }
}

async fn apalis_latency(apalis: &Apalis, tally: &Arc<Tally>, pings: u64) -> (Duration, Duration) {
    tally.reset(pings);
    let push = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut storage = apalis.storage();
        for _ in 0..pings {
            storage.push(Ping::now()).await.expect("apalis push");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::join!(apalis_run(apalis, tally), push);
    (tally.percentile(0.50), tally.percentile(0.99))
}

// ------------------------------------------------------------ worker processes

async fn child_noop(_p: Ping) -> Result<(), BoxDynError> {
    Ok(())
}

/// `--child ts|apalis PATH`: one worker process of the multi-process row.
async fn child(side: &str, path: &Path) {
    match side {
        "ts" => ts_child(ts_open(path).await).await,
        _ => {
            let apalis = Apalis::open(path, false).await;
            say_ready();
            if !stdin_line().await {
                return;
            }
            // apalis' worker stops at the first error of a fetch, and with
            // several processes on one file a fetch can fail with
            // "database is locked" (SQLITE_BUSY): a new worker takes over,
            // as a supervisor would start one, and the restarts are
            // reported on stderr.
            let run = async {
                for restart in 0u64.. {
                    let worker = WorkerBuilder::new(format!(
                        "apalis-child-{}-{restart}",
                        std::process::id()
                    ))
                    .backend(apalis.listening())
                    .concurrency(CONCURRENCY)
                    .parallelize(tokio::spawn)
                    .build(child_noop);
                    if let Err(e) = worker.run().await {
                        eprintln!(
                            "apalis worker process {}: worker stopped ({e}); restart {}",
                            std::process::id(),
                            restart + 1
                        );
                    }
                }
            };
            tokio::select! {
                () = run => {}
                _ = stdin_line() => {}
            }
        }
    }
}

/// One multi-process round of `side`: `s.jobs` jobs enqueued (untimed),
/// the children started together, timed until that many are completed.
async fn procs_round(
    side: Side,
    paths: &Paths,
    ts: &Arc<dyn Jobs>,
    apalis: &Apalis,
    cleaners: &mut Cleaners,
    s: &Settings,
) -> f64 {
    let n = s.jobs;
    let (path, cleaner, done) = match side {
        Side::TrustStream => (
            &paths.ts,
            &mut cleaners.ts,
            format!("SELECT count(*) FROM \"{DEFAULT_TABLE}\" WHERE state = 'completed'"),
        ),
        Side::Apalis => (
            &paths.apalis,
            &mut cleaners.apalis,
            "SELECT count(*) FROM Jobs WHERE status = 'Done'".to_string(),
        ),
    };
    let mut children = Children::spawn(side, &path.display().to_string());
    match side {
        Side::TrustStream => ts_fill(&**ts, n).await,
        Side::Apalis => apalis_fill(&mut apalis.storage(), n).await,
    }
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
        Side::Apalis => apalis_clear(cleaner).await,
    }
    n as f64 / secs
}

// ----------------------------------------------------------------------- main

/// Each side's file.
struct Paths {
    ts: PathBuf,
    apalis: PathBuf,
}

/// The bench's own connection to each side's file.
struct Cleaners {
    ts: sqlx::SqliteConnection,
    apalis: sqlx::SqliteConnection,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Some((side, path)) = child_args() {
        child(&side, Path::new(&path)).await;
        return;
    }
    let settings = Settings::from_args();
    let apalis_setup = std::env::args().any(|a| a == "--apalis-setup");
    let _ = epoch();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let paths = Paths {
        ts: dir.path().join("truststream.db"),
        apalis: dir.path().join("apalis.db"),
    };
    progress(format_args!(
        "directory {}: {} rounds of {} jobs ({} enqueued singly), {} pings, apalis setup(): {}",
        dir.path().display(),
        settings.rounds,
        settings.jobs,
        settings.singles,
        settings.pings,
        apalis_setup
    ));
    let mut cleaners = Cleaners {
        ts: cleaner(&paths.ts).await,
        apalis: cleaner(&paths.apalis).await,
    };
    let ts = ts_open(&paths.ts).await;
    let apalis = Apalis::open(&paths.apalis, apalis_setup).await;
    let tally = Arc::new(Tally::default());

    let (mut ts_rounds, mut ap_rounds) = (Vec::new(), Vec::new());
    let mut procs = ProcsRows::default();
    for round in 0..settings.rounds {
        for side in Side::in_round(round) {
            if settings.procs_only {
                break;
            }
            match side {
                Side::TrustStream => {
                    let r = ts_round(&ts, &tally, &settings).await;
                    progress(format_args!("round {}: truststream {r:.0?}", round + 1));
                    ts_rounds.push(r);
                }
                Side::Apalis => {
                    let r = apalis_round(&apalis, &mut cleaners.apalis, &tally, &settings).await;
                    progress(format_args!("round {}: apalis {r:.0?}", round + 1));
                    ap_rounds.push(r);
                }
            }
        }
        for side in Side::in_round(round) {
            if settings.runs_procs(side) {
                let r = procs_round(side, &paths, &ts, &apalis, &mut cleaners, &settings).await;
                procs.record(round, side, r);
            }
        }
    }
    if settings.procs_only {
        procs.print();
        return;
    }
    let (ts_p50, ts_p99) = ts_latency(&ts, &tally, settings.pings).await;
    progress(format_args!(
        "latency: truststream p50 {} p99 {}",
        ms(ts_p50),
        ms(ts_p99)
    ));
    let (ap_p50, ap_p99) = apalis_latency(&apalis, &tally, settings.pings).await;
    progress(format_args!(
        "latency: apalis p50 {} p99 {}",
        ms(ap_p50),
        ms(ap_p99)
    ));
    println!(
        "jobs-db on db-sqlite vs apalis-sqlite: {} jobs per round ({} enqueued singly, the rest \
         in batches of 1,000), {CONCURRENCY} at a time per worker, one worker per side (and \
         {PROCS} worker processes per side where said); WAL, synchronous {} ; median of {} \
         rounds [min..max]; ratio = truststream / apalis for rates, apalis / truststream for \
         times (above 1: truststream better)",
        settings.jobs,
        settings.singles,
        if apalis_setup {
            "FULL (apalis: its setup(), OFF on one connection)"
        } else {
            "FULL on both sides"
        },
        settings.rounds
    );
    print_rows(
        &ts_rounds,
        &ap_rounds,
        None,
        procs,
        [(ts_p50, ts_p99), (ap_p50, ap_p99)],
        settings.pings,
    );
    if settings.smoke {
        println!("(smoke run: the figures mean nothing)");
    }
    ts.close().await.expect("close jobs-db");
    apalis.pool.close().await;
    progress(format_args!("done"));
}
