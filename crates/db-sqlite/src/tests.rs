use std::time::Duration;

use serde_json::json;
use truststream_core_db::sql::compile::SqlDialect;
use truststream_core_db::{
    col, ChangeKind, ChangeStream, ColumnDef, ColumnDefault, Error, ErrorKind, IndexSpec, Params,
    Query, Row, TableSchema, Value,
};

use super::*;

fn row(v: Value) -> Row {
    v.as_object().cloned().expect("object")
}

async fn typed_table(db: &SqliteDatabase) {
    db.create_table(
        &TableSchema::new("typed")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("t"))
            .column(ColumnDef::integer("i"))
            .column(ColumnDef::float("f"))
            .column(ColumnDef::boolean("b"))
            .column(ColumnDef::timestamp("ts"))
            .column(ColumnDef::uuid("u").default(ColumnDefault::RandomUuid))
            .column(ColumnDef::json("j"))
            .column(ColumnDef::bytes("by"))
            .column(ColumnDef::numeric("n"))
            .column(ColumnDef::timestamp("created").default(ColumnDefault::Now)),
    )
    .await
    .expect("create typed");
}

#[tokio::test]
async fn wrong_types_unknown_names_and_constraints_map_to_kinds() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    typed_table(&db).await;
    let e = db
        .create("typed", row(json!({"i": "five"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("column i"), "{e}");
    let e = db
        .create("typed", row(json!({"nope": 1})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = db
        .create("missing", row(json!({"a": 1})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    db.create("typed", row(json!({"id": 7}))).await.unwrap();
    let e = db.create("typed", row(json!({"id": 7}))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(std::error::Error::source(&e).is_some(), "sqlx error kept");
    let e = db
        .raw_query("SELECT * FROM nope", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = db
        .raw_query("SELECT zzz FROM typed", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = db
        .raw_query("INSERT INTO typed (id) VALUES (7)", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

/// Issue 13: `@v` in raw SQL and an index named like a table were
/// `Internal`; a 10 KB parameter name came back whole.
#[tokio::test]
async fn raw_placeholders_index_clashes_and_long_names_have_the_right_kinds() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    typed_table(&db).await;
    for sql in [
        "SELECT * FROM typed WHERE id = @v",
        "SELECT * FROM typed WHERE id = ?",
        "SELECT * FROM typed WHERE id = $v",
    ] {
        let e = db.raw_query(sql, &Params::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{sql}: {e}");
        assert!(e.message().contains(":name"), "{e}");
    }
    let e = db
        .create_index(&IndexSpec::new("typed", ["t"]).named("typed"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let long = "p".repeat(10_000);
    let params: Params = [(long.clone(), json!(1))].into_iter().collect();
    let e = db.raw_query("SELECT 1", &params).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.display_chain().to_string().len() < 400, "{e}");
    // SQLite's own message quotes the name: the message is bounded (the
    // driver's error stays whole as the source).
    let e = db
        .raw_query(&format!("SELECT {long} FROM typed"), &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().len() < 2_200, "{} bytes", e.to_string().len());
}

const HOSTILE: &str = "x'); DROP TABLE victims; --\" ` \\ \0 ; SELECT 1";

#[tokio::test]
async fn hostile_values_are_stored_verbatim_and_tables_survive() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    db.create_table(
        &TableSchema::new("victims")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("name"))
            .column(ColumnDef::json("data")),
    )
    .await
    .unwrap();
    let hostile_json = json!({ HOSTILE: [HOSTILE] });
    let r = db
        .create(
            "victims",
            row(json!({"id": HOSTILE, "name": HOSTILE, "data": hostile_json})),
        )
        .await
        .unwrap();
    assert_eq!(r["id"], json!(HOSTILE));
    assert_eq!(r["data"], hostile_json);
    let found = db
        .read(
            "victims",
            &Query::new()
                .filter(col("name").eq(HOSTILE))
                .filter(col("name").like(HOSTILE))
                .filter(col("id").is_in([HOSTILE]))
                .order_by_asc("name"),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    db.update("victims", &json!(HOSTILE), row(json!({"name": HOSTILE})))
        .await
        .unwrap();
    let mut params = Params::new();
    params.insert("v".into(), json!(HOSTILE));
    let raw = db
        .raw_query("SELECT name FROM victims WHERE name = :v", &params)
        .await
        .unwrap();
    assert_eq!(raw, vec![row(json!({"name": HOSTILE}))]);
    // Hostile identifiers never reach SQLite.
    for e in [
        db.create("victims", row(json!({ HOSTILE: 1 })))
            .await
            .unwrap_err(),
        db.read(HOSTILE, &Query::new()).await.unwrap_err(),
        db.read("victims", &Query::new().order_by_asc(HOSTILE))
            .await
            .unwrap_err(),
        db.drop_table(HOSTILE, true).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    assert!(db.delete("victims", &json!(HOSTILE)).await.unwrap());
    let tables = db
        .raw_query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'victims'",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(tables.len(), 1, "the table survived");
}

#[tokio::test]
async fn like_is_case_sensitive_and_ilike_is_not() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    db.create_table(
        &TableSchema::new("w")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("s")),
    )
    .await
    .unwrap();
    db.create("w", row(json!({"id": 1, "s": "Agent"})))
        .await
        .unwrap();
    let n = |f| async { db.read("w", &Query::new().filter(f)).await.unwrap().len() };
    assert_eq!(n(col("s").like("agent")).await, 0);
    assert_eq!(n(col("s").like("Agent")).await, 1);
    assert_eq!(n(col("s").ilike("aGENT")).await, 1);
}

#[tokio::test]
async fn big_batches_are_chunked_and_all_or_nothing() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    db.create_table(
        &TableSchema::new("many")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("a"))
            .column(ColumnDef::text("b").unique()),
    )
    .await
    .unwrap();
    // 3 columns: 10922 rows per statement, so 25000 rows take 3 statements.
    let rows: Vec<Row> = (0..25_000)
        .map(|i| row(json!({"a": "x", "b": format!("k{i}")})))
        .collect();
    let created = db.create_many("many", rows).await.unwrap();
    assert_eq!(created.len(), 25_000);
    assert_eq!(created[24_999]["b"], json!("k24999"));
    let mut rows: Vec<Row> = (0..12_000)
        .map(|i| row(json!({"a": "y", "b": format!("n{i}")})))
        .collect();
    rows.push(row(json!({"a": "y", "b": "k5"}))); // duplicate in the last chunk
    let e = db.create_many("many", rows).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let n = db
        .read("many", &Query::new().filter(col("a").eq("y")))
        .await
        .unwrap();
    assert!(n.is_empty(), "nothing of the failed batch was kept");
}

#[tokio::test]
async fn files_are_created_with_parents_wal_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/db.sqlite");
    let db = SqliteDatabase::open(SqliteConfig::file(&path))
        .await
        .unwrap();
    db.create_table(
        &TableSchema::new("kv")
            .column(ColumnDef::text("k").primary_key())
            .column(ColumnDef::boolean("v")),
    )
    .await
    .unwrap();
    db.create("kv", row(json!({"k": "a", "v": true})))
        .await
        .unwrap();
    let mode = db
        .raw_query("PRAGMA journal_mode", &Params::new())
        .await
        .unwrap();
    assert_eq!(mode[0]["journal_mode"], json!("wal"));
    let fk = db
        .raw_query("PRAGMA foreign_keys", &Params::new())
        .await
        .unwrap();
    assert_eq!(fk[0]["foreign_keys"], json!(1));
    assert!(db.health().await.is_healthy());
    db.disconnect().await.unwrap();
    assert!(!db.health().await.is_healthy());
    let e = db.get("kv", &json!("a")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    drop(db);
    // A new instance reads the stored schema: the boolean decodes as a bool.
    let db = SqliteDatabase::open(SqliteConfig::file(&path))
        .await
        .unwrap();
    let got = db.get("kv", &json!("a")).await.unwrap().unwrap();
    assert_eq!(got, row(json!({"k": "a", "v": true})));
}

#[tokio::test]
async fn registry_builds_from_config() {
    let mut reg = DbRegistry::new("database");
    register(&mut reg);
    let db = reg
        .build(
            "sqlite",
            json!({"path": ":memory:", "busy_timeout_ms": 100}),
            (),
        )
        .await
        .unwrap();
    assert_eq!(db.capabilities().sql_dialect, Some(SqlDialect::Sqlite));
    let Err(e) = reg.build("sqlite", json!({"nope": 1}), ()).await else {
        panic!("an unknown config key must be rejected");
    };
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_file_write_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = Arc::new(
        SqliteDatabase::open(SqliteConfig::file(&path))
            .await
            .unwrap(),
    );
    a.create_table(
        &TableSchema::new("counter")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("who").not_null()),
    )
    .await
    .unwrap();
    let b = Arc::new(
        SqliteDatabase::open(SqliteConfig::file(&path))
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for (name, db) in [("a", a.clone()), ("b", b.clone())] {
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                db.create("counter", row(json!({"who": name}))).await?;
                if i % 10 == 0 {
                    db.update_many("counter", &col("who").eq(name), row(json!({"who": name})))
                        .await?;
                }
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(b.read("counter", &Query::new()).await.unwrap().len(), 100);
}

#[tokio::test]
async fn json_like_matches_strings_only() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    db.create_table(
        &TableSchema::new("docs")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::json("j")),
    )
    .await
    .unwrap();
    for (id, j) in [
        (1, json!("abc")),
        (2, json!({"k": "abc"})),
        (3, json!(["abc"])),
    ] {
        db.create("docs", row(json!({"id": id, "j": j})))
            .await
            .unwrap();
    }
    let rows = db
        .read("docs", &Query::new().filter(col("j").like("a%")))
        .await
        .unwrap();
    assert_eq!(rows, vec![row(json!({"id": 1, "j": "abc"}))]);
}

#[tokio::test]
async fn change_feed_sees_provider_writes_not_raw_sql() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    db.create_table(
        &TableSchema::new("feed")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("s")),
    )
    .await
    .unwrap();
    let mut changes = db.subscribe_changes(Some("feed")).await.unwrap();
    db.raw_query("INSERT INTO feed (id, s) VALUES (1, 'raw')", &Params::new())
        .await
        .unwrap();
    db.create("feed", row(json!({"id": 2, "s": "api"})))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("a change arrives")
        .expect("feed open")
        .unwrap();
    assert_eq!(first.kind, ChangeKind::Insert);
    assert_eq!(first.key, json!(2), "the raw-SQL insert is not in the feed");
    let e = db.subscribe_changes(Some("nope")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

async fn next_change(changes: &mut ChangeStream) -> truststream_core_db::RowChange {
    tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("a change arrives")
        .expect("feed open")
        .unwrap()
}

/// While the feed records, a one-statement insert runs without
/// `BEGIN`/`COMMIT` and is committed before its change is published: a
/// second instance on the file sees the row when the change arrives; an
/// insert that fails publishes nothing; an update (which reads the old
/// rows first) still runs in a transaction and is published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_inserts_are_committed_before_their_change_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.db");
    let db = SqliteDatabase::open(SqliteConfig::file(&path))
        .await
        .unwrap();
    let other = SqliteDatabase::open(SqliteConfig::file(&path))
        .await
        .unwrap();
    db.create_table(
        &TableSchema::new("feed")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("s")),
    )
    .await
    .unwrap();
    let mut changes = db.subscribe_changes(Some("feed")).await.unwrap();
    db.create("feed", row(json!({"id": 1, "s": "a"})))
        .await
        .unwrap();
    let c = next_change(&mut changes).await;
    assert_eq!((c.kind, c.key.clone()), (ChangeKind::Insert, json!(1)));
    assert!(other.get("feed", &json!(1)).await.unwrap().is_some());
    let e = db
        .create("feed", row(json!({"id": 1, "s": "again"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    db.create_many(
        "feed",
        vec![
            row(json!({"id": 2, "s": "b"})),
            row(json!({"id": 3, "s": "c"})),
        ],
    )
    .await
    .unwrap();
    let (c2, c3) = (
        next_change(&mut changes).await,
        next_change(&mut changes).await,
    );
    assert_eq!(
        (c2.key, c3.key),
        (json!(2), json!(3)),
        "the failed insert published nothing"
    );
    assert_eq!(other.read("feed", &Query::new()).await.unwrap().len(), 3);
    db.update("feed", &json!(2), row(json!({"s": "bb"})))
        .await
        .unwrap();
    let c = next_change(&mut changes).await;
    assert_eq!(c.kind, ChangeKind::Update);
    assert_eq!(c.old.as_ref().and_then(|r| r.get("s")), Some(&json!("b")));
}

/// A database file that cannot be opened names the file and the
/// filesystem's reason (SQLite's own message says neither), and the
/// `path` setting; missing parent directories are created.
#[tokio::test]
async fn a_file_that_cannot_be_opened_names_the_path_and_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").expect("write");
    let cases = [
        // Its directory would be a file.
        (file.join("app.db"), "cannot create its directory"),
        // The path is a directory.
        (dir.path().to_path_buf(), "directory"),
    ];
    for (path, reason) in cases {
        let e = SqliteDatabase::open(SqliteConfig::file(&path))
            .await
            .expect_err("opened");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(
            e.message().starts_with(&format!(
                "cannot open the SQLite database file {}: ",
                path.display()
            )),
            "{e}"
        );
        assert!(e.message().contains(reason), "{reason}: {e}");
        assert!(
            e.context().contains(&("setting", "path".to_string())),
            "{e}"
        );
    }
    let nested = dir.path().join("a/b/app.db");
    SqliteDatabase::open(SqliteConfig::file(&nested))
        .await
        .expect("missing directories are created");
    assert!(nested.exists());
}

/// Writes run on one connection held by the process (a database file):
/// a write whose future is dropped mid-transaction (a timeout, a
/// cancelled request) leaves that connection outside any transaction, so
/// the next write commits on its own and other processes can write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_cancelled_mid_transaction_leave_no_transaction_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cancel.db");
    let a = SqliteDatabase::open(SqliteConfig::file(&path))
        .await
        .unwrap();
    a.create_table(
        &TableSchema::new("t")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("v").not_null()),
    )
    .await
    .unwrap();
    let b = SqliteDatabase::open(SqliteConfig::file(&path))
        .await
        .unwrap();
    // 20,000 rows of 2 columns are two statements in one transaction.
    let batch = |tag: &str| -> Vec<Row> { (0..20_000).map(|_| row(json!({"v": tag}))).collect() };
    let count = |tag: String| {
        let b = &b;
        async move {
            b.read("t", &Query::new().filter(col("v").eq(tag)))
                .await
                .unwrap()
                .len()
        }
    };
    let started = std::time::Instant::now();
    a.create_many("t", batch("whole")).await.unwrap();
    let whole = started.elapsed();
    let mut cancelled = 0;
    for (i, part) in [0.05, 0.2, 0.4, 0.6, 0.8, 0.95].into_iter().enumerate() {
        let tag = format!("batch-{i}");
        let r = tokio::time::timeout(whole.mul_f64(part), a.create_many("t", batch(&tag))).await;
        cancelled += usize::from(r.is_err());
        let stored = count(tag.clone()).await;
        assert!(
            stored == 0 || stored == 20_000,
            "{tag}: {stored} rows, all or none"
        );
        // The next write of this process commits at once ...
        let after = format!("after-{i}");
        a.create("t", row(json!({"v": after}))).await.unwrap();
        assert_eq!(count(after).await, 1, "{tag}: a's next write is committed");
        // ... and another process is not locked out.
        b.create("t", row(json!({"v": format!("b-{i}")})))
            .await
            .unwrap();
    }
    assert!(cancelled > 0, "some batch was cut off by its timeout");
    assert_eq!(count("whole".into()).await, 20_000);
}

/// Typed reads take SQLite's rows cell by cell (`ResultSet::from_cells`):
/// they give what `from_value` of the map reads gives, for every column
/// type, null, JSON text that does not parse and text stored in a numeric
/// or integer column; text that is not UTF-8 is the map path's error.
#[tokio::test]
async fn typed_reads_from_cells_are_the_map_reads() {
    use truststream_core_db::DatabaseExt as _;
    let db = SqliteDatabase::in_memory().await.unwrap();
    typed_table(&db).await;
    db.create(
        "typed",
        row(json!({"t": "é \"q\"", "i": -3, "f": 2.5, "b": true,
            "ts": "2024-05-01T14:00:00+02:00", "j": {"b": [1, null], "a": "x"},
            "by": "aGk=", "n": "1.25"})),
    )
    .await
    .unwrap();
    db.create("typed", row(json!({"i": 0, "j": "just text", "b": false})))
        .await
        .unwrap();
    // Stored outside the provider: JSON text that does not parse, text in
    // an integer and a numeric column, an integer in a text column.
    db.raw_query(
        "INSERT INTO typed (t, i, j, n) VALUES (12, 'x', '{not json', 'abc')",
        &Params::new(),
    )
    .await
    .unwrap();
    let q = Query::new().order_by_asc("id");
    let rows = db.read("typed", &q).await.unwrap();
    assert_eq!(rows.len(), 3);
    let as_values: Vec<Value> = db.read_as("typed", &q).await.unwrap();
    let expected: Vec<Value> = rows.iter().cloned().map(Value::Object).collect();
    assert_eq!(as_values, expected);
    let set = db.read_set("typed", &q).await.unwrap();
    assert_eq!(set.clone().into_rows(), rows);
    assert_eq!(
        String::from_utf8(set.to_json_vec()).unwrap(),
        serde_json::to_string(&rows).unwrap()
    );
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Typed {
        id: i64,
        t: Option<String>,
        i: Value,
        f: Option<f64>,
        b: Option<bool>,
        ts: Option<String>,
        j: Value,
        n: Value,
    }
    let typed: Vec<Typed> = db.read_as("typed", &q).await.unwrap();
    let via_values: Vec<Typed> = expected
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    assert_eq!(typed, via_values);
    assert_eq!(typed[2].j, json!("{not json"));
    assert_eq!(typed[0].j, json!({"b": [1, null], "a": "x"}));
    let first: Option<Typed> = db.get_as("typed", &json!(1)).await.unwrap();
    assert_eq!(first.as_ref(), via_values.first());
    // Text that is not UTF-8: the map read's error, whichever read.
    db.raw_query(
        "INSERT INTO typed (id, t) VALUES (99, CAST(x'ff' AS TEXT))",
        &Params::new(),
    )
    .await
    .unwrap();
    let bad = Query::new().filter(col("id").eq(99));
    let by_map = db.read("typed", &bad).await.unwrap_err();
    let typed = db.read_as::<Value>("typed", &bad).await.unwrap_err();
    let set = db.read_set("typed", &bad).await.unwrap_err();
    for e in [&typed, &set] {
        assert_eq!(e.kind(), by_map.kind());
        assert_eq!(e.kind(), ErrorKind::Internal);
    }
}
