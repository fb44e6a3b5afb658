//! A worker process killed (SIGKILL) while it runs 100 jobs: nothing is
//! lost. Its leases run out, another worker runs each job once more, and
//! each job's effect is applied exactly once (the killed handlers never got
//! to theirs). On a SQLite file and on a PostgreSQL scratch schema. The
//! child is this test binary run again with `TS_JOBS_CHILD` set (the
//! ignored `child` test below is the worker).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use truststream_conformance::jobs::shared::{check_ran_again_after_kill, doomed_worker};
use truststream_core_db::{ColumnDef, Query, TableSchema};
use truststream_core_jobs::{JobContext, JobError, JobState, Jobs, NewJob, Worker};
use truststream_db_postgres::testing::{self, Scratch};

use support::open;

const CHILD: &str = "TS_JOBS_CHILD";
const JOBS: u64 = 100;

#[derive(serde::Deserialize)]
struct Payload {
    n: u64,
}

/// The child: claims every job with 2 s leases and never finishes one.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the child process of the test below, not a test of its own"]
async fn child() {
    let spec = std::env::var(CHILD).expect("run by the tests below with TS_JOBS_CHILD set");
    let (_db, jobs) = open(&spec).await;
    let _worker = doomed_worker(jobs, "kill_me", JOBS as usize).expect("start");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

async fn wait_for(jobs: &dyn Jobs, what: &str, state: JobState, n: u64) {
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got = jobs.stats().await.expect("stats").count("kill_me", state);
        if got == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "gave up waiting for {what}: {got} of {n} jobs {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_loses_no_job_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.db").display().to_string();
    killed_worker(&format!("sqlite\t{path}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_loses_no_job_on_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("jobs_kill")
        .schema
        .expect("a scratch schema name");
    killed_worker(&format!("postgres\t{url}\t{schema}")).await;
    scratch.cleanup().await.expect("drop the scratch schema");
}

async fn killed_worker(spec: &str) {
    let (db, jobs) = open(spec).await;
    db.create_table(
        &TableSchema::new("effects")
            .if_not_exists()
            .column(ColumnDef::integer("id").primary_key()),
    )
    .await
    .expect("effects table");
    jobs.enqueue_many(
        (0..JOBS)
            .map(|n| {
                NewJob::new("kill_me", &json!({ "n": n }))
                    .expect("job")
                    .max_attempts(3)
            })
            .collect(),
    )
    .await
    .expect("enqueue");

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child worker");
    wait_for(
        &*jobs,
        "the child to claim every job",
        JobState::Running,
        JOBS,
    )
    .await;
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");

    let effects = db.clone();
    let worker = Worker::builder(jobs.clone())
        .concurrency(20)
        .poll_interval(Duration::from_millis(100))
        .worker_id("survivor")
        .register("kill_me", move |_ctx: JobContext, p: Payload| {
            let effects = effects.clone();
            async move {
                // A second effect for the same job would be a duplicate key.
                effects
                    .create(
                        "effects",
                        json!({ "id": p.n })
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| JobError::permanent(e.to_string()))
            }
        })
        .expect("register")
        .start()
        .expect("start");
    wait_for(
        &*jobs,
        "the survivor to finish every job",
        JobState::Completed,
        JOBS,
    )
    .await;
    let report = worker.stop(Duration::from_secs(20)).await;
    assert_eq!(report.completed, JOBS, "{report:?}");
    assert_eq!(report.failed, 0, "no effect was applied twice: {report:?}");

    let applied = db.read("effects", &Query::new()).await.expect("effects");
    assert_eq!(applied.len() as u64, JOBS, "each effect once");
    check_ran_again_after_kill(&*jobs, "kill_me", JOBS, "survivor")
        .await
        .expect("each job ran once more, after its lease");
}
