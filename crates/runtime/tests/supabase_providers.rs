//! The three Supabase providers chosen by configuration alone
//! (`type = "supabase"` in the database, auth and storage sections), as a
//! second service would use them against a Supabase project: here the
//! project is `truststream serve` (SQLite + files) in this process.
#![allow(clippy::unwrap_used)] // test code

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use truststream_core::ErrorKind;
use truststream_core_auth::SignUp;
use truststream_core_db::{ColumnDef, ColumnDefault, DatabaseExt, Query, TableSchema};
use truststream_core_storage::UploadOptions;
use truststream_runtime::{serve, ConfigSources, Registries, Services};

const SECRET: &str = "supabase providers test secret, at least 32 bytes";

fn lit(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn agents() -> TableSchema {
    TableSchema::new("agents")
        .column(
            ColumnDef::uuid("id")
                .primary_key()
                .default(ColumnDefault::RandomUuid),
        )
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::text("status").default_value("active"))
}

/// The client side's configuration: every section a Supabase client
/// (realtime: `realtime`, the body of its section).
fn client_toml(url: &str, anon: &str, service: &str, extra_db: &str, realtime: &str) -> String {
    format!(
        r#"
[default.database]
type = "supabase"
url = {url}
service_role_key = {service}
bytes_format = "base64"
{extra_db}

[default.auth]
type = "supabase"
url = {url}
anon_key = {anon}
jwt_secret = {secret}

[default.storage]
type = "supabase"
url = {url}
service_role_key = {service}

[default.realtime]
{realtime}
"#,
        url = lit(url),
        anon = lit(anon),
        service = lit(service),
        secret = lit(SECRET),
    )
}

/// `truststream serve` (SQLite + files, auth-jwt) in this process, with
/// `agents` made and published to realtime's `postgres_changes` (anonymous
/// subscribers included).
async fn serve_project() -> (tempfile::TempDir, Services, truststream_serve::Running) {
    let dir = tempfile::tempdir().unwrap();
    let server_toml = format!(
        r#"
[default.database]
type = "sqlite"
path = {db}

[default.storage]
type = "fs"
root = {files}

[default.auth]
type = "jwt"
jwt_secret = {secret}

[default.serve]
data_dir = {data}

[default.serve.realtime]
publish = ["agents"]

# The hub joins the service-role key as an anonymous subscriber.
[default.serve.realtime.tables.agents]
anon = true
"#,
        db = lit(&dir.path().join("app.db").display().to_string()),
        files = lit(&dir.path().join("files").display().to_string()),
        data = lit(&dir.path().join("data").display().to_string()),
        secret = lit(SECRET),
    );
    let registries = Arc::new(Registries::compiled_in());
    let config = ConfigSources::new().toml_str(server_toml).load().unwrap();
    let prepared = serve::prepare(&config, Some("127.0.0.1:0")).unwrap();
    let (server, served) = serve::bind(&registries, prepared).await.unwrap();
    served.db.create_table(&agents()).await.unwrap();
    (dir, served, server.spawn())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supabase_providers_by_configuration() {
    let (_dir, served, running) = serve_project().await;

    let registries = Arc::new(Registries::compiled_in());
    let toml = client_toml(
        &running.url,
        running.keys.anon(),
        running.keys.service_role(),
        "",
        r#"type = "memory""#,
    );
    let config = ConfigSources::new().toml_str(toml).load().unwrap();
    let client = Services::build(&registries, &config).await.unwrap();
    assert_eq!(client.db.info().name, "supabase");
    assert_eq!(client.storage.info().name, "supabase");

    // Database over /rest/v1: the rows are the server's.
    let row = client
        .db
        .create("agents", json!({"name": "a1"}).as_object().unwrap().clone())
        .await
        .unwrap();
    assert_eq!(row["status"], "active");
    let id = row["id"].clone();
    let there = served.db.get("agents", &id).await.unwrap().unwrap();
    assert_eq!(there["name"], "a1");
    let active = client
        .db
        .read("agents", &Query::new().where_eq("status", "active"))
        .await
        .unwrap();
    assert_eq!(active.len(), 1);
    // Without pooler_url: what REST cannot do says which setting enables it.
    let caps = client.db.capabilities();
    assert!(!caps.raw_sql && !caps.transactions && !caps.schema);
    let e = client
        .db
        .raw_query("select 1", &Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("pooler_url"), "{e}");
    let _: Vec<Value> = client.db.read_as("agents", &Query::new()).await.unwrap();

    // Auth over /auth/v1, tokens verified locally.
    let auth = client.auth.clone().expect("auth is configured");
    let session = auth
        .sign_up(SignUp::new("user@example.com", "a long enough password"))
        .await
        .unwrap();
    let principal = auth
        .validate_token(session.access_token.expose())
        .await
        .unwrap();
    assert_eq!(principal.user_id, session.user.id);
    let e = auth.validate_token("not.a.token").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);

    // Storage over /storage/v1: the objects are the server's.
    client.storage.create_bucket("docs").await.unwrap();
    client
        .storage
        .upload(
            "docs",
            "a/b.txt",
            Bytes::from_static(b"hello"),
            &UploadOptions::default(),
        )
        .await
        .unwrap();
    let bytes = served.storage.download("docs", "a/b.txt").await.unwrap();
    assert_eq!(&bytes[..], b"hello");

    running.stop().await.unwrap();
}

