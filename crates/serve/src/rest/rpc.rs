//! `/rest/v1/rpc/<fn>`: calls a database function with named arguments,
//! where the provider has functions (PostgreSQL, `raw_query` in the
//! PostgreSQL dialect).
//!
//! Deny by default: only functions listed in `[serve.rpc]` are callable
//! (`anon` / `authenticated` flags; the service role may call every listed
//! one). The function name and every argument name are checked as core-db
//! identifiers and quoted; every argument value is a bound parameter
//! (`SELECT * FROM "fn"("a" => :p0)`): no request text is SQL. With
//! `serve.row_security` the call runs through the caller's scoped handle.
//!
//! The result as PostgREST answers it: a set-returning function gives an
//! array, a scalar function the value, a function returning a row the
//! object, a `void` function 204.
//!
//! On a function returning rows, `select=`, filters, `order`, `limit` and
//! `offset` apply to its result as on a table (`/rpc/f?select=a&a=gt.3&
//! order=a.desc&limit=2`; on `GET` the parameters naming an argument of
//! the function are its arguments). The result's columns and their types
//! come from the catalog; filters are core-db values evaluated on the rows
//! ([`truststream_core_db::eval`]), `order` is compiled into the call's
//! `ORDER BY` (quoted, checked names) and, without filters, `limit` and
//! `offset` are bound values of the statement. With filters, at most
//! [`MAX_FILTERED_ROWS`] result rows are read.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use truststream_core_db::sql::SqlDialect;
use truststream_core_db::{
    eval, ident, ColumnDef, ColumnType, Error as DbError, ErrorKind, NullsOrder, Params, Row,
    SortDirection, TableSchema,
};

use super::error::{ApiError, ApiResult};
use super::parse::SelectField;
use super::Params as Shaping;
use super::{access, check_profile, parse, plan, rows_body, shape, write};
use crate::caller::Role;
use crate::ServeState;

/// How the function's result comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Returns {
    /// A row type (`RETURNS t`, `RETURNS TABLE`, `RETURNS record`).
    Rows { set: bool },
    /// A scalar (`RETURNS int`, `RETURNS SETOF text`).
    Scalar { set: bool },
    /// `RETURNS void`.
    Void,
}

/// The function's return shape and its arguments' type categories
/// (`{"a": "N"}`) from the catalog, looked up by name in the server's
/// search path (no row: no such function).
const LOOKUP: &str =
    "SELECT p.proretset AS set, t.typtype::text AS kind, t.typname::text AS type, \
     (SELECT jsonb_object_agg(a.name, at.typcategory::text) \
      FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]), p.proargnames) WITH ORDINALITY AS a(ty, name, n) \
      JOIN pg_catalog.pg_type at ON at.oid = a.ty WHERE coalesce(a.name, '') <> '' \
        AND coalesce(p.proargmodes[a.n], 'i') IN ('i', 'b', 'v')) AS args, \
     (SELECT jsonb_agg(jsonb_build_array(c.name, c.type) ORDER BY c.ord) FROM ( \
        SELECT a.attname::text AS name, format_type(a.atttypid, NULL) AS type, a.attnum::int AS ord \
        FROM pg_catalog.pg_attribute a \
        WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped \
        UNION ALL \
        SELECT o.name, format_type(o.ty, NULL), o.ord::int \
        FROM unnest(p.proallargtypes, p.proargnames, p.proargmodes::text[]) WITH ORDINALITY AS o(ty, name, mode, ord) \
        WHERE o.mode IN ('o', 't', 'b')) c) AS cols \
     FROM pg_catalog.pg_proc p \
     JOIN pg_catalog.pg_type t ON t.oid = p.prorettype \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.proname = :name AND p.prokind = 'f' AND n.nspname = ANY (current_schemas(false)) \
     ORDER BY array_position(current_schemas(false), n.nspname) LIMIT 1";

fn not_found(function: &str, details: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "PGRST202",
        format!(
            "Could not find the function public.{} in the schema cache",
            truststream_core::echo(function)
        ),
    )
    .details(details.to_string())
}

