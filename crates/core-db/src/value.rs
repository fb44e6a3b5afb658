//! Type checking and normalization of column values, shared by every
//! provider so each stores and compares values the same way.
//!
//! Every value stored, and every literal a filter compares a column with, goes
//! through [`normalize`], so stored values have one form per type and compare
//! correctly with `truststream_core_db::eval::compare`.

use crate::{ColumnType, Error, Value};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// 2^63: integral floats in `-2^63..2^63` convert to `i64` exactly.
pub const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// The stored form of a timestamp: UTC, always six fractional digits, `Z`, so
/// that string order is time order.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    let nanos = t.nanosecond();
    // Years 0..=9999 and no leap second: written digit by digit (chrono's
    // formatter costs about ten times more); anything else as chrono
    // writes it, which this matches byte for byte (tested).
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(SecondsFormat::Micros, true);
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    put(20, 6, nanos / 1_000);
    // Only ASCII digits and separators were written.
    String::from_utf8(b.to_vec()).unwrap_or_default()
}

/// Whether `s` is a timestamp in stored form, exactly as
/// [`format_timestamp`] writes it for years 0–9999
/// (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, a real date and time of day): then
/// normalizing it gives `s` back, and the parse can be skipped.
pub fn is_stored_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    // Separators by position, then the digit runs between them.
    let digits = |from: usize, to: usize| b[from..to].iter().all(u8::is_ascii_digit);
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[26] != b'Z'
        || !(digits(0, 4)
            && digits(5, 7)
            && digits(8, 10)
            && digits(11, 13)
            && digits(14, 16)
            && digits(17, 19)
            && digits(20, 26))
    {
        return false;
    }
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
    NaiveDate::from_ymd_opt(year as i32, month, day).is_some()
        && num(11, 13) < 24
        && num(14, 16) < 60
        && num(17, 19) < 60
}

/// Whether `s` is a UUID in stored form (lowercase, hyphenated), which
/// normalizing gives back unchanged.
fn is_stored_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    };
    b.len() == 36
        && b[8] == b'-'
        && b[13] == b'-'
        && b[18] == b'-'
        && b[23] == b'-'
        && hex(0, 8)
        && hex(9, 13)
        && hex(14, 18)
        && hex(19, 23)
        && hex(24, 36)
}

/// The current time in stored form.
pub fn now() -> Value {
    Value::String(format_timestamp(Utc::now()))
}

