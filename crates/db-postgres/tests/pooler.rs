#![allow(clippy::unwrap_used)] // test helpers, not library code
//! The provider through a transaction-mode pooler (`pooler = "transaction"`):
//! a private pgbouncer (`pool_mode = transaction`, few server connections)
//! in front of the server at `DATABASE_URL` (default 127.0.0.1:5432,
//! database `test`), scratch schemas dropped afterwards.
//!
//! - the whole database conformance suite passes through it;
//! - 20 concurrent tasks over 4 server connections end in the exact
//!   expected state;
//! - the regression the mode exists for: with the mode off (sqlx's named,
//!   cached statements) the same pgbouncer answers "prepared statement ...
//!   does not exist / already exists"; with it on, never;
//! - pgbouncer killed (`SIGKILL`) in the middle of a transaction: the call
//!   fails with `Unavailable`, nothing of it is applied, and the provider
//!   works again once pgbouncer is back;
//! - row-level security through `scoped` handles: user A never reads or
//!   changes user B's rows, and no role or claim outlives its transaction
//!   on the shared server connections;
//! - a provider on a direct connection to the same schema feeds the
//!   changes written through the pooler;
//! - tables made with plain SQL (migrations) are described from the
//!   catalog and work through the provider, directly and through the
//!   pooler; by-id calls on a table without a primary key are
//!   `InvalidInput`.
//!
//! Under `CI=true` a missing PostgreSQL or pgbouncer fails the tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection as _;
use truststream_conformance::{db, factory};
use truststream_core::Secret;
use truststream_core_db::{
    col, ColumnDef, ColumnType, Database, DbResult, ErrorKind, Operation, Params, Query,
    RequestScope, Row, TableSchema,
};
use truststream_db_postgres::testing::{self, PgBouncer, PrivateCluster, Scratch};
use truststream_db_postgres::{PgConfig, PgDatabase, Pooler};

fn row(v: Value) -> Row {
    v.as_object().expect("an object").clone()
}

