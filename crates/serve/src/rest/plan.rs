//! From parsed query-string parts to core-db values: filter values typed by
//! the column's [`ColumnType`], names checked against the table's schema,
//! and the `select=` projection applied to rows after the read.

use serde_json::{Map, Number, Value};
use truststream_core_db::{
    value::normalize, CmpOp, ColumnRef, ColumnType, Filter, Row, TableSchema,
};

use super::error::{ApiError, ApiResult};
use super::parse::{self, Cast, Cond, LeafOp, PathStep, SelectField};
use axum::http::StatusCode;

/// The PostgreSQL name of a column type, for error messages.
pub(crate) fn pg_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Integer => "bigint",
        ColumnType::Float => "double precision",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamp with time zone",
        ColumnType::Uuid => "uuid",
        ColumnType::Json => "jsonb",
        ColumnType::Bytes => "bytea",
        ColumnType::Numeric => "numeric",
    }
}

/// A query-string value as the JSON value of a column of type `ty`.
pub(crate) fn typed(schema: &TableSchema, column: &str, raw: &str) -> ApiResult<Value> {
    let def = schema
        .find(column)
        .ok_or_else(|| ApiError::unknown_column_read(&schema.name, column))?;
    let bad = || ApiError::bad_value(pg_type(def.ty), raw);
    let candidate = match def.ty {
        ColumnType::Integer => Value::from(raw.trim().parse::<i64>().map_err(|_| bad())?),
        ColumnType::Float => {
            let f = raw.trim().parse::<f64>().map_err(|_| bad())?;
            Value::Number(Number::from_f64(f).ok_or_else(bad)?)
        }
        ColumnType::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Value::Bool(true),
            "false" | "f" | "no" | "n" | "off" | "0" => Value::Bool(false),
            _ => return Err(bad()),
        },
        ColumnType::Json => serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw)),
        _ => Value::from(raw),
    };
    normalize(column, def.ty, &candidate).map_err(|_| bad())
}

fn check_column(schema: &TableSchema, column: &str) -> ApiResult<ColumnRef> {
    if schema.find(column).is_none() {
        return Err(ApiError::unknown_column_read(&schema.name, column));
    }
    Ok(ColumnRef {
        table: None,
        column: column.to_string(),
    })
}

/// `*` in PostgREST patterns is `%`.
fn pattern(p: &str) -> String {
    p.replace('*', "%")
}

/// Turns a parsed condition into a core-db [`Filter`].
pub(crate) fn to_filter(schema: &TableSchema, cond: &Cond) -> ApiResult<Filter> {
    match cond {
        Cond::Logic { or, negate, items } => {
            let parts = items
                .iter()
                .map(|c| to_filter(schema, c))
                .collect::<ApiResult<Vec<_>>>()?;
            let f = if *or {
                Filter::Or(parts)
            } else {
                Filter::And(parts)
            };
            Ok(if *negate { Filter::Not(Box::new(f)) } else { f })
        }
        Cond::Leaf {
            column,
            path,
            negate,
            op,
        } => {
            if !path.is_empty() {
                check_column(schema, column)?;
                return Err(ApiError::unsupported(
                    "filtering on a JSON path (col->key) is not supported by this database provider",
                ));
            }
            let f = leaf(schema, column, op)?;
            Ok(if *negate { Filter::Not(Box::new(f)) } else { f })
        }
    }
}

