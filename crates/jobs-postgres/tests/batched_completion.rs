//! Completions are written in batches: concurrent `complete` calls of one
//! instance share one statement (and no transaction of their own), counted
//! from sqlx's own statement log (every statement sqlx runs is a `tracing`
//! event of target `sqlx::query`), against the same completions written one
//! per transaction (`complete_batch = 1`). Each call still gets its own
//! answer: a stale lease in a batch is `Conflict` and changes nothing, an
//! unknown job `NotFound`, while the rest of the batch commits. A worker's
//! graceful stop returns with every completion it reported written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tracing::level_filters::LevelFilter;
use tracing::span;
use truststream_core::ErrorKind;
use truststream_core_jobs::{
    ClaimRequest, ClaimedJob, JobContext, JobError, JobId, JobState, Jobs, Lease, NewJob, Worker,
};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

/// Counts the statements sqlx runs in this process.
struct StatementLog(Arc<AtomicU64>);

impl tracing::Subscriber for StatementLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "sqlx::query"
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

const JOBS: usize = 200;

fn request(batch: usize) -> ClaimRequest {
    ClaimRequest {
        job_types: vec!["t".into()],
        batch,
        lease: Duration::from_secs(120),
        worker_id: "batch-test".into(),
    }
}

/// Enqueues and claims `n` jobs of type `t` on `jobs`.
async fn claimed(jobs: &PgJobs, n: usize) -> Vec<ClaimedJob> {
    let batch = (0..n)
        .map(|i| NewJob::new("t", &json!({ "i": i })).expect("job"))
        .collect();
    jobs.enqueue_many(batch).await.expect("enqueue");
    let c = jobs.claim(&request(n)).await.expect("claim");
    assert_eq!(c.len(), n);
    c
}

