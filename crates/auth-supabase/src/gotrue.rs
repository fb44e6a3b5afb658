//! The HTTP side: requests to `<url>/auth/v1`, bounded reads, and GoTrue's
//! error answers mapped to [`ErrorKind`].

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use truststream_core::echo;
use truststream_core_auth::{AuthResult, Error, ErrorKind, Secret};

use crate::config::SupabaseAuthConfig;

/// Largest answer body read, in bytes.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;

/// The API version whose error shape is `{code: <error_code>, message}`.
const API_VERSION: &str = "2024-01-01";

/// The calls made, for error mapping and the error's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    SignUp,
    SignIn,
    Refresh,
    SignOut,
    SignOutOthers,
    GetUser,
    UpdateUser,
    ValidateToken,
    Health,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::SignUp => "auth.sign_up",
            Op::SignIn => "auth.sign_in",
            Op::Refresh => "auth.refresh_session",
            Op::SignOut => "auth.sign_out",
            Op::SignOutOthers => "auth.sign_out_others",
            Op::GetUser => "auth.get_user",
            Op::UpdateUser => "auth.update_user",
            Op::ValidateToken => "auth.validate_token",
            Op::Health => "auth.health",
        }
    }
}

/// A client of one project's `/auth/v1`.
pub(crate) struct GoTrue {
    base: String,
    anon_key: Secret,
    pub(crate) client: reqwest::Client,
}

/// A successful answer: its JSON body (`None` when empty).
pub(crate) struct Answer {
    pub(crate) body: Option<Value>,
}

/// Maps a transport failure (connect, TLS, timeout, reset) while `what`.
pub(crate) fn transport_error(e: reqwest::Error, what: &str) -> Error {
    if e.is_timeout() {
        Error::new(
            ErrorKind::Timeout,
            format!("supabase auth: timed out {what}"),
        )
    } else {
        Error::unavailable(format!(
            "supabase auth: cannot reach the project while {what}"
        ))
    }
    .with_source(e.without_url())
}

/// Reads at most `max` bytes of `resp`'s body; more is `Unavailable`.
pub(crate) async fn read_bounded(mut resp: reqwest::Response, max: usize) -> AuthResult<Vec<u8>> {
    let too_large = || {
        Error::unavailable(format!(
            "supabase auth: the project's answer is larger than {max} bytes"
        ))
    };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(e, "reading the answer"))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl GoTrue {
    pub(crate) fn new(cfg: &SupabaseAuthConfig) -> AuthResult<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            // A redirect could carry the user's token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "truststream-auth-supabase/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| {
                Error::internal("supabase auth: cannot build the HTTP client").with_source(e)
            })?;
        Ok(GoTrue {
            base: format!("{}/auth/v1", cfg.base_url()),
            anon_key: cfg.anon_key.clone(),
            client,
        })
    }

    /// Sends `method path` (path with its query) with the anon key, the
    /// user's `bearer` token if any, and `body` as JSON. A non-2xx answer
    /// is mapped by [`api_error`]; `secrets` (passwords, tokens sent) are
    /// cut out of any server text that is echoed.
    pub(crate) async fn call(
        &self,
        op: Op,
        method: Method,
        path: &str,
        bearer: Option<&Secret>,
        body: Option<&Value>,
        secrets: &[&str],
    ) -> AuthResult<Answer> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("apikey", self.anon_key.expose())
            .header("x-supabase-api-version", API_VERSION)
            .header("accept", "application/json");
        // `Authorization` carries JWTs only: the user's token, or a legacy
        // (JWT) anon key. The new non-JWT keys (`sb_publishable_...`) are
        // refused there by the platform; `apikey` alone authorizes them.
        match bearer {
            Some(t) => req = req.bearer_auth(t.expose()),
            None if is_jwt(self.anon_key.expose()) => {
                req = req.bearer_auth(self.anon_key.expose());
            }
            None => {}
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(e, "sending the request").with_operation(op.name()))?;
        let status = resp.status();
        let header_code = resp
            .headers()
            .get("x-sb-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let html = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("html"));
        let bytes = read_bounded(resp, MAX_BODY_BYTES)
            .await
            .map_err(|e| e.with_operation(op.name()))?;
        if !status.is_success() {
            return Err(api_error(
                op,
                status.as_u16(),
                header_code.as_deref(),
                html,
                &bytes,
                secrets,
            ));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Answer { body: None });
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if !html => Ok(Answer { body: Some(v) }),
            _ => Err(Error::unavailable(format!(
                "supabase auth: the project answered HTTP {} with a body that is not JSON{}",
                status.as_u16(),
                if html { " (an HTML page)" } else { "" }
            ))
            .with_operation(op.name())),
        }
    }
}

