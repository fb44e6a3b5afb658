//! The auth suite: every `core-auth` provider that issues sessions runs
//! these cases.
//!
//! Cases use only the interface. Emails are unique per case, so one
//! long-lived provider could serve every case; the factory may still return
//! a fresh one per case.
//!
//! The provider must be configured so that:
//! - passwords of [`PASSWORD`]'s length are accepted, passwords of 5
//!   characters are too short and passwords of 5000 bytes too long;
//! - new users get the role [`MEMBER_ROLE`], which grants exactly
//!   [`MEMBER_PERMISSIONS`];
//! - at most a handful of failed sign-ins per account are allowed before
//!   `RateLimited` (each case fails at most twice per account);
//! - refresh tokens have the reuse interval given in
//!   [`AuthFixture::refresh_reuse_interval`] (the cases wait it out; keep it
//!   short, a second or two).
//!
//! Cases that need a capability the provider lacks (`sign_up`, `refresh`,
//! `revocation_checked`, ...) are reported as skipped, by name.
//!
//! ```rust,no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use truststream_conformance::{auth, factory};
//! # fn my_provider() -> Arc<dyn truststream_core_auth::Auth> { unimplemented!() }
//! # async fn run() {
//! let report = auth::run(
//!     "mine",
//!     factory(|| async {
//!         Ok(auth::AuthFixture {
//!             auth: my_provider(),
//!             refresh_reuse_interval: Duration::from_secs(1),
//!         })
//!     }),
//!     None,
//! )
//! .await;
//! report.print_table();
//! assert_eq!(report.failed(), 0, "{}", report.summary());
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use truststream_core::{BoxFuture, ErrorKind};
use truststream_core_auth::{Auth, Principal, Session, SignIn, SignUp, UserUpdate};

use crate::harness::{run_cases, Case, Factory};

mod capability;
use crate::{ensure, ensure_eq, expect_kind, CaseResult, Failure, Report};

/// The password the cases sign up with.
pub const PASSWORD: &str = "correct horse battery staple";

/// The role every new user must have.
pub const MEMBER_ROLE: &str = "member";

/// What [`MEMBER_ROLE`] must grant (and nothing beyond it).
pub const MEMBER_PERMISSIONS: &[&str] = &["read:*", "write:agents"];

/// What an auth case gets.
#[derive(Clone)]
pub struct AuthFixture {
    /// The provider under test.
    pub auth: Arc<dyn Auth>,
    /// The provider's refresh-token reuse interval (zero: none).
    pub refresh_reuse_interval: Duration,
}

/// Builds a fixture per case.
pub type AuthFactory = Factory<AuthFixture>;

/// How many concurrent refreshes the concurrency case starts.
pub const CONCURRENT_REFRESHES: usize = 8;

/// Runs the auth suite against `provider`; `only` keeps the cases whose
/// name contains it.
pub async fn run(provider: &str, factory: AuthFactory, only: Option<&str>) -> Report {
    run_cases(
        "auth",
        provider,
        factory,
        &cases(),
        |f| serde_json::to_value(f.auth.capabilities()).unwrap_or_default(),
        only,
    )
    .await
}

macro_rules! case {
    ($name:literal, [$($need:literal),*], $body:path) => {
        Case {
            name: $name,
            needs: &[$($need),*],
            run: |fx| -> BoxFuture<'static, CaseResult> { Box::pin($body(fx)) },
        }
    };
}

