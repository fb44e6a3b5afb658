//! Embedded resources (`select=*,author:users(*),comments(*)`): rows of
//! other tables related by a foreign key ([`TableSchema::foreign_keys`]),
//! read through core-db only — one more read per embedded resource, with
//! an `in` filter on the keys of the rows above it (chunked), then
//! stitched into those rows — so they behave the same over every provider.
//!
//! Each embedded table goes through the same door as the table of the URL
//! (`access::authorize`): hidden tables are not found, its `[serve.tables]`
//! policy must grant `select` (deny by default), its owner rule filters,
//! and with `row_security` its reads run on the caller's scoped handle.
//!
//! `!inner` embeds filter the rows above them before `limit`, `offset` and
//! counts apply: the keys of the matching embedded rows are read first
//! (bounded by [`MAX_INNER_KEYS`]) and become an `in` filter.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use axum::http::StatusCode;
use serde_json::{json, Value};
use truststream_core_db::eval::sort_key_cmp;
use truststream_core_db::{
    ColumnRef, Filter, ForeignKey, NullsOrder, OrderBy, Query, Row, SelectItem, SortDirection,
    TableSchema,
};

use super::access::{self, Access};
use super::error::{ApiError, ApiResult};
use super::parse::{self, Embed, SelectField};
use super::plan;
use crate::caller::Caller;
use crate::config::TableAction;
use crate::ServeState;

/// Most embedded resources in one request (all levels).
pub(crate) const MAX_EMBEDS: usize = 16;
/// Most keys in one `in` filter of an embed read.
pub(crate) const IN_CHUNK: usize = 500;
/// Up to this many parents, a to-many embed with `<ref>.limit` is read
/// with one paged read per parent (else in chunks, paged in the server).
pub(crate) const PER_PARENT_READS: usize = 100;
/// Most embedded rows read for one embedded resource of one request.
pub(crate) const MAX_EMBED_ROWS: usize = 20_000;
/// Most key rows an `!inner` embed may match (its keys become one `in`
/// filter on the rows above it).
pub(crate) const MAX_INNER_KEYS: usize = 10_000;

/// A `<embed path>.<name>=<value>` parameter (`comments.order=id.desc`,
/// `author.name=eq.ada`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EmbedParam {
    /// Embed names (alias or table) from the top.
    pub path: Vec<String>,
    /// What follows the path: a column, `order`, `limit`, `offset`, `or`,
    /// `and`, `not.or`, `not.and`.
    pub key: String,
    pub value: String,
}

/// Splits `comments.author.name` into the embed path (`comments`,
/// `author`) and the rest (`name`); `None` when the first part names no
/// embed of `fields`.
pub(crate) fn route(fields: &[SelectField], key: &str) -> Option<(Vec<String>, String)> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut level = fields;
    let mut path = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            break;
        }
        let found = level.iter().find_map(|f| match f {
            SelectField::Embed(e) if e.name() == *part => Some(e),
            _ => None,
        });
        match found {
            Some(e) => {
                path.push(part.to_string());
                level = &e.fields;
            }
            None => break,
        }
    }
    if path.is_empty() {
        return None;
    }
    let rest = parts[path.len()..].join(".");
    Some((path, rest))
}

/// PGRST108: a `<name>.<param>` for a name that is not embedded.
pub(crate) fn not_embedded(key: &str) -> ApiError {
    let name = truststream_core::echo(key.split('.').next().unwrap_or(key));
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "PGRST108",
        format!("'{name}' is not an embedded resource in this request"),
    )
    .hint(format!(
        "Verify that '{name}' is included in the 'select' query parameter."
    ))
}

/// How a parent row and embedded rows relate.
#[derive(Debug, Clone)]
struct Rel {
    /// At most one embedded row per parent (many-to-one, one-to-one): an
    /// object or `null`; else an array.
    to_one: bool,
    /// The parent holds the foreign key (many-to-one).
    parent_holds_key: bool,
    parent_cols: Vec<String>,
    child_cols: Vec<String>,
}

/// The junction table of a many-to-many embed (`films?select=tags(*)`
/// through `films_tags`, which has a foreign key to each side), authorized
/// for the caller like the embedded table.
struct Via {
    access: Access,
    /// Its columns referencing the parent ([`Rel::parent_cols`]).
    to_parent: Vec<String>,
    /// Its columns referencing the embedded table ([`Rel::child_cols`]).
    to_child: Vec<String>,
}

/// One embedded resource, resolved and authorized.
pub(crate) struct Node {
    embed: Embed,
    /// Index of the embed in its level's `select=` fields.
    slot: usize,
    access: Access,
    rel: Rel,
    /// Many-to-many: the junction table the relationship goes through.
    via: Option<Via>,
    /// The embed's own filters (`comments.status=eq.x`), typed.
    filter: Option<Filter>,
    order: Vec<OrderBy>,
    limit: Option<u64>,
    offset: Option<u64>,
    children: Vec<Node>,
    /// Every row of the embedded table is visible to the caller and the
    /// database enforces the foreign key: `!inner` on a many-to-one embed
    /// without filters then only needs the key to be set.
    all_visible: bool,
}

