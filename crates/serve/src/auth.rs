//! `/auth/v1`: the part of Supabase Auth's (GoTrue's) HTTP API that
//! `@supabase/auth-js` uses for email and password accounts, over the
//! configured [`Auth`](truststream_core_auth::Auth) provider.
//!
//! Sign-up, password sign-in, refresh, the current user (read and update),
//! sign-out, settings, health and the JWKS document. Errors come in both
//! shapes the client reads: `{code: <status>, error_code, msg}` by default,
//! and `{code: <error_code>, message}` when the request says
//! `X-Supabase-Api-Version: 2024-01-01` or later (the answer then carries
//! that header, which is what makes the client read `code`); every error
//! also carries `x-sb-error-code`. Messages never carry provider detail.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use truststream_core::{Error, ErrorKind, Secret};
use truststream_core_auth::{
    Principal, Session, SignIn, SignUp, User, UserUpdate, REASON, SESSION_ENDED,
};

use crate::caller::{api_key, bearer};
use crate::keys::KeyRole;
use crate::ServeState;

/// The request (and response) header naming the API version.
const API_VERSION_HEADER: &str = "x-supabase-api-version";
/// The version whose error shape is `{code: <string>, message}`.
const API_VERSION_2024: &str = "2024-01-01";

/// The routes under `/auth/v1`.
pub(crate) fn router(_state: Arc<ServeState>) -> Router<Arc<ServeState>> {
    Router::new()
        .route("/signup", post(signup))
        .route("/token", post(token))
        .route("/user", get(get_user).put(put_user))
        .route("/logout", post(logout))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/settings", get(settings))
        .route("/health", get(health))
        .fallback(not_found)
}

/// The error shape the caller reads: chosen by `X-Supabase-Api-Version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `{code: <http status>, error_code, msg}`.
    Legacy,
    /// `{code: <error_code>, message}`, with the version header echoed.
    V2024,
}

impl Shape {
    fn of(headers: &HeaderMap) -> Shape {
        let v = headers
            .get(API_VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("");
        // `YYYY-MM-DD` compares as text; anything else is the legacy shape.
        let dated = v.len() == 10
            && v.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            });
        if dated && v >= API_VERSION_2024 {
            Shape::V2024
        } else {
            Shape::Legacy
        }
    }
}

/// An error answer of `/auth/v1`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `weak_password.reasons`, for `weak_password`.
    weak_reasons: Option<Vec<&'static str>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            weak_reasons: None,
        }
    }

    fn bad_json() -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "Could not parse request body as JSON",
        )
    }

    fn validation(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", message)
    }

    fn invalid_credentials() -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_credentials",
            "Invalid login credentials",
        )
    }

    fn refresh_token_not_found() -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        )
    }

    fn bad_jwt() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_jwt",
            "invalid JWT: unable to parse or verify signature, or the token is expired",
        )
    }

    fn weak_password(message: impl Into<String>) -> Self {
        ApiError {
            weak_reasons: Some(vec!["length"]),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", message)
        }
    }

    /// The answer to a provider error that no call-specific rule caught:
    /// by kind, with the provider's message only where it is written for
    /// the caller (invalid input, conflicts).
    fn from_provider(e: &Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidInput => ApiError::validation(e.message().to_string()),
            ErrorKind::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                e.message().to_string(),
            ),
            ErrorKind::Conflict => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "email_exists",
                "A user with this email address has already been registered",
            ),
            ErrorKind::Unauthenticated => ApiError::bad_jwt(),
            ErrorKind::PermissionDenied => {
                ApiError::new(StatusCode::FORBIDDEN, "not_admin", "User not allowed")
            }
            ErrorKind::NotFound => ApiError::new(
                StatusCode::FORBIDDEN,
                "user_not_found",
                "User from sub claim in JWT does not exist",
            ),
            ErrorKind::RateLimited => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "over_request_rate_limit",
                "Request rate limit reached",
            ),
            ErrorKind::Unsupported => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_supported",
                "The configured auth provider does not support this operation",
            ),
            ErrorKind::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                "Processing this request timed out, please retry after a moment",
            ),
            ErrorKind::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "The auth service is unavailable, please retry after a moment",
            ),
            _ => {
                tracing::error!(error = %e, "auth: unexpected provider error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unexpected_failure",
                    "Unexpected failure, please check server logs for more information",
                )
            }
        }
    }

    /// Whether `e` is one of the kinds every call answers the same way
    /// (the service is down, slow, or refusing for load).
    fn is_service_error(e: &Error) -> bool {
        matches!(
            e.kind(),
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::RateLimited
        )
    }

    fn into_response(self, shape: Shape) -> Response {
        let mut body = match shape {
            Shape::Legacy => json!({
                "code": self.status.as_u16(),
                "error_code": self.code,
                "msg": self.message,
            }),
            Shape::V2024 => json!({
                "code": self.code,
                "message": self.message,
            }),
        };
        if let (Some(reasons), Some(obj)) = (&self.weak_reasons, body.as_object_mut()) {
            obj.insert("weak_password".into(), json!({ "reasons": reasons }));
        }
        let mut res = (self.status, Json(body)).into_response();
        res.headers_mut()
            .insert("x-sb-error-code", HeaderValue::from_static(self.code));
        if shape == Shape::V2024 {
            res.headers_mut().insert(
                API_VERSION_HEADER,
                HeaderValue::from_static(API_VERSION_2024),
            );
        }
        res
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Answers `result` in the caller's error shape; successes carry the API
/// version header too, as GoTrue's do.
fn respond(headers: &HeaderMap, result: ApiResult<Response>) -> Response {
    let shape = Shape::of(headers);
    let mut res = match result {
        Ok(r) => r,
        Err(e) => return e.into_response(shape),
    };
    if shape == Shape::V2024 {
        res.headers_mut().insert(
            API_VERSION_HEADER,
            HeaderValue::from_static(API_VERSION_2024),
        );
    }
    res
}

/// The `apikey` must be one of the server's two keys.
fn require_api_key(state: &ServeState, headers: &HeaderMap) -> ApiResult<KeyRole> {
    let key = api_key(headers, None).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_api_key",
            "No API key found in request",
        )
    })?;
    state.keys.role_of(key).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid API key",
        )
    })
}

