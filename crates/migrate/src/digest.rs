//! Order-independent digests of tables: each row is hashed in a canonical
//! form (columns by name, each value in core-db's stored form for its
//! column type, JSON objects with sorted keys), and a table's digest is the
//! sum of its rows' hashes modulo 2^128 plus the row count. Two sides that
//! hold the same rows have the same digest whatever order they are read in
//! and whichever provider stores them.

use sha2::{Digest as _, Sha256};
use truststream_core_db::{value::normalize, ColumnType, Row, TableSchema, Value};

/// The digest of a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableDigest {
    /// Rows added.
    pub rows: u64,
    /// Sum of the rows' 128-bit hashes, wrapping.
    pub sum: u128,
}

impl TableDigest {
    /// Adds one row's hash.
    pub fn add(&mut self, hash: u128) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(hash);
    }

    /// The digest as hex (32 digits).
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// A value in its canonical form for column type `ty`: core-db's stored
/// form (timestamps in UTC with six fractional digits, lowercase UUIDs,
/// integral floats as integers in integer columns...), JSON objects with
/// their keys sorted. A value that does not fit the type is kept as it is
/// (it then differs from any value that does).
pub fn canonical(ty: ColumnType, value: &Value) -> Value {
    if value.is_null() {
        return Value::Null;
    }
    let v = normalize("value", ty, value).unwrap_or_else(|_| value.clone());
    match ty {
        ColumnType::Json => sorted(v),
        ColumnType::Float | ColumnType::Numeric => match v.as_f64() {
            // One form per number: 2 and 2.0 are the same value here.
            Some(f) if v.is_number() => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(v),
            _ => v,
        },
        _ => v,
    }
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The canonical text of a primary-key value (to match rows across
/// providers and to print them).
pub fn key_text(schema: &TableSchema, key: &Value) -> String {
    let ty = schema.primary_key().map_or(ColumnType::Text, |c| c.ty);
    match canonical(ty, key) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Hashes one row over `schema`'s columns (sorted by name; a column the row
/// lacks counts as NULL; columns the schema does not name are ignored).
pub fn row_hash(schema: &TableSchema, row: &Row) -> u128 {
    let mut h = Sha256::new();
    let mut cols: Vec<_> = schema.columns.iter().collect();
    cols.sort_by(|a, b| a.name.cmp(&b.name));
    for c in cols {
        let v = canonical(c.ty, row.get(&c.name).unwrap_or(&Value::Null));
        h.update((c.name.len() as u64).to_le_bytes());
        h.update(c.name.as_bytes());
        let text = v.to_string();
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    let out = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&out[..16]);
    u128::from_le_bytes(first)
}

/// The names of the columns whose canonical values differ between `a` and
/// `b` (over `schema`'s columns).
pub fn differing_columns(schema: &TableSchema, a: &Row, b: &Row) -> Vec<String> {
    schema
        .columns
        .iter()
        .filter(|c| {
            canonical(c.ty, a.get(&c.name).unwrap_or(&Value::Null))
                != canonical(c.ty, b.get(&c.name).unwrap_or(&Value::Null))
        })
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use truststream_core_db::ColumnDef;

    fn schema() -> TableSchema {
        TableSchema::new("t")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::timestamp("at"))
            .column(ColumnDef::json("doc"))
            .column(ColumnDef::float("f"))
            .column(ColumnDef::numeric("n"))
    }

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn provider_forms_of_one_value_hash_alike() {
        let s = schema();
        let a = row(
            json!({"id": 1, "at": "2024-05-01T12:00:00Z", "doc": {"b": 1, "a": [1, {"y": 2, "x": 1}]}, "f": 2, "n": "1.50"}),
        );
        let b = row(
            json!({"n": 1.5, "f": 2.0, "doc": {"a": [1, {"x": 1, "y": 2}], "b": 1}, "at": "2024-05-01T12:00:00.000000Z", "id": 1.0}),
        );
        assert_eq!(row_hash(&s, &a), row_hash(&s, &b));
        let c = row(
            json!({"id": 1, "at": "2024-05-01T12:00:01Z", "doc": {"b": 1, "a": [1, {"y": 2, "x": 1}]}, "f": 2, "n": "1.50"}),
        );
        assert_ne!(row_hash(&s, &a), row_hash(&s, &c));
        assert_eq!(differing_columns(&s, &a, &c), vec!["at".to_string()]);
        // A missing column is NULL.
        let d = row(json!({"id": 1}));
        let e = row(json!({"id": 1, "at": null, "doc": null, "f": null, "n": null}));
        assert_eq!(row_hash(&s, &d), row_hash(&s, &e));
    }

    #[test]
    fn digest_is_order_independent_and_counts() {
        let s = schema();
        let rows: Vec<Row> = (0..5).map(|i| row(json!({"id": i}))).collect();
        let mut fwd = TableDigest::default();
        rows.iter().for_each(|r| fwd.add(row_hash(&s, r)));
        let mut rev = TableDigest::default();
        rows.iter().rev().for_each(|r| rev.add(row_hash(&s, r)));
        assert_eq!(fwd, rev);
        assert_eq!(fwd.rows, 5);
        let mut dup = TableDigest::default();
        rows.iter()
            .chain(rows.iter().take(1))
            .for_each(|r| dup.add(row_hash(&s, r)));
        assert_ne!(dup, fwd);
    }
}
