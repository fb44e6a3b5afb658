//! `truststream migrate` run as a user would: the binary, a configuration
//! file with two profiles (the embedded SQLite + files, and PostgreSQL in a
//! scratch schema + another directory), killed with SIGKILL mid-copy and
//! resumed.

#![allow(clippy::unwrap_used)] // a failed setup step or assertion panics: this is a test

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use truststream_core_db::{ColumnDef, Database, Query, Row, TableSchema};
use truststream_core_storage::{Storage, UploadOptions};
use truststream_db_postgres::testing::{server, Scratch};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_storage_fs::FsStorage;

const ROWS: usize = 60_000;

fn truststream(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_truststream"));
    cmd.current_dir(cwd).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRUSTSTREAM_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn output(mut cmd: Command) -> (Option<i32>, String) {
    let out = cmd.output().expect("the truststream binary runs");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn fill_source(dir: &Path) {
    let db = SqliteDatabase::open(SqliteConfig::file(dir.join("src.db")))
        .await
        .unwrap();
    db.create_table(
        &TableSchema::new("authors")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("name").not_null()),
    )
    .await
    .unwrap();
    db.create_table(
        &TableSchema::new("posts")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::integer("author_id").not_null())
            .column(ColumnDef::json("doc"))
            .column(ColumnDef::timestamp("at"))
            .column(ColumnDef::bytes("raw"))
            .references("author_id", "authors", "id"),
    )
    .await
    .unwrap();
    let authors: Vec<Row> = (0..100)
        .map(|i| obj(json!({"id": i, "name": format!("autor {i} ✍")})))
        .collect();
    db.create_many("authors", authors).await.unwrap();
    for start in (0..ROWS).step_by(5_000) {
        let rows: Vec<Row> = (start..start + 5_000)
            .map(|i| {
                obj(json!({
                    "id": i,
                    "author_id": i % 100,
                    "doc": if i % 3 == 0 { serde_json::Value::Null } else { json!({"i": i, "t": "日本"}) },
                    "at": format!("2024-02-{:02}T01:02:03.456789Z", i % 28 + 1),
                    "raw": "AAEC/w==",
                }))
            })
            .collect();
        db.create_many("posts", rows).await.unwrap();
    }
    let fs = FsStorage::open(dir.join("files-src")).await.unwrap();
    fs.create_bucket("avatars").await.unwrap();
    for i in 0..30 {
        fs.upload(
            "avatars",
            &format!("users/ü{i}/deep/er/avatar 😀.png"),
            bytes::Bytes::from(vec![i as u8; 1000 + i]),
            &UploadOptions::new()
                .content_type("image/png")
                .metadata("k", "v"),
        )
        .await
        .unwrap();
    }
    db.disconnect().await.unwrap();
}

fn obj(v: serde_json::Value) -> Row {
    v.as_object().cloned().unwrap()
}

fn rows_in_state(path: &Path) -> u64 {
    let Ok(bytes) = std::fs::read(path) else {
        return 0;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return 0;
    };
    v["tables"]
        .as_object()
        .map(|t| t.values().filter_map(|x| x["rows"].as_u64()).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_files_to_postgres_and_files_killed_and_resumed() {
    let Some(url) = server().await else { return };
    let scratch = Scratch::new(url.clone());
    let schema = scratch.config("migrate_cli").schema.clone().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fill_source(dir).await;
    let config = format!(
        "[default.database]\ntype = \"sqlite\"\npath = \"{src}\"\n\
         [default.storage]\ntype = \"fs\"\nroot = \"{files}\"\n\
         [target.database]\ntype = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n\
         [target.storage]\ntype = \"fs\"\nroot = \"{files2}\"\n",
        src = dir.join("src.db").display(),
        files = dir.join("files-src").display(),
        files2 = dir.join("files-dst").display(),
    );
    std::fs::write(dir.join("truststream.toml"), config).unwrap();
    let state = dir.join("truststream-migrate-default-target.json");

    // Dry run: the plan, nothing written.
    let (code, out) = output(truststream(
        dir,
        &[
            "migrate",
            "--from",
            "default",
            "--to",
            "target",
            "--dry-run",
        ],
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("posts"), "{out}");
    assert!(!state.exists());

    // The copy, killed with SIGKILL once 40 % of the rows are committed.
    let mut child = truststream(
        dir,
        &[
            "migrate", "--from", "default", "--to", "target", "--only", "db", "--batch", "500",
            "--plain",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let total = (ROWS + 100) as u64;
    loop {
        let n = rows_in_state(&state);
        if n * 10 >= total * 4 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the copy ended before it was killed ({status}), {n} rows recorded");
        }
        assert!(Instant::now() < deadline, "no progress: {n} rows recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let recorded = rows_in_state(&state);
    assert!(recorded < total, "killed before the end: {recorded}");

    // A fresh run refuses the half-done state; --resume finishes the copy
    // (and copies the storage, which the killed run did not touch).
    let (code, out) = output(truststream(
        dir,
        &["migrate", "--from", "default", "--to", "target"],
    ));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--resume"), "{out}");
    let (code, out) = output(truststream(
        dir,
        &[
            "migrate", "--from", "default", "--to", "target", "--resume", "--plain",
        ],
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("avatars"), "{out}");

    // Nothing duplicated or missing: counts on the target, and verify.
    let pg = truststream_db_postgres::PgDatabase::open(
        truststream_db_postgres::PgConfig::new(url).with_schema(schema),
    )
    .await
    .unwrap();
    let n = pg
        .read("posts", &Query::new().select(["id"]))
        .await
        .unwrap()
        .len();
    assert_eq!(n, ROWS);
    let (code, out) = output(truststream(
        dir,
        &[
            "migrate",
            "--from",
            "default",
            "--to",
            "target",
            "--verify-only",
        ],
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok"), "{out}");

    // A row changed on the target: verify names it and exits 1.
    let mut patch = Row::new();
    patch.insert("name".into(), json!("someone else"));
    pg.update("authors", &json!(7), patch).await.unwrap();
    let (code, out) = output(truststream(
        dir,
        &[
            "migrate",
            "--from",
            "default",
            "--to",
            "target",
            "--verify-only",
            "--only",
            "db",
        ],
    ));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("table authors: row 7 differs in name"),
        "{out}"
    );
    pg.disconnect().await.unwrap();
    scratch.cleanup().await.unwrap();
}
