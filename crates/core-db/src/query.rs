//! The provider-neutral query value.
//!
//! A [`Query`] is plain data (serde): select list, joins, a [`Filter`] tree,
//! grouping, ordering, limit/offset and a keyset [`Cursor`]. Providers compile
//! it: SQL with bound values, PostgREST query strings, or evaluation in memory.
//!
//! Semantics every provider follows (the conformance suite checks them):
//! - Comparisons follow SQL's three-valued logic: a comparison with a `NULL`
//!   column is unknown, and `not(unknown)` is unknown, so such rows never match
//!   `eq`, `ne`, `gt`, ... nor their negation. Use [`ColumnRef::is_null`].
//!   `col(x).eq(Value::Null)` is rewritten to `is_null` by the builder.
//! - `like` / `ilike` patterns use `%` and `_`; `ilike` ignores ASCII case.
//! - An empty `and` is true, an empty `or` is false, an empty `in` matches no
//!   row and an empty `not in` matches every non-null value.
//! - Order: `NULL` sorts as the largest value (last ascending, first descending)
//!   unless [`NullsOrder`] says otherwise.
//! - Column names in results are the bare column name (or the alias), also for
//!   qualified selections like `agent_metrics.task_count`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ident;
use crate::{DbResult, Error, Value};

/// A column reference, optionally qualified by table (`agents.id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnRef {
    /// The table (or join alias) the column belongs to.
    pub table: Option<String>,
    /// The column name.
    pub column: String,
}

impl ColumnRef {
    /// Parses `column` or `table.column`. Validation happens in
    /// [`Query::validate`], so building never fails.
    pub fn parse(s: &str) -> Self {
        // A byte scan: names are short, and `split_once`'s searcher costs
        // more to set up than the scan.
        match s.bytes().position(|b| b == b'.') {
            Some(i) => ColumnRef {
                table: Some(s[..i].to_string()),
                column: s[i + 1..].to_string(),
            },
            None => ColumnRef {
                table: None,
                column: s.to_string(),
            },
        }
    }

    /// Checks the identifiers.
    pub fn validate(&self) -> DbResult<()> {
        if let Some(t) = &self.table {
            ident::validate(t)?;
        }
        ident::validate(&self.column)
    }

    fn cmp(self, op: CmpOp, value: impl Into<Value>) -> Filter {
        let value = value.into();
        match (op, &value) {
            (CmpOp::Eq, Value::Null) => Filter::IsNull { column: self },
            (CmpOp::Ne, Value::Null) => Filter::IsNotNull { column: self },
            _ => Filter::Cmp {
                column: self,
                op,
                value,
            },
        }
    }