/// Every case of the suite, in run order.
pub fn cases() -> Vec<Case<AuthFixture>> {
    vec![
        case!("provider.info_and_health", [], info_and_health),
        case!(
            "signup.returns_session",
            ["sign_up"],
            signup_returns_session
        ),
        case!(
            "signup.duplicate_email_conflict_reveals_nothing",
            ["sign_up", "password_sign_in"],
            duplicate_email_conflict
        ),
        case!(
            "signup.invalid_email_rejected",
            ["sign_up"],
            invalid_email_rejected
        ),
        case!(
            "signup.password_bounds_rejected",
            ["sign_up", "password_sign_in"],
            password_bounds_rejected
        ),
        case!(
            "signin.opens_a_new_session",
            ["sign_up", "password_sign_in"],
            signin_opens_new_session
        ),
        case!(
            "signin.email_case_insensitive",
            ["sign_up", "password_sign_in"],
            signin_email_case_insensitive
        ),
        case!(
            "signin.wrong_password_and_unknown_email_same_error",
            ["sign_up", "password_sign_in"],
            failures_indistinguishable
        ),
        case!(
            "token.validate_returns_principal",
            ["sign_up"],
            validate_returns_principal
        ),
        case!("token.garbage_rejected", [], token_garbage_rejected),
        case!("token.alg_none_rejected", ["sign_up"], alg_none_rejected),
        case!(
            "token.tampered_payload_rejected",
            ["sign_up"],
            tampered_payload_rejected
        ),
        case!(
            "token.stripped_signature_rejected",
            ["sign_up"],
            stripped_signature_rejected
        ),
        case!("refresh.rotates", ["sign_up", "refresh"], refresh_rotates),
        case!(
            "refresh.previous_token_within_reuse_interval_returns_current",
            ["sign_up", "refresh"],
            reuse_within_interval
        ),
        case!(
            "refresh.reuse_after_interval_revokes_session",
            ["sign_up", "refresh"],
            reuse_after_interval_revokes
        ),
        case!(
            "refresh.concurrent_refreshes_rotate_once",
            ["sign_up", "refresh"],
            concurrent_refreshes_rotate_once
        ),
        case!(
            "refresh.garbage_rejected",
            ["refresh"],
            refresh_garbage_rejected
        ),
        case!(
            "refresh.signed_out_session_rejected",
            ["sign_up", "refresh"],
            refresh_after_sign_out
        ),
        case!(
            "signout.access_token_stops_validating",
            ["sign_up", "password_sign_in", "revocation_checked"],
            sign_out_revokes_access
        ),
        case!(
            "signout.everywhere_ends_every_session",
            ["sign_up", "password_sign_in", "refresh"],
            sign_out_everywhere
        ),
        case!(
            "signout.others_keeps_this_session_and_ends_the_rest",
            ["sign_up", "password_sign_in", "refresh", "sign_out_others"],
            sign_out_others
        ),
        case!(
            "update.password_change_ends_other_sessions",
            ["sign_up", "password_sign_in", "refresh", "sign_out_others"],
            password_change_ends_other_sessions
        ),
        case!(
            "session.get_user_and_session",
            ["sign_up"],
            get_user_and_session
        ),
        case!(
            "roles.member_permissions_with_wildcards",
            ["sign_up"],
            member_permissions
        ),
        case!(
            "roles.malformed_permission_invalid_input",
            ["sign_up"],
            malformed_permission
        ),
        case!("capability.sign_up", [], capability::sign_up_flag),
        case!(
            "capability.password_sign_in",
            [],
            capability::password_sign_in
        ),
        case!("capability.refresh", [], capability::refresh),
        case!(
            "capability.sign_out_others",
            [],
            capability::sign_out_others
        ),
    ]
}

// ---------------------------------------------------------------- helpers

fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

async fn sign_up(fx: &AuthFixture, email: &str) -> Result<Session, Failure> {
    fx.auth
        .sign_up(SignUp::new(email, PASSWORD))
        .await
        .map_err(|e| Failure::new(format!("sign_up({email}) failed: {e}")))
}

async fn new_user(fx: &AuthFixture) -> Result<(String, Session, Principal), Failure> {
    let email = unique_email();
    let session = sign_up(fx, &email).await?;
    let principal = validate(fx, &session).await?;
    Ok((email, session, principal))
}

async fn validate(fx: &AuthFixture, session: &Session) -> Result<Principal, Failure> {
    fx.auth
        .validate_token(session.access_token.expose())
        .await
        .map_err(|e| Failure::new(format!("a fresh access token did not validate: {e}")))
}

async fn expect_token_rejected(fx: &AuthFixture, token: &str, what: &str) -> CaseResult {
    expect_kind(
        fx.auth.validate_token(token).await,
        ErrorKind::Unauthenticated,
        what,
    )
}

async fn expect_refresh_rejected(fx: &AuthFixture, token: &str, what: &str) -> CaseResult {
    expect_kind(
        fx.auth.refresh_session(token).await,
        ErrorKind::Unauthenticated,
        what,
    )
}

