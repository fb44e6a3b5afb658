//! The PostgREST query-string grammar: `select`, filters (`col=op.value`,
//! `or=(...)`, `and=(...)`), `order`, `limit`/`offset`, `columns`,
//! `on_conflict`, and the `Prefer` header. Parsing only: names are checked
//! against the table's schema and values typed in `plan`.

use truststream_core_db::TextSearchKind;

use super::error::{ApiError, ApiResult};

/// Longest query string accepted (bytes, still URL-encoded).
pub(crate) const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Deepest nesting of `or(...)`/`and(...)` accepted.
pub(crate) const MAX_LOGIC_DEPTH: usize = 16;
/// Most select items, filters or `in` values accepted.
pub(crate) const MAX_ITEMS: usize = 1000;

/// The query string as ordered key/value pairs (`+` is a space, then
/// percent-decoding).
pub(crate) fn pairs(raw: &str) -> ApiResult<Vec<(String, String)>> {
    if raw.len() > MAX_QUERY_BYTES {
        return Err(ApiError::new(
            axum::http::StatusCode::URI_TOO_LONG,
            "PGRST100",
            format!("the query string is longer than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    let decode = |s: &str| -> ApiResult<String> {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ApiError::bad_query("the query string is not valid UTF-8"))
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Removes whitespace outside double quotes.
fn strip_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if quoted || !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// Splits on `sep` at depth 0 (outside `()`/`{}` and double quotes).
fn split_top(s: &str, sep: char) -> ApiResult<Vec<String>> {
    let mut parts = Vec::new();
    let mut depth: i32 = 0;
    let mut quoted = false;
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
                continue;
            }
            '"' => quoted = !quoted,
            '(' | '{' if !quoted => depth += 1,
            ')' | '}' if !quoted => {
                depth -= 1;
                if depth < 0 {
                    return Err(ApiError::bad_query(format!(
                        "unbalanced parentheses in \"{}\"",
                        truststream_core::echo(s)
                    )));
                }
            }
            _ => {}
        }
        if c == sep && depth == 0 && !quoted {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if depth != 0 || quoted {
        return Err(ApiError::bad_query(format!(
            "unbalanced parentheses or quotes in \"{}\"",
            truststream_core::echo(s)
        )));
    }
    parts.push(cur);
    if parts.len() > MAX_ITEMS {
        return Err(ApiError::bad_query(format!(
            "more than {MAX_ITEMS} items in one list"
        )));
    }
    Ok(parts)
}

/// A `::type` cast applied to a selected value after the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cast {
    Text,
    Int,
    Float,
    Bool,
    Json,
}

/// One step of a JSON path: `->key` (JSON) or `->>key` (text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathStep {
    pub key: String,
    pub as_text: bool,
}

/// One item of `select=`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SelectField {
    /// `*`.
    All,
    /// `alias:column->a->>b::cast`.
    Column {
        column: String,
        path: Vec<PathStep>,
        cast: Option<Cast>,
        alias: Option<String>,
    },
    /// `alias:table!hint!inner(fields)`: an embedded resource.
    Embed(Embed),
}

/// An embedded resource of `select=`: rows of another table related by a
/// foreign key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Embed {
    /// `alias:` before the name.
    pub alias: Option<String>,
    /// The table embedded.
    pub table: String,
    /// `!hint`: a foreign-key constraint name or column that picks one of
    /// several relationships.
    pub hint: Option<String>,
    /// `!inner`: parents without a related row are left out.
    pub inner: bool,
    /// `...table(...)`: the embedded columns are spread into the parent.
    pub spread: bool,
    /// What to select of the embedded rows; empty (`table()`): nothing,
    /// and the embed is left out of the answer.
    pub fields: Vec<SelectField>,
}

impl Embed {
    /// The key of the embed in the parent row (and in `<name>.filter`
    /// parameters): the alias, else the table name.
    pub fn name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.table)
    }
}

