//! The published `@supabase/supabase-js` client against `truststream
//! serve`: the server is built the way the `truststream` binary builds it
//! (`serve::prepare` then `serve::bind` over the configured providers), and
//! `tests/supabase-js/suite.cjs` (packages pinned by its lockfile, installed
//! with `npm ci`) drives auth, REST, storage and realtime through it, once
//! over SQLite and the filesystem and once over PostgreSQL and S3 (Garage).
//! `binary_serve_smoke` runs the real binary.
//!
//! Without node, the installed packages, PostgreSQL or Garage the tests fail
//! under `CI=true` and are skipped with a message otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use truststream_core_db::{ColumnDef, ColumnDefault, TableSchema};
use truststream_runtime::{serve, ConfigSources, Registries};

/// The suite's steps, in order: a suite that stops early or skips a step
/// fails the test even when node exits 0.
const STEPS: &[&str] = &[
    "auth_sign_up",
    "auth_sign_up_validation",
    "auth_sign_in_with_password",
    "auth_refresh_session",
    "auth_get_user",
    "auth_update_user",
    "auth_update_password",
    "auth_sign_out",
    "auth_signed_out_session_revoked",
    "rest_insert_select",
    "rest_filters",
    "rest_more_filters",
    "rest_errors",
    "rest_order_range_count",
    "rest_single_maybe_single",
    "rest_update_upsert_delete",
    "rest_upsert_ignore_duplicates",
    "rest_bulk_insert_missing_columns",
    "rest_extras",
    "rest_other_user_isolated",
    "rest_anon_refused",
    "rest_embedded_resources",
    "rest_json_and_text_search",
    "storage_create_bucket",
    "storage_upload_download",
    "storage_list",
    "storage_list_folders_and_search",
    "storage_signed_url",
    "storage_more_object_ops",
    "storage_public_bucket",
    "storage_bucket_limits",
    "storage_other_user_refused",
    "storage_move_remove",
    "realtime_broadcast_self",
    "realtime_presence",
    "realtime_postgres_changes",
    "realtime_postgres_changes_update_delete",
    "realtime_unpublished_table_refused",
    "realtime_token_refresh",
    "storage_delete_bucket",
];

fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/supabase-js")
}

/// Skips (prints `SKIPPED`, returns `false`) outside CI; panics under CI.
fn missing(what: &str) -> bool {
    if truststream_core::in_ci() {
        panic!("CI=true and the supabase-js test needs {what}");
    }
    eprintln!("SKIPPED supabase-js test: it needs {what}");
    false
}

/// Whether node and the npm packages are there; panics under CI when not.
fn node_ready() -> bool {
    let dir = project_dir();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let packages = dir.join("node_modules/@supabase/supabase-js").is_dir()
        && dir.join("node_modules/ws").is_dir();
    if node && packages {
        return true;
    }
    let what = if node {
        format!("the npm packages: run `npm ci` in {}", dir.display())
    } else {
        "Node.js 20 (`node` on PATH)".to_string()
    };
    missing(&what)
}

/// The table the suite uses.
fn todos() -> TableSchema {
    TableSchema::new("todos")
        .column(
            ColumnDef::uuid("id")
                .primary_key()
                .default(ColumnDefault::RandomUuid),
        )
        .column(ColumnDef::text("user_id"))
        .column(ColumnDef::text("title"))
        .column(ColumnDef::boolean("done").default_value(false))
        .column(
            ColumnDef::timestamp("created_at")
                .not_null()
                .default(ColumnDefault::Now),
        )
}

/// The tables of the embedded-resources step: posts reference users,
/// comments reference posts.
fn blog() -> Vec<TableSchema> {
    let auto_id = |name: &str| {
        TableSchema::new(name).column(
            ColumnDef::integer("id")
                .primary_key()
                .default(ColumnDefault::AutoIncrement),
        )
    };
    vec![
        auto_id("users").column(ColumnDef::text("name").not_null()),
        auto_id("posts")
            .column(ColumnDef::integer("author_id"))
            .column(ColumnDef::text("title").not_null())
            .references("author_id", "users", "id"),
        auto_id("comments")
            .column(ColumnDef::integer("post_id").not_null())
            .column(ColumnDef::text("user_id").not_null())
            .column(ColumnDef::text("body").not_null())
            .references("post_id", "posts", "id"),
        // The JSON (cs/cd/ov) and text-search step.
        auto_id("articles")
            .column(ColumnDef::json("tags"))
            .column(ColumnDef::json("meta"))
            .column(ColumnDef::text("body")),
    ]
}

