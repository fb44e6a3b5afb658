//! Encoding values to SQLite storage classes and decoding them back to the
//! documented JSON shapes. Type checking and normalization are the shared
//! rules of `truststream_core_db::value`.

use base64::Engine as _;
use truststream_core_db::{ColumnType, Error, Value};

pub(crate) use truststream_core_db::value::{is_stored_form, normalize, parse_decimal, I64_BOUND};

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
pub(crate) fn encode(column: &str, ty: Option<ColumnType>, value: Value) -> Result<Sv, Error> {
    if value.is_null() {
        return Ok(Sv::Null);
    }
    let Some(ty) = ty else {
        return Ok(encode_plain(value));
    };
    // A value already in its stored form (text, a timestamp as core-db
    // writes it, a lower-case UUID, an integer, a bool) moves into the
    // argument as it is: `normalize` would return it unchanged. JSON is
    // stored as its text, so it is always written out below.
    if ty != ColumnType::Json && is_stored_form(ty, &value) {
        return Ok(encode_plain(value));
    }
    let v = normalize(column, ty, &value)?;
    Ok(match (ty, v) {
        (ColumnType::Json, v) => Sv::Text(v.to_string()),
        (ColumnType::Bytes, Value::String(s)) => Sv::Blob(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| Error::internal("normalized bytes are not base64"))?,
        ),
        (_, v) => encode_plain(v),
    })
}

fn encode_plain(v: Value) -> Sv {
    match v {
        Value::Null => Sv::Null,
        Value::Bool(b) => Sv::Int(i64::from(b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Sv::Int(i),
            None => Sv::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Sv::Text(s),
        v @ (Value::Array(_) | Value::Object(_)) => Sv::Text(v.to_string()),
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
    fn stored_forms_bind_as_their_normalized_values() {
        let cases = [
            (ColumnType::Text, json!("x")),
            (ColumnType::Integer, json!(-7)),
            (ColumnType::Float, json!(2.5)),
            (ColumnType::Float, json!(-0.0)),
            (ColumnType::Boolean, json!(true)),
            (ColumnType::Numeric, json!(1.25)),
            (ColumnType::Numeric, json!(12)),
            (ColumnType::Timestamp, json!("2024-05-01T12:00:00.000000Z")),
            (
                ColumnType::Uuid,
                json!("67e55044-10b1-426f-9247-bb680e5fe0c8"),
            ),
        ];
        for (ty, v) in cases {
            assert!(is_stored_form(ty, &v), "{ty:?} {v}");
            let slow = encode_plain(normalize("c", ty, &v).unwrap());
            assert_eq!(
                encode("c", Some(ty), v.clone()).unwrap(),
                slow,
                "{ty:?} {v}"
            );
        }
        // JSON is written as its text, a stored form or not.
        assert_eq!(
            encode("c", Some(ColumnType::Json), json!("s")).unwrap(),
            Sv::Text("\"s\"".into())
        );
    }

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
            let sv = encode("c", Some(ty), input.clone()).unwrap();
            assert_eq!(decode(sv, Some(ty)), expected, "{ty:?}");
        }
        assert_eq!(
            encode("c", Some(ColumnType::Bytes), json!("aGk=")).unwrap(),
            Sv::Blob(b"hi".to_vec())
        );
        assert_eq!(
            encode("c", Some(ColumnType::Boolean), json!(false)).unwrap(),
            Sv::Int(0)
        );
        let e = encode("name", Some(ColumnType::Integer), json!("x")).unwrap_err();
        assert!(e.message().contains("name"), "{e}");
        assert_eq!(decode(Sv::Blob(vec![0, 255]), None), json!("AP8="));
        assert_eq!(decode(Sv::Real(75.25), None), json!(75.25));
    }
}
