#![doc = include_str!("../README.md")]

mod config;
mod error;
mod list;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use truststream_core::Secret;
use truststream_core_storage::keys::{validate_bucket, validate_key};
use truststream_core_storage::signing::check_lifetime;
use truststream_core_storage::{
    BucketInfo, ByteRange, ByteStream, Error, ErrorKind, Health, ListOptions, ListPage,
    ObjectDownload, ObjectMeta, ProviderInfo, SignedUrl, SignedUrlMethod, Storage,
    StorageCapabilities, StorageRegistry, StorageResult, UploadOptions, WriteCondition,
};

pub use config::SupabaseStorageConfig;
use error::{from_response, from_transport, Target};

/// The registry type name of this provider.
const TYPE_NAME: &str = "supabase";
/// User-metadata entry that keeps the `public` flag of an upload.
const PUBLIC_KEY: &str = "truststream-public";
/// User-metadata keys starting with this are the provider's.
const RESERVED_META_PREFIX: &str = "truststream-";
/// Most bytes of an error body read (the rest is dropped).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Characters left unencoded in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment (a bucket name or a key segment).
pub(crate) fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// `bucket/key` as a URL path, each segment encoded on its own.
fn object_path(bucket: &str, key: &str) -> String {
    let mut out = encode_segment(bucket);
    for seg in key.split('/') {
        out.push('/');
        out.push_str(&encode_segment(seg));
    }
    out
}

/// An ETag without its surrounding quotes.
pub(crate) fn unquote(etag: &str) -> String {
    etag.trim().trim_matches('"').to_string()
}

/// An RFC 3339 timestamp.
pub(crate) fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// A storage provider that is a client of Supabase's Storage API
/// (`/storage/v1`): a Supabase project, a self-hosted Supabase, or
/// `truststream serve`.
///
/// - Uploads are raw-body `POST /object/{bucket}/{key}` with `x-upsert:
///   true` (content type, `cache-control`, and user metadata as base64 JSON
///   in `x-metadata`); streaming uploads send the stream as the body.
/// - Downloads stream the body; a body cut off is an error, never a short
///   success. Ranges are `Range` headers.
/// - Conditional writes are [`ErrorKind::Unsupported`]: the API cannot
///   replace only if an ETag matches. A create-only write is
///   [`SupabaseStorage::upload_new`] (no `x-upsert`: the server refuses an
///   existing object atomically).
/// - Listing walks the API's one-folder-at-a-time listing; list entries
///   carry size, ETag, content type and time, not user metadata.
/// - No checksums are recorded (the API keeps none).
///
/// Cheap to clone: clones share the HTTP client and its connection pool.
#[derive(Clone)]
pub struct SupabaseStorage {
    inner: Arc<Inner>,
    /// A user's access token for this handle (see [`Self::with_access_token`]).
    access_token: Option<Arc<Secret>>,
}

struct Inner {
    http: reqwest::Client,
    config: SupabaseStorageConfig,
    base: String,
}

impl std::fmt::Debug for SupabaseStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupabaseStorage")
            .field("config", &self.inner.config)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// The answer of `GET /object/info/...`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct InfoBody {
    size: Option<u64>,
    content_type: Option<String>,
    etag: Option<String>,
    version: Option<String>,
    metadata: Option<Value>,
    last_modified: Option<String>,
    updated_at: Option<String>,
    created_at: Option<String>,
}

/// A bucket as `GET /bucket` lists it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct BucketBody {
    id: Option<String>,
    name: Option<String>,
    created_at: Option<String>,
}

