//! Hiding secrets in configuration output and error messages.

use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Words that mark a setting as secret wherever they occur in its name, even
/// inside a longer word (`db_password`, `secretKey`, `service_credentials`).
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "private",
    "cookie",
    "apikey",
];

/// Short words that mark a setting as secret when they are a whole word.
const SECRET_WORDS: &[&str] = &["pwd", "dsn"];

/// Nouns that name a secret when the setting's name ends with them
/// (`api_key`, `signing_key`, `session_token`, `token`, `authToken`); a name
/// that goes on after them names something else (`access_key_id`,
/// `token_ttl_secs`, `key_id`).
const SECRET_NOUNS: &[&str] = &["key", "keys", "token", "tokens", "signature"];

/// Words that make a secret noun a count, a limit or a public value
/// (`max_tokens`, `public_key`).
const NOT_SECRET_QUALIFIERS: &[&str] = &["public", "max", "min", "num", "count", "limit"];

/// Whether a setting named `key` holds a secret: a name containing
/// `password`, `secret`, `credential`, `private`, ... or ending with the
/// noun of a secret (`api_key`, `session_token`); not a name that only
/// mentions a key or a token (`access_key_id`, `token_ttl_secs`,
/// `max_tokens`, `public_key`). `type` never does.
///
/// ```
/// use truststream_runtime::redact::is_secret_key;
/// assert!(is_secret_key("api_key"));
/// assert!(is_secret_key("serviceRoleKey"));
/// assert!(is_secret_key("SIGNING_SECRET"));
/// assert!(is_secret_key("secret_access_key"));
/// assert!(is_secret_key("session_token"));
/// assert!(!is_secret_key("access_key_id"));
/// assert!(!is_secret_key("token_ttl_secs"));
/// assert!(!is_secret_key("max_tokens"));
/// assert!(!is_secret_key("type"));
/// assert!(!is_secret_key("max_object_size"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    if key.eq_ignore_ascii_case("type") {
        return false;
    }
    let words = words(key);
    if words
        .iter()
        .any(|w| SECRET_PARTS.iter().any(|p| w.contains(p)) || SECRET_WORDS.contains(&w.as_str()))
    {
        return true;
    }
    let ends_with_noun = words
        .last()
        .is_some_and(|last| SECRET_NOUNS.iter().any(|n| last.ends_with(n)));
    ends_with_noun
        && !words
            .iter()
            .any(|w| NOT_SECRET_QUALIFIERS.contains(&w.as_str()))
}

/// Splits `api_key`, `api-key`, `apiKey`, `APIKey` into lowercase words.
fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = key.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let boundary = c.is_ascii_uppercase()
            && i > 0
            && (chars[i - 1].is_ascii_lowercase()
                || (chars[i - 1].is_ascii_uppercase()
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase())));
        if boundary && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Masks the password of a URL with user info (`scheme://user:pw@host` ->
/// `scheme://user:<redacted>@host`; `scheme://token@host` ->
/// `scheme://<redacted>@host`). Other strings come back unchanged.
///
/// For schemes whose bare user info is a user name, not a token
/// (`postgres://postgres@host`, `mysql://`, `amqp://`, `mongodb://`, ...),
/// the name is shown: user names are not secrets.
///
/// ```
/// use truststream_runtime::redact::mask_url_userinfo;
/// assert_eq!(
///     mask_url_userinfo("postgres://app:hunter2@db:5432/app"),
///     "postgres://app:<redacted>@db:5432/app"
/// );
/// assert_eq!(mask_url_userinfo("http://localhost:9000"), "http://localhost:9000");
/// ```
pub fn mask_url_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let auth_start = scheme_end + 3;
    let rest = &s[auth_start..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let Some(at) = authority.rfind('@') else {
        return s.to_string();
    };
    let userinfo = &authority[..at];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None if bare_userinfo_is_a_user(&s[..scheme_end]) => return s.to_string(),
        None => REDACTED.to_string(),
    };
    format!("{}{}{}", &s[..auth_start], masked, &s[auth_start + at..])
}

