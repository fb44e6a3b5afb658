//! Configuration of the JWT auth provider.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use truststream_core_auth::{AuthResult, Error, Secret};

/// Signing algorithms this provider issues and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// HMAC with SHA-256 and a shared secret (the default).
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Whether the algorithm uses a shared secret (HMAC).
    pub fn is_symmetric(self) -> bool {
        matches!(self, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Algorithm::HS256 => A::HS256,
            Algorithm::HS384 => A::HS384,
            Algorithm::HS512 => A::HS512,
            Algorithm::RS256 => A::RS256,
            Algorithm::PS256 => A::PS256,
            Algorithm::ES256 => A::ES256,
            Algorithm::ES384 => A::ES384,
            Algorithm::EdDSA => A::EdDSA,
        }
    }
}

/// When `validate_token` consults the session store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    /// Every access token of this provider is checked against its session:
    /// a session signed out or revoked through this provider instance
    /// stops validating at once; one revoked by another process within
    /// [`JwtAuthConfig::revocation_staleness_ms`] (a session read as live
    /// is trusted that long, so most validations read nothing). The
    /// default.
    Checked,
    /// Signature and claims only: a revoked session's access tokens stay
    /// valid until they expire (no database read).
    Stateless,
}

/// Password rules, checked before any hashing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordPolicy {
    /// Fewest characters (default 8).
    pub min_chars: usize,
    /// Most bytes of UTF-8 (default 256): bounds the work one request can
    /// cause. Longer passwords are rejected before hashing.
    pub max_bytes: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_chars: 8,
            max_bytes: 256,
        }
    }
}

/// Argon2id cost. The defaults are OWASP's recommendation (19 MiB, 2
/// passes, 1 lane); tests use the minimum (`Argon2Cost::minimal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Cost {
    /// Memory in KiB (default 19456).
    pub memory_kib: u32,
    /// Passes (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for Argon2Cost {
    fn default() -> Self {
        Argon2Cost {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl Argon2Cost {
    /// The cheapest cost argon2 accepts: for tests only.
    pub fn minimal() -> Self {
        Argon2Cost {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }
}

/// Limit on failed sign-ins per account (by email, known or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignInRateLimit {
    /// Failed attempts allowed per window; further attempts are
    /// `RateLimited` without checking the password. 0 disables the limit.
    /// Default 5.
    pub max_failures: u32,
    /// Window length in seconds, from the first failure (default 300).
    pub window_secs: u64,
    /// Accounts tracked at once by the `process` store (default 100000);
    /// the least recently used are forgotten first.
    pub max_tracked: u64,
    /// Where failures are counted: `process` (the default: this provider
    /// instance's memory) or `database` (a table in the configured
    /// database, so every process sharing it shares the limit).
    pub store: FailureStore,
}

impl Default for SignInRateLimit {
    fn default() -> Self {
        SignInRateLimit {
            max_failures: 5,
            window_secs: 300,
            max_tracked: 100_000,
            store: FailureStore::Process,
        }
    }
}

/// Where failed sign-ins are counted ([`SignInRateLimit::store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureStore {
    /// In this provider instance's memory: each process has its own limit.
    #[default]
    Process,
    /// In the table `<table_prefix>sign_in_failures` of the configured
    /// database (one row per account being limited, keyed by a hash of the
    /// email, incremented by compare-and-set): the limit holds across every
    /// process that uses the database.
    Database,
}

/// Bound on password hashing (argon2id, `argon2.memory_kib` of memory
/// each): sign-ups and sign-ins share one gate, so a burst of sign-ins
/// cannot exhaust memory or CPU. A request that finds no free slot waits in
/// a bounded queue for at most `queue_timeout_ms`; beyond either bound it is
/// answered `RateLimited` at once, before any lookup shows in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordHashing {
    /// Hashes computed at once; 0 (the default) means the number of CPU
    /// cores. Peak hashing memory is this times `argon2.memory_kib`.
    pub max_concurrent: usize,
    /// Requests waiting for a slot (default 256); more are `RateLimited`.
    pub max_queued: usize,
    /// Longest wait for a slot, in milliseconds (default 2000); then
    /// `RateLimited`.
    pub queue_timeout_ms: u64,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        PasswordHashing {
            max_concurrent: 0,
            max_queued: 256,
            queue_timeout_ms: 2_000,
        }
    }
}

