//! Identifier rules shared by every provider.
//!
//! Table, column, index and alias names must match `[A-Za-z_][A-Za-z0-9_]*` and
//! be at most [`MAX_LEN`] bytes. Anything else is [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
//! before it can reach a query. SQL providers still quote every identifier.

use crate::{DbResult, Error};

/// Longest identifier accepted (PostgreSQL's limit).
pub const MAX_LEN: usize = 63;

/// [`BYTES`]' mark of a byte an identifier may start with (a letter, `_`).
const FIRST: u8 = 2;

/// Which bytes an identifier may hold: [`FIRST`] for letters and `_`, 1
/// for digits, 0 for every other byte.
const BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b.is_ascii_alphabetic() || b == b'_' {
            FIRST
        } else if b.is_ascii_digit() {
            1
        } else {
            0
        };
        c += 1;
    }
    t
};

/// Checks one identifier (no dots).
///
/// ```
/// use truststream_core_db::ident;
/// assert!(ident::validate("agent_metrics").is_ok());
/// assert!(ident::validate("agents; DROP TABLE x").is_err());
/// ```
pub fn validate(name: &str) -> DbResult<()> {
    // By bytes, one table lookup each: every allowed character is ASCII,
    // and no byte of a multi-byte character is.
    let bytes = name.as_bytes();
    let ok_first = matches!(bytes.first(), Some(&c) if BYTES[c as usize] == FIRST);
    let ok_rest = bytes.iter().all(|&c| BYTES[c as usize] != 0);
    if !ok_first || !ok_rest || name.len() > MAX_LEN {
        return Err(Error::invalid_input(format!(
            "invalid identifier {:?}: use letters, digits and '_' (not first), at most {MAX_LEN} bytes",
            truststream_core::echo(name).to_string()
        )));
    }
    Ok(())
}

/// Checks a table name and returns it, so calls can be chained.
pub fn table(name: &str) -> DbResult<&str> {
    validate(name).map_err(|e| e.with_context("table", name))?;
    Ok(name)
}

/// Quotes a validated identifier for SQL (`"name"`). Both PostgreSQL and
/// SQLite use double quotes; the identifier rules exclude `"`, so no escaping is
/// needed, but it is done anyway so the function is safe on its own.
pub fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for part in name.split_inclusive('"') {
        out.push_str(part);
        if part.ends_with('"') {
            out.push('"');
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_doubles_embedded_quotes() {
        assert_eq!(quote("agents"), "\"agents\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote("\"\""), "\"\"\"\"\"\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn accepts_and_rejects() {
        for ok in ["a", "_x", "Agent_2", &"a".repeat(63)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a-b",
            "a b",
            "a.b",
            "\"a\"",
            "a;b",
            "é",
            &"a".repeat(64),
            "a\0",
        ] {
            let e = validate(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn long_names_are_truncated_in_messages() {
        let e = validate(&"x;".repeat(10_000)).unwrap_err();
        assert!(e.to_string().len() < 300);
    }
}
