//! Helpers shared by the SQL providers (no I/O): rewriting `:name` parameters
//! into a dialect's placeholders, and the query compiler ([`compile`]) that
//! turns [`crate::Query`], row writes and [`crate::TableSchema`] into SQL text
//! with every value bound.

pub mod compile;
pub mod keyed;
pub mod write;

pub use compile::{Bind, Catalog, OutputColumn, SelectStatement, SqlDialect, Statement};

use crate::{DbResult, Error, Params, Value};

/// Placeholder style of a SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `$1`, `$2`, ... (PostgreSQL); a name used twice reuses its number.
    Dollar,
    /// `?1`, `?2`, ... (SQLite numbered parameters); a name used twice reuses
    /// its number.
    QuestionNumbered,
    /// `?` (positional); a name used twice binds its value twice.
    Question,
}

/// Rewrites `:name` parameters in `sql` to `style` placeholders and returns the
/// values to bind, in placeholder order.
///
/// Text inside string literals (`'...'`, with `''` escapes, and PostgreSQL
/// `E'...'` and `$tag$...$tag$` strings), quoted identifiers (`"..."`) and
/// comments (`-- ...`, `/* ... */`) is left alone, and so are PostgreSQL
/// casts (`::type`). A name used in `sql` but missing from `params`, or a
/// parameter that `sql` never uses, is [`crate::ErrorKind::InvalidInput`].
///
/// ```
/// use truststream_core_db::sql::{rewrite_named, Placeholder};
/// use serde_json::json;
/// let params = [("start".to_string(), json!("2024-01-01"))].into_iter().collect();
/// let (sql, values) = rewrite_named(
///     "SELECT ':start', created_at::text FROM agents WHERE created_at >= :start",
///     &params,
///     Placeholder::Dollar,
/// ).unwrap();
/// assert_eq!(sql, "SELECT ':start', created_at::text FROM agents WHERE created_at >= $1");
/// assert_eq!(values, vec![json!("2024-01-01")]);
/// ```
pub fn rewrite_named(
    sql: &str,
    params: &Params,
    style: Placeholder,
) -> DbResult<(String, Vec<Value>)> {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut values: Vec<Value> = Vec::new();
    let mut numbered: Vec<&str> = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                // string literal; handles '' and (for E'') backslash escapes
                let escape_backslash = i > 0 && (b[i - 1] == b'E' || b[i - 1] == b'e');
                i += 1;
                while i < b.len() {
                    if escape_backslash && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if i + 1 < b.len() && b[i + 1] == b'\'' {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'$' => {
                // dollar-quoted string: $tag$ ... $tag$ (tag may be empty)
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e)
                        if b[e] == b'$' && !b[i + 1..e].first().is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &sql[i..=e];
                        match sql[e + 1..].find(tag) {
                            Some(p) => i = e + 1 + p + tag.len(),
                            None => i = b.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
                && !(i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                let name = &sql[start..end];
                let value = params.get(name).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "raw query uses :{name} but no such parameter was given"
                    ))
                })?;
                used.insert(name);
                out.push_str(&sql[copied..i]);
                match style {
                    Placeholder::Question => {
                        values.push(value.clone());
                        out.push('?');
                    }
                    Placeholder::Dollar | Placeholder::QuestionNumbered => {
                        let n = match numbered.iter().position(|n| *n == name) {
                            Some(p) => p + 1,
                            None => {
                                numbered.push(name);
                                values.push(value.clone());
                                numbered.len()
                            }
                        };
                        out.push(if style == Placeholder::Dollar {
                            '$'
                        } else {
                            '?'
                        });
                        out.push_str(&n.to_string());
                    }
                }
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    if let Some(unused) = params.keys().find(|k| !used.contains(k.as_str())) {
        return Err(Error::invalid_input(format!(
            "parameter :{unused} is not used by the raw query"
        )));
    }
    Ok((out, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(pairs: &[(&str, Value)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn reuse_and_styles() {
        let params = p(&[("a", json!(1)), ("b", json!("x"))]);
        let sql = "SELECT * FROM t WHERE x = :a OR y = :a AND z = :b";
        let (s, v) = rewrite_named(sql, &params, Placeholder::Dollar).unwrap();
        assert_eq!(s, "SELECT * FROM t WHERE x = $1 OR y = $1 AND z = $2");
        assert_eq!(v, vec![json!(1), json!("x")]);
        let (s, v) = rewrite_named(sql, &params, Placeholder::Question).unwrap();
        assert_eq!(s, "SELECT * FROM t WHERE x = ? OR y = ? AND z = ?");
        assert_eq!(v, vec![json!(1), json!(1), json!("x")]);
        let (s, _) = rewrite_named(sql, &params, Placeholder::QuestionNumbered).unwrap();
        assert_eq!(s, "SELECT * FROM t WHERE x = ?1 OR y = ?1 AND z = ?2");
    }

    #[test]
    fn leaves_literals_comments_casts_alone() {
        let params = p(&[("v", json!(2))]);
        let sql = "SELECT ':x', \":y\", E'\\':z', $$ :w $$, $t$ :q $t$, a::int -- :c\n /* :d */ FROM t WHERE a = :v";
        let (s, v) = rewrite_named(sql, &params, Placeholder::Dollar).unwrap();
        assert!(s.ends_with("WHERE a = $1"), "{s}");
        assert!(s.contains("':x'") && s.contains("a::int") && s.contains("$$ :w $$"));
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn missing_and_unused_are_errors() {
        let e = rewrite_named("SELECT :a", &p(&[]), Placeholder::Dollar).unwrap_err();
        assert!(e.to_string().contains(":a"));
        let e = rewrite_named("SELECT 1", &p(&[("b", json!(1))]), Placeholder::Dollar).unwrap_err();
        assert!(e.to_string().contains(":b"));
    }

    #[test]
    fn injection_in_values_stays_a_value() {
        let params = p(&[("name", json!("x'; DROP TABLE agents; --"))]);
        let (s, v) = rewrite_named(
            "SELECT * FROM agents WHERE name = :name",
            &params,
            Placeholder::Dollar,
        )
        .unwrap();
        assert_eq!(s, "SELECT * FROM agents WHERE name = $1");
        assert_eq!(v[0], json!("x'; DROP TABLE agents; --"));
    }

    #[test]
    fn unterminated_things_do_not_panic() {
        for sql in ["'abc", "\"abc", "/* abc", "$tag$ abc", ":", "a:", "$", "$1"] {
            let _ = rewrite_named(sql, &p(&[]), Placeholder::Dollar);
        }
    }
}
