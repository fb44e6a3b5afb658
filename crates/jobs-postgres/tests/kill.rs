//! A worker process killed (SIGKILL) while it runs 100 jobs: nothing is
//! lost. Its leases (2 s) run out, a worker in this process runs each job
//! once more, and each job's effect is written exactly once (the killed
//! handlers never got to theirs). The child is this test binary run again
//! with `TS_PGJOBS_KILL` set (the ignored `doomed` test below).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use truststream_conformance::jobs::shared::{
    check_ran_again_after_kill, count_effects, doomed_worker, effect_worker, effects_schema,
    enqueue_numbered, wait_completed, EFFECT_TYPE,
};
use truststream_core_jobs::JobState;
use truststream_db_postgres::testing::{self, Scratch};

use support::open;

const CHILD: &str = "TS_PGJOBS_KILL";
const JOBS: u64 = 100;

/// The child: claims every job with 2 s leases and never finishes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the test below, not a test of its own"]
async fn doomed() {
    let spec = std::env::var(CHILD).expect("run by the test below with TS_PGJOBS_KILL set");
    let (url, schema) = spec.split_once('\t').expect("url<TAB>schema");
    let (_db, jobs) = open(url, schema).await;
    let _worker = doomed_worker(jobs, EFFECT_TYPE, JOBS as usize).expect("start");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_loses_no_job() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let schema = scratch
        .config("pgjobs_kill")
        .schema
        .expect("scratch schema");
    let (db, jobs) = open(&url, &schema).await;
    db.create_table(&effects_schema())
        .await
        .expect("effects table");
    enqueue_numbered(&*jobs, JOBS, 100).await.expect("enqueue");

    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["doomed", "--exact", "--ignored", "--quiet"])
        .env(CHILD, format!("{url}\t{schema}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child worker");
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let running = jobs
            .stats()
            .await
            .expect("stats")
            .count(EFFECT_TYPE, JobState::Running);
        if running == JOBS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the child claimed only {running} of {JOBS} jobs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");

    let survivor = effect_worker(
        jobs.clone(),
        db.clone(),
        "survivor",
        20,
        Duration::from_secs(30),
        Duration::from_millis(200),
    )
    .expect("start the survivor");
    wait_completed(&*jobs, EFFECT_TYPE, JOBS, Duration::from_secs(120))
        .await
        .expect("the survivor finishes every job after the leases expire");
    let report = survivor.stop(Duration::from_secs(20)).await;
    assert_eq!(report.completed, JOBS, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");

    let effects = count_effects(&*db, JOBS).await.expect("effects");
    assert!(effects.missing.is_empty(), "lost: {:?}", effects.missing);
    assert!(effects.repeated.is_empty(), "twice: {:?}", effects.repeated);
    check_ran_again_after_kill(&*jobs, EFFECT_TYPE, JOBS, "survivor")
        .await
        .expect("each job ran once more, after its lease");
    scratch.cleanup().await.expect("drop the scratch schema");
}
