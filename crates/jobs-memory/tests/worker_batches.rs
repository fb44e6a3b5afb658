//! A busy worker refills in batches: with 8 slots it claims again once 2
//! (a quarter) are free, not once per finished job. Jobs claimed together
//! share their `started_at` (one claim, one clock reading), so the claims
//! are read back from the completed jobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use truststream_core_jobs::{JobContext, JobError, JobQuery, JobState, Jobs, NewJob, Worker};
use truststream_jobs_memory::MemoryJobs;

const JOBS: u64 = 64;

#[derive(serde::Deserialize)]
struct Payload {
    n: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_claims_a_quarter_of_its_slots_at_a_time() {
    let jobs: Arc<dyn Jobs> = Arc::new(MemoryJobs::new());
    jobs.enqueue_many(
        (0..JOBS)
            .map(|n| NewJob::new("batch", &serde_json::json!({ "n": n })))
            .collect::<Result<Vec<_>, _>>()
            .expect("valid jobs"),
    )
    .await
    .expect("enqueue");
    let worker = Worker::builder(jobs.clone())
        .concurrency(8)
        // No poll runs out during the test: every claim after the first is
        // a refill or the one kept wake-up of the enqueue.
        .poll_interval(Duration::from_secs(600))
        .register("batch", |_ctx: JobContext, p: Payload| async move {
            // Finishing at different times, one at a time.
            tokio::time::sleep(Duration::from_millis(1 + p.n % 7)).await;
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = jobs
            .stats()
            .await
            .expect("stats")
            .count("batch", JobState::Completed);
        if done == JOBS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "only {done} of {JOBS} jobs completed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker.stop(Duration::from_secs(10)).await;
    assert_eq!(report.completed, JOBS, "{report:?}");

    let done = jobs
        .list(&JobQuery::new().job_type("batch").limit(1000))
        .await
        .expect("list");
    assert_eq!(done.len() as u64, JOBS);
    let mut claims: BTreeMap<_, u64> = BTreeMap::new();
    for j in &done {
        assert_eq!(j.attempts, 1, "{j:?}");
        *claims
            .entry(j.started_at.expect("a completed job started"))
            .or_default() += 1;
    }
    let sizes: Vec<u64> = claims.values().copied().collect();
    assert_eq!(sizes[0], 8, "the first claim fills every slot: {sizes:?}");
    // Single-job claims: at most the kept wake-up of the enqueue and the
    // last claim, when one job is left (one per finished job before).
    let singles = sizes.iter().filter(|s| **s < 2).count();
    assert!(singles <= 2, "claims of one job: {sizes:?}");
}

/// CPU time this process has used (user + system), from `/proc/self/stat`
/// (in clock ticks, 100 a second on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// A worker whose claims came back short (the queue drained) waits to be
/// woken: it does not claim again and again on its free slots (a spinning
/// claim loop would burn a core here, on a queue that has nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_leaves_the_worker_idle() {
    let jobs: Arc<dyn Jobs> = Arc::new(MemoryJobs::new());
    jobs.enqueue_many(
        (0..3)
            .map(|n| NewJob::new("few", &serde_json::json!({ "n": n })))
            .collect::<Result<Vec<_>, _>>()
            .expect("valid jobs"),
    )
    .await
    .expect("enqueue");
    let worker = Worker::builder(jobs.clone())
        .concurrency(16)
        .poll_interval(Duration::from_secs(600))
        .register("few", |_ctx: JobContext, _p: Payload| async move {
            Ok::<(), JobError>(())
        })
        .expect("register")
        .start()
        .expect("start");
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while worker.report().completed < 3 {
        assert!(tokio::time::Instant::now() < until, "{:?}", worker.report());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = cpu_ticks();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let used = cpu_ticks() - before;
    assert!(
        used <= 20,
        "an idle worker used {used} ticks of CPU in one second"
    );
    // Woken by an enqueue, it claims again.
    jobs.enqueue(NewJob::new("few", &serde_json::json!({ "n": 9 })).expect("job"))
        .await
        .expect("enqueue");
    while worker.report().completed < 4 {
        assert!(tokio::time::Instant::now() < until, "{:?}", worker.report());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = worker.stop(Duration::from_secs(5)).await;
    assert_eq!(report.claimed, 4, "{report:?}");
}
