//! JSON values to typed PostgreSQL binds and result columns back to the
//! documented JSON shapes. Type checking and normalization are the shared
//! rules of `truststream_core_db::value`.

use std::str::FromStr;

use base64::Engine as _;
use sqlx::postgres::{PgArguments, PgRow, PgTypeInfo, Postgres};
use sqlx::types::{BigDecimal, Json};
use sqlx::{Arguments as _, Column as _, Row as _, TypeInfo as _, ValueRef as _};
use truststream_core_db::sql::compile::Bind;
use truststream_core_db::sql::engine::ColumnHints;
use truststream_core_db::sql::rows::{decode_into, decode_one_into, decode_set, ResultColumns};
use truststream_core_db::value::{
    format_timestamp, is_stored_timestamp, normalize, parse_decimal, parse_timestamp,
};
use truststream_core_db::{ColumnDef, ColumnType, DbResult, Error, ResultSet, Row, Value};

use crate::error;

fn bind_err(e: sqlx::error::BoxDynError) -> Error {
    Error::internal(format!("cannot bind a value: {e}"))
}

fn b64(s: &str) -> DbResult<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Error::internal("normalized bytes are not base64"))
}

fn decimal(column: &str, v: &Value) -> DbResult<BigDecimal> {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    BigDecimal::from_str(&text)
        .map_err(|_| Error::invalid_input(format!("column {column} takes a decimal number")))
}

/// Adds one value for a column of type `ty` (normalized first, so a wrong
/// type is `InvalidInput` naming the column). A NULL is bound with the
/// column's type, so PostgreSQL never has to guess it.
pub(crate) fn add_typed(
    args: &mut PgArguments,
    column: &str,
    ty: ColumnType,
    value: &Value,
) -> DbResult<()> {
    let null = value.is_null();
    let v = if null {
        Value::Null
    } else {
        normalize(column, ty, value)?
    };
    let r = match ty {
        ColumnType::Text => args.add(v.as_str().map(str::to_string)),
        ColumnType::Integer => args.add(v.as_i64()),
        ColumnType::Float => args.add(v.as_f64()),
        ColumnType::Boolean => args.add(v.as_bool()),
        ColumnType::Timestamp => args.add(v.as_str().and_then(parse_timestamp)),
        ColumnType::Uuid => args.add(
            v.as_str()
                .map(uuid::Uuid::parse_str)
                .transpose()
                .map_err(|_| Error::internal("normalized uuid does not parse"))?,
        ),
        ColumnType::Json => args.add(if null { None } else { Some(Json(v)) }),
        ColumnType::Bytes => args.add(v.as_str().map(b64).transpose()?),
        ColumnType::Numeric => args.add(if null {
            None
        } else {
            Some(decimal(column, &v)?)
        }),
    };
    r.map_err(bind_err)
}

/// Appends one prepared row to a `COPY ... FROM STDIN` body in the text
/// format: `columns`' values in order, tab-separated, `\N` for NULL, one
/// line per row. Each value is written as the text form of what
/// [`add_typed`] binds for it (the same normalization, so the same errors
/// and the same stored value), escaped for the format.
pub(crate) fn copy_text_row(out: &mut Vec<u8>, columns: &[&ColumnDef], row: &Row) -> DbResult<()> {
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        let v = row.get(&c.name).unwrap_or(&Value::Null);
        if v.is_null() {
            out.extend_from_slice(b"\\N");
            continue;
        }
        copy_text_value(out, &c.name, c.ty, v)?;
    }
    out.push(b'\n');
    Ok(())
}

