//! The database conformance suite against the memory provider.

use std::sync::Arc;

use truststream_conformance::{db, factory};
use truststream_core_db::Database;
use truststream_db_memory::MemoryDatabase;

fn memory_factory() -> db::DbFactory {
    factory(|| async { Ok(Arc::new(MemoryDatabase::new()) as Arc<dyn Database>) })
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_passes_the_database_suite() {
    let report = db::run("memory", memory_factory(), None).await;
    report.print_table();
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    assert!(
        report.passed() >= 45,
        "expected at least 45 passing cases: {}",
        report.summary()
    );
    assert_eq!(
        report.cases.len(),
        db::cases().len(),
        "every case ran or was skipped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_skips_exactly_the_raw_sql_and_text_search_cases() {
    let report = db::run("memory", memory_factory(), None).await;
    assert_eq!(
        report.skipped_cases(),
        vec![
            "aggregate.raw_query_guide_sql",
            "raw.one_statement_per_call",
            "query.full_text_search"
        ]
    );
}
