//! sqlx / PostgreSQL errors to TrustStream error kinds, by SQLSTATE. The sqlx
//! error is kept as the `source()`.

use truststream_core_db::{Error, ErrorKind};

/// Maps a sqlx error to the TrustStream error of the right kind.
///
/// | SQLSTATE / sqlx error | kind |
/// |---|---|
/// | `23505` unique, `23503` foreign key, `23P01` exclusion, `42P07`/`42710` already exists, `2BP01` still referenced | `Conflict` |
/// | `23502` not null, `23514` check, `22xxx` data exceptions, `42601` syntax, `42703` undefined column, `42883` undefined function, `42804` datatype mismatch, `42P18`, `42702` ambiguous column, `42830` foreign key without a unique target, `42704` undefined object (an unknown text-search configuration) | `InvalidInput` |
/// | `42P01` undefined table | `NotFound` |
/// | `57014` statement timeout / cancelled | `Timeout` (retryable) |
/// | `40001` serialization failure, `40P01` deadlock, `55P03` lock not available | `Unavailable` (retryable) |
/// | `08xxx` connection, `57P01`–`57P03` shutdown, `53xxx` resources, I/O, TLS, pool timeout, pool closed | `Unavailable` (retryable) |
/// | `42501` insufficient privilege | `PermissionDenied` |
/// | anything else | `Internal` |
///
/// A pool timeout or a closed pool is also [`Error::unapplied`]: no
/// statement was sent. So are errors taking a connection for a write (the
/// shared engine marks what `SqlProvider::begin` returns). An I/O error
/// once a statement is on its way is not: its outcome is unknown.
pub(crate) fn map(e: sqlx::Error) -> Error {
    let (kind, message) = match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let mut msg = db.message().to_string();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    msg = format!("{msg} ({detail})");
                }
            }
            (classify(&code), msg)
        }
        // Whether every connection was in use or a new one could not be
        // opened, only the pool knows: `acquire` says which.
        sqlx::Error::PoolTimedOut => (
            ErrorKind::Unavailable,
            "timed out waiting for a PostgreSQL connection (acquire_timeout_ms)".to_string(),
        ),
        sqlx::Error::PoolClosed => (
            ErrorKind::Unavailable,
            "the PostgreSQL pool is closed; call connect() first".to_string(),
        ),
        sqlx::Error::Io(io) => (
            ErrorKind::Unavailable,
            format!("cannot reach PostgreSQL: {io}"),
        ),
        sqlx::Error::Tls(t) => (ErrorKind::Unavailable, format!("PostgreSQL TLS error: {t}")),
        sqlx::Error::Protocol(p) => (
            ErrorKind::Unavailable,
            format!("PostgreSQL protocol error (connection broken?): {p}"),
        ),
        sqlx::Error::Configuration(c) => (
            ErrorKind::InvalidInput,
            format!("invalid PostgreSQL connection settings: {c}"),
        ),
        other => (ErrorKind::Internal, format!("PostgreSQL error: {other}")),
    };
    // Both come from taking a connection from the pool: nothing was sent.
    let unsent = matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed);
    let retryable = matches!(kind, ErrorKind::Unavailable | ErrorKind::Timeout);
    let error = Error::new(kind, message)
        .with_retryable(retryable)
        .with_source(e);
    if unsent {
        error.unapplied()
    } else {
        error
    }
}

/// An error taking a connection from `pool` ([`map`] otherwise). A
/// timeout says which of its two causes it was: every connection of the
/// pool in use (the only case where raising `max_connections` helps), or
/// no new connection accepted by the server in time (down, refusing, or
/// overloaded), so that a stopped server is never answered with "raise
/// max_connections".
pub(crate) fn acquire(e: sqlx::Error, pool: &sqlx::PgPool) -> Error {
    if !matches!(e, sqlx::Error::PoolTimedOut) {
        return map(e);
    }
    let max = pool.options().get_max_connections();
    let message = if pool.size() >= max && pool.num_idle() == 0 {
        format!(
            "timed out waiting for a PostgreSQL connection: all {max} connections of the pool \
             are in use (raise max_connections, or acquire_timeout_ms to wait longer)"
        )
    } else {
        "timed out waiting for a new PostgreSQL connection: the server did not accept one \
         within acquire_timeout_ms (is it down, refusing connections, or overloaded?)"
            .to_string()
    };
    Error::unavailable(message)
        .with_retryable(true)
        .with_source(e)
        .unapplied()
}

/// The kind for a SQLSTATE code.
pub(crate) fn classify(code: &str) -> ErrorKind {
    match code {
        // 2BP01: dropping a table or column another table's foreign key
        // still references.
        "23505" | "23503" | "23P01" | "42P07" | "42710" | "42P06" | "2BP01" => ErrorKind::Conflict,
        "42P01" => ErrorKind::NotFound,
        "57014" => ErrorKind::Timeout,
        "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" => ErrorKind::Unavailable,
        "42501" => ErrorKind::PermissionDenied,
        c if c.starts_with("08") || c.starts_with("53") => ErrorKind::Unavailable,
        c if c.starts_with("22") || c.starts_with("23") => ErrorKind::InvalidInput,
        // 42830: a foreign key whose referenced columns have no unique
        // constraint (the table's own definition is at fault).
        "42601" | "42703" | "42883" | "42804" | "42P18" | "42702" | "42803" | "42P02" | "42846"
        | "42725" | "42P08" | "42830" | "42704" => ErrorKind::InvalidInput,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds() {
        assert_eq!(classify("23505"), ErrorKind::Conflict);
        assert_eq!(classify("23503"), ErrorKind::Conflict);
        assert_eq!(classify("2BP01"), ErrorKind::Conflict);
        assert_eq!(classify("42830"), ErrorKind::InvalidInput);
        // An unknown text-search configuration (`fts(nosuch)`).
        assert_eq!(classify("42704"), ErrorKind::InvalidInput);
        assert_eq!(classify("23502"), ErrorKind::InvalidInput);
        assert_eq!(classify("22P02"), ErrorKind::InvalidInput);
        assert_eq!(classify("42P01"), ErrorKind::NotFound);
        assert_eq!(classify("42703"), ErrorKind::InvalidInput);
        assert_eq!(classify("57014"), ErrorKind::Timeout);
        assert_eq!(classify("57P01"), ErrorKind::Unavailable);
        assert_eq!(classify("08006"), ErrorKind::Unavailable);
        assert_eq!(classify("53300"), ErrorKind::Unavailable);
        assert_eq!(classify("XX000"), ErrorKind::Internal);
        let e = map(sqlx::Error::PoolTimedOut);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
    }

    #[test]
    fn only_pool_errors_are_unapplied_by_themselves() {
        assert!(map(sqlx::Error::PoolTimedOut).is_unapplied());
        assert!(map(sqlx::Error::PoolClosed).is_unapplied());
        // A broken connection mid-statement: the outcome is unknown.
        let io = map(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()));
        assert_eq!(io.kind(), ErrorKind::Unavailable);
        assert!(io.is_retryable());
        assert!(!io.is_unapplied());
        let proto = map(sqlx::Error::Protocol("unexpected end".into()));
        assert!(!proto.is_unapplied());
    }
}
