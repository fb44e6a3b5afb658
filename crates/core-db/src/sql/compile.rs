//! The query compiler shared by the SQL providers: [`Query`], row writes and
//! schema changes to SQL text plus bound values. Pure: no I/O, no driver.
//!
//! Every identifier is validated ([`ident::validate`]) and quoted
//! ([`ident::quote`]); every value is bound ([`Bind`]), never spliced into the
//! text. The only literals in generated SQL are numbers the compiler makes
//! itself (`LIMIT`, `OFFSET`) and constant column defaults in DDL, which
//! cannot be bound and are rendered as escaped literals.
//!
//! The compiler resolves every column against the tables' schemas (a
//! [`Catalog`]), so unknown or ambiguous columns are
//! [`crate::ErrorKind::InvalidInput`] before anything reaches the database,
//! with the same messages as the memory provider, and every bind and output
//! column carries the [`ColumnType`] the provider needs to encode and decode
//! it.
//!
//! Semantics match [`crate::Query`]'s documentation in both dialects:
//! - `ORDER BY` always says `NULLS FIRST` / `NULLS LAST` (nulls sort as the
//!   largest value unless the query says otherwise);
//! - an empty `and` is `(1=1)`, an empty `or` `(1=0)`; an empty `in` is
//!   `(col IS NULL AND NULL)` (false, unknown on a NULL column) and an empty
//!   `not in` `(col IS NOT NULL OR NULL)` (true, unknown on a NULL column), so
//!   `not(...)` of them keeps three-valued logic;
//! - `like` is `LIKE` (on SQLite the provider must enable
//!   `PRAGMA case_sensitive_like = ON` so it is case-sensitive), `ilike` is
//!   `lower(col) LIKE lower(?)` on SQLite and `ILIKE` on PostgreSQL; neither
//!   has an escape character; on a JSON column only JSON strings can match;
//! - result columns are named by the bare column name or the alias.
//!
//! ```
//! use std::collections::HashMap;
//! use truststream_core_db::sql::compile::{self, SqlDialect};
//! use truststream_core_db::{col, ColumnDef, Query, TableSchema};
//!
//! let mut tables = HashMap::new();
//! tables.insert(
//!     "agents".to_string(),
//!     TableSchema::new("agents")
//!         .column(ColumnDef::text("id").primary_key())
//!         .column(ColumnDef::text("status")),
//! );
//! let q = Query::new().filter(col("status").eq("active")).order_by_asc("id").limit(10);
//! let s = compile::select(SqlDialect::Sqlite, &tables, "agents", &q).unwrap();
//! assert_eq!(
//!     &*s.statement.sql,
//!     "SELECT \"agents\".\"id\" AS \"id\", \"agents\".\"status\" AS \"status\" FROM \"agents\" \
//!      WHERE \"agents\".\"status\" = ? ORDER BY \"agents\".\"id\" ASC NULLS LAST LIMIT 10"
//! );
//! assert_eq!(s.statement.binds[0].value, "active");
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;

use crate::ident::{self, quote};
use crate::{
    AggFunc, AlterTable, CmpOp, ColumnDef, ColumnDefault, ColumnRef, ColumnType, DbResult, Error,
    Filter, IndexSpec, JoinKind, Query, Row, SelectItem, SortDirection, TableSchema,
    TextSearchKind, Value,
};

/// The SQL dialect to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlDialect {
    /// PostgreSQL: `$n` placeholders.
    Postgres,
    /// SQLite (3.35 or later): `?` placeholders, bound in order.
    Sqlite,
}

impl SqlDialect {
    /// The dialect's name as reported in capabilities (`"postgres"`, `"sqlite"`).
    pub fn name(self) -> &'static str {
        match self {
            SqlDialect::Postgres => "postgres",
            SqlDialect::Sqlite => "sqlite",
        }
    }

    /// Most bind parameters one statement may have (PostgreSQL 65535, SQLite
    /// 32766).
    pub fn max_binds(self) -> usize {
        match self {
            SqlDialect::Postgres => 65_535,
            SqlDialect::Sqlite => 32_766,
        }
    }

    /// The column type name used in `CREATE TABLE`.
    pub fn column_type(self, ty: ColumnType) -> &'static str {
        match (self, ty) {
            (_, ColumnType::Text) => "TEXT",
            (SqlDialect::Sqlite, ColumnType::Integer) => "INTEGER",
            (SqlDialect::Postgres, ColumnType::Integer) => "BIGINT",
            (SqlDialect::Sqlite, ColumnType::Float) => "REAL",
            (SqlDialect::Postgres, ColumnType::Float) => "DOUBLE PRECISION",
            (SqlDialect::Sqlite, ColumnType::Boolean) => "INTEGER",
            (SqlDialect::Postgres, ColumnType::Boolean) => "BOOLEAN",
            (SqlDialect::Sqlite, ColumnType::Timestamp) => "TEXT",
            (SqlDialect::Postgres, ColumnType::Timestamp) => "TIMESTAMPTZ",
            (SqlDialect::Sqlite, ColumnType::Uuid) => "TEXT",
            (SqlDialect::Postgres, ColumnType::Uuid) => "UUID",
            (SqlDialect::Sqlite, ColumnType::Json) => "TEXT",
            (SqlDialect::Postgres, ColumnType::Json) => "JSONB",
            (SqlDialect::Sqlite, ColumnType::Bytes) => "BLOB",
            (SqlDialect::Postgres, ColumnType::Bytes) => "BYTEA",
            (_, ColumnType::Numeric) => "NUMERIC",
        }
    }
}

/// One bound value, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    /// The value as the caller gave it (not yet normalized to the column type).
    pub value: Value,
    /// The type of the column it is compared with or written to; `None` when
    /// there is none. `like` / `ilike` patterns are [`ColumnType::Text`].
    pub ty: Option<ColumnType>,
    /// The column name, for error messages (shared between the binds of
    /// one column: a 10,000-row insert does not copy it 10,000 times).
    pub column: std::sync::Arc<str>,
}

/// SQL text and its binds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Statement {
    /// The SQL text with placeholders (shared: a cached statement hands
    /// out its text without copying it).
    pub sql: std::sync::Arc<str>,
    /// The values to bind, in placeholder order.
    pub binds: Vec<Bind>,
}

impl Statement {
    /// The bound values alone.
    pub fn values(&self) -> Vec<Value> {
        self.binds.iter().map(|b| b.value.clone()).collect()
    }
}

/// One column of a query's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    /// Its name in result rows.
    pub name: String,
    /// The type to decode it as (aggregates: `count` is `Integer`, `avg`
    /// `Float`, `sum` `Integer` over integers else `Float`, `min`/`max` the
    /// column's type).
    pub ty: ColumnType,
}

/// A compiled `SELECT`.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectStatement {
    /// The statement.
    pub statement: Statement,
    /// The result columns, in order.
    pub columns: Vec<OutputColumn>,
}

