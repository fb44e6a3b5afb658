//! `cargo xtask conformance`: the behaviour suites against every known
//! provider, in-process.

mod layers;

use std::sync::Arc;

use truststream_conformance::{auth, db, factory, jobs, realtime, storage, CaseOutcome, Report};
use truststream_core_db::Database;
use truststream_core_jobs::{Jobs, JobsRegistry};
use truststream_core_realtime::{Realtime, RealtimeDeps, RealtimeRegistry};
use truststream_core_storage::Storage;
use truststream_db_memory::MemoryDatabase;
use truststream_storage_memory::MemoryStorage;

/// The interfaces that have a suite, as accepted by `--interface`.
const INTERFACES: &[&str] = &["db", "storage", "realtime", "auth", "jobs"];

/// How one provider is put under its suite.
enum Suite {
    Db(fn() -> db::DbFactory),
    Storage(fn() -> storage::StorageFactory),
    Realtime(fn() -> realtime::RealtimeFactory),
    /// An auth provider over a database provider: `make` gets `over()`, the
    /// database entry's factory (a fresh database per case). Reported as
    /// `<name>/<db>`, e.g. `jwt/sqlite`.
    Auth {
        make: fn(db::DbFactory) -> auth::AuthFactory,
        db: &'static str,
        over: fn() -> db::DbFactory,
    },
    Jobs(fn() -> jobs::JobsFactory),
}

/// One row of the provider table.
struct Entry {
    /// `db`, `storage`, `realtime`.
    interface: &'static str,
    /// Provider type name; `<name>+layers` for the provider through a
    /// stack of layers (see `layers`).
    name: &'static str,
    suite: Suite,
    /// The cases this provider is expected to skip, exactly: any other skip
    /// fails the run, and so does a listed case that ran (the list is stale).
    expected_skips: fn() -> Vec<&'static str>,
}

impl Entry {
    /// `db-memory`: the crate-style name, also accepted by `--provider`.
    fn long_name(&self) -> String {
        format!("{}-{}", self.interface, self.name)
    }
}

/// No case may be skipped.
fn no_skips() -> Vec<&'static str> {
    Vec::new()
}

/// db-memory has no raw SQL and no full-text search.
fn memory_db_skips() -> Vec<&'static str> {
    vec![
        "aggregate.raw_query_guide_sql",
        "raw.one_statement_per_call",
        "query.full_text_search",
    ]
}

/// Full-text search is PostgreSQL's only (SQLite answers `Unsupported`).
fn sqlite_db_skips() -> Vec<&'static str> {
    vec!["query.full_text_search"]
}

/// jobs-memory keeps no database, so the transactional-enqueue cases
/// (which need one) are skipped.
fn memory_jobs_skips() -> Vec<&'static str> {
    vec!["tx.rollback_never_runs", "tx.commit_runs_once"]
}

/// The Garage version `truststream_storage_s3::testing` starts (2.5)
/// accepts `If-None-Match` / `If-Match` on PUT and ignores them: the probe
/// turns conditional writes off, so the cases that need them are skipped.
/// S3's signed URLs are fetched over HTTP from the S3 server, not through
/// `Storage::fetch_signed`, so the `fetch_signed` cases are skipped too.
fn s3_skips() -> Vec<&'static str> {
    storage::cases()
        .iter()
        .filter(|c| c.needs.contains(&"conditional_writes") || c.needs.contains(&"fetch_signed"))
        .map(|c| c.name)
        .collect()
}