    /// `column = value` (`value` null: `column IS NULL`).
    pub fn eq(self, value: impl Into<Value>) -> Filter {
        self.cmp(CmpOp::Eq, value)
    }
    /// `column <> value` (`value` null: `column IS NOT NULL`).
    pub fn ne(self, value: impl Into<Value>) -> Filter {
        self.cmp(CmpOp::Ne, value)
    }
    /// `column > value`.
    pub fn gt(self, value: impl Into<Value>) -> Filter {
        self.cmp(CmpOp::Gt, value)
    }
    /// `column >= value`.
    pub fn gte(self, value: impl Into<Value>) -> Filter {
        self.cmp(CmpOp::Gte, value)
    }
    /// `column < value`.
    pub fn lt(self, value: impl Into<Value>) -> Filter {
        self.cmp(CmpOp::Lt, value)
    }
    /// `column <= value`.
    pub fn lte(self, value: impl Into<Value>) -> Filter {
        self.cmp(CmpOp::Lte, value)
    }
    /// `column LIKE pattern` (`%` any run, `_` one character; case-sensitive).
    pub fn like(self, pattern: impl Into<String>) -> Filter {
        self.cmp(CmpOp::Like, Value::String(pattern.into()))
    }
    /// `column ILIKE pattern` (ASCII case-insensitive `like`).
    pub fn ilike(self, pattern: impl Into<String>) -> Filter {
        self.cmp(CmpOp::ILike, Value::String(pattern.into()))
    }
    /// `column @> value` (PostgREST `cs`): the JSON (or array) column
    /// contains the JSON document `value`, as PostgreSQL's `jsonb @>` means
    /// it. See [`CmpOp::Contains`].
    pub fn contains(self, value: impl Into<Value>) -> Filter {
        self.cmp(CmpOp::Contains, value)
    }
    /// `column <@ value` (PostgREST `cd`): the JSON (or array) column is
    /// contained by the JSON document `value`. See [`CmpOp::ContainedBy`].
    pub fn contained_by(self, value: impl Into<Value>) -> Filter {
        self.cmp(CmpOp::ContainedBy, value)
    }
    /// `column && values` (PostgREST `ov`): the array column shares at
    /// least one element with `values`. See [`CmpOp::Overlaps`].
    pub fn overlaps<V: Into<Value>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        self.cmp(
            CmpOp::Overlaps,
            Value::Array(values.into_iter().map(Into::into).collect()),
        )
    }
    /// Full-text search of a text column (PostgREST `fts`, `plfts`, `phfts`,
    /// `wfts`), with the text-search configuration `config` (`"english"`)
    /// or the database's default. See [`Filter::TextSearch`].
    pub fn text_search(
        self,
        query: impl Into<String>,
        kind: TextSearchKind,
        config: Option<&str>,
    ) -> Filter {
        Filter::TextSearch {
            column: self,
            query: query.into(),
            kind,
            config: config.map(str::to_string),
        }
    }
    /// `column IN (values)`.
    pub fn is_in<V: Into<Value>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        Filter::In {
            column: self,
            values: values.into_iter().map(Into::into).collect(),
        }
    }
    /// `column NOT IN (values)`.
    pub fn not_in<V: Into<Value>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        Filter::NotIn {
            column: self,
            values: values.into_iter().map(Into::into).collect(),
        }
    }
    /// `column IS NULL`.
    pub fn is_null(self) -> Filter {
        Filter::IsNull { column: self }
    }
    /// `column IS NOT NULL`.
    pub fn is_not_null(self) -> Filter {
        Filter::IsNotNull { column: self }
    }
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.table {
            Some(t) => write!(f, "{t}.{}", self.column),
            None => f.write_str(&self.column),
        }
    }
}

/// Starts a filter on a column: `col("status").eq("active")`,
/// `col("agents.id").is_in(ids)`.
pub fn col(name: &str) -> ColumnRef {
    ColumnRef::parse(name)
}

/// All of the filters (true when empty).
pub fn and(filters: impl IntoIterator<Item = Filter>) -> Filter {
    Filter::And(filters.into_iter().collect())
}

/// Any of the filters (false when empty).
pub fn or(filters: impl IntoIterator<Item = Filter>) -> Filter {
    Filter::Or(filters.into_iter().collect())
}

/// The negation of a filter.
pub fn not(filter: Filter) -> Filter {
    Filter::Not(Box::new(filter))
}

/// A comparison operator.
///
/// Non-exhaustive: operators are added without a breaking change, so a
/// provider matching on it answers an operator it does not know with
/// [`crate::ErrorKind::Unsupported`] naming it ([`CmpOp::name`]).
///
/// The JSON operators ([`CmpOp::Contains`], [`CmpOp::ContainedBy`],
/// [`CmpOp::Overlaps`]) apply to JSON columns (which on PostgreSQL include
/// array columns, read as JSON arrays) and follow PostgreSQL's `jsonb`
/// document semantics in every provider that supports them
/// ([`crate::DbCapabilities::json_containment`]):
/// - a scalar contains an equal scalar (numbers compare numerically);
/// - an object contains an object when each of the latter's keys is in the
///   former with a value that contains the latter's value;
/// - an array contains an array when each element of the latter is
///   contained by some element of the former (order and duplicates do not
///   matter);
/// - at the top level only, an array contains a scalar it has as an element
///   (`["a","b"]` contains `"a"`);
/// - `a` is contained by `b` exactly when `b` contains `a`;
/// - a NULL column is unknown (neither matches nor matches the negation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `LIKE`
    Like,
    /// `ILIKE`
    #[serde(rename = "ilike")]
    ILike,
    /// `@>`: the JSON column contains the value (PostgREST `cs`).
    Contains,
    /// `<@`: the JSON column is contained by the value (PostgREST `cd`).
    ContainedBy,
    /// `&&`: the JSON array column and the value (an array of strings,
    /// numbers or booleans) share an element; numbers compare numerically
    /// (PostgREST `ov`). A column holding a non-array is false.
    Overlaps,
}

