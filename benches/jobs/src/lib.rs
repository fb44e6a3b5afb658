//! Jobs benchmarks: TrustStream's jobs providers against apalis, the Rust
//! job library a user would pick instead, on the same store:
//! jobs-postgres against apalis-postgres on one PostgreSQL server
//! (`benches/jobs.rs`), and jobs-db on db-sqlite against apalis-sqlite on
//! files of one directory (`benches/jobs_sqlite.rs`). See
//! `docs/benchmarks.md`.
//!
//! This library holds what both benches share: the job payload, the tally
//! of handled jobs, the settings read from the command line, the figures'
//! summaries and the worker processes of the multi-process rows.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use truststream_core_jobs::{JobContext, JobError, Jobs, NewJob, Worker, WorkerHandle};

/// Jobs each worker runs at a time, on both sides.
pub const CONCURRENCY: usize = 16;

/// Worker processes of the multi-process rows.
pub const PROCS: usize = 3;

/// A job's payload: when its enqueue began, in ns since [`epoch`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Ping {
    /// Nanoseconds since [`epoch`] when the job's enqueue began.
    pub t: u64,
}

impl Ping {
    /// A payload stamped now.
    pub fn now() -> Ping {
        Ping { t: since_epoch() }
    }
}

/// The bench's time origin (the first call's instant).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn since_epoch() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// Counts handled jobs and records enqueue-to-start times;
/// [`Tally::wait_done`] returns once `target` jobs were handled.
#[derive(Default)]
pub struct Tally {
    handled: AtomicU64,
    target: AtomicU64,
    waits: Mutex<Vec<Duration>>,
    done: Notify,
}