/// The table schemas the compiler resolves columns against.
pub trait Catalog {
    /// The schema of `table`; a missing table is
    /// [`crate::ErrorKind::NotFound`].
    fn schema(&self, table: &str) -> DbResult<&TableSchema>;
}

impl Catalog for HashMap<String, TableSchema> {
    fn schema(&self, table: &str) -> DbResult<&TableSchema> {
        self.get(table).ok_or_else(|| missing_table(table))
    }
}

/// The `NotFound` error for a table that does not exist.
pub fn missing_table(table: &str) -> Error {
    Error::not_found(format!("table {table} does not exist")).with_context("table", table)
}

/// Builds SQL text and binds together, so placeholders are numbered in text
/// order.
struct Writer {
    dialect: SqlDialect,
    sql: String,
    binds: Vec<Bind>,
}

impl Writer {
    fn new(dialect: SqlDialect) -> Self {
        Writer {
            dialect,
            sql: String::with_capacity(128),
            binds: Vec::new(),
        }
    }

    fn push(&mut self, s: &str) {
        self.sql.push_str(s);
    }

    fn bind(&mut self, value: Value, ty: Option<ColumnType>, column: &str) {
        self.bind_shared(value, ty, std::sync::Arc::from(column));
    }

    fn bind_shared(&mut self, value: Value, ty: Option<ColumnType>, column: std::sync::Arc<str>) {
        self.binds.push(Bind { value, ty, column });
        match self.dialect {
            SqlDialect::Sqlite => self.sql.push('?'),
            SqlDialect::Postgres => {
                let _ = write!(self.sql, "${}", self.binds.len());
            }
        }
    }

    fn finish(self) -> Statement {
        Statement {
            sql: self.sql.into(),
            binds: self.binds,
        }
    }
}

/// A table taking part in a query, under the name that qualifies its columns.
struct Source<'a> {
    qualifier: String,
    schema: &'a TableSchema,
}

struct Resolved<'a> {
    src: usize,
    def: &'a ColumnDef,
}