/// The user's access token: the bearer token, verified by the provider.
async fn require_user(state: &ServeState, headers: &HeaderMap) -> ApiResult<Principal> {
    require_api_key(state, headers)?;
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_authorization",
            "This endpoint requires a valid Bearer token",
        )
    })?;
    if state.keys.role_of(token).is_some() {
        // An API key is not a user's token (it has no `sub`).
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_jwt",
            "invalid claim: missing sub claim",
        ));
    }
    state.auth.validate_token(token).await.map_err(|e| {
        let ended = e
            .context()
            .iter()
            .any(|(k, v)| *k == REASON && v == SESSION_ENDED);
        if ApiError::is_service_error(&e) {
            ApiError::from_provider(&e)
        } else if ended {
            // auth-js takes this one as "signed out" and clears its session.
            ApiError::new(
                StatusCode::FORBIDDEN,
                "session_not_found",
                "Session from session_id claim in JWT does not exist",
            )
        } else {
            ApiError::bad_jwt()
        }
    })
}

/// Reads the body as a JSON object, at most `max_json_body_bytes`.
async fn json_body(
    state: &ServeState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Map<String, Value>> {
    let limit = state.config.max_json_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("Request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // The only way reading a body of a live connection fails here is the
    // limit (a dropped connection has nobody to answer).
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "The request body must be a JSON object",
        )),
        Err(_) => Err(ApiError::bad_json()),
    }
}

/// An optional string field; another type is a bad body.
fn opt_str(body: &Map<String, Value>, key: &str) -> ApiResult<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("Could not read the request body: `{key}` must be a string"),
        )),
    }
}

/// The `data` object (user metadata); absent or `null` is none.
fn opt_data(body: &Map<String, Value>) -> ApiResult<Option<Map<String, Value>>> {
    match body.get("data") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "Could not read the request body: `data` must be an object",
        )),
    }
}

/// Email and password of a sign-up or sign-in body. Phone accounts are
/// not offered (`/settings` says so).
fn credentials(body: &Map<String, Value>) -> ApiResult<(String, String)> {
    let email = opt_str(body, "email")?.filter(|e| !e.trim().is_empty());
    let phone = opt_str(body, "phone")?.filter(|p| !p.trim().is_empty());
    let password = opt_str(body, "password")?;
    let Some(email) = email else {
        if phone.is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "phone_provider_disabled",
                "Phone logins are disabled",
            ));
        }
        return Err(ApiError::validation("An email address is required"));
    };
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Err(ApiError::validation("A password is required"));
    };
    Ok((email, password))
}

