//! Refresh-token rotation as stored: exactly one rotation under concurrency
//! (memory, SQLite in memory and an SQLite file with a connection pool),
//! reuse detection, hashes only, and stateless revocation.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::sync::Arc;

use common::*;
use serde_json::Value;
use truststream_auth_jwt::{JwtAuth, JwtAuthConfig, Revocation};
use truststream_core_auth::{Auth, ErrorKind, SignIn, SignUp};
use truststream_core_db::{Database, Query};

const N: usize = 16;

async fn rows(db: &Arc<dyn Database>, table: &str) -> Vec<serde_json::Map<String, Value>> {
    db.read(table, &Query::new()).await.unwrap()
}

/// N concurrent refreshes of one token: one rotation in the store, and
/// every caller holds the same new token.
async fn exactly_one_rotation(db: Arc<dyn Database>, reuse_interval_ms: u64) {
    let mut c = config();
    c.refresh_reuse_interval_ms = reuse_interval_ms;
    let auth = Arc::new(JwtAuth::new(c, db.clone()).await.unwrap());
    let s = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let token = s.refresh_token.expose().to_string();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (auth, token, barrier) = (auth.clone(), token.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                auth.refresh_session(&token).await
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(s) => ok.push(s.refresh_token.expose().to_string()),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
                refused += 1;
            }
        }
    }
    let sessions = rows(&db, "auth_sessions").await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["refresh_counter"], 1, "exactly one rotation");
    assert_eq!(rows(&db, "auth_refresh_tokens").await.len(), 2);
    ok.dedup();
    assert_eq!(ok.len(), 1, "every success carries the one new token");
    if reuse_interval_ms > 0 {
        assert_eq!(refused, 0);
        assert!(sessions[0]["revoked_at"].is_null());
    } else {
        // Without a reuse interval the losers count as reuse: the session
        // is revoked (the safe side), and the winner's token dies with it.
        assert!(refused > 0);
        assert!(!sessions[0]["revoked_at"].is_null());
        let e = auth.refresh_session(&ok[0]).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_rotate_once_on_memory() {
    exactly_one_rotation(memory_db(), 10_000).await;
    exactly_one_rotation(memory_db(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_rotate_once_on_sqlite_in_memory() {
    exactly_one_rotation(sqlite_db().await, 10_000).await;
    exactly_one_rotation(sqlite_db().await, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_rotate_once_on_an_sqlite_file_with_a_pool() {
    for interval in [10_000, 0] {
        let dir = tempfile::tempdir().unwrap();
        let db = truststream_db_sqlite::SqliteDatabase::open(
            truststream_db_sqlite::SqliteConfig::file(dir.path().join("auth.db")),
        )
        .await
        .unwrap();
        exactly_one_rotation(Arc::new(db), interval).await;
    }
}

#[tokio::test]
async fn only_hashes_of_refresh_tokens_are_stored() {
    let db = memory_db();
    let auth = JwtAuth::new(config(), db.clone()).await.unwrap();
    let s1 = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let s2 = auth
        .refresh_session(s1.refresh_token.expose())
        .await
        .unwrap();
    let stored = serde_json::to_string(&[
        rows(&db, "auth_refresh_tokens").await,
        rows(&db, "auth_sessions").await,
    ])
    .unwrap();
    for t in [&s1.refresh_token, &s2.refresh_token] {
        assert!(!stored.contains(t.expose()));
    }
}

#[tokio::test]
async fn reuse_revokes_the_session_and_all_its_tokens() {
    let mut c = config();
    c.refresh_reuse_interval_ms = 0;
    let auth = provider(c).await;
    let email = unique_email();
    let s1 = auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let other = auth.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
    let s2 = auth
        .refresh_session(s1.refresh_token.expose())
        .await
        .unwrap();
    let e = auth
        .refresh_session(s1.refresh_token.expose())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert!(e.message().contains("already used"), "{e}");
    for token in [&s1.refresh_token, &s2.refresh_token] {
        let e = auth.refresh_session(token.expose()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    }
    for token in [&s1.access_token, &s2.access_token] {
        let e = auth.validate_token(token.expose()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    }
    // The user's other session is untouched.
    auth.validate_token(other.access_token.expose())
        .await
        .unwrap();
    auth.refresh_session(other.refresh_token.expose())
        .await
        .unwrap();
}

#[tokio::test]
async fn grandparent_within_the_interval_is_reuse() {
    let auth = provider(config()).await;
    let s1 = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let s2 = auth
        .refresh_session(s1.refresh_token.expose())
        .await
        .unwrap();
    let _s3 = auth
        .refresh_session(s2.refresh_token.expose())
        .await
        .unwrap();
    // s1 is two rotations old: not the parent of the current token.
    let e = auth
        .refresh_session(s1.refresh_token.expose())
        .await
        .unwrap_err();
    assert!(e.message().contains("already used"), "{e}");
}

#[tokio::test]
async fn stateless_mode_keeps_access_tokens_until_expiry_but_not_refresh() {
    let mut c = config();
    c.revocation = Revocation::Stateless;
    let auth = provider(c).await;
    assert!(!auth.capabilities().revocation_checked);
    let s = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let p = auth.validate_token(s.access_token.expose()).await.unwrap();
    auth.sign_out(&p).await.unwrap();
    auth.validate_token(s.access_token.expose()).await.unwrap();
    assert_eq!(
        auth.refresh_session(s.refresh_token.expose())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthenticated
    );
}

#[tokio::test]
async fn sessions_end_at_their_lifetime() {
    let mut c: JwtAuthConfig = config();
    c.session_ttl_secs = 1;
    let auth = provider(c).await;
    let s = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    // The access token never outlives the session.
    assert!(s.expires_at <= chrono::Utc::now() + chrono::Duration::seconds(1));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        auth.refresh_session(s.refresh_token.expose())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthenticated
    );
}