fn resolve<'a>(sources: &[Source<'a>], upto: usize, c: &ColumnRef) -> DbResult<Resolved<'a>> {
    let scope = &sources[..upto.min(sources.len())];
    if let Some(t) = &c.table {
        let Some((src, s)) = scope.iter().enumerate().find(|(_, s)| &s.qualifier == t) else {
            let known: Vec<&str> = scope.iter().map(|s| s.qualifier.as_str()).collect();
            return Err(Error::invalid_input(format!(
                "column {c} names table {t}, which is not part of the query (tables: {})",
                known.join(", ")
            )));
        };
        let def = s.schema.find(&c.column).ok_or_else(|| {
            Error::invalid_input(format!("table {} has no column {}", s.qualifier, c.column))
        })?;
        return Ok(Resolved { src, def });
    }
    let found: Vec<Resolved<'a>> = scope
        .iter()
        .enumerate()
        .filter_map(|(src, s)| s.schema.find(&c.column).map(|def| Resolved { src, def }))
        .collect();
    match found.len() {
        1 => Ok(found
            .into_iter()
            .next()
            .ok_or_else(|| Error::internal("lost column"))?),
        0 if scope.len() == 1 => Err(Error::invalid_input(format!(
            "table {} has no column {}",
            scope[0].qualifier, c.column
        ))),
        0 => Err(Error::invalid_input(format!(
            "no table of the query has a column {}",
            c.column
        ))),
        _ => Err(Error::invalid_input(format!(
            "column {} is ambiguous: qualify it as {}",
            c.column,
            found
                .iter()
                .map(|r| format!("{}.{}", scope[r.src].qualifier, c.column))
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

fn column_expr(sources: &[Source<'_>], r: &Resolved<'_>) -> String {
    format!(
        "{}.{}",
        quote(&sources[r.src].qualifier),
        quote(&r.def.name)
    )
}

/// Filters joined by `op`: a flat chain up to [`FLAT_LIST`] terms (the
/// SQL of ordinary queries), beyond that halves in parentheses. SQLite
/// limits an expression tree's depth (1,000 by default), and a flat chain
/// of 1,000 `OR` terms (a long `or` from a client, an `ov` that a REST
/// client sends as "contains one of") would exceed it; halving keeps the
/// depth near `log2(n)`.
fn filter_list(w: &mut Writer, sources: &[Source<'_>], parts: &[Filter], op: &str) -> DbResult<()> {
    if parts.len() <= FLAT_LIST {
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                w.push(op);
            }
            filter(w, sources, p)?;
        }
        return Ok(());
    }
    let (left, right) = parts.split_at(parts.len() / 2);
    for (i, half) in [left, right].into_iter().enumerate() {
        if i > 0 {
            w.push(op);
        }
        w.push("(");
        filter_list(w, sources, half, op)?;
        w.push(")");
    }
    Ok(())
}

/// The longest `AND`/`OR` chain [`filter_list`] writes flat.
const FLAT_LIST: usize = 16;

/// Compiles a filter (validated already) into `w`.
fn filter(w: &mut Writer, sources: &[Source<'_>], f: &Filter) -> DbResult<()> {
    match f {
        Filter::Cmp { column, op, value } => {
            let r = resolve(sources, sources.len(), column)?;
            let mut expr = column_expr(sources, &r);
            match op {
                CmpOp::Like | CmpOp::ILike => {
                    if !matches!(r.def.ty, ColumnType::Text | ColumnType::Json) {
                        return Err(Error::invalid_input(format!(
                            "like/ilike needs a text column; {column} has type {}",
                            type_name(r.def.ty)
                        )));
                    }
                    if r.def.ty == ColumnType::Json {
                        // Only JSON strings match a pattern (as in memory);
                        // other JSON values are unknown.
                        expr = match w.dialect {
                            SqlDialect::Sqlite => format!(
                                "(CASE WHEN json_type({expr}) = 'text' THEN json_extract({expr}, '$') END)"
                            ),
                            SqlDialect::Postgres => format!(
                                "(CASE WHEN jsonb_typeof({expr}) = 'string' THEN {expr} #>> '{{}}' END)"
                            ),
                        };
                    }
                    match (op, w.dialect) {
                        (CmpOp::ILike, SqlDialect::Sqlite) => {
                            w.push(&format!("lower({expr}) LIKE lower("));
                            w.bind(value.clone(), Some(ColumnType::Text), &r.def.name);
                            w.push(")");
                        }
                        (CmpOp::ILike, SqlDialect::Postgres) => {
                            w.push(&format!("{expr} ILIKE "));
                            w.bind(value.clone(), Some(ColumnType::Text), &r.def.name);
                            w.push(" ESCAPE ''");
                        }
                        (_, SqlDialect::Sqlite) => {
                            w.push(&format!("{expr} LIKE "));
                            w.bind(value.clone(), Some(ColumnType::Text), &r.def.name);
                        }
                        (_, SqlDialect::Postgres) => {
                            w.push(&format!("{expr} LIKE "));
                            w.bind(value.clone(), Some(ColumnType::Text), &r.def.name);
                            w.push(" ESCAPE ''");
                        }
                    }
                }
                CmpOp::Contains | CmpOp::ContainedBy | CmpOp::Overlaps => {
                    if r.def.ty != ColumnType::Json {
                        return Err(Error::invalid_input(format!(
                            "{} needs a json or array column; {column} has type {}",
                            op.name(),
                            type_name(r.def.ty)
                        )));
                    }
                    json_op(w, &expr, *op, value, &r.def.name);
                }
                CmpOp::Eq | CmpOp::Ne | CmpOp::Gt | CmpOp::Gte | CmpOp::Lt | CmpOp::Lte => {
                    let sym = match op {
                        CmpOp::Eq => "=",
                        CmpOp::Ne => "<>",
                        CmpOp::Gt => ">",
                        CmpOp::Gte => ">=",
                        CmpOp::Lt => "<",
                        _ => "<=",
                    };
                    w.push(&format!("{expr} {sym} "));
                    w.bind(value.clone(), Some(r.def.ty), &r.def.name);
                }
            }
        }
        Filter::TextSearch {
            column,
            query,
            kind,
            config,
        } => {
            let r = resolve(sources, sources.len(), column)?;
            let expr = column_expr(sources, &r);
            if w.dialect != SqlDialect::Postgres {
                return Err(Error::unsupported(format!(
                    "full-text search ({} on {column}) needs PostgreSQL; the {} provider has none",
                    kind.name(),
                    w.dialect.name()
                )));
            }
            if r.def.ty != ColumnType::Text {
                return Err(Error::invalid_input(format!(
                    "{} needs a text column; {column} has type {}",
                    kind.name(),
                    type_name(r.def.ty)
                )));
            }
            let func = match kind {
                TextSearchKind::Plain => "plainto_tsquery",
                TextSearchKind::Phrase => "phraseto_tsquery",
                TextSearchKind::Websearch => "websearch_to_tsquery",
                _ => "to_tsquery",
            };
            match config {
                Some(c) => {
                    crate::validate_text_search_config(c)?;
                    w.push("to_tsvector(");
                    w.bind(
                        Value::String(c.clone()),
                        Some(ColumnType::Text),
                        &r.def.name,
                    );
                    w.push(&format!("::regconfig, {expr}) @@ {func}("));
                    w.bind(
                        Value::String(c.clone()),
                        Some(ColumnType::Text),
                        &r.def.name,
                    );
                    w.push("::regconfig, ");
                }
                None => w.push(&format!("to_tsvector({expr}) @@ {func}(")),
            }
            w.bind(
                Value::String(query.clone()),
                Some(ColumnType::Text),
                &r.def.name,
            );
            w.push(")");
        }
        Filter::In { column, values } | Filter::NotIn { column, values } => {
            let negated = matches!(f, Filter::NotIn { .. });
            let r = resolve(sources, sources.len(), column)?;
            let expr = column_expr(sources, &r);
            if values.is_empty() {
                // Keep three-valued logic: unknown on NULL, else false / true.
                w.push(&if negated {
                    format!("({expr} IS NOT NULL OR NULL)")
                } else {
                    format!("({expr} IS NULL AND NULL)")
                });
                return Ok(());
            }
            w.push(&format!("{expr} {}IN (", if negated { "NOT " } else { "" }));
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    w.push(", ");
                }
                w.bind(v.clone(), Some(r.def.ty), &r.def.name);
            }
            w.push(")");
        }
        Filter::IsNull { column } | Filter::IsNotNull { column } => {
            let r = resolve(sources, sources.len(), column)?;
            let expr = column_expr(sources, &r);
            let not = if matches!(f, Filter::IsNotNull { .. }) {
                "NOT "
            } else {
                ""
            };
            w.push(&format!("{expr} IS {not}NULL"));
        }
        Filter::And(parts) | Filter::Or(parts) => {
            let is_and = matches!(f, Filter::And(_));
            if parts.is_empty() {
                w.push(if is_and { "(1=1)" } else { "(1=0)" });
                return Ok(());
            }
            let op = if is_and { " AND " } else { " OR " };
            w.push("(");
            filter_list(w, sources, parts, op)?;
            w.push(")");
        }
        Filter::Not(inner) => {
            w.push("(NOT ");
            filter(w, sources, inner)?;
            w.push(")");
        }
    }
    Ok(())
}

/// Compiles `expr cs|cd|ov value` on a JSON column (`value` validated: not
/// null, for `ov` an array of scalars). A NULL column is unknown in both
/// dialects.
///
/// PostgreSQL: the column is read through `to_jsonb` (so `json`, `jsonb`
/// and array columns all work) and compared with the value bound as
/// `jsonb`. SQLite (JSON kept as text): the value's structure is known at
/// compile time, so the containment test is unrolled over it into
/// `json_each` subqueries; only the value's scalars and object keys are
/// bound.
fn json_op(w: &mut Writer, expr: &str, op: CmpOp, value: &Value, column: &str) {
    match w.dialect {
        SqlDialect::Postgres => {
            let doc = format!("to_jsonb({expr})");
            match op {
                CmpOp::Overlaps => {
                    w.push(&format!(
                        "(CASE WHEN jsonb_typeof({doc}) = 'array' THEN EXISTS (SELECT 1 FROM \
                         jsonb_array_elements({doc}) AS \"_ts_l\"(v) JOIN jsonb_array_elements("
                    ));
                    w.bind(value.clone(), Some(ColumnType::Json), column);
                    w.push(&format!(
                        ") AS \"_ts_r\"(v) ON \"_ts_l\".v = \"_ts_r\".v) \
                         WHEN {expr} IS NOT NULL THEN false END)"
                    ));
                }
                _ => {
                    let sym = if op == CmpOp::ContainedBy { "<@" } else { "@>" };
                    w.push(&format!("{doc} {sym} "));
                    w.bind(value.clone(), Some(ColumnType::Json), column);
                }
            }
        }
        SqlDialect::Sqlite => {
            let mut j = SqliteJson {
                column: std::sync::Arc::from(column),
                next_alias: 0,
            };
            let root = JsonNode::Root(expr.to_string());
            w.push(&format!(
                "(CASE WHEN {expr} IS NULL THEN NULL WHEN NOT json_valid({expr}) THEN 0 ELSE "
            ));
            match op {
                CmpOp::Contains => j.contains(w, &root, value, true),
                CmpOp::ContainedBy => j.contained(w, &root, value, true),
                _ => j.overlaps(w, &root, value),
            }
            w.push(" END)");
        }
    }
}

/// A JSON value inside a SQLite expression: the column itself, or a row of a
/// `json_each` subquery (by its alias).
enum JsonNode {
    Root(String),
    Each(String),
}

impl JsonNode {
    /// Its `json_type` (`null`, `true`, `false`, `integer`, `real`, `text`,
    /// `array`, `object`).
    fn ty(&self) -> String {
        match self {
            JsonNode::Root(e) => format!("json_type({e})"),
            JsonNode::Each(a) => format!("{a}.type"),
        }
    }
    /// Its SQL value when a scalar.
    fn atom(&self) -> String {
        match self {
            JsonNode::Root(e) => format!("json_extract({e}, '$')"),
            JsonNode::Each(a) => format!("{a}.value"),
        }
    }
    /// Its JSON text when an array or object.
    fn doc(&self) -> String {
        match self {
            JsonNode::Root(e) => e.clone(),
            JsonNode::Each(a) => format!("{a}.value"),
        }
    }
}

/// Unrolls JSON containment over a known value into SQLite SQL.
struct SqliteJson {
    column: std::sync::Arc<str>,
    next_alias: usize,
}

impl SqliteJson {
    fn alias(&mut self) -> String {
        self.next_alias += 1;
        format!("\"_ts_j{}\"", self.next_alias)
    }

    /// `node` is the scalar `v` (numbers numerically).
    fn scalar_eq(&self, w: &mut Writer, node: &JsonNode, v: &Value) {
        let t = node.ty();
        match v {
            Value::Null => w.push(&format!("({t} = 'null')")),
            Value::Bool(true) => w.push(&format!("({t} = 'true')")),
            Value::Bool(false) => w.push(&format!("({t} = 'false')")),
            Value::String(_) => {
                w.push(&format!("({t} = 'text' AND {} = ", node.atom()));
                w.bind_shared(v.clone(), None, self.column.clone());
                w.push(")");
            }
            _ => {
                w.push(&format!(
                    "({t} IN ('integer', 'real') AND {} = ",
                    node.atom()
                ));
                w.bind_shared(v.clone(), None, self.column.clone());
                w.push(")");
            }
        }
    }

    /// Writes the terms `0..n` (written by `term`) joined by `op` (`AND`,
    /// `OR`) as a balanced tree, or `empty` when there are none. SQLite
    /// limits an expression tree's depth (1,000 by default); a flat chain
    /// over a 500-element value would exceed it, a balanced one has depth
    /// `log2(n)`.
    fn join(
        &mut self,
        w: &mut Writer,
        range: std::ops::Range<usize>,
        op: &str,
        empty: &str,
        term: &mut dyn FnMut(&mut Self, &mut Writer, usize),
    ) {
        match range.len() {
            0 => w.push(empty),
            1 => term(self, w, range.start),
            n => {
                let mid = range.start + n / 2;
                w.push("(");
                self.join(w, range.start..mid, op, empty, term);
                w.push(&format!(" {op} "));
                self.join(w, mid..range.end, op, empty, term);
                w.push(")");
            }
        }
    }

    /// `node @> v`. Every `json_each` over a node is behind a `CASE` on the
    /// node's type, so a string is never parsed as JSON (SQLite may
    /// reorder `AND` terms, `CASE` is evaluated in order).
    fn contains(&mut self, w: &mut Writer, node: &JsonNode, v: &Value, top: bool) {
        match v {
            Value::Object(map) => {
                let entries: Vec<(&String, &Value)> = map.iter().collect();
                w.push(&format!("(CASE WHEN {} = 'object' THEN ", node.ty()));
                self.join(w, 0..entries.len(), "AND", "1", &mut |j, w, i| {
                    let (k, item) = entries[i];
                    let a = j.alias();
                    w.push(&format!(
                        "EXISTS (SELECT 1 FROM json_each({}) AS {a} WHERE {a}.key = ",
                        node.doc()
                    ));
                    w.bind_shared(Value::String(k.clone()), None, j.column.clone());
                    w.push(" AND ");
                    j.contains(w, &JsonNode::Each(a), item, false);
                    w.push(")");
                });
                w.push(" ELSE 0 END)");
            }
            Value::Array(items) => {
                w.push(&format!("(CASE WHEN {} = 'array' THEN ", node.ty()));
                self.join(w, 0..items.len(), "AND", "1", &mut |j, w, i| {
                    let a = j.alias();
                    w.push(&format!(
                        "EXISTS (SELECT 1 FROM json_each({}) AS {a} WHERE ",
                        node.doc()
                    ));
                    j.contains(w, &JsonNode::Each(a), &items[i], false);
                    w.push(")");
                });
                w.push(" ELSE 0 END)");
            }
            scalar => {
                if top {
                    // At the top level an array contains a scalar element.
                    let a = self.alias();
                    w.push(&format!(
                        "(CASE WHEN {} = 'array' THEN EXISTS (SELECT 1 FROM json_each({}) AS {a} WHERE ",
                        node.ty(),
                        node.doc()
                    ));
                    self.scalar_eq(w, &JsonNode::Each(a), scalar);
                    w.push(") ELSE ");
                    self.scalar_eq(w, node, scalar);
                    w.push(" END)");
                } else {
                    self.scalar_eq(w, node, scalar);
                }
            }
        }
    }

    /// `node <@ v`.
    fn contained(&mut self, w: &mut Writer, node: &JsonNode, v: &Value, top: bool) {
        match v {
            Value::Object(map) => {
                let entries: Vec<(&String, &Value)> = map.iter().collect();
                let a = self.alias();
                w.push(&format!(
                    "(CASE WHEN {} = 'object' THEN NOT EXISTS (SELECT 1 FROM json_each({}) AS {a} WHERE NOT ",
                    node.ty(),
                    node.doc()
                ));
                self.join(w, 0..entries.len(), "OR", "0", &mut |j, w, i| {
                    let (k, item) = entries[i];
                    w.push(&format!("({a}.key = "));
                    w.bind_shared(Value::String(k.clone()), None, j.column.clone());
                    w.push(" AND ");
                    j.contained(w, &JsonNode::Each(a.clone()), item, false);
                    w.push(")");
                });
                w.push(") ELSE 0 END)");
            }
            Value::Array(items) => {
                let a = self.alias();
                w.push(&format!(
                    "(CASE WHEN {} = 'array' THEN NOT EXISTS (SELECT 1 FROM json_each({}) AS {a} WHERE NOT ",
                    node.ty(),
                    node.doc()
                ));
                self.join(w, 0..items.len(), "OR", "0", &mut |j, w, i| {
                    j.contained(w, &JsonNode::Each(a.clone()), &items[i], false);
                });
                w.push(") ELSE ");
                // At the top level a scalar is contained by an array having it.
                let scalars: Vec<&Value> = if top {
                    items
                        .iter()
                        .filter(|i| !i.is_array() && !i.is_object())
                        .collect()
                } else {
                    Vec::new()
                };
                self.join(w, 0..scalars.len(), "OR", "0", &mut |j, w, i| {
                    j.scalar_eq(w, node, scalars[i]);
                });
                w.push(" END)");
            }
            scalar => self.scalar_eq(w, node, scalar),
        }
    }

    /// `node` is an array sharing a scalar with `v` (an array of scalars).
    fn overlaps(&mut self, w: &mut Writer, node: &JsonNode, v: &Value) {
        let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
        let a = self.alias();
        w.push(&format!(
            "(CASE WHEN {} = 'array' THEN EXISTS (SELECT 1 FROM json_each({}) AS {a} WHERE ",
            node.ty(),
            node.doc()
        ));
        self.join(w, 0..items.len(), "OR", "0", &mut |j, w, i| {
            j.scalar_eq(w, &JsonNode::Each(a.clone()), &items[i]);
        });
        w.push(") ELSE 0 END)");
    }
}

fn check_unique_outputs<'s>(names: impl IntoIterator<Item = &'s str>) -> DbResult<()> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(Error::invalid_input(format!(
                "the result would have two columns named {n}; give one an alias (\"t.col as other_name\")"
            )));
        }
    }
    Ok(())
}

