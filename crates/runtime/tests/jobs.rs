//! The `[jobs]` section: no provider by default, `memory`, `database` over
//! the runtime's configured SQLite database (transactional enqueue through
//! `Database::transaction`, a committed job run once by a `Worker`, a
//! rolled-back one never), an unknown type, a refused `layers` key, and
//! `truststream check` listing the provider.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use truststream_core::{ErrorKind, Result};
use truststream_core_db::{ColumnDef, Operation, Row, TableSchema};
use truststream_core_jobs::{JobContext, JobError, JobState, NewJob, Worker};
use truststream_runtime::{Config, ConfigSources, Runtime};

/// A generous deadline for conditions on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn load(toml: &str) -> Result<Config> {
    ConfigSources::new()
        .toml_str(toml)
        .env(Vec::<(String, String)>::new())
        .load()
}

fn sqlite_toml(dir: &Path, jobs_type: &str) -> String {
    let db = dir.join("app.db");
    format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n\n[default.storage]\ntype = \"memory\"\n\n\
         [default.jobs]\ntype = \"{jobs_type}\"\n",
        db.to_string_lossy()
    )
}

async fn runtime(toml: &str) -> Result<Runtime> {
    Runtime::builder().config(load(toml)?).build().await
}

const ORDERS: &str = "orders";

fn order(id: &str) -> Operation {
    let mut data = Row::new();
    data.insert("id".into(), json!(id));
    Operation::Create {
        table: ORDERS.into(),
        data,
    }
}

#[tokio::test]
async fn no_jobs_provider_unless_configured() -> Result<()> {
    let rt =
        runtime("[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n")
            .await?;
    assert!(rt.jobs().is_none());
    assert!(rt.services().jobs.is_none());
    let report = rt.check().await;
    assert_eq!(report.jobs.configured_type, "none");
    assert!(report.is_ok());
    Ok(())
}

#[tokio::test]
async fn memory_jobs_enqueue_and_claim() -> Result<()> {
    let rt = runtime(
        "[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n\
         [default.jobs]\ntype = \"memory\"\n",
    )
    .await?;
    let jobs = rt.jobs().expect("jobs.type = \"memory\" builds a provider");
    assert_eq!(jobs.info().name, "memory");
    let id = jobs
        .enqueue(NewJob::new("email", &json!({"to": "a@example.com"}))?)
        .await?
        .id();
    let job = jobs.get(id).await?.expect("the job is stored");
    assert_eq!(job.state, JobState::Queued);
    assert!(!jobs.capabilities().transactional_enqueue);
    Ok(())
}

#[tokio::test]
async fn database_jobs_commit_with_the_transaction_and_roll_back_with_it() -> Result<()> {
    let dir = tempfile::tempdir().expect("temp dir");
    let rt = runtime(&sqlite_toml(dir.path(), "database")).await?;
    let jobs = rt
        .jobs()
        .expect("jobs.type = \"database\" builds a provider");
    assert_eq!(jobs.info().name, "database");
    assert!(jobs.capabilities().transactional_enqueue);
    let db = rt.db();
    db.create_table(&TableSchema::new(ORDERS).column(ColumnDef::text("id").primary_key()))
        .await?;

    // Committed: the order and its job exist together.
    let committed = jobs.enqueue_operation(&NewJob::new("ship", &json!({"order": "o1"}))?)?;
    db.transaction(vec![order("o1"), committed.operation])
        .await?;
    assert!(db.get(ORDERS, &json!("o1")).await?.is_some());

    // Rolled back: the last operation fails, so neither the order nor the
    // job exists.
    let rolled_back = jobs.enqueue_operation(&NewJob::new("ship", &json!({"order": "o2"}))?)?;
    let missing = Operation::Update {
        table: ORDERS.into(),
        id: json!("no-such-order"),
        data: Row::new(),
    };
    let r = db
        .transaction(vec![order("o2"), rolled_back.operation, missing])
        .await;
    assert!(r.is_err(), "the transaction fails on its last operation");
    assert!(db.get(ORDERS, &json!("o2")).await?.is_none());
    assert!(jobs.get(rolled_back.id).await?.is_none());

    // A worker runs the committed job once, and only it.
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (r2, s2) = (Arc::clone(&runs), Arc::clone(&seen));
    let worker = Worker::builder(Arc::clone(&jobs))
        .poll_interval(Duration::from_millis(50))
        .register("ship", move |ctx: JobContext, p: serde_json::Value| {
            let (runs, seen) = (Arc::clone(&r2), Arc::clone(&s2));
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                seen.lock().expect("not poisoned").push((ctx.id(), p));
                Ok::<(), JobError>(())
            }
        })?
        .start()?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let job = jobs.get(committed.id).await?.expect("the committed job");
        if job.state == JobState::Completed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the committed job did not complete within {DEADLINE:?}: {:?}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop(Duration::from_secs(5)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let seen = seen.lock().expect("not poisoned").clone();
    assert_eq!(seen, vec![(committed.id, json!({"order": "o1"}))]);
    assert!(jobs.get(rolled_back.id).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn unknown_jobs_type_names_the_key_and_the_known_types() {
    let e = runtime(
        "[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n\
         [default.jobs]\ntype = \"redis\"\n",
    )
    .await
    .expect_err("an unknown jobs type is refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let m = e.message();
    assert!(m.contains("jobs.type"), "{m}");
    assert!(m.contains("\"redis\""), "{m}");
    for known in ["none", "memory", "database", "postgres"] {
        assert!(m.contains(known), "{known} missing from: {m}");
    }
}

#[tokio::test]
async fn jobs_layers_are_refused() {
    let e = load("[default.jobs]\ntype = \"memory\"\n[default.jobs.layers]\nretry = true\n")
        .expect_err("jobs take no layers");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("jobs.layers"), "{}", e.message());
}

#[tokio::test]
async fn an_unknown_jobs_setting_is_refused() {
    let e = runtime(
        "[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n\
         [default.jobs]\ntype = \"memory\"\nbogus = 1\n",
    )
    .await
    .expect_err("an unknown setting is refused");
    assert!(e.message().contains("bogus"), "{}", e.message());
}

/// The jobs section's build errors read like every other section's: an
/// unknown setting is named by its full key, and an unknown type says
/// where to set it (file table and environment variable).
#[tokio::test]
async fn jobs_build_errors_name_the_full_key_and_where_to_set_it() {
    let e = runtime(
        "[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n\
         [default.jobs]\ntype = \"memory\"\nbogus = 1\n",
    )
    .await
    .expect_err("an unknown setting is refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("`jobs.bogus`"), "{}", e.message());

    let e = runtime(
        "[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n\
         [default.jobs]\ntype = \"redis\"\n",
    )
    .await
    .expect_err("an unknown jobs type is refused");
    assert!(
        e.message().contains("TRUSTSTREAM_JOBS__TYPE"),
        "{}",
        e.message()
    );
}

fn truststream(cwd: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_truststream"));
    cmd.current_dir(cwd).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRUSTSTREAM_") {
            cmd.env_remove(k);
        }
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the truststream binary runs");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn check_and_health_list_the_jobs_provider() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("truststream.toml"),
        sqlite_toml(dir.path(), "database"),
    )
    .expect("config written");
    let (code, out, err) = truststream(dir.path(), &["check"]);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("\njobs: database "), "{out}");
    assert!(out.contains("transactional_enqueue: true"), "{out}");
    let (code, out, err) = truststream(dir.path(), &["health"]);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("jobs"), "{out}");
}