/// Every provider with a suite. Adding one is one line here.
fn providers() -> Vec<Entry> {
    vec![
        Entry {
            interface: "db",
            name: "memory",
            suite: Suite::Db(db_memory),
            expected_skips: memory_db_skips,
        },
        Entry {
            interface: "db",
            name: "sqlite",
            suite: Suite::Db(db_sqlite),
            expected_skips: sqlite_db_skips,
        },
        Entry {
            interface: "db",
            name: "postgres",
            suite: Suite::Db(db_postgres),
            expected_skips: no_skips,
        },
        Entry {
            interface: "db",
            name: "memory+layers",
            suite: Suite::Db(db_memory_layered),
            expected_skips: memory_db_skips,
        },
        Entry {
            interface: "db",
            name: "sqlite+layers",
            suite: Suite::Db(db_sqlite_layered),
            expected_skips: sqlite_db_skips,
        },
        Entry {
            interface: "storage",
            name: "memory",
            suite: Suite::Storage(storage_memory),
            expected_skips: no_skips,
        },
        Entry {
            interface: "storage",
            name: "memory+layers",
            suite: Suite::Storage(storage_memory_layered),
            expected_skips: no_skips,
        },
        Entry {
            interface: "storage",
            name: "fs",
            suite: Suite::Storage(storage_fs),
            expected_skips: no_skips,
        },
        Entry {
            interface: "storage",
            name: "s3",
            suite: Suite::Storage(storage_s3),
            expected_skips: s3_skips,
        },
        Entry {
            interface: "realtime",
            name: "memory",
            suite: Suite::Realtime(realtime_memory),
            expected_skips: no_skips,
        },
        Entry {
            interface: "realtime",
            name: "ws",
            suite: Suite::Realtime(realtime_ws_hub),
            expected_skips: no_skips,
        },
        Entry {
            interface: "realtime",
            name: "ws-client",
            suite: Suite::Realtime(realtime_ws_client),
            expected_skips: no_skips,
        },
        Entry {
            interface: "auth",
            name: "jwt",
            suite: Suite::Auth {
                make: auth_jwt,
                db: "memory",
                over: db_memory,
            },
            expected_skips: no_skips,
        },
        Entry {
            interface: "auth",
            name: "jwt",
            suite: Suite::Auth {
                make: auth_jwt,
                db: "sqlite",
                over: db_sqlite,
            },
            expected_skips: no_skips,
        },
        Entry {
            interface: "auth",
            name: "jwt",
            suite: Suite::Auth {
                make: auth_jwt,
                db: "postgres",
                over: db_postgres,
            },
            expected_skips: no_skips,
        },
        Entry {
            interface: "jobs",
            name: "memory",
            suite: Suite::Jobs(jobs_memory),
            expected_skips: memory_jobs_skips,
        },
        Entry {
            interface: "jobs",
            name: "database/sqlite",
            suite: Suite::Jobs(jobs_db_sqlite),
            expected_skips: no_skips,
        },
        Entry {
            interface: "jobs",
            name: "database/postgres",
            suite: Suite::Jobs(jobs_db_postgres),
            expected_skips: no_skips,
        },
        Entry {
            interface: "jobs",
            name: "postgres",
            suite: Suite::Jobs(jobs_postgres),
            expected_skips: no_skips,
        },
    ]
}

/// The jobs providers, as the runtime registers them.
fn jobs_registry() -> JobsRegistry {
    let mut reg = JobsRegistry::new("jobs");
    truststream_jobs_memory::register(&mut reg);
    truststream_jobs_db::register(&mut reg);
    truststream_jobs_postgres::register(&mut reg);
    reg
}

/// Builds jobs provider `kind` through the registry, the way the runtime
/// does (`db` is the configured database), with `db` as the fixture's
/// database for the transactional-enqueue cases.
async fn jobs_fixture(
    kind: &str,
    settings: serde_json::Value,
    db: Option<Arc<dyn Database>>,
) -> Result<jobs::JobsFixture, String> {
    let j: Arc<dyn Jobs> = jobs_registry()
        .build(kind, settings, db.clone())
        .await
        .map_err(|e| e.to_string())?;
    let fx = jobs::JobsFixture::new(j);
    Ok(match db {
        Some(db) => fx.with_database(db),
        None => fx,
    })
}

fn jobs_memory() -> jobs::JobsFactory {
    factory(|| jobs_fixture("memory", serde_json::json!({}), None))
}

/// jobs-db over a fresh database from `dbs` per case.
fn jobs_db_on(dbs: db::DbFactory) -> jobs::JobsFactory {
    factory(move || {
        let dbs = dbs.clone();
        async move {
            let db = dbs().await?;
            jobs_fixture("database", serde_json::json!({}), Some(db)).await
        }
    })
}

/// jobs-db over a fresh in-memory SQLite database per case.
fn jobs_db_sqlite() -> jobs::JobsFactory {
    jobs_db_on(db_sqlite())
}

/// jobs-db over a fresh PostgreSQL schema per case.
fn jobs_db_postgres() -> jobs::JobsFactory {
    jobs_db_on(db_postgres())
}

/// jobs-postgres on a fresh scratch schema per case, with a db-postgres
/// database on the same schema for the transactional-enqueue cases.
fn jobs_postgres() -> jobs::JobsFactory {
    factory(|| async {
        let config = pg_scratch().config("xtask_jobs");
        let schema = config.schema.clone().ok_or("no scratch schema")?;
        let db = truststream_db_postgres::PgDatabase::open(config)
            .await
            .map_err(|e| e.to_string())?;
        let settings = serde_json::json!({
            "url": truststream_db_postgres::testing::database_url(),
            "schema": schema,
        });
        let fx = jobs_fixture("postgres", settings, None).await?;
        Ok(fx.with_database(Arc::new(db) as Arc<dyn Database>))
    })
}