fn order_suffix(direction: SortDirection, nulls_first: bool) -> &'static str {
    match (direction, nulls_first) {
        (SortDirection::Asc, true) => "ASC NULLS FIRST",
        (SortDirection::Asc, false) => "ASC NULLS LAST",
        (SortDirection::Desc, true) => "DESC NULLS FIRST",
        (SortDirection::Desc, false) => "DESC NULLS LAST",
    }
}

/// Compiles a [`Query`] against `table`: select list (`*`, `t.*`, columns,
/// aliases, aggregates with `FILTER (WHERE ...)`), joins, the
/// [`Query::effective_filter`] (keyset cursor folded in), `GROUP BY`,
/// `ORDER BY ... NULLS FIRST|LAST`, `LIMIT` / `OFFSET`.
pub fn select(
    dialect: SqlDialect,
    catalog: &dyn Catalog,
    table: &str,
    q: &Query,
) -> DbResult<SelectStatement> {
    ident::table(table)?;
    let where_filter = q.effective_filter()?;
    let base = catalog.schema(table)?;
    let mut sources = vec![Source {
        qualifier: table.to_string(),
        schema: base,
    }];
    let mut from = quote(table);
    for j in &q.joins {
        let t = catalog.schema(&j.table)?;
        let qualifier = j.alias.clone().unwrap_or_else(|| j.table.clone());
        if sources.iter().any(|s| s.qualifier == qualifier) {
            return Err(Error::invalid_input(format!(
                "table or alias {qualifier} appears twice in the query; give the join an alias"
            )));
        }
        sources.push(Source {
            qualifier,
            schema: t,
        });
        let n = sources.len();
        let l = resolve(&sources, n, &j.left)?;
        let r = resolve(&sources, n, &j.right)?;
        let ok = (r.src == n - 1 && l.src < n - 1) || (l.src == n - 1 && r.src < n - 1);
        if !ok {
            return Err(Error::invalid_input(format!(
                "join condition {} = {} must compare a column of {} with a column of an earlier table",
                j.left, j.right, j.table
            )));
        }
        let kind = match j.kind {
            JoinKind::Left => "LEFT JOIN",
            JoinKind::Inner => "INNER JOIN",
        };
        let _ = write!(from, " {kind} {}", quote(&j.table));
        if let Some(a) = &j.alias {
            let _ = write!(from, " AS {}", quote(a));
        }
        let _ = write!(
            from,
            " ON {} = {}",
            column_expr(&sources, &l),
            column_expr(&sources, &r)
        );
    }

    let is_aggregate = !q.group_by.is_empty()
        || q.select
            .iter()
            .any(|s| matches!(s, SelectItem::Aggregate { .. }));

    let mut w = Writer::new(dialect);
    w.push("SELECT ");
    let mut columns: Vec<OutputColumn> = Vec::new();
    // Plain queries: output name -> column expression (order-by fallback).
    let mut plan: Vec<(String, String)> = Vec::new();
    let mut group_exprs: Vec<String> = Vec::new();

    if is_aggregate {
        for c in &q.group_by {
            let r = resolve(&sources, sources.len(), c)?;
            group_exprs.push(column_expr(&sources, &r));
        }
        if q.select.is_empty() {
            return Err(Error::invalid_input(
                "an aggregate query needs a select list",
            ));
        }
        let mut names = Vec::new();
        for item in &q.select {
            if let SelectItem::Column { alias, column } = item {
                names.push(alias.clone().unwrap_or_else(|| column.column.clone()));
            } else if let SelectItem::Aggregate { alias, .. } = item {
                names.push(alias.clone());
            }
        }
        check_unique_outputs(names.iter().map(String::as_str))?;
        for (i, item) in q.select.iter().enumerate() {
            if i > 0 {
                w.push(", ");
            }
            match item {
                SelectItem::All { .. } => {
                    return Err(Error::invalid_input(
                        "`*` cannot be selected together with aggregates or group_by",
                    ))
                }
                SelectItem::Column { column, alias } => {
                    let r = resolve(&sources, sources.len(), column)?;
                    let expr = column_expr(&sources, &r);
                    if !group_exprs.contains(&expr) {
                        return Err(Error::invalid_input(format!(
                            "column {column} must appear in group_by or be used in an aggregate"
                        )));
                    }
                    let name = alias.clone().unwrap_or_else(|| column.column.clone());
                    w.push(&format!("{expr} AS {}", quote(&name)));
                    columns.push(OutputColumn { name, ty: r.def.ty });
                }
                SelectItem::Aggregate {
                    func,
                    column,
                    filter: agg_filter,
                    alias,
                } => {
                    let (arg, ty) = match column {
                        None => ("*".to_string(), ColumnType::Integer),
                        Some(c) => {
                            let r = resolve(&sources, sources.len(), c)?;
                            if matches!(func, AggFunc::Sum | AggFunc::Avg)
                                && !matches!(
                                    r.def.ty,
                                    ColumnType::Integer | ColumnType::Float | ColumnType::Numeric
                                )
                            {
                                return Err(Error::invalid_input(format!(
                                    "{func:?} needs a numeric column; {c} has type {}",
                                    type_name(r.def.ty)
                                )));
                            }
                            (column_expr(&sources, &r), r.def.ty)
                        }
                    };
                    let (call, out_ty) = match func {
                        AggFunc::Count => (format!("COUNT({arg})"), ColumnType::Integer),
                        AggFunc::Sum => (
                            format!("SUM({arg})"),
                            if ty == ColumnType::Integer {
                                ColumnType::Integer
                            } else {
                                ColumnType::Float
                            },
                        ),
                        AggFunc::Avg => (
                            match dialect {
                                SqlDialect::Sqlite => format!("AVG({arg})"),
                                SqlDialect::Postgres => {
                                    format!("AVG(CAST({arg} AS DOUBLE PRECISION))")
                                }
                            },
                            ColumnType::Float,
                        ),
                        AggFunc::Min => (format!("MIN({arg})"), ty),
                        AggFunc::Max => (format!("MAX({arg})"), ty),
                    };
                    w.push(&call);
                    if let Some(f) = agg_filter {
                        w.push(" FILTER (WHERE ");
                        filter(&mut w, &sources, f)?;
                        w.push(")");
                    }
                    w.push(&format!(" AS {}", quote(alias)));
                    columns.push(OutputColumn {
                        name: alias.clone(),
                        ty: out_ty,
                    });
                }
            }
        }
    } else {
        let mut items: Vec<(String, String, ColumnType)> = Vec::new();
        let all_of = |src: usize, items: &mut Vec<(String, String, ColumnType)>| {
            for c in &sources[src].schema.columns {
                items.push((
                    c.name.clone(),
                    format!("{}.{}", quote(&sources[src].qualifier), quote(&c.name)),
                    c.ty,
                ));
            }
        };
        if q.select.is_empty() {
            all_of(0, &mut items);
        }
        for item in &q.select {
            match item {
                SelectItem::All { table: None } => {
                    (0..sources.len()).for_each(|s| all_of(s, &mut items))
                }
                SelectItem::All { table: Some(t) } => {
                    let src = sources
                        .iter()
                        .position(|s| &s.qualifier == t)
                        .ok_or_else(|| {
                            Error::invalid_input(format!(
                                "select {t}.* names table {t}, which is not part of the query"
                            ))
                        })?;
                    all_of(src, &mut items);
                }
                SelectItem::Column { column, alias } => {
                    let r = resolve(&sources, sources.len(), column)?;
                    let name = alias.clone().unwrap_or_else(|| column.column.clone());
                    items.push((name, column_expr(&sources, &r), r.def.ty));
                }
                SelectItem::Aggregate { .. } => {
                    return Err(Error::internal("aggregate in a plain query"))
                }
            }
        }
        check_unique_outputs(items.iter().map(|i| i.0.as_str()))?;
        for (i, (name, expr, ty)) in items.into_iter().enumerate() {
            if i > 0 {
                w.push(", ");
            }
            w.push(&format!("{expr} AS {}", quote(&name)));
            columns.push(OutputColumn {
                name: name.clone(),
                ty,
            });
            plan.push((name, expr));
        }
    }

    w.push(" FROM ");
    w.push(&from);
    if let Some(f) = &where_filter {
        w.push(" WHERE ");
        filter(&mut w, &sources, f)?;
    }
    if !group_exprs.is_empty() {
        w.push(" GROUP BY ");
        w.push(&group_exprs.join(", "));
    }
    if !q.order_by.is_empty() {
        w.push(" ORDER BY ");
        for (i, o) in q.order_by.iter().enumerate() {
            if i > 0 {
                w.push(", ");
            }
            let key = if is_aggregate {
                if o.column.table.is_none() && columns.iter().any(|c| c.name == o.column.column) {
                    quote(&o.column.column)
                } else {
                    let r = resolve(&sources, sources.len(), &o.column)?;
                    let expr = column_expr(&sources, &r);
                    if !group_exprs.contains(&expr) {
                        return Err(Error::invalid_input(format!(
                            "in an aggregate query, order by an output column or a group_by column, not {}",
                            o.column
                        )));
                    }
                    expr
                }
            } else {
                match resolve(&sources, sources.len(), &o.column) {
                    Ok(r) => column_expr(&sources, &r),
                    Err(e) => match (
                        &o.column.table,
                        plan.iter().find(|p| p.0 == o.column.column),
                    ) {
                        (None, Some((_, expr))) => expr.clone(),
                        _ => return Err(e),
                    },
                }
            };
            w.push(&format!(
                "{key} {}",
                order_suffix(o.direction, o.nulls_first())
            ));
        }
    }
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    match (dialect, q.limit, q.offset) {
        (_, None, None) => {}
        (SqlDialect::Sqlite, limit, offset) => {
            let _ = write!(w.sql, " LIMIT {}", limit.map_or(-1, clamp));
            if let Some(o) = offset {
                let _ = write!(w.sql, " OFFSET {}", clamp(o));
            }
        }
        (SqlDialect::Postgres, limit, offset) => {
            if let Some(l) = limit {
                let _ = write!(w.sql, " LIMIT {}", clamp(l));
            }
            if let Some(o) = offset {
                let _ = write!(w.sql, " OFFSET {}", clamp(o));
            }
        }
    }
    Ok(SelectStatement {
        statement: w.finish(),
        columns,
    })
}

