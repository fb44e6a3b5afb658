//! Values between core-db's forms and PostgreSQL's JSON forms, for tables
//! whose schema is known (from the SQL backend).
//!
//! A PostgREST server over real PostgreSQL answers in PostgreSQL's forms
//! (`2024-05-01T12:00:00.25+00:00`, `bytea` as `\x6869`, objects with keys
//! in its own order) and coerces what it is sent (`42` into a text column
//! becomes `'42'`). core-db promises one form per type and a type check on
//! every write, so with the schema at hand rows are checked and converted
//! on the way out and normalized and put in column order on the way in.
//! Without a schema (REST only) values pass as the server has them.

use base64::Engine as _;
use truststream_core_db::value::{format_timestamp, normalize, parse_timestamp};
use truststream_core_db::{
    ColumnRef, ColumnType, DbResult, Error, Filter, Row, TableSchema, Value,
};

/// Checks `row` against `schema` and converts it to what PostgreSQL takes,
/// in place: the caller's row is what is sent (keys in its order), only
/// values that change are replaced. Unknown columns are left to the server
/// (which names them).
pub(crate) fn encode(schema: &TableSchema, mut row: Row, pg_bytes: bool) -> DbResult<Row> {
    for (k, v) in row.iter_mut() {
        if v.is_null() {
            continue;
        }
        let Some(def) = schema.find(k) else {
            continue;
        };
        if already_stored(def.ty, v) {
            continue;
        }
        let n =
            normalize(k, def.ty, v).map_err(|e| e.with_context("table", schema.name.clone()))?;
        *v = match def.ty {
            ColumnType::Bytes if pg_bytes => Value::String(bytes_to_pg(&n)?),
            _ => n,
        };
    }
    Ok(row)
}

/// Whether `v` is already in the form [`normalize`] would give it (so it
/// need not be copied).
fn already_stored(ty: ColumnType, v: &Value) -> bool {
    match (ty, v) {
        (ColumnType::Text, Value::String(_))
        | (ColumnType::Boolean, Value::Bool(_))
        | (ColumnType::Json, _) => true,
        (ColumnType::Integer, Value::Number(n)) => n.is_i64(),
        _ => false,
    }
}

fn bytes_to_pg(v: &Value) -> DbResult<String> {
    let s = v.as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Error::invalid_input("a bytes value must be standard base64"))?;
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

