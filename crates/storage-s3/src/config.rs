//! Configuration of the S3 provider and how it becomes an SDK client.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use truststream_core::Secret;
use truststream_core_storage::{Error, StorageResult};

/// Smallest part S3 accepts (except the last one).
pub(crate) const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest number of parts of one multipart upload.
pub(crate) const MAX_PARTS: u64 = 10_000;

/// When create-only and if-ETag-matches writes are sent to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionalWrites {
    /// Probe the server once at connect (in `probe_bucket`, else in the first
    /// bucket listed; failing that, before the first conditional write):
    /// servers that accept `If-None-Match` and `If-Match` on PUT but ignore
    /// them are detected, and conditional writes are then refused as
    /// `Unsupported` instead of silently overwriting. Until a probe has run,
    /// the capability reads `false`.
    #[default]
    Auto,
    /// The server supports them (Amazon S3 since 2024, Garage 2.x): send them.
    On,
    /// Never send them: conditional writes are `Unsupported`.
    Off,
}

/// Configuration of the S3 provider (the `storage` section of the TrustStream
/// configuration when `type = "s3"`). Every field is optional; what is not set
/// comes from the standard AWS environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, profiles, instance roles).
///
/// `Debug` and `Serialize` never show the keys.
///
/// ```
/// let cfg: truststream_storage_s3::S3StorageConfig = serde_json::from_value(serde_json::json!({
///     "endpoint": "http://127.0.0.1:3900",
///     "region": "garage",
///     "access_key_id": "GK0123",
///     "secret_access_key": "s3cr3t",
///     "multipart_threshold": 16777216
/// })).unwrap();
/// assert!(!format!("{cfg:?}").contains("s3cr3t"));
/// assert_eq!(cfg.multipart_threshold, 16 * 1024 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3StorageConfig {
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:3900`);
    /// `None`: Amazon S3 (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region; `None`: from the AWS environment, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual hosts
    /// (`bucket.endpoint/key`). `None`: on when an endpoint is set (here or
    /// as `AWS_ENDPOINT_URL`).
    pub force_path_style: Option<bool>,
    /// Access key id; with `secret_access_key`, static credentials. `None`:
    /// the standard AWS credential chain.
    pub access_key_id: Option<Secret>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
    /// Session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// Uploads larger than this many bytes use multipart upload (default
    /// 8 MiB).
    pub multipart_threshold: u64,
    /// Size of each part of a multipart upload (default 8 MiB, at least 5 MiB;
    /// raised automatically so an object fits in 10,000 parts).
    pub part_size: u64,
    /// Parts of one multipart upload sent at the same time (default 4).
    pub multipart_concurrency: usize,
    /// Attempts per request, including the first (default 3); the SDK retries
    /// throttling, 5xx and connection errors with exponential backoff.
    pub max_attempts: u32,
    /// Connection timeout in milliseconds (default 3100).
    pub connect_timeout_ms: u64,
    /// Timeout of one request attempt in milliseconds; `None` (default): none,
    /// so large transfers are not cut off.
    pub attempt_timeout_ms: Option<u64>,
    /// Times a streaming download resumes after the connection broke
    /// mid-body (default 3).
    pub resume_attempts: u32,
    /// Conditional writes (default: probe the server).
    pub conditional_writes: ConditionalWrites,
    /// Whether `create_bucket`/`delete_bucket` are offered (default true).
    pub manage_buckets: bool,
    /// With `conditional_writes = "auto"`: the bucket in which `connect`
    /// probes the server (a probe that fails otherwise than with an
    /// unreachable server fails the connect). Without it `connect` probes in
    /// the first bucket the credentials list.
    pub probe_bucket: Option<String>,
}

impl Default for S3StorageConfig {
    fn default() -> Self {
        S3StorageConfig {
            endpoint: None,
            region: None,
            force_path_style: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            multipart_threshold: 8 * 1024 * 1024,
            part_size: 8 * 1024 * 1024,
            multipart_concurrency: 4,
            max_attempts: 3,
            connect_timeout_ms: 3100,
            attempt_timeout_ms: None,
            resume_attempts: 3,
            conditional_writes: ConditionalWrites::Auto,
            manage_buckets: true,
            probe_bucket: None,
        }
    }
}

impl S3StorageConfig {
    /// A configuration for an S3-compatible server at `endpoint` with static
    /// credentials (path-style addressing).
    pub fn for_endpoint(
        endpoint: impl Into<String>,
        region: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        S3StorageConfig {
            endpoint: Some(endpoint.into()),
            region: Some(region.into()),
            access_key_id: Some(Secret::new(access_key_id)),
            secret_access_key: Some(Secret::new(secret_access_key)),
            ..S3StorageConfig::default()
        }
    }

    /// Checks the values; errors name the option.
    pub fn validate(&self) -> StorageResult<()> {
        let bad = |opt: &'static str, msg: String| {
            Err(Error::invalid_input(format!("{opt}: {msg}")).with_context("provider", "s3"))
        };
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return bad(
                    "endpoint",
                    "use an http:// or https:// URL, like \"http://127.0.0.1:3900\"".into(),
                );
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return bad(
                "access_key_id",
                "set access_key_id and secret_access_key together (or neither, to use the \
                 AWS environment)"
                    .into(),
            );
        }
        if self.part_size < MIN_PART_SIZE {
            return bad(
                "part_size",
                format!("must be at least {MIN_PART_SIZE} bytes (5 MiB, the S3 minimum)"),
            );
        }
        if self.multipart_threshold == 0 {
            return bad("multipart_threshold", "must be more than 0".into());
        }
        if self.multipart_concurrency == 0 || self.multipart_concurrency > 64 {
            return bad("multipart_concurrency", "must be 1 to 64".into());
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1 (1 = no retries)".into());
        }
        Ok(())
    }

    /// The SDK client this configuration describes.
    pub(crate) async fn client(&self) -> StorageResult<aws_sdk_s3::Client> {
        self.validate()?;
        // rustls with ring: no aws-lc, no OpenSSL.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            loader = loader.endpoint_url(endpoint.trim_end_matches('/'));
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.expose(),
                secret.expose(),
                self.session_token.as_ref().map(|t| t.expose().to_string()),
                None,
                "truststream-config",
            ));
        }
        let mut timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms));
        if let Some(ms) = self.attempt_timeout_ms {
            timeouts = timeouts.operation_attempt_timeout(Duration::from_millis(ms));
        }
        let shared = loader
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts))
            .timeout_config(timeouts.build())
            .load()
            .await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(
                self.force_path_style
                    .unwrap_or(shared.endpoint_url().is_some()),
            )
            // The provider signs each upload with its own SHA-256 (the
            // server checks the bytes against it) and verifies downloads
            // itself; the SDK's extra CRC32 pass would only add work (and
            // aws-chunked bodies some servers refuse).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        Ok(aws_sdk_s3::Client::from_conf(builder.build()))
    }

    /// The part size to use for an object of `size` bytes (`None`: unknown),
    /// so that it fits in [`MAX_PARTS`] parts.
    pub(crate) fn part_size_for(&self, size: Option<u64>) -> u64 {
        let base = self.part_size.max(MIN_PART_SIZE);
        match size {
            Some(s) if s.div_ceil(base) > MAX_PARTS => s.div_ceil(MAX_PARTS).max(base),
            _ => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = S3StorageConfig::default();
        c.validate().unwrap();
        assert_eq!(c.multipart_threshold, 8 * 1024 * 1024);
        let bad = S3StorageConfig {
            part_size: 1024,
            ..S3StorageConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("part_size"));
        let half = S3StorageConfig {
            access_key_id: Some(Secret::new("id")),
            ..S3StorageConfig::default()
        };
        assert!(half.validate().is_err());
        let url = S3StorageConfig {
            endpoint: Some("localhost:3900".into()),
            ..S3StorageConfig::default()
        };
        assert!(url.validate().is_err());
    }

    #[test]
    fn secrets_are_redacted_and_unknown_fields_rejected() {
        let c = S3StorageConfig::for_endpoint("http://x", "r", "AKIDSECRETID", "topsecret");
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("topsecret") && !shown.contains("AKIDSECRETID"));
        let e = serde_json::from_value::<S3StorageConfig>(serde_json::json!({"bukket": 1}));
        assert!(e.is_err());
    }

    #[test]
    fn part_size_grows_for_huge_objects() {
        let c = S3StorageConfig::default();
        assert_eq!(c.part_size_for(Some(100)), 8 * 1024 * 1024);
        let huge = 200 * 1024 * 1024 * 1024u64;
        let p = c.part_size_for(Some(huge));
        assert!(huge.div_ceil(p) <= MAX_PARTS);
    }
}
