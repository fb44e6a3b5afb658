//! Configuration of the Supabase auth provider.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use truststream_core_auth::{AuthResult, Error, Secret};

/// Fewest bytes of a `jwt_secret` (Supabase requires 32 characters).
pub const MIN_SECRET_BYTES: usize = 32;

/// How the provider reaches a Supabase project's Auth server (GoTrue) and
/// how it checks the project's access tokens.
///
/// ```
/// use truststream_auth_supabase::SupabaseAuthConfig;
/// let cfg: SupabaseAuthConfig = serde_json::from_value(serde_json::json!({
///     "url": "http://127.0.0.1:54321",
///     "anon_key": "eyJ...anon",
///     "jwt_secret": "super-secret-jwt-token-with-at-least-32-characters-long",
///     "roles": { "authenticated": ["read:*"] },
/// })).unwrap();
/// assert_eq!(cfg.audience, "authenticated");
/// // Secrets never show.
/// let shown = format!("{cfg:?} {}", serde_json::to_string(&cfg).unwrap());
/// assert!(!shown.contains("eyJ...anon") && !shown.contains("super-secret"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupabaseAuthConfig {
    /// The project URL (`https://<ref>.supabase.co`, or
    /// `http://127.0.0.1:54321` for a local stack). Requests go to
    /// `<url>/auth/v1/...`.
    pub url: String,
    /// The project's anon (publishable) key, sent as `apikey` on every
    /// request.
    pub anon_key: Secret,
    /// The project's JWT secret (HS256). With it, HS256 access tokens are
    /// verified locally; without it, HS256 tokens are refused.
    #[serde(default)]
    pub jwt_secret: Option<Secret>,
    /// Whether asymmetric access tokens (RS256, ES256) are verified against
    /// `<url>/auth/v1/.well-known/jwks.json` (default `true`).
    #[serde(default = "default_true")]
    pub jwks: bool,
    /// How long a fetched key set is used before it is fetched again
    /// (default 600 s, what auth-js uses).
    #[serde(default = "default_jwks_cache_secs")]
    pub jwks_cache_secs: u64,
    /// A token naming an unknown `kid` makes the key set be fetched again,
    /// at most once per this many seconds (default 30): a flood of made-up
    /// `kid`s cannot hammer the project.
    #[serde(default = "default_jwks_min_refresh_secs")]
    pub jwks_min_refresh_secs: u64,
    /// The `iss` required in access tokens (default `<url>/auth/v1`, what
    /// GoTrue puts there).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `aud` required in access tokens (default `"authenticated"`).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf` (default 5 s, at most 300).
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Timeout of connecting to the project, in milliseconds (default 5000).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout of one whole request, in milliseconds (default 10000).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Whether `validate_token`, after verifying a token locally, also
    /// asks the project whether its session and user still exist
    /// (`GET /auth/v1/user` with the token, what auth-js's `getUser` does):
    /// a signed-out session's tokens then stop validating at once, at the
    /// cost of one request per validation. Default `false` (local only).
    #[serde(default)]
    pub check_session: bool,
    /// Access tokens remembered per session (default 10000), so that
    /// `sign_out`, `get_user` and `update_user`, which GoTrue serves only
    /// with the user's own token, can be called with a [`Principal`]. A
    /// token is kept until it expires.
    ///
    /// [`Principal`]: truststream_core_auth::Principal
    #[serde(default = "default_token_cache_capacity")]
    pub token_cache_capacity: u64,
    /// Role -> permissions (`action:resource`, `*` wildcards). A principal's
    /// roles are its token's `app_metadata.roles`, or else its `role`
    /// (`authenticated`).
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
}

