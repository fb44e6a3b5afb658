//! db-supabase's REST mode (`SupabaseDb`) against bare reqwest sending the
//! same requests, both against one in-process `truststream serve`.
//!
//! ```text
//! cargo bench -p truststream-bench-supabase-rest [-- --rounds 5 --secs 2 --warmup 0.5 --conc 8 --only sqlite|memory]
//! ```
//!
//! The server: `truststream_serve::Server` over db-sqlite (a file in a
//! temporary directory; the embedded default) and, as a second row, over
//! db-memory; auth-jwt over a memory database of its own, storage-memory.
//! The table is the guide's `agents` shape (id uuid primary key, name,
//! status, created_at), 1,000 rows, half of them `active`.
//!
//! The contenders share the server, the URLs and the pooling (one
//! `reqwest::Client` each, keep-alive, the same builder settings):
//!
//! - **db-supabase**: `SupabaseDb` with the service-role key,
//!   `bytes_format = "base64"` and the served database as its SQL backend
//!   (so table schemas are known), the configuration of db-supabase's
//!   conformance test.
//! - **bare reqwest**: the same method, URL, headers and body, the answer
//!   parsed into `serde_json::Value` rows.
//!
//! Before timing, both contenders' requests go once through a recording
//! TCP proxy and are asserted equal (request line, headers, body), and
//! their answers are checked to be the same rows.
//!
//! Operations: `get` by id, `read` (`status = 'active'`, newest first,
//! limit 20), `create` one row (`return=representation`; the created rows
//! are deleted after each window so every window sees 1,000 rows).
//! Each round measures, per operation and contender (the first contender
//! alternating between rounds): sequential latency (one request at a time,
//! median of the window) and throughput with `--conc` tasks sharing the
//! client. The server runs on a tokio runtime of its own (2 workers), the
//! clients on another (2 workers). Output: markdown tables of the medians
//! over rounds with the min–max spread, and ratios db-supabase / bare.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_auth::Auth;
use truststream_core_db::{
    col, ColumnDef, ColumnDefault, Database, Query, Row, SortDirection, TableSchema,
};
use truststream_db_supabase::{BytesFormat, SupabaseDb, SupabaseDbConfig};
use truststream_serve::{ApiKeys, Providers, Running, ServeConfig, Server};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

const TABLE: &str = "agents";
const ROWS: usize = 1000;
const SECRET: &str = "an HS256 secret for the supabase-rest bench, 32+ bytes";

#[derive(Clone)]
struct Opts {
    rounds: usize,
    secs: f64,
    warmup: f64,
    conc: usize,
    only: Option<String>,
}

fn opts() -> Res<Opts> {
    let mut o = Opts {
        rounds: 5,
        secs: 2.0,
        warmup: 0.5,
        conc: 8,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rounds" => o.rounds = value()?.parse()?,
            "--secs" => o.secs = value()?.parse()?,
            "--warmup" => o.warmup = value()?.parse()?,
            "--conc" => o.conc = value()?.parse()?,
            "--only" => o.only = Some(value()?),
            // cargo bench passes --bench.
            "--bench" => {}
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if o.rounds == 0 || o.conc == 0 || o.secs <= 0.0 || o.warmup < 0.0 {
        return Err("--rounds, --conc and --secs must be positive".into());
    }
    Ok(o)
}

fn schema() -> TableSchema {
    TableSchema::new(TABLE)
        .column(
            ColumnDef::uuid("id")
                .primary_key()
                .default(ColumnDefault::RandomUuid),
        )
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::text("status").not_null())
        .column(
            ColumnDef::timestamp("created_at")
                .not_null()
                .default(ColumnDefault::Now),
        )
}

fn read_query() -> Query {
    Query::new()
        .filter(col("status").eq("active"))
        .order_by("created_at", SortDirection::Desc)
        .limit(20)
}

