//! `serve.row_security` over PostgreSQL: `/rest/v1` requests of anon and
//! signed-in callers run as the roles `anon` / `authenticated` with their
//! verified claims, so the table's row-level security policies (written
//! with `auth.uid()`, which the server's start-up setup creates) decide
//! what each caller sees and changes; the service role sees everything.
//! Needs the PostgreSQL server of `truststream_db_postgres::testing`
//! (skipped with a message outside CI when it is missing).

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common {
    pub mod rest_util;
}

use std::collections::BTreeMap;
use std::sync::Arc;

use common::rest_util::{json, Env};
use reqwest::{Client, Method};
use serde_json::{json, Value};
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_auth::{Auth, SignUp};
use truststream_core_db::{ColumnDef, ColumnDefault, Database, Params, TableSchema};
use truststream_core_realtime::{handler, ChangeSpec, Realtime, RowChange};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
use truststream_realtime_ws::{WsRealtime, WsRealtimeConfig};
use truststream_serve::{ApiKeys, Providers, ServeConfig, Server, TableAction, TablePolicy};

const SECRET: &str = "an HS256 secret for the row security tests, 32+ bytes";

fn todos() -> TableSchema {
    TableSchema::new("todos")
        .column(
            ColumnDef::uuid("id")
                .primary_key()
                .default(ColumnDefault::RandomUuid),
        )
        .column(ColumnDef::uuid("owner").not_null())
        .column(ColumnDef::text("title").not_null())
        .column(ColumnDef::boolean("public").not_null().default_value(false))
}

/// `[serve.tables]`: actions granted, rows left to the database (no
/// `owner_column`).
fn policy() -> TablePolicy {
    TablePolicy {
        anon: vec![TableAction::Select, TableAction::Insert],
        authenticated: TableAction::ALL.to_vec(),
        ..TablePolicy::default()
    }
}

/// A server over a scratch schema with `serve.row_security = true`, and
/// `todos` under RLS: users own their rows (`owner = auth.uid()`), anon
/// reads public rows.
async fn start(s: &Scratch) -> Env {
    let config = s.config("serve_rls");
    let schema = config.schema.clone().unwrap();
    let db: Arc<dyn Database> = Arc::new(PgDatabase::open(config).await.unwrap());
    start_on(db, &schema, true).await
}

/// [`start`] over `db` (tables in `schema`); `force`: FORCE ROW LEVEL
/// SECURITY (the table's owner is subject to the policies too).
async fn start_on(db: Arc<dyn Database>, schema: &str, force: bool) -> Env {
    db.create_table(&todos()).await.unwrap();
    let mut cfg = JwtAuthConfig::with_secret(SECRET);
    cfg.argon2 = Argon2Cost::minimal();
    let auth = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
    let providers = Providers {
        db: db.clone(),
        auth: auth.clone() as Arc<dyn Auth>,
        storage: Arc::new(truststream_storage_memory::MemoryStorage::new()),
        metrics: None,
    };
    let mut config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        row_security: true,
        tables: BTreeMap::from([("todos".to_string(), policy())]),
        ..ServeConfig::default()
    };
    // Realtime too: with row_security, the policies decide who gets a
    // change (no `[serve.realtime.tables]` rule needed).
    config.realtime.publish = vec!["todos".into()];
    let server = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .unwrap()
        .spawn();
    // The application's part: privileges, RLS and policies (the roles
    // and auth.uid() come from the server's setup).
    let t = format!("\"{schema}\".todos");
    let forced = if force { "FORCE" } else { "NO FORCE" };
    for sql in [
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO authenticated"),
        format!("GRANT SELECT, INSERT ON {t} TO anon"),
        format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
        format!("ALTER TABLE {t} {forced} ROW LEVEL SECURITY"),
        format!(
            "CREATE POLICY own ON {t} FOR ALL TO authenticated \
             USING (owner = auth.uid()) WITH CHECK (owner = auth.uid())"
        ),
        format!("CREATE POLICY public_read ON {t} FOR SELECT TO anon USING (public)"),
    ] {
        db.raw_query(&sql, &Params::new()).await.unwrap();
    }
    Env {
        server,
        http: Client::new(),
        db,
        auth,
        _dir: None,
    }
}

