//! `TS_JOBS_TOTAL` jobs (5,000 by default; passed at 20,000) worked by 3
//! worker **processes** (this test binary run again with `TS_DBJOBS_CHILD`
//! set; the ignored `child` test is the worker), each with its own
//! connection pool, on one SQLite file and on one PostgreSQL
//! schema through the generic provider: every handler writes one row per
//! run to a table in the same database, and with no failure injected every
//! job's effect is there exactly once (the compare-and-set claim hands a
//! job to one process: `update_many` on the row's `id` and `version`
//! answers 1 for the one winner and 0 for the others).

mod support;

use truststream_conformance::jobs::shared::{
    exactly_once_across_processes, processes_total, worker_process,
};
use truststream_db_postgres::testing::{self, Scratch};

use support::open;

const CHILD: &str = "TS_DBJOBS_CHILD";

/// The child: `<spec><TAB><name>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the tests below, not a test of its own"]
async fn child() {
    let env = std::env::var(CHILD).expect("run by the tests below with TS_DBJOBS_CHILD set");
    let (spec, name) = env.rsplit_once('\t').expect("spec<TAB>name");
    let (db, jobs) = open(spec).await;
    worker_process(jobs, db, name, processes_total())
        .await
        .expect("the worker process runs the queue");
}

async fn exactly_once(spec: &str) {
    let (db, jobs) = open(spec).await;
    exactly_once_across_processes(&*db, &*jobs, "child", CHILD, |i| {
        format!("{spec}\tproc-{i}")
    })
    .await
    .expect("each job ran exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_a_sqlite_file_run_each_job_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.db").display().to_string();
    exactly_once(&format!("sqlite\t{path}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_postgres_run_each_job_exactly_once() {
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
