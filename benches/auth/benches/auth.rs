//! auth-jwt against the libraries underneath it, one run, ratios.
//!
//! ```text
//! cargo bench -p truststream-bench-auth [-- --only validate|refresh|signin]
//! cargo bench -p truststream-bench-auth --bench auth -- --count <case> <n>
//! ```
//!
//! - **validate**: `JwtAuth::validate_token` against raw
//!   `jsonwebtoken::decode` with the same key and the same `Validation`
//!   (pinned algorithm, required exp/aud/iss/sub, nbf, leeway), for HS256,
//!   RS256, ES256 and EdDSA, each in three rows: first the default
//!   configuration (`checked` revocation through the in-process view,
//!   `revocation_staleness_ms` = 1000, sessions in a SQLite WAL file as in
//!   the embedded default) against the same work by hand: a decode, then
//!   the session's liveness from a map that trusts a read of the row for
//!   the same 1000 ms and otherwise reads it through a sqlx pool of its
//!   own; then `checked` with `revocation_staleness_ms = 0` (one session
//!   read per validation) against a decode plus that read every time;
//!   then `stateless` (signature and claims only) against a bare decode.
//!   The second and third are labelled.
//! - **refresh**: `refresh_session` round trips (each refresh rotates the
//!   token the previous one returned) on SQLite (a WAL file) and PostgreSQL
//!   (a scratch schema on `DATABASE_URL`, default 127.0.0.1:5432/test;
//!   skipped with a message when unreachable) against a hand-written sqlx
//!   refresh doing the least the same storage design needs: three reads,
//!   one compare-and-set update plus one insert in a transaction, one JWT.
//! - **signin**: `sign_in` at the default argon2id cost (19 MiB, t=2, p=1)
//!   on SQLite against a bare argon2 verification with the same parameters.
//!
//! - **--count** runs one side alone, `n` times, on a current-thread
//!   runtime, for `valgrind --tool=callgrind` instruction counts (count at
//!   2n minus count at n, divided by n: setup cancels). Cases:
//!   `validate-checked`, `validate-read-always`, `validate-stateless`,
//!   `validate-raw` (a bare decode), `validate-raw-cached` (the default
//!   row's raw side: decode plus the 1000 ms session map) (HS256, SQLite
//!   file), `refresh`, `refresh-dbonly`, `refresh-raw` (SQLite file),
//!   `refresh-pg`, `refresh-dbonly-pg`, `refresh-raw-pg` (PostgreSQL).
//!
//! Rounds alternate between the sides so drift hits them alike. Each line
//! reports each side's median round as ops/s, the ratio of the median
//! rounds TrustStream / raw (1.0 = as fast as the raw library) and the
//! spread of the per-round ratios (round i of one side against round i of
//! the other: lowest and highest).

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm as A, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use truststream_auth_jwt::{
    Algorithm, Argon2Cost, JwtAuth, JwtAuthConfig, Revocation, DEFAULT_REVOCATION_STALENESS_MS,
};
use truststream_core_auth::{Auth, SignIn, SignUp};
use truststream_core_db::Database;

/// Rounds of the token-validation comparisons: many short rounds, so the
/// median is robust to a noisy neighbour.
const VALIDATE_ROUNDS: usize = 41;
/// Rounds of the refresh and sign-in comparisons (short rounds too).
const SHORT_ROUNDS: usize = 21;
const SECRET: &str = "benchmark secret, at least 32 bytes long";
const PASSWORD: &str = "correct horse battery staple";

