//! Object routes: upload, download, info, list, remove, move, copy.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use truststream_core::{Error, ErrorKind};
use truststream_core_storage::{
    ByteRange, ByteStream, ListOptions, ObjectMeta, Storage, StorageExt, UploadOptions,
    WriteCondition,
};

use super::access::{check_bucket, check_key, is_reserved, may_list, require};
use super::error::{ApiError, ApiResult};
use super::multipart;
use super::settings::{base_mime, BucketSettings};
use crate::caller::{Caller, Role};
use crate::config::TableAction;
use crate::ServeState;

/// Metadata entries the server keeps beside user metadata.
const META_ID: &str = "id";
const META_CACHE: &str = "cache_control";
const META_USER: &str = "user_metadata";

fn object_err(e: Error) -> ApiError {
    ApiError::storage(e, ApiError::object_not_found)
}

fn bucket_err(e: Error) -> ApiError {
    ApiError::storage(e, ApiError::bucket_not_found)
}

/// The settings of `bucket` (cached for [`super::settings::SETTINGS_TTL`]), as
/// an API error on failure.
pub(crate) async fn bucket_settings(state: &ServeState, bucket: &str) -> ApiResult<BucketSettings> {
    state
        .settings
        .load(state.storage.as_ref(), bucket)
        .await
        .map_err(bucket_err)
}

/// The object's id: the one recorded at upload, else one derived from its
/// place (objects written by other tools).
fn object_id(meta: &ObjectMeta) -> String {
    if let Some(id) = meta.metadata.get(META_ID) {
        return id.clone();
    }
    let h = Sha256::digest(format!("{}/{}", meta.bucket, meta.key).as_bytes());
    uuid_from(&h[..16])
}

fn new_id() -> String {
    uuid_from(&rand::random::<[u8; 16]>())
}

fn uuid_from(b: &[u8]) -> String {
    let mut b: [u8; 16] = b.try_into().unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex_lower(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn quoted_etag(etag: &str) -> String {
    let t = etag.trim().trim_matches('"');
    format!("\"{t}\"")
}

fn http_date(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // Written piece by piece (chrono's formatter is ~5,000 instructions a
    // download); years outside 0..=9999 as chrono writes them.
    if !(0..=9999).contains(&t.year()) {
        return t.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    }
    let two = |out: &mut String, v: u32| {
        out.push(char::from(b'0' + (v / 10 % 10) as u8));
        out.push(char::from(b'0' + (v % 10) as u8));
    };
    let mut out = String::with_capacity(29);
    out.push_str(DAYS[t.weekday().num_days_from_monday() as usize]);
    out.push_str(", ");
    two(&mut out, t.day());
    out.push(' ');
    out.push_str(MONTHS[t.month0() as usize]);
    out.push(' ');
    let y = t.year() as u32;
    two(&mut out, y / 100);
    two(&mut out, y % 100);
    out.push(' ');
    two(&mut out, t.hour());
    out.push(':');
    two(&mut out, t.minute());
    out.push(':');
    // A leap second's 60 as chrono writes it.
    two(&mut out, t.second() + t.nanosecond() / 1_000_000_000);
    out.push_str(" GMT");
    out
}

fn content_type(meta: &ObjectMeta) -> &str {
    meta.content_type
        .as_deref()
        .unwrap_or("application/octet-stream")
}

fn cache_control(meta: &ObjectMeta) -> &str {
    meta.metadata
        .get(META_CACHE)
        .map(String::as_str)
        .unwrap_or("no-cache")
}

fn user_metadata(meta: &ObjectMeta) -> Value {
    meta.metadata
        .get(META_USER)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| json!({}))
}

/// The `metadata` object of list entries and removals (Supabase's shape).
fn file_metadata(meta: &ObjectMeta) -> Value {
    json!({
        "eTag": quoted_etag(&meta.etag),
        "size": meta.size,
        "mimetype": content_type(meta),
        "cacheControl": cache_control(meta),
        "lastModified": meta.last_modified,
        "contentLength": meta.size,
        "httpStatusCode": 200,
    })
}

/// An object as `info` answers it.
fn info_json(meta: &ObjectMeta) -> Value {
    json!({
        "id": object_id(meta),
        "name": meta.key,
        "version": meta.etag.trim_matches('"'),
        "bucket_id": meta.bucket,
        "size": meta.size,
        "content_type": content_type(meta),
        "cache_control": cache_control(meta),
        "etag": quoted_etag(&meta.etag),
        "metadata": user_metadata(meta),
        "last_modified": meta.last_modified,
        "created_at": meta.last_modified,
    })
}

// ---------------------------------------------------------------- uploads

/// How an upload may treat an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Create only: an existing object is 409.
    Create,
    /// Create or replace.
    Upsert,
}

/// Who authorized an upload.
#[derive(Clone, Copy)]
pub(crate) enum Grant<'a> {
    /// A caller, checked against the bucket policy.
    Caller(&'a Caller),
    /// A signed upload token or a provider-signed PUT URL (checked already).
    Token,
}