impl SupabaseStorage {
    /// Builds the provider from `config` (no request is made; an
    /// unreachable project shows in [`Storage::health`] and in the calls).
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for an invalid configuration.
    pub fn new(config: SupabaseStorageConfig) -> StorageResult<Self> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout())
            .read_timeout(config.idle_timeout())
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!(
                "truststream-storage-supabase/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| {
                Error::internal("cannot build the HTTP client").with_source(e.without_url())
            })?;
        let base = config.base_url();
        Ok(SupabaseStorage {
            inner: Arc::new(Inner { http, config, base }),
            access_token: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SupabaseStorageConfig {
        &self.inner.config
    }

    /// The Storage API base URL (ending in `/storage/v1`).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// A handle that acts as the signed-in user whose access token (JWT) is
    /// `token`, so the project's bucket policies see that user. Shares the
    /// connection pool. Needs the anon key: with the service-role key this
    /// is [`ErrorKind::InvalidInput`], as is a token a header cannot carry.
    pub fn with_access_token(&self, token: impl Into<String>) -> StorageResult<Self> {
        let token = token.into();
        if self.inner.config.service_role_key.is_some() {
            return Err(Error::invalid_input(
                "with_access_token needs a provider configured with the anon key, not the \
                 service-role key",
            ));
        }
        if token.is_empty()
            || token.chars().any(char::is_whitespace)
            || reqwest::header::HeaderValue::from_str(&token).is_err()
        {
            return Err(Error::invalid_input(
                "the access token contains characters a header cannot carry",
            ));
        }
        Ok(SupabaseStorage {
            inner: self.inner.clone(),
            access_token: Some(Arc::new(Secret::new(token))),
        })
    }

    /// A request to `path` (under `/storage/v1`, already encoded) with the
    /// API key and bearer token.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let cfg = &self.inner.config;
        let key = cfg
            .service_role_key
            .as_ref()
            .or(cfg.anon_key.as_ref())
            .map(Secret::expose)
            .unwrap_or_default();
        let bearer = self
            .access_token
            .as_deref()
            .or(cfg.access_token.as_ref())
            .map(Secret::expose)
            .unwrap_or(key);
        // Checked by `validate` (keys) and `with_access_token` (tokens).
        let mut apikey = reqwest::header::HeaderValue::from_str(key)
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        apikey.set_sensitive(true);
        self.inner
            .http
            .request(method, format!("{}{path}", self.inner.base))
            .header("apikey", apikey)
            .bearer_auth(bearer)
    }

    /// Sends a request without a body to transfer (bounded by
    /// `request_timeout_ms`) and returns the successful response.
    async fn send(&self, rb: RequestBuilder, target: Target<'_>) -> StorageResult<Response> {
        let rb = rb.timeout(self.inner.config.request_timeout());
        let resp = self.execute(rb, target).await?;
        check(resp, target).await
    }

    /// Sends a request. A request that may safely run twice (reads, deletes,
    /// listing, signing, copies and uploads that replace, with a body that
    /// can be sent again) is sent once more when it failed on a pooled
    /// connection the server had already closed (a broken pipe while
    /// writing: the server never read it), so one aborted exchange does not
    /// fail the next call.
    async fn execute(&self, rb: RequestBuilder, target: Target<'_>) -> StorageResult<Response> {
        let req = rb.build().map_err(|e| from_transport(e, target))?;
        let again = retry_safe(&req).then(|| req.try_clone()).flatten();
        match self.inner.http.execute(req).await {
            Ok(resp) => Ok(resp),
            Err(e) if stale_connection(&e) && again.is_some() => {
                tracing::debug!("storage-supabase: retrying on a fresh connection");
                match again {
                    Some(req) => self
                        .inner
                        .http
                        .execute(req)
                        .await
                        .map_err(|e| from_transport(e, target)),
                    None => Err(from_transport(e, target)),
                }
            }
            Err(e) => Err(from_transport(e, target)),
        }
    }

    /// Like [`Self::send`], and decodes the JSON answer.
    async fn send_json<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
        target: Target<'_>,
    ) -> StorageResult<T> {
        let resp = self.send(rb, target).await?;
        json_of(resp, target).await
    }

    /// `GET /object/info/{bucket}/{key}` as metadata.
    async fn info(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta> {
        let target = Target::Object(bucket, key);
        let path = format!("/object/info/{}", object_path(bucket, key));
        let body: InfoBody = self
            .send_json(self.request(Method::GET, &path), target)
            .await?;
        meta_of(bucket, key, body)
    }

    /// Checks an upload's options and turns them into headers.
    fn upload_headers(
        &self,
        options: &UploadOptions,
        upsert: bool,
    ) -> StorageResult<reqwest::header::HeaderMap> {
        use reqwest::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
        for k in options.metadata.keys() {
            if k.to_ascii_lowercase().starts_with(RESERVED_META_PREFIX) {
                return Err(Error::invalid_input(format!(
                    "metadata key {:?}: keys starting with {RESERVED_META_PREFIX:?} are reserved \
                     by the supabase storage provider",
                    truststream_core::echo(k).to_string()
                )));
            }
        }
        let content_type = options
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        if content_type
            .trim()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
        {
            // The Storage API would parse the body as a form.
            return Err(Error::invalid_input(
                "content type multipart/form-data cannot be stored through the Storage API \
                 (it reads such bodies as upload forms)",
            ));
        }
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(content_type)
                .map_err(|_| Error::invalid_input("invalid content type"))?,
        );
        h.insert(
            "x-upsert",
            HeaderValue::from_static(if upsert { "true" } else { "false" }),
        );
        if let Some(c) = &self.inner.config.cache_control {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.insert(CACHE_CONTROL, v);
            }
        }
        let mut meta: serde_json::Map<String, Value> = options
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if options.public {
            meta.insert(PUBLIC_KEY.into(), Value::String("true".into()));
        }
        if !meta.is_empty() {
            let encoded = STANDARD.encode(Value::Object(meta).to_string());
            h.insert(
                "x-metadata",
                HeaderValue::from_str(&encoded)
                    .map_err(|_| Error::internal("metadata could not be encoded"))?,
            );
        }
        Ok(h)
    }

    /// Refuses a condition the API cannot check.
    fn check_condition(options: &UploadOptions) -> StorageResult<()> {
        match &options.condition {
            WriteCondition::None => Ok(()),
            WriteCondition::IfNotExists => Err(Error::unsupported(
                "the supabase storage provider does not take write conditions through upload \
                 (the Storage API cannot check if-ETag-matches, so conditional_writes is false); \
                 for a create-only write use SupabaseStorage::upload_new",
            )),
            WriteCondition::IfMatch(_) => Err(Error::unsupported(
                "the Supabase Storage API cannot replace an object only if its ETag matches \
                 (conditional_writes is false)",
            )),
        }
    }

    fn check_size(&self, size: u64) -> StorageResult<()> {
        match self.inner.config.max_upload_bytes {
            Some(max) if size > max => Err(Error::too_large(format!(
                "the upload of {size} bytes exceeds max_upload_bytes ({max})"
            ))),
            _ => Ok(()),
        }
    }

    /// Sends an upload body and fetches the stored object's metadata.
    ///
    /// Bodies larger than one chunk are sent as a stream, watched: when the
    /// server takes nothing for `transfer_idle_timeout_ms` (it stopped
    /// reading) the upload ends as [`ErrorKind::Timeout`].
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        data: UploadBody,
        options: &UploadOptions,
        upsert: bool,
    ) -> StorageResult<ObjectMeta> {
        let target = Target::Object(bucket, key);
        let headers = self.upload_headers(options, upsert)?;
        let path = format!("/object/{}", object_path(bucket, key));
        let mut rb = self.request(Method::POST, &path).headers(headers);
        let slot: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let progress = Arc::new(Progress::new());
        let watched = match data {
            UploadBody::Bytes(b) if b.len() <= UPLOAD_CHUNK => {
                rb = rb.body(b);
                false
            }
            UploadBody::Bytes(b) => {
                let len = b.len();
                let chunks = futures::stream::iter(
                    (0..len)
                        .step_by(UPLOAD_CHUNK)
                        .map(move |i| Ok(b.slice(i..(i + UPLOAD_CHUNK).min(len)))),
                );
                rb = rb.header(reqwest::header::CONTENT_LENGTH, len).body(
                    reqwest::Body::wrap_stream(tracked(chunks, progress.clone())),
                );
                true
            }
            UploadBody::Stream(stream) => {
                let body = guarded(stream, self.inner.config.max_upload_bytes, slot.clone());
                rb = rb.body(reqwest::Body::wrap_stream(tracked(body, progress.clone())));
                true
            }
        };
        let idle = self.inner.config.idle_timeout();
        let sent = if watched {
            tokio::select! {
                r = self.execute(rb, target) => r,
                () = stalled(&progress, idle) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the Storage API took none of the upload of {} for {} ms",
                        target_text(target),
                        idle.as_millis()
                    ),
                )),
            }
        } else {
            self.execute(rb, target).await
        };
        // An error of the body stream itself (the caller's, or max_upload_bytes)
        // is what the caller should see, not the aborted request.
        let taken = slot.lock().ok().and_then(|mut s| s.take());
        if let Some(e) = taken {
            return Err(e);
        }
        check(sent?, target).await?;
        self.info(bucket, key).await
    }

    /// Uploads `data` to `bucket/key` only if no object is there: the
    /// Storage API's create (no `x-upsert`), refused atomically by the
    /// server with [`ErrorKind::Conflict`] when the key is taken. The
    /// options' own `condition` must be `None` or `IfNotExists`.
    pub async fn upload_new(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let run = async {
            options.validate_upload(bucket, key)?;
            if matches!(options.condition, WriteCondition::IfMatch(_)) {
                return Err(Error::invalid_input(
                    "upload_new is create-only: an IfMatch condition contradicts it",
                ));
            }
            self.check_size(data.len() as u64)?;
            self.put(bucket, key, UploadBody::Bytes(data), options, false)
                .await
                .map_err(|e| {
                    if e.kind() == ErrorKind::Conflict {
                        Error::conflict(format!(
                            "object {:?} already exists in bucket {:?} (create-only upload)",
                            truststream_core::echo(key).to_string(),
                            bucket
                        ))
                    } else {
                        e
                    }
                })
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.upload_new"))
    }

    /// Moves an object (`POST /object/move`); an existing destination is
    /// [`ErrorKind::Conflict`] (the API does not replace on move).
    pub async fn move_object(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> StorageResult<()> {
        let run = async {
            validate_bucket(from_bucket)?;
            validate_key(from_key)?;
            validate_bucket(to_bucket)?;
            validate_key(to_key)?;
            if from_bucket == to_bucket && from_key == to_key {
                return Err(Error::invalid_input(
                    "the source and the destination of a move are the same object",
                ));
            }
            let body = serde_json::json!({
                "bucketId": from_bucket,
                "sourceKey": from_key,
                "destinationKey": to_key,
                "destinationBucket": to_bucket,
            });
            self.send(
                self.request(Method::POST, "/object/move").json(&body),
                Target::Object(from_bucket, from_key),
            )
            .await
            .map_err(|e| buckets_or(e, from_bucket, to_bucket))?;
            Ok(())
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.move"))
    }

    /// Performs a request on a signed URL this provider made (or any
    /// Storage API signed URL): `GET` returns the body, `PUT` uploads
    /// `body` and returns `None`. No API key is sent. A refused URL
    /// (tampered, expired, used for the other method, already used) is
    /// [`ErrorKind::PermissionDenied`].
    pub async fn fetch_signed(
        &self,
        method: SignedUrlMethod,
        url: &str,
        body: Option<Bytes>,
    ) -> StorageResult<Option<Bytes>> {
        let target = Target::Service;
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| Error::invalid_input("the signed URL is not a valid URL"))?;
        let rb = match method {
            SignedUrlMethod::Get => self.inner.http.get(parsed),
            SignedUrlMethod::Put => self
                .inner
                .http
                .put(parsed)
                .header("content-type", "application/octet-stream")
                .body(body.unwrap_or_default()),
        };
        let resp = rb.send().await.map_err(|e| from_transport(e, target))?;
        let status = resp.status();
        if !status.is_success() {
            let text = error_body(resp).await;
            let e = from_response(status, &text, target);
            let refused = matches!(status.as_u16(), 400 | 401 | 403 | 405)
                || matches!(
                    e.kind(),
                    ErrorKind::Unauthenticated | ErrorKind::PermissionDenied
                );
            return Err(if refused {
                Error::permission_denied(format!(
                    "the signed URL was refused ({}): {}",
                    status.as_u16(),
                    e.message()
                ))
            } else {
                e
            });
        }
        match method {
            SignedUrlMethod::Get => Ok(Some(collect(body_stream(resp, target)).await?)),
            SignedUrlMethod::Put => Ok(None),
        }
    }

    /// Opens a download: the body as a stream of `range` (or the whole
    /// object), its length where the server said it, and the answer's
    /// `ETag`.
    async fn open(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<(ByteStream, Option<u64>, Option<String>)> {
        let target = Target::Object(bucket, key);
        if let Some(r) = range {
            if r.end.is_some_and(|e| e <= r.start) {
                return Err(Error::invalid_input(format!(
                    "empty or reversed byte range {}..{:?}",
                    r.start, r.end
                )));
            }
        }
        let path = format!("/object/{}", object_path(bucket, key));
        let mut rb = self.request(Method::GET, &path);
        if let Some(r) = range {
            rb = rb.header("range", range_header(r));
        }
        let resp = self.execute(rb, target).await?;
        let status = resp.status();
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            let start = range.map(|r| r.start).unwrap_or_default();
            return Err(Error::invalid_input(format!(
                "byte range starting at {start} starts at or past the end of object {:?}",
                truststream_core::echo(key).to_string()
            )));
        }
        let resp = check(resp, target).await?;
        let length = resp.content_length();
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (range, resp.status()) {
            (Some(r), StatusCode::PARTIAL_CONTENT) => {
                let first = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if first != Some(r.start) {
                    return Err(Error::unavailable(format!(
                        "the Storage API answered a range request for {} with another range",
                        target_text(target)
                    )));
                }
                Ok((body_stream(resp, target), length, etag))
            }
            (Some(r), _) => {
                // The server sent the whole object: cut the range out here.
                let stream = slice_stream(body_stream(resp, target), r);
                Ok((stream, None, etag))
            }
            (None, _) => Ok((body_stream(resp, target), length, etag)),
        }
    }
}

/// Whether two ETags name the same version (quotes and a weak `W/` aside).
fn same_etag(a: &str, b: &str) -> bool {
    fn bare(t: &str) -> &str {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t).trim_matches('"')
    }
    bare(a) == bare(b)
}