/// Deepest nesting of embedded resources accepted.
pub(crate) const MAX_EMBED_DEPTH: usize = 4;

/// Parses `select=`; aggregates are refused with PostgREST's code.
pub(crate) fn select(raw: &str) -> ApiResult<Vec<SelectField>> {
    let s = strip_ws(raw);
    if s.is_empty() {
        return Ok(vec![SelectField::All]);
    }
    select_list(raw, &s, 0)
}

fn select_list(raw: &str, s: &str, depth: usize) -> ApiResult<Vec<SelectField>> {
    if depth > MAX_EMBED_DEPTH {
        return Err(ApiError::bad_query(format!(
            "embedded resources nested deeper than {MAX_EMBED_DEPTH} levels"
        )));
    }
    let mut out = Vec::new();
    for item in split_top(s, ',')? {
        if item.is_empty() {
            return Err(ApiError::bad_query(format!(
                "empty item in select=\"{}\"",
                truststream_core::echo(raw)
            )));
        }
        out.push(select_item(raw, &item, depth)?);
    }
    Ok(out)
}

fn select_item(raw: &str, item: &str, depth: usize) -> ApiResult<SelectField> {
    if item == "*" {
        return Ok(SelectField::All);
    }
    if let Some(open) = item.find('(') {
        let head = &item[..open];
        let (spread, head) = match head.strip_prefix("...") {
            Some(h) => (true, h),
            None => (false, head),
        };
        let (alias, target) = match head.split_once(':') {
            Some((a, t)) => (Some(a), t),
            None => (None, head),
        };
        let mut parts = target.split('!');
        let name = parts.next().unwrap_or_default();
        if matches!(name, "count" | "sum" | "avg" | "min" | "max")
            || item.contains(".count(")
            || item.ends_with(")::int")
        {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "PGRST123",
                "Use of aggregate functions is not allowed",
            )
            .hint("aggregates in select= are not served by this server; count rows with Prefer: count=exact"));
        }
        let inside = item[open + 1..].strip_suffix(')').ok_or_else(|| {
            ApiError::bad_query(format!(
                "\"{}\" is not an embedded resource like table(columns)",
                truststream_core::echo(item)
            ))
        })?;
        check_name(name, "table")?;
        let mut embed = Embed {
            alias: alias.map(str::to_string),
            table: name.to_string(),
            hint: None,
            inner: false,
            spread,
            fields: Vec::new(),
        };
        if let Some(a) = alias {
            check_name(a, "alias")?;
        }
        for m in parts {
            match m {
                "inner" => embed.inner = true,
                "left" => embed.inner = false,
                hint if embed.hint.is_none() => {
                    check_name(hint, "relationship hint")?;
                    embed.hint = Some(hint.to_string());
                }
                other => {
                    return Err(ApiError::bad_query(format!(
                        "\"{}\": one hint per embedded resource (then !inner or !left)",
                        truststream_core::echo(other)
                    )))
                }
            }
        }
        // `table()` (an empty embed) filters with `!inner` and is left
        // out of the answer.
        if !inside.is_empty() {
            embed.fields = select_list(raw, inside, depth + 1)?;
        }
        return Ok(SelectField::Embed(embed));
    }
    let (alias, rest) = match item.split_once(':') {
        // `a::int` has no alias; `al:a::int` has one.
        Some((a, r)) if !a.is_empty() && !r.starts_with(':') => (Some(a.to_string()), r),
        _ => (None, item),
    };
    let (expr, cast) = match rest.split_once("::") {
        Some((e, c)) => (e, Some(cast(c)?)),
        None => (rest, None),
    };
    let (column, path) = json_path(expr)?;
    if let Some(a) = &alias {
        check_name(a, "alias")?;
    }
    Ok(SelectField::Column {
        column,
        path,
        cast,
        alias,
    })
}

