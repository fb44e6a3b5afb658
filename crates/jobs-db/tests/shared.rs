//! Several provider instances, each with its own connection pool and its
//! own worker, share one queue: every job runs exactly once (all handlers
//! succeed, so nothing is retried), and jobs one instance enqueues are
//! worked by the others.

mod support;

use std::sync::Arc;
use std::time::Duration;

use truststream_core_db::Database;
use truststream_core_jobs::{JobContext, JobError, JobState, NewJob, Worker};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_jobs_db::{DbJobs, DbJobsConfig};

use support::{postgres, providers, sqlite_file};

#[derive(serde::Deserialize)]
struct Payload {}

/// 3 × 100 jobs, each instance enqueueing its share: each runs once.
async fn run_shared(databases: Vec<Arc<dyn Database>>) {
    let instances = providers(databases).await;
    truststream_conformance::jobs::shared::each_job_once_across(
        &instances,
        100,
        Duration::from_millis(100),
    )
    .await
    .expect("every job runs exactly once, on several instances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_a_sqlite_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.db");
    run_shared(sqlite_file(&path, 3).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_a_postgres_schema() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let config = scratch.config("jobs_shared");
    run_shared(postgres(&config, 3).await).await;
    scratch.cleanup().await.expect("drop the scratch schema");
}

/// On PostgreSQL the change feed reaches every instance: a worker that
/// polls once an hour on instance B runs a job instance A enqueued at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_wakes_idle_workers_of_other_instances() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let config = scratch.config("jobs_wake");
    let providers = providers(postgres(&config, 2).await).await;
    assert!(providers[1].capabilities().cross_process_wakeups);
    let worker = Worker::builder(providers[1].clone())
        .poll_interval(Duration::from_secs(3600))
        .register("wake", |_ctx: JobContext, _p: Payload| async move {
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = providers[0]
        .enqueue(NewJob::new("wake", &serde_json::json!({"n": 1})).expect("job"))
        .await
        .expect("enqueue")
        .id();
    let until = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        let j = providers[0].get(id).await.expect("get").expect("the job");
        if j.state == JobState::Completed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the idle worker on the other instance was not woken (job {:?})",
            j.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop(Duration::from_secs(20)).await;
    scratch.cleanup().await.expect("drop the scratch schema");
}

/// Processes starting together race to create the jobs table and its
/// indexes on an empty schema: every one of them opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_all_open_on_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let config = scratch.config("jobs_race");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            let db = truststream_db_postgres::PgDatabase::open(config).await?;
            DbJobs::open(Arc::new(db), DbJobsConfig::default())
                .await
                .map(|_| ())
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("every instance opens");
    }
    scratch.cleanup().await.expect("drop the scratch schema");
}