/// With `pooler_url`, the runtime attaches db-postgres through that
/// transaction-mode pooler as the SQL backend: raw SQL, transactions and
/// schema changes are on. (The machine's PostgreSQL stands in for the
/// pooler URL: pooler mode runs on a plain server too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooler_url_attaches_the_sql_backend() {
    let Some(url) = truststream_db_postgres::testing::server().await else {
        return;
    };
    let toml = client_toml(
        "http://127.0.0.1:9",
        "anon",
        "service",
        &format!("pooler_url = {}", lit(&url)),
        r#"type = "memory""#,
    );
    let config = ConfigSources::new().toml_str(toml).load().unwrap();
    let registries = Arc::new(Registries::compiled_in());
    let client = Services::build(&registries, &config).await.unwrap();
    let caps = client.db.capabilities();
    assert!(caps.raw_sql && caps.transactions && caps.schema, "{caps:?}");
    let rows = client
        .db
        .raw_query("select 41 + 1 as answer", &Default::default())
        .await
        .unwrap();
    assert_eq!(rows[0]["answer"], 42);
}

/// `[database] type = "supabase"` with realtime-ws in client mode pointed
/// at the project's `/realtime/v1/websocket`: the runtime gives the
/// database its change feed, and a row inserted through the project's
/// REST API reaches `subscribe_changes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_comes_from_realtime_ws_client_mode() {
    let (_dir, _served, running) = serve_project().await;
    let service = running.keys.service_role().to_string();
    let ws = running.url.replacen("http", "ws", 1);
    let realtime = format!(
        "type = \"ws\"\nurl = {}\napi_key = {}",
        lit(&format!("{ws}/realtime/v1/websocket")),
        lit(&service)
    );
    let toml = client_toml(&running.url, running.keys.anon(), &service, "", &realtime);
    let config = ConfigSources::new().toml_str(toml).load().unwrap();
    let registries = Arc::new(Registries::compiled_in());
    let client = Services::build(&registries, &config).await.unwrap();
    let caps = client.db.capabilities();
    assert!(caps.change_feed, "{caps:?}");
    let mut feed = client.db.subscribe_changes(Some("agents")).await.unwrap();

    // Insert through serve's REST API (not through this client), again
    // every 2 s until a change arrives: the first may land before the
    // hub has joined the subscription.
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut sent = Vec::new();
    let change = loop {
        let name = format!("via-rest-{}", sent.len());
        let status = http
            .post(format!("{}/rest/v1/agents", running.url))
            .header("apikey", &service)
            .header("authorization", format!("Bearer {service}"))
            .header("prefer", "return=minimal")
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "insert through /rest/v1: {status}");
        sent.push(name);
        let wait = tokio::time::sleep(std::time::Duration::from_secs(2));
        tokio::select! {
            item = feed.recv() => break item.expect("the feed is open").expect("a change"),
            _ = wait => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no change arrived within 30 s ({} rows inserted)",
            sent.len()
        );
    };
    assert_eq!(change.table, "agents");
    assert_eq!(change.kind, truststream_core_db::ChangeKind::Insert);
    let name = change
        .new
        .as_ref()
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .expect("the inserted row");
    assert!(sent.iter().any(|s| s == name), "{name} not in {sent:?}");
    running.stop().await.unwrap();
}