/// The key under which an embed's value waits in a row until `select=`
/// is applied (not a valid column name, so never a column's).
pub(crate) fn slot_key(slot: usize) -> String {
    format!("\u{1}embed{slot}")
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = ApiResult<T>> + Send + 'a>>;

/// The embedded resources of `fields` (a table `parent`'s `select=`),
/// resolved against the foreign keys and authorized for `caller`.
pub(crate) async fn plan(
    state: &ServeState,
    caller: &Caller,
    token: Option<&str>,
    parent: &TableSchema,
    fields: &[SelectField],
    params: &[EmbedParam],
) -> ApiResult<Vec<Node>> {
    let mut count = 0;
    plan_level(
        state,
        caller,
        token,
        parent,
        fields,
        Vec::new(),
        params,
        &mut count,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
fn plan_level<'a>(
    state: &'a ServeState,
    caller: &'a Caller,
    token: Option<&'a str>,
    parent: &'a TableSchema,
    fields: &'a [SelectField],
    path: Vec<String>,
    params: &'a [EmbedParam],
    count: &'a mut usize,
) -> Boxed<'a, Vec<Node>> {
    Box::pin(async move {
        let mut nodes = Vec::new();
        let mut names = HashSet::new();
        for (slot, f) in fields.iter().enumerate() {
            let SelectField::Embed(e) = f else { continue };
            *count += 1;
            if *count > MAX_EMBEDS {
                return Err(ApiError::bad_query(format!(
                    "more than {MAX_EMBEDS} embedded resources in one request"
                )));
            }
            if !names.insert(e.name()) {
                return Err(ApiError::bad_query(format!(
                    "the embedded resource '{}' appears twice in one select (give one an alias)",
                    e.name()
                )));
            }
            let child = describe(state, &parent.name, e).await?;
            // Authorized before the relationship is resolved: its errors
            // (PGRST200/201/119) name the table's foreign keys and columns.
            let access = access::authorize(
                state,
                caller.clone(),
                token,
                &e.table,
                &[TableAction::Select],
                Some(child),
            )
            .await?;
            let (rel, via) = match resolve(parent, &access.schema, e) {
                Ok(rel) => (rel, None),
                // No direct foreign key (or none the hint names): a
                // junction table, as PostgREST embeds many-to-many.
                Err(err) if err.code == "PGRST200" => {
                    match junction(state, caller, token, parent, &access.schema, e).await? {
                        Some((rel, via)) => (rel, Some(via)),
                        None => return Err(err),
                    }
                }
                Err(err) => return Err(err),
            };
            if e.spread && !rel.to_one {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "PGRST119",
                    format!(
                        "A spread operation on '{}' is not possible",
                        truststream_core::echo(&e.table)
                    ),
                )
                .details(format!(
                    "'{}' and '{}' do not form a many-to-one or one-to-one relationship",
                    parent.name, e.table
                )));
            }
            plan::check_select(&access.schema, &e.fields)?;
            let mut my_path = path.clone();
            my_path.push(e.name().to_string());
            let mut node = Node {
                embed: e.clone(),
                slot,
                rel,
                via,
                filter: None,
                order: Vec::new(),
                limit: None,
                offset: None,
                children: Vec::new(),
                all_visible: access.owner.filter().is_none()
                    && std::sync::Arc::ptr_eq(&access.db, &state.db)
                    && state.db.capabilities().foreign_keys,
                access,
            };
            apply_params(&mut node, &my_path, params)?;
            node.children = plan_level(
                state,
                caller,
                token,
                &node.access.schema,
                &e.fields,
                my_path,
                params,
                &mut *count,
            )
            .await?;
            nodes.push(node);
        }
        Ok(nodes)
    })
}

/// The embedded table's schema, read unscoped (a schema is not a row);
/// hidden and missing tables are "no relationship", as PostgREST says.
async fn describe(state: &ServeState, parent: &str, e: &Embed) -> ApiResult<TableSchema> {
    let none = || no_relationship(parent, e);
    if truststream_core_db::ident::validate(&e.table).is_err() || access::hidden(state, &e.table) {
        return Err(none());
    }
    match state.db.describe_table(&e.table).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(none()),
        Err(err) => Err(ApiError::from_db(&err)),
    }
}

/// PGRST200.
fn no_relationship(parent: &str, e: &Embed) -> ApiError {
    let table = truststream_core::echo(&e.table);
    let hint = e
        .hint
        .as_deref()
        .map(|h| format!(" using the hint '{}'", truststream_core::echo(h)))
        .unwrap_or_default();
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "PGRST200",
        format!("Could not find a relationship between '{parent}' and '{table}' in the schema cache"),
    )
    .details(format!(
        "Searched for a foreign key relationship between '{parent}' and '{table}'{hint} in the schema 'public', but no matches were found."
    ))
}