fn db_memory() -> db::DbFactory {
    factory(|| async { Ok(Arc::new(MemoryDatabase::new()) as Arc<dyn Database>) })
}

/// A fresh private in-memory SQLite database per case.
fn db_sqlite() -> db::DbFactory {
    factory(|| async {
        let db = truststream_db_sqlite::SqliteDatabase::in_memory()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(db) as Arc<dyn Database>)
    })
}

/// db-memory through every database layer (`layers::DB_LAYERS`).
fn db_memory_layered() -> db::DbFactory {
    layers::db(db_memory(), layers::db_layers)
}

/// In-memory db-sqlite through every database layer.
fn db_sqlite_layered() -> db::DbFactory {
    layers::db(db_sqlite(), layers::db_layers)
}

/// Scratch schemas of the PostgreSQL entries (one per case), dropped when
/// the run ends.
static PG_SCRATCH: std::sync::OnceLock<truststream_db_postgres::testing::Scratch> =
    std::sync::OnceLock::new();

fn pg_scratch() -> &'static truststream_db_postgres::testing::Scratch {
    PG_SCRATCH.get_or_init(|| {
        truststream_db_postgres::testing::Scratch::new(
            truststream_db_postgres::testing::database_url(),
        )
    })
}

/// A fresh schema on the PostgreSQL server per case.
fn db_postgres() -> db::DbFactory {
    factory(|| async {
        let db = pg_scratch()
            .database("xtask")
            .await
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(db) as Arc<dyn Database>)
    })
}

/// Why the PostgreSQL entries cannot run (outside CI only: under CI a
/// missing server fails every case).
async fn postgres_unavailable() -> Option<String> {
    if truststream_core::in_ci() {
        return None;
    }
    let url = truststream_db_postgres::testing::database_url();
    truststream_db_postgres::testing::probe(&url).await.err()
}

/// Bucket created in every fresh memory store.
const BUCKET: &str = "conformance";

fn storage_memory() -> storage::StorageFactory {
    factory(|| async {
        let store = Arc::new(MemoryStorage::new());
        store
            .create_bucket(BUCKET)
            .await
            .map_err(|e| e.to_string())?;
        let client = store.clone();
        Ok(
            storage::StorageFixture::new(store as Arc<dyn Storage>, BUCKET).with_url_client(
                move |method, url, body| {
                    let client = client.clone();
                    async move { client.fetch_signed(method, &url, body).await }
                },
            ),
        )
    })
}

/// storage-memory through the generic layers (`layers::STORAGE_LAYERS`).
fn storage_memory_layered() -> storage::StorageFactory {
    layers::storage(storage_memory())
}

/// A fresh root directory per case (removed when the case's store is
/// dropped), with the fixture bucket created through the configuration.
fn storage_fs() -> storage::StorageFactory {
    factory(|| async {
        let dir = Arc::new(tempfile::tempdir().map_err(|e| e.to_string())?);
        let mut cfg = truststream_storage_fs::FsStorageConfig::new(dir.path());
        cfg.buckets = vec![BUCKET.to_string()];
        let store = Arc::new(
            truststream_storage_fs::FsStorage::with_config(cfg)
                .await
                .map_err(|e| e.to_string())?,
        );
        let client = store.clone();
        Ok(
            storage::StorageFixture::new(store as Arc<dyn Storage>, BUCKET).with_url_client(
                move |method, url, body| {
                    // The client holds the directory as long as the fixture lives.
                    let _ = &dir;
                    let client = client.clone();
                    async move { client.fetch_signed(method, &url, body).await }
                },
            ),
        )
    })
}

/// Stops the shared Garage server the S3 tests and entry use, unless
/// `TS_KEEP_GARAGE=1` (a developer iterating on storage-s3 keeps it
/// warm between runs). The next run starts a fresh one in seconds.
pub fn stop_garage() {
    if std::env::var("TS_KEEP_GARAGE").is_ok_and(|v| v == "1") {
        return;
    }
    if truststream_storage_s3::testing::Garage::stop_shared() {
        println!("stopped the shared Garage server (TS_KEEP_GARAGE=1 keeps it)");
    }
}

/// Prefix of the buckets the S3 entry creates (one per case).
const S3_BUCKET_PREFIX: &str = "ts-xtask-";

