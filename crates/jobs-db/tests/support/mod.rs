//! Opening several instances on one store: the databases (a SQLite file,
//! a PostgreSQL schema), each with its own pool, and a jobs-db provider on
//! each.

#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;
use std::sync::Arc;

use truststream_core_db::Database;
use truststream_core_jobs::Jobs;
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_jobs_db::{DbJobs, DbJobsConfig};

/// `n` databases on the SQLite file at `path`.
pub async fn sqlite_file(path: &Path, n: usize) -> Vec<Arc<dyn Database>> {
    let mut dbs: Vec<Arc<dyn Database>> = Vec::new();
    for _ in 0..n {
        let db = SqliteDatabase::open(SqliteConfig::file(path))
            .await
            .expect("open sqlite file");
        dbs.push(Arc::new(db));
    }
    dbs
}

/// `n` databases on the PostgreSQL database (and schema) of `config`.
pub async fn postgres(config: &PgConfig, n: usize) -> Vec<Arc<dyn Database>> {
    let mut dbs: Vec<Arc<dyn Database>> = Vec::new();
    for _ in 0..n {
        let db = PgDatabase::open(config.clone())
            .await
            .expect("open postgres");
        dbs.push(Arc::new(db));
    }
    dbs
}

/// A jobs-db provider (default settings) on each of `databases`.
pub async fn providers(databases: Vec<Arc<dyn Database>>) -> Vec<Arc<dyn Jobs>> {
    let mut out = Vec::new();
    for db in databases {
        let j = DbJobs::open(db, DbJobsConfig::default())
            .await
            .expect("open the jobs table");
        out.push(Arc::new(j) as Arc<dyn Jobs>);
    }
    out
}

/// The database and a jobs-db provider (default settings) of `spec`, as a
/// child process is told it: `sqlite<TAB>path` or
/// `postgres<TAB>url<TAB>schema`.
pub async fn open(spec: &str) -> (Arc<dyn Database>, Arc<dyn Jobs>) {
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
        _ => panic!("bad store spec {spec:?}"),
    };
    let jobs = providers(vec![db.clone()]).await.remove(0);
    (db, jobs)
}