/// `GET`/`HEAD`/`POST /rest/v1/rpc/<fn>`.
pub(crate) async fn rpc(
    State(state): State<Arc<ServeState>>,
    Path(function): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    call(&state, &function, &method, &headers, raw.as_deref(), body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn call(
    state: &ServeState,
    function: &str,
    method: &Method,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: Body,
) -> ApiResult<Response> {
    check_profile(headers, method)?;
    let caller = access::caller(state, headers).await?;
    if state.db.capabilities().sql_dialect != Some(SqlDialect::Postgres) {
        return Err(not_found(
            function,
            "functions are not supported by this database provider",
        )
        .hint(
            "core-db has stored functions on PostgreSQL only; call the table endpoints instead",
        ));
    }
    // Unlisted: 404 for every role. Listed but not granted to the
    // caller's role: 401/403 with 42501, as PostgREST answers a function
    // the role may not execute.
    let listed = ident::validate(function)
        .ok()
        .and_then(|()| state.config.rpc.get(function));
    let allowed = match (listed, caller.role) {
        (None, _) => false,
        (Some(_), Role::ServiceRole) => true,
        (Some(p), Role::Anon) => p.anon,
        (Some(p), _) => p.authenticated,
    };
    if listed.is_none() {
        return Err(not_found(
            function,
            "the function is not listed in [serve.rpc]",
        ));
    }
    if !allowed {
        return Err(ApiError::permission_denied(
            caller.role == Role::Anon,
            format!("permission denied for function {function}"),
        ));
    }
    let prefers = |token: &str| {
        headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == token)
    };
    let single_object = prefers("params=single-object");
    let count = ["count=exact", "count=planned", "count=estimated"]
        .into_iter()
        .any(prefers);
    let pairs = parse::pairs(raw.unwrap_or(""))?;
    let body_args =
        match *method {
            Method::GET | Method::HEAD => None,
            Method::POST => {
                // No body: a call without arguments.
                let bytes = write::read_body(state, body).await?;
                let value = if bytes.is_empty() {
                    Value::Object(Map::new())
                } else {
                    write::parse_json(&bytes)?
                };
                Some(if single_object {
                    Args::Single(value)
                } else {
                    match value {
                        Value::Object(m) => Args::Named(m.into_iter().collect()),
                        _ => return Err(ApiError::bad_body(
                            "the arguments must be a JSON object of named arguments",
                        )
                        .hint(
                            "send Prefer: params=single-object to pass the body as one argument",
                        )),
                    }
                })
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "PGRST101",
                    "Only GET, HEAD and POST are allowed for functions",
                ))
            }
        };
    let found = returns(state, function).await?;
    // GET: the parameters naming an argument are arguments; the rest
    // (and every parameter of a POST) shape the result.
    let (args, result_pairs) = match body_args {
        Some(args) => (args, pairs),
        None => {
            let (args, rest): (Vec<_>, Vec<_>) = pairs
                .into_iter()
                .partition(|(k, _)| found.args.get(k).is_some());
            let args = args
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            (Args::Named(typed_query_args(args, &found.args)), rest)
        }
    };
    let returns = found.returns;
    let shaping = if result_pairs.is_empty() {
        None
    } else {
        Some(shaping(function, &found, result_pairs)?)
    };
    let (mut sql, mut params) = statement(function, returns, args)?;
    let pushed_down = shaping
        .as_ref()
        .map(|(_, p)| order_and_page(&mut sql, &mut params, p, count));
    let db = access::database_for(state, &caller, crate::caller::bearer(headers))
        .map_err(|e| ApiError::from_db(&e))?;
    let mut rows = db
        .raw_query(&sql, &params)
        .await
        .map_err(|e| call_failed(function, &e))?;
    let (mut range, mut partial) = (None, false);
    if let (Some((schema, p)), Some(paged)) = (&shaping, pushed_down) {
        let (shaped, offset, total) = shape_rows(schema, p, rows, paged, count)?;
        rows = shaped;
        // A partial answer with a known count is 206, as for tables.
        partial = total.is_some_and(|t| (rows.len() as u64) < t);
        range = Some(super::content_range(offset, rows.len(), total));
    } else if count
        && matches!(
            returns,
            Returns::Rows { set: true } | Returns::Scalar { set: true }
        )
    {
        // A count asked of a call with nothing else to shape: every row is
        // in the answer, so the total is the row count.
        range = Some(super::content_range(0, rows.len(), Some(rows.len() as u64)));
    }
    let (mut status, content_type, text) = match returns {
        Returns::Void => return Ok(StatusCode::NO_CONTENT.into_response()),
        Returns::Rows { set: true } => {
            let (ct, text) = rows_body(shape(headers), &rows)?;
            (StatusCode::OK, ct, text)
        }
        Returns::Rows { set: false } => {
            let value = rows.into_iter().next().map_or(Value::Null, Value::Object);
            (StatusCode::OK, json_type(), value.to_string())
        }
        Returns::Scalar { set } => {
            let mut values = rows
                .into_iter()
                .map(|mut r| r.remove("value").unwrap_or(Value::Null));
            let value = if set {
                Value::Array(values.collect())
            } else {
                values.next().unwrap_or(Value::Null)
            };
            (StatusCode::OK, json_type(), value.to_string())
        }
    };
    if partial {
        status = StatusCode::PARTIAL_CONTENT;
    }
    let mut resp = if *method == Method::HEAD {
        (status, Body::empty()).into_response()
    } else {
        (status, text).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    if let Some(v) = range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}