fn single_source<'a>(catalog: &'a dyn Catalog, table: &str) -> DbResult<Vec<Source<'a>>> {
    ident::table(table)?;
    Ok(vec![Source {
        qualifier: table.to_string(),
        schema: catalog.schema(table)?,
    }])
}

fn check_columns(schema: &TableSchema, row: &Row) -> DbResult<()> {
    for key in row.keys() {
        ident::validate(key).map_err(|e| e.with_context("table", schema.name.clone()))?;
        if schema.find(key).is_none() {
            return Err(Error::invalid_input(format!(
                "table {} has no column {key}",
                schema.name
            )));
        }
    }
    Ok(())
}

/// `INSERT INTO table (columns) VALUES (...), (...) RETURNING *`.
///
/// Every row must give the same columns (providers fill in defaults first);
/// the column list is the first row's, in schema order. At least one row and
/// one column are needed.
pub fn insert(
    dialect: SqlDialect,
    catalog: &dyn Catalog,
    table: &str,
    rows: &[Row],
) -> DbResult<Statement> {
    insert_rows(dialect, catalog, table, rows.to_vec())
}

/// [`insert`] taking the rows by value: their values move into the binds
/// instead of being copied (the batch path of `create_many`).
pub fn insert_rows(
    dialect: SqlDialect,
    catalog: &dyn Catalog,
    table: &str,
    rows: Vec<Row>,
) -> DbResult<Statement> {
    let sources = single_source(catalog, table)?;
    let schema = sources[0].schema;
    let first = rows
        .first()
        .ok_or_else(|| Error::invalid_input("an insert needs at least one row"))?;
    check_columns(schema, first)?;
    let cols: Vec<&ColumnDef> = schema
        .columns
        .iter()
        .filter(|c| first.contains_key(&c.name))
        .collect();
    if cols.is_empty() {
        return Err(Error::invalid_input(format!(
            "an insert into {table} needs at least one column"
        )));
    }
    let mut w = Writer::new(dialect);
    w.push(&format!("INSERT INTO {} (", quote(table)));
    w.push(
        &cols
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", "),
    );
    w.push(") VALUES ");
    let names: Vec<std::sync::Arc<str>> = cols
        .iter()
        .map(|c| std::sync::Arc::from(c.name.as_str()))
        .collect();
    for (i, mut row) in rows.into_iter().enumerate() {
        if row.len() != cols.len() || cols.iter().any(|c| !row.contains_key(&c.name)) {
            check_columns(schema, &row)?;
            return Err(Error::invalid_input(format!(
                "row {i} of the insert into {table} gives other columns than the first row"
            )));
        }
        w.push(if i > 0 { ", (" } else { "(" });
        for (j, (c, name)) in cols.iter().zip(&names).enumerate() {
            if j > 0 {
                w.push(", ");
            }
            let v = row.remove(&c.name).unwrap_or(Value::Null);
            w.bind_shared(v, Some(c.ty), name.clone());
        }
        w.push(")");
    }
    w.push(" RETURNING *");
    Ok(w.finish())
}

