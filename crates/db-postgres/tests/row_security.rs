//! Row-level security through `Database::scoped` (the shared engine's
//! `Scoped` handle) against a real server: a table with RLS enabled and
//! forced, a policy keyed on the request's `sub` claim, and two users who
//! must never read or change each other's rows. Each test works in its own
//! scratch schema; the roles (`anon`, `authenticated`) are cluster-wide and
//! created idempotently.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

use serde_json::{json, Value};
use truststream_core_db::{
    col, ColumnDef, Database, ErrorKind, Filter, Operation, Params, Query, RequestScope, Row,
    TableSchema,
};
use truststream_db_postgres::testing::{self, admin, ensure_role, Scratch};
use truststream_db_postgres::{PgConfig, PgDatabase};

use std::sync::Arc;

/// Matches every row.
fn everything() -> Filter {
    col("id").ne(Value::Null)
}

fn row(v: Value) -> Row {
    v.as_object().cloned().expect("an object")
}

async fn scratch() -> Option<Scratch> {
    testing::server().await.map(Scratch::new)
}

const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";

fn user(sub: &str) -> RequestScope {
    let claims = json!({"sub": sub, "role": "authenticated", "aud": "authenticated"});
    RequestScope::new("authenticated", claims.as_object().cloned().unwrap()).unwrap()
}

fn anon() -> RequestScope {
    RequestScope::new("anon", row(json!({"role": "anon"}))).unwrap()
}

/// A `notes` table with RLS enabled and forced: `authenticated` sees and
/// writes its own rows (`owner` = the `sub` claim), `anon` reads the
/// public ones.
async fn notes(config: &PgConfig, db: &PgDatabase) {
    db.create_table(
        &TableSchema::new("notes")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("owner").not_null())
            .column(ColumnDef::text("body"))
            .column(ColumnDef::boolean("public").not_null().default_value(false)),
    )
    .await
    .unwrap();
    let schema = config.schema.clone().unwrap();
    let t = format!("\"{schema}\".notes");
    let sub = "current_setting('request.jwt.claim.sub', true)";
    admin(
        config,
        &[
            ensure_role("anon"),
            ensure_role("authenticated"),
            format!("GRANT USAGE ON SCHEMA \"{schema}\" TO anon, authenticated"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO authenticated"),
            format!("GRANT SELECT ON {t} TO anon"),
            format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
            format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"),
            format!(
                "CREATE POLICY own ON {t} FOR ALL TO authenticated \
                 USING (owner = {sub}) WITH CHECK (owner = {sub})"
            ),
            format!("CREATE POLICY public_read ON {t} FOR SELECT TO anon USING (public)"),
        ],
    )
    .await;
    for (id, owner, public) in [
        ("a1", A, false),
        ("a2", A, true),
        ("b1", B, false),
        ("b2", B, false),
    ] {
        db.create(
            "notes",
            row(json!({"id": id, "owner": owner, "body": format!("{id} body"), "public": public})),
        )
        .await
        .unwrap();
    }
}

