//! Filter and value semantics for providers that evaluate queries in process.
//!
//! The memory database and the realtime providers (row filters on change
//! events) evaluate [`Filter`]s on rows themselves. They all use these
//! functions, so a filter means the same thing everywhere, and the same thing
//! as in SQL:
//!
//! - [`compare`] compares two JSON scalars like SQL compares two values of one
//!   type: numbers numerically (integers and floats mixed), strings by bytes
//!   (so UTC RFC 3339 timestamps of one format compare as times), `false <
//!   true`. A null or a pair of different types compares as unknown (`None`).
//! - [`like`] matches `%` / `_` patterns in linear-times-pattern time.
//! - [`eval`] applies three-valued logic: `Some(true)`, `Some(false)` or
//!   `None` (unknown). A row matches a filter only when it is `Some(true)`.
//! - [`sort_key_cmp`] orders values for `ORDER BY`, placing nulls as the
//!   [`crate::OrderBy`] says and ordering mixed types deterministically.
//!
//! ```
//! use serde_json::json;
//! use truststream_core_db::{col, eval, not, ColumnRef, Error, Row, Value};
//!
//! let row: Row = json!({"status": "active", "deleted_at": null})
//!     .as_object().cloned().unwrap();
//! let lookup = |c: &ColumnRef| match row.get(&c.column) {
//!     Some(Value::Null) => Ok(None),
//!     Some(v) => Ok(Some(v)),
//!     None => Err(Error::invalid_input(format!("unknown column {c}"))),
//! };
//! assert_eq!(eval::eval(&col("status").eq("active"), &lookup).unwrap(), Some(true));
//! // A comparison with NULL is unknown, and so is its negation.
//! assert_eq!(eval::eval(&col("deleted_at").ne("x"), &lookup).unwrap(), None);
//! assert_eq!(eval::eval(&not(col("deleted_at").eq("x")), &lookup).unwrap(), None);
//! assert_eq!(eval::eval(&col("deleted_at").is_null(), &lookup).unwrap(), Some(true));
//! ```

use std::cmp::Ordering;

use crate::{CmpOp, ColumnRef, Error, Filter, SortDirection, Value};