/// Whether `scheme://name@host` names a user (whose password, if any, comes
/// from elsewhere) rather than carrying a token, as in `redis://tok@host`
/// or `https://tok@host`.
fn bare_userinfo_is_a_user(scheme: &str) -> bool {
    const USER_SCHEMES: [&str; 9] = [
        "postgres",
        "postgresql",
        "mysql",
        "mariadb",
        "amqp",
        "amqps",
        "mongodb",
        "mongodb+srv",
        "sqlserver",
    ];
    USER_SCHEMES.iter().any(|u| scheme.eq_ignore_ascii_case(u))
}

/// Where a value sits, for redaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Under ordinary keys.
    Plain,
    /// The value of a secret key (or an element of an array that is).
    SecretValue,
    /// Inside a table under a secret key, under an ordinary key of its own.
    InSecretTable,
}

impl Place {
    /// The place of the value of `key` in a table at `self`.
    fn child(self, key: &str) -> Place {
        if is_secret_key(key) {
            Place::SecretValue
        } else if self == Place::Plain {
            Place::Plain
        } else {
            Place::InSecretTable
        }
    }

    /// Whether a scalar here is hidden: every value of a secret key, and
    /// every string inside a table under one (`private = { pem = "..." }`);
    /// numbers and booleans of a table's ordinary keys stay visible
    /// (`password = { min_chars = 8 }` is a policy, not a password).
    fn hides(self, value: &Value) -> bool {
        match self {
            Place::Plain => false,
            Place::SecretValue => !value.is_null(),
            Place::InSecretTable => value.is_string(),
        }
    }
}

/// Redacts `value` in place: the values of secret keys (see
/// [`is_secret_key`]) become `"<redacted>"` (tables under them keep their
/// shape, their strings hidden), URL passwords anywhere are masked.
pub fn redact_in_place(value: &mut Value) {
    redact_at(value, Place::Plain);
}

fn redact_at(value: &mut Value, place: Place) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                redact_at(v, place.child(k));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_at(v, place)),
        v if place.hides(v) => *v = Value::String(REDACTED.into()),
        Value::String(s) => {
            let masked = mask_url_userinfo(s);
            if masked != *s {
                *s = masked;
            }
        }
        _ => {}
    }
}

/// The secret values found in `value` (what [`redact_in_place`] hides, and
/// URL passwords), as they could appear in a message. Used to scrub
/// provider errors.
pub(crate) fn secret_values(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect(value, Place::Plain, &mut out);
    out.retain(|s| s.len() >= 3);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

fn collect(value: &Value, place: Place, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                collect(v, place.child(k), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, place, out)),
        Value::String(s) if place.hides(value) => out.push(s.clone()),
        Value::String(s) => out.extend(url_password(s)),
        Value::Number(n) if place.hides(value) => out.push(n.to_string()),
        Value::Bool(_) | Value::Number(_) | Value::Null => {}
    }
}