/// Whether `key` has the shape of a JWT (three base64url parts).
fn is_jwt(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// GoTrue's error code -> kind, for the codes whose meaning does not
/// depend on the call.
fn kind_of_code(code: &str) -> Option<ErrorKind> {
    use ErrorKind as K;
    Some(match code {
        "invalid_credentials"
        | "invalid_grant"
        | "refresh_token_not_found"
        | "refresh_token_already_used"
        | "session_not_found"
        | "session_expired"
        | "bad_jwt"
        | "no_authorization"
        | "email_not_confirmed"
        | "phone_not_confirmed"
        | "user_banned"
        | "reauthentication_needed"
        | "insufficient_aal"
        | "no_api_key"
        | "invalid_api_key" => K::Unauthenticated,
        "user_already_exists"
        | "email_exists"
        | "phone_exists"
        | "identity_already_exists"
        | "conflict" => K::Conflict,
        "weak_password"
        | "validation_failed"
        | "email_address_invalid"
        | "bad_json"
        | "same_password" => K::InvalidInput,
        "over_request_rate_limit" | "over_email_send_rate_limit" | "over_sms_send_rate_limit" => {
            K::RateLimited
        }
        "signup_disabled"
        | "email_provider_disabled"
        | "phone_provider_disabled"
        | "provider_disabled"
        | "anonymous_provider_disabled"
        | "unsupported_grant_type"
        | "not_supported" => K::Unsupported,
        "not_admin" => K::PermissionDenied,
        "user_not_found" | "not_found" => K::NotFound,
        "request_too_large" => K::TooLarge,
        "request_timeout" => K::Timeout,
        _ => return None,
    })
}

fn kind_of_status(status: u16) -> ErrorKind {
    use ErrorKind as K;
    match status {
        400 | 422 => K::InvalidInput,
        401 | 403 => K::Unauthenticated,
        404 => K::NotFound,
        408 | 504 => K::Timeout,
        409 => K::Conflict,
        413 => K::TooLarge,
        429 => K::RateLimited,
        _ => K::Unavailable,
    }
}

/// The kind of a GoTrue error answer to `op`.
pub(crate) fn error_kind(op: Op, status: u16, code: Option<&str>, html: bool) -> ErrorKind {
    use ErrorKind as K;
    let kind = match code.and_then(kind_of_code) {
        Some(k) => k,
        // An HTML page is a proxy or gateway speaking, not GoTrue.
        None if html && !matches!(status, 408 | 429 | 504) => K::Unavailable,
        None => kind_of_status(status),
    };
    match (op, kind) {
        // Whatever the server dislikes about a refresh token, the token
        // does not give a session.
        (Op::Refresh, K::InvalidInput | K::NotFound | K::PermissionDenied | K::Conflict) => {
            K::Unauthenticated
        }
        (Op::SignIn | Op::ValidateToken, K::NotFound) => K::Unauthenticated,
        _ => kind,
    }
}

/// Error code and text of an answer body, in any of GoTrue's shapes:
/// `{code: <status>, error_code, msg}`, `{code: <error_code>, message}`,
/// `{error, error_description}`.
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let code = s("error_code").or_else(|| s("code")).or_else(|| s("error"));
    let text = s("msg")
        .or_else(|| s("message"))
        .or_else(|| s("error_description"))
        .or_else(|| s("error"));
    (code, text)
}

