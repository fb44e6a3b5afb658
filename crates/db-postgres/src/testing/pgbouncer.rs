//! A private pgbouncer in transaction mode ([`PgBouncer`]).

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use super::in_ci;

/// A private pgbouncer of the test's own, in **transaction** mode, on a
/// free port of `127.0.0.1`, in front of one database of a PostgreSQL
/// server (trust authentication, user `postgres`): `pool_mode =
/// transaction`, `default_pool_size` server connections shared by every
/// client (so consecutive transactions of one client really land on
/// different server connections). Killed (`SIGKILL`) and its directory
/// removed on drop.
///
/// Run as root, pgbouncer refuses to start: it is then started with
/// `-u postgres`. The binary is `PGBOUNCER`, else `pgbouncer` on `PATH`,
/// else `/usr/sbin/pgbouncer` (Debian's package).
///
/// The methods block (process start, waiting for the port): from async
/// code call them in [`tokio::task::spawn_blocking`].
#[derive(Debug)]
pub struct PgBouncer {
    bin: PathBuf,
    port: u16,
    database: String,
    user: String,
    as_postgres: bool,
    child: Mutex<Option<Child>>,
    // Last: removed after the process is killed in `drop`.
    dir: tempfile::TempDir,
}

fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGBOUNCER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("pgbouncer"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")).filter(|p| p.is_file()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl PgBouncer {
    /// Starts a pgbouncer with `pool_size` server connections in front of
    /// the database `server_url` names (its host, port, database and
    /// user; a password is not supported: trust authentication).
    ///
    /// `None` (after saying so on stderr) when pgbouncer is not installed,
    /// outside CI: the caller skips. Under `CI=true` ([`in_ci`]) that
    /// panics, so a test needing it never passes without it. Panics when
    /// it does not start.
    ///
    /// pgbouncer refuses startup parameters it does not know; this one
    /// ignores `extra_float_digits`, `options` and `search_path` (what sqlx
    /// sends for a provider with the pooler mode off), see
    /// [`PgBouncer::start_strict`].
    pub fn start(server_url: &str, pool_size: u32) -> Option<PgBouncer> {
        Self::start_with(
            server_url,
            pool_size,
            "extra_float_digits,options,search_path",
        )
    }

    /// [`PgBouncer::start`] without ignoring any startup parameter
    /// (pgbouncer's default): a client sending `options` or
    /// `extra_float_digits` is refused.
    pub fn start_strict(server_url: &str, pool_size: u32) -> Option<PgBouncer> {
        Self::start_with(server_url, pool_size, "")
    }

    fn start_with(server_url: &str, pool_size: u32, ignore: &str) -> Option<PgBouncer> {
        let Some(bin) = binary() else {
            assert!(
                !in_ci(),
                "pgbouncer is required under CI=true (apt-get install pgbouncer)"
            );
            eprintln!("skipping: pgbouncer is not installed (apt-get install pgbouncer)");
            return None;
        };
        let opts = PgConnectOptions::from_str(server_url).expect("a valid PostgreSQL URL");
        let database = opts.get_database().unwrap_or("postgres").to_string();
        let user = opts.get_username().to_string();
        let dir = tempfile::Builder::new()
            .prefix("truststream-pgbouncer-")
            .tempdir()
            .expect("a temporary directory for pgbouncer");
        let as_postgres = is_root();
        let port = free_port();
        let ini = format!(
            "[databases]\n\
             {database} = host={host} port={pg_port} dbname={database} user={user}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 500\n\
             max_db_connections = {pool_size}\n\
             ignore_startup_parameters = {ignore}\n\
             server_check_delay = 0\n\
             logfile = {dir}/pgbouncer.log\n\
             admin_users = {user}\n",
            host = opts.get_host(),
            pg_port = opts.get_port(),
            dir = text(dir.path()),
        );
        let write = |name: &str, body: &str| {
            let mut f =
                std::fs::File::create(dir.path().join(name)).expect("write pgbouncer files");
            f.write_all(body.as_bytes()).expect("write pgbouncer files");
        };
        write("pgbouncer.ini", &ini);
        write("userlist.txt", &format!("\"{user}\" \"\"\n"));
        if as_postgres {
            // pgbouncer refuses root: it runs as postgres, which must read
            // its files and write its log.
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres", &text(dir.path())])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown of the pgbouncer directory to postgres");
        }
        let bouncer = PgBouncer {
            bin,
            port,
            database,
            user,
            as_postgres,
            child: Mutex::new(None),
            dir,
        };
        bouncer.restart();
        Some(bouncer)
    }

    /// The URL of the database through pgbouncer.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            self.user, self.port, self.database
        )
    }

    /// The port pgbouncer listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// pgbouncer's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }

    /// Kills pgbouncer at once (`SIGKILL`: client and server connections
    /// drop, the server rolls back their open transactions) and waits for
    /// it to exit.
    pub fn kill(&self) {
        if let Some(mut child) = crate::lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts pgbouncer (killing a running one first) and waits until it
    /// accepts connections. Panics when it does not within 10 s (its log
    /// is in the message).
    pub fn restart(&self) {
        self.kill();
        let ini = text(&self.dir.path().join("pgbouncer.ini"));
        let mut cmd = Command::new(&self.bin);
        if self.as_postgres {
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        *crate::lock(&self.child) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            let exited = crate::lock(&self.child)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "pgbouncer did not start ({exited:?}); its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.kill();
    }
}
