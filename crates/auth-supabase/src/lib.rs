#![doc = include_str!("../README.md")]

mod config;
mod gotrue;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use reqwest::Method;
use serde_json::{json, Map, Value};
use truststream_core_auth::{
    Auth, AuthCapabilities, AuthDeps, AuthRegistry, AuthResult, Error, Health, Permission,
    Principal, ProviderInfo, RolePermissions, Secret, Session, SessionInfo, SignIn, SignUp, User,
    UserUpdate,
};

pub use config::{SupabaseAuthConfig, MIN_SECRET_BYTES};
pub use verify::MAX_TOKEN_BYTES;

use crate::gotrue::{GoTrue, Op};
use crate::verify::Verifier;

/// Type name under which [`register`] adds the provider.
pub const TYPE_NAME: &str = "supabase";

/// Longest password sent, in bytes. GoTrue refuses more than 72 (bcrypt's
/// limit); anything far beyond is refused here without a request.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Longest refresh token sent, in bytes (GoTrue's are 12 characters; a
/// longer one cannot be valid).
pub const MAX_REFRESH_TOKEN_BYTES: usize = 1024;

/// Largest `user_metadata` sent, serialized, in bytes.
pub const MAX_USER_METADATA_BYTES: usize = 16 * 1024;

/// Counters of the work the provider did, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct SupabaseAuthStats {
    /// Key-set documents fetched from the project's JWKS endpoint.
    pub jwks_fetches: u64,
    /// Access tokens held for sign-out and user calls.
    pub cached_tokens: u64,
}

/// An access token kept for the calls GoTrue serves only with it.
struct HeldToken {
    token: Secret,
    user_id: String,
    exp: i64,
}

/// Keeps each held token until its `exp`.
struct UntilExp;

impl moka::Expiry<String, Arc<HeldToken>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<HeldToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = value.exp.saturating_sub(Utc::now().timestamp()).max(0);
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }

    fn expire_after_update(
        &self,
        key: &String,
        value: &Arc<HeldToken>,
        updated_at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

/// The Supabase auth provider: a client of a project's Auth server
/// (GoTrue, `/auth/v1`) that verifies access tokens locally. See the crate
/// documentation.
pub struct SupabaseAuth {
    config: SupabaseAuthConfig,
    api: GoTrue,
    verifier: Verifier,
    permissions: RolePermissions,
    /// Access token per session id, for `sign_out`, `get_user` and
    /// `update_user` (GoTrue serves them only with the user's token).
    tokens: moka::sync::Cache<String, Arc<HeldToken>>,
    /// What this instance saw happen to sessions (by session id), for
    /// `get_session`: GoTrue has no endpoint that reads a session.
    seen: moka::sync::Cache<String, Seen>,
    jwks_fetches: Arc<AtomicU64>,
}

/// A session's refresh and sign-out, as this instance saw them.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    refreshed_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SupabaseAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupabaseAuth")
            .field("url", &self.config.url)
            .field("issuer", &self.config.effective_issuer())
            .field("audience", &self.config.audience)
            .field("jwt_secret", &self.config.jwt_secret.is_some())
            .field("jwks", &self.config.jwks)
            .finish_non_exhaustive()
    }
}

impl SupabaseAuth {
    /// Builds the provider. Nothing is fetched yet: the key set is fetched
    /// on the first asymmetric token.
    ///
    /// ```
    /// use truststream_auth_supabase::{SupabaseAuth, SupabaseAuthConfig};
    /// let mut cfg = SupabaseAuthConfig::new("http://127.0.0.1:54321", "anon-key");
    /// cfg.jwt_secret = Some("super-secret-jwt-token-with-at-least-32-characters-long".into());
    /// let auth = SupabaseAuth::new(cfg).unwrap();
    /// assert!(!format!("{auth:?}").contains("super-secret"));
    /// ```
    pub fn new(config: SupabaseAuthConfig) -> AuthResult<Self> {
        // Before any token is verified: jsonwebtoken panics on the first
        // signature when a build enables both crypto backends and no
        // provider is installed (a provider the application installed stays).
        truststream_core_auth::ensure_crypto_provider()?;
        config.validate()?;
        let permissions = RolePermissions::from_config(&config.roles)?;
        let api = GoTrue::new(&config)?;
        let jwks_fetches = Arc::new(AtomicU64::new(0));
        let verifier = Verifier::new(&config, api.client.clone(), jwks_fetches.clone());
        let tokens = moka::sync::Cache::builder()
            .max_capacity(config.token_cache_capacity.max(1))
            .expire_after(UntilExp)
            .build();
        // What this instance saw of a session (a refresh, a sign-out) is
        // kept 24 h: longer than GoTrue's default access-token life (1 h),
        // so every token of the session that still verifies finds it.
        // Bounded like the token cache.
        let seen = moka::sync::Cache::builder()
            .max_capacity(config.token_cache_capacity.max(1))
            .time_to_live(Duration::from_secs(24 * 60 * 60))
            .build();
        Ok(SupabaseAuth {
            config,
            api,
            verifier,
            permissions,
            tokens,
            seen,
            jwks_fetches,
        })
    }