impl PasswordHashing {
    /// Hashes computed at once: `max_concurrent`, or the number of cores.
    pub fn effective_max_concurrent(&self) -> usize {
        if self.max_concurrent > 0 {
            return self.max_concurrent;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

/// An external identity provider whose access tokens are accepted
/// (Supabase, Auth0, Cognito, ...).
///
/// Either generic — `issuer`, `audience` and exactly one of `jwt_secret`
/// and `jwks_url` — or a named [`Preset`] that knows its vendor's claim
/// shapes and derives the issuer, the key URL and the claim mapping from a
/// few fields: `tenant` + `audience` (Auth0), `region` + `user_pool_id` +
/// `client_ids` + `token_use` (Cognito), `project_url` + optional
/// `jwt_secret` (Supabase). See the crate README.
///
/// ```
/// use truststream_auth_jwt::{ExternalIssuer, Preset};
/// let i: ExternalIssuer = serde_json::from_value(serde_json::json!({
///     "preset": "auth0",
///     "tenant": "example.us.auth0.com",
///     "audience": "https://api.example.com",
/// })).unwrap();
/// assert_eq!(i.preset, Some(Preset::Auth0));
/// assert_eq!(i.effective_issuer().unwrap(), "https://example.us.auth0.com/");
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuer {
    /// A vendor whose token shapes are known (`auth0`, `cognito`,
    /// `supabase`); none for a generic issuer.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// The `iss` its tokens carry (exact match). Derived, and not to be
    /// set, with a preset.
    #[serde(default)]
    pub issuer: String,
    /// The `aud` required in its tokens: required for generic issuers and
    /// Auth0 (the API identifier); `authenticated` by default for Supabase;
    /// not used by Cognito (see `client_ids`).
    #[serde(default)]
    pub audience: String,
    /// Auth0: the tenant's domain (`example.us.auth0.com`, or a custom
    /// domain), without scheme: tokens carry `iss = "https://<tenant>/"`.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Cognito: the user pool's AWS region (`eu-west-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// Cognito: the user pool id (`eu-west-1_AbCdEf123`).
    #[serde(default)]
    pub user_pool_id: Option<String>,
    /// Cognito: the app client ids whose tokens are accepted (`client_id`
    /// of access tokens, `aud` of id tokens). At least one.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// Cognito: which token is accepted, `access` (the default) or `id`;
    /// the other is refused.
    #[serde(default)]
    pub token_use: Option<TokenUse>,
    /// Supabase: the project URL (`https://<ref>.supabase.co`): tokens carry
    /// `iss = "<project_url>/auth/v1"`; without `jwt_secret` the keys are
    /// read from `<project_url>/auth/v1/.well-known/jwks.json`.
    #[serde(default)]
    pub project_url: Option<String>,
    /// Shared HMAC secret (for example a Supabase project's JWT secret).
    #[serde(default)]
    pub jwt_secret: Option<Secret>,
    /// Where its public keys are published (`.../.well-known/jwks.json`).
    /// With a preset it is derived; setting it overrides the derived URL
    /// (a proxy, a test server).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Accepted algorithms; default `HS256` with a secret, `RS256` and
    /// `ES256` with a JWKS URL (`RS256` only for Auth0 and Cognito).
    /// Symmetric and asymmetric ones cannot mix.
    #[serde(default)]
    pub algorithms: Vec<Algorithm>,
    /// How long a fetched key set is used before it is fetched again
    /// (default 600 s).
    #[serde(default = "default_jwks_cache_secs")]
    pub jwks_cache_secs: u64,
    /// A token with an unknown `kid` makes the key set be fetched again, at
    /// most once per this many seconds (default 30), so a flood of unknown
    /// `kid`s cannot hammer the identity provider.
    #[serde(default = "default_jwks_min_refresh_secs")]
    pub jwks_min_refresh_secs: u64,
    /// Timeout of one key-set fetch in milliseconds (default 5000).
    #[serde(default = "default_jwks_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// How long a key that disappeared from the key set (rotated out) still
    /// verifies tokens, in seconds (default 0: a key the provider stopped
    /// publishing is refused at the next fetch). Tokens are still refused
    /// after their own `exp`.
    #[serde(default)]
    pub jwks_keep_removed_secs: u64,
    /// Which of its claims mean roles and permissions here. Without one,
    /// a preset's defaults apply (see [`Preset::default_mapping`]); a
    /// generic issuer's principal is authenticated and has no roles and no
    /// permissions, whatever its token claims. When set, it replaces the
    /// preset's defaults entirely.
    #[serde(default)]
    pub claim_mapping: Option<ClaimMapping>,
}

/// A named identity provider whose token shapes auth-jwt knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Auth0: RS256 access tokens for an API (`aud`), RBAC `permissions`,
    /// `scope`, namespaced custom claims.
    Auth0,
    /// Amazon Cognito user pools: access or id tokens (`token_use`),
    /// `client_id`, `cognito:groups`, `scope`, `username`.
    Cognito,
    /// Supabase Auth: HS256 project secret or the project's JWKS,
    /// `aud = "authenticated"`, `role`, `app_metadata`, `user_metadata`,
    /// `session_id`, `aal`, `amr`, `is_anonymous`.
    Supabase,
}

impl Preset {
    /// The names accepted for `preset`.
    pub const NAMES: [&'static str; 3] = ["auth0", "cognito", "supabase"];

    /// The preset named `name` (as in configuration).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "auth0" => Some(Preset::Auth0),
            "cognito" => Some(Preset::Cognito),
            "supabase" => Some(Preset::Supabase),
            _ => None,
        }
    }

    /// Its name in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Auth0 => "auth0",
            Preset::Cognito => "cognito",
            Preset::Supabase => "supabase",
        }
    }
}

