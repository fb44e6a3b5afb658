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
use truststream_db_postgres::PgDatabase;
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

/// The subject claim, as a policy reads it (`auth.uid()` without the cast).
const SUB: &str = "current_setting('request.jwt.claim.sub', true)";

/// A hub on PostgreSQL with auth-jwt, for the row-security tests.
struct RlsHub {
    scratch: Scratch,
    db: Arc<dyn Database>,
    auth: Arc<dyn Auth>,
    /// Handles on `db` before the hub started.
    alone: usize,
    hub: WsRealtime,
}

/// `tables` made in a scratch schema; the roles, the schema grant, then
/// `setup(schema)` run as the superuser; each table published with
/// `row_security` and `hidden`. `None` without a server.
async fn rls_hub(
    tag: &str,
    tables: &[TableSchema],
    hidden: &[&str],
    setup: impl FnOnce(&str) -> Vec<String>,
) -> Option<RlsHub> {
    let scratch = Scratch::new(testing::server().await?);
    let config = scratch.config(tag);
    let db: Arc<dyn Database> = Arc::new(PgDatabase::open(config.clone()).await.unwrap());
    for t in tables {
        db.create_table(t).await.unwrap();
    }
    let schema = config.schema.clone().unwrap();
    let mut statements = vec![
        testing::ensure_role("anon"),
        testing::ensure_role("authenticated"),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO anon, authenticated"),
    ];
    statements.extend(setup(&schema));
    testing::admin(&config, &statements).await;
    let mut cfg = JwtAuthConfig::with_secret("realtime-postgres-rls-secret-0123456789");
    cfg.argon2 = Argon2Cost::minimal();
    let auth: Arc<dyn Auth> = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
    let alone = Arc::strong_count(&db);
    let mut hub_config = WsRealtimeConfig::hub("127.0.0.1:0");
    for t in tables {
        hub_config.publish.push(t.name.clone());
        hub_config.tables.insert(
            t.name.clone(),
            TableRule {
                row_security: true,
                hidden: hidden.iter().map(|h| h.to_string()).collect(),
                ..TableRule::default()
            },
        );
    }
    let hub = WsRealtime::start(hub_config, Some(db.clone()), Some(auth.clone()))
        .await
        .unwrap();
    Some(RlsHub {
        scratch,
        db,
        auth,
        alone,
        hub,
    })
}

impl RlsHub {
    /// Signs `email` up and, as that user, joins each of `tables`'
    /// changes; the client and the user's id.
    async fn subscriber(&self, email: &str, tables: &[&str]) -> (Client, String) {
        let s = self
            .auth
            .sign_up(SignUp::new(email, "correct horse battery staple"))
            .await
            .unwrap();
        let url = self.hub.url().unwrap();
        let mut c = Client::connect(&url, Vsn::V2, Some(s.access_token.expose())).await;
        for table in tables {
            let bindings = json!([{"event": "*", "schema": "public", "table": table}]);
            let (_, reply) = c
                .join(
                    &format!("realtime:{table}"),
                    json!({"config": {"postgres_changes": bindings}}),
                )
                .await;
            assert_eq!(reply["status"], "ok", "{reply}");
        }
        (c, s.user.id)
    }
}