    /// Counters of the work done so far.
    pub fn stats(&self) -> SupabaseAuthStats {
        self.tokens.run_pending_tasks();
        SupabaseAuthStats {
            jwks_fetches: self.jwks_fetches.load(Ordering::Relaxed),
            cached_tokens: self.tokens.entry_count(),
        }
    }

    /// The configuration in effect.
    pub fn config(&self) -> &SupabaseAuthConfig {
        &self.config
    }

    /// Verifies `token` and remembers it for its session.
    async fn verify_and_hold(&self, token: &str) -> AuthResult<Principal> {
        let claims = self.verifier.verify(token).await?;
        let principal = Principal::from_claims(claims)?;
        self.hold(token, &principal);
        Ok(principal)
    }

    /// Asks the project whether the (locally verified) `token`'s session
    /// and user still exist: `GET /user` with it, as auth-js's `getUser`.
    async fn check_session(&self, token: &str) -> AuthResult<()> {
        let op = Op::ValidateToken;
        let bearer = Secret::new(token);
        match self
            .api
            .call(op, Method::GET, "/user", Some(&bearer), None, &[token])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = e
                    .context()
                    .iter()
                    .find(|(k, _)| *k == "error_code")
                    .map(|(_, v)| v.as_str());
                if matches!(code, Some("session_not_found" | "session_expired")) {
                    Err(Error::unauthenticated("the session has ended")
                        .with_context(
                            truststream_core_auth::REASON,
                            truststream_core_auth::SESSION_ENDED,
                        )
                        .with_operation(op.name()))
                } else if e.kind() == truststream_core_auth::ErrorKind::Unauthenticated {
                    Err(Error::unauthenticated(format!(
                        "the project refused the access token: {}",
                        e.message()
                    ))
                    .with_operation(op.name()))
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Remembers `token` for its session (the newest one wins).
    fn hold(&self, token: &str, principal: &Principal) {
        if let Some(sid) = &principal.session_id {
            let exp = principal.expires_at.timestamp();
            let newer = self.tokens.get(sid).is_none_or(|held| held.exp <= exp);
            if newer {
                self.tokens.insert(
                    sid.clone(),
                    Arc::new(HeldToken {
                        token: Secret::new(token),
                        user_id: principal.user_id.clone(),
                        exp,
                    }),
                );
            }
        }
    }

    /// The held access token of `principal`'s session.
    fn token_of(&self, principal: &Principal, op: &'static str) -> AuthResult<Secret> {
        let none = || {
            Error::unauthenticated(
                "this provider holds no live access token of the principal's session: GoTrue serves this call only with the user's own token (validate it with this provider first, or sign in again)",
            )
            .with_operation(op)
        };
        let sid = principal.session_id.as_ref().ok_or_else(none)?;
        let held = self.tokens.get(sid).ok_or_else(none)?;
        if held.user_id != principal.user_id || held.exp <= Utc::now().timestamp() {
            return Err(none());
        }
        Ok(held.token.clone())
    }

    /// Records what happened to `session_id` (a refresh or a sign-out).
    fn note(&self, session_id: &str, change: impl FnOnce(&mut Seen)) {
        let mut seen = self.seen.get(session_id).unwrap_or_default();
        change(&mut seen);
        self.seen.insert(session_id.to_string(), seen);
    }

    /// A session answer (`/signup`, `/token`) as a [`Session`]. Its access
    /// token is verified (a token this provider would refuse is a
    /// misconfiguration worth a clear error) and held.
    async fn session_from(&self, op: Op, body: Option<Value>) -> AuthResult<(Session, Principal)> {
        let not_session = |what: &str| {
            Error::unavailable(format!(
                "supabase auth: the project's answer is not a session ({what})"
            ))
            .with_operation(op.name())
        };
        let Some(Value::Object(mut m)) = body else {
            return Err(not_session("not a JSON object"));
        };
        let access = m.get("access_token").and_then(Value::as_str);
        let refresh = m.get("refresh_token").and_then(Value::as_str);
        let expires_in = m.get("expires_in").and_then(Value::as_i64);
        let (Some(access), Some(refresh), Some(_)) = (access, refresh, expires_in) else {
            if op == Op::SignUp && m.contains_key("id") {
                // Email confirmation is on: GoTrue made the user and sent a
                // confirmation mail; no session exists until it is confirmed.
                return Err(Error::unsupported(
                    "supabase auth: the project requires email confirmation, so sign-up opens no session (the user was created and must confirm the email, then sign in)",
                )
                .with_operation(op.name()));
            }
            return Err(not_session(
                "access_token, refresh_token or expires_in missing",
            ));
        };
        let (access, refresh) = (access.to_string(), refresh.to_string());
        let principal = self.verify_and_hold(&access).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "supabase auth: the project issued an access token this provider does not accept ({}); check jwt_secret, jwks, issuer and audience",
                    e.message()
                ),
            )
            .with_operation(op.name())
        })?;
        let user = match m.remove("user") {
            Some(Value::Object(u)) => user_from(&u).map_err(|e| e.with_operation(op.name()))?,
            _ => return Err(not_session("user missing")),
        };
        let session = Session {
            access_token: Secret::new(access),
            refresh_token: Secret::new(refresh),
            token_type: "bearer",
            expires_at: principal.expires_at,
            user,
        };
        Ok((session, principal))
    }

    fn check_password(password: &Secret, op: Op) -> AuthResult<()> {
        if password.expose().len() > MAX_PASSWORD_BYTES {
            return Err(Error::invalid_input(format!(
                "password is longer than {MAX_PASSWORD_BYTES} bytes"
            ))
            .with_operation(op.name()));
        }
        Ok(())
    }

    fn check_email(email: &str, op: Op) -> AuthResult<()> {
        if email.len() > 254 || email.chars().any(char::is_control) {
            return Err(
                Error::invalid_input("email address is not valid").with_operation(op.name())
            );
        }
        Ok(())
    }

    fn check_metadata(meta: &Map<String, Value>, op: Op) -> AuthResult<()> {
        let len = serde_json::to_vec(meta).map_or(usize::MAX, |v| v.len());
        if len > MAX_USER_METADATA_BYTES {
            return Err(Error::too_large(format!(
                "user_metadata is larger than {MAX_USER_METADATA_BYTES} bytes"
            ))
            .with_operation(op.name()));
        }
        Ok(())
    }

    /// Records as ended the sessions of `principal`'s user, other than
    /// its own, whose tokens this instance holds.
    fn others_ended(&self, principal: &Principal) {
        let now = Utc::now();
        for (sid, held) in &self.tokens {
            if held.user_id == principal.user_id
                && principal.session_id.as_deref() != Some(sid.as_str())
            {
                self.note(&sid, |s| {
                    s.revoked_at.get_or_insert(now);
                });
            }
        }
    }

    /// `POST /logout?scope=...` with the principal's token. For `local`
    /// and `global`, an answer that the session is already gone counts as
    /// done (auth-js does the same); for `others` it is an error, since
    /// the other sessions were not ended.
    async fn logout(&self, principal: &Principal, scope: &str, op: Op) -> AuthResult<()> {
        let token = self.token_of(principal, op.name())?;
        let r = self
            .api
            .call(
                op,
                Method::POST,
                &format!("/logout?scope={scope}"),
                Some(&token),
                None,
                &[token.expose()],
            )
            .await;
        if scope == "others" {
            r?;
            self.others_ended(principal);
            return Ok(());
        }
        let ended = |this: &Self| {
            if let Some(sid) = &principal.session_id {
                let now = Utc::now();
                this.note(sid, |s| {
                    s.revoked_at.get_or_insert(now);
                });
            }
        };
        match r {
            Ok(_) => {
                ended(self);
                Ok(())
            }
            // Only GoTrue's own word counts: a bare 404 may be a wrong URL.
            Err(e)
                if e.context().iter().any(|(k, v)| {
                    *k == "error_code"
                        && matches!(v.as_str(), "session_not_found" | "user_not_found")
                }) =>
            {
                ended(self);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// A GoTrue user object as a [`User`].
fn user_from(u: &Map<String, Value>) -> AuthResult<User> {
    let bad = |what: &str| {
        Error::unavailable(format!(
            "supabase auth: the project's user object is not valid ({what})"
        ))
    };
    let id = u
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no id"))?
        .to_string();
    let created_at = u
        .get("created_at")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| bad("no created_at"))?
        .with_timezone(&Utc);
    let obj = |k: &str| match u.get(k) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let app_metadata = obj("app_metadata");
    let mut as_claims = Map::new();
    as_claims.insert("app_metadata".into(), Value::Object(app_metadata.clone()));
    if let Some(r) = u.get("role") {
        as_claims.insert("role".into(), r.clone());
    }
    Ok(User {
        id,
        email: u
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        roles: Principal::roles_in(&as_claims),
        user_metadata: obj("user_metadata"),
        app_metadata,
        created_at,
    })
}

/// The permissions a token's `app_metadata.permissions` grants: entries of
/// the `action:resource` shape without wildcards (wildcards are granted
/// through configured roles only).
fn claim_grants(claims: &Map<String, Value>, wanted: &Permission) -> bool {
    claims
        .get("app_metadata")
        .and_then(|m| m.get("permissions"))
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter().filter_map(Value::as_str).any(|p| {
                Permission::parse(p)
                    .is_ok_and(|g| g.action != "*" && g.resource != "*" && g.covers(wanted))
            })
        })
}

