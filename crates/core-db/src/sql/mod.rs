//! Helpers shared by the SQL providers (no I/O): rewriting `:name` parameters
//! into a dialect's placeholders (and refusing more than one statement), the
//! query compiler ([`compile`]) that turns [`crate::Query`], row writes and
//! [`crate::TableSchema`] into SQL text with every value bound, the write
//! paths ([`write`](mod@write)), the statement cache ([`keyed`]), result rows
//! built from one shared description of their columns ([`rows`]), and the
//! engine ([`engine`]): the whole [`crate::Database`] implementation over a
//! provider's [`engine::SqlProvider`].

pub mod compile;
pub mod engine;
pub mod keyed;
pub mod rows;
pub mod scoped;
pub mod write;

pub use compile::{Bind, Catalog, OutputColumn, SelectStatement, SqlDialect, Statement};

use crate::{DbResult, Error, Params, Value};
use truststream_core::echo;

/// Capabilities report the dialect by name (`"postgres"`, `"sqlite"`).
impl serde::Serialize for SqlDialect {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Rewrites `:name` parameters in `sql` to `dialect`'s placeholders (`$1`
/// on PostgreSQL, `?1` on SQLite; a name used twice reuses its number) and
/// returns the single statement to run with the values to bind, in
/// placeholder order.
///
/// The text is read with the dialect's own lexical rules: string literals
/// (`'...'` with `''` escapes; on PostgreSQL also `E'...'` and
/// `$tag$...$tag$`), quoted identifiers (`"..."`; on SQLite also `` `...` ``
/// and `[...]`) and comments (`-- ...`, `/* ... */`) are left alone, and so
/// are PostgreSQL casts (`::type`).
///
/// [`crate::ErrorKind::InvalidInput`], before anything reaches the database:
/// - more than one statement: after a `;`, only whitespace, comments and
///   more `;` may follow (they are dropped). Providers disagree otherwise
///   (SQLite would run every statement, PostgreSQL refuses), and a second
///   statement in a query is the classic injection;
/// - a name used in `sql` but missing from `params`, or a parameter that
///   `sql` never uses;
/// - the dialect's own placeholders (`$1` on PostgreSQL; `?`, `?1`, `@v`,
///   `$v` on SQLite): raw queries bind `:name` parameters only.
///
/// ```
/// use truststream_core_db::sql::{rewrite_named, SqlDialect};
/// use serde_json::json;
/// let params = [("start".to_string(), json!("2024-01-01"))].into_iter().collect();
/// let (sql, values) = rewrite_named(
///     "SELECT ':start', created_at::text FROM agents WHERE created_at >= :start;",
///     &params,
///     SqlDialect::Postgres,
/// ).unwrap();
/// assert_eq!(sql, "SELECT ':start', created_at::text FROM agents WHERE created_at >= $1");
/// assert_eq!(values, vec![json!("2024-01-01")]);
///
/// let none = Default::default();
/// let e = rewrite_named("SELECT 1; DROP TABLE agents", &none, SqlDialect::Sqlite).unwrap_err();
/// assert_eq!(e.kind(), truststream_core_db::ErrorKind::InvalidInput);
/// ```
pub fn rewrite_named(
    sql: &str,
    params: &Params,
    dialect: SqlDialect,
) -> DbResult<(String, Vec<Value>)> {
    let pg = dialect == SqlDialect::Postgres;
    let b = sql.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let mut out = String::with_capacity(sql.len() + 8);
    let mut values: Vec<Value> = Vec::new();
    let mut numbered: Vec<&str> = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    let mut i = 0;
    let mut copied = 0;
    // Byte offset of the `;` that ended the statement, once seen.
    let mut ended: Option<usize> = None;
    while i < b.len() {
        let c = b[i];
        let comment = (c == b'-' && b.get(i + 1) == Some(&b'-'))
            || (c == b'/' && b.get(i + 1) == Some(&b'*'));
        if let Some(at) = ended {
            if !(c.is_ascii_whitespace() || c == b';' || comment) {
                return Err(Error::invalid_input(format!(
                    "raw_query runs one statement, and more SQL follows the ';' at byte {at}; \
                     send each statement in its own call"
                )));
            }
        }
        match c {
            b';' => {
                if ended.is_none() {
                    ended = Some(i);
                    out.push_str(&sql[copied..i]);
                }
                i += 1;
                copied = i;
            }
            b'\'' => {
                // A string literal: '' escapes; PostgreSQL E'' strings also
                // take backslash escapes (E must start a token).
                let escape_backslash = pg
                    && i > 0
                    && (b[i - 1] == b'E' || b[i - 1] == b'e')
                    && !(i > 1 && is_ident(b[i - 2]));
                i += 1;
                while i < b.len() {
                    if escape_backslash && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            // Quoted identifiers ("" and `` escapes read as two quoted runs).
            b'"' => i = skip_past(b, i + 1, b'"'),
            b'`' if !pg => i = skip_past(b, i + 1, b'`'),
            b'[' if !pg => i = skip_past(b, i + 1, b']'),
            b'-' if comment => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if comment => {
                // PostgreSQL block comments nest; SQLite's do not.
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') && (pg || depth == 0) {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'$' if pg && i > 0 && is_ident(b[i - 1]) => i += 1, // inside an identifier
            b'$' if pg && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                return Err(native_placeholder(sql, i));
            }
            b'$' if pg => {
                // dollar-quoted string: $tag$ ... $tag$ (tag may be empty)
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e) if b[e] == b'$' => {
                        let tag = &sql[i..=e];
                        match sql[e + 1..].find(tag) {
                            Some(p) => i = e + 1 + p + tag.len(),
                            None => i = b.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            b'?' | b'@' | b'$' if !pg => return Err(native_placeholder(sql, i)),
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
                && !(i > 0 && is_ident(b[i - 1])) =>
            {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                let name = &sql[start..end];
                let value = params.get(name).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "raw query uses :{} but no such parameter was given",
                        echo(name)
                    ))
                })?;
                used.insert(name);
                out.push_str(&sql[copied..i]);
                let n = match numbered.iter().position(|n| *n == name) {
                    Some(p) => p + 1,
                    None => {
                        numbered.push(name);
                        values.push(value.clone());
                        numbered.len()
                    }
                };
                out.push(if pg { '$' } else { '?' });
                out.push_str(&n.to_string());
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    if ended.is_none() {
        out.push_str(&sql[copied.min(sql.len())..]);
    }
    if let Some(unused) = params.keys().find(|k| !used.contains(k.as_str())) {
        return Err(Error::invalid_input(format!(
            "parameter :{} is not used by the raw query",
            echo(unused)
        )));
    }
    Ok((out, values))
}

/// The index just past the next `close` at or after `i` (the end of the
/// text when there is none).
fn skip_past(b: &[u8], mut i: usize, close: u8) -> usize {
    while i < b.len() && b[i] != close {
        i += 1;
    }
    i + 1
}

/// The error for a placeholder of the database's own syntax at byte `at`.
fn native_placeholder(sql: &str, at: usize) -> Error {
    let end = sql[at + 1..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(sql.len(), |p| at + 1 + p);
    Error::invalid_input(format!(
        "raw query uses the placeholder {} at byte {at}: raw queries bind :name parameters only",
        echo(&sql[at..end])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    const PG: SqlDialect = SqlDialect::Postgres;
    const LITE: SqlDialect = SqlDialect::Sqlite;

    fn p(pairs: &[(&str, Value)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn refused(sql: &str, dialect: SqlDialect) -> String {
        match rewrite_named(sql, &p(&[]), dialect) {
            Err(e) if e.kind() == ErrorKind::InvalidInput => e.to_string(),
            other => panic!("{sql:?} on {dialect:?}: expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn reuse_and_styles() {
        let params = p(&[("a", json!(1)), ("b", json!("x"))]);
        let sql = "SELECT * FROM t WHERE x = :a OR y = :a AND z = :b";
        let (s, v) = rewrite_named(sql, &params, PG).unwrap();
        assert_eq!(s, "SELECT * FROM t WHERE x = $1 OR y = $1 AND z = $2");
        assert_eq!(v, vec![json!(1), json!("x")]);
        let (s, v) = rewrite_named(sql, &params, LITE).unwrap();
        assert_eq!(s, "SELECT * FROM t WHERE x = ?1 OR y = ?1 AND z = ?2");
        assert_eq!(v, vec![json!(1), json!("x")]);
    }

    #[test]
    fn leaves_literals_comments_casts_alone() {
        let params = p(&[("v", json!(2))]);
        let sql = "SELECT ':x', \":y\", E'\\':z', $$ :w $$, $t$ :q $t$, a::int -- :c\n /* :d */ FROM t WHERE a = :v";
        let (s, v) = rewrite_named(sql, &params, PG).unwrap();
        assert!(s.ends_with("WHERE a = $1"), "{s}");
        assert!(s.contains("':x'") && s.contains("a::int") && s.contains("$$ :w $$"));
        assert_eq!(v.len(), 1);
        let sql = "SELECT ':x', \":y\", `:z`, [:w] -- :c\n /* :d */ FROM t WHERE a = :v";
        let (s, _) = rewrite_named(sql, &params, LITE).unwrap();
        assert!(s.ends_with("WHERE a = ?1") && s.contains("[:w]"), "{s}");
    }

    #[test]
    fn missing_and_unused_are_errors() {
        let e = rewrite_named("SELECT :a", &p(&[]), PG).unwrap_err();
        assert!(e.to_string().contains(":a"));
        let e = rewrite_named("SELECT 1", &p(&[("b", json!(1))]), PG).unwrap_err();
        assert!(e.to_string().contains(":b"));
    }

    #[test]
    fn long_parameter_names_are_not_echoed_whole() {
        let name = "p".repeat(10_000);
        let e = rewrite_named("SELECT 1", &p(&[(&name, json!(1))]), LITE).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
        let e = rewrite_named(&format!("SELECT :{name}"), &p(&[]), PG).unwrap_err();
        assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
    }

    #[test]
    fn injection_in_values_stays_a_value() {
        let params = p(&[("name", json!("x'; DROP TABLE agents; --"))]);
        let (s, v) = rewrite_named("SELECT * FROM agents WHERE name = :name", &params, PG).unwrap();
        assert_eq!(s, "SELECT * FROM agents WHERE name = $1");
        assert_eq!(v[0], json!("x'; DROP TABLE agents; --"));
    }

    #[test]
    fn a_second_statement_is_refused_in_both_dialects() {
        for d in [PG, LITE] {
            for sql in [
                "SELECT 1; DROP TABLE t",
                "SELECT 1;DROP TABLE t;",
                "SELECT 1; -- x\n DELETE FROM t",
                "SELECT 1; /* x */ DELETE FROM t",
                "SELECT ';'; DELETE FROM t",
                "SELECT \";\"; DELETE FROM t",
                "SELECT 1;; SELECT 2",
            ] {
                let m = refused(sql, d);
                assert!(m.contains("one statement"), "{m}");
            }
        }
        // What the other dialect would read as a literal is code here.
        for sql in [
            // SQLite has no E'' strings: `E` is a column, '\' a string.
            "SELECT E'\\'; DROP TABLE t; --'",
            // ... and no dollar quoting.
            "SELECT 1 $$; DROP TABLE t; $$",
        ] {
            refused(sql, LITE);
        }
        // Nor does PostgreSQL read `..` or [..] as identifiers.
        refused("SELECT `a;b`", PG);
        refused("SELECT [a;b]", PG);
    }

    #[test]
    fn trailing_semicolons_comments_and_whitespace_are_one_statement() {
        let params = p(&[("v", json!(1))]);
        for d in [PG, LITE] {
            for sql in [
                "SELECT :v;",
                "SELECT :v ;  \n",
                "SELECT :v;;",
                "SELECT :v; -- done",
                "SELECT :v; /* done */",
                "SELECT :v -- a ; in a comment\n",
                "SELECT :v /* ; */",
            ] {
                let (s, v) = rewrite_named(sql, &params, d).unwrap();
                assert!(
                    !s.contains(';') || s.contains("/* ; */") || s.contains("-- a ;"),
                    "{s}"
                );
                assert!(!s.contains("done"), "{s}");
                assert_eq!(v, vec![json!(1)]);
            }
        }
        let (s, _) = rewrite_named("SELECT 'a;b', \"c;d\"; ", &p(&[]), LITE).unwrap();
        assert_eq!(s, "SELECT 'a;b', \"c;d\"");
        let (s, _) = rewrite_named("SELECT $x$;$x$, E'\\';'", &p(&[]), PG).unwrap();
        assert_eq!(s, "SELECT $x$;$x$, E'\\';'");
        let (s, _) = rewrite_named("SELECT /* /* ; */ ; */ 1", &p(&[]), PG).unwrap();
        assert_eq!(s, "SELECT /* /* ; */ ; */ 1");
        let (s, _) = rewrite_named("SELECT `a;b`, [c;d]", &p(&[]), LITE).unwrap();
        assert_eq!(s, "SELECT `a;b`, [c;d]");
    }

    #[test]
    fn native_placeholders_are_refused() {
        for sql in [
            "SELECT @v",
            "SELECT ?",
            "SELECT ?1",
            "SELECT $v",
            "SELECT 1 WHERE @x = 1",
        ] {
            let m = refused(sql, LITE);
            assert!(m.contains(":name parameters only"), "{m}");
        }
        let m = refused("SELECT $1", PG);
        assert!(m.contains("$1"), "{m}");
        // PostgreSQL operators and identifiers that contain ? @ $ are fine.
        let (s, _) =
            rewrite_named("SELECT '{}'::jsonb ? 'a', @ -1, a$1 FROM t", &p(&[]), PG).unwrap();
        assert!(s.contains("? 'a'") && s.contains("a$1"), "{s}");
        // ... and so are the characters inside SQLite literals.
        rewrite_named("SELECT '@v ? $x'", &p(&[]), LITE).unwrap();
    }

    #[test]
    fn unterminated_things_do_not_panic() {
        for sql in [
            "'abc",
            "\"abc",
            "/* abc",
            "/* /* abc */",
            "$tag$ abc",
            ":",
            "a:",
            "$",
            "$1",
            "`abc",
            "[abc",
            "E'\\",
            ";",
            "; ",
        ] {
            for d in [PG, LITE] {
                let _ = rewrite_named(sql, &p(&[]), d);
            }
        }
    }
}
