//! A worker process killed (SIGKILL) while it runs 100 jobs: nothing is
//! lost. Its leases run out, another worker runs each job once more, and
//! each job's effect is applied exactly once (the killed handlers never got
//! to theirs). On a SQLite file and on a PostgreSQL scratch schema. The
//! child is this test binary run again with `TS_JOBS_CHILD` set (the
//! ignored `child` test below is the worker).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use truststream_core_db::{ColumnDef, Database, Query, TableSchema};
use truststream_core_jobs::{JobContext, JobError, JobQuery, JobState, Jobs, NewJob, Worker};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_jobs_db::{DbJobs, DbJobsConfig};

const CHILD: &str = "TS_JOBS_CHILD";
const JOBS: u64 = 100;

#[derive(serde::Deserialize)]
struct Payload {
    n: u64,
}

/// Where the queue lives, as the child is told in `TS_JOBS_CHILD`:
/// `sqlite<TAB>path` or `postgres<TAB>url<TAB>schema`.
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
        _ => panic!("bad {CHILD} value"),
    };
    let jobs = DbJobs::open(db.clone(), DbJobsConfig::default())
        .await
        .expect("open the jobs table");
    (db, Arc::new(jobs))
}

/// The child: claims every job with 2 s leases and never finishes one.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the child process of the test below, not a test of its own"]
async fn child() {
    let spec = std::env::var(CHILD).expect("run by the tests below with TS_JOBS_CHILD set");
    let (_db, jobs) = open(&spec).await;
    let _worker = Worker::builder(jobs)
        .concurrency(JOBS as usize)
        .lease(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(100))
        .worker_id("doomed-child")
        .register("kill_me", |_ctx: JobContext, _p: Payload| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
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
    let all = jobs
        .list(&JobQuery::new().job_type("kill_me").limit(1000))
        .await
        .expect("list");
    assert_eq!(all.len() as u64, JOBS);
    for j in all {
        assert_eq!(j.state, JobState::Completed, "{j:?}");
        assert_eq!(j.attempts, 2, "the killed attempt counts: {j:?}");
        assert_eq!(j.history.len(), 2, "{:?}", j.history);
        assert_eq!(j.history[0].worker_id, "doomed-child");
        assert!(
            j.history[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("lease expired")),
            "{:?}",
            j.history[0]
        );
        assert_eq!(j.history[1].worker_id, "survivor");
    }
}
