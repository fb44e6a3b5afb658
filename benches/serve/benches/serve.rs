//! `truststream serve` under HTTP load on PostgreSQL, against postrust-server
//! (a third-party PostgREST-compatible server in Rust) and a hand-written
//! axum + sqlx handler running the same SQL (the floor); and `/storage/v1`
//! uploads and downloads against storage-fs called in-process and against
//! a bare axum handler over the same storage-fs (the storage floor).
//!
//! ```text
//! cargo bench -p truststream-bench-serve [-- --rounds 3 --secs 5 --warmup 1 --conns 32 --only rest|storage]
//! cargo bench -p truststream-bench-serve -- --probe serve|anon|floor|postrust|serve-download|floor-download N   # for callgrind
//! ```
//!
//! PostgreSQL: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! the bench works in a scratch schema (and a scratch role for postrust's
//! anonymous requests) and drops both at the end.
//!
//! Every contender serves the same table (`bench_items`: id uuid primary
//! key, owner, title, score, created_at; 10,000 rows over 100 owners, an
//! index on owner) from the same server with a pool of 10 connections (the
//! default of all three):
//!
//! - **serve**: `truststream_serve::Server` over `PgDatabase` (default
//!   configuration), auth-jwt over the same database, storage-fs in a
//!   temporary directory. Requests carry the service-role key; a second row
//!   carries the anon key, allowed by a `[serve.tables]` policy.
//! - **floor**: axum + sqlx in this binary: the query string's `owner` and
//!   `limit` read, one statement, rows to JSON.
//! - **postrust-server**, when `postrust` is on `PATH` (or `POSTRUST_BIN`
//!   names it): started as a child process on the scratch schema with an
//!   anonymous role allowed to select and insert. Skipped, saying so, when
//!   it is not installed.
//!
//! Storage (one connection, operations one after another) compares
//! `serve /storage/v1` with:
//!
//! - **floor (axum + storage-fs)**: a bare axum handler in this binary on
//!   the same storage-fs instance as serve, reached by the same HTTP client
//!   on the same kind of connection (keep-alive HTTP/1.1, `TCP_NODELAY`).
//!   An upload is one `upload_stream` of the request body as hyper's frames
//!   come (if-not-exists, as serve's create; serve joins the frames into
//!   1 MiB chunks first); a download is the one provider call any handler
//!   over core-storage makes, as serve does: `download_with_metadata` (the
//!   metadata for `Content-Type` and `Content-Length` with the body; up to
//!   256 KiB read into one frame, else streamed in the provider's chunks,
//!   as serve chooses), without serve's keys, policies or other headers. What serve costs above it is serve's own
//!   work; what it costs above storage-fs in-process is HTTP's.
//! - **storage-fs direct**: the provider called in-process, plain or
//!   streaming.
//!
//! The in-process servers run on a tokio runtime of their own (2 workers,
//! like a separate process's default on this machine); the load generator
//! runs on another: N keep-alive HTTP/1.1 connections (hyper), each sending
//! its next request when the last answer is read, for a warm-up and then a
//! measured window; every latency goes into an HDR histogram. Rounds
//! alternate which contender goes first. Output: markdown tables of the
//! medians over rounds with the min–max spread, and ratios.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use truststream_auth_jwt::{JwtAuth, JwtAuthConfig};
use truststream_core_auth::Auth;
use truststream_core_db::{ColumnDef, ColumnDefault, Database, TableSchema};
use truststream_core_storage::{Storage, UploadOptions, WriteCondition};
use truststream_db_postgres::testing::Scratch;
use truststream_db_postgres::PgDatabase;
use truststream_serve::{ApiKeys, Providers, ServeConfig, Server, TableAction, TablePolicy};
use truststream_storage_fs::FsStorage;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type R<T> = Result<T, BoxError>;

const TABLE: &str = "bench_items";
const ROWS: i64 = 10_000;
const OWNERS: i64 = 100;
/// The owner every read asks for (100 rows).
const READ_OWNER: &str = "owner-7";
/// Pool size of every contender (the default of PgDatabase and postrust).
const POOL: u32 = 10;
const READ_QUERY: &str = "select=id,title,score&owner=eq.owner-7&order=created_at.desc&limit=50";
const INSERT_BODY: &str =
    r#"{"owner":"writer","title":"inserted by the load generator","score":42}"#;
const POSTRUST_HINT: &str = "cargo install postrust-server --version 3.1.0";

// ---------------------------------------------------------------- options

struct Opts {
    rounds: usize,
    secs: f64,
    warmup: f64,
    conns: usize,
    only: Option<String>,
    /// `--probe <contender> <n>`: no timed rounds; `n` reads one after
    /// another on one connection to the contender (`serve`, `anon`,
    /// `floor`, `postrust`; or 4 KiB downloads from `serve-download`,
    /// `floor-download`), for instruction counts under callgrind.
    probe: Option<(String, usize)>,
}

