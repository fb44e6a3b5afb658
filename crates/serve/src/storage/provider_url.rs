//! `GET|HEAD|PUT /storage/v1/signed/...`: the signed URLs the storage
//! provider makes itself (storage-fs, storage-memory), answered through
//! [`truststream_core_storage::Storage::verify_signed`] with no API key:
//! the provider checks the URL, then the object is read or written as the
//! `/object/...` routes do it (streamed, with its content type, `HEAD`
//! without the body, ranges, the bucket's limits).
//!
//! The provider signs URLs under its `base_url`; set it to
//! `<serve.public_url>/storage/v1/signed` (by default
//! `http://127.0.0.1:54321/storage/v1/signed`). The request's URL is put
//! back together from the server's public URL and the request's path and
//! query exactly as they arrived (still percent-encoded), and the provider
//! checks it: the signature, the expiry, the method, the base. These are
//! not the Supabase-style `/object/sign/...?token=` URLs, which serve signs
//! with its own key.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use truststream_core::ErrorKind;
use truststream_core_storage::SignedUrlMethod;

use super::error::{ApiError, ApiResult};
use super::objects::{self, Grant, WriteMode};
use crate::ServeState;

/// The path under `/storage/v1` these URLs live at.
pub(crate) const ROUTE: &str = "/signed";

/// Answers a request on a provider-signed URL.
pub(crate) async fn handle(
    State(state): State<Arc<ServeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match fetch(&state, &method, &uri, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn fetch(
    state: &ServeState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let signed_method = match *method {
        Method::GET | Method::HEAD => SignedUrlMethod::Get,
        Method::PUT => SignedUrlMethod::Put,
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "InvalidRequest",
                "A signed URL takes GET, HEAD or PUT",
            ))
        }
    };
    let url = public_url_of(&state.public_url, uri);
    // The provider checks the URL and names what it grants; nothing is
    // read or written before. Then the object is served or stored as the
    // `/object/...` routes do: streamed both ways, with its content type,
    // a HEAD without the body, ranges, the bucket's size and MIME limits.
    let granted = state
        .storage
        .verify_signed(signed_method, &url)
        .await
        .map_err(refused)?;
    let (bucket, key) = (granted.bucket.as_str(), granted.key.as_str());
    match signed_method {
        SignedUrlMethod::Get => {
            let head = *method == Method::HEAD;
            let mut resp = objects::serve(state, bucket, key, headers, None, head).await?;
            // Whoever holds the URL may read: no shared cache keeps it.
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
            Ok(resp)
        }
        SignedUrlMethod::Put => {
            // As the provider's own fetch: create or replace.
            objects::upload(
                state,
                Grant::Token,
                bucket,
                key,
                WriteMode::Upsert,
                headers,
                body,
            )
            .await?;
            Ok(StatusCode::OK.into_response())
        }
    }
}

/// The URL a request on `uri` was made to, as the provider signed it:
/// `public` + `/storage/v1` + the path (the router nests these routes under
/// `/storage/v1` and hands them the rest) + `?` + the query, both as they
/// arrived.
fn public_url_of(public: &str, uri: &Uri) -> String {
    let path = uri.path();
    let prefix = if path.starts_with("/storage/v1/") {
        ""
    } else {
        MOUNT
    };
    match uri.query() {
        Some(q) => format!("{public}{prefix}{path}?{q}"),
        None => format!("{public}{prefix}{path}"),
    }
}

/// Where the storage routes are mounted.
const MOUNT: &str = "/storage/v1";

/// A refusal of the provider, without its reason (which says which part of
/// the URL failed the check: no help to a forger, but none to anyone else
/// either): 403 for a URL that does not verify, 404 for a missing object,
/// 400 for a bad request; the rest as every storage route maps them.
fn refused(e: truststream_core::Error) -> ApiError {
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => {
            tracing::debug!(error = %e, "storage: signed URL refused");
            ApiError::new(
                StatusCode::FORBIDDEN,
                "InvalidSignature",
                "The signed URL is invalid, has expired or is not for this method",
            )
        }
        _ => ApiError::storage(e, ApiError::object_not_found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_rebuilt_under_the_mount_with_the_raw_path_and_query() {
        let public = "https://files.example";
        for (uri, url) in [
            (
                "/signed/docs/a%20b.txt?method=GET&expires=1&signature=ab",
                "https://files.example/storage/v1/signed/docs/a%20b.txt?method=GET&expires=1&signature=ab",
            ),
            (
                "/storage/v1/signed/docs/../x",
                "https://files.example/storage/v1/signed/docs/../x",
            ),
        ] {
            assert_eq!(public_url_of(public, &uri.parse().unwrap()), url);
        }
    }
}
