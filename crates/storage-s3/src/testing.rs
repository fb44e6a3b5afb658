//! A throw-away single-node [Garage](https://garagehq.deuxfleurs.fr) server
//! for tests, the xtask and benchmarks (feature `testing`).
//!
//! [`Garage::shared`] reuses one server per machine: its state (ports, key,
//! pid) lives in `$TS_GARAGE_DIR` (not `TRUSTSTREAM_*`: that prefix is the
//! runtime configuration's, where an unknown name is an error; default
//! `~/.cache/truststream/garage`), guarded by a file lock, and the server
//! keeps running after the process that started it exits, so the next test
//! process or `cargo xtask test` run reuses it in milliseconds.
//! [`Garage::stop_shared`] stops it. [`Garage::start_private`] starts a server
//! owned by the caller (stopped on drop), for fault tests that kill and
//! restart it.
//!
//! The binary is `$GARAGE_BIN`, else `garage` on `PATH`, else
//! `~/.cargo/bin/garage` (`cargo install garage --version 2.5.0 --locked`).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use truststream_core_storage::{Error, SignedUrlMethod, Storage};

use crate::{S3Storage, S3StorageConfig};

/// Region the servers are configured with.
pub const REGION: &str = "garage";

/// The bucket [`Garage::config`] names as `probe_bucket`, created by
/// [`Garage::ready`]: providers probe conditional writes there at connect,
/// never in a bucket a test is using (a probe object would show in its
/// listings).
pub const PROBE_BUCKET: &str = "truststream-probe";

/// A running Garage server and the key to use it.
#[derive(Debug)]
pub struct Garage {
    dir: PathBuf,
    /// Keeps a private server's directory alive (deleted on drop).
    _temp: Option<tempfile::TempDir>,
    child: Option<std::process::Child>,
    /// Owned servers are stopped on drop; the shared one is not.
    owned: bool,
    s3_port: u16,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

/// Where the binary is, or why it is missing.
pub fn garage_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("GARAGE_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("GARAGE_BIN={} is not a file", p.display()))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("garage");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cargo/bin/garage");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(
        "the garage binary is not installed: run `cargo install garage --version 2.5.0 \
         --locked` (or set GARAGE_BIN)"
            .to_string(),
    )
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn random_hex(bytes: usize) -> String {
    use sha2::Digest;
    // Unpredictable enough for a loopback test server: time, pid, address.
    let mut out = String::new();
    let mut n = 0u64;
    while out.len() < bytes * 2 {
        let seed = format!(
            "{:?}{}{n}{:p}",
            std::time::SystemTime::now(),
            std::process::id(),
            &out
        );
        out.push_str(&hex::encode(sha2::Sha256::digest(seed.as_bytes())));
        n += 1;
    }
    out.truncate(bytes * 2);
    out
}

fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TS_GARAGE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/truststream/garage")
}

