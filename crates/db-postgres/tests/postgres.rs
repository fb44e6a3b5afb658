//! PostgreSQL-specific behaviour the shared conformance suite cannot see:
//! the change feed's scope (writes by other connections), NOTIFY's payload
//! limit, error kinds of server-side failures, and hostile input against a
//! real server. Each test works in its own scratch schema.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Connection as _;
use truststream_core_db::{
    col, ChangeKind, ColumnDef, ColumnDefault, Database, ErrorKind, Params, Query, Row,
    SortDirection, TableSchema,
};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::{PgConfig, PgDatabase};

fn row(v: Value) -> Row {
    v.as_object().cloned().expect("an object")
}

async fn scratch() -> Option<Scratch> {
    testing::server().await.map(Scratch::new)
}

fn agents() -> TableSchema {
    TableSchema::new("agents")
        .column(
            ColumnDef::integer("id")
                .primary_key()
                .default(ColumnDefault::AutoIncrement),
        )
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::text("notes"))
}

/// A raw connection to the provider's schema, as another process would
/// have.
async fn other_connection(config: &PgConfig) -> sqlx::PgConnection {
    let mut c = sqlx::PgConnection::connect(config.url.expose())
        .await
        .expect("connect");
    let schema = config.schema.clone().expect("scratch schema");
    sqlx::query(&format!("SET search_path TO \"{schema}\""))
        .execute(&mut c)
        .await
        .expect("search_path");
    c
}

async fn next_change(
    feed: &mut truststream_core_db::ChangeStream,
) -> truststream_core_db::RowChange {
    tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("a change within 10 s")
        .expect("feed open")
        .expect("no gap")
}