fn leaf(schema: &TableSchema, column: &str, op: &LeafOp) -> ApiResult<Filter> {
    let c = check_column(schema, column)?;
    let cmp = |op: CmpOp, raw: &str| -> ApiResult<Filter> {
        Ok(Filter::Cmp {
            column: c.clone(),
            op,
            value: typed(schema, column, raw)?,
        })
    };
    let like = |ci: bool, p: &str| Filter::Cmp {
        column: c.clone(),
        op: if ci { CmpOp::ILike } else { CmpOp::Like },
        value: Value::String(pattern(p)),
    };
    Ok(match op {
        LeafOp::Eq(v) => cmp(CmpOp::Eq, v)?,
        LeafOp::Neq(v) => cmp(CmpOp::Ne, v)?,
        LeafOp::Gt(v) => cmp(CmpOp::Gt, v)?,
        LeafOp::Gte(v) => cmp(CmpOp::Gte, v)?,
        LeafOp::Lt(v) => cmp(CmpOp::Lt, v)?,
        LeafOp::Lte(v) => cmp(CmpOp::Lte, v)?,
        LeafOp::Like(p) => like(false, p),
        LeafOp::ILike(p) => like(true, p),
        LeafOp::LikeMany { ci, all, patterns } => {
            let parts: Vec<Filter> = patterns.iter().map(|p| like(*ci, p)).collect();
            if *all {
                Filter::And(parts)
            } else {
                Filter::Or(parts)
            }
        }
        LeafOp::In(values) => Filter::In {
            column: c.clone(),
            values: values
                .iter()
                .map(|v| typed(schema, column, v))
                .collect::<ApiResult<_>>()?,
        },
        LeafOp::Is(v) => {
            let is_bool = |b: bool| {
                // `IS TRUE` is two-valued: false (not unknown) for NULL.
                Filter::And(vec![
                    Filter::IsNotNull { column: c.clone() },
                    Filter::Cmp {
                        column: c.clone(),
                        op: CmpOp::Eq,
                        value: Value::Bool(b),
                    },
                ])
            };
            match v.as_str() {
                "null" | "unknown" => Filter::IsNull { column: c.clone() },
                "not_null" => Filter::IsNotNull { column: c.clone() },
                "true" | "false" => {
                    let def = schema.find(column).map(|d| d.ty);
                    if def != Some(ColumnType::Boolean) {
                        return Err(ApiError::bad_value(
                            pg_type(def.unwrap_or(ColumnType::Text)),
                            v,
                        )
                        .hint("is.true and is.false apply to boolean columns"));
                    }
                    is_bool(v == "true")
                }
                _ => {
                    return Err(ApiError::bad_query(format!(
                        "is.{} is not one of is.null, is.not_null, is.true, is.false, is.unknown",
                        truststream_core::echo(v)
                    )))
                }
            }
        }
        LeafOp::IsDistinct(v) if v.eq_ignore_ascii_case("null") => {
            Filter::IsNotNull { column: c.clone() }
        }
        LeafOp::IsDistinct(v) => Filter::Or(vec![
            Filter::IsNull { column: c.clone() },
            cmp(CmpOp::Ne, v)?,
        ]),
        LeafOp::Contains(v) | LeafOp::ContainedBy(v) | LeafOp::Overlaps(v) => {
            let op = match op {
                LeafOp::Contains(_) => CmpOp::Contains,
                LeafOp::ContainedBy(_) => CmpOp::ContainedBy,
                _ => CmpOp::Overlaps,
            };
            json_filter(schema, c, op, v)?
        }
        LeafOp::TextSearch {
            kind,
            config,
            query,
        } => {
            let ty = schema.find(column).map_or(ColumnType::Text, |d| d.ty);
            if ty != ColumnType::Text {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "42883",
                    format!(
                        "{} needs a text column; {column} has type {}",
                        kind.name(),
                        pg_type(ty)
                    ),
                ));
            }
            c.text_search(query.clone(), *kind, config.as_deref())
        }
        LeafOp::Unsupported(op) => {
            return Err(ApiError::unsupported(format!(
                "the operator {op} is not supported by this database provider (no range or regular-expression operators)"
            ))
            .hint("filter with eq, neq, gt, gte, lt, lte, like, ilike, in, is, isdistinct, cs, cd, ov or fts"))
        }
    })
}

/// `cs`/`cd`/`ov` on a JSON (or array) column. The value is JSON
/// (`["a"]`, `{"k":1}`) or a PostgreSQL array literal (`{a,b}`, what
/// postgrest-js sends for an array); `{}` is the empty object, except for
/// `ov`, which takes an array of strings, numbers or booleans.
fn json_filter(schema: &TableSchema, c: ColumnRef, op: CmpOp, raw: &str) -> ApiResult<Filter> {
    let ty = schema.find(&c.column).map_or(ColumnType::Text, |d| d.ty);
    if ty != ColumnType::Json {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "42883",
            format!(
                "operator does not exist: {} {} ({}): {} is not a json or array column",
                pg_type(ty),
                match op {
                    CmpOp::Contains => "@>",
                    CmpOp::ContainedBy => "<@",
                    _ => "&&",
                },
                op.name(),
                c.column
            ),
        )
        .hint("cs, cd and ov apply to json and array columns"));
    }
    let t = raw.trim();
    let array = |t: &str| {
        t.strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .and_then(parse::pg_array_items)
            .map(Value::Array)
    };
    let value = if op == CmpOp::Overlaps {
        array(t).or_else(|| {
            serde_json::from_str::<Value>(t)
                .ok()
                .filter(Value::is_array)
        })
    } else {
        serde_json::from_str::<Value>(t).ok().or_else(|| array(t))
    };
    let value = value.ok_or_else(|| {
        ApiError::bad_value("json", raw).hint(
            "cs and cd take JSON ({\"a\":1}, [\"a\"]) or an array literal ({a,b}); ov an array ({a,b})",
        )
    })?;
    let f = Filter::Cmp {
        column: c,
        op,
        value,
    };
    f.validate()
        .map_err(|e| ApiError::bad_query(e.message().to_string()))?;
    Ok(f)
}