/// Checks that a non-null `value` fits `ty` and returns its stored form.
/// `column` names the column in the error.
pub fn normalize(column: &str, ty: ColumnType, value: &Value) -> Result<Value, Error> {
    let bad = |expected: &str| {
        Error::invalid_input(format!(
            "column {column} has type {} and takes {expected}; got {}",
            crate::sql::compile::type_name(ty),
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

/// [`normalize`] taking the value by value: a value already in its stored
/// form (a string for a text column, any JSON for a JSON column, a bool, an
/// integer for an integer column) is returned as it is instead of copied.
/// Same results, same errors.
pub fn normalize_owned(column: &str, ty: ColumnType, value: Value) -> Result<Value, Error> {
    if is_stored_form(ty, &value) {
        Ok(value)
    } else {
        normalize(column, ty, &value)
    }
}

/// Whether `value` is already the stored form of a `ty` column's value:
/// [`normalize`] would return it unchanged (a string for a text column,
/// any JSON for a JSON column, a bool, an integer for an integer column, a
/// timestamp as [`format_timestamp`] writes it, a lower-case hyphenated
/// UUID). `false` does not mean the value is invalid, only that
/// [`normalize`] must look at it.
pub fn is_stored_form(ty: ColumnType, value: &Value) -> bool {
    match (ty, value) {
        (ColumnType::Text, Value::String(_))
        | (ColumnType::Json, _)
        | (ColumnType::Numeric, Value::Number(_))
        | (ColumnType::Boolean, Value::Bool(_)) => true,
        (ColumnType::Integer, Value::Number(n)) => n.is_i64(),
        // A float is finite (JSON holds no other) and reads back as itself.
        (ColumnType::Float, Value::Number(n)) => n.is_f64(),
        (ColumnType::Timestamp, Value::String(s)) => is_stored_timestamp(s),
        (ColumnType::Uuid, Value::String(s)) => is_stored_uuid(s),
        _ => false,
    }
}

/// Accepts RFC 3339 (`T` or a space between date and time), a date-time
/// without offset (taken as UTC) and a bare date (midnight UTC).
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
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
pub fn parse_decimal(s: &str) -> Option<Value> {
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
pub fn describe(v: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn format_timestamp_writes_what_chrono_writes() {
        use chrono::TimeZone;
        let chrono = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut times = vec![
            Utc.with_ymd_and_hms(2026, 12, 4, 13, 5, 9).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 15, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
        ];
        // Sub-microsecond digits are cut, not rounded, as chrono does; a
        // leap second (nanoseconds >= 10^9) goes to chrono.
        for nanos in [1, 999, 1_000, 123_456_789, 999_999_999, 1_500_000_000] {
            times.push(
                Utc.from_utc_datetime(
                    &NaiveDate::from_ymd_opt(2024, 2, 29)
                        .unwrap()
                        .and_hms_nano_opt(23, 59, 59, nanos)
                        .unwrap(),
                ),
            );
        }
        for t in times {
            assert_eq!(format_timestamp(t), chrono(t), "{t:?}");
        }
    }

    #[test]
    fn owned_values_normalize_as_borrowed_ones() {
        let types = [
            ColumnType::Text,
            ColumnType::Integer,
            ColumnType::Float,
            ColumnType::Numeric,
            ColumnType::Boolean,
            ColumnType::Timestamp,
            ColumnType::Uuid,
            ColumnType::Bytes,
            ColumnType::Json,
        ];
        let values = [
            json!("x"),
            json!(""),
            json!(5),
            json!(-5),
            json!(u64::MAX),
            json!(5.0),
            json!(5.5),
            json!(true),
            json!({"a": [1]}),
            json!([1]),
            json!("2024-05-01 12:00:00"),
            json!("67E55044-10B1-426F-9247-BB680E5FE0C8"),
            json!("aGk="),
            json!("12.50"),
            json!(0.1),
            json!(1e300),
            json!(-2.5e-300),
            json!(-0.0),
            // Stored-form look-alikes: the fast path must agree with the
            // parse on each.
            json!("2024-02-29T23:59:59.999999Z"),
            json!("2023-02-29T00:00:00.000000Z"),
            json!("2024-04-31T00:00:00.000000Z"),
            json!("2024-05-01T24:00:00.000000Z"),
            json!("2024-05-01T12:60:00.000000Z"),
            json!("2024-05-01T12:00:60.000000Z"),
            json!("0000-01-01T00:00:00.000000Z"),
            json!("9999-12-31T23:59:59.999999Z"),
            json!("2024-05-01T12:00:00.000000+"),
            json!("2024-05-01t12:00:00.000000Z"),
            json!("2024-05-01T12:00:00.00000Z"),
            json!("67e55044-10b1-426f-9247-bb680e5fe0c8"),
            json!("67e55044-10b1-426f-9247-bb680e5fe0cg"),
            json!("67e5504410b1-426f-9247-bb680e5fe0c8-"),
            json!("{67e55044-10b1-426f-9247-bb680e5fe0c8}"),
        ];
        for ty in types {
            for v in &values {
                let borrowed = normalize("c", ty, v);
                let owned = normalize_owned("c", ty, v.clone());
                match (borrowed, owned) {
                    (Ok(b), Ok(o)) => assert_eq!(b, o, "{ty:?} {v}"),
                    (Err(b), Err(o)) => assert_eq!(b.message(), o.message(), "{ty:?} {v}"),
                    (b, o) => panic!("{ty:?} {v}: borrowed {b:?}, owned {o:?}"),
                }
            }
        }
    }

    #[test]
    fn timestamps_normalize_to_utc_micros() {
        let v = normalize(
            "t",
            ColumnType::Timestamp,
            &json!("2024-05-01T14:00:00+02:00"),
        )
        .unwrap();
        assert_eq!(v, json!("2024-05-01T12:00:00.000000Z"));
        let v = normalize("t", ColumnType::Timestamp, &json!("2024-05-01 12:00:00.5")).unwrap();
        assert_eq!(v, json!("2024-05-01T12:00:00.500000Z"));
        let v = normalize("t", ColumnType::Timestamp, &json!("2024-05-01")).unwrap();
        assert_eq!(v, json!("2024-05-01T00:00:00.000000Z"));
        assert!(normalize("t", ColumnType::Timestamp, &json!("yesterday")).is_err());
        assert!(normalize("t", ColumnType::Timestamp, &json!(5)).is_err());
    }

    #[test]
    fn scalars() {
        assert_eq!(
            normalize("i", ColumnType::Integer, &json!(5.0)).unwrap(),
            json!(5)
        );
        assert!(normalize("i", ColumnType::Integer, &json!(5.5)).is_err());
        assert!(normalize("i", ColumnType::Integer, &json!(u64::MAX)).is_err());
        assert!(normalize("i", ColumnType::Integer, &json!("5")).is_err());
        assert_eq!(
            normalize("f", ColumnType::Float, &json!(2)).unwrap(),
            json!(2.0)
        );
        assert_eq!(
            normalize("n", ColumnType::Numeric, &json!("12")).unwrap(),
            json!(12)
        );
        assert_eq!(
            normalize("n", ColumnType::Numeric, &json!("1.25")).unwrap(),
            json!(1.25)
        );
        assert!(normalize("n", ColumnType::Numeric, &json!("1,25")).is_err());
        assert!(normalize("b", ColumnType::Boolean, &json!("true")).is_err());
        let u = normalize(
            "u",
            ColumnType::Uuid,
            &json!("67E55044-10B1-426F-9247-BB680E5FE0C8"),
        )
        .unwrap();
        assert_eq!(u, json!("67e55044-10b1-426f-9247-bb680e5fe0c8"));
        assert!(normalize("u", ColumnType::Uuid, &json!("nope")).is_err());
        assert_eq!(
            normalize("x", ColumnType::Bytes, &json!("aGk=")).unwrap(),
            json!("aGk=")
        );
        assert!(normalize("x", ColumnType::Bytes, &json!("%%%")).is_err());
        let e = normalize("name", ColumnType::Text, &json!(1)).unwrap_err();
        assert!(e.message().contains("name"), "{e}");
    }

    /// The stored-form checks say yes exactly for text that normalizing
    /// gives back unchanged: mutations of a stored UUID and timestamp in
    /// every position, against `normalize` itself.
    #[test]
    fn stored_form_checks_agree_with_normalize() {
        let cases = [
            (ColumnType::Uuid, "67e55044-10b1-426f-9247-bb680e5fe0c8"),
            (ColumnType::Timestamp, "2024-02-29T23:59:59.123456Z"),
        ];
        let replacements = [
            b'0', b'9', b'a', b'f', b'g', b'A', b'F', b'-', b'T', b':', b'.', b'Z', b' ',
        ];
        for (ty, stored) in cases {
            assert!(is_stored_form(ty, &json!(stored)), "{stored}");
            let mut variants = vec![
                stored.to_uppercase(),
                format!("{stored}0"),
                stored[1..].to_string(),
                String::new(),
            ];
            for i in 0..stored.len() {
                for r in replacements {
                    let mut b = stored.as_bytes().to_vec();
                    b[i] = r;
                    variants.push(String::from_utf8(b).unwrap());
                }
            }
            for v in variants {
                let value = json!(v);
                let same = normalize("c", ty, &value).is_ok_and(|n| n == value);
                assert_eq!(is_stored_form(ty, &value), same, "{ty:?} {v:?}");
            }
        }
        for t in [
            "2023-02-29T00:00:00.000000Z",
            "2024-13-01T00:00:00.000000Z",
            "2024-01-01T24:00:00.000000Z",
            "2024-01-01T23:60:00.000000Z",
            "2024-01-01T23:59:60.000000Z",
        ] {
            assert!(!is_stored_timestamp(t), "{t}");
        }
    }
}
