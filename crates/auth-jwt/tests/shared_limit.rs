//! The failed sign-in limit with `sign_in_rate_limit.store = "database"`:
//! two provider instances (two processes' worth: separate connections,
//! separate memory) over one database share the count — on a SQLite file
//! and on PostgreSQL (a scratch schema on the server at `DATABASE_URL`).
#![allow(clippy::unwrap_used)] // test code

mod common;

use std::sync::Arc;

use common::*;
use serde_json::json;
use truststream_auth_jwt::{FailureStore, JwtAuth, JwtAuthConfig, SignInRateLimit};
use truststream_core_auth::{Auth, ErrorKind, SignIn, SignUp};
use truststream_core_db::{Database, Query};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};

const TABLE: &str = "auth_sign_in_failures";

fn shared_config(max_failures: u32) -> JwtAuthConfig {
    let mut c = config();
    c.sign_in_rate_limit = SignInRateLimit {
        max_failures,
        window_secs: 300,
        store: FailureStore::Database,
        ..SignInRateLimit::default()
    };
    c
}

async fn fail(auth: &JwtAuth, email: &str) -> ErrorKind {
    auth.sign_in(SignIn::new(email, "wrong password!"))
        .await
        .unwrap_err()
        .kind()
}

/// The checks, on two instances over two connections to one database.
async fn two_instances_share_the_limit(db_a: Arc<dyn Database>, db_b: Arc<dyn Database>) {
    let a = JwtAuth::new(shared_config(3), db_a.clone()).await.unwrap();
    let b = JwtAuth::new(shared_config(3), db_b.clone()).await.unwrap();
    assert!(a.capabilities().private_tables.contains(&TABLE.to_string()));

    // Failures on either instance add up: 2 on a, 1 on b.
    let email = unique_email();
    a.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    assert_eq!(fail(&a, &email).await, ErrorKind::Unauthenticated);
    assert_eq!(fail(&a, &email).await, ErrorKind::Unauthenticated);
    assert_eq!(fail(&b, &email).await, ErrorKind::Unauthenticated);
    // Both refuse now, even the right password, without verifying it.
    let verified = (
        a.stats().password_verifications,
        b.stats().password_verifications,
    );
    for auth in [&a, &b] {
        let e = auth
            .sign_in(SignIn::new(&email, PASSWORD))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    }
    assert_eq!(
        (
            a.stats().password_verifications,
            b.stats().password_verifications
        ),
        verified
    );
    // Another account is not affected.
    let other = unique_email();
    b.sign_up(SignUp::new(&other, PASSWORD)).await.unwrap();
    a.sign_in(SignIn::new(&other, PASSWORD)).await.unwrap();

    // A success on one instance resets the count for both.
    let reset = unique_email();
    a.sign_up(SignUp::new(&reset, PASSWORD)).await.unwrap();
    fail(&a, &reset).await;
    fail(&b, &reset).await;
    b.sign_in(SignIn::new(&reset, PASSWORD)).await.unwrap();
    fail(&a, &reset).await;
    fail(&b, &reset).await;
    a.sign_in(SignIn::new(&reset, PASSWORD)).await.unwrap();

    // Concurrent failures from both instances each count exactly once (the
    // increment is a compare-and-set): 24 at once leave 24 in the table.
    let many = JwtAuth::new(shared_config(1000), db_a.clone())
        .await
        .unwrap();
    let many_b = JwtAuth::new(shared_config(1000), db_b).await.unwrap();
    let (many, many_b) = (Arc::new(many), Arc::new(many_b));
    let ghost = unique_email();
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let auth = if i % 2 == 0 {
                many.clone()
            } else {
                many_b.clone()
            };
            let ghost = ghost.clone();
            tokio::spawn(async move { fail(&auth, &ghost).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), ErrorKind::Unauthenticated);
    }
    let rows = db_a.read(TABLE, &Query::new()).await.unwrap();
    let counts: Vec<i64> = rows.iter().filter_map(|r| r["failures"].as_i64()).collect();
    assert!(counts.contains(&24), "{rows:?}");
    // The table keys accounts by a hash: no email is stored.
    let text = serde_json::to_string(&rows).unwrap();
    for e in [&email, &ghost, &other] {
        assert!(!text.contains(e.as_str()), "{text}");
    }

    // A window that has passed starts again: age the limited account's row.
    let id = rows
        .iter()
        .find(|r| r["failures"].as_i64() == Some(3))
        .map(|r| r["id"].clone())
        .unwrap();
    let old = chrono::Utc::now().timestamp_millis() - 301_000;
    db_a.update(
        TABLE,
        &id,
        json!({"window_start_ms": old})
            .as_object()
            .cloned()
            .unwrap(),
    )
    .await
    .unwrap();
    b.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_is_shared_over_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let a: Arc<dyn Database> = Arc::new(
        SqliteDatabase::open(SqliteConfig::file(&path))
            .await
            .unwrap(),
    );
    let b: Arc<dyn Database> = Arc::new(
        SqliteDatabase::open(SqliteConfig::file(&path))
            .await
            .unwrap(),
    );
    two_instances_share_the_limit(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_is_shared_over_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let cfg = scratch.config("authrl");
    let a: Arc<dyn Database> = Arc::new(PgDatabase::open(cfg.clone()).await.unwrap());
    let b: Arc<dyn Database> = Arc::new(PgDatabase::open(cfg).await.unwrap());
    two_instances_share_the_limit(a, b).await;
    scratch.cleanup().await.unwrap();
}

#[tokio::test]
async fn the_default_process_store_is_per_instance() {
    let db = memory_db();
    let mut c = config();
    c.sign_in_rate_limit.max_failures = 2;
    assert_eq!(c.sign_in_rate_limit.store, FailureStore::Process);
    let a = JwtAuth::new(c.clone(), db.clone()).await.unwrap();
    let b = JwtAuth::new(c, db.clone()).await.unwrap();
    let email = unique_email();
    a.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    fail(&a, &email).await;
    fail(&a, &email).await;
    assert_eq!(fail(&a, &email).await, ErrorKind::RateLimited);
    // b counts its own: not limited, and no table was made.
    assert_eq!(fail(&b, &email).await, ErrorKind::Unauthenticated);
    assert!(db.describe_table(TABLE).await.unwrap().is_none());
    assert!(!a.capabilities().private_tables.contains(&TABLE.to_string()));
}

#[tokio::test]
async fn the_store_is_read_from_configuration() {
    let c: JwtAuthConfig = serde_json::from_value(json!({
        "jwt_secret": SECRET,
        "sign_in_rate_limit": {"store": "database", "max_failures": 4},
    }))
    .unwrap();
    assert_eq!(c.sign_in_rate_limit.store, FailureStore::Database);
    let e = serde_json::from_value::<JwtAuthConfig>(json!({
        "jwt_secret": SECRET,
        "sign_in_rate_limit": {"store": "redis"},
    }))
    .unwrap_err();
    assert!(e.to_string().contains("unknown variant"), "{e}");
}
