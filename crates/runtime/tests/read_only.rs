//! A health check never writes: `HealthReport::check` builds the providers
//! read-only, so on a fresh database neither auth-jwt nor the jobs
//! providers (nor the database providers' own bookkeeping) create
//! anything, and the report says which tables are missing and how to
//! create them.

use std::sync::Arc;
use std::time::Duration;

use truststream_core::{HealthStatus, Result};
use truststream_core_db::{Database, Params};
use truststream_db_postgres::testing::{admin, scratch_name, server};
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_runtime::{Config, ConfigSources, HealthReport, Interface, Registries};

const DEADLINE: Duration = Duration::from_secs(30);

fn load(toml: &str) -> Result<Config> {
    ConfigSources::new()
        .toml_str(toml)
        .env(Vec::<(String, String)>::new())
        .load()
}

async fn health(toml: &str) -> Result<HealthReport> {
    let registries = Arc::new(Registries::compiled_in());
    Ok(HealthReport::check(&registries, &load(toml)?, DEADLINE).await)
}

fn service(report: &HealthReport, i: Interface) -> (HealthStatus, String) {
    let s = report
        .services
        .iter()
        .find(|s| s.service == i)
        .unwrap_or_else(|| panic!("no {i} row: {report:?}"));
    (s.status, s.message.clone().unwrap_or_default())
}

