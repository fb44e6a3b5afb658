//! Real processes and a real server.
//!
//! - `TS_JOBS_TOTAL` jobs (5,000 by default; passed at 20,000) worked by 3
//!   worker **processes** (this test binary run again with `TS_PGJOBS_CHILD`
//!   set; the ignored `child` test is the worker), each with its own pool
//!   and `LISTEN` connection, each handler writing one row per run to a
//!   table through db-postgres: with no failure injected, every job's
//!   effect is there exactly once, and all three processes worked.
//! - PostgreSQL restarted (a fast stop, then an immediate stop — a crash)
//!   while two worker runtimes on separate pools work 3,000 jobs, on a
//!   private cluster of the test's own (never the shared server): the
//!   workers recover without a restart, no job is lost (every one
//!   completed, every effect there), and any repeated effect is one the
//!   at-least-once contract allows — a run whose outcome could not be
//!   recorded (a store error or a lost lease) runs again after its lease.

mod support;

use std::time::Duration;

use truststream_conformance::jobs::shared::{
    count_effects, effect_worker, effects_schema, enqueue_numbered, exactly_once_across_processes,
    processes_total, wait_completed, worker_process, EFFECT_TYPE,
};
use truststream_core_jobs::{JobState, Jobs};
use truststream_db_postgres::testing::{self, PrivateCluster, Scratch};

use support::open;

const CHILD: &str = "TS_PGJOBS_CHILD";

/// The child: works effect jobs until all `total()` are completed, then
/// prints its report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the test below, not a test of its own"]
async fn child() {
    let spec = std::env::var(CHILD).expect("run by the tests below with TS_PGJOBS_CHILD set");
    let (url, rest) = spec.split_once('\t').expect("url<TAB>schema<TAB>name");
    let (schema, name) = rest.split_once('\t').expect("schema<TAB>name");
    let (db, jobs) = open(url, schema).await;
    worker_process(jobs, db, name, processes_total())
        .await
        .expect("the worker process runs the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_run_each_job_exactly_once() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_procs")
        .schema
        .expect("scratch schema");
    let (db, jobs) = open(&url, &schema).await;
    exactly_once_across_processes(&*db, &*jobs, "child", CHILD, |i| {
        format!("{url}\t{schema}\tproc-{i}")
    })
    .await
    .expect("each job ran exactly once");
    scratch.cleanup().await.expect("drop the scratch schema");
}

const RESTART_JOBS: u64 = 3_000;

/// Stops the cluster (`crash`: immediate mode), keeps it down for a second
/// and starts it again.
async fn bounce(cluster: PrivateCluster, crash: bool) -> PrivateCluster {
    tokio::task::spawn_blocking(move || {
        if crash {
            cluster.kill();
        } else {
            cluster.stop();
        }
        std::thread::sleep(Duration::from_secs(1));
        cluster.start();
        cluster
    })
    .await
    .expect("join")
}

async fn completed(jobs: &dyn Jobs) -> u64 {
    jobs.stats()
        .await
        .map(|s| s.count(EFFECT_TYPE, JobState::Completed))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_recover_when_postgres_restarts_under_load() {
    let Some(cluster) = tokio::task::spawn_blocking(PrivateCluster::create)
        .await
        .expect("join")
    else {
        return;
    };
    let url = cluster.url();
    let schema = "restart";
    let mut instances = Vec::new();
    for _ in 0..2 {
        instances.push(open(&url, schema).await);
    }
    let (db, jobs) = instances[0].clone();
    db.create_table(&effects_schema())
        .await
        .expect("effects table");
    enqueue_numbered(&*jobs, RESTART_JOBS, 500)
        .await
        .expect("enqueue");
    let workers: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(i, (db, jobs))| {
            effect_worker(
                jobs.clone(),
                db.clone(),
                &format!("w{i}"),
                8,
                Duration::from_secs(2),
                Duration::from_millis(200),
            )
            .expect("start a worker")
        })
        .collect();
    let mut cluster = cluster;
    for (crash, after) in [(false, RESTART_JOBS / 4), (true, RESTART_JOBS / 2)] {
        let until = tokio::time::Instant::now() + Duration::from_secs(300);
        while completed(&*jobs).await < after {
            assert!(
                tokio::time::Instant::now() < until,
                "the workers stalled before the restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster = bounce(cluster, crash).await;
    }
    wait_completed(&*jobs, EFFECT_TYPE, RESTART_JOBS, Duration::from_secs(600))
        .await
        .expect("every job completes after the restarts, without restarting the workers");
    let mut reports = Vec::new();
    for w in workers {
        reports.push(w.stop(Duration::from_secs(20)).await);
    }
    let effects = count_effects(&*db, RESTART_JOBS)
        .await
        .expect("count effects");
    assert!(effects.missing.is_empty(), "lost: {:?}", effects.missing);
    let extra: u64 = effects.repeated.values().map(|c| c - 1).sum();
    let unrecorded: u64 = reports
        .iter()
        .map(|r| r.store_errors + r.lost_leases + r.failed)
        .sum();
    assert!(
        extra <= unrecorded,
        "{extra} repeated effects but only {unrecorded} runs whose outcome was not recorded: {reports:?}"
    );
    assert!(
        reports.iter().map(|r| r.store_errors).sum::<u64>() > 0,
        "the outages were seen: {reports:?}"
    );
    let stats = jobs.stats().await.expect("stats");
    assert_eq!(stats.count(EFFECT_TYPE, JobState::Completed), RESTART_JOBS);
    assert_eq!(stats.in_state(JobState::Dead), 0, "{stats:?}");
    eprintln!(
        "repeated effects: {extra} (of {} rows); reports: {reports:?}",
        effects.rows
    );
    drop(cluster);
}
