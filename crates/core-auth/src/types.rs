//! Data types of the auth interface.

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Sign-up request.
#[derive(Debug, Clone, Deserialize)]
pub struct SignUp {
    /// Email address.
    pub email: String,
    /// Password (never logged).
    pub password: Secret,
    /// Data the user may set about themselves.
    #[serde(default)]
    pub user_metadata: serde_json::Map<String, serde_json::Value>,
}

impl SignUp {
    /// A request with no metadata.
    pub fn new(email: impl Into<String>, password: impl Into<Secret>) -> Self {
        SignUp {
            email: email.into(),
            password: password.into(),
            user_metadata: Default::default(),
        }
    }
}

/// Sign-in request.
#[derive(Debug, Clone, Deserialize)]
pub struct SignIn {
    /// Email address.
    pub email: String,
    /// Password (never logged).
    pub password: Secret,
}

impl SignIn {
    /// A request.
    pub fn new(email: impl Into<String>, password: impl Into<Secret>) -> Self {
        SignIn {
            email: email.into(),
            password: password.into(),
        }
    }
}

/// Changes the signed-in user makes to their own account (GoTrue's
/// `PUT /user`). `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserUpdate {
    /// A new email address: malformed is [`crate::ErrorKind::InvalidInput`],
    /// another user's is [`crate::ErrorKind::Conflict`].
    #[serde(default)]
    pub email: Option<String>,
    /// A new password (never logged), held to the provider's password
    /// policy.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Merged into the user's `user_metadata` as GoTrue does: each key is
    /// set to its value, and a key whose value is `null` is removed.
    #[serde(default)]
    pub user_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl UserUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.password.is_none() && self.user_metadata.is_none()
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// Email address.
    pub email: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Data the user may set.
    pub user_metadata: serde_json::Map<String, serde_json::Value>,
    /// Data only the application may set.
    pub app_metadata: serde_json::Map<String, serde_json::Value>,
    /// Registration time.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A signed-in session, as handed to the client.
#[derive(Clone, Serialize)]
pub struct Session {
    /// Short-lived access token (a JWT).
    pub access_token: Secret,
    /// Opaque single-use refresh token.
    pub refresh_token: Secret,
    /// Always `"bearer"`.
    pub token_type: &'static str,
    /// When the access token expires.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The user.
    pub user: User,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_at", &self.expires_at)
            .field("user", &self.user.id)
            .finish()
    }
}

/// A session as stored (no tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// When it was opened.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it was last refreshed.
    pub refreshed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Who made a request: what a verified access token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    /// The user id (`sub`).
    pub user_id: String,
    /// Email, if the token carries one.
    pub email: Option<String>,
    /// Roles (`app_metadata.roles`, or `role`).
    pub roles: Vec<String>,
    /// Session id, for tokens this provider issued.
    pub session_id: Option<String>,
    /// Token expiry.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Every claim of the token.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Principal {
    /// The principal a **verified** token's `claims` describe: `sub` (the
    /// user id, required), `exp` (required, seconds), `email`, `session_id`,
    /// and the roles [`Principal::roles_in`] reads. Empty strings count as
    /// absent. A missing `sub` or `exp` is
    /// [`crate::ErrorKind::Unauthenticated`]. The one reading every
    /// provider shares: verify the signature first, then call this.
    ///
    /// ```
    /// use truststream_core_auth::Principal;
    /// let claims = serde_json::json!({"sub": "u1", "exp": 4102444800_i64,
    ///     "role": "authenticated", "app_metadata": {"roles": ["admin"]}});
    /// let p = Principal::from_claims(claims.as_object().unwrap().clone()).unwrap();
    /// assert_eq!((p.user_id.as_str(), p.roles), ("u1", vec!["admin".to_string()]));
    /// ```
    pub fn from_claims(
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> crate::AuthResult<Principal> {
        use chrono::TimeZone as _;
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let user_id = text("sub")
            .ok_or_else(|| crate::Error::unauthenticated("access token lacks a subject"))?;
        let expires_at = claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .and_then(|e| chrono::Utc.timestamp_opt(e, 0).single())
            .ok_or_else(|| crate::Error::unauthenticated("access token has an invalid expiry"))?;
        Ok(Principal {
            user_id,
            email: text("email"),
            roles: Principal::roles_in(&claims),
            session_id: text("session_id"),
            expires_at,
            claims,
        })
    }

    /// The roles claims name: the strings of `app_metadata.roles` when it
    /// is a list, else `role` (when not empty).
    pub fn roles_in(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
        match claims
            .get("app_metadata")
            .and_then(|m| m.get("roles"))
            .and_then(serde_json::Value::as_array)
        {
            Some(list) => list
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
            None => claims
                .get("role")
                .and_then(serde_json::Value::as_str)
                .filter(|r| !r.is_empty())
                .map(|r| vec![r.to_string()])
                .unwrap_or_default(),
        }
    }
}

/// Capabilities of an auth provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuthCapabilities {
    /// `sign_up`.
    pub sign_up: bool,
    /// `sign_in` with email and password.
    pub password_sign_in: bool,
    /// `refresh_session` with rotating refresh tokens.
    pub refresh: bool,
    /// Tokens from external identity providers are verified.
    pub external_tokens: bool,
    /// Revoked sessions stop validating before their tokens expire.
    pub revocation_checked: bool,
    /// `sign_out_others`: every session of a user but the current one
    /// can be revoked.
    pub sign_out_others: bool,
    /// Tables the provider keeps in the application's database (users,
    /// sessions, refresh-token hashes). They hold credentials: other layers
    /// must never expose them (realtime-ws refuses to publish them).
    pub private_tables: Vec<String>,
}

impl AuthCapabilities {
    /// Everything off.
    pub const fn none() -> Self {
        AuthCapabilities {
            sign_up: false,
            password_sign_in: false,
            refresh: false,
            external_tokens: false,
            revocation_checked: false,
            sign_out_others: false,
            private_tables: Vec::new(),
        }
    }
}

impl Default for AuthCapabilities {
    fn default() -> Self {
        Self::none()
    }
}
