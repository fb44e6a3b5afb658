//! `update_user` (email, password, metadata merge), the claims issued
//! tokens carry, and `public_keys` through the `Auth` interface.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Map, Value};
use truststream_auth_jwt::{Algorithm, JwtAuth, JwtAuthConfig};
use truststream_core_auth::{Auth, ErrorKind, Secret, SignIn, SignUp, UserUpdate};
use truststream_core_db::Database;

fn meta(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

async fn updates_on(db: Arc<dyn Database>) {
    let auth = JwtAuth::new(config(), db).await.unwrap();
    let mut up = SignUp::new("ada@example.com", PASSWORD);
    up.user_metadata = meta(json!({"name": "Ada", "lang": "en"}));
    let s = auth.sign_up(up).await.unwrap();
    auth.sign_up(SignUp::new("bob@example.com", PASSWORD))
        .await
        .unwrap();
    let p = auth.validate_token(s.access_token.expose()).await.unwrap();

    // Metadata: keys set, null removes, others kept.
    let u = auth
        .update_user(
            &p,
            UserUpdate {
                user_metadata: Some(meta(json!({"lang": null, "city": "London"}))),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        Value::Object(u.user_metadata),
        json!({"name": "Ada", "city": "London"})
    );
    assert_eq!(
        Value::Object(auth.get_user(&p).await.unwrap().user_metadata),
        json!({"name": "Ada", "city": "London"})
    );

    // Email: malformed, taken (case-insensitively), then a free one.
    for (email, kind) in [
        ("not an email", ErrorKind::InvalidInput),
        ("BOB@example.com", ErrorKind::Conflict),
    ] {
        let e = auth
            .update_user(
                &p,
                UserUpdate {
                    email: Some(email.into()),
                    ..UserUpdate::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), kind, "{email}: {e}");
    }
    let u = auth
        .update_user(
            &p,
            UserUpdate {
                email: Some(" Ada@Example.ORG ".into()),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.email, "ada@example.org");

    // Password: the policy holds; a new one replaces the old.
    let e = auth
        .update_user(
            &p,
            UserUpdate {
                password: Some(Secret::new("short")),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    auth.update_user(
        &p,
        UserUpdate {
            password: Some(Secret::new("a brand new password")),
            ..UserUpdate::default()
        },
    )
    .await
    .unwrap();
    let e = auth
        .sign_in(SignIn::new("ada@example.org", PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    let s2 = auth
        .sign_in(SignIn::new("ada@example.org", "a brand new password"))
        .await
        .unwrap();
    assert_eq!(s2.user.id, p.user_id);
    // The old email is free again.
    auth.sign_up(SignUp::new("ada@example.com", PASSWORD))
        .await
        .unwrap();
}

#[tokio::test]
async fn update_user_on_memory() {
    updates_on(memory_db()).await;
}

#[tokio::test]
async fn update_user_on_sqlite() {
    updates_on(sqlite_db().await).await;
}

#[tokio::test]
async fn tokens_carry_supabase_claims() {
    let auth = provider(config()).await;
    let mut up = SignUp::new(unique_email(), PASSWORD);
    up.user_metadata = meta(json!({"name": "Ada"}));
    let s = auth.sign_up(up).await.unwrap();
    let p = auth.validate_token(s.access_token.expose()).await.unwrap();
    let c = &p.claims;
    assert_eq!(c["phone"], "");
    assert_eq!(c["user_metadata"], json!({"name": "Ada"}));
    assert_eq!(c["aal"], "aal1");
    assert_eq!(c["amr"][0]["method"], "password");
    assert!(c["amr"][0]["timestamp"].is_i64());
    assert_eq!(c["is_anonymous"], false);
    assert_eq!(c["role"], "authenticated");
    assert_eq!(c["app_metadata"]["provider"], "email");
    assert_eq!(c["app_metadata"]["roles"], json!(["member"]));
    // A refreshed token keeps the sign-in's `amr`.
    let r = auth
        .refresh_session(s.refresh_token.expose())
        .await
        .unwrap();
    let p2 = auth.validate_token(r.access_token.expose()).await.unwrap();
    assert_eq!(p2.claims["amr"], c["amr"]);
}

#[tokio::test]
async fn public_keys_through_the_interface() {
    let hs: Arc<dyn Auth> = Arc::new(provider(config()).await);
    assert_eq!(hs.public_keys(), json!({"keys": []}));
    let mut c = JwtAuthConfig::with_private_key(Algorithm::RS256, key("rsa_private.pem"));
    c.argon2 = truststream_auth_jwt::Argon2Cost::minimal();
    let rs: Arc<dyn Auth> = Arc::new(provider(c).await);
    let keys = rs.public_keys();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert_eq!(keys["keys"][0]["kty"], "RSA");
}

#[tokio::test]
async fn an_ended_session_is_told_apart_from_a_bad_token() {
    use truststream_core_auth::{REASON, SESSION_ENDED};
    let auth = provider(config()).await;
    let s = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let token = s.access_token.expose();
    let p = auth.validate_token(token).await.unwrap();
    let ended = |e: &truststream_core_auth::Error| {
        e.context()
            .iter()
            .any(|(k, v)| *k == REASON && v == SESSION_ENDED)
    };
    let e = auth.validate_token("not.a.token").await.unwrap_err();
    assert!(!ended(&e), "{e}");
    auth.sign_out(&p).await.unwrap();
    let e = auth.validate_token(token).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert!(ended(&e), "{e}");
}
