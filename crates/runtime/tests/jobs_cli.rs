//! `truststream jobs`, run as a user would, on a queue kept in a SQLite
//! file (`jobs.type = "database"`) that this test fills through the same
//! configuration: list with filters, inspect with the attempt history,
//! retry a dead job, cancel a queued one, stats, and the exit codes of bad
//! input (2), an unknown id (3) and a state that forbids the action (4).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use truststream_core::Result;
use truststream_core_jobs::{ClaimRequest, JobError, JobId, JobState, NewJob};
use truststream_runtime::{ConfigSources, Runtime};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn truststream(config: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_truststream"));
    cmd.current_dir(config.parent().expect("a config directory"))
        .arg("--config")
        .arg(config)
        .args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRUSTSTREAM_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("the truststream binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn toml(dir: &Path, jobs: bool) -> String {
    let mut t = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n\n[default.storage]\ntype = \"memory\"\n\n\
         [default.realtime]\ntype = \"memory\"\n",
        dir.join("app.db").to_string_lossy()
    );
    if jobs {
        t.push_str("\n[default.jobs]\ntype = \"database\"\n");
    }
    t
}

struct Queue {
    queued: JobId,
    dead: JobId,
    completed: JobId,
}

/// Three `mail` jobs and a `report` job: one queued, one dead after a
/// permanent failure, one completed, one queued for later.
async fn fill(toml: &str) -> Result<Queue> {
    let config = ConfigSources::new()
        .toml_str(toml)
        .env(Vec::<(String, String)>::new())
        .load()?;
    let rt = Runtime::builder().config(config).build().await?;
    let jobs = rt.jobs().expect("a jobs provider");
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            jobs.enqueue(NewJob::new("mail", &json!({ "n": n }))?)
                .await?
                .id(),
        );
    }
    jobs.enqueue(NewJob::new("report", &json!({}))?.delay(Duration::from_secs(3600)))
        .await?;
    let claim = |batch| ClaimRequest {
        job_types: vec!["mail".into()],
        batch,
        lease: Duration::from_secs(60),
        worker_id: "cli-test".into(),
    };
    let claimed = jobs.claim(&claim(2)).await?;
    assert_eq!(claimed.len(), 2);
    jobs.fail(
        &claimed[0].lease,
        &JobError::permanent("smtp said no\nsecond line"),
    )
    .await?;
    jobs.complete(&claimed[1].lease).await?;
    let queued = ids
        .iter()
        .copied()
        .find(|id| *id != claimed[0].job.id && *id != claimed[1].job.id)
        .expect("the third job");
    Ok(Queue {
        queued,
        dead: claimed[0].job.id,
        completed: claimed[1].job.id,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn list_inspect_retry_cancel_and_stats() -> Result<()> {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = toml(dir.path(), true);
    let config = dir.path().join("truststream.toml");
    std::fs::write(&config, &text).expect("write the config");
    let q = fill(&text).await?;
    let (queued, dead, completed) = (
        q.queued.to_string(),
        q.dead.to_string(),
        q.completed.to_string(),
    );

    let all = truststream(&config, &["jobs", "list"]);
    assert_eq!(all.code, Some(0), "{}", all.stderr);
    for id in [&queued, &dead, &completed] {
        assert!(all.stdout.contains(id.as_str()), "{}", all.stdout);
    }
    assert!(all.stdout.contains("4 job(s)"), "{}", all.stdout);
    assert!(
        all.stdout.contains("smtp said no second line"),
        "the last error on one line: {}",
        all.stdout
    );

    let dead_only = truststream(&config, &["jobs", "list", "--state", "dead"]);
    assert_eq!(dead_only.code, Some(0), "{}", dead_only.stderr);
    assert!(dead_only.stdout.contains(dead.as_str()));
    assert!(!dead_only.stdout.contains(queued.as_str()));
    assert!(dead_only.stdout.contains("1 job(s)"));

    let reports = truststream(&config, &["jobs", "list", "--type", "report", "--json"]);
    assert_eq!(reports.code, Some(0), "{}", reports.stderr);
    let v: serde_json::Value = serde_json::from_str(&reports.stdout).expect("JSON list");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["job_type"], "report");

    let limited = truststream(&config, &["jobs", "list", "--limit", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&limited.stdout).expect("JSON list");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");

    let inspect = truststream(&config, &["jobs", "inspect", &dead]);
    assert_eq!(inspect.code, Some(0), "{}", inspect.stderr);
    for want in [
        "state: dead",
        "attempts: 1 of 5",
        "history (1 attempt(s))",
        "cli-test",
        "smtp said no",
    ] {
        assert!(
            inspect.stdout.contains(want),
            "{want:?} in {}",
            inspect.stdout
        );
    }
    let json = truststream(&config, &["jobs", "inspect", &dead, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON job");
    assert_eq!(v["state"], "dead");
    assert_eq!(v["history"].as_array().map(Vec::len), Some(1));
    assert!(
        !json.stdout.contains("lease_token") && !json.stdout.contains("token"),
        "no lease token leaves: {}",
        json.stdout
    );

    let stats = truststream(&config, &["jobs", "stats", "--json"]);
    assert_eq!(stats.code, Some(0), "{}", stats.stderr);
    let v: serde_json::Value = serde_json::from_str(&stats.stdout).expect("JSON stats");
    assert!(v["oldest_queued_age"].as_u64().is_some(), "{v}");
    assert_eq!(v["run_times"][0]["job_type"], "mail", "{v}");
    let table = truststream(&config, &["jobs", "stats"]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    for want in [
        "mail",
        "report",
        "QUEUED",
        "DEAD",
        "oldest queued job waiting",
        "P99",
    ] {
        assert!(table.stdout.contains(want), "{want:?} in {}", table.stdout);
    }

    // Wrong state for the action: 4, and nothing changes.
    let not_dead = truststream(&config, &["jobs", "retry", &queued]);
    assert_eq!(not_dead.code, Some(4), "{}", not_dead.stderr);
    assert!(
        not_dead.stderr.starts_with("error: "),
        "{}",
        not_dead.stderr
    );
    let not_queued = truststream(&config, &["jobs", "cancel", &completed]);
    assert_eq!(not_queued.code, Some(4), "{}", not_queued.stderr);

    let retried = truststream(&config, &["jobs", "retry", &dead]);
    assert_eq!(retried.code, Some(0), "{}", retried.stderr);
    assert!(
        retried.stdout.contains("queued again"),
        "{}",
        retried.stdout
    );
    let cancelled = truststream(&config, &["jobs", "cancel", &queued]);
    assert_eq!(cancelled.code, Some(0), "{}", cancelled.stderr);
    let again = truststream(&config, &["jobs", "cancel", &queued]);
    assert_eq!(again.code, Some(4), "cancelling twice: {}", again.stderr);

    let after = truststream(&config, &["jobs", "list", "--json", "--type", "mail"]);
    let v: Vec<serde_json::Value> = serde_json::from_str(&after.stdout).expect("JSON list");
    let state_of = |id: &str| {
        v.iter()
            .find(|j| j["id"] == id)
            .map(|j| j["state"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(state_of(&dead).as_deref(), Some(JobState::Queued.as_str()));
    assert_eq!(
        state_of(&queued).as_deref(),
        Some(JobState::Cancelled.as_str())
    );
    assert_eq!(
        state_of(&completed).as_deref(),
        Some(JobState::Completed.as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_unknown_ids_and_no_provider() -> Result<()> {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = toml(dir.path(), true);
    let config = dir.path().join("truststream.toml");
    std::fs::write(&config, &text).expect("write the config");

    let unknown = JobId::new().to_string();
    for cmd in ["inspect", "retry", "cancel"] {
        let r = truststream(&config, &["jobs", cmd, &unknown]);
        assert_eq!(r.code, Some(3), "{cmd}: {}", r.stderr);
        assert!(
            r.stderr.contains(&unknown),
            "{cmd} names the id: {}",
            r.stderr
        );
        let bad = truststream(&config, &["jobs", cmd, "not-a-uuid"]);
        assert_eq!(bad.code, Some(2), "{cmd}: {}", bad.stderr);
        assert!(bad.stderr.contains("is not a job id"), "{}", bad.stderr);
    }
    let state = truststream(&config, &["jobs", "list", "--state", "zombie"]);
    assert_eq!(state.code, Some(2), "{}", state.stderr);
    assert!(state.stderr.contains("known states"), "{}", state.stderr);
    let limit = truststream(&config, &["jobs", "list", "--limit", "0"]);
    assert_eq!(limit.code, Some(2), "{}", limit.stderr);
    let job_type = truststream(&config, &["jobs", "list", "--type", "has space"]);
    assert_eq!(job_type.code, Some(2), "{}", job_type.stderr);
    let usage = truststream(&config, &["jobs", "inspect"]);
    assert_eq!(usage.code, Some(2), "clap's usage error: {}", usage.stderr);

    let none = dir.path().join("none.toml");
    std::fs::write(&none, toml(dir.path(), false)).expect("write the config");
    let r = truststream(&none, &["jobs", "stats"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("no jobs provider is configured") && r.stderr.contains("[default.jobs]"),
        "{}",
        r.stderr
    );
    Ok(())
}

/// `truststream jobs` builds the jobs provider and its database only: a
/// realtime hub whose listen port is taken and a storage root that cannot
/// be created (a path under a regular file) break the full runtime, not
/// `jobs list`, `jobs inspect` or `jobs stats`.
#[tokio::test(flavor = "multi_thread")]
async fn needs_only_the_jobs_provider_and_its_database() -> Result<()> {
    let dir = tempfile::tempdir().expect("temp dir");
    let q = fill(&toml(dir.path(), true)).await?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("its address").port();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write a file");
    let broken = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n\n\
         [default.storage]\ntype = \"fs\"\nroot = {:?}\n\n\
         [default.realtime]\ntype = \"ws\"\nlisten = \"127.0.0.1:{port}\"\n\n\
         [default.jobs]\ntype = \"database\"\n",
        dir.path().join("app.db").to_string_lossy(),
        blocker.join("storage").to_string_lossy(),
    );
    // The configuration really is unusable for the whole runtime.
    let config = ConfigSources::new()
        .toml_str(&broken)
        .env(Vec::<(String, String)>::new())
        .load()?;
    assert!(
        Runtime::builder().config(config).build().await.is_err(),
        "the full runtime cannot start on this configuration"
    );
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, &broken).expect("write the config");

    let list = truststream(&path, &["jobs", "list"]);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    for id in [q.queued, q.dead, q.completed] {
        assert!(list.stdout.contains(&id.to_string()), "{}", list.stdout);
    }
    let inspect = truststream(&path, &["jobs", "inspect", &q.dead.to_string()]);
    assert_eq!(inspect.code, Some(0), "{}", inspect.stderr);
    assert!(
        inspect.stdout.contains("smtp said no"),
        "{}",
        inspect.stdout
    );
    let stats = truststream(&path, &["jobs", "stats", "--json"]);
    assert_eq!(stats.code, Some(0), "{}", stats.stderr);
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout).expect("JSON stats");
    assert!(
        stats["counts"].as_array().is_some_and(|c| !c.is_empty()),
        "{stats}"
    );
    // Nothing else was built: the port is still ours, the storage root absent.
    assert!(!blocker.join("storage").exists());
    drop(taken);
    Ok(())
}

/// A jobs provider with a store of its own (`memory` here, `postgres`
/// alike) is not given the configured database, so `truststream jobs` does
/// not build it: a database that cannot be opened (a SQLite file under a
/// regular file) does not stop the command.
#[cfg(feature = "jobs-memory")]
#[test]
fn a_provider_with_its_own_store_needs_no_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").expect("write a file");
    let config = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n\n\
         [default.storage]\ntype = \"memory\"\n\n[default.realtime]\ntype = \"memory\"\n\n\
         [default.jobs]\ntype = \"memory\"\n",
        blocker.join("app.db").to_string_lossy(),
    );
    let path = dir.path().join("own-store.toml");
    std::fs::write(&path, &config).expect("write the config");
    let stats = truststream(&path, &["jobs", "stats", "--json"]);
    assert_eq!(stats.code, Some(0), "{}", stats.stderr);
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout).expect("JSON stats");
    assert!(stats["counts"].is_array(), "{stats}");
    assert!(!blocker.join("app.db").exists());
}