/// A served database with the seeded table.
struct Setup {
    label: &'static str,
    db: Arc<dyn Database>,
    server: Running,
    ids: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

async fn setup(label: &'static str) -> Res<Setup> {
    let (db, dir): (Arc<dyn Database>, _) = if label == "sqlite" {
        let dir = tempfile::tempdir()?;
        let db = truststream_db_sqlite::SqliteDatabase::open(
            truststream_db_sqlite::SqliteConfig::file(dir.path().join("bench.db")),
        )
        .await?;
        (Arc::new(db), Some(dir))
    } else {
        (Arc::new(truststream_db_memory::MemoryDatabase::new()), None)
    };
    db.create_table(&schema()).await?;
    let mut ids = Vec::with_capacity(ROWS);
    let mut rows = Vec::with_capacity(ROWS);
    for i in 0..ROWS {
        let id = uuid::Uuid::new_v4().to_string();
        let mut r = Row::new();
        r.insert("id".into(), json!(id));
        r.insert("name".into(), json!(format!("agent-{i:04}")));
        r.insert(
            "status".into(),
            json!(if i % 2 == 0 { "active" } else { "inactive" }),
        );
        // Distinct times, a second apart, so the order is total.
        r.insert(
            "created_at".into(),
            json!(format!(
                "2026-01-01T{:02}:{:02}:{:02}Z",
                i / 3600,
                (i / 60) % 60,
                i % 60
            )),
        );
        ids.push(id);
        rows.push(r);
    }
    db.create_many(TABLE, rows).await?;

    let auth_db = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let mut acfg = JwtAuthConfig::with_secret(SECRET);
    acfg.argon2 = Argon2Cost::minimal();
    let auth = Arc::new(JwtAuth::new(acfg, auth_db).await?);
    let providers = Providers {
        db: db.clone(),
        auth: auth as Arc<dyn Auth>,
        storage: Arc::new(truststream_storage_memory::MemoryStorage::new()),
        metrics: None,
    };
    let config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        ..ServeConfig::default()
    };
    let server = Server::bind(providers, ApiKeys::generate(), config)
        .await?
        .spawn();
    Ok(Setup {
        label,
        db,
        server,
        ids,
        _dir: dir,
    })
}

/// db-supabase as the conformance test configures it.
fn supabase(url: &str, key: &str, sql: Arc<dyn Database>) -> Res<SupabaseDb> {
    let mut cfg = SupabaseDbConfig::service_role(url, key);
    cfg.bytes_format = BytesFormat::Base64;
    Ok(SupabaseDb::new(cfg)?.with_sql(sql))
}

/// Bare reqwest: the client db-supabase builds (same builder settings from
/// the same defaults), and the requests it sends.
struct Bare {
    client: reqwest::Client,
    base: String,
    headers: reqwest::header::HeaderMap,
}

impl Bare {
    fn new(url: &str, key: &str) -> Res<Self> {
        let d = SupabaseDbConfig::default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(d.request_timeout_ms))
            .connect_timeout(Duration::from_millis(d.connect_timeout_ms))
            .pool_max_idle_per_host(d.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_millis(d.pool_idle_timeout_ms))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("apikey", key.parse()?);
        headers.insert("authorization", format!("Bearer {key}").parse()?);
        headers.insert("accept", "application/json".parse()?);
        Ok(Bare {
            client,
            base: format!("{}/rest/v1/{TABLE}", url.trim_end_matches('/')),
            headers,
        })
    }

    async fn rows(resp: reqwest::Response) -> Res<Vec<Value>> {
        let resp = resp.error_for_status()?;
        let body = resp.bytes().await?;
        match serde_json::from_slice(&body)? {
            Value::Array(rows) => Ok(rows),
            _ => Err("not a JSON array".into()),
        }
    }

    async fn get(&self, id: &str) -> Res<Option<Value>> {
        let resp = self
            .client
            .get(format!("{}?id=eq.{id}&limit=1", self.base))
            .headers(self.headers.clone())
            .send()
            .await?;
        Ok(Self::rows(resp).await?.into_iter().next())
    }

    async fn read(&self) -> Res<Vec<Value>> {
        let resp = self
            .client
            .get(format!(
                "{}?status=eq.active&order=created_at.desc.nullsfirst&limit=20",
                self.base
            ))
            .headers(self.headers.clone())
            .send()
            .await?;
        Self::rows(resp).await
    }

    async fn create(&self, row: &Row) -> Res<Value> {
        let resp = self
            .client
            .post(&self.base)
            .headers(self.headers.clone())
            .header("content-type", "application/json")
            .header("prefer", "return=representation")
            .body(serde_json::to_vec(row)?)
            .send()
            .await?;
        Self::rows(resp)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| "no row created".into())
    }
}