fn cast(c: &str) -> ApiResult<Cast> {
    Ok(match c.to_ascii_lowercase().as_str() {
        "text" | "varchar" | "char" | "character varying" => Cast::Text,
        "int" | "int2" | "int4" | "int8" | "integer" | "bigint" | "smallint" => Cast::Int,
        "float" | "float4" | "float8" | "real" | "double precision" | "numeric" | "decimal" => {
            Cast::Float
        }
        "bool" | "boolean" => Cast::Bool,
        "json" | "jsonb" => Cast::Json,
        _ => {
            return Err(ApiError::unsupported(format!(
                "the cast ::{} is not supported; use text, int, float, bool or json",
                truststream_core::echo(c)
            )))
        }
    })
}

/// Splits `col->a->>b` into the column and the path.
pub(crate) fn json_path(expr: &str) -> ApiResult<(String, Vec<PathStep>)> {
    let mut path = Vec::new();
    let (column, mut rest) = match expr.find("->") {
        Some(i) => (&expr[..i], &expr[i..]),
        None => (expr, ""),
    };
    while !rest.is_empty() {
        let (as_text, after) = if let Some(r) = rest.strip_prefix("->>") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("->") {
            (false, r)
        } else {
            return Err(ApiError::bad_query(format!(
                "malformed JSON path \"{}\"",
                truststream_core::echo(expr)
            )));
        };
        let end = after.find("->").unwrap_or(after.len());
        let key = after[..end]
            .trim_matches('\'')
            .trim_matches('"')
            .to_string();
        if key.is_empty() {
            return Err(ApiError::bad_query(format!(
                "empty key in JSON path \"{}\"",
                truststream_core::echo(expr)
            )));
        }
        path.push(PathStep { key, as_text });
        rest = &after[end..];
    }
    check_name(column, "column")?;
    Ok((column.to_string(), path))
}

/// Names must be identifiers (checked again against the schema later).
fn check_name(name: &str, what: &str) -> ApiResult<()> {
    truststream_core_db::ident::validate(name).map_err(|_| {
        ApiError::bad_query(format!(
            "\"{}\" is not a valid {what} name",
            truststream_core::echo(name)
        ))
    })
}

/// An operator of a filter leaf.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LeafOp {
    Eq(String),
    Neq(String),
    Gt(String),
    Gte(String),
    Lt(String),
    Lte(String),
    Like(String),
    ILike(String),
    In(Vec<String>),
    /// `is.null|not_null|true|false|unknown`.
    Is(String),
    IsDistinct(String),
    /// `like(any)` / `ilike(all)` ...: (case-insensitive, all, patterns).
    LikeMany {
        ci: bool,
        all: bool,
        patterns: Vec<String>,
    },
    /// `cs.<json or {a,b}>`: the raw value (read in `plan`).
    Contains(String),
    /// `cd.<json or {a,b}>`.
    ContainedBy(String),
    /// `ov.{a,b}` (or a JSON array).
    Overlaps(String),
    /// `fts|plfts|phfts|wfts[(config)].query`.
    TextSearch {
        kind: TextSearchKind,
        config: Option<String>,
        query: String,
    },
    /// An operator core-db cannot express (ranges, `match`, ...).
    Unsupported(String),
}

/// A condition tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    Leaf {
        column: String,
        path: Vec<PathStep>,
        negate: bool,
        op: LeafOp,
    },
    Logic {
        or: bool,
        negate: bool,
        items: Vec<Cond>,
    },
}

/// Parses the value part of `col=<value>` (`not.eq.5`, `in.(1,2)`).
pub(crate) fn filter(column_expr: &str, value: &str) -> ApiResult<Cond> {
    let (column, path) = json_path(&strip_ws(column_expr))?;
    let (negate, rest) = match value.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let op = leaf_op(rest)?;
    Ok(Cond::Leaf {
        column,
        path,
        negate,
        op,
    })
}