impl<'de> Deserialize<'de> for Preset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Preset::from_name(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown `preset` {:?}: expected one of {}",
                s.chars().take(40).collect::<String>(),
                Preset::NAMES.join(", ")
            ))
        })
    }
}

/// Which Cognito token an issuer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// Access tokens (`token_use = "access"`, `client_id`, `scope`).
    Access,
    /// Id tokens (`token_use = "id"`, `aud` = the app client id).
    Id,
}

impl TokenUse {
    /// The `token_use` claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Access => "access",
            TokenUse::Id => "id",
        }
    }
}

/// A claim's place in a token: a dotted path (`"app_metadata.roles"`), or a
/// list of keys for claim names that contain dots themselves
/// (`["https://example.com/roles"]`, Auth0's namespaced claims).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ClaimPathRepr", into = "Vec<String>")]
pub struct ClaimPath(Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum ClaimPathRepr {
    Dotted(String),
    Keys(Vec<String>),
}

/// Most keys in a [`ClaimPath`].
const MAX_CLAIM_PATH_KEYS: usize = 8;

impl TryFrom<ClaimPathRepr> for ClaimPath {
    type Error = String;

    fn try_from(r: ClaimPathRepr) -> Result<Self, String> {
        let keys: Vec<String> = match r {
            ClaimPathRepr::Dotted(s) => s.split('.').map(str::to_string).collect(),
            ClaimPathRepr::Keys(k) => k,
        };
        if keys.is_empty()
            || keys.len() > MAX_CLAIM_PATH_KEYS
            || keys.iter().any(|k| k.is_empty() || k.len() > 256)
        {
            return Err(format!(
                "a claim path has 1 to {MAX_CLAIM_PATH_KEYS} non-empty keys of at most 256 bytes"
            ));
        }
        Ok(ClaimPath(keys))
    }
}

impl From<ClaimPath> for Vec<String> {
    fn from(p: ClaimPath) -> Self {
        p.0
    }
}

impl ClaimPath {
    /// A dotted path: `ClaimPath::dotted("app_metadata.roles")`.
    pub fn dotted(path: &str) -> AuthResult<Self> {
        ClaimPath::try_from(ClaimPathRepr::Dotted(path.to_string())).map_err(Error::invalid_input)
    }

    /// A path of keys taken as they are (a key may contain dots).
    pub fn keys<I, S>(keys: I) -> AuthResult<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClaimPath::try_from(ClaimPathRepr::Keys(
            keys.into_iter().map(Into::into).collect(),
        ))
        .map_err(Error::invalid_input)
    }

    /// The strings at this path of `claims`: a string gives one, an array
    /// its string elements; anything else (or nothing) gives none.
    pub(crate) fn strings<'c>(&self, claims: &'c Map<String, Value>) -> Vec<&'c str> {
        let mut keys = self.0.iter();
        let Some(first) = keys.next() else {
            return Vec::new();
        };
        let mut at = claims.get(first);
        for k in keys {
            at = at.and_then(|v| v.get(k));
        }
        match at {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// How an external issuer's claims become roles and permissions here.
/// Nothing is granted unless this says so: an empty mapping (the default)
/// gives no roles and no permissions.
///
/// ```
/// use truststream_auth_jwt::ClaimMapping;
/// let m: ClaimMapping = serde_json::from_value(serde_json::json!({
///     "roles": "app_metadata.roles",
///     "role_map": { "admin": "admin", "staff": "member" },
///     "permissions": ["https://example.com/permissions"],
/// })).unwrap();
/// assert!(m.roles.is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimMapping {
    /// The claim listing the principal's roles (a string or an array of
    /// strings), e.g. `"app_metadata.roles"`.
    pub roles: Option<ClaimPath>,
    /// External role -> local role. When not empty it is an allow-list:
    /// only the roles it names are kept, under their local names. When
    /// empty, the roles of the `roles` claim are local roles by name.
    pub role_map: BTreeMap<String, String>,
    /// The claim listing permissions (`action:resource`, e.g. Auth0's
    /// `permissions`) granted to the principal as they are. Entries with a
    /// wildcard (`*`) or of another shape are ignored: wildcards are granted
    /// through local roles only.
    pub permissions: Option<ClaimPath>,
    /// The claim holding OAuth 2 scopes as one space-separated string
    /// (`scope`, as Auth0 and Cognito issue it), each granted as a
    /// permission under the same rules as `permissions`; scopes that are
    /// not `action:resource` (`openid`, `aws.cognito.signin.user.admin`)
    /// grant nothing.
    pub scopes: Option<ClaimPath>,
}

