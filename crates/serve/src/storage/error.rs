//! Storage's error shape: `{statusCode: "404", error, message}` (the
//! status code is a string, as Supabase Storage sends it).

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use truststream_core::{Error, ErrorKind};

use crate::caller::CallerError;

/// An error answer of `/storage/v1`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: Cow<'static, str>,
}

/// Result of a storage handler step.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with `status`, Supabase's `error` code and a message.
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// 400 `InvalidRequest`.
    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }

    /// 400 `Invalid key`.
    pub(crate) fn invalid_key(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Invalid key", message)
    }

    /// 400 `InvalidJWT` (signed URL tokens).
    pub(crate) fn invalid_jwt(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidJWT", message)
    }

    /// 403: the bucket's policy does not allow this.
    pub(crate) fn denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Unauthorized",
            "new row violates row-level security policy",
        )
    }

    /// 403 with a clearer message.
    pub(crate) fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Unauthorized", message)
    }

    /// 404 for an object.
    pub(crate) fn object_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Object not found")
    }

    /// 404 for a bucket.
    pub(crate) fn bucket_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Bucket not found",
            "Bucket not found",
        )
    }

    /// 409 for a create over something that exists.
    pub(crate) fn duplicate() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Duplicate",
            "The resource already exists",
        )
    }

    /// 413 for an upload over the limit.
    pub(crate) fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            "The object exceeded the maximum allowed size",
        )
    }

    /// Maps a caller identification failure (401, 503).
    pub(crate) fn caller(e: CallerError) -> Self {
        let status = e.status();
        let error = if status == StatusCode::SERVICE_UNAVAILABLE {
            "ServiceUnavailable"
        } else {
            "Unauthorized"
        };
        if let CallerError::AuthUnavailable(inner) = &e {
            tracing::warn!(error = %inner.display_chain(), "storage: auth provider unavailable");
        }
        Self::new(status, error, e.message())
    }

    /// Maps a provider error by kind, `not_found` naming what was missing.
    /// Only the messages of input, not-found and conflict errors reach the
    /// client (they are about the request); everything else gets a fixed
    /// message and is logged.
    pub(crate) fn storage(e: Error, not_found: fn() -> ApiError) -> Self {
        match e.kind() {
            ErrorKind::NotFound => not_found(),
            ErrorKind::Conflict => Self::new(
                StatusCode::CONFLICT,
                "Duplicate",
                "The resource already exists",
            ),
            ErrorKind::InvalidInput => Self::bad_request(e.message().to_string()),
            ErrorKind::TooLarge => Self::too_large(),
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => {
                tracing::warn!(error = %e.display_chain(), "storage: the provider refused");
                Self::forbidden("The storage provider refused the operation")
            }
            ErrorKind::Unsupported => Self::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotSupported",
                "The storage provider does not support this operation",
            ),
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::RateLimited => {
                tracing::warn!(error = %e.display_chain(), "storage: provider unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The storage service is unavailable; try again later",
                )
            }
            _ => {
                tracing::error!(error = %e.display_chain(), "storage: provider error");
                Self::internal()
            }
        }
    }

    /// 500 with a fixed message.
    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "statusCode": self.status.as_u16().to_string(),
            "error": self.error,
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}