/// `row_security = true`: each change is read back as the subscriber
/// (role `authenticated` with the token's claims) before it is sent, so the
/// table's PostgreSQL policies decide who gets it. Changes stay in order,
/// which lets each "next message" below prove that nothing came before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_policies_decide_which_changes_each_subscriber_gets() {
    let table = |name: &str| {
        TableSchema::new(name)
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("owner").not_null())
            .column(ColumnDef::text("body"))
            .column(ColumnDef::text("secret"))
    };
    let Some(h) = rls_hub(
        "rtrls",
        &[table("notes"), table("ungranted")],
        &["secret"],
        |schema| {
            let notes = format!("\"{schema}\".notes");
            let ungranted = format!("\"{schema}\".ungranted");
            vec![
                format!("GRANT SELECT ON {notes} TO authenticated"),
                format!("ALTER TABLE {notes} ENABLE ROW LEVEL SECURITY"),
                format!("CREATE POLICY own ON {notes} FOR SELECT TO authenticated USING (owner = {SUB})"),
                // RLS on, but no SELECT grant: every check fails.
                format!("ALTER TABLE {ungranted} ENABLE ROW LEVEL SECURITY"),
                format!("CREATE POLICY own ON {ungranted} FOR SELECT TO authenticated USING (owner = {SUB})"),
            ]
        },
    )
    .await
    else {
        return;
    };
    let db = h.db.clone();
    let (mut a, alice) = h
        .subscriber("alice@example.com", &["notes", "ungranted"])
        .await;
    let (mut b, bob) = h
        .subscriber("bob@example.com", &["notes", "ungranted"])
        .await;
    let note = |id: &str, owner: &str| {
        row(json!({"id": id, "owner": owner, "body": format!("{id} body"), "secret": "s3cr3t"}))
    };
    let next = |m: &common::Msg| {
        let d = &m.payload["data"];
        let text = m.payload.to_string();
        assert!(!text.contains("s3cr3t"), "a hidden column was sent: {text}");
        (
            d["type"].as_str().unwrap_or_default().to_string(),
            d["record"]["id"].as_str().unwrap_or_default().to_string(),
            d["old_record"].clone(),
        )
    };

    // Inserts: each user gets only the rows the policy lets them read.
    db.create("notes", note("b1", &bob)).await.unwrap();
    db.create("notes", note("a1", &alice)).await.unwrap();
    let m = a.expect("postgres_changes").await;
    assert_eq!(next(&m).0, "INSERT");
    assert_eq!(next(&m).1, "a1", "alice's first change must be her own row");
    let m = b.expect("postgres_changes").await;
    assert_eq!(next(&m).1, "b1", "bob's first change must be his own row");

    // A row moved from alice to bob: alice is not told (she cannot read it
    // any more); bob gets the new row but not the old one (whose policy
    // can no longer be evaluated).
    db.update("notes", &json!("a1"), row(json!({"owner": bob})))
        .await
        .unwrap();
    let m = b.expect("postgres_changes").await;
    let (kind, id, old) = next(&m);
    assert_eq!((kind.as_str(), id.as_str()), ("UPDATE", "a1"));
    assert!(
        !old.to_string().contains(&alice),
        "the old row (alice's) reached bob: {old}"
    );
    // Deletes cannot be checked (the row is gone) and the table has no
    // owner column to vouch for them: nobody gets them.
    db.delete("notes", &json!("b1")).await.unwrap();
    // A table whose checks fail (no SELECT grant) sends nothing.
    db.create("ungranted", note("u1", &alice)).await.unwrap();
    db.create("notes", note("a2", &alice)).await.unwrap();
    db.create("notes", note("b2", &bob)).await.unwrap();
    let m = a.expect("postgres_changes").await;
    assert_eq!(
        (next(&m).0.as_str(), next(&m).1.as_str()),
        ("INSERT", "a2"),
        "alice's next change after a1 is a2: {}",
        m.payload
    );
    let m = b.expect("postgres_changes").await;
    assert_eq!(
        (next(&m).0.as_str(), next(&m).1.as_str()),
        ("INSERT", "b2"),
        "bob's next change after the a1 update is b2 (no delete, no u1): {}",
        m.payload
    );
    a.expect_quiet(&[]).await;
    b.expect_quiet(&[]).await;
    let health = truststream_core_realtime::Realtime::health(&h.hub).await;
    assert!(
        format!("{health:?}").contains("row-level security check"),
        "the failed checks show in the provider's health: {health:?}"
    );

    drop((a, b));
    drop(h.hub);
    h.scratch.cleanup().await.unwrap();
}

