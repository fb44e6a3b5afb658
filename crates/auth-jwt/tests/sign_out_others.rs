//! `sign_out_others` as stored: the other sessions are revoked and their
//! refresh-token hashes deleted, the caller's session and another user's
//! rows are untouched (memory and SQLite); only a live session may end the
//! others, even where revocation is not checked.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::sync::Arc;

use common::*;
use serde_json::Value;
use truststream_auth_jwt::{JwtAuth, Revocation};
use truststream_core_auth::{Auth, ErrorKind, Session, SignIn, SignUp};
use truststream_core_db::{Database, Query};

/// `(session id, revoked)` of every session row, and the session id of
/// every refresh-token row.
async fn stored(db: &Arc<dyn Database>) -> (Vec<(String, bool)>, Vec<String>) {
    let str_of = |row: &serde_json::Map<String, Value>, k: &str| {
        row.get(k).and_then(Value::as_str).unwrap().to_string()
    };
    let sessions = db
        .read("auth_sessions", &Query::new())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                str_of(r, "id"),
                !r.get("revoked_at").is_none_or(Value::is_null),
            )
        })
        .collect();
    let tokens = db
        .read("auth_refresh_tokens", &Query::new())
        .await
        .unwrap()
        .iter()
        .map(|r| str_of(r, "session_id"))
        .collect();
    (sessions, tokens)
}

async fn others_revoked_and_their_tokens_deleted(db: Arc<dyn Database>) {
    let auth = JwtAuth::new(config(), db.clone()).await.unwrap();
    let email = unique_email();
    let a1 = auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let a2 = auth.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
    // A2 rotates once: two refresh-token rows for it.
    auth.refresh_session(a2.refresh_token.expose())
        .await
        .unwrap();
    let a3 = auth.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
    let b1 = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let [a1_id, a2_id, a3_id, b1_id] = [
        session_id(&auth, &a1).await,
        session_id(&auth, &a2).await,
        session_id(&auth, &a3).await,
        session_id(&auth, &b1).await,
    ];
    let p1 = auth.validate_token(a1.access_token.expose()).await.unwrap();
    auth.sign_out_others(&p1).await.unwrap();

    let (sessions, tokens) = stored(&db).await;
    let revoked = |id: &str| sessions.iter().find(|(s, _)| s == id).unwrap().1;
    assert!(!revoked(&a1_id), "{sessions:?}");
    assert!(revoked(&a2_id) && revoked(&a3_id), "{sessions:?}");
    assert!(!revoked(&b1_id), "{sessions:?}");
    let count = |id: &str| tokens.iter().filter(|t| *t == id).count();
    assert_eq!(count(&a1_id), 1, "{tokens:?}");
    assert_eq!(count(&a2_id) + count(&a3_id), 0, "{tokens:?}");
    assert_eq!(count(&b1_id), 1, "{tokens:?}");
    // The caller's session goes on.
    auth.refresh_session(a1.refresh_token.expose())
        .await
        .unwrap();
}

/// The session id of `s`'s access token.
async fn session_id(auth: &JwtAuth, s: &Session) -> String {
    let p = auth.validate_token(s.access_token.expose()).await.unwrap();
    p.session_id.unwrap()
}

#[tokio::test]
async fn others_revoked_and_their_tokens_deleted_on_memory() {
    others_revoked_and_their_tokens_deleted(memory_db()).await;
}

#[tokio::test]
async fn others_revoked_and_their_tokens_deleted_on_sqlite() {
    others_revoked_and_their_tokens_deleted(sqlite_db().await).await;
}

#[tokio::test]
async fn an_ended_session_cannot_end_the_others_even_unchecked() {
    let mut c = config();
    c.revocation = Revocation::Stateless;
    let auth = provider(c).await;
    let email = unique_email();
    let a1 = auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let p1 = auth.validate_token(a1.access_token.expose()).await.unwrap();
    auth.sign_out(&p1).await.unwrap();
    let a2 = auth.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
    // Stateless: the ended session's token still validates...
    let p1 = auth.validate_token(a1.access_token.expose()).await.unwrap();
    // ...but it cannot sign the user out of the session opened since.
    let e = auth.sign_out_others(&p1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    auth.refresh_session(a2.refresh_token.expose())
        .await
        .unwrap();
}
