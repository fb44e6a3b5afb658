//! A worker outlives an unavailable database: its claims fail (counted as
//! store errors), and once the database is back it runs the queue without a
//! restart.

use std::sync::Arc;
use std::time::Duration;

use truststream_core_db::Database;
use truststream_core_jobs::{JobContext, JobError, JobState, Jobs, NewJob, Worker};
use truststream_db_memory::MemoryDatabase;
use truststream_jobs_db::{DbJobs, DbJobsConfig};

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(25);
    while !check() {
        assert!(
            tokio::time::Instant::now() < until,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_recovers_when_the_database_returns() {
    let db = Arc::new(MemoryDatabase::new());
    let jobs: Arc<dyn Jobs> = Arc::new(
        DbJobs::open(db.clone() as Arc<dyn Database>, DbJobsConfig::default())
            .await
            .expect("open"),
    );
    db.disconnect().await.expect("disconnect");
    let worker = Worker::builder(jobs.clone())
        .poll_interval(Duration::from_millis(50))
        .register(
            "fault",
            |_ctx: JobContext, _p: serde_json::Value| async move { Ok::<(), JobError>(()) },
        )
        .expect("register")
        .start()
        .expect("start");
    wait_until("claims to fail while the database is away", || {
        worker.report().store_errors >= 2
    })
    .await;
    let e = jobs
        .enqueue(NewJob::new("fault", &serde_json::json!({"n": 0})).expect("job"))
        .await
        .expect_err("no database, no enqueue");
    assert_eq!(e.kind(), truststream_core::ErrorKind::Unavailable, "{e}");
    db.connect().await.expect("connect");
    jobs.enqueue_many(
        (1..=5)
            .map(|n| NewJob::new("fault", &serde_json::json!({ "n": n })).expect("job"))
            .collect(),
    )
    .await
    .expect("enqueue after the database returned");
    wait_until("the queue to drain", || worker.report().completed == 5).await;
    let report = worker.stop(Duration::from_secs(20)).await;
    assert_eq!(report.completed, 5, "{report:?}");
    let stats = jobs.stats().await.expect("stats");
    assert_eq!(stats.count("fault", JobState::Completed), 5);
    assert_eq!(stats.in_state(JobState::Queued), 0);
}
