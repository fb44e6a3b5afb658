#![doc = include_str!("../README.md")]

mod config;
mod external;
mod keys;
mod limiter;
mod password;
mod preset;
mod refresh;
mod revocation;
mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{json, Map, Value};
use truststream_core::BuildOptions;
use truststream_core_auth::{
    Auth, AuthCapabilities, AuthDeps, AuthRegistry, AuthResult, Error, ErrorKind, Health,
    Permission, Principal, ProviderInfo, RolePermissions, Secret, Session, SessionInfo, SignIn,
    SignUp, User, UserUpdate,
};
use truststream_core_db::Database;
use truststream_core_realtime::feed::FeedTarget as _;

pub use config::{
    Algorithm, Argon2Cost, ClaimMapping, ClaimPath, ExternalIssuer, FailureStore, JwtAuthConfig,
    PasswordHashing, PasswordPolicy, Preset, Revocation, SignInRateLimit, TokenUse,
    DEFAULT_REVOCATION_STALENESS_MS, MAX_REVOCATION_STALENESS_MS, MIN_SECRET_BYTES,
};

use crate::external::ExternalVerifier;
use crate::keys::{check_kid, checked_header, verify_error, OwnKeys};
use crate::limiter::Limiter;
use crate::password::Passwords;
use crate::refresh::RefreshKeys;
use crate::revocation::{RevocationView, Verdict};
use crate::store::{email_taken, Rotation, SessionRow, Store, Tables, UserRow};

/// Type name under which [`register`] adds the provider.
pub const TYPE_NAME: &str = "jwt";

/// Longest access token accepted, in bytes (checked before decoding).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Largest `user_metadata`, serialized, in bytes.
pub const MAX_USER_METADATA_BYTES: usize = 16 * 1024;

/// The one answer to every failed sign-in: unknown email, wrong password.
const INVALID_CREDENTIALS: &str = "invalid email or password";

/// Counters of the work the provider did, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct AuthStats {
    /// Passwords hashed (sign-ups).
    pub password_hashes: u64,
    /// Sign-in passwords verified against a user's stored hash.
    pub password_verifications: u64,
    /// Sign-in passwords verified against the dummy hash because the email
    /// is unknown (the same work as a real verification).
    pub dummy_verifications: u64,
    /// Key-set documents fetched from external identity providers.
    pub jwks_fetches: u64,
    /// Password hashes (sign-ups and sign-in verifications) running now.
    pub hashes_running: u64,
    /// Sign-ups and sign-ins waiting for a hashing slot now.
    pub hashes_waiting: u64,
    /// Most password hashes (sign-ups and sign-in verifications) that ran
    /// at once: at most `password_hashing.max_concurrent`.
    pub peak_concurrent_hashes: u64,
    /// Sign-ups and sign-ins answered `RateLimited` because the hashing
    /// queue was full or its deadline passed.
    pub hashing_refused: u64,
}

/// The JWT auth provider: issues sessions for users kept in any
/// [`Database`], and verifies its own and external identity providers'
/// access tokens. See the crate documentation.
pub struct JwtAuth {
    config: JwtAuthConfig,
    keys: OwnKeys,
    refresh_keys: RefreshKeys,
    store: Store,
    passwords: Passwords,
    permissions: RolePermissions,
    externals: Vec<ExternalVerifier>,
    /// Failed sign-ins per email within the window.
    limiter: Limiter,
    jwks_fetches: Arc<AtomicU64>,
    /// The task following the database's change feed into the revocation
    /// view, when the feed sees every writer; aborted on drop.
    revocation_feed: Option<tokio::task::AbortHandle>,
    /// Built read-only ([`JwtAuth::new_with`]): the tables it found
    /// missing and did not create (reported by `health`).
    missing_tables: Vec<String>,
}

