//! `/rest/v1`: the PostgREST API `@supabase/postgrest-js` speaks, over
//! `state.db` through core-db only. Every filter becomes a core-db
//! [`Filter`] value typed by the column's type from
//! [`Database::describe_table`](truststream_core_db::Database::describe_table);
//! no SQL text is ever built from the request.
//!
//! - `parse`: the query-string grammar and `Prefer`.
//! - `plan`: names checked against the schema, values typed, `select=`
//!   applied to rows after the read.
//! - `access`: caller, hidden tables, `[serve.tables]` policies, owner rule.
//! - `embed`: embedded resources over foreign keys (`select=*,users(*)`).
//! - `write`: `POST` (insert, upsert), `PATCH`, `DELETE`.
//! - `rpc`: `/rpc/<fn>`, the functions listed in `[serve.rpc]`.

mod access;
mod embed;
mod error;
mod parse;
mod plan;
mod rpc;
mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::Value;
use truststream_core_db::{AggFunc, Filter, OrderBy, Query, Row, SelectItem, TableSchema};

use self::access::Access;
use self::error::{ApiError, ApiResult};
use self::parse::{Prefer, SelectField};
use crate::config::TableAction;
use crate::ServeState;

/// The routes under `/rest/v1`.
pub(crate) fn router(_state: Arc<ServeState>) -> Router<Arc<ServeState>> {
    Router::new().route("/rpc/{function}", any(rpc::rpc)).route(
        "/{table}",
        get(read_rows)
            .head(read_rows)
            .post(write::insert)
            .patch(write::update)
            .delete(write::delete)
            .put(put),
    )
}

const OBJECT_JSON: &str = "application/vnd.pgrst.object+json";

/// How the client wants rows back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Array,
    Object,
    Csv,
}

fn shape(headers: &HeaderMap) -> Shape {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains(OBJECT_JSON) {
        Shape::Object
    } else if accept.contains("text/csv") {
        Shape::Csv
    } else {
        Shape::Array
    }
}

/// `Accept-Profile` (reads) / `Content-Profile` (writes): only `public`.
fn check_profile(headers: &HeaderMap, method: &Method) -> ApiResult<()> {
    let name = if matches!(*method, Method::GET | Method::HEAD) {
        "accept-profile"
    } else {
        "content-profile"
    };
    match headers.get(name).map(|v| v.to_str().unwrap_or("?")) {
        None | Some("public") => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "PGRST106",
            "The schema must be one of the following: public",
        )),
    }
}

/// The parts of a query string every method shares.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pub select: Option<Vec<SelectField>>,
    pub filter: Option<Filter>,
    pub order: Vec<OrderBy>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub columns: Option<Vec<String>>,
    pub on_conflict: Option<Vec<String>>,
    /// `<embed>.<param>` parameters, typed when the embeds are planned.
    pub embed_params: Vec<embed::EmbedParam>,
}

impl Params {
    fn fields(&self) -> &[SelectField] {
        self.select.as_deref().unwrap_or(&[SelectField::All])
    }
}

/// Parses the query string against the table's schema.
pub(crate) fn params(schema: &TableSchema, raw: Option<&str>) -> ApiResult<Params> {
    params_of(schema, parse::pairs(raw.unwrap_or(""))?)
}

