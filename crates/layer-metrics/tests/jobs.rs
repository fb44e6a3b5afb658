//! Job workers record through the same `metrics` facade as the layer, so
//! the Prometheus text of `install_prometheus` (the gateway's `/metrics`)
//! shows per job type the runs by outcome, the run-time quantiles and the
//! queue waits. Alone in its own test binary: it installs the process's
//! global recorder (worker tasks run on any thread).

#![allow(clippy::unwrap_used)] // test code
use std::sync::Arc;
use std::time::Duration;

use truststream_core_jobs::metrics::{JOBS_TOTAL, JOB_QUEUE_WAIT_SECONDS, JOB_RUN_SECONDS};
use truststream_core_jobs::{JobContext, JobError, JobState, Jobs, NewJob, Worker};
use truststream_jobs_memory::MemoryJobs;
use truststream_layer_metrics::install_prometheus;

#[derive(serde::Deserialize)]
struct Payload {
    fail: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_runs_show_in_the_prometheus_text() {
    let exporter = install_prometheus().unwrap();
    let jobs: Arc<dyn Jobs> = Arc::new(MemoryJobs::new());
    for fail in [false, false, false, true] {
        let job = NewJob::new("mail", &serde_json::json!({ "fail": fail }))
            .unwrap()
            .max_attempts(1);
        jobs.enqueue(job).await.unwrap();
    }
    let worker = Worker::builder(jobs.clone())
        .concurrency(4)
        .poll_interval(Duration::from_millis(20))
        .register("mail", |_ctx: JobContext, p: Payload| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if p.fail {
                Err(JobError::retry("smtp said no"))
            } else {
                Ok(())
            }
        })
        .unwrap()
        .start()
        .unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = jobs.stats().await.unwrap();
        if s.count("mail", JobState::Completed) == 3 && s.count("mail", JobState::Dead) == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the jobs did not finish: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker.stop(Duration::from_secs(5)).await;
    assert_eq!((report.completed, report.failed), (3, 1), "{report:?}");
    exporter.run_upkeep();
    let text = exporter.render();
    for line in [
        format!("{JOBS_TOTAL}{{job_type=\"mail\",outcome=\"completed\"}} 3"),
        format!("{JOBS_TOTAL}{{job_type=\"mail\",outcome=\"failed\"}} 1"),
        format!("{JOB_RUN_SECONDS}_count{{job_type=\"mail\"}} 4"),
        format!("{JOB_QUEUE_WAIT_SECONDS}_count{{job_type=\"mail\"}} 4"),
    ] {
        assert!(text.contains(&line), "{line} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "{JOB_RUN_SECONDS}{{job_type=\"mail\",quantile=\"0.99\"}}"
        )),
        "run-time quantiles: {text}"
    );
    assert!(
        text.contains(&format!("# HELP {JOBS_TOTAL} ")),
        "described: {text}"
    );
    // Run times are at least the handler's 5 ms.
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{JOB_RUN_SECONDS}_sum{{job_type=\"mail\"}} ")))
        .unwrap()
        .parse()
        .unwrap();
    assert!(sum >= 0.020, "four runs of at least 5 ms: {sum}");
}