fn target_text(target: Target<'_>) -> String {
    match target {
        Target::Service => "the Storage API".into(),
        Target::Bucket(b) => format!("bucket {b:?}"),
        Target::Object(b, k) => format!(
            "object {:?} in bucket {b:?}",
            truststream_core::echo(k).to_string()
        ),
    }
}

/// Whether `req` may be sent twice: reads, deletes, listing, signing,
/// copies (they replace) and uploads that replace (`x-upsert: true`); not
/// bucket creation, moves or create-only uploads.
fn retry_safe(req: &reqwest::Request) -> bool {
    let path = req.url().path();
    match *req.method() {
        Method::GET | Method::HEAD | Method::DELETE => true,
        Method::POST => {
            [
                "/object/list/",
                "/object/sign/",
                "/object/upload/sign/",
                "/object/copy",
            ]
            .iter()
            .any(|p| path.contains(p))
                || (path.contains("/object/")
                    && !path.contains("/object/move")
                    && req
                        .headers()
                        .get("x-upsert")
                        .is_some_and(|v| v.as_bytes() == b"true"))
        }
        _ => false,
    }
}

/// A send that failed because the pooled connection was already closed by
/// the server (the request was not read), as opposed to a timeout, a
/// refused connection, or a failure after the answer began.
fn stale_connection(e: &reqwest::Error) -> bool {
    if e.is_timeout() || e.is_connect() || !e.is_request() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        let text = s.to_string();
        if text.contains("connection closed before message completed") {
            return true;
        }
        source = s.source();
    }
    false
}

