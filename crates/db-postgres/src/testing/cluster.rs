//! A throw-away PostgreSQL cluster of the test's own ([`PrivateCluster`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::in_ci;

/// A throw-away PostgreSQL cluster: `initdb` in a temporary directory, a
/// server on a free port of `127.0.0.1` (trust authentication, user and
/// database `postgres`, `fsync=off`), stopped and removed on drop.
///
/// For tests that stop, crash or restart the server: doing that to the
/// machine's shared server would disturb every other test using it. When
/// run as root the cluster belongs to the `postgres` user (`initdb`
/// refuses root) and the tools run through `runuser`.
///
/// The methods block until `pg_ctl` is done (`-w`): from async code call
/// them in [`tokio::task::spawn_blocking`].
///
/// ```no_run
/// use truststream_db_postgres::testing::PrivateCluster;
/// use truststream_db_postgres::{PgConfig, PgDatabase};
///
/// # async fn demo() {
/// let Some(cluster) = PrivateCluster::create() else {
///     return; // skipped (not under CI): no initdb/pg_ctl here
/// };
/// let db = PgDatabase::open(PgConfig::new(cluster.url())).await.unwrap();
/// let cluster = tokio::task::spawn_blocking(move || {
///     cluster.stop();
///     cluster.start();
///     cluster
/// })
/// .await
/// .unwrap();
/// # drop((db, cluster));
/// # }
/// ```
#[derive(Debug)]
pub struct PrivateCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    // Last: removed after the server is stopped in `drop`.
    dir: tempfile::TempDir,
}

/// The directory holding `initdb` and `pg_ctl`: beside `pg_config`, else
/// Debian's `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists());
    if from_pg_config.is_some() {
        return from_pg_config;
    }
    // Debian's pg_config may come from a client package: look beside it.
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    // The newest version.
    found.sort();
    found.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl PrivateCluster {
    /// Makes the cluster and starts its server.
    ///
    /// `None` (after saying so on stderr) when `initdb`/`pg_ctl` are not
    /// installed, outside CI: the caller skips. Under `CI=true`
    /// ([`in_ci`]) that panics, so a test needing a cluster never passes
    /// without one. Panics when `initdb` or the first start fails.
    pub fn create() -> Option<PrivateCluster> {
        let Some(bin) = bin_dir() else {
            assert!(
                !in_ci(),
                "initdb/pg_ctl are required under CI=true (install the PostgreSQL server package)"
            );
            eprintln!("skipping: no initdb/pg_ctl (install the PostgreSQL server package)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("truststream-pg-")
            .tempdir()
            .expect("a temporary directory for the cluster");
        let as_postgres = is_root();
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to postgres.
            let ok = Command::new("chown")
                .args(["postgres:postgres", &text(dir.path())])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown of the cluster directory to postgres");
        }
        let cluster = PrivateCluster {
            bin,
            data: dir.path().join("data"),
            port: free_port(),
            as_postgres,
            dir,
        };
        let data = text(&cluster.data);
        cluster.must(
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
        cluster.start();
        Some(cluster)
    }

    /// The URL of the cluster's `postgres` database as user `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port the server listens on (the same after every restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server and waits until it accepts connections. Panics when
    /// `pg_ctl start` fails (the server log is in the message).
    pub fn start(&self) {
        let sock = text(self.dir.path());
        let opts = format!(
            "-p {} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = format!("{sock}/server.log");
        let data = text(&self.data);
        let out = self
            .run(
                "pg_ctl",
                &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
            )
            .expect("pg_ctl runs");
        if !out.status.success() {
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "pg_ctl start failed: {}{}\nserver log:\n{server_log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Stops the server in `fast` mode (sessions are ended, open
    /// transactions rolled back, a clean shutdown) and waits until it is
    /// down. Panics when `pg_ctl stop` fails.
    pub fn stop(&self) {
        let data = text(&self.data);
        self.must("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// Crashes the server: `pg_ctl stop -m immediate`, where every server
    /// process quits at once without a shutdown checkpoint, as after a
    /// crash; the next [`PrivateCluster::start`] runs crash recovery.
    /// Panics when `pg_ctl` fails.
    pub fn kill(&self) {
        let data = text(&self.data);
        self.must("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::io::Result<Output> {
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
        let out = self
            .run(tool, args)
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Stopped or not, make sure no server outlives the directory.
        let data = text(&self.data);
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
