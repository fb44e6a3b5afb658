//! Who may do what: the caller, the bucket policies of the configuration,
//! and the rules for bucket names and object keys in paths.

use axum::http::HeaderMap;
use percent_encoding::percent_decode_str;
use truststream_core_storage::keys;

use super::error::{ApiError, ApiResult};
use super::settings::RESERVED_PREFIX;
use crate::caller::{identify, Caller, Role};
use crate::config::TableAction;
use crate::ServeState;

/// The caller of a request that needs an API key.
pub(crate) async fn caller(state: &ServeState, headers: &HeaderMap) -> ApiResult<Caller> {
    identify(state, headers, None)
        .await
        .map_err(ApiError::caller)
}

/// Whether `caller` may take `action` on `key` (or, for `key == None`, on
/// the bucket's objects in general) of `bucket` under the configuration's
/// bucket policy. The service role may do everything; a bucket without a
/// policy is the service role's only (deny by default).
pub(crate) fn allowed(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    key: Option<&str>,
    action: TableAction,
) -> bool {
    if caller.role == Role::ServiceRole {
        return true;
    }
    let Some(policy) = state.config.buckets.get(bucket) else {
        return false;
    };
    let actions = match caller.role {
        Role::Anon => &policy.anon,
        Role::Authenticated => &policy.authenticated,
        Role::ServiceRole => return true,
    };
    if !actions.contains(&action) {
        return false;
    }
    if !policy.owner_folder {
        return true;
    }
    // Owner folders: only signed-in users, only under "<user id>/".
    match (caller.user_id(), key) {
        (Some(uid), Some(key)) => in_folder(key, uid),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Like [`allowed`], as a 403.
pub(crate) fn require(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    key: Option<&str>,
    action: TableAction,
) -> ApiResult<()> {
    if allowed(state, caller, bucket, key, action) {
        Ok(())
    } else {
        Err(ApiError::denied())
    }
}

/// Whether a listing of `folder` (a prefix ending in `/`, or empty) stays
/// inside the caller's own folder where the bucket has owner folders.
pub(crate) fn may_list(
    state: &ServeState,
    caller: &Caller,
    bucket: &str,
    folder: &str,
) -> ApiResult<()> {
    require(state, caller, bucket, None, TableAction::Select)?;
    if caller.role == Role::ServiceRole {
        return Ok(());
    }
    let owner_folder = state
        .config
        .buckets
        .get(bucket)
        .is_some_and(|p| p.owner_folder);
    if owner_folder {
        let ok = caller
            .user_id()
            .is_some_and(|uid| folder.starts_with(&format!("{uid}/")));
        if !ok {
            return Err(ApiError::forbidden(
                "in this bucket, list only inside your own folder (\"<user id>/\")",
            ));
        }
    }
    Ok(())
}

/// Whether the caller has some access to the bucket's objects (bucket
/// listings show such buckets, and public ones, to non-service callers).
pub(crate) fn sees_bucket(state: &ServeState, caller: &Caller, bucket: &str) -> bool {
    match caller.role {
        Role::ServiceRole => true,
        Role::Anon => state
            .config
            .buckets
            .get(bucket)
            .is_some_and(|p| !p.anon.is_empty()),
        Role::Authenticated => state
            .config
            .buckets
            .get(bucket)
            .is_some_and(|p| !p.authenticated.is_empty()),
    }
}

fn in_folder(key: &str, uid: &str) -> bool {
    key.strip_prefix(uid)
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// Checks a bucket name (core-storage's rules), as a 400.
pub(crate) fn check_bucket(bucket: &str) -> ApiResult<()> {
    keys::validate_bucket(bucket).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "Invalid bucket name",
            e.message().to_string(),
        )
    })
}

/// Checks an object key: core-storage's rules (no `..`, no absolute path,
/// no control characters) and not the server's reserved prefix.
pub(crate) fn check_key(key: &str) -> ApiResult<()> {
    keys::validate_key(key).map_err(|e| ApiError::invalid_key(e.message().to_string()))?;
    if is_reserved(key) {
        return Err(ApiError::invalid_key(format!(
            "keys starting with {RESERVED_PREFIX:?} are reserved for the server"
        )));
    }
    Ok(())
}

/// Whether `key` is under the server's reserved prefix (bucket settings).
pub(crate) fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// Splits a raw (still percent-encoded) path `bucket/key...` into the
/// bucket and the decoded key; each segment is decoded on its own.
pub(crate) fn split_object_path(raw: &str) -> ApiResult<(String, String)> {
    let (bucket, key) = raw
        .split_once('/')
        .ok_or_else(|| ApiError::invalid_key("the path needs a bucket and an object key"))?;
    let bucket = decode(bucket)?;
    check_bucket(&bucket)?;
    let key = decode_key(key)?;
    check_key(&key)?;
    Ok((bucket, key))
}

/// Decodes a percent-encoded key, segment by segment.
pub(crate) fn decode_key(raw: &str) -> ApiResult<String> {
    let parts: Vec<String> = raw.split('/').map(decode).collect::<ApiResult<_>>()?;
    Ok(parts.join("/"))
}

/// Decodes one percent-encoded path segment (UTF-8 only).
pub(crate) fn decode(segment: &str) -> ApiResult<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::invalid_key("the path is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_and_reject_traversal() {
        let (b, k) = split_object_path("docs/a%20b/c.txt").unwrap();
        assert_eq!((b.as_str(), k.as_str()), ("docs", "a b/c.txt"));
        for bad in [
            "docs/../x",
            "docs/%2e%2e/x",
            "docs/a/%2E%2E%2Fetc",
            "docs//x",
            "docs/x%00",
            "docs",
            "docs/.truststream-bucket.json",
            "docs/%ff",
        ] {
            assert!(split_object_path(bad).is_err(), "{bad}");
        }
        assert!(in_folder("u1/a", "u1"));
        assert!(!in_folder("u10/a", "u1"));
        assert!(!in_folder("u1", "u1"));
    }
}