impl CmpOp {
    /// The operator's PostgREST name (`eq`, `neq`, `gt`, `gte`, `lt`, `lte`,
    /// `like`, `ilike`, `cs`, `cd`, `ov`), used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "neq",
            CmpOp::Gt => "gt",
            CmpOp::Gte => "gte",
            CmpOp::Lt => "lt",
            CmpOp::Lte => "lte",
            CmpOp::Like => "like",
            CmpOp::ILike => "ilike",
            CmpOp::Contains => "cs",
            CmpOp::ContainedBy => "cd",
            CmpOp::Overlaps => "ov",
        }
    }

    /// Whether this is one of the JSON document operators (`cs`, `cd`,
    /// `ov`), which take a JSON column and a JSON value as is (not
    /// normalized to the column's type) and need
    /// [`crate::DbCapabilities::json_containment`].
    pub fn is_json(self) -> bool {
        matches!(self, CmpOp::Contains | CmpOp::ContainedBy | CmpOp::Overlaps)
    }
}

/// How a full-text search query is read ([`Filter::TextSearch`]); the
/// PostgreSQL function each maps to names the syntax.
///
/// Non-exhaustive, like [`CmpOp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TextSearchKind {
    /// `to_tsquery`: the query is tsquery syntax (`fat & (rat | cat)`,
    /// `!dog`, `sup:*`, `a <-> b`). PostgREST `fts`.
    Tsquery,
    /// `plainto_tsquery`: every word must occur. PostgREST `plfts`.
    Plain,
    /// `phraseto_tsquery`: the words must occur in this order, adjacent.
    /// PostgREST `phfts`.
    Phrase,
    /// `websearch_to_tsquery`: web-search syntax (`"quoted phrase"`, `or`,
    /// `-word`). PostgREST `wfts`.
    Websearch,
}

impl TextSearchKind {
    /// The operator's PostgREST name (`fts`, `plfts`, `phfts`, `wfts`).
    pub fn name(self) -> &'static str {
        match self {
            TextSearchKind::Tsquery => "fts",
            TextSearchKind::Plain => "plfts",
            TextSearchKind::Phrase => "phfts",
            TextSearchKind::Websearch => "wfts",
        }
    }
}

/// Checks a text-search configuration name (`english`,
/// `pg_catalog.english`): one or two identifiers of ASCII letters, digits and
/// `_`, not starting with a digit, at most 63 bytes each. Providers bind it
/// as a value as well; the check keeps anything else out of every query
/// language.
pub fn validate_text_search_config(config: &str) -> DbResult<()> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut parts = config.split('.');
    let valid = match (parts.next(), parts.next(), parts.next()) {
        (Some(a), None, None) => ok_part(a),
        (Some(a), Some(b), None) => ok_part(a) && ok_part(b),
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "{:?} is not a text search configuration name (letters, digits and _, \
             optionally schema-qualified, such as english or pg_catalog.english)",
            config.chars().take(80).collect::<String>()
        )))
    }
}

/// Deepest nesting of arrays and objects in a `cs`/`cd`/`ov` value (`[[1]]`
/// is 2 deep).
pub const MAX_JSON_OPERAND_DEPTH: usize = 16;
/// Most values, object keys included, in a `cs`/`cd`/`ov` value.
pub const MAX_JSON_OPERAND_NODES: usize = 1_000;

/// Bounds a JSON operator's value: every provider can answer one this size
/// (SQLite unrolls it into SQL, whose expression depth and bind count are
/// limited), and a hostile one costs no deep recursion.
fn check_json_operand(column: &ColumnRef, op: CmpOp, value: &Value) -> DbResult<()> {
    fn walk(v: &Value, depth: usize, nodes: &mut usize) -> bool {
        *nodes += 1;
        let container = v.is_array() || v.is_object();
        if (container && depth > MAX_JSON_OPERAND_DEPTH) || *nodes > MAX_JSON_OPERAND_NODES {
            return false;
        }
        match v {
            Value::Array(items) => items.iter().all(|i| walk(i, depth + 1, nodes)),
            Value::Object(map) => map.values().all(|i| {
                *nodes += 1;
                walk(i, depth + 1, nodes)
            }),
            _ => true,
        }
    }
    let mut nodes = 0;
    if walk(value, 1, &mut nodes) {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "the {} value for {column} is too large: at most {MAX_JSON_OPERAND_DEPTH} levels \
             deep and {MAX_JSON_OPERAND_NODES} values and keys",
            op.name()
        )))
    }
}