/// A TOML string literal.
fn lit(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The `[serve]` part of the configuration: the suite's policies.
fn serve_toml(data_dir: &Path, bucket: &str) -> String {
    format!(
        r#"
[default.serve]
data_dir = {data_dir}

[default.serve.tables.todos]
authenticated = ["select", "insert", "update", "delete"]
owner_column = "user_id"

[default.serve.tables.users]
anon = ["select"]
authenticated = ["select"]

[default.serve.tables.posts]
anon = ["select"]
authenticated = ["select"]

[default.serve.tables.articles]
anon = ["select"]

[default.serve.tables.comments]
authenticated = ["select", "insert"]
owner_column = "user_id"

[default.serve.buckets.{bucket}]
authenticated = ["select", "insert", "update", "delete"]
owner_folder = true

[default.serve.realtime]
publish = ["todos"]
tables.todos = {{ owner_column = "user_id" }}
"#,
        data_dir = lit(&data_dir.display().to_string()),
        bucket = lit(bucket),
    )
}

/// What the suite printed.
struct Outcome {
    passed: Vec<String>,
    failed: Vec<(String, String)>,
    done: bool,
    status: Option<std::process::ExitStatus>,
}

/// Builds the server from `toml` as the binary does, creates the suite's
/// table, serves, and runs the suite against it.
async fn run_suite(registries: Registries, toml: &str, db_kind: &str, bucket: &str) -> Outcome {
    let config = ConfigSources::new().toml_str(toml).load().unwrap();
    let prepared = serve::prepare(&config, Some("127.0.0.1:0")).unwrap();
    let (server, services) = serve::bind(&Arc::new(registries), prepared).await.unwrap();
    services.db.create_table(&todos()).await.unwrap();
    for t in blog() {
        services.db.create_table(&t).await.unwrap();
    }
    let running = server.spawn();
    println!(
        "serving {} over {} / {}",
        running.url,
        services.db.info().name,
        services.storage.info().name
    );

    let mut child = tokio::process::Command::new("node")
        .arg("suite.cjs")
        .current_dir(project_dir())
        .env("SUPABASE_URL", &running.url)
        .env("SUPABASE_ANON_KEY", running.keys.anon())
        .env("SUPABASE_SERVICE_ROLE_KEY", running.keys.service_role())
        .env("DB_KIND", db_kind)
        .env("BUCKET", bucket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut outcome = Outcome {
        passed: Vec::new(),
        failed: Vec::new(),
        done: false,
        status: None,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let line = match tokio::time::timeout_at(deadline, out.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("reading the suite's output: {e}"),
            Err(_) => {
                outcome
                    .failed
                    .push(("timeout".into(), "the suite took over 120 s".into()));
                let _ = child.kill().await;
                break;
            }
        };
        println!("node[{db_kind}]: {line}");
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let step = msg["step"].as_str().unwrap_or_default().to_string();
        match msg["ok"].as_bool() {
            Some(true) => outcome.passed.push(step),
            Some(false) => outcome
                .failed
                .push((step, msg["error"].as_str().unwrap_or_default().to_string())),
            None => {}
        }
        if msg["done"] == json!(true) {
            outcome.done = true;
        }
    }
    outcome.status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .ok()
        .and_then(Result::ok);
    running.stop().await.unwrap();
    let _ = services.db.disconnect().await;
    outcome
}

fn assert_passed(outcome: &Outcome, db_kind: &str) {
    assert!(
        outcome.failed.is_empty(),
        "supabase-js on {db_kind}: step {} failed: {}\n(passed before it: {:?})",
        outcome.failed[0].0,
        outcome.failed[0].1,
        outcome.passed
    );
    assert!(
        outcome.status.is_some_and(|s| s.success()),
        "node exited with {:?}; steps: {:?}",
        outcome.status,
        outcome.passed
    );
    assert!(
        outcome.done,
        "the suite did not finish; steps: {:?}",
        outcome.passed
    );
    assert_eq!(outcome.passed, STEPS, "the suite's steps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_on_sqlite_and_fs() {
    if !node_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {}\n\n[default.storage]\ntype = \"fs\"\nroot = {}\n{}",
        lit(&dir.path().join("truststream.db").display().to_string()),
        lit(&dir.path().join("storage").display().to_string()),
        serve_toml(&dir.path().join("data"), "files"),
    );
    let outcome = run_suite(Registries::compiled_in(), &toml, "sqlite", "files").await;
    assert_passed(&outcome, "sqlite + fs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_js_on_postgres_and_s3() {
    use truststream_db_postgres::testing as pg;
    use truststream_storage_s3::testing::Garage;

    if !node_ready() {
        return;
    }
    let url = pg::database_url();
    if let Err(why) = pg::probe(&url).await {
        missing(&format!("PostgreSQL: {why}"));
        return;
    }
    let garage = match Garage::shared().await {
        Ok(g) => g,
        Err(e) => {
            missing(&format!("an S3 server (Garage): {e}"));
            return;
        }
    };
    let scratch = pg::Scratch::new(url.clone());
    let schema = scratch.config("supabase_js").schema.unwrap();
    let s3 = garage.config();
    // Bucket names are global on the shared server: a fresh one per run.
    let bucket = format!("files-{}", pg::scratch_name("b").replace('_', "-"))
        .to_lowercase()
        .chars()
        .take(63)
        .collect::<String>();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[default.database]\ntype = \"postgres\"\nurl = {}\nschema = {}\n\n\
         [default.storage]\ntype = \"s3\"\nendpoint = {}\nregion = {}\nforce_path_style = true\n\
         access_key_id = {}\nsecret_access_key = {}\nprobe_bucket = {}\n{}",
        lit(&url),
        lit(&schema),
        lit(&garage.endpoint()),
        lit(s3.region.as_deref().unwrap()),
        lit(&garage.access_key_id),
        lit(&garage.secret_access_key),
        lit(s3.probe_bucket.as_deref().unwrap()),
        serve_toml(&dir.path().join("data"), &bucket),
    );
    #[allow(unused_mut)]
    let mut registries = Registries::compiled_in();
    #[cfg(not(feature = "storage-s3"))]
    truststream_storage_s3::register(&mut registries.storage);
    let outcome = run_suite(registries, &toml, "postgres", &bucket).await;
    scratch.cleanup().await.unwrap();
    assert_passed(&outcome, "postgres + s3");
}

/// The `truststream serve` process: its printed URL and anon key.
struct ServeProcess {
    child: tokio::process::Child,
    url: String,
    anon: String,
}

async fn start_binary(cwd: &Path) -> ServeProcess {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_truststream"));
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("TRUSTSTREAM_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("truststream starts");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut anon) = (None, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while url.is_none() || anon.is_none() {
        let line = tokio::time::timeout_at(deadline, out.next_line())
            .await
            .expect("truststream serve printed its URL and keys within 60 s")
            .unwrap()
            .expect("truststream serve exited before printing its URL and keys");
        println!("serve: {line}");
        let line = line.trim();
        if let Some(u) = line.strip_prefix("API URL:") {
            url = Some(u.trim().to_string());
        } else if let Some(k) = line.strip_prefix("anon key:") {
            anon = Some(k.trim().to_string());
        }
    }
    // Keep reading (the log goes to stdout too) so the pipe never fills.
    tokio::spawn(async move {
        while let Ok(Some(line)) = out.next_line().await {
            println!("serve: {line}");
        }
    });
    ServeProcess {
        child,
        url: url.unwrap(),
        anon: anon.unwrap(),
    }
}

/// SIGTERM, then the exit status within 15 s.
async fn terminate(mut p: ServeProcess) -> std::process::ExitStatus {
    let pid = p.child.id().expect("still running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -TERM {pid}");
    tokio::time::timeout(Duration::from_secs(15), p.child.wait())
        .await
        .expect("truststream serve exits within 15 s of SIGTERM")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serve_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let first = start_binary(dir.path()).await;
    assert!(
        first.url.starts_with("http://127.0.0.1:") && !first.url.ends_with(":0"),
        "the printed URL carries the bound port: {}",
        first.url
    );
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/health", first.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "GET /health");
    let body: Value = serde_json::from_str(&health.text().await.unwrap()).unwrap();
    assert_eq!(body["status"], "healthy", "{body}");
    let settings = http
        .get(format!("{}/auth/v1/settings", first.url))
        .header("apikey", &first.anon)
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), 200, "GET /auth/v1/settings");
    let body: Value = serde_json::from_str(&settings.text().await.unwrap()).unwrap();
    assert_eq!(body["external"]["email"], true, "{body}");
    let anon = first.anon.clone();
    let status = terminate(first).await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(
        dir.path().join("data/serve-keys.json").is_file(),
        "the generated keys are kept in ./data/serve-keys.json"
    );

    let second = start_binary(dir.path()).await;
    assert_eq!(second.anon, anon, "the second start reuses the kept keys");
    let status = terminate(second).await;
    assert!(status.success(), "second exit after SIGTERM: {status}");
}