const AUTH: &str = "[default.auth]\ntype = \"jwt\"\n\
                    jwt_secret = \"read-only test secret of at least 32 bytes\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_on_a_fresh_sqlite_file_writes_nothing_and_names_the_missing_tables() -> Result<()> {
    let dir = tempfile::tempdir().expect("test setup");
    let file = dir.path().join("app.db");
    // A fresh SQLite database: an empty file.
    std::fs::write(&file, b"").expect("test setup");
    let toml = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n\
         [default.storage]\ntype = \"memory\"\n[default.realtime]\ntype = \"memory\"\n\
         {AUTH}[default.jobs]\ntype = \"database\"\n",
        file.to_string_lossy()
    );
    let report = health(&toml).await?;

    // Nothing written: the file is still empty, no journal beside it.
    assert_eq!(
        std::fs::metadata(&file).expect("test setup").len(),
        0,
        "{report:?}"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("test setup")
        .map(|e| {
            e.expect("test setup")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["app.db"]);

    assert_eq!(
        service(&report, Interface::Database).0,
        HealthStatus::Healthy
    );
    let (status, message) = service(&report, Interface::Auth);
    assert_eq!(status, HealthStatus::Degraded, "{message}");
    assert!(
        message.contains("tables missing: auth_users, auth_sessions, auth_refresh_tokens"),
        "{message}"
    );
    assert!(message.contains("truststream serve"), "{message}");
    let jobs = report.jobs.as_ref().expect("a jobs row");
    assert_eq!(jobs.status, HealthStatus::Degraded, "{jobs:?}");
    let message = jobs.message.clone().unwrap_or_default();
    assert!(
        message.contains("tables missing: truststream_jobs"),
        "{message}"
    );
    // Degraded, not down: `truststream health` exits 0.
    assert!(report.is_ok(), "{report:?}");

    // A missing file is not created either; the report says so.
    let missing = dir.path().join("never.db");
    let toml = toml.replace(
        &format!("{:?}", file.to_string_lossy()),
        &format!("{:?}", missing.to_string_lossy()),
    );
    let report = health(&toml).await?;
    assert!(!missing.exists());
    let (status, message) = service(&report, Interface::Database);
    assert_eq!(status, HealthStatus::Unhealthy, "{message}");
    assert!(message.contains("does not exist yet"), "{message}");
    assert!(message.contains("never.db"), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_on_a_fresh_postgres_schema_creates_no_table() -> Result<()> {
    let Some(url) = server().await else {
        return Ok(());
    };
    let schema = scratch_name("read_only");
    let admin_config = PgConfig::new(url.clone());
    // A fresh schema: it exists and is empty.
    admin(&admin_config, &[format!("CREATE SCHEMA {schema}")]).await;
    let toml = format!(
        "[default.database]\ntype = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n\
         [default.storage]\ntype = \"memory\"\n[default.realtime]\ntype = \"memory\"\n\
         {AUTH}revocation_feed = true\n\
         [default.jobs]\ntype = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n"
    );
    let report = health(&toml).await;
    let observer = PgDatabase::open(admin_config.clone()).await?;
    let params = Params::from([("schema".to_string(), serde_json::json!(schema))]);
    let made = observer
        .raw_query(
            "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = :schema \
             UNION ALL SELECT sequence_name FROM information_schema.sequences \
             WHERE sequence_schema = :schema",
            &params,
        )
        .await;
    observer.disconnect().await?;
    admin(
        &admin_config,
        &[format!("DROP SCHEMA IF EXISTS {schema} CASCADE")],
    )
    .await;
    let report = report?;
    let made = made?;
    assert!(made.is_empty(), "health created {made:?}");

    assert_eq!(
        service(&report, Interface::Database).0,
        HealthStatus::Healthy
    );
    let (status, message) = service(&report, Interface::Auth);
    assert_eq!(status, HealthStatus::Degraded, "{message}");
    assert!(message.contains("tables missing: auth_users"), "{message}");
    let jobs = report.jobs.as_ref().expect("a jobs row");
    assert_eq!(jobs.status, HealthStatus::Degraded, "{jobs:?}");
    let message = jobs.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "tables missing: {schema}.truststream_jobs, {schema}.truststream_jobs_run_samples"
        )),
        "{message}"
    );
    assert!(message.contains("creates them when"), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_beside_a_running_server_binds_no_port_and_creates_no_storage_root() -> Result<()> {
    let dir = tempfile::tempdir().expect("test setup");
    let root = dir.path().join("storage");
    for kind in ["ws", "socketio"] {
        // Stands in for the running application, which holds the port.
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("test setup");
        let addr = server.local_addr().expect("test setup");
        let toml = format!(
            "[default.database]\ntype = \"memory\"\n\
             [default.storage]\ntype = \"fs\"\nroot = {:?}\n\
             [default.realtime]\ntype = \"{kind}\"\nlisten = \"{addr}\"\n",
            root.to_string_lossy()
        );
        let report = health(&toml).await?;

        // Realtime: configuration checked, port left to the server.
        let (status, message) = service(&report, Interface::Realtime);
        assert_eq!(status, HealthStatus::Healthy, "{kind}: {message}");
        assert!(
            message.contains("not serving in this process"),
            "{kind}: {message}"
        );
        assert!(message.contains(&addr.to_string()), "{kind}: {message}");
        assert!(!message.contains("in use"), "{kind}: {message}");

        // Storage: the missing root is reported, not created.
        assert!(!root.exists(), "{kind}: health created {}", root.display());
        let (status, message) = service(&report, Interface::Storage);
        assert_eq!(status, HealthStatus::Unhealthy, "{message}");
        assert!(message.contains("does not exist yet"), "{message}");
        assert!(message.contains(&root.display().to_string()), "{message}");
        assert!(
            message.contains("created when the application starts"),
            "{message}"
        );
        assert!(message.contains("storage.root"), "{message}");
        drop(server);
    }
    // Nothing written anywhere under the directory.
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("test setup").count(),
        0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_on_an_existing_storage_root_writes_nothing_into_it() -> Result<()> {
    let dir = tempfile::tempdir().expect("test setup");
    let toml = format!(
        "[default.database]\ntype = \"memory\"\n\
         [default.storage]\ntype = \"fs\"\nroot = {:?}\nbuckets = [\"avatars\"]\n\
         [default.realtime]\ntype = \"memory\"\n",
        dir.path().to_string_lossy()
    );
    let report = health(&toml).await?;
    let (status, message) = service(&report, Interface::Storage);
    assert_eq!(status, HealthStatus::Healthy, "{message}");
    let made: Vec<_> = std::fs::read_dir(dir.path())
        .expect("test setup")
        .map(|e| e.expect("test setup").file_name())
        .collect();
    assert!(made.is_empty(), "health created {made:?}");
    Ok(())
}