/// A missing bucket in a two-bucket call (copy, move) names both.
fn buckets_or(e: Error, from: &str, to: &str) -> Error {
    if e.kind() == ErrorKind::NotFound && e.message().starts_with("bucket ") && from != to {
        Error::not_found(format!("bucket {from:?} or bucket {to:?} does not exist")).with_source(e)
    } else {
        e
    }
}

/// The `Range` header of `r` (end exclusive).
fn range_header(r: ByteRange) -> String {
    match r.end {
        Some(end) => format!("bytes={}-{}", r.start, end.saturating_sub(1)),
        None => format!("bytes={}-", r.start),
    }
}

/// The successful response, or the mapped error of a failed one.
async fn check(resp: Response, target: Target<'_>) -> StorageResult<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = error_body(resp).await;
    Err(from_response(status, &body, target))
}

/// At most [`MAX_ERROR_BODY`] bytes of an error answer.
async fn error_body(resp: Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    out
}

/// Decodes a successful JSON answer; anything else (an HTML page with 200)
/// is [`ErrorKind::Unavailable`].
async fn json_of<T: DeserializeOwned>(resp: Response, target: Target<'_>) -> StorageResult<T> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| from_transport(e, target))?;
    serde_json::from_slice(&body).map_err(|_| {
        let mut e = from_response(status, &body, target);
        if e.kind() != ErrorKind::Unavailable {
            e = Error::unavailable(format!(
                "the Storage API answered {} for {} with JSON of an unexpected shape",
                status.as_u16(),
                target_text(target)
            ));
        }
        e
    })
}

