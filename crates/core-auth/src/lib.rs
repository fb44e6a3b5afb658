#![doc = include_str!("../README.md")]

#[cfg(feature = "jsonwebtoken")]
mod jwt;
mod permission;
mod types;

use async_trait::async_trait;

#[cfg(feature = "jsonwebtoken")]
pub use jwt::ensure_crypto_provider;
pub use permission::{Permission, RolePermissions};
pub use truststream_core::{Error, ErrorKind, Health, HealthStatus, ProviderInfo, Secret};
pub use types::{
    AuthCapabilities, Principal, Session, SessionInfo, SignIn, SignUp, User, UserUpdate,
};

/// The [`Error::context`] key under which [`Auth::validate_token`] may say
/// why a token was refused (see [`SESSION_ENDED`]).
pub const REASON: &str = "reason";

/// The [`REASON`] of a token whose signature and claims are good but whose
/// session has ended (signed out, revoked, expired): Supabase Auth answers
/// such a token with `session_not_found`, which clients take as "signed
/// out" rather than as a bad token.
pub const SESSION_ENDED: &str = "session_ended";

/// `Result` of auth operations.
pub type AuthResult<T> = Result<T, Error>;
/// The auth error type (the shared TrustStream [`Error`]).
pub type AuthError = Error;

/// What an auth provider may be built with: the configured database, where
/// issuing providers keep users and sessions.
#[derive(Clone)]
pub struct AuthDeps {
    /// The configured database provider.
    pub db: Option<std::sync::Arc<dyn truststream_core_db::Database>>,
}

/// Auth provider factories by type name (see [`truststream_core::Registry`]).
pub type AuthRegistry = truststream_core::Registry<dyn Auth, AuthDeps>;

/// An auth provider.
///
/// Token and credential failures are [`ErrorKind::Unauthenticated`] with a
/// message that does not say which part was wrong (no user enumeration);
/// a valid principal lacking a permission is [`ErrorKind::PermissionDenied`].
#[async_trait]
pub trait Auth: Send + Sync + 'static {
    /// Provider type name and crate version.
    fn info(&self) -> ProviderInfo;

    /// What this provider can do.
    fn capabilities(&self) -> AuthCapabilities;

    /// Probes the provider and reports status and latency. Never fails.
    async fn health(&self) -> Health;

    /// Shuts the provider down for good: stops its background tasks
    /// (e.g. a revocation feed) and closes the connections it owns (not
    /// the database it was given). Idempotent. The default does nothing:
    /// for providers with nothing to close.
    async fn close(&self) -> AuthResult<()> {
        Ok(())
    }

    /// Registers a user and signs them in. A taken email is
    /// [`ErrorKind::Conflict`]; a malformed email or a password outside the
    /// configured bounds is [`ErrorKind::InvalidInput`].
    /// Requires [`AuthCapabilities::sign_up`].
    async fn sign_up(&self, request: SignUp) -> AuthResult<Session>;

    /// Checks credentials and opens a session.
    /// Requires [`AuthCapabilities::password_sign_in`].
    async fn sign_in(&self, request: SignIn) -> AuthResult<Session>;

    /// Revokes the principal's session.
    async fn sign_out(&self, principal: &Principal) -> AuthResult<()>;

    /// Revokes every session of the principal's user.
    async fn sign_out_everywhere(&self, principal: &Principal) -> AuthResult<()>;

    /// The principal's user (the guide's `getCurrentUser`).
    async fn get_user(&self, principal: &Principal) -> AuthResult<User>;

    /// The principal's session (the guide's `getSession`).
    async fn get_session(&self, principal: &Principal) -> AuthResult<SessionInfo>;

    /// Exchanges a refresh token for a new session (rotating the refresh
    /// token). Requires [`AuthCapabilities::refresh`].
    async fn refresh_session(&self, refresh_token: &str) -> AuthResult<Session>;

    /// Verifies an access token and returns who it belongs to. A provider
    /// that checks sessions marks a good token of an ended session with the
    /// context pair ([`REASON`], [`SESSION_ENDED`]).
    async fn validate_token(&self, access_token: &str) -> AuthResult<Principal>;

    /// The principal's roles.
    async fn get_user_roles(&self, principal: &Principal) -> AuthResult<Vec<String>>;

    /// Whether the principal holds `permission` (`action:resource`). A
    /// malformed permission is [`ErrorKind::InvalidInput`].
    async fn has_permission(&self, principal: &Principal, permission: &str) -> AuthResult<bool>;

    /// Changes the principal's own user: email, password, `user_metadata`
    /// (see [`UserUpdate`]), and returns the user as it now is. A malformed
    /// email or a password outside the configured bounds is
    /// [`ErrorKind::InvalidInput`]; an email another user has is
    /// [`ErrorKind::Conflict`]. A new password ends every other session of
    /// the user, as GoTrue does (their refresh tokens stop working and,
    /// where [`AuthCapabilities::revocation_checked`], their access tokens
    /// stop validating); the principal's own session stays open, and only a
    /// live session may change the password ([`ErrorKind::Unauthenticated`]
    /// otherwise). Other changes leave every session open.
    ///
    /// The default is [`ErrorKind::Unsupported`], for providers whose users
    /// are kept elsewhere.
    async fn update_user(&self, principal: &Principal, update: UserUpdate) -> AuthResult<User> {
        let _ = (principal, update);
        Err(Error::unsupported(format!(
            "auth provider {} does not update users",
            self.info().name
        ))
        .with_operation("auth.update_user"))
    }

    /// Revokes every session of the principal's user except the
    /// principal's own (GoTrue's `POST /logout?scope=others`): the other
    /// sessions' refresh tokens stop working (and, where
    /// [`AuthCapabilities::revocation_checked`], their access tokens stop
    /// validating), while the principal's session stays valid and
    /// refreshable. Sessions of other users are untouched.
    /// Requires [`AuthCapabilities::sign_out_others`].
    ///
    /// The default is [`ErrorKind::Unsupported`] and changes nothing.
    async fn sign_out_others(&self, principal: &Principal) -> AuthResult<()> {
        let _ = principal;
        Err(Error::unsupported(format!(
            "auth provider {} cannot end a user's other sessions while keeping the current one",
            self.info().name
        ))
        .with_operation("auth.sign_out_others"))
    }

    /// The provider's public signing keys as a JWKS document
    /// (`{"keys": [...]}`), what `/.well-known/jwks.json` serves. The
    /// default, and every provider signing with a shared secret, has none.
    fn public_keys(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [] })
    }
}