/// A condition on rows.
///
/// Non-exhaustive: conditions are added without a breaking change; a
/// provider answers one it does not know with
/// [`crate::ErrorKind::Unsupported`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Filter {
    /// `column op value`.
    Cmp {
        /// The column.
        column: ColumnRef,
        /// The operator.
        op: CmpOp,
        /// The value, always bound.
        value: Value,
    },
    /// `column IN (values)`.
    In {
        /// The column.
        column: ColumnRef,
        /// The values, always bound.
        values: Vec<Value>,
    },
    /// `column NOT IN (values)`.
    NotIn {
        /// The column.
        column: ColumnRef,
        /// The values, always bound.
        values: Vec<Value>,
    },
    /// `column IS NULL`.
    IsNull {
        /// The column.
        column: ColumnRef,
    },
    /// `column IS NOT NULL`.
    IsNotNull {
        /// The column.
        column: ColumnRef,
    },
    /// All of (true when empty).
    And(Vec<Filter>),
    /// Any of (false when empty).
    Or(Vec<Filter>),
    /// Not.
    Not(Box<Filter>),
    /// Full-text search of a text column, as PostgreSQL means it:
    /// `to_tsvector(config, column) @@ <kind>(config, query)` (without a
    /// config, the database's default configuration). Needs
    /// [`crate::DbCapabilities::full_text_search`]; a NULL column is
    /// unknown.
    TextSearch {
        /// The column (a text column).
        column: ColumnRef,
        /// The search text, always bound.
        query: String,
        /// How the query is read.
        kind: TextSearchKind,
        /// The text-search configuration (`english`); checked by
        /// [`validate_text_search_config`] and bound, never spliced.
        config: Option<String>,
    },
}

impl Filter {
    /// `self AND other`, flattening nested `and`s.
    pub fn and(self, other: Filter) -> Filter {
        match self {
            Filter::And(mut v) => {
                v.push(other);
                Filter::And(v)
            }
            f => Filter::And(vec![f, other]),
        }
    }

    /// `self OR other`.
    pub fn or(self, other: Filter) -> Filter {
        match self {
            Filter::Or(mut v) => {
                v.push(other);
                Filter::Or(v)
            }
            f => Filter::Or(vec![f, other]),
        }
    }

    /// Checks identifiers, operator/value pairs and nesting depth.
    pub fn validate(&self) -> DbResult<()> {
        self.validate_depth(0)
    }

