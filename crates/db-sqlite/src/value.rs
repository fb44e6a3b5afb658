//! Values: type checking and normalization (the same rules and messages as
//! the memory provider), encoding to SQLite storage classes and decoding back
//! to the documented JSON shapes.

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use truststream_core_db::{ColumnType, Error, Value};

/// 2^63: integral floats in `-2^63..2^63` convert to `i64` exactly.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// The stored form of a timestamp: UTC, always six fractional digits, `Z`, so
/// that string order is time order.
pub(crate) fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The current time in stored form.
pub(crate) fn now() -> Value {
    Value::String(format_timestamp(Utc::now()))
}

/// Checks that a non-null `value` fits `ty` and returns its stored form.
/// `column` names the column in the error.
pub(crate) fn normalize(column: &str, ty: ColumnType, value: &Value) -> Result<Value, Error> {
    let bad = |expected: &str| {
        Error::invalid_input(format!(
            "column {column} has type {} and takes {expected}; got {}",
            truststream_core_db::sql::compile::type_name(ty),
            describe(value)
        ))
    };
    match ty {
        ColumnType::Text => match value {
            Value::String(_) => Ok(value.clone()),
            _ => Err(bad("a string")),
        },
        ColumnType::Integer => match value {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    return Ok(Value::from(i));
                }
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && (-I64_BOUND..I64_BOUND).contains(&f) => {
                        Ok(Value::from(f as i64))
                    }
                    _ => Err(bad("an integer within the 64-bit signed range")),
                }
            }
            _ => Err(bad("an integer")),
        },
        ColumnType::Float => match value {
            Value::Number(n) => n
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number")),
            _ => Err(bad("a number")),
        },
        ColumnType::Numeric => match value {
            Value::Number(_) => Ok(value.clone()),
            Value::String(s) => {
                parse_decimal(s).ok_or_else(|| bad("a decimal number or decimal string"))
            }
            _ => Err(bad("a decimal number or decimal string")),
        },
        ColumnType::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            _ => Err(bad("true or false")),
        },
        ColumnType::Timestamp => match value {
            Value::String(s) => parse_timestamp(s)
                .map(|t| Value::String(format_timestamp(t)))
                .ok_or_else(|| bad("an RFC 3339 timestamp such as 2024-05-01T12:00:00Z")),
            _ => Err(bad("an RFC 3339 timestamp string")),
        },
        ColumnType::Uuid => match value {
            Value::String(s) => uuid::Uuid::parse_str(s)
                .map(|u| Value::String(u.hyphenated().to_string()))
                .map_err(|_| bad("a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8")),
            _ => Err(bad("a UUID string")),
        },
        ColumnType::Bytes => match value {
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b)))
                .map_err(|_| bad("a standard base64 string")),
            _ => Err(bad("a standard base64 string")),
        },
        ColumnType::Json => Ok(value.clone()),
    }
}

/// Accepts RFC 3339 (`T` or a space between date and time), a date-time
/// without offset (taken as UTC) and a bare date (midnight UTC).
fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let t_form = s.replacen(' ', "T", 1);
    if let Ok(t) = DateTime::parse_from_rfc3339(&t_form) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(&t_form, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    None
}

/// A decimal string (`-12.50`, `3e4`) as a JSON number: an integer when it is
/// one and fits 64 bits, else a float.
fn parse_decimal(s: &str) -> Option<Value> {
    let t = s.trim();
    let valid = !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        && t.chars().any(|c| c.is_ascii_digit());
    if !valid {
        return None;
    }
    if let Ok(i) = t.parse::<i64>() {
        return Some(Value::from(i));
    }
    let f: f64 = t.parse().ok()?;
    serde_json::Number::from_f64(f).map(Value::Number)
}

