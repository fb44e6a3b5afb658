//! `/storage/v1`: Supabase Storage's HTTP API (what `@supabase/storage-js`
//! calls) over the configured [`truststream_core_storage::Storage`].
//!
//! - [`buckets`]: `/bucket` routes; bucket settings (public, size limit,
//!   MIME types) live in the bucket under a reserved key ([`settings`]).
//! - [`objects`]: upload (raw or multipart, streamed, limits enforced while
//!   streaming), download (streamed, ranges), info, list, remove, move, copy.
//! - [`signed`] and [`token`]: signed download and upload URLs.
//! - [`access`]: the caller and the configuration's bucket policies.
//! - [`provider_url`]: `/signed/...`, the signed URLs the provider makes
//!   itself (storage-fs, storage-memory with `base_url` pointing here),
//!   checked through `Storage::verify_signed`, then served like the
//!   `/object/...` routes.
//!
//! Paths under `/object/` are dispatched here rather than by the router, so
//! that each segment is percent-decoded once and checked by core-storage's
//! key rules before anything reaches the provider.

mod access;
mod buckets;
mod error;
mod multipart;
mod objects;
mod provider_url;
pub(crate) mod settings;
mod signed;
mod token;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::ServeState;
use access::{caller, check_bucket, split_object_path};
use error::{ApiError, ApiResult};
use objects::{Grant, WriteMode};

/// The routes under `/storage/v1`.
pub(crate) fn router() -> Router<Arc<ServeState>> {
    Router::new()
        .route("/bucket", get(buckets::list).post(buckets::create))
        .route("/bucket/", get(buckets::list).post(buckets::create))
        .route(
            "/bucket/{id}",
            get(buckets::get)
                .put(buckets::update)
                .delete(buckets::delete),
        )
        .route("/bucket/{id}/empty", post(buckets::empty))
        .route("/object/{*rest}", any(object))
        .route(
            &format!("{}/{{*rest}}", provider_url::ROUTE),
            any(provider_url::handle),
        )
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "Route not found",
    )
}

/// Reads a JSON body of at most `max_json_body_bytes` (an empty body is
/// `{}`).
pub(crate) async fn json_body<T: DeserializeOwned>(state: &ServeState, body: Body) -> ApiResult<T> {
    let bytes = axum::body::to_bytes(body, state.config.max_json_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
                "The request body is too large",
            )
        })?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The part of the request path after `/object/`, still percent-encoded.
fn object_rest(uri: &Uri) -> &str {
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/object/") {
        return rest;
    }
    match path.find("/object/") {
        Some(i) => &path[i + "/object/".len()..],
        None => "",
    }
}

async fn object(
    State(state): State<Arc<ServeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    match dispatch(&state, method, &uri, &headers, &query, body).await {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::debug!(status = %e.status(), "storage request failed");
            }
            e.into_response()
        }
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "InvalidRequest",
        "Method not allowed on this route",
    )
}

async fn dispatch(
    state: &ServeState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: Body,
) -> ApiResult<Response> {
    let rest = object_rest(uri);
    let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let head = method == Method::HEAD;
    let download = query.get("download").map(String::as_str);
    let token = query.get("token").map(String::as_str);
    match (first, &method) {
        ("list", &Method::POST) => {
            let bucket = access::decode(tail.trim_end_matches('/'))?;
            let caller = caller(state, headers).await?;
            let body = json_body(state, body).await?;
            objects::list(state, &caller, &bucket, body).await
        }
        ("move" | "copy", &Method::POST) if tail.is_empty() => {
            let caller = caller(state, headers).await?;
            let body = json_body(state, body).await?;
            objects::move_or_copy(state, &caller, headers, body, first == "move").await
        }
        ("info", &Method::GET | &Method::HEAD) => {
            let (kind, path) = match tail.split_once('/') {
                Some(("public", p)) => ("public", p),
                Some(("authenticated", p)) => ("authenticated", p),
                _ => ("", tail),
            };
            let (bucket, key) = split_object_path(path)?;
            if kind == "public" {
                if !objects::bucket_settings(state, &bucket).await?.public {
                    return Err(ApiError::object_not_found());
                }
            } else {
                let caller = caller(state, headers).await?;
                objects::may_read(state, &caller, &bucket, &key).await?;
            }
            objects::info(state, &bucket, &key).await
        }
        ("public", &Method::GET | &Method::HEAD) => {
            let (bucket, key) = split_object_path(tail)?;
            // No API key needed; only public buckets, and an object of a
            // private bucket is as missing as one that does not exist.
            if !objects::bucket_settings(state, &bucket).await?.public {
                return Err(ApiError::object_not_found());
            }
            objects::serve(state, &bucket, &key, headers, download, head).await
        }
        ("authenticated", &Method::GET | &Method::HEAD) => {
            let (bucket, key) = split_object_path(tail)?;
            let caller = caller(state, headers).await?;
            objects::may_read(state, &caller, &bucket, &key).await?;
            objects::serve(state, &bucket, &key, headers, download, head).await
        }
        ("sign", &Method::POST) => {
            let t = tail.trim_end_matches('/');
            if !t.contains('/') {
                let bucket = access::decode(t)?;
                check_bucket(&bucket)?;
                let caller = caller(state, headers).await?;
                let body = json_body(state, body).await?;
                return signed::sign_many(state, &caller, &bucket, body).await;
            }
            let (bucket, key) = split_object_path(tail)?;
            let caller = caller(state, headers).await?;
            let body = json_body(state, body).await?;
            signed::sign_one(state, &caller, &bucket, &key, body).await
        }
        ("sign", &Method::GET | &Method::HEAD) => {
            let (bucket, key) = split_object_path(tail)?;
            signed::fetch(state, &bucket, &key, token, headers, download, head).await
        }
        ("upload", _) if tail.starts_with("sign/") => {
            let (bucket, key) = split_object_path(&tail["sign/".len()..])?;
            match method {
                Method::POST => {
                    let caller = caller(state, headers).await?;
                    signed::create_upload(state, &caller, &bucket, &key, headers).await
                }
                Method::PUT => signed::upload(state, &bucket, &key, token, headers, body).await,
                _ => Err(method_not_allowed()),
            }
        }
        (_, &Method::DELETE) if tail.trim_end_matches('/').is_empty() => {
            let bucket = access::decode(first)?;
            check_bucket(&bucket)?;
            let caller = caller(state, headers).await?;
            let body = json_body(state, body).await?;
            objects::remove(state, &caller, &bucket, body).await
        }
        _ => {
            let (bucket, key) = split_object_path(rest)?;
            match method {
                Method::GET | Method::HEAD => {
                    let caller = caller(state, headers).await?;
                    objects::may_read(state, &caller, &bucket, &key).await?;
                    objects::serve(state, &bucket, &key, headers, download, head).await
                }
                Method::POST | Method::PUT => {
                    let caller = caller(state, headers).await?;
                    let mode = if method == Method::PUT || objects::upsert_header(headers) {
                        WriteMode::Upsert
                    } else {
                        WriteMode::Create
                    };
                    objects::upload(
                        state,
                        Grant::Caller(&caller),
                        &bucket,
                        &key,
                        mode,
                        headers,
                        body,
                    )
                    .await
                }
                Method::DELETE => {
                    let caller = caller(state, headers).await?;
                    objects::delete_one(state, &caller, &bucket, &key).await
                }
                _ => Err(method_not_allowed()),
            }
        }
    }
}