fn default_true() -> bool {
    true
}
fn default_jwks_cache_secs() -> u64 {
    600
}
fn default_jwks_min_refresh_secs() -> u64 {
    30
}
fn default_audience() -> String {
    "authenticated".into()
}
fn default_leeway_secs() -> u64 {
    5
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_token_cache_capacity() -> u64 {
    10_000
}

impl SupabaseAuthConfig {
    /// The defaults for the project at `url` with its anon key.
    pub fn new(url: impl Into<String>, anon_key: impl Into<Secret>) -> Self {
        SupabaseAuthConfig {
            url: url.into(),
            anon_key: anon_key.into(),
            jwt_secret: None,
            jwks: true,
            jwks_cache_secs: default_jwks_cache_secs(),
            jwks_min_refresh_secs: default_jwks_min_refresh_secs(),
            issuer: None,
            audience: default_audience(),
            leeway_secs: default_leeway_secs(),
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            check_session: false,
            token_cache_capacity: default_token_cache_capacity(),
            roles: BTreeMap::new(),
        }
    }

    /// The project URL without a trailing `/`.
    pub(crate) fn base_url(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// The `iss` access tokens must carry.
    pub fn effective_issuer(&self) -> String {
        match &self.issuer {
            Some(i) => i.clone(),
            None => format!("{}/auth/v1", self.base_url()),
        }
    }

    pub(crate) fn validate(&self) -> AuthResult<()> {
        let url = reqwest::Url::parse(self.base_url()).map_err(|_| {
            Error::invalid_input(
                "supabase auth: `url` is not a URL (e.g. https://<ref>.supabase.co)",
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid_input(
                "supabase auth: `url` must be an http or https URL",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid_input(
                "supabase auth: `url` must not carry credentials",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::invalid_input(
                "supabase auth: `url` must not have a query or fragment",
            ));
        }
        if self.anon_key.is_empty() {
            return Err(Error::invalid_input(
                "missing field `anon_key` (the project's anon key)",
            ));
        }
        if self
            .anon_key
            .expose()
            .chars()
            .any(|c| c.is_control() || c == ' ')
        {
            return Err(Error::invalid_input(
                "supabase auth: `anon_key` contains spaces or control characters",
            ));
        }
        match &self.jwt_secret {
            Some(s) if s.expose().len() < MIN_SECRET_BYTES => {
                return Err(Error::invalid_input(format!(
                    "supabase auth: `jwt_secret` must be at least {MIN_SECRET_BYTES} bytes"
                )))
            }
            None if !self.jwks => {
                return Err(Error::invalid_input(
                    "supabase auth: with `jwks = false` a `jwt_secret` is required, or no token could be verified",
                ))
            }
            _ => {}
        }
        if self.audience.is_empty() || self.issuer.as_deref().is_some_and(str::is_empty) {
            return Err(Error::invalid_input(
                "supabase auth: `issuer` and `audience` must not be empty",
            ));
        }
        if self.leeway_secs > 300 {
            return Err(Error::invalid_input(
                "supabase auth: `leeway_secs` must be at most 300",
            ));
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err(Error::invalid_input(
                "supabase auth: `connect_timeout_ms` and `request_timeout_ms` must be positive",
            ));
        }
        if self.jwks_cache_secs == 0 {
            return Err(Error::invalid_input(
                "supabase auth: `jwks_cache_secs` must be positive",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for SupabaseAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupabaseAuthConfig")
            .field("url", &self.url)
            .field("anon_key", &self.anon_key)
            .field("jwt_secret", &self.jwt_secret)
            .field("jwks", &self.jwks)
            .field("jwks_cache_secs", &self.jwks_cache_secs)
            .field("jwks_min_refresh_secs", &self.jwks_min_refresh_secs)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("check_session", &self.check_session)
            .field("token_cache_capacity", &self.token_cache_capacity)
            .field("roles", &self.roles)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> SupabaseAuthConfig {
        SupabaseAuthConfig::new("http://127.0.0.1:54321/", "anon")
    }

    #[test]
    fn issuer_defaults_to_the_auth_url() {
        assert_eq!(ok().effective_issuer(), "http://127.0.0.1:54321/auth/v1");
        assert!(ok().validate().is_ok());
    }

    #[test]
    fn bad_configs_are_invalid_input() {
        let cases: Vec<(&str, SupabaseAuthConfig)> = vec![
            ("not a url", SupabaseAuthConfig::new("not a url", "anon")),
            ("ftp", SupabaseAuthConfig::new("ftp://x.example", "anon")),
            (
                "credentials",
                SupabaseAuthConfig::new("https://u:p@x.example", "anon"),
            ),
            (
                "query",
                SupabaseAuthConfig::new("https://x.example?a=b", "anon"),
            ),
            (
                "empty anon",
                SupabaseAuthConfig::new("https://x.example", ""),
            ),
            (
                "anon newline",
                SupabaseAuthConfig::new("https://x.example", "a\nb"),
            ),
            (
                "short secret",
                SupabaseAuthConfig {
                    jwt_secret: Some("short".into()),
                    ..ok()
                },
            ),
            (
                "nothing verifies",
                SupabaseAuthConfig {
                    jwks: false,
                    ..ok()
                },
            ),
            (
                "leeway",
                SupabaseAuthConfig {
                    leeway_secs: 301,
                    ..ok()
                },
            ),
            (
                "timeout",
                SupabaseAuthConfig {
                    request_timeout_ms: 0,
                    ..ok()
                },
            ),
        ];
        for (what, cfg) in cases {
            let e = cfg.validate().unwrap_err();
            assert_eq!(
                e.kind(),
                truststream_core_auth::ErrorKind::InvalidInput,
                "{what}"
            );
            assert!(!e.to_string().contains("u:p"), "{what}: {e}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<SupabaseAuthConfig, _> = serde_json::from_value(serde_json::json!({
            "url": "http://x", "anon_key": "a", "service_key": "b"
        }));
        assert!(r.is_err());
    }
}