/// A sign-up's or password change's `InvalidInput`: a password outside the
/// policy is `weak_password` (422), anything else (the email)
/// `validation_failed` (400).
fn input_error(e: &Error) -> ApiError {
    if e.kind() == ErrorKind::InvalidInput && e.message().to_lowercase().contains("password") {
        ApiError::weak_password(e.message().to_string())
    } else {
        ApiError::from_provider(e)
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A user as GoTrue shows one. Email accounts here are confirmed when
/// made (`mailer_autoconfirm`); `updated_at` is the registration time, as
/// the interface keeps no other.
fn user_json(u: &User, last_sign_in_at: Option<DateTime<Utc>>) -> Value {
    let mut app_metadata = Map::new();
    app_metadata.insert("provider".into(), json!("email"));
    app_metadata.insert("providers".into(), json!(["email"]));
    for (k, v) in &u.app_metadata {
        app_metadata.insert(k.clone(), v.clone());
    }
    if !u.roles.is_empty() {
        app_metadata.insert("roles".into(), json!(u.roles));
    }
    let created = ts(u.created_at);
    json!({
        "id": u.id,
        "aud": "authenticated",
        "role": "authenticated",
        "email": u.email,
        "phone": "",
        "app_metadata": app_metadata,
        "user_metadata": u.user_metadata,
        "identities": [],
        "created_at": created,
        "updated_at": created,
        "confirmed_at": created,
        "email_confirmed_at": created,
        "last_sign_in_at": last_sign_in_at.map(ts),
        "is_anonymous": false,
    })
}

/// A session as GoTrue answers one.
fn session_json(s: &Session) -> Value {
    let now = Utc::now();
    let expires_in = (s.expires_at - now).num_seconds().max(0);
    json!({
        "access_token": s.access_token.expose(),
        "token_type": "bearer",
        "expires_in": expires_in,
        "expires_at": s.expires_at.timestamp(),
        "refresh_token": s.refresh_token.expose(),
        "user": user_json(&s.user, Some(now)),
    })
}

/// When the principal's token was issued (its sign-in or last refresh).
fn issued_at(p: &Principal) -> Option<DateTime<Utc>> {
    let iat = p.claims.get("iat").and_then(Value::as_i64)?;
    DateTime::from_timestamp(iat, 0)
}

/// `POST /signup` `{email, password, data}`: makes the user and signs them
/// in (emails are confirmed on sign-up).
async fn signup(State(state): State<Arc<ServeState>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let role = require_api_key(&state, &headers)?;
        // Disabled sign-up leaves making users to the operator's key.
        if state.config.auth.disable_signup && role != KeyRole::ServiceRole {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "signup_disabled",
                "Signups not allowed for this instance",
            ));
        }
        let body = json_body(&state, &headers, body).await?;
        let (email, password) = credentials(&body)?;
        let mut request = SignUp::new(email, Secret::new(password));
        request.user_metadata = opt_data(&body)?.unwrap_or_default();
        match state.auth.sign_up(request).await {
            Ok(session) => Ok(Json(session_json(&session)).into_response()),
            Err(e) if e.kind() == ErrorKind::Conflict => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "user_already_exists",
                "User already registered",
            )),
            Err(e) if e.kind() == ErrorKind::Unsupported => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "signup_disabled",
                "Signups not allowed for this instance",
            )),
            Err(e) => Err(input_error(&e)),
        }
    }
    .await;
    respond(&headers, result)
}

/// `POST /token?grant_type=password|refresh_token`.
async fn token(
    State(state): State<Arc<ServeState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        require_api_key(&state, &headers)?;
        let grant = query.get("grant_type").map(String::as_str).unwrap_or("");
        if !matches!(grant, "password" | "refresh_token") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant type: only password and refresh_token are offered",
            ));
        }
        let body = json_body(&state, &headers, body).await?;
        let session = if grant == "password" {
            let (email, password) = credentials(&body).map_err(|e| {
                if e.code == "validation_failed" {
                    ApiError::invalid_credentials()
                } else {
                    e
                }
            })?;
            state
                .auth
                .sign_in(SignIn::new(email, Secret::new(password)))
                .await
                .map_err(|e| {
                    if ApiError::is_service_error(&e) {
                        ApiError::from_provider(&e)
                    } else if matches!(
                        e.kind(),
                        ErrorKind::Unauthenticated | ErrorKind::InvalidInput | ErrorKind::NotFound
                    ) {
                        ApiError::invalid_credentials()
                    } else {
                        ApiError::from_provider(&e)
                    }
                })?
        } else {
            let token = opt_str(&body, "refresh_token")?
                .filter(|t| !t.is_empty())
                .ok_or_else(ApiError::refresh_token_not_found)?;
            state.auth.refresh_session(&token).await.map_err(|e| {
                if matches!(
                    e.kind(),
                    ErrorKind::Unauthenticated | ErrorKind::InvalidInput | ErrorKind::NotFound
                ) {
                    ApiError::refresh_token_not_found()
                } else {
                    ApiError::from_provider(&e)
                }
            })?
        };
        Ok(Json(session_json(&session)).into_response())
    }
    .await;
    respond(&headers, result)
}

