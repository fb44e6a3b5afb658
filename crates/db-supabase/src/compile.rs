//! `core-db`'s [`Query`] and [`Filter`] as PostgREST query parameters.
//!
//! The filter tree is first put in negation normal form (every `not` pushed
//! down to a leaf, which is valid under SQL's three-valued logic), constant
//! parts are folded (an empty `and` is true, an empty `or` and an empty `in`
//! are false), and then rendered:
//!
//! - top-level conjuncts become one parameter each, `col=op.value`, where
//!   the value is taken raw by the server (no quoting needed);
//! - a disjunction becomes `or=(...)`, nested groups `and(...)`/`or(...)`;
//!   inside those a value that holds a character the grammar reserves
//!   (`,()"\{}` or surrounding whitespace) is double-quoted with `\` escapes;
//! - `in` lists always quote every value;
//! - finally every key and value is percent-encoded (everything but
//!   `A-Z a-z 0-9 - _ . ~`), so `+`, `&`, `#`, `%` and unicode reach the
//!   server as the characters they are.
//!
//! Values PostgREST cannot carry faithfully are refused with
//! [`ErrorKind::InvalidInput`](truststream_core::ErrorKind::InvalidInput):
//! NUL characters (PostgreSQL text cannot hold them) and `*` or `\` in
//! `like`/`ilike` patterns (PostgREST reads `*` as `%`, PostgreSQL reads `\`
//! as an escape).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use truststream_core_db::{
    CmpOp, ColumnRef, ColumnType, DbResult, Error, Filter, OrderBy, Query, SelectItem,
    SortDirection, TableSchema, Value,
};

/// Percent-encode everything except RFC 3986 unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Query-string keys PostgREST gives a meaning of their own: a column with
/// one of these names is filtered inside `and=(...)` instead.
const RESERVED_KEYS: &[&str] = &[
    "select",
    "order",
    "limit",
    "offset",
    "or",
    "and",
    "not",
    "columns",
    "on_conflict",
];

/// Why a query cannot be expressed over REST (it needs the SQL backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NeedsSql(pub String);

/// The outcome of compiling a filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Compiled {
    /// These parameters (decoded form; empty: every row).
    Params(Vec<(String, String)>),
    /// The filter can match no row (an empty `or`, an empty `in`, ...).
    Nothing,
}

/// A filter in negation normal form.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    True,
    False,
    Leaf(Leaf),
    And(Vec<Node>),
    Or(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
struct Leaf {
    column: String,
    negate: bool,
    op: LeafOp,
}

#[derive(Debug, Clone, PartialEq)]
enum LeafOp {
    Cmp(CmpOp, String),
    /// `fts|plfts|phfts|wfts[(config)].query`.
    TextSearch(&'static str, Option<String>, String),
    In(Vec<String>),
    IsNull,
}

/// The bare column name of `c`, which must belong to `table`.
fn column_of(table: &str, c: &ColumnRef) -> Result<String, NeedsSql> {
    match &c.table {
        Some(t) if t != table => Err(NeedsSql(format!(
            "the column {c} belongs to another table (a join)"
        ))),
        _ => Ok(c.column.clone()),
    }
}

/// A value as PostgREST text. Strings are taken as they are; numbers and
/// booleans in their JSON form; arrays and objects as JSON text.
pub(crate) fn value_text(v: &Value) -> DbResult<String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => {
            return Err(Error::invalid_input(
                "null cannot be compared with a value; use is_null / is_not_null",
            ))
        }
        Value::Array(_) | Value::Object(_) => serde_json::to_string(v)
            .map_err(|e| Error::invalid_input(format!("value not encodable: {e}")))?,
    };
    if s.contains('\0') {
        return Err(Error::invalid_input(
            "a filter value contains a NUL character, which PostgreSQL text cannot hold",
        ));
    }
    Ok(s)
}