fn bytes_from_pg(s: &str) -> Option<String> {
    let hex = s.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// One value as core-db stores it (a value that does not parse is kept).
fn decode_value(ty: ColumnType, v: Value) -> Value {
    match (ty, &v) {
        (_, Value::Null) => v,
        (ColumnType::Timestamp, Value::String(s)) => parse_timestamp(s)
            .map(|t| Value::String(format_timestamp(t)))
            .unwrap_or(v),
        (ColumnType::Bytes, Value::String(s)) => bytes_from_pg(s).map(Value::String).unwrap_or(v),
        (ColumnType::Json, _) => v,
        _ => normalize("", ty, &v).unwrap_or(v),
    }
}

/// A row read back: values in core-db's forms; with `all_columns` (no
/// select list), keys in the schema's column order, else in `order` (the
/// select list's output names). `alias` maps an output name to its column.
/// Values are converted in place; the row is rebuilt only when its keys
/// are not already in that order (servers over PostgreSQL answer in it;
/// postrust-server sorts keys).
pub(crate) fn decode(
    schema: &TableSchema,
    mut row: Row,
    all_columns: bool,
    order: &[String],
    alias: &dyn Fn(&str) -> Option<String>,
) -> Row {
    for (k, v) in row.iter_mut() {
        let column = alias(k);
        if let Some(def) = schema.find(column.as_deref().unwrap_or(k)) {
            *v = decode_value(def.ty, std::mem::take(v));
        }
    }
    let wanted: Vec<&str> = if all_columns {
        schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .filter(|c| row.contains_key(*c))
            .collect()
    } else {
        order
            .iter()
            .map(String::as_str)
            .filter(|c| row.contains_key(*c))
            .collect()
    };
    if row
        .keys()
        .map(String::as_str)
        .take(wanted.len())
        .eq(wanted.iter().copied())
    {
        return row;
    }
    let mut out = Row::with_capacity(row.len());
    for name in wanted {
        if let Some((k, v)) = row.shift_remove_entry(name) {
            out.insert(k, v);
        }
    }
    out.extend(row);
    out
}

/// `filter` with bytes values in PostgreSQL's form (`\x...`), for the
/// columns of `schema` that hold bytes.
pub(crate) fn encode_filter(schema: &TableSchema, filter: &Filter) -> Filter {
    // Only called for servers that take PostgreSQL's bytea form.
    let is_bytes = |c: &ColumnRef| {
        c.table.as_ref().is_none_or(|t| *t == schema.name)
            && schema
                .find(&c.column)
                .is_some_and(|d| d.ty == ColumnType::Bytes)
    };
    let conv = |v: &Value| match v {
        Value::String(_) => bytes_to_pg(v)
            .map(Value::String)
            .unwrap_or_else(|_| v.clone()),
        _ => v.clone(),
    };
    match filter {
        Filter::Cmp { column, op, value } if is_bytes(column) => Filter::Cmp {
            column: column.clone(),
            op: *op,
            value: conv(value),
        },
        Filter::In { column, values } if is_bytes(column) => Filter::In {
            column: column.clone(),
            values: values.iter().map(conv).collect(),
        },
        Filter::NotIn { column, values } if is_bytes(column) => Filter::NotIn {
            column: column.clone(),
            values: values.iter().map(conv).collect(),
        },
        Filter::And(fs) => Filter::And(fs.iter().map(|f| encode_filter(schema, f)).collect()),
        Filter::Or(fs) => Filter::Or(fs.iter().map(|f| encode_filter(schema, f)).collect()),
        Filter::Not(f) => Filter::Not(Box::new(encode_filter(schema, f))),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use truststream_core_db::{ColumnDef, ErrorKind};

    fn schema() -> TableSchema {
        TableSchema::new("t")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("name"))
            .column(ColumnDef::timestamp("at"))
            .column(ColumnDef::bytes("b"))
            .column(ColumnDef::float("f"))
    }

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn writes_are_checked_and_converted() {
        let r = encode(
            &schema(),
            row(json!({"id": 1, "b": "aGk=", "at": "2024-05-01T14:00:00+02:00", "x": 5})),
            true,
        )
        .unwrap();
        assert_eq!(r["b"], json!("\\x6869"));
        assert_eq!(r["at"], json!("2024-05-01T12:00:00.000000Z"));
        assert_eq!(
            r["x"],
            json!(5),
            "unknown columns are the server's to refuse"
        );
        let e = encode(&schema(), row(json!({"name": 42})), true).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = encode(&schema(), row(json!({"b": "%%%"})), true).unwrap_err();
        let r = encode(&schema(), row(json!({"b": "aGk="})), false).unwrap();
        assert_eq!(r["b"], json!("aGk="), "base64 servers get base64");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    /// The body a create sends, to the byte, as before rows were encoded
    /// in place (the bytes the old copy-into-a-new-map encoding gave).
    #[test]
    fn the_encoded_body_is_unchanged() {
        let schema = schema()
            .column(ColumnDef::uuid("u"))
            .column(ColumnDef::json("j"))
            .column(ColumnDef::boolean("ok"));
        let r = row(json!({
            "name": "n\u{e9}\"q",
            "x": {"k": [1, 2]},
            "id": 7,
            "f": 2,
            "at": "2024-05-01T14:00:00.5+02:00",
            "b": "aGk=",
            "u": "67E55044-10B1-426F-9247-BB680E5FE0C8",
            "j": {"z": 1, "a": null},
            "ok": true,
            "nothing": null,
        }));
        let expected = concat!(
            r#"{"name":"né\"q","x":{"k":[1,2]},"id":7,"f":2.0,"#,
            r#""at":"2024-05-01T12:00:00.500000Z","b":"\\x6869","#,
            r#""u":"67e55044-10b1-426f-9247-bb680e5fe0c8","j":{"z":1,"a":null},"#,
            r#""ok":true,"nothing":null}"#
        );
        let pg = serde_json::to_string(&encode(&schema, r.clone(), true).unwrap()).unwrap();
        assert_eq!(pg, expected);
        let b64 = serde_json::to_string(&encode(&schema, r, false).unwrap()).unwrap();
        assert_eq!(b64, expected.replace(r#""\\x6869""#, r#""aGk=""#));
    }

    #[test]
    fn reads_are_normalized_and_ordered() {
        let r = decode(
            &schema(),
            row(
                json!({"at": "2024-05-01T12:00:00.25+00:00", "b": "\\x6869", "f": 2, "id": 1, "name": "n"}),
            ),
            true,
            &[],
            &|_| None,
        );
        assert_eq!(r.keys().collect::<Vec<_>>(), ["id", "name", "at", "b", "f"]);
        assert_eq!(r["at"], json!("2024-05-01T12:00:00.250000Z"));
        assert_eq!(r["b"], json!("aGk="));
        assert_eq!(r["f"], json!(2.0));
        let r = decode(
            &schema(),
            row(json!({"name": "n", "when": "2024-05-01T12:00:00+00:00"})),
            false,
            &["when".to_string(), "name".to_string()],
            &|k| (k == "when").then(|| "at".to_string()),
        );
        assert_eq!(r["when"], json!("2024-05-01T12:00:00.000000Z"));
        assert_eq!(
            r.keys().collect::<Vec<_>>(),
            ["when", "name"],
            "select order"
        );
        let f = encode_filter(
            &schema(),
            &truststream_core_db::or([
                truststream_core_db::col("b").eq("aGk="),
                truststream_core_db::col("name").eq("aGk="),
            ]),
        );
        assert_eq!(
            f,
            truststream_core_db::or([
                truststream_core_db::col("b").eq("\\x6869"),
                truststream_core_db::col("name").eq("aGk="),
            ])
        );
    }
}
