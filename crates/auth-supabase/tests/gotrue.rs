//! auth-supabase against a real `/auth/v1` (`truststream serve` in
//! process): each call end to end, the server's errors as `ErrorKind`s,
//! and what GoTrue cannot do answered `Unsupported`.
#![allow(clippy::unwrap_used)] // test code

mod common;

use std::time::Duration;

use common::{unique_email, Gateway};
use serde_json::json;
use truststream_auth_supabase::{SupabaseAuth, SupabaseAuthConfig};
use truststream_core_auth::{Auth, ErrorKind, SignIn, SignUp, UserUpdate};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_in_user_and_update() {
    let gw = Gateway::start().await;
    let auth = gw.client();
    let email = unique_email();
    let mut req = SignUp::new(&email, PASSWORD);
    req.user_metadata = json!({"name": "Ada"}).as_object().cloned().unwrap();
    let s = auth.sign_up(req).await.unwrap();
    assert_eq!(s.user.email, email);
    assert_eq!(s.user.user_metadata["name"], "Ada");
    assert_eq!(s.user.roles, [common::MEMBER_ROLE]);
    assert!(s.expires_at > chrono::Utc::now());
    let dbg = format!("{s:?}");
    assert!(!dbg.contains(s.access_token.expose()) && !dbg.contains(s.refresh_token.expose()));

    let p = auth.validate_token(s.access_token.expose()).await.unwrap();
    assert_eq!(p.user_id, s.user.id);
    assert_eq!(p.expires_at, s.expires_at);
    let u = auth.get_user(&p).await.unwrap();
    assert_eq!(u.id, s.user.id);
    assert_eq!(u.email, email);

    // update_user: metadata merged (null removes), email and password.
    let u = auth
        .update_user(
            &p,
            UserUpdate {
                user_metadata: Some(
                    json!({"name": null, "team": "blue"})
                        .as_object()
                        .cloned()
                        .unwrap(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.user_metadata.get("team"), Some(&json!("blue")));
    assert!(!u.user_metadata.contains_key("name"));
    let new_email = unique_email();
    let u = auth
        .update_user(
            &p,
            UserUpdate {
                email: Some(new_email.clone()),
                password: Some("another long password".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.email, new_email);
    auth.sign_in(SignIn::new(&new_email, "another long password"))
        .await
        .unwrap();
    assert_eq!(
        auth.sign_in(SignIn::new(&new_email, PASSWORD))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthenticated
    );

    // Another user's email: Conflict. A short password: InvalidInput,
    // without the password in the error.
    let other = unique_email();
    auth.sign_up(SignUp::new(&other, PASSWORD)).await.unwrap();
    let e = auth
        .update_user(
            &p,
            UserUpdate {
                email: Some(other),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = auth
        .update_user(
            &p,
            UserUpdate {
                password: Some("tiny1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!format!("{e} {e:?}").contains("tiny1"));

    // get_session: built from the verified claims and what was seen.
    let info = auth.get_session(&p).await.unwrap();
    assert_eq!(Some(info.id.clone()), p.session_id);
    assert_eq!(info.user_id, p.user_id);
    assert!(info.revoked_at.is_none());
    // Another instance signs the session out: this one, holding the
    // session's token, learns it from the project.
    let other = gw.client();
    let p_other = other.validate_token(s.access_token.expose()).await.unwrap();
    other.sign_out(&p_other).await.unwrap();
    let info = auth.get_session(&p).await.unwrap();
    assert!(
        info.revoked_at.is_some(),
        "a session ended elsewhere reads as live"
    );
    gw.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_map_to_kinds() {
    let gw = Gateway::start().await;
    let auth = gw.client();
    let email = unique_email();
    auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();

    // 422 user_already_exists -> Conflict.
    let e = auth
        .sign_up(SignUp::new(&email, PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    // 400 invalid_credentials -> Unauthenticated, the same text for an
    // unknown email; no password in it.
    let wrong = auth
        .sign_in(SignIn::new(&email, "not the password"))
        .await
        .unwrap_err();
    let unknown = auth
        .sign_in(SignIn::new(unique_email(), "not the password"))
        .await
        .unwrap_err();
    assert_eq!(wrong.kind(), ErrorKind::Unauthenticated);
    assert_eq!(wrong.to_string(), unknown.to_string());
    assert!(wrong.to_string().contains("invalid_credentials"), "{wrong}");
    assert!(!wrong.to_string().contains("not the password"));
    // 400 validation_failed / 422 weak_password -> InvalidInput.
    for (e, p) in [("not-an-email", PASSWORD), (email.as_str(), "short")] {
        let err = auth.sign_up(SignUp::new(e, p)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{e}: {err}");
    }
    // 429 after repeated failures on one account -> RateLimited.
    let mut limited = None;
    for _ in 0..10 {
        match auth.sign_in(SignIn::new(&email, "wrong again")).await {
            Err(e) if e.kind() == ErrorKind::RateLimited => {
                limited = Some(e);
                break;
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}"),
            Ok(_) => panic!("a wrong password signed in"),
        }
    }
    let limited = limited.expect("no RateLimited after 10 failures");
    assert!(limited.is_retryable());
    gw.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotation_reuse_and_sign_out() {
    let gw = Gateway::start().await;
    let auth = gw.client();
    let s1 = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let s2 = auth
        .refresh_session(s1.refresh_token.expose())
        .await
        .unwrap();
    assert_ne!(s2.refresh_token.expose(), s1.refresh_token.expose());
    let p2 = auth.validate_token(s2.access_token.expose()).await.unwrap();
    let p1 = auth.validate_token(s1.access_token.expose()).await.unwrap();
    assert_eq!(p1.session_id, p2.session_id);
    // The previous token after the reuse interval: the server revokes the
    // session, and both tokens are refused as Unauthenticated.
    tokio::time::sleep(Duration::from_millis(common::REUSE_INTERVAL_MS + 300)).await;
    let e = auth
        .refresh_session(s1.refresh_token.expose())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(!e.to_string().contains(s1.refresh_token.expose()));
    let e = auth
        .refresh_session(s2.refresh_token.expose())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    // The revoked session's user calls are refused by the server; signing
    // it out is done already.
    assert_eq!(
        auth.get_user(&p2).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );
    auth.sign_out(&p2).await.unwrap();

    // sign_out of a live session ends its refresh token; signing out
    // again is fine.
    let s = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let p = auth.validate_token(s.access_token.expose()).await.unwrap();
    auth.sign_out(&p).await.unwrap();
    assert_eq!(
        auth.refresh_session(s.refresh_token.expose())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthenticated
    );
    auth.sign_out(&p).await.unwrap();
    assert_eq!(
        auth.get_user(&p).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );

    // A principal this instance never verified: user calls say why.
    let fresh = gw.client();
    let s = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let p = auth.validate_token(s.access_token.expose()).await.unwrap();
    let e = fresh.get_user(&p).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert!(e.to_string().contains("no live access token"), "{e}");
    gw.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_provider_says_what_is_wrong() {
    let gw = Gateway::start().await;
    let email = unique_email();
    gw.client()
        .sign_up(SignUp::new(&email, PASSWORD))
        .await
        .unwrap();

    // The wrong secret: the server's tokens do not verify here.
    let mut cfg = gw.config();
    cfg.jwt_secret = Some("not the project's secret, but 32+ bytes".into());
    let e = SupabaseAuth::new(cfg)
        .unwrap()
        .sign_in(SignIn::new(&email, PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(e.to_string().contains("check jwt_secret"), "{e}");

    // The wrong issuer (the one serve used before it issued GoTrue's).
    let mut cfg = gw.config();
    cfg.issuer = Some("truststream".into());
    let e = SupabaseAuth::new(cfg)
        .unwrap()
        .sign_in(SignIn::new(&email, PASSWORD))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("wrong issuer"), "{e}");

    // The wrong anon key: refused by the server.
    let cfg = SupabaseAuthConfig {
        anon_key: "not-the-anon-key".into(),
        ..gw.config()
    };
    let auth = SupabaseAuth::new(cfg).unwrap();
    let e = auth
        .sign_in(SignIn::new(&email, PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(!format!("{e} {e:?}").contains("not-the-anon-key"));
    assert!(auth.health().await.is_healthy(), "/health needs no key");
    gw.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_others_keeps_this_session() {
    let gw = Gateway::start().await;
    let auth = gw.client();
    assert!(auth.capabilities().sign_out_others);
    let email = unique_email();
    let a1 = auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let a2 = auth.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
    let b1 = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let p1 = auth.validate_token(a1.access_token.expose()).await.unwrap();
    let p2 = auth.validate_token(a2.access_token.expose()).await.unwrap();
    let pb = auth.validate_token(b1.access_token.expose()).await.unwrap();
    auth.sign_out_others(&p1).await.unwrap();

    // What this instance saw: the other held session of the user ended.
    assert!(auth.get_session(&p2).await.unwrap().revoked_at.is_some());
    assert!(auth.get_session(&p1).await.unwrap().revoked_at.is_none());
    assert!(auth.get_session(&pb).await.unwrap().revoked_at.is_none());
    // What the server says.
    assert_eq!(
        auth.get_user(&p2).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );
    assert_eq!(
        auth.refresh_session(a2.refresh_token.expose())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthenticated
    );
    auth.get_user(&p1).await.unwrap();
    auth.get_user(&pb).await.unwrap();
    auth.refresh_session(a1.refresh_token.expose())
        .await
        .unwrap();
    // From the ended session it is an error, not done: the server did
    // not end anything.
    let e = auth.sign_out_others(&p2).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert_eq!(e.operation(), Some("auth.sign_out_others"), "{e:?}");
    gw.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_session_ends_tokens_at_sign_out() {
    let gw = Gateway::start().await;
    let local = gw.client();
    let mut cfg = gw.config();
    cfg.check_session = true;
    let checked = SupabaseAuth::new(cfg).unwrap();
    assert!(!local.capabilities().revocation_checked);
    assert!(checked.capabilities().revocation_checked);

    let s = checked
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let p = checked
        .validate_token(s.access_token.expose())
        .await
        .unwrap();
    local.validate_token(s.access_token.expose()).await.unwrap();
    checked.sign_out(&p).await.unwrap();

    // Local verification cannot know: the token validates until it expires.
    local.validate_token(s.access_token.expose()).await.unwrap();
    // Asking the project: the session has ended, marked as such.
    let e = checked
        .validate_token(s.access_token.expose())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(
        e.context()
            .iter()
            .any(|(k, v)| *k == truststream_core_auth::REASON
                && v == truststream_core_auth::SESSION_ENDED),
        "{e:?}"
    );
    // The project down: Unavailable, not a verdict on the token.
    let s2 = checked
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    gw.server.stop().await.unwrap();
    let e = checked
        .validate_token(s2.access_token.expose())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    // A forged token is refused locally, before any request: the
    // project is down, yet the answer is Unauthenticated, not Unavailable.
    let forged = format!("{}x", s.access_token.expose());
    assert_eq!(
        checked.validate_token(&forged).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );
}
