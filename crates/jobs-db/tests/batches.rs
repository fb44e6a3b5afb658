//! On a database with transactions, a claim's compare-and-sets commit
//! together, and completions asked for at once are written in one
//! transaction, each keeping its own answer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_jobs::{ClaimRequest, JobId, JobState, Jobs, Lease, NewJob};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_jobs_db::{DbJobs, DbJobsConfig};

fn request(batch: usize) -> ClaimRequest {
    ClaimRequest {
        job_types: vec!["t".into()],
        batch,
        lease: Duration::from_secs(120),
        worker_id: "batch-test".into(),
    }
}

async fn sqlite_jobs(dir: &tempfile::TempDir) -> DbJobs {
    let db = SqliteDatabase::open(SqliteConfig::file(dir.path().join("jobs.db")))
        .await
        .expect("open sqlite");
    DbJobs::open(Arc::new(db), DbJobsConfig::default())
        .await
        .expect("open jobs")
}

// One thread: the completions below are all queued before the batching
// task takes the first, so they form one batch.
#[tokio::test(flavor = "current_thread")]
async fn completions_asked_at_once_share_a_transaction_and_keep_their_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let jobs = sqlite_jobs(&dir).await;
    let batch = (0..3)
        .map(|i| NewJob::new("t", &json!({ "i": i })).expect("job"))
        .collect();
    jobs.enqueue_many(batch).await.expect("enqueue");
    let c = jobs.claim(&request(3)).await.expect("claim");
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|c| c.job.state == JobState::Running));

    let mut stale = c[1].lease.clone();
    stale.token = "not-the-token".into();
    let unknown = Lease {
        job_id: JobId::new(),
        ..c[2].lease.clone()
    };
    let leases = [c[0].lease.clone(), stale, unknown, c[2].lease.clone()];
    let before = jobs.completion_batches();
    let answers = futures::future::join_all(leases.iter().map(|l| jobs.complete(l))).await;
    let after = jobs.completion_batches();
    assert_eq!(
        (after.batches - before.batches, after.items - before.items),
        (1, 4),
        "four completions in one batch"
    );
    assert!(answers[0].is_ok() && answers[3].is_ok(), "{answers:?}");
    assert_eq!(
        answers[1].as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::Conflict)
    );
    assert_eq!(
        answers[2].as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    );
    let state = |id| {
        let jobs = &jobs;
        async move { jobs.get(id).await.expect("get").expect("the job").state }
    };
    assert_eq!(state(c[0].job.id).await, JobState::Completed);
    assert_eq!(
        state(c[1].job.id).await,
        JobState::Running,
        "the stale lease changed nothing"
    );
    assert_eq!(state(c[2].job.id).await, JobState::Completed);
    // The right lease still completes the job the stale one could not.
    jobs.complete(&c[1].lease).await.expect("complete");
    assert_eq!(state(c[1].job.id).await, JobState::Completed);
    // A completion after close is refused, unapplied.
    let more = jobs
        .enqueue(NewJob::new("t", &json!({})).expect("job"))
        .await
        .expect("enqueue");
    let last = jobs.claim(&request(1)).await.expect("claim");
    assert_eq!(last[0].job.id, more.id());
    jobs.close().await.expect("close");
    let e = jobs.complete(&last[0].lease).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

/// Two instances on one file claim the same queue at once: every job is
/// claimed by exactly one of them, however their transactions interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_two_instances_never_take_the_same_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = Arc::new(sqlite_jobs(&dir).await);
    let b = Arc::new(sqlite_jobs(&dir).await);
    let n = 300;
    let batch = (0..n)
        .map(|i| NewJob::new("t", &json!({ "i": i })).expect("job"))
        .collect();
    a.enqueue_many(batch).await.expect("enqueue");
    let take = |jobs: Arc<DbJobs>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let c = jobs.claim(&request(7)).await.expect("claim");
                if c.is_empty() {
                    break;
                }
                got.extend(c.into_iter().map(|c| c.job.id));
            }
            got
        })
    };
    let (ga, gb) = (take(a.clone()), take(b.clone()));
    let (ga, gb) = (ga.await.expect("join"), gb.await.expect("join"));
    let mut all: Vec<JobId> = ga.iter().chain(&gb).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), ga.len() + gb.len(), "a job was claimed twice");
    assert_eq!(all.len(), n, "a job was left unclaimed");
}
