//! Bucket-name and key rules every provider enforces, so that a key accepted
//! by one provider is accepted by all, and no key can escape a filesystem root.

use crate::{Error, StorageResult};

/// Longest key, in bytes (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a bucket name: 3 to 63 characters, lowercase ASCII letters, digits
/// and `-`, starting and ending with a letter or digit.
pub fn validate_bucket(name: &str) -> StorageResult<()> {
    let b = name.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if !ok {
        return Err(Error::invalid_input(format!(
            "invalid bucket name {:?}: 3-63 of a-z, 0-9 and '-', not starting or ending with '-'",
            shorten(name)
        )));
    }
    Ok(())
}

/// Checks an object key.
///
/// A key is 1 to [`MAX_KEY_LEN`] bytes of UTF-8 made of `/`-separated
/// segments. Rejected: empty segments (leading `/`, trailing `/`, `//`), `.`
/// and `..` segments, backslashes, NUL and other control characters.
/// Unicode and spaces are allowed.
///
/// ```
/// use truststream_core_storage::keys::validate_key;
/// assert!(validate_key("agent-documents/42/ré sumé.pdf").is_ok());
/// for bad in ["", "/etc/passwd", "a/../b", "a//b", "a\\b", "a\0b", "dir/"] {
///     assert!(validate_key(bad).is_err(), "{bad:?}");
/// }
/// ```
pub fn validate_key(key: &str) -> StorageResult<()> {
    let reason = if key.is_empty() {
        Some("is empty")
    } else if key.len() > MAX_KEY_LEN {
        Some("is longer than 1024 bytes")
    } else if key.chars().any(char::is_control) {
        Some("contains control characters")
    } else if key.contains('\\') {
        Some("contains a backslash")
    } else if key.split('/').any(|s| s.is_empty()) {
        Some("has an empty segment (leading, trailing or doubled '/')")
    } else if key.split('/').any(|s| s == "." || s == "..") {
        Some("has a '.' or '..' segment")
    } else {
        None
    };
    match reason {
        Some(r) => Err(Error::invalid_input(format!(
            "invalid object key {:?}: it {r}",
            shorten(key)
        ))),
        None => Ok(()),
    }
}

/// Checks a listing prefix: like a key, but may be empty or end with `/`.
pub fn validate_prefix(prefix: &str) -> StorageResult<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_key(prefix.strip_suffix('/').unwrap_or(prefix))
}

fn shorten(s: &str) -> String {
    let mut end = s.len().min(100);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{}...", &s[..end])
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        for ok in ["abc", "agent-avatars", "a1-b2"] {
            validate_bucket(ok).unwrap();
        }
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "ABC",
            "a_b",
            "a.b",
            "a/b",
            "..",
            &"a".repeat(64),
        ] {
            assert!(validate_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_prefixes() {
        validate_key(&"k".repeat(1024)).unwrap();
        assert!(validate_key(&"k".repeat(1025)).is_err());
        validate_prefix("").unwrap();
        validate_prefix("a/b/").unwrap();
        assert!(validate_prefix("../").is_err());
    }
}
