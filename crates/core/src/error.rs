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

/// Longest message an [`Error`] keeps, in bytes; a longer one is cut at a
/// character boundary and says how long it was.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// Most characters of a caller's value that [`echo`] (and
/// [`Error::with_context`]) repeat back.
pub const ECHO_MAX_CHARS: usize = 64;

fn bound_message(message: Cow<'static, str>) -> Cow<'static, str> {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}... (message cut, {} bytes in all)",
        &message[..end],
        message.len()
    ))
}

/// A caller's value as an error message may repeat it: at most
/// [`ECHO_MAX_CHARS`] characters, then `...` and the value's full length,
/// so a hostile 10 KB name does not come back (or reach the logs) whole.
///
/// Use it for every value an error message quotes that the caller chose
/// (identifiers, parameter names, keys, paths). It does not escape: wrap it
/// in quotes with `{:?}` on the result of `to_string()` if the value may
/// hold control characters.
///
/// ```
/// use truststream_core::echo;
/// assert_eq!(echo("agents").to_string(), "agents");
/// let long = "x".repeat(10_000);
/// let shown = echo(&long).to_string();
/// assert!(shown.len() < 100);
/// assert!(shown.ends_with("... (10000 bytes)"));
/// ```
pub fn echo(value: &str) -> Echo<'_> {
    Echo(value)
}

/// The bounded form of a caller's value; see [`echo`].
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a>(&'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(ECHO_MAX_CHARS) {
            None => f.write_str(self.0),
            Some((end, _)) => write!(f, "{}... ({} bytes)", &self.0[..end], self.0.len()),
        }
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
    unapplied: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind`; retryable when the kind is
    /// ([`ErrorKind::is_retryable_by_default`]).
    ///
    /// A message longer than [`MAX_MESSAGE_BYTES`] is cut there (values a
    /// message quotes should be cut much shorter, with [`echo`]).
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: bound_message(message.into()),
            operation: None,
            context: Vec::new(),
            retryable: kind.is_retryable_by_default(),
            unapplied: false,
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

    /// Adds a context pair shown in the message (`table = agents`). The
    /// value is usually the caller's (a table name, a key): it is cut to
    /// [`ECHO_MAX_CHARS`] characters as [`echo`] does.
    pub fn with_context(mut self, key: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        let value = if value.chars().count() > ECHO_MAX_CHARS {
            echo(&value).to_string()
        } else {
            value
        };
        self.context.push((key, value));
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

    /// Marks the error as certain not to have changed anything: the call
    /// never reached the backing service (no connection could be had, a
    /// circuit breaker or a concurrency limit refused it). A retry layer may
    /// repeat such a call even when it is not idempotent; a call whose
    /// outcome is unknown (the connection dropped after the request was
    /// sent, a timeout) is never marked.
    pub fn unapplied(mut self) -> Self {
        self.unapplied = true;
        self
    }

    /// Whether the failed call certainly changed nothing (see
    /// [`Error::unapplied`]). `false` means "unknown", not "applied".
    pub fn is_unapplied(&self) -> bool {
        self.unapplied
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

    /// The error and its `source()` chain on one line
    /// (`internal: read failed (operation: storage.download): boom`; a
    /// source the message already quotes is not repeated), for
    /// programs that print an error themselves rather than through a
    /// reporter that walks the chain. `Display` alone prints only this
    /// error, so that reporters show each source once.
    pub fn display_chain(&self) -> ErrorChain<'_> {
        ErrorChain(self)
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
        // The source is not printed here: it is `source()`, and reporters
        // that walk the chain (anyhow, eyre, tracing) would print it twice.
        // `display_chain` prints both.
        Ok(())
    }
}

/// An [`Error`] followed by the errors of its `source()` chain, each after
/// `": "`, leaving out a source whose text the line already holds (messages
/// often quote their cause); see [`Error::display_chain`].
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(&'a Error);

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut next = std::error::Error::source(self.0);
        while let Some(e) = next {
            let text = e.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = e.source();
        }
        f.write_str(&line)
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
            .field("unapplied", &self.unapplied)
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
    fn display_lists_operation_and_context_and_the_chain_adds_the_source() {
        let io = std::io::Error::other("boom");
        let e = Error::internal("read failed")
            .with_operation("storage.download")
            .with_operation("ignored")
            .with_context("bucket", "b")
            .with_source(io);
        assert_eq!(
            e.to_string(),
            "internal: read failed (operation: storage.download, bucket: b)"
        );
        assert_eq!(
            e.display_chain().to_string(),
            "internal: read failed (operation: storage.download, bucket: b): boom"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    /// What anyhow / eyre / tracing do: print the error, then walk
    /// `source()`. Each source must appear exactly once.
    #[test]
    fn a_chain_reporter_prints_the_source_once() {
        let inner = Error::unavailable("pool timed out").with_source(std::io::Error::other("boom"));
        let outer = Error::internal("read failed").with_source(inner);
        let mut lines = vec![outer.to_string()];
        let mut next = std::error::Error::source(&outer);
        while let Some(e) = next {
            lines.push(e.to_string());
            next = e.source();
        }
        let all = lines.join("\n");
        assert_eq!(all.matches("boom").count(), 1, "{all}");
        assert_eq!(all.matches("pool timed out").count(), 1, "{all}");
        assert_eq!(
            outer.display_chain().to_string(),
            "internal: read failed: unavailable: pool timed out: boom"
        );
        // A message that already quotes its cause is not followed by it again.
        let io = std::io::Error::other("address in use");
        let e = Error::unavailable(format!("cannot listen: {io}")).with_source(io);
        assert_eq!(
            e.display_chain().to_string(),
            "unavailable: cannot listen: address in use"
        );
    }

    #[test]
    fn echo_bounds_values_and_context() {
        assert_eq!(echo("").to_string(), "");
        let exact = "é".repeat(ECHO_MAX_CHARS);
        assert_eq!(echo(&exact).to_string(), exact);
        let long = "é".repeat(10_000);
        let shown = echo(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(ECHO_MAX_CHARS)));
        assert!(shown.ends_with("... (20000 bytes)"), "{shown}");
        let e = Error::invalid_input("bad").with_context("table", "t".repeat(10_000));
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[test]
    fn long_messages_are_cut() {
        let e = Error::invalid_input(format!("no parameter {}", "p".repeat(10_000)));
        assert!(
            e.message().len() < MAX_MESSAGE_BYTES + 64,
            "{}",
            e.message().len()
        );
        assert!(e.message().ends_with("(message cut, 10013 bytes in all)"));
        let short = Error::invalid_input("short");
        assert_eq!(short.message(), "short");
    }
}
