//! A PostgreSQL server stopped and started again under a running writer.
//!
//! The test makes its own throw-away cluster (`initdb` + `pg_ctl` on a free
//! port, as the `postgres` user when run as root) so restarting it cannot
//! disturb other tests sharing the machine's server. What it proves:
//! - writes while the server is down fail with `Unavailable` (retryable)
//!   within the acquire timeout, none hangs;
//! - the pool recovers by itself once the server is back (same process,
//!   same provider);
//! - every write that returned `Ok` is in the table afterwards;
//! - a change-feed subscriber is told that changes may have been lost, and
//!   receives changes again after the restart.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use truststream_core_db::{ColumnDef, Database, ErrorKind, Query, TableSchema};
use truststream_db_postgres::testing::in_ci;
use truststream_db_postgres::{PgConfig, PgDatabase};

/// A private cluster, stopped on drop.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
    as_postgres: bool,
}

fn bin_dir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if p.join("initdb").exists() {
        return Some(p);
    }
    // Debian's pg_config may come from a client package: look beside it.
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .find(|p| p.join("initdb").exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    fn run(&self, tool: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).output()
    }

    fn must(&self, tool: &str, args: &[&str]) {
        let out = self.run(tool, args).expect(tool);
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&self) {
        let data = self.data.to_string_lossy().to_string();
        let sock = self
            .data
            .parent()
            .expect("parent")
            .to_string_lossy()
            .to_string();
        let opts = format!(
            "-p {} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = format!("{sock}/server.log");
        self.must(
            "pg_ctl",
            &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
        );
    }

    fn stop(&self) {
        let data = self.data.to_string_lossy().to_string();
        self.must("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// `None` (skip) when the PostgreSQL server binaries are not installed,
    /// outside CI; under CI that is a failure.
    fn create() -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            assert!(!in_ci(), "initdb/pg_ctl are required under CI=true");
            eprintln!("skipping: no initdb/pg_ctl (install postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to postgres.
            let ok = Command::new("chown")
                .args(["postgres:postgres", &dir.path().to_string_lossy()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown of the cluster directory to postgres");
        }
        let c = Cluster {
            bin,
            data,
            port: free_port(),
            _dir: dir,
            as_postgres,
        };
        let data = c.data.to_string_lossy().to_string();
        c.must(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        c.start();
        Some(c)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_recovers_from_a_server_restart_and_keeps_every_acknowledged_write() {
    let Some(cluster) = Cluster::create() else {
        return;
    };
    let mut config = PgConfig::new(cluster.url());
    config.acquire_timeout_ms = 1_000;
    config.max_connections = 4;
    let db = Arc::new(PgDatabase::open(config).await.expect("open"));
    db.create_table(
        &TableSchema::new("writes")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("note")),
    )
    .await
    .unwrap();
    let mut feed = db.subscribe_changes(Some("writes")).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures = Vec::new();
            let mut slowest = Duration::ZERO;
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let t = Instant::now();
                let r = db
                    .create(
                        "writes",
                        json!({"id": i, "note": "w"}).as_object().unwrap().clone(),
                    )
                    .await;
                slowest = slowest.max(t.elapsed());
                match r {
                    Ok(_) => acked.push((i, Instant::now())),
                    Err(e) => {
                        failures.push((e.kind(), e.is_retryable(), e.to_string()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (acked, failures, slowest)
        })
    };

    tokio::time::sleep(Duration::from_millis(400)).await;
    let stopper = tokio::task::spawn_blocking(move || {
        cluster.stop();
        std::thread::sleep(Duration::from_millis(1_500));
        cluster.start();
        cluster
    });
    let cluster = stopper.await.unwrap();
    let restarted_at = Instant::now();
    // Let the writer run against the restarted server.
    let resumed_from = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = db.read("writes", &Query::new()).await.map(|r| r.len());
        if n.is_ok() || resumed_from.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, failures, slowest) = writer.await.unwrap();

    eprintln!(
        "{} writes acknowledged, {} refused during the outage, slowest call {slowest:?}",
        acked.len(),
        failures.len()
    );
    assert!(!failures.is_empty(), "the outage was seen by the writer");
    for (kind, retryable, msg) in &failures {
        assert_eq!(*kind, ErrorKind::Unavailable, "{msg}");
        assert!(*retryable, "{msg}");
    }
    // Acquire timeout 1 s; a call may also wait for a connect attempt and a
    // statement already sent when the server went away.
    assert!(
        slowest < Duration::from_secs(5),
        "a write hung for {slowest:?}"
    );

    // Same provider, same process: the pool came back by itself.
    let stored: std::collections::HashSet<i64> = db
        .read("writes", &Query::new())
        .await
        .expect("reads after the restart")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let missing: Vec<i64> = acked
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| !stored.contains(i))
        .collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let after_restart = acked.iter().filter(|(_, at)| *at > restarted_at).count();
    assert!(after_restart > 0, "writes resumed after the restart");

    // The feed reported the gap, then delivers again.
    let mut saw_gap = false;
    let fresh = db
        .create(
            "writes",
            json!({"id": -1, "note": "after"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let item = tokio::time::timeout_at(deadline.into(), feed.recv())
            .await
            .expect("the feed delivers after the restart")
            .expect("feed open");
        match item {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                saw_gap = true;
            }
            Ok(c) if c.key == fresh["id"] => break,
            Ok(_) => {}
        }
    }
    assert!(saw_gap, "subscribers are told changes may have been lost");
    drop(feed);
    drop(db);
    drop(cluster);
}
