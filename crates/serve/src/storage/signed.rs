//! Signed URLs: `POST /object/sign/...` (one or many), `GET
//! /object/sign/...?token=`, `POST /object/upload/sign/...` and `PUT
//! /object/upload/sign/...?token=`.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use truststream_core_storage::StorageExt;

use super::access::{allowed, check_key, require};
use super::error::{ApiError, ApiResult};
use super::objects::{self, upsert_header, Grant, WriteMode};
use super::token::{self, Purpose};
use crate::caller::Caller;
use crate::config::TableAction;
use crate::ServeState;

/// Body of `POST /object/sign/...`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SignBody {
    expires_in: Option<Value>,
    paths: Option<Vec<String>>,
}

fn expires_in(body: &SignBody) -> ApiResult<i64> {
    let n = body
        .expires_in
        .as_ref()
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        })
        .ok_or_else(|| ApiError::bad_request("expiresIn is required (seconds)"))?;
    if !(1..=token::MAX_EXPIRES_IN).contains(&n) {
        return Err(ApiError::bad_request(format!(
            "expiresIn must be between 1 and {} seconds",
            token::MAX_EXPIRES_IN
        )));
    }
    Ok(n)
}

fn signed_url(bucket: &str, key: &str, token: &str) -> String {
    // Unencoded, as Supabase answers: storage-js runs it through encodeURI.
    format!("/object/sign/{bucket}/{key}?token={token}")
}

/// `POST /object/sign/{bucket}/{key}` `{expiresIn}` → `{signedURL}`.
pub(crate) async fn sign_one(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    key: &str,
    body: SignBody,
) -> ApiResult<Response> {
    let expires = expires_in(&body)?;
    objects::may_read(state, caller, bucket, key).await?;
    if !state
        .storage
        .exists(bucket, key)
        .await
        .map_err(|e| ApiError::storage(e, ApiError::object_not_found))?
    {
        return Err(ApiError::object_not_found());
    }
    let t = token::sign(state, Purpose::Download, bucket, key, expires, false);
    Ok(Json(json!({ "signedURL": signed_url(bucket, key, &t) })).into_response())
}

/// `POST /object/sign/{bucket}` `{expiresIn, paths}` →
/// `[{error, path, signedURL}]`, one per path.
pub(crate) async fn sign_many(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    body: SignBody,
) -> ApiResult<Response> {
    super::access::check_bucket(bucket)?;
    let expires = expires_in(&body)?;
    let paths = body
        .paths
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("paths is required"))?;
    if paths.len() > 1000 {
        return Err(ApiError::bad_request("sign at most 1000 paths at a time"));
    }
    let public = objects::bucket_settings(state, bucket).await?.public;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let ok = check_key(path).is_ok()
            && (public || allowed(state, caller, bucket, Some(path), TableAction::Select))
            && state.storage.exists(bucket, path).await.unwrap_or(false);
        out.push(if ok {
            let t = token::sign(state, Purpose::Download, bucket, path, expires, false);
            json!({ "error": null, "path": path, "signedURL": signed_url(bucket, path, &t) })
        } else {
            json!({
                "error": "Either the object does not exist or you do not have access to it",
                "path": path,
                "signedURL": null,
            })
        });
    }
    Ok(Json(out).into_response())
}

/// `GET|HEAD /object/sign/{bucket}/{key}?token=`: no API key needed.
pub(crate) async fn fetch(
    state: &ServeState,
    bucket: &str,
    key: &str,
    token: Option<&str>,
    headers: &HeaderMap,
    download: Option<&str>,
    head: bool,
) -> ApiResult<Response> {
    token::verify(state, token, Purpose::Download, bucket, key)?;
    objects::serve(state, bucket, key, headers, download, head).await
}

/// `POST /object/upload/sign/{bucket}/{key}` (`x-upsert: true` for a token
/// that may replace) → `{url, token}`. Needs insert (and update for
/// upsert) on the key.
pub(crate) async fn create_upload(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    key: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let upsert = upsert_header(headers);
    require(state, caller, bucket, Some(key), TableAction::Insert)?;
    if upsert {
        require(state, caller, bucket, Some(key), TableAction::Update)?;
    }
    let t = token::sign(
        state,
        Purpose::Upload,
        bucket,
        key,
        token::UPLOAD_EXPIRES_IN,
        upsert,
    );
    Ok(Json(json!({
        "url": format!("/object/upload/sign/{bucket}/{key}?token={t}"),
        "token": t,
    }))
    .into_response())
}

/// `PUT /object/upload/sign/{bucket}/{key}?token=`: one upload per token.
pub(crate) async fn upload(
    state: &ServeState,
    bucket: &str,
    key: &str,
    token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let claims = token::verify(state, token, Purpose::Upload, bucket, key)?;
    if !token::claim(&claims) {
        return Err(ApiError::invalid_jwt("this upload token was already used"));
    }
    let mode = if claims.upsert {
        WriteMode::Upsert
    } else {
        WriteMode::Create
    };
    let result = objects::upload(state, Grant::Token, bucket, key, mode, headers, body).await;
    if result.is_err() {
        token::release(&claims);
    }
    result
}
