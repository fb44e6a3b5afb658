//! `Runtime::shutdown`: against PostgreSQL (a login role of the test's
//! own, so its connections can be counted in `pg_stat_activity`), with
//! auth-jwt and jobs-postgres on the same server and a realtime-ws hub
//! listening on a port. After shutdown: no connection of the role is left,
//! the listen port can be bound again, a completion waiting in the jobs
//! batch was committed, calls fail instead of waiting, a second shutdown
//! is a no-op and switches are refused.

use std::time::Duration;

use truststream_core::{ErrorKind, Result};
use truststream_core_db::{Database, Params, Query};
use truststream_core_jobs::{ClaimRequest, NewJob};
use truststream_core_realtime::ChannelOptions;
use truststream_db_postgres::testing::{admin, scratch_name, server};
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_runtime::{ConfigSources, Runtime};

/// A bound on waits for conditions on a loaded machine (never reached
/// when things work).
const DEADLINE: Duration = Duration::from_secs(30);

/// `url` with its user replaced by `user` (no password: trust auth).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("test setup");
    l.local_addr().expect("test setup").port()
}

/// The connections `role` has open on the server.
async fn connections_of(admin_db: &PgDatabase, role: &str) -> i64 {
    let rows = admin_db
        .raw_query(
            "SELECT count(*)::bigint AS n FROM pg_stat_activity WHERE usename = :role",
            &Params::from([("role".to_string(), serde_json::json!(role))]),
        )
        .await
        .expect("test setup");
    rows[0]["n"].as_i64().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_pools_frees_the_port_and_commits_pending_completions() -> Result<()> {
    let Some(url) = server().await else {
        return Ok(());
    };
    let role = scratch_name("shutdown");
    let schema = scratch_name("shutdown_s");
    let admin_config = PgConfig::new(url.clone());
    admin(
        &admin_config,
        &[
            format!("CREATE ROLE {role} LOGIN"),
            format!(
                "DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO {role}', \
                 current_database()); END $$"
            ),
        ],
    )
    .await;
    let admin_db = PgDatabase::open(admin_config.clone()).await?;
    let role_url = as_user(&url, &role);
    let port = free_port();
    let toml = format!(
        "[default.database]\ntype = \"postgres\"\nurl = \"{role_url}\"\nschema = \"{schema}\"\n\
         [default.storage]\ntype = \"memory\"\n\
         [default.auth]\ntype = \"jwt\"\njwt_secret = \"shutdown test secret of at least 32 bytes\"\n\
         revocation_feed = true\n\
         [default.realtime]\ntype = \"ws\"\nlisten = \"127.0.0.1:{port}\"\n\
         [default.jobs]\ntype = \"postgres\"\nurl = \"{role_url}\"\nschema = \"{schema}\"\n\
         complete_linger_ms = 3600000\n"
    );
    let config = ConfigSources::new()
        .toml_str(&toml)
        .env(Vec::<(String, String)>::new())
        .load()?;
    let rt = Runtime::builder().config(config).build().await?;
    let result = exercise(&rt, &admin_db, &role, &schema, port).await;
    drop(rt);
    admin(
        &admin_config,
        &[
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("DROP OWNED BY {role}"),
            format!("DROP ROLE {role}"),
        ],
    )
    .await;
    result
}

async fn exercise(
    rt: &Runtime,
    admin_db: &PgDatabase,
    role: &str,
    schema: &str,
    port: u16,
) -> Result<()> {
    let addr = format!("127.0.0.1:{port}");
    let jobs = rt.jobs().expect("jobs.type = postgres");
    // Some work through every provider, so each holds connections.
    jobs.enqueue(NewJob::new("send", &serde_json::json!({"to": "a"}))?)
        .await?;
    let claimed = jobs
        .claim(&ClaimRequest {
            job_types: vec!["send".into()],
            batch: 1,
            lease: Duration::from_secs(600),
            worker_id: "shutdown-test".into(),
        })
        .await?;
    assert_eq!(claimed.len(), 1);
    let id = claimed[0].job.id;
    rt.auth()
        .expect("auth.type = jwt")
        .sign_up(truststream_core_auth::SignUp::new(
            "a@example.com",
            "a long password",
        ))
        .await?;
    assert!(connections_of(admin_db, role).await > 0);
    assert!(
        std::net::TcpListener::bind(&addr).is_err(),
        "the hub listens on {addr}"
    );

    // The completion waits in the batch (an hour's linger) until shutdown
    // flushes it: `complete` queues it on its first poll, before shutdown
    // starts.
    let (completed, shut) = tokio::join!(jobs.complete(&claimed[0].lease), rt.shutdown());
    completed?;
    shut?;
    let state = admin_db
        .raw_query(
            &format!("SELECT state FROM {schema}.truststream_jobs WHERE id = :id"),
            &Params::from([("id".to_string(), serde_json::json!(id.0.to_string()))]),
        )
        .await?;
    assert_eq!(state[0]["state"], "completed", "{state:?}");

    // Nothing of the runtime is left on the server or the port.
    let mut left = connections_of(admin_db, role).await;
    let until = tokio::time::Instant::now() + DEADLINE;
    while left > 0 && tokio::time::Instant::now() < until {
        // A closed socket leaves pg_stat_activity when its backend exits.
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = connections_of(admin_db, role).await;
    }
    if left > 0 {
        let who = admin_db
            .raw_query(
                "SELECT application_name AS app, state, query FROM pg_stat_activity \
                 WHERE usename = :role",
                &Params::from([("role".to_string(), serde_json::json!(role))]),
            )
            .await?;
        panic!("connections of {role} left after shutdown: {who:?}");
    }
    std::net::TcpListener::bind(&addr).expect("the listen port is free after shutdown");

    // Calls fail (within the deadline) instead of waiting.
    let db_call = tokio::time::timeout(DEADLINE, rt.db().read("anything", &Query::new()))
        .await
        .expect("a database call after shutdown answers");
    assert_eq!(
        db_call
            .expect_err("a database call after shutdown fails")
            .kind(),
        ErrorKind::Unavailable
    );
    let jobs_call = tokio::time::timeout(DEADLINE, jobs.get(id))
        .await
        .expect("a jobs call after shutdown answers");
    let e = jobs_call.expect_err("a jobs call after shutdown fails");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("closed"), "{e}");
    let rt_call = tokio::time::timeout(
        DEADLINE,
        rt.realtime().channel("room", ChannelOptions::default()),
    )
    .await
    .expect("a realtime call after shutdown answers");
    assert_eq!(
        rt_call.err().map(|e| e.kind()),
        Some(ErrorKind::Unavailable)
    );

    // Once is enough; switching a shut-down runtime is refused.
    rt.shutdown().await?;
    assert!(rt.is_shut_down());
    let switch = rt
        .switch_storage("memory", serde_json::json!({}))
        .await
        .expect_err("a switch after shutdown is refused");
    assert!(switch.message().contains("shut down"), "{switch}");
    Ok(())
}
