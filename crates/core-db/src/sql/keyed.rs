//! Compiled statements for the hot paths, kept by shape so that a
//! provider's `get`, inserts, updates by key, filtered updates (with the
//! select of the rows they replace) and reads without joins or cursor do
//! not run the query compiler (and rebuild the SQL text) on every call.
//!
//! A shape's SQL text depends only on the table's schema and on which
//! columns are given (and, for inserts, how many rows; for a filter, its
//! structure: columns, operators, `IN` list lengths, which values are null,
//! a text search's kind and configuration); every call binds its own
//! values. Filters with JSON containment operators (whose SQLite SQL
//! follows the value's structure) are always compiled. A shape is reused only while the schema it was compiled from
//! is still the table's schema, so `alter_table` (or a schema reloaded after
//! another process changed it) can never leave a stale statement behind.
//! The statements are exactly what [`compile`] makes (tested), and anything
//! unusual (a null or non-scalar id, an invalid row) goes through the
//! compiler, so errors are the compiler's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::compile::{self, Bind, SqlDialect, Statement};
use crate::{CmpOp, ColumnType, DbResult, Filter, Query, Row, TableSchema, Value};

/// Shapes kept per table and kind (oldest dropped first).
const SHAPES_PER_TABLE: usize = 16;

/// One compiled statement and what its binds are.
#[derive(Debug)]
struct Shape {
    /// The schema it was compiled from: the engine's own copy, so that
    /// while the table's schema is unchanged the check is a pointer
    /// comparison.
    schema: Arc<TableSchema>,
    /// Rows per statement (inserts; 1 otherwise).
    rows: usize,
    /// The columns bound per row (inserts) or set (updates), in order.
    columns: Vec<(Arc<str>, Option<ColumnType>)>,
    /// The primary-key bind that ends the statement (selects, updates).
    key: Option<(Arc<str>, Option<ColumnType>)>,
    /// The filter it was compiled from (filtered statements): another
    /// filter reuses the statement when it has the same shape
    /// ([`same_shape`]), its values bound after [`Shape::columns`].
    filter: Option<Filter>,
    /// The binds of the filter's values, in order (filtered statements).
    filter_binds: Vec<(Arc<str>, Option<ColumnType>)>,
    sql: Arc<str>,
    /// Result column types by position (selects).
    output: Arc<[ColumnType]>,
    /// Reads: the query it was compiled from, without its filter (which is
    /// [`Shape::filter`]); another read reuses the statement when
    /// [`same_read`].
    read: Option<Query>,
}

/// Shapes by table name (foldhash: a lookup per cached call; seeded per
/// process).
type Shapes = Mutex<foldhash::HashMap<String, Vec<Arc<Shape>>>>;

/// Whether a read of `query` compiles to `shape`'s SQL: the same select
/// list, grouping, order, limit and offset (every other part of a query
/// keeps it out of the cache: the destructuring makes a new `Query` field
/// a compile error here until it is decided), and a filter of the same
/// shape.
fn same_read(shape: &Shape, query: &Query) -> bool {
    let Some(kept) = &shape.read else {
        return false;
    };
    let Query {
        select,
        joins,
        filter,
        group_by,
        order_by,
        limit,
        offset,
        after,
    } = query;
    joins.is_empty()
        && after.is_none()
        && kept.select == *select
        && kept.group_by == *group_by
        && kept.order_by == *order_by
        && kept.limit == *limit
        && kept.offset == *offset
        && match (&shape.filter, filter) {
            (None, None) => true,
            (Some(x), Some(y)) => same_shape(x, y),
            _ => false,
        }
}

/// A select statement and its result column types: a `get`'s
/// ([`StatementCache::select_by_key`]) or a read's ([`StatementCache::read`]).
#[derive(Debug)]
pub struct KeyedSelect {
    /// The statement (a `get`'s: `SELECT <every column> FROM <table> WHERE
    /// <key> = ? LIMIT 1`).
    pub statement: Statement,
    /// The type of each result column, by position.
    pub column_types: Arc<[ColumnType]>,
}

/// The statement shapes of one provider (one dialect).
#[derive(Debug)]
pub struct StatementCache {
    dialect: SqlDialect,
    selects: Shapes,
    inserts: Shapes,
    updates: Shapes,
    filtered_selects: Shapes,
    filtered_updates: Shapes,
    reads: Shapes,
    compiled: AtomicU64,
}