/// Compares two JSON scalars the way SQL compares two values of one type.
///
/// Numbers compare numerically whatever their representation (`1 == 1.0`),
/// strings by their UTF-8 bytes, booleans with `false < true`. `None`
/// (unknown) when either side is null, when the types differ, or for arrays
/// and objects (see [`eval`] for their equality).
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn compare_numbers(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    fn integral(n: &serde_json::Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    match (integral(x), integral(y)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => {
            let a = x.as_f64()?;
            let b = y.as_f64()?;
            a.partial_cmp(&b)
        }
    }
}

/// SQL `LIKE`: `%` matches any run of characters (also none), `_` exactly one
/// character; every other character matches itself. With
/// `case_insensitive` (`ILIKE`) ASCII letters match either case.
///
/// Runs in `O(value × pattern)` time at worst (greedy matching with one
/// backtrack point), never exponential.
///
/// ```
/// use truststream_core_db::eval::like;
/// assert!(like("Agent Smith", "Agent%", false));
/// assert!(like("agent smith", "AGENT_SMITH", true));
/// assert!(!like("agent", "agent_", false));
/// ```
pub fn like(value: &str, pattern: &str, case_insensitive: bool) -> bool {
    let v: Vec<char> = value.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let eq = |a: char, b: char| {
        if case_insensitive {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut vi, mut pi) = (0usize, 0usize);
    // Position after the last `%` seen, and the value position it is tried at.
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == '%' {
            star = Some((pi + 1, vi));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '_' || eq(p[pi], v[vi])) {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            // Let the last `%` swallow one more character and retry.
            pi = sp;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

/// Evaluates `filter` with SQL's three-valued logic: `Some(true)`,
/// `Some(false)`, or `None` for unknown. Only rows where it is `Some(true)`
/// match.
///
/// `lookup` returns a column's value: `Ok(None)` for SQL NULL (or an absent
/// value) and `Err` for a column that does not exist; that error is returned
/// as is. Every branch is evaluated (no short-circuit), so an unknown column
/// is reported even where another branch decides the result.
///
/// The rules (as documented on [`crate::Query`]):
/// - a comparison, `like`, `in` or `not in` on a NULL column is unknown;
///   comparing values of different types is unknown too;
/// - arrays and objects support `eq` / `ne` (structural equality) only;
/// - `not(unknown)` is unknown; `and` is false if any part is false, else
///   unknown if any is unknown; `or` is true if any part is true, else unknown
///   if any is unknown;
/// - an empty `and` is true, an empty `or` false, an empty `in` false and an
///   empty `not in` true (for a non-null column).
pub fn eval<'v>(
    filter: &Filter,
    lookup: &dyn Fn(&ColumnRef) -> Result<Option<&'v Value>, Error>,
) -> Result<Option<bool>, Error> {
    Ok(match filter {
        Filter::Cmp { column, op, value } => match non_null(lookup(column)?) {
            None => None,
            Some(v) => eval_cmp(v, *op, value),
        },
        Filter::In { column, values } => match non_null(lookup(column)?) {
            None => None,
            Some(v) => in_list(v, values),
        },
        Filter::NotIn { column, values } => match non_null(lookup(column)?) {
            None => None,
            Some(v) => in_list(v, values).map(|b| !b),
        },
        Filter::IsNull { column } => Some(non_null(lookup(column)?).is_none()),
        Filter::IsNotNull { column } => Some(non_null(lookup(column)?).is_some()),
        Filter::And(parts) => {
            let mut result = Some(true);
            for part in parts {
                match eval(part, lookup)? {
                    Some(false) => result = Some(false),
                    None if result == Some(true) => result = None,
                    _ => {}
                }
            }
            result
        }
        Filter::Or(parts) => {
            let mut result = Some(false);
            for part in parts {
                match eval(part, lookup)? {
                    Some(true) => result = Some(true),
                    None if result == Some(false) => result = None,
                    _ => {}
                }
            }
            result
        }
        Filter::Not(inner) => eval(inner, lookup)?.map(|b| !b),
        Filter::TextSearch { column, kind, .. } => {
            return Err(Error::unsupported(format!(
                "full-text search ({} on {column}) needs a database with text search \
                 (PostgreSQL); it is not evaluated in process",
                kind.name()
            )))
        }
    })
}

/// Whether a row matches: [`eval`] is `Some(true)`.
pub fn matches<'v>(
    filter: &Filter,
    lookup: &dyn Fn(&ColumnRef) -> Result<Option<&'v Value>, Error>,
) -> Result<bool, Error> {
    Ok(eval(filter, lookup)? == Some(true))
}

fn non_null(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn eval_cmp(v: &Value, op: CmpOp, literal: &Value) -> Option<bool> {
    match op {
        CmpOp::Contains => return Some(json_contains(v, literal)),
        CmpOp::ContainedBy => return Some(json_contains(literal, v)),
        CmpOp::Overlaps => return Some(json_overlaps(v, literal)),
        _ => {}
    }
    match op {
        CmpOp::Like | CmpOp::ILike => match (v, literal) {
            (Value::String(s), Value::String(p)) => Some(like(s, p, op == CmpOp::ILike)),
            _ => None,
        },
        CmpOp::Eq | CmpOp::Ne if is_container(v) || is_container(literal) => {
            if is_container(v) && is_container(literal) {
                Some((v == literal) == (op == CmpOp::Eq))
            } else {
                None
            }
        }
        _ => {
            let ord = compare(v, literal)?;
            Some(match op {
                CmpOp::Eq => ord == Ordering::Equal,
                CmpOp::Ne => ord != Ordering::Equal,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Gte => ord != Ordering::Less,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Lte => ord != Ordering::Greater,
                _ => return None,
            })
        }
    }
}

/// Whether the JSON document `a` contains `b`, as PostgreSQL's `jsonb @>`
/// decides it (see [`CmpOp`]): scalars are equal (numbers numerically),
/// objects contain each key of `b` with a containing value, arrays contain
/// each element of `b` in some element; at the top level an array also
/// contains a scalar it has as an element.
///
/// ```
/// use serde_json::json;
/// use truststream_core_db::eval::json_contains;
/// assert!(json_contains(&json!({"a": [1, 2], "b": 3}), &json!({"a": [2.0]})));
/// assert!(json_contains(&json!(["x", "y"]), &json!("x")));
/// assert!(!json_contains(&json!([["x"]]), &json!(["x"])));
/// ```
pub fn json_contains(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(items), scalar) if !is_container(scalar) => {
            items.iter().any(|i| json_scalar_eq(i, scalar))
        }
        _ => contains_nested(a, b),
    }
}

fn contains_nested(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => b
            .iter()
            .all(|(k, bv)| a.get(k).is_some_and(|av| contains_nested(av, bv))),
        (Value::Array(a), Value::Array(b)) => b
            .iter()
            .all(|bv| a.iter().any(|av| contains_nested(av, bv))),
        (a, b) if !is_container(a) && !is_container(b) => json_scalar_eq(a, b),
        _ => false,
    }
}

