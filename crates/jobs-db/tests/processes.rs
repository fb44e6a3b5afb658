//! 20,000 jobs worked by 3 worker **processes** (this test binary run again
//! with `TS_DBJOBS_CHILD` set; the ignored `child` test is the worker), each
//! with its own connection pool, on one SQLite file and on one PostgreSQL
//! schema through the generic provider: every handler writes one row per
//! run to a table in the same database, and with no failure injected every
//! job's effect is there exactly once (the compare-and-set claim hands a
//! job to one process: `update_many` on the row's `id` and `version`
//! answers 1 for the one winner and 0 for the others).

mod support;

use std::sync::Arc;

use truststream_conformance::jobs::shared::{
    check_exactly_once, effects_schema, enqueue_numbered, spawn_worker_process, wait_workers,
    worker_process,
};
use truststream_core_db::Database;
use truststream_core_jobs::Jobs;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};

use support::providers;

const CHILD: &str = "TS_DBJOBS_CHILD";
/// Jobs per run: 5,000 in `cargo xtask test` (a few minutes on 2 cores);
/// `TS_JOBS_TOTAL=20000` runs the full count (passed at 20,000).
/// The worker children inherit the variable, so both sides agree.
fn total() -> u64 {
    std::env::var("TS_JOBS_TOTAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}
const PROCESSES: usize = 3;

/// The store of `spec`: `sqlite<TAB>path` or `postgres<TAB>url<TAB>schema`.
async fn open(spec: &str) -> (Arc<dyn Database>, Arc<dyn Jobs>) {
    let parts: Vec<&str> = spec.split('\t').collect();
    let db: Arc<dyn Database> = match parts.as_slice() {
        ["sqlite", path] => Arc::new(
            SqliteDatabase::open(SqliteConfig::file(path))
                .await
                .expect("open the sqlite file"),
        ),
        ["postgres", url, schema] => Arc::new(
            PgDatabase::open(PgConfig::new(url.to_string()).with_schema(schema.to_string()))
                .await
                .expect("open the postgres schema"),
        ),
        _ => panic!("bad {CHILD} value {spec:?}"),
    };
    let jobs = providers(vec![db.clone()]).await.remove(0);
    (db, jobs)
}

/// The child: `<spec><TAB><name>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the tests below, not a test of its own"]
async fn child() {
    let env = std::env::var(CHILD).expect("run by the tests below with TS_DBJOBS_CHILD set");
    let (spec, name) = env.rsplit_once('\t').expect("spec<TAB>name");
    let (db, jobs) = open(spec).await;
    worker_process(jobs, db, name, total())
        .await
        .expect("the worker process runs the queue");
}

async fn exactly_once(spec: &str) {
    let (db, jobs) = open(spec).await;
    db.create_table(&effects_schema())
        .await
        .expect("effects table");
    enqueue_numbered(&*jobs, total(), 1_000)
        .await
        .expect("enqueue");
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            spawn_worker_process("child", CHILD, &format!("{spec}\tproc-{i}"))
                .expect("spawn a worker process")
        })
        .collect();
    let reports = tokio::task::spawn_blocking(move || wait_workers(children))
        .await
        .expect("join")
        .expect("every worker process reports");
    check_exactly_once(&*db, &*jobs, total(), &reports)
        .await
        .expect("each job ran exactly once");
    eprintln!("reports: {reports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_a_sqlite_file_run_20000_jobs_each_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.db").display().to_string();
    exactly_once(&format!("sqlite\t{path}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_postgres_run_20000_jobs_each_exactly_once() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("dbjobs_procs")
        .schema
        .expect("a scratch schema name");
    exactly_once(&format!("postgres\t{url}\t{schema}")).await;
    scratch.cleanup().await.expect("drop the scratch schema");
}