impl Tally {
    /// Starts a round that ends after `target` jobs.
    pub fn reset(&self, target: u64) {
        self.handled.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
        self.waits.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Records a start; `true` when it was the last one wanted.
    pub fn start(&self, p: Ping) -> bool {
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
    pub async fn wait_done(&self) {
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

    /// The `p` quantile (0..=1) of the recorded enqueue-to-start times.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut w = self.waits.lock().unwrap_or_else(|e| e.into_inner()).clone();
        w.sort_unstable();
        if w.is_empty() {
            return Duration::ZERO;
        }
        let r = ((p * w.len() as f64).ceil() as usize).clamp(1, w.len());
        w[r - 1]
    }
}

/// What a run does, from the command line.
pub struct Settings {
    /// A few jobs, to check that the bench works.
    pub smoke: bool,
    /// `--analyze`: `VACUUM ANALYZE` each side's table between its enqueue
    /// and its worker (not by default; the PostgreSQL bench only).
    pub analyze: bool,
    /// `--only procs`: the multi-process rows alone (no single-worker
    /// rounds, no latency); `--only procs-ts` / `procs-apalis`: one side's
    /// (to profile it).
    pub procs_only: bool,
    /// With `procs_only`, the one side to run (`None`: both).
    pub procs_side: Option<Side>,
    /// Jobs per round.
    pub jobs: u64,
    /// Of those, enqueued one at a time.
    pub singles: u64,
    /// Jobs of the latency row.
    pub pings: u64,
    /// Rounds per side.
    pub rounds: usize,
}

impl Settings {
    /// Whether the multi-process rows run `side` (`--only procs-ts` /
    /// `procs-apalis` run one side).
    pub fn runs_procs(&self, side: Side) -> bool {
        self.procs_side.is_none_or(|only| only == side)
    }

    /// The defaults, `--smoke`'s small run, or the flags' values.
    pub fn from_args() -> Settings {
        let args: Vec<String> = std::env::args().collect();
        // `cargo bench` passes `--bench`; `cargo test --benches` does not,
        // and gets the smoke run.
        let smoke = args.iter().any(|a| a == "--smoke") || !args.iter().any(|a| a == "--bench");
        let mut s = Settings {
            smoke,
            analyze: args.iter().any(|a| a == "--analyze"),
            procs_only: false,
            procs_side: None,
            jobs: if smoke { 200 } else { 10_000 },
            singles: if smoke { 20 } else { 500 },
            pings: if smoke { 5 } else { 200 },
            rounds: if smoke { 1 } else { 3 },
        };
        let mut i = 1;
        while i < args.len() {
            let flag = args[i].as_str();
            if flag == "--only" {
                match args.get(i + 1).map(String::as_str) {
                    Some("procs") => s.procs_only = true,
                    Some("procs-ts") => {
                        (s.procs_only, s.procs_side) = (true, Some(Side::TrustStream))
                    }
                    Some("procs-apalis") => {
                        (s.procs_only, s.procs_side) = (true, Some(Side::Apalis))
                    }
                    other => panic!("--only takes procs, procs-ts or procs-apalis, not {other:?}"),
                }
                i += 1;
            } else if matches!(flag, "--jobs" | "--singles" | "--pings" | "--rounds") {
                let value: u64 = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .filter(|v| *v > 0)
                    .unwrap_or_else(|| {
                        panic!("{flag} needs a whole number above 0, as in `{flag} 3`")
                    });
                match flag {
                    "--jobs" => s.jobs = value,
                    "--singles" => s.singles = value,
                    "--pings" => s.pings = value,
                    _ => s.rounds = value as usize,
                }
                i += 1;
            }
            i += 1;
        }
        assert!(
            s.singles < s.jobs,
            "--singles ({}) must be below --jobs ({}): the rest are enqueued in batches",
            s.singles,
            s.jobs
        );
        s
    }
}

/// One side's figures for one round, in jobs per second.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Jobs enqueued one at a time, each awaited.
    pub single: f64,
    /// Jobs enqueued in batches of 1,000.
    pub batched: f64,
    /// Jobs worked by one worker, to the last handler's start.
    pub worked: f64,
}

/// Prints a progress line on stderr, with the time since the bench began.
pub fn progress(what: std::fmt::Arguments<'_>) {
    eprintln!("[{:>6.1} s] {what}", epoch().elapsed().as_secs_f64());
}

/// A duration in milliseconds, two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Picks one figure of a [`Round`].
pub type Pick = fn(&Round) -> f64;

/// Median, min and max of one figure over the rounds.
pub fn summary(rounds: &[Round], pick: Pick) -> (f64, f64, f64) {
    spread(rounds.iter().map(pick).collect())
}

/// Median, min and max of `v`.
pub fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let lo = v.first().copied().unwrap_or(f64::NAN);
    let hi = v.last().copied().unwrap_or(f64::NAN);
    let median = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    (median, lo, hi)
}

/// A table cell: median `[min..max]`, and the median.
pub fn cell(v: Vec<f64>) -> (String, f64) {
    if v.is_empty() {
        return ("-".to_string(), f64::NAN);
    }
    let (m, lo, hi) = spread(v);
    (format!("{m:.0} [{lo:.0}..{hi:.0}]"), m)
}