#[test]
fn jobs_from_the_environment_and_a_type_change_starts_afresh() -> Result<()> {
    let toml = "[default.jobs]\ntype = \"postgres\"\nurl = \"postgres://127.0.0.1/x\"\n\n\
                [production.jobs]\ntype = \"memory\"\n";
    let cfg = ConfigSources::new()
        .toml_str(toml)
        .env([("TRUSTSTREAM_PROFILE", "production")])
        .load()?;
    assert_eq!(cfg.jobs_section().kind(), "memory");
    assert!(
        cfg.jobs_section().settings().is_empty(),
        "the postgres url is dropped"
    );
    let cfg = ConfigSources::new()
        .toml_str(toml)
        .env([("TRUSTSTREAM_JOBS__TYPE", "database")])
        .load()?;
    assert_eq!(cfg.jobs_section().kind(), "database");
    assert!(cfg.jobs_section().settings().is_empty());
    Ok(())
}

#[tokio::test]
async fn switching_the_database_moves_database_jobs_to_it() -> Result<()> {
    let rt = runtime(
        "[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n\
         [default.jobs]\ntype = \"database\"\n",
    )
    .await?;
    let before = rt.jobs().expect("database jobs");
    let id = before
        .enqueue(NewJob::new("ship", &json!({"order": "o1"}))?)
        .await?
        .id();
    let switch = rt.switch_database("memory", json!({})).await?;
    let after = rt.jobs().expect("database jobs after the switch");
    assert!(
        after.get(id).await?.is_none(),
        "the new database has its own (empty) jobs table"
    );
    let id2 = after
        .enqueue(NewJob::new("ship", &json!({"order": "o2"}))?)
        .await?
        .id();
    assert!(
        rt.db()
            .get("truststream_jobs", &json!(id2.to_string()))
            .await?
            .is_some(),
        "the job is a row of the new database"
    );
    let retired = switch
        .jobs()
        .expect("the switch retired the old jobs provider");
    assert!(Arc::ptr_eq(retired, &before), "the old provider");
    switch.close(Duration::from_secs(20)).await?;
    let e = before
        .enqueue(NewJob::new("ship", &json!({"order": "late"}))?)
        .await
        .expect_err("the retired jobs provider is closed with the switch");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    after
        .enqueue(NewJob::new("ship", &json!({"order": "o3"}))?)
        .await?;
    Ok(())
}

/// A jobs provider that does not keep its jobs in the database is not
/// rebuilt by a database switch: its queued jobs stay.
#[tokio::test]
async fn switching_the_database_keeps_jobs_kept_elsewhere() -> Result<()> {
    let rt = runtime(
        "[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n\
         [default.jobs]\ntype = \"memory\"\n",
    )
    .await?;
    let before = rt.jobs().expect("memory jobs");
    let id = before
        .enqueue(NewJob::new("ship", &json!({"order": "o1"}))?)
        .await?
        .id();
    let switch = rt.switch_database("memory", json!({})).await?;
    let after = rt.jobs().expect("memory jobs after the switch");
    assert!(
        after.get(id).await?.is_some(),
        "the queued job survives a database switch"
    );
    assert!(Arc::ptr_eq(&before, &after), "the same provider");
    assert!(
        switch.jobs().is_none(),
        "nothing retired: jobs stayed in service"
    );
    switch.close(Duration::from_secs(20)).await?;
    after
        .enqueue(NewJob::new("ship", &json!({"order": "o2"}))?)
        .await
        .expect("closing the switch leaves the jobs provider in service open");
    Ok(())
}

/// A jobs section without a usable `type` says where to set it, like the
/// other sections (file table and environment variable).
#[tokio::test]
async fn a_jobs_section_without_a_type_says_where_to_set_it() {
    let e = load("[default.jobs]\ntype = \"\"\n").expect_err("an empty type is refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("`jobs.type`"), "{}", e.message());
    assert!(
        e.message().contains("TRUSTSTREAM_JOBS__TYPE"),
        "{}",
        e.message()
    );
}