/// Whether two JSON scalars are the same value (numbers numerically,
/// `null` equals `null`).
fn json_scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        _ => compare(a, b) == Some(Ordering::Equal),
    }
}

/// Whether the JSON array `a` shares an element with the array `b` (scalars
/// equal as in [`json_contains`]); false when either is not an array.
pub fn json_overlaps(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .any(|x| !is_container(x) && b.iter().any(|y| json_scalar_eq(x, y))),
        _ => false,
    }
}

fn is_container(v: &Value) -> bool {
    v.is_array() || v.is_object()
}

/// `v IN (values)` for a non-null `v`: true on an equal value, else unknown
/// when some value's type cannot be compared, else false.
fn in_list(v: &Value, values: &[Value]) -> Option<bool> {
    let mut result = Some(false);
    for candidate in values {
        match eval_cmp(v, CmpOp::Eq, candidate) {
            Some(true) => return Some(true),
            None => result = None,
            Some(false) => {}
        }
    }
    result
}

/// Every column a filter refers to, in order of appearance (with repeats).
/// Providers resolve them before evaluating, so an unknown column is an error
/// even when there are no rows to evaluate.
pub fn filter_columns(filter: &Filter) -> Vec<&ColumnRef> {
    fn walk<'a>(f: &'a Filter, out: &mut Vec<&'a ColumnRef>) {
        match f {
            Filter::Cmp { column, .. }
            | Filter::In { column, .. }
            | Filter::NotIn { column, .. }
            | Filter::IsNull { column }
            | Filter::IsNotNull { column }
            | Filter::TextSearch { column, .. } => out.push(column),
            Filter::And(parts) | Filter::Or(parts) => parts.iter().for_each(|p| walk(p, out)),
            Filter::Not(inner) => walk(inner, out),
        }
    }
    let mut out = Vec::new();
    walk(filter, &mut out);
    out
}

/// A total order over non-null JSON values, for sorting and `min`/`max`:
/// values of one type compare as in [`compare`]; different types order as
/// bool < number < string < array < object; arrays and objects by their JSON
/// text. Nulls sort before everything (callers place nulls themselves, see
/// [`sort_key_cmp`]).
pub fn total_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y).unwrap_or_else(|| {
            // Not reachable for JSON numbers (no NaN), but stay total.
            let (fx, fy) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            fx.total_cmp(&fy)
        }),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            a.to_string().cmp(&b.to_string())
        }
        _ => compare(a, b).unwrap_or_else(|| rank(a).cmp(&rank(b))),
    }
}