/// Prints the table rows both benches share: enqueue single and batched,
/// one worker's jobs/s against `apalis` (and, labelled, against
/// `apalis_tuned` when it ran), the multi-process row and the latency rows.
pub fn print_rows(
    ts: &[Round],
    apalis: &[Round],
    apalis_tuned: Option<(&str, &[Round])>,
    procs: ProcsRows,
    latency: [(Duration, Duration); 2],
    pings: u64,
) {
    println!("| row | truststream | apalis | ratio |\n|---|---|---|---|");
    let mut rate_rows: Vec<(String, Pick, &[Round])> = vec![
        ("enqueue, single (jobs/s)".into(), |r| r.single, apalis),
        ("enqueue, batched (jobs/s)".into(), |r| r.batched, apalis),
        ("no-op jobs worked/s".into(), |r| r.worked, apalis),
    ];
    if let Some((label, tuned)) = apalis_tuned {
        rate_rows.push((format!("no-op jobs worked/s, {label}"), |r| r.worked, tuned));
    }
    for (label, pick, apalis) in rate_rows {
        let (t, tlo, thi) = summary(ts, pick);
        let (a, alo, ahi) = summary(apalis, pick);
        println!(
            "| {label} | {t:.0} [{tlo:.0}..{thi:.0}] | {a:.0} [{alo:.0}..{ahi:.0}] | {:.2}x |",
            t / a
        );
    }
    procs.print();
    let [(ts_p50, ts_p99), (ap_p50, ap_p99)] = latency;
    for (q, t, a) in [("p50", ts_p50, ap_p50), ("p99", ts_p99, ap_p99)] {
        println!(
            "| enqueue-to-start {q}, idle queue ({pings} jobs) | {} | {} | {:.2}x |",
            ms(t),
            ms(a),
            a.as_secs_f64() / t.as_secs_f64()
        );
    }
}

/// The multi-process row's figures: each side's jobs/s, one per round.
#[derive(Default)]
pub struct ProcsRows {
    ts: Vec<f64>,
    apalis: Vec<f64>,
}

impl ProcsRows {
    /// Records `side`'s rate in round `round` (from 0), with a progress
    /// line.
    pub fn record(&mut self, round: usize, side: Side, rate: f64) {
        progress(format_args!(
            "round {}: {} {PROCS} processes {rate:.0} jobs/s",
            round + 1,
            side.arg()
        ));
        match side {
            Side::TrustStream => self.ts.push(rate),
            Side::Apalis => self.apalis.push(rate),
        }
    }

    /// Prints the row: TrustStream's and apalis' jobs/s and their ratio.
    pub fn print(self) {
        let (t, tm) = cell(self.ts);
        let (a, am) = cell(self.apalis);
        println!(
            "| no-op jobs worked/s, {PROCS} worker processes (to the last completion) | {t} | {a} | {:.2}x |",
            tm / am
        );
    }
}

// ---------------------------------------------------------------- TrustStream

/// Enqueues `s.singles` jobs one at a time, each awaited, then the rest of
/// `s.jobs` in batches of 1,000: the two rates, in jobs/s.
pub async fn ts_enqueue(jobs: &dyn Jobs, s: &Settings) -> (f64, f64) {
    let start = Instant::now();
    for _ in 0..s.singles {
        jobs.enqueue(NewJob::new("noop", &Ping::now()).expect("job"))
            .await
            .expect("enqueue");
    }
    let single = s.singles as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    ts_fill(jobs, s.jobs - s.singles).await;
    let batched = (s.jobs - s.singles) as f64 / start.elapsed().as_secs_f64();
    (single, batched)
}

/// Enqueues `n` jobs in batches of 1,000.
pub async fn ts_fill(jobs: &dyn Jobs, n: u64) {
    let all: Vec<u64> = (0..n).collect();
    for chunk in all.chunks(1000) {
        let batch = chunk
            .iter()
            .map(|_| NewJob::new("noop", &Ping::now()).expect("job"))
            .collect();
        jobs.enqueue_many(batch).await.expect("enqueue");
    }
}