#[async_trait]
impl Auth for SupabaseAuth {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> AuthCapabilities {
        let mut caps = AuthCapabilities::none();
        caps.sign_up = true;
        caps.password_sign_in = true;
        caps.refresh = true;
        // Tokens are checked locally; with `check_session` the project is
        // also asked whether the token's session still exists.
        caps.revocation_checked = self.config.check_session;
        caps.external_tokens = false;
        caps.sign_out_others = true;
        caps
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        match self
            .api
            .call(Op::Health, Method::GET, "/health", None, None, &[])
            .await
        {
            // GoTrue answers `{version, name, description}`.
            Ok(a)
                if a.body.as_ref().is_some_and(|b| {
                    b.get("version").is_some_and(Value::is_string)
                        || b.get("name").is_some_and(Value::is_string)
                }) =>
            {
                Health::healthy(start.elapsed())
            }
            Ok(_) => Health::unhealthy(
                start.elapsed(),
                "supabase auth: the answer at /auth/v1/health is not GoTrue's",
            ),
            Err(e) => Health::unhealthy(start.elapsed(), e.to_string()),
        }
    }

    async fn sign_up(&self, request: SignUp) -> AuthResult<Session> {
        let op = Op::SignUp;
        Self::check_email(&request.email, op)?;
        Self::check_password(&request.password, op)?;
        Self::check_metadata(&request.user_metadata, op)?;
        let body = json!({
            "email": request.email,
            "password": request.password.expose(),
            "data": request.user_metadata,
        });
        let answer = self
            .api
            .call(
                op,
                Method::POST,
                "/signup",
                None,
                Some(&body),
                &[request.password.expose()],
            )
            .await?;
        Ok(self.session_from(op, answer.body).await?.0)
    }