fn ids(rows: &[Row]) -> Vec<String> {
    let mut v: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

async fn all_ids(db: &dyn Database) -> Vec<String> {
    ids(&db.read("notes", &Query::new()).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_never_reads_or_changes_another_users_rows() {
    let Some(s) = scratch().await else { return };
    let config = s.config("rls");
    let db = Arc::new(PgDatabase::open(config.clone()).await.unwrap());
    notes(&config, &db).await;
    assert!(db.capabilities().row_security);

    let a = db.clone().scoped(user(A)).unwrap();
    // Reads: only A's rows, whatever the query asks.
    assert_eq!(all_ids(&*a).await, ["a1", "a2"]);
    let q = Query::new().filter(col("owner").eq(B));
    assert!(a.read("notes", &q).await.unwrap().is_empty());
    assert!(a.get("notes", &json!("b1")).await.unwrap().is_none());
    assert_eq!(
        a.get("notes", &json!("a1")).await.unwrap().unwrap()["owner"],
        A
    );
    // Updates and deletes of B's rows by key find nothing.
    let e = a
        .update("notes", &json!("b1"), row(json!({"body": "pwned"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!a.delete("notes", &json!("b1")).await.unwrap());
    // Filters over everything touch only A's rows.
    let n = a
        .update_many("notes", &everything(), row(json!({"body": "mine"})))
        .await
        .unwrap();
    assert_eq!(n, 2);
    // A row owned by B: the WITH CHECK policy refuses it.
    let e = a
        .create("notes", row(json!({"id": "a3", "owner": B})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // Moving an own row to B is refused too.
    let e = a
        .update("notes", &json!("a1"), row(json!({"owner": B})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // create_many: all or none.
    let e = a
        .create_many(
            "notes",
            vec![
                row(json!({"id": "a4", "owner": A})),
                row(json!({"id": "a5", "owner": B})),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let made = a
        .create("notes", row(json!({"id": "a6", "owner": A})))
        .await
        .unwrap();
    assert_eq!(made["owner"], A);

    // Raw SQL runs scoped too (and sees the claims).
    let rows = a
        .raw_query(
            "select id, current_user::text as who, current_setting('request.jwt.claim.sub', true) as sub, \
             current_setting('request.jwt.claims', true)::json->>'aud' as aud from notes order by id",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(ids(&rows), ["a1", "a2", "a6"]);
    assert_eq!(rows[0]["who"], "authenticated");
    assert_eq!(rows[0]["sub"], A);
    assert_eq!(rows[0]["aud"], "authenticated");
    let mut p = Params::new();
    p.insert("id".into(), json!("b2"));
    let rows = a
        .raw_query("delete from notes where id = :id returning id", &p)
        .await
        .unwrap();
    assert!(rows.is_empty(), "{rows:?}");

    // Transactions: scoped, all or nothing.
    let e = a
        .transaction(vec![
            Operation::Create {
                table: "notes".into(),
                data: row(json!({"id": "a7", "owner": A})),
            },
            Operation::Update {
                table: "notes".into(),
                id: json!("b1"),
                data: row(json!({"body": "pwned"})),
            },
        ])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(db.get("notes", &json!("a7")).await.unwrap().is_none());
    let out = a
        .transaction(vec![Operation::DeleteMany {
            table: "notes".into(),
            filter: everything(),
        }])
        .await
        .unwrap();
    assert_eq!(out.len(), 1);

    // B's rows are untouched; A deleted only its own.
    assert_eq!(all_ids(&*db).await, ["b1", "b2"]);
    for r in db.read("notes", &Query::new()).await.unwrap() {
        assert_eq!(r["body"], format!("{} body", r["id"].as_str().unwrap()));
    }
    let b = db.clone().scoped(user(B)).unwrap();
    assert_eq!(all_ids(&*b).await, ["b1", "b2"]);
    assert_eq!(b.delete_many("notes", &everything()).await.unwrap(), 2);
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn anon_reads_what_its_policy_allows_and_writes_nothing() {
    let Some(s) = scratch().await else { return };
    let config = s.config("rls_anon");
    let db = Arc::new(PgDatabase::open(config.clone()).await.unwrap());
    notes(&config, &db).await;
    let anon = db.clone().scoped(anon()).unwrap();
    assert_eq!(all_ids(&*anon).await, ["a2"]);
    let e = anon
        .create("notes", row(json!({"id": "x", "owner": A})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = anon.delete("notes", &json!("a2")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert_eq!(all_ids(&*db).await, ["a1", "a2", "b1", "b2"]);
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_never_outlive_the_call_on_a_pooled_connection() {
    let Some(s) = scratch().await else { return };
    let mut config = s.config("rls_pool");
    // One connection: every call below reuses it (and a scoped call must
    // not need a second one for schema metadata).
    config.max_connections = 1;
    let db = Arc::new(PgDatabase::open(config.clone()).await.unwrap());
    notes(&config, &db).await;
    let a = db.clone().scoped(user(A)).unwrap();
    let probe = "select current_user::text as who, \
                 coalesce(current_setting('request.jwt.claim.sub', true), '') as sub";
    for _ in 0..3 {
        assert_eq!(all_ids(&*a).await, ["a1", "a2"]);
        a.update("notes", &json!("a1"), row(json!({"body": "x"})))
            .await
            .unwrap();
        let e = a
            .create("notes", row(json!({"id": "zz", "owner": B})))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        let rows = db.raw_query(probe, &Params::new()).await.unwrap();
        assert_eq!(rows[0]["who"], "postgres", "{rows:?}");
        assert_eq!(rows[0]["sub"], "", "{rows:?}");
        assert_eq!(all_ids(&*db).await.len(), 4);
    }
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_claims_are_bound_values() {
    let Some(s) = scratch().await else { return };
    let config = s.config("rls_hostile");
    let db = Arc::new(PgDatabase::open(config.clone()).await.unwrap());
    notes(&config, &db).await;
    let evil = "'); drop table notes; --";
    let claims = json!({
        "sub": evil,
        "role": "authenticated'); drop table notes; --\"",
        "email": "x\\'\"$$;",
        "nested": {"a": ["'", "\""]},
    });
    let scope = RequestScope::new("authenticated", row(claims)).unwrap();
    let h = db.clone().scoped(scope).unwrap();
    assert!(all_ids(&*h).await.is_empty());
    let rows = h
        .raw_query(
            "select current_setting('request.jwt.claim.sub', true) as sub, \
             current_setting('request.jwt.claim.role', true) as role, \
             current_setting('request.jwt.claims', true)::json->'nested' as nested",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(rows[0]["sub"], evil);
    assert_eq!(rows[0]["role"], "authenticated'); drop table notes; --\"");
    assert_eq!(rows[0]["nested"], json!({"a": ["'", "\""]}));
    // The row it may write is its own, whatever its sub looks like.
    let made = h
        .create("notes", row(json!({"id": "e1", "owner": evil})))
        .await
        .unwrap();
    assert_eq!(made["owner"], evil);
    assert_eq!(all_ids(&*db).await, ["a1", "a2", "b1", "b2", "e1"]);
    // A role that is not a plain identifier never gets this far.
    let e = RequestScope::new("authenticated\"; drop table notes; --", Row::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_roles_ddl_and_the_change_feed_are_refused() {
    let Some(s) = scratch().await else { return };
    let config = s.config("rls_refuse");
    let db = Arc::new(PgDatabase::open(config.clone()).await.unwrap());
    notes(&config, &db).await;

    let ghost = RequestScope::new("ts_no_such_role_x9", Row::new()).unwrap();
    let g = db.clone().scoped(ghost).unwrap();
    let e = g.read("notes", &Query::new()).await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::InvalidInput | ErrorKind::PermissionDenied
        ),
        "{e}"
    );
    assert!(e.message().contains("ts_no_such_role_x9"), "{e}");
    let e = g
        .create("notes", row(json!({"id": "g", "owner": A})))
        .await
        .unwrap_err();
    assert!(e.message().contains("ts_no_such_role_x9"), "{e}");
    assert!(e.is_unapplied());

    let a = db.clone().scoped(user(A)).unwrap();
    let caps = a.capabilities();
    assert!(!caps.change_feed && !caps.schema && caps.row_security && caps.transactions);
    let e = a.subscribe_changes(Some("notes")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let e = a.drop_table("notes", false).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let e = a
        .create_table(&TableSchema::new("t2").column(ColumnDef::text("id").primary_key()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let e = a.disconnect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let e = a.clone().scoped(user(B)).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    // Metadata reads stay available (the REST front end types filters).
    assert!(a.describe_table("notes").await.unwrap().is_some());
    // The base handle still works and sees everything.
    assert_eq!(all_ids(&*db).await.len(), 4);
    // Debug shows no claims.
    let d = format!("{:?}", user("secret-sub-x"));
    assert!(!d.contains("aud"), "{d}");
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn scoped_writes_on_a_watched_table_reach_the_change_feed() {
    let Some(s) = scratch().await else { return };
    let config = s.config("rls_feed");
    let db = Arc::new(PgDatabase::open(config.clone()).await.unwrap());
    notes(&config, &db).await;
    // The feed's trigger runs as the writer: as the scoped role here.
    let mut feed = db.subscribe_changes(Some("notes")).await.unwrap();
    let a = db.clone().scoped(user(A)).unwrap();
    let made = a
        .create("notes", row(json!({"id": "a9", "owner": A})))
        .await
        .unwrap();
    let change = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
        .await
        .expect("a change within 10 s")
        .expect("feed open")
        .expect("no gap");
    assert_eq!(change.key, json!("a9"));
    assert_eq!(change.new.as_ref(), Some(&made));
    s.cleanup().await.unwrap();
}

/// A scoped handle's raw query binds each parameter as the type
/// PostgreSQL infers for it, as the unscoped one does: the same SQL (no
/// `:owner::uuid` cast) runs both ways, directly and through a
/// transaction-mode pooler.
#[tokio::test(flavor = "multi_thread")]
async fn scoped_and_unscoped_raw_queries_bind_alike() {
    let Some(s) = scratch().await else { return };
    for (tag, pooler) in [
        ("rls_raw", truststream_db_postgres::Pooler::None),
        ("rls_raw_pool", truststream_db_postgres::Pooler::Transaction),
    ] {
        let mut config = s.config(tag);
        config.pooler = pooler;
        let db = Arc::new(PgDatabase::open(config.clone()).await.unwrap());
        notes(&config, &db).await;
        let sql = "select id from notes where owner::uuid = :owner \
                   and :since < now() and length(body) > :n order by id";
        let mut p = Params::new();
        p.insert("owner".into(), json!(A));
        p.insert("since".into(), json!("2020-01-01T00:00:00Z"));
        p.insert("n".into(), json!(1));
        let unscoped = db.raw_query(sql, &p).await.unwrap();
        assert_eq!(ids(&unscoped), ["a1", "a2"], "{tag}");
        let a = db.clone().scoped(user(A)).unwrap();
        let scoped = a.raw_query(sql, &p).await.unwrap();
        assert_eq!(
            ids(&scoped),
            ["a1", "a2"],
            "{tag}: typed like the unscoped query"
        );
        let b = db.clone().scoped(user(B)).unwrap();
        assert!(
            b.raw_query(sql, &p).await.unwrap().is_empty(),
            "{tag}: B sees none of A's rows"
        );
        // A value that is not of the inferred type is refused, not coerced.
        p.insert("owner".into(), json!(42));
        let e = a.raw_query(sql, &p).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{tag}: {e}");
        // A wrong count of parameters is InvalidInput too.
        let e = a
            .raw_query(
                "select id from notes where owner::uuid = :owner",
                &Params::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{tag}: {e}");
    }
    s.cleanup().await.unwrap();
}
