//! Three provider instances, each with its own connection pool and its own
//! `Scheduler` running one per-second schedule, share one queue (a SQLite
//! file; a PostgreSQL scratch schema): each occurrence is enqueued once,
//! also after an earlier occurrence's job completed.

mod support;

use truststream_db_postgres::testing::{self, Scratch};

use support::{postgres, providers, sqlite_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedulers_on_three_instances_share_a_sqlite_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.db");
    let instances = providers(sqlite_file(&path, 3).await).await;
    truststream_conformance::jobs::cron::each_occurrence_once_across(&instances)
        .await
        .expect("each occurrence enqueued once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedulers_on_three_instances_share_a_postgres_schema() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let config = scratch.config("jobs_cron");
    let instances = providers(postgres(&config, 3).await).await;
    let result = truststream_conformance::jobs::cron::each_occurrence_once_across(&instances).await;
    scratch.cleanup().await.expect("drop the scratch schema");
    result.expect("each occurrence enqueued once");
}
