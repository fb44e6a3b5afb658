//! An instance that claims a job and dies (never completes, never extends)
//! loses it when the lease runs out: a worker on another instance runs it,
//! with the lost attempt in the history. And purging and batch inserts work
//! past their 1,000-row batches.

use std::time::Duration;

use serde_json::json;
use truststream_core_jobs::lifecycle;
use truststream_core_jobs::{ClaimRequest, JobState, Jobs, NewJob};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

async fn open(url: &str, schema: &str) -> PgJobs {
    PgJobs::open(PgJobsConfig::new(url).with_schema(schema))
        .await
        .expect("open the jobs table")
}

fn request(batch: usize, lease: Duration, worker: &str) -> ClaimRequest {
    ClaimRequest {
        job_types: vec!["t".into()],
        batch,
        lease,
        worker_id: worker.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_moves_the_job_to_another_instance() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_lease")
        .schema
        .expect("scratch schema");
    let a = open(&url, &schema).await;
    let b = open(&url, &schema).await;
    let id = a
        .enqueue(NewJob::new("t", &json!(1)).expect("job"))
        .await
        .expect("enqueue")
        .id();
    let dead = a
        .claim(&request(1, Duration::from_millis(300), "dies"))
        .await
        .expect("claim");
    assert_eq!(dead.len(), 1);
    // (That a held lease is not handed out is a conformance case; here the
    // short lease may run out before the next claim on a loaded machine.)
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let taken = loop {
        let c = b
            .claim(&request(1, Duration::from_secs(30), "b"))
            .await
            .expect("claim");
        if let Some(c) = c.into_iter().next() {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the expired lease was never reclaimed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((taken.job.id, taken.job.attempts), (id, 2));
    let err = a
        .complete(&dead[0].lease)
        .await
        .expect_err("the dead worker's lease is gone");
    assert_eq!(err.kind(), truststream_core::ErrorKind::Conflict);
    b.complete(&taken.lease).await.expect("complete");
    let job = a.get(id).await.expect("get").expect("the job");
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.history.len(), 2);
    assert!(job.history[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("lease expired")));
    drop((a, b));
    scratch.cleanup().await.expect("drop the scratch schema");
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_past_a_thousand_rows() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_purge")
        .schema
        .expect("scratch schema");
    let jobs = open(&url, &schema).await;
    const N: usize = 2500;
    let batch = (0..N)
        .map(|n| NewJob::new("t", &json!(n)).expect("job"))
        .collect();
    assert_eq!(jobs.enqueue_many(batch).await.expect("enqueue").len(), N);
    let claimed = jobs
        .claim(&request(N, Duration::from_secs(120), "w"))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), N, "one claim takes the whole batch");
    for c in &claimed {
        jobs.complete(&c.lease).await.expect("complete");
    }
    let kept = jobs
        .enqueue(NewJob::new("t", &json!("kept")).expect("job"))
        .await
        .expect("enqueue")
        .id();
    assert_eq!(
        jobs.purge_finished(lifecycle::now()).await.expect("purge"),
        N as u64
    );
    let stats = jobs.stats().await.expect("stats");
    assert_eq!(
        (
            stats.count("t", JobState::Completed),
            stats.count("t", JobState::Queued)
        ),
        (0, 1)
    );
    assert!(
        jobs.get(kept).await.expect("get").is_some(),
        "queued jobs stay"
    );
    drop(jobs);
    scratch.cleanup().await.expect("drop the scratch schema");
}
