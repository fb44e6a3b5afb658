//! sqlx / SQLite errors to TrustStream error kinds. The sqlx error is kept as
//! the `source()`.

use truststream_core_db::{Error, ErrorKind};

/// Maps a sqlx error to the TrustStream error of the right kind.
///
/// - UNIQUE / PRIMARY KEY / FOREIGN KEY constraint, "already exists", "there is
///   already a table named ..." (an index named like a table): `Conflict`
/// - NOT NULL / CHECK constraint, "no such column", syntax errors: `InvalidInput`
/// - "no such table": `NotFound`
/// - SQLITE_BUSY / SQLITE_LOCKED, pool timeout or closed, I/O: `Unavailable`
///   (retryable)
/// - anything else: `Internal`
///
/// A pool timeout or a closed pool is also [`Error::unapplied`]: no
/// statement was sent. So are errors taking a connection for a write (the
/// shared engine marks what `SqlProvider::begin` returns, `BEGIN IMMEDIATE`
/// refused as busy included). Other I/O errors are not: the outcome is
/// unknown.
pub(crate) fn map(e: sqlx::Error) -> Error {
    let (kind, message) = match &e {
        sqlx::Error::Database(db) => {
            let msg = db.message().to_string();
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            (classify(code, &msg), msg)
        }
        sqlx::Error::PoolTimedOut => (
            ErrorKind::Unavailable,
            "timed out waiting for a SQLite connection from the pool (raise max_connections or acquire_timeout_ms)"
                .to_string(),
        ),
        sqlx::Error::PoolClosed => (
            ErrorKind::Unavailable,
            "the SQLite pool is closed; call connect() first".to_string(),
        ),
        sqlx::Error::Io(io) => (ErrorKind::Unavailable, format!("SQLite I/O error: {io}")),
        sqlx::Error::WorkerCrashed => (
            ErrorKind::Unavailable,
            "the SQLite worker thread stopped".to_string(),
        ),
        other => (ErrorKind::Internal, format!("SQLite error: {other}")),
    };
    // Both come from taking a connection from the pool: nothing was sent.
    let unsent = matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed);
    let retryable = kind == ErrorKind::Unavailable;
    let error = Error::new(kind, message)
        .with_retryable(retryable)
        .with_source(e);
    if unsent {
        error.unapplied()
    } else {
        error
    }
}

/// The kind for a SQLite (extended) result code and message.
pub(crate) fn classify(code: i32, msg: &str) -> ErrorKind {
    let primary = code & 0xff;
    let m = msg.to_ascii_lowercase();
    if primary == 5 || primary == 6 || m.contains("database is locked") || m.contains("is busy") {
        // SQLITE_BUSY, SQLITE_LOCKED
        return ErrorKind::Unavailable;
    }
    if m.contains("unique constraint failed")
        || m.contains("foreign key constraint failed")
        || m.contains("already exists")
        || m.contains("there is already")
        || code == 1555
        || code == 2067
        || code == 787
    {
        return ErrorKind::Conflict;
    }
    if m.contains("no such table") {
        return ErrorKind::NotFound;
    }
    if m.contains("not null constraint failed")
        || m.contains("check constraint failed")
        || m.contains("no such column")
        || m.contains("ambiguous column")
        || m.contains("syntax error")
        || m.contains("datatype mismatch")
        || m.contains("no such function")
        || code == 1299
    {
        return ErrorKind::InvalidInput;
    }
    if primary == 10 || primary == 13 || primary == 14 {
        // SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
        return ErrorKind::Unavailable;
    }
    ErrorKind::Internal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            classify(2067, "UNIQUE constraint failed: t.k"),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(1555, "UNIQUE constraint failed: t.id"),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(787, "FOREIGN KEY constraint failed"),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(1299, "NOT NULL constraint failed: t.name"),
            ErrorKind::InvalidInput
        );
        assert_eq!(classify(1, "no such table: nope"), ErrorKind::NotFound);
        assert_eq!(classify(1, "no such column: zzz"), ErrorKind::InvalidInput);
        assert_eq!(classify(5, "database is locked"), ErrorKind::Unavailable);
        assert_eq!(classify(517, "database is locked"), ErrorKind::Unavailable);
        assert_eq!(
            classify(6, "database table is locked"),
            ErrorKind::Unavailable
        );
        assert_eq!(
            classify(1, "index agents_uq already exists"),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(1, "there is already a table named agents"),
            ErrorKind::Conflict
        );
        assert_eq!(
            classify(11, "database disk image is malformed"),
            ErrorKind::Internal
        );
    }

    #[test]
    fn pool_timeout_is_retryable_unavailable() {
        let e = map(sqlx::Error::PoolTimedOut);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.is_unapplied(), "no connection, nothing sent");
        assert!(map(sqlx::Error::PoolClosed).is_unapplied());
        let io = map(sqlx::Error::Io(std::io::ErrorKind::Other.into()));
        assert_eq!(io.kind(), ErrorKind::Unavailable);
        assert!(!io.is_unapplied(), "an I/O error's outcome is unknown");
    }
}