fn opts() -> R<Opts> {
    let mut o = Opts {
        rounds: 3,
        secs: 5.0,
        warmup: 1.0,
        conns: 32,
        only: None,
        probe: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || -> R<&String> {
            args.get(i + 1)
                .ok_or_else(|| format!("{} needs a value", args[i]).into())
        };
        match args[i].as_str() {
            "--rounds" => o.rounds = value()?.parse()?,
            "--secs" => o.secs = value()?.parse()?,
            "--warmup" => o.warmup = value()?.parse()?,
            "--conns" => o.conns = value()?.parse()?,
            "--only" => o.only = Some(value()?.clone()),
            "--probe" => {
                let who = value()?.clone();
                let n = args
                    .get(i + 2)
                    .ok_or("--probe needs a contender and a count")?
                    .parse()?;
                o.only = Some(
                    if who.ends_with("-download") {
                        "storage"
                    } else {
                        "rest"
                    }
                    .into(),
                );
                o.probe = Some((who, n));
                i += 3;
                continue;
            }
            // `cargo bench` passes `--bench`; anything else is ignored too.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if o.rounds == 0 || o.conns == 0 || o.secs <= 0.0 {
        return Err("--rounds, --conns and --secs must be positive".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------- targets

/// One contender as the load generator sees it.
#[derive(Clone)]
struct Target {
    name: String,
    addr: SocketAddr,
    /// Path prefix of the table (`/rest/v1/bench_items` or `/bench_items`).
    table_path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Case {
    Read,
    Insert,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Read => "GET 50 rows (filter, order, limit)",
            Case::Insert => "POST one row (return=minimal)",
        }
    }
    fn expected(self) -> StatusCode {
        match self {
            Case::Read => StatusCode::OK,
            Case::Insert => StatusCode::CREATED,
        }
    }
}

fn request(t: &Target, case: Case) -> R<Request<Body>> {
    let mut b = Request::builder().header(header::HOST, t.addr.to_string());
    for (k, v) in &t.headers {
        b = b.header(k, v);
    }
    let req = match case {
        Case::Read => b
            .method(Method::GET)
            .uri(format!("{}?{READ_QUERY}", t.table_path))
            .body(Body::empty())?,
        Case::Insert => b
            .method(Method::POST)
            .uri(t.table_path.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("prefer", "return=minimal")
            .body(Body::from(INSERT_BODY))?,
    };
    Ok(req)
}

// ---------------------------------------------------------------- HTTP client

type Sender = hyper::client::conn::http1::SendRequest<Body>;

async fn connect(addr: SocketAddr) -> R<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Reads the whole body, keeping it when `keep`, else counting its bytes.
async fn drain(mut body: hyper::body::Incoming, keep: bool) -> R<(u64, Vec<u8>)> {
    let mut n = 0u64;
    let mut kept = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
            if keep {
                kept.extend_from_slice(&data);
            }
        }
    }
    Ok((n, kept))
}

/// One request on a fresh connection: status and body.
async fn once(addr: SocketAddr, req: Request<Body>) -> R<(StatusCode, Vec<u8>)> {
    let mut send = connect(addr).await?;
    send.ready().await?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let (_, body) = drain(resp.into_body(), true).await?;
    Ok((status, body))
}

// ---------------------------------------------------------------- load generator

/// One measured window of one contender on one case.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Every answer with the expected status, warm-up included (for the
    /// insert case: rows that must be in the table afterwards).
    answered: u64,
}

/// `conns` keep-alive connections, each sending its next request as soon as
/// the last answer is read, for `warmup` (not recorded) and then `secs`.
/// Requests started inside the measured window are counted and their
/// latencies recorded; any answer but the expected status fails the sample.
async fn load(t: &Target, case: Case, conns: usize, warmup: f64, secs: f64) -> R<Sample> {
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(connect(t.addr).await?);
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conns);
    for mut send in senders {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
            let mut bad: Option<String> = None;
            let mut answered = 0u64;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                send.ready().await?;
                let resp = send.send_request(request(&t, case)?).await?;
                let status = resp.status();
                let (_, body) = drain(resp.into_body(), status != case.expected()).await?;
                let us = began.elapsed().as_micros() as u64;
                if status != case.expected() {
                    bad.get_or_insert_with(|| {
                        format!("{status}: {}", String::from_utf8_lossy(&body))
                    });
                    break;
                }
                answered += 1;
                if began >= measure_from {
                    hist.record(us.max(1))?;
                }
            }
            Ok::<_, BoxError>((hist, bad, answered))
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut answered = 0;
    for task in tasks {
        let (hist, bad, n) = task.await??;
        answered += n;
        if let Some(why) = bad {
            return Err(format!("{}: unexpected answer {why}", t.name).into());
        }
        all.add(hist)?;
    }
    Ok(Sample {
        rps: all.len() as f64 / secs,
        p50_ms: all.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
        answered,
    })
}

/// Whether `--probe <who>` names the contender called `name`.
fn probe_matches(who: &str, name: &str) -> bool {
    match who {
        "serve" => name == "serve (service-role key)",
        "anon" => name == "serve (anon key + table policy)",
        "floor" => name.starts_with("floor"),
        "postrust" => name == "postrust-server",
        _ => false,
    }
}

