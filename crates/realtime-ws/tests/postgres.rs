//! The hub on PostgreSQL, with auth-jwt keeping its users in the same
//! database (what the runtime does): the hub watches only the tables
//! clients bound, never the auth tables, and each user gets only their own
//! rows. Skipped (with a message) without a server, failing under
//! `CI=true`.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::Client;
use serde_json::{json, Value};
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_auth::{Auth, SignUp};
use truststream_core_db::{ColumnDef, Database, Row, TableSchema};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_realtime_ws::{TableRule, Vsn, WsRealtime, WsRealtimeConfig};

fn row(v: Value) -> Row {
    v.as_object().cloned().unwrap()
}

/// The tables of the scratch schema that carry a trigger.
async fn triggered_tables(db: &Arc<dyn Database>) -> Vec<String> {
    let rows = db
        .raw_query(
            "SELECT DISTINCT c.relname::text AS name FROM pg_trigger t \
             JOIN pg_class c ON c.oid = t.tgrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND NOT t.tgisinternal ORDER BY 1",
            &BTreeMap::new(),
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_auth_tables_are_never_watched_and_rows_stay_with_their_owner() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let db: Arc<dyn Database> = Arc::new(scratch.database("rtaccess").await.unwrap());
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("user_id"))
            .column(ColumnDef::text("secret")),
    )
    .await
    .unwrap();
    let mut cfg = JwtAuthConfig::with_secret("realtime-postgres-test-secret-0123456789");
    cfg.argon2 = Argon2Cost::minimal();
    let auth: Arc<dyn Auth> = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());

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
    let hub = WsRealtime::start(config, Some(db.clone()), Some(auth.clone()))
        .await
        .unwrap();
    assert_eq!(
        triggered_tables(&db).await,
        Vec::<String>::new(),
        "nothing is bound yet"
    );

    let signup = |email: &'static str| {
        let auth = auth.clone();
        async move {
            let s = auth
                .sign_up(SignUp::new(email, "correct horse battery staple"))
                .await
                .unwrap();
            (s.user.id.clone(), s.access_token.expose().to_string())
        }
    };
    let (alice, token) = signup("alice@example.com").await;
    let (bob, _) = signup("bob@example.com").await;
    let mut c = Client::connect(&hub.url().unwrap(), Vsn::V2, Some(&token)).await;
    let bindings = json!([{"event": "*", "schema": "public", "table": "agents"}]);
    let (_, reply) = c
        .join(
            "realtime:agents",
            json!({"config": {"postgres_changes": bindings}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (_, reply) = c
        .join(
            "realtime:users",
            json!({"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "auth_users"}]}}),
        )
        .await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(
        triggered_tables(&db).await,
        ["agents"],
        "only the bound table is watched"
    );

    // A sign-up (auth_users, auth_sessions, auth_refresh_tokens rows) and
    // bob's row do not reach alice; her own row does, without the secret.
    let _ = signup("carol@example.com").await;
    let theirs = row(json!({"id": "b1", "user_id": bob, "secret": "s3cr3t"}));
    db.create("agents", theirs).await.unwrap();
    let mine = row(json!({"id": "a1", "user_id": alice, "secret": "s3cr3t"}));
    db.create("agents", mine).await.unwrap();
    let m = c.expect("postgres_changes").await.payload;
    assert_eq!(
        m["data"]["record"],
        json!({"id": "a1", "user_id": alice}),
        "{m}"
    );
    c.expect_quiet(&[]).await;

    drop(c);
    drop(hub);
    scratch.cleanup().await.unwrap();
}
