//! Completion in the handler's own transaction (`DbJobs::complete_with`)
//! on a SQLite file, with the failures it exists for injected:
//!
//! - a lease that ran out and was taken by another worker (another
//!   instance on its own handle to the file): the first run's completion is
//!   refused with `Conflict` and its write is absent; the second run's
//!   write is there once;
//! - a write of the handler's that fails (a taken primary key): `Conflict`
//!   as it is, nothing written, the job still running under its lease;
//! - handlers that fail after their writes, through a worker: nothing
//!   committed, each job retried, its effect there once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use truststream_conformance::jobs::shared::{
    count_effects, effects_schema, enqueue_numbered, wait_completed, EFFECTS_TABLE, EFFECT_TYPE,
};
use truststream_core_db::{to_row, Database, Operation, Query};
use truststream_core_jobs::{
    ClaimRequest, ErrorKind, JobContext, JobError, JobQuery, JobState, Jobs, Worker,
};
use truststream_jobs_db::{DbJobs, DbJobsConfig};

/// Two providers on their own handles to one SQLite file, with the effects
/// table.
async fn two_on_a_file(dir: &tempfile::TempDir) -> Vec<(Arc<dyn Database>, Arc<DbJobs>)> {
    let path = dir.path().join("jobs.db");
    let mut out = Vec::new();
    for db in support::sqlite_file(&path, 2).await {
        db.create_table(&effects_schema())
            .await
            .expect("effects table");
        let jobs = DbJobs::open(db.clone(), DbJobsConfig::default())
            .await
            .expect("open the jobs table");
        out.push((db, Arc::new(jobs)));
    }
    out
}

fn effect(n: u64, worker: &str) -> Operation {
    Operation::Create {
        table: EFFECTS_TABLE.into(),
        data: to_row(&json!({ "n": n, "worker": worker })).expect("row"),
    }
}

fn claim(worker: &str, lease: Duration) -> ClaimRequest {
    ClaimRequest {
        job_types: vec![EFFECT_TYPE.to_string()],
        batch: 1,
        lease,
        worker_id: worker.to_string(),
    }
}

async fn workers_of_effects(db: &dyn Database) -> Vec<String> {
    db.read(EFFECTS_TABLE, &Query::new())
        .await
        .expect("read effects")
        .into_iter()
        .map(|r| r["worker"].as_str().expect("worker").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_lost_its_lease_cannot_complete_and_its_write_is_absent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut both = two_on_a_file(&dir).await;
    let (db2, w2) = both.pop().expect("second");
    let (db1, w1) = both.pop().expect("first");
    enqueue_numbered(&*w1, 1, 1).await.expect("enqueue");
    let first = w1
        .claim(&claim("w1", Duration::from_millis(50)))
        .await
        .expect("claim")
        .pop()
        .expect("w1 claims the job");
    let second = loop {
        tokio::time::sleep(Duration::from_millis(60)).await;
        if let Some(c) = w2
            .claim(&claim("w2", Duration::from_secs(60)))
            .await
            .expect("claim")
            .pop()
        {
            break c;
        }
    };
    assert_eq!(second.job.attempts, 2);

    let refused = w1
        .complete_with(&first.lease, vec![effect(0, "w1")])
        .await
        .expect_err("a lost lease cannot complete");
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert!(
        workers_of_effects(&*db1).await.is_empty(),
        "w1's write was applied"
    );

    let out = w2
        .complete_with(&second.lease, vec![effect(0, "w2")])
        .await
        .expect("w2 completes");
    assert_eq!(out.len(), 1, "the outputs of the handler's operations");
    let job = w2.get(second.job.id).await.expect("get").expect("job");
    assert_eq!(job.state, JobState::Completed);
    let again = w2
        .complete_with(&second.lease, vec![effect(0, "w2")])
        .await
        .expect_err("completed once");
    assert_eq!(again.kind(), ErrorKind::Conflict, "{again}");
    assert_eq!(workers_of_effects(&*db2).await, vec!["w2".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_of_the_handler_completes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, jobs) = two_on_a_file(&dir).await.remove(0);
    enqueue_numbered(&*jobs, 1, 1).await.expect("enqueue");
    let c = jobs
        .claim(&claim("w", Duration::from_secs(60)))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    db.create(
        EFFECTS_TABLE,
        to_row(&json!({"id": 7, "n": 99, "worker": "other"})).expect("row"),
    )
    .await
    .expect("a row holding id 7");
    let taken = Operation::Create {
        table: EFFECTS_TABLE.into(),
        data: to_row(&json!({"id": 7, "n": 0, "worker": "w"})).expect("row"),
    };
    let e = jobs
        .complete_with(&c.lease, vec![effect(0, "w"), taken])
        .await
        .expect_err("the taken key fails the transaction");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(workers_of_effects(&*db).await, vec!["other".to_string()]);
    let job = jobs.get(c.job.id).await.expect("get").expect("job");
    assert_eq!(job.state, JobState::Running, "not completed");
    jobs.complete_with(&c.lease, vec![effect(0, "w")])
        .await
        .expect("the lease still completes");
    let mut w = workers_of_effects(&*db).await;
    w.sort();
    assert_eq!(w, vec!["other".to_string(), "w".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_fail_after_their_writes_commit_nothing() {
    const TOTAL: u64 = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, jobs) = two_on_a_file(&dir).await.remove(0);
    enqueue_numbered(&*jobs, TOTAL, 10).await.expect("enqueue");
    let dj = jobs.clone();
    let worker = Worker::builder(jobs.clone())
        .concurrency(4)
        .poll_interval(Duration::from_millis(50))
        .register(EFFECT_TYPE, move |ctx: JobContext, p: serde_json::Value| {
            let dj = dj.clone();
            async move {
                let n = p["n"].as_u64().expect("n");
                // The first attempt's write is followed by one that fails
                // (a row of another table that does not exist).
                let mut ops = vec![effect(n, "worker")];
                if ctx.attempt() == 1 {
                    ops.push(Operation::Create {
                        table: "no_such_table".into(),
                        data: to_row(&json!({"n": n})).expect("row"),
                    });
                }
                dj.complete_with(ctx.completion_lease(), ops)
                    .await
                    .map(|_| ())
                    .map_err(|e| JobError::retry(e.to_string()))
            }
        })
        .expect("register")
        .start()
        .expect("start");
    wait_completed(&*jobs, EFFECT_TYPE, TOTAL, Duration::from_secs(60))
        .await
        .expect("every job completes on its second attempt");
    let report = worker.stop(Duration::from_secs(10)).await;
    assert_eq!(report.completed, TOTAL, "{report:?}");
    assert_eq!(report.failed, TOTAL, "{report:?}");
    assert_eq!(report.lost_leases, 0, "{report:?}");
    let effects = count_effects(&*db, TOTAL).await.expect("effects");
    assert!(effects.missing.is_empty(), "lost: {:?}", effects.missing);
    assert!(effects.repeated.is_empty(), "twice: {:?}", effects.repeated);
    for job in jobs.list(&JobQuery::default()).await.expect("list") {
        assert_eq!((job.state, job.attempts), (JobState::Completed, 2));
    }
}