/// One candidate relationship between a parent and an embedded table.
struct Candidate<'a> {
    fk: &'a ForeignKey,
    /// The table that declares `fk`.
    owner: &'a str,
    /// `fk` is the parent's (many-to-one); else the embedded table's.
    parent_side: bool,
}

impl Candidate<'_> {
    fn name(&self) -> String {
        self.fk.resolved_name(self.owner)
    }

    fn matches(&self, hint: &str) -> bool {
        self.name() == hint || self.fk.columns.iter().any(|c| c == hint)
    }
}

/// Picks the one foreign key between `parent` and `child` (the hint
/// narrowing); none is PGRST200, several PGRST201.
fn resolve(parent: &TableSchema, child: &TableSchema, e: &Embed) -> ApiResult<Rel> {
    let mut found: Vec<Candidate<'_>> = parent
        .foreign_keys
        .iter()
        .filter(|fk| fk.referenced_table == child.name)
        .map(|fk| Candidate {
            fk,
            owner: &parent.name,
            parent_side: true,
        })
        .collect();
    found.extend(
        child
            .foreign_keys
            .iter()
            .filter(|fk| fk.referenced_table == parent.name)
            .map(|fk| Candidate {
                fk,
                owner: &child.name,
                parent_side: false,
            }),
    );
    if let Some(h) = &e.hint {
        found.retain(|c| c.matches(h));
    }
    match found.as_slice() {
        [] => Err(no_relationship(&parent.name, e)),
        [one] => Ok(if one.parent_side {
            Rel {
                to_one: true,
                parent_holds_key: true,
                parent_cols: one.fk.columns.clone(),
                child_cols: one.fk.referenced_columns.clone(),
            }
        } else {
            // One-to-one when the embedded side's key columns are unique.
            let unique = match one.fk.columns.as_slice() {
                [c] => child.find(c).is_some_and(|d| d.unique || d.primary_key),
                _ => false,
            };
            Rel {
                to_one: unique,
                parent_holds_key: false,
                parent_cols: one.fk.referenced_columns.clone(),
                child_cols: one.fk.columns.clone(),
            }
        }),
        many => Err(ambiguous(parent, child, e, many)),
    }
}

/// PGRST201 (300 Multiple Choices), PostgREST's shape.
fn ambiguous(
    parent: &TableSchema,
    child: &TableSchema,
    e: &Embed,
    candidates: &[Candidate<'_>],
) -> ApiError {
    let cols = |c: &[String]| c.join(", ");
    let details: Vec<Value> = candidates
        .iter()
        .map(|c| {
            let (cardinality, parent_cols, child_cols) = if c.parent_side {
                ("many-to-one", &c.fk.columns, &c.fk.referenced_columns)
            } else {
                ("one-to-many", &c.fk.referenced_columns, &c.fk.columns)
            };
            json!({
                "cardinality": cardinality,
                "embedding": format!("{} with {}", parent.name, child.name),
                "relationship": format!(
                    "{} using {}({}) and {}({})",
                    c.name(),
                    parent.name,
                    cols(parent_cols),
                    child.name,
                    cols(child_cols)
                ),
            })
        })
        .collect();
    let options: Vec<String> = candidates
        .iter()
        .map(|c| format!("'{}!{}'", e.table, c.name()))
        .collect();
    several_relationships(parent, child, e, &options, details)
}

/// Most junction tables considered for one many-to-many embed.
const MAX_JUNCTIONS: usize = 20;

/// Tables with a foreign key to `parent` and one to `child`, from the
/// database's catalog (bound names only); none where the provider has no
/// SQL catalog (there a hint names the junction table: `tags!films_tags`).
const JUNCTIONS_PG: &str = "SELECT DISTINCT j.relname::text AS name \
     FROM pg_catalog.pg_constraint a \
     JOIN pg_catalog.pg_constraint b ON b.conrelid = a.conrelid AND b.contype = 'f' AND b.oid <> a.oid \
     JOIN pg_catalog.pg_class j ON j.oid = a.conrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = j.relnamespace \
     JOIN pg_catalog.pg_class pt ON pt.oid = a.confrelid \
     JOIN pg_catalog.pg_class ct ON ct.oid = b.confrelid \
     WHERE a.contype = 'f' AND pt.relname = :parent AND ct.relname = :child \
     AND n.nspname = ANY (current_schemas(false)) ORDER BY 1";
const JUNCTIONS_SQLITE: &str = "SELECT m.name AS name FROM sqlite_master m WHERE m.type = 'table' \
     AND EXISTS (SELECT 1 FROM pragma_foreign_key_list(m.name) f WHERE f.\"table\" = :parent) \
     AND EXISTS (SELECT 1 FROM pragma_foreign_key_list(m.name) f WHERE f.\"table\" = :child) \
     ORDER BY m.name";

async fn junction_tables(state: &ServeState, parent: &str, child: &str) -> ApiResult<Vec<String>> {
    use truststream_core_db::sql::SqlDialect;
    let sql = match state.db.capabilities().sql_dialect {
        Some(SqlDialect::Postgres) => JUNCTIONS_PG,
        Some(SqlDialect::Sqlite) => JUNCTIONS_SQLITE,
        _ => return Ok(Vec::new()),
    };
    let params = truststream_core_db::Params::from([
        ("parent".to_string(), Value::from(parent)),
        ("child".to_string(), Value::from(child)),
    ]);
    // One more than the most considered, to tell "too many" from "all".
    let sql = format!("{sql} LIMIT {}", MAX_JUNCTIONS + 1);
    let rows = state.db.raw_query(&sql, &params).await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .map(str::to_string)
        .collect())
}