fn leaf_op(s: &str) -> ApiResult<LeafOp> {
    // A modifier in parentheses may hold a dot (`fts(pg_catalog.english)`):
    // the operator ends after its closing parenthesis.
    let split = match (s.find('('), s.find('.')) {
        (Some(open), Some(dot)) if open < dot => s[open..]
            .find(").")
            .map(|close| (&s[..open + close + 1], &s[open + close + 2..])),
        _ => s.split_once('.'),
    };
    let (op, v) = split.ok_or_else(|| {
        ApiError::bad_query(format!(
            "\"{}\" is not an operator and value (like eq.5)",
            truststream_core::echo(s)
        ))
    })?;
    let v = v.to_string();
    // `fts(english)` style config suffix.
    let base = op.split('(').next().unwrap_or(op);
    Ok(match base {
        "eq" => LeafOp::Eq(v),
        "neq" => LeafOp::Neq(v),
        "gt" => LeafOp::Gt(v),
        "gte" => LeafOp::Gte(v),
        "lt" => LeafOp::Lt(v),
        "lte" => LeafOp::Lte(v),
        "like" | "ilike" if op == base => {
            if base == "like" {
                LeafOp::Like(v)
            } else {
                LeafOp::ILike(v)
            }
        }
        "like" | "ilike" => {
            let all = match &op[base.len()..] {
                "(any)" => false,
                "(all)" => true,
                other => {
                    return Err(ApiError::bad_query(format!(
                        "unknown modifier {}{} (use (any) or (all))",
                        base,
                        truststream_core::echo(other)
                    )))
                }
            };
            let inner = v
                .strip_prefix('{')
                .and_then(|x| x.strip_suffix('}'))
                .ok_or_else(|| ApiError::bad_query(format!("{op} needs a list like {{a*,b*}}")))?;
            LeafOp::LikeMany {
                ci: base == "ilike",
                all,
                patterns: list_values(inner)?,
            }
        }
        "in" => {
            let inner = v
                .strip_prefix('(')
                .and_then(|x| x.strip_suffix(')'))
                .ok_or_else(|| ApiError::bad_query("in needs a list like in.(1,2,3)"))?;
            LeafOp::In(list_values(inner)?)
        }
        "is" => LeafOp::Is(v.to_ascii_lowercase()),
        "isdistinct" => LeafOp::IsDistinct(v),
        "cs" | "cd" | "ov" if op == base => match base {
            "cs" => LeafOp::Contains(v),
            "cd" => LeafOp::ContainedBy(v),
            _ => LeafOp::Overlaps(v),
        },
        "fts" | "plfts" | "phfts" | "wfts" => {
            let kind = match base {
                "fts" => TextSearchKind::Tsquery,
                "plfts" => TextSearchKind::Plain,
                "phfts" => TextSearchKind::Phrase,
                _ => TextSearchKind::Websearch,
            };
            let config = match &op[base.len()..] {
                "" => None,
                m => {
                    let name = m
                        .strip_prefix('(')
                        .and_then(|x| x.strip_suffix(')'))
                        .ok_or_else(|| {
                            ApiError::bad_query(format!(
                                "\"{}\" is not {base} or {base}(config)",
                                truststream_core::echo(op)
                            ))
                        })?;
                    truststream_core_db::validate_text_search_config(name).map_err(|_| {
                        ApiError::bad_query(format!(
                            "\"{}\" is not a text search configuration name",
                            truststream_core::echo(name)
                        ))
                        .hint("use a name such as english or simple")
                    })?;
                    Some(name.to_string())
                }
            };
            LeafOp::TextSearch {
                kind,
                config,
                query: v,
            }
        }
        "sl" | "sr" | "nxl" | "nxr" | "adj" | "match" | "imatch" if op == base => {
            LeafOp::Unsupported(base.to_string())
        }
        _ => {
            return Err(ApiError::bad_query(format!(
                "unknown operator \"{}\"",
                truststream_core::echo(op)
            )))
        }
    })
}