fn titles(v: &Value) -> Vec<String> {
    let mut t: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

async fn insert(e: &Env, token: &str, row: Value) -> (u16, Value) {
    json(
        e.user(token, Method::POST, "todos")
            .header("prefer", "return=representation")
            .json(&row),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn users_never_reach_each_others_rows_and_anon_sees_what_its_policy_allows() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let e = start(&s).await;
    let (a, ta) = e.sign_up("a@example.com").await;
    let (b, tb) = e.sign_up("b@example.com").await;

    // Each inserts their own rows; a row for someone else is refused by
    // the policy's WITH CHECK.
    let (st, body) = insert(&e, &ta, json!({"owner": a, "title": "a-1"})).await;
    assert_eq!(st, 201, "{body}");
    let (st, _) = insert(
        &e,
        &ta,
        json!({"owner": a, "title": "a-pub", "public": true}),
    )
    .await;
    assert_eq!(st, 201);
    let (st, body) = insert(&e, &tb, json!({"owner": b, "title": "b-1"})).await;
    assert_eq!(st, 201, "{body}");
    let b1 = body[0]["id"].as_str().unwrap().to_string();
    let (st, body) = insert(&e, &ta, json!({"owner": b, "title": "forged"})).await;
    assert_eq!(st, 403, "{body}");

    // Reads: own rows only, whatever the filter asks for.
    let (st, body) = json(e.user(&ta, Method::GET, "todos?select=*")).await;
    assert_eq!(st, 200);
    assert_eq!(titles(&body), ["a-1", "a-pub"]);
    let (_, body) = json(e.user(&ta, Method::GET, &format!("todos?owner=eq.{b}"))).await;
    assert_eq!(titles(&body), Vec::<String>::new());
    let (_, body) = json(e.user(&tb, Method::GET, "todos")).await;
    assert_eq!(titles(&body), ["b-1"]);

    // Updates and deletes of B's row by A change nothing.
    let (st, body) = json(
        e.user(&ta, Method::PATCH, &format!("todos?id=eq.{b1}"))
            .header("prefer", "return=representation")
            .json(&json!({"title": "pwned"})),
    )
    .await;
    assert!(st == 200 || st == 204 || st == 404, "{st} {body}");
    assert!(body.as_array().is_none_or(|a| a.is_empty()), "{body}");
    let (st, _) = json(e.user(&ta, Method::DELETE, &format!("todos?id=eq.{b1}"))).await;
    assert!(st < 300 || st == 404, "{st}");
    let (st, _) = json(e.user(&ta, Method::DELETE, "todos?title=like.*")).await;
    assert!(st < 300, "{st}");

    // The service role sees everything: B's row intact, A's gone.
    let (st, body) = json(e.service(Method::GET, "todos")).await;
    assert_eq!(st, 200);
    assert_eq!(titles(&body), ["b-1"]);

    // Anon: only what the anon policy allows, and no write passes RLS.
    let (st, _) = insert(
        &e,
        &tb,
        json!({"owner": b, "title": "b-pub", "public": true}),
    )
    .await;
    assert_eq!(st, 201);
    let (st, body) = json(e.anon(Method::GET, "todos")).await;
    assert_eq!(st, 200);
    assert_eq!(titles(&body), ["b-pub"]);
    let (st, body) = json(
        e.anon(Method::POST, "todos")
            .json(&json!({"owner": b, "title": "anon", "public": true})),
    )
    .await;
    assert!(st == 401 || st == 403, "{st} {body}");
    let (_, body) = json(e.service(Method::GET, "todos")).await;
    assert_eq!(titles(&body), ["b-1", "b-pub"]);
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_claims_are_bound_values() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let e = start(&s).await;
    let hostile = json!({
        "note": "'); drop table todos; --",
        "role": "service_role\"; reset role; --",
        "q": "$$ $ts$ \\' \"",
    });
    let mut up = SignUp::new("o'neil@example.com", "correct horse battery staple");
    up.user_metadata = hostile.as_object().unwrap().clone();
    let session = e.auth.sign_up(up).await.unwrap();
    let (id, token) = (
        session.user.id.clone(),
        session.access_token.expose().to_string(),
    );
    let (st, body) = insert(&e, &token, json!({"owner": id, "title": "mine"})).await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = json(e.user(&token, Method::GET, "todos")).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(titles(&body), ["mine"]);
    // Still there, and still guarded.
    let (_, other) = e.sign_up("x@example.com").await;
    let (_, body) = json(e.user(&other, Method::GET, "todos")).await;
    assert_eq!(titles(&body), Vec::<String>::new());
    let (_, body) = json(e.service(Method::GET, "todos")).await;
    assert_eq!(titles(&body), ["mine"]);
    s.cleanup().await.unwrap();
}

/// `url` with `user` instead of its user (and no password).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_user_that_is_not_a_superuser_runs_requests_as_the_roles() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url.clone());
    // An administrator's run of the setup (a superuser server), and the
    // application's login role: no superuser, no CREATEROLE, granted the
    // three roles, owning its schema.
    let admin = start(&s).await;
    let app = "ts_rls_app_user";
    let config = s.config("serve_rls_app");
    let schema = config.schema.clone().unwrap();
    for sql in [
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{app}') THEN \
               CREATE ROLE {app} LOGIN NOSUPERUSER NOCREATEROLE NOBYPASSRLS; END IF; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ),
        format!("GRANT anon, authenticated, service_role TO {app}"),
        format!(
            "DO $$ BEGIN EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO {app}', \
             current_database()); END $$"
        ),
        format!("CREATE SCHEMA \"{schema}\" AUTHORIZATION {app}"),
    ] {
        admin.db.raw_query(&sql, &Params::new()).await.unwrap();
    }
    let mut app_config = truststream_db_postgres::PgConfig::new(as_user(&url, app));
    app_config.schema = Some(schema.clone());
    let db: Arc<dyn Database> = Arc::new(PgDatabase::open(app_config).await.unwrap());
    let who = db
        .raw_query(
            "select current_user::text as u, usesuper from pg_user where usename = current_user",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(who[0]["u"], app);
    assert_eq!(who[0]["usesuper"], false);
    // The server's setup passes as this user (every step already done
    // or allowed), and the policies apply to its requests.
    let e = start_on(db, &schema, false).await;
    let (a, ta) = e.sign_up("a@example.com").await;
    let (b, tb) = e.sign_up("b@example.com").await;
    assert_eq!(
        insert(&e, &ta, json!({"owner": a, "title": "a-1"})).await.0,
        201
    );
    assert_eq!(
        insert(&e, &tb, json!({"owner": b, "title": "b-1"})).await.0,
        201
    );
    assert_eq!(
        insert(&e, &ta, json!({"owner": b, "title": "forged"}))
            .await
            .0,
        403
    );
    let (_, body) = json(e.user(&ta, Method::GET, "todos")).await;
    assert_eq!(titles(&body), ["a-1"]);
    let (_, body) = json(e.user(&tb, Method::GET, "todos")).await;
    assert_eq!(titles(&body), ["b-1"]);
    // The service role runs as the table's owner (no FORCE): every row.
    let (_, body) = json(e.service(Method::GET, "todos")).await;
    assert_eq!(titles(&body), ["a-1", "b-1"]);
    s.cleanup().await.unwrap();
}

#[tokio::test]
async fn row_security_without_a_database_that_has_it_fails_the_start() {
    let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let mut cfg = JwtAuthConfig::with_secret(SECRET);
    cfg.argon2 = Argon2Cost::minimal();
    let auth = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = truststream_db_sqlite::SqliteDatabase::open(
        truststream_db_sqlite::SqliteConfig::file(dir.path().join("rls.db")),
    )
    .await
    .unwrap();
    let sqlite: Arc<dyn Database> = Arc::new(sqlite);
    // Neither provider runs calls as a role.
    for db in [&db, &sqlite] {
        assert!(!db.capabilities().row_security);
        let scope =
            truststream_core_db::RequestScope::new("authenticated", Default::default()).unwrap();
        let e = Arc::clone(db).scoped(scope).err().unwrap();
        assert_eq!(e.kind(), truststream_core::ErrorKind::Unsupported);
    }
    for db in [db, sqlite] {
        let providers = Providers {
            db,
            auth: auth.clone() as Arc<dyn Auth>,
            storage: Arc::new(truststream_storage_memory::MemoryStorage::new()),
            metrics: None,
        };
        let config = ServeConfig {
            bind: "127.0.0.1:0".into(),
            row_security: true,
            ..ServeConfig::default()
        };
        let e = Server::bind(providers, ApiKeys::generate(), config)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput);
        assert!(e.message().contains("serve.row_security"), "{e}");
    }
}

/// `/realtime/v1` follows the same policies: a change reaches a subscriber
/// only when the subscriber's own read of the row (as `authenticated`, with
/// their claims) returns it.
#[tokio::test(flavor = "multi_thread")]
async fn realtime_changes_reach_only_the_users_the_policies_let_read_them() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let e = start(&s).await;
    let (a, ta) = e.sign_up("a@example.com").await;
    let (b, tb) = e.sign_up("b@example.com").await;
    let ws = format!("ws://{}/realtime/v1/websocket", e.server.addr);
    let mut feeds = Vec::new();
    for token in [&ta, &tb] {
        let rt = WsRealtime::connect(WsRealtimeConfig::client(&ws, Some(token)))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sub = rt
            .subscribe_changes(
                ChangeSpec::table("todos"),
                handler(move |c: RowChange| {
                    let title = c.new.as_ref().and_then(|r| r.get("title")).cloned();
                    let _ = tx.send(title.unwrap_or(Value::Null));
                }),
            )
            .await
            .unwrap();
        feeds.push((rt, sub, rx));
    }
    // B writes first, then A: each one's first change must be their own.
    for (token, owner, title) in [(&tb, &b, "b-1"), (&ta, &a, "a-1")] {
        let (st, body) = insert(&e, token, json!({"owner": owner, "title": title})).await;
        assert_eq!(st, 201, "{body}");
    }
    let wait = std::time::Duration::from_secs(30);
    for (i, own) in ["a-1", "b-1"].into_iter().enumerate() {
        let got = tokio::time::timeout(wait, feeds[i].2.recv())
            .await
            .expect("a change in time")
            .expect("the feed is open");
        assert_eq!(got, json!(own), "subscriber {own} got another user's row");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for (_, _, rx) in &mut feeds {
        assert!(rx.try_recv().is_err(), "a change beyond the user's own row");
    }
    drop(feeds);
    s.cleanup().await.unwrap();
}
