//! The guide's "test with multiple providers": every case below runs,
//! unchanged, against every database provider compiled in. Each
//! (provider, case) pair is its own test, so the runner shows
//! `memory::creates_agent`, `sqlite::creates_agent`, ...
//!
//! Adding a provider is one line in the `agent_service_tests!` call at the
//! bottom: `name => async factory returning a fresh, empty database` (a
//! [`Fixture`], or `None` to skip when the provider's server is absent).
//!
//! `supabase` is db-supabase over `/rest/v1` of `truststream serve` (in
//! process, SQLite underneath).
//!
//! PostgreSQL runs on the server at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), one scratch schema per case,
//! dropped afterwards. Under `CI=true` a missing server fails every
//! PostgreSQL case; elsewhere they say so on stderr and pass without running.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use truststream_core::ErrorKind;
use truststream_core_db::Database;
use truststream_db_postgres::testing::{self, Scratch};
use truststream_tests::{AgentService, AgentStatus, NewAgent, ACTIVE_LIMIT};

/// The cases: each takes a service over a fresh database with the schema in place.
/// (`cfg(test)` marks them as test code for clippy's `unwrap_used`.)
#[cfg(test)]
mod cases {
    use super::*;

    /// Creation timestamps must differ for "newest first" to be observable
    /// on providers whose clock ticks coarsely.
    async fn tick() {
        tokio::time::sleep(Duration::from_millis(3)).await;
    }

    pub async fn creates_agent(s: AgentService) {
        let a = s
            .create_agent(&NewAgent::named("  Scout  ").kind("AI_LEADER").score(87.5))
            .await
            .unwrap();
        assert!(!a.id.is_empty());
        assert_eq!(a.name, "Scout", "name is trimmed");
        assert_eq!(a.agent_type.as_deref(), Some("AI_LEADER"));
        assert_eq!(a.status, AgentStatus::Active);
        assert_eq!(a.performance_score, Some(87.5));
        assert!(a.deleted_at.is_none());
        assert!((chrono::Utc::now() - a.created_at).num_seconds().abs() < 60);
        let back = s.get_agent(&a.id).await.unwrap().unwrap();
        assert_eq!(back, a);
    }

    pub async fn rejects_invalid_agents(s: AgentService) {
        for bad in [
            NewAgent::named(""),
            NewAgent::named("   \t"),
            NewAgent::named("x".repeat(201)),
            NewAgent::named("ok").score(101.0),
            NewAgent::named("ok").score(-0.5),
            NewAgent::named("ok").score(f64::NAN),
        ] {
            let e = s.create_agent(&bad).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
        }
        assert!(
            s.page(10, None).await.unwrap().items.is_empty(),
            "nothing stored"
        );
    }

    pub async fn ensure_schema_is_idempotent(s: AgentService) {
        s.ensure_schema().await.unwrap();
        s.create_agent(&NewAgent::named("kept")).await.unwrap();
        s.ensure_schema().await.unwrap();
        assert_eq!(s.find_active_agents().await.unwrap().len(), 1);
    }

    pub async fn finds_active_agents_newest_first(s: AgentService) {
        let mut ids = Vec::new();
        for name in ["a", "b", "c", "d", "e"] {
            ids.push(s.create_agent(&NewAgent::named(name)).await.unwrap().id);
            tick().await;
        }
        s.update_status(&ids[1], AgentStatus::Inactive)
            .await
            .unwrap();
        assert!(s.soft_delete(&ids[3]).await.unwrap());
        let found: Vec<String> = s
            .find_active_agents()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(found, ["e", "c", "a"]);
    }

    pub async fn find_active_is_limited(s: AgentService) {
        let n = ACTIVE_LIMIT as usize + 5;
        for i in 0..n {
            s.create_agent(&NewAgent::named(format!("agent-{i}")))
                .await
                .unwrap();
        }
        let found = s.find_active_agents().await.unwrap();
        assert_eq!(found.len(), ACTIVE_LIMIT as usize);
        for w in found.windows(2) {
            assert!(
                (w[0].created_at, &w[0].id) >= (w[1].created_at, &w[1].id),
                "newest first"
            );
        }
    }

