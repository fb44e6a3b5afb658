//! A read-only build (`truststream health`) opens no `LISTEN` connection
//! and starts no completion writer; an ordinary build of the same table
//! does open its `LISTEN` connection.

use truststream_core::BuildOptions;
use truststream_core_jobs::Jobs;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

/// Server backends whose last statement was a `LISTEN` naming `schema`.
async fn listeners(jobs: &PgJobs, schema: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE query ILIKE 'LISTEN%' AND strpos(query, $1) > 0",
    )
    .bind(schema)
    .fetch_one(jobs.pool())
    .await
    .expect("read pg_stat_activity")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_build_opens_no_listen_connection_and_no_batcher() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch.config("pgjobs_ro").schema.expect("scratch schema");
    let config = PgJobsConfig::new(url.clone()).with_schema(schema.clone());

    let looking = PgJobs::open_with(config.clone(), BuildOptions::read_only())
        .await
        .expect("open read-only");
    assert_eq!(listeners(&looking, &schema).await, 0);
    assert_eq!(looking.completion_batches().batches, 0);

    let working = PgJobs::open(config).await.expect("open");
    assert_eq!(
        listeners(&looking, &schema).await,
        1,
        "the ordinary build's LISTEN connection is not seen"
    );
    working.close().await.expect("close");
    looking.close().await.expect("close the read-only build");
}
