//! The auth conformance suite over auth-supabase, built through its
//! registry the way the runtime builds it, against a real `/auth/v1`:
//! `truststream serve` in process (auth-jwt, HS256, db-memory).
#![allow(clippy::unwrap_used)] // test code

mod common;

use std::time::Duration;

use truststream_conformance::{auth, factory};
use truststream_core_auth::{AuthDeps, AuthRegistry};

/// Cases skipped, by name, with why.
const SKIPPED: &[(&str, &str)] = &[(
    "signout.access_token_stops_validating",
    "capability revocation_checked is false: tokens are verified locally, so a signed-out session's access token validates until it expires",
)];

fn fixture(settings: serde_json::Value) -> auth::AuthFactory {
    factory(move || {
        let settings = settings.clone();
        async move {
            let mut reg = AuthRegistry::new("auth");
            truststream_auth_supabase::register(&mut reg);
            let auth = reg
                .build("supabase", settings, AuthDeps { db: None })
                .await
                .map_err(|e| e.to_string())?;
            Ok(auth::AuthFixture {
                auth,
                refresh_reuse_interval: Duration::from_millis(common::REUSE_INTERVAL_MS),
            })
        }
    })
}

/// Runs the whole suite against `settings` and asserts no failure and
/// exactly `skipped`.
async fn run_suite(label: &str, settings: serde_json::Value, skipped: &[(&str, &str)]) {
    let report = auth::run(label, fixture(settings), None).await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{label}: {}", report.summary());
    let expected: Vec<&str> = skipped.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        report.skipped_cases(),
        expected,
        "{label}: skips changed: {}",
        report.summary()
    );
    assert_eq!(report.passed(), auth::cases().len() - skipped.len());
}

/// Tokens verified locally only (the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_truststream_serve() {
    let gw = common::Gateway::start().await;
    run_suite("supabase/serve", gw.settings(), SKIPPED).await;
    gw.server.stop().await.unwrap();
}

/// With `check_session`: revocation is checked, nothing is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_truststream_serve_with_check_session() {
    let gw = common::Gateway::start().await;
    let mut settings = gw.settings();
    settings["check_session"] = serde_json::json!(true);
    run_suite("supabase/serve+check_session", settings, &[]).await;
    gw.server.stop().await.unwrap();
}

/// serve signing ES256: tokens verified against its JWKS, no shared secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_truststream_serve_es256_jwks() {
    let gw = common::Gateway::start_es256().await;
    let mut settings = gw.settings();
    settings.as_object_mut().unwrap().remove("jwt_secret");
    run_suite("supabase/serve-es256-jwks", settings, SKIPPED).await;
    gw.server.stop().await.unwrap();
}