    async fn sign_in(&self, request: SignIn) -> AuthResult<Session> {
        let op = Op::SignIn;
        Self::check_email(&request.email, op)?;
        Self::check_password(&request.password, op)?;
        let body = json!({
            "email": request.email,
            "password": request.password.expose(),
        });
        let answer = self
            .api
            .call(
                op,
                Method::POST,
                "/token?grant_type=password",
                None,
                Some(&body),
                &[request.password.expose()],
            )
            .await?;
        Ok(self.session_from(op, answer.body).await?.0)
    }

    // The held token stays after a sign-out: signing out again is then
    // answered by the server (`session_not_found`, counted as done), and
    // the revoked token is of no use to anyone.
    async fn sign_out(&self, principal: &Principal) -> AuthResult<()> {
        self.logout(principal, "local", Op::SignOut).await
    }

    async fn sign_out_everywhere(&self, principal: &Principal) -> AuthResult<()> {
        self.logout(principal, "global", Op::SignOut).await
    }

    async fn sign_out_others(&self, principal: &Principal) -> AuthResult<()> {
        self.logout(principal, "others", Op::SignOutOthers).await
    }

    async fn get_user(&self, principal: &Principal) -> AuthResult<User> {
        let op = Op::GetUser;
        let token = self.token_of(principal, op.name())?;
        let answer = self
            .api
            .call(
                op,
                Method::GET,
                "/user",
                Some(&token),
                None,
                &[token.expose()],
            )
            .await?;
        match answer.body {
            Some(Value::Object(u)) => user_from(&u).map_err(|e| e.with_operation(op.name())),
            _ => Err(Error::unavailable(
                "supabase auth: the project's answer to GET /user is not a user",
            )
            .with_operation(op.name())),
        }
    }

