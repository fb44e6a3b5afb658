//! S3 and SDK errors as TrustStream errors.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use truststream_core_storage::{Error, ErrorKind};

/// What the failing request was about, for the message.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// An object.
    Object(&'a str, &'a str),
    /// A bucket.
    Bucket(&'a str),
    /// The service (list buckets, health).
    Service,
}

impl Target<'_> {
    fn describe(&self) -> String {
        match self {
            Target::Object(b, k) => format!("object {k:?} in bucket {b:?}"),
            Target::Bucket(b) => format!("bucket {b:?}"),
            Target::Service => "the S3 service".to_string(),
        }
    }
}

/// The kind of an S3 error code or HTTP status.
pub(crate) fn kind_of(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    match code {
        Some("NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchUpload") => ErrorKind::NotFound,
        Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem") => {
            ErrorKind::PermissionDenied
        }
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired",
        ) => ErrorKind::Unauthenticated,
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TooManyRequests"
            | "RequestThrottled",
        ) => ErrorKind::RateLimited,
        Some(
            "PreconditionFailed"
            | "ConditionalRequestConflict"
            | "BucketAlreadyExists"
            | "BucketAlreadyOwnedByYou"
            | "BucketNotEmpty"
            | "OperationAborted",
        ) => ErrorKind::Conflict,
        Some("InvalidRange") => ErrorKind::InvalidInput,
        Some("EntityTooLarge" | "MaxMessageLengthExceeded" | "MetadataTooLarge") => {
            ErrorKind::TooLarge
        }
        Some("NotImplemented") => ErrorKind::Unsupported,
        Some("RequestTimeout" | "RequestTimeTooSkewed") => ErrorKind::Timeout,
        Some("InternalError" | "ServiceUnavailable" | "BadGateway") => ErrorKind::Unavailable,
        Some(
            "InvalidArgument" | "InvalidRequest" | "InvalidBucketName" | "KeyTooLongError"
            | "InvalidDigest" | "BadDigest" | "InvalidPart" | "InvalidPartOrder" | "EntityTooSmall"
            | "MalformedXML" | "InvalidObjectName",
        ) => ErrorKind::InvalidInput,
        _ => match status {
            Some(404) => ErrorKind::NotFound,
            Some(401) => ErrorKind::Unauthenticated,
            Some(403) => ErrorKind::PermissionDenied,
            Some(409 | 412) => ErrorKind::Conflict,
            Some(413) => ErrorKind::TooLarge,
            Some(416) => ErrorKind::InvalidInput,
            Some(429) => ErrorKind::RateLimited,
            Some(501) => ErrorKind::Unsupported,
            Some(s) if s >= 500 => ErrorKind::Unavailable,
            Some(s) if s >= 400 => ErrorKind::InvalidInput,
            _ => ErrorKind::Internal,
        },
    }
}