fn like_pattern(v: &Value) -> DbResult<String> {
    let s = value_text(v)?;
    if s.contains('*') || s.contains('\\') {
        return Err(Error::invalid_input(format!(
            "the like/ilike pattern {:?} contains `*` or `\\`, which PostgREST cannot carry \
             literally (it reads `*` as `%`, PostgreSQL reads `\\` as an escape)",
            truststream_core::echo(&s).to_string()
        )));
    }
    Ok(s)
}

/// Full-text search only of text columns, as the SQL engine and the
/// conformance suite mean it: PostgREST would also search a JSON column
/// (`to_tsvector(jsonb)`), so with the table's schema known the provider
/// refuses that itself. `Ok` when `filter` has no such search.
pub(crate) fn check_text_search(schema: &TableSchema, filter: &Filter) -> DbResult<()> {
    match filter {
        Filter::TextSearch { column, kind, .. } => match schema.find(&column.column) {
            Some(d) if d.ty != ColumnType::Text => Err(Error::invalid_input(format!(
                "{} needs a text column; {column} has type {}",
                kind.name(),
                truststream_core_db::sql::compile::type_name(d.ty)
            ))),
            _ => Ok(()),
        },
        Filter::And(fs) | Filter::Or(fs) => {
            fs.iter().try_for_each(|f| check_text_search(schema, f))
        }
        Filter::Not(f) => check_text_search(schema, f),
        _ => Ok(()),
    }
}

/// Whether `filter` searches text anywhere.
pub(crate) fn has_text_search(filter: &Filter) -> bool {
    match filter {
        Filter::TextSearch { .. } => true,
        Filter::And(fs) | Filter::Or(fs) => fs.iter().any(has_text_search),
        Filter::Not(f) => has_text_search(f),
        _ => false,
    }
}

type Step<T> = Result<DbResult<T>, NeedsSql>;