/// A response body as a [`ByteStream`]; a cut-off body ends in an error.
fn body_stream(resp: Response, target: Target<'_>) -> ByteStream {
    let what = target_text(target);
    Box::pin(resp.bytes_stream().map(move |r| {
        r.map_err(|e| {
            let e = e.without_url();
            let kind = if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            };
            Error::new(
                kind,
                format!("the download of {what} broke off before the end of the body"),
            )
            .with_source(e)
        })
    }))
}

/// The bytes `r` of a stream of the whole object.
fn slice_stream(stream: ByteStream, r: ByteRange) -> ByteStream {
    let mut pos: u64 = 0;
    let end = r.end;
    Box::pin(
        stream
            .map(move |chunk| {
                let chunk = chunk?;
                let (from, to) = (pos, pos + chunk.len() as u64);
                pos = to;
                let lo = r.start.clamp(from, to) - from;
                let hi = end.map_or(to, |e| e.clamp(from, to)) - from;
                Ok(chunk.slice(lo as usize..hi as usize))
            })
            .filter(|c: &StorageResult<Bytes>| {
                futures::future::ready(c.as_ref().map_or(true, |b| !b.is_empty()))
            }),
    )
}

async fn collect(mut stream: ByteStream) -> StorageResult<Bytes> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(buf.freeze())
}

/// Metadata from an info answer.
fn meta_of(bucket: &str, key: &str, body: InfoBody) -> StorageResult<ObjectMeta> {
    let etag = body
        .etag
        .as_deref()
        .or(body.version.as_deref())
        .map(unquote)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            Error::unavailable(format!(
                "the Storage API's info on {} has no ETag",
                target_text(Target::Object(bucket, key))
            ))
        })?;
    let last_modified = [&body.last_modified, &body.updated_at, &body.created_at]
        .into_iter()
        .flatten()
        .find_map(|s| parse_time(s))
        .ok_or_else(|| {
            Error::unavailable(format!(
                "the Storage API's info on {} has no modification time",
                target_text(Target::Object(bucket, key))
            ))
        })?;
    let mut metadata = BTreeMap::new();
    let mut public = false;
    if let Some(Value::Object(m)) = body.metadata {
        for (k, v) in m {
            if k == PUBLIC_KEY {
                public = v.as_str() == Some("true");
                continue;
            }
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            metadata.insert(k, v);
        }
    }
    Ok(ObjectMeta {
        bucket: bucket.to_string(),
        key: key.to_string(),
        size: body.size.unwrap_or(0),
        content_type: body.content_type,
        etag,
        last_modified,
        metadata,
        public,
        checksum: None,
    })
}