/// `UPDATE table SET ... WHERE filter RETURNING *`. An empty patch or an
/// unknown column is [`crate::ErrorKind::InvalidInput`].
pub fn update(
    dialect: SqlDialect,
    catalog: &dyn Catalog,
    table: &str,
    patch: &Row,
    where_filter: &Filter,
) -> DbResult<Statement> {
    where_filter.validate()?;
    let sources = single_source(catalog, table)?;
    let schema = sources[0].schema;
    if patch.is_empty() {
        return Err(Error::invalid_input(format!(
            "an update of table {table} needs at least one column to set"
        )));
    }
    check_columns(schema, patch)?;
    let mut w = Writer::new(dialect);
    w.push(&format!("UPDATE {} SET ", quote(table)));
    for (i, (k, v)) in patch.iter().enumerate() {
        if i > 0 {
            w.push(", ");
        }
        let ty = schema.find(k).map(|c| c.ty);
        w.push(&format!("{} = ", quote(k)));
        w.bind(v.clone(), ty, k);
    }
    w.push(" WHERE ");
    filter(&mut w, &sources, where_filter)?;
    w.push(" RETURNING *");
    Ok(w.finish())
}

/// `DELETE FROM table WHERE filter RETURNING *`.
pub fn delete(
    dialect: SqlDialect,
    catalog: &dyn Catalog,
    table: &str,
    where_filter: &Filter,
) -> DbResult<Statement> {
    where_filter.validate()?;
    let sources = single_source(catalog, table)?;
    let mut w = Writer::new(dialect);
    w.push(&format!("DELETE FROM {} WHERE ", quote(table)));
    filter(&mut w, &sources, where_filter)?;
    w.push(" RETURNING *");
    Ok(w.finish())
}

