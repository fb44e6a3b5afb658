//! The realtime conformance suite on the memory provider, wired to the
//! memory database's change feed.

use std::sync::Arc;

use truststream_conformance::{factory, realtime, CaseOutcome};
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_memory::MemoryRealtime;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_passes_the_realtime_suite() {
    let report = realtime::run(
        "memory",
        factory(|| async {
            let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
            let rt: Arc<dyn Realtime> = Arc::new(MemoryRealtime::with_change_feed(db.clone()));
            Ok(realtime::RealtimeFixture {
                realtime: rt.clone(),
                peer: rt,
                db: Some(db),
            })
        }),
        None,
    )
    .await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(report.passed() >= 14, "{}", report.summary());
    assert_eq!(
        report.passed(),
        realtime::cases().len(),
        "{}",
        report.summary()
    );
    assert_eq!(
        report.skipped_cases(),
        Vec::<&str>::new(),
        "no case may be skipped"
    );
}

/// Without a database the row cases are reported as skipped, by name, and
/// every other case still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_row_cases_are_skipped() {
    let report = realtime::run(
        "memory-no-db",
        factory(|| async {
            let rt: Arc<dyn Realtime> = Arc::new(MemoryRealtime::new());
            Ok(realtime::RealtimeFixture {
                realtime: rt.clone(),
                peer: rt,
                db: None,
            })
        }),
        Some("rows."),
    )
    .await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(report.passed(), 0, "{}", report.summary());
    assert_eq!(
        report.skipped_cases(),
        [
            "rows.subscribe_to_row_changes",
            "rows.table_subscription_event_filter",
            "rows.filter_subscription",
            "rows.unsubscribe_stops_events",
            "rows.invalid_spec_rejected",
        ]
    );
    for c in &report.cases {
        if let CaseOutcome::Skipped(why) = &c.outcome {
            assert!(why.contains("row_changes"), "{}: {why}", c.case);
        }
    }
}
