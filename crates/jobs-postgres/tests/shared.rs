//! Several provider instances (each with its own pool and `LISTEN`
//! connection) share one PostgreSQL schema: every job runs exactly once;
//! jobs enqueued in a db-postgres transaction run once when it commits and
//! never when it rolls back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use truststream_core_db::{ColumnDef, Database, Operation, Row, TableSchema};
use truststream_core_jobs::{JobContext, JobError, JobState, Jobs, NewJob, Worker, WorkerHandle};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
use truststream_jobs_postgres::{PgJobs, PgJobsConfig};

const JOBS: u64 = 300;

#[derive(serde::Deserialize)]
struct Payload {
    n: u64,
}

type Seen = Arc<Mutex<BTreeMap<u64, Vec<String>>>>;

/// A worker on `jobs` that records which worker ran each job of type `t`.
fn worker(jobs: Arc<dyn Jobs>, t: &str, id: String, poll: Duration, seen: Seen) -> WorkerHandle {
    Worker::builder(jobs)
        .concurrency(4)
        .poll_interval(poll)
        .worker_id(id)
        .register(t, move |ctx: JobContext, p: Payload| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(p.n)
                    .or_default()
                    .push(ctx.worker_id().to_string());
                Ok::<(), JobError>(())
            }
        })
        .expect("register")
        .start()
        .expect("start")
}

async fn wait_completed(jobs: &dyn Jobs, t: &str, want: u64) {
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = jobs
            .stats()
            .await
            .expect("stats")
            .count(t, JobState::Completed);
        if done == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "only {done} of {want} {t} jobs completed in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_a_schema_and_run_each_job_once() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_shared")
        .schema
        .expect("scratch schema");
    let mut providers = Vec::new();
    for _ in 0..3 {
        let j = PgJobs::open(PgJobsConfig::new(url.clone()).with_schema(schema.clone()))
            .await
            .expect("open the jobs table");
        providers.push(Arc::new(j) as Arc<dyn Jobs>);
    }
    truststream_conformance::jobs::shared::each_job_once_across(
        &providers,
        JOBS,
        Duration::from_millis(200),
    )
    .await
    .expect("every job runs exactly once, on several instances");
    let total = 3 * JOBS;
    assert_eq!(
        providers[0]
            .purge_finished(truststream_core_jobs::lifecycle::now())
            .await
            .expect("purge"),
        total,
        "completed jobs are purged (in batches of 1,000)"
    );
    assert!(providers[1].stats().await.expect("stats").counts.is_empty());
    scratch.cleanup().await.expect("drop the scratch schema");
}

/// Through db-postgres on the same schema: a rolled-back job never runs, a
/// committed one runs once, and its NOTIFY wakes a worker on another
/// instance that would otherwise poll once an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactional_enqueue_through_db_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let config = scratch.config("pgjobs_tx");
    let schema = config.schema.clone().expect("scratch schema");
    let db = PgDatabase::open(config).await.expect("open db-postgres");
    let producer = PgJobs::open(PgJobsConfig::new(url.clone()).with_schema(schema.clone()))
        .await
        .expect("open the producer");
    let consumer: Arc<dyn Jobs> = Arc::new(
        PgJobs::open(PgJobsConfig::new(url.clone()).with_schema(schema))
            .await
            .expect("open the consumer"),
    );
    let mut orders = TableSchema::new("orders")
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("note"));
    orders.if_not_exists = true;
    db.create_table(&orders).await.expect("orders table");
    let order = |id: &str| {
        let mut data = Row::new();
        data.insert("id".into(), json!(id));
        data.insert("note".into(), json!("paid"));
        Operation::Create {
            table: "orders".into(),
            data,
        }
    };
    let seen: Seen = Arc::default();
    let w = worker(
        consumer.clone(),
        "tx",
        "tx-worker".into(),
        Duration::from_secs(3600),
        seen.clone(),
    );
    // Let the worker's first (empty) claim pass so that it sleeps.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let rolled_back = producer
        .enqueue_operation(&NewJob::new("tx", &json!({"n": 1})).expect("job"))
        .expect("operation");
    let missing = Operation::Update {
        table: "orders".into(),
        id: json!("no-such-order"),
        data: Row::new(),
    };
    db.transaction(vec![order("o1"), rolled_back.operation, missing])
        .await
        .expect_err("the transaction fails on its last operation");
    let committed = producer
        .enqueue_operation(&NewJob::new("tx", &json!({"n": 2})).expect("job"))
        .expect("operation");
    db.transaction(vec![order("o2"), committed.operation])
        .await
        .expect("commit");
    wait_completed(consumer.as_ref(), "tx", 1).await;
    let report = w.stop(Duration::from_secs(20)).await;
    assert_eq!(report.completed, 1, "{report:?}");
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![2],
        "only the committed job ran"
    );
    assert_eq!(seen[&2].len(), 1, "once");
    assert!(consumer.get(rolled_back.id).await.expect("get").is_none());
    let job = consumer
        .get(committed.id)
        .await
        .expect("get")
        .expect("the job");
    assert_eq!((job.state, job.attempts), (JobState::Completed, 1));
    drop(db);
    scratch.cleanup().await.expect("drop the scratch schema");
}