/// The filter selecting one row by primary key (`pk = id`).
pub fn by_primary_key(schema: &TableSchema, id: &Value) -> DbResult<Filter> {
    let pk = schema.primary_key().ok_or_else(|| {
        Error::invalid_input(format!(
            "table {} has no single-column primary key, which calls by id need; \
             use read, update_many or delete_many with a filter",
            schema.name
        ))
    })?;
    if id.is_null() {
        return Err(Error::invalid_input(format!(
            "the primary key {} of table {} cannot be null",
            pk.name, schema.name
        )));
    }
    Ok(Filter::Cmp {
        column: ColumnRef {
            table: None,
            column: pk.name.clone(),
        },
        op: CmpOp::Eq,
        value: id.clone(),
    })
}

/// Renders a constant for DDL (defaults cannot be bound). The value must be
/// normalized to the column type already; strings are escaped (NUL
/// rejected).
///
/// PostgreSQL string literals are escape strings (`E'...'`, backslash and
/// quote both escaped): a plain `'...'` literal reads backslashes as escapes
/// when the session has `standard_conforming_strings = off` (a role or
/// server setting), so `\'` would end the literal and let the rest run as
/// SQL. An escape string reads the same under either setting. SQLite has no
/// backslash escapes: there `'` doubled is the whole story.
fn literal(dialect: SqlDialect, ty: ColumnType, v: &Value) -> DbResult<String> {
    let text = |s: &str| -> DbResult<String> {
        if s.contains('\0') {
            return Err(Error::invalid_input(
                "a column default cannot contain a NUL character",
            ));
        }
        Ok(match dialect {
            SqlDialect::Sqlite => format!("'{}'", s.replace('\'', "''")),
            SqlDialect::Postgres => {
                format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
            }
        })
    };
    Ok(match (ty, v) {
        (_, Value::Null) => "NULL".to_string(),
        (ColumnType::Json, v) => {
            let t = text(&v.to_string())?;
            match dialect {
                SqlDialect::Sqlite => t,
                SqlDialect::Postgres => format!("{t}::jsonb"),
            }
        }
        (ColumnType::Bytes, Value::String(s)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| Error::invalid_input("a bytes default must be standard base64"))?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            match dialect {
                SqlDialect::Sqlite => format!("X'{hex}'"),
                SqlDialect::Postgres => format!("E'\\\\x{hex}'::bytea"),
            }
        }
        (_, Value::Bool(b)) => match dialect {
            SqlDialect::Sqlite => if *b { "1" } else { "0" }.to_string(),
            SqlDialect::Postgres => if *b { "TRUE" } else { "FALSE" }.to_string(),
        },
        (_, Value::Number(n)) => n.to_string(),
        (_, Value::String(s)) => text(s)?,
        (_, Value::Array(_) | Value::Object(_)) => {
            return Err(Error::invalid_input(format!(
                "a {} column cannot default to an array or object",
                type_name(ty)
            )))
        }
    })
}

/// SQLite expression for the current time in the stored timestamp form
/// (`2024-05-01T12:00:00.123000Z`: UTC, six fractional digits).
const SQLITE_NOW: &str = "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')";
/// SQLite expression for a random version-4 UUID (lowercase, hyphenated).
const SQLITE_UUID: &str =
    "(lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || \
     substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) || \
     substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))))";

fn default_expr(dialect: SqlDialect, c: &ColumnDef) -> DbResult<Option<String>> {
    Ok(match (&c.default, dialect) {
        (None | Some(ColumnDefault::AutoIncrement), _) => None,
        (Some(ColumnDefault::Value(v)), _) if v.is_null() => None,
        (Some(ColumnDefault::Value(v)), d) => Some(format!("({})", literal(d, c.ty, v)?)),
        (Some(ColumnDefault::Now), SqlDialect::Sqlite) => Some(SQLITE_NOW.to_string()),
        (Some(ColumnDefault::Now), SqlDialect::Postgres) => Some("CURRENT_TIMESTAMP".to_string()),
        (Some(ColumnDefault::RandomUuid), SqlDialect::Sqlite) => Some(SQLITE_UUID.to_string()),
        (Some(ColumnDefault::RandomUuid), SqlDialect::Postgres) => {
            Some("gen_random_uuid()".to_string())
        }
    })
}