    /// GoTrue has no endpoint that reads a session, so the answer is built
    /// from what is known for sure: the verified token's claims (`session_id`,
    /// `sub`; `created_at` is the sign-in time of its `amr` entries, else its
    /// `iat`; `refreshed_at` its `iat` when that is later than the sign-in),
    /// this instance's own refreshes and sign-outs of the session, and, when
    /// this instance holds the session's access token, the project's answer
    /// to `GET /user` with it (a session ended elsewhere reads as revoked at
    /// the time it was found ended).
    async fn get_session(&self, principal: &Principal) -> AuthResult<SessionInfo> {
        let op = "auth.get_session";
        let id = principal.session_id.clone().ok_or_else(|| {
            Error::invalid_input("the principal's token carries no session_id").with_operation(op)
        })?;
        let at = |v: Option<i64>| v.and_then(|t| Utc.timestamp_opt(t, 0).single());
        let iat = at(principal.claims.get("iat").and_then(Value::as_i64));
        let signed_in = at(principal
            .claims
            .get("amr")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .filter_map(|m| m.get("timestamp").and_then(Value::as_i64))
                    .min()
            }));
        let created_at = signed_in.or(iat).ok_or_else(|| {
            Error::invalid_input("the principal's token has neither amr timestamps nor iat")
                .with_operation(op)
        })?;
        let mut seen = self.seen.get(&id).unwrap_or_default();
        if seen.revoked_at.is_none() {
            let held = self
                .tokens
                .get(&id)
                .filter(|h| h.user_id == principal.user_id);
            if let Some(held) = held {
                match self.check_session(held.token.expose()).await {
                    Ok(()) => {}
                    Err(e)
                        if e.context().iter().any(|(k, v)| {
                            *k == truststream_core_auth::REASON
                                && v == truststream_core_auth::SESSION_ENDED
                        }) =>
                    {
                        let now = Utc::now();
                        self.note(&id, |s| {
                            s.revoked_at.get_or_insert(now);
                        });
                        seen.revoked_at = Some(now);
                    }
                    Err(e) => return Err(e.with_operation(op)),
                }
            }
        }
        let by_claims = iat.filter(|t| *t > created_at);
        Ok(SessionInfo {
            id,
            user_id: principal.user_id.clone(),
            created_at,
            refreshed_at: seen.refreshed_at.max(by_claims),
            revoked_at: seen.revoked_at,
        })
    }

    async fn refresh_session(&self, refresh_token: &str) -> AuthResult<Session> {
        let op = Op::Refresh;
        if refresh_token.is_empty()
            || refresh_token.len() > MAX_REFRESH_TOKEN_BYTES
            || refresh_token.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(Error::unauthenticated("invalid refresh token").with_operation(op.name()));
        }
        let body = json!({ "refresh_token": refresh_token });
        let answer = self
            .api
            .call(
                op,
                Method::POST,
                "/token?grant_type=refresh_token",
                None,
                Some(&body),
                &[refresh_token],
            )
            .await?;
        let (session, principal) = self.session_from(op, answer.body).await?;
        if let Some(sid) = &principal.session_id {
            let now = Utc::now();
            self.note(sid, |s| s.refreshed_at = Some(now));
        }
        Ok(session)
    }

    async fn validate_token(&self, access_token: &str) -> AuthResult<Principal> {
        let op = "auth.validate_token";
        let claims = self
            .verifier
            .verify(access_token)
            .await
            .map_err(|e| e.with_operation(op))?;
        let principal = Principal::from_claims(claims).map_err(|e| e.with_operation(op))?;
        if self.config.check_session {
            self.check_session(access_token).await?;
        }
        self.hold(access_token, &principal);
        Ok(principal)
    }

    async fn get_user_roles(&self, principal: &Principal) -> AuthResult<Vec<String>> {
        Ok(principal.roles.clone())
    }

    async fn has_permission(&self, principal: &Principal, permission: &str) -> AuthResult<bool> {
        let wanted =
            Permission::parse(permission).map_err(|e| e.with_operation("auth.has_permission"))?;
        Ok(self.permissions.allows(&principal.roles, permission)?
            || claim_grants(&principal.claims, &wanted))
    }

    async fn update_user(&self, principal: &Principal, update: UserUpdate) -> AuthResult<User> {
        let op = Op::UpdateUser;
        if update.is_empty() {
            return self.get_user(principal).await;
        }
        let mut body = Map::new();
        if let Some(e) = &update.email {
            Self::check_email(e, op)?;
            body.insert("email".into(), json!(e));
        }
        if let Some(p) = &update.password {
            Self::check_password(p, op)?;
            body.insert("password".into(), json!(p.expose()));
        }
        if let Some(m) = &update.user_metadata {
            Self::check_metadata(m, op)?;
            body.insert("data".into(), Value::Object(m.clone()));
        }
        let token = self.token_of(principal, op.name())?;
        let password = update.password.as_ref().map_or("", Secret::expose);
        let answer = self
            .api
            .call(
                op,
                Method::PUT,
                "/user",
                Some(&token),
                Some(&Value::Object(body)),
                &[token.expose(), password],
            )
            .await?;
        match answer.body {
            Some(Value::Object(u)) => user_from(&u).map_err(|e| e.with_operation(op.name())),
            _ => Err(Error::unavailable(
                "supabase auth: the project's answer to PUT /user is not a user",
            )
            .with_operation(op.name())),
        }
    }
}