    pub async fn updates_status(s: AgentService) {
        let a = s.create_agent(&NewAgent::named("u")).await.unwrap();
        assert!(a.updated_at.is_none());
        let b = s
            .update_status(&a.id, AgentStatus::Suspended)
            .await
            .unwrap();
        assert_eq!(b.id, a.id);
        assert_eq!(b.status, AgentStatus::Suspended);
        assert!(b.updated_at.is_some());
        assert_eq!(
            s.get_agent(&a.id).await.unwrap().unwrap().status,
            AgentStatus::Suspended
        );

        let missing = "00000000-0000-4000-8000-000000000000";
        let e = s
            .update_status(missing, AgentStatus::Active)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

        assert!(s.soft_delete(&a.id).await.unwrap());
        let e = s
            .update_status(&a.id, AgentStatus::Active)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "soft-deleted: {e}");
    }

    pub async fn soft_deletes(s: AgentService) {
        let a = s.create_agent(&NewAgent::named("gone")).await.unwrap();
        let keep = s.create_agent(&NewAgent::named("kept")).await.unwrap();
        assert!(s.soft_delete(&a.id).await.unwrap());
        assert!(
            !s.soft_delete(&a.id).await.unwrap(),
            "second delete is a no-op"
        );
        assert!(!s
            .soft_delete("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap());
        // The row is kept, marked deleted, and hidden from listings.
        let row = s.get_agent(&a.id).await.unwrap().unwrap();
        assert!(row.deleted_at.is_some());
        let active: Vec<String> = s
            .find_active_agents()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(active, [keep.id]);
    }

    pub async fn paginates_without_gaps_or_repeats(s: AgentService) {
        for i in 0..23 {
            s.create_agent(&NewAgent::named(format!("p{i}")))
                .await
                .unwrap();
        }
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = s.page(5, cursor.as_deref()).await.unwrap();
            pages += 1;
            assert!(page.items.len() <= 5);
            if pages == 2 {
                // Rows added or deleted between pages cause no repeats.
                s.create_agent(&NewAgent::named("late")).await.unwrap();
                let victim = seen.first().cloned().expect("page 1 was not empty");
                s.soft_delete(&victim).await.unwrap();
            }
            seen.extend(page.items.iter().map(|a| a.id.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
            assert!(pages < 20, "pagination does not end");
        }
        assert_eq!(pages, 5);
        assert_eq!(seen.len(), 23);
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), 23, "no agent is returned twice");

        let e = s.page(5, Some("not-a-cursor!")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = s.page(0, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    pub async fn computes_statistics(s: AgentService) {
        if !s.db().capabilities().aggregates {
            let e = s.statistics().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            return;
        }
        let empty = s.statistics().await.unwrap();
        assert_eq!(empty.total_agents, 0);
        assert_eq!(empty.active_agents, 0);
        assert_eq!(empty.avg_performance, None);
        assert_eq!(empty.latest_creation, None);

        let a = s
            .create_agent(&NewAgent::named("a").score(80.0))
            .await
            .unwrap();
        let b = s
            .create_agent(&NewAgent::named("b").score(60.0))
            .await
            .unwrap();
        tick().await;
        let c = s.create_agent(&NewAgent::named("c")).await.unwrap();
        let d = s
            .create_agent(&NewAgent::named("d").score(10.0))
            .await
            .unwrap();
        s.update_status(&b.id, AgentStatus::Inactive).await.unwrap();
        s.soft_delete(&d.id).await.unwrap();

        let st = s.statistics().await.unwrap();
        assert_eq!(st.total_agents, 3, "{st:?}");
        assert_eq!(st.active_agents, 2, "{st:?}");
        let avg = st.avg_performance.unwrap();
        assert!((avg - 70.0).abs() < 1e-9, "{st:?}");
        let latest = st.latest_creation.unwrap();
        assert_eq!(latest, a.created_at.max(c.created_at).max(b.created_at));
    }
}

/// One `#[tokio::test]` per case for one provider.
macro_rules! cases_for {
    ($factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(fixture): Option<Fixture> = $factory().await else {
                    return;
                };
                let service = AgentService::new(fixture.db);
                service.ensure_schema().await.expect("schema");
                super::cases::$case(service).await;
                if let Some(scratch) = fixture.scratch {
                    scratch.cleanup().await.expect("drop the scratch schema");
                }
            }
        )+
    };
}

/// One module per provider, each with every case.
macro_rules! agent_service_tests {
    ($($provider:ident => $factory:expr),+ $(,)?) => {
        $(
            mod $provider {
                use super::*;
                cases_for!($factory;
                    creates_agent,
                    rejects_invalid_agents,
                    ensure_schema_is_idempotent,
                    finds_active_agents_newest_first,
                    find_active_is_limited,
                    updates_status,
                    soft_deletes,
                    paginates_without_gaps_or_repeats,
                    computes_statistics,
                );
            }
        )+
    };
}

/// A fresh, empty database for one case, and the scratch schema to drop
/// after it (PostgreSQL) or the server to keep running (Supabase).
struct Fixture {
    db: Arc<dyn Database>,
    scratch: Option<Scratch>,
    _server: Option<truststream_serve::Running>,
}

impl Fixture {
    fn new(db: impl Database + 'static) -> Option<Self> {
        Some(Fixture {
            db: Arc::new(db),
            scratch: None,
            _server: None,
        })
    }
}

async fn memory() -> Option<Fixture> {
    Fixture::new(truststream_db_memory::MemoryDatabase::new())
}

async fn sqlite() -> Option<Fixture> {
    Fixture::new(
        truststream_db_sqlite::SqliteDatabase::in_memory()
            .await
            .expect("in-memory SQLite database"),
    )
}

/// A fresh schema on the test server; `None` (skip, with a message) when
/// there is no server outside CI, a panic under `CI=true`.
async fn postgres() -> Option<Fixture> {
    let scratch = Scratch::new(testing::server().await?);
    let db = scratch
        .database("agents")
        .await
        .expect("a PostgreSQL scratch schema");
    Some(Fixture {
        db: Arc::new(db),
        scratch: Some(scratch),
        _server: None,
    })
}

/// db-supabase, the guide's production database, against a Supabase-
/// compatible API: `truststream serve` in process over a fresh in-memory
/// SQLite database. Rows travel over `/rest/v1` with the service-role key;
/// the SQL backend (the same SQLite database, standing in for the pooler)
/// serves the schema changes and the statistics' aggregates.
async fn supabase() -> Option<Fixture> {
    use truststream_db_supabase::{BytesFormat, SupabaseDb, SupabaseDbConfig};
    use truststream_serve::{ApiKeys, Providers, ServeConfig, Server};
    let sqlite: Arc<dyn Database> = Arc::new(
        truststream_db_sqlite::SqliteDatabase::in_memory()
            .await
            .expect("in-memory SQLite database"),
    );
    let users: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let auth = truststream_auth_jwt::JwtAuth::new(
        truststream_auth_jwt::JwtAuthConfig::with_secret(
            "agent service tests: a secret of at least 32 bytes",
        ),
        users,
    )
    .await
    .expect("auth-jwt");
    let providers = Providers {
        db: sqlite.clone(),
        auth: Arc::new(auth),
        storage: Arc::new(truststream_storage_memory::MemoryStorage::new()),
        metrics: None,
    };
    let config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        ..ServeConfig::default()
    };
    let running = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .expect("serve binds")
        .spawn();
    let mut cfg = SupabaseDbConfig::service_role(&running.url, running.keys.service_role());
    cfg.bytes_format = BytesFormat::Base64;
    let db = SupabaseDb::new(cfg).expect("db-supabase").with_sql(sqlite);
    Some(Fixture {
        db: Arc::new(db),
        scratch: None,
        _server: Some(running),
    })
}

agent_service_tests! {
    memory => super::memory,
    sqlite => super::sqlite,
    postgres => super::postgres,
    supabase => super::supabase,
}