/// A short description of a value for messages (never the whole value: it
/// could be megabytes).
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut end = s.len().min(40);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            if end < s.len() {
                format!("the string {:?}...", &s[..end])
            } else {
                format!("the string {s:?}")
            }
        }
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A value in one of SQLite's storage classes, ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sv {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Encodes a value for a column of type `ty` (normalizing it first, so a
/// value of the wrong type is `InvalidInput` naming `column`), or by its JSON
/// kind when there is no column (raw-query parameters).
pub(crate) fn encode(column: &str, ty: Option<ColumnType>, value: &Value) -> Result<Sv, Error> {
    if value.is_null() {
        return Ok(Sv::Null);
    }
    let Some(ty) = ty else {
        return Ok(encode_plain(value));
    };
    let v = normalize(column, ty, value)?;
    Ok(match (ty, &v) {
        (ColumnType::Json, v) => Sv::Text(v.to_string()),
        (ColumnType::Bytes, Value::String(s)) => Sv::Blob(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| Error::internal("normalized bytes are not base64"))?,
        ),
        (_, v) => encode_plain(v),
    })
}

fn encode_plain(v: &Value) -> Sv {
    match v {
        Value::Null => Sv::Null,
        Value::Bool(b) => Sv::Int(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Sv::Int(i),
            None => Sv::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Sv::Text(s.clone()),
        Value::Array(_) | Value::Object(_) => Sv::Text(v.to_string()),
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Decodes a stored value back to JSON: by the column type when known,
/// else by the storage class (integer, real, text, blob as base64).
pub(crate) fn decode(sv: Sv, ty: Option<ColumnType>) -> Value {
    match (ty, sv) {
        (_, Sv::Null) => Value::Null,
        (Some(ColumnType::Boolean), Sv::Int(i)) => Value::Bool(i != 0),
        (Some(ColumnType::Boolean), Sv::Real(f)) => Value::Bool(f != 0.0),
        (Some(ColumnType::Float), Sv::Int(i)) => float(i as f64),
        (Some(ColumnType::Json), Sv::Text(s)) => {
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        }
        (Some(ColumnType::Numeric), Sv::Text(s)) => parse_decimal(&s).unwrap_or(Value::String(s)),
        (Some(ColumnType::Numeric | ColumnType::Integer), Sv::Real(f))
            if f.fract() == 0.0 && (-I64_BOUND..I64_BOUND).contains(&f) =>
        {
            if ty == Some(ColumnType::Integer) {
                Value::from(f as i64)
            } else {
                float(f)
            }
        }
        (_, Sv::Int(i)) => Value::from(i),
        (_, Sv::Real(f)) => float(f),
        (_, Sv::Text(s)) => Value::String(s),
        (_, Sv::Blob(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encode_decode_every_type() {
        let cases = [
            (ColumnType::Text, json!("héllo 'x'"), json!("héllo 'x'")),
            (ColumnType::Integer, json!(5.0), json!(5)),
            (ColumnType::Float, json!(2), json!(2.0)),
            (ColumnType::Boolean, json!(true), json!(true)),
            (
                ColumnType::Timestamp,
                json!("2024-05-01T14:00:00+02:00"),
                json!("2024-05-01T12:00:00.000000Z"),
            ),
            (
                ColumnType::Uuid,
                json!("67E55044-10B1-426F-9247-BB680E5FE0C8"),
                json!("67e55044-10b1-426f-9247-bb680e5fe0c8"),
            ),
            (
                ColumnType::Json,
                json!({"a": [1, "x"]}),
                json!({"a": [1, "x"]}),
            ),
            (ColumnType::Json, json!("just text"), json!("just text")),
            (ColumnType::Bytes, json!("aGk="), json!("aGk=")),
            (ColumnType::Numeric, json!("1.25"), json!(1.25)),
        ];
        for (ty, input, expected) in cases {
            let sv = encode("c", Some(ty), &input).unwrap();
            assert_eq!(decode(sv, Some(ty)), expected, "{ty:?}");
        }
        assert_eq!(
            encode("c", Some(ColumnType::Bytes), &json!("aGk=")).unwrap(),
            Sv::Blob(b"hi".to_vec())
        );
        assert_eq!(
            encode("c", Some(ColumnType::Boolean), &json!(false)).unwrap(),
            Sv::Int(0)
        );
        let e = encode("name", Some(ColumnType::Integer), &json!("x")).unwrap_err();
        assert!(e.message().contains("name"), "{e}");
        assert_eq!(decode(Sv::Blob(vec![0, 255]), None), json!("AP8="));
        assert_eq!(decode(Sv::Real(75.25), None), json!(75.25));
    }
}