fn copy_text_value(out: &mut Vec<u8>, column: &str, ty: ColumnType, value: &Value) -> DbResult<()> {
    use std::io::Write as _;
    let normalized;
    // A prepared row's values are normalized already; normalizing again is
    // cheap for the common shapes and keeps this total for any input.
    let v = match (ty, value) {
        (ColumnType::Text, Value::String(_))
        | (ColumnType::Integer, Value::Number(_))
        | (ColumnType::Boolean, Value::Bool(_))
        | (ColumnType::Json, _) => value,
        _ => {
            normalized = normalize(column, ty, value)?;
            &normalized
        }
    };
    let bad = || Error::invalid_input(format!("column {column} has a value of the wrong type"));
    match ty {
        ColumnType::Text => copy_escape(out, v.as_str().ok_or_else(bad)?.as_bytes()),
        ColumnType::Integer => {
            let n = v.as_i64().ok_or_else(bad)?;
            write!(out, "{n}").map_err(|_| bad())?;
        }
        // `{:?}` is the shortest text that reads back as the same f64.
        ColumnType::Float => {
            let f = v.as_f64().ok_or_else(bad)?;
            write!(out, "{f:?}").map_err(|_| bad())?;
        }
        ColumnType::Boolean => out.push(if v.as_bool().ok_or_else(bad)? {
            b't'
        } else {
            b'f'
        }),
        ColumnType::Timestamp => {
            let text = v.as_str().ok_or_else(bad)?;
            // The stored form (`T`, `Z`) is timestamptz input as it is,
            // but for year 0, which PostgreSQL spells 1 BC.
            if is_stored_timestamp(text) && !text.starts_with("0000") {
                out.extend_from_slice(text.as_bytes());
            } else {
                copy_timestamp(out, parse_timestamp(text).ok_or_else(bad)?);
            }
        }
        // Normalized: lowercase, hyphenated.
        ColumnType::Uuid => out.extend_from_slice(v.as_str().ok_or_else(bad)?.as_bytes()),
        ColumnType::Json => {
            let text = serde_json::to_vec(v)
                .map_err(|e| Error::internal("cannot serialize a JSON value").with_source(e))?;
            copy_escape(out, &text);
        }
        ColumnType::Bytes => {
            let bytes = b64(v.as_str().ok_or_else(bad)?)?;
            // `\x` + hex: the backslash itself escaped for the format.
            out.extend_from_slice(b"\\\\x");
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for b in bytes {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
        }
        ColumnType::Numeric => {
            let d = decimal(column, v)?;
            write!(out, "{d}").map_err(|_| bad())?;
        }
    }
    Ok(())
}

/// A timestamp as PostgreSQL's `timestamptz` input reads it, to the
/// microsecond (what the binary bind sends), `BC` for years before 1.
fn copy_timestamp(out: &mut Vec<u8>, t: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike as _, Timelike as _};
    use std::io::Write as _;
    let year = t.year();
    let (y, era) = if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    };
    let _ = write!(
        out,
        "{y:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00{era}",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1000
    );
}

/// Text escaped for `COPY`'s text format: backslash, tab, newline and
/// carriage return are the characters it gives a meaning to.
fn copy_escape(out: &mut Vec<u8>, text: &[u8]) {
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
}