/// A worker as configured by default, [`CONCURRENCY`] jobs at a time,
/// counting its no-op jobs in `tally`.
pub fn ts_worker(jobs: &Arc<dyn Jobs>, tally: &Arc<Tally>) -> WorkerHandle {
    let tally = tally.clone();
    Worker::builder(jobs.clone())
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

/// Works the `n` queued jobs with one worker: jobs/s from the worker's
/// start to the last handler's start. Stops the worker and purges the
/// finished jobs after (untimed), so the next round starts on an empty
/// table.
pub async fn ts_work(jobs: &Arc<dyn Jobs>, tally: &Arc<Tally>, n: u64) -> f64 {
    tally.reset(n);
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

/// Enqueue-to-start p50 and p99 of `pings` jobs enqueued 20 ms apart to an
/// idle worker.
pub async fn ts_latency(
    jobs: &Arc<dyn Jobs>,
    tally: &Arc<Tally>,
    pings: u64,
) -> (Duration, Duration) {
    tally.reset(pings);
    let worker = ts_worker(jobs, tally);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..pings {
        jobs.enqueue(NewJob::new("noop", &Ping::now()).expect("job"))
            .await
            .expect("enqueue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tally.wait_done().await;
    worker.stop(Duration::from_secs(10)).await;
    (tally.percentile(0.50), tally.percentile(0.99))
}

/// A TrustStream worker process: says it is ready, starts a worker on the
/// first line of stdin and works until stdin ends.
pub async fn ts_child(jobs: Arc<dyn Jobs>) {
    say_ready();
    if !stdin_line().await {
        return;
    }
    let worker = Worker::builder(jobs)
        .concurrency(CONCURRENCY)
        .register("noop", |_ctx: JobContext, _p: Ping| async {
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
    stdin_line().await;
    worker.stop(Duration::from_secs(5)).await;
}

// ------------------------------------------------------------ worker processes

/// Which side a child process works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// TrustStream's provider and `Worker`.
    TrustStream,
    /// apalis' backend and `WorkerBuilder`.
    Apalis,
}

impl Side {
    /// The side's name on a child's command line.
    pub fn arg(self) -> &'static str {
        match self {
            Side::TrustStream => "ts",
            Side::Apalis => "apalis",
        }
    }

    /// The two sides, TrustStream first in even rounds, apalis first in odd
    /// ones.
    pub fn in_round(round: usize) -> [Side; 2] {
        if round.is_multiple_of(2) {
            [Side::TrustStream, Side::Apalis]
        } else {
            [Side::Apalis, Side::TrustStream]
        }
    }
}

/// In a child: reads a line from stdin; `false` at its end.
pub async fn stdin_line() -> bool {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap_or(0) > 0
    })
    .await
    .unwrap_or(false)
}

/// In a child: tells the parent it is connected and waiting for its start.
pub fn say_ready() {
    let mut out = std::io::stdout();
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
}

/// `--child SIDE STORE` on the command line: the side and the store (a URL
/// or a path) a worker process is for.
pub fn child_args() -> Option<(String, String)> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == "--child")?;
    let side = args.get(i + 1).expect("--child ts|apalis STORE").clone();
    let store = args.get(i + 2).expect("--child ts|apalis STORE").clone();
    Some((side, store))
}

/// Worker processes of this bench binary for one side of a multi-process
/// row, each connected and waiting for [`Children::start`].
pub struct Children(Vec<Child>);

impl Children {
    /// Starts [`PROCS`] processes (`--child SIDE STORE`) and waits until each
    /// said it is ready.
    pub fn spawn(side: Side, store: &str) -> Children {
        let exe = std::env::current_exe().expect("the bench binary's path");
        let children = (0..PROCS)
            .map(|_| {
                let mut c = Command::new(&exe)
                    .args(["--child", side.arg(), store])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn a worker process");
                let mut line = String::new();
                BufReader::new(c.stdout.as_mut().expect("child stdout"))
                    .read_line(&mut line)
                    .expect("read the child's ready line");
                assert_eq!(line.trim(), "ready", "a worker process failed to start");
                c
            })
            .collect();
        Children(children)
    }

    /// Panics when a process has ended (its worker failed: the row cannot
    /// finish), instead of waiting for it forever.
    pub fn assert_running(&mut self) {
        for c in &mut self.0 {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("a worker process ended while the row ran ({status}); see its output above");
            }
        }
    }

    /// Starts every process's worker.
    pub fn start(&mut self) {
        for c in &mut self.0 {
            let stdin = c.stdin.as_mut().expect("child stdin");
            writeln!(stdin, "go").expect("start a worker process");
            stdin.flush().expect("start a worker process");
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
