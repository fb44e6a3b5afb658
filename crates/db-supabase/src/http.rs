//! The HTTP side: one pooled reqwest client, request headers, and
//! PostgREST's answers (`Content-Range`, `{code, message, details, hint}`)
//! turned into rows, counts and [`ErrorKind`]s.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use truststream_core::{echo, ErrorKind, Secret};
use truststream_core_db::{DbResult, Error, Row};

use crate::config::SupabaseDbConfig;

/// Longest answer body read (rows are JSON; larger answers are refused as
/// [`ErrorKind::TooLarge`] rather than buffered without bound).
pub(crate) const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// The client and what every request carries.
pub(crate) struct Rest {
    client: reqwest::Client,
    base: String,
    key: Secret,
    profile: Option<String>,
    /// `apikey` and `authorization: Bearer <key>`, built once (marked
    /// sensitive); `None` when the key is not a valid header value, which
    /// each request then reports.
    key_headers: Option<(HeaderValue, HeaderValue)>,
}

/// One request.
pub(crate) struct Call<'a> {
    pub op: &'static str,
    pub method: Method,
    pub table: &'a str,
    pub params: &'a [(String, String)],
    pub prefer: &'a [&'a str],
    pub body: Option<Vec<u8>>,
    /// The caller's token (a scoped handle); `None`: the API key.
    pub bearer: Option<&'a Secret>,
}

impl Call<'static> {
    /// A `GET` of the API's root (`<rest_base>/`) with the API key.
    fn root(op: &'static str) -> Self {
        Call {
            op,
            method: Method::GET,
            table: "",
            params: &[],
            prefer: &[],
            body: None,
            bearer: None,
        }
    }
}

/// A successful answer.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub content_range: Option<String>,
    pub body: Vec<u8>,
}

impl Rest {
    pub(crate) fn new(cfg: &SupabaseDbConfig) -> DbResult<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_millis(cfg.pool_idle_timeout_ms))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                Error::internal(format!("cannot build the HTTP client: {}", e.without_url()))
            })?;
        let key = cfg.key().cloned().unwrap_or_default();
        let key_headers = HeaderValue::from_str(key.expose())
            .ok()
            .zip(HeaderValue::from_str(&format!("Bearer {}", key.expose())).ok())
            .map(|(mut k, mut a)| {
                k.set_sensitive(true);
                a.set_sensitive(true);
                (k, a)
            });
        Ok(Rest {
            client,
            base: cfg.rest_base(),
            key,
            profile: cfg.profile().map(str::to_string),
            key_headers,
        })
    }

    fn headers(&self, call: &Call<'_>) -> DbResult<HeaderMap> {
        let mut h = HeaderMap::new();
        let value = |s: &str| {
            HeaderValue::from_str(s).map_err(|_| {
                Error::invalid_input("a key or token contains characters not allowed in a header")
            })
        };
        match (&self.key_headers, call.bearer) {
            (Some((key, auth)), None) => {
                h.insert("apikey", key.clone());
                h.insert(AUTHORIZATION, auth.clone());
            }
            _ => {
                let mut key = value(self.key.expose())?;
                key.set_sensitive(true);
                h.insert("apikey", key);
                let bearer = call.bearer.unwrap_or(&self.key);
                let mut auth = value(&format!("Bearer {}", bearer.expose()))?;
                auth.set_sensitive(true);
                h.insert(AUTHORIZATION, auth);
            }
        }
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(p) = &self.profile {
            let name = if matches!(call.method, Method::GET | Method::HEAD) {
                "accept-profile"
            } else {
                "content-profile"
            };
            h.insert(name, value(p)?);
        }
        if call.body.is_some() {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if !call.prefer.is_empty() {
            h.insert("prefer", value(&call.prefer.join(","))?);
        }
        Ok(h)
    }

    /// Sends `call`; a non-2xx answer is mapped to an error.
    pub(crate) async fn send(&self, call: Call<'_>) -> DbResult<Answer> {
        let mut url = format!("{}/{}", self.base, call.table);
        if !call.params.is_empty() {
            url.push('?');
            url.push_str(&crate::compile::query_string(call.params));
        }
        let headers = self.headers(&call)?;
        let secrets = [self.key.expose(), call.bearer.map_or("", Secret::expose)];
        let mut req = self
            .client
            .request(call.method.clone(), url)
            .headers(headers);
        if let Some(b) = call.body {
            req = req.body(b);
        }
        let op = call.op;
        let ctx = |e: Error| e.with_operation(op).with_context("table", call.table);
        let resp = req.send().await.map_err(|e| ctx(transport(e)))?;
        let status = resp.status();
        let content_range = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(ctx(Error::too_large(format!(
                "the server's answer is larger than {MAX_RESPONSE_BYTES} bytes; read fewer rows at a time (limit)"
            ))));
        }
        let body = read_body(resp).await.map_err(ctx)?;
        if status.is_success() {
            return Ok(Answer {
                status,
                content_range,
                body,
            });
        }
        Err(ctx(map_error(status, is_json, &body, &secrets)
            .with_context("status", status.as_u16().to_string())))
    }

    /// A probe of the API: any answer but 401/403 and 5xx means it is up.
    pub(crate) async fn probe(&self) -> DbResult<()> {
        match self.send(Call::root("db.health")).await {
            Ok(_) => Ok(()),
            // No OpenAPI root (`truststream serve`) or a 4xx about the
            // request itself: the API answered, and the key was accepted.
            Err(e)
                if e.context().iter().any(|(k, v)| {
                    *k == "status" && matches!(v.as_str(), "400" | "404" | "405" | "406")
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The server's OpenAPI description (PostgREST serves it at the API's
    /// root): `None` when the server was not reached or answered 5xx,
    /// `Some(None)` when it answered without one (`truststream serve`: 404;
    /// a key not allowed to read it: 401/403).
    pub(crate) async fn openapi(&self) -> Option<Option<serde_json::Value>> {
        let mut headers = self.headers(&Call::root("db.read")).ok()?;
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/openapi+json, application/json;q=0.9"),
        );
        let resp = self
            .client
            .get(format!("{}/", self.base))
            .headers(headers)
            .send()
            .await
            .ok()?;
        if resp.status().is_server_error() {
            return None;
        }
        if !resp.status().is_success() {
            return Some(None);
        }
        let body = read_body(resp).await.ok()?;
        Some(serde_json::from_slice(&body).ok())
    }
}

async fn read_body(mut resp: reqwest::Response) -> DbResult<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(Error::too_large(format!(
                        "the server's answer is larger than {MAX_RESPONSE_BYTES} bytes; read fewer rows at a time (limit)"
                    )));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(transport(e)),
        }
    }
}