/// `s` has ended: its refresh token is refused (where the provider
/// refreshes) and, where revocation is checked, its access token too.
async fn expect_session_ended(fx: &AuthFixture, s: &Session, what: &str) -> CaseResult {
    let caps = fx.auth.capabilities();
    if caps.refresh {
        expect_refresh_rejected(fx, s.refresh_token.expose(), &format!("{what}: refresh")).await?;
    }
    if caps.revocation_checked {
        expect_token_rejected(
            fx,
            s.access_token.expose(),
            &format!("{what}: access token"),
        )
        .await?;
    }
    Ok(())
}

/// The three dot-separated parts of a JWT.
fn jwt_parts(token: &str) -> Result<(String, String, String), Failure> {
    let parts: Vec<&str> = token.split('.').collect();
    ensure!(parts.len() == 3, "an access token is not a three-part JWT");
    Ok((
        parts[0].to_string(),
        parts[1].to_string(),
        parts[2].to_string(),
    ))
}

fn decode_part(part: &str) -> Result<serde_json::Map<String, Value>, Failure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| Failure::new(format!("JWT part is not base64url: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| Failure::new(format!("JWT part is not JSON: {e}")))
}

fn encode_part(v: &serde_json::Map<String, Value>) -> Result<String, Failure> {
    let bytes = serde_json::to_vec(v).map_err(|e| Failure::new(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

// ---------------------------------------------------------------- cases

async fn info_and_health(fx: AuthFixture) -> CaseResult {
    ensure!(!fx.auth.info().name.is_empty(), "info().name is empty");
    let h = fx.auth.health().await;
    ensure!(h.is_healthy(), "a fresh provider is not healthy: {h:?}");
    Ok(())
}

async fn signup_returns_session(fx: AuthFixture) -> CaseResult {
    let email = unique_email();
    let s = sign_up(&fx, &email).await?;
    ensure_eq!(s.token_type, "bearer");
    ensure!(!s.access_token.is_empty(), "empty access token");
    ensure!(!s.refresh_token.is_empty(), "empty refresh token");
    ensure!(
        s.access_token.expose() != s.refresh_token.expose(),
        "access and refresh tokens are the same"
    );
    let now = chrono::Utc::now();
    ensure!(
        s.expires_at > now && s.expires_at < now + chrono::Duration::days(1),
        "access token expiry {} is not in the next day",
        s.expires_at
    );
    ensure_eq!(s.user.email, email);
    ensure!(!s.user.id.is_empty(), "user id is empty");
    ensure!(
        s.user.roles.iter().any(|r| r == MEMBER_ROLE),
        "a new user lacks the role {MEMBER_ROLE}: {:?}",
        s.user.roles
    );
    let dbg = format!("{s:?}");
    ensure!(
        !dbg.contains(s.access_token.expose()) && !dbg.contains(s.refresh_token.expose()),
        "Debug of a session shows a token"
    );
    Ok(())
}

async fn duplicate_email_conflict(fx: AuthFixture) -> CaseResult {
    let email = unique_email();
    let first = sign_up(&fx, &email).await?;
    let again = fx
        .auth
        .sign_up(SignUp::new(
            email.to_uppercase(),
            "another password entirely",
        ))
        .await;
    let err = match again {
        Err(e) => e,
        Ok(_) => {
            return Err(Failure::new(
                "a second sign-up with the same email succeeded",
            ))
        }
    };
    ensure_eq!(err.kind(), ErrorKind::Conflict, "second sign-up error kind");
    let text = format!("{err} {err:?}");
    ensure!(
        !text.contains(&first.user.id),
        "the conflict error reveals the existing user's id: {text}"
    );
    ensure!(
        !text.contains("another password entirely") && !text.contains(PASSWORD),
        "the conflict error contains a password"
    );
    // The existing account is untouched.
    fx.auth
        .sign_in(SignIn::new(&email, PASSWORD))
        .await
        .map_err(|e| Failure::new(format!("the original password stopped working: {e}")))?;
    expect_kind(
        fx.auth
            .sign_in(SignIn::new(&email, "another password entirely"))
            .await,
        ErrorKind::Unauthenticated,
        "sign-in with the rejected sign-up's password",
    )
}

async fn invalid_email_rejected(fx: AuthFixture) -> CaseResult {
    for bad in [
        "",
        "no-at-sign",
        "@example.com",
        "user@",
        "user@localhost",
        "two@@example.com",
        "sp ace@example.com",
        "user@exa mple.com",
        "line\nbreak@example.com",
    ] {
        expect_kind(
            fx.auth.sign_up(SignUp::new(bad, PASSWORD)).await,
            ErrorKind::InvalidInput,
            &format!("sign_up with email {bad:?}"),
        )?;
    }
    Ok(())
}

async fn password_bounds_rejected(fx: AuthFixture) -> CaseResult {
    let email = unique_email();
    expect_kind(
        fx.auth.sign_up(SignUp::new(&email, "short")).await,
        ErrorKind::InvalidInput,
        "sign_up with a 5-character password",
    )?;
    let long = "x".repeat(5000);
    expect_kind(
        fx.auth.sign_up(SignUp::new(&email, long.as_str())).await,
        ErrorKind::InvalidInput,
        "sign_up with a 5000-byte password",
    )?;
    let err = fx
        .auth
        .sign_up(SignUp::new(&email, long.as_str()))
        .await
        .err()
        .ok_or_else(|| Failure::new("a 5000-byte password was accepted"))?;
    ensure!(
        !format!("{err} {err:?}").contains(&long[..64]),
        "the error echoes the password"
    );
    // Nothing was created.
    expect_kind(
        fx.auth.sign_in(SignIn::new(&email, "short")).await,
        ErrorKind::Unauthenticated,
        "sign-in after rejected sign-ups",
    )
}

async fn signin_opens_new_session(fx: AuthFixture) -> CaseResult {
    let (email, first, p1) = new_user(&fx).await?;
    let second = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await?;
    let p2 = validate(&fx, &second).await?;
    ensure_eq!(p2.user_id, p1.user_id);
    ensure_eq!(second.user.id, first.user.id);
    ensure!(
        p1.session_id != p2.session_id,
        "sign-in reused the sign-up session"
    );
    ensure!(
        first.refresh_token.expose() != second.refresh_token.expose(),
        "two sessions share a refresh token"
    );
    // The first session is still valid.
    validate(&fx, &first).await?;
    Ok(())
}

async fn signin_email_case_insensitive(fx: AuthFixture) -> CaseResult {
    let email = format!("Mixed.Case-{}@Example.COM", uuid::Uuid::new_v4().simple());
    let s = sign_up(&fx, &email).await?;
    ensure_eq!(s.user.email, email.to_lowercase(), "stored email");
    fx.auth
        .sign_in(SignIn::new(email.to_uppercase(), PASSWORD))
        .await
        .map_err(|e| Failure::new(format!("sign-in with the email in other case failed: {e}")))?;
    Ok(())
}

async fn failures_indistinguishable(fx: AuthFixture) -> CaseResult {
    let (email, _, _) = new_user(&fx).await?;
    let wrong = fx
        .auth
        .sign_in(SignIn::new(&email, "not the password at all"))
        .await
        .err()
        .ok_or_else(|| Failure::new("a wrong password signed in"))?;
    let unknown = fx
        .auth
        .sign_in(SignIn::new(unique_email(), "not the password at all"))
        .await
        .err()
        .ok_or_else(|| Failure::new("an unknown email signed in"))?;
    ensure_eq!(
        wrong.kind(),
        ErrorKind::Unauthenticated,
        "wrong password kind"
    );
    ensure_eq!(
        unknown.kind(),
        ErrorKind::Unauthenticated,
        "unknown email kind"
    );
    ensure_eq!(
        wrong.to_string(),
        unknown.to_string(),
        "wrong password and unknown email must read the same"
    );
    ensure!(
        !wrong.to_string().contains("not the password"),
        "the error echoes the password"
    );
    Ok(())
}

async fn validate_returns_principal(fx: AuthFixture) -> CaseResult {
    let (email, s, p) = new_user(&fx).await?;
    ensure_eq!(p.user_id, s.user.id);
    ensure_eq!(p.email.as_deref(), Some(email.as_str()));
    ensure!(p.session_id.is_some(), "principal has no session id");
    ensure!(
        p.roles.iter().any(|r| r == MEMBER_ROLE),
        "principal lacks {MEMBER_ROLE}: {:?}",
        p.roles
    );
    let skew = (p.expires_at - s.expires_at).num_seconds().abs();
    ensure!(
        skew <= 1,
        "principal expiry differs from the session's by {skew} s"
    );
    for claim in ["sub", "exp", "iat", "aud", "iss"] {
        ensure!(p.claims.contains_key(claim), "claims lack {claim}");
    }
    Ok(())
}

async fn token_garbage_rejected(fx: AuthFixture) -> CaseResult {
    let huge = "a".repeat(20_000);
    for bad in [
        "",
        "abc",
        "a.b.c",
        "..",
        "Bearer x.y.z",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0",
        "eyJhbGciOiJIUzI1NiJ9.!!!!.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
        "bm90IGpzb24.eyJzdWIiOiIxIn0.c2ln",
        huge.as_str(),
    ] {
        expect_token_rejected(&fx, bad, &format!("validate_token({:.40?})", bad)).await?;
    }
    Ok(())
}

async fn alg_none_rejected(fx: AuthFixture) -> CaseResult {
    let (_, s, _) = new_user(&fx).await?;
    let (_, payload, _) = jwt_parts(s.access_token.expose())?;
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let h = URL_SAFE_NO_PAD.encode(header);
        expect_token_rejected(&fx, &format!("{h}.{payload}."), &format!("alg {header}")).await?;
        expect_token_rejected(
            &fx,
            &format!("{h}.{payload}"),
            &format!("alg {header}, 2 parts"),
        )
        .await?;
    }
    Ok(())
}

async fn tampered_payload_rejected(fx: AuthFixture) -> CaseResult {
    let (_, a, _) = new_user(&fx).await?;
    let (_, b, _) = new_user(&fx).await?;
    let (h, p, sig) = jwt_parts(a.access_token.expose())?;
    let mut claims = decode_part(&p)?;
    // Become user b, with a's signature.
    claims.insert("sub".into(), Value::String(b.user.id.clone()));
    let forged = format!("{h}.{}.{sig}", encode_part(&claims)?);
    expect_token_rejected(&fx, &forged, "payload with another sub").await?;
    // Grant oneself a role.
    let mut claims = decode_part(&p)?;
    claims.insert("role".into(), Value::String("admin".into()));
    claims.insert(
        "app_metadata".into(),
        serde_json::json!({"roles": ["admin"]}),
    );
    let forged = format!("{h}.{}.{sig}", encode_part(&claims)?);
    expect_token_rejected(&fx, &forged, "payload with extra roles").await?;
    // Extend the expiry.
    let mut claims = decode_part(&p)?;
    claims.insert("exp".into(), Value::from(4_102_444_800_i64));
    let forged = format!("{h}.{}.{sig}", encode_part(&claims)?);
    expect_token_rejected(&fx, &forged, "payload with a later exp").await?;
    // Another user's signature on a's payload.
    let (_, _, sig_b) = jwt_parts(b.access_token.expose())?;
    expect_token_rejected(
        &fx,
        &format!("{h}.{p}.{sig_b}"),
        "signature of another token",
    )
    .await
}

async fn stripped_signature_rejected(fx: AuthFixture) -> CaseResult {
    let (_, s, _) = new_user(&fx).await?;
    let (h, p, sig) = jwt_parts(s.access_token.expose())?;
    expect_token_rejected(&fx, &format!("{h}.{p}."), "empty signature").await?;
    let mut flipped = sig.into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).map_err(|e| Failure::new(e.to_string()))?;
    expect_token_rejected(&fx, &format!("{h}.{p}.{flipped}"), "altered signature").await
}

async fn refresh_rotates(fx: AuthFixture) -> CaseResult {
    let (_, s1, p1) = new_user(&fx).await?;
    let s2 = fx.auth.refresh_session(s1.refresh_token.expose()).await?;
    ensure!(
        s2.refresh_token.expose() != s1.refresh_token.expose(),
        "refresh did not rotate the refresh token"
    );
    ensure_eq!(s2.user.id, s1.user.id);
    let p2 = validate(&fx, &s2).await?;
    ensure_eq!(p2.session_id, p1.session_id, "refresh keeps the session");
    let info = fx.auth.get_session(&p2).await?;
    ensure!(
        info.refreshed_at.is_some(),
        "refreshed_at not set after a refresh"
    );
    let s3 = fx.auth.refresh_session(s2.refresh_token.expose()).await?;
    ensure!(
        s3.refresh_token.expose() != s2.refresh_token.expose()
            && s3.refresh_token.expose() != s1.refresh_token.expose(),
        "second rotation repeated a token"
    );
    Ok(())
}

async fn reuse_within_interval(fx: AuthFixture) -> CaseResult {
    if fx.refresh_reuse_interval.is_zero() {
        return Err(Failure::skip("the provider has no refresh reuse interval"));
    }
    let (_, s1, _) = new_user(&fx).await?;
    let s2 = fx.auth.refresh_session(s1.refresh_token.expose()).await?;
    let again = fx
        .auth
        .refresh_session(s1.refresh_token.expose())
        .await
        .map_err(|e| {
            Failure::new(format!(
                "the previous token, presented again within the reuse interval, was refused: {e}"
            ))
        })?;
    ensure!(
        again.refresh_token.expose() == s2.refresh_token.expose(),
        "within the reuse interval the answer must be the current session (same refresh token), not a new rotation"
    );
    validate(&fx, &again).await?;
    // The session lives on: the current token still rotates.
    fx.auth
        .refresh_session(s2.refresh_token.expose())
        .await
        .map_err(|e| Failure::new(format!("the current token stopped working: {e}")))?;
    Ok(())
}

async fn reuse_after_interval_revokes(fx: AuthFixture) -> CaseResult {
    let (_, s1, _) = new_user(&fx).await?;
    let s2 = fx.auth.refresh_session(s1.refresh_token.expose()).await?;
    tokio::time::sleep(fx.refresh_reuse_interval + Duration::from_millis(300)).await;
    expect_refresh_rejected(&fx, s1.refresh_token.expose(), "reused refresh token").await?;
    expect_refresh_rejected(
        &fx,
        s2.refresh_token.expose(),
        "the current token of a session whose token was reused",
    )
    .await?;
    if fx.auth.capabilities().revocation_checked {
        expect_token_rejected(
            &fx,
            s2.access_token.expose(),
            "access token of a session revoked by reuse",
        )
        .await?;
    }
    Ok(())
}

async fn concurrent_refreshes_rotate_once(fx: AuthFixture) -> CaseResult {
    let (_, s1, _) = new_user(&fx).await?;
    let token = s1.refresh_token.expose().to_string();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT_REFRESHES {
        let auth = fx.auth.clone();
        let t = token.clone();
        tasks.push(tokio::spawn(async move { auth.refresh_session(&t).await }));
    }
    let mut new_tokens = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t
            .await
            .map_err(|e| Failure::new(format!("task failed: {e}")))?
        {
            Ok(s) => new_tokens.push(s.refresh_token.expose().to_string()),
            Err(e) if e.kind() == ErrorKind::Unauthenticated => refused += 1,
            Err(e) => return Err(Failure::new(format!("a concurrent refresh failed: {e}"))),
        }
    }
    ensure!(!new_tokens.is_empty(), "no concurrent refresh succeeded");
    new_tokens.dedup();
    ensure_eq!(
        new_tokens.len(),
        1,
        "concurrent refreshes of one token must rotate exactly once"
    );
    if !fx.refresh_reuse_interval.is_zero() {
        ensure_eq!(
            refused,
            0,
            "within the reuse interval every concurrent refresh gets the current session"
        );
        fx.auth
            .refresh_session(&new_tokens[0])
            .await
            .map_err(|e| Failure::new(format!("the winning token does not refresh: {e}")))?;
    }
    Ok(())
}

async fn refresh_garbage_rejected(fx: AuthFixture) -> CaseResult {
    let looks_real = "A".repeat(43);
    let huge = "z".repeat(10_000);
    for bad in ["", "x", "not a token", looks_real.as_str(), huge.as_str()] {
        expect_refresh_rejected(&fx, bad, &format!("refresh_session({:.40?})", bad)).await?;
    }
    if fx.auth.capabilities().sign_up {
        let (_, s, _) = new_user(&fx).await?;
        expect_refresh_rejected(
            &fx,
            s.access_token.expose(),
            "an access token as refresh token",
        )
        .await?;
    }
    Ok(())
}

async fn refresh_after_sign_out(fx: AuthFixture) -> CaseResult {
    let (_, s, p) = new_user(&fx).await?;
    fx.auth.sign_out(&p).await?;
    expect_refresh_rejected(
        &fx,
        s.refresh_token.expose(),
        "refresh of a signed-out session",
    )
    .await
}

async fn sign_out_revokes_access(fx: AuthFixture) -> CaseResult {
    let (email, s1, p1) = new_user(&fx).await?;
    let s2 = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await?;
    fx.auth.sign_out(&p1).await?;
    expect_token_rejected(&fx, s1.access_token.expose(), "access token after sign-out").await?;
    validate(&fx, &s2)
        .await
        .map_err(|f| Failure::new(format!("signing out one session ended another: {}", f.0)))?;
    // Signing out twice is fine.
    fx.auth.sign_out(&p1).await?;
    Ok(())
}

async fn sign_out_everywhere(fx: AuthFixture) -> CaseResult {
    let (email, s1, p1) = new_user(&fx).await?;
    let s2 = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await?;
    let (_, other, _) = new_user(&fx).await?;
    fx.auth.sign_out_everywhere(&p1).await?;
    for (s, what) in [(&s1, "first"), (&s2, "second")] {
        expect_session_ended(&fx, s, &format!("{what} session")).await?;
    }
    validate(&fx, &other)
        .await
        .map_err(|f| Failure::new(format!("another user's session ended: {}", f.0)))?;
    let s3 = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await?;
    validate(&fx, &s3).await?;
    Ok(())
}

/// Sessions A1, A2, A3 of one user and B1 of another; `sign_out_others`
/// from A1 ends A2 and A3 (refresh tokens, and access tokens where
/// revocation is checked) and leaves A1 and B1 as they were.
async fn sign_out_others(fx: AuthFixture) -> CaseResult {
    let (email, a1, p1) = new_user(&fx).await?;
    let a2 = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await?;
    let a3 = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await?;
    let (_, b1, _) = new_user(&fx).await?;
    fx.auth.sign_out_others(&p1).await?;
    for (s, what) in [(&a2, "second"), (&a3, "third")] {
        expect_session_ended(&fx, s, &format!("{what} session after sign_out_others")).await?;
    }
    // This session is untouched: it validates, reads as live, refreshes.
    let still = validate(&fx, &a1)
        .await
        .map_err(|f| Failure::new(format!("sign_out_others ended its own session: {}", f.0)))?;
    ensure_eq!(still.session_id, p1.session_id, "session id");
    let info = fx.auth.get_session(&p1).await?;
    ensure!(
        info.revoked_at.is_none(),
        "the session that called sign_out_others reads as revoked"
    );
    let a1r = fx
        .auth
        .refresh_session(a1.refresh_token.expose())
        .await
        .map_err(|e| Failure::new(format!("the remaining session did not refresh: {e}")))?;
    let p1r = validate(&fx, &a1r).await?;
    // Another user's session is untouched.
    validate(&fx, &b1)
        .await
        .map_err(|f| Failure::new(format!("another user's session ended: {}", f.0)))?;
    let b1r = fx
        .auth
        .refresh_session(b1.refresh_token.expose())
        .await
        .map_err(|e| Failure::new(format!("another user's session did not refresh: {e}")))?;
    validate(&fx, &b1r).await?;
    // With no other session left it is still done, and ends nothing more.
    fx.auth.sign_out_others(&p1r).await?;
    validate(&fx, &a1r).await.map_err(|f| {
        Failure::new(format!(
            "a second sign_out_others ended its own session: {}",
            f.0
        ))
    })?;
    Ok(())
}

/// Sessions A1, A2 of one user and B1 of another; A1 changes the password:
/// A2 ends (refresh, and access token where revocation is checked), A1 and
/// B1 go on, the new password signs in and the old one does not. A change
/// of metadata alone ends nothing.
async fn password_change_ends_other_sessions(fx: AuthFixture) -> CaseResult {
    let (email, a1, p1) = new_user(&fx).await?;
    let a2 = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await?;
    let p2 = validate(&fx, &a2).await?;
    let (_, b1, _) = new_user(&fx).await?;
    let mut meta = serde_json::Map::new();
    meta.insert("theme".into(), serde_json::json!("dark"));
    fx.auth
        .update_user(
            &p1,
            UserUpdate {
                user_metadata: Some(meta),
                ..UserUpdate::default()
            },
        )
        .await?;
    validate(&fx, &a2)
        .await
        .map_err(|f| Failure::new(format!("a metadata change ended another session: {}", f.0)))?;
    let new_password = format!("{PASSWORD}-changed");
    fx.auth
        .update_user(
            &p1,
            UserUpdate {
                password: Some(new_password.as_str().into()),
                ..UserUpdate::default()
            },
        )
        .await?;
    expect_session_ended(&fx, &a2, "another session after a password change").await?;
    // The ended session's principal (taken while it was live) cannot set a
    // password: only a live session may.
    match fx
        .auth
        .update_user(
            &p2,
            UserUpdate {
                password: Some(format!("{PASSWORD}-by-the-ended-session").into()),
                ..UserUpdate::default()
            },
        )
        .await
    {
        Err(e) if e.kind() == ErrorKind::Unauthenticated => {}
        Err(e) => {
            return Err(Failure::new(format!(
                "an ended session changing the password: expected Unauthenticated, got {e}"
            )))
        }
        Ok(_) => return Err(Failure::new("an ended session changed the password")),
    }
    let still = validate(&fx, &a1).await.map_err(|f| {
        Failure::new(format!(
            "the password change ended the session that made it: {}",
            f.0
        ))
    })?;
    ensure_eq!(still.session_id, p1.session_id, "session id");
    fx.auth
        .refresh_session(a1.refresh_token.expose())
        .await
        .map_err(|e| Failure::new(format!("the changing session did not refresh: {e}")))?;
    validate(&fx, &b1)
        .await
        .map_err(|f| Failure::new(format!("another user's session ended: {}", f.0)))?;
    let old = fx.auth.sign_in(SignIn::new(&email, PASSWORD)).await;
    ensure!(old.is_err(), "the old password still signs in");
    fx.auth
        .sign_in(SignIn::new(&email, new_password.as_str()))
        .await
        .map_err(|e| Failure::new(format!("the new password does not sign in: {e}")))?;
    Ok(())
}

async fn get_user_and_session(fx: AuthFixture) -> CaseResult {
    let (email, s, p) = new_user(&fx).await?;
    let user = fx.auth.get_user(&p).await?;
    ensure_eq!(user.id, s.user.id);
    ensure_eq!(user.email, email);
    let info = fx.auth.get_session(&p).await?;
    ensure_eq!(Some(info.id.clone()), p.session_id, "session id");
    ensure_eq!(info.user_id, user.id);
    ensure!(info.revoked_at.is_none(), "a live session has revoked_at");
    fx.auth.sign_out(&p).await?;
    let info = fx.auth.get_session(&p).await?;
    ensure!(
        info.revoked_at.is_some(),
        "a signed-out session has no revoked_at"
    );
    Ok(())
}

async fn member_permissions(fx: AuthFixture) -> CaseResult {
    let (_, _, p) = new_user(&fx).await?;
    let roles = fx.auth.get_user_roles(&p).await?;
    ensure!(
        roles.iter().any(|r| r == MEMBER_ROLE),
        "get_user_roles lacks {MEMBER_ROLE}: {roles:?}"
    );
    for granted in ["read:agents", "read:trust_scores", "write:agents"] {
        ensure!(
            fx.auth.has_permission(&p, granted).await?,
            "{MEMBER_ROLE} should have {granted} (grants {MEMBER_PERMISSIONS:?})"
        );
    }
    for denied in ["write:users", "delete:agents", "*:agents", "*"] {
        ensure!(
            !fx.auth.has_permission(&p, denied).await?,
            "{MEMBER_ROLE} should not have {denied} (grants {MEMBER_PERMISSIONS:?})"
        );
    }
    Ok(())
}

async fn malformed_permission(fx: AuthFixture) -> CaseResult {
    let (_, _, p) = new_user(&fx).await?;
    for bad in ["", "read", "read:", ":agents", "a:b:c", "re ad:agents"] {
        expect_kind(
            fx.auth.has_permission(&p, bad).await,
            ErrorKind::InvalidInput,
            &format!("has_permission({bad:?})"),
        )?;
    }
    Ok(())
}