#[tokio::test(flavor = "multi_thread")]
async fn change_feed_sees_other_connections_and_large_rows_whole() {
    let Some(s) = scratch().await else { return };
    let config = s.config("feed");
    let db = PgDatabase::open(config.clone()).await.unwrap();
    db.create_table(&agents()).await.unwrap();
    let mut feed = db.subscribe_changes(Some("agents")).await.unwrap();

    // Through the provider.
    let a = db
        .create("agents", row(json!({"name": "a"})))
        .await
        .unwrap();
    let c = next_change(&mut feed).await;
    assert_eq!((c.kind, &c.key), (ChangeKind::Insert, &a["id"]));
    assert_eq!(c.new.as_ref(), Some(&a));

    // Through another connection (another process, psql): seen too.
    let mut other = other_connection(&config).await;
    sqlx::query("INSERT INTO agents (name) VALUES ('from psql')")
        .execute(&mut other)
        .await
        .unwrap();
    let c = next_change(&mut feed).await;
    assert_eq!(c.kind, ChangeKind::Insert);
    assert_eq!(c.new.as_ref().unwrap()["name"], "from psql");

    // A row far over NOTIFY's 8000-byte payload limit arrives whole.
    let big = "é".repeat(50_000);
    let updated = db
        .update("agents", &a["id"], row(json!({"notes": big})))
        .await
        .unwrap();
    let c = next_change(&mut feed).await;
    assert_eq!(c.kind, ChangeKind::Update);
    assert_eq!(c.new.as_ref(), Some(&updated));
    assert_eq!(
        c.new.as_ref().unwrap()["notes"].as_str().unwrap().len(),
        100_000
    );
    assert_eq!(c.old.as_ref().unwrap()["notes"], Value::Null);

    // A rolled-back transaction sends nothing; the next commit arrives next.
    let mut tx = other.begin().await.unwrap();
    sqlx::query("INSERT INTO agents (name) VALUES ('rolled back')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    db.delete("agents", &a["id"]).await.unwrap();
    let c = next_change(&mut feed).await;
    assert_eq!((c.kind, &c.key), (ChangeKind::Delete, &a["id"]));
    assert_eq!(
        c.old.as_ref().unwrap()["notes"].as_str().unwrap().len(),
        100_000
    );
    drop(feed);
    drop(db);
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_failures_map_to_kinds() {
    let Some(s) = scratch().await else { return };
    // Statement timeout -> Timeout (retryable).
    let mut config = s.config("errors");
    config.statement_timeout_ms = Some(200);
    config.max_connections = 1;
    config.acquire_timeout_ms = 300;
    let db = PgDatabase::open(config).await.unwrap();
    let e = db
        .raw_query("SELECT pg_sleep(5)", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_retryable());

    // Pool exhausted -> Unavailable within the acquire timeout, not a hang.
    db.create_table(&agents()).await.unwrap();
    let pool = db.pool().unwrap();
    let held = pool.acquire().await.unwrap();
    let t = Instant::now();
    let e = db.read("agents", &Query::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(held);
    assert!(db.read("agents", &Query::new()).await.is_ok());

    // Unique violation -> Conflict; unknown table -> NotFound; unknown
    // column in raw SQL -> InvalidInput.
    db.create("agents", row(json!({"id": 7, "name": "x"})))
        .await
        .unwrap();
    let e = db
        .create("agents", row(json!({"id": 7, "name": "y"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = db
        .raw_query("SELECT * FROM nowhere", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = db
        .raw_query("SELECT nope FROM agents", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    drop(db);

    // Nothing listening -> Unavailable (retryable), and the URL (with its
    // password) never appears in the error.
    let mut dead = PgConfig::new("postgres://app:hunter2@127.0.0.1:1/test");
    dead.acquire_timeout_ms = 500;
    let e = PgDatabase::open(dead).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
    s.cleanup().await.unwrap();
}

/// A refused port says so at once, naming host:port and the `url`
/// setting; it never waits for the pool's acquire timeout to suggest a
/// bigger pool. A URL of another database is refused before any
/// connection. Only an exhausted pool suggests `max_connections`.
#[tokio::test(flavor = "multi_thread")]
async fn connection_errors_say_what_failed_and_which_setting() {
    // acquire_timeout_ms is an hour: the old code waited for it.
    let mut dead = PgConfig::new("postgres://app:hunter2@127.0.0.1:1/test");
    dead.acquire_timeout_ms = 3_600_000;
    let e = PgDatabase::open(dead).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable() && e.is_unapplied(), "{e:?}");
    assert!(
        e.message()
            .starts_with("PostgreSQL at 127.0.0.1:1 refused the connection"),
        "{e}"
    );
    assert!(!e.message().contains("max_connections"), "{e}");
    assert!(e.context().contains(&("setting", "url".to_string())), "{e}");
    assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");

    for url in [
        "mysql://app:hunter2@127.0.0.1:3306/app",
        "app:hunter2@127.0.0.1:5432/app",
    ] {
        let e = PgDatabase::open(PgConfig::new(url)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(
            e.message().starts_with("the url is not a PostgreSQL URL"),
            "{e}"
        );
        assert!(e.context().contains(&("setting", "url".to_string())), "{e}");
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
    }

    let Some(s) = scratch().await else { return };
    let mut config = s.config("exhausted");
    config.max_connections = 1;
    config.acquire_timeout_ms = 300;
    let db = std::sync::Arc::new(PgDatabase::open(config).await.unwrap());
    // The pool's only connection sleeps in the server; the next call
    // waits for it and times out.
    let busy = {
        let db = db.clone();
        tokio::spawn(async move {
            db.raw_query("SELECT pg_sleep(5)::text", &Params::new())
                .await
                .map(drop)
        })
    };
    let mut probe = sqlx::PgConnection::connect(&testing::database_url())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)::text' \
             AND state = 'active'",
        )
        .fetch_one(&mut probe)
        .await
        .unwrap();
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the sleep never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = db.read("nowhere", &Query::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        e.message()
            .contains("all 1 connections of the pool are in use")
            && e.message().contains("raise max_connections"),
        "{e}"
    );
    busy.await.unwrap().unwrap();
    probe.close().await.unwrap();
    drop(db);
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_input_is_rejected_or_bound_and_nothing_else_runs() {
    let Some(s) = scratch().await else { return };
    let config = s.config("inject");
    let db = PgDatabase::open(config.clone()).await.unwrap();
    db.create_table(&agents()).await.unwrap();
    db.create_table(&TableSchema::new("canary").column(ColumnDef::integer("id").primary_key()))
        .await
        .unwrap();
    db.create("canary", row(json!({"id": 1}))).await.unwrap();
    let evil = [
        "agents; DROP TABLE canary; --",
        "agents\"; DROP TABLE canary; --",
        "x' OR '1'='1",
        "agents/*",
        "名前",
        "",
    ];
    for name in evil {
        // Table names, column names, order keys, filter columns, JSON keys.
        let e = db.read(name, &Query::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "table {name:?}: {e}");
        let e = db
            .read("agents", &Query::new().order_by(name, SortDirection::Asc))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "order {name:?}: {e}");
        let e = db
            .read("agents", &Query::new().filter(col(name).eq(1)))
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidInput,
            "filter column {name:?}: {e}"
        );
        let mut r = Row::new();
        r.insert(name.to_string(), json!(1));
        let e = db.create("agents", r).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "row key {name:?}: {e}");
        // Values are bound: stored and read back verbatim.
        let stored = db
            .create(
                "agents",
                row(json!({"name": name, "notes": format!("{name}'--")})),
            )
            .await
            .unwrap();
        let found = db
            .read("agents", &Query::new().filter(col("name").eq(name)))
            .await
            .unwrap();
        assert_eq!(found, vec![stored], "value {name:?}");
        // Raw-query parameters are bound too.
        let mut p = Params::new();
        p.insert("n".into(), json!(name));
        let rows = db
            .raw_query("SELECT count(*) AS n FROM agents WHERE name = :n", &p)
            .await
            .unwrap();
        assert_eq!(rows[0]["n"], 1, "raw param {name:?}");
    }
    // The canary and everything else is intact: no other statement ran.
    assert_eq!(db.read("canary", &Query::new()).await.unwrap().len(), 1);
    assert_eq!(
        db.read("agents", &Query::new()).await.unwrap().len(),
        evil.len()
    );
    let mut other = other_connection(&config).await;
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    // agents, canary, and the provider's two bookkeeping tables.
    assert_eq!(tables, 4);
    drop(db);
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_queries_bind_parameters_as_the_inferred_types() {
    let Some(s) = scratch().await else { return };
    let db = s.database("raw").await.unwrap();
    let mut p = Params::new();
    p.insert("since".into(), json!("2024-05-01T12:00:00Z"));
    p.insert("small".into(), json!(7));
    p.insert("doc".into(), json!({"a": [1, 2]}));
    p.insert("id".into(), json!("67e55044-10b1-426f-9247-bb680e5fe0c8"));
    let rows = db
        .raw_query(
            "SELECT :since::timestamptz + interval '1 hour' AS later, \
                    (:small::int4 + 1) AS n, \
                    :doc::jsonb -> 'a' AS a, \
                    :id::uuid AS id, \
                    now() > :since AS after",
            &p,
        )
        .await
        .unwrap();
    assert_eq!(
        Value::Object(rows[0].clone()),
        json!({
            "later": "2024-05-01T13:00:00.000000Z",
            "n": 8,
            "a": [1, 2],
            "id": "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "after": true,
        })
    );
    let mut p = Params::new();
    p.insert("n".into(), json!(5_000_000_000_i64));
    let e = db.raw_query("SELECT :n::int4 AS n", &p).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    drop(db);
    s.cleanup().await.unwrap();
}

/// A default that breaks out of a plain `'...'` literal when backslashes
/// are escapes (`standard_conforming_strings = off`).
const HOSTILE_DEFAULT: &str = "\\' || current_user) --";

/// A table whose text, JSON and bytes defaults hold backslashes and quotes.
fn hostile_defaults() -> TableSchema {
    TableSchema::new("defaults")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("t").default_value(HOSTILE_DEFAULT))
        .column(ColumnDef::json("j").default_value(json!({"k": HOSTILE_DEFAULT})))
        // `\x00\\'` as base64: a NUL, a backslash and a quote.
        .column(ColumnDef::bytes("b").default_value("AFwn"))
}

/// Stores row `id` with every default and checks each came back verbatim,
/// also the column `c` added later.
fn assert_hostile_defaults(row: &Row) {
    assert_eq!(row["t"], HOSTILE_DEFAULT, "{row:?}");
    assert_eq!(row["j"], json!({"k": HOSTILE_DEFAULT}), "{row:?}");
    assert_eq!(row["b"], "AFwn", "{row:?}");
    assert_eq!(row["c"], HOSTILE_DEFAULT, "{row:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ddl_defaults_are_verbatim_whatever_standard_conforming_strings_says() {
    let Some(s) = scratch().await else { return };

    // 1. The provider under a session default of `off` (as a role or
    // server setting would give it): every connection it opens turns it
    // back on, and the defaults are stored verbatim.
    let mut config = s.config("scs");
    let url = config.url.expose().to_string();
    let sep = if url.contains('?') { '&' } else { '?' };
    config.url = format!("{url}{sep}options=-c%20standard_conforming_strings%3Doff").into();
    let db = PgDatabase::open(config.clone()).await.unwrap();
    let rows = db
        .raw_query(
            "SELECT current_setting('standard_conforming_strings') AS scs",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(rows[0]["scs"], "on");
    db.create_table(&hostile_defaults()).await.unwrap();
    db.alter_table(
        "defaults",
        &[truststream_core_db::AlterTable::AddColumn(
            ColumnDef::text("c").default_value(HOSTILE_DEFAULT),
        )],
    )
    .await
    .unwrap();
    let stored = db.create("defaults", row(json!({"id": 1}))).await.unwrap();
    assert_hostile_defaults(&stored);
    assert_eq!(db.get("defaults", &json!(1)).await.unwrap(), Some(stored));
    drop(db);

    // 2. The compiled DDL alone, run on a connection where the setting is
    // off: the literals are safe under either setting.
    use truststream_core_db::sql::compile::{self, SqlDialect};
    let plain = s.config("scs_raw");
    let mut conn = sqlx::PgConnection::connect(plain.url.expose())
        .await
        .unwrap();
    let schema = plain.schema.clone().unwrap();
    for stmt in [
        format!("CREATE SCHEMA \"{schema}\""),
        format!("SET search_path TO \"{schema}\""),
        "SET standard_conforming_strings = off".to_string(),
        "SET escape_string_warning = off".to_string(),
    ] {
        sqlx::query(&stmt).execute(&mut conn).await.unwrap();
    }
    let mut ddl = compile::create_table(SqlDialect::Postgres, &hostile_defaults()).unwrap();
    ddl.extend(
        compile::alter_table(
            SqlDialect::Postgres,
            "defaults",
            &truststream_core_db::AlterTable::AddColumn(
                ColumnDef::text("c").default_value(HOSTILE_DEFAULT),
            ),
        )
        .unwrap(),
    );
    for stmt in &ddl {
        sqlx::raw_sql(stmt).execute(&mut conn).await.unwrap();
    }
    let (t, j, b, c): (String, Value, Vec<u8>, String) =
        sqlx::query_as("INSERT INTO defaults (id) VALUES (1) RETURNING t, j, b, c")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(t, HOSTILE_DEFAULT, "{ddl:?}");
    assert_eq!(j, json!({"k": HOSTILE_DEFAULT}), "{ddl:?}");
    assert_eq!(b, b"\0\\'", "{ddl:?}");
    assert_eq!(c, HOSTILE_DEFAULT, "{ddl:?}");
    let _ = conn.close().await;
    s.cleanup().await.unwrap();
}

/// The `xmin` of `table`'s change-feed trigger row (it changes whenever the
/// trigger is created or replaced); `None` without a trigger.
async fn trigger_version(c: &mut sqlx::PgConnection, table: &str) -> Option<String> {
    sqlx::query_as::<_, (String,)>(
        "SELECT xmin::text FROM pg_trigger \
         WHERE tgrelid = to_regclass($1) AND tgname = '_truststream_notify'",
    )
    .bind(table)
    .fetch_optional(c)
    .await
    .expect("read pg_trigger")
    .map(|(x,)| x)
}

/// Waits (up to 10 s) until `table` has a trigger or not, as `present`.
async fn wait_for_trigger(c: &mut sqlx::PgConnection, table: &str, present: bool) {
    let t = Instant::now();
    while trigger_version(c, table).await.is_some() != present {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{table}: trigger present should be {present}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) until no session holds `table`'s change-feed watch
/// lock ([`testing::watch_lock_free`]).
async fn wait_until_unwatched(c: &mut sqlx::PgConnection, schema: &str, table: &str) {
    let t = Instant::now();
    while !testing::watch_lock_free(c, schema, table)
        .await
        .expect("try the watch lock")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{schema}.{table}: a closed provider's session still holds the watch lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_are_installed_once_and_leave_with_the_last_subscriber_of_any_process() {
    let Some(s) = scratch().await else { return };
    let config = s.config("trig");
    // Two providers on one schema: two processes, as far as the server
    // can tell (each has its own connections).
    let a = PgDatabase::open(config.clone()).await.unwrap();
    let b = PgDatabase::open(config.clone()).await.unwrap();
    let mut other = other_connection(&config).await;
    a.create_table(&agents()).await.unwrap();
    assert_eq!(trigger_version(&mut other, "agents").await, None);

    // Installed by the first subscriber; later ones run no DDL.
    let a1 = a.subscribe_changes(Some("agents")).await.unwrap();
    let installed = trigger_version(&mut other, "agents").await;
    assert!(installed.is_some());
    let a2 = a.subscribe_changes(Some("agents")).await.unwrap();
    let mut b1 = b.subscribe_changes(Some("agents")).await.unwrap();
    assert_eq!(trigger_version(&mut other, "agents").await, installed);

    // Every subscriber of A gone: B still watches, the trigger stays and
    // B still gets changes.
    drop(a1);
    drop(a2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(trigger_version(&mut other, "agents").await, installed);
    let made = a.create("agents", row(json!({"name": "x"}))).await.unwrap();
    assert_eq!(next_change(&mut b1).await.key, made["id"]);
    // Dropped and made again while watched: the new table has the trigger.
    b.drop_table("agents", false).await.unwrap();
    b.create_table(&agents()).await.unwrap();
    let made = a
        .create("agents", row(json!({"name": "again"})))
        .await
        .unwrap();
    assert_eq!(next_change(&mut b1).await.new.unwrap(), made);

    // The last subscriber anywhere leaves: the trigger goes.
    drop(b1);
    wait_for_trigger(&mut other, "agents", false).await;

    // A subscriber of every table holds every table's trigger, also of
    // tables created meanwhile, and takes them all away when it leaves.
    let mut all = a.subscribe_changes(None).await.unwrap();
    wait_for_trigger(&mut other, "agents", true).await;
    a.create_table(&TableSchema::new("later").column(ColumnDef::integer("id").primary_key()))
        .await
        .unwrap();
    assert!(trigger_version(&mut other, "later").await.is_some());
    b.create("later", row(json!({"id": 1}))).await.unwrap();
    assert_eq!(next_change(&mut all).await.table, "later");
    let one = b.subscribe_changes(Some("later")).await.unwrap();
    drop(all);
    wait_for_trigger(&mut other, "agents", false).await;
    // B still watches `later`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(trigger_version(&mut other, "later").await.is_some());
    drop(one);
    wait_for_trigger(&mut other, "later", false).await;

    // A process that goes away without unsubscribing (its connections
    // closed) holds nothing: the next subscriber to leave takes the
    // trigger away.
    let gone = a.subscribe_changes(Some("agents")).await.unwrap();
    a.disconnect().await.unwrap();
    // The server ends a closed connection's session (and frees its
    // locks) a moment after the client has closed it: under load that
    // moment came after B's drop had found the lock still held and left
    // the trigger (best effort, as documented). Wait until A's session
    // has let go, as a process that is really gone has.
    let schema = config.schema.as_deref().expect("scratch schema");
    wait_until_unwatched(&mut other, schema, "agents").await;
    let b2 = b.subscribe_changes(Some("agents")).await.unwrap();
    drop(b2);
    wait_for_trigger(&mut other, "agents", false).await;
    drop(gone);
    drop((a, b));
    s.cleanup().await.unwrap();
}

async fn overflow_rows(c: &mut sqlx::PgConnection) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM _truststream_changes")
        .fetch_one(c)
        .await
        .expect("count the overflow rows");
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overflow_table_stays_bounded_without_a_listener() {
    let Some(s) = scratch().await else { return };
    let config = s.config("overflow");
    let db = PgDatabase::open(config.clone()).await.unwrap();
    db.create_table(&agents()).await.unwrap();
    // A subscriber whose process stops listening (here: disconnects)
    // leaves the trigger in place with nobody reading its changes.
    let _feed = db.subscribe_changes(Some("agents")).await.unwrap();
    db.disconnect().await.unwrap();
    let mut other = other_connection(&config).await;
    assert!(trigger_version(&mut other, "agents").await.is_some());
    // Count bound: 1300 changes too large for NOTIFY, at most 1024 + 64
    // kept.
    sqlx::query(
        "INSERT INTO agents (name, notes) SELECT 'n', repeat('x', 8000) FROM generate_series(1, 1300)",
    )
    .execute(&mut other)
    .await
    .unwrap();
    let n = overflow_rows(&mut other).await;
    assert!((1024..=1088).contains(&n), "{n} overflow rows");
    // Age bound: rows older than ten minutes go at the next prune.
    sqlx::query("UPDATE _truststream_changes SET created_at = now() - interval '1 hour'")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("UPDATE agents SET notes = repeat('y', 8000) WHERE id <= 64")
        .execute(&mut other)
        .await
        .unwrap();
    let n = overflow_rows(&mut other).await;
    assert!(n <= 64, "{n} overflow rows");
    s.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sequence_gaps_are_reported_and_committed_at_is_commit_time() {
    let Some(s) = scratch().await else { return };
    let config = s.config("seq");
    let db = PgDatabase::open(config.clone()).await.unwrap();
    db.create_table(&agents()).await.unwrap();
    let mut feed = db.subscribe_changes(Some("agents")).await.unwrap();
    let mut other = other_connection(&config).await;
    let insert = |name: &'static str| format!("INSERT INTO agents (name) VALUES ('{name}')");

    sqlx::query(&insert("first"))
        .execute(&mut other)
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await.new.unwrap()["name"], "first");
    // A rolled back transaction leaves no gap.
    let mut tx = other.begin().await.unwrap();
    sqlx::query(&insert("rolled back"))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    sqlx::query(&insert("second"))
        .execute(&mut other)
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await.new.unwrap()["name"], "second");

    // Three numbered changes that never reached the listener: reported
    // as one Unavailable item before the next change.
    sqlx::query("SELECT nextval('_truststream_change_seq') FROM generate_series(1, 3)")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query(&insert("third"))
        .execute(&mut other)
        .await
        .unwrap();
    let gap = tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(gap.kind(), ErrorKind::Unavailable, "{gap}");
    assert!(gap.message().starts_with("3 row change(s)"), "{gap}");
    assert_eq!(next_change(&mut feed).await.new.unwrap()["name"], "third");

    // committed_at is read at COMMIT, not when the row was written.
    let mut tx = other.begin().await.unwrap();
    sqlx::query(&insert("slow"))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT pg_sleep(0.5)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let before_commit = chrono::Utc::now();
    tx.commit().await.unwrap();
    let c = next_change(&mut feed).await;
    assert!(
        c.committed_at >= before_commit,
        "committed_at {} is before the COMMIT at {before_commit}",
        c.committed_at
    );
    drop(feed);
    drop(db);
    s.cleanup().await.unwrap();
}