/// A PostgreSQL array literal's inside (`a,"b,c",3,{x,y}`) as JSON array
/// elements: a double-quoted element is a string (with `\` escapes); an
/// unquoted one is a number when it reads as a JSON number, `true`/`false`
/// a boolean, `{...}` a nested array, anything else a string. `NULL`
/// elements are refused (`None`), as are empty unquoted ones and arrays
/// nested deeper than core-db accepts for a JSON operator.
pub(crate) fn pg_array_items(inner: &str) -> Option<Vec<serde_json::Value>> {
    pg_array_level(inner, 1)
}

fn pg_array_level(inner: &str, depth: usize) -> Option<Vec<serde_json::Value>> {
    use serde_json::Value;
    if depth > truststream_core_db::MAX_JSON_OPERAND_DEPTH {
        return None;
    }
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    let parts = split_top(inner, ',').ok()?;
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let t = p.trim();
        if t.starts_with('"') {
            if t.len() < 2 || !t.ends_with('"') {
                return None;
            }
            out.push(Value::String(unquote(t)));
        } else if let Some(nested) = t.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            out.push(Value::Array(pg_array_level(nested, depth + 1)?));
        } else if t.is_empty() || t.eq_ignore_ascii_case("null") || t.contains(['"', '{', '}']) {
            return None;
        } else if t == "true" || t == "false" {
            out.push(Value::Bool(t == "true"));
        } else if let Ok(n @ Value::Number(_)) = serde_json::from_str::<Value>(t) {
            out.push(n);
        } else {
            out.push(Value::String(t.to_string()));
        }
    }
    Some(out)
}

/// `a,"b,c",d` -> values (quotes removed, `\"` and `\\` unescaped).
fn list_values(inner: &str) -> ApiResult<Vec<String>> {
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    split_top(inner, ',')?
        .into_iter()
        .map(|v| Ok(unquote(&v)))
        .collect()
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// Parses `or=(...)` / `and=(...)` (key `or`, `and`, `not.or`, `not.and`).
pub(crate) fn logic(key: &str, value: &str) -> ApiResult<Cond> {
    let (negate, op) = match key.strip_prefix("not.") {
        Some(k) => (true, k),
        None => (false, key),
    };
    let inner = value
        .trim()
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_query(format!(
                "{op}= needs a parenthesised list, like {op}=(a.eq.1,b.gt.2); got \"{}\"",
                truststream_core::echo(value)
            ))
        })?;
    logic_items(op == "or", negate, inner, 1)
}

fn logic_items(or: bool, negate: bool, inner: &str, depth: usize) -> ApiResult<Cond> {
    if depth > MAX_LOGIC_DEPTH {
        return Err(ApiError::bad_query(format!(
            "or/and nested deeper than {MAX_LOGIC_DEPTH} levels"
        )));
    }
    let mut items = Vec::new();
    for part in split_top(inner, ',')? {
        items.push(logic_item(&part, depth)?);
    }
    Ok(Cond::Logic { or, negate, items })
}

fn logic_item(part: &str, depth: usize) -> ApiResult<Cond> {
    let p = part.trim();
    let (negate, body) = match p.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, p),
    };
    for (name, is_or) in [("or(", true), ("and(", false)] {
        if let Some(rest) = body.strip_prefix(name) {
            let inner = rest.strip_suffix(')').ok_or_else(|| {
                ApiError::bad_query(format!(
                    "unbalanced parentheses in \"{}\"",
                    truststream_core::echo(p)
                ))
            })?;
            return logic_items(is_or, negate, inner, depth + 1);
        }
    }
    // `col.op.value` or `col.not.op.value`.
    let (column, rest) = body.split_once('.').ok_or_else(|| {
        ApiError::bad_query(format!(
            "\"{}\" is not a condition like col.eq.value",
            truststream_core::echo(p)
        ))
    })?;
    let (neg2, rest) = match rest.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (column, path) = json_path(column)?;
    Ok(Cond::Leaf {
        column,
        path,
        negate: negate ^ neg2,
        op: unquote_scalar(leaf_op(rest)?),
    })
}

