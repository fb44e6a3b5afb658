//! The jobs conformance suite against the memory provider.

use std::sync::Arc;

use truststream_conformance::{factory, jobs};
use truststream_core_jobs::Jobs;
use truststream_jobs_memory::MemoryJobs;

#[tokio::test(flavor = "multi_thread")]
async fn memory_passes_the_jobs_suite() {
    let f = factory(|| async {
        Ok(jobs::JobsFixture::new(
            Arc::new(MemoryJobs::new()) as Arc<dyn Jobs>
        ))
    });
    let report = jobs::run("memory", f, None).await;
    report.print_table();
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    assert_eq!(
        report.skipped_cases(),
        vec!["tx.rollback_never_runs", "tx.commit_runs_once"],
        "only the transactional cases are skipped (no database)"
    );
    assert_eq!(report.cases.len(), jobs::cases().len());
}

#[tokio::test]
async fn registers_as_memory() {
    let mut reg = truststream_core_jobs::JobsRegistry::new("jobs");
    truststream_jobs_memory::register(&mut reg);
    let jobs = reg
        .build("memory", serde_json::Value::Null, None)
        .await
        .expect("memory builds");
    assert_eq!(jobs.info().name, "memory");
    let err = reg
        .build("memory", serde_json::json!({"nope": 1}), None)
        .await
        .err()
        .expect("unknown options are refused");
    assert_eq!(err.kind(), truststream_core::ErrorKind::InvalidInput);
}