fn new_row(n: u64) -> Row {
    let mut r = Row::new();
    r.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    r.insert("name".into(), json!(format!("created-{n}")));
    r.insert("status".into(), json!("created"));
    r
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    Get,
    Read,
    Create,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Get => "get by id",
            Op::Read => "read (filter, order, limit 20)",
            Op::Create => "create one row",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Who {
    Supabase,
    Bare,
}

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Supabase => "db-supabase",
            Who::Bare => "bare reqwest",
        }
    }
}

struct Clients {
    supa: SupabaseDb,
    bare: Bare,
    ids: Vec<String>,
    counter: AtomicU64,
    query: Query,
}

impl Clients {
    /// One operation; errors if the answer is not what it should be.
    async fn once(&self, who: Who, op: Op) -> Res<()> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        match (who, op) {
            (Who::Supabase, Op::Get) => {
                let id = &self.ids[n as usize % self.ids.len()];
                self.supa
                    .get(TABLE, &json!(id))
                    .await?
                    .ok_or("get: no row")?;
            }
            (Who::Bare, Op::Get) => {
                let id = &self.ids[n as usize % self.ids.len()];
                self.bare.get(id).await?.ok_or("get: no row")?;
            }
            (Who::Supabase, Op::Read) => {
                if self.supa.read(TABLE, &self.query).await?.len() != 20 {
                    return Err("read: not 20 rows".into());
                }
            }
            (Who::Bare, Op::Read) => {
                if self.bare.read().await?.len() != 20 {
                    return Err("read: not 20 rows".into());
                }
            }
            (Who::Supabase, Op::Create) => {
                self.supa.create(TABLE, new_row(n)).await?;
            }
            (Who::Bare, Op::Create) => {
                self.bare.create(&new_row(n)).await?;
            }
        }
        Ok(())
    }
}

/// Sequential: the median latency (µs) over the window.
async fn sequential(c: &Clients, who: Who, op: Op, o: &Opts) -> Res<f64> {
    let warm = Instant::now() + Duration::from_secs_f64(o.warmup);
    while Instant::now() < warm {
        c.once(who, op).await?;
    }
    let end = Instant::now() + Duration::from_secs_f64(o.secs);
    let mut lat = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        c.once(who, op).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(&mut lat))
}

/// Concurrent: operations per second with `o.conc` tasks.
async fn concurrent(c: &Arc<Clients>, who: Who, op: Op, o: &Opts) -> Res<f64> {
    let start = Instant::now();
    let warm = start + Duration::from_secs_f64(o.warmup);
    let end = warm + Duration::from_secs_f64(o.secs);
    let mut tasks = Vec::new();
    for _ in 0..o.conc {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                c.once(who, op).await?;
                let now = Instant::now();
                if now >= end {
                    return Ok::<u64, BoxError>(done);
                }
                if now >= warm {
                    done += 1;
                }
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / o.secs)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---- the recording proxy: what each contender puts on the wire ----

/// Client-to-server bytes of every connection, in order of acceptance.
type Tape = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

async fn proxy(to: SocketAddr) -> Res<(String, Tape)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    let tape: Tape = Arc::default();
    let t = tape.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let rec = Arc::new(Mutex::new(Vec::new()));
            if let Ok(mut tape) = t.lock() {
                tape.push(rec.clone());
            }
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(to).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if let Ok(mut r) = rec.lock() {
                            r.extend_from_slice(&buf[..n]);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::join!(up, down);
            });
        }
    });
    Ok((url, tape))
}

