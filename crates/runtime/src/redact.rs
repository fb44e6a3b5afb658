//! Hiding secrets in configuration output and error messages.

use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Key words that mark a setting as secret, matched against the words of a
/// key (`api_key` -> `api`, `key`; `serviceRoleKey` -> `service`, `role`, `key`).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "key",
    "apikey",
    "credential",
    "credentials",
    "private",
    "privatekey",
    "dsn",
    "cookie",
    "signature",
];

/// Whether a setting named `key` holds a secret. `type` never does.
///
/// ```
/// use truststream_runtime::redact::is_secret_key;
/// assert!(is_secret_key("api_key"));
/// assert!(is_secret_key("serviceRoleKey"));
/// assert!(is_secret_key("SIGNING_SECRET"));
/// assert!(!is_secret_key("type"));
/// assert!(!is_secret_key("max_object_size"));
/// assert!(!is_secret_key("buckets"));
/// ```
pub fn is_secret_key(key: &str) -> bool {
    if key.eq_ignore_ascii_case("type") {
        return false;
    }
    words(key)
        .iter()
        .any(|w| SECRET_WORDS.contains(&w.as_str()))
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
    // Also the whole key without separators, so `apiKey` matches `apikey`.
    let joined: String = out.concat();
    if out.len() > 1 {
        out.push(joined);
    }
    out
}

/// Masks the password of a URL with user info (`scheme://user:pw@host` ->
/// `scheme://user:<redacted>@host`; `scheme://token@host` ->
/// `scheme://<redacted>@host`). Other strings come back unchanged.
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
        None => REDACTED.to_string(),
    };
    format!("{}{}{}", &s[..auth_start], masked, &s[auth_start + at..])
}

/// Redacts `value` in place: values under secret keys become `"<redacted>"`
/// (whatever their type), URL passwords anywhere are masked.
pub fn redact_in_place(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact_in_place(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_in_place),
        Value::String(s) => {
            let masked = mask_url_userinfo(s);
            if masked != *s {
                *s = masked;
            }
        }
        _ => {}
    }
}

/// The secret values found in `value` (under secret keys, URL passwords),
/// as they could appear in a message. Used to scrub provider errors.
pub(crate) fn secret_values(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect(value, false, &mut out);
    out.retain(|s| s.len() >= 3);
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

fn collect(value: &Value, secret: bool, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                collect(v, secret || is_secret_key(k), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, secret, out)),
        Value::String(s) => {
            if secret {
                out.push(s.clone());
            } else if let Some(pw) = url_password(s) {
                out.push(pw);
            }
        }
        Value::Number(n) if secret => out.push(n.to_string()),
        Value::Bool(_) | Value::Number(_) | Value::Null => {}
    }
}

fn url_password(s: &str) -> Option<String> {
    let rest = &s[s.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(match userinfo.split_once(':') {
        Some((_, pw)) => pw.to_string(),
        None => userinfo.to_string(),
    })
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
                "bucket": "media",
                "endpoint": "http://localhost:9000"
            },
            "auth": {
                "type": "jwt",
                "jwt_secret": 12345,
                "serviceRoleKey": "srk",
                "private": { "pem": "-----BEGIN" },
                "token_ttl_secs": 900
            }
        });
        redact_in_place(&mut v);
        assert_eq!(v["database"]["type"], "postgres");
        assert_eq!(v["database"]["password"], REDACTED);
        assert_eq!(v["database"]["url"], "postgres://app:<redacted>@db/app");
        assert_eq!(v["database"]["pool"]["max"], 5);
        assert_eq!(v["database"]["schema"], "public");
        assert_eq!(v["storage"]["access_key_id"], REDACTED);
        assert_eq!(v["storage"]["secret_access_key"], REDACTED);
        assert_eq!(v["storage"]["bucket"], "media");
        assert_eq!(v["storage"]["endpoint"], "http://localhost:9000");
        assert_eq!(v["auth"]["jwt_secret"], REDACTED);
        assert_eq!(v["auth"]["serviceRoleKey"], REDACTED);
        assert_eq!(v["auth"]["private"], REDACTED);
        // "token" is a word of the key: erring on the side of hiding.
        assert_eq!(v["auth"]["token_ttl_secs"], REDACTED);
        let text = v.to_string();
        assert!(!text.contains("hunter2") && !text.contains("12345") && !text.contains("srk"));
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
}