/// A transport failure: no connection (certainly unapplied), a timeout, or
/// a connection lost mid-call (outcome unknown).
pub(crate) fn transport(e: reqwest::Error) -> Error {
    let connect = e.is_connect();
    let timeout = e.is_timeout();
    let shown = e.without_url();
    let mut err = if timeout {
        Error::new(
            ErrorKind::Timeout,
            format!("the Supabase REST API did not answer in time: {shown}"),
        )
    } else {
        Error::unavailable(format!("the Supabase REST API cannot be reached: {shown}"))
    }
    .with_source(shown_source(&shown))
    .with_retryable(true);
    if connect {
        err = err.unapplied();
    }
    err
}

/// reqwest errors are not `Clone`; keep the chain's text as the source.
fn shown_source(e: &reqwest::Error) -> std::io::Error {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    std::io::Error::other(text)
}

/// PostgREST's error body.
#[derive(Debug, Default, serde::Deserialize)]
struct PgrstError {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Option<serde_json::Value>,
    #[serde(default)]
    hint: Option<serde_json::Value>,
}

fn text_of(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// Removes `secrets` from a server's text, then bounds it.
fn scrub(s: &str, secrets: &[&str]) -> String {
    let mut s = s.to_string();
    for k in secrets.iter().filter(|k| k.len() >= 4) {
        s = s.replace(k, "<redacted>");
    }
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    echo(&s).to_string()
}

/// Maps a non-2xx answer to an error of the right kind.
pub(crate) fn map_error(status: StatusCode, is_json: bool, body: &[u8], secrets: &[&str]) -> Error {
    let parsed: Option<PgrstError> = if is_json || body.first() == Some(&b'{') {
        serde_json::from_slice(body).ok()
    } else {
        None
    };
    let Some(pe) = parsed else {
        // HTML from a proxy, an empty body, anything not PostgREST.
        let kind = match status.as_u16() {
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::PermissionDenied,
            408 | 504 => ErrorKind::Timeout,
            413 | 414 | 431 => ErrorKind::TooLarge,
            429 => ErrorKind::RateLimited,
            _ => ErrorKind::Unavailable,
        };
        return Error::new(
            kind,
            format!(
                "the Supabase REST API answered HTTP {} without a PostgREST error body",
                status.as_u16()
            ),
        );
    };
    let code = text_of(&pe.code).unwrap_or_default();
    let kind = kind_of(status, &code);
    let mut msg = format!("Supabase REST: HTTP {}", status.as_u16());
    if !code.is_empty() {
        msg.push_str(&format!(" {}", scrub(&code, secrets)));
    }
    if let Some(m) = &pe.message {
        msg.push_str(&format!(": {}", scrub(m, secrets)));
    }
    if let Some(d) = text_of(&pe.details) {
        msg.push_str(&format!(" ({})", scrub(&d, secrets)));
    }
    if let Some(h) = text_of(&pe.hint) {
        msg.push_str(&format!(" hint: {}", scrub(&h, secrets)));
    }
    let mut e = Error::new(kind, msg);
    if !code.is_empty() {
        e = e.with_context("code", scrub(&code, secrets));
    }
    e
}

/// The kind of a PostgREST error code (SQLSTATE or `PGRSTxxx`) and status.
pub(crate) fn kind_of(status: StatusCode, code: &str) -> ErrorKind {
    match code {
        "23505" | "23503" => return ErrorKind::Conflict,
        "42P01" | "PGRST205" | "PGRST202" | "PGRST116" => return ErrorKind::NotFound,
        // An undefined operator or function. This client calls no RPC
        // functions, so it is always one applied to a column of the wrong
        // type (`double precision < text`, `to_tsvector(regconfig, integer)`).
        "42883" => return ErrorKind::InvalidInput,
        "42501" => return ErrorKind::PermissionDenied,
        "PGRST301" | "PGRST302" | "PGRST303" => return ErrorKind::Unauthenticated,
        "57014" => return ErrorKind::Timeout,
        "0A000" | "PGRST123" | "PGRST117" => return ErrorKind::Unsupported,
        "PGRST413" | "54000" => return ErrorKind::TooLarge,
        "40001" | "40P01" => return ErrorKind::Unavailable,
        "25006" => return ErrorKind::PermissionDenied,
        _ => {}
    }
    if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
        return ErrorKind::Unavailable;
    }
    if code.starts_with("28") {
        return ErrorKind::PermissionDenied;
    }
    if code.starts_with("22") || code.starts_with("23") || code.starts_with("42") {
        return ErrorKind::InvalidInput;
    }
    match status.as_u16() {
        400 | 416 | 422 => ErrorKind::InvalidInput,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        404 | 406 => ErrorKind::NotFound,
        405 | 501 => ErrorKind::Unsupported,
        408 | 504 => ErrorKind::Timeout,
        409 => ErrorKind::Conflict,
        413 | 414 | 431 => ErrorKind::TooLarge,
        429 => ErrorKind::RateLimited,
        s if s >= 500 => ErrorKind::Unavailable,
        _ => ErrorKind::InvalidInput,
    }
}

