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

/// Checks `row` against `schema` and converts it to what PostgreSQL takes.
/// Unknown columns are left to the server (which names them).
pub(crate) fn encode(schema: &TableSchema, row: Row, pg_bytes: bool) -> DbResult<Row> {
    let mut out = Row::with_capacity(row.len());
    for (k, v) in row {
        let v = match (schema.find(&k), &v) {
            (Some(def), v) if !v.is_null() => {
                let n = normalize(&k, def.ty, v)
                    .map_err(|e| e.with_context("table", schema.name.clone()))?;
                match def.ty {
                    ColumnType::Bytes if pg_bytes => Value::String(bytes_to_pg(&n)?),
                    _ => n,
                }
            }
            _ => v,
        };
        out.insert(k, v);
    }
    Ok(out)
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
/// select list), keys in the schema's column order. `alias` maps an output
/// name to its column.
pub(crate) fn decode(
    schema: &TableSchema,
    row: Row,
    all_columns: bool,
    order: &[String],
    alias: &dyn Fn(&str) -> Option<String>,
) -> Row {
    let typed = |k: &str, v: Value| {
        let column = alias(k).unwrap_or_else(|| k.to_string());
        match schema.find(&column) {
            Some(def) => decode_value(def.ty, v),
            None => v,
        }
    };
    if all_columns {
        let mut row = row;
        let mut out = Row::with_capacity(row.len());
        for c in &schema.columns {
            if let Some(v) = row.remove(&c.name) {
                out.insert(c.name.clone(), typed(&c.name, v));
            }
        }
        for (k, v) in row {
            let v = typed(&k, v);
            out.insert(k, v);
        }
        return out;
    }
    // Output names in select order (postrust-server answers them sorted).
    let mut row = row;
    let mut out = Row::with_capacity(row.len());
    for name in order {
        if let Some(v) = row.remove(name) {
            let v = typed(name, v);
            out.insert(name.clone(), v);
        }
    }
    for (k, v) in row {
        let v = typed(&k, v);
        out.insert(k, v);
    }
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
