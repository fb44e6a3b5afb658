//! Who is calling: the API key and bearer token of a request.

use axum::http::HeaderMap;
use truststream_core::{Error, ErrorKind};
use truststream_core_auth::Principal;

use crate::keys::KeyRole;
use crate::ServeState;

/// The database role a request runs as (Supabase's three roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The anon key, no user.
    Anon,
    /// A signed-in user's access token.
    Authenticated,
    /// The service-role key: bypasses policies.
    ServiceRole,
}

impl Role {
    /// The PostgreSQL role name (`anon`, `authenticated`, `service_role`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Anon => "anon",
            Role::Authenticated => "authenticated",
            Role::ServiceRole => "service_role",
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The role the request runs as.
    pub role: Role,
    /// The signed-in user, for [`Role::Authenticated`].
    pub principal: Option<Principal>,
}

impl Caller {
    /// The signed-in user's id.
    pub fn user_id(&self) -> Option<&str> {
        self.principal.as_ref().map(|p| p.user_id.as_str())
    }

    /// The JWT claims PostgreSQL policies see as `request.jwt.claims`:
    /// the user's token claims, or `{"role": "anon"|"service_role"}`.
    pub fn claims(&self) -> serde_json::Map<String, serde_json::Value> {
        match &self.principal {
            Some(p) => {
                let mut c = p.claims.clone();
                c.entry("sub")
                    .or_insert_with(|| serde_json::Value::String(p.user_id.clone()));
                c.insert("role".into(), self.role.name().into());
                c
            }
            None => {
                let mut c = serde_json::Map::new();
                c.insert("role".into(), self.role.name().into());
                c
            }
        }
    }
}

/// Why a request has no caller.
#[derive(Debug)]
pub enum CallerError {
    /// No `apikey` header (or query parameter where allowed).
    MissingApiKey,
    /// An `apikey` that is neither key.
    InvalidApiKey,
    /// A bearer token that is not a valid access token (forged, expired,
    /// revoked): the auth provider's `Unauthenticated` error.
    InvalidToken(Error),
    /// The auth provider could not check the token (down, timed out).
    AuthUnavailable(Error),
}

impl CallerError {
    /// A message safe to show the caller (no provider detail).
    pub fn message(&self) -> &'static str {
        match self {
            CallerError::MissingApiKey => "No API key found in request",
            CallerError::InvalidApiKey => "Invalid API key",
            CallerError::InvalidToken(_) => "Invalid or expired JWT",
            CallerError::AuthUnavailable(_) => "The auth service is unavailable",
        }
    }

    /// The HTTP status (401, or 503 when auth is down).
    pub fn status(&self) -> axum::http::StatusCode {
        match self {
            CallerError::AuthUnavailable(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE,
            _ => axum::http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// The `apikey` header, or the `apikey` query parameter (`query_key`) for
/// the routes that accept one (WebSocket upgrades, links).
pub fn api_key<'a>(headers: &'a HeaderMap, query_key: Option<&'a str>) -> Option<&'a str> {
    headers
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .or(query_key)
        .filter(|k| !k.is_empty())
}

/// The bearer token of the `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Identifies the caller: the `apikey` must be one of the two keys; the
/// bearer token (when present) is either key or a user's access token,
/// checked by the auth provider. Without a bearer token the `apikey`'s role
/// applies.
pub async fn identify(
    state: &ServeState,
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> Result<Caller, CallerError> {
    let key = api_key(headers, query_key).ok_or(CallerError::MissingApiKey)?;
    let key_role = state.keys.role_of(key).ok_or(CallerError::InvalidApiKey)?;
    let Some(token) = bearer(headers) else {
        return Ok(key_caller(key_role));
    };
    if let Some(role) = state.keys.role_of(token) {
        return Ok(key_caller(role));
    }
    match state.auth.validate_token(token).await {
        Ok(principal) => Ok(Caller {
            role: Role::Authenticated,
            principal: Some(principal),
        }),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::RateLimited
            ) =>
        {
            Err(CallerError::AuthUnavailable(e))
        }
        Err(e) => Err(CallerError::InvalidToken(e)),
    }
}

fn key_caller(role: KeyRole) -> Caller {
    Caller {
        role: match role {
            KeyRole::Anon => Role::Anon,
            KeyRole::ServiceRole => Role::ServiceRole,
        },
        principal: None,
    }
}
