//! Configuration of the Supabase Storage provider.

use std::time::Duration;

use truststream_core::Secret;
use truststream_core_storage::{Error, StorageResult};

/// Configuration of the Supabase Storage provider (the `storage` section of
/// the TrustStream configuration when `type = "supabase"`).
///
/// Set `url` and exactly one of `service_role_key` (full access, bypasses
/// bucket policies) or `anon_key` (access as the policies allow; add
/// `access_token` to act as a signed-in user). `Debug` and `Serialize`
/// never show the keys or the token.
///
/// ```
/// let cfg: truststream_storage_supabase::SupabaseStorageConfig =
///     serde_json::from_value(serde_json::json!({
///         "url": "https://abc.supabase.co",
///         "service_role_key": "eyJ...secret",
///         "request_timeout_ms": 10000
///     }))
///     .unwrap();
/// assert!(!format!("{cfg:?}").contains("secret"));
/// cfg.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupabaseStorageConfig {
    /// The project URL (`https://<ref>.supabase.co`, or a self-hosted
    /// gateway such as `http://127.0.0.1:54321`); `/storage/v1` is appended
    /// unless the URL already ends with it.
    pub url: String,
    /// The service-role key: sent as `apikey` and as the bearer token.
    pub service_role_key: Option<Secret>,
    /// The anon key: sent as `apikey` (and as the bearer token when no
    /// `access_token` is set).
    pub anon_key: Option<Secret>,
    /// A signed-in user's access token (JWT) sent as the bearer token with
    /// the anon key, so the bucket policies see that user. Per-request users:
    /// see `SupabaseStorage::with_access_token`.
    pub access_token: Option<Secret>,
    /// Connection timeout in milliseconds (default 5000).
    pub connect_timeout_ms: u64,
    /// Whole-request timeout of calls without a body to transfer (metadata,
    /// listing, buckets, signing, copy, delete) in milliseconds (default
    /// 30000).
    pub request_timeout_ms: u64,
    /// Uploads and downloads: longest silence while sending or receiving
    /// (milliseconds, default 30000). Transfers have no total limit, so large
    /// objects are not cut off.
    pub transfer_idle_timeout_ms: u64,
    /// Largest upload accepted by this client, in bytes (`None`: whatever
    /// the server accepts; Supabase's default is 50 MiB). Larger uploads are
    /// `TooLarge` before anything is sent.
    pub max_upload_bytes: Option<u64>,
    /// `cache-control` sent with every upload (`None`: the server's default,
    /// `no-cache`; storage-js sends `max-age=3600`).
    pub cache_control: Option<String>,
    /// Whether `create_bucket` / `delete_bucket` are offered (default true;
    /// Supabase lets only the service role manage buckets).
    pub manage_buckets: bool,
    /// Whether buckets made by `create_bucket` are public (default false).
    pub public_buckets: bool,
}

impl Default for SupabaseStorageConfig {
    fn default() -> Self {
        SupabaseStorageConfig {
            url: String::new(),
            service_role_key: None,
            anon_key: None,
            access_token: None,
            connect_timeout_ms: 5000,
            request_timeout_ms: 30_000,
            transfer_idle_timeout_ms: 30_000,
            max_upload_bytes: None,
            cache_control: None,
            manage_buckets: true,
            public_buckets: false,
        }
    }
}

impl SupabaseStorageConfig {
    /// A configuration for `url` with the service-role key.
    pub fn service_role(url: impl Into<String>, key: impl Into<String>) -> Self {
        SupabaseStorageConfig {
            url: url.into(),
            service_role_key: Some(Secret::new(key)),
            ..SupabaseStorageConfig::default()
        }
    }

    /// A configuration for `url` with the anon key.
    pub fn anon(url: impl Into<String>, key: impl Into<String>) -> Self {
        SupabaseStorageConfig {
            url: url.into(),
            anon_key: Some(Secret::new(key)),
            ..SupabaseStorageConfig::default()
        }
    }

