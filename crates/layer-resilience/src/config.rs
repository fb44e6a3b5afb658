//! Settings parsing shared by the four layers: serde with the offending key
//! named, and range checks that name theirs.

use serde::de::DeserializeOwned;
use truststream_core::{Error, Result};

/// Deserializes a layer's settings (`{}` for `name = true`), naming the key
/// a bad value sits at. serde's quote of the value itself is dropped (the
/// message keeps what was expected), as the providers' config errors do.
pub(crate) fn parse<T: DeserializeOwned>(settings: serde_json::Value) -> Result<T> {
    let settings = if settings.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        settings
    };
    serde_path_to_error::deserialize(settings).map_err(|e| {
        let path = e.path().to_string();
        let message = without_values(&e.inner().to_string());
        // An unknown field's path is the field itself, which serde's
        // message already names.
        if path == "." || path == "?" || message.starts_with("unknown field") {
            Error::invalid_input(message)
        } else {
            Error::invalid_input(format!("{path}: {message}"))
        }
    })
}

/// `invalid type: string "x", expected u64` -> `invalid type: expected u64`.
fn without_values(msg: &str) -> String {
    for kind in ["invalid type", "invalid value", "invalid length"] {
        if let Some(rest) = msg.strip_prefix(kind) {
            return match rest.rfind(", expected ") {
                Some(i) => format!("{kind}: expected {}", &rest[i + ", expected ".len()..]),
                None => kind.to_string(),
            };
        }
    }
    msg.to_string()
}

/// `InvalidInput` unless `value >= min`.
pub(crate) fn at_least(key: &str, value: u64, min: u64) -> Result<()> {
    if value < min {
        return Err(Error::invalid_input(format!(
            "{key} must be at least {min}, not {value}"
        )));
    }
    Ok(())
}

/// `InvalidInput` unless `value <= max`.
pub(crate) fn at_most(key: &str, value: u64, max: u64) -> Result<()> {
    if value > max {
        return Err(Error::invalid_input(format!(
            "{key} must be at most {max}, not {value}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct C {
        #[serde(default)]
        ms: u64,
    }

    #[test]
    fn bad_values_name_their_key_and_are_not_quoted() {
        let e = parse::<C>(serde_json::json!({"ms": "secret-ish"})).unwrap_err();
        assert_eq!(e.message(), "ms: invalid type: expected u64");
        let e = parse::<C>(serde_json::json!({"sm": 1})).unwrap_err();
        assert_eq!(e.message(), "unknown field `sm`, expected `ms`");
        let e = parse::<C>(serde_json::json!(3)).unwrap_err();
        assert!(e.message().starts_with("invalid type: expected"), "{e}");
        assert_eq!(parse::<C>(serde_json::Value::Null).unwrap().ms, 0);
        assert!(at_least("k", 0, 1)
            .unwrap_err()
            .message()
            .contains("k must"));
        assert!(at_most("k", 5, 1).is_err());
    }
}
