//! Who may bind `postgres_changes` to what, and what each subscriber gets:
//! only published tables, never the auth provider's; per-row owner rules,
//! required permissions and hidden columns. Real auth-jwt users on a
//! db-memory database, through the real WebSocket.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::sync::Arc;

use common::Client;
use serde_json::{json, Value};
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_auth::{Auth, SignUp};
use truststream_core_db::{ColumnDef, Database, Row, TableSchema};
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_ws::{TableRule, Vsn, WsRealtime, WsRealtimeConfig};

const SECRET: &str = "realtime-access-test-secret-0123456789";

fn row(v: Value) -> Row {
    v.as_object().cloned().unwrap()
}

fn auth_config() -> JwtAuthConfig {
    let mut cfg = JwtAuthConfig::with_secret(SECRET);
    cfg.argon2 = Argon2Cost::minimal();
    cfg
}

/// A database with an `agents` table (id, user_id, name, secret) and
/// auth-jwt keeping its users there.
async fn setup(cfg: JwtAuthConfig) -> (Arc<dyn Database>, Arc<dyn Auth>) {
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("user_id"))
            .column(ColumnDef::text("name"))
            .column(ColumnDef::text("secret")),
    )
    .await
    .unwrap();
    let auth: Arc<dyn Auth> = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
    (db, auth)
}

/// Signs a user up; returns (user id, access token).
async fn user(auth: &Arc<dyn Auth>, email: &str) -> (String, String) {
    let s = auth
        .sign_up(SignUp::new(email, "correct horse battery staple"))
        .await
        .unwrap();
    (s.user.id.clone(), s.access_token.expose().to_string())
}

async fn hub(
    config: WsRealtimeConfig,
    db: &Arc<dyn Database>,
    auth: &Arc<dyn Auth>,
) -> (WsRealtime, String) {
    let rt = WsRealtime::start(config, Some(db.clone()), Some(auth.clone()))
        .await
        .unwrap();
    let url = rt.url().unwrap();
    (rt, url)
}

fn binding(table: Option<&str>) -> Value {
    match table {
        Some(t) => json!({"event": "*", "schema": "public", "table": t}),
        None => json!({"event": "*", "schema": "public"}),
    }
}

/// Joins `topic` with `bindings`; returns the reply.
async fn join(c: &mut Client, topic: &str, bindings: Value) -> Value {
    c.join(topic, json!({"config": {"postgres_changes": bindings}}))
        .await
        .1
}