/// Compares two `ORDER BY` key values. `None` and JSON null are SQL NULL and
/// go first or last as `nulls_first` says (resolve it with
/// [`crate::OrderBy::nulls_first`]); other values compare by [`total_cmp`],
/// reversed for [`SortDirection::Desc`].
///
/// ```
/// use std::cmp::Ordering;
/// use serde_json::json;
/// use truststream_core_db::{eval::sort_key_cmp, SortDirection};
/// let (one, two) = (json!(1), json!(2.5));
/// assert_eq!(sort_key_cmp(Some(&one), Some(&two), SortDirection::Desc, true), Ordering::Greater);
/// assert_eq!(sort_key_cmp(None, Some(&one), SortDirection::Asc, false), Ordering::Greater);
/// ```
pub fn sort_key_cmp(
    a: Option<&Value>,
    b: Option<&Value>,
    direction: SortDirection,
    nulls_first: bool,
) -> Ordering {
    match (non_null(a), non_null(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Some(_), None) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(x), Some(y)) => {
            let ord = total_cmp(x, y);
            match direction {
                SortDirection::Asc => ord,
                SortDirection::Desc => ord.reverse(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{and, col, not, or, Row};
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    fn ev(f: &Filter, r: &Row) -> Option<bool> {
        let lookup = |c: &ColumnRef| match r.get(&c.column) {
            Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(v)),
            None => Err(Error::invalid_input(format!("unknown column {c}"))),
        };
        eval(f, &lookup).unwrap()
    }

    #[test]
    fn compare_numbers_strings_bools_and_unknowns() {
        assert_eq!(compare(&json!(1), &json!(1.0)), Some(Ordering::Equal));
        assert_eq!(compare(&json!(-1), &json!(u64::MAX)), Some(Ordering::Less));
        assert_eq!(compare(&json!(2), &json!(1.5)), Some(Ordering::Greater));
        assert_eq!(compare(&json!("a"), &json!("b")), Some(Ordering::Less));
        assert_eq!(
            compare(
                &json!("2024-01-01T00:00:00.000000Z"),
                &json!("2023-12-31T23:59:59.999999Z")
            ),
            Some(Ordering::Greater)
        );
        assert_eq!(compare(&json!(false), &json!(true)), Some(Ordering::Less));
        assert_eq!(compare(&json!(null), &json!(null)), None);
        assert_eq!(compare(&json!(1), &json!("1")), None);
        assert_eq!(compare(&json!([1]), &json!([1])), None);
    }

    #[test]
    fn like_patterns() {
        assert!(like("", "", false));
        assert!(like("", "%", false));
        assert!(!like("", "_", false));
        assert!(like("abc", "a%c", false));
        assert!(like("abc", "%b%", false));
        assert!(like("abc", "___", false));
        assert!(!like("abc", "__", false));
        assert!(!like("abc", "ABC", false));
        assert!(like("abc", "ABC", true));
        assert!(like("日本語", "日_語", false));
        assert!(like("mississippi", "%iss%ppi", false));
        assert!(!like("mississippi", "%iss%ppx", false));
        assert!(like("a%b", "a%b", false));
        // Non-ASCII letters are not case-folded.
        assert!(!like("É", "é", true));
    }

    #[test]
    fn like_is_not_exponential() {
        let value = "a".repeat(5_000);
        let pattern = format!("{}b", "%a".repeat(50));
        let start = std::time::Instant::now();
        assert!(!like(&value, &pattern, false));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn three_valued_logic() {
        let r = row(json!({"a": 1, "n": null, "s": "x", "j": {"k": [1, 2]}}));
        assert_eq!(ev(&col("a").eq(1), &r), Some(true));
        assert_eq!(ev(&col("a").ne(1), &r), Some(false));
        assert_eq!(ev(&col("n").eq(1), &r), None);
        assert_eq!(ev(&col("n").ne(1), &r), None);
        assert_eq!(ev(&not(col("n").eq(1)), &r), None);
        assert_eq!(ev(&col("n").is_null(), &r), Some(true));
        assert_eq!(ev(&col("a").is_not_null(), &r), Some(true));
        assert_eq!(ev(&and([]), &r), Some(true));
        assert_eq!(ev(&or([]), &r), Some(false));
        assert_eq!(ev(&and([col("a").eq(1), col("n").eq(1)]), &r), None);
        assert_eq!(ev(&and([col("a").eq(2), col("n").eq(1)]), &r), Some(false));
        assert_eq!(ev(&or([col("a").eq(1), col("n").eq(1)]), &r), Some(true));
        assert_eq!(ev(&or([col("a").eq(2), col("n").eq(1)]), &r), None);
        assert_eq!(ev(&col("s").like("%"), &r), Some(true));
        assert_eq!(ev(&col("n").like("%"), &r), None);
        assert_eq!(ev(&col("j").eq(json!({"k": [1, 2]})), &r), Some(true));
        assert_eq!(ev(&col("j").ne(json!({"k": [1]})), &r), Some(true));
        assert_eq!(ev(&col("j").gt(json!({"k": [1]})), &r), None);
        assert_eq!(ev(&col("a").eq("1"), &r), None);
    }

    #[test]
    fn in_and_not_in() {
        let r = row(json!({"a": 1, "n": null}));
        assert_eq!(ev(&col("a").is_in([1, 2]), &r), Some(true));
        assert_eq!(ev(&col("a").is_in([3]), &r), Some(false));
        assert_eq!(ev(&col("a").is_in(Vec::<i32>::new()), &r), Some(false));
        assert_eq!(ev(&col("a").not_in(Vec::<i32>::new()), &r), Some(true));
        assert_eq!(ev(&col("a").not_in([1]), &r), Some(false));
        assert_eq!(ev(&col("n").is_in([1]), &r), None);
        assert_eq!(ev(&col("n").not_in([1]), &r), None);
        assert_eq!(ev(&col("n").is_in(Vec::<i32>::new()), &r), None);
    }

    #[test]
    fn unknown_columns_error_even_when_decided() {
        let r = row(json!({"a": 1}));
        let lookup = |c: &ColumnRef| {
            r.get(&c.column)
                .map(Some)
                .ok_or_else(|| Error::invalid_input(format!("unknown column {c}")))
        };
        let f = or([col("a").eq(1), col("zzz").eq(1)]);
        let e = eval(&f, &lookup).unwrap_err();
        assert!(e.message().contains("zzz"));
        assert_eq!(filter_columns(&f).len(), 2);
    }

    #[test]
    fn sorting() {
        let mut v = [json!(3), json!(null), json!(1.5), json!(-2)];
        v.sort_by(|a, b| sort_key_cmp(Some(a), Some(b), SortDirection::Asc, false));
        assert_eq!(v, [json!(-2), json!(1.5), json!(3), json!(null)]);
        v.sort_by(|a, b| sort_key_cmp(Some(a), Some(b), SortDirection::Desc, true));
        assert_eq!(v, [json!(null), json!(3), json!(1.5), json!(-2)]);
        let mut mixed = [json!("a"), json!(1), json!(true), json!([1]), json!({})];
        mixed.sort_by(total_cmp);
        assert_eq!(
            mixed,
            [json!(true), json!(1), json!("a"), json!([1]), json!({})]
        );
    }

    #[test]
    fn json_containment_follows_jsonb() {
        let yes = [
            (
                json!({"a": 1, "b": [1, 2, {"c": "x"}]}),
                json!({"b": [{"c": "x"}, 2.0]}),
            ),
            (json!([1, 2, [1, 3]]), json!([[1, 3]])),
            (json!([1, 2, [1, 3]]), json!([2, 1])),
            (json!(["a", "b"]), json!("a")),
            (json!("a"), json!("a")),
            (json!([]), json!([])),
            (json!({"a": null}), json!({"a": null})),
            (json!({"a": 1}), json!({})),
        ];
        for (a, b) in yes {
            assert!(json_contains(&a, &b), "{a} @> {b}");
        }
        let no = [
            (json!([["a"]]), json!(["a"])),
            (json!({"a": ["x"]}), json!({"a": "x"})),
            (json!("a"), json!(["a"])),
            (json!([1]), json!({})),
            (json!({"a": 1}), json!({"a": "1"})),
            (json!([1, 2]), json!([1, 3])),
            (json!([1, 2, [1, 3]]), json!([1, 3])),
        ];
        for (a, b) in no {
            assert!(!json_contains(&a, &b), "{a} @> {b}");
        }
        assert!(json_overlaps(&json!(["a", 1]), &json!([1.0])));
        assert!(!json_overlaps(&json!(["a"]), &json!(["b"])));
        assert!(!json_overlaps(&json!({"a": 1}), &json!(["a"])));
    }

    #[test]
    fn json_operators_in_filters_keep_three_valued_logic() {
        let r = row(json!({"tags": ["a", "b"], "none": null}));
        assert_eq!(ev(&col("tags").contains(json!(["b"])), &r), Some(true));
        assert_eq!(
            ev(&col("tags").contained_by(json!(["a", "b", "c"])), &r),
            Some(true)
        );
        assert_eq!(ev(&col("tags").contained_by(json!(["a"])), &r), Some(false));
        assert_eq!(ev(&col("tags").overlaps(["z", "a"]), &r), Some(true));
        assert_eq!(ev(&col("none").contains(json!(["a"])), &r), None);
        assert_eq!(ev(&not(col("none").overlaps(["a"])), &r), None);
        let lookup = |c: &ColumnRef| Ok(r.get(&c.column).filter(|v| !v.is_null()));
        let fts = col("tags").text_search("a", crate::TextSearchKind::Plain, None);
        let e = eval(&fts, &lookup).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unsupported);
        assert!(e.to_string().contains("plfts"), "{e}");
    }
}