fn nnf(table: &str, f: &Filter, negated: bool) -> Step<Node> {
    Ok(Ok(match f {
        Filter::Cmp {
            column,
            op: CmpOp::Overlaps,
            value: Value::Array(items),
        } => {
            // PostgREST's `ov` is PostgreSQL's `&&`, which exists for native
            // arrays only, not for the JSON columns TrustStream creates. An
            // overlap of scalars is "contains one of them", which PostgREST
            // runs on jsonb: `or=(c.cs.[a],c.cs.[b])`. Nothing overlaps an
            // empty list (a null column stays unknown, as with `in ()`).
            if items.is_empty() {
                return nnf(
                    table,
                    &Filter::In {
                        column: column.clone(),
                        values: Vec::new(),
                    },
                    negated,
                );
            }
            let any = Filter::Or(
                items
                    .iter()
                    .map(|v| Filter::Cmp {
                        column: column.clone(),
                        op: CmpOp::Contains,
                        value: Value::Array(vec![v.clone()]),
                    })
                    .collect(),
            );
            return nnf(table, &any, negated);
        }
        Filter::Cmp { column, op, value } => {
            let column = column_of(table, column)?;
            let text = match op {
                CmpOp::Like | CmpOp::ILike => like_pattern(value),
                CmpOp::Contains | CmpOp::ContainedBy => json_text(value),
                CmpOp::Overlaps => array_literal(value),
                CmpOp::Eq | CmpOp::Ne | CmpOp::Gt | CmpOp::Gte | CmpOp::Lt | CmpOp::Lte => {
                    value_text(value)
                }
                other => {
                    return Err(NeedsSql(format!(
                        "the operator {} has no PostgREST form here",
                        other.name()
                    )))
                }
            };
            let text = match text {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            Node::Leaf(Leaf {
                column,
                negate: negated,
                op: LeafOp::Cmp(*op, text),
            })
        }
        Filter::In { column, values } => {
            let column = column_of(table, column)?;
            if values.is_empty() {
                // `x in ()` is false for a non-null x and unknown for null:
                // its negation matches exactly the non-null values.
                return Ok(Ok(if negated {
                    Node::Leaf(Leaf {
                        column,
                        negate: true,
                        op: LeafOp::IsNull,
                    })
                } else {
                    Node::False
                }));
            }
            let texts = match values.iter().map(value_text).collect::<DbResult<Vec<_>>>() {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            Node::Leaf(Leaf {
                column,
                negate: negated,
                op: LeafOp::In(texts),
            })
        }
        Filter::NotIn { column, values } => {
            return nnf(
                table,
                &Filter::In {
                    column: column.clone(),
                    values: values.clone(),
                },
                !negated,
            )
        }
        Filter::IsNull { column } => Node::Leaf(Leaf {
            column: column_of(table, column)?,
            negate: negated,
            op: LeafOp::IsNull,
        }),
        Filter::IsNotNull { column } => Node::Leaf(Leaf {
            column: column_of(table, column)?,
            negate: !negated,
            op: LeafOp::IsNull,
        }),
        Filter::And(parts) | Filter::Or(parts) => {
            let is_and = matches!(f, Filter::And(_)) != negated;
            let mut items = Vec::with_capacity(parts.len());
            for p in parts {
                match nnf(table, p, negated)? {
                    Ok(n) => items.push(n),
                    Err(e) => return Ok(Err(e)),
                }
            }
            fold(is_and, items)
        }
        Filter::Not(inner) => return nnf(table, inner, !negated),
        Filter::TextSearch {
            column,
            query,
            kind,
            config,
        } => {
            if query.contains('\0') {
                return Ok(Err(Error::invalid_input(
                    "a search text contains a NUL character, which PostgreSQL text cannot hold",
                )));
            }
            Node::Leaf(Leaf {
                column: column_of(table, column)?,
                negate: negated,
                op: LeafOp::TextSearch(kind.name(), config.clone(), query.clone()),
            })
        }
        _ => return Err(NeedsSql("a filter with no PostgREST form".into())),
    }))
}

/// Folds constants and flattens nested groups of the same kind.
fn fold(is_and: bool, items: Vec<Node>) -> Node {
    let (unit, zero) = if is_and {
        (Node::True, Node::False)
    } else {
        (Node::False, Node::True)
    };
    let mut out = Vec::with_capacity(items.len());
    for n in items {
        if n == unit {
            continue;
        }
        if n == zero {
            return zero;
        }
        match n {
            Node::And(v) if is_and => out.extend(v),
            Node::Or(v) if !is_and => out.extend(v),
            other => out.push(other),
        }
    }
    match out.len() {
        0 => unit,
        1 => out.pop().unwrap_or(unit),
        _ if is_and => Node::And(out),
        _ => Node::Or(out),
    }
}

/// The JSON text of a `cs`/`cd` value (a jsonb document for PostgREST).
fn json_text(v: &Value) -> DbResult<String> {
    let s = serde_json::to_string(v)
        .map_err(|e| Error::invalid_input(format!("value not encodable: {e}")))?;
    if s.contains("\\u0000") {
        return Err(Error::invalid_input(
            "a filter value contains a NUL character, which PostgreSQL text cannot hold",
        ));
    }
    Ok(s)
}

/// An `ov` value (an array of scalars, validated) as a PostgreSQL array
/// literal `{"a","b",1}`: strings double-quoted with `\` escapes.
fn array_literal(v: &Value) -> DbResult<String> {
    let items = v
        .as_array()
        .ok_or_else(|| Error::invalid_input("ov (overlaps) needs an array"))?;
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        let t = value_text(item)?;
        parts.push(if item.is_string() { quote(&t) } else { t });
    }
    Ok(format!("{{{}}}", parts.join(",")))
}

/// Double-quotes `s` with `\` before `"` and `\`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Whether a value inside `or=(...)` must be quoted.
fn needs_quote(s: &str) -> bool {
    s.is_empty()
        || s.starts_with(char::is_whitespace)
        || s.ends_with(char::is_whitespace)
        || s.contains([',', '(', ')', '"', '\\', '{', '}'])
}

/// `op.value` of a leaf; `in_logic`: inside `or=(...)`.
fn leaf_op(leaf: &Leaf, in_logic: bool) -> String {
    let mut s = String::new();
    if leaf.negate {
        s.push_str("not.");
    }
    match &leaf.op {
        LeafOp::Cmp(op, v) => {
            s.push_str(op.name());
            s.push('.');
            if in_logic && needs_quote(v) {
                s.push_str(&quote(v));
            } else {
                s.push_str(v);
            }
        }
        LeafOp::In(values) => {
            s.push_str("in.(");
            let quoted: Vec<String> = values.iter().map(|v| quote(v)).collect();
            s.push_str(&quoted.join(","));
            s.push(')');
        }
        LeafOp::IsNull => s.push_str("is.null"),
        LeafOp::TextSearch(op, config, q) => {
            s.push_str(op);
            if let Some(c) = config {
                s.push('(');
                s.push_str(c);
                s.push(')');
            }
            s.push('.');
            if in_logic && needs_quote(q) {
                s.push_str(&quote(q));
            } else {
                s.push_str(q);
            }
        }
    }
    s
}

fn logic_item(n: &Node) -> String {
    match n {
        Node::Leaf(l) => format!("{}.{}", l.column, leaf_op(l, true)),
        Node::And(items) => format!("and({})", logic_list(items)),
        Node::Or(items) => format!("or({})", logic_list(items)),
        // Folded away before rendering; kept total for safety.
        Node::True => "and()".into(),
        Node::False => "or()".into(),
    }
}

fn logic_list(items: &[Node]) -> String {
    items.iter().map(logic_item).collect::<Vec<_>>().join(",")
}

fn top_level(n: &Node, out: &mut Vec<(String, String)>) {
    match n {
        Node::Leaf(l) if !RESERVED_KEYS.contains(&l.column.as_str()) => {
            out.push((l.column.clone(), leaf_op(l, false)));
        }
        Node::Leaf(_) => out.push(("and".into(), format!("({})", logic_item(n)))),
        Node::And(items) => items.iter().for_each(|i| top_level(i, out)),
        Node::Or(items) => out.push(("or".into(), format!("({})", logic_list(items)))),
        Node::True | Node::False => {}
    }
}

/// Compiles a filter on `table` into query parameters.
pub(crate) fn filter(table: &str, f: Option<&Filter>) -> Result<DbResult<Compiled>, NeedsSql> {
    let Some(f) = f else {
        return Ok(Ok(Compiled::Params(Vec::new())));
    };
    if let Err(e) = f.validate() {
        return Ok(Err(e));
    }
    let node = match nnf(table, f, false)? {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(match node {
        Node::False => Compiled::Nothing,
        n => {
            let mut out = Vec::new();
            top_level(&n, &mut out);
            Compiled::Params(out)
        }
    }))
}

/// `select=` of a query (`None`: every column).
fn select(table: &str, items: &[SelectItem]) -> Result<DbResult<Option<String>>, NeedsSql> {
    if items.is_empty() {
        return Ok(Ok(None));
    }
    let mut parts = Vec::with_capacity(items.len());
    let mut names = std::collections::HashSet::new();
    for item in items {
        match item {
            SelectItem::All { table: t } => match t {
                Some(t) if t != table => {
                    return Err(NeedsSql(format!("select {t}.* names another table")))
                }
                _ => parts.push("*".to_string()),
            },
            SelectItem::Column { column, alias } => {
                let c = column_of(table, column)?;
                let name = alias.clone().unwrap_or_else(|| c.clone());
                if !names.insert(name.clone()) {
                    return Ok(Err(Error::invalid_input(format!(
                        "two output columns named {name} in the select list; rename one with an alias"
                    ))));
                }
                match alias {
                    Some(a) if *a != c => parts.push(format!("{a}:{c}")),
                    _ => parts.push(c),
                }
            }
            SelectItem::Aggregate { .. } => {
                return Err(NeedsSql("aggregates in the select list".into()))
            }
        }
    }
    Ok(Ok(Some(parts.join(","))))
}

fn order_key(table: &str, o: &OrderBy) -> Result<String, NeedsSql> {
    let c = column_of(table, &o.column)?;
    let dir = match o.direction {
        SortDirection::Asc => "asc",
        SortDirection::Desc => "desc",
    };
    let nulls = if o.nulls_first() {
        "nullsfirst"
    } else {
        "nullslast"
    };
    Ok(format!("{c}.{dir}.{nulls}"))
}

/// Compiles a read of `table`.
pub(crate) fn read(table: &str, q: &Query) -> Result<DbResult<Compiled>, NeedsSql> {
    if let Err(e) = q.validate() {
        return Ok(Err(e));
    }
    if !q.joins.is_empty() {
        return Err(NeedsSql("joins".into()));
    }
    if !q.group_by.is_empty() {
        return Err(NeedsSql("group_by".into()));
    }
    let select = match select(table, &q.select)? {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let order = q
        .order_by
        .iter()
        .map(|o| order_key(table, o))
        .collect::<Result<Vec<_>, _>>()?;
    let effective = match q.effective_filter() {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    let compiled = match filter(table, effective.as_ref())? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let Compiled::Params(mut params) = compiled else {
        return Ok(Ok(Compiled::Nothing));
    };
    if let Some(s) = select {
        params.insert(0, ("select".into(), s));
    }
    if !order.is_empty() {
        params.push(("order".into(), order.join(",")));
    }
    if let Some(l) = q.limit {
        params.push(("limit".into(), l.to_string()));
    }
    if let Some(o) = q.offset {
        params.push(("offset".into(), o.to_string()));
    }
    Ok(Ok(Compiled::Params(params)))
}

/// Percent-encodes decoded parameters into a query string.
pub(crate) fn query_string(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, ENCODE),
                utf8_percent_encode(v, ENCODE)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `columns=a,b` for a bulk insert (the union of the rows' keys, in
/// first-seen order). The names are validated identifiers, so they go
/// unquoted: PostgREST and serve accept both forms, postrust-server only
/// this one.
pub(crate) fn columns_param<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use truststream_core_db::{and, col, not, or, Cursor, ErrorKind, NullsOrder};

    fn params(f: Filter) -> Vec<(String, String)> {
        match filter("t", Some(&f)).unwrap().unwrap() {
            Compiled::Params(p) => p,
            Compiled::Nothing => panic!("nothing"),
        }
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn comparisons_at_top_level_take_raw_values() {
        assert_eq!(params(col("a").eq(1)), [p("a", "eq.1")]);
        assert_eq!(params(col("a").ne("x,y")), [p("a", "neq.x,y")]);
        assert_eq!(params(col("a").gt(1.5)), [p("a", "gt.1.5")]);
        assert_eq!(params(col("a").gte(true)), [p("a", "gte.true")]);
        assert_eq!(params(col("a").lt("(")), [p("a", "lt.(")]);
        assert_eq!(params(col("a").lte("\"")), [p("a", "lte.\"")]);
        assert_eq!(params(col("a").like("a%_")), [p("a", "like.a%_")]);
        assert_eq!(params(col("a").ilike("A%")), [p("a", "ilike.A%")]);
        assert_eq!(params(col("a").is_null()), [p("a", "is.null")]);
        assert_eq!(params(col("a").is_not_null()), [p("a", "not.is.null")]);
        assert_eq!(params(col("t.a").eq(1)), [p("a", "eq.1")], "own table");
        assert_eq!(
            params(col("a").eq(json!({"k": [1, 2]}))),
            [p("a", "eq.{\"k\":[1,2]}")]
        );
    }

    #[test]
    fn json_operators_and_text_search_pass_through() {
        use serde_json::json;
        use truststream_core_db::TextSearchKind;
        assert_eq!(
            params(col("tags").contains(json!(["a", "b,c"]))),
            [p("tags", "cs.[\"a\",\"b,c\"]")]
        );
        assert_eq!(
            params(col("meta").contained_by(json!({"k": 1}))),
            [p("meta", "cd.{\"k\":1}")]
        );
        assert_eq!(
            params(col("tags").contains("a")),
            [p("tags", "cs.\"a\"")],
            "a scalar document is JSON text"
        );
        // `ov` goes as "contains one of them" (PostgREST's `ov` is for
        // native arrays only); each element is a JSON array of one.
        assert_eq!(
            params(col("tags").overlaps(["a", "b\"c"])),
            [p(
                "or",
                "(tags.cs.\"[\\\"a\\\"]\",tags.cs.\"[\\\"b\\\\\\\"c\\\"]\")"
            )]
        );
        assert_eq!(
            params(not(col("tags").overlaps(["a"]))),
            [p("tags", "not.cs.[\"a\"]")],
            "a negated overlap is contains none"
        );
        assert!(
            matches!(
                filter("t", Some(&col("tags").overlaps(Vec::<&str>::new()))),
                Ok(Ok(Compiled::Nothing))
            ),
            "nothing overlaps an empty list"
        );
        assert_eq!(
            params(not(col("body").text_search(
                "fat cats",
                TextSearchKind::Websearch,
                Some("english")
            ))),
            [p("body", "not.wfts(english).fat cats")]
        );
        assert_eq!(
            params(or([
                col("body").text_search("a,b", TextSearchKind::Plain, None),
                col("tags").contains(json!(["x"])),
            ])),
            [p("or", "(body.plfts.\"a,b\",tags.cs.\"[\\\"x\\\"]\")")]
        );
    }

    #[test]
    fn and_splits_into_parameters_and_not_goes_to_leaves() {
        assert_eq!(
            params(and([col("a").eq(1), col("b").is_null()])),
            [p("a", "eq.1"), p("b", "is.null")]
        );
        assert_eq!(params(not(col("a").eq(1))), [p("a", "not.eq.1")]);
        assert_eq!(params(not(not(col("a").eq(1)))), [p("a", "eq.1")]);
        // De Morgan: not(a or b) = not a and not b.
        assert_eq!(
            params(not(or([col("a").eq(1), col("b").gt(2)]))),
            [p("a", "not.eq.1"), p("b", "not.gt.2")]
        );
        assert_eq!(
            params(not(and([col("a").eq(1), col("b").gt(2)]))),
            [p("or", "(a.not.eq.1,b.not.gt.2)")]
        );
    }

    #[test]
    fn nested_or_and() {
        assert_eq!(
            params(or([
                col("a").eq(1),
                and([col("b").gt(2), or([col("c").lt(3), col("d").is_null()])]),
            ])),
            [p("or", "(a.eq.1,and(b.gt.2,or(c.lt.3,d.is.null)))")]
        );
        assert_eq!(
            params(and([
                or([col("a").eq(1), col("b").eq(2)]),
                or([col("c").eq(3), col("d").eq(4)])
            ])),
            [p("or", "(a.eq.1,b.eq.2)"), p("or", "(c.eq.3,d.eq.4)")]
        );
    }

    #[test]
    fn values_in_logic_trees_are_quoted_when_reserved() {
        assert_eq!(
            params(or([col("a").eq("x,y"), col("b").eq("plain")])),
            [p("or", "(a.eq.\"x,y\",b.eq.plain)")]
        );
        assert_eq!(
            params(or([col("a").eq("q\"b\\)"), col("b").eq(" sp")])),
            [p("or", "(a.eq.\"q\\\"b\\\\)\",b.eq.\" sp\")")]
        );
        assert_eq!(
            params(or([col("a").eq(""), col("b").eq("{x}")])),
            [p("or", "(a.eq.\"\",b.eq.\"{x}\")")]
        );
    }

    #[test]
    fn in_lists_always_quote() {
        assert_eq!(
            params(col("a").is_in(["x", "y,z", "q\"", "b\\s"])),
            [p("a", "in.(\"x\",\"y,z\",\"q\\\"\",\"b\\\\s\")")]
        );
        assert_eq!(params(col("a").is_in([1, 2])), [p("a", "in.(\"1\",\"2\")")]);
        assert_eq!(params(col("a").not_in([1])), [p("a", "not.in.(\"1\")")]);
    }

    #[test]
    fn empty_groups_and_lists_fold() {
        assert_eq!(
            filter("t", Some(&or([]))).unwrap().unwrap(),
            Compiled::Nothing
        );
        assert_eq!(params(and([])), Vec::<(String, String)>::new());
        assert_eq!(
            filter("t", Some(&col("a").is_in(Vec::<i64>::new())))
                .unwrap()
                .unwrap(),
            Compiled::Nothing
        );
        // An empty `not in` matches exactly the non-null values.
        assert_eq!(
            params(col("a").not_in(Vec::<i64>::new())),
            [p("a", "not.is.null")]
        );
        assert_eq!(
            params(not(col("a").is_in(Vec::<i64>::new()))),
            [p("a", "not.is.null")]
        );
        assert_eq!(
            params(or([col("a").is_in(Vec::<i64>::new()), col("b").eq(1)])),
            [p("b", "eq.1")]
        );
        assert_eq!(
            filter("t", Some(&and([col("b").eq(1), or([])])))
                .unwrap()
                .unwrap(),
            Compiled::Nothing
        );
        assert_eq!(params(not(or([]))), Vec::<(String, String)>::new());
    }

    #[test]
    fn reserved_column_names_go_inside_and() {
        assert_eq!(params(col("order").eq(1)), [p("and", "(order.eq.1)")]);
        assert_eq!(
            params(col("select").is_null()),
            [p("and", "(select.is.null)")]
        );
    }

    #[test]
    fn refused_values() {
        for f in [
            col("a").eq("nul\0here"),
            col("a").is_in(["ok", "n\0"]),
            col("a").like("a*b"),
            col("a").ilike("a\\%"),
        ] {
            let e = filter("t", Some(&f)).unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{f:?}");
        }
        assert!(filter("t", Some(&col("a").eq(Value::Null)))
            .unwrap()
            .is_ok());
        let e = filter("t", Some(&col("a b").eq(1))).unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn other_tables_need_sql() {
        assert!(filter("t", Some(&col("u.a").eq(1))).is_err());
        let q = Query::new().left_join("u", "t.id", "u.t_id");
        assert!(read("t", &q).is_err());
        let q = Query::new().select_item(SelectItem::aggregate(
            truststream_core_db::AggFunc::Count,
            None,
            "n",
        ));
        assert!(read("t", &q).is_err());
        assert!(read("t", &Query::new().select(["u.*"])).is_err());
        let dup = read("t", &Query::new().select(["name", "status as name"]));
        assert_eq!(dup.unwrap().unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn reads_render_select_order_limit_offset() {
        let q = Query::new()
            .select(["id", "name as n", "t.score"])
            .filter(col("a").eq(1))
            .order_by_desc("score")
            .order_by_asc("id")
            .nulls(NullsOrder::First)
            .limit(10)
            .offset(20);
        let Compiled::Params(ps) = read("t", &q).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(
            ps,
            [
                p("select", "id,n:name,score"),
                p("a", "eq.1"),
                p("order", "score.desc.nullsfirst,id.asc.nullsfirst"),
                p("limit", "10"),
                p("offset", "20"),
            ]
        );
        let q = Query::new()
            .order_by_asc("id")
            .after(Cursor(vec![json!(5)]));
        let Compiled::Params(ps) = read("t", &q).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(ps, [p("id", "gt.5"), p("order", "id.asc.nullslast")]);
    }

    #[test]
    fn encoding_keeps_reserved_characters_inside_values() {
        let qs = query_string(&[p("a", "eq.x+y &b=c#d%e é,(\"")]);
        assert_eq!(qs, "a=eq.x%2By%20%26b%3Dc%23d%25e%20%C3%A9%2C%28%22");
        assert_eq!(
            query_string(&[p("not.or", "(a.eq.1)")]),
            "not.or=%28a.eq.1%29"
        );
    }

    #[test]
    fn columns_are_quoted() {
        let cols = ["a".to_string(), "b".to_string()];
        assert_eq!(columns_param(&cols), "a,b");
    }
}