/// The machine's shared Garage server (started on first use, reused by the
/// storage-s3 tests and this entry, stopped by [`stop_garage`] at the end of
/// `cargo xtask test` or `cargo xtask conformance`; see
/// `truststream_storage_s3::testing`), a fresh bucket per case, presigned
/// URLs fetched with a plain HTTP client.
fn storage_s3() -> storage::StorageFactory {
    use truststream_storage_s3::{testing, S3Storage};
    let shared: Arc<tokio::sync::OnceCell<Arc<S3Storage>>> = Arc::default();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    factory(move || {
        let (shared, counter) = (shared.clone(), counter.clone());
        async move {
            let store = shared
                .get_or_try_init(|| async {
                    let garage = testing::Garage::shared().await?;
                    let store = garage.storage().await.map_err(|e| e.to_string())?;
                    remove_stale_buckets(&store).await;
                    Ok::<_, String>(Arc::new(store))
                })
                .await?
                .clone();
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let bucket = format!("{S3_BUCKET_PREFIX}{}-{n}-{nanos}", std::process::id());
            store
                .create_bucket(&bucket)
                .await
                .map_err(|e| e.to_string())?;
            // capabilities() is exact from here on: Garage 2.5 ignores
            // conditional PUTs, so the cases that need them are skipped.
            store
                .probe_conditional_writes(&bucket)
                .await
                .map_err(|e| e.to_string())?;
            let http = testing::http_client();
            Ok(
                storage::StorageFixture::new(store as Arc<dyn Storage>, bucket).with_url_client(
                    move |method, url, body| {
                        let http = http.clone();
                        async move { testing::fetch_presigned(&http, method, &url, body).await }
                    },
                ),
            )
        }
    })
}

/// Deletes the case buckets of earlier runs (older than an hour, so a run in
/// progress elsewhere keeps its own).
async fn remove_stale_buckets(store: &truststream_storage_s3::S3Storage) {
    use truststream_core_storage::ListOptions;
    let Ok(buckets) = store.list_buckets().await else {
        return;
    };
    let cutoff = chrono_hour_ago();
    for b in buckets {
        let stale = b.name.starts_with(S3_BUCKET_PREFIX)
            && b.created_at.is_some_and(|t| t.timestamp() < cutoff);
        if !stale {
            continue;
        }
        while let Ok(page) = store.list(&b.name, &ListOptions::new()).await {
            if page.objects.is_empty() {
                break;
            }
            for o in page.objects {
                let _ = store.delete(&b.name, &o.key).await;
            }
        }
        let _ = store.delete_bucket(&b.name).await;
    }
}

/// Unix seconds an hour ago.
fn chrono_hour_ago() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64 - 3600)
}

/// Why the S3 entry cannot run here, outside CI (`None`: it can). Under
/// `CI=true` a missing server is never a skip: the cases fail.
fn s3_unavailable() -> Option<String> {
    if truststream_core::in_ci() {
        return None;
    }
    truststream_storage_s3::testing::garage_binary().err()
}

fn realtime_memory() -> realtime::RealtimeFactory {
    factory(|| async {
        // Built the way the runtime builds it: through the registry, wired to
        // a fresh memory database's change feed.
        let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
        let mut reg = RealtimeRegistry::new("realtime");
        truststream_realtime_memory::register(&mut reg);
        let deps = RealtimeDeps {
            db: Some(db.clone()),
            auth: None,
        };
        let rt: Arc<dyn Realtime> = reg
            .build("memory", serde_json::Value::Null, deps)
            .await
            .map_err(|e| e.to_string())?;
        Ok(realtime::RealtimeFixture {
            realtime: rt.clone(),
            peer: rt,
            db: Some(db),
        })
    })
}

/// The WebSocket hub, in-process: built through the registry like the
/// runtime builds it (listening on 127.0.0.1:0), calls go straight to it.
fn realtime_ws_hub() -> realtime::RealtimeFactory {
    factory(|| async {
        let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
        let mut reg = RealtimeRegistry::new("realtime");
        truststream_realtime_ws::register(&mut reg);
        let deps = RealtimeDeps {
            db: Some(db.clone()),
            auth: None,
        };
        let rt: Arc<dyn Realtime> = reg
            .build("ws", serde_json::json!({"listen": "127.0.0.1:0"}), deps)
            .await
            .map_err(|e| e.to_string())?;
        Ok(realtime::RealtimeFixture {
            realtime: rt.clone(),
            peer: rt,
            db: Some(db),
        })
    })
}