/// The `exp` claim of a JWT-shaped token, unverified (only to report when
/// a signed upload URL the server issued stops working).
fn token_expiry(token: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    chrono::DateTime::from_timestamp(v.get("exp")?.as_i64()?, 0)
}

/// Chunk size of uploads sent as streams (and the largest body sent whole).
const UPLOAD_CHUNK: usize = 64 * 1024;

/// An upload's content.
enum UploadBody {
    Bytes(Bytes),
    Stream(ByteStream),
}

/// When an upload body last gave the HTTP client a chunk, and whether it
/// has given all of them.
struct Progress {
    last: Mutex<Instant>,
    done: std::sync::atomic::AtomicBool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            last: Mutex::new(Instant::now()),
            done: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// `body`, recording its progress in `p`.
fn tracked<S>(body: S, p: Arc<Progress>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let end = p.clone();
    body.inspect(move |_| {
        if let Ok(mut last) = p.last.lock() {
            *last = Instant::now();
        }
    })
    .chain(futures::stream::poll_fn(move |_| {
        end.done.store(true, std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(None)
    }))
}

/// Returns once the body has been stuck (not finished, no chunk taken) for
/// longer than `idle`.
async fn stalled(p: &Progress, idle: Duration) {
    loop {
        tokio::time::sleep(idle / 4).await;
        let stuck = p.last.lock().map(|l| l.elapsed() > idle).unwrap_or(false);
        if stuck && !p.done.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
    }
}

/// A stream that counts bytes against `max` and parks its first error in
/// `slot` (so the caller sees it instead of the aborted request).
fn guarded(
    data: ByteStream,
    max: Option<u64>,
    slot: Arc<Mutex<Option<Error>>>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut seen: u64 = 0;
    data.map(move |chunk| {
        let fail = |e: Error, slot: &Mutex<Option<Error>>| {
            if let Ok(mut s) = slot.lock() {
                s.get_or_insert(e);
            }
            Err(std::io::Error::other("the upload stream failed"))
        };
        match chunk {
            Ok(c) => {
                seen = seen.saturating_add(c.len() as u64);
                match max {
                    Some(max) if seen > max => fail(
                        Error::too_large(format!("the upload exceeds max_upload_bytes ({max})")),
                        &slot,
                    ),
                    _ => Ok(c),
                }
            }
            Err(e) => fail(e, &slot),
        }
    })
}

#[async_trait]
impl Storage for SupabaseStorage {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> StorageCapabilities {
        let mut caps = StorageCapabilities::none();
        caps.range_reads = true;
        caps.streaming = true;
        caps.conditional_writes = false;
        caps.checksums = false;
        caps.copy = true;
        caps.signed_urls = true;
        caps.signed_upload_urls = true;
        caps.manage_buckets = self.inner.config.manage_buckets;
        caps.public_objects = true;
        caps.max_object_size = self.inner.config.max_upload_bytes;
        caps
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        let probe = self
            .send(
                self.request(Method::GET, "/bucket?limit=1"),
                Target::Service,
            )
            .await;
        let latency = start.elapsed();
        match probe {
            Ok(_) => Health::healthy(latency),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                let mut h = Health::healthy(latency);
                h.message = Some("reachable (the key may not list buckets)".into());
                h
            }
            Err(e) => Health::unhealthy(latency, e.to_string()),
        }
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let run = async {
            options.validate_upload(bucket, key)?;
            Self::check_condition(options)?;
            self.check_size(data.len() as u64)?;
            self.put(bucket, key, UploadBody::Bytes(data), options, true)
                .await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.upload"))
    }

    async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let run = async {
            options.validate_upload(bucket, key)?;
            Self::check_condition(options)?;
            self.put(bucket, key, UploadBody::Stream(data), options, true)
                .await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.upload_stream"))
    }

    async fn download(&self, bucket: &str, key: &str) -> StorageResult<Bytes> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            let (stream, length, _) = self.open(bucket, key, None).await?;
            let data = collect(stream).await?;
            if length.is_some_and(|l| l != data.len() as u64) {
                return Err(Error::unavailable(format!(
                    "the download of {} ended after {} of {} bytes",
                    target_text(Target::Object(bucket, key)),
                    data.len(),
                    length.unwrap_or_default()
                )));
            }
            Ok(data)
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.download"))
    }

    async fn download_range(
        &self,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> StorageResult<Bytes> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            let (stream, _, _) = self.open(bucket, key, Some(range)).await?;
            collect(stream).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.download_range"))
    }

    async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ByteStream> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            let (stream, _, _) = self.open(bucket, key, range).await?;
            Ok(stream)
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.download_stream"))
    }