/// One candidate junction: the table and its foreign keys to the parent
/// and to the embedded table.
struct JunctionCandidate {
    schema: TableSchema,
    to_parent: ForeignKey,
    to_child: ForeignKey,
}

/// The many-to-many relationship between `parent` and `child` through a
/// junction table (the hint, when given, names it); `None` when there is
/// none, PGRST201 when several. The junction table is authorized for the
/// caller (`select`) like the embedded table.
async fn junction(
    state: &ServeState,
    caller: &Caller,
    token: Option<&str>,
    parent: &TableSchema,
    child: &TableSchema,
    e: &Embed,
) -> ApiResult<Option<(Rel, Via)>> {
    let names = match &e.hint {
        Some(h) => vec![h.clone()],
        None => junction_tables(state, &parent.name, &child.name).await?,
    };
    if names.len() > MAX_JUNCTIONS {
        // Every name is a candidate: far more than one, so ambiguous; the
        // caller names the junction (not listed: they would be cut short).
        return Err(several_relationships(
            parent,
            child,
            e,
            &[format!("'{}!<junction table>'", e.table)],
            Vec::new(),
        ));
    }
    let mut found = Vec::new();
    for name in &names {
        if truststream_core_db::ident::validate(name).is_err()
            || access::hidden(state, name)
            || *name == parent.name
            || *name == child.name
        {
            continue;
        }
        let Some(j) = state.db.describe_table(name).await? else {
            continue;
        };
        for (i, p) in j.foreign_keys.iter().enumerate() {
            for (k, c) in j.foreign_keys.iter().enumerate() {
                if i != k && p.referenced_table == parent.name && c.referenced_table == child.name {
                    found.push(JunctionCandidate {
                        schema: j.clone(),
                        to_parent: p.clone(),
                        to_child: c.clone(),
                    });
                }
            }
        }
    }
    let one = match found.len() {
        0 => return Ok(None),
        1 => found.remove(0),
        _ => return Err(ambiguous_junction(parent, child, e, &found)),
    };
    let table = one.schema.name.clone();
    let access = access::authorize(
        state,
        caller.clone(),
        token,
        &table,
        &[TableAction::Select],
        Some(one.schema),
    )
    .await?;
    Ok(Some((
        Rel {
            to_one: false,
            parent_holds_key: false,
            parent_cols: one.to_parent.referenced_columns.clone(),
            child_cols: one.to_child.referenced_columns.clone(),
        },
        Via {
            access,
            to_parent: one.to_parent.columns,
            to_child: one.to_child.columns,
        },
    )))
}

/// PGRST201 (300 Multiple Choices): `options` are the hinted embeds to
/// choose from, `details` the candidates.
fn several_relationships(
    parent: &TableSchema,
    child: &TableSchema,
    e: &Embed,
    options: &[String],
    details: Vec<Value>,
) -> ApiError {
    let mut err = ApiError::new(
        StatusCode::MULTIPLE_CHOICES,
        "PGRST201",
        format!(
            "Could not embed because more than one relationship was found for '{}' and '{}'",
            parent.name, child.name
        ),
    )
    .hint(format!(
        "Try changing '{}' to one of the following: {}. Find the desired relationship in the 'details' key.",
        e.table,
        options.join(", ")
    ));
    err.details = Some(Box::new(Value::Array(details)));
    err
}

/// PGRST201 for several junction tables (or several pairs of foreign keys
/// in one), PostgREST's shape; the hint names the junction tables.
fn ambiguous_junction(
    parent: &TableSchema,
    child: &TableSchema,
    e: &Embed,
    candidates: &[JunctionCandidate],
) -> ApiError {
    let details: Vec<Value> = candidates
        .iter()
        .map(|c| {
            json!({
                "cardinality": "many-to-many",
                "embedding": format!("{} with {}", parent.name, child.name),
                "relationship": format!(
                    "{} using {}({}) and {}({})",
                    c.schema.name,
                    c.to_parent.resolved_name(&c.schema.name),
                    c.to_parent.columns.join(", "),
                    c.to_child.resolved_name(&c.schema.name),
                    c.to_child.columns.join(", ")
                ),
            })
        })
        .collect();
    let mut options: Vec<String> = candidates
        .iter()
        .map(|c| format!("'{}!{}'", e.table, c.schema.name))
        .collect();
    options.dedup();
    several_relationships(parent, child, e, &options, details)
}