/// One request as sent: request line, headers (lower-cased names, sorted;
/// `host` dropped: the proxy's port), body.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    line: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn parse_tape(tape: &Tape) -> Res<Vec<Sent>> {
    let mut out = Vec::new();
    let conns = tape.lock().map_err(|_| "tape poisoned")?.clone();
    for conn in conns {
        let bytes = conn.lock().map_err(|_| "tape poisoned")?.clone();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let end = rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or("a request head without its end")?;
            let head = std::str::from_utf8(&rest[..end])?;
            let mut lines = head.split("\r\n");
            let line = lines.next().unwrap_or_default().to_string();
            let mut headers = BTreeMap::new();
            for h in lines {
                let (k, v) = h.split_once(':').ok_or("a header without ':'")?;
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            let len: usize = headers
                .get("content-length")
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or(0);
            headers.remove("host");
            let body_start = end + 4;
            let body = rest
                .get(body_start..body_start + len)
                .ok_or("a body shorter than its content-length")?
                .to_vec();
            rest = &rest[body_start + len..];
            out.push(Sent {
                line,
                headers,
                body,
            });
        }
    }
    Ok(out)
}

/// Both contenders once through the proxy: the same requests, the same rows.
async fn check_same_requests(s: &Setup, key: &str) -> Res<()> {
    let id = &s.ids[7];
    let row = new_row(0);
    let mut captured = Vec::new();
    for who in [Who::Supabase, Who::Bare] {
        let (url, tape) = proxy(s.server.addr).await?;
        let (got, read, made) = match who {
            Who::Supabase => {
                let db = supabase(&url, key, s.db.clone())?;
                let got = db.get(TABLE, &json!(id)).await?.map(Value::Object);
                let read: Vec<Value> = db
                    .read(TABLE, &read_query())
                    .await?
                    .into_iter()
                    .map(Value::Object)
                    .collect();
                let made = Value::Object(db.create(TABLE, row.clone()).await?);
                (got, read, made)
            }
            Who::Bare => {
                let b = Bare::new(&url, key)?;
                (b.get(id).await?, b.read().await?, b.create(&row).await?)
            }
        };
        // The second create of the same id must be refused; remove it first.
        s.db.delete(TABLE, &json!(row["id"])).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = parse_tape(&tape)?;
        if sent.len() != 3 {
            return Err(format!("{}: {} requests, not 3", who.label(), sent.len()).into());
        }
        let ids = |v: &[Value]| -> Vec<Value> { v.iter().map(|r| r["id"].clone()).collect() };
        if got.as_ref().map(|g| &g["id"]) != Some(&json!(id)) || read.len() != 20 {
            return Err(format!("{}: wrong answers", who.label()).into());
        }
        if made["id"] != row["id"] || made["name"] != row["name"] {
            return Err(format!("{}: wrong created row {made}", who.label()).into());
        }
        captured.push((sent, ids(&read)));
    }
    let (supa, bare) = (&captured[0], &captured[1]);
    for (a, b) in supa.0.iter().zip(&bare.0) {
        if a != b {
            // The service-role key is not printed.
            let text = format!("the requests differ:\ndb-supabase: {a:?}\nbare: {b:?}");
            return Err(text.replace(key, "<service-role key>").into());
        }
    }
    if supa.1 != bare.1 {
        return Err("the reads returned different rows".into());
    }
    eprintln!("[{}] the same requests on the wire:", s.label);
    for r in &supa.0 {
        eprintln!("  {}", r.line);
    }
    if let Some(h) = supa.0.last() {
        let names: Vec<&str> = h.headers.keys().map(String::as_str).collect();
        eprintln!("  headers of the create: {}", names.join(", "));
    }
    Ok(())
}

/// Results: (backend, op, who) -> per round (p50 µs, ops/s).
type Results = BTreeMap<(Op, Who), Vec<(f64, f64)>>;