fn params(v: Value) -> Params {
    v.as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The shared server and a pgbouncer with `pool_size` server connections
/// in front of it; `None` when either is missing outside CI.
async fn bouncer(pool_size: u32) -> Option<(String, PgBouncer)> {
    let url = testing::server().await?;
    let target = url.clone();
    let b = tokio::task::spawn_blocking(move || PgBouncer::start(&target, pool_size))
        .await
        .expect("start pgbouncer")?;
    Some((url, b))
}

/// A scratch-schema configuration reaching the server through `b`.
fn pooled(scratch: &Scratch, b: &PgBouncer, tag: &str) -> PgConfig {
    let mut c = scratch.config(tag).with_pooler(Pooler::Transaction);
    c.url = Secret::new(b.url());
    c
}

/// The change-feed cases: skipped because a transaction-mode pooler
/// cannot carry LISTEN (capability `change_feed` is false, and
/// `capability.change_feed` checks that subscribing is `Unsupported`).
const SKIPPED_WITHOUT_FEED: &[&str] = &[
    "changes.batch_and_transaction",
    "changes.insert_update_delete",
    "changes.nothing_on_rollback",
    "changes.table_filter",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_database_suite_passes_through_pgbouncer() {
    let Some((url, b)) = bouncer(4).await else {
        return;
    };
    let scratch = Arc::new(Scratch::new(url));
    let b = Arc::new(b);
    let (s, bb) = (scratch.clone(), b.clone());
    let f = factory(move || {
        let (s, bb) = (s.clone(), bb.clone());
        async move {
            let db = PgDatabase::open(pooled(&s, &bb, "pool"))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(db) as Arc<dyn Database>)
        }
    });
    let report = db::run("postgres via pgbouncer", f, None).await;
    report.print_table();
    scratch.cleanup().await.expect("drop scratch schemas");
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    let mut skipped = report.skipped_cases();
    skipped.sort_unstable();
    let mut expected = SKIPPED_WITHOUT_FEED.to_vec();
    expected.sort_unstable();
    assert_eq!(skipped, expected, "only the change-feed cases are skipped");
    assert_eq!(report.passed() + expected.len(), db::cases().len());
    let log = b.log();
    assert!(
        !log.contains("prepared statement"),
        "pgbouncer saw prepared-statement errors:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_tasks_share_four_server_connections_exactly() {
    let Some((url, b)) = bouncer(4).await else {
        return;
    };
    let scratch = Scratch::new(url);
    let mut cfg = pooled(&scratch, &b, "conc");
    cfg.max_connections = 12;
    let db = Arc::new(PgDatabase::open(cfg).await.expect("open through pgbouncer"));
    assert!(!db.capabilities().change_feed);
    db.raw_query(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, owner INT NOT NULL, n INT NOT NULL, \
         note TEXT)",
        &Params::new(),
    )
    .await
    .expect("create with raw SQL");
    db.raw_query(
        "CREATE TABLE counter (id INT PRIMARY KEY, hits BIGINT NOT NULL)",
        &Params::new(),
    )
    .await
    .unwrap();
    db.raw_query("INSERT INTO counter VALUES (1, 0)", &Params::new())
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for t in 0..20i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..10i64 {
                let id = t * 100 + j;
                db.create("items", row(json!({"id": id, "owner": t, "n": 0})))
                    .await?;
                let got = db.get("items", &json!(id)).await?.expect("just created");
                assert_eq!(got["owner"], json!(t));
                db.update(
                    "items",
                    &json!(id),
                    row(json!({"n": j, "note": format!("t{t}")})),
                )
                .await?;
                db.raw_query(
                    "UPDATE counter SET hits = hits + :by WHERE id = :id",
                    &params(json!({"by": 1, "id": 1})),
                )
                .await?;
                if j % 3 == 0 {
                    assert!(db.delete("items", &json!(id)).await?);
                }
            }
            // A multi-operation transaction: two more rows, one changed.
            db.transaction(vec![
                Operation::Create {
                    table: "items".into(),
                    data: row(json!({"id": t * 100 + 50, "owner": t, "n": 100})),
                },
                Operation::Create {
                    table: "items".into(),
                    data: row(json!({"id": t * 100 + 51, "owner": t, "n": 0})),
                },
                Operation::Update {
                    table: "items".into(),
                    id: json!(t * 100 + 51),
                    data: row(json!({"n": 1})),
                },
            ])
            .await?;
            let mine = db
                .read("items", &Query::new().filter(col("owner").eq(t)))
                .await?;
            assert_eq!(mine.len(), 8, "task {t}: 6 left of 10, and 2");
            DbResult::Ok(())
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("no error through the pooler");
    }
    let all = db.read("items", &Query::new()).await.unwrap();
    assert_eq!(all.len(), 20 * 8);
    let mut per_owner: BTreeMap<i64, i64> = BTreeMap::new();
    for r in &all {
        *per_owner.entry(r["owner"].as_i64().unwrap()).or_default() += r["n"].as_i64().unwrap();
    }
    // n = j for j in 1,2,4,5,7,8 (27), plus 100 and 1.
    assert_eq!(per_owner.len(), 20);
    assert!(per_owner.values().all(|s| *s == 27 + 101), "{per_owner:?}");
    let hits = db
        .raw_query(
            "SELECT hits FROM counter WHERE id = :id",
            &params(json!({"id": 1})),
        )
        .await
        .unwrap();
    assert_eq!(hits[0]["hits"], json!(200));
    drop(db);
    scratch.cleanup().await.unwrap();
    let log = b.log();
    assert!(!log.contains("prepared statement"), "{log}");
}

/// Runs `iterations` rounds of reads and raw queries from `tasks` tasks and
/// returns every error message.
async fn workload(db: Arc<PgDatabase>, tasks: usize, iterations: usize) -> Vec<String> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for i in 0..iterations {
                let id = ((t * iterations + i) % 10) as i64;
                if let Err(e) = db.get("items", &json!(id)).await {
                    errors.push(e.to_string());
                }
                let r = db
                    .raw_query(
                        "SELECT v FROM items WHERE id = :id",
                        &params(json!({"id": id})),
                    )
                    .await;
                if let Err(e) = r {
                    errors.push(e.to_string());
                }
                let r = db
                    .update("items", &json!(id), row(json!({"v": format!("t{t}")})))
                    .await;
                if let Err(e) = r {
                    errors.push(e.to_string());
                }
            }
            errors
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("task"));
    }
    all
}

