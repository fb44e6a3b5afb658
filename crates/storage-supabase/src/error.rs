//! Storage API errors (`{statusCode, error, message}`, the status code a
//! string) and transport failures, mapped to [`ErrorKind`].

use reqwest::StatusCode;
use truststream_core::echo;
use truststream_core_storage::{Error, ErrorKind};

/// What a request was about, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The service as a whole (bucket listing, health).
    Service,
    /// A bucket.
    Bucket(&'a str),
    /// An object.
    Object(&'a str, &'a str),
}

impl Target<'_> {
    fn not_found(&self, error: &str, message: &str) -> String {
        let bucket_missing = |s: &str| s.to_ascii_lowercase().contains("bucket");
        match self {
            Target::Service => "not found".to_string(),
            Target::Bucket(b) => format!("bucket {:?} does not exist", echo(b).to_string()),
            Target::Object(b, k) if bucket_missing(error) || bucket_missing(message) => {
                let _ = k;
                format!("bucket {:?} does not exist", echo(b).to_string())
            }
            Target::Object(b, k) => format!(
                "object {:?} does not exist in bucket {:?}",
                echo(k).to_string(),
                echo(b).to_string()
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Service => "the Storage API".to_string(),
            Target::Bucket(b) => format!("bucket {:?}", echo(b).to_string()),
            Target::Object(b, k) => format!(
                "object {:?} in bucket {:?}",
                echo(k).to_string(),
                echo(b).to_string()
            ),
        }
    }
}

/// The body of a Storage API error.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ApiErrorBody {
    status_code: Option<serde_json::Value>,
    error: Option<String>,
    message: Option<String>,
}

/// A server-chosen text, cut short and without control characters.
fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    echo(s.trim()).to_string()
}

/// Maps an error answer: `status` and its `body` (possibly not JSON).
pub(crate) fn from_response(status: StatusCode, body: &[u8], target: Target<'_>) -> Error {
    let parsed: Option<ApiErrorBody> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(serde_json::Value::is_object)
        .and_then(|v| serde_json::from_value(v).ok());
    let Some(api) = parsed else {
        return not_the_api(status, body, target);
    };
    // Supabase Storage sometimes answers HTTP 400 with the real status in
    // the body (`{"statusCode": "404", ...}`): the body's code wins.
    let code = api
        .status_code
        .as_ref()
        .and_then(|v| match v {
            serde_json::Value::String(s) => s.trim().parse::<u16>().ok(),
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        })
        .filter(|c| (400..600).contains(c))
        .unwrap_or(status.as_u16());
    let error = clean(api.error.as_deref().unwrap_or(""));
    let message = clean(api.message.as_deref().unwrap_or(""));
    let said = match (error.is_empty(), message.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(" ({error})"),
        (true, false) => format!(": {message}"),
        (false, false) => format!(": {message} ({error})"),
    };
    let what = target.describe();
    let lower_error = error.to_ascii_lowercase();
    let e = match code {
        404 => Error::not_found(target.not_found(&error, &message)),
        409 => Error::conflict(format!("{} already exists{said}", what)),
        413 => Error::too_large(format!("the server refused {what} as too large{said}")),
        401 => Error::unauthenticated(format!(
            "the Storage API did not accept the credentials{said}"
        )),
        400 if lower_error.contains("jwt") => Error::unauthenticated(format!(
            "the Storage API did not accept the access token{said}"
        )),
        403 => Error::permission_denied(format!("access to {what} denied{said}")),
        400 | 405 | 411 | 414 | 415 | 416 | 422 | 431 => Error::invalid_input(format!(
            "the Storage API refused the request for {what}{said}"
        )),
        408 | 504 => Error::new(
            ErrorKind::Timeout,
            format!("the Storage API timed out on {what}{said}"),
        ),
        429 => Error::new(
            ErrorKind::RateLimited,
            format!("the Storage API is rate limiting{said}"),
        ),
        501 => Error::unsupported(format!("the Storage API does not support this{said}")),
        500..=599 => Error::unavailable(format!(
            "the Storage API failed with {code} on {what}{said}"
        )),
        _ => Error::internal(format!("the Storage API answered {code} on {what}{said}")),
    };
    e.with_context("status", code.to_string())
}