/// `n` reads one after another on one keep-alive connection, every answer
/// checked; nothing timed (run under `valgrind --tool=callgrind`: the
/// count at 2n minus the count at n is n reads, client and server).
async fn probe(t: &Target, n: usize) -> R<()> {
    let mut send = connect(t.addr).await?;
    for _ in 0..n {
        send.ready().await?;
        let resp = send.send_request(request(t, Case::Read)?).await?;
        let status = resp.status();
        let (bytes, _) = drain(resp.into_body(), false).await?;
        if status != StatusCode::OK || bytes == 0 {
            return Err(format!("{}: {status}, {bytes} bytes", t.name).into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- the floor

#[derive(Serialize)]
struct Item {
    id: uuid::Uuid,
    title: Option<String>,
    score: Option<i64>,
}

#[derive(Deserialize)]
struct NewItem {
    owner: String,
    title: String,
    score: i64,
}

async fn floor_read(
    State(pool): State<PgPool>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(owner) = q.get("owner").and_then(|v| v.strip_prefix("eq.")) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let limit: i64 = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50);
    match sqlx::query_as::<_, (uuid::Uuid, Option<String>, Option<i64>)>(
        "SELECT id, title, score FROM bench_items WHERE owner = $1 ORDER BY created_at DESC LIMIT $2",
    )
    .bind(owner)
    .bind(limit)
    .fetch_all(&pool)
    .await
    {
        Ok(rows) => Json(
            rows.into_iter()
                .map(|(id, title, score)| Item { id, title, score })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn floor_insert(State(pool): State<PgPool>, Json(item): Json<NewItem>) -> Response {
    match sqlx::query_scalar::<_, uuid::Uuid>(
        "INSERT INTO bench_items (owner, title, score) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(item.owner)
    .bind(item.title)
    .bind(item.score)
    .fetch_one(&pool)
    .await
    {
        Ok(_) => StatusCode::CREATED.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn start_floor(pool: PgPool) -> R<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/rest/v1/bench_items", get(floor_read).post(floor_insert))
        .with_state(pool);
    serve_app(app).await
}

/// Serves `app` on a free local port, with `TCP_NODELAY` as serve's
/// listener sets it.
async fn serve_app(app: Router) -> R<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// Largest download the storage floor reads in one call (serve's choice).
const FLOOR_SMALL_BODY: u64 = 256 * 1024;

/// The storage floor's `GET`: what any handler over core-storage needs to
/// answer a download with its `Content-Type` and `Content-Length` — the
/// object's metadata and its bytes in one call (read into one frame when
/// small, streamed when large), as serve does — and nothing else.
async fn floor_download(
    State(storage): State<Arc<dyn Storage>>,
    Path(key): Path<String>,
) -> Response {
    let Ok(dl) = storage.download_with_metadata("bench", &key, None).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let (size, content_type) = (dl.meta.size, dl.meta.content_type.clone());
    let mut resp = if size <= FLOOR_SMALL_BODY {
        match dl.into_bytes().await {
            Ok(bytes) => bytes.into_response(),
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    } else {
        Body::from_stream(dl.body).into_response()
    };
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Some(ct) = content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// The storage floor's `POST`: the request body streamed into the object.
async fn floor_upload(
    State(storage): State<Arc<dyn Storage>>,
    Path(key): Path<String>,
    body: Body,
) -> Response {
    let data = Box::pin(
        body.into_data_stream()
            .map(|r| r.map_err(|e| truststream_core_storage::Error::invalid_input(e.to_string()))),
    );
    let options = UploadOptions {
        condition: WriteCondition::IfNotExists,
        ..upload_options()
    };
    match storage.upload_stream("bench", &key, data, &options).await {
        Ok(_) => Json(serde_json::json!({ "Key": format!("bench/{key}") })).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The storage floor: the bench's storage paths, bare, over `storage`.
async fn start_storage_floor(
    storage: Arc<dyn Storage>,
) -> R<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route(
            "/storage/v1/object/bench/{*key}",
            get(floor_download).post(floor_upload),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(storage);
    serve_app(app).await
}

// ---------------------------------------------------------------- postrust

/// The postrust-server child process; killed on drop.
struct Postrust {
    child: Child,
    addr: SocketAddr,
    _log_dir: tempfile::TempDir,
}

impl Drop for Postrust {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn postrust_binary() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("POSTRUST_BIN").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("postrust"))
        .find(|p| p.is_file())
}

fn free_port() -> R<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_postrust(bin: &std::path::Path, url: &str, schema: &str, role: &str) -> R<Postrust> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let log_dir = tempfile::tempdir()?;
    let log = std::fs::File::create(log_dir.path().join("postrust.log"))?;
    let child = Command::new(bin)
        // Its default log level, whatever this shell exports.
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", url)
        .env("PGRST_DB_SCHEMAS", schema)
        .env("PGRST_DB_ANON_ROLE", role)
        .env("PGRST_COMPAT_MODE", "true")
        .env("PGRST_SERVER_HOST", "127.0.0.1")
        .env("PGRST_SERVER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut p = Postrust {
        child,
        addr,
        _log_dir: log_dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = p.child.try_wait()? {
            let log =
                std::fs::read_to_string(p._log_dir.path().join("postrust.log")).unwrap_or_default();
            return Err(format!("postrust exited ({status}): {log}").into());
        }
        let req = Request::get(format!("/{TABLE}?limit=1"))
            .header(header::HOST, addr.to_string())
            .body(Body::empty())?;
        if let Ok((StatusCode::OK, _)) = once(addr, req).await {
            return Ok(p);
        }
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(p._log_dir.path().join("postrust.log")).unwrap_or_default();
            return Err(format!("postrust did not answer within 60 s: {log}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------- setup

fn table_schema() -> TableSchema {
    TableSchema::new(TABLE)
        .column(
            ColumnDef::uuid("id")
                .primary_key()
                .default(ColumnDefault::RandomUuid),
        )
        .column(ColumnDef::text("owner").not_null())
        .column(ColumnDef::text("title"))
        .column(ColumnDef::integer("score"))
        .column(
            ColumnDef::timestamp("created_at")
                .not_null()
                .default(ColumnDefault::Now),
        )
}

/// A raw pool on the scratch schema (the floor's, and the bench's own SQL).
async fn raw_pool(url: &str, schema: &str) -> R<PgPool> {
    let opts: PgConnectOptions = url.parse()?;
    let opts = opts.options([("search_path", schema)]);
    Ok(PgPoolOptions::new()
        .max_connections(POOL)
        .connect_with(opts)
        .await?)
}

async fn seed(pool: &PgPool) -> R<()> {
    sqlx::query(&format!(
        "INSERT INTO {TABLE} (id, owner, title, score, created_at)
         SELECT gen_random_uuid(), 'owner-' || (i % {OWNERS}), 'item ' || i, (i * 7) % 1000,
                now() - make_interval(secs => i)
           FROM generate_series(1, {ROWS}) AS i"
    ))
    .execute(pool)
    .await?;
    sqlx::query(&format!("CREATE INDEX {TABLE}_owner ON {TABLE} (owner)"))
        .execute(pool)
        .await?;
    sqlx::query(&format!("ANALYZE {TABLE}"))
        .execute(pool)
        .await?;
    Ok(())
}

/// Rows the insert case has written so far.
async fn writer_rows(pool: &PgPool) -> R<i64> {
    let (n,): (i64,) = sqlx::query_as(&format!(
        "SELECT count(*) FROM {TABLE} WHERE owner = 'writer'"
    ))
    .fetch_one(pool)
    .await?;
    Ok(n)
}

/// The ids a read answer lists, in order (the answers are compared across
/// contenders before anything is timed).
fn ids_of(body: &[u8]) -> R<Vec<String>> {
    let v: Value = serde_json::from_slice(body)?;
    let rows = v.as_array().ok_or("the answer is not a JSON array")?;
    let mut ids = Vec::with_capacity(rows.len());
    for r in rows {
        let o = r.as_object().ok_or("a row is not an object")?;
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort_unstable();
        if keys != ["id", "score", "title"] {
            return Err(format!("a row has columns {keys:?}, not id, score, title").into());
        }
        ids.push(o["id"].as_str().ok_or("id is not a string")?.to_string());
    }
    Ok(ids)
}

/// Checks that `t` answers the read with the expected rows and accepts an
/// insert, before it is timed.
async fn check(t: &Target, want: &[String]) -> R<()> {
    let (status, body) = once(t.addr, request(t, Case::Read)?).await?;
    if status != StatusCode::OK {
        return Err(format!("read: {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    let ids = ids_of(&body)?;
    if ids != want {
        return Err(format!(
            "read: {} rows, not the {} the database returns in that order",
            ids.len(),
            want.len()
        )
        .into());
    }
    let (status, body) = once(t.addr, request(t, Case::Insert)?).await?;
    if status != StatusCode::CREATED {
        return Err(format!("insert: {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(())
}

// ---------------------------------------------------------------- report

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(xs: &[f64]) -> Stat {
    let mut v = xs.to_vec();
    let m = median(&mut v);
    Stat {
        median: m,
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

fn rest_table(
    names: &[String],
    samples: &HashMap<(String, Case), Vec<Sample>>,
    skipped: &[(String, String)],
    opts: &Opts,
) {
    println!(
        "\n### /rest/v1 under load: {} connections, {} s measured after {} s warm-up, {} rounds (median, min–max)\n",
        opts.conns, opts.secs, opts.warmup, opts.rounds
    );
    println!("| case | contender | requests/s | p50 ms | p99 ms | vs postrust-server | vs floor |");
    println!("|---|---|---|---|---|---|---|");
    for case in [Case::Read, Case::Insert] {
        let rps_of = |name: &str| {
            samples
                .get(&(name.to_string(), case))
                .map(|s| stat(&s.iter().map(|x| x.rps).collect::<Vec<_>>()).median)
        };
        let postrust = rps_of("postrust-server");
        let floor = rps_of("floor (axum + sqlx)");
        for name in names {
            let Some(s) = samples.get(&(name.clone(), case)) else {
                continue;
            };
            let rps = stat(&s.iter().map(|x| x.rps).collect::<Vec<_>>());
            let p50 = stat(&s.iter().map(|x| x.p50_ms).collect::<Vec<_>>());
            let p99 = stat(&s.iter().map(|x| x.p99_ms).collect::<Vec<_>>());
            let ratio =
                |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{:.2}x", rps.median / r));
            println!(
                "| {} | {name} | {:.0} ({:.0}–{:.0}) | {:.2} ({:.2}–{:.2}) | {:.2} ({:.2}–{:.2}) | {} | {} |",
                case.label(),
                rps.median,
                rps.min,
                rps.max,
                p50.median,
                p50.min,
                p50.max,
                p99.median,
                p99.min,
                p99.max,
                ratio(postrust),
                ratio(floor),
            );
        }
    }
    for (name, why) in skipped {
        println!("\n{name}: row skipped ({why})");
    }
}

// ---------------------------------------------------------------- storage

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Op {
    Upload,
    Download,
}

/// Seconds per operation, per (size, side, op), one entry per round.
type StorageTimes = HashMap<(usize, &'static str, Op), Vec<f64>>;

fn storage_headers(key: &str) -> Vec<(HeaderName, HeaderValue)> {
    let mut h = Vec::new();
    if let (Ok(k), Ok(b)) = (
        HeaderValue::from_str(key),
        HeaderValue::from_str(&format!("Bearer {key}")),
    ) {
        h.push((HeaderName::from_static("apikey"), k));
        h.push((header::AUTHORIZATION, b));
    }
    h
}

async fn http_upload(
    send: &mut Sender,
    addr: SocketAddr,
    headers: &[(HeaderName, HeaderValue)],
    key: &str,
    data: Bytes,
) -> R<()> {
    let mut b = Request::post(format!("/storage/v1/object/bench/{key}"))
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, data.len());
    for (k, v) in headers {
        b = b.header(k, v);
    }
    send.ready().await?;
    let resp = send.send_request(b.body(Body::from(data))?).await?;
    let status = resp.status();
    let (_, body) = drain(resp.into_body(), !status.is_success()).await?;
    if !status.is_success() {
        return Err(format!("upload {key}: {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(())
}

async fn http_download(
    send: &mut Sender,
    addr: SocketAddr,
    headers: &[(HeaderName, HeaderValue)],
    key: &str,
    size: usize,
) -> R<()> {
    let mut b = Request::get(format!("/storage/v1/object/bench/{key}"))
        .header(header::HOST, addr.to_string());
    for (k, v) in headers {
        b = b.header(k, v);
    }
    send.ready().await?;
    let resp = send.send_request(b.body(Body::empty())?).await?;
    let status = resp.status();
    let (n, body) = drain(resp.into_body(), !status.is_success()).await?;
    if !status.is_success() {
        return Err(format!(
            "download {key}: {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    if n != size as u64 {
        return Err(format!("download {key}: {n} bytes, not {size}").into());
    }
    Ok(())
}

fn upload_options() -> UploadOptions {
    UploadOptions {
        content_type: Some("application/octet-stream".into()),
        ..UploadOptions::default()
    }
}

/// How many operations a round times for an object of `size` bytes.
fn ops_per_round(size: usize) -> usize {
    if size <= 64 * 1024 {
        200
    } else {
        3
    }
}

fn storage_table(times: &StorageTimes, sizes: &[usize], sides: &[&'static str], rounds: usize) {
    println!(
        "\n### /storage/v1 vs a bare axum handler and storage-fs in-process: one connection, operations one after another, {rounds} rounds (median, min–max)\n"
    );
    println!(
        "| object | operation | side | per operation | MiB/s | vs {DIRECT} | vs {DIRECT_STREAM} | vs {FLOOR} |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &size in sizes {
        for op in [Op::Upload, Op::Download] {
            let base_of = |side: &'static str| times.get(&(size, side, op)).map(|v| stat(v).median);
            let (plain, streams, floor) = (base_of(DIRECT), base_of(DIRECT_STREAM), base_of(FLOOR));
            for &side in sides {
                let Some(v) = times.get(&(size, side, op)) else {
                    continue;
                };
                let s = stat(v);
                let mib_s = size as f64 / (1024.0 * 1024.0) / s.median;
                let per = if s.median < 0.01 {
                    format!(
                        "{:.0} µs ({:.0}–{:.0})",
                        s.median * 1e6,
                        s.min * 1e6,
                        s.max * 1e6
                    )
                } else {
                    format!(
                        "{:.0} ms ({:.0}–{:.0})",
                        s.median * 1e3,
                        s.min * 1e3,
                        s.max * 1e3
                    )
                };
                // Ratio of throughputs: direct time / this side's time.
                let ratio = |base: Option<f64>| {
                    base.map_or("–".to_string(), |b| format!("{:.2}x", b / s.median))
                };
                println!(
                    "| {} | {op:?} | {side} | {per} | {mib_s:.1} | {} | {} | {} |",
                    if size >= 1024 * 1024 {
                        format!("{} MiB", size / (1024 * 1024))
                    } else {
                        format!("{} KiB", size / 1024)
                    },
                    ratio(plain),
                    ratio(streams),
                    ratio(floor),
                );
            }
        }
    }
}

// ---------------------------------------------------------------- main

fn main() {
    if let Err(e) = run() {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> R<()> {
    let opts = opts()?;
    // The servers' runtime (2 workers: what a server process gets here) and
    // the load generator's.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()?;
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()?;

    let url = truststream_db_postgres::testing::database_url();
    if let Err(why) = server_rt.block_on(truststream_db_postgres::testing::probe(&url)) {
        return Err(why.into());
    }
    let scratch = Scratch::new(url.clone());
    let result = run_with(&opts, &server_rt, &load_rt, &url, &scratch);
    let cleanup = server_rt.block_on(scratch.cleanup());
    result?;
    cleanup?;
    Ok(())
}

fn run_with(
    opts: &Opts,
    server_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
    url: &str,
    scratch: &Scratch,
) -> R<()> {
    // The provider, the table, the seed rows; the raw pool.
    let cfg = scratch.config("bench_serve");
    let schema = cfg.schema.clone().ok_or("scratch schema")?;
    let (db, raw) = server_rt.block_on(async {
        let db = PgDatabase::open(cfg).await?;
        db.create_table(&table_schema()).await?;
        let raw = raw_pool(url, &schema).await?;
        seed(&raw).await?;
        Ok::<_, BoxError>((Arc::new(db), raw))
    })?;
    let db: Arc<dyn Database> = db;
    let want: Vec<String> = server_rt.block_on(async {
        let rows: Vec<(uuid::Uuid,)> = sqlx::query_as(&format!(
            "SELECT id FROM {TABLE} WHERE owner = $1 ORDER BY created_at DESC LIMIT 50"
        ))
        .bind(READ_OWNER)
        .fetch_all(&raw)
        .await?;
        Ok::<_, BoxError>(rows.into_iter().map(|r| r.0.to_string()).collect())
    })?;
    eprintln!(
        "schema {schema}: {ROWS} rows, {OWNERS} owners; the read returns {} rows",
        want.len()
    );

    // serve.
    let storage_dir = tempfile::tempdir()?;
    let direct_dir = tempfile::tempdir()?;
    let (running, direct, floor_storage) = server_rt.block_on(async {
        let auth: Arc<dyn Auth> = Arc::new(
            JwtAuth::new(
                JwtAuthConfig::with_secret("a signing secret for the serve benchmark, 32+ bytes"),
                db.clone(),
            )
            .await?,
        );
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::open(storage_dir.path()).await?);
        let floor_storage = storage.clone();
        let direct = FsStorage::open(direct_dir.path()).await?;
        let mut config = ServeConfig {
            bind: "127.0.0.1:0".into(),
            // 64 MiB objects: above the 50 MiB default.
            max_upload_bytes: 128 * 1024 * 1024,
            ..ServeConfig::default()
        };
        config.tables.insert(
            TABLE.into(),
            TablePolicy {
                anon: vec![TableAction::Select, TableAction::Insert],
                ..TablePolicy::default()
            },
        );
        let providers = Providers {
            db: db.clone(),
            auth,
            storage,
            metrics: None,
        };
        let keys = ApiKeys::generate();
        let running = Server::bind(providers.clone(), keys.clone(), config.clone())
            .await?
            .spawn();
        Ok::<_, BoxError>((running, direct, floor_storage))
    })?;
    let (floor_addr, floor_task) = server_rt.block_on(start_floor(raw.clone()))?;
    let (storage_floor_addr, storage_floor_task) =
        server_rt.block_on(start_storage_floor(floor_storage))?;

    let with_key = |key: &str| -> R<Vec<(HeaderName, HeaderValue)>> {
        Ok(vec![
            (
                HeaderName::from_static("apikey"),
                HeaderValue::from_str(key)?,
            ),
            (
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {key}"))?,
            ),
        ])
    };
    let service = running.keys.service_role().to_string();
    let mut targets = vec![
        Target {
            name: "serve (service-role key)".into(),
            addr: running.addr,
            table_path: format!("/rest/v1/{TABLE}"),
            headers: with_key(&service)?,
        },
        Target {
            name: "serve (anon key + table policy)".into(),
            addr: running.addr,
            table_path: format!("/rest/v1/{TABLE}"),
            headers: with_key(running.keys.anon())?,
        },
    ];
    targets.extend([Target {
        name: "floor (axum + sqlx)".into(),
        addr: floor_addr,
        table_path: format!("/rest/v1/{TABLE}"),
        // Sent and ignored, so every contender reads the same bytes.
        headers: with_key(&service)?,
    }]);
    let mut skipped: Vec<(String, String)> = Vec::new();

    let do_rest = opts.only.as_deref().is_none_or(|o| o == "rest");
    let do_storage = opts.only.as_deref().is_none_or(|o| o == "storage");

    // postrust-server, with a role of its own for anonymous requests.
    let role = format!("ts_bench_anon_{}", std::process::id());
    let mut postrust: Option<Postrust> = None;
    if do_rest {
        match postrust_binary() {
            None => {
                println!("postrust-server not installed: row skipped ({POSTRUST_HINT})");
                skipped.push((
                    "postrust-server".into(),
                    format!("not installed: {POSTRUST_HINT}"),
                ));
            }
            Some(bin) => {
                let started = server_rt.block_on(async {
                    for sql in [
                        format!(
                            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') \
                             THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
                        ),
                        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO {role}"),
                        format!("GRANT SELECT, INSERT ON {TABLE} TO {role}"),
                    ] {
                        sqlx::query(&sql).execute(&raw).await?;
                    }
                    start_postrust(&bin, url, &schema, &role).await
                });
                match started {
                    Ok(p) => {
                        targets.push(Target {
                            name: "postrust-server".into(),
                            addr: p.addr,
                            table_path: format!("/{TABLE}"),
                            headers: Vec::new(),
                        });
                        postrust = Some(p);
                    }
                    Err(e) => {
                        println!("postrust-server failed to start: row skipped ({e})");
                        skipped.push(("postrust-server".into(), format!("failed to start: {e}")));
                    }
                }
            }
        }
    }

    let result = (|| -> R<()> {
        if do_rest {
            // Every contender must give the same answer before it is timed.
            let mut ok = Vec::new();
            for t in targets.drain(..) {
                match load_rt.block_on(check(&t, &want)) {
                    Ok(()) => ok.push(t),
                    Err(e) => {
                        println!("{}: fails the check, row skipped: {e}", t.name);
                        skipped.push((t.name.clone(), format!("fails the check: {e}")));
                    }
                }
            }
            if let Some((who, n)) = &opts.probe {
                let t = ok
                    .iter()
                    .find(|t| probe_matches(who, &t.name))
                    .ok_or_else(|| format!("--probe {who}: no such contender passed the check"))?;
                return load_rt.block_on(probe(t, *n));
            }
            let names: Vec<String> = ok.iter().map(|t| t.name.clone()).collect();
            let mut samples: HashMap<(String, Case), Vec<Sample>> = HashMap::new();
            for round in 0..opts.rounds {
                for case in [Case::Read, Case::Insert] {
                    for i in 0..ok.len() {
                        let t = &ok[(i + round) % ok.len()];
                        let before = server_rt.block_on(writer_rows(&raw))?;
                        let s =
                            load_rt.block_on(load(t, case, opts.conns, opts.warmup, opts.secs))?;
                        if case == Case::Insert {
                            // Every 201 is a row in the table.
                            let added = server_rt.block_on(writer_rows(&raw))? - before;
                            if added != s.answered as i64 {
                                return Err(format!(
                                    "{}: {} inserts answered 201 but {added} rows were added",
                                    t.name, s.answered
                                )
                                .into());
                            }
                        }
                        eprintln!(
                            "round {} {:?} {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                            round + 1,
                            case,
                            t.name,
                            s.rps,
                            s.p50_ms,
                            s.p99_ms
                        );
                        samples.entry((t.name.clone(), case)).or_default().push(s);
                    }
                }
            }
            rest_table(&names, &samples, &skipped, opts);
        }
        if do_storage {
            storage(
                opts,
                server_rt,
                load_rt,
                [running.addr, storage_floor_addr],
                &service,
                &direct,
            )?;
        }
        Ok(())
    })();

    drop(postrust);
    drop(running);
    floor_task.abort();
    storage_floor_task.abort();
    server_rt.block_on(async {
        raw.close().await;
        db.disconnect().await
    })?;
    if do_rest {
        // The role owns nothing; its grants go with the scratch schema,
        // which `cleanup` drops afterwards (grants on the schema first).
        let _ = server_rt.block_on(async {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
            sqlx::query(&format!(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
                 EXECUTE 'DROP OWNED BY {role}'; EXECUTE 'DROP ROLE {role}'; END IF; END $$"
            ))
            .execute(&mut c)
            .await?;
            Ok::<_, BoxError>(())
        });
    }
    result
}

/// The storage sides: serve, the floor, storage-fs in-process (streaming
/// and plain).
const HTTP: &str = "serve /storage/v1";
const FLOOR: &str = "floor (axum + storage-fs)";
const DIRECT_STREAM: &str = "storage-fs direct (streams)";
const DIRECT: &str = "storage-fs direct";

/// `addrs`: serve's and the storage floor's.
fn storage(
    opts: &Opts,
    server_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
    addrs: [SocketAddr; 2],
    service: &str,
    direct: &FsStorage,
) -> R<()> {
    let [addr, floor_addr] = addrs;
    let headers = storage_headers(service);
    // The bucket on both sides; the objects downloads read.
    // A probe reads the 4 KiB object only (the 64 MiB upload's varying
    // frame sizes would move the setup's instruction count).
    let sizes: &[usize] = if opts.probe.is_some() {
        &[4 * 1024]
    } else {
        &[4 * 1024, 64 * 1024 * 1024]
    };
    let data: Vec<Bytes> = sizes
        .iter()
        .map(|&n| Bytes::from((0..n).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>()))
        .collect();
    load_rt.block_on(async {
        let mut b = Request::post("/storage/v1/bucket")
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in &headers {
            b = b.header(k, v);
        }
        let (status, body) = once(
            addr,
            b.body(Body::from(r#"{"name":"bench","id":"bench"}"#))?,
        )
        .await?;
        if !status.is_success() {
            return Err::<(), BoxError>(
                format!(
                    "create bucket: {status}: {}",
                    String::from_utf8_lossy(&body)
                )
                .into(),
            );
        }
        let mut send = connect(addr).await?;
        for (size, d) in sizes.iter().zip(&data) {
            http_upload(
                &mut send,
                addr,
                &headers,
                &format!("read-{size}"),
                d.clone(),
            )
            .await?;
        }
        Ok(())
    })?;
    server_rt.block_on(async {
        direct.create_bucket("bench").await?;
        for (size, d) in sizes.iter().zip(&data) {
            direct
                .upload(
                    "bench",
                    &format!("read-{size}"),
                    d.clone(),
                    &upload_options(),
                )
                .await?;
        }
        Ok::<_, BoxError>(())
    })?;

    if let Some((who, n)) = &opts.probe {
        // `n` 4 KiB downloads one after another on one connection.
        let to = match who.as_str() {
            "serve-download" => addr,
            "floor-download" => floor_addr,
            _ => return Err(format!("--probe {who}: not a storage contender").into()),
        };
        return load_rt.block_on(async {
            let mut send = connect(to).await?;
            for _ in 0..*n {
                http_download(&mut send, to, &headers, "read-4096", 4096).await?;
            }
            Ok(())
        });
    }
    let sides = [HTTP, FLOOR, DIRECT_STREAM, DIRECT];
    let mut times: StorageTimes = HashMap::new();
    let mut seq = 0usize;
    for round in 0..opts.rounds {
        for (size, d) in sizes.iter().copied().zip(&data) {
            let n = ops_per_round(size);
            for op in [Op::Upload, Op::Download] {
                for i in 0..sides.len() {
                    let side = sides[(i + round) % sides.len()];
                    let read_key = format!("read-{size}");
                    let keys: Vec<String> = (0..n)
                        .map(|_| {
                            seq += 1;
                            format!("w-{size}-{seq}")
                        })
                        .collect();
                    let http = match side {
                        HTTP => Some(addr),
                        FLOOR => Some(floor_addr),
                        _ => None,
                    };
                    let elapsed = match http {
                        Some(to) => load_rt.block_on(async {
                            let mut send = connect(to).await?;
                            let t = Instant::now();
                            for k in &keys {
                                match op {
                                    Op::Upload => {
                                        http_upload(&mut send, to, &headers, k, d.clone()).await?
                                    }
                                    Op::Download => {
                                        http_download(&mut send, to, &headers, &read_key, size)
                                            .await?
                                    }
                                }
                            }
                            Ok::<_, BoxError>(t.elapsed())
                        })?,
                        None => server_rt.block_on(async {
                            let t = Instant::now();
                            for k in &keys {
                                direct_op(direct, op, side == DIRECT_STREAM, k, &read_key, d, size)
                                    .await?;
                            }
                            Ok::<_, BoxError>(t.elapsed())
                        })?,
                    };
                    let per_op = elapsed.as_secs_f64() / n as f64;
                    eprintln!(
                        "round {} {size} B {op:?} {side}: {:.3} ms per operation",
                        round + 1,
                        per_op * 1e3
                    );
                    times.entry((size, side, op)).or_default().push(per_op);
                    // Large uploads are removed after each batch (disk).
                    if op == Op::Upload && size > 64 * 1024 {
                        match http {
                            None => server_rt.block_on(async {
                                for k in &keys {
                                    let _ = direct.delete("bench", k).await;
                                }
                            }),
                            // The floor writes into serve's storage: serve
                            // removes both sides' objects.
                            Some(_) => load_rt.block_on(async {
                                let to = addr;
                                let mut b = Request::delete("/storage/v1/object/bench")
                                    .header(header::HOST, to.to_string())
                                    .header(header::CONTENT_TYPE, "application/json");
                                for (k, v) in &headers {
                                    b = b.header(k, v);
                                }
                                let body = serde_json::json!({ "prefixes": keys }).to_string();
                                let (status, body) = once(to, b.body(Body::from(body))?).await?;
                                if !status.is_success() {
                                    return Err::<(), BoxError>(
                                        format!(
                                            "remove: {status}: {}",
                                            String::from_utf8_lossy(&body)
                                        )
                                        .into(),
                                    );
                                }
                                Ok(())
                            })?,
                        }
                    }
                }
            }
        }
    }
    storage_table(&times, sizes, &sides, opts.rounds);
    Ok(())
}

/// One operation on storage-fs in-process: the plain calls (`upload` of a
/// `Bytes`, `download` into one) or the streaming ones (`upload_stream` of
/// 1 MiB chunks, `download_stream` drained), which is what serve calls.
async fn direct_op(
    direct: &FsStorage,
    op: Op,
    streams: bool,
    key: &str,
    read_key: &str,
    data: &Bytes,
    size: usize,
) -> R<()> {
    const CHUNK: usize = 1024 * 1024;
    match (op, streams) {
        (Op::Upload, false) => {
            direct
                .upload("bench", key, data.clone(), &upload_options())
                .await?;
        }
        (Op::Upload, true) => {
            let chunks: Vec<truststream_core_storage::StorageResult<Bytes>> = (0..data.len())
                .step_by(CHUNK)
                .map(|s| Ok(data.slice(s..(s + CHUNK).min(data.len()))))
                .collect();
            direct
                .upload_stream(
                    "bench",
                    key,
                    Box::pin(futures::stream::iter(chunks)),
                    &upload_options(),
                )
                .await?;
        }
        (Op::Download, false) => {
            let b = direct.download("bench", read_key).await?;
            if b.len() != size {
                return Err("short read".into());
            }
        }
        (Op::Download, true) => {
            let mut s = direct.download_stream("bench", read_key, None).await?;
            let mut got = 0usize;
            while let Some(c) = s.next().await {
                got += c?.len();
            }
            if got != size {
                return Err("short read".into());
            }
        }
    }
    Ok(())
}
