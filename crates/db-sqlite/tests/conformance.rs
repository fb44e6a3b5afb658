//! The database conformance suite against the SQLite provider: a fresh
//! private `:memory:` database per case, and the whole suite once more on
//! database files (WAL mode, pooled connections) in a temporary directory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use truststream_conformance::{db, factory};
use truststream_core_db::Database;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_in_memory_passes_the_whole_database_suite() {
    let f = factory(|| async {
        let db = SqliteDatabase::in_memory()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(db) as Arc<dyn Database>)
    });
    let report = db::run("sqlite", f, None).await;
    report.print_table();
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    // SQLite has no PostgreSQL text search (`full_text_search = false`).
    assert_eq!(report.skipped_cases(), vec!["query.full_text_search"]);
    assert_eq!(report.passed(), db::cases().len() - 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_files_pass_the_whole_database_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    let n = Arc::new(AtomicUsize::new(0));
    let f = factory(move || {
        let path = root.join(format!("case-{}.db", n.fetch_add(1, Ordering::SeqCst)));
        async move {
            let db = SqliteDatabase::open(SqliteConfig::file(path))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(db) as Arc<dyn Database>)
        }
    });
    let report = db::run("sqlite-file", f, None).await;
    report.print_table();
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    // SQLite has no PostgreSQL text search (`full_text_search = false`).
    assert_eq!(report.skipped_cases(), vec!["query.full_text_search"]);
}