impl ClaimMapping {
    pub(crate) fn validate(&self, issuer: &str) -> AuthResult<()> {
        if !self.role_map.is_empty() && self.roles.is_none() {
            return Err(Error::invalid_input(format!(
                "external issuer {issuer:?}: claim_mapping.role_map needs claim_mapping.roles"
            )));
        }
        for (from, to) in &self.role_map {
            if from.is_empty() {
                return Err(Error::invalid_input(format!(
                    "external issuer {issuer:?}: claim_mapping.role_map has an empty external role"
                )));
            }
            crate::validate_role(to)?;
        }
        Ok(())
    }
}

fn default_jwks_cache_secs() -> u64 {
    600
}
fn default_jwks_min_refresh_secs() -> u64 {
    30
}
fn default_jwks_timeout_ms() -> u64 {
    5_000
}

impl ExternalIssuer {
    /// An issuer verified with a shared HMAC secret.
    pub fn with_secret(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        secret: impl Into<Secret>,
    ) -> Self {
        ExternalIssuer {
            preset: None,
            issuer: issuer.into(),
            audience: audience.into(),
            tenant: None,
            region: None,
            user_pool_id: None,
            client_ids: Vec::new(),
            token_use: None,
            project_url: None,
            jwt_secret: Some(secret.into()),
            jwks_url: None,
            algorithms: Vec::new(),
            jwks_cache_secs: default_jwks_cache_secs(),
            jwks_min_refresh_secs: default_jwks_min_refresh_secs(),
            jwks_timeout_ms: default_jwks_timeout_ms(),
            jwks_keep_removed_secs: 0,
            claim_mapping: None,
        }
    }

    /// An issuer verified with the keys published at `jwks_url`.
    pub fn with_jwks(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        jwks_url: impl Into<String>,
    ) -> Self {
        ExternalIssuer {
            jwt_secret: None,
            jwks_url: Some(jwks_url.into()),
            ..Self::with_secret(issuer, audience, "")
        }
    }

    /// The `iss` its tokens must carry: `issuer`, or the one its preset
    /// derives. An incomplete preset configuration is `InvalidInput`
    /// naming the missing key.
    pub fn effective_issuer(&self) -> AuthResult<String> {
        Ok(self.resolve()?.issuer)
    }

    /// The settings in effect, the preset's derivations applied, checked.
    pub(crate) fn resolve(&self) -> AuthResult<crate::preset::Resolved> {
        crate::preset::resolve(self)
    }
}

impl std::fmt::Debug for ExternalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalIssuer")
            .field("preset", &self.preset)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("tenant", &self.tenant)
            .field("region", &self.region)
            .field("user_pool_id", &self.user_pool_id)
            .field("client_ids", &self.client_ids)
            .field("token_use", &self.token_use)
            .field("project_url", &self.project_url)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwks_url", &self.jwks_url)
            .field("algorithms", &self.algorithms)
            .field("jwks_keep_removed_secs", &self.jwks_keep_removed_secs)
            .field("claim_mapping", &self.claim_mapping)
            .finish_non_exhaustive()
    }
}

/// Shortest accepted HMAC secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Default of [`JwtAuthConfig::revocation_staleness_ms`].
pub const DEFAULT_REVOCATION_STALENESS_MS: u64 = 1_000;