/// Types the `<path>.<param>` parameters of `node`.
fn apply_params(node: &mut Node, path: &[String], params: &[EmbedParam]) -> ApiResult<()> {
    let schema = &node.access.schema;
    let mut conds = Vec::new();
    for p in params.iter().filter(|p| p.path == path) {
        match p.key.as_str() {
            "order" => {
                for key in parse::order(&p.value)? {
                    if schema.find(&key.column).is_none() {
                        return Err(ApiError::unknown_column_read(&schema.name, &key.column));
                    }
                    node.order.push(order_by(key));
                }
            }
            "limit" => node.limit = Some(parse::number("limit", &p.value)?),
            "offset" => node.offset = Some(parse::number("offset", &p.value)?),
            "or" | "and" | "not.or" | "not.and" => {
                conds.push(plan::to_filter(schema, &parse::logic(&p.key, &p.value)?)?);
            }
            _ => conds.push(plan::to_filter(schema, &parse::filter(&p.key, &p.value)?)?),
        }
    }
    node.filter = and_all(conds);
    Ok(())
}

/// An `order=` key as core-db's.
pub(crate) fn order_by(key: parse::OrderKey) -> OrderBy {
    OrderBy {
        column: ColumnRef {
            table: None,
            column: key.column,
        },
        direction: if key.desc {
            SortDirection::Desc
        } else {
            SortDirection::Asc
        },
        nulls: key.nulls_first.map(|f| {
            if f {
                NullsOrder::First
            } else {
                NullsOrder::Last
            }
        }),
    }
}

fn and_all(mut parts: Vec<Filter>) -> Option<Filter> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Filter::And(parts)),
    }
}

fn column(name: &str) -> ColumnRef {
    ColumnRef {
        table: None,
        column: name.to_string(),
    }
}