/// Inside `or=(...)`/`and=(...)` a scalar value may be double-quoted (to
/// carry `,`, `(`, `)` or edge spaces), as PostgREST reads it; at the top
/// level a value is taken literally.
fn unquote_scalar(op: LeafOp) -> LeafOp {
    match op {
        LeafOp::Eq(v) => LeafOp::Eq(unquote(&v)),
        LeafOp::Neq(v) => LeafOp::Neq(unquote(&v)),
        LeafOp::Gt(v) => LeafOp::Gt(unquote(&v)),
        LeafOp::Gte(v) => LeafOp::Gte(unquote(&v)),
        LeafOp::Lt(v) => LeafOp::Lt(unquote(&v)),
        LeafOp::Lte(v) => LeafOp::Lte(unquote(&v)),
        LeafOp::Like(v) => LeafOp::Like(unquote(&v)),
        LeafOp::ILike(v) => LeafOp::ILike(unquote(&v)),
        LeafOp::IsDistinct(v) => LeafOp::IsDistinct(unquote(&v)),
        LeafOp::Contains(v) => LeafOp::Contains(unquote(&v)),
        LeafOp::ContainedBy(v) => LeafOp::ContainedBy(unquote(&v)),
        LeafOp::Overlaps(v) => LeafOp::Overlaps(unquote(&v)),
        LeafOp::TextSearch {
            kind,
            config,
            query,
        } => LeafOp::TextSearch {
            kind,
            config,
            query: unquote(&query),
        },
        other => other,
    }
}

/// One `order=` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderKey {
    pub column: String,
    pub desc: bool,
    pub nulls_first: Option<bool>,
}

/// Parses `order=a.desc.nullslast,b`.
pub(crate) fn order(raw: &str) -> ApiResult<Vec<OrderKey>> {
    let s = strip_ws(raw);
    let mut out = Vec::new();
    for item in split_top(&s, ',')? {
        let mut parts = item.split('.');
        let column = parts.next().unwrap_or_default();
        let (column, path) = json_path(column)?;
        if !path.is_empty() {
            return Err(ApiError::unsupported(
                "ordering by a JSON path is not supported by this database provider",
            ));
        }
        let mut key = OrderKey {
            column,
            desc: false,
            nulls_first: None,
        };
        for m in parts {
            match m {
                "asc" => key.desc = false,
                "desc" => key.desc = true,
                "nullsfirst" => key.nulls_first = Some(true),
                "nullslast" => key.nulls_first = Some(false),
                other => {
                    return Err(ApiError::bad_query(format!(
                        "unknown order modifier \"{}\" (asc, desc, nullsfirst, nullslast)",
                        truststream_core::echo(other)
                    )))
                }
            }
        }
        out.push(key);
    }
    Ok(out)
}

/// Parses `columns="a","b"` (quotes optional).
pub(crate) fn columns(raw: &str) -> ApiResult<Vec<String>> {
    let s = strip_ws(raw);
    split_top(&s, ',')?
        .into_iter()
        .map(|c| {
            let c = unquote(&c);
            check_name(&c, "column")?;
            Ok(c)
        })
        .collect()
}

/// A non-negative integer parameter.
pub(crate) fn number(name: &str, raw: &str) -> ApiResult<u64> {
    raw.trim().parse::<u64>().map_err(|_| {
        ApiError::bad_query(format!(
            "{name}=\"{}\" is not a non-negative integer",
            truststream_core::echo(raw)
        ))
    })
}

/// What `Prefer:` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Prefer {
    pub ret: Option<String>,
    pub count: bool,
    pub resolution: Option<String>,
    pub missing_default: bool,
    pub rollback: bool,
    pub strict: bool,
    pub max_affected: Option<u64>,
    /// The preferences honoured, for `Preference-Applied`.
    pub applied: Vec<String>,
}

