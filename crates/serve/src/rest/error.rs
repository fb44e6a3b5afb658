//! PostgREST-shaped errors: `{code, message, details, hint}` with the status
//! PostgREST gives each code.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use truststream_core::{Error, ErrorKind};

/// One error answer of `/rest/v1`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// A string, or (PGRST201) the candidate relationships.
    pub details: Option<Box<Value>>,
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            hint: None,
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(Box::new(Value::String(details.into())));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// PGRST100: a malformed query string (`select`, `order`, filters).
    pub fn bad_query(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "PGRST100", message)
    }

    /// PGRST102: a body that is not the JSON expected.
    pub fn bad_body(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "PGRST102", message)
    }

    /// PGRST205: an unknown (or hidden) table.
    pub fn unknown_table(table: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "PGRST205",
            format!(
                "Could not find the table 'public.{}' in the schema cache",
                truststream_core::echo(table)
            ),
        )
    }

    /// 42703: a filter, `select` or `order` names a column the table lacks.
    pub fn unknown_column_read(table: &str, column: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "42703",
            format!(
                "column {table}.{} does not exist",
                truststream_core::echo(column)
            ),
        )
    }

    /// PGRST204: a written column the table lacks.
    pub fn unknown_column_write(table: &str, column: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "PGRST204",
            format!(
                "Could not find the '{}' column of '{table}' in the schema cache",
                truststream_core::echo(column)
            ),
        )
    }

    /// 42501: refused by the table's policy (401 anonymous, 403 signed in).
    pub fn permission_denied(anonymous: bool, message: impl Into<String>) -> Self {
        let status = if anonymous {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        ApiError::new(status, "42501", message)
    }

    /// 0A000: an operator or feature the database provider has no way to
    /// run (never answered with a guessed result).
    pub fn unsupported(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "0A000", message)
    }

    /// 22P02: a filter value that does not parse as the column's type.
    pub fn bad_value(type_name: &str, value: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "22P02",
            format!(
                "invalid input syntax for type {type_name}: \"{}\"",
                truststream_core::echo(value)
            ),
        )
    }

    /// Maps a provider error by kind; only the messages of kinds written
    /// for people about the request itself are passed on.
    pub fn from_db(e: &Error) -> Self {
        match e.kind() {
            ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, "23505", e.message())
                .details("A row with the same key or unique value already exists."),
            ErrorKind::NotFound => {
                if let Some((_, t)) = e.context().iter().find(|(k, _)| *k == "table") {
                    ApiError::unknown_table(t)
                } else {
                    ApiError::new(StatusCode::NOT_FOUND, "PGRST116", e.message())
                }
            }
            ErrorKind::InvalidInput => ApiError::new(StatusCode::BAD_REQUEST, "22000", e.message()),
            // The provider's text can tell the table's size and the
            // server's limits (`table t would hold N rows, more than
            // max_rows_per_table = M`), which are not the caller's to see.
            ErrorKind::TooLarge => {
                tracing::warn!(error = %e, "rest: the database refused the write as too large");
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PGRST413",
                    "The write is larger than the database accepts",
                )
            }
            ErrorKind::Unsupported => ApiError::unsupported(e.message()),
            ErrorKind::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "PGRST301",
                "the request is not authenticated",
            ),
            ErrorKind::PermissionDenied => ApiError::new(
                StatusCode::FORBIDDEN,
                "42501",
                "permission denied by the database",
            ),
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::RateLimited => {
                tracing::warn!(error = %e, "rest: database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "PGRST000",
                    "The database is unavailable; try again later",
                )
            }
            _ => {
                tracing::error!(error = %e, "rest: database error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "XX000",
                    "Internal error in the database provider",
                )
            }
        }
    }

    pub fn body(&self) -> Value {
        json!({
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "hint": self.hint,
        })
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::from_db(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if let Ok(v) = HeaderValue::from_str(self.code) {
            r.headers_mut().insert("x-sb-error-code", v);
        }
        r
    }
}

/// `Result` of the REST handlers.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_details_never_reach_the_client() {
        for e in [
            Error::unavailable("connection to host=db.internal password=hunter2 refused"),
            Error::new(ErrorKind::Timeout, "SELECT * FROM secret_table timed out"),
            Error::internal("panic at /home/app/src/db.rs:12"),
        ] {
            let body = ApiError::from_db(&e).body().to_string();
            for leak in ["hunter2", "db.internal", "secret_table", "/home/app"] {
                assert!(!body.contains(leak), "{body}");
            }
        }
        assert_eq!(
            ApiError::from_db(&Error::unavailable("x")).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from_db(&Error::internal("x")).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let conflict = ApiError::from_db(&Error::conflict("duplicate key"));
        assert_eq!(
            (conflict.status, conflict.code),
            (StatusCode::CONFLICT, "23505")
        );
        let big = ApiError::from_db(&Error::too_large(
            "table t would hold 91234 rows, more than max_rows_per_table = 90000",
        ));
        assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!big.body().to_string().contains("9123"), "{}", big.body());
        let missing =
            ApiError::from_db(&Error::not_found("no table").with_context("table", "gone"));
        assert_eq!(
            (missing.status, missing.code),
            (StatusCode::NOT_FOUND, "PGRST205")
        );
    }
}