/// Most rows of a function's result read to be filtered in process.
pub(crate) const MAX_FILTERED_ROWS: usize = 100_000;

/// The result's schema (columns from the catalog) and the shaping
/// parameters typed against it.
fn shaping(
    function: &str,
    found: &Found,
    pairs: Vec<(String, String)>,
) -> ApiResult<(TableSchema, Shaping)> {
    if !matches!(found.returns, Returns::Rows { .. }) {
        return Err(ApiError::bad_query(format!(
            "{} returns no rows: select, filters, order, limit and offset apply to functions returning rows",
            truststream_core::echo(function)
        ))
        .hint("an unknown parameter of a GET call is read as a filter; check the argument names"));
    }
    let mut schema = TableSchema::new(function);
    for (name, ty) in &found.columns {
        schema = schema.column(ColumnDef::new(name, column_type(ty)));
    }
    let p = super::params_of(&schema, pairs)?;
    if p.columns.is_some()
        || p.on_conflict.is_some()
        || !p.embed_params.is_empty()
        || p.fields()
            .iter()
            .any(|f| matches!(f, SelectField::Embed(_)))
    {
        return Err(ApiError::bad_query(
            "embedded resources, columns and on_conflict do not apply to a function's result",
        ));
    }
    Ok((schema, p))
}