    fn validate_depth(&self, depth: usize) -> DbResult<()> {
        const MAX_DEPTH: usize = 64;
        if depth > MAX_DEPTH {
            return Err(Error::invalid_input(format!(
                "filter nested deeper than {MAX_DEPTH} levels"
            )));
        }
        match self {
            Filter::Cmp { column, op, value } => {
                column.validate()?;
                if value.is_null() {
                    return Err(Error::invalid_input(format!(
                        "cannot compare {column} with null using {op:?}; use is_null/is_not_null"
                    )));
                }
                if matches!(op, CmpOp::Like | CmpOp::ILike) && !value.is_string() {
                    return Err(Error::invalid_input(format!(
                        "like/ilike on {column} needs a string pattern"
                    )));
                }
                if op.is_json() {
                    check_json_operand(column, *op, value)?;
                }
                if *op == CmpOp::Overlaps {
                    let scalars = value.as_array().is_some_and(|a| {
                        a.iter()
                            .all(|v| v.is_string() || v.is_number() || v.is_boolean())
                    });
                    if !scalars {
                        return Err(Error::invalid_input(format!(
                            "ov (overlaps) on {column} needs an array of strings, numbers or booleans"
                        )));
                    }
                }
                Ok(())
            }
            Filter::TextSearch {
                column,
                query,
                kind,
                config,
            } => {
                column.validate()?;
                if let Some(c) = config {
                    validate_text_search_config(c)?;
                }
                if query.contains('\0') {
                    return Err(Error::invalid_input(format!(
                        "{} on {column}: the search text contains a NUL character",
                        kind.name()
                    )));
                }
                Ok(())
            }
            Filter::In { column, values } | Filter::NotIn { column, values } => {
                column.validate()?;
                if values.iter().any(Value::is_null) {
                    return Err(Error::invalid_input(format!(
                        "in/not in on {column} cannot contain null; combine with is_null instead"
                    )));
                }
                Ok(())
            }
            Filter::IsNull { column } | Filter::IsNotNull { column } => column.validate(),
            Filter::And(fs) | Filter::Or(fs) => {
                fs.iter().try_for_each(|f| f.validate_depth(depth + 1))
            }
            Filter::Not(f) => f.validate_depth(depth + 1),
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SortDirection {
    /// Smallest first.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

/// Where `NULL`s go in an ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullsOrder {
    /// `NULLS FIRST`.
    First,
    /// `NULLS LAST`.
    Last,
}

/// One ordering key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderBy {
    /// The column.
    pub column: ColumnRef,
    /// Direction.
    pub direction: SortDirection,
    /// Explicit placement of nulls; `None` = nulls are largest.
    pub nulls: Option<NullsOrder>,
}

impl OrderBy {
    /// Whether nulls come first, resolving the default (nulls largest).
    pub fn nulls_first(&self) -> bool {
        match self.nulls {
            Some(NullsOrder::First) => true,
            Some(NullsOrder::Last) => false,
            None => self.direction == SortDirection::Desc,
        }
    }
}

/// Join type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinKind {
    /// `LEFT JOIN`: every left row, with nulls where nothing matches.
    Left,
    /// `INNER JOIN`: only rows with a match.
    Inner,
}

/// `JOIN table [AS alias] ON left = right`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Join {
    /// Left or inner.
    pub kind: JoinKind,
    /// The joined table.
    pub table: String,
    /// Optional alias used to qualify its columns.
    pub alias: Option<String>,
    /// Column of an earlier table.
    pub left: ColumnRef,
    /// Column of the joined table.
    pub right: ColumnRef,
}

/// Aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFunc {
    /// `COUNT(*)` or `COUNT(column)` (non-null values). Always an integer.
    Count,
    /// `SUM(column)`; null over no non-null values.
    Sum,
    /// `AVG(column)` as a float; null over no non-null values.
    Avg,
    /// `MIN(column)`.
    Min,
    /// `MAX(column)`.
    Max,
}

/// One item of the select list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectItem {
    /// `*` or `table.*`.
    All {
        /// Restrict to one table (or alias).
        table: Option<String>,
    },
    /// A column, optionally renamed.
    Column {
        /// The column.
        column: ColumnRef,
        /// Output name; default the bare column name.
        alias: Option<String>,
    },
    /// An aggregate, optionally over only the rows matching `filter`
    /// (`COUNT(*) FILTER (WHERE status = 'active')`).
    Aggregate {
        /// The function.
        func: AggFunc,
        /// The column; `None` only for `COUNT(*)`.
        column: Option<ColumnRef>,
        /// Rows the aggregate considers.
        filter: Option<Filter>,
        /// Output name (required).
        alias: String,
    },
}