/// The WebSocket client mode: one hub on 127.0.0.1:0 (started on first use)
/// and two fresh client connections per case, built through the registry
/// (`url` set).
fn realtime_ws_client() -> realtime::RealtimeFactory {
    use truststream_realtime_ws::{TableRule, WsRealtime, WsRealtimeConfig};
    type Shared = (Arc<WsRealtime>, Arc<dyn Database>);
    let shared: Arc<tokio::sync::OnceCell<Shared>> = Arc::default();
    factory(move || {
        let shared = shared.clone();
        async move {
            let (hub, db) = shared
                .get_or_try_init(|| async {
                    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
                    // The suite's tables (`rt_items_*`), published to the
                    // hub's anonymous clients (it has no auth provider).
                    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
                    config.publish = vec!["rt_items_*".into()];
                    let rule = TableRule {
                        anon: true,
                        ..TableRule::default()
                    };
                    config.tables.insert("rt_items_*".into(), rule);
                    let hub = WsRealtime::start(config, Some(db.clone()), None)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((Arc::new(hub), db))
                })
                .await?
                .clone();
            let url = hub.url().ok_or("the hub has no url")?;
            let mut reg = RealtimeRegistry::new("realtime");
            truststream_realtime_ws::register(&mut reg);
            let mut clients = Vec::new();
            for _ in 0..2 {
                let deps = RealtimeDeps {
                    db: None,
                    auth: None,
                };
                let rt: Arc<dyn Realtime> = reg
                    .build("ws", serde_json::json!({"url": url}), deps)
                    .await
                    .map_err(|e| e.to_string())?;
                clients.push(rt);
            }
            Ok(realtime::RealtimeFixture {
                realtime: clients[0].clone(),
                peer: clients[1].clone(),
                db: Some(db),
            })
        }
    })
}

/// The refresh-token reuse interval the auth fixtures configure (the suite
/// waits it out once per provider).
const AUTH_REUSE_INTERVAL_MS: u64 = 1_000;

/// auth-jwt built through its registry as the runtime builds it, over a
/// fresh database from `over`, configured as the auth suite requires.
fn auth_jwt(over: db::DbFactory) -> auth::AuthFactory {
    factory(move || {
        let over = over.clone();
        async move {
            let db = over().await?;
            let mut reg = truststream_core_auth::AuthRegistry::new("auth");
            truststream_auth_jwt::register(&mut reg);
            let settings = serde_json::json!({
                "jwt_secret": "conformance secret, at least 32 bytes long",
                // The cheapest argon2 cost: the suite tests behaviour, not cost.
                "argon2": { "memory_kib": 8, "iterations": 1, "parallelism": 1 },
                "refresh_reuse_interval_ms": AUTH_REUSE_INTERVAL_MS,
                "default_roles": [auth::MEMBER_ROLE],
                "roles": { auth::MEMBER_ROLE: auth::MEMBER_PERMISSIONS },
            });
            let deps = truststream_core_auth::AuthDeps { db: Some(db) };
            let auth = reg
                .build("jwt", settings, deps)
                .await
                .map_err(|e| e.to_string())?;
            Ok(auth::AuthFixture {
                auth,
                refresh_reuse_interval: std::time::Duration::from_millis(AUTH_REUSE_INTERVAL_MS),
            })
        }
    })
}

/// Every storage case (or those matching `only`) reported as skipped.
fn skipped_storage(provider: &str, only: Option<&str>, why: &str) -> Report {
    let mut report = Report::default();
    for c in storage::cases() {
        if only.is_some_and(|o| !c.name.contains(o)) {
            continue;
        }
        report.cases.push(truststream_conformance::CaseReport {
            interface: "storage",
            provider: provider.to_string(),
            case: c.name,
            outcome: truststream_conformance::CaseOutcome::Skipped(why.to_string()),
            elapsed: std::time::Duration::ZERO,
        });
    }
    report
}

/// Every case of `e`'s suite reported as skipped with `why`.
fn skipped(e: &Entry, only: Option<&str>, why: &str) -> Report {
    let (interface, provider, names): (&'static str, String, Vec<&'static str>) = match &e.suite {
        Suite::Db(_) => (
            "database",
            e.name.to_string(),
            db::cases().iter().map(|c| c.name).collect(),
        ),
        Suite::Auth { db, .. } => (
            "auth",
            format!("{}/{db}", e.name),
            auth::cases().iter().map(|c| c.name).collect(),
        ),
        Suite::Storage(_) => (
            "storage",
            e.name.to_string(),
            storage::cases().iter().map(|c| c.name).collect(),
        ),
        Suite::Realtime(_) => (
            "realtime",
            e.name.to_string(),
            realtime::cases().iter().map(|c| c.name).collect(),
        ),
        Suite::Jobs(_) => (
            "jobs",
            e.name.to_string(),
            jobs::cases().iter().map(|c| c.name).collect(),
        ),
    };
    let mut report = Report::default();
    for name in names {
        if only.is_some_and(|o| !name.contains(o)) {
            continue;
        }
        report.cases.push(truststream_conformance::CaseReport {
            interface,
            provider: provider.clone(),
            case: name,
            outcome: truststream_conformance::CaseOutcome::Skipped(why.to_string()),
            elapsed: std::time::Duration::ZERO,
        });
    }
    report
}

