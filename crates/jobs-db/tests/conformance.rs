//! The jobs conformance suite over the generic database provider, on
//! db-memory, SQLite (in memory and files) and PostgreSQL (a scratch schema
//! per case on the server at `DATABASE_URL`, all dropped afterwards).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use truststream_conformance::{factory, jobs, Report};
use truststream_core_db::Database;
use truststream_core_jobs::Jobs;
use truststream_db_memory::MemoryDatabase;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_jobs_db::{DbJobs, DbJobsConfig};

async fn fixture(db: Arc<dyn Database>) -> Result<jobs::JobsFixture, String> {
    let j = DbJobs::open(db.clone(), DbJobsConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(jobs::JobsFixture::new(Arc::new(j) as Arc<dyn Jobs>).with_database(db))
}

fn check(report: &Report) {
    report.print_table();
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    assert_eq!(report.skipped_cases(), Vec::<&str>::new());
    assert_eq!(report.passed(), jobs::cases().len());
}

#[tokio::test(flavor = "multi_thread")]
async fn over_db_memory() {
    let f = factory(|| async { fixture(Arc::new(MemoryDatabase::new())).await });
    check(&jobs::run("database/memory", f, None).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_sqlite_in_memory() {
    let f = factory(|| async {
        let db = SqliteDatabase::in_memory()
            .await
            .map_err(|e| e.to_string())?;
        fixture(Arc::new(db)).await
    });
    check(&jobs::run("database/sqlite", f, None).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_sqlite_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    let n = Arc::new(AtomicUsize::new(0));
    let f = factory(move || {
        let path = root.join(format!("case-{}.db", n.fetch_add(1, Ordering::SeqCst)));
        async move {
            let db = SqliteDatabase::open(SqliteConfig::file(path))
                .await
                .map_err(|e| e.to_string())?;
            fixture(Arc::new(db)).await
        }
    });
    check(&jobs::run("database/sqlite-file", f, None).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Arc::new(Scratch::new(url));
    let s = scratch.clone();
    let f = factory(move || {
        let s = s.clone();
        async move {
            let db = s.database("jobs").await.map_err(|e| e.to_string())?;
            fixture(Arc::new(db)).await
        }
    });
    let report = jobs::run("database/postgres", f, None).await;
    scratch.cleanup().await.expect("drop scratch schemas");
    check(&report);
}

#[tokio::test]
async fn registers_as_database_and_needs_one() {
    let mut reg = truststream_core_jobs::JobsRegistry::new("jobs");
    truststream_jobs_db::register(&mut reg);
    let err = reg
        .build("database", serde_json::Value::Null, None)
        .await
        .err()
        .expect("no database is an error");
    assert_eq!(err.kind(), truststream_core::ErrorKind::InvalidInput);
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let jobs = reg
        .build(
            "database",
            serde_json::json!({"table": "my_jobs"}),
            Some(db.clone()),
        )
        .await
        .expect("builds over db-memory");
    assert_eq!(jobs.info().name, "database");
    assert!(db
        .describe_table("my_jobs")
        .await
        .expect("describe")
        .is_some());
    let err = reg
        .build(
            "database",
            serde_json::json!({"table": "bad name;"}),
            Some(db),
        )
        .await
        .err()
        .expect("a bad table name is refused");
    assert_eq!(err.kind(), truststream_core::ErrorKind::InvalidInput);
}

/// Jobs in SQLite's `:memory:` (or db-memory) die with the process: not
/// durable, not shared; jobs in a SQLite file are both.
#[tokio::test(flavor = "multi_thread")]
async fn durable_only_on_a_file() {
    let mem = fixture(Arc::new(SqliteDatabase::in_memory().await.expect("sqlite")))
        .await
        .expect("fixture");
    let caps = mem.jobs.capabilities();
    assert!(!caps.durable && !caps.shared, "{caps:?}");
    let dbm = fixture(Arc::new(MemoryDatabase::new()))
        .await
        .expect("fixture");
    assert!(!dbm.jobs.capabilities().durable);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = SqliteDatabase::open(SqliteConfig::file(dir.path().join("j.db")))
        .await
        .expect("sqlite file");
    let caps = fixture(Arc::new(file))
        .await
        .expect("fixture")
        .jobs
        .capabilities();
    assert!(caps.durable && caps.shared, "{caps:?}");
}