    /// Checks the values; errors name the option (never a secret).
    pub fn validate(&self) -> StorageResult<()> {
        let bad = |opt: &'static str, msg: &str| {
            Err(Error::invalid_input(format!("{opt}: {msg}")).with_context("provider", "supabase"))
        };
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.contains(['?', '#'])
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return bad(
                "url",
                "use the project's http:// or https:// URL without a query, like \
                 \"https://abc.supabase.co\"",
            );
        }
        if reqwest::Url::parse(url).is_err() {
            return bad("url", "not a valid URL");
        }
        let key_ok = |k: &Option<Secret>| k.as_ref().is_some_and(|k| !k.is_empty());
        match (key_ok(&self.service_role_key), key_ok(&self.anon_key)) {
            (true, true) => {
                return bad(
                    "service_role_key",
                    "set service_role_key or anon_key, not both",
                )
            }
            (false, false) => {
                return bad(
                    "service_role_key",
                    "set service_role_key (full access) or anon_key (bucket policies apply)",
                )
            }
            _ => {}
        }
        for (opt, s) in [
            ("service_role_key", &self.service_role_key),
            ("anon_key", &self.anon_key),
            ("access_token", &self.access_token),
        ] {
            if let Some(s) = s {
                if reqwest::header::HeaderValue::from_str(s.expose()).is_err()
                    || s.expose().chars().any(char::is_whitespace)
                {
                    return bad(opt, "contains characters a header cannot carry");
                }
            }
        }
        if self.access_token.is_some() && self.service_role_key.is_some() {
            return bad(
                "access_token",
                "a user access token goes with the anon key, not the service-role key",
            );
        }
        for (opt, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("transfer_idle_timeout_ms", self.transfer_idle_timeout_ms),
        ] {
            if v == 0 {
                return bad(opt, "must be more than 0");
            }
        }
        if self.max_upload_bytes == Some(0) {
            return bad("max_upload_bytes", "must be more than 0 (or unset)");
        }
        if let Some(c) = &self.cache_control {
            if c.is_empty() || c.len() > 255 || c.chars().any(char::is_control) {
                return bad("cache_control", "use a header value like \"max-age=3600\"");
            }
        }
        Ok(())
    }

    /// The Storage API base URL (`.../storage/v1`, no trailing slash).
    pub(crate) fn base_url(&self) -> String {
        let url = self.url.trim().trim_end_matches('/');
        if url.ends_with("/storage/v1") {
            url.to_string()
        } else {
            format!("{url}/storage/v1")
        }
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.transfer_idle_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_option() {
        let ok = SupabaseStorageConfig::service_role("http://127.0.0.1:54321", "k");
        ok.validate().unwrap();
        assert_eq!(ok.base_url(), "http://127.0.0.1:54321/storage/v1");
        let already = SupabaseStorageConfig::anon("https://x.supabase.co/storage/v1/", "k");
        assert_eq!(already.base_url(), "https://x.supabase.co/storage/v1");
        let cases = [
            (
                SupabaseStorageConfig::service_role("127.0.0.1:54321", "k"),
                "url",
            ),
            (
                SupabaseStorageConfig::service_role("http://x?a=b", "k"),
                "url",
            ),
            (
                SupabaseStorageConfig {
                    anon_key: Some(Secret::new("a")),
                    ..SupabaseStorageConfig::service_role("http://x", "k")
                },
                "service_role_key",
            ),
            (
                SupabaseStorageConfig {
                    url: "http://x".into(),
                    ..Default::default()
                },
                "service_role_key",
            ),
            (
                SupabaseStorageConfig::anon("http://x", "bad\nkey"),
                "anon_key",
            ),
            (
                SupabaseStorageConfig {
                    request_timeout_ms: 0,
                    ..SupabaseStorageConfig::anon("http://x", "k")
                },
                "request_timeout_ms",
            ),
        ];
        for (c, opt) in cases {
            let e = c.validate().unwrap_err();
            assert!(e.message().starts_with(opt), "{opt}: {e}");
            assert!(!e.to_string().contains("bad\nkey"));
        }
    }

    #[test]
    fn secrets_are_redacted_and_unknown_fields_rejected() {
        let mut c = SupabaseStorageConfig::anon("http://x", "anon-topsecret");
        c.access_token = Some(Secret::new("user-topsecret"));
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("topsecret"), "{shown}");
        let e = serde_json::from_value::<SupabaseStorageConfig>(serde_json::json!({"urll": "x"}));
        assert!(e.is_err());
    }
}