/// `(cols) IN (tuples)`: an `in` for one column, else an `or` of `and`s.
fn tuple_in(cols: &[String], tuples: Vec<Vec<Value>>) -> Filter {
    if let [c] = cols {
        return Filter::In {
            column: column(c),
            values: tuples
                .into_iter()
                .filter_map(|t| t.into_iter().next())
                .collect(),
        };
    }
    Filter::Or(
        tuples
            .into_iter()
            .map(|t| {
                Filter::And(
                    cols.iter()
                        .zip(t)
                        .map(|(c, v)| Filter::Cmp {
                            column: column(c),
                            op: truststream_core_db::CmpOp::Eq,
                            value: v,
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// The values of `cols` in `row`; `None` when any is null.
fn tuple(row: &Row, cols: &[String]) -> Option<Vec<Value>> {
    cols.iter()
        .map(|c| row.get(c).filter(|v| !v.is_null()).cloned())
        .collect()
}

fn tuple_key(t: &[Value]) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

/// The columns to read for `fields` plus `extra` (empty: every column).
pub(crate) fn columns_with(fields: &[SelectField], extra: &[&String]) -> Vec<SelectItem> {
    let mut items = plan::base_columns(fields);
    if items.is_empty() {
        return items;
    }
    for c in extra {
        let present = items
            .iter()
            .any(|i| matches!(i, SelectItem::Column { column, .. } if column.column == **c));
        if !present {
            items.push(SelectItem::Column {
                column: column(c),
                alias: None,
            });
        }
    }
    items
}

/// The parent-side columns the embeds of one level need.
pub(crate) fn parent_columns(nodes: &[Node]) -> Vec<&String> {
    nodes
        .iter()
        .flat_map(|n| n.rel.parent_cols.iter())
        .collect()
}

/// The filter on the parent rows that `!inner` embeds ask for: their
/// parent-side keys must be among the keys of matching embedded rows.
pub(crate) fn inner_filter<'a>(nodes: &'a [Node]) -> Boxed<'a, Option<Filter>> {
    Box::pin(async move {
        let mut parts = Vec::new();
        for node in nodes.iter().filter(|n| n.embed.inner) {
            parts.push(semi_join(node).await?);
        }
        Ok(and_all(parts))
    })
}

/// The filter on the embedded rows of `node` (its own filters, its owner
/// rule, its `!inner` children).
async fn node_filter(node: &Node) -> ApiResult<Option<Filter>> {
    let mut parts = Vec::new();
    parts.extend(node.filter.clone());
    parts.extend(node.access.owner.filter());
    parts.extend(inner_filter(&node.children).await?);
    Ok(and_all(parts))
}

/// The parent-side filter of one `!inner` embed.
async fn semi_join(node: &Node) -> ApiResult<Filter> {
    let not_null = node
        .rel
        .parent_cols
        .iter()
        .map(|c| Filter::IsNotNull { column: column(c) });
    let filter = node_filter(node).await?;
    if filter.is_none() && node.all_visible && node.rel.parent_holds_key {
        // A set key always has its (visible) row.
        return Ok(Filter::And(not_null.collect()));
    }
    let tuples = match &node.via {
        None => distinct_keys(node, &node.access, &node.rel.child_cols, filter).await?,
        Some(via) => {
            // Through the junction: its rows linking to a matching embedded
            // row (any row, when every embedded row is visible and the
            // database enforces the junction's foreign key).
            let mut parts: Vec<Filter> = via.access.owner.filter().into_iter().collect();
            if filter.is_some() || !node.all_visible {
                let keys = distinct_keys(node, &node.access, &node.rel.child_cols, filter).await?;
                parts.push(tuple_in(&via.to_child, keys));
            }
            distinct_keys(node, &via.access, &via.to_parent, and_all(parts)).await?
        }
    };
    let parts: Vec<Filter> = not_null
        .chain(std::iter::once(tuple_in(&node.rel.parent_cols, tuples)))
        .collect();
    Ok(Filter::And(parts))
}

/// The distinct non-null values of `key` in the rows of `access`'s table
/// matching `filter`, at most [`MAX_INNER_KEYS`].
async fn distinct_keys(
    node: &Node,
    access: &Access,
    key: &[String],
    filter: Option<Filter>,
) -> ApiResult<Vec<Vec<Value>>> {
    let q = Query {
        select: key
            .iter()
            .map(|c| SelectItem::Column {
                column: column(c),
                alias: None,
            })
            .collect(),
        filter,
        limit: Some(MAX_INNER_KEYS as u64 + 1),
        ..Query::default()
    };
    let rows = access.db.read(access.table(), &q).await?;
    if rows.len() > MAX_INNER_KEYS {
        return Err(too_many(node, MAX_INNER_KEYS).hint(format!(
            "!inner reads the keys of every matching row of {} first; filter it ({}.column=eq.value) to fewer than {MAX_INNER_KEYS}",
            access.table(),
            node.embed.name()
        )));
    }
    let mut seen = HashSet::new();
    Ok(rows
        .iter()
        .filter_map(|r| tuple(r, key))
        .filter(|t| seen.insert(tuple_key(t)))
        .collect())
}

fn too_many(node: &Node, n: usize) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "PGRST100",
        format!(
            "the embedded resource '{}' matches more than {n} rows for this request",
            node.embed.name()
        ),
    )
}

/// Reads the embedded rows of every node for `rows` (the rows of the
/// level above) and stores each embed's value in its row under
/// [`slot_key`]; rows whose `!inner` embed came back empty are dropped.
pub(crate) fn attach<'a>(nodes: &'a [Node], rows: &'a mut Vec<Row>) -> Boxed<'a, ()> {
    Box::pin(async move {
        for node in nodes {
            attach_one(node, rows).await?;
        }
        rows.retain(|r| {
            nodes
                .iter()
                .filter(|n| n.embed.inner)
                .all(|n| match r.get(&slot_key(n.slot)) {
                    None | Some(Value::Null) => false,
                    Some(Value::Array(a)) => !a.is_empty(),
                    Some(_) => true,
                })
        });
        Ok(())
    })
}

async fn attach_one(node: &Node, rows: &mut [Row]) -> ApiResult<()> {
    let rel = &node.rel;
    let mut seen = HashSet::new();
    let keys: Vec<Vec<Value>> = rows
        .iter()
        .filter_map(|r| tuple(r, &rel.parent_cols))
        .filter(|t| seen.insert(tuple_key(t)))
        .collect();
    let paged_per_parent =
        node.via.is_none() && !rel.to_one && node.limit.is_some() && keys.len() <= PER_PARENT_READS;
    // The embedded rows of each parent key, in order.
    let groups = match &node.via {
        _ if keys.is_empty() => HashMap::new(),
        None => {
            let mut groups: HashMap<String, Vec<Row>> = HashMap::new();
            for child in read_embedded(node, &keys, paged_per_parent).await? {
                if let Some(t) = tuple(&child, &rel.child_cols) {
                    groups.entry(tuple_key(&t)).or_default().push(child);
                }
            }
            groups
        }
        Some(via) => via_groups(node, via, &keys).await?,
    };
    let schema = &node.access.schema;
    let fields = &node.embed.fields;
    let (offset, limit) = if paged_per_parent {
        (0, usize::MAX)
    } else {
        (
            usize::try_from(node.offset.unwrap_or(0)).unwrap_or(usize::MAX),
            node.limit
                .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX)),
        )
    };
    // Rows sharing a key get the same embedded rows.
    let mut done: HashMap<String, Value> = HashMap::new();
    for row in rows.iter_mut() {
        let value = match tuple(row, &rel.parent_cols) {
            None if rel.to_one => empty_one(node),
            None => Value::Array(Vec::new()),
            Some(t) => {
                let k = tuple_key(&t);
                if let Some(v) = done.get(&k) {
                    v.clone()
                } else {
                    let matched: Vec<Row> = groups
                        .get(&k)
                        .map(|g| g.iter().skip(offset).take(limit).cloned().collect())
                        .unwrap_or_default();
                    let mut projected = plan::project(schema, fields, matched);
                    let v = if rel.to_one {
                        match projected.drain(..).next() {
                            Some(r) => Value::Object(r),
                            None => empty_one(node),
                        }
                    } else {
                        Value::Array(projected.into_iter().map(Value::Object).collect())
                    };
                    done.insert(k, v.clone());
                    v
                }
            }
        };
        row.insert(slot_key(node.slot), value);
    }
    Ok(())
}

/// The embedded rows of `node` whose [`Rel::child_cols`] are among
/// `keys` (chunked; with `paged_per_parent`, one paged read per key),
/// ordered by `<ref>.order` then the primary key, their own embeds
/// attached.
async fn read_embedded(
    node: &Node,
    keys: &[Vec<Value>],
    paged_per_parent: bool,
) -> ApiResult<Vec<Row>> {
    let rel = &node.rel;
    let mut children: Vec<Row> = Vec::new();
    let base = node_filter(node).await?;
    let mut extra: Vec<&String> = rel.child_cols.iter().collect();
    extra.extend(parent_columns(&node.children));
    let select = columns_with(&node.embed.fields, &extra);
    let order = embed_order(node);
    // With `<ref>.limit` and few parents: one read per parent, paged by
    // the database, so no parent's rows are read beyond those kept.
    let groups_of = if paged_per_parent { 1 } else { IN_CHUNK };
    for chunk in keys.chunks(groups_of) {
        let mut parts = vec![tuple_in(&rel.child_cols, chunk.to_vec())];
        parts.extend(base.clone());
        let room = (MAX_EMBED_ROWS - children.len()) as u64 + 1;
        let q = Query {
            select: select.clone(),
            filter: and_all(parts),
            order_by: order.clone(),
            limit: Some(if paged_per_parent {
                node.limit.unwrap_or(room).min(room)
            } else {
                room
            }),
            offset: if paged_per_parent { node.offset } else { None },
            ..Query::default()
        };
        children.extend(node.access.db.read(node.access.table(), &q).await?);
        if children.len() > MAX_EMBED_ROWS {
            return Err(too_many(node, MAX_EMBED_ROWS).hint(format!(
                "page the rows above it (limit=) or filter {}",
                node.embed.name()
            )));
        }
    }
    if keys.len() > groups_of {
        // Several reads: each is ordered, the whole is not.
        children.sort_by(|a, b| {
            order
                .iter()
                .map(|o| {
                    let c = &o.column.column;
                    let nulls_first = o.nulls.map_or(o.direction == SortDirection::Desc, |n| {
                        n == NullsOrder::First
                    });
                    sort_key_cmp(a.get(c), b.get(c), o.direction, nulls_first)
                })
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    attach(&node.children, &mut children).await?;
    Ok(children)
}

/// `<ref>.order`, then the embedded table's primary key (a stable order).
fn embed_order(node: &Node) -> Vec<OrderBy> {
    let mut order = node.order.clone();
    if let Some(pk) = node.access.schema.primary_key() {
        if !order.iter().any(|o| o.column.column == pk.name) {
            order.push(OrderBy {
                column: column(&pk.name),
                direction: SortDirection::Asc,
                nulls: None,
            });
        }
    }
    order
}

/// Many-to-many: the junction rows of the parent `keys` (chunked), then
/// the embedded rows they link to, grouped by parent key in the embedded
/// rows' order (each row once per parent).
async fn via_groups(
    node: &Node,
    via: &Via,
    keys: &[Vec<Value>],
) -> ApiResult<HashMap<String, Vec<Row>>> {
    let select: Vec<SelectItem> = via
        .to_parent
        .iter()
        .chain(&via.to_child)
        .map(|c| SelectItem::Column {
            column: column(c),
            alias: None,
        })
        .collect();
    let mut links: Vec<(String, String)> = Vec::new();
    let mut child_keys = Vec::new();
    let mut seen = HashSet::new();
    for chunk in keys.chunks(IN_CHUNK) {
        let mut parts = vec![tuple_in(&via.to_parent, chunk.to_vec())];
        parts.extend(via.access.owner.filter());
        let q = Query {
            select: select.clone(),
            filter: and_all(parts),
            limit: Some((MAX_EMBED_ROWS - links.len()) as u64 + 1),
            ..Query::default()
        };
        for j in via.access.db.read(via.access.table(), &q).await? {
            let (Some(p), Some(c)) = (tuple(&j, &via.to_parent), tuple(&j, &via.to_child)) else {
                continue;
            };
            let ck = tuple_key(&c);
            if seen.insert(ck.clone()) {
                child_keys.push(c);
            }
            links.push((tuple_key(&p), ck));
        }
        if links.len() > MAX_EMBED_ROWS {
            return Err(too_many(node, MAX_EMBED_ROWS).hint(format!(
                "page the rows above it (limit=); {} links more rows than that",
                via.access.table()
            )));
        }
    }
    let children = read_embedded(node, &child_keys, false).await?;
    let mut position: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, child) in children.iter().enumerate() {
        if let Some(t) = tuple(child, &node.rel.child_cols) {
            position.entry(tuple_key(&t)).or_default().push(i);
        }
    }
    let mut per_parent: HashMap<String, Vec<usize>> = HashMap::new();
    for (p, c) in links {
        if let Some(at) = position.get(&c) {
            per_parent.entry(p).or_default().extend(at);
        }
    }
    Ok(per_parent
        .into_iter()
        .map(|(p, mut at)| {
            at.sort_unstable();
            at.dedup();
            (p, at.into_iter().map(|i| children[i].clone()).collect())
        })
        .collect())
}

/// A to-one embed without a row: `null`, or for a spread embed every
/// name it selects as `null` (as PostgREST answers).
fn empty_one(node: &Node) -> Value {
    if !node.embed.spread {
        return Value::Null;
    }
    Value::Object(
        output_names(&node.access.schema, &node.embed.fields)
            .into_iter()
            .map(|n| (n, Value::Null))
            .collect(),
    )
}

/// The output names of `fields` applied to a table `schema`.
fn output_names(schema: &TableSchema, fields: &[SelectField]) -> Vec<String> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            SelectField::All => out.extend(schema.columns.iter().map(|c| c.name.clone())),
            SelectField::Column {
                column,
                path,
                alias,
                ..
            } => out.push(
                alias
                    .clone()
                    .or_else(|| path.last().map(|p| p.key.clone()))
                    .unwrap_or_else(|| column.clone()),
            ),
            // A nested embed's names are not known without its schema;
            // PostgREST answers `null` for it as a whole.
            SelectField::Embed(e) if !e.fields.is_empty() && !e.spread => {
                out.push(e.name().to_string())
            }
            SelectField::Embed(_) => {}
        }
    }
    out
}

