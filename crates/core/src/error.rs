//! The one error type of every TrustStream interface.

use std::borrow::Cow;
use std::fmt;

/// `Result` with the TrustStream [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in a form a program can branch on.
///
/// New kinds may be added in minor releases, so match with a wildcard arm.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The table, row, object, channel or user does not exist.
    NotFound,
    /// A uniqueness or precondition check failed (duplicate key, ETag mismatch,
    /// object already exists).
    Conflict,
    /// The caller sent something invalid: a bad identifier, a wrong type, a
    /// malformed path. Retrying the same call cannot help.
    InvalidInput,
    /// No credentials, or credentials that are invalid or expired.
    Unauthenticated,
    /// Valid credentials that do not allow this operation.
    PermissionDenied,
    /// The provider cannot do this operation (see its capabilities).
    Unsupported,
    /// The backing service cannot be reached or is overloaded; a retry may help.
    Unavailable,
    /// The operation did not finish in time; a retry may help.
    Timeout,
    /// The backing service asked us to slow down; a retry later may help.
    RateLimited,
    /// A payload, value or request exceeded a configured limit.
    TooLarge,
    /// A bug or an unexpected state inside the provider.
    Internal,
}

impl ErrorKind {
    /// Stable snake_case name of the kind (`not_found`, `conflict`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether an error of this kind is worth retrying by default.
    pub fn is_retryable_by_default(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::RateLimited
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned by every TrustStream interface.
///
/// It carries a [`ErrorKind`], a message meant for people, the operation that
/// failed, context pairs (`table = agents`), whether a retry may help, and the
/// provider's own error as [`std::error::Error::source`]. Provider error types
/// never appear in the interface signatures.
///
/// Secrets must never be put into the message or the context.
#[derive(thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    operation: Option<&'static str>,
    context: Vec<(&'static str, String)>,
    retryable: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind`; retryable when the kind is
    /// ([`ErrorKind::is_retryable_by_default`]).
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            operation: None,
            context: Vec::new(),
            retryable: kind.is_retryable_by_default(),
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// Shorthand for [`ErrorKind::Conflict`].
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    /// Shorthand for [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// Shorthand for [`ErrorKind::Unauthenticated`].
    pub fn unauthenticated(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }
    /// Shorthand for [`ErrorKind::PermissionDenied`].
    pub fn permission_denied(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }
    /// Shorthand for [`ErrorKind::TooLarge`].
    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }

    /// Names the operation that failed (`"db.read"`, `"storage.upload"`).
    /// The first operation set wins, so a wrapper does not hide the inner one.
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        if self.operation.is_none() {
            self.operation = Some(operation);
        }
        self
    }

    /// Adds a context pair shown in the message (`table = agents`).
    pub fn with_context(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.context.push((key, value.into()));
        self
    }

    /// Attaches the provider's own error as the source.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Overrides whether a retry may help.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Marks the error as permanent: a retry layer that gave up calls this so
    /// that an outer retry layer does not retry again.
    pub fn permanent(self) -> Self {
        self.with_retryable(false)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for people, without kind or context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The operation that failed, if recorded.
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }

    /// The context pairs, in the order they were added.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if self.operation.is_some() || !self.context.is_empty() {
            f.write_str(" (")?;
            let mut first = true;
            if let Some(op) = self.operation {
                write!(f, "operation: {op}")?;
                first = false;
            }
            for (k, v) in &self.context {
                if !first {
                    f.write_str(", ")?;
                }
                write!(f, "{k}: {v}")?;
                first = false;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("operation", &self.operation)
            .field("context", &self.context)
            .field("retryable", &self.retryable)
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_follows_kind_unless_overridden() {
        assert!(Error::unavailable("x").is_retryable());
        assert!(!Error::not_found("x").is_retryable());
        assert!(!Error::unavailable("x").permanent().is_retryable());
    }

    #[test]
    fn display_lists_operation_context_and_source() {
        let io = std::io::Error::other("boom");
        let e = Error::internal("read failed")
            .with_operation("storage.download")
            .with_operation("ignored")
            .with_context("bucket", "b")
            .with_source(io);
        assert_eq!(
            e.to_string(),
            "internal: read failed (operation: storage.download, bucket: b): boom"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
