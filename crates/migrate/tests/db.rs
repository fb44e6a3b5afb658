//! Database migrations: SQLite -> PostgreSQL (scratch schema per test),
//! verification, resume after a lost checkpoint, what the target cannot hold.

#![allow(clippy::unwrap_used)] // a failed setup step or assertion panics: this is a test

mod common;

use std::sync::Arc;

use serde_json::json;
use truststream_core_db::{col, ColumnDef, Database, Params, Query, Row, TableSchema, Value};
use truststream_db_memory::MemoryDatabase;
use truststream_db_postgres::testing::{server, Scratch};
use truststream_migrate::{run, state::State, Difference, Options, ProgressMode, Side};

fn side(db: &Arc<dyn Database>) -> Side {
    Side {
        db: Some(Arc::clone(db)),
        storage: None,
    }
}

fn options() -> Options {
    Options {
        progress: ProgressMode::Off,
        batch: 2_000,
        ..Options::default()
    }
}

async fn count(db: &dyn Database, table: &str) -> usize {
    db.read(table, &Query::new().select(["id"]))
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_copies_verifies_and_reports_a_changed_row() {
    let Some(url) = server().await else { return };
    let scratch = Scratch::new(url);
    let dir = tempfile::tempdir().unwrap();
    let src = common::sqlite(dir.path(), "src.db").await;
    let total = common::test_rows();
    common::fill(src.as_ref(), total).await;
    let dst = common::postgres(&scratch, "migrate_copy").await;

    let summary = run(&side(&src), &side(&dst), &options()).await.unwrap();
    assert!(summary.is_ok(), "{summary}");
    assert!(summary.issues.iter().all(|i| !i.blocking), "{summary}");
    assert_eq!(summary.tables.len(), 5);
    // Foreign-key order: referenced tables come first.
    let names: Vec<&str> = summary.tables.iter().map(|t| t.table.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("orgs") < pos("users") && pos("users") < pos("docs"));
    assert!(pos("docs") < pos("doc_tags") && pos("tags") < pos("doc_tags"));
    for (t, n) in common::counts(total) {
        let s = summary.tables.iter().find(|x| x.table == t).unwrap();
        assert_eq!(s.copied, n as u64, "{t}");
        let c = s.check.as_ref().unwrap();
        assert_eq!((c.source.rows, c.target.rows), (n as u64, n as u64), "{t}");
        assert_eq!(count(dst.as_ref(), t).await, n, "{t}");
    }
    // The schema travelled: foreign keys, unique column, the index.
    let docs = dst.describe_table("docs").await.unwrap().unwrap();
    assert_eq!(docs.foreign_keys.len(), 1);
    assert!(
        dst.describe_table("orgs")
            .await
            .unwrap()
            .unwrap()
            .find("name")
            .unwrap()
            .unique
    );
    let ix = dst
        .raw_query(
            "SELECT indexname::text AS n FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'docs_owner_idx'",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(ix.len(), 1);
    // A value read back is the value written (unicode, JSON, bytes, NULL).
    let u = dst
        .get("users", &json!("user-0000005-ü"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u["email"], Value::Null);
    let d = dst
        .get("docs", &json!("00000000-0000-4000-8000-000000000001"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d["body"]["title"], json!("doc «1» 🚀"));
    // The identity sequence moved past the copied keys.
    let o = dst
        .create(
            "orgs",
            json!({"name": "new", "created_at": "2024-01-01T00:00:00Z"})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(o["id"], json!(common::counts(total)[0].1 as i64 + 1));
    dst.delete("orgs", &o["id"]).await.unwrap();
    // The foreign keys, added after the rows (PostgreSQL can), hold.
    let orphan = dst
        .create(
            "docs",
            json!({"id": "67e55044-10b1-426f-9247-bb680e5fe0c8", "owner": "nobody"})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        orphan.kind(),
        truststream_core::ErrorKind::Conflict,
        "{orphan}"
    );

    // One row changed on the target: verify names exactly that row.
    let mut patch = Row::new();
    patch.insert("label".into(), json!("changed"));
    dst.update("tags", &json!(3), patch).await.unwrap();
    let check = Options {
        verify_only: true,
        ..options()
    };
    let summary = run(&side(&src), &side(&dst), &check).await.unwrap();
    assert!(!summary.is_ok());
    let diffs: Vec<&Difference> = summary.differences().collect();
    assert_eq!(
        diffs,
        vec![&Difference::ChangedRow {
            table: "tags".into(),
            key: "3".into(),
            columns: vec!["label".into()],
        }],
        "{summary}"
    );
    // A deleted row and an extra one are named too.
    dst.delete("doc_tags", &json!(10)).await.unwrap();
    dst.create(
        "tags",
        json!({"id": 1_000_000, "label": "extra"})
            .as_object()
            .cloned()
            .unwrap(),
    )
    .await
    .unwrap();
    let summary = run(&side(&src), &side(&dst), &check).await.unwrap();
    let mut diffs: Vec<String> = summary.differences().map(|d| d.to_string()).collect();
    diffs.sort();
    assert_eq!(
        diffs,
        vec![
            "table doc_tags: row 10 is missing on the target".to_string(),
            "table tags: row 1000000 is on the target only".to_string(),
            "table tags: row 3 differs in label".to_string(),
        ]
    );
    // A second fresh run refuses: the target tables hold rows.
    let again = run(&side(&src), &side(&dst), &options()).await.unwrap();
    assert!(again.wrote_nothing && !again.is_ok());
    assert!(again.to_string().contains("already holds rows"), "{again}");
    scratch.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_lost_checkpoint_writes_no_duplicate() {
    let Some(url) = server().await else { return };
    let scratch = Scratch::new(url);
    let dir = tempfile::tempdir().unwrap();
    let src = common::sqlite(dir.path(), "src.db").await;
    common::fill(src.as_ref(), 5_000).await;
    let dst = common::postgres(&scratch, "migrate_resume").await;
    let state = dir.path().join("state.json");
    let opts = Options {
        state_path: Some(state.clone()),
        batch: 300,
        ..options()
    };
    let first = run(&side(&src), &side(&dst), &opts).await.unwrap();
    assert!(first.is_ok(), "{first}");
    // Rewind the checkpoints as if the process died after several batches
    // were committed but before their checkpoints were written, and mark
    // every table unfinished.
    let mut s: State = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    for (name, t) in s.tables.iter_mut() {
        t.done = false;
        let keep = if name == "doc_tags" { 0 } else { t.rows / 3 };
        t.rows = keep;
        t.last_key = if keep == 0 {
            None
        } else {
            // The key of row number `keep` in key order.
            let rows = src
                .read(name, &Query::new().order_by_asc("id").limit(keep))
                .await
                .unwrap();
            rows.last().map(|r| r["id"].clone())
        };
    }
    // A fresh run refuses the old progress.
    let fresh = run(&side(&src), &side(&dst), &opts).await;
    assert!(fresh.is_err() || !fresh.unwrap().is_ok());
    std::fs::write(&state, serde_json::to_vec(&s).unwrap()).unwrap();
    let resumed = run(
        &side(&src),
        &side(&dst),
        &Options {
            resume: true,
            ..opts.clone()
        },
    )
    .await
    .unwrap();
    assert!(resumed.is_ok(), "{resumed}");
    for (t, n) in common::counts(5_000) {
        assert_eq!(
            count(dst.as_ref(), t).await,
            n,
            "{t}: no duplicate, none missing"
        );
    }
    scratch.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_sqlite_holds_loosely_is_reported_before_anything_is_written() {
    let Some(url) = server().await else { return };
    let scratch = Scratch::new(url);
    let dir = tempfile::tempdir().unwrap();
    let src = common::sqlite(dir.path(), "src.db").await;
    src.create_table(
        &TableSchema::new("readings")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::integer("celsius"))
            .column(ColumnDef::text("note")),
    )
    .await
    .unwrap();
    src.create_table(&TableSchema::new("fine").column(ColumnDef::integer("id").primary_key()))
        .await
        .unwrap();
    for i in 0..10 {
        src.create(
            "readings",
            json!({"id": i, "celsius": i * 3, "note": "ok"})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .await
        .unwrap();
    }
    // Another program wrote text into the integer column, and a NUL into text.
    src.raw_query(
        "INSERT INTO readings (id, celsius, note) VALUES (100, 'warm', 'x'), (101, 5, 'a' || char(0) || 'b')",
        &Params::new(),
    )
    .await
    .unwrap();
    let dst = common::postgres(&scratch, "migrate_loose").await;
    let summary = run(&side(&src), &side(&dst), &options()).await.unwrap();
    assert!(!summary.is_ok() && summary.wrote_nothing, "{summary}");
    let blocking: Vec<String> = summary
        .issues
        .iter()
        .filter(|i| i.blocking)
        .map(|i| format!("{}/{}", i.subject, i.column.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        blocking,
        vec![
            "table readings/celsius".to_string(),
            "table readings/note".to_string()
        ],
        "{summary}"
    );
    let text = summary.to_string();
    assert!(text.contains("table readings column celsius"), "{text}");
    assert!(
        text.contains("1 value(s) are stored as another type"),
        "{text}"
    );
    assert!(text.contains("NUL"), "{text}");
    // Nothing was written: not even the table that was fine.
    assert!(dst.describe_table("fine").await.unwrap().is_none());
    assert!(dst.describe_table("readings").await.unwrap().is_none());
    scratch.cleanup().await.unwrap();
}

#[tokio::test]
async fn memory_sources_need_the_table_list_and_dry_run_writes_nothing() {
    let src: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let dst: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    src.create_table(
        &TableSchema::new("notes")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::json("doc")),
    )
    .await
    .unwrap();
    let rows: Vec<Row> = (0..250)
        .map(|i| {
            json!({"id": format!("k{i:03}"), "doc": {"i": i}})
                .as_object()
                .cloned()
                .unwrap()
        })
        .collect();
    src.create_many("notes", rows).await.unwrap();
    let e = run(&side(&src), &side(&dst), &options()).await.unwrap_err();
    assert_eq!(e.kind(), truststream_core::ErrorKind::Unsupported);
    assert!(e.to_string().contains("--tables"), "{e}");
    let tables = Some(vec!["notes".to_string()]);
    let dry = Options {
        dry_run: true,
        tables: tables.clone(),
        ..options()
    };
    let s = run(&side(&src), &side(&dst), &dry).await.unwrap();
    assert!(s.wrote_nothing && s.is_ok());
    assert_eq!(s.tables[0].source_rows, Some(250));
    assert!(dst.describe_table("notes").await.unwrap().is_none());
    let copy = Options {
        tables,
        batch: 100,
        ..options()
    };
    let s = run(&side(&src), &side(&dst), &copy).await.unwrap();
    assert!(s.is_ok(), "{s}");
    assert_eq!(s.tables[0].copied, 250);
    let got = dst
        .read("notes", &Query::new().filter(col("id").eq("k249")))
        .await
        .unwrap();
    assert_eq!(got[0]["doc"], json!({"i": 249}));
}