/// `GET /user`: the signed-in user.
async fn get_user(State(state): State<Arc<ServeState>>, headers: HeaderMap) -> Response {
    let result = async {
        let principal = require_user(&state, &headers).await?;
        let user = state
            .auth
            .get_user(&principal)
            .await
            .map_err(|e| ApiError::from_provider(&e))?;
        Ok(Json(user_json(&user, issued_at(&principal))).into_response())
    }
    .await;
    respond(&headers, result)
}

/// `PUT /user` `{email?, password?, data?}`: changes the signed-in user;
/// `data` is merged into `user_metadata` (a `null` value removes its key).
async fn put_user(
    State(state): State<Arc<ServeState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let principal = require_user(&state, &headers).await?;
        let body = json_body(&state, &headers, body).await?;
        if opt_str(&body, "phone")?.is_some_and(|p| !p.is_empty()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "phone_provider_disabled",
                "Phone logins are disabled",
            ));
        }
        let update = UserUpdate {
            email: opt_str(&body, "email")?.filter(|e| !e.is_empty()),
            password: opt_str(&body, "password")?
                .filter(|p| !p.is_empty())
                .map(Secret::new),
            user_metadata: opt_data(&body)?,
        };
        let user = if update.is_empty() {
            state.auth.get_user(&principal).await
        } else {
            state.auth.update_user(&principal, update).await
        }
        .map_err(|e| input_error(&e))?;
        Ok(Json(user_json(&user, issued_at(&principal))).into_response())
    }
    .await;
    respond(&headers, result)
}

/// `POST /logout?scope=global|local|others` (204).
///
/// `local` ends this session, `global` every session of the user, `others`
/// every session of the user but this one (a provider that cannot is
/// answered as `Unsupported` errors are, in GoTrue's error shape).
async fn logout(
    State(state): State<Arc<ServeState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let principal = require_user(&state, &headers).await?;
        let scope = query.get("scope").map(String::as_str).unwrap_or("global");
        let done = match scope {
            "local" => state.auth.sign_out(&principal).await,
            "global" => state.auth.sign_out_everywhere(&principal).await,
            "others" => state.auth.sign_out_others(&principal).await,
            _ => {
                return Err(ApiError::validation(
                    "Parameter scope must be one of global, local, others",
                ))
            }
        };
        done.map_err(|e| ApiError::from_provider(&e))?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    respond(&headers, result)
}

/// `GET /.well-known/jwks.json`: the provider's public keys (none for
/// shared-secret signing: auth-js then checks tokens with `GET /user`).
async fn jwks(State(state): State<Arc<ServeState>>) -> Response {
    let mut doc = state.auth.public_keys();
    if !doc.get("keys").is_some_and(Value::is_array) {
        doc = json!({ "keys": [] });
    }
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=600")],
        Json(doc),
    )
        .into_response()
}

/// `GET /settings`: what sign-in methods are offered.
async fn settings(State(state): State<Arc<ServeState>>) -> Response {
    let caps = state.auth.capabilities();
    Json(json!({
        "external": {
            "email": caps.password_sign_in,
            "phone": false,
            "anonymous_users": false,
            "apple": false, "azure": false, "bitbucket": false, "discord": false,
            "facebook": false, "figma": false, "fly": false, "github": false,
            "gitlab": false, "google": false, "keycloak": false, "kakao": false,
            "linkedin_oidc": false, "notion": false, "slack_oidc": false,
            "spotify": false, "twitch": false, "twitter": false, "workos": false,
            "zoom": false,
        },
        "disable_signup": state.config.auth.disable_signup || !caps.sign_up,
        "mailer_autoconfirm": true,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
        "mfa_enabled": false,
    }))
    .into_response()
}

/// `GET /health`.
async fn health() -> Response {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "name": "GoTrue",
        "description": "TrustStream's GoTrue-compatible auth API",
    }))
    .into_response()
}

async fn not_found(headers: HeaderMap) -> Response {
    respond(
        &headers,
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "This auth endpoint does not exist",
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_follows_the_version_header() {
        let mut h = HeaderMap::new();
        assert_eq!(Shape::of(&h), Shape::Legacy);
        h.insert(API_VERSION_HEADER, HeaderValue::from_static("2024-01-01"));
        assert_eq!(Shape::of(&h), Shape::V2024);
        h.insert(API_VERSION_HEADER, HeaderValue::from_static("2025-06-30"));
        assert_eq!(Shape::of(&h), Shape::V2024);
        h.insert(API_VERSION_HEADER, HeaderValue::from_static("2023-12-31"));
        assert_eq!(Shape::of(&h), Shape::Legacy);
        h.insert(API_VERSION_HEADER, HeaderValue::from_static("2024-1-1xx"));
        assert_eq!(Shape::of(&h), Shape::Legacy);
    }
}
