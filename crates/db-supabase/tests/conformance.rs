//! The database conformance suite against `truststream serve` in process:
//! CRUD and queries over `/rest/v1` with the service-role key, and what
//! REST cannot do (schema changes, transactions, raw SQL, joins,
//! aggregates, `describe_table`) through the SQL backend, which is the very
//! database the server serves.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::{with_sql_backend, with_sql_backend_and_feed, Calls};
use truststream_conformance::{db, factory};
use truststream_core_db::Database;

/// Cases skipped on this provider, with why.
const SKIPPED: &[(&str, &str)] = &[
    // change_feed is false without a realtime provider attached
    // (SupabaseDb::with_change_feed); the suite skips by capability.
    ("changes.insert_update_delete", "no change feed attached"),
    ("changes.table_filter", "no change feed attached"),
    ("changes.batch_and_transaction", "no change feed attached"),
    ("changes.nothing_on_rollback", "no change feed attached"),
];

/// The SQL backend served only what REST cannot: never a CRUD call, reads
/// only for joins and aggregates.
fn assert_rest_carried_crud(calls: &Calls) {
    let all = calls.all();
    let crud = [
        "create",
        "read",
        "get",
        "update",
        "delete",
        "create_many",
        "update_many",
        "delete_many",
    ];
    let leaked: Vec<&String> = all.iter().filter(|c| crud.contains(&c.as_str())).collect();
    assert!(
        leaked.is_empty(),
        "CRUD calls reached the SQL backend: {leaked:?}"
    );
    assert!(
        all.iter().any(|c| c == "read(sql-only)"),
        "joins/aggregates went to the SQL backend"
    );
    assert!(all.iter().any(|c| c == "create_table"));
}

/// Skipped only over db-memory: its SQL backend has no raw SQL
/// (`raw_sql` is the backend's capability).
const SKIPPED_MEMORY: &[(&str, &str)] = &[
    ("aggregate.raw_query_guide_sql", "db-memory has no raw SQL"),
    ("raw.one_statement_per_call", "db-memory has no raw SQL"),
    ("query.full_text_search", "db-memory has no text search"),
];

/// Skipped only over db-sqlite: it has no PostgreSQL text search
/// (`full_text_search` is the backend's capability).
const SKIPPED_SQLITE: &[(&str, &str)] = &[("query.full_text_search", "SQLite has no text search")];

fn check(report: &truststream_conformance::Report, extra: &[(&str, &str)]) {
    report.print_table();
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    let mut want: Vec<&str> = SKIPPED.iter().chain(extra).map(|(n, _)| *n).collect();
    let order: Vec<&str> = db::cases().iter().map(|c| c.name).collect();
    want.sort_by_key(|n| order.iter().position(|o| o == n));
    assert_eq!(report.skipped_cases(), want);
    assert_eq!(report.passed(), db::cases().len() - want.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_over_memory_passes_the_database_suite() {
    let calls = Arc::new(Calls::default());
    let c = calls.clone();
    let f = factory(move || {
        let calls = c.clone();
        async move {
            let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
            with_sql_backend(db, calls).await
        }
    });
    let report = db::run("supabase(serve+memory)", f, None).await;
    check(&report, SKIPPED_MEMORY);
    assert_rest_carried_crud(&calls);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_over_sqlite_passes_the_database_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    let n = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(Calls::default());
    let c = calls.clone();
    let f = factory(move || {
        let path = root.join(format!("case-{}.db", n.fetch_add(1, Ordering::SeqCst)));
        let calls = c.clone();
        async move {
            let db = truststream_db_sqlite::SqliteDatabase::open(
                truststream_db_sqlite::SqliteConfig::file(path),
            )
            .await
            .map_err(|e| e.to_string())?;
            with_sql_backend(Arc::new(db), calls).await
        }
    });
    let report = db::run("supabase(serve+sqlite)", f, None).await;
    check(&report, SKIPPED_SQLITE);
    assert_rest_carried_crud(&calls);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_over_memory_with_a_realtime_change_feed_passes_the_database_suite() {
    let calls = Arc::new(Calls::default());
    let c = calls.clone();
    let f = factory(move || {
        let calls = c.clone();
        async move {
            let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
            with_sql_backend_and_feed(db, calls).await
        }
    });
    let report = db::run("supabase(serve+memory+realtime)", f, None).await;
    report.print_table();
    // The realtime feed is per table (Supabase Realtime's postgres_changes;
    // core-realtime's ChangeSpec names one table): these cases subscribe
    // to every table at once and get Unsupported.
    let all_tables = [
        "changes.table_filter",
        "changes.batch_and_transaction",
        "changes.nothing_on_rollback",
    ];
    let failed: Vec<&str> = report
        .cases
        .iter()
        .filter_map(|c| match &c.outcome {
            truststream_conformance::CaseOutcome::Failed(why) => {
                assert!(
                    why.contains("unsupported") && why.contains("name the table"),
                    "{}: {why}",
                    c.case
                );
                Some(c.case)
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed, all_tables, "{}", report.summary());
    assert_eq!(
        report.passed(),
        db::cases().len() - all_tables.len() - SKIPPED_MEMORY.len()
    );
    let want: Vec<&str> = SKIPPED_MEMORY.iter().map(|(n, _)| *n).collect();
    assert_eq!(report.skipped_cases(), want);
    assert_rest_carried_crud(&calls);
}