/// Whether `err`'s chain holds an I/O error of kind `ConnectionRefused`:
/// the connection was refused, so no request went out (the only dispatch
/// failure certain of that; a reset or a timeout may come after the
/// request was sent).
fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Maps an SDK error about `target` to a TrustStream error, keeping the SDK
/// error as `source()`.
///
/// A dispatch failure whose cause is a refused connection is
/// [`Error::unapplied`] (the request never left); any other connection
/// failure, a timeout or a cut response is not (its outcome is unknown).
pub(crate) fn map_sdk<E>(err: SdkError<E, HttpResponse>, target: Target<'_>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let what = target.describe();
    let mapped = match &err {
        SdkError::TimeoutError(_) => {
            Error::new(ErrorKind::Timeout, format!("request for {what} timed out"))
        }
        SdkError::DispatchFailure(d) => {
            if d.is_timeout() {
                Error::new(
                    ErrorKind::Timeout,
                    format!("request for {what} timed out while connecting or sending"),
                )
            } else if d.is_user() {
                Error::invalid_input(format!("request for {what} could not be sent"))
            } else if refused(&err) {
                // The TCP connection was never made: nothing was sent.
                Error::unavailable(format!(
                    "cannot reach the S3 server for {what} (connection refused)"
                ))
                .unapplied()
            } else {
                // A reset may come after the request was sent: unknown.
                Error::unavailable(format!(
                    "cannot reach the S3 server for {what} (connection failed or was reset)"
                ))
            }
        }
        SdkError::ResponseError(_) => Error::unavailable(format!(
            "the S3 server's response for {what} was cut off or malformed"
        )),
        SdkError::ConstructionFailure(_) => {
            Error::invalid_input(format!("cannot build the request for {what}"))
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code();
            let status = se.raw().status().as_u16();
            let kind = kind_of(code, Some(status));
            let detail = code.unwrap_or("no error code");
            let message = match (kind, code, target) {
                (ErrorKind::NotFound, Some("NoSuchBucket"), Target::Object(b, _))
                | (ErrorKind::NotFound, _, Target::Bucket(b)) => {
                    format!("bucket {b:?} does not exist")
                }
                (ErrorKind::NotFound, Some("NoSuchUpload"), _) => {
                    format!("the multipart upload of {what} no longer exists")
                }
                (ErrorKind::NotFound, _, Target::Object(b, k)) => {
                    format!("object {k:?} does not exist in bucket {b:?}")
                }
                (ErrorKind::Conflict, Some("BucketNotEmpty"), _) => {
                    format!("{what} is not empty: delete its objects first")
                }
                (
                    ErrorKind::Conflict,
                    Some("BucketAlreadyExists" | "BucketAlreadyOwnedByYou"),
                    _,
                ) => {
                    format!("{what} already exists")
                }
                (ErrorKind::Conflict, _, _) => {
                    format!("write condition on {what} failed ({detail}, HTTP {status})")
                }
                _ => format!("S3 refused the request for {what}: {detail} (HTTP {status})"),
            };
            Error::new(kind, message)
        }
        _ => Error::internal(format!("unexpected SDK error for {what}")),
    };
    mapped.with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_map_to_kinds() {
        assert_eq!(kind_of(Some("NoSuchKey"), Some(404)), ErrorKind::NotFound);
        assert_eq!(kind_of(None, Some(404)), ErrorKind::NotFound);
        assert_eq!(
            kind_of(Some("AccessDenied"), Some(403)),
            ErrorKind::PermissionDenied
        );
        assert_eq!(kind_of(Some("SlowDown"), Some(503)), ErrorKind::RateLimited);
        assert_eq!(kind_of(None, Some(503)), ErrorKind::Unavailable);
        assert_eq!(kind_of(None, Some(500)), ErrorKind::Unavailable);
        assert_eq!(
            kind_of(Some("PreconditionFailed"), Some(412)),
            ErrorKind::Conflict
        );
        assert_eq!(kind_of(None, Some(412)), ErrorKind::Conflict);
        assert_eq!(kind_of(None, Some(429)), ErrorKind::RateLimited);
        assert_eq!(
            kind_of(Some("NotImplemented"), Some(501)),
            ErrorKind::Unsupported
        );
        assert!(kind_of(None, Some(502)).is_retryable_by_default());
        assert!(!kind_of(Some("NoSuchBucket"), Some(404)).is_retryable_by_default());
    }

    /// A provider for an endpoint on `port` of 127.0.0.1: one attempt, no
    /// probe.
    async fn storage_at(port: u16) -> crate::S3Storage {
        let mut config = crate::S3StorageConfig::for_endpoint(
            format!("http://127.0.0.1:{port}"),
            "garage",
            "GK0000",
            "secret",
        );
        config.max_attempts = 1;
        config.attempt_timeout_ms = Some(500);
        config.probe_bucket = None;
        crate::S3Storage::connect(config).await.unwrap()
    }

    #[tokio::test]
    async fn only_a_refused_connection_is_unapplied() {
        use truststream_core_storage::Storage as _;

        // Nothing listens: the connection is refused, nothing was sent.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = storage_at(port)
            .await
            .delete("bucket", "k")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.is_retryable(), "{e}");
        assert!(e.is_unapplied(), "refused: {e:?}");

        // A server that takes the request and never answers: a timeout,
        // outcome unknown.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                held.push(conn);
            }
        });
        let e = storage_at(port)
            .await
            .delete("bucket", "k")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(!e.is_unapplied(), "no answer: {e:?}");
        held.abort();

        // A server that reads the request and closes: outcome unknown.
        let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = rude.local_addr().unwrap().port();
        let closer = tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            while let Ok((mut conn, _)) = rude.accept().await {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                drop(conn);
            }
        });
        let e = storage_at(port)
            .await
            .delete("bucket", "k")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(!e.is_unapplied(), "closed after the request: {e:?}");
        closer.abort();
    }
}