/// The rows of a JSON array answer.
pub(crate) fn rows(a: &Answer) -> DbResult<Vec<Row>> {
    if a.body.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice::<Vec<Row>>(&a.body).map_err(|e| {
        Error::unavailable(format!(
            "the Supabase REST API answered HTTP {} with a body that is not a JSON array of rows: {e}",
            a.status.as_u16()
        ))
    })
}

/// The total after `/` in `Content-Range` (`0-4/5`, `*/3`).
pub(crate) fn total(content_range: Option<&str>) -> Option<u64> {
    content_range?.rsplit_once('/')?.1.trim().parse().ok()
}

/// The number of rows `first-last/...` covers; `*/...` is none.
pub(crate) fn range_len(content_range: Option<&str>) -> Option<u64> {
    let range = content_range?.split_once('/')?.0.trim();
    if range == "*" {
        return Some(0);
    }
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b >= a).then(|| b - a + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, body: &str) -> ErrorKind {
        map_error(
            StatusCode::from_u16(status).unwrap(),
            true,
            body.as_bytes(),
            &[],
        )
        .kind()
    }

    #[test]
    fn postgrest_errors_map_to_kinds() {
        let cases = [
            (
                409,
                r#"{"code":"23505","message":"dup"}"#,
                ErrorKind::Conflict,
            ),
            (
                409,
                r#"{"code":"23503","message":"fk"}"#,
                ErrorKind::Conflict,
            ),
            (
                404,
                r#"{"code":"PGRST205","message":"no table"}"#,
                ErrorKind::NotFound,
            ),
            (
                404,
                r#"{"code":"42P01","message":"no table"}"#,
                ErrorKind::NotFound,
            ),
            (
                406,
                r#"{"code":"PGRST116","message":"0 rows"}"#,
                ErrorKind::NotFound,
            ),
            (
                401,
                r#"{"code":"PGRST301","message":"jwt"}"#,
                ErrorKind::Unauthenticated,
            ),
            (
                401,
                r#"{"code":"PGRST303","message":"expired"}"#,
                ErrorKind::Unauthenticated,
            ),
            (401, r#"{"message":"no key"}"#, ErrorKind::Unauthenticated),
            (
                403,
                r#"{"code":"42501","message":"denied"}"#,
                ErrorKind::PermissionDenied,
            ),
            (
                401,
                r#"{"code":"42501","message":"denied"}"#,
                ErrorKind::PermissionDenied,
            ),
            (
                400,
                r#"{"code":"PGRST100","message":"bad"}"#,
                ErrorKind::InvalidInput,
            ),
            (
                400,
                r#"{"code":"PGRST204","message":"col"}"#,
                ErrorKind::InvalidInput,
            ),
            (
                400,
                r#"{"code":"22P02","message":"bad int"}"#,
                ErrorKind::InvalidInput,
            ),
            (
                400,
                r#"{"code":"23502","message":"not null"}"#,
                ErrorKind::InvalidInput,
            ),
            (
                400,
                r#"{"code":"0A000","message":"no"}"#,
                ErrorKind::Unsupported,
            ),
            (
                413,
                r#"{"code":"PGRST413","message":"big"}"#,
                ErrorKind::TooLarge,
            ),
            (
                503,
                r#"{"code":"PGRST000","message":"down"}"#,
                ErrorKind::Unavailable,
            ),
            (
                503,
                r#"{"code":"08006","message":"down"}"#,
                ErrorKind::Unavailable,
            ),
            (
                500,
                r#"{"code":"XX000","message":"bug"}"#,
                ErrorKind::Unavailable,
            ),
            (
                500,
                r#"{"code":"57014","message":"canceled"}"#,
                ErrorKind::Timeout,
            ),
            (429, r#"{"message":"slow down"}"#, ErrorKind::RateLimited),
            (
                404,
                r#"{"code":"42883","message":"function to_tsvector(regconfig, integer) does not exist"}"#,
                ErrorKind::InvalidInput,
            ),
            (
                404,
                r#"{"code":"42883","message":"operator does not exist: double precision < text"}"#,
                ErrorKind::InvalidInput,
            ),
        ];
        for (status, body, want) in cases {
            assert_eq!(kind(status, body), want, "{status} {body}");
        }
    }

    #[test]
    fn non_postgrest_bodies() {
        let html = b"<html><body>502 Bad Gateway</body></html>";
        let e = map_error(StatusCode::BAD_GATEWAY, false, html, &[]);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(!e.message().contains("<html>"));
        let e = map_error(StatusCode::NOT_FOUND, false, b"<html>nope</html>", &[]);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let e = map_error(StatusCode::UNAUTHORIZED, false, b"", &[]);
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    }

    #[test]
    fn server_text_is_bounded_and_scrubbed() {
        let body = format!(
            r#"{{"code":"PGRST301","message":"bad token sk-very-secret-key {}","details":"x","hint":"y"}}"#,
            "z".repeat(10_000)
        );
        let e = map_error(
            StatusCode::UNAUTHORIZED,
            true,
            body.as_bytes(),
            &["sk-very-secret-key"],
        );
        let s = e.to_string();
        assert!(!s.contains("sk-very-secret-key"), "{s}");
        assert!(s.len() < 1000, "{}", s.len());
        assert!(s.contains("PGRST301"));
    }

    #[test]
    fn content_range_totals() {
        assert_eq!(total(Some("0-4/5")), Some(5));
        assert_eq!(total(Some("*/3")), Some(3));
        assert_eq!(total(Some("0-4/*")), None);
        assert_eq!(total(None), None);
        assert_eq!(range_len(Some("0-4/*")), Some(5));
        assert_eq!(range_len(Some("*/*")), Some(0));
        assert_eq!(range_len(Some("3-1/*")), None);
        assert_eq!(range_len(Some("garbage")), None);
    }
}
