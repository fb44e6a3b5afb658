//! The claim function and the one-statement completion apply the shared
//! lifecycle's rules in SQL (`Job::start` for queued jobs, `Job::complete`):
//! each job they write equals, field for field, the job the Rust rules
//! make of the same job at the same time, history trimming included, and
//! both kinds of claim (queued, lease expired) come out of one claim call.

use std::time::Duration;

use serde_json::json;
use truststream_core_jobs::{Backoff, ClaimRequest, JobError, JobState, Jobs, NewJob, MAX_HISTORY};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

fn request(batch: usize, lease: Duration) -> ClaimRequest {
    ClaimRequest {
        job_types: vec!["t".into()],
        batch,
        lease,
        worker_id: "sql-rules".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_claims_and_completions_equal_the_shared_rules() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_rules")
        .schema
        .expect("scratch schema");
    let jobs = PgJobs::open(PgJobsConfig::new(url.clone()).with_schema(schema))
        .await
        .expect("open");
    let lease = Duration::from_secs(60);

    // A queued job: claimed, then completed.
    let id = jobs
        .enqueue(NewJob::new("t", &json!({"n": 1})).expect("job"))
        .await
        .expect("enqueue")
        .id();
    let queued = jobs.get(id).await.expect("get").expect("job");
    let claimed = jobs.claim(&request(1, lease)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    let at = c.job.started_at.expect("started");
    let mut expected = queued.clone();
    expected.start(at, lease, "sql-rules");
    assert_eq!(c.job, expected, "claimed as Job::start claims");
    assert_eq!(c.lease.expires_at, at + chrono::Duration::seconds(60));
    assert_eq!(c.lease.token.len(), 32, "{}", c.lease.token);
    assert!(c.lease.token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(jobs.get(id).await.expect("get").as_ref(), Some(&c.job));
    jobs.complete(&c.lease).await.expect("complete");
    let done = jobs.get(id).await.expect("get").expect("job");
    let mut expected = c.job.clone();
    expected.complete(done.finished_at.expect("finished"));
    assert_eq!(done, expected, "completed as Job::complete completes");
    assert_eq!(done.history.len(), 1);

    // A job with a full history: the oldest attempt is dropped.
    let id = jobs
        .enqueue(
            NewJob::new("t", &json!({"n": 2}))
                .expect("job")
                .max_attempts(MAX_HISTORY as u32 + 5)
                .backoff(Backoff::fixed(Duration::ZERO).jitter(0.0)),
        )
        .await
        .expect("enqueue")
        .id();
    for i in 0..MAX_HISTORY {
        let c = jobs.claim(&request(1, lease)).await.expect("claim");
        assert_eq!(c.len(), 1, "attempt {i}");
        jobs.fail(&c[0].lease, &JobError::retry(format!("failure {i}")))
            .await
            .expect("fail");
    }
    let c = jobs.claim(&request(1, lease)).await.expect("claim");
    let running = jobs.get(id).await.expect("get").expect("job");
    assert_eq!(running.history.len(), MAX_HISTORY);
    jobs.complete(&c[0].lease).await.expect("complete");
    let done = jobs.get(id).await.expect("get").expect("job");
    let mut expected = running.clone();
    expected.complete(done.finished_at.expect("finished"));
    assert_eq!(done, expected);
    assert_eq!(done.history.len(), MAX_HISTORY);
    assert_eq!(done.history[0].error.as_deref(), Some("failure 1"));
    assert_eq!(
        done.history.last().map(|a| a.attempt),
        Some(MAX_HISTORY as u32 + 1)
    );

    // One claim takes a queued job and a running one whose lease expired:
    // the expired one through the shared rules (the lost attempt
    // recorded), both with fresh leases.
    let short = Duration::from_millis(50);
    let expiring = jobs
        .enqueue(NewJob::new("t", &json!({"n": 3})).expect("job"))
        .await
        .expect("enqueue")
        .id();
    let first = jobs.claim(&request(1, short)).await.expect("claim");
    assert_eq!(first[0].job.id, expiring);
    let fresh = jobs
        .enqueue(NewJob::new("t", &json!({"n": 4})).expect("job"))
        .await
        .expect("enqueue")
        .id();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let both = jobs.claim(&request(5, lease)).await.expect("claim");
    let mut ids: Vec<_> = both.iter().map(|c| c.job.id).collect();
    ids.sort();
    let mut want = vec![expiring, fresh];
    want.sort();
    assert_eq!(ids, want);
    for c in &both {
        assert_eq!(c.job.state, JobState::Running);
        assert_ne!(c.lease.token, first[0].lease.token);
        assert_eq!(
            jobs.get(c.job.id).await.expect("get").as_ref(),
            Some(&c.job)
        );
    }
    let again = both
        .iter()
        .find(|c| c.job.id == expiring)
        .expect("expired one");
    assert_eq!(again.job.attempts, 2);
    assert!(again.job.history[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("lease expired")));
    // The stale lease no longer completes it; the new one does.
    let stale = jobs
        .complete(&first[0].lease)
        .await
        .expect_err("stale lease");
    assert_eq!(stale.kind(), truststream_core::ErrorKind::Conflict);
    for c in &both {
        jobs.complete(&c.lease).await.expect("complete");
    }
    drop(jobs);
    scratch.cleanup().await.expect("drop the scratch schema");
}