impl SelectItem {
    /// Parses `*`, `table.*`, `column`, `table.column` or `expr as alias`
    /// (case-insensitive `as`).
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        let (expr, alias) = match split_alias(s) {
            Some((e, a)) => (e, Some(a.to_string())),
            None => (s, None),
        };
        if expr == "*" {
            return SelectItem::All { table: None };
        }
        if let Some(t) = expr.strip_suffix(".*") {
            return SelectItem::All {
                table: Some(t.to_string()),
            };
        }
        SelectItem::Column {
            column: ColumnRef::parse(expr),
            alias,
        }
    }

    /// An aggregate item: `SelectItem::aggregate(AggFunc::Avg, Some("score"), "avg_score")`.
    pub fn aggregate(func: AggFunc, column: Option<&str>, alias: &str) -> Self {
        SelectItem::Aggregate {
            func,
            column: column.map(ColumnRef::parse),
            filter: None,
            alias: alias.to_string(),
        }
    }

    /// Restricts an aggregate to rows matching `filter`; no effect on other items.
    pub fn filtered(mut self, f: Filter) -> Self {
        if let SelectItem::Aggregate { filter, .. } = &mut self {
            *filter = Some(f);
        }
        self
    }

    fn validate(&self) -> DbResult<()> {
        match self {
            SelectItem::All { table } => table.as_deref().map_or(Ok(()), ident::validate),
            SelectItem::Column { column, alias } => {
                column.validate()?;
                alias.as_deref().map_or(Ok(()), ident::validate)
            }
            SelectItem::Aggregate {
                func,
                column,
                filter,
                alias,
            } => {
                ident::validate(alias)?;
                match column {
                    Some(c) => c.validate()?,
                    None if *func != AggFunc::Count => {
                        return Err(Error::invalid_input(format!(
                            "{func:?} needs a column (only count may omit it)"
                        )))
                    }
                    None => {}
                }
                filter.as_ref().map_or(Ok(()), Filter::validate)
            }
        }
    }
}

fn split_alias(s: &str) -> Option<(&str, &str)> {
    // The last ` as ` (any case), found by bytes: no lowercased copy. Its
    // bytes are ASCII, so both slices start and end on a char boundary.
    let idx = s.as_bytes().windows(4).rposition(|w| {
        w[0] == b' '
            && w[1].eq_ignore_ascii_case(&b'a')
            && w[2].eq_ignore_ascii_case(&b's')
            && w[3] == b' '
    })?;
    Some((s[..idx].trim(), s[idx + 4..].trim()))
}

/// A keyset pagination position: the values of the ordering columns of the
/// last row seen. Opaque to users; passed around as a URL-safe string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor(pub Vec<Value>);

impl Cursor {
    /// Encodes as URL-safe base64 of JSON.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(&self.0).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a string made by [`Cursor::encode`]; anything else is
    /// [`crate::ErrorKind::InvalidInput`].
    pub fn decode(s: &str) -> DbResult<Self> {
        const MAX: usize = 16 * 1024;
        if s.len() > MAX {
            return Err(Error::invalid_input("cursor too long"));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| Error::invalid_input("malformed cursor"))?;
        let values: Vec<Value> =
            serde_json::from_slice(&bytes).map_err(|_| Error::invalid_input("malformed cursor"))?;
        Ok(Cursor(values))
    }
}

/// A query: what [`crate::Database::read`] runs against a table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Query {
    /// Select list; empty means every column of the queried table.
    pub select: Vec<SelectItem>,
    /// Joins, applied in order.
    pub joins: Vec<Join>,
    /// Row condition.
    pub filter: Option<Filter>,
    /// Group-by columns (with aggregates).
    pub group_by: Vec<ColumnRef>,
    /// Ordering keys.
    pub order_by: Vec<OrderBy>,
    /// At most this many rows.
    pub limit: Option<u64>,
    /// Skip this many rows.
    pub offset: Option<u64>,
    /// Keyset position: only rows strictly after it in `order_by` order.
    pub after: Option<Cursor>,
}

impl Query {
    /// An empty query: every row, every column.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds select items (`"agents.*"`, `"agent_metrics.task_count"`, `"name as n"`).
    pub fn select<S: AsRef<str>>(mut self, items: impl IntoIterator<Item = S>) -> Self {
        self.select
            .extend(items.into_iter().map(|s| SelectItem::parse(s.as_ref())));
        self
    }

    /// Adds one select item (an aggregate, say).
    pub fn select_item(mut self, item: SelectItem) -> Self {
        self.select.push(item);
        self
    }

    /// ANDs a condition onto the query.
    pub fn filter(mut self, f: Filter) -> Self {
        self.filter = Some(match self.filter.take() {
            None => f,
            Some(existing) => existing.and(f),
        });
        self
    }

    /// Shorthand for `.filter(col(column).eq(value))`.
    pub fn where_eq(self, column: &str, value: impl Into<Value>) -> Self {
        self.filter(col(column).eq(value))
    }

