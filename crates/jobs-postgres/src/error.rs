//! sqlx errors to TrustStream error kinds, by SQLSTATE; the sqlx error is
//! kept as the `source()`.

use truststream_core::{Error, ErrorKind};

/// Maps a sqlx error to the error of the right kind: constraint violations
/// are `Conflict`, bad data `InvalidInput`, a missing table `NotFound`,
/// cancelled statements `Timeout`, lost connections, deadlocks and
/// serialization failures `Unavailable` (retryable), the rest `Internal`.
pub(crate) fn map(e: sqlx::Error) -> Error {
    let (kind, message) = match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            (classify(&code), db.message().to_string())
        }
        sqlx::Error::PoolTimedOut => (
            ErrorKind::Unavailable,
            "no PostgreSQL connection available (server down or pool exhausted)".to_string(),
        ),
        sqlx::Error::PoolClosed => (
            ErrorKind::Unavailable,
            "the jobs provider was closed (Jobs::close, Runtime::shutdown): its connections are \
             gone"
                .to_string(),
        ),
        sqlx::Error::Io(io) => (
            ErrorKind::Unavailable,
            format!("cannot reach PostgreSQL: {io}"),
        ),
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => (
            ErrorKind::Unavailable,
            "the PostgreSQL connection broke".to_string(),
        ),
        sqlx::Error::Configuration(_) => (
            ErrorKind::InvalidInput,
            "invalid PostgreSQL connection settings".to_string(),
        ),
        other => (ErrorKind::Internal, format!("PostgreSQL error: {other}")),
    };
    Error::new(kind, message).with_source(e)
}

fn classify(code: &str) -> ErrorKind {
    match code {
        "23505" | "23503" | "23P01" | "42P07" | "42710" => ErrorKind::Conflict,
        "42P01" | "3F000" => ErrorKind::NotFound,
        "57014" => ErrorKind::Timeout,
        "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" => ErrorKind::Unavailable,
        "42501" => ErrorKind::PermissionDenied,
        c if c.starts_with("08") || c.starts_with("53") => ErrorKind::Unavailable,
        c if c.starts_with("22") || c.starts_with("23") || c.starts_with("42") => {
            ErrorKind::InvalidInput
        }
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds() {
        assert_eq!(classify("23505"), ErrorKind::Conflict);
        assert_eq!(classify("42P01"), ErrorKind::NotFound);
        assert_eq!(classify("08006"), ErrorKind::Unavailable);
        assert_eq!(classify("22P02"), ErrorKind::InvalidInput);
        assert_eq!(classify("XX000"), ErrorKind::Internal);
    }
}
