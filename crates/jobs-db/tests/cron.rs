//! Three provider instances, each with its own connection pool and its own
//! `Scheduler` running one per-second schedule, share one queue (a SQLite
//! file; a PostgreSQL scratch schema): each occurrence is enqueued once,
//! also after an earlier occurrence's job completed.

use std::sync::Arc;

use truststream_core_db::Database;
use truststream_core_jobs::Jobs;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_jobs_db::{DbJobs, DbJobsConfig};

async fn providers(databases: Vec<Arc<dyn Database>>) -> Vec<Arc<dyn Jobs>> {
    let mut out = Vec::new();
    for db in databases {
        let j = DbJobs::open(db, DbJobsConfig::default())
            .await
            .expect("open the jobs table");
        out.push(Arc::new(j) as Arc<dyn Jobs>);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedulers_on_three_instances_share_a_sqlite_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jobs.db");
    let mut dbs: Vec<Arc<dyn Database>> = Vec::new();
    for _ in 0..3 {
        let db = SqliteDatabase::open(SqliteConfig::file(&path))
            .await
            .expect("open sqlite file");
        dbs.push(Arc::new(db));
    }
    let instances = providers(dbs).await;
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
    let mut dbs: Vec<Arc<dyn Database>> = Vec::new();
    for _ in 0..3 {
        let db = truststream_db_postgres::PgDatabase::open(config.clone())
            .await
            .expect("open postgres");
        dbs.push(Arc::new(db));
    }
    let instances = providers(dbs).await;
    let result = truststream_conformance::jobs::cron::each_occurrence_once_across(&instances).await;
    scratch.cleanup().await.expect("drop the scratch schema");
    result.expect("each occurrence enqueued once");
}