    /// Two requests: the object `GET`, then `/object/info`, paired by
    /// ETag: when the info names another version than the body's (an
    /// overwrite came in between), both are read again, up to three times,
    /// then the answer is [`ErrorKind::Conflict`]. So the metadata describes
    /// the bytes, as with providers that read both in one operation. A
    /// server that answers no `ETag` on the `GET` cannot be paired: its
    /// info is taken as it comes (the trait's default behaviour).
    async fn download_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ObjectDownload> {
        const ATTEMPTS: usize = 3;
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            for _ in 0..ATTEMPTS {
                let (body, _, etag) = self.open(bucket, key, range).await?;
                let meta = match self.info(bucket, key).await {
                    Ok(m) => m,
                    // Deleted after the GET: the next GET says so.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if etag.is_some_and(|t| !same_etag(&t, &meta.etag)) {
                    continue;
                }
                let served = match range {
                    Some(r) => r.resolve(meta.size)?,
                    None => 0..meta.size,
                };
                return Ok(ObjectDownload {
                    meta,
                    range: served,
                    body,
                });
            }
            Err(Error::conflict(format!(
                "object {:?} in bucket {bucket:?} changed while it was read {ATTEMPTS} times in a \
                 row; try again",
                truststream_core::echo(key).to_string()
            )))
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.download_with_metadata"))
    }

    async fn get_metadata(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            self.info(bucket, key).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.get_metadata"))
    }