/// What the body of an upload said about the object.
struct Incoming {
    content_type: String,
    cache_control: Option<String>,
    user_metadata: Option<String>,
    data: ByteStream,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `x-upsert` header.
pub(crate) fn upsert_header(headers: &HeaderMap) -> bool {
    header_str(headers, "x-upsert").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn parse_user_metadata(json_text: &str) -> ApiResult<String> {
    let v: Value = serde_json::from_str(json_text)
        .map_err(|_| ApiError::bad_request("metadata must be a JSON object"))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("metadata must be a JSON object"));
    }
    Ok(v.to_string())
}

/// The request body as the provider gets it: hyper's frames (often a few
/// KiB each) joined into chunks of about [`UPLOAD_CHUNK`], so that a
/// provider that writes each chunk in a call of its own (storage-fs: one
/// blocking-pool hop per chunk) makes few calls.
fn body_stream(body: Body) -> ByteStream {
    coalesce(
        Box::pin(body.into_data_stream().map(|r| {
            r.map_err(|e| {
                Error::invalid_input("the upload body ended early (the client disconnected)")
                    .with_source(e)
            })
        })),
        UPLOAD_CHUNK,
    )
}

/// Size the upload body's frames are joined up to.
const UPLOAD_CHUNK: usize = 1024 * 1024;

/// Joins the chunks of `data` until they reach `target` bytes (a chunk
/// that large on its own passes through without a copy). An error is
/// passed on at once and ends the stream.
fn coalesce(data: ByteStream, target: usize) -> ByteStream {
    Box::pin(futures::stream::unfold(
        Some(data),
        move |data| async move {
            let mut data = data?;
            let mut first: Option<Bytes> = None;
            let mut joined = BytesMut::new();
            loop {
                match data.next().await {
                    Some(Ok(chunk)) => {
                        match first.take() {
                            None if joined.is_empty() => first = Some(chunk),
                            None => joined.extend_from_slice(&chunk),
                            Some(f) => {
                                joined.reserve(target.max(f.len() + chunk.len()));
                                joined.extend_from_slice(&f);
                                joined.extend_from_slice(&chunk);
                            }
                        }
                        let len = first.as_ref().map_or(joined.len(), Bytes::len);
                        if len >= target {
                            let out = first.take().unwrap_or_else(|| joined.split().freeze());
                            return Some((Ok(out), Some(data)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => {
                        let out = first.take().unwrap_or_else(|| joined.split().freeze());
                        return (!out.is_empty()).then_some((Ok(out), None));
                    }
                }
            }
        },
    ))
}

/// Cuts a stream off with `TooLarge` once it passes `limit` bytes.
fn limited(data: ByteStream, limit: u64) -> ByteStream {
    let mut seen: u64 = 0;
    Box::pin(data.map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > limit {
            return Err(Error::too_large(
                "The object exceeded the maximum allowed size",
            ));
        }
        Ok(chunk)
    }))
}

async fn incoming(headers: &HeaderMap, body: Body, limit: u64) -> ApiResult<Incoming> {
    let ct = header_str(headers, "content-type").unwrap_or("");
    if let Some(boundary) = multipart::boundary(ct) {
        let form = multipart::read_form(
            body_stream(body),
            &boundary,
            &["cacheControl", "metadata", "contentEncoding"],
        )
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidInput => ApiError::bad_request(e.message().to_string()),
            _ => object_err(e),
        })?;
        let mut cache = None;
        let mut meta = None;
        for (name, value) in &form.fields {
            match name.as_str() {
                "cacheControl" => cache = Some(value.clone()),
                "metadata" => meta = Some(parse_user_metadata(value)?),
                _ => {}
            }
        }
        return Ok(Incoming {
            content_type: form
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            cache_control: cache,
            user_metadata: meta,
            data: limited(form.file, limit),
        });
    }
    if let Some(len) = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        if len > limit {
            return Err(ApiError::too_large());
        }
    }
    let user_metadata = match header_str(headers, "x-metadata") {
        Some(b64) => {
            let raw = STANDARD
                .decode(b64.trim())
                .map_err(|_| ApiError::bad_request("x-metadata must be base64 JSON"))?;
            let text = String::from_utf8(raw)
                .map_err(|_| ApiError::bad_request("x-metadata must be base64 JSON"))?;
            Some(parse_user_metadata(&text)?)
        }
        None => None,
    };
    Ok(Incoming {
        content_type: if ct.is_empty() {
            "application/octet-stream".into()
        } else {
            ct.to_string()
        },
        cache_control: header_str(headers, "cache-control").map(str::to_string),
        user_metadata,
        data: limited(body_stream(body), limit),
    })
}

/// `3600` (storage-js's form field) → `max-age=3600`.
fn normalize_cache(v: &str) -> String {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        format!("max-age={v}")
    } else {
        v.to_string()
    }
}

