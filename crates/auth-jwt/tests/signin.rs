//! Sign-up and sign-in hardening: dummy-hash verification for unknown
//! emails, bounds checked before hashing, the failed-sign-in limit, and no
//! secret in `Debug`, errors or logs.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use truststream_auth_jwt::{JwtAuth, SignInRateLimit};
use truststream_core_auth::{Auth, ErrorKind, SignIn, SignUp};

#[tokio::test]
async fn unknown_email_verifies_against_the_dummy_hash_and_reads_like_a_wrong_password() {
    let auth = provider(config()).await;
    let email = unique_email();
    auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let before = auth.stats();

    let wrong = auth
        .sign_in(SignIn::new(&email, "wrong password here"))
        .await
        .unwrap_err();
    let after_wrong = auth.stats();
    assert_eq!(
        after_wrong.password_verifications,
        before.password_verifications + 1
    );
    assert_eq!(after_wrong.dummy_verifications, before.dummy_verifications);

    let unknown = auth
        .sign_in(SignIn::new(unique_email(), "wrong password here"))
        .await
        .unwrap_err();
    let after_unknown = auth.stats();
    assert_eq!(
        after_unknown.dummy_verifications,
        after_wrong.dummy_verifications + 1
    );
    assert_eq!(
        after_unknown.password_verifications,
        after_wrong.password_verifications
    );

    // A malformed email takes the same path.
    let malformed = auth
        .sign_in(SignIn::new("not an email", "wrong password here"))
        .await
        .unwrap_err();
    assert_eq!(
        auth.stats().dummy_verifications,
        after_unknown.dummy_verifications + 1
    );

    for e in [&wrong, &unknown, &malformed] {
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        assert_eq!(e.to_string(), wrong.to_string());
    }
}

#[tokio::test]
async fn over_long_passwords_are_rejected_before_hashing() {
    let auth = provider(config()).await;
    let long = "p".repeat(257);
    let before = auth.stats();
    let e = auth
        .sign_up(SignUp::new(unique_email(), long.as_str()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = auth
        .sign_in(SignIn::new(unique_email(), long.as_str()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(auth.stats(), before, "no hashing or verification happened");
    // The bound is inclusive: 256 bytes are fine.
    auth.sign_up(SignUp::new(unique_email(), "p".repeat(256)))
        .await
        .unwrap();
    assert_eq!(auth.stats().password_hashes, before.password_hashes + 1);
}

#[tokio::test]
async fn duplicate_sign_up_is_a_bare_conflict_and_hashes_nothing() {
    let auth = provider(config()).await;
    let email = unique_email();
    let s = auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let hashes = auth.stats().password_hashes;
    let e = auth
        .sign_up(SignUp::new(&email, "some other password"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.message(), "an account with this email already exists");
    assert!(!format!("{e:?}").contains(&s.user.id));
    assert_eq!(auth.stats().password_hashes, hashes);
}

#[tokio::test]
async fn repeated_failures_for_one_account_are_rate_limited() {
    let mut c = config();
    c.sign_in_rate_limit = SignInRateLimit {
        max_failures: 3,
        window_secs: 60,
        max_tracked: 1000,
        ..SignInRateLimit::default()
    };
    let auth = provider(c).await;
    let email = unique_email();
    auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    for _ in 0..3 {
        let e = auth
            .sign_in(SignIn::new(&email, "wrong password!"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    }
    let verifications = auth.stats().password_verifications;
    // Now even the right password is refused, without any verification.
    let e = auth
        .sign_in(SignIn::new(&email, PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.is_retryable());
    assert_eq!(auth.stats().password_verifications, verifications);
    // Other accounts are not affected.
    let other = unique_email();
    auth.sign_up(SignUp::new(&other, PASSWORD)).await.unwrap();
    auth.sign_in(SignIn::new(&other, PASSWORD)).await.unwrap();
    // Unknown emails are limited the same way (no enumeration through the limiter).
    let ghost = unique_email();
    for _ in 0..3 {
        auth.sign_in(SignIn::new(&ghost, "wrong password!"))
            .await
            .unwrap_err();
    }
    assert_eq!(
        auth.sign_in(SignIn::new(&ghost, "wrong password!"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::RateLimited
    );
}

#[tokio::test]
async fn a_success_resets_the_failure_count() {
    let mut c = config();
    c.sign_in_rate_limit.max_failures = 2;
    let auth = provider(c).await;
    let email = unique_email();
    auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    auth.sign_in(SignIn::new(&email, "wrong password!"))
        .await
        .unwrap_err();
    auth.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
    auth.sign_in(SignIn::new(&email, "wrong password!"))
        .await
        .unwrap_err();
    auth.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_hashes_only() {
    let db = memory_db();
    let auth = JwtAuth::new(config(), db.clone()).await.unwrap();
    let email = unique_email();
    auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let rows = db
        .read("auth_users", &truststream_core_db::Query::new())
        .await
        .unwrap();
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains(PASSWORD));
    assert!(rows[0]["password_hash"]
        .as_str()
        .unwrap()
        .starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
}

/// A `tracing` writer that keeps everything written.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_in_debug_errors_or_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = memory_db();
    let auth = JwtAuth::new(config(), db.clone()).await.unwrap();
    let email = unique_email();
    let s = auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let s2 = auth
        .refresh_session(s.refresh_token.expose())
        .await
        .unwrap();
    let mut errors = Vec::new();
    errors.push(
        auth.sign_in(SignIn::new(&email, "wrong password!"))
            .await
            .unwrap_err(),
    );
    errors.push(
        auth.sign_up(SignUp::new(&email, PASSWORD))
            .await
            .unwrap_err(),
    );
    // Reuse outside the interval would need a wait; a bad refresh token is enough here.
    errors.push(auth.refresh_session(&"A".repeat(43)).await.unwrap_err());
    errors.push(
        auth.validate_token(&format!("{}x", s.access_token.expose()))
            .await
            .unwrap_err(),
    );
    let p = auth.validate_token(s2.access_token.expose()).await.unwrap();
    auth.sign_out(&p).await.unwrap();

    let hash = db
        .read("auth_users", &truststream_core_db::Query::new())
        .await
        .unwrap()[0]["password_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = capture.0.lock().unwrap().clone();
    write!(seen, "{auth:?} {:?} {s:?} {s2:?} {p:?}", auth.config()).unwrap();
    for e in &errors {
        write!(seen, "{e} {e:?}").unwrap();
    }
    let seen = String::from_utf8(seen).unwrap();
    assert!(
        seen.contains("user signed up"),
        "logs were captured: {seen}"
    );
    for secret in [
        PASSWORD,
        SECRET,
        hash.as_str(),
        s.refresh_token.expose(),
        s2.refresh_token.expose(),
        s.access_token.expose(),
    ] {
        assert!(!seen.contains(secret), "found a secret in: {seen}");
    }
    // The JWT signature alone, too.
    let sig = s.access_token.expose().rsplit('.').next().unwrap();
    assert!(!seen.contains(sig));
}