/// [`params`] of query-string pairs already split.
pub(crate) fn params_of(schema: &TableSchema, pairs: Vec<(String, String)>) -> ApiResult<Params> {
    let mut p = Params::default();
    let mut conds = Vec::new();
    // `select=` first: `<embed>.<param>` keys are read against it.
    for (k, v) in &pairs {
        if k == "select" {
            let fields = parse::select(v)?;
            plan::check_select(schema, &fields)?;
            p.select = Some(fields);
        }
    }
    for (k, v) in pairs {
        match k.as_str() {
            "select" => {}
            "order" => {
                for key in parse::order(&v)? {
                    if schema.find(&key.column).is_none() {
                        return Err(ApiError::unknown_column_read(&schema.name, &key.column));
                    }
                    p.order.push(embed::order_by(key));
                }
            }
            "limit" => p.limit = Some(parse::number("limit", &v)?),
            "offset" => p.offset = Some(parse::number("offset", &v)?),
            "columns" => {
                let cols = parse::columns(&v)?;
                for c in &cols {
                    if schema.find(c).is_none() {
                        return Err(ApiError::unknown_column_write(&schema.name, c));
                    }
                }
                p.columns = Some(cols);
            }
            "on_conflict" => {
                let cols = parse::columns(&v)?;
                for c in &cols {
                    if schema.find(c).is_none() {
                        return Err(ApiError::unknown_column_read(&schema.name, c));
                    }
                }
                p.on_conflict = Some(cols);
            }
            "or" | "and" | "not.or" | "not.and" => {
                conds.push(plan::to_filter(schema, &parse::logic(&k, &v)?)?);
            }
            _ if k.contains('.') && !k.split('.').next().unwrap_or("").contains("->") => {
                let (path, key) =
                    embed::route(p.fields(), &k).ok_or_else(|| embed::not_embedded(&k))?;
                p.embed_params.push(embed::EmbedParam {
                    path,
                    key,
                    value: v,
                });
            }
            _ => conds.push(plan::to_filter(schema, &parse::filter(&k, &v)?)?),
        }
        if conds.len() + p.embed_params.len() > parse::MAX_ITEMS {
            return Err(ApiError::bad_query(format!(
                "more than {} filters",
                parse::MAX_ITEMS
            )));
        }
    }
    p.filter = match conds.len() {
        0 => None,
        1 => conds.pop(),
        _ => Some(Filter::And(conds)),
    };
    Ok(p)
}

/// `Content-Range` of `n` rows starting at `offset`, with the total when
/// known.
pub(crate) fn content_range(offset: u64, n: usize, total: Option<u64>) -> String {
    let total = total.map_or("*".to_string(), |t| t.to_string());
    if n == 0 {
        format!("*/{total}")
    } else {
        // Saturating: `offset` is the client's number (a provider may
        // clamp a huge one and still return rows).
        format!("{offset}-{}/{total}", offset.saturating_add(n as u64 - 1))
    }
}

/// A response with room for the headers a `/rest/v1` answer carries
/// (content type and range, preferences, CORS's `Vary`, the content length
/// axum adds): a header map grown later is reallocated, about 17,000
/// instructions a request (callgrind, `--probe` of benches/serve).
pub(crate) fn response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().reserve(12);
    r
}

/// `Content-Type` of a JSON array of rows.
const JSON_ARRAY: &str = "application/json; charset=utf-8";

/// The rows as the body the client asked for (`Content-Type` included).
pub(crate) fn rows_body(shape: Shape, rows: &[Row]) -> ApiResult<(HeaderValue, String)> {
    match shape {
        Shape::Array => Ok((
            HeaderValue::from_static(JSON_ARRAY),
            serde_json::to_string(rows).unwrap_or_else(|_| "[]".into()),
        )),
        Shape::Object => {
            if rows.len() != 1 {
                return Err(ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "PGRST116",
                    "JSON object requested, multiple (or no) rows returned",
                )
                .details(format!("The result contains {} rows", rows.len())));
            }
            Ok((
                HeaderValue::from_static("application/vnd.pgrst.object+json; charset=utf-8"),
                serde_json::to_string(&rows[0]).unwrap_or_else(|_| "{}".into()),
            ))
        }
        Shape::Csv => Ok((
            HeaderValue::from_static("text/csv; charset=utf-8"),
            plan::csv(rows),
        )),
    }
}

/// Rows matching `filter` (COUNT(*) where the provider aggregates).
pub(crate) async fn count(
    db: &dyn truststream_core_db::Database,
    table: &str,
    filter: Option<Filter>,
) -> ApiResult<u64> {
    if db.capabilities().aggregates {
        let q = Query {
            select: vec![SelectItem::aggregate(AggFunc::Count, None, "count")],
            filter,
            ..Query::default()
        };
        let rows = db.read(table, &q).await?;
        Ok(rows
            .first()
            .and_then(|r| r.get("count"))
            .and_then(Value::as_u64)
            .unwrap_or(0))
    } else {
        let q = Query {
            filter,
            ..Query::default()
        };
        Ok(db.read(table, &q).await?.len() as u64)
    }
}

pub(crate) fn preference_applied(prefer: &Prefer, headers: &mut HeaderMap) {
    if !prefer.applied.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&prefer.applied.join(", ")) {
            headers.insert("preference-applied", v);
        }
    }
}

