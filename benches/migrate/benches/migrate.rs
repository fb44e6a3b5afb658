//! `truststream migrate` against the tools a user would pick instead, on
//! the same data and the same servers, one after the other in one run:
//!
//! - sqlite -> postgres, `MIGRATE_BENCH_ROWS` rows (default 1,000,000) over
//!   two tables with a foreign key, JSON, timestamps and bytes: rows/s of
//!   `truststream_migrate::run` with `verify: false` (the copy alone:
//!   tables, rows, indexes, sequences) against `pgloader` (Debian package,
//!   its default workers; it verifies nothing) loading the same SQLite file
//!   into another fresh scratch schema; both commit into the same server
//!   with its default durability. A second row times the CLI's default,
//!   copy + verify (the verification re-reads both sides), without ratio.
//! - fs -> S3 on Garage (when the `garage` binary is installed), or fs ->
//!   fs otherwise (labelled): `MIGRATE_BENCH_OBJECTS` small objects
//!   (default 10,000) and 2 of `MIGRATE_BENCH_LARGE_MIB` MiB (default 100):
//!   the copy alone against `rclone copy` (its default transfers and
//!   checkers) of the same tree, each round into an empty bucket (rclone
//!   would skip objects a previous round left), then copy + verify as a
//!   second row. In the fs -> fs fallback storage-fs fsyncs every object;
//!   whether rclone's local writes do is not checked here, so that ratio is
//!   not a like-for-like durability comparison.
//! - Peak memory: the process's VmHWM, reset (`/proc/self/clear_refs`)
//!   right before each TrustStream run; a contender's maximum RSS from
//!   `/usr/bin/time -f %M`.
//!
//! The bench uses the `truststream` binary's allocator (mimalloc), so the
//! in-process runs are the CLI's.
//!
//! A contender that is not installed is reported as such, never as a pass.
//! `MIGRATE_BENCH_ROUNDS` (default 3) rounds each; medians and spread.
//! `MIGRATE_BENCH_ONLY=db` or `=storage` runs one half.

#![allow(clippy::unwrap_used)] // a bench binary: a failed setup step panics

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use truststream_core_db::{ColumnDef, Database, Row, TableSchema};
use truststream_core_storage::{ListOptions, Storage, UploadOptions};
use truststream_db_postgres::testing::{server, Scratch};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_migrate::{Options, ProgressMode, Side};
use truststream_storage_fs::FsStorage;

/// The `truststream` binary's allocator, so the in-process runs allocate
/// as `truststream migrate` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_reset() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs `cmd` under `/usr/bin/time -f %M`: its output and its peak RSS in
/// MiB (NaN when `/usr/bin/time` is missing: the command then runs alone).
fn measured(cmd: &Command, dir: &Path) -> (std::process::Output, f64) {
    let time = Path::new("/usr/bin/time").exists();
    let out_file = dir.join("time.out");
    let mut run = if time {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&out_file)
            .arg(cmd.get_program());
        c
    } else {
        Command::new(cmd.get_program())
    };
    run.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => run.env(k, v),
            None => run.env_remove(k),
        };
    }
    let out = run.output().unwrap();
    let peak = std::fs::read_to_string(&out_file)
        .ok()
        .filter(|_| time)
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse::<f64>().ok()))
        .map_or(f64::NAN, |kib| kib / 1024.0);
    (out, peak)
}

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn fill_sqlite(path: &Path, rows: usize) {
    let db = SqliteDatabase::open(SqliteConfig::file(path))
        .await
        .unwrap();
    db.create_table(
        &TableSchema::new("accounts")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("name").not_null()),
    )
    .await
    .unwrap();
    db.create_table(
        &TableSchema::new("events")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::integer("account_id").not_null())
            .column(ColumnDef::text("kind").not_null())
            .column(ColumnDef::json("payload"))
            .column(ColumnDef::timestamp("at").not_null())
            .column(ColumnDef::bytes("raw"))
            .references("account_id", "accounts", "id"),
    )
    .await
    .unwrap();
    let accounts: Vec<Row> = (0..1000)
        .map(|i| obj(json!({"id": i, "name": format!("account {i} ✓")})))
        .collect();
    db.create_many("accounts", accounts).await.unwrap();
    let mut i = 0;
    while i < rows {
        let end = (i + 10_000).min(rows);
        let batch: Vec<Row> = (i..end)
            .map(|k| {
                let kind = ["open", "close", "move"][k % 3];
                obj(json!({
                    "id": k, "account_id": k % 1000, "kind": kind,
                    "payload": if k % 4 == 0 { serde_json::Value::Null } else { json!({"k": k, "s": "données"}) },
                    "at": format!("2025-03-{:02}T12:{:02}:{:02}.000001Z", k % 28 + 1, k % 60, (k / 60) % 60),
                    "raw": "AAECAwQFBgc=",
                }))
            })
            .collect();
        db.create_many("events", batch).await.unwrap();
        i = end;
    }
    db.disconnect().await.unwrap();
}

