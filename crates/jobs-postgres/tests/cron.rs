//! Three provider instances (each with its own pool and `LISTEN`
//! connection) on one PostgreSQL schema, each running a `Scheduler` with one
//! per-second schedule: each occurrence is enqueued once, also after an
//! earlier occurrence's job completed.

use std::sync::Arc;

use truststream_core_jobs::Jobs;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedulers_on_three_instances_share_a_schema() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_cron")
        .schema
        .expect("scratch schema");
    let mut instances = Vec::new();
    for _ in 0..3 {
        let j = PgJobs::open(PgJobsConfig::new(url.clone()).with_schema(schema.clone()))
            .await
            .expect("open the jobs table");
        instances.push(Arc::new(j) as Arc<dyn Jobs>);
    }
    let result = truststream_conformance::jobs::cron::each_occurrence_once_across(&instances).await;
    scratch.cleanup().await.expect("drop the scratch schema");
    result.expect("each occurrence enqueued once");
}