    async fn delete(&self, bucket: &str, key: &str) -> StorageResult<()> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            // The batch removal answers the removed objects, and nothing
            // (not 404) for a missing one.
            let body = serde_json::json!({ "prefixes": [key] });
            let _: Value = self
                .send_json(
                    self.request(
                        Method::DELETE,
                        &format!("/object/{}", encode_segment(bucket)),
                    )
                    .json(&body),
                    Target::Bucket(bucket),
                )
                .await?;
            Ok(())
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.delete"))
    }

    async fn list(&self, bucket: &str, options: &ListOptions) -> StorageResult<ListPage> {
        let run = async {
            validate_bucket(bucket)?;
            self.list_page(bucket, options).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.list"))
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> StorageResult<ObjectMeta> {
        let run = async {
            validate_bucket(from_bucket)?;
            validate_key(from_key)?;
            validate_bucket(to_bucket)?;
            validate_key(to_key)?;
            if from_bucket == to_bucket && from_key == to_key {
                // The API refuses a copy onto itself; the result would be
                // the object as it is.
                return self.info(from_bucket, from_key).await;
            }
            let body = serde_json::json!({
                "bucketId": from_bucket,
                "sourceKey": from_key,
                "destinationKey": to_key,
                "destinationBucket": to_bucket,
            });
            self.send(
                self.request(Method::POST, "/object/copy")
                    .header("x-upsert", "true")
                    .json(&body),
                Target::Object(from_bucket, from_key),
            )
            .await
            .map_err(|e| buckets_or(e, from_bucket, to_bucket))?;
            self.info(to_bucket, to_key).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.copy"))
    }

    async fn signed_url(
        &self,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> StorageResult<SignedUrl> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            check_lifetime(expires_in)?;
            let target = Target::Object(bucket, key);
            let path = object_path(bucket, key);
            match method {
                SignedUrlMethod::Get => {
                    let secs = expires_in.as_secs() + u64::from(expires_in.subsec_nanos() > 0);
                    let start = chrono::Utc::now();
                    let body: Value = self
                        .send_json(
                            self.request(Method::POST, &format!("/object/sign/{path}"))
                                .json(&serde_json::json!({ "expiresIn": secs })),
                            target,
                        )
                        .await?;
                    let returned = body
                        .get("signedURL")
                        .or_else(|| body.get("signedUrl"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            Error::unavailable("the Storage API's sign answer has no signedURL")
                        })?;
                    let query = signed_query(returned, &format!("/object/sign/{bucket}/{key}"))
                        .or_else(|| signed_query(returned, &format!("/object/sign/{path}")))
                        .ok_or_else(|| {
                            Error::unavailable(
                                "the Storage API signed another path than the one asked for",
                            )
                        })?;
                    Ok(SignedUrl {
                        url: format!("{}/object/sign/{path}?{query}", self.inner.base),
                        method,
                        expires_at: start + chrono::Duration::seconds(secs as i64),
                    })
                }
                SignedUrlMethod::Put => {
                    let body: Value = self
                        .send_json(
                            self.request(Method::POST, &format!("/object/upload/sign/{path}"))
                                .header("x-upsert", "true"),
                            target,
                        )
                        .await?;
                    let token = body.get("token").and_then(Value::as_str).ok_or_else(|| {
                        Error::unavailable("the Storage API's upload sign answer has no token")
                    })?;
                    // The API fixes the lifetime of upload URLs (two hours by
                    // default): report when this one really expires.
                    let expires_at = token_expiry(token).ok_or_else(|| {
                        Error::unavailable(
                            "the signed upload token has no readable expiry (exp claim)",
                        )
                    })?;
                    let token = utf8_percent_encode(token, SEGMENT);
                    Ok(SignedUrl {
                        url: format!(
                            "{}/object/upload/sign/{path}?token={token}",
                            self.inner.base
                        ),
                        method,
                        expires_at,
                    })
                }
            }
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.signed_url"))
    }

    async fn list_buckets(&self) -> StorageResult<Vec<BucketInfo>> {
        let run = async {
            let rows: Vec<BucketBody> = self
                .send_json(self.request(Method::GET, "/bucket"), Target::Service)
                .await?;
            let mut out: Vec<BucketInfo> = rows
                .into_iter()
                .filter_map(|b| {
                    Some(BucketInfo {
                        name: b.id.or(b.name)?,
                        created_at: b.created_at.as_deref().and_then(parse_time),
                    })
                })
                .collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.list_buckets"))
    }

    async fn create_bucket(&self, name: &str) -> StorageResult<()> {
        let run = async {
            validate_bucket(name)?;
            self.check_manage()?;
            let body = serde_json::json!({
                "id": name,
                "name": name,
                "public": self.inner.config.public_buckets,
            });
            self.send(
                self.request(Method::POST, "/bucket").json(&body),
                Target::Bucket(name),
            )
            .await?;
            Ok(())
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.create_bucket"))
    }

    async fn delete_bucket(&self, name: &str) -> StorageResult<()> {
        let run = async {
            validate_bucket(name)?;
            self.check_manage()?;
            self.send(
                self.request(Method::DELETE, &format!("/bucket/{}", encode_segment(name))),
                Target::Bucket(name),
            )
            .await
            .map_err(|e| {
                if e.kind() == ErrorKind::Conflict {
                    Error::conflict(format!("bucket {name:?} is not empty")).with_source(e)
                } else {
                    e
                }
            })?;
            Ok(())
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.delete_bucket"))
    }
}

impl SupabaseStorage {
    fn check_manage(&self) -> StorageResult<()> {
        if self.inner.config.manage_buckets {
            Ok(())
        } else {
            Err(Error::unsupported(
                "bucket management is turned off for this supabase provider \
                 (manage_buckets = false)",
            ))
        }
    }
}

/// The query of a `signedURL` answer (`/object/sign/b/k?token=...`) whose
/// path is `expected`; `None` when the path is another.
fn signed_query(returned: &str, expected: &str) -> Option<String> {
    let rest = returned.strip_prefix(expected)?;
    let query = rest.strip_prefix('?')?;
    query.starts_with("token=").then(|| query.to_string())
}

/// Registers the provider as `"supabase"`: each build makes a client from
/// its [`SupabaseStorageConfig`].
pub fn register(reg: &mut StorageRegistry) {
    reg.register(TYPE_NAME, |cfg, ()| async move {
        let cfg: SupabaseStorageConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        let store = SupabaseStorage::new(cfg)?;
        Ok(Arc::new(store) as Arc<dyn Storage>)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(
            object_path("docs", "a b/ré#?%.txt"),
            "docs/a%20b/r%C3%A9%23%3F%25.txt"
        );
        assert_eq!(range_header(ByteRange::new(2, 5)), "bytes=2-4");
        assert_eq!(range_header(ByteRange::from(7)), "bytes=7-");
    }

    #[test]
    fn signed_answers_must_name_the_object() {
        assert_eq!(
            signed_query("/object/sign/b/a b?token=x.y.z", "/object/sign/b/a b").as_deref(),
            Some("token=x.y.z")
        );
        // A key containing "?token=" is matched whole, not cut at it.
        assert_eq!(
            signed_query(
                "/object/sign/b/k?token=1?token=t",
                "/object/sign/b/k?token=1"
            )
            .as_deref(),
            Some("token=t")
        );
        assert!(signed_query("/object/sign/b/other?token=t", "/object/sign/b/k").is_none());
    }

    #[test]
    fn token_expiry_reads_exp() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"exp":1700000000}"#);
        let t = token_expiry(&format!("h.{payload}.s")).unwrap();
        assert_eq!(t.timestamp(), 1_700_000_000);
        assert!(token_expiry("not a token").is_none());
    }

    #[tokio::test]
    async fn sliced_streams_keep_only_the_range() {
        let chunks: Vec<StorageResult<Bytes>> = vec![
            Ok(Bytes::from_static(b"0123")),
            Ok(Bytes::from_static(b"4567")),
            Ok(Bytes::from_static(b"89")),
        ];
        let s = slice_stream(
            Box::pin(futures::stream::iter(chunks)),
            ByteRange::new(3, 9),
        );
        assert_eq!(collect(s).await.unwrap(), Bytes::from_static(b"345678"));
    }

    #[test]
    fn debug_hides_the_token() {
        let s = SupabaseStorage::new(SupabaseStorageConfig::anon("http://x", "anon-secret"))
            .unwrap()
            .with_access_token("user-secret-token")
            .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