/// A catalog type name (`format_type`) as the core-db type its values are
/// typed as for filters.
fn column_type(ty: &str) -> ColumnType {
    match ty {
        "smallint" | "integer" | "bigint" => ColumnType::Integer,
        "real" | "double precision" => ColumnType::Float,
        "boolean" => ColumnType::Boolean,
        "uuid" => ColumnType::Uuid,
        "json" | "jsonb" => ColumnType::Json,
        "bytea" => ColumnType::Bytes,
        "timestamp with time zone" => ColumnType::Timestamp,
        t if t.starts_with("numeric") => ColumnType::Numeric,
        t if t.ends_with("[]") => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

/// Appends `ORDER BY` (the result's checked column names, quoted) and,
/// without filters or a count, `LIMIT`/`OFFSET` as bound values (else a
/// bound cap of [`MAX_FILTERED_ROWS`] + 1). Returns whether paging was
/// pushed into the statement.
fn order_and_page(sql: &mut String, params: &mut Params, p: &Shaping, count: bool) -> bool {
    use std::fmt::Write as _;
    let mut sep = " ORDER BY ";
    for o in &p.order {
        let _ = write!(
            sql,
            "{sep}{} {}{}",
            ident::quote(&o.column.column),
            match o.direction {
                SortDirection::Asc => "ASC",
                SortDirection::Desc => "DESC",
            },
            match o.nulls {
                Some(NullsOrder::First) => " NULLS FIRST",
                Some(NullsOrder::Last) => " NULLS LAST",
                None => "",
            }
        );
        sep = ", ";
    }
    let pushed = p.filter.is_none() && !count;
    if pushed {
        if let Some(l) = p.limit {
            sql.push_str(" LIMIT :limit");
            params.insert("limit".into(), Value::from(l.min(i64::MAX as u64)));
        }
        if let Some(o) = p.offset {
            sql.push_str(" OFFSET :offset");
            params.insert("offset".into(), Value::from(o.min(i64::MAX as u64)));
        }
    } else {
        sql.push_str(" LIMIT :limit");
        params.insert("limit".into(), Value::from(MAX_FILTERED_ROWS as u64 + 1));
    }
    pushed
}

/// Filters, pages (unless the statement did) and projects the result;
/// also the first row's offset and, with `count`, the matching total.
fn shape_rows(
    schema: &TableSchema,
    p: &Shaping,
    mut rows: Vec<Row>,
    paged: bool,
    count: bool,
) -> ApiResult<(Vec<Row>, u64, Option<u64>)> {
    let offset = p.offset.unwrap_or(0);
    if !paged {
        if rows.len() > MAX_FILTERED_ROWS {
            return Err(ApiError::bad_query(format!(
                "the function returned more than {MAX_FILTERED_ROWS} rows to filter or count"
            ))
            .hint("filter inside the function (pass the bound as an argument)"));
        }
        if let Some(f) = &p.filter {
            let mut kept = Vec::with_capacity(rows.len());
            for row in rows {
                if eval::matches(f, &|c| Ok(row.get(&c.column)))? {
                    kept.push(row);
                }
            }
            rows = kept;
        }
    }
    let total = count.then_some(rows.len() as u64);
    if !paged {
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let take = p
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        rows = rows.into_iter().skip(skip).take(take).collect();
    }
    Ok((plan::project(schema, p.fields(), rows), offset, total))
}

/// An error of the call itself: the status and code of its kind, without
/// the database's message. A function's body touches tables the caller
/// may not read, and PostgreSQL's text names them, their constraints and
/// stored values (`Key (v)=(...) already exists`); the server's log has it.
fn call_failed(function: &str, e: &DbError) -> ApiError {
    let mut api = ApiError::from_db(e);
    if matches!(
        e.kind(),
        ErrorKind::Conflict
            | ErrorKind::InvalidInput
            | ErrorKind::NotFound
            | ErrorKind::Unsupported
    ) {
        tracing::warn!(function, error = %e, "rest: the database refused a function call");
        api.message = format!(
            "The call of {function} was refused by the database (its arguments or the function's own work)"
        );
        api.details = None;
        api.hint = Some("the server's log has the database's message".into());
    }
    api
}

fn json_type() -> HeaderValue {
    HeaderValue::from_static("application/json; charset=utf-8")
}

/// The arguments of one call.
#[derive(Debug)]
enum Args {
    /// `name => value` pairs.
    Named(Vec<(String, Value)>),
    /// `Prefer: params=single-object`: the whole body as the one argument.
    Single(Value),
}

/// GET arguments are text: numbers and booleans for parameters of those
/// type categories (PostgreSQL's `typcategory` `N`, `B`); a value that does
/// not parse stays text, and the database refuses it for the parameter.
fn typed_query_args(pairs: Vec<(String, Value)>, categories: &Value) -> Vec<(String, Value)> {
    pairs
        .into_iter()
        .map(|(name, value)| {
            let text = value.as_str().unwrap_or("");
            let typed = match categories.get(&name).and_then(Value::as_str) {
                Some("N") => serde_json::from_str::<serde_json::Number>(text)
                    .ok()
                    .map(Value::Number),
                Some("B") => text.parse::<bool>().ok().map(Value::Bool),
                _ => None,
            };
            (name, typed.unwrap_or(value))
        })
        .collect()
}

/// What the catalog says of a function.
struct Found {
    returns: Returns,
    /// Its input arguments' type categories (`{"a": "N"}`).
    args: Value,
    /// Its result's columns (name, `format_type`) when it returns rows.
    columns: Vec<(String, String)>,
}

async fn returns(state: &ServeState, function: &str) -> ApiResult<Found> {
    let params = Params::from([("name".to_string(), Value::String(function.to_string()))]);
    let rows = state.db.raw_query(LOOKUP, &params).await?;
    let Some(row) = rows.first() else {
        return Err(not_found(function, "no such function in the database"));
    };
    let set = row.get("set").and_then(Value::as_bool).unwrap_or(false);
    let kind = row.get("kind").and_then(Value::as_str).unwrap_or("");
    let type_name = row.get("type").and_then(Value::as_str).unwrap_or("");
    let returns = match (kind, type_name) {
        (_, "void") => Returns::Void,
        ("c", _) | (_, "record") => Returns::Rows { set },
        _ => Returns::Scalar { set },
    };
    let columns = row
        .get("cols")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c.get(0)?.as_str()?.to_string(),
                c.get(1)?.as_str()?.to_string(),
            ))
        })
        .collect();
    Ok(Found {
        returns,
        args: row.get("args").cloned().unwrap_or(Value::Null),
        columns,
    })
}