/// An answer that is not the Storage API's JSON (a proxy's HTML page, an
/// empty body).
fn not_the_api(status: StatusCode, body: &[u8], target: Target<'_>) -> Error {
    let looks_html = body
        .iter()
        .take(512)
        .map(|b| b.to_ascii_lowercase())
        .collect::<Vec<u8>>()
        .windows(5)
        .any(|w| w == b"<html" || w == b"<!doc");
    let shape = if looks_html {
        "an HTML page"
    } else if body.is_empty() {
        "an empty body"
    } else {
        "a body that is not the Storage API's JSON"
    };
    let what = target.describe();
    let msg = format!(
        "the server answered {} with {shape} for {what} (is `url` the Supabase project URL?)",
        status.as_u16()
    );
    let e = match status.as_u16() {
        401 => Error::unauthenticated(msg),
        403 => Error::permission_denied(msg),
        413 => Error::too_large(msg),
        429 => Error::new(ErrorKind::RateLimited, msg),
        408 | 504 => Error::new(ErrorKind::Timeout, msg),
        416 => Error::invalid_input(msg),
        _ => Error::unavailable(msg),
    };
    e.with_context("status", status.as_u16().to_string())
}

/// Maps a transport failure (connect, timeout, a body cut off). The URL is
/// dropped from the source: signed URLs carry their token in it.
pub(crate) fn from_transport(e: reqwest::Error, target: Target<'_>) -> Error {
    let what = target.describe();
    let e = e.without_url();
    if e.is_timeout() {
        Error::new(
            ErrorKind::Timeout,
            format!("the Storage API did not answer in time for {what}"),
        )
        .with_source(e)
    } else if e.is_connect() {
        Error::unavailable(format!("cannot connect to the Storage API for {what}")).with_source(e)
    } else if e.is_body() || e.is_decode() {
        Error::unavailable(format!(
            "the connection broke while transferring {what}; nothing partial was returned"
        ))
        .with_source(e)
    } else if e.is_builder() {
        Error::invalid_input(format!("cannot build the request for {what}")).with_source(e)
    } else {
        Error::unavailable(format!("the request for {what} failed")).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, body: &str) -> ErrorKind {
        from_response(
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
            Target::Object("b", "k"),
        )
        .kind()
    }

    #[test]
    fn statuses_and_bodies() {
        let j = |code: &str, error: &str| {
            format!(r#"{{"statusCode":"{code}","error":"{error}","message":"m"}}"#)
        };
        assert_eq!(kind(404, &j("404", "not_found")), ErrorKind::NotFound);
        // The body's code wins over the HTTP status.
        assert_eq!(kind(400, &j("404", "not_found")), ErrorKind::NotFound);
        assert_eq!(kind(400, &j("409", "Duplicate")), ErrorKind::Conflict);
        assert_eq!(kind(409, &j("409", "Duplicate")), ErrorKind::Conflict);
        assert_eq!(
            kind(413, &j("413", "Payload too large")),
            ErrorKind::TooLarge
        );
        assert_eq!(
            kind(400, &j("400", "InvalidRequest")),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(400, &j("400", "InvalidJWT")),
            ErrorKind::Unauthenticated
        );
        assert_eq!(
            kind(401, &j("401", "Unauthorized")),
            ErrorKind::Unauthenticated
        );
        assert_eq!(
            kind(403, &j("403", "Unauthorized")),
            ErrorKind::PermissionDenied
        );
        assert_eq!(kind(500, &j("500", "internal")), ErrorKind::Unavailable);
        assert_eq!(
            kind(503, "<html><body>Bad gateway</body></html>"),
            ErrorKind::Unavailable
        );
        assert_eq!(kind(200, "<!DOCTYPE html>"), ErrorKind::Unavailable);
        assert_eq!(kind(413, "<html>too big</html>"), ErrorKind::TooLarge);
        assert_eq!(kind(504, ""), ErrorKind::Timeout);
        let e = from_response(
            StatusCode::NOT_FOUND,
            br#"{"statusCode":"404","error":"Bucket not found","message":"Bucket not found"}"#,
            Target::Object("photos", "a.png"),
        );
        assert!(e.message().contains("bucket \"photos\""), "{e}");
        let hostile = format!(
            r#"{{"statusCode":"400","error":"x","message":"{}\u0007"}}"#,
            "y".repeat(10_000)
        );
        let e = from_response(StatusCode::BAD_REQUEST, hostile.as_bytes(), Target::Service);
        assert!(e.message().len() < 1000 && !e.message().contains('\u{7}'));
    }
}