/// What to run.
#[derive(Debug, Default)]
pub struct Selection {
    /// `--provider` names (empty: all).
    pub providers: Vec<String>,
    /// `--interface` names (empty: all).
    pub interfaces: Vec<String>,
    /// `--case` substring.
    pub case: Option<String>,
}

impl Selection {
    /// Parses `--provider NAME`, `--interface NAME`, `--case SUBSTR` (each
    /// also as `--flag=value`).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut s = Selection::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag {
                "--provider" | "-p" => s.providers.push(value()?),
                "--interface" | "-i" => s.interfaces.push(normalize_interface(&value()?)),
                "--case" | "-c" => s.case = Some(value()?),
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; usage: cargo xtask conformance \
                         [--provider NAME ...] [--interface db|storage|realtime|auth|jobs] [--case SUBSTR]"
                    ))
                }
            }
        }
        Ok(s)
    }
}

fn normalize_interface(s: &str) -> String {
    match s {
        "database" => "db".to_string(),
        other => other.to_string(),
    }
}

/// A case whose skip does not match its provider's pinned list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipProblem {
    /// Skipped, and not in the provider's expected skip list: fails the run
    /// like a failure does.
    Unexpected {
        /// `database`, `storage`, ...
        interface: &'static str,
        /// Provider label (`memory`, `jwt/sqlite`).
        provider: String,
        /// Case name.
        case: &'static str,
        /// Why it was skipped.
        reason: String,
    },
    /// In the expected skip list, but it ran: the list is stale (the
    /// provider gained what the case needs); fails the run until the list
    /// is updated, so the pins stay exact.
    NoLongerSkipped {
        /// `database`, `storage`, ...
        interface: &'static str,
        /// Provider label.
        provider: String,
        /// Case name.
        case: &'static str,
    },
}

impl std::fmt::Display for SkipProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipProblem::Unexpected {
                interface,
                provider,
                case,
                reason,
            } => write!(
                f,
                "UNEXPECTED SKIP {interface}/{provider}/{case}: {reason} \
                 (not in the provider's expected skip list in xtask/src/conformance.rs)"
            ),
            SkipProblem::NoLongerSkipped {
                interface,
                provider,
                case,
            } => write!(
                f,
                "NO LONGER SKIPPED {interface}/{provider}/{case}: it ran, but the provider's \
                 expected skip list in xtask/src/conformance.rs still names it; remove it there"
            ),
        }
    }
}

/// Compares the skips of one provider's report with its pinned list.
/// Cases outside the report (not selected by `--case`) are not compared.
pub fn skip_problems(report: &Report, expected: &[&'static str]) -> Vec<SkipProblem> {
    let mut problems = Vec::new();
    for c in &report.cases {
        let listed = expected.contains(&c.case);
        match &c.outcome {
            CaseOutcome::Skipped(reason) if !listed => problems.push(SkipProblem::Unexpected {
                interface: c.interface,
                provider: c.provider.clone(),
                case: c.case,
                reason: reason.clone(),
            }),
            CaseOutcome::Passed | CaseOutcome::Failed(_) if listed => {
                problems.push(SkipProblem::NoLongerSkipped {
                    interface: c.interface,
                    provider: c.provider.clone(),
                    case: c.case,
                })
            }
            _ => {}
        }
    }
    problems
}

/// What a conformance run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every case of every selected provider.
    pub report: Report,
    /// Skips that do not match the pinned lists.
    pub skip_problems: Vec<SkipProblem>,
}

impl Outcome {
    /// No failure and every skip as pinned.
    pub fn is_ok(&self) -> bool {
        self.report.failed() == 0 && self.skip_problems.is_empty()
    }

    /// The table, the skip problems, and the summary line (returned).
    pub fn print(&self) -> String {
        self.report.print_table();
        for p in &self.skip_problems {
            println!("{p}");
        }
        let line = self.summary();
        println!("{line}");
        line
    }