/// Uploads the request body to `bucket/key`: checks the policy (insert for
/// a new object, update to replace one), the bucket's MIME types and size
/// limit (while streaming), and answers `{Id, Key, id, path, fullPath}`.
pub(crate) async fn upload(
    state: &ServeState,
    grant: Grant<'_>,
    bucket: &str,
    key: &str,
    mode: WriteMode,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if let Grant::Caller(c) = grant {
        // Nothing about the object (not even whether it exists) for a
        // caller who may neither create nor replace it.
        if !super::access::allowed(state, c, bucket, Some(key), TableAction::Insert)
            && !super::access::allowed(state, c, bucket, Some(key), TableAction::Update)
        {
            return Err(ApiError::denied());
        }
    }
    let settings = bucket_settings(state, bucket).await?;
    let storage = state.storage.as_ref();
    let caps = storage.capabilities();
    // A create by someone who may insert needs nothing of an existing
    // object: the provider's if-not-exists condition answers the conflict,
    // and the id is new. Everything else looks at the object first.
    let blind_create = mode == WriteMode::Create
        && caps.conditional_writes
        && match grant {
            Grant::Caller(c) => {
                super::access::allowed(state, c, bucket, Some(key), TableAction::Insert)
            }
            Grant::Token => true,
        };
    let existing = if blind_create {
        None
    } else {
        storage
            .metadata_opt(bucket, key)
            .await
            .map_err(bucket_err)?
    };
    if existing.is_some() && mode == WriteMode::Create {
        return Err(ApiError::duplicate());
    }
    let may_insert = match grant {
        Grant::Caller(c) => {
            let action = if existing.is_some() {
                TableAction::Update
            } else {
                TableAction::Insert
            };
            require(state, c, bucket, Some(key), action)?;
            super::access::allowed(state, c, bucket, Some(key), TableAction::Insert)
        }
        Grant::Token => true,
    };
    let condition = if !caps.conditional_writes {
        WriteCondition::None
    } else {
        match (&existing, mode) {
            (_, WriteMode::Create) | (None, WriteMode::Upsert) => WriteCondition::IfNotExists,
            // A caller who may only update must not create the object if it
            // vanished meanwhile.
            (Some(m), WriteMode::Upsert) if !may_insert => WriteCondition::IfMatch(m.etag.clone()),
            (Some(_), WriteMode::Upsert) => WriteCondition::None,
        }
    };
    // An upsert of a new object may meet one created meanwhile: that is
    // still a replace the caller may not be allowed, so it stays a conflict.
    let mut limit = state.config.max_upload_bytes;
    if let Some(l) = settings.file_size_limit {
        limit = limit.min(l);
    }
    if let Some(l) = caps.max_object_size {
        limit = limit.min(l);
    }
    let incoming = incoming(headers, body, limit).await?;
    if !settings.allows_mime(&incoming.content_type) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_mime_type",
            format!(
                "mime type {} is not supported",
                truststream_core::echo(&base_mime(&incoming.content_type))
            ),
        ));
    }
    let mut metadata = BTreeMap::new();
    let id = existing
        .as_ref()
        .and_then(|m| m.metadata.get(META_ID).cloned())
        .unwrap_or_else(new_id);
    metadata.insert(META_ID.to_string(), id.clone());
    if let Some(c) = &incoming.cache_control {
        metadata.insert(META_CACHE.to_string(), normalize_cache(c));
    }
    if let Some(m) = incoming.user_metadata {
        metadata.insert(META_USER.to_string(), m);
    }
    let options = UploadOptions {
        content_type: Some(incoming.content_type.clone()),
        metadata,
        public: settings.public,
        condition,
    };
    options
        .validate()
        .map_err(|e| ApiError::bad_request(e.message().to_string()))?;
    let result = if caps.streaming {
        storage
            .upload_stream(bucket, key, incoming.data, &options)
            .await
    } else {
        match collect(incoming.data).await {
            Ok(bytes) => storage.upload(bucket, key, bytes, &options).await,
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(_) => {
            let full = format!("{bucket}/{key}");
            Ok(Json(json!({
                "Id": id,
                "Key": full,
                "id": id,
                "path": key,
                "fullPath": full,
            }))
            .into_response())
        }
        Err(e) if e.kind() == ErrorKind::Conflict && existing.is_none() => {
            Err(ApiError::duplicate())
        }
        Err(e) if e.kind() == ErrorKind::Conflict => Err(ApiError::new(
            StatusCode::CONFLICT,
            "Duplicate",
            "The object changed during the upload; try again",
        )),
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            Err(ApiError::bad_request(e.message().to_string()))
        }
        Err(e) => Err(bucket_err(e)),
    }
}

async fn collect(mut data: ByteStream) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = data.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(buf.freeze())
}

// -------------------------------------------------------------- downloads

/// What a `Range` header asks for, before the object's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAsk {
    /// No header, another unit, or several ranges: the whole object.
    Whole,
    /// `bytes=a-b` or `bytes=a-` (the provider cuts an end past the object
    /// and refuses a start past it).
    From(ByteRange),
    /// `bytes=-n`: the last `n` bytes (`n > 0`), which needs the size.
    Suffix(u64),
    /// A malformed or reversed single range: 416.
    Unsatisfiable,
}