pub(crate) fn prefer_of(headers: &HeaderMap) -> ApiResult<Prefer> {
    parse::prefer(
        headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// Caller, profile and policy for `actions` on `table`.
pub(crate) async fn admit(
    state: &ServeState,
    headers: &HeaderMap,
    method: &Method,
    table: &str,
    actions: &[TableAction],
) -> ApiResult<Access> {
    check_profile(headers, method)?;
    let caller = access::caller(state, headers).await?;
    let token = crate::caller::bearer(headers);
    access::authorize(state, caller, token, table, actions, None).await
}

async fn read_rows(
    State(state): State<Arc<ServeState>>,
    Path(table): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    match read_inner(&state, &table, &method, &headers, raw.as_deref()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn read_inner(
    state: &ServeState,
    table: &str,
    method: &Method,
    headers: &HeaderMap,
    raw: Option<&str>,
) -> ApiResult<Response> {
    if raw.is_some_and(|r| r.len() > parse::MAX_QUERY_BYTES) {
        parse::pairs(raw.unwrap_or(""))?;
    }
    let access = admit(state, headers, method, table, &[TableAction::Select]).await?;
    let prefer = prefer_of(headers)?;
    let mut p = params(&access.schema, raw)?;
    let embeds = embed::plan_request(state, headers, &access, &p).await?;
    let mut filter = access.restrict(p.filter.take());
    if let Some(inner) = embed::inner_filter(&embeds).await? {
        filter = Some(match filter {
            Some(f) => Filter::And(vec![f, inner]),
            None => inner,
        });
    }
    let mut query = Query {
        select: embed::columns_with(p.fields(), &embed::parent_columns(&embeds)),
        filter,
        order_by: std::mem::take(&mut p.order),
        limit: p.limit,
        offset: p.offset,
        ..Query::default()
    };
    let shape = shape(headers);
    // The common read (a JSON array, no embeds, `select=` of plain
    // columns or `*`): the provider's result set is the answer, serialized
    // as it is, without a map per row.
    let direct = embeds.is_empty() && shape == Shape::Array && plan::is_plain(p.fields());
    let (rows, set) = if direct {
        let set = access.db.read_set(table, &query).await?;
        if plan::answers(p.fields(), set.columns()) {
            (Vec::new(), Some(set))
        } else {
            (set.into_rows(), None)
        }
    } else {
        let mut rows = access.db.read(table, &query).await?;
        embed::attach(&embeds, &mut rows).await?;
        (rows, None)
    };
    let total = if prefer.count {
        Some(count(&*access.db, table, query.filter.take()).await?)
    } else {
        None
    };
    let offset = p.offset.unwrap_or(0);
    if let Some(t) = total {
        if offset > t {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "PGRST103",
                "Requested range not satisfiable",
            )
            .details(format!(
                "An offset of {offset} was requested, but there are only {t} rows."
            )));
        }
    }
    let (n, content_type, body) = match set {
        Some(set) => (
            set.len(),
            HeaderValue::from_static(JSON_ARRAY),
            set.to_json_vec(),
        ),
        None => {
            let rows = plan::project(&access.schema, p.fields(), rows);
            let (content_type, body) = rows_body(shape, &rows)?;
            (rows.len(), content_type, body.into_bytes())
        }
    };
    let status = match total {
        Some(t) if (n as u64) < t => StatusCode::PARTIAL_CONTENT,
        _ => StatusCode::OK,
    };
    let mut resp = if *method == Method::HEAD {
        response(status, Body::empty())
    } else {
        response(status, body)
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    if let Ok(v) = HeaderValue::from_str(&content_range(offset, n, total)) {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert("range-unit", HeaderValue::from_static("items"));
    preference_applied(
        &Prefer {
            applied: prefer
                .applied
                .iter()
                .filter(|a| a.starts_with("count"))
                .cloned()
                .collect(),
            ..Prefer::default()
        },
        h,
    );
    Ok(resp)
}

/// `PUT` (PostgREST's single-row upsert by primary-key filter) is not served:
/// use `POST` with `Prefer: resolution=merge-duplicates`.
async fn put() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "PGRST117",
        "Unsupported HTTP method: PUT",
    )
    .hint("upsert with POST and Prefer: resolution=merge-duplicates")
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::content_range;

    #[test]
    fn content_range_of_a_huge_offset_does_not_overflow() {
        assert_eq!(content_range(5, 0, Some(5)), "*/5");
        assert_eq!(content_range(2, 3, None), "2-4/*");
        assert_eq!(
            content_range(u64::MAX, 2, None),
            format!("{m}-{m}/*", m = u64::MAX)
        );
    }
}