/// Adds the provider to `reg` under [`TYPE_NAME`]. It keeps nothing in a
/// database: [`AuthDeps::db`] is not used.
pub fn register(reg: &mut AuthRegistry) {
    reg.register(TYPE_NAME, |cfg, _deps: AuthDeps| async move {
        let cfg: SupabaseAuthConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        Ok(Arc::new(SupabaseAuth::new(cfg)?) as Arc<dyn Auth>)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn principal_roles_and_email() {
        let p = Principal::from_claims(claims(json!({
            "sub": "u1", "exp": 2_000_000_000_i64, "email": "a@b.co",
            "role": "authenticated", "session_id": "s1",
            "app_metadata": {"roles": ["member", 5, "admin"]},
        })))
        .unwrap();
        assert_eq!(p.roles, ["member", "admin"]);
        assert_eq!(p.email.as_deref(), Some("a@b.co"));
        assert_eq!(p.session_id.as_deref(), Some("s1"));
        let p = Principal::from_claims(claims(
            json!({"sub": "u1", "exp": 10, "role": "authenticated", "email": ""}),
        ))
        .unwrap();
        assert_eq!(p.roles, ["authenticated"]);
        assert_eq!(p.email, None);
        assert!(Principal::from_claims(claims(json!({"exp": 10}))).is_err());
        assert!(Principal::from_claims(claims(json!({"sub": "u", "exp": "10"}))).is_err());
    }

    #[test]
    fn claim_permissions_without_wildcards() {
        let c = claims(json!({"app_metadata": {"permissions": ["read:agents", "*:users", "bad"]}}));
        let want = |p| Permission::parse(p).unwrap();
        assert!(claim_grants(&c, &want("read:agents")));
        assert!(!claim_grants(&c, &want("read:users")));
        assert!(!claim_grants(&c, &want("delete:users")));
    }

    #[test]
    fn users_need_id_and_created_at() {
        let u = user_from(&claims(json!({
            "id": "u", "email": "a@b.co", "created_at": "2024-01-01T00:00:00.000000Z",
            "role": "authenticated", "app_metadata": {"provider": "email"},
        })))
        .unwrap();
        assert_eq!(u.roles, ["authenticated"]);
        assert!(user_from(&claims(json!({"id": "u"}))).is_err());
        assert!(user_from(&claims(json!({"created_at": "2024-01-01T00:00:00Z"}))).is_err());
    }
}