/// Parses a single-range `Range` header (without the size).
fn range_ask(headers: &HeaderMap) -> RangeAsk {
    let Some(v) = header_str(headers, "range") else {
        return RangeAsk::Whole;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeAsk::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return match b.parse::<u64>() {
            Ok(n) if n > 0 => RangeAsk::Suffix(n),
            _ => RangeAsk::Unsatisfiable,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeAsk::Unsatisfiable;
    };
    if b.is_empty() {
        return RangeAsk::From(ByteRange::from(start));
    }
    match b.parse::<u64>() {
        Ok(last) if last >= start => RangeAsk::From(ByteRange::new(start, last.saturating_add(1))),
        _ => RangeAsk::Unsatisfiable,
    }
}

/// The bytes `range` selects of an object of `size` bytes; `None` when it
/// starts at or past the end (416).
fn satisfiable(range: ByteRange, size: u64) -> Option<std::ops::Range<u64>> {
    if range.start >= size {
        return None;
    }
    range.resolve(size).ok()
}

fn content_disposition(name: &str) -> HeaderValue {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(name, SET);
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Largest body read in one provider call rather than streamed.
const SMALL_BODY: u64 = 256 * 1024;

/// Serves `bucket/key` (the access check is the caller's): headers from
/// the metadata, a single `Range`, `?download=` as `Content-Disposition`,
/// `If-None-Match`, and the body streamed from the provider.
///
/// A `GET` is one provider call, `Storage::download_with_metadata`: the
/// headers come from the metadata read with the bytes, so they describe
/// them even while the object is overwritten. The metadata is read on its
/// own first (two calls) only where it decides the answer before any byte
/// is read: a `HEAD`, `If-None-Match`, a suffix range (`bytes=-n`) or a
/// malformed one (416 names the size), and providers without streaming.
/// A range starting past the end also costs a second call, for the size
/// its 416 names.
pub(crate) async fn serve(
    state: &ServeState,
    bucket: &str,
    key: &str,
    headers: &HeaderMap,
    download: Option<&str>,
    head: bool,
) -> ApiResult<Response> {
    let storage = state.storage.as_ref();
    let streaming = storage.capabilities().streaming;
    let ask = range_ask(headers);
    let needs_size = matches!(ask, RangeAsk::Suffix(_) | RangeAsk::Unsatisfiable);
    let range =
        if head || !streaming || needs_size || header_str(headers, "if-none-match").is_some() {
            let meta = storage
                .get_metadata(bucket, key)
                .await
                .map_err(object_err)?;
            let out = object_headers(&meta, key, download);
            if not_modified(headers, &meta) {
                return Ok((StatusCode::NOT_MODIFIED, out).into_response());
            }
            let range = match ask {
                RangeAsk::Whole => None,
                RangeAsk::From(r) => Some(r),
                RangeAsk::Suffix(n) if meta.size > 0 => {
                    Some(ByteRange::new(meta.size - n.min(meta.size), meta.size))
                }
                RangeAsk::Suffix(_) | RangeAsk::Unsatisfiable => {
                    return Ok(unsatisfiable(out, meta.size))
                }
            };
            if head || !streaming {
                return serve_known(storage, bucket, key, meta, out, range, head).await;
            }
            range
        } else {
            match ask {
                RangeAsk::From(r) => Some(r),
                _ => None,
            }
        };
    let dl = match storage.download_with_metadata(bucket, key, range).await {
        Ok(dl) => dl,
        // A range starting past the end: its 416 names the size.
        Err(e) if range.is_some() && e.kind() == ErrorKind::InvalidInput => {
            let meta = storage
                .get_metadata(bucket, key)
                .await
                .map_err(object_err)?;
            return Ok(unsatisfiable(
                object_headers(&meta, key, download),
                meta.size,
            ));
        }
        Err(e) => return Err(object_err(e)),
    };
    let mut out = object_headers(&dl.meta, key, download);
    if not_modified(headers, &dl.meta) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    let status = match range {
        // An empty object has no byte to start at.
        Some(_) if dl.range.start >= dl.meta.size => {
            return Ok(unsatisfiable(out, dl.meta.size));
        }
        Some(_) => {
            out.insert(
                header::CONTENT_RANGE,
                content_range(&dl.range, dl.meta.size),
            );
            StatusCode::PARTIAL_CONTENT
        }
        None => StatusCode::OK,
    };
    let length = dl.len();
    // Small bodies go out as one frame; larger ones stream in the
    // provider's chunks (no copies: each chunk's `Bytes` is the frame),
    // with `Content-Length` set so hyper does not chunk.
    let body = if length > SMALL_BODY {
        let (b, k) = (bucket.to_string(), key.to_string());
        Body::from_stream(dl.body.map(move |r| {
            r.map_err(|e| {
                tracing::warn!(bucket = %b, key = %k, error = %e.display_chain(), "storage: download failed mid-stream");
                std::io::Error::other("the download failed")
            })
        }))
    } else {
        let bytes = dl.into_bytes().await.map_err(object_err)?;
        Body::from(bytes)
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok((status, out, body).into_response())
}

/// A `HEAD`, or a `GET` on a provider without streaming, once the metadata
/// is read: the headers, then (for a `GET`) the bytes in one read.
async fn serve_known(
    storage: &dyn Storage,
    bucket: &str,
    key: &str,
    meta: ObjectMeta,
    mut out: HeaderMap,
    range: Option<ByteRange>,
    head: bool,
) -> ApiResult<Response> {
    let served = match range {
        None => None,
        Some(r) => match satisfiable(r, meta.size) {
            Some(served) => Some(served),
            None => return Ok(unsatisfiable(out, meta.size)),
        },
    };
    let (status, length) = match &served {
        Some(r) => {
            out.insert(header::CONTENT_RANGE, content_range(r, meta.size));
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
        None => (StatusCode::OK, meta.size),
    };
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if head {
        return Ok((status, out).into_response());
    }
    let bytes = match served {
        Some(r) if storage.capabilities().range_reads => {
            storage
                .download_range(bucket, key, ByteRange::new(r.start, r.end))
                .await
        }
        Some(r) => storage.download(bucket, key).await.map(|b| {
            let end = usize::try_from(r.end).unwrap_or(usize::MAX).min(b.len());
            b.slice(usize::try_from(r.start).unwrap_or(usize::MAX).min(end)..end)
        }),
        None => storage.download(bucket, key).await,
    }
    .map_err(object_err)?;
    // The object may have changed since its metadata was read: the
    // length is what is sent.
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok((status, out, Body::from(bytes)).into_response())
}

/// The headers of a download of `meta`'s object: content type, cache
/// control, ETag, last modified, `Accept-Ranges`, and with `?download=` the
/// `Content-Disposition` (the key's last segment when the name is empty).
fn object_headers(meta: &ObjectMeta, key: &str, download: Option<&str>) -> HeaderMap {
    // Room for every header of a download (no regrowth).
    let mut out = HeaderMap::with_capacity(8);
    let mut put = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    put(header::CONTENT_TYPE, content_type(meta));
    put(header::CACHE_CONTROL, cache_control(meta));
    put(header::ETAG, &quoted_etag(&meta.etag));
    put(header::LAST_MODIFIED, &http_date(meta.last_modified));
    put(header::ACCEPT_RANGES, "bytes");
    if let Some(name) = download {
        let name = if name.is_empty() {
            key.rsplit('/').next().unwrap_or(key)
        } else {
            name
        };
        out.insert(header::CONTENT_DISPOSITION, content_disposition(name));
    }
    out
}

/// Whether the request's `If-None-Match` names `meta`'s version (or `*`).
fn not_modified(headers: &HeaderMap, meta: &ObjectMeta) -> bool {
    let etag = quoted_etag(&meta.etag);
    header_str(headers, "if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// `Content-Range` of a partial answer: `bytes start-last/size`.
fn content_range(range: &std::ops::Range<u64>, size: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "bytes {}-{}/{size}",
        range.start,
        range.end.saturating_sub(1)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// The 416 answer, with the object's headers and `Content-Range: bytes */size`.
fn unsatisfiable(out: HeaderMap, size: u64) -> Response {
    let mut resp = ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "InvalidRange",
        "The requested range is not satisfiable",
    )
    .into_response();
    resp.headers_mut().extend(out);
    resp.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}"))
            .unwrap_or_else(|_| HeaderValue::from_static("bytes */0")),
    );
    resp
}

/// Whether `caller` may read `bucket/key`: public buckets are readable
/// with any valid key; otherwise the policy's `select`.
pub(crate) async fn may_read(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    key: &str,
) -> ApiResult<()> {
    if caller.role == Role::ServiceRole {
        return Ok(());
    }
    if bucket_settings(state, bucket).await?.public {
        return Ok(());
    }
    require(state, caller, bucket, Some(key), TableAction::Select)
}

/// `GET /object/info/...`.
pub(crate) async fn info(state: &ServeState, bucket: &str, key: &str) -> ApiResult<Response> {
    let meta = state
        .storage
        .get_metadata(bucket, key)
        .await
        .map_err(object_err)?;
    Ok(Json(info_json(&meta)).into_response())
}

// ---------------------------------------------------------------- listing

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ListBody {
    prefix: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    #[serde(rename = "sortBy")]
    sort_by: Option<SortBy>,
    search: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SortBy {
    column: Option<String>,
    order: Option<String>,
}

/// Most entries one listing gathers before sorting and paging.
const MAX_LIST_SCAN: usize = 100_000;

/// `POST /object/list/{bucket}`: the folders and files directly under
/// `prefix`, Supabase's shape, names relative to the prefix.
pub(crate) async fn list(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    body: ListBody,
) -> ApiResult<Response> {
    check_bucket(bucket)?;
    let raw = body.prefix.unwrap_or_default();
    let trimmed = raw.trim_matches('/');
    let folder = if trimmed.is_empty() {
        String::new()
    } else {
        check_key(trimmed)?;
        format!("{trimmed}/")
    };
    may_list(state, caller, bucket, &folder)?;
    let search = body.search.unwrap_or_default().to_lowercase();
    let storage = state.storage.as_ref();
    let mut entries: Vec<(String, Option<ObjectMeta>)> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut options = ListOptions::new().delimited().limit(1000);
        if !folder.is_empty() {
            options = options.prefix(folder.clone());
        }
        if let Some(c) = cursor.take() {
            options = options.cursor(c);
        }
        let page = storage.list(bucket, &options).await.map_err(bucket_err)?;
        for p in page.common_prefixes {
            let name = p
                .strip_prefix(folder.as_str())
                .unwrap_or(&p)
                .trim_end_matches('/')
                .to_string();
            if folder.is_empty() && is_reserved(&name) {
                continue;
            }
            entries.push((name, None));
        }
        for o in page.objects {
            if is_reserved(&o.key) {
                continue;
            }
            let name = o
                .key
                .strip_prefix(folder.as_str())
                .unwrap_or(&o.key)
                .to_string();
            entries.push((name, Some(o)));
        }
        cursor = page.next_cursor;
        if cursor.is_none() || entries.len() >= MAX_LIST_SCAN {
            break;
        }
    }
    entries.retain(|(name, _)| {
        !name.is_empty() && (search.is_empty() || name.to_lowercase().starts_with(&search))
    });
    let sort = body.sort_by.unwrap_or_default();
    let column = sort.column.as_deref().unwrap_or("name");
    let desc = sort
        .order
        .as_deref()
        .is_some_and(|o| o.eq_ignore_ascii_case("desc"));
    match column {
        "created_at" | "updated_at" | "last_accessed_at" => entries.sort_by(|a, b| {
            let ta = a.1.as_ref().map(|m| m.last_modified);
            let tb = b.1.as_ref().map(|m| m.last_modified);
            ta.cmp(&tb).then_with(|| a.0.cmp(&b.0))
        }),
        _ => entries.sort_by(|a, b| a.0.cmp(&b.0)),
    }
    if desc {
        entries.reverse();
    }
    let offset = body.offset.unwrap_or(0);
    let limit = body.limit.unwrap_or(100).clamp(1, 10_000);
    let page: Vec<(String, Option<ObjectMeta>)> =
        entries.into_iter().skip(offset).take(limit).collect();
    let page = complete_metadata(storage, bucket, &folder, page).await;
    let out: Vec<Value> = page
        .into_iter()
        .map(|(name, meta)| match meta {
            None => json!({
                "name": name,
                "id": null,
                "updated_at": null,
                "created_at": null,
                "last_accessed_at": null,
                "metadata": null,
            }),
            Some(m) => json!({
                "name": name,
                "id": object_id(&m),
                "updated_at": m.last_modified,
                "created_at": m.last_modified,
                "last_accessed_at": m.last_modified,
                "metadata": file_metadata(&m),
            }),
        })
        .collect();
    Ok(Json(out).into_response())
}

/// Listings of some providers (S3) carry no content type or user metadata:
/// the page's objects that lack a content type get their whole metadata
/// (a few requests at a time), so `mimetype` and `cacheControl` are what
/// the upload set. An object gone meanwhile keeps what the listing said.
async fn complete_metadata(
    storage: &dyn truststream_core_storage::Storage,
    bucket: &str,
    folder: &str,
    page: Vec<(String, Option<ObjectMeta>)>,
) -> Vec<(String, Option<ObjectMeta>)> {
    futures::stream::iter(page)
        .map(|(name, meta)| async move {
            match meta {
                Some(m) if m.content_type.is_none() => {
                    let key = format!("{folder}{name}");
                    let full = storage.get_metadata(bucket, &key).await.ok();
                    (name, Some(full.unwrap_or(m)))
                }
                other => (name, other),
            }
        })
        .buffered(8)
        .collect()
        .await
}

// --------------------------------------------------------------- removing

/// Body of `DELETE /object/{bucket}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RemoveBody {
    prefixes: Vec<Value>,
}

/// Most keys one removal takes (Supabase's limit).
const MAX_REMOVE: usize = 1000;

/// `DELETE /object/{bucket}` `{prefixes}`: deletes each named object the
/// caller may delete; answers the removed objects.
pub(crate) async fn remove(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    body: RemoveBody,
) -> ApiResult<Response> {
    check_bucket(bucket)?;
    require(state, caller, bucket, None, TableAction::Delete)?;
    if body.prefixes.len() > MAX_REMOVE {
        return Err(ApiError::bad_request(format!(
            "remove at most {MAX_REMOVE} objects at a time"
        )));
    }
    let storage = state.storage.as_ref();
    let mut removed = Vec::new();
    for p in &body.prefixes {
        // storage-js also accepts `{path, versionId}` objects.
        let key = match p {
            Value::String(s) => s.as_str(),
            Value::Object(o) => match o.get("path").and_then(Value::as_str) {
                Some(s) => s,
                None => continue,
            },
            _ => continue,
        };
        let key = key.trim_start_matches('/');
        if check_key(key).is_err()
            || !super::access::allowed(state, caller, bucket, Some(key), TableAction::Delete)
        {
            continue;
        }
        let Some(meta) = storage
            .metadata_opt(bucket, key)
            .await
            .map_err(bucket_err)?
        else {
            continue;
        };
        storage.delete(bucket, key).await.map_err(object_err)?;
        removed.push(json!({
            "name": meta.key,
            "bucket_id": bucket,
            "id": object_id(&meta),
            "owner": caller.user_id(),
            "updated_at": meta.last_modified,
            "created_at": meta.last_modified,
            "last_accessed_at": meta.last_modified,
            "metadata": file_metadata(&meta),
        }));
    }
    Ok(Json(removed).into_response())
}

/// `DELETE /object/{bucket}/{key}`: one object.
pub(crate) async fn delete_one(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    key: &str,
) -> ApiResult<Response> {
    require(state, caller, bucket, Some(key), TableAction::Delete)?;
    let storage = state.storage.as_ref();
    if storage
        .metadata_opt(bucket, key)
        .await
        .map_err(bucket_err)?
        .is_none()
    {
        return Err(ApiError::object_not_found());
    }
    storage.delete(bucket, key).await.map_err(object_err)?;
    Ok(Json(json!({ "message": "Successfully deleted" })).into_response())
}

// ---------------------------------------------------------- move and copy

/// Body of `POST /object/move` and `/object/copy`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct MoveBody {
    bucket_id: Option<String>,
    source_key: Option<String>,
    destination_key: Option<String>,
    destination_bucket: Option<String>,
}

/// `POST /object/move` (`moving`) or `/object/copy`: select on the source,
/// insert (or update, to replace with `x-upsert: true`) on the destination,
/// and for a move delete on the source.
pub(crate) async fn move_or_copy(
    state: &ServeState,
    caller: &Caller,
    headers: &HeaderMap,
    body: MoveBody,
    moving: bool,
) -> ApiResult<Response> {
    let missing = |what: &str| ApiError::bad_request(format!("{what} is required"));
    let src_bucket = body.bucket_id.ok_or_else(|| missing("bucketId"))?;
    let src_key = body.source_key.ok_or_else(|| missing("sourceKey"))?;
    let dst_key = body
        .destination_key
        .ok_or_else(|| missing("destinationKey"))?;
    let dst_bucket = body
        .destination_bucket
        .unwrap_or_else(|| src_bucket.clone());
    check_bucket(&src_bucket)?;
    check_bucket(&dst_bucket)?;
    check_key(&src_key)?;
    check_key(&dst_key)?;
    if src_bucket == dst_bucket && src_key == dst_key {
        return Err(ApiError::bad_request(
            "the source and the destination are the same object",
        ));
    }
    require(
        state,
        caller,
        &src_bucket,
        Some(&src_key),
        TableAction::Select,
    )?;
    if moving {
        require(
            state,
            caller,
            &src_bucket,
            Some(&src_key),
            TableAction::Delete,
        )?;
    }
    let storage = state.storage.as_ref();
    let source = storage
        .metadata_opt(&src_bucket, &src_key)
        .await
        .map_err(bucket_err)?
        .ok_or_else(ApiError::object_not_found)?;
    if !super::access::allowed(
        state,
        caller,
        &dst_bucket,
        Some(&dst_key),
        TableAction::Insert,
    ) && !super::access::allowed(
        state,
        caller,
        &dst_bucket,
        Some(&dst_key),
        TableAction::Update,
    ) {
        return Err(ApiError::denied());
    }
    let dst_settings = bucket_settings(state, &dst_bucket).await?;
    let existing = storage
        .metadata_opt(&dst_bucket, &dst_key)
        .await
        .map_err(bucket_err)?;
    match &existing {
        Some(_) if !upsert_header(headers) => return Err(ApiError::duplicate()),
        Some(_) => require(
            state,
            caller,
            &dst_bucket,
            Some(&dst_key),
            TableAction::Update,
        )?,
        None => require(
            state,
            caller,
            &dst_bucket,
            Some(&dst_key),
            TableAction::Insert,
        )?,
    }
    if dst_bucket != src_bucket {
        // The destination bucket's limits hold for what lands in it.
        if !dst_settings.allows_mime(content_type(&source)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_mime_type",
                format!(
                    "mime type {} is not supported",
                    truststream_core::echo(&base_mime(content_type(&source)))
                ),
            ));
        }
        let limit = dst_settings
            .file_size_limit
            .unwrap_or(u64::MAX)
            .min(state.config.max_upload_bytes);
        if source.size > limit {
            return Err(ApiError::too_large());
        }
    }
    let caps = storage.capabilities();
    if caps.copy {
        storage
            .copy(&src_bucket, &src_key, &dst_bucket, &dst_key)
            .await
            .map_err(object_err)?;
    } else {
        let options = UploadOptions {
            content_type: source.content_type.clone(),
            metadata: source.metadata.clone(),
            public: dst_settings.public,
            // A destination created meanwhile was not checked against the
            // caller's rights (nor `x-upsert`): it stays a conflict.
            condition: if existing.is_none() && caps.conditional_writes {
                WriteCondition::IfNotExists
            } else {
                WriteCondition::None
            },
        };
        if caps.streaming {
            let data = storage
                .download_stream(&src_bucket, &src_key, None)
                .await
                .map_err(object_err)?;
            storage
                .upload_stream(&dst_bucket, &dst_key, data, &options)
                .await
                .map_err(bucket_err)?;
        } else {
            let data = storage
                .download(&src_bucket, &src_key)
                .await
                .map_err(object_err)?;
            storage
                .upload(&dst_bucket, &dst_key, data, &options)
                .await
                .map_err(bucket_err)?;
        }
    }
    if moving {
        storage
            .delete(&src_bucket, &src_key)
            .await
            .map_err(object_err)?;
        return Ok(Json(json!({ "message": "Successfully moved" })).into_response());
    }
    let full = format!("{dst_bucket}/{dst_key}");
    Ok(Json(json!({ "Key": full, "Id": object_id(&source), "name": dst_key })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_writes_what_chrono_writes() {
        use chrono::TimeZone;
        let chrono =
            |t: chrono::DateTime<chrono::Utc>| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let mut times = vec![
            chrono::Utc.with_ymd_and_hms(2026, 12, 4, 9, 5, 7).unwrap(),
            chrono::Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            chrono::Utc.with_ymd_and_hms(0, 3, 1, 23, 59, 59).unwrap(),
            chrono::Utc
                .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                .unwrap(),
            chrono::Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            chrono::Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap(),
        ];
        for day in 0..400 {
            times.push(times[0] + chrono::Duration::days(day) + chrono::Duration::seconds(day * 7));
        }
        times.push(
            chrono::Utc.from_utc_datetime(
                &chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                    .unwrap()
                    .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                    .unwrap(),
            ),
        );
        for t in times {
            assert_eq!(http_date(t), chrono(t), "{t:?}");
        }
    }

    #[tokio::test]
    async fn coalesce_joins_small_chunks_and_passes_errors() {
        let chunks = |sizes: &[usize]| -> ByteStream {
            let items: Vec<Result<Bytes, Error>> = sizes
                .iter()
                .map(|&n| Ok(Bytes::from(vec![1u8; n])))
                .collect();
            Box::pin(futures::stream::iter(items))
        };
        let lens = |s: ByteStream| async move {
            s.map(|c| c.expect("chunk").len()).collect::<Vec<_>>().await
        };
        assert_eq!(lens(coalesce(chunks(&[3, 4, 5, 1]), 8)).await, [12, 1]);
        assert_eq!(lens(coalesce(chunks(&[20, 2]), 8)).await, [20, 2]);
        assert_eq!(lens(coalesce(chunks(&[]), 8)).await, Vec::<usize>::new());
        assert_eq!(
            lens(coalesce(chunks(&[0, 0]), 8)).await,
            Vec::<usize>::new()
        );
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(Error::invalid_input("gone")),
            Ok(Bytes::from_static(b"cd")),
        ]));
        let out: Vec<_> = coalesce(failing, 8).collect().await;
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(range_ask(&h), RangeAsk::Whole);
        for (v, want) in [
            ("bytes=0-4", RangeAsk::From(ByteRange::new(0, 5))),
            ("bytes=5-", RangeAsk::From(ByteRange::from(5))),
            ("bytes=-3", RangeAsk::Suffix(3)),
            ("bytes=8-100", RangeAsk::From(ByteRange::new(8, 101))),
            ("bytes=10-", RangeAsk::From(ByteRange::from(10))),
            ("bytes=-0", RangeAsk::Unsatisfiable),
            ("bytes=5-2", RangeAsk::Unsatisfiable),
            ("bytes=x-2", RangeAsk::Unsatisfiable),
            ("bytes=3", RangeAsk::Unsatisfiable),
            ("bytes=0-1,3-4", RangeAsk::Whole),
            ("items=0-4", RangeAsk::Whole),
        ] {
            h.insert("range", HeaderValue::from_static(v));
            assert_eq!(range_ask(&h), want, "{v}");
        }
        assert_eq!(satisfiable(ByteRange::new(8, 101), 10), Some(8..10));
        assert_eq!(satisfiable(ByteRange::from(10), 10), None);
        assert_eq!(satisfiable(ByteRange::from(0), 0), None);
        assert_eq!(normalize_cache("3600"), "max-age=3600");
        assert_eq!(uuid_from(&[0u8; 16]).len(), 36);
    }
}
