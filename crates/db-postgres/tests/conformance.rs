//! The database conformance suite against PostgreSQL: a fresh schema per
//! case on the server at `DATABASE_URL` (default 127.0.0.1:5432, database
//! `test`), all dropped afterwards.

use std::sync::Arc;

use truststream_conformance::{db, factory};
use truststream_core_db::Database;
use truststream_db_postgres::testing::{self, Scratch};

#[tokio::test(flavor = "multi_thread")]
async fn postgres_passes_the_whole_database_suite() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Arc::new(Scratch::new(url));
    let s = scratch.clone();
    let f = factory(move || {
        let s = s.clone();
        async move {
            let db = s.database("conf").await.map_err(|e| e.to_string())?;
            Ok(Arc::new(db) as Arc<dyn Database>)
        }
    });
    let report = db::run("postgres", f, None).await;
    report.print_table();
    scratch.cleanup().await.expect("drop scratch schemas");
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    assert_eq!(report.skipped_cases(), Vec::<&str>::new());
    assert_eq!(report.passed(), db::cases().len());
}
