//! `POST` (insert, upsert), `PATCH` (update) and `DELETE` on a table.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use truststream_core_db::{ColumnRef, Filter, Operation, OperationOutput, Query, Row};

use super::access::{Access, Owner};
use super::embed::Node;
use super::error::{ApiError, ApiResult};
use super::parse::Prefer;
use super::{admit, content_range, count, params, plan, prefer_of, rows_body, shape, Params};
use crate::config::TableAction;
use crate::ServeState;

/// Reads the body up to `max_json_body_bytes` (413 beyond) and parses it.
pub(super) async fn read_json(state: &ServeState, body: Body) -> ApiResult<Value> {
    parse_json(&read_body(state, body).await?)
}

/// The body's bytes, at most `max_json_body_bytes` (413 beyond).
pub(super) async fn read_body(state: &ServeState, body: Body) -> ApiResult<bytes::Bytes> {
    let limit = state.config.max_json_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PGRST413",
            format!("The request body is larger than {limit} bytes"),
        )
    })
}

/// The body as JSON (PGRST102 when empty or invalid).
pub(super) fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    if bytes.is_empty() {
        return Err(ApiError::bad_body("Empty or invalid json"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_body("Empty or invalid json").details(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

fn denied_row(access: &Access) -> ApiError {
    ApiError::permission_denied(
        access.anonymous(),
        format!(
            "new row violates row-level security policy for table \"{}\"",
            access.table()
        ),
    )
}

/// Whether `v` is the owner's id (compared as the typed value, or as text).
fn is_owner(v: &Value, user_id: &Value) -> bool {
    v == user_id
        || match (v, user_id) {
            (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
            (a, Value::String(b)) => serde_json::to_string(a).is_ok_and(|t| t == *b),
            _ => false,
        }
}

/// Applies the owner rule to a row about to be inserted.
fn own_row(access: &Access, row: &mut Row) -> ApiResult<()> {
    match &access.owner {
        Owner::Any => Ok(()),
        Owner::Nobody { .. } => Err(denied_row(access)),
        Owner::User { column, user_id } => match row.get(column) {
            None | Some(Value::Null) => {
                row.insert(column.clone(), user_id.clone());
                Ok(())
            }
            Some(v) if is_owner(v, user_id) => Ok(()),
            Some(_) => Err(denied_row(access)),
        },
    }
}

fn check_keys(access: &Access, row: &Row) -> ApiResult<()> {
    for k in row.keys() {
        if access.schema.find(k).is_none() {
            return Err(ApiError::unknown_column_write(access.table(), k));
        }
    }
    Ok(())
}

/// The rows of an insert body, shaped by `columns=` and `missing=default`.
fn insert_rows(access: &Access, p: &Params, prefer: &Prefer, body: Value) -> ApiResult<Vec<Row>> {
    let objects: Vec<Row> = match body {
        Value::Object(o) => vec![o],
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(o) => Ok(o),
                _ => Err(ApiError::bad_body(
                    "All elements of the array must be JSON objects",
                )),
            })
            .collect::<ApiResult<_>>()?,
        _ => {
            return Err(ApiError::bad_body(
                "the body must be a JSON object or an array of objects",
            ))
        }
    };
    let mut rows = Vec::with_capacity(objects.len());
    match &p.columns {
        Some(cols) => {
            for mut o in objects {
                let mut r = Row::new();
                for c in cols {
                    if r.contains_key(c) {
                        continue; // `columns=a,a`: the value moved already
                    }
                    match o.remove(c) {
                        Some(v) => {
                            r.insert(c.clone(), v);
                        }
                        None if prefer.missing_default => {}
                        None => {
                            r.insert(c.clone(), Value::Null);
                        }
                    }
                }
                rows.push(r);
            }
        }
        None => {
            if let Some(first) = objects.first() {
                let mut keys: Vec<&String> = first.keys().collect();
                keys.sort();
                for o in &objects[1..] {
                    let mut k: Vec<&String> = o.keys().collect();
                    k.sort();
                    if k != keys {
                        return Err(ApiError::bad_body("All object keys must match"));
                    }
                }
            }
            rows = objects;
        }
    }
    for r in &mut rows {
        check_keys(access, r)?;
        own_row(access, r)?;
    }
    Ok(rows)
}

/// An operation that always fails (an empty `update_many` patch), so a
/// `tx=rollback` transaction runs every real operation and applies none.
fn sentinel(table: &str) -> Operation {
    Operation::UpdateMany {
        table: table.to_string(),
        filter: Filter::Or(Vec::new()),
        data: Row::new(),
    }
}

/// Runs `ops` as one transaction; with `rollback`, runs them and applies
/// nothing (the outputs are then unknown: `None`).
async fn run_tx(
    db: &dyn truststream_core_db::Database,
    table: &str,
    mut ops: Vec<Operation>,
    rollback: bool,
) -> ApiResult<Option<Vec<OperationOutput>>> {
    if ops.is_empty() {
        return Ok(Some(Vec::new()));
    }
    if !rollback {
        // One operation needs no transaction (nor the capability).
        if ops.len() == 1 {
            let out = match ops.remove(0) {
                Operation::UpdateMany {
                    table,
                    filter,
                    data,
                } => OperationOutput::Affected(db.update_many(&table, &filter, data).await?),
                Operation::DeleteMany { table, filter } => {
                    OperationOutput::Affected(db.delete_many(&table, &filter).await?)
                }
                Operation::Create { table, data } => {
                    OperationOutput::Row(db.create(&table, data).await?)
                }
                other => db.transaction(vec![other]).await?.pop().ok_or_else(|| {
                    ApiError::from_db(&truststream_core::Error::internal(
                        "empty transaction output",
                    ))
                })?,
            };
            return Ok(Some(vec![out]));
        }
        return Ok(Some(db.transaction(ops).await?));
    }
    let n = ops.len();
    ops.push(sentinel(table));
    match db.transaction(ops).await {
        Ok(_) => Err(ApiError::from_db(&truststream_core::Error::internal(
            "the rollback transaction committed",
        ))),
        Err(e) => {
            let at = e
                .context()
                .iter()
                .find(|(k, _)| *k == "operation_index")
                .map(|(_, v)| v.clone());
            if at == Some(n.to_string()) {
                Ok(None)
            } else {
                Err(ApiError::from_db(&e))
            }
        }
    }
}

fn refuse_rollback_representation(prefer: &Prefer) -> ApiResult<()> {
    if prefer.rollback && prefer.ret.as_deref() == Some("representation") {
        return Err(ApiError::unsupported(
            "Prefer: tx=rollback with return=representation is not supported by this database provider for inserts and updates",
        )
        .hint("use return=minimal with tx=rollback"));
    }
    Ok(())
}

fn with_common(mut resp: Response, prefer: &Prefer) -> Response {
    super::preference_applied(prefer, resp.headers_mut());
    resp
}

/// The answer of a write: `representation` rows (projected by `select=`),
/// `headers-only` (a `Location`), or nothing.
#[allow(clippy::too_many_arguments)] // one answer shape for every write path
async fn respond(
    embeds: &[Node],
    access: &Access,
    p: &Params,
    prefer: &Prefer,
    headers: &HeaderMap,
    (status_body, status_empty): (StatusCode, StatusCode),
    rows: Vec<Row>,
    affected: usize,
) -> ApiResult<Response> {
    let total = prefer.count.then_some(affected as u64);
    let range = content_range(0, affected, total);
    let mut resp = match prefer.ret.as_deref() {
        Some("representation") => {
            let mut rows = rows;
            super::embed::attach(embeds, &mut rows).await?;
            let rows = plan::project(&access.schema, p.fields(), rows);
            let (ct, body) = rows_body(shape(headers), &rows)?;
            let mut r = super::response(status_body, body);
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
            r
        }
        Some("headers-only") if status_body == StatusCode::CREATED => {
            let mut r = super::response(status_body, Body::empty());
            if let (Some(pk), [row]) = (access.schema.primary_key(), rows.as_slice()) {
                if let Some(v) = row.get(&pk.name) {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let loc = format!(
                        "/{}?{}=eq.{}",
                        access.table(),
                        pk.name,
                        percent_encoding::utf8_percent_encode(
                            &v,
                            percent_encoding::NON_ALPHANUMERIC
                        )
                    );
                    if let Ok(h) = HeaderValue::from_str(&loc) {
                        r.headers_mut().insert(header::LOCATION, h);
                    }
                }
            }
            r
        }
        _ => super::response(status_empty, Body::empty()),
    };
    if let Ok(v) = HeaderValue::from_str(&range) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    Ok(with_common(resp, prefer))
}

/// `POST /rest/v1/<table>`: insert, or upsert with `Prefer: resolution=`.
pub(crate) async fn insert(
    State(state): State<Arc<ServeState>>,
    Path(table): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    insert_inner(&state, &table, &method, &headers, raw.as_deref(), body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn insert_inner(
    state: &ServeState,
    table: &str,
    method: &Method,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: Body,
) -> ApiResult<Response> {
    let prefer = prefer_of(headers)?;
    let merge = prefer.resolution.as_deref() == Some("merge-duplicates");
    let actions: &[TableAction] = if merge {
        &[TableAction::Insert, TableAction::Update]
    } else {
        &[TableAction::Insert]
    };
    let access = admit(state, headers, method, table, actions).await?;
    let p = params(&access.schema, raw)?;
    // A bad embed in `select=` is refused before anything is written.
    let embeds = super::embed::plan_write(state, headers, &access, &p).await?;
    refuse_rollback_representation(&prefer)?;
    let body = read_json(state, body).await?;
    let rows = insert_rows(&access, &p, &prefer, body)?;
    let stored = match prefer.resolution.as_deref() {
        Some(_) => upsert(&access, &p, &prefer, rows, merge).await?,
        None if rows.is_empty() => Vec::new(),
        None if prefer.rollback => {
            let n = rows.len();
            run_tx(
                &*access.db,
                table,
                vec![Operation::CreateMany {
                    table: table.to_string(),
                    rows,
                }],
                true,
            )
            .await?;
            return respond(
                &embeds,
                &access,
                &p,
                &prefer,
                headers,
                (StatusCode::CREATED, StatusCode::CREATED),
                Vec::new(),
                n,
            )
            .await;
        }
        None => access.db.create_many(table, rows).await?,
    };
    let n = stored.len();
    respond(
        &embeds,
        &access,
        &p,
        &prefer,
        headers,
        (StatusCode::CREATED, StatusCode::CREATED),
        stored,
        n,
    )
    .await
}

enum Slot {
    Op(usize),
    Row(Box<Row>),
}

/// Upsert through core-db: each row is looked up by the `on_conflict`
/// columns (default: the primary key), then created or updated (merge) or
/// skipped (ignore), all in one transaction.
async fn upsert(
    access: &Access,
    p: &Params,
    prefer: &Prefer,
    rows: Vec<Row>,
    merge: bool,
) -> ApiResult<Vec<Row>> {
    let table = access.table();
    let pk = access
        .schema
        .primary_key()
        .map(|c| c.name.clone())
        .ok_or_else(|| ApiError::unsupported("the table has no primary key"))?;
    let conflict = p.on_conflict.clone().unwrap_or_else(|| vec![pk.clone()]);
    // One column must be the key or unique, as PostgreSQL requires (a
    // unique index over several columns is not in the table's schema, so
    // several columns are taken as given).
    if let [only] = conflict.as_slice() {
        let unique = access
            .schema
            .find(only)
            .is_some_and(|c| c.primary_key || c.unique);
        if !unique {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "42P10",
                "there is no unique or exclusion constraint matching the ON CONFLICT specification",
            )
            .details(format!(
                "on_conflict={} is not the primary key nor a unique column",
                truststream_core::echo(only)
            )));
        }
    }
    let mut ops = Vec::new();
    let mut slots = Vec::new();
    // One conflict column: look every row up in a few `in` reads rather
    // than one read per row.
    let single = match conflict.as_slice() {
        [only] if rows.len() > 1 => access.schema.find(only).map(|c| (only.clone(), c.ty)),
        _ => None,
    };
    let stored_key = |row: &Row, column: &str, ty| {
        row.get(column)
            .filter(|v| !v.is_null())
            .and_then(|v| truststream_core_db::value::normalize(column, ty, v).ok())
            .map(|v| v.to_string())
    };
    let mut prefetched = std::collections::HashMap::new();
    if let Some((column, ty)) = &single {
        let keys: Vec<Value> = rows
            .iter()
            .filter_map(|r| r.get(column.as_str()).filter(|v| !v.is_null()))
            .filter_map(|v| truststream_core_db::value::normalize(column, *ty, v).ok())
            .collect();
        for chunk in keys.chunks(500) {
            let q = Query {
                filter: Some(Filter::In {
                    column: ColumnRef {
                        table: None,
                        column: column.clone(),
                    },
                    values: chunk.to_vec(),
                }),
                ..Query::default()
            };
            for r in access.db.read(table, &q).await? {
                if let Some(k) = stored_key(&r, column, *ty) {
                    prefetched.insert(k, r);
                }
            }
        }
    }
    for row in rows {
        if let Some((column, ty)) = &single {
            let existing = stored_key(&row, column, *ty).and_then(|k| prefetched.get(&k).cloned());
            plan_upsert_row(access, &pk, merge, row, existing, &mut ops, &mut slots)?;
            continue;
        }
        let key: Option<Vec<Filter>> = conflict
            .iter()
            .map(|c| match row.get(c) {
                None | Some(Value::Null) => None,
                Some(v) => Some(Filter::Cmp {
                    column: ColumnRef {
                        table: None,
                        column: c.clone(),
                    },
                    op: truststream_core_db::CmpOp::Eq,
                    value: v.clone(),
                }),
            })
            .collect();
        let existing = match key {
            Some(parts) => {
                let q = Query {
                    filter: Some(Filter::And(parts)),
                    limit: Some(1),
                    ..Query::default()
                };
                access.db.read(table, &q).await?.into_iter().next()
            }
            None => None,
        };
        plan_upsert_row(access, &pk, merge, row, existing, &mut ops, &mut slots)?;
    }
    let Some(outputs) = run_tx(&*access.db, table, ops, prefer.rollback).await? else {
        return Ok(Vec::new());
    };
    let mut outputs: Vec<Option<OperationOutput>> = outputs.into_iter().map(Some).collect();
    Ok(slots
        .into_iter()
        .filter_map(|s| match s {
            Slot::Row(r) => Some(*r),
            Slot::Op(i) => outputs
                .get_mut(i)
                .and_then(Option::take)
                .and_then(OperationOutput::into_row),
        })
        .collect())
}

/// Plans one upsert row given the row its conflict key found (if any).
fn plan_upsert_row(
    access: &Access,
    pk: &str,
    merge: bool,
    row: Row,
    existing: Option<Row>,
    ops: &mut Vec<Operation>,
    slots: &mut Vec<Slot>,
) -> ApiResult<()> {
    let table = access.table();
    match existing {
        None => {
            slots.push(Slot::Op(ops.len()));
            ops.push(Operation::Create {
                table: table.to_string(),
                data: row,
            });
        }
        Some(_) if !merge => {}
        Some(old) => {
            if let Owner::User { column, user_id } = &access.owner {
                if !old.get(column).is_some_and(|v| is_owner(v, user_id)) {
                    return Err(denied_row(access));
                }
            }
            let id = old.get(pk).cloned().unwrap_or(Value::Null);
            let mut patch = row;
            if patch.get(pk) == Some(&id) {
                patch.remove(pk);
            }
            if patch.is_empty() {
                slots.push(Slot::Row(Box::new(old)));
            } else {
                slots.push(Slot::Op(ops.len()));
                ops.push(Operation::Update {
                    table: table.to_string(),
                    id,
                    data: patch,
                });
            }
        }
    }
    Ok(())
}

/// `max-affected` with `handling=strict`: 400 PGRST124 when more rows
/// would change.
async fn check_max_affected(
    db: &dyn truststream_core_db::Database,
    table: &str,
    prefer: &Prefer,
    filter: &Option<Filter>,
) -> ApiResult<()> {
    if let Some(max) = prefer.max_affected {
        let n = count(db, table, filter.clone()).await?;
        if n > max {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "PGRST124",
                "Query result exceeds max-affected preference constraint",
            )
            .details(format!("The query affects {n} rows")));
        }
    }
    Ok(())
}

/// The primary-key values of the rows `filter` selects (with `order`,
/// `limit`, `offset`), and the key filter that pins a write to exactly them.
async fn key_set(
    access: &Access,
    p: &Params,
    filter: &Option<Filter>,
    whole_rows: bool,
) -> ApiResult<(Vec<Row>, Filter, String)> {
    let pk = access
        .schema
        .primary_key()
        .map(|c| c.name.clone())
        .ok_or_else(|| ApiError::unsupported("the table has no primary key"))?;
    let q = Query {
        select: if whole_rows {
            Vec::new()
        } else {
            vec![truststream_core_db::SelectItem::Column {
                column: ColumnRef {
                    table: None,
                    column: pk.clone(),
                },
                alias: None,
            }]
        },
        filter: filter.clone(),
        order_by: p.order.clone(),
        limit: p.limit,
        offset: p.offset,
        ..Query::default()
    };
    let rows = access.db.read(access.table(), &q).await?;
    let keys: Vec<Value> = rows.iter().filter_map(|r| r.get(&pk).cloned()).collect();
    let pin = Filter::In {
        column: ColumnRef {
            table: None,
            column: pk.clone(),
        },
        values: keys,
    };
    let pin = match filter {
        Some(f) => Filter::And(vec![pin, f.clone()]),
        None => pin,
    };
    Ok((rows, pin, pk))
}

/// `PATCH /rest/v1/<table>?<filters>`.
pub(crate) async fn update(
    State(state): State<Arc<ServeState>>,
    Path(table): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Body,
) -> Response {
    update_inner(&state, &table, &method, &headers, raw.as_deref(), body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn update_inner(
    state: &ServeState,
    table: &str,
    method: &Method,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: Body,
) -> ApiResult<Response> {
    let prefer = prefer_of(headers)?;
    let access = admit(state, headers, method, table, &[TableAction::Update]).await?;
    let p = params(&access.schema, raw)?;
    // A bad embed in `select=` is refused before anything is written.
    let embeds = super::embed::plan_write(state, headers, &access, &p).await?;
    refuse_rollback_representation(&prefer)?;
    let patch = match read_json(state, body).await? {
        Value::Object(o) => o,
        _ => {
            return Err(ApiError::bad_body(
                "the body of an update must be a JSON object",
            ))
        }
    };
    let patch: Row = match &p.columns {
        Some(cols) => patch
            .into_iter()
            .filter(|(k, _)| cols.contains(k))
            .collect(),
        None => patch,
    };
    check_keys(&access, &patch)?;
    match &access.owner {
        Owner::User { column, user_id }
            if patch.get(column).is_some_and(|v| !is_owner(v, user_id)) =>
        {
            return Err(denied_row(&access));
        }
        Owner::Nobody { column } if patch.contains_key(column) => {
            return Err(denied_row(&access));
        }
        _ => {}
    }
    let filter = access.restrict(p.filter.clone());
    check_max_affected(&*access.db, table, &prefer, &filter).await?;
    let representation = prefer.ret.as_deref() == Some("representation");
    let limited = p.limit.is_some() || p.offset.is_some();
    if patch.is_empty() {
        return respond(
            &embeds,
            &access,
            &p,
            &prefer,
            headers,
            (StatusCode::OK, StatusCode::NO_CONTENT),
            Vec::new(),
            0,
        )
        .await;
    }
    if !(representation || limited) {
        let op = Operation::UpdateMany {
            table: table.to_string(),
            filter: filter.clone().unwrap_or(Filter::And(Vec::new())),
            data: patch,
        };
        let n = match run_tx(&*access.db, table, vec![op], prefer.rollback).await? {
            Some(out) => match out.first() {
                Some(OperationOutput::Affected(n)) => *n as usize,
                _ => 0,
            },
            None => 0,
        };
        return respond(
            &embeds,
            &access,
            &p,
            &prefer,
            headers,
            (StatusCode::OK, StatusCode::NO_CONTENT),
            Vec::new(),
            n,
        )
        .await;
    }
    let (keys, pin, pk) = key_set(&access, &p, &filter, false).await?;
    if keys.is_empty() {
        return respond(
            &embeds,
            &access,
            &p,
            &prefer,
            headers,
            (StatusCode::OK, StatusCode::NO_CONTENT),
            Vec::new(),
            0,
        )
        .await;
    }
    let new_key = patch.get(&pk).cloned();
    let op = Operation::UpdateMany {
        table: table.to_string(),
        filter: pin.clone(),
        data: patch,
    };
    let Some(out) = run_tx(&*access.db, table, vec![op], prefer.rollback).await? else {
        return respond(
            &embeds,
            &access,
            &p,
            &prefer,
            headers,
            (StatusCode::OK, StatusCode::NO_CONTENT),
            Vec::new(),
            keys.len(),
        )
        .await;
    };
    let n = match out.first() {
        Some(OperationOutput::Affected(n)) => *n as usize,
        _ => 0,
    };
    let rows = if representation {
        // Re-read exactly the rows updated: by their keys (or the new key
        // when the patch set it).
        let key_filter = match new_key {
            Some(k) => Filter::Cmp {
                column: ColumnRef {
                    table: None,
                    column: pk.clone(),
                },
                op: truststream_core_db::CmpOp::Eq,
                value: k,
            },
            None => Filter::In {
                column: ColumnRef {
                    table: None,
                    column: pk.clone(),
                },
                values: keys.iter().filter_map(|r| r.get(&pk).cloned()).collect(),
            },
        };
        let q = Query {
            filter: Some(key_filter),
            order_by: p.order.clone(),
            ..Query::default()
        };
        access.db.read(table, &q).await?
    } else {
        Vec::new()
    };
    respond(
        &embeds,
        &access,
        &p,
        &prefer,
        headers,
        (StatusCode::OK, StatusCode::NO_CONTENT),
        rows,
        n,
    )
    .await
}

/// `DELETE /rest/v1/<table>?<filters>`.
pub(crate) async fn delete(
    State(state): State<Arc<ServeState>>,
    Path(table): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    delete_inner(&state, &table, &method, &headers, raw.as_deref())
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn delete_inner(
    state: &ServeState,
    table: &str,
    method: &Method,
    headers: &HeaderMap,
    raw: Option<&str>,
) -> ApiResult<Response> {
    let prefer = prefer_of(headers)?;
    let access = admit(state, headers, method, table, &[TableAction::Delete]).await?;
    let p = params(&access.schema, raw)?;
    // A bad embed in `select=` is refused before anything is written.
    let embeds = super::embed::plan_write(state, headers, &access, &p).await?;
    let filter = access.restrict(p.filter.clone());
    check_max_affected(&*access.db, table, &prefer, &filter).await?;
    let representation = prefer.ret.as_deref() == Some("representation");
    let limited = p.limit.is_some() || p.offset.is_some();
    let (rows, target) = if representation || limited {
        let (rows, pin, _) = key_set(&access, &p, &filter, representation).await?;
        if rows.is_empty() {
            return respond(
                &embeds,
                &access,
                &p,
                &prefer,
                headers,
                (StatusCode::OK, StatusCode::NO_CONTENT),
                Vec::new(),
                0,
            )
            .await;
        }
        (rows, pin)
    } else {
        (Vec::new(), filter.unwrap_or(Filter::And(Vec::new())))
    };
    let op = Operation::DeleteMany {
        table: table.to_string(),
        filter: target,
    };
    let n = match run_tx(&*access.db, table, vec![op], prefer.rollback).await? {
        Some(out) => match out.first() {
            Some(OperationOutput::Affected(n)) => *n as usize,
            _ => 0,
        },
        None => rows.len(),
    };
    let rows = if representation { rows } else { Vec::new() };
    respond(
        &embeds,
        &access,
        &p,
        &prefer,
        headers,
        (StatusCode::OK, StatusCode::NO_CONTENT),
        rows,
        n,
    )
    .await
}