/// The error for a non-2xx answer. The server's text is repeated bounded,
/// with anything sent as a secret cut out; its code only when it looks
/// like one (`snake_case`).
pub(crate) fn api_error(
    op: Op,
    status: u16,
    header_code: Option<&str>,
    html: bool,
    body: &[u8],
    secrets: &[&str],
) -> Error {
    let (body_code, text) = if html {
        (None, None)
    } else {
        parse_error_body(body)
    };
    let code = body_code
        .or_else(|| header_code.map(str::to_string))
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    let kind = error_kind(op, status, code.as_deref(), html);
    let mut shown = match text {
        Some(t) => {
            let mut t = t;
            for s in secrets.iter().filter(|s| s.len() >= 4) {
                t = t.replace(*s, "<redacted>");
            }
            let t: String = t.chars().filter(|c| !c.is_control()).collect();
            echo(&t).to_string()
        }
        None if html => "the answer is an HTML page, not GoTrue".to_string(),
        None if body.is_empty() => "no error text".to_string(),
        None => "the answer is not a GoTrue error".to_string(),
    };
    shown = format!("supabase auth: {shown} (HTTP {status}");
    if let Some(c) = &code {
        shown.push_str(", ");
        shown.push_str(c);
    }
    shown.push(')');
    let mut e = Error::new(kind, shown).with_operation(op.name());
    if let Some(c) = code {
        e = e.with_context("error_code", c);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind as K;

    #[test]
    fn only_jwts_are_bearers() {
        assert!(is_jwt("eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2ln"));
        assert!(!is_jwt("sb_publishable_abc123"));
        assert!(!is_jwt("a.b"));
        assert!(!is_jwt("a..c"));
        assert!(!is_jwt("a.b c.d"));
    }

    #[test]
    fn the_three_shapes() {
        let legacy =
            br#"{"code":400,"error_code":"invalid_credentials","msg":"Invalid login credentials"}"#;
        assert_eq!(
            parse_error_body(legacy),
            (
                Some("invalid_credentials".into()),
                Some("Invalid login credentials".into())
            )
        );
        let v2024 = br#"{"code":"user_already_exists","message":"User already registered"}"#;
        assert_eq!(
            parse_error_body(v2024),
            (
                Some("user_already_exists".into()),
                Some("User already registered".into())
            )
        );
        let oauth = br#"{"error":"invalid_grant","error_description":"Invalid Refresh Token"}"#;
        assert_eq!(
            parse_error_body(oauth),
            (
                Some("invalid_grant".into()),
                Some("Invalid Refresh Token".into())
            )
        );
        assert_eq!(parse_error_body(b"<html>"), (None, None));
        assert_eq!(parse_error_body(b"[1]"), (None, None));
    }

    #[test]
    fn kinds() {
        let e = |op, st, body: &[u8]| api_error(op, st, None, false, body, &[]).kind();
        assert_eq!(
            e(
                Op::SignIn,
                400,
                br#"{"code":400,"error_code":"invalid_credentials","msg":"x"}"#
            ),
            K::Unauthenticated
        );
        assert_eq!(
            e(
                Op::SignUp,
                422,
                br#"{"code":"user_already_exists","message":"x"}"#
            ),
            K::Conflict
        );
        assert_eq!(
            e(
                Op::SignUp,
                422,
                br#"{"code":"weak_password","message":"x"}"#
            ),
            K::InvalidInput
        );
        assert_eq!(e(Op::SignUp, 429, b""), K::RateLimited);
        assert_eq!(
            e(
                Op::SignIn,
                429,
                br#"{"code":"over_request_rate_limit","message":"x"}"#
            ),
            K::RateLimited
        );
        assert_eq!(e(Op::GetUser, 500, b"oops"), K::Unavailable);
        assert_eq!(e(Op::GetUser, 502, b""), K::Unavailable);
        assert_eq!(e(Op::GetUser, 504, b""), K::Timeout);
        assert_eq!(
            e(
                Op::Refresh,
                400,
                br#"{"code":"refresh_token_already_used","message":"x"}"#
            ),
            K::Unauthenticated
        );
        assert_eq!(
            e(
                Op::Refresh,
                400,
                br#"{"code":"validation_failed","message":"x"}"#
            ),
            K::Unauthenticated
        );
        assert_eq!(
            e(
                Op::Refresh,
                400,
                br#"{"error":"invalid_grant","error_description":"x"}"#
            ),
            K::Unauthenticated
        );
        assert_eq!(
            e(
                Op::GetUser,
                403,
                br#"{"code":403,"error_code":"bad_jwt","msg":"x"}"#
            ),
            K::Unauthenticated
        );
        assert_eq!(
            e(
                Op::SignUp,
                422,
                br#"{"code":"signup_disabled","message":"x"}"#
            ),
            K::Unsupported
        );
        // An HTML error page is a gateway, not GoTrue.
        assert_eq!(
            api_error(Op::SignIn, 401, None, true, b"<html>", &[]).kind(),
            K::Unavailable
        );
        // The header code counts when the body has none.
        assert_eq!(
            api_error(Op::SignUp, 422, Some("email_exists"), false, b"{}", &[]).kind(),
            K::Conflict
        );
    }

    #[test]
    fn server_text_is_bounded_and_secrets_cut() {
        let body = serde_json::to_vec(&serde_json::json!({
            "code": "validation_failed",
            "message": format!("password hunter2hunter2 is bad {}", "x".repeat(5000)),
        }))
        .unwrap();
        let e = api_error(Op::SignUp, 400, None, false, &body, &["hunter2hunter2"]);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.len() < 600, "{}", shown.len());
        // A code that is not a code is dropped.
        let e = api_error(
            Op::SignUp,
            400,
            None,
            false,
            br#"{"code":"<script>","message":"m"}"#,
            &[],
        );
        assert!(!e.to_string().contains("script"));
    }
}
