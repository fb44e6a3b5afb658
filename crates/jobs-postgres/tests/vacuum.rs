//! The provider vacuums its jobs table every `vacuum_every` jobs it claimed
//! or completed: the dead row versions and index entries that claims and
//! completions leave are removed while the queue keeps moving, without
//! autovacuum (which the test servers run without). `vacuum_every = 0`
//! leaves the table to autovacuum.

use std::sync::Arc;
use std::time::Duration;

use truststream_core_jobs::{JobContext, JobError, JobState, Jobs, NewJob, Worker};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

const JOBS: u64 = 300;

/// Works `JOBS` no-op jobs on a provider opened with `vacuum_every`, and
/// returns the table's VACUUM count (waiting up to 10 s for a first one
/// when `expect_one`).
async fn vacuums(name: &str, vacuum_every: u64, expect_one: bool) -> Option<i64> {
    let url = testing::server().await?;
    let scratch = Scratch::new(url.clone());
    let schema = scratch.config(name).schema.expect("scratch schema");
    let mut config = PgJobsConfig::new(url.clone()).with_schema(schema.clone());
    config.vacuum_every = vacuum_every;
    let jobs = Arc::new(PgJobs::open(config).await.expect("open"));
    jobs.enqueue_many(
        (0..JOBS)
            .map(|n| NewJob::new("v", &serde_json::json!({ "n": n })))
            .collect::<Result<Vec<_>, _>>()
            .expect("valid jobs"),
    )
    .await
    .expect("enqueue");
    let worker = Worker::builder(jobs.clone() as Arc<dyn Jobs>)
        .concurrency(8)
        .register("v", |_ctx: JobContext, _p: serde_json::Value| async {
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while jobs
        .stats()
        .await
        .expect("stats")
        .count("v", JobState::Completed)
        < JOBS
    {
        assert!(
            tokio::time::Instant::now() < until,
            "the jobs did not complete"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop(Duration::from_secs(5)).await;
    let table = format!("\"{schema}\".\"{}\"", jobs.table());
    if !expect_one {
        // Time for a VACUUM that should not have started to be counted.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let count: i64 = loop {
        let mut conn = jobs.pool().acquire().await.expect("connection");
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await
            .expect("clear the statistics snapshot");
        let count: i64 = sqlx::query_scalar(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = $1::regclass",
        )
        .bind(&table)
        .fetch_one(&mut *conn)
        .await
        .expect("read the table's statistics");
        if !expect_one || count > 0 || tokio::time::Instant::now() >= until {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    jobs.close().await.expect("close");
    scratch.cleanup().await.expect("drop the scratch schema");
    Some(count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_table_is_vacuumed_as_jobs_are_worked() {
    // 300 jobs claimed and completed: 600 counted, a VACUUM every 100.
    let Some(count) = vacuums("pgjobs_vacuum", 100, true).await else {
        return;
    };
    assert!(count >= 1, "no VACUUM of the jobs table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_every_zero_leaves_the_table_to_autovacuum() {
    let Some(count) = vacuums("pgjobs_no_vacuum", 0, false).await else {
        return;
    };
    assert_eq!(count, 0, "the provider vacuumed with vacuum_every = 0");
}