fn keys_dir() -> String {
    format!(
        "{}/../../crates/auth-jwt/tests/keys",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn key(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", keys_dir())).expect("key file")
}

/// Round times of the two sides of a comparison.
struct Pair {
    ts: Vec<Duration>,
    raw: Vec<Duration>,
    n: u64,
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ops(d: Duration, n: u64) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn fmt_rate(ops: f64) -> String {
    if ops >= 1000.0 {
        format!("{:.0} op/s", ops)
    } else {
        format!("{:.1} op/s", ops)
    }
}

impl Pair {
    /// One line: each side's median round as ops/s, the median-round ratio
    /// TrustStream / raw, and the spread of the per-round ratios.
    fn print(&self, what: &str) {
        print_ratio(what, "truststream", &self.ts, "raw", &self.raw, self.n);
    }
}

fn print_ratio(what: &str, a: &str, ta: &[Duration], b: &str, tb: &[Duration], n: u64) {
    let (med_a, med_b) = (ops(median(ta), n), ops(median(tb), n));
    // Round i of both sides ran back to back: their ratio is one sample.
    let per_round: Vec<f64> = ta
        .iter()
        .zip(tb)
        .map(|(x, y)| y.as_secs_f64() / x.as_secs_f64())
        .collect();
    let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = per_round.iter().copied().fold(0.0, f64::max);
    println!(
        "{what:<52} {a} {:>11} | {b} {:>11} | ratio {:.2} (rounds {:.2}-{:.2})",
        fmt_rate(med_a),
        fmt_rate(med_b),
        med_a / med_b,
        lo,
        hi
    );
}

type SideFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;
type Side<'a> = Box<dyn FnMut() -> SideFuture<'a> + 'a>;

/// A warm-up, then `count` rounds of `n` calls per side; the side that
/// goes first rotates every round so drift hits all sides alike. Returns
/// the round times per side.
async fn rounds(n: u64, count: usize, sides: &mut [Side<'_>]) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::new(); sides.len()];
    for side in sides.iter_mut() {
        for _ in 0..n.min(100) {
            side().await;
        }
    }
    for round in 0..count {
        for k in 0..sides.len() {
            let i = (round + k) % sides.len();
            let t = Instant::now();
            for _ in 0..n {
                (sides[i])().await;
            }
            times[i].push(t.elapsed());
        }
    }
    times
}

async fn alternate<'a, T, R, FT, FR>(n: u64, count: usize, mut ts: T, mut raw: R) -> Pair
where
    T: FnMut() -> FT + 'a,
    FT: Future<Output = ()> + 'a,
    R: FnMut() -> FR + 'a,
    FR: Future<Output = ()> + 'a,
{
    let mut sides: Vec<Side<'a>> = vec![
        Box::new(move || Box::pin(ts()) as SideFuture<'a>),
        Box::new(move || Box::pin(raw()) as SideFuture<'a>),
    ];
    let mut t = rounds(n, count, &mut sides).await;
    let raw = t.pop().unwrap_or_default();
    let ts = t.pop().unwrap_or_default();
    Pair { ts, raw, n }
}

fn base_config() -> JwtAuthConfig {
    let mut c = JwtAuthConfig::with_secret(SECRET);
    c.argon2 = Argon2Cost::minimal();
    c.sign_in_rate_limit.max_failures = 0;
    c
}

fn email() -> String {
    format!("bench-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// The same validation auth-jwt builds for its own tokens.
fn raw_validation(alg: A) -> Validation {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.leeway = 5;
    v.validate_nbf = true;
    v.set_audience(&["authenticated"]);
    v.set_issuer(&["truststream"]);
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    v
}

/// The database of the TrustStream sides: a SQLite WAL file at `path`,
/// as in the embedded default.
async fn sqlite_db(path: &Path) -> Arc<dyn Database> {
    Arc::new(
        truststream_db_sqlite::SqliteDatabase::open(truststream_db_sqlite::SqliteConfig::file(
            path,
        ))
        .await
        .expect("sqlite"),
    )
}

/// The raw sides' pool on the same SQLite file, with the same pragmas.
async fn raw_sqlite_pool(path: &Path) -> sqlx::SqlitePool {
    // db-sqlite's pool settings: no liveness ping on acquire.
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("raw pool")
}

async fn validate() {
    println!("== validate_token vs jsonwebtoken::decode (same key, same validation)");
    // The default mode keeps sessions in the configured database: a SQLite
    // WAL file here, as in the embedded default.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.db");
    let sqlite = sqlite_db(&path).await;
    // The raw side of the checked rows reads the same session row from the
    // same file through its own pool, with the same pragmas.
    let raw_pool = raw_sqlite_pool(&path).await;
    let raw_pool = &raw_pool;
    for (alg, pem) in [
        (Algorithm::HS256, None),
        (Algorithm::RS256, Some("rsa_private.pem")),
        (Algorithm::ES256, Some("ec_private.pem")),
        (Algorithm::EdDSA, Some("ed_private.pem")),
    ] {
        for (mode, staleness) in [
            (Revocation::Checked, None),
            (Revocation::Checked, Some(0)),
            (Revocation::Stateless, None),
        ] {
            let mut cfg = match pem {
                None => base_config(),
                Some(p) => {
                    let mut c = JwtAuthConfig::with_private_key(alg, key(p));
                    c.argon2 = Argon2Cost::minimal();
                    c
                }
            };
            cfg.revocation = mode;
            if let Some(ms) = staleness {
                cfg.revocation_staleness_ms = ms;
            }
            let reads = staleness == Some(0);
            let auth = JwtAuth::new(cfg, sqlite.clone()).await.expect("provider");
            let s = auth
                .sign_up(SignUp::new(email(), PASSWORD))
                .await
                .expect("sign up");
            let token = s.access_token.expose().to_string();
            let (jalg, dkey) = match alg {
                Algorithm::HS256 => (A::HS256, DecodingKey::from_secret(SECRET.as_bytes())),
                _ => {
                    let jwk: jsonwebtoken::jwk::Jwk =
                        serde_json::from_value(auth.jwks()["keys"][0].clone()).expect("jwk");
                    let a = match alg {
                        Algorithm::RS256 => A::RS256,
                        Algorithm::ES256 => A::ES256,
                        _ => A::EdDSA,
                    };
                    (a, DecodingKey::from_jwk(&jwk).expect("key"))
                }
            };
            let v = raw_validation(jalg);
            let n = match (alg, reads) {
                (Algorithm::HS256, false) => 5_000,
                (Algorithm::HS256, true) => 1_000,
                _ => 300,
            };
            let cache = RawSessionCache::default();
            let (auth, token, dkey, v, cache) = (&auth, token.as_str(), &dkey, &v, &cache);
            let pair = alternate(
                n,
                VALIDATE_ROUNDS,
                move || async move {
                    black_box(auth.validate_token(black_box(token)).await.expect("valid"));
                },
                move || async move {
                    let claims =
                        jsonwebtoken::decode::<Map<String, Value>>(black_box(token), dkey, v)
                            .expect("valid")
                            .claims;
                    match (mode, reads) {
                        (Revocation::Checked, false) => cache.check(raw_pool, &claims).await,
                        (Revocation::Checked, true) => {
                            raw_session_check(raw_pool, &claims).await;
                        }
                        (Revocation::Stateless, _) => {}
                    }
                    black_box(claims);
                },
            )
            .await;
            let label = match (mode, reads) {
                (Revocation::Checked, false) => "default, vs decode+read cached 1 s",
                (Revocation::Checked, true) => "checked, staleness 0, vs decode+read",
                (Revocation::Stateless, _) => "stateless, vs decode",
            };
            pair.print(&format!("validate {alg:?}, {label}"));
        }
    }
}

/// What the checked mode adds, written by hand: read the token's session
/// row and check it is the token subject's, neither revoked nor past its
/// end. Returns the end.
async fn raw_session_check(
    pool: &sqlx::SqlitePool,
    claims: &Map<String, Value>,
) -> chrono::DateTime<chrono::FixedOffset> {
    let sid = claims["session_id"].as_str().expect("session_id claim");
    let (user_id, revoked_at, not_after): (String, Option<String>, String) =
        sqlx::query_as("SELECT user_id, revoked_at, not_after FROM auth_sessions WHERE id = ?")
            .bind(sid)
            .fetch_one(pool)
            .await
            .expect("session row");
    assert_eq!(Some(user_id.as_str()), claims["sub"].as_str(), "owner");
    assert!(revoked_at.is_none(), "session revoked");
    let end = chrono::DateTime::parse_from_rfc3339(&not_after).expect("not_after");
    assert!(end > chrono::Utc::now(), "session ended");
    end
}

/// The default checked mode written by hand: a session read as live is
/// trusted for the default `revocation_staleness_ms` from the moment its
/// read started (and while it has not ended), then read again.
#[derive(Default)]
struct RawSessionCache {
    live: Mutex<HashMap<String, (Instant, chrono::DateTime<chrono::FixedOffset>)>>,
}

impl RawSessionCache {
    async fn check(&self, pool: &sqlx::SqlitePool, claims: &Map<String, Value>) {
        let sid = claims["session_id"].as_str().expect("session_id claim");
        let staleness = Duration::from_millis(DEFAULT_REVOCATION_STALENESS_MS);
        let known = self.live.lock().expect("lock").get(sid).copied();
        if let Some((read_at, end)) = known {
            if read_at.elapsed() < staleness && end > chrono::Utc::now() {
                return;
            }
        }
        let read_at = Instant::now();
        let end = raw_session_check(pool, claims).await;
        self.live
            .lock()
            .expect("lock")
            .insert(sid.to_string(), (read_at, end));
    }
}

// ------------------------------------------------------------- refresh

/// The hand-written refresh: the same storage design with nothing but sqlx.
trait RawStore {
    async fn setup(&self) -> String;
    async fn refresh(&self, token: &str) -> String;
}

/// Hex SHA-256 as auth-jwt writes a token's id (a table lookup per
/// nibble into a stack buffer, not `hex::encode`'s `char` iterator), so
/// both sides of the refresh rows hash and encode the same way.
fn sha_hex(s: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(Sha256::digest(s.as_bytes())) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    String::from_utf8(out.to_vec()).expect("hex digits")
}

fn child_of(token: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("hmac");
    mac.update(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// What a refresh's access token is made of: the user's and the session's
/// columns that `JwtAuth::issue` puts in its claims.
struct ClaimsOf {
    user_id: String,
    email: String,
    roles: Value,
    user_metadata: Map<String, Value>,
    app_metadata: Map<String, Value>,
    session_id: String,
    session_created_at: chrono::DateTime<chrono::Utc>,
    not_after: chrono::DateTime<chrono::Utc>,
}

/// Signs the claims `JwtAuth::issue` signs (the Supabase-shaped set, same
/// names, order and values), so both sides of a refresh sign the same
/// token work.
fn sign(c: ClaimsOf) -> String {
    let now = chrono::Utc::now();
    let exp = (now + chrono::Duration::seconds(900)).min(c.not_after);
    let mut app_metadata = c.app_metadata;
    app_metadata.insert("roles".into(), c.roles);
    jsonwebtoken::encode(
        &Header::new(A::HS256),
        &json!({
            "iss": "truststream",
            "sub": c.user_id,
            "aud": "authenticated",
            "exp": exp.timestamp(),
            "iat": now.timestamp(),
            "email": c.email,
            "phone": "",
            "app_metadata": app_metadata,
            "user_metadata": c.user_metadata,
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": c.session_created_at.timestamp()}],
            "session_id": c.session_id,
            "is_anonymous": false,
        }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// A stored timestamp (RFC 3339 text) as the provider's rows give it.
fn parse_ts(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("timestamp")
        .with_timezone(&chrono::Utc)
}

/// A stored JSON object (text) as a map.
fn parse_object(s: &str) -> Map<String, Value> {
    serde_json::from_str(s).expect("JSON object")
}

/// The session checks `refresh_session` makes: live, not revoked.
fn check_active(
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    not_after: chrono::DateTime<chrono::Utc>,
) {
    assert!(
        revoked_at.is_none() && not_after > chrono::Utc::now(),
        "active session"
    );
}

/// A stored password hash of the length the default argon2id cost writes
/// (a PHC string): the raw tables hold what auth-jwt's rows hold.
const PHC_LIKE: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

struct RawSqlite(sqlx::SqlitePool);

impl RawStore for RawSqlite {
    async fn setup(&self) -> String {
        for ddl in [
            "CREATE TABLE raw_users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, roles TEXT NOT NULL, user_metadata TEXT NOT NULL, app_metadata TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
            "CREATE TABLE raw_sessions (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created_at TEXT NOT NULL, refreshed_at TEXT, not_after TEXT NOT NULL, revoked_at TEXT, refresh_counter INTEGER NOT NULL)",
            "CREATE TABLE raw_refresh_tokens (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, generation INTEGER NOT NULL, created_at TEXT NOT NULL)",
            "CREATE INDEX raw_sessions_user_id ON raw_sessions (user_id)",
            "CREATE INDEX raw_refresh_tokens_session_id ON raw_refresh_tokens (session_id)",
        ] {
            sqlx::query(ddl).execute(&self.0).await.expect("ddl");
        }
        sqlx::query("INSERT INTO raw_users VALUES ('00000000-0000-4000-8000-000000000001', 'bench-00000000000000000000000000000000@example.com', ?, '[]', '{}', '{\"provider\":\"email\"}', ?, ?)")
            .bind(PHC_LIKE)
            .bind(now_text())
            .bind(now_text())
            .execute(&self.0)
            .await
            .expect("user");
        sqlx::query("INSERT INTO raw_sessions VALUES ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000001', ?, NULL, '2999-01-01T00:00:00.000000Z', NULL, 0)")
            .bind(now_text())
            .execute(&self.0)
            .await
            .expect("session");
        let token = "raw-initial-token".to_string();
        sqlx::query("INSERT INTO raw_refresh_tokens VALUES (?, '00000000-0000-4000-8000-000000000002', 0, ?)")
            .bind(sha_hex(&token))
            .bind(now_text())
            .execute(&self.0)
            .await
            .expect("token");
        token
    }

    async fn refresh(&self, token: &str) -> String {
        use sqlx::Row as _;
        let p = &self.0;
        let t = sqlx::query("SELECT session_id, generation FROM raw_refresh_tokens WHERE id = ?")
            .bind(sha_hex(token))
            .fetch_one(p)
            .await
            .expect("token row");
        let sid: String = t.get(0);
        let generation: i64 = t.get(1);
        let s = sqlx::query(
            "SELECT user_id, created_at, refresh_counter, revoked_at, not_after FROM raw_sessions WHERE id = ?",
        )
        .bind(&sid)
        .fetch_one(p)
        .await
        .expect("session row");
        let uid: String = s.get(0);
        let session_created_at = parse_ts(s.get(1));
        assert_eq!(s.get::<i64, _>(2), generation);
        let not_after = parse_ts(s.get(4));
        check_active(s.get::<Option<&str>, _>(3).map(parse_ts), not_after);
        let u = sqlx::query(
            "SELECT id, email, roles, user_metadata, app_metadata FROM raw_users WHERE id = ?",
        )
        .bind(&uid)
        .fetch_one(p)
        .await
        .expect("user row");
        let claims = ClaimsOf {
            user_id: u.get(0),
            email: u.get(1),
            roles: serde_json::from_str(u.get(2)).expect("roles"),
            user_metadata: parse_object(u.get(3)),
            app_metadata: parse_object(u.get(4)),
            session_id: sid.clone(),
            session_created_at,
            not_after,
        };
        let child = child_of(token);
        let mut c = p.acquire().await.expect("conn");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *c)
            .await
            .expect("begin");
        let n = sqlx::query("UPDATE raw_sessions SET refresh_counter = ?, refreshed_at = ? WHERE id = ? AND refresh_counter = ? AND revoked_at IS NULL")
            .bind(generation + 1)
            .bind(now_text())
            .bind(&sid)
            .bind(generation)
            .execute(&mut *c)
            .await
            .expect("cas")
            .rows_affected();
        assert_eq!(n, 1);
        sqlx::query("INSERT INTO raw_refresh_tokens VALUES (?, ?, ?, ?)")
            .bind(sha_hex(&child))
            .bind(&sid)
            .bind(generation + 1)
            .bind(now_text())
            .execute(&mut *c)
            .await
            .expect("insert");
        sqlx::query("COMMIT")
            .execute(&mut *c)
            .await
            .expect("commit");
        black_box(sign(claims));
        child
    }
}

struct RawPg {
    pool: sqlx::PgPool,
    schema: String,
}

impl RawStore for RawPg {
    async fn setup(&self) -> String {
        let s = &self.schema;
        for ddl in [
            format!("CREATE TABLE \"{s}\".raw_users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL, roles JSONB NOT NULL, user_metadata JSONB NOT NULL, app_metadata JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL)"),
            format!("CREATE TABLE \"{s}\".raw_sessions (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL, refreshed_at TIMESTAMPTZ, not_after TIMESTAMPTZ NOT NULL, revoked_at TIMESTAMPTZ, refresh_counter BIGINT NOT NULL)"),
            format!("CREATE TABLE \"{s}\".raw_refresh_tokens (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, generation BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL)"),
            format!("CREATE INDEX ON \"{s}\".raw_sessions (user_id)"),
            format!("CREATE INDEX ON \"{s}\".raw_refresh_tokens (session_id)"),
            format!("INSERT INTO \"{s}\".raw_users VALUES ('00000000-0000-4000-8000-000000000001', 'bench-00000000000000000000000000000000@example.com', '{PHC_LIKE}', '[]', '{{}}', '{{\"provider\":\"email\"}}', now(), now())"),
            format!("INSERT INTO \"{s}\".raw_sessions VALUES ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000001', now(), NULL, '2999-01-01T00:00:00Z', NULL, 0)"),
        ] {
            sqlx::query(&ddl).execute(&self.pool).await.expect("ddl");
        }
        let token = "raw-initial-token".to_string();
        sqlx::query(&format!(
            "INSERT INTO \"{s}\".raw_refresh_tokens VALUES ($1, '00000000-0000-4000-8000-000000000002', 0, now())"
        ))
        .bind(sha_hex(&token))
        .execute(&self.pool)
        .await
        .expect("token");
        token
    }

    async fn refresh(&self, token: &str) -> String {
        use sqlx::Row as _;
        let (p, s) = (&self.pool, &self.schema);
        let t = sqlx::query(&format!(
            "SELECT session_id, generation FROM \"{s}\".raw_refresh_tokens WHERE id = $1"
        ))
        .bind(sha_hex(token))
        .fetch_one(p)
        .await
        .expect("token row");
        let sid: String = t.get(0);
        let generation: i64 = t.get(1);
        let row = sqlx::query(&format!(
            "SELECT user_id, created_at, refresh_counter, revoked_at, not_after FROM \"{s}\".raw_sessions WHERE id = $1"
        ))
        .bind(&sid)
        .fetch_one(p)
        .await
        .expect("session row");
        let uid: String = row.get(0);
        assert_eq!(row.get::<i64, _>(2), generation);
        let not_after = row.get(4);
        check_active(row.get(3), not_after);
        let u = sqlx::query(&format!(
            "SELECT id, email, roles, user_metadata, app_metadata FROM \"{s}\".raw_users WHERE id = $1"
        ))
        .bind(&uid)
        .fetch_one(p)
        .await
        .expect("user row");
        use sqlx::types::Json;
        let claims = ClaimsOf {
            user_id: u.get(0),
            email: u.get(1),
            roles: u.get::<Json<Value>, _>(2).0,
            user_metadata: u.get::<Json<Map<String, Value>>, _>(3).0,
            app_metadata: u.get::<Json<Map<String, Value>>, _>(4).0,
            session_id: sid.clone(),
            session_created_at: row.get(1),
            not_after,
        };
        let child = child_of(token);
        let mut tx = p.begin().await.expect("begin");
        let n = sqlx::query(&format!(
            "UPDATE \"{s}\".raw_sessions SET refresh_counter = $1, refreshed_at = now() WHERE id = $2 AND refresh_counter = $3 AND revoked_at IS NULL"
        ))
        .bind(generation + 1)
        .bind(&sid)
        .bind(generation)
        .execute(&mut *tx)
        .await
        .expect("cas")
        .rows_affected();
        assert_eq!(n, 1);
        sqlx::query(&format!(
            "INSERT INTO \"{s}\".raw_refresh_tokens VALUES ($1, $2, $3, now())"
        ))
        .bind(sha_hex(&child))
        .bind(&sid)
        .bind(generation + 1)
        .execute(&mut *tx)
        .await
        .expect("insert");
        tx.commit().await.expect("commit");
        black_box(sign(claims));
        child
    }
}

/// The same core-db calls auth-jwt makes for a refresh (two typed reads of
/// the columns it uses and one typed `get`, one two-operation
/// `transaction`, one JWT), made directly on the database provider:
/// separates the auth logic's cost from the database provider's.
struct DbOnly {
    db: Arc<dyn Database>,
}

impl DbOnly {
    async fn setup(&self) -> String {
        use truststream_core_db::{ColumnDef, TableSchema};
        let tables = [
            TableSchema::new("dbo_users")
                .column(ColumnDef::uuid("id").primary_key())
                .column(ColumnDef::text("email").not_null().unique())
                .column(ColumnDef::text("password_hash").not_null())
                .column(ColumnDef::json("roles").not_null())
                .column(ColumnDef::json("user_metadata").not_null())
                .column(ColumnDef::json("app_metadata").not_null())
                .column(ColumnDef::timestamp("created_at").not_null())
                .column(ColumnDef::timestamp("updated_at").not_null()),
            TableSchema::new("dbo_sessions")
                .column(ColumnDef::uuid("id").primary_key())
                .column(ColumnDef::uuid("user_id").not_null())
                .column(ColumnDef::timestamp("created_at").not_null())
                .column(ColumnDef::timestamp("refreshed_at"))
                .column(ColumnDef::timestamp("not_after").not_null())
                .column(ColumnDef::timestamp("revoked_at"))
                .column(ColumnDef::integer("refresh_counter").not_null()),
            TableSchema::new("dbo_refresh_tokens")
                .column(ColumnDef::text("id").primary_key())
                .column(ColumnDef::uuid("session_id").not_null())
                .column(ColumnDef::integer("generation").not_null())
                .column(ColumnDef::timestamp("created_at").not_null()),
        ];
        for t in &tables {
            self.db.create_table(t).await.expect("table");
        }
        // auth-jwt's indexes.
        for (t, c) in [
            ("dbo_sessions", "user_id"),
            ("dbo_refresh_tokens", "session_id"),
        ] {
            self.db
                .create_index(&truststream_core_db::IndexSpec::new(t, [c]))
                .await
                .expect("index");
        }
        let (uid, sid) = (
            uuid::Uuid::new_v4().to_string(),
            uuid::Uuid::new_v4().to_string(),
        );
        let row = |v: Value| v.as_object().cloned().expect("object");
        self.db
            .create("dbo_users", row(json!({"id": uid, "email": email(), "password_hash": PHC_LIKE,
                "roles": [], "user_metadata": {}, "app_metadata": {"provider": "email"}, "created_at": now_text(), "updated_at": now_text()})))
            .await
            .expect("user");
        self.db
            .create(
                "dbo_sessions",
                row(json!({"id": sid, "user_id": uid, "created_at": now_text(),
                "not_after": "2999-01-01T00:00:00Z", "refresh_counter": 0})),
            )
            .await
            .expect("session");
        let token = "dbo-initial-token".to_string();
        self.db
            .create(
                "dbo_refresh_tokens",
                row(json!({"id": sha_hex(&token), "session_id": sid,
                "generation": 0, "created_at": now_text()})),
            )
            .await
            .expect("token");
        token
    }

    async fn refresh(&self, token: &str) -> String {
        use truststream_core_db::{and, col, DatabaseExt as _, Operation};
        // auth-jwt's reads: the token's two columns, the whole session by
        // key, the user's client-visible columns; all typed.
        #[derive(serde::Deserialize)]
        struct TokenCols {
            session_id: String,
            generation: i64,
        }
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct SessionCols {
            id: String,
            user_id: String,
            created_at: String,
            refreshed_at: Option<String>,
            not_after: String,
            revoked_at: Option<String>,
            refresh_counter: i64,
        }
        #[derive(serde::Deserialize)]
        struct UserCols {
            id: String,
            email: String,
            roles: Value,
            user_metadata: Map<String, Value>,
            app_metadata: Map<String, Value>,
            #[allow(dead_code)]
            created_at: String,
        }
        let t: TokenCols = self
            .db
            .get_columns_as(
                "dbo_refresh_tokens",
                &json!(sha_hex(token)),
                &["session_id", "generation"],
            )
            .await
            .expect("read")
            .expect("token");
        let generation = t.generation;
        let s: SessionCols = self
            .db
            .get_as("dbo_sessions", &json!(t.session_id))
            .await
            .expect("get")
            .expect("session");
        let u: UserCols = self
            .db
            .get_columns_as(
                "dbo_users",
                &json!(s.user_id),
                &[
                    "id",
                    "email",
                    "roles",
                    "user_metadata",
                    "app_metadata",
                    "created_at",
                ],
            )
            .await
            .expect("read")
            .expect("user");
        let child = child_of(token);
        let sid_s = t.session_id;
        let patch = json!({"refresh_counter": generation + 1, "refreshed_at": now_text()});
        let out = self
            .db
            .transaction(vec![
                Operation::UpdateMany {
                    table: "dbo_sessions".into(),
                    filter: and([
                        col("id").eq(sid_s.as_str()),
                        col("refresh_counter").eq(generation),
                        col("revoked_at").is_null(),
                    ]),
                    data: patch.as_object().cloned().expect("object"),
                },
                Operation::InsertMany {
                    table: "dbo_refresh_tokens".into(),
                    rows: vec![json!({"id": sha_hex(&child), "session_id": sid_s, "generation": generation + 1,
                        "created_at": now_text()}).as_object().cloned().expect("object")],
                },
            ])
            .await
            .expect("transaction");
        assert_eq!(out[0], truststream_core_db::OperationOutput::Affected(1));
        let not_after = parse_ts(&s.not_after);
        check_active(s.revoked_at.as_deref().map(parse_ts), not_after);
        black_box(sign(ClaimsOf {
            user_id: u.id,
            email: u.email,
            roles: u.roles,
            user_metadata: u.user_metadata,
            app_metadata: u.app_metadata,
            session_id: sid_s,
            session_created_at: parse_ts(&s.created_at),
            not_after,
        }));
        child
    }
}

async fn refresh_pair(label: &str, db: Arc<dyn Database>, raw: &impl RawStore, n: u64) {
    use std::cell::RefCell;
    let auth = JwtAuth::new(base_config(), db.clone())
        .await
        .expect("provider");
    let s = auth
        .sign_up(SignUp::new(email(), PASSWORD))
        .await
        .expect("sign up");
    let dbo = DbOnly { db };
    let ts_token = RefCell::new(s.refresh_token.expose().to_string());
    let dbo_token = RefCell::new(dbo.setup().await);
    let raw_token = RefCell::new(raw.setup().await);
    let (auth, dbo, ts_token, dbo_token, raw_token) =
        (&auth, &dbo, &ts_token, &dbo_token, &raw_token);
    let mut sides: Vec<Side<'_>> = vec![
        Box::new(move || {
            Box::pin(async move {
                let t = ts_token.borrow().clone();
                let next = auth.refresh_session(&t).await.expect("refresh");
                *ts_token.borrow_mut() = next.refresh_token.expose().to_string();
            })
        }),
        Box::new(move || {
            Box::pin(async move {
                let t = dbo_token.borrow().clone();
                *dbo_token.borrow_mut() = dbo.refresh(&t).await;
            })
        }),
        Box::new(move || {
            Box::pin(async move {
                let t = raw_token.borrow().clone();
                *raw_token.borrow_mut() = raw.refresh(&t).await;
            })
        }),
    ];
    let t = rounds(n, SHORT_ROUNDS, &mut sides).await;
    let what = format!("refresh round trip ({label})");
    print_ratio(&what, "truststream", &t[0], "raw", &t[2], n);
    print_ratio(
        "  of which: same core-db calls alone",
        "core-db",
        &t[1],
        "raw",
        &t[2],
        n,
    );
    print_ratio(
        "  of which: auth logic over those calls",
        "truststream",
        &t[0],
        "core-db",
        &t[1],
        n,
    );
}

async fn refresh() {
    println!(
        "== refresh_session vs hand-written sqlx (same design: 3 reads, CAS update + insert, JWT)"
    );
    // SQLite: a WAL file; the raw pool opens the same file with the same pragmas.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.db");
    let db = sqlite_db(&path).await;
    let pool = raw_sqlite_pool(&path).await;
    refresh_pair("SQLite file, WAL", db, &RawSqlite(pool), 100).await;

    // PostgreSQL, when a server is reachable.
    let Some(url) = truststream_db_postgres::testing::server().await else {
        println!("refresh round trip (PostgreSQL)              skipped: no server (see above)");
        return;
    };
    let scratch = truststream_db_postgres::testing::Scratch::new(url.clone());
    let cfg = scratch.config("authbench");
    let schema = cfg.schema.clone().expect("scratch schema");
    let db: Arc<dyn Database> = Arc::new(
        truststream_db_postgres::PgDatabase::open(cfg)
            .await
            .expect("postgres"),
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .expect("raw pool");
    refresh_pair("PostgreSQL", db, &RawPg { pool, schema }, 60).await;
    scratch.cleanup().await.expect("cleanup");
}

// -------------------------------------------------------------- sign-in

async fn signin() {
    println!("== sign_in at the default argon2id cost vs bare argon2 verification");
    let cost = Argon2Cost::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sqlite_db(&dir.path().join("auth.db")).await;
    let mut cfg = base_config();
    cfg.argon2 = cost.clone();
    let auth = JwtAuth::new(cfg, db).await.expect("provider");
    let e = email();
    auth.sign_up(SignUp::new(&e, PASSWORD))
        .await
        .expect("sign up");
    let params = argon2::Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let hash = argon
        .hash_password(PASSWORD.as_bytes(), &salt)
        .expect("hash")
        .to_string();
    let (auth, e, hash) = (&auth, e.as_str(), hash.as_str());
    let pair = alternate(
        3,
        SHORT_ROUNDS,
        move || async move {
            black_box(
                auth.sign_in(SignIn::new(e, PASSWORD))
                    .await
                    .expect("sign in"),
            );
        },
        move || async move {
            let parsed = PasswordHash::new(hash).expect("parse");
            argon2::Argon2::default()
                .verify_password(PASSWORD.as_bytes(), &parsed)
                .expect("verify");
        },
    )
    .await;
    println!(
        "sign_in median {:.1} ms, argon2 verification median {:.1} ms (m={} KiB, t={}, p={})",
        median(&pair.ts).as_secs_f64() * 1000.0 / pair.n as f64,
        median(&pair.raw).as_secs_f64() * 1000.0 / pair.n as f64,
        cost.memory_kib,
        cost.iterations,
        cost.parallelism
    );
    pair.print("sign_in (SQLite) vs argon2 verify");
}

/// The refresh cases of `--count` on PostgreSQL (`refresh-pg`,
/// `refresh-dbonly-pg`, `refresh-raw-pg`): a scratch schema on
/// `DATABASE_URL`; the client's instructions only (the server is another
/// process).
async fn count_pg(case: &str, n: u64) {
    let url = truststream_db_postgres::testing::server()
        .await
        .expect("a PostgreSQL server for the -pg cases");
    let scratch = truststream_db_postgres::testing::Scratch::new(url.clone());
    let cfg = scratch.config("authcount");
    let schema = cfg.schema.clone().expect("scratch schema");
    let db: Arc<dyn Database> = Arc::new(
        truststream_db_postgres::PgDatabase::open(cfg)
            .await
            .expect("postgres"),
    );
    match case {
        "refresh-pg" => {
            let auth = JwtAuth::new(base_config(), db).await.expect("provider");
            let s = auth
                .sign_up(SignUp::new(email(), PASSWORD))
                .await
                .expect("sign up");
            let mut t = s.refresh_token.expose().to_string();
            for _ in 0..n {
                t = auth
                    .refresh_session(&t)
                    .await
                    .expect("refresh")
                    .refresh_token
                    .expose()
                    .to_string();
            }
        }
        "refresh-dbonly-pg" => {
            let dbo = DbOnly { db };
            let mut t = dbo.setup().await;
            for _ in 0..n {
                t = dbo.refresh(&t).await;
            }
        }
        _ => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .connect(&url)
                .await
                .expect("raw pool");
            let raw = RawPg { pool, schema };
            let mut t = raw.setup().await;
            for _ in 0..n {
                t = raw.refresh(&t).await;
            }
        }
    }
    scratch.cleanup().await.expect("cleanup");
}

/// What `--count` runs: one side of one comparison, `n` times.
async fn count(case: &str, n: u64) {
    if matches!(case, "refresh-pg" | "refresh-dbonly-pg" | "refresh-raw-pg") {
        return count_pg(case, n).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.db");
    let db = sqlite_db(&path).await;
    let mut cfg = base_config();
    match case {
        "validate-read-always" => cfg.revocation_staleness_ms = 0,
        "validate-stateless" => cfg.revocation = Revocation::Stateless,
        _ => {}
    }
    let auth = JwtAuth::new(cfg, db.clone()).await.expect("provider");
    let s = auth
        .sign_up(SignUp::new(email(), PASSWORD))
        .await
        .expect("sign up");
    let token = s.access_token.expose().to_string();
    match case {
        "validate-checked" | "validate-read-always" | "validate-stateless" => {
            for _ in 0..n {
                black_box(auth.validate_token(black_box(&token)).await.expect("valid"));
            }
        }
        "validate-raw" | "validate-raw-cached" => {
            let key = DecodingKey::from_secret(SECRET.as_bytes());
            let v = raw_validation(A::HS256);
            let cached = case == "validate-raw-cached";
            let pool = raw_sqlite_pool(&path).await;
            let cache = RawSessionCache::default();
            for _ in 0..n {
                let claims =
                    jsonwebtoken::decode::<Map<String, Value>>(black_box(&token), &key, &v)
                        .expect("valid")
                        .claims;
                if cached {
                    cache.check(&pool, &claims).await;
                }
                black_box(claims);
            }
        }
        "refresh" => {
            let mut t = s.refresh_token.expose().to_string();
            for _ in 0..n {
                t = auth
                    .refresh_session(&t)
                    .await
                    .expect("refresh")
                    .refresh_token
                    .expose()
                    .to_string();
            }
        }
        "refresh-dbonly" => {
            let dbo = DbOnly { db };
            let mut t = dbo.setup().await;
            for _ in 0..n {
                t = dbo.refresh(&t).await;
            }
        }
        "refresh-raw" => {
            let raw = RawSqlite(raw_sqlite_pool(&path).await);
            let mut t = raw.setup().await;
            for _ in 0..n {
                t = raw.refresh(&t).await;
            }
        }
        other => panic!(
            "unknown --count case {other:?}: validate-checked, validate-read-always, validate-stateless, validate-raw, validate-raw-cached, refresh, refresh-dbonly, refresh-raw, refresh-pg, refresh-dbonly-pg, refresh-raw-pg"
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--count") {
        let case = args.get(i + 1).expect("--count <case> <n>");
        let n: u64 = args
            .get(i + 2)
            .and_then(|n| n.parse().ok())
            .expect("--count <case> <n>");
        // One thread: instruction counts of one side, no scheduler noise.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(count(case, n));
        return;
    }
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
    // `cargo bench` passes `--bench`; nothing else is expected.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if want("validate") {
            validate().await;
        }
        if want("refresh") {
            refresh().await;
        }
        if want("signin") {
            signin().await;
        }
    });
}
