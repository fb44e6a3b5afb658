//! `postgres_changes` filters as Supabase writes them: `column=op.value`
//! with `op` one of eq, neq, lt, lte, gt, gte, in (`in.(a,b,c)`, at most
//! 100 values).
//!
//! Values arrive as text; each is read as the type of the row's value it is
//! compared with (a number column compares numerically), then compared with
//! core-db's SQL comparison (`eval::compare`), so NULLs and mismatched types
//! never match, as in PostgreSQL.

use std::cmp::Ordering;

use serde_json::{Map, Value};
use truststream_core::Error;
use truststream_core_db::{eval, ident};
use truststream_core_realtime::RtResult;

/// Most values an `in` filter may list.
pub(crate) const MAX_IN_VALUES: usize = 100;

/// A comparison operator of a wire filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
}

/// A parsed `column=op.value` filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WireFilter {
    pub column: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl WireFilter {
    /// Parses `column=op.value`.
    pub(crate) fn parse(s: &str) -> RtResult<WireFilter> {
        let bad = |why: &str| {
            let shown: String = s.chars().take(60).collect();
            Error::invalid_input(format!(
                "invalid postgres_changes filter {shown:?}: {why} (expected column=op.value, \
                 op one of eq, neq, lt, lte, gt, gte, in)"
            ))
        };
        let (column, rest) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
        ident::validate(column).map_err(|_| bad("the column is not an identifier"))?;
        let (op, value) = rest
            .split_once('.')
            .ok_or_else(|| bad("no '.' after the operator"))?;
        let op = match op {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            _ => return Err(bad("unknown operator")),
        };
        let values = if op == Op::In {
            let inner = value
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| bad("in needs a list in parentheses"))?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().trim_matches('"').to_string())
                .collect();
            if values.len() > MAX_IN_VALUES {
                return Err(bad("in takes at most 100 values"));
            }
            values
        } else {
            vec![value.to_string()]
        };
        Ok(WireFilter {
            column: column.to_string(),
            op,
            values,
        })
    }

    /// Whether `row` matches.
    pub(crate) fn matches(&self, row: &Map<String, Value>) -> bool {
        let Some(actual) = row.get(&self.column) else {
            return false;
        };
        let cmp = |text: &str| -> Option<Ordering> {
            let wanted = coerce(text, actual)?;
            eval::compare(actual, &wanted)
        };
        match self.op {
            Op::In => self.values.iter().any(|v| cmp(v) == Some(Ordering::Equal)),
            op => {
                let Some(ord) = self.values.first().and_then(|v| cmp(v)) else {
                    return false;
                };
                match op {
                    Op::Eq => ord == Ordering::Equal,
                    Op::Neq => ord != Ordering::Equal,
                    Op::Lt => ord == Ordering::Less,
                    Op::Lte => ord != Ordering::Greater,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Gte => ord != Ordering::Less,
                    Op::In => false,
                }
            }
        }
    }
}

/// Reads `text` as the type of `like`; `None` when it cannot be.
fn coerce(text: &str, like: &Value) -> Option<Value> {
    match like {
        Value::Number(_) => text
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| text.parse::<f64>().ok().map(Value::from)),
        Value::Bool(_) => match text {
            "true" | "t" => Some(Value::Bool(true)),
            "false" | "f" => Some(Value::Bool(false)),
            _ => None,
        },
        Value::String(_) => Some(Value::String(text.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn parses_and_matches() {
        let r = row(json!({"id": 200, "status": "active", "ok": true, "gone": null}));
        let yes = [
            "id=eq.200",
            "id=neq.1",
            "id=gt.199",
            "id=gte.200",
            "id=lt.200.5",
            "id=lte.200",
            "id=in.(1,200,3)",
            "status=eq.active",
            "status=in.(\"idle\",\"active\")",
            "ok=eq.true",
        ];
        for f in yes {
            assert!(WireFilter::parse(f).unwrap().matches(&r), "{f}");
        }
        let no = [
            "id=eq.201",
            "id=eq.abc",
            "status=eq.idle",
            "gone=eq.x",
            "missing=eq.1",
            "id=in.(1,2)",
        ];
        for f in no {
            assert!(!WireFilter::parse(f).unwrap().matches(&r), "{f}");
        }
    }

    #[test]
    fn bad_filters_are_invalid_input() {
        let many = format!("id=in.({})", vec!["1"; 101].join(","));
        for f in [
            "",
            "id",
            "id=eq",
            "id=like.x",
            "bad col=eq.1",
            "id=in.1,2",
            many.as_str(),
        ] {
            let e = WireFilter::parse(f).unwrap_err();
            assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput, "{f}");
        }
    }
}