/// Checks every name of `select=` against the schema.
pub(crate) fn check_select(schema: &TableSchema, fields: &[SelectField]) -> ApiResult<()> {
    for f in fields {
        if let SelectField::Column { column, .. } = f {
            check_column(schema, column)?;
        }
    }
    Ok(())
}

/// The columns a read needs for `select=` (empty: every column, for `*`
/// or no `select=`), so the provider reads and decodes only those.
pub(crate) fn base_columns(fields: &[SelectField]) -> Vec<truststream_core_db::SelectItem> {
    if fields.is_empty() || fields.contains(&SelectField::All) {
        return Vec::new();
    }
    let mut seen = std::collections::BTreeSet::new();
    fields
        .iter()
        .filter_map(|f| match f {
            SelectField::Column { column, .. } if seen.insert(column.as_str()) => {
                Some(truststream_core_db::SelectItem::Column {
                    column: ColumnRef::parse(column),
                    alias: None,
                })
            }
            _ => None,
        })
        .collect()
}

/// Whether `select=` is `*` or plain columns (no alias, path, cast or
/// embed), each named once: reading exactly those columns answers it.
pub(crate) fn is_plain(fields: &[SelectField]) -> bool {
    if fields.iter().all(|f| *f == SelectField::All) {
        return true;
    }
    fields.iter().enumerate().all(|(i, f)| {
        matches!(f, SelectField::Column { column, path, cast: None, alias: None }
        if path.is_empty()
            && !fields[..i].iter().any(
                |g| matches!(g, SelectField::Column { column: c, .. } if c == column)
            ))
    })
}

/// Whether a result of `columns` (in that order) is the answer to plain
/// `fields` as it is: `select=*` takes the columns read, plain columns
/// must be exactly those. `None` (a set of rows) never is.
pub(crate) fn answers(fields: &[SelectField], columns: Option<&[String]>) -> bool {
    let Some(columns) = columns else {
        return false;
    };
    if fields.iter().all(|f| *f == SelectField::All) {
        return true;
    }
    columns.len() == fields.len()
        && columns
            .iter()
            .zip(fields)
            .all(|(c, f)| matches!(f, SelectField::Column { column, .. } if column == c))
}

/// Whether `row` already is `fields` applied to it: every field a plain
/// column (no alias, path or cast), and the row's keys exactly those
/// columns in that order.
fn is_projected(fields: &[SelectField], row: &Row) -> bool {
    row.len() == fields.len()
        && row.keys().zip(fields).all(|(k, f)| {
            matches!(f, SelectField::Column { column, path, cast: None, alias: None }
                if path.is_empty() && column == k)
        })
}

/// Applies `select=` to rows read with (at least) the columns it names.
pub(crate) fn project(schema: &TableSchema, fields: &[SelectField], rows: Vec<Row>) -> Vec<Row> {
    if fields.iter().all(|f| *f == SelectField::All) {
        return rows;
    }
    rows.into_iter()
        .map(|mut row| {
            if is_projected(fields, &row) {
                // Read with exactly the columns `select=` names, in its
                // order: the row is the answer (no copy of its values).
                return row;
            }
            let mut out = Map::new();
            for (i, f) in fields.iter().enumerate() {
                match f {
                    SelectField::All => {
                        for c in &schema.columns {
                            if let Some(v) = row.get(&c.name) {
                                out.insert(c.name.clone(), v.clone());
                            }
                        }
                    }
                    SelectField::Column {
                        column,
                        path,
                        cast,
                        alias,
                    } => {
                        let mut v = row.get(column).cloned().unwrap_or(Value::Null);
                        v = follow(v, path);
                        if let Some(c) = cast {
                            v = apply_cast(v, *c);
                        }
                        let name = alias
                            .clone()
                            .or_else(|| path.last().map(|p| p.key.clone()))
                            .unwrap_or_else(|| column.clone());
                        out.insert(name, v);
                    }
                    SelectField::Embed(e) => {
                        let v = row
                            .remove(&super::embed::slot_key(i))
                            .unwrap_or(Value::Null);
                        if e.fields.is_empty() {
                            // `table()`: filters only.
                        } else if e.spread {
                            if let Value::Object(m) = v {
                                out.extend(m);
                            }
                        } else {
                            out.insert(e.name().to_string(), v);
                        }
                    }
                }
            }
            out
        })
        .collect()
}