/// Parses every `Prefer` header (comma-separated `key=value`).
pub(crate) fn prefer<'a>(values: impl Iterator<Item = &'a str>) -> ApiResult<Prefer> {
    let mut p = Prefer::default();
    for v in values {
        for item in v.split(',') {
            let item = item.trim();
            let (k, val) = item.split_once('=').unwrap_or((item, ""));
            let (k, val) = (k.trim(), val.trim());
            match (k, val) {
                ("return", "minimal" | "representation" | "headers-only") => {
                    p.ret = Some(val.to_string());
                    p.applied.push(item.to_string());
                }
                ("count", "exact" | "planned" | "estimated") => {
                    p.count = true;
                    p.applied.push(item.to_string());
                }
                ("resolution", "merge-duplicates" | "ignore-duplicates") => {
                    p.resolution = Some(val.to_string());
                    p.applied.push(item.to_string());
                }
                ("missing", "default") => {
                    p.missing_default = true;
                    p.applied.push(item.to_string());
                }
                ("tx", "rollback") => {
                    p.rollback = true;
                    p.applied.push(item.to_string());
                }
                ("tx", "commit") => p.applied.push(item.to_string()),
                ("handling", "strict") => {
                    p.strict = true;
                    p.applied.push(item.to_string());
                }
                ("handling", "lenient") => {}
                ("max-affected", n) => {
                    p.max_affected = Some(number("max-affected", n)?);
                    p.applied.push(item.to_string());
                }
                _ => {}
            }
        }
    }
    if !p.strict {
        p.max_affected = None;
        p.applied.retain(|a| !a.starts_with("max-affected"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_text_search_operators() {
        use serde_json::json;
        assert_eq!(
            leaf_op("cs.{a,b}").unwrap(),
            LeafOp::Contains("{a,b}".into())
        );
        assert_eq!(
            leaf_op("cd.[1]").unwrap(),
            LeafOp::ContainedBy("[1]".into())
        );
        assert_eq!(leaf_op("ov.{x}").unwrap(), LeafOp::Overlaps("{x}".into()));
        assert_eq!(
            leaf_op("fts(pg_catalog.english).fat & rat").unwrap(),
            LeafOp::TextSearch {
                kind: TextSearchKind::Tsquery,
                config: Some("pg_catalog.english".into()),
                query: "fat & rat".into()
            }
        );
        assert_eq!(
            leaf_op("wfts.a.b").unwrap(),
            LeafOp::TextSearch {
                kind: TextSearchKind::Websearch,
                config: None,
                query: "a.b".into()
            }
        );
        for bad in [
            "fts(x'y).a",
            "fts(.a",
            "plfts().a",
            "cs(x).a",
            "phfts(a)b.c",
        ] {
            assert!(leaf_op(bad).is_err(), "{bad}");
        }
        assert_eq!(
            pg_array_items(r#"a, "b,c" ,3,true,{x,"y"},-1.5e2"#).unwrap(),
            vec![
                json!("a"),
                json!("b,c"),
                json!(3),
                json!(true),
                json!(["x", "y"]),
                json!(-150.0)
            ]
        );
        assert_eq!(pg_array_items("").unwrap(), Vec::<serde_json::Value>::new());
        for bad in ["a,,b", "NULL", "\"a", "a\"b", "{a"] {
            assert!(pg_array_items(bad).is_none(), "{bad}");
        }
        // Nesting is bounded before any recursion gets deep.
        let deep = |n: usize| format!("{}x{}", "{".repeat(n), "}".repeat(n));
        assert!(pg_array_items(&deep(truststream_core_db::MAX_JSON_OPERAND_DEPTH - 1)).is_some());
        assert!(pg_array_items(&deep(truststream_core_db::MAX_JSON_OPERAND_DEPTH)).is_none());
        assert!(pg_array_items(&deep(16_000)).is_none());
    }

    #[test]
    fn select_items() {
        let s = select(" id, n:name , data->a->>b, price::text ").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[1],
            SelectField::Column {
                column: "name".into(),
                path: vec![],
                cast: None,
                alias: Some("n".into())
            }
        );
        assert!(
            matches!(&s[2], SelectField::Column { path, .. } if path.len() == 2 && path[1].as_text)
        );
        assert!(matches!(
            &s[3],
            SelectField::Column {
                cast: Some(Cast::Text),
                alias: None,
                ..
            }
        ));
        assert_eq!(select("id;drop table x").unwrap_err().code, "PGRST100");
        assert_eq!(select("count()").unwrap_err().code, "PGRST123");
    }

    #[test]
    fn embeds() {
        let s = select("id, author:users!author_id!inner(name, org:orgs(*)), comments()").unwrap();
        let SelectField::Embed(a) = &s[1] else {
            panic!("{s:?}")
        };
        assert_eq!(
            (a.name(), a.table.as_str(), a.hint.as_deref(), a.inner),
            ("author", "users", Some("author_id"), true)
        );
        assert!(matches!(&a.fields[1], SelectField::Embed(o) if o.name() == "org"));
        let SelectField::Embed(c) = &s[2] else {
            panic!("{s:?}")
        };
        assert_eq!((c.name(), c.inner, c.fields.len()), ("comments", false, 0));
        assert!(matches!(&select("...users(name)").unwrap()[0], SelectField::Embed(e) if e.spread));
        for bad in [
            "users(name",
            "users(x)y",
            "us-ers(*)",
            "users!a!b(*)",
            "a:b:c(*)",
        ] {
            assert_eq!(select(bad).unwrap_err().code, "PGRST100", "{bad}");
        }
        let deep = format!("{}id{}", "t(".repeat(8), ")".repeat(8));
        assert_eq!(select(&deep).unwrap_err().code, "PGRST100");
    }

    #[test]
    fn nested_logic() {
        let c = logic("or", "(a.eq.1,and(b.gt.2,c.not.lt.3))").unwrap();
        let Cond::Logic {
            or: true, items, ..
        } = c
        else {
            panic!("not an or")
        };
        assert_eq!(items.len(), 2);
        let deep = format!("({}a.eq.1{})", "and(".repeat(40), ")".repeat(40));
        assert_eq!(logic("or", &deep).unwrap_err().code, "PGRST100");
        assert!(logic("or", "(a.eq.1").is_err());
        assert!(logic("or", "a.eq.1").is_err());
    }

    #[test]
    fn logic_values_unquote() {
        let c = logic(
            "or",
            r#"(name.eq."a,b",name.eq."  (x) ",name.eq."q\"d",name.eq.plain)"#,
        )
        .unwrap();
        let Cond::Logic { items, .. } = c else {
            panic!("{c:?}")
        };
        let values: Vec<_> = items
            .iter()
            .map(|i| match i {
                Cond::Leaf {
                    op: LeafOp::Eq(v), ..
                } => v.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, ["a,b", "  (x) ", "q\"d", "plain"]);
    }

    #[test]
    fn in_lists_quote() {
        let c = filter("name", "in.(a,\"b,c\",\"d\\\"e\")").unwrap();
        let Cond::Leaf {
            op: LeafOp::In(v), ..
        } = c
        else {
            panic!("not in")
        };
        assert_eq!(v, vec!["a", "b,c", "d\"e"]);
    }

    #[test]
    fn prefer_header() {
        let p =
            prefer(["return=representation, count=exact", "max-affected=3"].into_iter()).unwrap();
        assert_eq!(p.ret.as_deref(), Some("representation"));
        assert!(p.count);
        assert_eq!(p.max_affected, None, "max-affected needs handling=strict");
    }
}