fn url_password(s: &str) -> Option<String> {
    let scheme_end = s.find("://")?;
    let rest = &s[scheme_end + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    match userinfo.split_once(':') {
        Some((_, pw)) => Some(pw.to_string()),
        None if bare_userinfo_is_a_user(&s[..scheme_end]) => None,
        None => Some(userinfo.to_string()),
    }
}

/// Replaces every secret of `secrets` in `message` by `<redacted>`.
pub(crate) fn scrub(message: &str, secrets: &[String]) -> String {
    let mut m = message.to_string();
    for s in secrets {
        if !s.is_empty() {
            m = m.replace(s.as_str(), REDACTED);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_are_redacted_type_never() {
        let mut v = json!({
            "database": {
                "type": "postgres",
                "password": "hunter2",
                "url": "postgres://app:hunter2@db/app",
                "pool": { "max": 5 },
                "schema": "public"
            },
            "storage": {
                "type": "s3",
                "access_key_id": "AKIA1",
                "secret_access_key": "abc",
                "session_token": "sess-tok",
                "bucket": "media",
                "endpoint": "http://localhost:9000"
            },
            "auth": {
                "type": "jwt",
                "jwt_secret": 12345,
                "serviceRoleKey": "srk",
                "private_key": "-----BEGIN PRIVATE KEY-----",
                "private": { "pem": "-----BEGIN", "bits": 2048 },
                "access_token_ttl_secs": 900,
                "key_id": "k1"
            }
        });
        redact_in_place(&mut v);
        assert_eq!(v["database"]["type"], "postgres");
        assert_eq!(v["database"]["password"], REDACTED);
        assert_eq!(v["database"]["url"], "postgres://app:<redacted>@db/app");
        assert_eq!(v["database"]["pool"]["max"], 5);
        assert_eq!(v["database"]["schema"], "public");
        assert_eq!(v["storage"]["secret_access_key"], REDACTED);
        assert_eq!(v["storage"]["session_token"], REDACTED);
        assert_eq!(v["storage"]["bucket"], "media");
        assert_eq!(v["storage"]["endpoint"], "http://localhost:9000");
        assert_eq!(v["auth"]["jwt_secret"], REDACTED);
        assert_eq!(v["auth"]["serviceRoleKey"], REDACTED);
        assert_eq!(v["auth"]["private_key"], REDACTED);
        assert_eq!(v["auth"]["private"]["pem"], REDACTED);
        let text = v.to_string();
        assert!(!text.contains("hunter2") && !text.contains("12345") && !text.contains("srk"));
        assert!(
            !text.contains("sess-tok") && !text.contains("BEGIN"),
            "{text}"
        );
    }

    #[test]
    fn names_that_only_mention_a_key_or_a_token_are_shown() {
        let mut v = json!({
            "storage": { "access_key_id": "AKIA1", "max_keys": 1000 },
            "auth": {
                "token_ttl_secs": 900,
                "access_token_ttl_secs": 900,
                "key_id": "k1",
                "public_key": "-----BEGIN PUBLIC KEY-----",
                "password": { "min_chars": 8, "max_bytes": 72 }
            },
            "llm": { "max_tokens": 4096 }
        });
        let before = v.clone();
        redact_in_place(&mut v);
        assert_eq!(v, before, "nothing here is a secret");
        assert!(secret_values(&before).is_empty());
        for k in [
            "access_key_id",
            "token_ttl_secs",
            "max_tokens",
            "key_id",
            "public_key",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
        for k in [
            "password",
            "db_password",
            "secret",
            "jwt_secret",
            "secret_access_key",
            "private_key",
            "privateKey",
            "api_key",
            "apiKey",
            "APIKey",
            "service_role_key",
            "token",
            "access_token",
            "refresh_token",
            "authToken",
            "credentials",
            "dsn",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn url_masking_edge_cases() {
        assert_eq!(
            mask_url_userinfo("redis://tok@h:6379"),
            "redis://<redacted>@h:6379"
        );
        assert_eq!(
            mask_url_userinfo("https://h/path?email=a@b"),
            "https://h/path?email=a@b"
        );
        // A bare user name is not a secret where the scheme says it is a user.
        assert_eq!(
            mask_url_userinfo("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(mask_url_userinfo("not a url"), "not a url");
        assert_eq!(mask_url_userinfo("x://"), "x://");
    }

    #[test]
    fn scrub_removes_collected_secrets() {
        let v = json!({"api_key": "sk-live-123", "url": "pg://u:pw1@h", "n": 7});
        let secrets = secret_values(&v);
        let msg = scrub("invalid value sk-live-123 and pw1 seen", &secrets);
        assert_eq!(msg, "invalid value <redacted> and <redacted> seen");
    }

    #[test]
    fn a_postgres_user_name_is_not_scrubbed_from_messages() {
        // The user `postgres` in the URL once turned jobs-postgres into
        // "jobs-<redacted>" in every health message.
        let v = json!({"url": "postgres://postgres@127.0.0.1:5432/test"});
        let secrets = secret_values(&v);
        assert!(secrets.is_empty(), "{secrets:?}");
        assert_eq!(
            scrub("jobs-postgres: table missing", &secrets),
            "jobs-postgres: table missing"
        );
        // The password of such a URL still is.
        let v = json!({"url": "postgres://postgres:s3cret@h/test"});
        assert_eq!(secret_values(&v), vec!["s3cret".to_string()]);
        // A bare token of a scheme that takes one still is.
        let v = json!({"url": "redis://tok123@h:6379"});
        assert_eq!(secret_values(&v), vec!["tok123".to_string()]);
    }
}
