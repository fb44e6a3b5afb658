//! `revocation = "checked"` through the in-process revocation view: a
//! live session is read once per `revocation_staleness_ms`, every
//! revoking path is seen at once by the instance that revoked, and another
//! instance (its own cache, its own database handle: another process as
//! far as the view is concerned) sees it within the bound — on PostgreSQL
//! through the change feed, well before it.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use serde_json::Value;
use truststream_auth_jwt::{JwtAuth, JwtAuthConfig};
use truststream_core_auth::{Auth, ErrorKind, Session, SignIn, SignUp};
use truststream_core_db::{Database, Row};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_layer::{DatabaseLayer, LayeredDatabase};

/// Counts `get`s of the sessions table.
#[derive(Default)]
struct CountSessionReads(AtomicU64);

#[async_trait]
impl DatabaseLayer for CountSessionReads {
    async fn get(
        &self,
        next: &dyn Database,
        table: &str,
        id: &Value,
    ) -> truststream_core::Result<Option<Row>> {
        if table == "auth_sessions" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        next.get(table, id).await
    }
}

/// Fails the first `update_many` of the sessions table (before it
/// reaches the database: nothing is committed).
#[derive(Default)]
struct FailFirstSessionUpdate(std::sync::atomic::AtomicBool);

#[async_trait]
impl DatabaseLayer for FailFirstSessionUpdate {
    async fn update_many(
        &self,
        next: &dyn Database,
        table: &str,
        filter: &truststream_core_db::Filter,
        patch: Row,
    ) -> truststream_core::Result<u64> {
        if table == "auth_sessions" && !self.0.swap(true, Ordering::Relaxed) {
            return Err(truststream_core::Error::unavailable("connection lost"));
        }
        next.update_many(table, filter, patch).await
    }
}

/// Claims a change feed that sees every writer (PostgreSQL's scope) and
/// refuses every subscription to it.
struct FeedDown;

#[async_trait]
impl DatabaseLayer for FeedDown {
    fn capabilities(&self, next: &dyn Database) -> truststream_core_db::DbCapabilities {
        let mut c = next.capabilities();
        c.change_feed = true;
        c.change_feed_scope = Some(truststream_core_db::ChangeFeedScope::Database);
        c
    }
    async fn subscribe_changes(
        &self,
        _next: &dyn Database,
        _table: Option<&str>,
    ) -> truststream_core::Result<truststream_core_db::ChangeStream> {
        Err(truststream_core::Error::unavailable("listener refused"))
    }
}

fn with_staleness(ms: u64) -> JwtAuthConfig {
    let mut c = config();
    c.revocation_staleness_ms = ms;
    c.refresh_reuse_interval_ms = 0;
    c
}

async fn is_valid(auth: &JwtAuth, s: &Session) -> bool {
    match auth.validate_token(s.access_token.expose()).await {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
            false
        }
    }
}

#[tokio::test]
async fn a_live_session_is_read_once_per_bound() {
    let counter = Arc::new(CountSessionReads::default());
    let db: Arc<dyn Database> = Arc::new(LayeredDatabase::new(memory_db(), counter.clone()));
    let auth = JwtAuth::new(with_staleness(60_000), db.clone())
        .await
        .unwrap();
    let s = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let before = counter.0.load(Ordering::Relaxed);
    for _ in 0..100 {
        assert!(is_valid(&auth, &s).await);
    }
    assert_eq!(counter.0.load(Ordering::Relaxed) - before, 1, "one read");

    // 0 turns the view off: one read per validation, as before.
    let off = JwtAuth::new(with_staleness(0), db).await.unwrap();
    let s = off
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let before = counter.0.load(Ordering::Relaxed);
    for _ in 0..10 {
        assert!(is_valid(&off, &s).await);
    }
    assert_eq!(counter.0.load(Ordering::Relaxed) - before, 10);
}

