//! Settings parsing shared by the four layers: serde with the offending key
//! named, and range checks that name theirs.

use truststream_core::{Error, Result};

pub(crate) use truststream_layer::parse_settings as parse;

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