fn obj(v: serde_json::Value) -> Row {
    v.as_object().cloned().unwrap()
}

async fn bench_db(rounds: usize) {
    let rows = env_usize("MIGRATE_BENCH_ROWS", 1_000_000);
    let Some(url) = server().await else {
        println!("db: PostgreSQL not reachable; skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.db");
    fill_sqlite(&file, rows).await;
    let total = (rows + 1000) as f64;
    let scratch = Scratch::new(url.clone());
    let mut ours = Vec::new();
    let mut peaks = Vec::new();
    let mut full = Vec::new();
    for _ in 0..rounds {
        for verify in [false, true] {
            let src: Arc<dyn Database> = Arc::new(
                SqliteDatabase::open(SqliteConfig::file(&file))
                    .await
                    .unwrap(),
            );
            let dst: Arc<dyn Database> = Arc::new(scratch.database("bench_migrate").await.unwrap());
            // The CLI's default: a checkpoint file written after each batch.
            let state = dir.path().join("state.json");
            let _ = std::fs::remove_file(&state);
            peak_reset();
            let t = Instant::now();
            let summary = truststream_migrate::run(
                &Side {
                    db: Some(src),
                    storage: None,
                },
                &Side {
                    db: Some(dst),
                    storage: None,
                },
                &Options {
                    progress: ProgressMode::Off,
                    verify,
                    state_path: Some(state),
                    ..Options::default()
                },
            )
            .await
            .unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(summary.is_ok(), "{summary}");
            if verify {
                full.push(total / secs);
            } else {
                ours.push(total / secs);
                peaks.push(peak_mib());
            }
        }
    }
    let (m, lo, hi) = median(&mut ours);
    let (pm, _, pmax) = median(&mut peaks);
    let (fm, flo, fhi) = median(&mut full);
    println!(
        "db sqlite -> postgres, {rows} rows: truststream migrate (copy only) median {m:.0} rows/s [{lo:.0}..{hi:.0}], peak RSS median {pm:.0} MiB (max {pmax:.0})"
    );
    println!(
        "db sqlite -> postgres, {rows} rows: truststream migrate (copy + verify, the CLI default; no contender does this) median {fm:.0} rows/s [{flo:.0}..{fhi:.0}]"
    );
    if !installed("pgloader") {
        println!("db: pgloader is not installed (apt-get install pgloader): its row is missing");
    } else {
        let mut theirs = Vec::new();
        let mut their_peaks = Vec::new();
        for _ in 0..rounds {
            let cfg = scratch.config("bench_pgloader");
            let schema = cfg.schema.clone().unwrap();
            truststream_db_postgres::testing::admin(&cfg, &[format!("CREATE SCHEMA {schema}")])
                .await;
            let load = dir.path().join("load.pgl");
            std::fs::write(
                &load,
                format!(
                    "LOAD DATABASE FROM sqlite://{} INTO {url}\n\
                     WITH include drop, create tables, create indexes, reset sequences\n\
                     SET search_path TO '{schema}';\n",
                    file.display()
                ),
            )
            .unwrap();
            let mut cmd = Command::new("pgloader");
            cmd.arg(&load);
            let t = Instant::now();
            let (out, peak) = measured(&cmd, dir.path());
            let secs = t.elapsed().as_secs_f64();
            their_peaks.push(peak);
            assert!(
                out.status.success(),
                "pgloader failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            theirs.push(total / secs);
        }
        let (t, lo, hi) = median(&mut theirs);
        let (tp, _, tpmax) = median(&mut their_peaks);
        println!(
            "db sqlite -> postgres, {rows} rows: pgloader median {t:.0} rows/s [{lo:.0}..{hi:.0}], peak RSS median {tp:.0} MiB (max {tpmax:.0}); ratio truststream (copy only)/pgloader {:.2}x",
            m / t
        );
    }
    scratch.cleanup().await.unwrap();
}

async fn fill_tree(root: &Path, small: usize, large_mib: usize) -> u64 {
    let fs = FsStorage::open(root).await.unwrap();
    fs.create_bucket("bench").await.unwrap();
    let mut bytes = 0u64;
    for i in 0..small {
        let body = bytes::Bytes::from(vec![(i % 251) as u8; 1024 + i % 4096]);
        bytes += body.len() as u64;
        let key = format!("d{}/sub {}/é{}/obj-{i}.bin", i % 10, i % 7, i % 3);
        fs.upload(
            "bench",
            &key,
            body,
            &UploadOptions::new().content_type("application/octet-stream"),
        )
        .await
        .unwrap();
    }
    for i in 0..2 {
        let body = bytes::Bytes::from(vec![i as u8 + 1; large_mib << 20]);
        bytes += body.len() as u64;
        fs.upload(
            "bench",
            &format!("large/{i}.bin"),
            body,
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    }
    bytes
}

async fn bench_storage(rounds: usize) {
    let small = env_usize("MIGRATE_BENCH_OBJECTS", 10_000);
    let large = env_usize("MIGRATE_BENCH_LARGE_MIB", 100);
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    let bytes = fill_tree(&src_root, small, large).await;
    let garage = match truststream_storage_s3::testing::garage_binary() {
        Ok(_) => Some(
            truststream_storage_s3::testing::Garage::shared()
                .await
                .unwrap(),
        ),
        Err(why) => {
            println!("storage: no Garage ({why}); fs -> fs instead, labelled");
            None
        }
    };
    let label = if garage.is_some() {
        "fs -> s3 (garage)"
    } else {
        "fs -> fs"
    };
    let mut ours = Vec::new();
    let mut peaks = Vec::new();
    let mut full = Vec::new();
    for r in 0..rounds {
        for verify in [false, true] {
            let src: Arc<dyn Storage> = Arc::new(FsStorage::open(&src_root).await.unwrap());
            let dst: Arc<dyn Storage> = match &garage {
                Some(g) => {
                    let s3 = g.storage().await.unwrap();
                    empty_bucket(&s3, "bench").await;
                    Arc::new(s3)
                }
                None => Arc::new(
                    FsStorage::open(dir.path().join(format!("dst{r}-{verify}")))
                        .await
                        .unwrap(),
                ),
            };
            peak_reset();
            let t = Instant::now();
            let summary = truststream_migrate::run(
                &Side {
                    db: None,
                    storage: Some(src),
                },
                &Side {
                    db: None,
                    storage: Some(dst),
                },
                &Options {
                    progress: ProgressMode::Off,
                    verify,
                    ..Options::default()
                },
            )
            .await
            .unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(summary.is_ok(), "{summary}");
            if verify {
                full.push(bytes as f64 / secs / 1e6);
            } else {
                ours.push(bytes as f64 / secs / 1e6);
                peaks.push(peak_mib());
            }
        }
    }
    let (m, lo, hi) = median(&mut ours);
    let (pm, _, pmax) = median(&mut peaks);
    let (fm, flo, fhi) = median(&mut full);
    println!(
        "storage {label}, {small} small + 2 x {large} MiB: truststream migrate (copy only) median {m:.1} MB/s [{lo:.1}..{hi:.1}], peak RSS median {pm:.0} MiB (max {pmax:.0})"
    );
    println!(
        "storage {label}, {small} small + 2 x {large} MiB: truststream migrate (copy + verify, the CLI default; rclone copy does not list and compare afterwards) median {fm:.1} MB/s [{flo:.1}..{fhi:.1}]"
    );
    if !installed("rclone") {
        println!("storage: rclone is not installed (apt-get install rclone): its row is missing");
        return;
    }
    // The Garage remote, through rclone's environment configuration.
    let remote_env: Vec<(&str, String)> = match &garage {
        Some(g) => {
            let c = g.config();
            vec![
                ("RCLONE_CONFIG_GARAGE_TYPE", "s3".to_string()),
                ("RCLONE_CONFIG_GARAGE_PROVIDER", "Other".to_string()),
                ("RCLONE_CONFIG_GARAGE_ENDPOINT", g.endpoint()),
                (
                    "RCLONE_CONFIG_GARAGE_REGION",
                    c.region.clone().unwrap_or_default(),
                ),
                (
                    "RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID",
                    c.access_key_id
                        .as_ref()
                        .map(|s| s.expose().to_string())
                        .unwrap_or_default(),
                ),
                (
                    "RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY",
                    c.secret_access_key
                        .as_ref()
                        .map(|s| s.expose().to_string())
                        .unwrap_or_default(),
                ),
            ]
        }
        None => Vec::new(),
    };
    let mut theirs = Vec::new();
    let mut their_peaks = Vec::new();
    for r in 0..rounds {
        // A new bucket (or directory) per round: rclone copy skips what a
        // previous round left, which would time no work.
        let dest = match &garage {
            Some(_) => format!("garage:rclone-bench-{}-{r}", std::process::id()),
            None => dir.path().join(format!("rclone{r}")).display().to_string(),
        };
        let mut cmd = Command::new("rclone");
        cmd.arg("copy")
            .arg(src_root.join("bench"))
            .arg(&dest)
            .envs(remote_env.iter().cloned())
            // Garage is plain HTTP on loopback; rclone's S3 client fails
            // to start when a custom CA bundle is set in the environment.
            .env_remove("AWS_CA_BUNDLE");
        let t = Instant::now();
        let (out, peak) = measured(&cmd, dir.path());
        let secs = t.elapsed().as_secs_f64();
        their_peaks.push(peak);
        assert!(
            out.status.success(),
            "rclone failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        theirs.push(bytes as f64 / secs / 1e6);
        if garage.is_some() {
            let _ = Command::new("rclone")
                .arg("purge")
                .arg(&dest)
                .envs(remote_env.iter().cloned())
                .env_remove("AWS_CA_BUNDLE")
                .output();
        }
    }
    let (t, lo, hi) = median(&mut theirs);
    let (tp, _, tpmax) = median(&mut their_peaks);
    println!(
        "storage {label}: rclone copy median {t:.1} MB/s [{lo:.1}..{hi:.1}], peak RSS median {tp:.0} MiB (max {tpmax:.0}); ratio truststream (copy only)/rclone {:.2}x",
        m / t
    );
}

/// Deletes every object of `bucket` (when it exists), so a round copies
/// into an empty bucket.
async fn empty_bucket(s: &dyn Storage, bucket: &str) {
    if !s
        .list_buckets()
        .await
        .unwrap()
        .iter()
        .any(|b| b.name == bucket)
    {
        return;
    }
    loop {
        let page = s
            .list(bucket, &ListOptions::new().limit(1000))
            .await
            .unwrap();
        if page.objects.is_empty() {
            return;
        }
        for o in page.objects {
            s.delete(bucket, &o.key).await.unwrap();
        }
    }
}

fn main() {
    let rounds = env_usize("MIGRATE_BENCH_ROUNDS", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("MIGRATE_BENCH_ONLY").unwrap_or_default();
    rt.block_on(async {
        if only != "storage" {
            bench_db(rounds).await;
        }
        if only != "db" {
            bench_storage(rounds).await;
        }
    });
}
