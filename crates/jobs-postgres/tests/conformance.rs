//! The jobs conformance suite over PostgreSQL: a scratch schema per case on
//! the server at `DATABASE_URL` (all dropped afterwards), with a db-postgres
//! database on the same schema for the transactional-enqueue cases.

use std::sync::Arc;

use truststream_conformance::{factory, jobs};
use truststream_core_db::Database;
use truststream_core_jobs::Jobs;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

#[tokio::test(flavor = "multi_thread")]
async fn conformance_over_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Arc::new(Scratch::new(url.clone()));
    let s = scratch.clone();
    let f = factory(move || {
        let s = s.clone();
        let url = url.clone();
        async move {
            let config = s.config("pgjobs");
            let schema = config.schema.clone().ok_or("scratch schema")?;
            let jobs = PgJobs::open(PgJobsConfig::new(url).with_schema(schema))
                .await
                .map_err(|e| e.to_string())?;
            let db = PgDatabase::open(config).await.map_err(|e| e.to_string())?;
            Ok(jobs::JobsFixture::new(Arc::new(jobs) as Arc<dyn Jobs>)
                .with_database(Arc::new(db) as Arc<dyn Database>))
        }
    });
    let report = jobs::run("postgres", f, None).await;
    scratch.cleanup().await.expect("drop scratch schemas");
    report.print_table();
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    assert_eq!(report.skipped_cases(), Vec::<&str>::new());
    assert_eq!(report.passed(), jobs::cases().len());
}

#[tokio::test]
async fn registers_as_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch.config("pgjobs_reg").schema.expect("scratch schema");
    let mut reg = truststream_core_jobs::JobsRegistry::new("jobs");
    truststream_jobs_postgres::register(&mut reg);
    let jobs = reg
        .build(
            "postgres",
            serde_json::json!({"url": url, "schema": schema, "table": "my_jobs"}),
            None,
        )
        .await
        .expect("builds");
    assert_eq!(jobs.info().name, "postgres");
    assert!(jobs.capabilities().cross_process_wakeups);
    assert!(jobs.health().await.is_healthy());
    let err = reg
        .build(
            "postgres",
            serde_json::json!({"url": url, "table": "bad name;"}),
            None,
        )
        .await
        .err()
        .expect("a bad table name is refused");
    assert_eq!(err.kind(), truststream_core::ErrorKind::InvalidInput);
    let err = reg
        .build(
            "postgres",
            serde_json::json!({"url": url, "schema": schema, "table": "missing", "create_table": false}),
            None,
        )
        .await
        .err()
        .expect("a missing table without create_table is refused");
    assert_eq!(err.kind(), truststream_core::ErrorKind::NotFound);
    drop(jobs);
    scratch.cleanup().await.expect("drop the scratch schema");
}
