//! Request-scoped handles (PostgreSQL row-level security) through the
//! cache: a scoped read is never served from nor stored in the shared
//! cache, and a scoped write still invalidates what unscoped reads cached.
//! Against the PostgreSQL server of `truststream_db_postgres::testing`.

#![allow(clippy::unwrap_used)] // test helpers, not library code

use std::sync::Arc;

use serde_json::{json, Value};
use truststream_core::ErrorKind;
use truststream_core_db::{
    col, ColumnDef, Database, Params, Query, RequestScope, Row, TableSchema,
};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::{PgConfig, PgDatabase};
use truststream_layer_cache::{Admission, Cache, CacheConfig};

const A: &str = "user-a";
const B: &str = "user-b";

/// The cache's defaults, but storing every miss ([`Admission::FirstMiss`]):
/// these tests are about serving and invalidation, from the second read on.
fn first_miss() -> CacheConfig {
    CacheConfig {
        admission: Admission::FirstMiss,
        ..CacheConfig::default()
    }
}

fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}

fn user(sub: &str) -> RequestScope {
    RequestScope::new(
        "authenticated",
        row(json!({"sub": sub, "role": "authenticated"})),
    )
    .unwrap()
}

fn ensure_role(name: &str) -> String {
    format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN \
             CREATE ROLE {name} NOLOGIN; \
           END IF; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )
}

/// A `notes` table with RLS (forced): `authenticated` sees its own rows.
async fn notes(config: &PgConfig) -> Arc<PgDatabase> {
    let db = Arc::new(PgDatabase::open(config.clone()).await.unwrap());
    db.create_table(
        &TableSchema::new("notes")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("owner").not_null())
            .column(ColumnDef::text("body")),
    )
    .await
    .unwrap();
    let schema = config.schema.clone().unwrap();
    let t = format!("\"{schema}\".notes");
    let sub = "current_setting('request.jwt.claim.sub', true)";
    for s in [
        ensure_role("authenticated"),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO authenticated"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO authenticated"),
        format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
        format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"),
        format!(
            "CREATE POLICY own ON {t} FOR ALL TO authenticated \
             USING (owner = {sub}) WITH CHECK (owner = {sub})"
        ),
    ] {
        db.raw_query(&s, &Params::new()).await.unwrap();
    }
    for (id, owner) in [("a1", A), ("b1", B), ("b2", B)] {
        db.create("notes", row(json!({"id": id, "owner": owner, "body": id})))
            .await
            .unwrap();
    }
    db
}

fn ids(rows: &[Row]) -> Vec<&str> {
    let mut v: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    v.sort_unstable();
    v
}

async fn scoped_reads_bypass_and_scoped_writes_invalidate(follow_changes: bool) {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let config = s.config("cache_rls");
    let raw = notes(&config).await;
    let cache_config = CacheConfig {
        follow_changes,
        ..first_miss()
    };
    let db = Cache::wrap(raw, cache_config).await.unwrap();
    let q = Query::new().filter(col("body").ne(Value::Null));

    // Unscoped: everything, cached (the second read is a hit).
    assert_eq!(
        ids(&db.read("notes", &q).await.unwrap()),
        ["a1", "b1", "b2"]
    );
    assert_eq!(
        ids(&db.read("notes", &q).await.unwrap()),
        ["a1", "b1", "b2"]
    );
    assert!(db.get("notes", &json!("b1")).await.unwrap().is_some());
    let before = db.layer().stats();
    assert_eq!(before.hits, 1);

    // The same query, scoped: RLS-filtered rows, not the cached ones.
    let a = Arc::clone(&db).scoped(user(A)).unwrap();
    assert_eq!(ids(&a.read("notes", &q).await.unwrap()), ["a1"]);
    assert_eq!(ids(&a.read("notes", &q).await.unwrap()), ["a1"]);
    assert!(a.get("notes", &json!("b1")).await.unwrap().is_none());
    let after = db.layer().stats();
    assert_eq!(after.hits, before.hits, "a scoped read was served");
    assert_eq!(after.inserts, before.inserts, "a scoped read was stored");
    assert_eq!(after.bypassed, before.bypassed + 3);
    // ... and the unscoped answer is still the whole table.
    assert_eq!(
        ids(&db.read("notes", &q).await.unwrap()),
        ["a1", "b1", "b2"]
    );

    // A scoped write invalidates what unscoped reads cached.
    a.update("notes", &json!("a1"), row(json!({"body": "changed"})))
        .await
        .unwrap();
    let all = db.read("notes", &q).await.unwrap();
    let a1 = all.iter().find(|r| r["id"] == "a1").unwrap();
    assert_eq!(a1["body"], "changed");
    // RLS still refuses through the cache.
    let e = a
        .update("notes", &json!("b1"), row(json!({"body": "pwned"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = a
        .create("notes", row(json!({"id": "x", "owner": B})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_change_feed() {
    scoped_reads_bypass_and_scoped_writes_invalidate(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn following_the_change_feed() {
    scoped_reads_bypass_and_scoped_writes_invalidate(true).await;
}