/// Plans (resolves and authorizes) the embeds of a write's `select=`
/// before the write, so a bad one is refused before anything is written;
/// the rows the write returns get them through [`attach`]. Nothing to do
/// without embeds.
pub(crate) async fn plan_write(
    state: &ServeState,
    headers: &axum::http::HeaderMap,
    access: &Access,
    p: &super::Params,
) -> ApiResult<Vec<Node>> {
    if !p
        .fields()
        .iter()
        .any(|f| matches!(f, SelectField::Embed(_)))
    {
        return Ok(Vec::new());
    }
    plan_request(state, headers, access, p).await
}

/// [`plan`] for the request's caller, table and parameters.
pub(crate) async fn plan_request(
    state: &ServeState,
    headers: &axum::http::HeaderMap,
    access: &Access,
    p: &super::Params,
) -> ApiResult<Vec<Node>> {
    plan(
        state,
        &access.caller,
        crate::caller::bearer(headers),
        &access.schema,
        p.fields(),
        &p.embed_params,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embed_parameters_route_by_name_or_alias() {
        let fields = parse::select("id,author:users(name,org:orgs(*)),comments(*)").unwrap();
        let r = |k: &str| route(&fields, k);
        assert_eq!(
            r("comments.order"),
            Some((vec!["comments".into()], "order".into()))
        );
        assert_eq!(
            r("author.org.name"),
            Some((vec!["author".into(), "org".into()], "name".into()))
        );
        assert_eq!(
            r("author.not.or"),
            Some((vec!["author".into()], "not.or".into()))
        );
        // The table name of an aliased embed is not its name.
        assert_eq!(r("users.name"), None);
        assert_eq!(r("comments"), None);
        assert_eq!(not_embedded("users.name").code, "PGRST108");
    }

    #[test]
    fn tuple_filters() {
        let one = tuple_in(&["a".into()], vec![vec![json!(1)], vec![json!(2)]]);
        assert!(matches!(one, Filter::In { ref values, .. } if values.len() == 2));
        let two = tuple_in(&["a".into(), "b".into()], vec![vec![json!(1), json!("x")]]);
        assert!(
            matches!(two, Filter::Or(ref v) if matches!(&v[0], Filter::And(p) if p.len() == 2))
        );
        let mut row = Row::new();
        row.insert("a".into(), json!(1));
        row.insert("b".into(), Value::Null);
        assert_eq!(tuple(&row, &["a".into()]), Some(vec![json!(1)]));
        assert_eq!(tuple(&row, &["a".into(), "b".into()]), None);
    }
}