    /// `N passed, N failed, N skipped` plus the skip problems, if any.
    pub fn summary(&self) -> String {
        let mut line = self.report.summary();
        if !self.skip_problems.is_empty() {
            let unexpected = self
                .skip_problems
                .iter()
                .filter(|p| matches!(p, SkipProblem::Unexpected { .. }))
                .count();
            let stale = self.skip_problems.len() - unexpected;
            line.push_str(&format!(
                " ({unexpected} unexpected skip(s), {stale} expected skip(s) that ran)"
            ));
        }
        line
    }
}

/// Runs the selected suites and returns the merged report with the skips
/// that do not match the pinned lists, or an error for a selection that
/// names nothing runnable. A provider whose server is missing outside CI
/// (PostgreSQL, Garage) has every case skipped with the reason; that is not
/// compared with its list (under CI the server is required).
pub fn run(selection: &Selection) -> Result<Outcome, String> {
    let all = providers();
    for i in &selection.interfaces {
        if !INTERFACES.contains(&i.as_str()) {
            return Err(format!(
                "unknown interface {i:?}; known interfaces: {}",
                INTERFACES.join(", ")
            ));
        }
    }
    for p in &selection.providers {
        if !all.iter().any(|e| e.name == p || e.long_name() == *p) {
            let mut known: Vec<String> = Vec::new();
            for name in all
                .iter()
                .map(|e| e.name.to_string())
                .chain(all.iter().map(Entry::long_name))
            {
                if !known.contains(&name) {
                    known.push(name);
                }
            }
            return Err(format!(
                "unknown provider {p:?}; known providers: {}",
                known.join(", ")
            ));
        }
    }
    let chosen: Vec<&Entry> = all
        .iter()
        .filter(|e| {
            selection.interfaces.is_empty() || selection.interfaces.iter().any(|i| i == e.interface)
        })
        .filter(|e| {
            selection.providers.is_empty()
                || selection
                    .providers
                    .iter()
                    .any(|p| e.name == p || e.long_name() == *p)
        })
        .collect();
    if chosen.is_empty() {
        return Err(format!(
            "no provider matches --provider {:?} with --interface {:?}",
            selection.providers, selection.interfaces
        ));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let only = selection.case.as_deref();
    let outcome = rt.block_on(async {
        let mut report = Report::default();
        let mut skip_problems = Vec::new();
        for e in &chosen {
            if e.interface == "storage" && e.name == "s3" {
                if let Some(why) = s3_unavailable() {
                    println!("storage s3: every case skipped: {why}");
                    report.merge(skipped_storage(e.name, only, &why));
                    continue;
                }
            }
            let uses_postgres = e.name == "postgres"
                || e.name.ends_with("/postgres")
                || matches!(&e.suite, Suite::Auth { db: "postgres", .. });
            if uses_postgres {
                if let Some(why) = postgres_unavailable().await {
                    println!(
                        "{} {}: every case skipped: {why}",
                        e.interface,
                        e.long_name()
                    );
                    report.merge(skipped(e, only, &why));
                    continue;
                }
            }
            let r = match &e.suite {
                Suite::Db(f) => db::run(e.name, f(), only).await,
                Suite::Storage(f) => storage::run(e.name, f(), only).await,
                Suite::Realtime(f) => realtime::run(e.name, f(), only).await,
                Suite::Jobs(f) => jobs::run(e.name, f(), only).await,
                Suite::Auth { make, db, over } => {
                    auth::run(&format!("{}/{db}", e.name), make(over()), only).await
                }
            };
            skip_problems.extend(self::skip_problems(&r, &(e.expected_skips)()));
            report.merge(r);
        }
        if let Some(s) = PG_SCRATCH.get() {
            if let Err(e) = s.cleanup().await {
                println!("could not drop the PostgreSQL scratch schemas: {e}");
            }
        }
        Outcome {
            report,
            skip_problems,
        }
    });
    if outcome.report.cases.is_empty() {
        return Err(format!(
            "no case name contains {:?} in the selected suites",
            selection.case.as_deref().unwrap_or("")
        ));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags_in_both_forms() {
        let s = Selection::parse(&args(&[
            "--provider",
            "memory",
            "--interface=database",
            "--case",
            "crud.",
        ]))
        .unwrap();
        assert_eq!(s.providers, ["memory"]);
        assert_eq!(s.interfaces, ["db"]);
        assert_eq!(s.case.as_deref(), Some("crud."));
        assert!(Selection::parse(&args(&["--case"])).is_err());
        assert!(Selection::parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = run(&Selection {
            providers: vec!["oracle".into()],
            ..Selection::default()
        })
        .unwrap_err();
        let known: Vec<&str> = e
            .split_once("known providers: ")
            .map(|(_, list)| list.split(", ").collect())
            .unwrap_or_default();
        for name in [
            "memory",
            "sqlite",
            "fs",
            "s3",
            "jwt",
            "db-memory",
            "db-sqlite",
            "auth-jwt",
            "storage-s3",
        ] {
            assert!(known.contains(&name), "{name} missing from: {e}");
        }
        let e = run(&Selection {
            interfaces: vec!["queue".into()],
            ..Selection::default()
        })
        .unwrap_err();
        assert!(
            e.contains("known interfaces: db, storage, realtime, auth"),
            "{e}"
        );
    }

    #[test]
    fn auth_runs_jwt_over_each_database() {
        let outcome = run(&Selection {
            interfaces: vec!["auth".into()],
            case: Some("refresh.rotates".into()),
            ..Selection::default()
        })
        .unwrap();
        let r = &outcome.report;
        assert_eq!(r.failed(), 0, "{}", r.summary());
        let providers: Vec<&str> = r.cases.iter().map(|c| c.provider.as_str()).collect();
        // jwt over postgres runs when a server answers (always under CI).
        let with_pg = ["jwt/memory", "jwt/sqlite", "jwt/postgres"];
        if truststream_core::in_ci() {
            assert_eq!(providers, with_pg);
        } else {
            assert!(
                providers == with_pg || providers == with_pg[..2],
                "{providers:?}"
            );
        }
        assert!(r.cases.iter().all(|c| c.interface == "auth"));
    }

    #[test]
    fn selected_cases_run_and_an_empty_selection_is_an_error() {
        let outcome = run(&Selection {
            providers: vec!["db-memory".into()],
            case: Some("crud.".into()),
            ..Selection::default()
        })
        .unwrap();
        assert!(outcome.is_ok(), "{}", outcome.summary());
        let r = &outcome.report;
        assert!(r.passed() > 0, "{}", r.summary());
        assert_eq!(r.failed(), 0, "{}", r.summary());
        assert!(r.cases.iter().all(|c| c.interface == "database"));
        let e = run(&Selection {
            case: Some("no-such-case".into()),
            ..Selection::default()
        })
        .unwrap_err();
        assert!(e.contains("no case name contains"), "{e}");
    }

    fn report(outcomes: &[(&'static str, CaseOutcome)]) -> Report {
        let mut r = Report::default();
        for (case, outcome) in outcomes {
            r.cases.push(truststream_conformance::CaseReport {
                interface: "database",
                provider: "p".into(),
                case,
                outcome: outcome.clone(),
                elapsed: std::time::Duration::ZERO,
            });
        }
        r
    }

    #[test]
    fn an_unexpected_skip_and_a_stale_pin_are_problems() {
        let skipped = CaseOutcome::Skipped("provider lacks capability joins".into());
        let r = report(&[
            ("a", CaseOutcome::Passed),
            ("b", skipped.clone()),
            ("c", skipped.clone()),
            ("d", CaseOutcome::Passed),
        ]);
        assert_eq!(skip_problems(&r, &["b", "c"]), []);
        let problems = skip_problems(&r, &["b", "d", "not-selected"]);
        assert_eq!(
            problems,
            [
                SkipProblem::Unexpected {
                    interface: "database",
                    provider: "p".into(),
                    case: "c",
                    reason: "provider lacks capability joins".into(),
                },
                SkipProblem::NoLongerSkipped {
                    interface: "database",
                    provider: "p".into(),
                    case: "d",
                },
            ]
        );
        let outcome = Outcome {
            report: r,
            skip_problems: problems,
        };
        assert!(!outcome.is_ok(), "a skip problem fails the run");
        assert!(
            outcome
                .summary()
                .ends_with("(1 unexpected skip(s), 1 expected skip(s) that ran)"),
            "{}",
            outcome.summary()
        );
    }

    /// The pinned lists of the in-process providers are exact.
    #[test]
    fn in_process_providers_skip_exactly_their_pinned_cases() {
        let outcome = run(&Selection {
            providers: vec!["memory".into(), "sqlite".into(), "fs".into()],
            ..Selection::default()
        })
        .unwrap();
        assert!(outcome.is_ok(), "{:?}", outcome.skip_problems);
        // In entry order: db-memory, db-sqlite, then jobs-memory (the jobs
        // entries come last).
        let mut expected = memory_db_skips();
        expected.extend(sqlite_db_skips());
        expected.extend(memory_jobs_skips());
        assert_eq!(
            outcome.report.skipped_cases(),
            expected,
            "{}",
            outcome.summary()
        );
    }
}