fn run_backend(
    label: &'static str,
    o: &Opts,
    server_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
) -> Res<Results> {
    let s = server_rt.block_on(setup(label))?;
    let key = s.server.keys.service_role().to_string();
    client_rt.block_on(check_same_requests(&s, &key))?;
    let clients = Arc::new(Clients {
        supa: supabase(&s.server.url, &key, s.db.clone())?,
        bare: Bare::new(&s.server.url, &key)?,
        ids: s.ids.clone(),
        counter: AtomicU64::new(0),
        query: read_query(),
    });
    let mut res = Results::new();
    for round in 0..o.rounds {
        let order = if round % 2 == 0 {
            [Who::Supabase, Who::Bare]
        } else {
            [Who::Bare, Who::Supabase]
        };
        for op in [Op::Get, Op::Read, Op::Create] {
            for who in order {
                let (p50, tput) = client_rt.block_on(async {
                    let p50 = sequential(&clients, who, op, o).await?;
                    let tput = concurrent(&clients, who, op, o).await?;
                    if op == Op::Create {
                        let n =
                            s.db.delete_many(TABLE, &col("status").eq("created"))
                                .await?;
                        if n == 0 {
                            return Err::<_, BoxError>("create: no rows were created".into());
                        }
                    }
                    Ok((p50, tput))
                })?;
                eprintln!(
                    "[{label}] round {} {:<32} {:<13} p50 {:>7.0} µs  {:>7.0} ops/s",
                    round + 1,
                    op.label(),
                    who.label(),
                    p50,
                    tput
                );
                res.entry((op, who)).or_default().push((p50, tput));
            }
        }
    }
    drop(clients);
    server_rt.block_on(async move {
        let _ = s.server.stop().await;
    });
    Ok(res)
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    let m = median(&mut v);
    (m, v[0], v[v.len() - 1])
}

fn report(label: &str, o: &Opts, res: &Results) {
    println!(
        "\n### {label}: {} rounds, {} s windows ({} s warm-up), concurrency {}\n",
        o.rounds, o.secs, o.warmup, o.conc
    );
    println!("| operation | contender | p50 µs (sequential) | ops/s (concurrency {}) | latency ratio bare/db-supabase | throughput ratio db-supabase/bare |", o.conc);
    println!("|---|---|---|---|---|---|");
    for op in [Op::Get, Op::Read, Op::Create] {
        let get = |who| {
            let r = res.get(&(op, who)).cloned().unwrap_or_default();
            let lat: Vec<f64> = r.iter().map(|x| x.0).collect();
            let tput: Vec<f64> = r.iter().map(|x| x.1).collect();
            (stats(&lat), stats(&tput))
        };
        let (sl, st) = get(Who::Supabase);
        let (bl, bt) = get(Who::Bare);
        for (who, l, t) in [(Who::Supabase, sl, st), (Who::Bare, bl, bt)] {
            let (lr, tr) = if who == Who::Supabase {
                (
                    format!("**{:.2}x**", bl.0 / sl.0),
                    format!("**{:.2}x**", st.0 / bt.0),
                )
            } else {
                ("1.00x".into(), "1.00x".into())
            };
            println!(
                "| {} | {} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {} | {} |",
                op.label(),
                who.label(),
                l.0,
                l.1,
                l.2,
                t.0,
                t.1,
                t.2,
                lr,
                tr
            );
        }
    }
    // Per-round ratios (each round's pair measured back to back).
    println!("\nPer-round throughput ratios db-supabase/bare:");
    for op in [Op::Get, Op::Read, Op::Create] {
        let s = res.get(&(op, Who::Supabase)).cloned().unwrap_or_default();
        let b = res.get(&(op, Who::Bare)).cloned().unwrap_or_default();
        let r: Vec<String> = s
            .iter()
            .zip(&b)
            .map(|(s, b)| format!("{:.2}", s.1 / b.1))
            .collect();
        println!("- {}: {}", op.label(), r.join(", "));
    }
}

fn main() -> Res<()> {
    let o = opts()?;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for label in ["sqlite", "memory"] {
        if o.only.as_deref().is_some_and(|x| x != label) {
            continue;
        }
        let res = run_backend(label, &o, &server_rt, &client_rt)?;
        report(&format!("serve over db-{label}"), &o, &res);
    }
    Ok(())
}