impl Drop for JwtAuth {
    fn drop(&mut self) {
        if let Some(task) = &self.revocation_feed {
            task.abort();
        }
    }
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .field("algorithm", &self.keys.algorithm)
            .field("kid", &self.keys.header.kid)
            .field("revocation", &self.config.revocation)
            .field("tables", &self.store.tables)
            .field("database", &self.store.db.info())
            .field("sign_in_failures", &self.config.sign_in_rate_limit.store)
            .field(
                "external_issuers",
                &self.externals.iter().map(|e| &e.issuer).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    /// Builds the provider over `db`, creating its tables when missing.
    ///
    /// ```
    /// # async fn run() -> truststream_core_auth::AuthResult<()> {
    /// use std::sync::Arc;
    /// use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
    /// use truststream_core_auth::{Auth, SignIn, SignUp};
    ///
    /// let db = Arc::new(truststream_db_memory::MemoryDatabase::new());
    /// let mut cfg = JwtAuthConfig::with_secret("an HS256 secret of at least 32 bytes!");
    /// cfg.argon2 = Argon2Cost::minimal(); // tests only
    /// cfg.default_roles = vec!["member".into()];
    /// cfg.roles.insert("member".into(), vec!["read:agents".into()]);
    /// let auth = JwtAuth::new(cfg, db).await?;
    ///
    /// auth.sign_up(SignUp::new("ada@example.com", "correct horse battery")).await?;
    /// let session = auth.sign_in(SignIn::new("ada@example.com", "correct horse battery")).await?;
    /// let principal = auth.validate_token(session.access_token.expose()).await?;
    /// assert!(auth.has_permission(&principal, "read:agents").await?);
    /// assert!(!auth.has_permission(&principal, "delete:agents").await?);
    /// # Ok(()) }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
    /// ```
    pub async fn new(config: JwtAuthConfig, db: Arc<dyn Database>) -> AuthResult<Self> {
        Self::new_with(config, db, BuildOptions::default()).await
    }

    /// [`JwtAuth::new`], told how to build. Read-only
    /// ([`BuildOptions::read_only`], `truststream health`): no table or
    /// index is created and the revocation feed is not followed (on
    /// PostgreSQL it installs a trigger); tables found missing are
    /// reported by [`Auth::health`] as degraded, by name, instead.
    pub async fn new_with(
        config: JwtAuthConfig,
        db: Arc<dyn Database>,
        options: BuildOptions,
    ) -> AuthResult<Self> {
        // Before any token is signed or verified: jsonwebtoken panics on the
        // first signature when a build enables both crypto backends and no
        // provider is installed (a provider the application installed stays).
        truststream_core_auth::ensure_crypto_provider()?;
        config.validate()?;
        let keys = OwnKeys::from_config(&config)?;
        let refresh_keys = RefreshKeys::from_material(&keys.material)?;
        let permissions = RolePermissions::from_config(&config.roles)?;
        for r in &config.default_roles {
            validate_role(r)?;
        }
        let jwks_fetches = Arc::new(AtomicU64::new(0));
        let externals = config
            .external_issuers
            .iter()
            .map(|e| ExternalVerifier::new(e, config.leeway_secs, jwks_fetches.clone()))
            .collect::<AuthResult<Vec<_>>>()?;
        let passwords = Passwords::new(&config.argon2, &config.password_hashing)?;
        let tables = Tables::new(&config.table_prefix);
        let staleness = match config.revocation {
            Revocation::Checked => Duration::from_millis(config.revocation_staleness_ms),
            Revocation::Stateless => Duration::ZERO,
        };
        let store = Store {
            db,
            revocations: Arc::new(RevocationView::new(staleness, &tables.sessions)),
            tables,
        };
        let create = !options.read_only;
        let mut missing_tables = Vec::new();
        if create {
            store.ensure_schema().await?;
        } else {
            missing_tables = truststream_core_db::missing_tables(&*store.db, &store.tables.names())
                .await
                .map_err(|e| e.with_operation("auth.check_tables"))?;
        }
        let limiter = Limiter::new(
            &config.sign_in_rate_limit,
            &store.db,
            &config.table_prefix,
            create,
        )
        .await?;
        if let (false, Some(table)) = (create, limiter.table()) {
            let t = [table.to_string()];
            missing_tables.extend(
                truststream_core_db::missing_tables(&*store.db, &t)
                    .await
                    .map_err(|e| e.with_operation("auth.check_tables"))?,
            );
        }
        // Last: nothing after it can fail, so the task (and its feed
        // subscription) is owned by the provider from here on, and aborted
        // with it, never left behind by a constructor that gave up.
        let revocation_feed = if config.revocation_feed && create {
            store.follow_revocations().await
        } else {
            None
        };
        Ok(JwtAuth {
            config,
            keys,
            refresh_keys,
            store,
            passwords,
            permissions,
            externals,
            limiter,
            jwks_fetches,
            revocation_feed,
            missing_tables,
        })
    }

    /// The public keys of this provider as a JWKS document (what
    /// `/.well-known/jwks.json` serves). Empty for HMAC algorithms: a shared
    /// secret is never published.
    pub fn jwks(&self) -> Value {
        serde_json::to_value(self.keys.jwks()).unwrap_or_else(|_| json!({ "keys": [] }))
    }

    /// Replaces a user's roles (an administrative call: not part of the
    /// interface). An unknown user is `NotFound`.
    pub async fn set_user_roles(&self, user_id: &str, roles: &[String]) -> AuthResult<()> {
        for r in roles {
            validate_role(r)?;
        }
        if self.store.user_profile(user_id).await?.is_none()
            || !self.store.set_roles(user_id, roles).await?
        {
            return Err(Error::not_found("no such user").with_operation("auth.set_user_roles"));
        }
        Ok(())
    }

    /// Counters of the work done so far.
    pub fn stats(&self) -> AuthStats {
        let c = &self.passwords.counters;
        AuthStats {
            password_hashes: c.hashes.load(Ordering::Relaxed),
            password_verifications: c.verifications.load(Ordering::Relaxed),
            dummy_verifications: c.dummy_verifications.load(Ordering::Relaxed),
            jwks_fetches: self.jwks_fetches.load(Ordering::Relaxed),
            hashes_running: c.running.load(Ordering::Relaxed),
            hashes_waiting: self.passwords.waiting(),
            peak_concurrent_hashes: c.peak_running.load(Ordering::Relaxed),
            hashing_refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// The configuration in effect.
    pub fn config(&self) -> &JwtAuthConfig {
        &self.config
    }

    fn check_password_shape(&self, password: &Secret) -> AuthResult<()> {
        let p = password.expose();
        let policy = &self.config.password;
        if p.len() > policy.max_bytes {
            return Err(Error::invalid_input(format!(
                "password is longer than {} bytes",
                policy.max_bytes
            )));
        }
        if p.chars().count() < policy.min_chars {
            return Err(Error::invalid_input(format!(
                "password must have at least {} characters",
                policy.min_chars
            )));
        }
        Ok(())
    }

    /// Opens a session for `user` and signs its first tokens.
    async fn open_session(&self, user: &UserRow) -> AuthResult<Session> {
        let now = Utc::now();
        let session = SessionRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user.id.clone(),
            created_at: now,
            refreshed_at: None,
            not_after: now + secs(self.config.session_ttl_secs),
            revoked_at: None,
            refresh_counter: 0,
        };
        let token = refresh::generate();
        self.store
            .insert_session(&session, &refresh::hash(&token))
            .await?;
        self.issue(user.to_user(), &session, token)
    }

    /// Signs an access token for `session` and packs the session.
    fn issue(&self, user: User, session: &SessionRow, refresh: String) -> AuthResult<Session> {
        let now = Utc::now();
        let expires_at = (now + secs(self.config.access_token_ttl_secs)).min(session.not_after);
        let mut app_metadata = user.app_metadata.clone();
        app_metadata.insert("roles".into(), json!(user.roles));
        // The claims Supabase Auth puts in its access tokens, so clients and
        // policies written for it read the same ones. `amr` names how the
        // session was opened (always a password here) and when.
        let claims = json!({
            "iss": self.config.issuer,
            "sub": user.id,
            "aud": self.config.audience,
            "exp": expires_at.timestamp(),
            "iat": now.timestamp(),
            "email": user.email,
            "phone": "",
            "app_metadata": app_metadata,
            "user_metadata": user.user_metadata,
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": session.created_at.timestamp()}],
            "session_id": session.id,
            "is_anonymous": false,
        });
        let token = jsonwebtoken::encode(&self.keys.header, &claims, &self.keys.encoding)
            .map_err(|e| Error::internal("signing the access token failed").with_source(e))?;
        Ok(Session {
            access_token: Secret::new(token),
            refresh_token: Secret::new(refresh),
            token_type: "bearer",
            expires_at,
            user,
        })
    }

    /// Verifies a token of this provider: header (no `crit`, no `kid` but
    /// ours), signature, algorithm, `exp`, `nbf`, `aud`, `iss`.
    fn verify_own(&self, token: &str) -> AuthResult<Map<String, Value>> {
        let header = checked_header(token)?;
        check_kid(&header, self.keys.header.kid.as_deref())?;
        jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &self.keys.decoding,
            &self.keys.validation,
        )
        .map(|d| d.claims)
        .map_err(verify_error)
    }

    fn is_own(&self, principal: &Principal) -> bool {
        principal.session_id.is_some()
            && principal.claims.get("iss").and_then(Value::as_str) == Some(&self.config.issuer)
    }

    /// The configured external issuer of `principal`, if any.
    fn external_of(&self, principal: &Principal) -> Option<&ExternalVerifier> {
        let iss = principal.claims.get("iss").and_then(Value::as_str)?;
        self.externals.iter().find(|v| v.issuer == iss)
    }

    /// The principal's own session, for calls that need one.
    fn own_session_id<'p>(
        &self,
        principal: &'p Principal,
        op: &'static str,
    ) -> AuthResult<&'p str> {
        match (&principal.session_id, self.is_own(principal)) {
            (Some(id), true) => Ok(id),
            _ => Err(Error::unsupported(
                "this principal was issued by an external identity provider: its users and sessions are kept there",
            )
            .with_operation(op)),
        }
    }

    /// Whether session `sid` is live and `user_id`'s: from the revocation
    /// view when it knows, else from the database (and remembered).
    async fn session_is_live(&self, sid: &str, user_id: &str) -> AuthResult<bool> {
        let view = &self.store.revocations;
        match view.check(sid, user_id) {
            Verdict::Live => return Ok(true),
            Verdict::Ended => return Ok(false),
            Verdict::Unknown => {}
        }
        // Taken before the read: a revocation marked after this moment
        // overrides what the read finds.
        let read_at = Instant::now();
        let Some(s) = self.store.session(sid).await? else {
            return Ok(false);
        };
        let active = s.is_active(Utc::now());
        view.remember(
            sid,
            read_at,
            active.then_some((s.user_id.as_str(), s.not_after)),
        );
        Ok(active && s.user_id == user_id)
    }

    async fn load_active_session(&self, id: &str) -> AuthResult<SessionRow> {
        match self.store.session(id).await? {
            Some(s) if s.is_active(Utc::now()) => Ok(s),
            _ => Err(Error::unauthenticated("the session has ended")),
        }
    }
}

