//! Timeout per operation kind.

use std::time::Duration;

use serde::Deserialize;
use truststream_core::{BoxFuture, Error, ErrorKind, Result};
use truststream_layer::{Access, Around, Next, Op};

use crate::config::{at_least, at_most};
use crate::layer_error;

/// Settings of the `timeout` layer: the longest one attempt may take, per
/// [`Access`] kind, in milliseconds (each at least 1).
///
/// ```toml
/// timeout = { read_ms = 2000, write_ms = 5000 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Reads (`get`, `read`, `download`, `validate_token`). Default 5000.
    pub read_ms: u64,
    /// Writes (`create`, `upload`, raw SQL, transactions). Default 10000.
    pub write_ms: u64,
    /// Schema changes (tables, indexes, buckets). Default 30000.
    pub schema_ms: u64,
    /// Setting up a stream or subscription (the setup only, not the
    /// stream's life). Default 10000.
    pub stream_ms: u64,
    /// Probing or managing the provider (`connect`, `disconnect`). Default
    /// 5000.
    pub admin_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            read_ms: 5_000,
            write_ms: 10_000,
            schema_ms: 30_000,
            stream_ms: 10_000,
            admin_ms: 5_000,
        }
    }
}

/// One day: longer is almost certainly a unit mistake.
const MAX_MS: u64 = 86_400_000;

impl TimeoutConfig {
    /// Checks every value: `InvalidInput` naming the key of the first one
    /// out of range (0, or more than a day).
    pub fn validate(&self) -> Result<()> {
        for (key, ms) in [
            ("read_ms", self.read_ms),
            ("write_ms", self.write_ms),
            ("schema_ms", self.schema_ms),
            ("stream_ms", self.stream_ms),
            ("admin_ms", self.admin_ms),
        ] {
            at_least(key, ms, 1)?;
            at_most(key, ms, MAX_MS)?;
        }
        Ok(())
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "read_ms={}, write_ms={}, schema_ms={}, stream_ms={}, admin_ms={}",
            self.read_ms, self.write_ms, self.schema_ms, self.stream_ms, self.admin_ms
        )
    }
}

/// The `timeout` layer: bounds each call by the limit of its [`Access`]
/// kind. A call that runs out of time is dropped (cancelled) and answers
/// [`ErrorKind::Timeout`] (retryable); it is never marked
/// [`Error::unapplied`], since the provider may have done the work.
///
/// Placed innermost in a configured stack, it bounds each attempt of a
/// retry, not the retries together (the retry's `budget_ms` does that).
///
/// ```
/// use std::sync::Arc;
/// use truststream_core_db::Database;
/// use truststream_layer::around_database;
/// use truststream_layer_resilience::{Timeout, TimeoutConfig};
///
/// fn bounded(db: Arc<dyn Database>) -> Arc<dyn Database> {
///     let config = TimeoutConfig { read_ms: 2000, ..TimeoutConfig::default() };
///     around_database(db, Arc::new(Timeout::new(config)))
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Timeout {
    read: Duration,
    write: Duration,
    schema: Duration,
    stream: Duration,
    admin: Duration,
}

impl Timeout {
    /// A timeout layer with `config`'s limits (a value of 0 counts as 1 ms;
    /// [`TimeoutConfig::validate`] rejects it).
    pub fn new(config: TimeoutConfig) -> Self {
        let ms = |v: u64| Duration::from_millis(v.clamp(1, MAX_MS));
        Timeout {
            read: ms(config.read_ms),
            write: ms(config.write_ms),
            schema: ms(config.schema_ms),
            stream: ms(config.stream_ms),
            admin: ms(config.admin_ms),
        }
    }

    /// The limit for calls of `access`.
    pub fn limit(&self, access: Access) -> Duration {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
            Access::Schema => self.schema,
            Access::Stream => self.stream,
            Access::Admin => self.admin,
        }
    }
}

impl Around for Timeout {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        let limit = self.limit(op.access);
        let call = next.run();
        Box::pin(async move {
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Err(layer_error(
                    Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "{}.{} did not finish within {} ms ({} timeout)",
                            op.interface,
                            op.method,
                            limit.as_millis(),
                            op.access.as_str()
                        ),
                    ),
                    &op,
                )),
            }
        })
    }
}
