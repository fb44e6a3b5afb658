//! `/bucket` routes: list, get, create, update, empty, delete.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use truststream_core::ErrorKind;
use truststream_core_storage::{BucketInfo, ListOptions, Storage};

use super::access::{caller, check_bucket, is_reserved, sees_bucket};
use super::error::{ApiError, ApiResult};
use super::json_body;
use super::settings::{self, parse_size_limit, BucketSettings, SETTINGS_KEY};
use crate::caller::{Caller, Role};
use crate::ServeState;

/// Query of `GET /bucket`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ListQuery {
    limit: Option<usize>,
    offset: Option<usize>,
    search: Option<String>,
    sort_column: Option<String>,
    sort_order: Option<String>,
}

/// Body of `POST /bucket` and `PUT /bucket/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BucketBody {
    id: Option<String>,
    name: Option<String>,
    public: Option<bool>,
    file_size_limit: Option<Value>,
    allowed_mime_types: Option<Value>,
}

fn bucket_json(info: &BucketInfo, s: &BucketSettings) -> Value {
    let created = s.created_at.or(info.created_at);
    let updated = s.updated_at.or(created);
    json!({
        "id": info.name,
        "name": info.name,
        "owner": "",
        "public": s.public,
        "file_size_limit": s.file_size_limit,
        "allowed_mime_types": s.allowed_mime_types,
        "created_at": created,
        "updated_at": updated,
        "type": "STANDARD",
    })
}

/// The `{id}` of a bucket route, as storage's error shape when unreadable.
fn bucket_id(id: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    id.map(|Path(id)| id)
        .map_err(|_| ApiError::bad_request("the bucket id in the path is not valid"))
}

fn require_service(caller: &Caller) -> ApiResult<()> {
    if caller.role == Role::ServiceRole {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only the service role may create, update, empty or delete buckets",
        ))
    }
}

/// The common start of `PUT`, `empty` and `DELETE` on `/bucket/{id}`: the
/// id, a service-role caller, the bucket (404 when missing) and its
/// settings, read fresh (not from the cache: the request changes them).
async fn service_bucket(
    state: &ServeState,
    headers: &HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<(BucketInfo, BucketSettings)> {
    let id = bucket_id(id)?;
    let caller = caller(state, headers).await?;
    require_service(&caller)?;
    check_bucket(&id).map_err(|_| ApiError::bucket_not_found())?;
    let s = settings::read(state.storage.as_ref(), &id)
        .await
        .map_err(storage_err)?;
    let info = find_bucket(state.storage.as_ref(), &id, s.as_ref()).await?;
    Ok((info, s.unwrap_or_default()))
}

fn storage_err(e: truststream_core::Error) -> ApiError {
    ApiError::storage(e, ApiError::bucket_not_found)
}

/// The bucket `id`. A bucket with a settings object exists (`settings`,
/// read before): no listing of every bucket. Buckets made by other tools
/// have none and are looked up in the list of buckets.
async fn find_bucket(
    storage: &dyn Storage,
    id: &str,
    settings: Option<&BucketSettings>,
) -> ApiResult<BucketInfo> {
    if let Some(s) = settings {
        return Ok(BucketInfo {
            name: id.to_string(),
            created_at: s.created_at,
        });
    }
    storage
        .list_buckets()
        .await
        .map_err(storage_err)?
        .into_iter()
        .find(|b| b.name == id)
        .ok_or_else(ApiError::bucket_not_found)
}

/// `GET /bucket`: the buckets the caller can see (all for the service
/// role; public ones and those whose policy grants the caller's role
/// something, for others).
pub(crate) async fn list(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let caller = caller(&state, &headers).await?;
    let mut out = Vec::new();
    for info in state.storage.list_buckets().await.map_err(storage_err)? {
        if let Some(search) = &q.search {
            if !info.name.contains(search.as_str()) {
                continue;
            }
        }
        let s = state
            .settings
            .load(state.storage.as_ref(), &info.name)
            .await
            .map_err(storage_err)?;
        if s.public || sees_bucket(&state, &caller, &info.name) {
            out.push(bucket_json(&info, &s));
        }
    }
    let column = q.sort_column.as_deref().unwrap_or("name");
    // One key per bucket, not two strings per comparison.
    out.sort_by_cached_key(|v| v.get(column).map(|c| c.to_string()).unwrap_or_default());
    if q.sort_order
        .as_deref()
        .is_some_and(|o| o.eq_ignore_ascii_case("desc"))
    {
        out.reverse();
    }
    let out: Vec<Value> = out
        .into_iter()
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(usize::MAX))
        .collect();
    Ok(Json(out).into_response())
}

/// `GET /bucket/{id}`.
pub(crate) async fn get(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let id = bucket_id(id)?;
    let caller = caller(&state, &headers).await?;
    check_bucket(&id).map_err(|_| ApiError::bucket_not_found())?;
    let saved = state
        .settings
        .read(state.storage.as_ref(), &id)
        .await
        .map_err(storage_err)?;
    let info = find_bucket(state.storage.as_ref(), &id, saved.as_ref()).await?;
    let s = saved.unwrap_or_default();
    if !(s.public || sees_bucket(&state, &caller, &id)) {
        return Err(ApiError::bucket_not_found());
    }
    Ok(Json(bucket_json(&info, &s)).into_response())
}

