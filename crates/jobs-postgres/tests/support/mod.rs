//! Opening the queue and a database on one PostgreSQL schema, each with
//! its own pool (the multi-process and kill tests).

use std::sync::Arc;

use truststream_core_db::Database;
use truststream_core_jobs::Jobs;
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

/// db-postgres (for the effects table) and the jobs table in `schema` of
/// the server at `url`.
pub async fn open(url: &str, schema: &str) -> (Arc<dyn Database>, Arc<dyn Jobs>) {
    let db = PgDatabase::open(PgConfig::new(url.to_string()).with_schema(schema.to_string()))
        .await
        .expect("open db-postgres");
    let jobs = PgJobs::open(PgJobsConfig::new(url.to_string()).with_schema(schema.to_string()))
        .await
        .expect("open the jobs table");
    (Arc::new(db), Arc::new(jobs))
}