fn follow(mut v: Value, path: &[PathStep]) -> Value {
    for step in path {
        v = match v {
            Value::Object(mut m) => m.remove(&step.key).unwrap_or(Value::Null),
            Value::Array(mut a) => match step.key.parse::<i64>() {
                Ok(i) => {
                    let idx = if i < 0 { a.len() as i64 + i } else { i };
                    if idx >= 0 && (idx as usize) < a.len() {
                        a.swap_remove(idx as usize)
                    } else {
                        Value::Null
                    }
                }
                Err(_) => Value::Null,
            },
            _ => Value::Null,
        };
        if step.as_text {
            v = as_text(v);
        }
    }
    v
}

fn as_text(v: Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => Value::String(s),
        other => Value::String(other.to_string()),
    }
}

fn apply_cast(v: Value, cast: Cast) -> Value {
    match (cast, v) {
        (_, Value::Null) => Value::Null,
        (Cast::Text, v) => as_text(v),
        (Cast::Json, Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        (Cast::Json, v) => v,
        (Cast::Int, Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => n
                .as_f64()
                .map(|f| Value::from(f.round() as i64))
                .unwrap_or(Value::Null),
        },
        (Cast::Int, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| {
                s.trim()
                    .parse::<f64>()
                    .map(|f| Value::from(f.round() as i64))
            })
            .unwrap_or(Value::Null),
        (Cast::Int, Value::Bool(b)) => Value::from(i64::from(b)),
        (Cast::Float, Value::Number(n)) => n
            .as_f64()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        (Cast::Float, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        (Cast::Bool, Value::Bool(b)) => Value::Bool(b),
        (Cast::Bool, Value::Number(n)) => Value::Bool(n.as_f64().is_some_and(|f| f != 0.0)),
        (Cast::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "on" | "1" => Value::Bool(true),
            "false" | "f" | "no" | "off" | "0" => Value::Bool(false),
            _ => Value::Null,
        },
        (_, _) => Value::Null,
    }
}

/// Rows as CSV with a header row (PostgREST's `text/csv`).
pub(crate) fn csv(rows: &[Row]) -> String {
    let mut out = String::new();
    let Some(first) = rows.first() else {
        return out;
    };
    let header: Vec<&String> = first.keys().collect();
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    out.push_str(
        &header
            .iter()
            .map(|h| field(h))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push('\n');
    for r in rows {
        let line: Vec<String> = header
            .iter()
            .map(|h| match r.get(*h) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => field(s),
                Some(v) => field(&v.to_string()),
            })
            .collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn rows_read_as_selected_are_kept_and_others_projected() {
        let schema = TableSchema::new("t");
        let fields = super::super::parse::select("id,title").unwrap();
        let exact = row(json!({"id": 1, "title": "a"}));
        assert!(is_projected(&fields, &exact));
        assert_eq!(project(&schema, &fields, vec![exact.clone()]), vec![exact]);
        // More columns than selected (an embed's key, a provider reading
        // every column): projected.
        let wide = row(json!({"id": 1, "title": "a", "owner": "x"}));
        assert!(!is_projected(&fields, &wide));
        assert_eq!(
            project(&schema, &fields, vec![wide]),
            vec![row(json!({"id": 1, "title": "a"}))]
        );
        // An alias, a cast or a path is never the row as read.
        for select in ["id,name:title", "id,title::text", "id,title->>x"] {
            let fields = super::super::parse::select(select).unwrap();
            assert!(
                !is_projected(&fields, &row(json!({"id": 1, "title": "a"}))),
                "{select}"
            );
        }
        let fields = super::super::parse::select("id,name:title").unwrap();
        assert_eq!(
            project(&schema, &fields, vec![row(json!({"id": 1, "title": "a"}))]),
            vec![row(json!({"id": 1, "name": "a"}))]
        );
    }
}