fn apply(body: &BucketBody, s: &mut BucketSettings) -> ApiResult<()> {
    if let Some(p) = body.public {
        s.public = p;
    }
    if let Some(limit) = &body.file_size_limit {
        s.file_size_limit = parse_size_limit(limit).map_err(ApiError::bad_request)?;
    }
    if let Some(types) = &body.allowed_mime_types {
        s.allowed_mime_types = match types {
            Value::Null => None,
            Value::Array(items) => {
                let mut list = Vec::new();
                for item in items {
                    let t = item.as_str().ok_or_else(|| {
                        ApiError::bad_request("allowed_mime_types must be a list of strings")
                    })?;
                    let t = t.trim();
                    if t.is_empty() || t.len() > 255 || t.chars().any(char::is_control) {
                        return Err(ApiError::bad_request(format!(
                            "invalid MIME type {:?} in allowed_mime_types",
                            truststream_core::echo(t)
                        )));
                    }
                    list.push(t.to_string());
                }
                (!list.is_empty()).then_some(list)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "allowed_mime_types must be a list of strings",
                ))
            }
        };
    }
    Ok(())
}

/// `POST /bucket` `{id|name, public, file_size_limit, allowed_mime_types}`
/// → `{name}` (service role only).
pub(crate) async fn create(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let caller = caller(&state, &headers).await?;
    require_service(&caller)?;
    let body: BucketBody = json_body(&state, body).await?;
    let id = body
        .id
        .clone()
        .or_else(|| body.name.clone())
        .ok_or_else(|| ApiError::bad_request("the bucket needs an id or a name"))?;
    check_bucket(&id)?;
    let now = chrono::Utc::now();
    let mut s = BucketSettings {
        created_at: Some(now),
        updated_at: Some(now),
        ..Default::default()
    };
    apply(&body, &mut s)?;
    let storage = state.storage.as_ref();
    storage
        .create_bucket(&id)
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Conflict => ApiError::duplicate(),
            _ => storage_err(e),
        })?;
    let stored = settings::store(storage, &id, &s).await;
    state.settings.invalidate(&id);
    if let Err(e) = stored {
        // Leave no bucket without its settings (it would come back private
        // and unlimited).
        let _ = storage.delete_bucket(&id).await;
        return Err(storage_err(e));
    }
    Ok(Json(json!({ "name": id })).into_response())
}

/// `PUT /bucket/{id}` (service role only).
pub(crate) async fn update(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Response> {
    let (info, mut s) = service_bucket(&state, &headers, id).await?;
    let id = info.name.as_str();
    let body: BucketBody = json_body(&state, body).await?;
    apply(&body, &mut s)?;
    s.created_at = s.created_at.or(info.created_at);
    s.updated_at = Some(chrono::Utc::now());
    let stored = settings::store(state.storage.as_ref(), id, &s).await;
    state.settings.invalidate(id);
    stored.map_err(storage_err)?;
    Ok(Json(json!({ "message": "Successfully updated" })).into_response())
}

/// Deletes every object of `bucket` but its settings; returns how many.
async fn empty_bucket(
    storage: &dyn Storage,
    bucket: &str,
) -> Result<usize, truststream_core::Error> {
    let mut removed = 0;
    loop {
        // Deleting while paging could skip keys: gather a batch, delete it,
        // and list again from the start until a whole pass finds nothing.
        let mut batch = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut options = ListOptions::new().limit(1000);
            if let Some(c) = cursor.take() {
                options = options.cursor(c);
            }
            let page = storage.list(bucket, &options).await?;
            batch.extend(
                page.objects
                    .into_iter()
                    .map(|o| o.key)
                    .filter(|k| !is_reserved(k)),
            );
            cursor = page.next_cursor;
            if cursor.is_none() || batch.len() >= 1000 {
                break;
            }
        }
        let last = cursor.is_none();
        for key in &batch {
            storage.delete(bucket, key).await?;
            removed += 1;
        }
        if last {
            return Ok(removed);
        }
    }
}

/// `POST /bucket/{id}/empty` (service role only).
pub(crate) async fn empty(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let (info, _) = service_bucket(&state, &headers, id).await?;
    empty_bucket(state.storage.as_ref(), &info.name)
        .await
        .map_err(storage_err)?;
    Ok(Json(json!({ "message": "Successfully emptied" })).into_response())
}

/// `DELETE /bucket/{id}` (service role only): a bucket that still holds
/// objects is 409, as Supabase answers.
pub(crate) async fn delete(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let (info, saved) = service_bucket(&state, &headers, id).await?;
    let id = info.name.as_str();
    let storage = state.storage.as_ref();
    let not_empty = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "InvalidRequest",
            "The bucket you tried to delete is not empty",
        )
    };
    let page = storage
        .list(id, &ListOptions::new().limit(2))
        .await
        .map_err(storage_err)?;
    if page.objects.iter().any(|o| !is_reserved(&o.key)) {
        return Err(not_empty());
    }
    let deleted = storage.delete(id, SETTINGS_KEY).await;
    state.settings.invalidate(id);
    deleted.map_err(storage_err)?;
    if let Err(e) = storage.delete_bucket(id).await {
        // Put the settings back: the bucket stays as it was.
        let _ = settings::store(storage, id, &saved).await;
        state.settings.invalidate(id);
        return Err(match e.kind() {
            ErrorKind::Conflict => not_empty(),
            _ => storage_err(e),
        });
    }
    Ok(Json(json!({ "message": "Successfully deleted" })).into_response())
}