fn assert_refused(reply: &Value, what: &str, reason_has: &str) {
    assert_eq!(reply["status"], "error", "{what}: {reply}");
    let reason = reply["response"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(reason_has),
        "{what}: the reason {reason:?} should mention {reason_has:?}"
    );
    assert_eq!(
        reply["response"]["code"], "permission_denied",
        "{what}: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_and_auth_table_joins_are_refused() {
    let (db, auth) = setup(auth_config()).await;
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.publish = vec!["agents".into()];
    let (_hub, url) = hub(config, &db, &auth).await;
    let (_, token) = user(&auth, "mallory@example.com").await;
    let mut c = Client::connect(&url, Vsn::V2, Some(&token)).await;

    let reply = join(&mut c, "realtime:all", json!([binding(None)])).await;
    assert_refused(&reply, "no table", "name a published table");
    let reply = join(&mut c, "realtime:star", json!([binding(Some("*"))])).await;
    assert_refused(&reply, "table *", "name a published table");
    for table in ["auth_users", "auth_sessions", "auth_refresh_tokens"] {
        let reply = join(&mut c, "realtime:auth", json!([binding(Some(table))])).await;
        assert_refused(&reply, table, "never published");
    }
    let reply = join(
        &mut c,
        "realtime:schema",
        json!([binding(Some("_truststream_schema"))]),
    )
    .await;
    assert_refused(&reply, "_truststream_schema", "never published");
    // A table that is not in `publish` (whether or not it exists).
    let reply = join(&mut c, "realtime:other", json!([binding(Some("payments"))])).await;
    assert_refused(&reply, "payments", "not published");
    // One bad binding refuses the whole join, good ones included.
    let reply = join(
        &mut c,
        "realtime:mixed",
        json!([binding(Some("agents")), binding(Some("auth_users"))]),
    )
    .await;
    assert_refused(&reply, "mixed", "never published");

    // Nothing of the auth tables reaches the client: a sign-up writes
    // auth_users and auth_sessions rows.
    let _ = user(&auth, "victim@example.com").await;
    c.expect_quiet(&["presence_state"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_publishing_auth_tables_is_refused() {
    let (db, auth) = setup(auth_config()).await;
    for entry in [
        "auth_users",
        "auth_sessions",
        "auth*",
        "a*",
        "*",
        "_truststream_schema",
    ] {
        let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
        config.publish = vec!["agents".into(), entry.into()];
        let e = WsRealtime::start(config, Some(db.clone()), Some(auth.clone()))
            .await
            .unwrap_err();
        assert!(
            e.message().contains("realtime.publish") && e.message().contains(entry),
            "{entry}: {e}"
        );
    }
    // auth-jwt with another table prefix: its tables are refused by name.
    let mut cfg = auth_config();
    cfg.table_prefix = "acct_".into();
    let (db, auth) = setup(cfg).await;
    for entry in ["acct_users", "acct_*", "acct_refresh_tokens"] {
        let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
        config.publish = vec![entry.into()];
        let e = WsRealtime::start(config, Some(db.clone()), Some(auth.clone()))
            .await
            .unwrap_err();
        assert!(
            e.message().contains("realtime.publish") && e.message().contains("auth provider"),
            "{entry}: {e}"
        );
    }
    // A rule for a table that is not published.
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.tables.insert("agents".into(), TableRule::default());
    let e = WsRealtime::start(config, Some(db.clone()), Some(auth.clone()))
        .await
        .unwrap_err();
    assert!(e.message().contains("realtime.tables.agents"), "{e}");
}

/// Rows with an owner: `agents.user_id`, `secret` hidden.
fn owned_config() -> WsRealtimeConfig {
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.publish = vec!["agents".into()];
    config.tables.insert(
        "agents".into(),
        TableRule {
            owner_column: Some("user_id".into()),
            hidden: vec!["secret".into()],
            ..TableRule::default()
        },
    );
    config
}

/// The next `postgres_changes` payload's `data`.
async fn change(c: &mut Client) -> Value {
    c.expect("postgres_changes").await.payload["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_rule_delivers_each_user_only_their_rows() {
    let (db, auth) = setup(auth_config()).await;
    let (_hub, url) = hub(owned_config(), &db, &auth).await;
    let (alice, alice_token) = user(&auth, "alice@example.com").await;
    let (bob, bob_token) = user(&auth, "bob@example.com").await;
    let mut a = Client::connect(&url, Vsn::V2, Some(&alice_token)).await;
    let mut b = Client::connect(&url, Vsn::V1, Some(&bob_token)).await;
    for c in [&mut a, &mut b] {
        let reply = join(c, "realtime:agents", json!([binding(Some("agents"))])).await;
        assert_eq!(reply["status"], "ok", "{reply}");
    }

    let agent = |id: &str, owner: &str| {
        row(json!({"id": id, "user_id": owner, "name": id, "secret": "s3cr3t"}))
    };
    db.create("agents", agent("a1", &alice)).await.unwrap();
    db.create("agents", agent("b1", &bob)).await.unwrap();
    // a1 moves from alice to bob: alice learns nothing of its new row; bob
    // gets it without the old row (which was not his).
    db.update(
        "agents",
        &json!("a1"),
        row(json!({"user_id": bob, "name": "moved"})),
    )
    .await
    .unwrap();
    db.delete("agents", &json!("b1")).await.unwrap();
    // A marker for alice, so her quiet period starts after everything.
    db.create("agents", agent("a2", &alice)).await.unwrap();

    let d = change(&mut a).await;
    assert_eq!(
        (d["type"].as_str(), d["record"]["id"].as_str()),
        (Some("INSERT"), Some("a1"))
    );
    let d = change(&mut a).await;
    assert_eq!(
        (d["type"].as_str(), d["record"]["id"].as_str()),
        (Some("INSERT"), Some("a2"))
    );
    a.expect_quiet(&[]).await;

    let d = change(&mut b).await;
    assert_eq!(
        (d["type"].as_str(), d["record"]["id"].as_str()),
        (Some("INSERT"), Some("b1"))
    );
    let d = change(&mut b).await;
    assert_eq!(
        (d["type"].as_str(), d["record"]["name"].as_str()),
        (Some("UPDATE"), Some("moved"))
    );
    assert_eq!(d["old_record"], json!({}), "the old row was alice's: {d}");
    let d = change(&mut b).await;
    assert_eq!(
        (d["type"].as_str(), d["old_record"]["id"].as_str()),
        (Some("DELETE"), Some("b1"))
    );
    b.expect_quiet(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_column_never_appears_in_a_payload() {
    let (db, auth) = setup(auth_config()).await;
    let (_hub, url) = hub(owned_config(), &db, &auth).await;
    let (alice, token) = user(&auth, "alice@example.com").await;
    let mut c = Client::connect(&url, Vsn::V2, Some(&token)).await;
    // Filtering on a hidden column would reveal it bit by bit: refused.
    let filtered = json!([{"event": "*", "schema": "public", "table": "agents",
                           "filter": "secret=eq.s3cr3t"}]);
    let reply = join(&mut c, "realtime:probe", filtered).await;
    assert_refused(&reply, "filter on secret", "hidden");
    let tree = json!([{"event": "*", "schema": "public", "table": "agents",
                       "where": {"cmp": {"column": {"column": "secret"}, "op": "eq", "value": "x"}}}]);
    let reply = join(&mut c, "realtime:probe2", tree).await;
    assert_refused(&reply, "where on secret", "hidden");

    let reply = join(&mut c, "realtime:agents", json!([binding(Some("agents"))])).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let mine = row(json!({"id": "a1", "user_id": alice, "name": "n", "secret": "s3cr3t"}));
    db.create("agents", mine).await.unwrap();
    db.update(
        "agents",
        &json!("a1"),
        row(json!({"secret": "other-s3cr3t"})),
    )
    .await
    .unwrap();
    db.delete("agents", &json!("a1")).await.unwrap();
    for kind in ["INSERT", "UPDATE", "DELETE"] {
        let m = c.expect("postgres_changes").await.payload;
        assert_eq!(m["data"]["type"], kind);
        let text = m.to_string();
        assert!(
            !text.contains("secret"),
            "{kind} shows the hidden column: {text}"
        );
        assert!(
            !text.contains("s3cr3t"),
            "{kind} shows the hidden value: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_permission_is_checked_at_join() {
    let mut cfg = auth_config();
    cfg.roles
        .insert("analyst".into(), vec!["read:agents".into()]);
    let (db, auth) = setup(cfg).await;
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.publish = vec!["agents".into()];
    config.tables.insert(
        "agents".into(),
        TableRule {
            permission: Some("read:agents".into()),
            ..TableRule::default()
        },
    );
    let (_hub, url) = hub(config, &db, &auth).await;
    let (_, plain) = user(&auth, "plain@example.com").await;
    let mut c = Client::connect(&url, Vsn::V2, Some(&plain)).await;
    let reply = join(&mut c, "realtime:agents", json!([binding(Some("agents"))])).await;
    assert_refused(&reply, "without the permission", "read:agents");

    // The same user with the role (set in the users table, as an admin
    // tool would) may bind, with a token issued after the change.
    let (id, _) = user(&auth, "analyst@example.com").await;
    db.update("auth_users", &json!(id), row(json!({"roles": ["analyst"]})))
        .await
        .unwrap();
    let s = auth
        .sign_in(truststream_core_auth::SignIn::new(
            "analyst@example.com",
            "correct horse battery staple",
        ))
        .await
        .unwrap();
    let mut c = Client::connect(&url, Vsn::V2, Some(s.access_token.expose())).await;
    let reply = join(&mut c, "realtime:agents", json!([binding(Some("agents"))])).await;
    assert_eq!(reply["status"], "ok", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_auth_provider_only_anon_tables_can_be_bound() {
    let (db, _) = setup(auth_config()).await;
    let mut config = owned_config();
    config.publish.push("notices".into());
    config.tables.insert(
        "notices".into(),
        TableRule {
            anon: true,
            ..TableRule::default()
        },
    );
    db.create_table(&TableSchema::new("notices").column(ColumnDef::text("id").primary_key()))
        .await
        .unwrap();
    let rt = WsRealtime::start(config, Some(db.clone()), None)
        .await
        .unwrap();
    let mut c = Client::connect(&rt.url().unwrap(), Vsn::V2, None).await;
    let reply = join(&mut c, "realtime:agents", json!([binding(Some("agents"))])).await;
    assert_refused(&reply, "anonymous on agents", "anonymous");
    let reply = join(
        &mut c,
        "realtime:notices",
        json!([binding(Some("notices"))]),
    )
    .await;
    assert_eq!(reply["status"], "ok", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_subscribes_only_to_bound_tables_while_they_are_bound() {
    let (db, auth) = setup(auth_config()).await;
    let mut config = owned_config();
    config.publish.push("notices".into());
    db.create_table(&TableSchema::new("notices").column(ColumnDef::text("id").primary_key()))
        .await
        .unwrap();
    let (hub, url) = hub(config, &db, &auth).await;
    let counters = hub.counters().unwrap();
    let feeds = || {
        counters
            .table_feeds
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!(feeds(), 0, "nothing is bound yet");
    let (_, token) = user(&auth, "alice@example.com").await;
    let mut a = Client::connect(&url, Vsn::V2, Some(&token)).await;
    let mut b = Client::connect(&url, Vsn::V2, Some(&token)).await;
    let both = json!([binding(Some("agents")), binding(Some("agents"))]);
    assert_eq!(join(&mut a, "realtime:x", both).await["status"], "ok");
    assert_eq!(feeds(), 1, "one feed for agents");
    assert_eq!(
        join(&mut b, "realtime:y", json!([binding(Some("agents"))])).await["status"],
        "ok"
    );
    assert_eq!(
        join(&mut b, "realtime:z", json!([binding(Some("notices"))])).await["status"],
        "ok"
    );
    assert_eq!(feeds(), 2, "agents and notices");
    // An in-process row subscription shares the table's feed.
    let sub = truststream_core_realtime::Realtime::subscribe_changes(
        &hub,
        truststream_core_realtime::ChangeSpec::table("notices"),
        truststream_core_realtime::handler(|_| {}),
    )
    .await
    .unwrap();
    assert_eq!(feeds(), 2);
    drop(b);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(feeds(), 2, "a still binds agents, the subscription notices");
    drop(sub);
    common::eventually("the notices feed to be dropped", || feeds() == 1).await;
    let r = a.push(None, "realtime:x", "phx_leave", json!({})).await;
    a.reply(&r).await;
    common::eventually("the agents feed to be dropped", || feeds() == 0).await;
}

/// Joins `realtime:agents` bound to `agents` (asserting the join is
/// accepted), then sends `token` as the channel's new access token.
async fn join_agents_then_send_token(c: &mut Client, token: &str) {
    let jr = c
        .join_ok(
            "realtime:agents",
            json!({"postgres_changes": [binding(Some("agents"))]}),
        )
        .await;
    c.push(
        Some(&jr),
        "realtime:agents",
        "access_token",
        json!({"access_token": token}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_access_token_is_checked_again() {
    let mut cfg = auth_config();
    cfg.roles
        .insert("analyst".into(), vec!["read:agents".into()]);
    let (db, auth) = setup(cfg).await;
    let (_hub, url) = hub(owned_config(), &db, &auth).await;
    let (alice, alice_token) = user(&auth, "alice@example.com").await;
    let (bob, bob_token) = user(&auth, "bob@example.com").await;
    let mut c = Client::connect(&url, Vsn::V2, Some(&alice_token)).await;
    // The channel now reads as bob: his rows, not alice's.
    join_agents_then_send_token(&mut c, &bob_token).await;
    // The reader handles a connection's frames in order: once a later
    // heartbeat is answered, the new token is in force.
    let r = c.push(None, "phoenix", "heartbeat", json!({})).await;
    c.reply(&r).await;
    let agent = |id: &str, owner: &str| row(json!({"id": id, "user_id": owner}));
    db.create("agents", agent("a1", &alice)).await.unwrap();
    db.create("agents", agent("b1", &bob)).await.unwrap();
    let d = change(&mut c).await;
    assert_eq!(d["record"]["id"], "b1", "{d}");
    c.expect_quiet(&[]).await;

    // A table that needs a permission: a token without it closes the
    // channel.
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.publish = vec!["agents".into()];
    config.tables.insert(
        "agents".into(),
        TableRule {
            permission: Some("read:agents".into()),
            ..TableRule::default()
        },
    );
    let (_hub2, url) = hub(config, &db, &auth).await;
    let (id, _) = user(&auth, "analyst@example.com").await;
    db.update("auth_users", &json!(id), row(json!({"roles": ["analyst"]})))
        .await
        .unwrap();
    let s = auth
        .sign_in(truststream_core_auth::SignIn::new(
            "analyst@example.com",
            "correct horse battery staple",
        ))
        .await
        .unwrap();
    let mut c = Client::connect(&url, Vsn::V2, Some(s.access_token.expose())).await;
    join_agents_then_send_token(&mut c, &alice_token).await;
    let m = c.expect("system").await;
    assert_eq!(m.payload["status"], "error");
    let message = m.payload["message"].as_str().unwrap_or_default();
    assert!(message.contains("read:agents"), "{message}");
    c.expect("phx_close").await;
}

#[test]
fn publish_and_table_rules_read_from_configuration() {
    let config: WsRealtimeConfig = serde_json::from_value(json!({
        "publish": ["agents", "rt_*"],
        "tables": {"agents": {"owner_column": "user_id", "hidden": ["secret"],
                              "permission": "read:agents"}},
    }))
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.publish, ["agents", "rt_*"]);
    let rule = &config.tables["agents"];
    assert_eq!(rule.owner_column.as_deref(), Some("user_id"));
    assert_eq!(rule.hidden, ["secret"]);
    assert!(!rule.anon);
    // A misspelt rule key is refused, not ignored.
    let typo = serde_json::from_value::<WsRealtimeConfig>(json!({
        "publish": ["agents"], "tables": {"agents": {"owner": "user_id"}},
    }));
    assert!(typo.is_err());
    // The default publishes nothing.
    assert!(WsRealtimeConfig::default().publish.is_empty());
}