/// Runs `garage -c <dir>/garage.toml args...`, returning stdout.
fn cli(dir: &Path, args: &[&str]) -> Result<String, String> {
    let bin = garage_binary()?;
    let out = Command::new(&bin)
        .arg("-c")
        .arg(dir.join("garage.toml"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "garage {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

impl Garage {
    /// A new server in a fresh temporary directory, stopped (and its data
    /// deleted) on drop.
    pub async fn start_private() -> Result<Garage, String> {
        let temp = tempfile::Builder::new()
            .prefix("truststream-garage-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let mut g = Garage::init(temp.path().to_path_buf()).await?;
        g._temp = Some(temp);
        g.owned = true;
        Ok(g)
    }

    /// The machine's shared server: reused when it is running, started (and
    /// left running) otherwise.
    pub async fn shared() -> Result<Garage, String> {
        let dir = shared_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let lock = std::fs::File::create(dir.join("lock"))
            .map_err(|e| format!("cannot create the lock file: {e}"))?;
        // Blocking is fine: the lock is held for seconds at most.
        let guard = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot lock {}: {e}", dir.display()))?;
        let result = match Garage::load(&dir) {
            // A loaded machine (a CI run's tests) can take a few seconds to
            // answer; replacing a live server for that stops it under the
            // feet of the test binaries using it.
            Some(g) if g.ready(Duration::from_secs(10)).await.is_ok() => Ok(g),
            _ => {
                Garage::stop_recorded(&dir);
                let server_dir = dir.join("server");
                let _ = std::fs::remove_dir_all(&server_dir);
                let mut g = Garage::init(server_dir).await?;
                g.owned = false;
                g.save(&dir)?;
                Ok(g)
            }
        };
        drop(guard);
        result
    }

    /// Stops the shared server, if one is running. Returns whether one was.
    pub fn stop_shared() -> bool {
        Garage::stop_recorded(&shared_dir())
    }

    fn stop_recorded(dir: &Path) -> bool {
        let Ok(state) = std::fs::read_to_string(dir.join("state")) else {
            return false;
        };
        let _ = std::fs::remove_file(dir.join("state"));
        let pid = state.lines().find_map(|l| l.strip_prefix("pid="));
        match pid {
            Some(pid) if !pid.is_empty() => Command::new("kill")
                .arg(pid)
                .status()
                .is_ok_and(|s| s.success()),
            _ => false,
        }
    }

    fn load(dir: &Path) -> Option<Garage> {
        let state = std::fs::read_to_string(dir.join("state")).ok()?;
        let get = |k: &str| {
            state
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        Some(Garage {
            dir: dir.join("server"),
            _temp: None,
            child: None,
            owned: false,
            s3_port: get("s3_port")?.parse().ok()?,
            access_key_id: get("key_id")?,
            secret_access_key: get("secret")?,
        })
    }

    fn save(&self, dir: &Path) -> Result<(), String> {
        let pid = self.child.as_ref().map(|c| c.id()).unwrap_or_default();
        let mut f = std::fs::File::create(dir.join("state"))
            .map_err(|e| format!("cannot write the garage state: {e}"))?;
        write!(
            f,
            "pid={pid}\ns3_port={}\nkey_id={}\nsecret={}\n",
            self.s3_port, self.access_key_id, self.secret_access_key
        )
        .map_err(|e| format!("cannot write the garage state: {e}"))
    }

    /// [`Garage::init_once`], tried three times: its ports are picked free
    /// and then bound by the server, so another process can take one in
    /// between (seen in CI while other test binaries started servers: the
    /// layout command then finds no RPC listener). A failed try's server is
    /// stopped (dropped) and its data removed before the next.
    async fn init(dir: PathBuf) -> Result<Garage, String> {
        let mut last = String::new();
        for attempt in 1..=3 {
            if attempt > 1 {
                for sub in ["meta", "data"] {
                    let _ = std::fs::remove_dir_all(dir.join(sub));
                }
            }
            match Garage::init_once(dir.clone()).await {
                Ok(g) => return Ok(g),
                Err(e) => last = format!("attempt {attempt} of 3: {e}"),
            }
        }
        Err(last)
    }

    /// Writes the configuration, starts the server, applies a one-node
    /// layout and imports a key allowed to create buckets.
    async fn init_once(dir: PathBuf) -> Result<Garage, String> {
        garage_binary()?;
        for sub in ["meta", "data"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let (s3_port, rpc_port, admin_port) = (free_port()?, free_port()?, free_port()?);
        let config = format!(
            "metadata_dir = \"{meta}\"\n\
             data_dir = \"{data}\"\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
             rpc_secret = \"{secret}\"\n\
             \n[s3_api]\n\
             s3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3_port}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             \n[admin]\n\
             api_bind_addr = \"127.0.0.1:{admin_port}\"\n",
            meta = dir.join("meta").display(),
            data = dir.join("data").display(),
            secret = random_hex(32),
        );
        std::fs::write(dir.join("garage.toml"), config)
            .map_err(|e| format!("cannot write the garage config: {e}"))?;
        let mut g = Garage {
            dir,
            _temp: None,
            child: None,
            owned: true,
            s3_port,
            access_key_id: format!("GK{}", random_hex(12)),
            secret_access_key: random_hex(32),
        };
        g.spawn()?;
        let dir = g.dir.clone();
        let (id, secret) = (g.access_key_id.clone(), g.secret_access_key.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let node = wait_for(Duration::from_secs(30), || cli(&dir, &["node", "id", "-q"]))?;
            let node = node
                .trim()
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string();
            cli(&dir, &["layout", "assign", "-z", "dc1", "-c", "1GB", &node])?;
            cli(&dir, &["layout", "apply", "--version", "1"])?;
            cli(
                &dir,
                &["key", "import", "--yes", "-n", "truststream", &id, &secret],
            )?;
            cli(&dir, &["key", "allow", "--create-bucket", &id])?;
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())??;
        g.ready(Duration::from_secs(30)).await?;
        Ok(g)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = garage_binary()?;
        let log = std::fs::File::create(self.dir.join("garage.log"))
            .map_err(|e| format!("cannot create the garage log: {e}"))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot create the garage log: {e}"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(self.dir.join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the S3 API answers with this key, then makes sure
    /// [`PROBE_BUCKET`] exists.
    pub async fn ready(&self, timeout: Duration) -> Result<(), String> {
        // No probe: the probe bucket may not exist yet.
        let mut cfg = self.config();
        cfg.conditional_writes = crate::ConditionalWrites::Off;
        cfg.probe_bucket = None;
        let store = S3Storage::connect(cfg).await.map_err(|e| e.to_string())?;
        let start = Instant::now();
        loop {
            let h = store.health().await;
            if h.is_healthy() {
                return match store.create_bucket(PROBE_BUCKET).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == truststream_core_storage::ErrorKind::Conflict => Ok(()),
                    Err(e) => Err(format!("cannot create the bucket {PROBE_BUCKET}: {e}")),
                };
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "garage at {} did not become ready in {timeout:?}: {:?} (log: {})",
                    self.endpoint(),
                    h.message,
                    self.dir.join("garage.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A provider configuration for this server, probing conditional
    /// writes in [`PROBE_BUCKET`].
    pub fn config(&self) -> S3StorageConfig {
        let mut cfg = S3StorageConfig::for_endpoint(
            self.endpoint(),
            REGION,
            &self.access_key_id,
            &self.secret_access_key,
        );
        cfg.probe_bucket = Some(PROBE_BUCKET.to_string());
        cfg
    }

    /// A provider connected to this server.
    pub async fn storage(&self) -> truststream_core_storage::StorageResult<S3Storage> {
        S3Storage::connect(self.config()).await
    }

    /// Kills the server (as a crash would). Only for private servers.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same directory and port.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()?;
        self.ready(Duration::from_secs(30)).await
    }
}

fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if self.owned {
            self.kill();
        }
    }
}

/// A plain HTTP client for [`fetch_presigned`].
pub fn http_client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Performs a request on a presigned URL with a plain HTTP client (no S3
/// credentials): `Some(body)` of a GET, `None` after a PUT.
///
/// A refusal is [`ErrorKind::PermissionDenied`](truststream_core_storage::ErrorKind):
/// HTTP 401/403, and also the 400 "Date is too old" that Garage answers for
/// an expired URL where Amazon S3 answers 403. Other 400s are
/// `InvalidInput`, 404 is `NotFound`, the rest `Unavailable`.
pub async fn fetch_presigned(
    http: &reqwest::Client,
    method: SignedUrlMethod,
    url: &str,
    body: Option<Bytes>,
) -> Result<Option<Bytes>, Error> {
    let req = match method {
        SignedUrlMethod::Get => http.get(url),
        SignedUrlMethod::Put => http.put(url).body(body.unwrap_or_default()),
    };
    let resp = req
        .send()
        .await
        .map_err(|e| Error::unavailable("the presigned request failed").with_source(e))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Error::unavailable("the presigned response broke off").with_source(e))?;
    let text = || String::from_utf8_lossy(&bytes).into_owned();
    match status {
        200..=299 => Ok(match method {
            SignedUrlMethod::Get => Some(bytes),
            SignedUrlMethod::Put => None,
        }),
        400 if is_expiry(&bytes) => Err(Error::permission_denied(format!(
            "HTTP {status} (expired): {}",
            text()
        ))),
        400 => Err(Error::invalid_input(format!("HTTP {status}: {}", text()))),
        401 | 403 => Err(Error::permission_denied(format!(
            "HTTP {status}: {}",
            text()
        ))),
        404 => Err(Error::not_found(format!("HTTP {status}: {}", text()))),
        _ => Err(Error::unavailable(format!("HTTP {status}: {}", text()))),
    }
}

/// Whether an S3 error body says the request's date or expiry is past.
fn is_expiry(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.contains("date is too old") || text.contains("request has expired")
}