#[tokio::test]
async fn the_bound_is_validated() {
    let mut c = config();
    c.revocation_staleness_ms = 60_001;
    let e = JwtAuth::new(c, memory_db()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("revocation_staleness_ms"), "{e}");
    let c: JwtAuthConfig = serde_json::from_value(serde_json::json!({
        "jwt_secret": SECRET,
        "revocation_staleness_ms": 250,
        "revocation_feed": false,
    }))
    .unwrap();
    assert_eq!(c.revocation_staleness_ms, 250);
    assert!(!c.revocation_feed);
    assert_eq!(config().revocation_staleness_ms, 1_000, "the default");
    assert!(!config().revocation_feed, "the feed is opt-in");
}

/// Every revoking path, each after the session's tokens were validated
/// (so the view remembers them as live): the revoking instance refuses
/// them at once, although the bound is a minute.
async fn every_path_is_seen_at_once(db: Arc<dyn Database>) {
    let auth = JwtAuth::new(with_staleness(60_000), db).await.unwrap();
    let email = unique_email();
    let s1 = auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let sign_in = || auth.sign_in(SignIn::new(&email, PASSWORD));

    // sign_out
    assert!(is_valid(&auth, &s1).await);
    let p1 = auth.validate_token(s1.access_token.expose()).await.unwrap();
    auth.sign_out(&p1).await.unwrap();
    assert!(!is_valid(&auth, &s1).await, "sign_out");

    // sign_out_others: the others end, the caller's session stays.
    let (s2, s3) = (sign_in().await.unwrap(), sign_in().await.unwrap());
    assert!(is_valid(&auth, &s2).await && is_valid(&auth, &s3).await);
    let p2 = auth.validate_token(s2.access_token.expose()).await.unwrap();
    auth.sign_out_others(&p2).await.unwrap();
    assert!(!is_valid(&auth, &s3).await, "sign_out_others");
    assert!(is_valid(&auth, &s2).await, "the caller's session stays");

    // sign_out_everywhere
    let s4 = sign_in().await.unwrap();
    assert!(is_valid(&auth, &s2).await && is_valid(&auth, &s4).await);
    auth.sign_out_everywhere(&p2).await.unwrap();
    assert!(!is_valid(&auth, &s2).await, "sign_out_everywhere");
    assert!(!is_valid(&auth, &s4).await, "sign_out_everywhere");

    // Refresh-token reuse (no reuse interval here): the session is revoked.
    let s5 = sign_in().await.unwrap();
    let s6 = auth
        .refresh_session(s5.refresh_token.expose())
        .await
        .unwrap();
    assert!(is_valid(&auth, &s6).await);
    let e = auth
        .refresh_session(s5.refresh_token.expose())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert!(!is_valid(&auth, &s6).await, "reuse detection");

    // A new session of the user is not caught by the earlier revocations.
    let s7 = sign_in().await.unwrap();
    assert!(is_valid(&auth, &s7).await);
}

/// A sign-out the database answered with an error did not end the
/// session there: the instance reads it again rather than refusing a live
/// session until its memory of it expires; the retried sign-out ends it.
#[tokio::test]
async fn a_failed_sign_out_leaves_the_database_in_charge() {
    let db: Arc<dyn Database> = Arc::new(LayeredDatabase::new(
        memory_db(),
        Arc::new(FailFirstSessionUpdate::default()),
    ));
    let auth = JwtAuth::new(with_staleness(60_000), db).await.unwrap();
    let s = auth
        .sign_up(SignUp::new(unique_email(), PASSWORD))
        .await
        .unwrap();
    let p = auth.validate_token(s.access_token.expose()).await.unwrap();
    let e = auth.sign_out(&p).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(is_valid(&auth, &s).await, "still live in the database");
    auth.sign_out(&p).await.unwrap();
    assert!(!is_valid(&auth, &s).await, "the retry ends it");
}

