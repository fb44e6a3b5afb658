#![doc = include_str!("../README.md")]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use truststream_core_auth::{Auth, AuthResult, ErrorKind, Permission, Principal};

/// The guide's `requireAuth(permission)`: a layer that admits requests with
/// a valid bearer token (and, when given, the permission `action:resource`).
/// A malformed permission is `InvalidInput` here, at start-up, not per
/// request.
pub fn require_auth(auth: Arc<dyn Auth>, permission: Option<&str>) -> AuthResult<RequireAuthLayer> {
    let layer = RequireAuthLayer::new(auth);
    match permission {
        Some(p) => layer.with_permission(p),
        None => Ok(layer),
    }
}

/// A [`tower_layer::Layer`] that authenticates requests; see [`require_auth`].
#[derive(Clone)]
pub struct RequireAuthLayer {
    auth: Arc<dyn Auth>,
    permission: Option<Arc<str>>,
}

impl RequireAuthLayer {
    /// Admits any request with a valid bearer token.
    pub fn new(auth: Arc<dyn Auth>) -> Self {
        RequireAuthLayer {
            auth,
            permission: None,
        }
    }

    /// Also requires `permission` (`action:resource`, `*` wildcards).
    pub fn with_permission(mut self, permission: &str) -> AuthResult<Self> {
        Permission::parse(permission)?;
        self.permission = Some(permission.into());
        Ok(self)
    }
}

impl std::fmt::Debug for RequireAuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireAuthLayer")
            .field("auth", &self.auth.info())
            .field("permission", &self.permission)
            .finish()
    }
}

impl<S> tower_layer::Layer<S> for RequireAuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RequireAuthLayer`] wraps around the inner one.
#[derive(Clone, Debug)]
pub struct RequireAuth<S> {
    inner: S,
    layer: RequireAuthLayer,
}

impl<S, B> tower_service::Service<Request<B>> for RequireAuth<S>
where
    S: tower_service::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone is not ready; the ready one goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            match authorize(&layer, req.headers()).await {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

async fn authorize(
    layer: &RequireAuthLayer,
    headers: &HeaderMap,
) -> Result<Principal, AuthRejection> {
    let token = bearer_token(headers).ok_or(AuthRejection::Missing)?;
    let principal = layer.auth.validate_token(token).await.map_err(|e| {
        tracing::debug!(kind = %e.kind(), reason = e.message(), "bearer token refused");
        AuthRejection::from_kind(e.kind(), AuthRejection::Invalid)
    })?;
    if let Some(p) = &layer.permission {
        let allowed = layer
            .auth
            .has_permission(&principal, p)
            .await
            .map_err(|e| {
                tracing::debug!(kind = %e.kind(), reason = e.message(), "permission check failed");
                AuthRejection::from_kind(e.kind(), AuthRejection::Internal)
            })?;
        if !allowed {
            tracing::debug!(user_id = %principal.user_id, permission = %p, "permission denied");
            return Err(AuthRejection::Forbidden(p.clone()));
        }
    }
    Ok(principal)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
/// None when the header is missing, repeated, not UTF-8, another scheme, or
/// the token is empty or contains spaces.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// Why a request was refused; its response is the JSON error of the
/// crate's table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No usable bearer token: 401.
    Missing,
    /// The token did not verify: 401.
    Invalid,
    /// The permission is missing: 403.
    Forbidden(Arc<str>),
    /// The auth provider could not answer: 503.
    Unavailable,
    /// Anything else: 500.
    Internal,
}

impl AuthRejection {
    /// The rejection for an auth error of `kind`; `otherwise` for the kinds
    /// that mean "this token or principal is not good".
    fn from_kind(kind: ErrorKind, otherwise: AuthRejection) -> AuthRejection {
        match kind {
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::RateLimited => {
                AuthRejection::Unavailable
            }
            ErrorKind::Unauthenticated | ErrorKind::InvalidInput | ErrorKind::NotFound => {
                AuthRejection::Invalid
            }
            ErrorKind::Unsupported => otherwise,
            _ => AuthRejection::Internal,
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let (status, body, challenge) = match &self {
            AuthRejection::Missing => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "authentication required", "code": "unauthenticated"}),
                Some("Bearer"),
            ),
            AuthRejection::Invalid => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid token", "code": "invalid_token"}),
                Some("Bearer error=\"invalid_token\""),
            ),
            AuthRejection::Forbidden(p) => (
                StatusCode::FORBIDDEN,
                json!({"error": "insufficient permissions", "code": "permission_denied", "permission": &**p}),
                None,
            ),
            AuthRejection::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "authentication unavailable", "code": "unavailable"}),
                None,
            ),
            AuthRejection::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "authentication failed", "code": "internal"}),
                None,
            ),
        };
        let mut resp = Response::new(Body::from(body.to_string()));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(c) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

/// The verified principal of a request that passed [`RequireAuthLayer`].
/// Without the layer in front there is none, and the request is answered
/// 401 (never served unauthenticated).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Authenticated)
            .ok_or(AuthRejection::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(bearer_token(&h("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer_token(&h("bearer abc")), Some("abc"));
        for bad in ["Bearer", "Bearer ", "Basic abc", "Bearer a b", "abc"] {
            assert_eq!(bearer_token(&h(bad)), None, "{bad:?}");
        }
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        let mut two = h("Bearer a");
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer_token(&two), None);
    }
}