fn is_scalar(id: &Value) -> bool {
    matches!(id, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn lock(shapes: &Shapes) -> std::sync::MutexGuard<'_, foldhash::HashMap<String, Vec<Arc<Shape>>>> {
    shapes.lock().unwrap_or_else(PoisonError::into_inner)
}

fn find(
    shapes: &Shapes,
    schema: &Arc<TableSchema>,
    fits: impl Fn(&Shape) -> bool,
) -> Option<Arc<Shape>> {
    lock(shapes)
        .get(&schema.name)?
        .iter()
        // The cheap test first: a table's shapes are usually all of its
        // current schema, so comparing the schema decides little.
        .find(|s| fits(s) && same_schema(&s.schema, schema))
        .cloned()
}

/// Whether two schemas are the same: the same allocation (the engine's
/// cached schema, the usual case) or equal.
fn same_schema(a: &Arc<TableSchema>, b: &Arc<TableSchema>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// Adds `shape` to its table, dropping shapes of older schemas and the
/// oldest beyond [`SHAPES_PER_TABLE`].
fn remember(shapes: &Shapes, shape: Shape) {
    let mut map = lock(shapes);
    let list = map.entry(shape.schema.name.clone()).or_default();
    list.retain(|s| same_schema(&s.schema, &shape.schema));
    if list.len() >= SHAPES_PER_TABLE {
        list.remove(0);
    }
    list.push(Arc::new(shape));
}

fn bound(binds: &[Bind]) -> Vec<(Arc<str>, Option<ColumnType>)> {
    binds
        .iter()
        .map(|b| (Arc::clone(&b.column), b.ty))
        .collect()
}

fn key_bind(key: &(Arc<str>, Option<ColumnType>), id: &Value) -> Bind {
    Bind {
        value: id.clone(),
        ty: key.1,
        column: Arc::clone(&key.0),
    }
}

/// The comparison operators whose SQL is the same for every value (the
/// value one bind); JSON containment is unrolled over the value in SQLite.
fn plain(op: CmpOp) -> bool {
    matches!(
        op,
        CmpOp::Eq
            | CmpOp::Ne
            | CmpOp::Gt
            | CmpOp::Gte
            | CmpOp::Lt
            | CmpOp::Lte
            | CmpOp::Like
            | CmpOp::ILike
    )
}

/// Whether the compiler makes the same SQL text for `a` and `b` (over the
/// same schema): the same tree of the same columns and operators, the same
/// `IN` list lengths, nulls in the same places, the same text-search kind
/// and configuration; only the bound values differ. Never true for JSON
/// containment operators.
fn same_shape(a: &Filter, b: &Filter) -> bool {
    let same_nulls = |x: &[Value], y: &[Value]| {
        x.len() == y.len() && x.iter().zip(y).all(|(x, y)| x.is_null() == y.is_null())
    };
    match (a, b) {
        (
            Filter::Cmp {
                column: c1,
                op: o1,
                value: v1,
            },
            Filter::Cmp {
                column: c2,
                op: o2,
                value: v2,
            },
        ) => plain(*o1) && o1 == o2 && c1 == c2 && v1.is_null() == v2.is_null(),
        (
            Filter::In {
                column: c1,
                values: v1,
            },
            Filter::In {
                column: c2,
                values: v2,
            },
        )
        | (
            Filter::NotIn {
                column: c1,
                values: v1,
            },
            Filter::NotIn {
                column: c2,
                values: v2,
            },
        ) => c1 == c2 && same_nulls(v1, v2),
        (Filter::IsNull { column: c1 }, Filter::IsNull { column: c2 })
        | (Filter::IsNotNull { column: c1 }, Filter::IsNotNull { column: c2 }) => c1 == c2,
        (Filter::And(p1), Filter::And(p2)) | (Filter::Or(p1), Filter::Or(p2)) => {
            p1.len() == p2.len() && p1.iter().zip(p2).all(|(a, b)| same_shape(a, b))
        }
        (Filter::Not(a), Filter::Not(b)) => same_shape(a, b),
        (
            Filter::TextSearch {
                column: c1,
                kind: k1,
                config: g1,
                ..
            },
            Filter::TextSearch {
                column: c2,
                kind: k2,
                config: g2,
                ..
            },
        ) => c1 == c2 && k1 == k2 && g1 == g2,
        _ => false,
    }
}

/// The values `f`'s compiled SQL binds, in placeholder order (the
/// compiler's: a text search binds its configuration twice, then its
/// query).
fn filter_values(f: &Filter, out: &mut Vec<Value>) {
    match f {
        Filter::Cmp { value, .. } => out.push(value.clone()),
        Filter::In { values, .. } | Filter::NotIn { values, .. } => {
            out.extend(values.iter().cloned())
        }
        Filter::IsNull { .. } | Filter::IsNotNull { .. } => {}
        Filter::And(parts) | Filter::Or(parts) => parts.iter().for_each(|p| filter_values(p, out)),
        Filter::Not(inner) => filter_values(inner, out),
        Filter::TextSearch { query, config, .. } => {
            if let Some(c) = config {
                out.push(Value::String(c.clone()));
                out.push(Value::String(c.clone()));
            }
            out.push(Value::String(query.clone()));
        }
    }
}

/// Whether statements of `f` may be kept: it has the same shape as
/// itself (no JSON containment operator anywhere).
fn cacheable(f: &Filter) -> bool {
    same_shape(f, f)
}

/// `filter`'s values when they fit `shape`'s filter binds (same count);
/// `None` sends the call to the compiler.
fn shape_values(shape: &Shape, filter: &Filter) -> Option<Vec<Value>> {
    let mut values = Vec::with_capacity(shape.filter_binds.len());
    filter_values(filter, &mut values);
    (values.len() == shape.filter_binds.len()).then_some(values)
}

/// `shape`'s SQL with `set` (an update's values, in the shape's column
/// order) and then the filter's `values` bound.
fn bind_filtered(shape: &Shape, set: impl Iterator<Item = Value>, values: Vec<Value>) -> Statement {
    let binds = set
        .zip(&shape.columns)
        .chain(values.into_iter().zip(&shape.filter_binds))
        .map(|(value, (column, ty))| Bind {
            value,
            ty: *ty,
            column: Arc::clone(column),
        })
        .collect();
    Statement {
        sql: Arc::clone(&shape.sql),
        binds,
    }
}

impl StatementCache {
    /// An empty cache for `dialect`.
    pub fn new(dialect: SqlDialect) -> Self {
        StatementCache {
            dialect,
            selects: Shapes::default(),
            inserts: Shapes::default(),
            updates: Shapes::default(),
            filtered_selects: Shapes::default(),
            filtered_updates: Shapes::default(),
            reads: Shapes::default(),
            compiled: AtomicU64::new(0),
        }
    }

    /// How many statements the compiler made for this cache so far (the
    /// calls that found no shape to reuse).
    pub fn compiled(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    fn catalog(schema: &TableSchema) -> HashMap<String, TableSchema> {
        [(schema.name.clone(), schema.clone())].into()
    }

    /// The `get` of `id` in `schema`'s table: the select of
    /// [`compile::select`] over [`compile::by_primary_key`] with limit 1
    /// (a null id is `InvalidInput`).
    pub fn select_by_key(&self, schema: &Arc<TableSchema>, id: &Value) -> DbResult<KeyedSelect> {
        self.select_columns_by_key(schema, id, &[])
    }

    /// [`StatementCache::select_by_key`] selecting only `columns`, in that
    /// order (every column when empty), as
    /// [`crate::Database::get_columns_set`] reads them: a statement per
    /// column list. The names are checked
    /// ([`crate::check_column_list`]) when the list is compiled; a list
    /// found in the cache is one that passed.
    pub fn select_columns_by_key(
        &self,
        schema: &Arc<TableSchema>,
        id: &Value,
        columns: &[&str],
    ) -> DbResult<KeyedSelect> {
        let scalar = is_scalar(id);
        if scalar {
            let same_list = |s: &Shape| {
                s.columns.len() == columns.len()
                    && s.columns.iter().zip(columns).all(|(a, b)| &*a.0 == *b)
            };
            if let Some(shape) = find(&self.selects, schema, same_list) {
                if let Some(key) = &shape.key {
                    return Ok(KeyedSelect {
                        statement: Statement {
                            sql: Arc::clone(&shape.sql),
                            binds: vec![key_bind(key, id)],
                        },
                        column_types: Arc::clone(&shape.output),
                    });
                }
            }
        }
        crate::check_column_list(columns)?;
        let query = Query::new()
            .select(columns)
            .filter(compile::by_primary_key(schema, id)?)
            .limit(1);
        let compiled = compile::select(self.dialect, &Self::catalog(schema), &schema.name, &query)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let output: Arc<[ColumnType]> = compiled.columns.iter().map(|c| c.ty).collect();
        let statement = compiled.statement;
        if scalar && statement.binds.len() == 1 {
            remember(
                &self.selects,
                Shape {
                    schema: Arc::clone(schema),
                    rows: 1,
                    // The selected names (no binds of their own).
                    columns: columns.iter().map(|c| (Arc::from(*c), None)).collect(),
                    key: bound(&statement.binds).pop(),
                    filter: None,
                    filter_binds: Vec::new(),
                    sql: Arc::clone(&statement.sql),
                    output: Arc::clone(&output),
                    read: None,
                },
            );
        }
        Ok(KeyedSelect {
            statement,
            column_types: output,
        })
    }

    /// The INSERT of `rows` into `schema`'s table, as
    /// [`compile::insert_rows`] makes it (same SQL, same binds, same
    /// errors); the values move into the binds.
    pub fn insert(&self, schema: &Arc<TableSchema>, mut rows: Vec<Row>) -> DbResult<Statement> {
        self.insert_taking(schema, &mut rows)
    }

    /// [`StatementCache::insert`] leaving the rows' maps behind: each
    /// value is taken (a null left in its place), so the caller can hand
    /// the maps back for the returned rows
    /// ([`super::rows::decode_into`]). A statement compiled here (a shape
    /// not cached yet) takes the rows whole and leaves empty maps.
    pub fn insert_taking(
        &self,
        schema: &Arc<TableSchema>,
        rows: &mut [Row],
    ) -> DbResult<Statement> {
        // A row gives the shape's columns in its order (rows prepared for
        // an insert list them in schema order): compared without hashing
        // any name, the values taken in order.
        let in_order = |r: &Row, s: &Shape| {
            r.len() == s.columns.len() && r.keys().zip(&s.columns).all(|(k, (c, _))| **k == **c)
        };
        let fits = |s: &Shape| {
            s.rows == rows.len()
                && rows.iter().all(|r| {
                    in_order(r, s)
                        || (r.len() == s.columns.len()
                            && s.columns.iter().all(|(c, _)| r.contains_key(&**c)))
                })
        };
        if let Some(shape) = find(&self.inserts, schema, fits) {
            let mut binds = Vec::with_capacity(rows.len() * shape.columns.len());
            for row in rows.iter_mut() {
                if in_order(row, &shape) {
                    for (value, (name, ty)) in row.values_mut().zip(&shape.columns) {
                        binds.push(Bind {
                            value: std::mem::take(value),
                            ty: *ty,
                            column: Arc::clone(name),
                        });
                    }
                    continue;
                }
                for (name, ty) in &shape.columns {
                    binds.push(Bind {
                        value: row.get_mut(&**name).map(std::mem::take).unwrap_or_default(),
                        ty: *ty,
                        column: Arc::clone(name),
                    });
                }
            }
            return Ok(Statement {
                sql: Arc::clone(&shape.sql),
                binds,
            });
        }
        let n = rows.len();
        let rows = rows.iter_mut().map(std::mem::take).collect();
        let stmt = compile::insert_rows(self.dialect, &Self::catalog(schema), &schema.name, rows)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let per_row = stmt.binds.len().checked_div(n).unwrap_or(0);
        if per_row > 0 && per_row * n == stmt.binds.len() {
            remember(
                &self.inserts,
                Shape {
                    schema: Arc::clone(schema),
                    rows: n,
                    columns: bound(&stmt.binds[..per_row]),
                    key: None,
                    filter: None,
                    filter_binds: Vec::new(),
                    sql: Arc::clone(&stmt.sql),
                    output: Arc::new([]),
                    read: None,
                },
            );
        }
        Ok(stmt)
    }

    /// The update by primary key of `schema`'s table with `patch` (already
    /// prepared), as [`compile::update`] makes it over
    /// [`compile::by_primary_key`] (a null id is `InvalidInput`).
    pub fn update_by_key(
        &self,
        schema: &Arc<TableSchema>,
        patch: &Row,
        id: &Value,
    ) -> DbResult<Statement> {
        let scalar = is_scalar(id);
        let fits = |s: &Shape| {
            s.columns.len() == patch.len()
                && s.columns
                    .iter()
                    .zip(patch.keys())
                    .all(|((c, _), k)| **c == **k)
        };
        if scalar {
            if let Some(shape) = find(&self.updates, schema, fits) {
                if let Some(key) = &shape.key {
                    let mut binds: Vec<Bind> = shape
                        .columns
                        .iter()
                        .zip(patch.values())
                        .map(|((c, ty), v)| Bind {
                            value: v.clone(),
                            ty: *ty,
                            column: Arc::clone(c),
                        })
                        .collect();
                    binds.push(key_bind(key, id));
                    return Ok(Statement {
                        sql: Arc::clone(&shape.sql),
                        binds,
                    });
                }
            }
        }
        let filter = compile::by_primary_key(schema, id)?;
        let stmt = compile::update(
            self.dialect,
            &Self::catalog(schema),
            &schema.name,
            patch,
            &filter,
        )?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if scalar && stmt.binds.len() == patch.len() + 1 {
            let (set, key) = stmt.binds.split_at(patch.len());
            remember(
                &self.updates,
                Shape {
                    schema: Arc::clone(schema),
                    rows: 1,
                    columns: bound(set),
                    key: bound(key).pop(),
                    filter: None,
                    filter_binds: Vec::new(),
                    sql: Arc::clone(&stmt.sql),
                    output: Arc::new([]),
                    read: None,
                },
            );
        }
        Ok(stmt)
    }

    /// The select of the rows of `schema`'s table matching `filter` (every
    /// column, no order or limit: the rows a filtered update replaces), as
    /// [`compile::select`] makes it (same SQL, same binds, same errors).
    pub fn select_where(&self, schema: &Arc<TableSchema>, filter: &Filter) -> DbResult<Statement> {
        filter.validate()?;
        if let Some(shape) = find(&self.filtered_selects, schema, |s| {
            s.filter.as_ref().is_some_and(|f| same_shape(f, filter))
        }) {
            if let Some(values) = shape_values(&shape, filter) {
                return Ok(bind_filtered(&shape, std::iter::empty(), values));
            }
        }
        let query = Query::new().filter(filter.clone());
        let stmt =
            compile::select(self.dialect, &Self::catalog(schema), &schema.name, &query)?.statement;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if cacheable(filter) {
            remember(
                &self.filtered_selects,
                Shape {
                    schema: Arc::clone(schema),
                    rows: 1,
                    columns: Vec::new(),
                    key: None,
                    filter: Some(filter.clone()),
                    filter_binds: bound(&stmt.binds),
                    sql: Arc::clone(&stmt.sql),
                    output: Arc::new([]),
                    read: None,
                },
            );
        }
        Ok(stmt)
    }

    /// The statement of [`crate::Database::read`] of `query` on `schema`'s
    /// table, as [`compile::select`] makes it (same SQL, same binds, same
    /// errors), with its result column types. A query with joins or a
    /// cursor, or a filter with JSON containment, is compiled every time.
    pub fn read(&self, schema: &Arc<TableSchema>, query: &Query) -> DbResult<KeyedSelect> {
        let simple = query.joins.is_empty()
            && query.after.is_none()
            && query.filter.as_ref().is_none_or(cacheable);
        if simple {
            query.validate()?;
            if let Some(shape) = find(&self.reads, schema, |s| same_read(s, query)) {
                // `same_read`: no filter on either side means no binds.
                let values = query
                    .filter
                    .as_ref()
                    .map_or(Some(Vec::new()), |f| shape_values(&shape, f));
                if let Some(values) = values {
                    return Ok(KeyedSelect {
                        statement: bind_filtered(&shape, std::iter::empty(), values),
                        column_types: Arc::clone(&shape.output),
                    });
                }
            }
        }
        let compiled = compile::select(self.dialect, &Self::catalog(schema), &schema.name, query)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let output: Arc<[ColumnType]> = compiled.columns.iter().map(|c| c.ty).collect();
        let stmt = compiled.statement;
        if simple {
            let mut values = Vec::new();
            if let Some(f) = &query.filter {
                filter_values(f, &mut values);
            }
            // Only when every bind is a filter value (in order): a select
            // list or order that binds values of its own is not kept.
            let only_filter = values.len() == stmt.binds.len()
                && values.iter().zip(&stmt.binds).all(|(v, b)| *v == b.value);
            if only_filter {
                remember(
                    &self.reads,
                    Shape {
                        schema: Arc::clone(schema),
                        rows: 1,
                        columns: Vec::new(),
                        key: None,
                        filter: query.filter.clone(),
                        filter_binds: bound(&stmt.binds),
                        sql: Arc::clone(&stmt.sql),
                        output: Arc::clone(&output),
                        read: Some(Query {
                            select: query.select.clone(),
                            group_by: query.group_by.clone(),
                            order_by: query.order_by.clone(),
                            limit: query.limit,
                            offset: query.offset,
                            ..Query::default()
                        }),
                    },
                );
            }
        }
        Ok(KeyedSelect {
            statement: stmt,
            column_types: output,
        })
    }

    /// The update of the rows of `schema`'s table matching `filter` with
    /// `patch` (already prepared; its values move into the binds), as
    /// [`compile::update`] makes it (same SQL, same binds, same errors).
    pub fn update_where(
        &self,
        schema: &Arc<TableSchema>,
        patch: Row,
        filter: &Filter,
    ) -> DbResult<Statement> {
        filter.validate()?;
        let fits = |s: &Shape| {
            s.columns.len() == patch.len()
                && s.columns
                    .iter()
                    .zip(patch.keys())
                    .all(|((c, _), k)| **c == **k)
                && s.filter.as_ref().is_some_and(|f| same_shape(f, filter))
        };
        if let Some(shape) = find(&self.filtered_updates, schema, fits) {
            if let Some(values) = shape_values(&shape, filter) {
                return Ok(bind_filtered(&shape, patch.into_values(), values));
            }
        }
        let stmt = compile::update(
            self.dialect,
            &Self::catalog(schema),
            &schema.name,
            &patch,
            filter,
        )?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if cacheable(filter) && stmt.binds.len() >= patch.len() {
            let (set, rest) = stmt.binds.split_at(patch.len());
            remember(
                &self.filtered_updates,
                Shape {
                    schema: Arc::clone(schema),
                    rows: 1,
                    columns: bound(set),
                    key: None,
                    filter: Some(filter.clone()),
                    filter_binds: bound(rest),
                    sql: Arc::clone(&stmt.sql),
                    output: Arc::new([]),
                    read: None,
                },
            );
        }
        Ok(stmt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{and, col, not, or, ColumnDef, ErrorKind, TextSearchKind};
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap_or_default()
    }

    fn agents() -> TableSchema {
        TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("name"))
    }

    fn scored() -> TableSchema {
        TableSchema::new("agents")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("name"))
            .column(ColumnDef::float("score"))
    }

    #[test]
    fn selects_reused_while_the_schema_stays_and_recompiled_after_it_changes() {
        let cache = StatementCache::new(SqlDialect::Postgres);
        let a = cache
            .select_by_key(&Arc::new(agents()), &json!("a1"))
            .unwrap();
        let b = cache
            .select_by_key(&Arc::new(agents()), &json!("b2"))
            .unwrap();
        assert_eq!(cache.compiled(), 1, "the second get reuses the statement");
        assert_eq!(a.statement.binds[0].value, json!("a1"));
        assert_eq!(b.statement.binds[0].value, json!("b2"));
        assert_eq!(&*b.statement.binds[0].column, "id");
        assert_eq!(&*a.column_types, [ColumnType::Text, ColumnType::Text]);
        assert!(
            !a.statement.sql.contains("b2"),
            "values are bound, never in the text"
        );
        assert_eq!(a.statement.sql, b.statement.sql);

        let altered = Arc::new(agents().column(ColumnDef::integer("score")));
        let c = cache.select_by_key(&altered, &json!("a1")).unwrap();
        assert_eq!(cache.compiled(), 2, "a changed schema compiles again");
        assert!(c.statement.sql.contains("\"score\""), "{}", c.statement.sql);
        assert_eq!(c.column_types.len(), 3);
    }

    #[test]
    fn selects_match_the_compiler() {
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), agents())].into();
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            let cache = StatementCache::new(dialect);
            for id in [json!("a1"), json!("a2"), json!(7), json!(["x"])] {
                let q = Query::new()
                    .filter(compile::by_primary_key(&agents(), &id).unwrap())
                    .limit(1);
                let expected = compile::select(dialect, &cat, "agents", &q).unwrap();
                let got = cache.select_by_key(&Arc::new(agents()), &id).unwrap();
                assert_eq!(got.statement, expected.statement);
            }
        }
    }

    /// Each column list is its own statement, the one the compiler makes
    /// for a read of those columns by key; lists that are not plain,
    /// distinct, known names are refused before anything is kept.
    #[test]
    fn projected_selects_match_the_compiler() {
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), texted())].into();
        let schema = Arc::new(texted());
        let lists: [&[&str]; 5] = [
            &["name", "score"],
            &[],
            &["score", "name"],
            &["name"],
            &["id", "name", "score", "body", "tags", "revoked_at"],
        ];
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            let cache = StatementCache::new(dialect);
            for round in 0..2 {
                for (n, columns) in lists.iter().enumerate() {
                    let id = json!(n + round * 10);
                    let q = Query::new()
                        .select(columns.iter())
                        .filter(compile::by_primary_key(&texted(), &id).unwrap())
                        .limit(1);
                    let expected = compile::select(dialect, &cat, "agents", &q).unwrap();
                    let got = cache.select_columns_by_key(&schema, &id, columns).unwrap();
                    assert_eq!(got.statement, expected.statement, "{dialect:?} {columns:?}");
                    let types: Vec<ColumnType> = expected.columns.iter().map(|c| c.ty).collect();
                    assert_eq!(&*got.column_types, types.as_slice());
                }
            }
            assert_eq!(cache.compiled() as usize, lists.len(), "{dialect:?}");
            for bad in [
                &["nope"][..],
                &["name", "name"],
                &["*"],
                &["agents.name"],
                &["name as n"],
                &["name; DROP TABLE agents"],
                &[""],
                &["name"; crate::MAX_COLUMN_LIST + 1],
            ] {
                let e = cache
                    .select_columns_by_key(&schema, &json!(1), bad)
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
            }
            assert_eq!(cache.compiled() as usize, lists.len(), "nothing kept");
        }
    }

    #[test]
    fn null_ids_are_refused_and_odd_ids_are_not_cached() {
        let cache = StatementCache::new(SqlDialect::Sqlite);
        let e = cache
            .select_by_key(&Arc::new(agents()), &Value::Null)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        cache
            .select_by_key(&Arc::new(agents()), &json!("a1"))
            .unwrap();
        let before = cache.compiled();
        let b = cache
            .select_by_key(&Arc::new(agents()), &json!(["x"]))
            .unwrap();
        assert_eq!(cache.compiled(), before + 1, "a non-scalar id is compiled");
        assert_eq!(b.statement.binds[0].value, json!(["x"]));
        cache
            .select_by_key(&Arc::new(agents()), &json!("a2"))
            .unwrap();
        assert_eq!(
            cache.compiled(),
            before + 1,
            "the scalar entry is still the cached one"
        );
    }

    #[test]
    fn cached_inserts_make_what_the_compiler_makes() {
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), scored())].into();
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            let cache = StatementCache::new(dialect);
            for rows in [
                vec![row(json!({"id": 1, "name": "a"}))],
                vec![row(json!({"name": "b", "id": 2}))],
                vec![
                    row(json!({"id": 3, "name": "c", "score": 1.5})),
                    row(json!({"score": 2.5, "id": 4, "name": "d"})),
                ],
                vec![row(json!({"id": 5, "name": "e"}))],
            ] {
                let expected = compile::insert(dialect, &cat, "agents", &rows).unwrap();
                let got = cache.insert(&Arc::new(scored()), rows).unwrap();
                assert_eq!(got, expected);
            }
            assert_eq!(cache.compiled(), 2, "two shapes, four inserts");
        }
    }

    #[test]
    fn cached_updates_make_what_the_compiler_makes() {
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), scored())].into();
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            let cache = StatementCache::new(dialect);
            for (patch, id) in [
                (row(json!({"name": "a"})), json!(1)),
                (row(json!({"name": "b"})), json!(2)),
                (row(json!({"score": 1.5, "name": "c"})), json!(3)),
                (row(json!({"name": "d", "score": 2.5})), json!(4)),
                (row(json!({"score": 3.5, "name": "e"})), json!(5)),
            ] {
                let filter = compile::by_primary_key(&scored(), &id).unwrap();
                let expected = compile::update(dialect, &cat, "agents", &patch, &filter).unwrap();
                let got = cache
                    .update_by_key(&Arc::new(scored()), &patch, &id)
                    .unwrap();
                assert_eq!(got, expected);
            }
            assert_eq!(cache.compiled(), 3, "three shapes, five updates");
        }
        let cache = StatementCache::new(SqlDialect::Sqlite);
        let e = cache
            .update_by_key(&Arc::new(scored()), &row(json!({"nope": 1})), &json!(1))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = cache
            .update_by_key(
                &Arc::new(scored()),
                &row(json!({"name": "x"})),
                &Value::Null,
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn insert_errors_and_schema_changes_go_through_the_compiler() {
        let cache = StatementCache::new(SqlDialect::Sqlite);
        cache
            .insert(
                &Arc::new(scored()),
                vec![row(json!({"id": 1, "name": "a"}))],
            )
            .unwrap();
        // Other columns than the first row: the compiler's error.
        let e = cache
            .insert(
                &Arc::new(scored()),
                vec![row(json!({"id": 1, "name": "a"})), row(json!({"id": 2}))],
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // Unknown column: the compiler's error, not a cached shape.
        let e = cache
            .insert(
                &Arc::new(scored()),
                vec![row(json!({"id": 1, "nope": "a"}))],
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // A changed schema compiles again (the new column is known).
        let altered = Arc::new(scored().column(ColumnDef::text("status")));
        let s = cache
            .insert(
                &altered,
                vec![row(json!({"id": 1, "name": "a", "status": "x"}))],
            )
            .unwrap();
        assert!(s.sql.contains("\"status\""), "{}", s.sql);
    }

    fn texted() -> TableSchema {
        scored()
            .column(ColumnDef::text("body"))
            .column(ColumnDef::json("tags"))
            .column(ColumnDef::text("revoked_at"))
    }

    /// Filters of distinct shapes (each differs from the others in an
    /// operator, a column, a list length, null-ness or a text search's
    /// configuration), each followed by the same shape with other values.
    fn shape_pairs(dialect: SqlDialect) -> Vec<(Filter, Filter)> {
        let mut pairs = vec![
            (col("id").eq(1), col("id").eq(2)),
            (col("id").ne(1), col("id").ne(2)),
            (col("id").gt(1), col("id").gt(5)),
            (col("name").eq("a"), col("name").eq("b")),
            (col("name").like("a%"), col("name").like("b%")),
            (col("name").ilike("a%"), col("name").ilike("b%")),
            (col("id").is_in([1, 2]), col("id").is_in([3, 4])),
            (col("id").is_in([1, 2, 3]), col("id").is_in([4, 5, 6])),
            (col("name").is_in(["a", "b"]), col("name").is_in(["c", "d"])),
            (col("id").not_in([1, 2]), col("id").not_in([3, 4])),
            (
                col("id").is_in(Vec::<i64>::new()),
                col("id").is_in(Vec::<i64>::new()),
            ),
            (col("revoked_at").is_null(), col("revoked_at").is_null()),
            (
                col("revoked_at").is_not_null(),
                col("revoked_at").is_not_null(),
            ),
            (
                and([
                    col("id").eq(1),
                    col("score").eq(1.5),
                    col("revoked_at").is_null(),
                ]),
                and([
                    col("id").eq(2),
                    col("score").eq(2.5),
                    col("revoked_at").is_null(),
                ]),
            ),
            (
                and([
                    col("id").eq(1),
                    col("score").eq(1.5),
                    col("revoked_at").is_not_null(),
                ]),
                and([
                    col("id").eq(2),
                    col("score").eq(2.5),
                    col("revoked_at").is_not_null(),
                ]),
            ),
            (
                or([col("id").eq(1), col("score").eq(1.5)]),
                or([col("id").eq(2), col("score").eq(2.5)]),
            ),
            (not(col("id").eq(1)), not(col("id").eq(2))),
            (and([col("agents.id").eq(1)]), and([col("agents.id").eq(2)])),
        ];
        if dialect == SqlDialect::Postgres {
            pairs.extend([
                (
                    col("body").text_search("cat", TextSearchKind::Plain, None),
                    col("body").text_search("dog", TextSearchKind::Plain, None),
                ),
                (
                    col("body").text_search("cat", TextSearchKind::Plain, Some("english")),
                    col("body").text_search("dog", TextSearchKind::Plain, Some("english")),
                ),
                (
                    col("body").text_search("cat", TextSearchKind::Plain, Some("simple")),
                    col("body").text_search("dog", TextSearchKind::Plain, Some("simple")),
                ),
                (
                    col("body").text_search("cat", TextSearchKind::Phrase, None),
                    col("body").text_search("dog", TextSearchKind::Phrase, None),
                ),
            ]);
        }
        pairs
    }

    #[test]
    fn cached_filtered_updates_make_what_the_compiler_makes() {
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), texted())].into();
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            let cache = StatementCache::new(dialect);
            let pairs = shape_pairs(dialect);
            for (first, second) in &pairs {
                for (filter, patch) in [
                    (first, row(json!({"name": "x", "score": 1.0}))),
                    (second, row(json!({"name": "y", "score": 2.0}))),
                    (first, row(json!({"score": 3.0, "name": "z"}))),
                ] {
                    let expected = compile::update(dialect, &cat, "agents", &patch, filter)
                        .unwrap_or_else(|e| panic!("{filter:?}: {e}"));
                    let got = cache
                        .update_where(&Arc::new(texted()), patch, filter)
                        .unwrap();
                    assert_eq!(got, expected, "{dialect:?} {filter:?}");
                }
            }
            assert_eq!(
                cache.compiled() as usize,
                pairs.len() * 2,
                "{dialect:?}: one statement per filter shape and patch column order, \
                 reused for other values"
            );
        }
    }

    #[test]
    fn cached_filtered_selects_make_what_the_compiler_makes() {
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), texted())].into();
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            let cache = StatementCache::new(dialect);
            let pairs = shape_pairs(dialect);
            for (first, second) in &pairs {
                for filter in [first, second, first] {
                    let q = Query::new().filter(filter.clone());
                    let expected = compile::select(dialect, &cat, "agents", &q).unwrap();
                    let got = cache.select_where(&Arc::new(texted()), filter).unwrap();
                    assert_eq!(got, expected.statement, "{dialect:?} {filter:?}");
                }
            }
            assert_eq!(
                cache.compiled() as usize,
                pairs.len(),
                "{dialect:?}: one statement per filter shape"
            );
        }
    }

    #[test]
    fn cached_reads_make_what_the_compiler_makes() {
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), texted())].into();
        let schema = Arc::new(texted());
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            let cache = StatementCache::new(dialect);
            let pairs = shape_pairs(dialect);
            // Each filter shape under the same select, order and limit,
            // then the same filters under other select lists, orders,
            // limits and offsets: each a statement of its own.
            let dressings: Vec<fn(Query) -> Query> = vec![
                |q| q.select(["id", "name"]).order_by_desc("score").limit(50),
                |q| q,
                |q| q.select(["name"]).order_by_desc("score").limit(50),
                |q| q.select(["id", "name"]).order_by_asc("score").limit(50),
                |q| q.select(["id", "name"]).order_by_desc("score").limit(10),
                |q| {
                    q.select(["id", "name"])
                        .order_by_desc("score")
                        .limit(50)
                        .offset(5)
                },
            ];
            let mut expected_compiles = 0;
            for dress in &dressings {
                for (first, second) in &pairs {
                    for filter in [first, second, first] {
                        let q = dress(Query::new().filter(filter.clone()));
                        let expected = compile::select(dialect, &cat, "agents", &q).unwrap();
                        let got = cache.read(&schema, &q).unwrap();
                        assert_eq!(got.statement, expected.statement, "{dialect:?} {q:?}");
                        let types: Vec<_> = expected.columns.iter().map(|c| c.ty).collect();
                        assert_eq!(&got.column_types[..], &types[..], "{dialect:?} {q:?}");
                    }
                    expected_compiles += 1;
                }
                // No filter at all.
                let q = dress(Query::new());
                for _ in 0..2 {
                    let expected = compile::select(dialect, &cat, "agents", &q).unwrap();
                    assert_eq!(
                        cache.read(&schema, &q).unwrap().statement,
                        expected.statement
                    );
                }
                expected_compiles += 1;
            }
            assert_eq!(
                cache.compiled() as usize,
                expected_compiles,
                "{dialect:?}: one statement per query shape, reused for other values"
            );
        }
    }

    #[test]
    fn reads_with_joins_cursors_or_errors_are_not_kept() {
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), texted())].into();
        let schema = Arc::new(texted());
        let cache = StatementCache::new(SqlDialect::Postgres);
        // A cursor's filter is built from its values: compiled every time,
        // and right.
        for v in [1, 2] {
            let q = Query::new()
                .order_by_asc("id")
                .after(crate::Cursor(vec![json!(v)]));
            let expected = compile::select(SqlDialect::Postgres, &cat, "agents", &q).unwrap();
            assert_eq!(
                cache.read(&schema, &q).unwrap().statement,
                expected.statement
            );
        }
        assert_eq!(cache.compiled(), 2);
        // A cached shape does not hide the compiler's errors.
        let q = Query::new().filter(col("id").eq(1)).limit(5);
        cache.read(&schema, &q).unwrap();
        let bad = Query::new().filter(col("nope").eq(1)).limit(5);
        assert_eq!(
            cache.read(&schema, &bad).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        // A changed schema compiles again, and the old shape goes.
        let before = cache.compiled();
        let altered = Arc::new(texted().column(ColumnDef::text("status")));
        let q = Query::new().filter(col("status").eq("x")).limit(5);
        cache.read(&altered, &q).unwrap();
        cache
            .read(&altered, &Query::new().filter(col("id").eq(2)).limit(5))
            .unwrap();
        assert_eq!(cache.compiled(), before + 2);
        assert_eq!(
            lock(&cache.reads)
                .get("agents")
                .unwrap()
                .iter()
                .filter(|s| *s.schema == *schema)
                .count(),
            0,
            "shapes of the old schema are dropped"
        );
    }

    #[test]
    fn json_containment_and_odd_filters_go_through_the_compiler() {
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), texted())].into();
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            let cache = StatementCache::new(dialect);
            // The SQLite SQL of a containment test follows the value's
            // structure: never reused.
            for v in [json!(["a"]), json!(["a", "b"]), json!({"k": 1})] {
                let f = col("tags").contains(v);
                let q = Query::new().filter(f.clone());
                let expected = compile::select(dialect, &cat, "agents", &q).unwrap();
                assert_eq!(
                    cache.select_where(&Arc::new(texted()), &f).unwrap(),
                    expected.statement
                );
            }
            assert_eq!(cache.compiled(), 3, "{dialect:?}");
            assert!(lock(&cache.filtered_selects).is_empty(), "nothing kept");

            // Values the compiler refuses are refused after a cached shape
            // too, with the compiler's error kind.
            cache
                .update_where(
                    &Arc::new(texted()),
                    row(json!({"name": "a"})),
                    &col("id").eq(1),
                )
                .unwrap();
            cache
                .select_where(&Arc::new(texted()), &col("name").like("a%"))
                .unwrap();
            let null_cmp = Filter::Cmp {
                column: col("id"),
                op: CmpOp::Eq,
                value: Value::Null,
            };
            let e = cache
                .update_where(&Arc::new(texted()), row(json!({"name": "a"})), &null_cmp)
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            let bad_like = Filter::Cmp {
                column: col("name"),
                op: CmpOp::Like,
                value: json!(5),
            };
            let e = cache
                .select_where(&Arc::new(texted()), &bad_like)
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            cache
                .select_where(&Arc::new(texted()), &col("name").is_in(["a", "b"]))
                .unwrap();
            let null_in = col("name").is_in([json!("a"), Value::Null]);
            let e = cache
                .select_where(&Arc::new(texted()), &null_in)
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            // Unknown columns, in the filter or the patch.
            let e = cache
                .update_where(
                    &Arc::new(texted()),
                    row(json!({"nope": 1})),
                    &col("id").eq(1),
                )
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            let e = cache
                .select_where(&Arc::new(texted()), &col("nope").eq(1))
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn filtered_shapes_stay_bounded_and_follow_the_schema() {
        let cache = StatementCache::new(SqlDialect::Sqlite);
        for n in 1..=40 {
            let f = col("id").is_in(1..=n);
            cache.select_where(&Arc::new(texted()), &f).unwrap();
            cache
                .update_where(&Arc::new(texted()), row(json!({"name": "a"})), &f)
                .unwrap();
        }
        for shapes in [&cache.filtered_selects, &cache.filtered_updates] {
            let kept = lock(shapes).get("agents").map_or(0, Vec::len);
            assert_eq!(kept, SHAPES_PER_TABLE, "the oldest shapes are dropped");
        }
        assert_eq!(cache.compiled(), 80);
        // The newest shapes are still reused.
        cache
            .select_where(&Arc::new(texted()), &col("id").is_in(2..=41))
            .unwrap();
        assert_eq!(cache.compiled(), 80);
        // A changed schema compiles again and drops the old shapes.
        let altered = Arc::new(texted().column(ColumnDef::integer("extra")));
        let s = cache
            .select_where(&altered, &col("id").is_in(1..=40))
            .unwrap();
        assert_eq!(cache.compiled(), 81);
        assert!(s.sql.contains("\"extra\""), "{}", s.sql);
        assert_eq!(
            lock(&cache.filtered_selects)
                .get("agents")
                .map_or(0, Vec::len),
            1
        );
    }
}