fn secs(n: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000))
}

fn validate_role(r: &str) -> AuthResult<()> {
    if r.is_empty()
        || r.len() > 64
        || !r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(Error::invalid_input(format!(
            "invalid role name {:?}: 1-64 ASCII letters, digits, _ - .",
            r.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// Trims and lower-cases an email and checks its shape: `local@domain`,
/// at most 254 bytes, a dotted domain of letters, digits and hyphens.
fn normalize_email(raw: &str) -> AuthResult<String> {
    let bad = || Error::invalid_input("email address is not valid");
    let e = raw.trim().to_lowercase();
    if e.len() > 254 {
        return Err(bad());
    }
    let (local, domain) = e.rsplit_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !matches!(
                    c,
                    '@' | '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | '\\' | ']'
                )
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(e)
    } else {
        Err(bad())
    }
}

/// The `iss` of a token, read without verifying it (only to choose the
/// verifier, which then checks everything, `iss` included).
fn unverified_issuer(token: &str) -> AuthResult<String> {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let malformed = || Error::unauthenticated("invalid access token");
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| malformed())?;
    let iss: Iss = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    iss.iss
        .ok_or_else(|| Error::unauthenticated("access token lacks a required claim"))
}

#[async_trait]
impl Auth for JwtAuth {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> AuthCapabilities {
        let mut c = AuthCapabilities::none();
        c.sign_up = true;
        c.password_sign_in = true;
        c.refresh = true;
        c.external_tokens = !self.externals.is_empty();
        c.revocation_checked = self.config.revocation == Revocation::Checked;
        c.sign_out_others = true;
        c.private_tables = self.store.tables.names();
        c.private_tables
            .extend(self.limiter.table().map(str::to_string));
        c
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        let db = self.store.db.health().await;
        if let Some(missing) = db
            .is_healthy()
            .then(|| {
                truststream_core_db::missing_tables_health(
                    "auth-jwt",
                    &self.missing_tables,
                    start.elapsed(),
                )
            })
            .flatten()
        {
            return missing;
        }
        if db.is_healthy() {
            // The revocation feed, when followed: down, or changes lost
            // lately (other processes' revocations then take up to
            // `revocation_staleness_ms` here).
            let feed = self
                .revocation_feed
                .as_ref()
                .and_then(|_| self.store.revocations.feed_health().problem())
                .map(|p| format!("revocation feed: {p}"));
            truststream_core_realtime::feed::health_report(start, feed)
        } else {
            Health {
                status: db.status,
                latency: start.elapsed(),
                message: Some(format!(
                    "user database: {}",
                    db.message.as_deref().unwrap_or("not healthy")
                )),
            }
        }
    }

    /// Stops the revocation feed task (and with it its change feed
    /// subscription). The users and sessions live in the database the
    /// provider was given: its owner closes it.
    async fn close(&self) -> AuthResult<()> {
        if let Some(task) = &self.revocation_feed {
            task.abort();
        }
        Ok(())
    }

    async fn sign_up(&self, request: SignUp) -> AuthResult<Session> {
        let email =
            normalize_email(&request.email).map_err(|e| e.with_operation("auth.sign_up"))?;
        self.check_password_shape(&request.password)
            .map_err(|e| e.with_operation("auth.sign_up"))?;
        let meta_len = serde_json::to_vec(&request.user_metadata)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if meta_len > MAX_USER_METADATA_BYTES {
            return Err(Error::too_large(format!(
                "user_metadata is larger than {MAX_USER_METADATA_BYTES} bytes"
            ))
            .with_operation("auth.sign_up"));
        }
        if self.store.user_by_email(&email).await?.is_some() {
            return Err(email_taken());
        }
        let password_hash = self.passwords.hash(&request.password).await?;
        let now = Utc::now();
        let mut app_metadata = Map::new();
        app_metadata.insert("provider".into(), json!("email"));
        let user = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            email,
            password_hash,
            roles: self.config.default_roles.clone(),
            user_metadata: request.user_metadata,
            app_metadata,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_user(&user).await?;
        tracing::info!(user_id = %user.id, "user signed up");
        self.open_session(&user).await
    }

    async fn sign_in(&self, request: SignIn) -> AuthResult<Session> {
        let op = "auth.sign_in";
        if request.password.expose().len() > self.config.password.max_bytes {
            // Rejected before any hashing; says nothing about the account.
            return Err(Error::invalid_input(format!(
                "password is longer than {} bytes",
                self.config.password.max_bytes
            ))
            .with_operation(op));
        }
        // A malformed email cannot belong to a user: it takes the unknown-
        // user path (no lookup, the dummy hash), so its answer and cost are
        // those of any failure. Its limiter key is bounded in size.
        let (email, well_formed) = match normalize_email(&request.email) {
            Ok(e) => (e, true),
            Err(_) => (
                request
                    .email
                    .trim()
                    .to_lowercase()
                    .chars()
                    .take(254)
                    .collect(),
                false,
            ),
        };
        if self
            .limiter
            .limited(&email)
            .await
            .map_err(|e| e.with_operation(op))?
        {
            tracing::warn!("sign-in refused: too many failed attempts for one account");
            return Err(Error::new(
                ErrorKind::RateLimited,
                "too many failed sign-in attempts; try again later",
            )
            .with_operation(op));
        }
        let user = if well_formed {
            self.store.user_by_email(&email).await?
        } else {
            None
        };
        let ok = self
            .passwords
            .verify(
                &request.password,
                user.as_ref().map(|u| u.password_hash.as_str()),
            )
            .await?;
        match user {
            Some(user) if ok => {
                self.limiter
                    .clear(&email)
                    .await
                    .map_err(|e| e.with_operation(op))?;
                tracing::info!(user_id = %user.id, "user signed in");
                self.open_session(&user).await
            }
            _ => {
                self.limiter
                    .record_failure(&email)
                    .await
                    .map_err(|e| e.with_operation(op))?;
                tracing::info!("sign-in failed: invalid credentials");
                Err(Error::unauthenticated(INVALID_CREDENTIALS).with_operation(op))
            }
        }
    }

    async fn sign_out(&self, principal: &Principal) -> AuthResult<()> {
        let id = self.own_session_id(principal, "auth.sign_out")?;
        self.store.revoke_session(id).await?;
        tracing::info!(session_id = %id, "session signed out");
        Ok(())
    }

    async fn sign_out_everywhere(&self, principal: &Principal) -> AuthResult<()> {
        self.own_session_id(principal, "auth.sign_out_everywhere")?;
        let n = self.store.revoke_user_sessions(&principal.user_id).await?;
        tracing::info!(user_id = %principal.user_id, sessions = n, "user signed out everywhere");
        Ok(())
    }

    async fn sign_out_others(&self, principal: &Principal) -> AuthResult<()> {
        let op = "auth.sign_out_others";
        let id = self.own_session_id(principal, op)?;
        // Only a live session may end the others: a token of an ended
        // session (valid until it expires where revocation is unchecked)
        // must not sign its user out of the sessions they opened since.
        let current = self
            .load_active_session(id)
            .await
            .map_err(|e| e.with_operation(op))?;
        if current.user_id != principal.user_id {
            return Err(Error::unauthenticated("the session has ended").with_operation(op));
        }
        let n = self
            .store
            .revoke_other_sessions(&principal.user_id, id)
            .await?;
        tracing::info!(user_id = %principal.user_id, session_id = %id, sessions = n, "user's other sessions signed out");
        Ok(())
    }

    async fn get_user(&self, principal: &Principal) -> AuthResult<User> {
        self.own_session_id(principal, "auth.get_user")?;
        match self.store.user_profile(&principal.user_id).await? {
            Some(u) => Ok(u),
            None => Err(Error::not_found("no such user").with_operation("auth.get_user")),
        }
    }

    async fn get_session(&self, principal: &Principal) -> AuthResult<SessionInfo> {
        let id = self.own_session_id(principal, "auth.get_session")?;
        match self.store.session(id).await? {
            Some(s) if s.user_id == principal.user_id => Ok(s.info()),
            _ => Err(Error::not_found("no such session").with_operation("auth.get_session")),
        }
    }

    async fn refresh_session(&self, refresh_token: &str) -> AuthResult<Session> {
        let op = "auth.refresh_session";
        let invalid = || Error::unauthenticated("invalid refresh token").with_operation(op);
        if !refresh::well_formed(refresh_token) {
            return Err(invalid());
        }
        let Some(row) = self
            .store
            .refresh_token(&refresh::hash(refresh_token))
            .await?
        else {
            return Err(invalid());
        };
        let mut session = self
            .load_active_session(&row.session_id)
            .await
            .map_err(|e| e.with_operation(op))?;
        let Some(user) = self.store.user_profile(&session.user_id).await? else {
            return Err(invalid());
        };
        let child = self.refresh_keys.child(refresh_token)?;
        if row.generation == session.refresh_counter {
            let now = Utc::now();
            match self
                .store
                .rotate(
                    &session.id,
                    session.refresh_counter,
                    &refresh::hash(&child),
                    now,
                )
                .await?
            {
                Rotation::Won => {
                    session.refresh_counter += 1;
                    session.refreshed_at = Some(now);
                    return self.issue(user, &session, child);
                }
                Rotation::Lost => {
                    session = self
                        .load_active_session(&row.session_id)
                        .await
                        .map_err(|e| e.with_operation(op))?;
                }
            }
        }
        // The token was already rotated. Within the reuse interval its child
        // is the current token: answer with the current session.
        let interval = chrono::Duration::milliseconds(
            i64::try_from(self.config.refresh_reuse_interval_ms).unwrap_or(i64::MAX / 2),
        );
        let within = session
            .refreshed_at
            .is_some_and(|t| Utc::now() - t <= interval);
        if row.generation + 1 == session.refresh_counter && within {
            return self.issue(user, &session, child);
        }
        self.store.revoke_session(&session.id).await?;
        tracing::warn!(
            session_id = %session.id,
            user_id = %session.user_id,
            "refresh token reused outside the reuse interval; session revoked"
        );
        Err(
            Error::unauthenticated("refresh token already used; the session has been revoked")
                .with_operation(op),
        )
    }

    async fn validate_token(&self, access_token: &str) -> AuthResult<Principal> {
        let op = "auth.validate_token";
        if access_token.is_empty() || access_token.len() > MAX_TOKEN_BYTES {
            return Err(Error::unauthenticated("invalid access token").with_operation(op));
        }
        let (claims, external) = if self.externals.is_empty() {
            (self.verify_own(access_token), None)
        } else {
            let iss = unverified_issuer(access_token).map_err(|e| e.with_operation(op))?;
            if iss == self.config.issuer {
                (self.verify_own(access_token), None)
            } else if let Some(v) = self.externals.iter().find(|v| v.issuer == iss) {
                (v.verify(access_token).await, Some(v))
            } else {
                return Err(
                    Error::unauthenticated("access token has the wrong issuer").with_operation(op)
                );
            }
        };
        let mut principal = Principal::from_claims(claims.map_err(|e| e.with_operation(op))?)
            .map_err(|e| e.with_operation(op))?;
        if let Some(v) = external {
            // An external token's claims grant nothing by themselves: its
            // roles are what the issuer's claim mapping makes of them.
            principal.roles = v.roles(&principal.claims);
        } else {
            let Some(sid) = &principal.session_id else {
                return Err(
                    Error::unauthenticated("access token lacks a session").with_operation(op)
                );
            };
            if self.config.revocation == Revocation::Checked
                && !self.session_is_live(sid, &principal.user_id).await?
            {
                return Err(Error::unauthenticated("the session has ended")
                    .with_context(
                        truststream_core_auth::REASON,
                        truststream_core_auth::SESSION_ENDED,
                    )
                    .with_operation(op));
            }
        }
        Ok(principal)
    }

    async fn get_user_roles(&self, principal: &Principal) -> AuthResult<Vec<String>> {
        if !self.is_own(principal) {
            return Ok(principal.roles.clone());
        }
        match self.store.user_profile(&principal.user_id).await? {
            Some(u) => Ok(u.roles),
            None => Err(Error::not_found("no such user").with_operation("auth.get_user_roles")),
        }
    }

    async fn has_permission(&self, principal: &Principal, permission: &str) -> AuthResult<bool> {
        let wanted =
            Permission::parse(permission).map_err(|e| e.with_operation("auth.has_permission"))?;
        let roles = self.get_user_roles(principal).await?;
        if self.permissions.allows(&roles, permission)? {
            return Ok(true);
        }
        Ok(!self.is_own(principal)
            && self
                .external_of(principal)
                .is_some_and(|v| v.grants(&principal.claims, &wanted)))
    }

    async fn update_user(&self, principal: &Principal, update: UserUpdate) -> AuthResult<User> {
        let op = "auth.update_user";
        let session_id = self.own_session_id(principal, op)?;
        let email = match &update.email {
            Some(e) => Some(normalize_email(e).map_err(|e| e.with_operation(op))?),
            None => None,
        };
        if let Some(p) = &update.password {
            self.check_password_shape(p)
                .map_err(|e| e.with_operation(op))?;
            // A password change ends the user's other sessions, so only a
            // live session may make one: the token of an ended session
            // (valid until it expires where revocation is unchecked) must
            // not set a password and sign out the sessions opened since.
            let current = self
                .load_active_session(session_id)
                .await
                .map_err(|e| e.with_operation(op))?;
            if current.user_id != principal.user_id {
                return Err(Error::unauthenticated("the session has ended").with_operation(op));
            }
        }
        let Some(mut user) = self.store.user_by_id(&principal.user_id).await? else {
            return Err(Error::not_found("no such user").with_operation(op));
        };
        if let Some(meta) = update.user_metadata {
            for (k, v) in meta {
                if v.is_null() {
                    user.user_metadata.remove(&k);
                } else {
                    user.user_metadata.insert(k, v);
                }
            }
            let meta_len = serde_json::to_vec(&user.user_metadata)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if meta_len > MAX_USER_METADATA_BYTES {
                return Err(Error::too_large(format!(
                    "user_metadata is larger than {MAX_USER_METADATA_BYTES} bytes"
                ))
                .with_operation(op));
            }
        }
        if let Some(email) = email {
            if email != user.email {
                if self.store.user_by_email(&email).await?.is_some() {
                    return Err(Error::conflict("an account with this email already exists")
                        .with_operation(op));
                }
                user.email = email;
            }
        }
        if let Some(p) = &update.password {
            // Through the hashing gate, like sign-ups: bounded concurrency.
            user.password_hash = self.passwords.hash(p).await?;
        }
        user.updated_at = Utc::now();
        let updated = if update.password.is_some() {
            // As GoTrue does: the new password ends every other session
            // (in the same transaction as the new hash), this one stays.
            self.store
                .update_user_ending_other_sessions(&user, session_id)
                .await?
        } else {
            self.store.update_user(&user).await?
        };
        if !updated {
            return Err(Error::not_found("no such user").with_operation(op));
        }
        tracing::info!(
            user_id = %user.id,
            password_changed = update.password.is_some(),
            "user updated"
        );
        Ok(user.to_user())
    }

    fn public_keys(&self) -> Value {
        self.jwks()
    }
}

/// Adds the provider to `reg` under [`TYPE_NAME`]. It needs the configured
/// database ([`AuthDeps::db`]), where it keeps its tables.
pub fn register(reg: &mut AuthRegistry) {
    reg.register_with_options(TYPE_NAME, |cfg, deps: AuthDeps, options| async move {
        let cfg: JwtAuthConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        let Some(db) = deps.db else {
            return Err(Error::invalid_input(
                "the jwt auth provider keeps users in the configured database, and none was given",
            ));
        };
        Ok(Arc::new(JwtAuth::new_with(cfg, db, options).await?) as Arc<dyn Auth>)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@exa mple.com",
            "ada@-example.com",
            ".ada@example.com",
            "a..da@example.com",
            "ada@example..com",
            "ada\n@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn unverified_issuer_rejects_garbage() {
        for bad in ["", "a.b", "a.b.c.d", "a.!!!.c", "a.bm90IGpzb24.c"] {
            assert_eq!(
                unverified_issuer(bad).unwrap_err().kind(),
                ErrorKind::Unauthenticated,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn roles_from_app_metadata_or_role() {
        let p = Principal::from_claims(
            json!({"sub": "u", "exp": 10, "app_metadata": {"roles": ["a", "b"]}, "role": "x"})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(p.roles, ["a", "b"]);
        let p = Principal::from_claims(
            json!({"sub": "u", "exp": 10, "role": "authenticated", "email": ""})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(p.roles, ["authenticated"]);
        assert_eq!(p.email, None);
    }
}