/// An opted-in feed that cannot be followed shows in `health()` (only the
/// staleness bound holds meanwhile); without the option nothing is
/// subscribed and health does not depend on the feed.
#[tokio::test]
async fn a_feed_that_is_down_degrades_health() {
    use truststream_core_db::HealthStatus;
    let db: Arc<dyn Database> = Arc::new(LayeredDatabase::new(memory_db(), Arc::new(FeedDown)));
    let mut cfg = with_staleness(1_000);
    cfg.revocation_feed = true;
    let auth = JwtAuth::new(cfg, db.clone()).await.unwrap();
    let h = auth.health().await;
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert!(
        h.message
            .as_deref()
            .unwrap_or("")
            .contains("revocation feed"),
        "{h:?}"
    );
    let off = JwtAuth::new(with_staleness(1_000), db).await.unwrap();
    assert_eq!(off.health().await.status, HealthStatus::Healthy);
}

#[tokio::test]
async fn every_revoking_path_is_seen_at_once_on_memory() {
    every_path_is_seen_at_once(memory_db()).await;
}

#[tokio::test]
async fn every_revoking_path_is_seen_at_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteDatabase::open(SqliteConfig::file(dir.path().join("auth.db")))
        .await
        .unwrap();
    every_path_is_seen_at_once(Arc::new(db)).await;
}

/// `a` and `b`: two instances on one database, each with its own handle
/// and view. `b` has validated the session (it remembers it as live);
/// `a` revokes it. `a` refuses it at once; `b` within `within`.
/// Returns how long `b` took.
async fn seen_elsewhere_within(a: &JwtAuth, b: &JwtAuth, within: Duration) -> Duration {
    let email = unique_email();
    let s = a.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    assert!(is_valid(b, &s).await);
    assert!(is_valid(a, &s).await);
    let p = a.validate_token(s.access_token.expose()).await.unwrap();
    a.sign_out(&p).await.unwrap();
    let revoked = Instant::now();
    assert!(!is_valid(a, &s).await, "the revoking instance: at once");
    loop {
        if !is_valid(b, &s).await {
            return revoked.elapsed();
        }
        assert!(
            revoked.elapsed() <= within,
            "the other instance still accepts the session after {:?}",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Scheduling slack on a loaded machine, on top of the bound.
const SLACK: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_sees_it_within_the_bound_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.db");
    let open = || async {
        Arc::new(
            SqliteDatabase::open(SqliteConfig::file(&path))
                .await
                .unwrap(),
        ) as Arc<dyn Database>
    };
    let a = JwtAuth::new(with_staleness(1_000), open().await)
        .await
        .unwrap();
    let b = JwtAuth::new(with_staleness(1_000), open().await)
        .await
        .unwrap();
    seen_elsewhere_within(&a, &b, Duration::from_millis(1_000) + SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_sees_it_through_the_feed_on_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let cfg = scratch.config("authrevoke");
    let a: Arc<dyn Database> = Arc::new(PgDatabase::open(cfg.clone()).await.unwrap());
    let b: Arc<dyn Database> = Arc::new(PgDatabase::open(cfg.clone()).await.unwrap());
    // A bound of a minute: only the feed can end the session in `b` sooner.
    let mut feed = with_staleness(60_000);
    feed.revocation_feed = true;
    let auth_a = JwtAuth::new(feed.clone(), a).await.unwrap();
    let auth_b = JwtAuth::new(feed, b).await.unwrap();
    let took = seen_elsewhere_within(&auth_a, &auth_b, Duration::from_secs(10)).await;
    eprintln!("revocation seen through the feed after {took:?}");

    // Without the feed, the bound alone.
    let c: Arc<dyn Database> = Arc::new(PgDatabase::open(cfg.clone()).await.unwrap());
    let d: Arc<dyn Database> = Arc::new(PgDatabase::open(cfg).await.unwrap());
    let mut no_feed = with_staleness(1_000);
    no_feed.revocation_feed = false;
    let auth_c = JwtAuth::new(no_feed.clone(), c).await.unwrap();
    let auth_d = JwtAuth::new(no_feed, d).await.unwrap();
    seen_elsewhere_within(&auth_c, &auth_d, Duration::from_millis(1_000) + SLACK).await;
    drop((auth_a, auth_b, auth_c, auth_d));
    scratch.cleanup().await.unwrap();
}
