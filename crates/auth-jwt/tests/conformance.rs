//! The auth conformance suite over auth-jwt, built through its registry the
//! way the runtime builds it, on db-memory and on db-sqlite.

use std::sync::Arc;
use std::time::Duration;

use truststream_conformance::{auth, factory, Report};
use truststream_core_auth::{AuthDeps, AuthRegistry};
use truststream_core_db::Database;

const REUSE_INTERVAL_MS: u64 = 1_000;

fn settings() -> serde_json::Value {
    serde_json::json!({
        "jwt_secret": "conformance secret, at least 32 bytes long",
        "argon2": { "memory_kib": 8, "iterations": 1, "parallelism": 1 },
        "refresh_reuse_interval_ms": REUSE_INTERVAL_MS,
        "default_roles": [auth::MEMBER_ROLE],
        "roles": { auth::MEMBER_ROLE: auth::MEMBER_PERMISSIONS },
    })
}

fn over(make_db: fn() -> futures_db::DbFuture) -> auth::AuthFactory {
    factory(move || async move {
        let db = make_db().await?;
        let mut reg = AuthRegistry::new("auth");
        truststream_auth_jwt::register(&mut reg);
        let auth = reg
            .build("jwt", settings(), AuthDeps { db: Some(db) })
            .await
            .map_err(|e| e.to_string())?;
        Ok(auth::AuthFixture {
            auth,
            refresh_reuse_interval: Duration::from_millis(REUSE_INTERVAL_MS),
        })
    })
}

mod futures_db {
    use super::*;
    pub type DbFuture = truststream_core::BoxFuture<'static, Result<Arc<dyn Database>, String>>;

    pub fn memory() -> DbFuture {
        Box::pin(async {
            Ok(Arc::new(truststream_db_memory::MemoryDatabase::new()) as Arc<dyn Database>)
        })
    }

    pub fn sqlite() -> DbFuture {
        Box::pin(async {
            let db = truststream_db_sqlite::SqliteDatabase::in_memory()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(db) as Arc<dyn Database>)
        })
    }
}

fn check(report: &Report) {
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert!(
        report.skipped_cases().is_empty(),
        "skipped: {:?}",
        report.skipped_cases()
    );
    assert_eq!(report.passed(), auth::cases().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_memory() {
    check(&auth::run("jwt/memory", over(futures_db::memory), None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_sqlite() {
    check(&auth::run("jwt/sqlite", over(futures_db::sqlite), None).await);
}