/// A change is checked against its own version of the row: a row
/// inserted as bob's and then given to alice must not reach alice as the
/// insert (which carries bob's values), though alice can read the row by
/// the time the insert's check runs. Alice gets the update (her version).
/// A slow policy on another table holds the checking queue while the row
/// is written twice, so the insert is checked after the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_checked_against_its_own_version_not_a_later_one() {
    let notes = TableSchema::new("notes")
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("owner").not_null())
        .column(ColumnDef::text("body"))
        .column(ColumnDef::float("n"))
        .column(ColumnDef::json("meta"))
        .column(ColumnDef::timestamp("at"));
    let slow = TableSchema::new("slow")
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("owner").not_null());
    let Some(h) = rls_hub("rtrlsver", &[notes, slow], &[], |schema| {
        let notes = format!("\"{schema}\".notes");
        let slow = format!("\"{schema}\".slow");
        vec![
            format!("GRANT SELECT ON {notes}, {slow} TO authenticated"),
            format!("ALTER TABLE {notes} ENABLE ROW LEVEL SECURITY"),
            format!(
                "CREATE POLICY own ON {notes} FOR SELECT TO authenticated USING (owner = {SUB})"
            ),
            format!("ALTER TABLE {slow} ENABLE ROW LEVEL SECURITY"),
            format!(
                "CREATE POLICY own ON {slow} FOR SELECT TO authenticated \
                 USING (owner = {SUB} AND (SELECT true FROM pg_sleep(3)))"
            ),
        ]
    })
    .await
    else {
        return;
    };
    let db = h.db.clone();
    let (mut a, alice) = h.subscriber("alice@example.com", &["notes", "slow"]).await;
    let bob = h
        .auth
        .sign_up(SignUp::new(
            "bob@example.com",
            "correct horse battery staple",
        ))
        .await
        .unwrap()
        .user
        .id;

    db.create("slow", row(json!({"id": "s1", "owner": alice})))
        .await
        .unwrap();
    // The slow check has started (or is queued first); the row is written
    // twice while it runs.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    db.create(
        "notes",
        row(
            json!({"id": "n1", "owner": bob, "body": "bob-private", "n": 0.1,
                   "meta": {"k": [1, "x"]}, "at": "2026-01-02T03:04:05.123456Z"}),
        ),
    )
    .await
    .unwrap();
    db.update(
        "notes",
        &json!("n1"),
        row(json!({"owner": alice, "body": "now alice's"})),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = a.expect("postgres_changes").await;
        let text = m.payload.to_string();
        assert!(
            !text.contains("bob-private"),
            "bob's version of the row reached alice: {text}"
        );
        let d = &m.payload["data"];
        got.push(format!(
            "{} {} {}",
            d["table"].as_str().unwrap_or_default(),
            d["type"].as_str().unwrap_or_default(),
            d["record"]["id"].as_str().unwrap_or_default()
        ));
    }
    assert_eq!(got, ["slow INSERT s1", "notes UPDATE n1"]);
    a.expect_quiet(&[]).await;

    drop(a);
    drop(h.hub);
    h.scratch.cleanup().await.unwrap();
}

/// A hub shut down while a row-level security check is running lets go of
/// itself and its database at once: the check (here a policy that sleeps
/// far longer than the 10 s check limit) does not keep them alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_shut_down_mid_check_lets_go_of_its_database_at_once() {
    let stalled = TableSchema::new("stalled")
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("owner").not_null());
    let Some(h) = rls_hub("rtrlsdown", &[stalled], &[], |schema| {
        let stalled = format!("\"{schema}\".stalled");
        vec![
            format!("GRANT SELECT ON {stalled} TO authenticated"),
            format!("ALTER TABLE {stalled} ENABLE ROW LEVEL SECURITY"),
            format!(
                "CREATE POLICY own ON {stalled} FOR SELECT TO authenticated \
                 USING ((SELECT true FROM pg_sleep(60)))"
            ),
        ]
    })
    .await
    else {
        return;
    };
    let (a, user) = h.subscriber("alice@example.com", &["stalled"]).await;
    let RlsHub {
        scratch,
        db,
        auth,
        alone,
        hub,
    } = h;
    db.create("stalled", row(json!({"id": "s1", "owner": user})))
        .await
        .unwrap();
    // Wait for the check's read to be running on the server.
    let running = "SELECT count(*)::int AS n FROM pg_stat_activity \
                   WHERE state = 'active' AND query LIKE '%stalled%' \
                   AND pid <> pg_backend_pid()";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = db.raw_query(running, &BTreeMap::new()).await.unwrap();
        if rows[0]["n"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the check never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(a);
    drop(hub);
    // Well under the 10 s a check may take.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(6);
    while Arc::strong_count(&db) > alone {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a shut-down hub still holds the database ({} handles, {alone} without the hub)",
            Arc::strong_count(&db)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The server-side sleep outlives its client: end it before dropping
    // the schema (which would wait for it).
    db.raw_query(
        "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity \
         WHERE query LIKE '%stalled%' AND pid <> pg_backend_pid()",
        &BTreeMap::new(),
    )
    .await
    .unwrap();
    drop(auth);
    scratch.cleanup().await.unwrap();
}

/// A hub configured with `row_security` on a database that cannot enforce
/// it does not start, and says which setting is wrong.
#[tokio::test]
async fn row_security_on_a_database_without_it_refuses_to_start() {
    let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.publish = vec!["notes".into()];
    config.tables.insert(
        "notes".into(),
        TableRule {
            row_security: true,
            ..TableRule::default()
        },
    );
    let Err(e) = WsRealtime::start(config, Some(db), None).await else {
        panic!("a hub with row_security on db-memory started");
    };
    assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("realtime.tables.notes.row_security"),
        "{e}"
    );
}