/// Largest accepted [`JwtAuthConfig::revocation_staleness_ms`].
pub const MAX_REVOCATION_STALENESS_MS: u64 = 60_000;

/// Configuration of the JWT auth provider (`auth.type = "jwt"`).
///
/// Only the key material is required: `jwt_secret` for the default HS256,
/// or `private_key` (PKCS#8 PEM) for RS256/PS256/ES256/ES384/EdDSA.
/// `Debug` never shows a secret.
///
/// ```
/// use truststream_auth_jwt::JwtAuthConfig;
/// let cfg: JwtAuthConfig = serde_json::from_value(serde_json::json!({
///     "jwt_secret": "0123456789abcdef0123456789abcdef",
///     "roles": { "admin": ["*"], "member": ["read:*"] },
///     "default_roles": ["member"],
/// })).unwrap();
/// assert_eq!(cfg.access_token_ttl_secs, 900);
/// assert!(!format!("{cfg:?}").contains("0123456789abcdef"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtAuthConfig {
    /// `iss` of issued tokens, required when verifying (default
    /// `"truststream"`).
    pub issuer: String,
    /// `aud` of issued tokens, required when verifying (default
    /// `"authenticated"`).
    pub audience: String,
    /// Signing algorithm (default `HS256`).
    pub algorithm: Algorithm,
    /// HMAC secret for HS256/384/512, at least 32 bytes.
    pub jwt_secret: Option<Secret>,
    /// PKCS#8 PEM private key for the asymmetric algorithms. Its public half
    /// is published by [`crate::JwtAuth::jwks`].
    pub private_key: Option<Secret>,
    /// `kid` of issued tokens (default: the RFC 7638 thumbprint of the public
    /// key for asymmetric keys, none for HMAC).
    pub key_id: Option<String>,
    /// Access-token lifetime (default 900 s).
    pub access_token_ttl_secs: u64,
    /// Session lifetime: refresh tokens stop working this long after sign-in
    /// (default 30 days).
    pub session_ttl_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf` (default 5 s, at most 300).
    pub leeway_secs: u64,
    /// Window after a rotation in which the previous refresh token is answered
    /// with the current session instead of counting as reuse (two tabs, a
    /// lost response). Default 10000 ms.
    pub refresh_reuse_interval_ms: u64,
    /// Whether `validate_token` checks the session store (default `checked`).
    pub revocation: Revocation,
    /// With `revocation = "checked"`: how long a session read as live is
    /// trusted without reading it again (default 1000 ms, at most 60000;
    /// 0 reads the session on every validation). A revocation made through
    /// this provider instance is seen by it at once whatever the value;
    /// one made by another process is seen within this bound (on
    /// PostgreSQL, whose change feed sees every writer, usually as soon as
    /// its change arrives).
    pub revocation_staleness_ms: u64,
    /// With `revocation = "checked"` on a database whose change feed sees
    /// every writer (PostgreSQL): follow the sessions table's changes, so
    /// another process's revocation is seen here as soon as its change
    /// arrives. Default `false`: the feed puts a change trigger on the
    /// sessions table, whose NOTIFY payloads any role that may `LISTEN` in
    /// the database can read, and whose trigger orders the commits of
    /// watched tables one at a time (sign-ins, refreshes and sign-outs
    /// included); off, `revocation_staleness_ms` is the bound. Ignored
    /// elsewhere.
    pub revocation_feed: bool,
    /// Prefix of the three tables (`<prefix>users`, `<prefix>sessions`,
    /// `<prefix>refresh_tokens`); default `auth_`.
    pub table_prefix: String,
    /// Password rules.
    pub password: PasswordPolicy,
    /// Argon2id cost of new password hashes.
    pub argon2: Argon2Cost,
    /// Failed sign-in limit.
    pub sign_in_rate_limit: SignInRateLimit,
    /// Bound on concurrent password hashing (sign-ups and sign-ins).
    pub password_hashing: PasswordHashing,
    /// Role -> permissions (`action:resource`, `*` wildcards).
    pub roles: BTreeMap<String, Vec<String>>,
    /// Roles given to every new user (default none).
    pub default_roles: Vec<String>,
    /// External identity providers whose tokens `validate_token` accepts.
    pub external_issuers: Vec<ExternalIssuer>,
}

impl Default for JwtAuthConfig {
    fn default() -> Self {
        JwtAuthConfig {
            issuer: "truststream".into(),
            audience: "authenticated".into(),
            algorithm: Algorithm::HS256,
            jwt_secret: None,
            private_key: None,
            key_id: None,
            access_token_ttl_secs: 900,
            session_ttl_secs: 30 * 24 * 3600,
            leeway_secs: 5,
            refresh_reuse_interval_ms: 10_000,
            revocation: Revocation::Checked,
            revocation_staleness_ms: DEFAULT_REVOCATION_STALENESS_MS,
            revocation_feed: false,
            table_prefix: "auth_".into(),
            password: PasswordPolicy::default(),
            argon2: Argon2Cost::default(),
            sign_in_rate_limit: SignInRateLimit::default(),
            password_hashing: PasswordHashing::default(),
            roles: BTreeMap::new(),
            default_roles: Vec::new(),
            external_issuers: Vec::new(),
        }
    }
}

impl JwtAuthConfig {
    /// The defaults with an HS256 secret.
    pub fn with_secret(secret: impl Into<Secret>) -> Self {
        JwtAuthConfig {
            jwt_secret: Some(secret.into()),
            ..Self::default()
        }
    }

    /// The defaults with an asymmetric algorithm and its PKCS#8 PEM private key.
    pub fn with_private_key(algorithm: Algorithm, pem: impl Into<Secret>) -> Self {
        JwtAuthConfig {
            algorithm,
            private_key: Some(pem.into()),
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> AuthResult<()> {
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(Error::invalid_input(
                "`issuer` and `audience` must not be empty",
            ));
        }
        if self.access_token_ttl_secs == 0 || self.session_ttl_secs == 0 {
            return Err(Error::invalid_input(
                "`access_token_ttl_secs` and `session_ttl_secs` must be positive",
            ));
        }
        if self.revocation_staleness_ms > MAX_REVOCATION_STALENESS_MS {
            return Err(Error::invalid_input(format!(
                "`revocation_staleness_ms` must be at most {MAX_REVOCATION_STALENESS_MS}"
            )));
        }
        if self.leeway_secs > 300 {
            return Err(Error::invalid_input("`leeway_secs` must be at most 300"));
        }
        if self.password.min_chars == 0 || self.password.max_bytes < self.password.min_chars {
            return Err(Error::invalid_input(
                "`password.min_chars` must be positive and at most `password.max_bytes`",
            ));
        }
        if self.password.max_bytes > 4096 {
            return Err(Error::invalid_input(
                "`password.max_bytes` must be at most 4096",
            ));
        }
        if self.password_hashing.max_concurrent > 4096 || self.password_hashing.max_queued > 1 << 20
        {
            return Err(Error::invalid_input(
                "`password_hashing.max_concurrent` must be at most 4096 and `password_hashing.max_queued` at most 1048576",
            ));
        }
        if self.sign_in_rate_limit.max_failures > 0 && self.sign_in_rate_limit.window_secs == 0 {
            return Err(Error::invalid_input(
                "`sign_in_rate_limit.window_secs` must be positive",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for i in &self.external_issuers {
            let iss = i.effective_issuer()?;
            if iss == self.issuer {
                return Err(Error::invalid_input(format!(
                    "external issuer {iss:?} is this provider's own issuer"
                )));
            }
            if !seen.insert(iss.clone()) {
                return Err(Error::invalid_input(format!(
                    "external issuer {iss:?} is configured twice: one entry per `iss`"
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for JwtAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &Option<Secret>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("JwtAuthConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithm", &self.algorithm)
            .field("jwt_secret", &redact(&self.jwt_secret))
            .field("private_key", &redact(&self.private_key))
            .field("key_id", &self.key_id)
            .field("access_token_ttl_secs", &self.access_token_ttl_secs)
            .field("session_ttl_secs", &self.session_ttl_secs)
            .field("leeway_secs", &self.leeway_secs)
            .field("refresh_reuse_interval_ms", &self.refresh_reuse_interval_ms)
            .field("revocation", &self.revocation)
            .field("revocation_staleness_ms", &self.revocation_staleness_ms)
            .field("revocation_feed", &self.revocation_feed)
            .field("table_prefix", &self.table_prefix)
            .field("password", &self.password)
            .field("argon2", &self.argon2)
            .field("sign_in_rate_limit", &self.sign_in_rate_limit)
            .field("password_hashing", &self.password_hashing)
            .field("roles", &self.roles)
            .field("default_roles", &self.default_roles)
            .field("external_issuers", &self.external_issuers)
            .finish()
    }
}