/// Adds a value that has no column: by its JSON kind.
fn add_plain(args: &mut PgArguments, value: &Value) -> DbResult<()> {
    let r = match value {
        Value::Null => args.add(Option::<String>::None),
        Value::Bool(b) => args.add(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => args.add(i),
            None => args.add(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => args.add(s.clone()),
        Value::Array(_) | Value::Object(_) => args.add(Json(value.clone())),
    };
    r.map_err(bind_err)
}

/// Binds compiled values.
pub(crate) fn arguments(binds: Vec<Bind>) -> DbResult<PgArguments> {
    let mut args = PgArguments::default();
    for b in binds {
        match (b.ty, b.value) {
            // Strings for text columns (and untyped ones) move into the
            // arguments as they are.
            (Some(ColumnType::Text) | None, Value::String(s)) => {
                args.add(Some(s)).map_err(bind_err)?;
            }
            (Some(ty), v) => add_typed(&mut args, &b.column, ty, &v)?,
            (None, v) => add_plain(&mut args, &v)?,
        }
    }
    Ok(args)
}

/// The column type a PostgreSQL parameter type takes, when it is one of the
/// mapped ones.
pub(crate) fn column_type_of(pg: &PgTypeInfo) -> Option<ColumnType> {
    Some(match pg.name() {
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => ColumnType::Text,
        "INT8" | "INT4" | "INT2" => ColumnType::Integer,
        "FLOAT8" | "FLOAT4" => ColumnType::Float,
        "BOOL" => ColumnType::Boolean,
        "TIMESTAMPTZ" => ColumnType::Timestamp,
        "UUID" => ColumnType::Uuid,
        "JSONB" | "JSON" => ColumnType::Json,
        "BYTEA" => ColumnType::Bytes,
        "NUMERIC" => ColumnType::Numeric,
        _ => return None,
    })
}

/// Binds raw-query parameters by the types PostgreSQL inferred for them
/// (`created_at >= :since` binds a timestamp, not text), so the same SQL
/// works on every SQL provider. A value that does not fit the inferred type
/// is `InvalidInput` naming the parameter; a type outside the mapping takes
/// the value's JSON text.
pub(crate) fn raw_arguments(values: &[Value], types: &[PgTypeInfo]) -> DbResult<PgArguments> {
    let mut args = PgArguments::default();
    for (i, v) in values.iter().enumerate() {
        let name = format!("parameter {}", i + 1);
        let Some(pg) = types.get(i) else {
            add_plain(&mut args, v)?;
            continue;
        };
        let null = v.is_null();
        let int = |bits: u32| -> DbResult<Option<i64>> {
            if null {
                return Ok(None);
            }
            let n = normalize(&name, ColumnType::Integer, v)?.as_i64();
            let limit = 1i64 << (bits - 1);
            match n {
                Some(n) if (-limit..limit).contains(&n) => Ok(Some(n)),
                _ => Err(Error::invalid_input(format!(
                    "{name} takes a {bits}-bit integer"
                ))),
            }
        };
        let r = match pg.name() {
            "INT4" => args.add(int(32)?.map(|n| n as i32)),
            "INT2" => args.add(int(16)?.map(|n| n as i16)),
            "FLOAT4" => args.add(if null {
                None
            } else {
                normalize(&name, ColumnType::Float, v)?
                    .as_f64()
                    .map(|f| f as f32)
            }),
            "TIMESTAMP" => args.add(if null {
                None
            } else {
                let t = normalize(&name, ColumnType::Timestamp, v)?;
                t.as_str().and_then(parse_timestamp).map(|t| t.naive_utc())
            }),
            "DATE" => args.add(if null {
                None
            } else {
                let t = normalize(&name, ColumnType::Timestamp, v)?;
                t.as_str().and_then(parse_timestamp).map(|t| t.date_naive())
            }),
            // `json` (not `jsonb`) takes its text as the binary form.
            "JSON" => args.add(if null { None } else { Some(v.to_string()) }),
            _ => match column_type_of(pg) {
                Some(ColumnType::Text) if !null && !v.is_string() => args.add(v.to_string()),
                Some(ty) => {
                    add_typed(&mut args, &name, ty, v)?;
                    Ok(())
                }
                None => {
                    return Err(Error::invalid_input(format!(
                        "{name} has PostgreSQL type {}, which raw_query cannot bind from JSON; \
                         cast it in the SQL (for example `:value::text`)",
                        pg.name()
                    )))
                }
            },
        };
        r.map_err(bind_err)?;
    }
    Ok(args)
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Decodes every row of a result set (one [`ResultColumns`] for all);
/// `hints` give the types the values should come back as (an aggregate's
/// `SUM` is `NUMERIC` in PostgreSQL but an integer to the caller).
pub(crate) fn decode_rows(rows: &[PgRow], hints: ColumnHints<'_>) -> DbResult<Vec<Row>> {
    decode_rows_into(rows, hints, Vec::new())
}

/// [`decode_rows`] filling the `husks` that fit
/// ([`truststream_core_db::sql::rows::decode_into`]).
pub(crate) fn decode_rows_into(
    rows: &[PgRow],
    hints: ColumnHints<'_>,
    husks: Vec<Row>,
) -> DbResult<Vec<Row>> {
    let kinds = rows.first().map(kinds_of).unwrap_or_default();
    decode_into(
        rows,
        husks,
        |first| columns_of(first, hints),
        |row, i, ty| decode_kind(row, i, ty, kinds[i]),
    )
}

/// Decodes every row of a result set as a [`ResultSet`] (the column names
/// once), with `hints` as in [`decode_rows`].
pub(crate) fn decode_result_set(rows: &[PgRow], hints: ColumnHints<'_>) -> DbResult<ResultSet> {
    let kinds = rows.first().map(kinds_of).unwrap_or_default();
    decode_set(
        rows,
        |first| first.columns().iter().map(|c| c.name()).collect(),
        hints,
        |row, i, ty| decode_kind(row, i, ty, kinds[i]),
    )
}

/// Decodes one row (a result of at most one row), into `husk` when it
/// fits ([`truststream_core_db::sql::rows::decode_one_into`]).
pub(crate) fn decode_row_into(
    row: &PgRow,
    hints: ColumnHints<'_>,
    husk: Option<Row>,
) -> DbResult<Row> {
    let kinds = kinds_of(row);
    let names = row.columns().iter().map(|c| c.name());
    decode_one_into(names, hints, husk, |i, ty| {
        decode_kind(row, i, ty, kinds[i])
    })
}

fn columns_of(row: &PgRow, hints: ColumnHints<'_>) -> ResultColumns {
    ResultColumns::new(row.columns().iter().map(|c| c.name()), hints)
}

/// The mapped PostgreSQL types.
#[derive(Debug, Clone, Copy)]
enum Pg {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    TimestampTz,
    Timestamp,
    Date,
    Uuid,
    Json,
    Bytea,
    Text,
    /// A type the provider does not map to JSON.
    Unmapped,
}

/// How a result column decodes: its mapped type and the column type whose
/// documented shape that type's values have.
#[derive(Debug, Clone, Copy)]
struct Kind {
    pg: Pg,
    natural: Option<ColumnType>,
}

/// Each result column's [`Kind`], from the row's column types: worked out
/// once per result, not once per value (every row of a result has its
/// columns' types).
fn kinds_of(row: &PgRow) -> Vec<Kind> {
    row.columns()
        .iter()
        .map(|c| {
            let t = c.type_info();
            let pg = match t.name() {
                "BOOL" => Pg::Bool,
                "INT2" => Pg::Int2,
                "INT4" => Pg::Int4,
                "INT8" => Pg::Int8,
                "FLOAT4" => Pg::Float4,
                "FLOAT8" => Pg::Float8,
                "NUMERIC" => Pg::Numeric,
                "TIMESTAMPTZ" => Pg::TimestampTz,
                "TIMESTAMP" => Pg::Timestamp,
                "DATE" => Pg::Date,
                "UUID" => Pg::Uuid,
                "JSON" | "JSONB" => Pg::Json,
                "BYTEA" => Pg::Bytea,
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" | "UNKNOWN" => Pg::Text,
                _ => Pg::Unmapped,
            };
            Kind {
                pg,
                natural: column_type_of(t),
            }
        })
        .collect()
}

/// Decodes column `i` of `row` as its [`Kind`] says, straight from the
/// value (no second lookup and type check per column), then to `hint`
/// when that is not the type's own column type (whose documented shape
/// the decoded value already has).
fn decode_kind(row: &PgRow, i: usize, hint: Option<ColumnType>, kind: Kind) -> DbResult<Value> {
    let raw = row.try_get_raw(i).map_err(error::map)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let name = || row.columns().get(i).map_or("?", |c| c.name());
    let Kind { pg, natural } = kind;
    let bad = |e: sqlx::error::BoxDynError| {
        Error::internal(format!("cannot decode column {}: {e}", name()))
    };
    fn get<'r, T: sqlx::Decode<'r, Postgres>>(
        raw: sqlx::postgres::PgValueRef<'r>,
    ) -> Result<T, sqlx::error::BoxDynError> {
        T::decode(raw)
    }
    let v = match pg {
        Pg::Bool => Value::Bool(get::<bool>(raw).map_err(bad)?),
        Pg::Int2 => Value::from(get::<i16>(raw).map_err(bad)?),
        Pg::Int4 => Value::from(get::<i32>(raw).map_err(bad)?),
        Pg::Int8 => Value::from(get::<i64>(raw).map_err(bad)?),
        Pg::Float4 => float(f64::from(get::<f32>(raw).map_err(bad)?)),
        Pg::Float8 => float(get::<f64>(raw).map_err(bad)?),
        Pg::Numeric => {
            let d = get::<BigDecimal>(raw).map_err(bad)?.to_string();
            parse_decimal(&d).unwrap_or(Value::String(d))
        }
        Pg::TimestampTz => Value::String(format_timestamp(
            get::<chrono::DateTime<chrono::Utc>>(raw).map_err(bad)?,
        )),
        Pg::Timestamp => Value::String(format_timestamp(
            get::<chrono::NaiveDateTime>(raw).map_err(bad)?.and_utc(),
        )),
        Pg::Date => Value::String(
            get::<chrono::NaiveDate>(raw)
                .map_err(bad)?
                .format("%Y-%m-%d")
                .to_string(),
        ),
        // Encoded into a stack buffer: `to_string` goes through the
        // formatting machinery (about 900 instructions a value).
        Pg::Uuid => Value::String(String::from(
            get::<uuid::Uuid>(raw)
                .map_err(bad)?
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        )),
        Pg::Json => get::<Json<Value>>(raw).map_err(bad)?.0,
        Pg::Bytea => Value::String(
            base64::engine::general_purpose::STANDARD.encode(get::<Vec<u8>>(raw).map_err(bad)?),
        ),
        Pg::Text => Value::String(get::<String>(raw).map_err(bad)?),
        Pg::Unmapped => {
            let name = name();
            return Err(Error::invalid_input(format!(
                "result column {name} has PostgreSQL type {}, which the provider does \
                 not map to JSON; cast it in the query (for example `{name}::text`)",
                raw.type_info().name()
            )));
        }
    };
    // A value of the type's own column type is in its documented shape
    // already (normalizing it would only copy it).
    match hint {
        Some(ty) if natural != Some(ty) => Ok(normalize(name(), ty, &v).unwrap_or(v)),
        _ => Ok(v),
    }
}

/// A row as `row_to_json` renders it (the change feed's triggers) in the
/// documented JSON shapes of `schema`'s columns: timestamps normalized,
/// `bytea` (`\x6869`) as base64.
pub(crate) fn from_row_json(
    schema: &truststream_core_db::TableSchema,
    json: Value,
) -> DbResult<Row> {
    let Value::Object(map) = json else {
        return Err(Error::internal("a change-feed row is not a JSON object"));
    };
    let mut out = Row::with_capacity(map.len());
    for (k, v) in map {
        let v = match (schema.find(&k).map(|c| c.ty), v) {
            (_, Value::Null) => Value::Null,
            (Some(ColumnType::Bytes), Value::String(s)) => {
                let hex_part = s.strip_prefix("\\x").unwrap_or(&s);
                let bytes = hex::decode(hex_part).map_err(|_| {
                    Error::internal(format!("change feed: column {k} is not bytea hex"))
                })?;
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            (Some(ColumnType::Json), v) => v,
            (Some(ty), v) => normalize(&k, ty, &v).unwrap_or(v),
            (None, v) => v,
        };
        out.insert(k, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use truststream_core_db::{ColumnDef, TableSchema};

    #[test]
    fn row_json_to_documented_shapes() {
        let schema = TableSchema::new("t")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::bytes("b"))
            .column(ColumnDef::timestamp("at"))
            .column(ColumnDef::json("j"));
        let row = from_row_json(
            &schema,
            json!({"id": 1, "b": "\\x6869", "at": "2024-05-01T14:00:00.5+02:00", "j": {"a": [1]}}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(row),
            json!({"id": 1, "b": "aGk=", "at": "2024-05-01T12:00:00.500000Z", "j": {"a": [1]}})
        );
        assert!(from_row_json(&schema, json!([1])).is_err());
    }

    #[test]
    fn typed_binds_reject_wrong_types() {
        let mut args = PgArguments::default();
        assert!(add_typed(&mut args, "n", ColumnType::Integer, &json!("x")).is_err());
        assert!(add_typed(&mut args, "n", ColumnType::Integer, &json!(null)).is_ok());
        assert!(add_typed(&mut args, "d", ColumnType::Numeric, &json!("12.50")).is_ok());
        assert!(add_typed(&mut args, "u", ColumnType::Uuid, &json!("nope")).is_err());
    }

    #[test]
    fn copy_text_escapes_and_spells_what_timestamptz_reads() {
        use truststream_core_db::ColumnDef;
        let cols = [
            ColumnDef::text("t"),
            ColumnDef::timestamp("a"),
            ColumnDef::timestamp("b"),
            ColumnDef::bytes("r"),
            ColumnDef::json("j"),
            ColumnDef::integer("n"),
        ];
        let refs: Vec<&ColumnDef> = cols.iter().collect();
        let row = json!({
            "t": "a\tb\nc\\d\re", "a": "2025-03-01T12:00:00.000001Z",
            "b": "0000-06-15T00:00:00.000000Z", "r": "AAEC/w==", "j": {"k": "x\ny"}, "n": null,
        });
        let mut out = Vec::new();
        copy_text_row(&mut out, &refs, row.as_object().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\tb\\nc\\\\d\\re\t2025-03-01T12:00:00.000001Z\t\
             0001-06-15 00:00:00.000000+00 BC\t\\\\x000102ff\t{\"k\":\"x\\\\ny\"}\t\\N\n"
        );
    }
}