    fn join(mut self, kind: JoinKind, table: &str, left: &str, right: &str) -> Self {
        let (table, alias) = match table.trim().split_once(char::is_whitespace) {
            Some((t, a)) => (t.to_string(), Some(a.trim().to_string())),
            None => (table.trim().to_string(), None),
        };
        self.joins.push(Join {
            kind,
            table,
            alias,
            left: ColumnRef::parse(left),
            right: ColumnRef::parse(right),
        });
        self
    }

    /// `LEFT JOIN table ON left = right`; `table` may be `"table alias"`.
    pub fn left_join(self, table: &str, left: &str, right: &str) -> Self {
        self.join(JoinKind::Left, table, left, right)
    }

    /// `INNER JOIN table ON left = right`; `table` may be `"table alias"`.
    pub fn inner_join(self, table: &str, left: &str, right: &str) -> Self {
        self.join(JoinKind::Inner, table, left, right)
    }

    /// Adds a group-by column.
    pub fn group_by(mut self, column: &str) -> Self {
        self.group_by.push(ColumnRef::parse(column));
        self
    }

    /// Adds an ordering key.
    pub fn order_by(mut self, column: &str, direction: SortDirection) -> Self {
        self.order_by.push(OrderBy {
            column: ColumnRef::parse(column),
            direction,
            nulls: None,
        });
        self
    }

    /// Adds an ascending ordering key.
    pub fn order_by_asc(self, column: &str) -> Self {
        self.order_by(column, SortDirection::Asc)
    }

    /// Adds a descending ordering key.
    pub fn order_by_desc(self, column: &str) -> Self {
        self.order_by(column, SortDirection::Desc)
    }

    /// Sets where nulls go for the last ordering key.
    pub fn nulls(mut self, nulls: NullsOrder) -> Self {
        if let Some(last) = self.order_by.last_mut() {
            last.nulls = Some(nulls);
        }
        self
    }

    /// At most `n` rows.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Skip `n` rows.
    pub fn offset(mut self, n: u64) -> Self {
        self.offset = Some(n);
        self
    }

