//! The auth conformance suite over auth-supabase, built through its
//! registry the way the runtime builds it, against a real `/auth/v1`:
//! `truststream serve` in process (auth-jwt, HS256, db-memory).
#![allow(clippy::unwrap_used)] // test code

mod common;

use std::time::Duration;

use truststream_conformance::{auth, factory, CaseOutcome, Report};
use truststream_core_auth::{AuthDeps, AuthRegistry};

/// Cases skipped, by name, with why.
const SKIPPED: &[(&str, &str)] = &[(
    "signout.access_token_stops_validating",
    "capability revocation_checked is false: tokens are verified locally, so a signed-out session's access token validates until it expires",
)];

/// Cases that call `get_session`, which GoTrue cannot serve (no endpoint
/// reads a session): they are run on their own below and must fail with
/// exactly that `Unsupported` answer and nothing else.
const NEED_GET_SESSION: &[&str] = &["refresh.rotates", "session.get_user_and_session"];

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_truststream_serve() {
    let gw = common::Gateway::start().await;
    let f = fixture(gw.settings());

    let mut report = Report::default();
    for case in auth::cases() {
        if NEED_GET_SESSION.contains(&case.name) {
            continue;
        }
        // Case names are unique and none is a substring of another run here.
        let r = auth::run("supabase/serve", f.clone(), Some(case.name)).await;
        report.merge(r);
    }
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    let skipped: Vec<&str> = report.skipped_cases();
    let expected: Vec<&str> = SKIPPED.iter().map(|(n, _)| *n).collect();
    assert_eq!(skipped, expected, "skips changed: {}", report.summary());
    assert_eq!(
        report.passed(),
        auth::cases().len() - SKIPPED.len() - NEED_GET_SESSION.len()
    );

    // The get_session cases: everything before the get_session call passes,
    // and the call answers Unsupported, saying why.
    for name in NEED_GET_SESSION {
        let r = auth::run("supabase/serve", f.clone(), Some(name)).await;
        let rows: Vec<_> = r.cases.iter().filter(|c| c.case == *name).collect();
        assert_eq!(rows.len(), 1, "{name}");
        match &rows[0].outcome {
            CaseOutcome::Failed(why) => assert!(
                why.contains("unsupported")
                    && why.contains("GoTrue has no endpoint that reads a session"),
                "{name} failed for another reason: {why}"
            ),
            other => panic!("{name}: expected the get_session Unsupported failure, got {other:?}"),
        }
    }
    gw.server.stop().await.unwrap();
}