fn is_prepared_statement_error(m: &str) -> bool {
    m.contains("prepared statement")
        && (m.contains("does not exist") || m.contains("already exists"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn named_statements_break_through_pgbouncer_and_pooler_mode_avoids_them() {
    // A cluster of its own: the mode-off provider keeps its tables in
    // `public` (pgbouncer drops the startup `options` that set the schema).
    let Some(cluster) = tokio::task::spawn_blocking(PrivateCluster::create)
        .await
        .unwrap()
    else {
        return;
    };
    let target = cluster.url();
    let Some(b) = tokio::task::spawn_blocking(move || PgBouncer::start(&target, 2))
        .await
        .unwrap()
    else {
        return;
    };
    {
        let mut c = sqlx::PgConnection::connect(&cluster.url()).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, v TEXT); \
             INSERT INTO items SELECT g, 'x' FROM generate_series(0, 9) g",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }

    // Mode off: sqlx's statement cache, named statements. The provider's
    // own setup statements collide already (each new client connection
    // names its first statement `sqlx_s_1`, and pgbouncer hands it a
    // server connection where another client left one of that name).
    let mut off = PgConfig::new(b.url());
    off.max_connections = 8;
    let mut errors = Vec::new();
    for _ in 0..5 {
        match PgDatabase::open(off.clone()).await {
            Ok(db) => errors.extend(workload(Arc::new(db), 8, 40).await),
            Err(e) => errors.push(e.to_string()),
        }
    }
    // The same statements from a plain sqlx pool with its statement cache
    // (what the provider does with the mode off), from 8 tasks.
    let plain = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&b.url())
        .await
        .unwrap();
    let mut handles = Vec::new();
    for t in 0..8i64 {
        let plain = plain.clone();
        handles.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for i in 0..40i64 {
                let id = (t * 40 + i) % 10;
                let r = sqlx::query("SELECT v FROM items WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&plain)
                    .await;
                if let Err(e) = r {
                    errors.push(e.to_string());
                }
                let r = sqlx::query("UPDATE items SET v = $1 WHERE id = $2 RETURNING *")
                    .bind(format!("p{t}"))
                    .bind(id)
                    .fetch_optional(&plain)
                    .await;
                if let Err(e) = r {
                    errors.push(e.to_string());
                }
            }
            errors
        }));
    }
    for h in handles {
        errors.extend(h.await.unwrap());
    }
    plain.close().await;
    let broken = errors
        .iter()
        .filter(|m| is_prepared_statement_error(m))
        .count();
    assert!(
        broken > 0,
        "named statements through a transaction-mode pgbouncer must fail; errors: {errors:?}"
    );
    eprintln!(
        "mode off: {broken} prepared-statement errors of {} errors",
        errors.len()
    );

    // Mode on: the same workload, the same pgbouncer (its server
    // connections still holding the named statements of the run above),
    // no error at all.
    let mut on = PgConfig::new(b.url()).with_pooler(Pooler::Transaction);
    on.max_connections = 8;
    let db_on = Arc::new(PgDatabase::open(on).await.expect("open in pooler mode"));
    let errors = workload(db_on.clone(), 8, 40).await;
    assert_eq!(errors, Vec::<String>::new());
    let rows = db_on.read("items", &Query::new()).await.unwrap();
    assert_eq!(rows.len(), 10);
    assert!(rows
        .iter()
        .all(|r| r["v"].as_str().unwrap().starts_with('t')));
    drop(db_on);
    drop(b);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_killed_mid_transaction_applies_nothing() {
    let Some((url, b)) = bouncer(4).await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let mut cfg = pooled(&scratch, &b, "kill");
    cfg.acquire_timeout_ms = 2_000;
    let schema = cfg.schema.clone().unwrap();
    let db = Arc::new(PgDatabase::open(cfg).await.unwrap());
    db.raw_query(
        "CREATE TABLE pooler_kill_ledger (id BIGINT PRIMARY KEY, amount BIGINT NOT NULL)",
        &Params::new(),
    )
    .await
    .unwrap();
    // One transaction of many statements: long enough to be killed in.
    let ops: Vec<Operation> = (0..20_000i64)
        .map(|i| Operation::Create {
            table: "pooler_kill_ledger".into(),
            data: row(json!({"id": i, "amount": 1})),
        })
        .collect();
    let running = {
        let db = db.clone();
        tokio::spawn(async move { db.transaction(ops).await })
    };
    // Wait until the transaction has written (uncommitted) rows.
    let mut direct = sqlx::PgConnection::connect(&url).await.unwrap();
    let started = tokio::time::Instant::now();
    loop {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
             AND query LIKE '%pooler_kill_ledger%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut direct)
        .await
        .unwrap();
        if n > 0 && started.elapsed() > Duration::from_millis(300) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the transaction never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !running.is_finished(),
        "the transaction ended before the kill"
    );
    let bb = Arc::new(b);
    let k = bb.clone();
    tokio::task::spawn_blocking(move || k.kill()).await.unwrap();
    let err = running
        .await
        .unwrap()
        .expect_err("a transaction cut by the pooler's death fails");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());

    let k = bb.clone();
    tokio::task::spawn_blocking(move || k.restart())
        .await
        .unwrap();
    // Nothing of it was applied (read directly, past the pooler) ...
    let q = format!("SELECT count(*) FROM \"{schema}\".pooler_kill_ledger");
    let mut rows = -1i64;
    for _ in 0..50 {
        let (n,): (i64,) = sqlx::query_as(&q).fetch_one(&mut direct).await.unwrap();
        rows = n;
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows, 0, "half of a transaction was applied");
    // ... and the provider works again through the new pgbouncer.
    let mut ok = false;
    for _ in 0..20 {
        if db
            .create("pooler_kill_ledger", row(json!({"id": 1, "amount": 5})))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the provider recovers after pgbouncer's restart");
    assert_eq!(
        db.get("pooler_kill_ledger", &json!(1))
            .await
            .unwrap()
            .unwrap()["amount"],
        json!(5)
    );
    drop(db);
    scratch.cleanup().await.unwrap();
}

/// A table made with plain SQL (as by migrations): described from the
/// catalog, then created, read, updated and deleted through `db`.
async fn migration_tables_work(db: &PgDatabase) {
    db.raw_query(
        "CREATE TABLE accounts (
             id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
             email VARCHAR(200) NOT NULL UNIQUE,
             age INT,
             score DOUBLE PRECISION DEFAULT 0,
             active BOOLEAN NOT NULL DEFAULT true,
             tags JSONB,
             token UUID NOT NULL DEFAULT gen_random_uuid(),
             created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
             balance NUMERIC(12, 2)
         )",
        &Params::new(),
    )
    .await
    .unwrap();
    let s = db
        .describe_table("accounts")
        .await
        .unwrap()
        .expect("described from the catalog");
    let ty = |c: &str| s.find(c).unwrap().ty;
    assert_eq!(s.primary_key().unwrap().name, "id");
    assert_eq!(ty("id"), ColumnType::Integer);
    assert_eq!(ty("email"), ColumnType::Text);
    assert!(s.find("email").unwrap().unique && !s.find("email").unwrap().nullable);
    assert_eq!(ty("age"), ColumnType::Integer);
    assert_eq!(ty("score"), ColumnType::Float);
    assert_eq!(ty("active"), ColumnType::Boolean);
    assert_eq!(ty("tags"), ColumnType::Json);
    assert_eq!(ty("token"), ColumnType::Uuid);
    assert_eq!(ty("created_at"), ColumnType::Timestamp);
    assert_eq!(ty("balance"), ColumnType::Numeric);

    let a = db
        .create(
            "accounts",
            row(json!({"email": "a@x", "age": 30, "tags": {"k": [1]}, "balance": 12.5})),
        )
        .await
        .unwrap();
    let id = a["id"].clone();
    assert!(id.as_i64().is_some(), "the identity assigned an id: {a:?}");
    assert_eq!(a["active"], json!(true));
    assert_eq!(a["score"], json!(0.0));
    assert!(a["token"].as_str().is_some_and(|t| t.len() == 36));
    let b = db
        .create("accounts", row(json!({"email": "b@x"})))
        .await
        .unwrap();
    assert_ne!(b["id"], id);
    let got = db.get("accounts", &id).await.unwrap().unwrap();
    assert_eq!(got["email"], json!("a@x"));
    assert_eq!(got["tags"], json!({"k": [1]}));
    let up = db
        .update("accounts", &id, row(json!({"age": 31, "active": false})))
        .await
        .unwrap();
    assert_eq!(
        (up["age"].clone(), up["active"].clone()),
        (json!(31), json!(false))
    );
    let dup = db.create("accounts", row(json!({"email": "a@x"}))).await;
    assert_eq!(dup.unwrap_err().kind(), ErrorKind::Conflict);
    let missing = db.create("accounts", row(json!({"age": 1}))).await;
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::InvalidInput);
    let young = db
        .read("accounts", &Query::new().filter(col("active").eq(false)))
        .await
        .unwrap();
    assert_eq!(young.len(), 1);
    assert!(db.delete("accounts", &id).await.unwrap());
    assert!(db.get("accounts", &id).await.unwrap().is_none());
    assert_eq!(db.read("accounts", &Query::new()).await.unwrap().len(), 1);

    // Without a primary key: reads, inserts and filtered writes work;
    // calls by id are refused clearly.
    db.raw_query(
        "CREATE TABLE events (kind TEXT NOT NULL, n INT)",
        &Params::new(),
    )
    .await
    .unwrap();
    let s = db.describe_table("events").await.unwrap().unwrap();
    assert!(s.primary_key().is_none());
    db.create("events", row(json!({"kind": "a", "n": 1})))
        .await
        .unwrap();
    db.create_many(
        "events",
        vec![row(json!({"kind": "b", "n": 2})), row(json!({"kind": "b"}))],
    )
    .await
    .unwrap();
    assert_eq!(db.read("events", &Query::new()).await.unwrap().len(), 3);
    for e in [
        db.get("events", &json!(1)).await.map(drop),
        db.update("events", &json!(1), row(json!({"n": 5})))
            .await
            .map(drop),
        db.delete("events", &json!(1)).await.map(drop),
    ] {
        let e = e.expect_err("by id without a primary key");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.message().contains("primary key"), "{e}");
    }
    let n = db
        .update_many("events", &col("kind").eq("b"), row(json!({"n": 9})))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        db.delete_many("events", &col("kind").eq("a"))
            .await
            .unwrap(),
        1
    );
    // Foreign keys made by migrations are described from the catalog (by
    // constraint name, columns in key order).
    for sql in [
        "CREATE TABLE accounts_int (id BIGSERIAL PRIMARY KEY)",
        "CREATE TABLE mig_pairs (a INT, b INT, PRIMARY KEY (a, b))",
        "CREATE TABLE mig_posts (id BIGSERIAL PRIMARY KEY, \
           author BIGINT REFERENCES accounts_int (id), \
           editor BIGINT, ref_a INT, ref_b INT, \
           CONSTRAINT mig_posts_editor_is_user FOREIGN KEY (editor) REFERENCES accounts_int (id), \
           CONSTRAINT mig_pair FOREIGN KEY (ref_b, ref_a) REFERENCES mig_pairs (b, a))",
    ] {
        db.raw_query(sql, &Params::new()).await.unwrap();
    }
    let posts = db.describe_table("mig_posts").await.unwrap().unwrap();
    let fks: Vec<_> = posts
        .foreign_keys
        .iter()
        .map(|fk| {
            (
                fk.name.clone().unwrap_or_default(),
                fk.columns.join(","),
                fk.referenced_table.clone(),
                fk.referenced_columns.join(","),
            )
        })
        .collect();
    let s = |v: &str| v.to_string();
    assert_eq!(
        fks,
        vec![
            (s("mig_pair"), s("ref_b,ref_a"), s("mig_pairs"), s("b,a")),
            (
                s("mig_posts_author_fkey"),
                s("author"),
                s("accounts_int"),
                s("id")
            ),
            (
                s("mig_posts_editor_is_user"),
                s("editor"),
                s("accounts_int"),
                s("id")
            ),
        ]
    );
    assert!(db
        .describe_table("accounts_int")
        .await
        .unwrap()
        .unwrap()
        .foreign_keys
        .is_empty());
    // A name that is neither registered nor in the catalog is NotFound.
    assert!(db.describe_table("nothing_here").await.unwrap().is_none());
    let e = db.get("nothing_here", &json!(1)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // The provider's own tables are never described.
    assert!(db
        .describe_table("_truststream_schema")
        .await
        .map(|s| s.is_none())
        .unwrap_or(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_tables_work_directly() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let db = scratch.database("mig").await.unwrap();
    migration_tables_work(&db).await;
    drop(db);
    scratch.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_tables_work_through_pgbouncer() {
    let Some((url, b)) = bouncer(2).await else {
        return;
    };
    let scratch = Scratch::new(url);
    let db = PgDatabase::open(pooled(&scratch, &b, "migp"))
        .await
        .unwrap();
    migration_tables_work(&db).await;
    drop(db);
    scratch.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pooler_mode_refuses_the_change_feed_and_keeps_settings_per_transaction() {
    let Some((url, b)) = bouncer(2).await else {
        return;
    };
    let scratch = Scratch::new(url);
    let mut cfg = pooled(&scratch, &b, "set");
    cfg.statement_timeout_ms = Some(200);
    let schema = cfg.schema.clone().unwrap();
    let db = PgDatabase::open(cfg).await.unwrap();
    let caps = db.capabilities();
    assert!(!caps.change_feed && caps.change_feed_scope.is_none());
    let e = db.subscribe_changes(None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("pooler"), "{e}");
    // The schema and the statement timeout hold in every transaction,
    // whichever server connection it lands on.
    for _ in 0..20 {
        let r = db
            .raw_query(
                "SELECT current_schema() AS s, current_setting('statement_timeout') AS t",
                &Params::new(),
            )
            .await
            .unwrap();
        assert_eq!(r[0]["s"], json!(schema));
        assert_eq!(r[0]["t"], json!("200ms"));
    }
    let e = db
        .raw_query("SELECT pg_sleep(:s)", &params(json!({"s": 2})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    // ... and nothing of them leaks to the next client of the server
    // connection.
    let mut other = pooled(&scratch, &b, "set2");
    other.statement_timeout_ms = None;
    let other_schema = other.schema.clone().unwrap();
    let plain = PgDatabase::open(other).await.unwrap();
    for _ in 0..10 {
        let r = plain
            .raw_query(
                "SELECT current_schema() AS s, current_setting('statement_timeout') AS t",
                &Params::new(),
            )
            .await
            .unwrap();
        assert_eq!(r[0]["s"], json!(other_schema));
        assert_eq!(r[0]["t"], json!("0"));
    }
    drop((db, plain));
    scratch.cleanup().await.unwrap();
}

const A: &str = "00000000-0000-4000-8000-00000000000a";
const B: &str = "00000000-0000-4000-8000-00000000000b";

fn user(sub: &str) -> RequestScope {
    let claims = json!({"sub": sub, "role": "authenticated", "aud": "authenticated"});
    RequestScope::new("authenticated", row(claims)).expect("a scope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn row_level_security_holds_through_pgbouncer() {
    let Some((url, b)) = bouncer(2).await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let cfg = pooled(&scratch, &b, "rls");
    let schema = cfg.schema.clone().unwrap();
    let db = Arc::new(PgDatabase::open(cfg).await.unwrap());
    assert!(db.capabilities().row_security);
    db.create_table(
        &TableSchema::new("notes")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("owner").not_null())
            .column(ColumnDef::text("body")),
    )
    .await
    .unwrap();
    let t = format!("\"{schema}\".notes");
    let sub = "current_setting('request.jwt.claim.sub', true)";
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    for s in [
        testing::ensure_role("anon"),
        testing::ensure_role("authenticated"),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO anon, authenticated"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO authenticated"),
        format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
        format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"),
        format!(
            "CREATE POLICY own ON {t} FOR ALL TO authenticated \
             USING (owner = {sub}) WITH CHECK (owner = {sub})"
        ),
    ] {
        sqlx::raw_sql(&s).execute(&mut admin).await.unwrap();
    }
    let _ = admin.close().await;
    let a = db.clone().scoped(user(A)).unwrap();
    let bb = db.clone().scoped(user(B)).unwrap();
    a.create("notes", row(json!({"id": "a1", "owner": A})))
        .await
        .unwrap();
    bb.create("notes", row(json!({"id": "b1", "owner": B})))
        .await
        .unwrap();
    let e = a
        .create("notes", row(json!({"id": "a2", "owner": B})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // Interleaved from many tasks over two server connections: every
    // scoped call sees and changes its own rows only, and unscoped calls
    // on the same server connections never run with a role or claim left
    // over from a scoped transaction.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (db, a, bb) = (db.clone(), a.clone(), bb.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                let (h, me, other) = if i % 2 == 0 {
                    (&a, A, "b1")
                } else {
                    (&bb, B, "a1")
                };
                let rows = h.read("notes", &Query::new()).await.unwrap();
                assert!(!rows.is_empty() && rows.iter().all(|r| r["owner"] == me));
                assert!(h.get("notes", &json!(other)).await.unwrap().is_none());
                let e = h
                    .update("notes", &json!(other), row(json!({"body": "pwned"})))
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
                let r = db
                    .raw_query(
                        "SELECT current_user::text AS who, \
                         coalesce(current_setting('request.jwt.claim.sub', true), '') AS sub",
                        &Params::new(),
                    )
                    .await
                    .unwrap();
                assert_eq!(r[0]["sub"], json!(""), "a claim leaked: {r:?}");
                assert_eq!(r[0]["who"], json!("postgres"), "a role leaked: {r:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let bodies: Vec<Value> = db
        .raw_query("SELECT body FROM notes ORDER BY id", &Params::new())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r["body"].clone())
        .collect();
    assert_eq!(
        bodies,
        vec![Value::Null, Value::Null],
        "nothing was changed"
    );
    drop((a, bb, db));
    scratch.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_queries_through_pgbouncer_leave_no_named_statement_and_refuse_bad_input() {
    let Some((url, b)) = bouncer(2).await else {
        return;
    };
    let scratch = Scratch::new(url);
    let db = Arc::new(PgDatabase::open(pooled(&scratch, &b, "raw")).await.unwrap());
    db.raw_query(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, at TIMESTAMPTZ, v TEXT)",
        &Params::new(),
    )
    .await
    .unwrap();
    // Parameters bound as the types PostgreSQL infers (a string as a
    // timestamp, an integer as int4), also with a trailing comment.
    for i in 0..20i64 {
        let r = db
            .raw_query(
                "INSERT INTO t (id, at, v) VALUES (:id, :at, :v) RETURNING id, v -- done",
                &params(json!({"id": i, "at": "2024-05-01T12:00:00Z", "v": "it's ; -- \" x"})),
            )
            .await
            .unwrap();
        assert_eq!(r[0]["v"], json!("it's ; -- \" x"));
    }
    let r = db
        .raw_query(
            "SELECT count(*) AS n FROM t WHERE at >= :since AND id < :lim::int4",
            &params(json!({"since": "2024-01-01T00:00:00Z", "lim": 10})),
        )
        .await
        .unwrap();
    assert_eq!(r[0]["n"], json!(10));
    // Bad input: the right kind, and the next call works.
    let e = db
        .raw_query("SELECT 1; DROP TABLE t", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = db
        .raw_query("SELEC :v", &params(json!({"v": 1})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = db
        .raw_query("SELECT :v::interval AS i", &params(json!({"v": "1 day"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.message().contains("cast"), "{e}");
    let e = db
        .raw_query("SELECT :n::int2 AS n", &params(json!({"n": 70000})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = db
        .raw_query(
            "SELECT * FROM missing_table WHERE id = :id",
            &params(json!({"id": 1})),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // Nothing named is left on any server connection.
    for _ in 0..10 {
        let r = db
            .raw_query(
                "SELECT count(*) AS n FROM pg_prepared_statements",
                &Params::new(),
            )
            .await
            .unwrap();
        assert_eq!(
            r[0]["n"],
            json!(0),
            "a named statement outlived its transaction"
        );
    }
    drop(db);
    scratch.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pooler_mode_needs_no_ignored_startup_parameters() {
    // pgbouncer's defaults: no startup parameter ignored.
    let Some(url) = testing::server().await else {
        return;
    };
    let target = url.clone();
    let Some(b) = tokio::task::spawn_blocking(move || PgBouncer::start_strict(&target, 2))
        .await
        .unwrap()
    else {
        return;
    };
    let scratch = Scratch::new(url);
    let db = PgDatabase::open(pooled(&scratch, &b, "strict"))
        .await
        .expect("pooler mode sends nothing pgbouncer refuses");
    db.raw_query("CREATE TABLE t (id INT PRIMARY KEY)", &Params::new())
        .await
        .unwrap();
    db.create("t", row(json!({"id": 1}))).await.unwrap();
    assert!(db.get("t", &json!(1)).await.unwrap().is_some());
    // With the mode off sqlx sends `extra_float_digits` and the provider
    // `options` (search_path, statement_timeout): refused at connect.
    let mut off = scratch.config("strict_off");
    off.url = Secret::new(b.url());
    off.acquire_timeout_ms = 2_000;
    let e = PgDatabase::open(off).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        e.to_string().contains("unsupported startup parameter"),
        "{e}"
    );
    drop(db);
    scratch.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_provider_feeds_changes_written_through_the_pooler() {
    let Some((url, b)) = bouncer(2).await else {
        return;
    };
    let scratch = Scratch::new(url.clone());
    let pooled_cfg = pooled(&scratch, &b, "feed");
    // The same schema, over a direct connection: the change feed's side.
    let mut direct_cfg = pooled_cfg.clone().with_pooler(Pooler::None);
    direct_cfg.url = Secret::new(url);
    let writer = PgDatabase::open(pooled_cfg).await.unwrap();
    let watcher = PgDatabase::open(direct_cfg).await.unwrap();
    writer
        .create_table(
            &TableSchema::new("jobs")
                .column(ColumnDef::integer("id").primary_key())
                .column(ColumnDef::text("state")),
        )
        .await
        .unwrap();
    let mut feed = watcher.subscribe_changes(Some("jobs")).await.unwrap();
    writer
        .create("jobs", row(json!({"id": 1, "state": "new"})))
        .await
        .unwrap();
    writer
        .update("jobs", &json!(1), row(json!({"state": "done"})))
        .await
        .unwrap();
    writer.delete("jobs", &json!(1)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let c = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("a change within 10 s")
            .expect("feed open")
            .expect("no gap");
        seen.push((
            format!("{:?}", c.kind),
            c.key.clone(),
            c.new.and_then(|r| r.get("state").cloned()),
        ));
    }
    assert_eq!(
        seen,
        vec![
            ("Insert".to_string(), json!(1), Some(json!("new"))),
            ("Update".to_string(), json!(1), Some(json!("done"))),
            ("Delete".to_string(), json!(1), None),
        ]
    );
    drop(feed);
    drop((writer, watcher));
    scratch.cleanup().await.unwrap();
}