    /// Only rows after this keyset position (see [`crate::DatabaseExt::read_page`]).
    pub fn after(mut self, cursor: Cursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Checks every identifier and the shape of the query. Providers call this
    /// before compiling, so an invalid query never reaches a backend.
    pub fn validate(&self) -> DbResult<()> {
        self.select.iter().try_for_each(SelectItem::validate)?;
        for j in &self.joins {
            ident::validate(&j.table)?;
            if let Some(a) = &j.alias {
                ident::validate(a)?;
            }
            j.left.validate()?;
            j.right.validate()?;
        }
        if let Some(f) = &self.filter {
            f.validate()?;
        }
        self.group_by.iter().try_for_each(ColumnRef::validate)?;
        self.order_by.iter().try_for_each(|o| o.column.validate())?;
        if let Some(c) = &self.after {
            if self.order_by.is_empty() {
                return Err(Error::invalid_input("a cursor needs order_by keys"));
            }
            if c.0.len() != self.order_by.len() {
                return Err(Error::invalid_input(format!(
                    "cursor has {} values but the query orders by {} keys",
                    c.0.len(),
                    self.order_by.len()
                )));
            }
            if c.0
                .iter()
                .any(|v| v.is_null() || v.is_object() || v.is_array())
            {
                return Err(Error::invalid_input(
                    "cursor values must be non-null scalars; order by non-null columns to paginate",
                ));
            }
        }
        let has_agg = self
            .select
            .iter()
            .any(|s| matches!(s, SelectItem::Aggregate { .. }));
        if !self.group_by.is_empty() && !has_agg {
            return Err(Error::invalid_input(
                "group_by needs at least one aggregate",
            ));
        }
        Ok(())
    }

    /// The query's filter combined with its keyset cursor, as one [`Filter`].
    /// Providers compile this instead of `filter` so that cursors need no
    /// provider code: for keys `k1..kn` with values `v1..vn` it is
    /// `k1 > v1 OR (k1 = v1 AND k2 > v2) OR ...` (`<` for descending keys).
    pub fn effective_filter(&self) -> DbResult<Option<Filter>> {
        self.validate()?;
        let Some(cursor) = &self.after else {
            return Ok(self.filter.clone());
        };
        let mut branches = Vec::with_capacity(self.order_by.len());
        for (i, key) in self.order_by.iter().enumerate() {
            let mut parts: Vec<Filter> = self.order_by[..i]
                .iter()
                .zip(&cursor.0)
                .map(|(k, v)| k.column.clone().eq(v.clone()))
                .collect();
            let v = cursor.0[i].clone();
            parts.push(match key.direction {
                SortDirection::Asc => key.column.clone().gt(v),
                SortDirection::Desc => key.column.clone().lt(v),
            });
            branches.push(Filter::And(parts));
        }
        let keyset = Filter::Or(branches);
        Ok(Some(match &self.filter {
            Some(f) => Filter::And(vec![f.clone(), keyset]),
            None => keyset,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eq_null_becomes_is_null() {
        assert_eq!(
            col("deleted_at").eq(Value::Null),
            Filter::IsNull {
                column: col("deleted_at")
            }
        );
    }

    #[test]
    fn split_alias_finds_the_last_as_in_any_case() {
        // What lowercasing a copy and `rfind(" as ")` gave.
        fn by_copy(s: &str) -> Option<(&str, &str)> {
            let idx = s.to_ascii_lowercase().rfind(" as ")?;
            Some((s[..idx].trim(), s[idx + 4..].trim()))
        }
        for s in [
            "name as n",
            "name AS n",
            "t.name As x",
            "a as b as c",
            "a  aS  b",
            "é as ü",
            "class",
            "as",
            " as ",
            "x as",
            "as x",
            "",
            "basis as alias",
            "ü AS",
        ] {
            assert_eq!(split_alias(s), by_copy(s), "{s:?}");
        }
        assert_eq!(split_alias("a as b as c"), Some(("a as b", "c")));
    }

    #[test]
    fn select_parsing() {
        let q = Query::new().select(["agents.*", "m.score AS s", "name"]);
        assert_eq!(
            q.select[0],
            SelectItem::All {
                table: Some("agents".into())
            }
        );
        assert_eq!(
            q.select[1],
            SelectItem::Column {
                column: col("m.score"),
                alias: Some("s".into())
            }
        );
        q.validate().unwrap();
    }

    #[test]
    fn invalid_identifiers_rejected_everywhere() {
        let bad = "x\"; drop table agents; --";
        let cases = vec![
            Query::new().select([bad]),
            Query::new().filter(col(bad).eq(1)),
            Query::new().order_by_asc(bad),
            Query::new().left_join(bad, "a.id", "b.id"),
            Query::new()
                .group_by(bad)
                .select_item(SelectItem::aggregate(AggFunc::Count, None, "n")),
        ];
        for q in cases {
            assert_eq!(
                q.validate().unwrap_err().kind(),
                crate::ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn keyset_filter_shape() {
        let q = Query::new()
            .order_by_desc("created_at")
            .order_by_asc("id")
            .after(Cursor(vec![json!("2024-01-01"), json!(7)]));
        let f = q.effective_filter().unwrap().unwrap();
        assert_eq!(
            f,
            or([
                and([col("created_at").lt("2024-01-01")]),
                and([col("created_at").eq("2024-01-01"), col("id").gt(7)]),
            ])
        );
    }

    #[test]
    fn cursor_roundtrip_and_garbage() {
        let c = Cursor(vec![json!("a"), json!(1)]);
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("!!!").is_err());
        assert!(Cursor::decode(&"A".repeat(100_000)).is_err());
    }

    #[test]
    fn deep_filters_rejected() {
        let mut f = col("a").eq(1);
        for _ in 0..100 {
            f = not(f);
        }
        assert!(Query::new().filter(f).validate().is_err());
    }

    #[test]
    fn query_is_serde_data() {
        let q = Query::new()
            .filter(or([col("a").is_in([1, 2]), not(col("b").ilike("x%"))]))
            .order_by_desc("c")
            .nulls(NullsOrder::Last)
            .limit(5);
        let s = serde_json::to_string(&q).unwrap();
        let back: Query = serde_json::from_str(&s).unwrap();
        assert_eq!(back, q);
    }
}