fn column_ddl(dialect: SqlDialect, c: &ColumnDef) -> DbResult<String> {
    let mut s = format!("{} ", quote(&c.name));
    let auto = matches!(c.default, Some(ColumnDefault::AutoIncrement));
    match (dialect, auto) {
        (SqlDialect::Sqlite, true) => s.push_str("INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL"),
        (SqlDialect::Postgres, true) => {
            s.push_str("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        }
        (d, false) => {
            s.push_str(d.column_type(c.ty));
            if c.primary_key {
                s.push_str(" PRIMARY KEY");
            }
            if c.primary_key || !c.nullable {
                s.push_str(" NOT NULL");
            }
            if let Some(e) = default_expr(d, c)? {
                let _ = write!(s, " DEFAULT {e}");
            }
        }
    }
    Ok(s)
}

/// The name of the unique index made for a `unique` column:
/// `<table>_<column>_key`, truncated to [`ident::MAX_LEN`].
pub fn unique_index_name(table: &str, column: &str) -> String {
    let mut n = format!("{table}_{column}_key");
    n.truncate(ident::MAX_LEN);
    n
}

/// `CREATE TABLE` for a (validated) schema, then one `CREATE UNIQUE INDEX`
/// per `unique` column (separate indexes, so the column can be dropped
/// later). Constant defaults must be normalized to the column type.
pub fn create_table(dialect: SqlDialect, schema: &TableSchema) -> DbResult<Vec<String>> {
    schema.validate()?;
    let ine = if schema.if_not_exists {
        "IF NOT EXISTS "
    } else {
        ""
    };
    let mut cols = schema
        .columns
        .iter()
        .map(|c| column_ddl(dialect, c))
        .collect::<DbResult<Vec<_>>>()?;
    cols.extend(
        schema
            .foreign_keys
            .iter()
            .map(|fk| foreign_key_ddl(&schema.name, fk)),
    );
    let mut out = vec![format!(
        "CREATE TABLE {ine}{} ({})",
        quote(&schema.name),
        cols.join(", ")
    )];
    for c in schema.columns.iter().filter(|c| c.unique && !c.primary_key) {
        out.push(format!(
            "CREATE UNIQUE INDEX {ine}{} ON {} ({})",
            quote(&unique_index_name(&schema.name, &c.name)),
            quote(&schema.name),
            quote(&c.name)
        ));
    }
    Ok(out)
}

/// `CONSTRAINT name FOREIGN KEY (cols) REFERENCES table (cols)`, the same
/// in both dialects (`NO ACTION` on delete and update). Names are
/// validated identifiers.
fn foreign_key_ddl(table: &str, fk: &crate::ForeignKey) -> String {
    let list = |cols: &[String]| cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
    format!(
        "CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({})",
        quote(&fk.resolved_name(table)),
        list(&fk.columns),
        quote(&fk.referenced_table),
        list(&fk.referenced_columns)
    )
}

/// `DROP TABLE [IF EXISTS] table`.
pub fn drop_table(table: &str, if_exists: bool) -> DbResult<String> {
    ident::table(table)?;
    Ok(format!(
        "DROP TABLE {}{}",
        if if_exists { "IF EXISTS " } else { "" },
        quote(table)
    ))
}

/// The statements of one `alter_table` change. Semantic checks (the column
/// exists, is not the key, a NOT NULL column without default only on an empty
/// table) are the provider's.
///
/// On SQLite, which cannot add a column with a non-constant default or a NOT
/// NULL column without one, the column is added without them and existing
/// rows are then filled with an `UPDATE` (the provider enforces NOT NULL on
/// later writes).
pub fn alter_table(dialect: SqlDialect, table: &str, change: &AlterTable) -> DbResult<Vec<String>> {
    ident::table(table)?;
    change.validate()?;
    let t = quote(table);
    Ok(match change {
        AlterTable::AddColumn(c) => {
            let mut out = Vec::new();
            let ty = dialect.column_type(c.ty);
            let name = quote(&c.name);
            let default = default_expr(dialect, c)?;
            match dialect {
                SqlDialect::Postgres => {
                    let mut s = format!("ALTER TABLE {t} ADD COLUMN {name} {ty}");
                    if !c.nullable {
                        s.push_str(" NOT NULL");
                    }
                    if let Some(d) = default {
                        let _ = write!(s, " DEFAULT {d}");
                    }
                    out.push(s);
                }
                SqlDialect::Sqlite => {
                    let constant =
                        matches!(&c.default, Some(ColumnDefault::Value(v)) if !v.is_null());
                    match default {
                        Some(d) if constant => {
                            let nn = if c.nullable { "" } else { " NOT NULL" };
                            out.push(format!(
                                "ALTER TABLE {t} ADD COLUMN {name} {ty}{nn} DEFAULT {d}"
                            ));
                        }
                        Some(d) => {
                            out.push(format!("ALTER TABLE {t} ADD COLUMN {name} {ty}"));
                            out.push(format!("UPDATE {t} SET {name} = {d}"));
                        }
                        None => out.push(format!("ALTER TABLE {t} ADD COLUMN {name} {ty}")),
                    }
                }
            }
            if c.unique {
                out.push(format!(
                    "CREATE UNIQUE INDEX {} ON {t} ({name})",
                    quote(&unique_index_name(table, &c.name))
                ));
            }
            out
        }
        AlterTable::DropColumn(c) => vec![format!("ALTER TABLE {t} DROP COLUMN {}", quote(c))],
        AlterTable::RenameColumn { from, to } => vec![format!(
            "ALTER TABLE {t} RENAME COLUMN {} TO {}",
            quote(from),
            quote(to)
        )],
        AlterTable::AddForeignKey(fk) => match dialect {
            SqlDialect::Postgres => vec![format!(
                "ALTER TABLE {t} ADD {}",
                foreign_key_ddl(table, fk)
            )],
            SqlDialect::Sqlite => {
                return Err(Error::unsupported(format!(
                    "SQLite cannot add a foreign key to an existing table ({table}): declare it \
                     in create_table"
                )))
            }
        },
    })
}

/// `CREATE [UNIQUE] INDEX [IF NOT EXISTS] name ON table (columns)`.
pub fn create_index(index: &IndexSpec) -> DbResult<String> {
    index.validate()?;
    Ok(format!(
        "CREATE {}INDEX {}{} ON {} ({})",
        if index.unique { "UNIQUE " } else { "" },
        if index.if_not_exists {
            "IF NOT EXISTS "
        } else {
            ""
        },
        quote(&index.resolved_name()),
        quote(&index.table),
        index
            .columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Lower-case name of a column type for messages.
pub fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::Integer => "integer",
        ColumnType::Float => "float",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Uuid => "uuid",
        ColumnType::Json => "json",
        ColumnType::Bytes => "bytes",
        ColumnType::Numeric => "numeric",
    }
}

#[cfg(test)]
mod tests;