/// Completes every lease at once (one task each); the statements sqlx ran
/// meanwhile.
async fn complete_all(jobs: &Arc<PgJobs>, leases: Vec<Lease>, log: &AtomicU64) -> u64 {
    let before = log.load(Ordering::Relaxed);
    let tasks: Vec<_> = leases
        .into_iter()
        .map(|l| {
            let jobs = jobs.clone();
            tokio::spawn(async move { jobs.complete(&l).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("complete");
    }
    log.load(Ordering::Relaxed) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completions_share_statements_and_keep_their_own_answers() {
    let log = Arc::new(AtomicU64::new(0));
    tracing::subscriber::set_global_default(StatementLog(log.clone()))
        .expect("the only subscriber of this test binary");
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_batch")
        .schema
        .expect("scratch schema");
    let config = PgJobsConfig::new(url.clone()).with_schema(schema.clone());
    let batched = Arc::new(PgJobs::open(config.clone()).await.expect("open"));
    let mut single = config.clone();
    single.complete_batch = 1;
    single.complete_linger_ms = 0;
    let single = Arc::new(PgJobs::open(single).await.expect("open"));

    // One completion per transaction: the statements of each.
    let leases = claimed(&single, JOBS).await.into_iter().map(|c| c.lease);
    let one_by_one = complete_all(&single, leases.collect(), &log).await;
    // The claim went through the writer too, in a batch of its own.
    assert_eq!(single.completion_batches().batches, JOBS as u64 + 1);
    // The same completions, batched.
    let leases = claimed(&batched, JOBS).await.into_iter().map(|c| c.lease);
    let together = complete_all(&batched, leases.collect(), &log).await;
    let b = batched.completion_batches();
    eprintln!(
        "{JOBS} completions: {one_by_one} statements one per transaction, {together} batched \
         ({} batches, largest {})",
        b.batches, b.largest
    );
    assert!(
        one_by_one >= JOBS as u64,
        "at least one statement each: {one_by_one}"
    );
    assert!(
        together * 4 <= one_by_one,
        "batched completions cost at most a quarter of the statements: {together} vs {one_by_one}"
    );
    assert_eq!(b.items, JOBS as u64 + 1, "the completions and the claim");
    assert!(b.batches * 4 <= JOBS as u64, "{b:?}");
    let stats = batched.stats().await.expect("stats");
    assert_eq!(stats.count("t", JobState::Completed), 2 * JOBS as u64);
    let runs = stats.run_times_of("t").expect("run times");
    assert_eq!(runs.sampled, (2 * JOBS) as u64, "{runs:?}");

    // Completed together (one batch, unless the linger splits them): a
    // stale lease and an unknown job fail alone.
    let c = claimed(&batched, 3).await;
    let mut stale = c[1].lease.clone();
    stale.token = "not-the-token".into();
    let unknown = Lease {
        job_id: JobId::new(),
        ..c[2].lease.clone()
    };
    // A stale lease of a job whose current lease is in the same batch is
    // answered `Conflict`, the current one `Ok`, whatever their order.
    let mut stale_of_first = c[0].lease.clone();
    stale_of_first.token = "an-older-token".into();
    let leases = [
        stale_of_first,
        c[0].lease.clone(),
        stale,
        unknown,
        c[2].lease.clone(),
    ];
    let answers = futures_join(&batched, &leases).await;
    assert!(answers[1].is_ok() && answers[4].is_ok(), "{answers:?}");
    assert_eq!(
        answers[0].as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::Conflict)
    );
    assert_eq!(
        answers[2].as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::Conflict)
    );
    assert_eq!(
        answers[3].as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    );
    let still = batched.get(c[1].job.id).await.expect("get").expect("job");
    assert_eq!(
        still.state,
        JobState::Running,
        "a stale lease changes nothing"
    );
    batched
        .complete(&c[1].lease)
        .await
        .expect("its own lease completes it");

    // A worker's stop returns with every completion it counted written.
    let w = Worker::builder(batched.clone() as Arc<dyn Jobs>)
        .concurrency(16)
        .poll_interval(Duration::from_millis(50))
        .register("w", |_ctx: JobContext, _p: serde_json::Value| async move {
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
    let jobs: Vec<NewJob> = (0..300)
        .map(|i| NewJob::new("w", &json!(i)).expect("job"))
        .collect();
    batched.enqueue_many(jobs).await.expect("enqueue");
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    while w.report().completed < 150 {
        assert!(tokio::time::Instant::now() < until, "{:?}", w.report());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = w.stop(Duration::from_secs(20)).await;
    let stats = batched.stats().await.expect("stats");
    assert_eq!(
        stats.count("w", JobState::Completed),
        report.completed,
        "{report:?}"
    );
    assert_eq!(
        stats.count("w", JobState::Completed) + stats.count("w", JobState::Queued),
        300,
        "released or never claimed jobs are queued: {stats:?}"
    );
    drop((batched, single));
    scratch.cleanup().await.expect("drop the scratch schema");
}

/// Completes `leases` concurrently; the answers in order.
async fn futures_join(
    jobs: &Arc<PgJobs>,
    leases: &[Lease],
) -> Vec<Result<(), truststream_core::Error>> {
    let tasks: Vec<_> = leases
        .iter()
        .cloned()
        .map(|l| {
            let jobs = jobs.clone();
            tokio::spawn(async move { jobs.complete(&l).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

/// A batch whose transaction fails answers every call of it with that
/// error's kind and retry status, and commits none of them: the jobs stay
/// running under their leases, which complete them once the store works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_fails_every_call_with_its_kind_and_completes_none() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_batch_fail")
        .schema
        .expect("scratch schema");
    let mut config = PgJobsConfig::new(url.clone()).with_schema(schema.clone());
    config.complete_linger_ms = 50;
    let jobs = Arc::new(PgJobs::open(config).await.expect("open"));
    // The run-time sample insert, part of the batch's one statement, fails with a
    // serialization failure (SQLSTATE 40001: Unavailable, retryable).
    let admin = sqlx::PgPool::connect(&url).await.expect("connect");
    let samples = format!("\"{schema}\".truststream_jobs_run_samples");
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION \"{schema}\".refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '40001'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON {samples} \
         FOR EACH ROW EXECUTE FUNCTION \"{schema}\".refuse()"
    ))
    .execute(&admin)
    .await
    .expect("a refusing trigger");

    let c = claimed(&jobs, 5).await;
    let leases: Vec<Lease> = c.iter().map(|c| c.lease.clone()).collect();
    let answers = futures_join(&jobs, &leases).await;
    for a in &answers {
        let e = a.as_ref().expect_err("the batch failed");
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.is_retryable(), "{e}");
        assert!(e.message().contains("refused by the test"), "{e}");
    }
    for c in &c {
        let job = jobs.get(c.job.id).await.expect("get").expect("job");
        assert_eq!(job.state, JobState::Running, "nothing was committed");
    }

    sqlx::query(&format!("DROP TRIGGER refuse ON {samples}"))
        .execute(&admin)
        .await
        .expect("drop the trigger");
    let answers = futures_join(&jobs, &leases).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let stats = jobs.stats().await.expect("stats");
    assert_eq!(stats.count("t", JobState::Completed), 5);
    admin.close().await;
    drop(jobs);
    scratch.cleanup().await.expect("drop the scratch schema");
}

/// The slot sequence is shared by every instance and wraps, so one batch
/// may draw the same slot twice (here: a sequence of two slots, as when
/// other instances draw a thousand slots while a batch's insert runs).
/// The batch still commits, keeping one sample of each slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_draws_a_slot_twice_still_commits() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_batch_wrap")
        .schema
        .expect("scratch schema");
    let mut config = PgJobsConfig::new(url.clone()).with_schema(schema.clone());
    config.complete_linger_ms = 50;
    let jobs = Arc::new(PgJobs::open(config).await.expect("open"));
    let admin = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::query(&format!(
        "ALTER SEQUENCE \"{schema}\".truststream_jobs_run_slot MAXVALUE 1"
    ))
    .execute(&admin)
    .await
    .expect("a sequence of two slots");

    let c = claimed(&jobs, 5).await;
    let leases: Vec<Lease> = c.iter().map(|c| c.lease.clone()).collect();
    let answers = futures_join(&jobs, &leases).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let stats = jobs.stats().await.expect("stats");
    assert_eq!(stats.count("t", JobState::Completed), 5);
    let runs = stats.run_times_of("t").expect("run times");
    assert_eq!(runs.sampled, 2, "{runs:?}");
    admin.close().await;
    drop(jobs);
    scratch.cleanup().await.expect("drop the scratch schema");
}

/// A claim takes the completions queued before it into its own statement
/// (one batch, one commit): each completion keeps its own answer, and the
/// claim gets the queued jobs, none of the ones completed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_carries_the_queued_completions_and_each_keeps_its_answer() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_ride")
        .schema
        .expect("scratch schema");
    let mut config = PgJobsConfig::new(url.clone()).with_schema(schema);
    // Completions wait for company far longer than the test: only the
    // claim ends their wait.
    config.complete_linger_ms = 60_000;
    let jobs = Arc::new(PgJobs::open(config).await.expect("open"));
    let c = claimed(&jobs, 3).await;
    let fresh: Vec<NewJob> = (0..4)
        .map(|i| NewJob::new("t", &json!({ "fresh": i })).expect("job"))
        .collect();
    let fresh_ids: std::collections::BTreeSet<JobId> = fresh.iter().map(|j| j.id).collect();
    jobs.enqueue_many(fresh).await.expect("enqueue");
    let before = jobs.completion_batches();

    let mut stale = c[1].lease.clone();
    stale.token = "not-the-token".into();
    let unknown = Lease {
        job_id: JobId::new(),
        ..c[2].lease.clone()
    };
    let leases = vec![c[0].lease.clone(), stale, unknown, c[2].lease.clone()];
    let completing = {
        let jobs = jobs.clone();
        tokio::spawn(async move { futures_join(&jobs, &leases).await })
    };
    // Let the completions queue (they linger, unwritten), then claim.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(jobs.completion_batches(), before, "nothing written yet");
    let started = tokio::time::Instant::now();
    let got = jobs.claim(&request(10)).await.expect("claim");
    let answers = completing.await.expect("join");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the claim did not linger"
    );
    let got_ids: std::collections::BTreeSet<JobId> = got.iter().map(|g| g.job.id).collect();
    assert_eq!(got_ids, fresh_ids, "the claim got the queued jobs only");
    assert!(got.iter().all(|g| g.job.state == JobState::Running));
    assert!(answers[0].is_ok() && answers[3].is_ok(), "{answers:?}");
    assert_eq!(
        answers[1].as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::Conflict)
    );
    assert_eq!(
        answers[2].as_ref().map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    );
    let after = jobs.completion_batches();
    assert_eq!(
        (after.batches - before.batches, after.items - before.items),
        (1, 5),
        "four completions and the claim in one batch"
    );
    for (i, state) in [
        (0, JobState::Completed),
        (1, JobState::Running),
        (2, JobState::Completed),
    ] {
        let job = jobs.get(c[i].job.id).await.expect("get").expect("job");
        assert_eq!(job.state, state, "job {i}");
    }
    // The completed jobs have their attempt in the history and run times.
    let done = jobs.get(c[0].job.id).await.expect("get").expect("job");
    assert_eq!(done.history.len(), 1, "{:?}", done.history);
    let stats = jobs.stats().await.expect("stats");
    assert_eq!(
        stats.run_times_of("t").expect("run times").sampled,
        2,
        "{stats:?}"
    );
    jobs.close().await.expect("close");
}