/// The call's SQL (quoted, checked identifiers and `:pN` placeholders
/// only) and its bound values.
fn statement(function: &str, returns: Returns, args: Args) -> ApiResult<(String, Params)> {
    let mut params = Params::new();
    let mut list = Vec::new();
    match args {
        Args::Single(v) => {
            params.insert("p0".into(), v);
            list.push(":p0".to_string());
        }
        Args::Named(pairs) => {
            if pairs.len() > parse::MAX_ITEMS {
                return Err(ApiError::bad_query(format!(
                    "more than {} arguments",
                    parse::MAX_ITEMS
                )));
            }
            for (i, (name, value)) in pairs.into_iter().enumerate() {
                ident::validate(&name).map_err(|_| {
                    ApiError::bad_query(format!(
                        "invalid argument name {:?}",
                        truststream_core::echo(&name).to_string()
                    ))
                })?;
                list.push(format!("{} => :p{i}", ident::quote(&name)));
                params.insert(format!("p{i}"), value);
            }
        }
    }
    let call = format!("{}({})", ident::quote(function), list.join(", "));
    let sql = match returns {
        Returns::Rows { .. } => format!("SELECT * FROM {call}"),
        Returns::Scalar { .. } | Returns::Void => format!("SELECT {call} AS \"value\""),
    };
    Ok((sql, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quote_names_and_bind_every_value() {
        let (sql, params) = statement(
            "add",
            Returns::Scalar { set: false },
            Args::Named(vec![
                ("a".into(), Value::from(1)),
                ("b".into(), Value::from(2)),
            ]),
        )
        .expect("valid names");
        assert_eq!(sql, r#"SELECT "add"("a" => :p0, "b" => :p1) AS "value""#);
        assert_eq!(params.len(), 2);
        let e = statement(
            "add",
            Returns::Rows { set: true },
            Args::Named(vec![("a); drop table x; --".into(), Value::from(1))]),
        )
        .expect_err("bad argument name");
        assert_eq!(e.code, "PGRST100");
        let (sql, _) = statement("f", Returns::Rows { set: true }, Args::Single(Value::Null))
            .expect("single object");
        assert_eq!(sql, r#"SELECT * FROM "f"(:p0)"#);
    }

    #[test]
    fn query_arguments_take_the_parameters_numeric_and_boolean_types() {
        let categories = serde_json::json!({"n": "N", "b": "B", "t": "S"});
        let typed = typed_query_args(
            vec![
                ("n".into(), Value::from("2.5")),
                ("b".into(), Value::from("true")),
                ("t".into(), Value::from("12")),
                ("n2".into(), Value::from("7")),
            ],
            &categories,
        );
        assert_eq!(
            typed,
            vec![
                ("n".into(), serde_json::json!(2.5)),
                ("b".into(), Value::Bool(true)),
                ("t".into(), Value::from("12")),
                ("n2".into(), Value::from("7")),
            ]
        );
        // Not a number: left as text for the database to refuse.
        let typed = typed_query_args(vec![("n".into(), Value::from("x"))], &categories);
        assert_eq!(typed[0].1, Value::from("x"));
    }

    #[test]
    fn rpc_names_in_config_must_be_identifiers() {
        let bad = crate::ServeConfig::from_json(serde_json::json!({
            "rpc": {"f(); drop": {"anon": true}}
        }))
        .expect_err("not an identifier");
        assert!(bad.message().contains("serve.rpc."), "{bad}");
        let good = crate::ServeConfig::from_json(serde_json::json!({
            "rpc": {"add": {"authenticated": true}}
        }))
        .expect("an identifier");
        assert_eq!(
            good.rpc.get("add"),
            Some(&crate::RpcPolicy {
                anon: false,
                authenticated: true
            })
        );
    }
}
