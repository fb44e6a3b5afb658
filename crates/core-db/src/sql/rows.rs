//! Building the [`Row`]s of one result set from one shared description of
//! its columns, so a provider decoding 10,000 rows looks up each column's
//! type and lays out its name once, not once per row.
//!
//! A [`Row`] keeps its columns in order in a hash map with a SipHash index;
//! inserting columns one by one hashes every name of every row. The rows of
//! a result set all have the same names in the same order, so
//! [`ResultColumns`] builds one row of nulls (the template) when the result
//! set starts and each row is a copy of it with the values filled in by
//! position: the copy keeps the template's hashes, so no name is hashed
//! again. The rows are exactly the rows that inserting each column in
//! order makes (same names, same order, same values; a name that appears
//! twice, as in a raw query's `SELECT a.id, b.id`, keeps its first position
//! and its last value).

use super::engine::ColumnHints;
use crate::result_set::repeated;
use crate::{ColumnType, DbResult, ResultSet, Row, Value};

/// The columns of one result set: their names in order, the type each
/// decodes as, and the template its rows are copied from.
#[derive(Debug, Clone)]
pub struct ResultColumns {
    /// Every name once, in order, each with a null value.
    template: Row,
    /// The names in result order, kept only when one repeats (else they
    /// are the template's keys).
    repeated: Option<Vec<String>>,
    /// The type each column decodes as, when known (one per column).
    types: Vec<Option<ColumnType>>,
}

impl ResultColumns {
    /// The columns named `names` (in result order), typed by `hints`
    /// ([`ColumnHints::get`], resolved here once per column).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, hints: ColumnHints<'_>) -> Self {
        let names: Vec<&str> = names.into_iter().collect();
        let mut template = Row::with_capacity(names.len());
        let mut types = Vec::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            template.insert((*n).to_string(), Value::Null);
            types.push(hints.get(i, n));
        }
        let repeated = (template.len() != names.len())
            .then(|| names.iter().map(|n| (*n).to_string()).collect());
        ResultColumns {
            template,
            repeated,
            types,
        }
    }

    /// How many columns a result row has (repeated names counted).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether the result has no columns.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The type column `index` decodes as, when known.
    pub fn ty(&self, index: usize) -> Option<ColumnType> {
        self.types.get(index).copied().flatten()
    }

    /// One row: `value(i, ty)` decodes column `i` as `ty` (its type,
    /// when known), called once per column in order; its first error is
    /// returned.
    pub fn row(
        &self,
        value: impl FnMut(usize, Option<ColumnType>) -> DbResult<Value>,
    ) -> DbResult<Row> {
        match &self.repeated {
            None => fill(self.template.clone(), &self.types, value),
            Some(names) => by_insert(names, self.template.len(), &self.types, value),
        }
    }

    /// Whether `row` has exactly the result's names, in result order (so
    /// filling its values by position makes the row
    /// [`ResultColumns::row`] makes).
    pub fn fits(&self, row: &Row) -> bool {
        self.repeated.is_none()
            && row.len() == self.template.len()
            && row.keys().zip(self.template.keys()).all(|(a, b)| a == b)
    }

    /// [`ResultColumns::row`] for the last (or only) row: the template
    /// becomes the row.
    pub fn into_row(
        self,
        value: impl FnMut(usize, Option<ColumnType>) -> DbResult<Value>,
    ) -> DbResult<Row> {
        match &self.repeated {
            None => fill(self.template, &self.types, value),
            Some(names) => by_insert(names, self.template.len(), &self.types, value),
        }
    }
}

/// Decodes every row of a result set: one [`ResultColumns`] made by
/// `columns` from the first row, then `value(row, i, ty)` for each column
/// of each row, in order (the first error is returned); the template
/// itself becomes the last row. No rows, no call.
pub fn decode_all<R>(
    rows: &[R],
    columns: impl FnOnce(&R) -> ResultColumns,
    value: impl FnMut(&R, usize, Option<ColumnType>) -> DbResult<Value>,
) -> DbResult<Vec<Row>> {
    decode_into(rows, Vec::new(), columns, value)
}

/// [`decode_all`] (which is this with no husks) into rows the caller
/// hands over (`husks`, row by row;
/// an `INSERT ... RETURNING` gets back the maps its input rows came in,
/// their values taken as binds): a husk whose names are the result's
/// columns in order (a row of the template's shape) keeps its names and
/// index and takes the row's values, so the row costs no copy of the
/// names and the husk no freeing; any other row (no husk left, other
/// names, another order) is copied from the template as in
/// [`decode_all`]. The rows are the rows [`decode_all`] makes.
pub fn decode_into<R>(
    rows: &[R],
    husks: Vec<Row>,
    columns: impl FnOnce(&R) -> ResultColumns,
    mut value: impl FnMut(&R, usize, Option<ColumnType>) -> DbResult<Value>,
) -> DbResult<Vec<Row>> {
    let (Some(first), Some((last, init))) = (rows.first(), rows.split_last()) else {
        return Ok(Vec::new());
    };
    let cols = columns(first);
    let mut husks = husks.into_iter();
    let mut out = Vec::with_capacity(rows.len());
    for r in init {
        let row = match husks.next() {
            Some(h) if cols.fits(&h) => fill(h, &cols.types, |i, ty| value(r, i, ty))?,
            _ => cols.row(|i, ty| value(r, i, ty))?,
        };
        out.push(row);
    }
    // The last row without a husk that fits is the template itself.
    let row = match husks.next() {
        Some(h) if cols.fits(&h) => fill(h, &cols.types, |i, ty| value(last, i, ty))?,
        _ => cols.into_row(|i, ty| value(last, i, ty))?,
    };
    out.push(row);
    Ok(out)
}

/// One row (a result of at most one row) whose columns are `names`:
/// into `husk` when its names are exactly `names` in order (its values
/// replaced, `value(i, ty)` once per column in order, `ty` from `hints`),
/// else as [`ResultColumns::into_row`] makes it. The row is the same
/// either way; the husk saves copying and hashing the names.
pub fn decode_one_into<'a>(
    names: impl Iterator<Item = &'a str> + Clone,
    hints: ColumnHints<'_>,
    husk: Option<Row>,
    mut value: impl FnMut(usize, Option<ColumnType>) -> DbResult<Value>,
) -> DbResult<Row> {
    match husk {
        Some(mut row)
            if row.len() == names.clone().count()
                && row.keys().zip(names.clone()).all(|(k, n)| k == n) =>
        {
            for (i, (slot, name)) in row.values_mut().zip(names).enumerate() {
                *slot = value(i, hints.get(i, name))?;
            }
            Ok(row)
        }
        _ => ResultColumns::new(names, hints).into_row(value),
    }
}

/// Decodes every row of a result set into a [`ResultSet`]: the column
/// names once (`names` of the first row), then `value(row, i, ty)` for
/// each column of each row, in order (the first error is returned), with
/// `ty` from `hints`. A result whose names repeat (a raw query's
/// `SELECT a.id, b.id`) is built as rows, as [`decode_all`] builds them.
pub fn decode_set<'r, R>(
    rows: &'r [R],
    names: impl FnOnce(&'r R) -> Vec<&'r str>,
    hints: ColumnHints<'_>,
    mut value: impl FnMut(&R, usize, Option<ColumnType>) -> DbResult<Value>,
) -> DbResult<ResultSet> {
    let Some(first) = rows.first() else {
        return Ok(ResultSet::default());
    };
    let names = names(first);
    if repeated(&names).is_some() {
        let cols = ResultColumns::new(names, hints);
        return decode_all(rows, |_| cols, value).map(ResultSet::from_rows);
    }
    let types: Vec<Option<ColumnType>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| hints.get(i, n))
        .collect();
    let mut values = Vec::with_capacity(rows.len() * names.len());
    for r in rows {
        for (i, ty) in types.iter().enumerate() {
            values.push(value(r, i, *ty)?);
        }
    }
    let names = names.into_iter().map(str::to_string).collect();
    Ok(ResultSet::columns_unchecked(names, values, rows.len()))
}

/// Distinct names: the template's slots are the columns.
fn fill(
    mut row: Row,
    types: &[Option<ColumnType>],
    mut value: impl FnMut(usize, Option<ColumnType>) -> DbResult<Value>,
) -> DbResult<Row> {
    for ((i, slot), ty) in row.values_mut().enumerate().zip(types) {
        *slot = value(i, *ty)?;
    }
    Ok(row)
}

/// Repeated names: each column inserted in order (the later value of a
/// name replaces the earlier one in its place).
fn by_insert(
    names: &[String],
    distinct: usize,
    types: &[Option<ColumnType>],
    mut value: impl FnMut(usize, Option<ColumnType>) -> DbResult<Value>,
) -> DbResult<Row> {
    let mut out = Row::with_capacity(distinct);
    for ((i, name), ty) in names.iter().enumerate().zip(types) {
        out.insert(name.clone(), value(i, *ty)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ColumnDef, Error, ErrorKind, TableSchema};
    use serde_json::json;

    /// What inserting each column in order makes: the rows before this
    /// module.
    fn inserted(names: &[&str], values: &[Value]) -> Row {
        let mut r = Row::new();
        for (n, v) in names.iter().zip(values) {
            r.insert(n.to_string(), v.clone());
        }
        r
    }

    /// A column decoder that records the rows it sees and fails on row 2.
    fn second_row_fails(seen: &mut Vec<i32>, r: i32) -> DbResult<Value> {
        seen.push(r);
        if r == 2 {
            Err(Error::internal("bad row"))
        } else {
            Ok(json!(r))
        }
    }

    #[test]
    fn rows_are_what_inserting_in_order_makes() {
        let hints = ColumnHints::Position(&[ColumnType::Integer, ColumnType::Text]);
        for names in [
            &["id", "name", "score"][..],
            &["z", "a", "m"],
            // A repeated name keeps its first position and its last value.
            &["id", "name", "id"],
            &["a", "a", "a"],
            &[],
        ] {
            let cols = ResultColumns::new(names.iter().copied(), hints);
            assert_eq!(cols.len(), names.len());
            assert_eq!(cols.is_empty(), names.is_empty());
            for k in 0..3 {
                let values: Vec<Value> = (0..names.len())
                    .map(|i| json!(format!("{k}-{i}")))
                    .collect();
                let got = cols.row(|i, _| Ok(values[i].clone())).unwrap();
                let expected = inserted(names, &values);
                assert_eq!(got, expected, "{names:?}");
                assert!(
                    got.keys().eq(expected.keys()),
                    "column order of {names:?}: {got:?}"
                );
            }
            let values: Vec<Value> = (0..names.len()).map(|i| json!(i)).collect();
            let last = cols.into_row(|i, _| Ok(values[i].clone())).unwrap();
            let expected = inserted(names, &values);
            assert_eq!(last, expected);
            assert!(last.keys().eq(expected.keys()), "{names:?}");
        }
    }

    #[test]
    fn decode_all_makes_the_rows_of_a_result_set() {
        let names = ["id", "name", "id"];
        let hints = ColumnHints::Position(&[]);
        let results: [&[[i64; 3]]; 3] = [&[], &[[1, 2, 3]], &[[1, 2, 3], [4, 5, 6], [7, 8, 9]]];
        for result in results {
            let mut made = 0;
            let rows = decode_all(
                result,
                |_| {
                    made += 1;
                    ResultColumns::new(names, hints)
                },
                |r, i, _| Ok(json!(r[i])),
            )
            .unwrap();
            assert_eq!(
                made,
                usize::from(!result.is_empty()),
                "columns once a result"
            );
            let expected: Vec<Row> = result
                .iter()
                .map(|r| inserted(&names, &r.map(|v| json!(v))))
                .collect();
            assert_eq!(rows, expected);
        }
        // The first error stops the result set.
        let mut seen = Vec::new();
        let e = decode_all(
            &[1, 2, 3],
            |_| ResultColumns::new(["a"], hints),
            |r, _, _| second_row_fails(&mut seen, *r),
        )
        .unwrap_err();
        assert_eq!(e.message(), "bad row");
        assert_eq!(seen, [1, 2]);
    }

    #[test]
    fn decode_into_makes_the_rows_decode_all_makes_whatever_the_husks() {
        let names = ["id", "name", "score"];
        let hints = ColumnHints::Position(&[]);
        let result: &[[i64; 3]] = &[[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]];
        let husk = |keys: &[&str]| inserted(keys, &vec![Value::Null; keys.len()]);
        let husks = vec![
            // Fits: its values are replaced.
            inserted(&names, &[json!("old"), json!(0), json!(0)]),
            // Another order, a name short, and a name more: not used.
            husk(&["name", "id", "score"]),
            husk(&["id", "name"]),
            husk(&["id", "name", "score", "extra"]),
            // More husks than rows: ignored.
            husk(&names),
        ];
        for husks in [husks.clone(), husks[..1].to_vec(), Vec::new()] {
            let rows = decode_into(
                result,
                husks,
                |_| ResultColumns::new(names, hints),
                |r, i, _| Ok(json!(r[i])),
            )
            .unwrap();
            let expected = decode_all(
                result,
                |_| ResultColumns::new(names, hints),
                |r, i, _| Ok(json!(r[i])),
            )
            .unwrap();
            assert_eq!(rows, expected);
            for (got, want) in rows.iter().zip(&expected) {
                assert!(got.keys().eq(want.keys()), "column order");
            }
        }
        // Repeated names never fill a husk (the last value wins in place).
        let repeated = ["id", "name", "id"];
        let rows = decode_into(
            &[[1, 2, 3]],
            vec![husk(&["id", "name"])],
            |_| ResultColumns::new(repeated, hints),
            |r, i, _| Ok(json!(r[i])),
        )
        .unwrap();
        assert_eq!(
            rows,
            vec![inserted(&repeated, &[json!(1), json!(2), json!(3)])]
        );
        // The first error stops the result set.
        let mut seen = Vec::new();
        let e = decode_into(
            &[1, 2, 3],
            vec![husk(&["a"]); 3],
            |_| ResultColumns::new(["a"], hints),
            |r, _, _| second_row_fails(&mut seen, *r),
        )
        .unwrap_err();
        assert_eq!(e.message(), "bad row");
        assert_eq!(seen, [1, 2]);
    }

    #[test]
    fn decode_one_into_makes_the_row_into_row_makes_whatever_the_husk() {
        let hints = ColumnHints::Position(&[ColumnType::Integer, ColumnType::Text]);
        let names = ["id", "name", "score"];
        let husk = |keys: &[&str]| inserted(keys, &vec![json!("old"); keys.len()]);
        let values = [json!(1), json!("a"), json!(2.5)];
        let expected = inserted(&names, &values);
        for h in [
            Some(husk(&names)),
            Some(husk(&["name", "id", "score"])),
            Some(husk(&["id", "name"])),
            Some(husk(&["id", "name", "score", "x"])),
            None,
        ] {
            let mut types = Vec::new();
            let row = decode_one_into(names.iter().copied(), hints, h.clone(), |i, ty| {
                types.push(ty);
                Ok(values[i].clone())
            })
            .unwrap();
            assert_eq!(row, expected, "{h:?}");
            assert!(row.keys().eq(expected.keys()), "column order, {h:?}");
            assert_eq!(
                types,
                [Some(ColumnType::Integer), Some(ColumnType::Text), None],
                "each column decoded as its hint, {h:?}"
            );
        }
        // Repeated names: the husk cannot fit; the last value wins in place.
        let repeated = ["id", "name", "id"];
        let row = decode_one_into(
            repeated.iter().copied(),
            hints,
            Some(husk(&["id", "name"])),
            |i, _| Ok(json!(i)),
        )
        .unwrap();
        assert_eq!(row, inserted(&repeated, &[json!(0), json!(1), json!(2)]));
        // An error stops the row.
        let e = decode_one_into(names.iter().copied(), hints, Some(husk(&names)), |i, _| {
            if i == 1 {
                Err(Error::internal("bad column"))
            } else {
                Ok(Value::Null)
            }
        })
        .unwrap_err();
        assert_eq!(e.message(), "bad column");
    }

    #[test]
    fn decode_set_holds_the_rows_decode_all_makes() {
        let hints = ColumnHints::Position(&[ColumnType::Integer, ColumnType::Text]);
        let results: [&[[i64; 3]]; 3] = [&[], &[[1, 2, 3]], &[[1, 2, 3], [4, 5, 6], [7, 8, 9]]];
        for names in [["id", "name", "score"], ["id", "name", "id"]] {
            for result in results {
                let mut types = Vec::new();
                let set = decode_set(
                    result,
                    |_| names.to_vec(),
                    hints,
                    |r, i, ty| {
                        types.push(ty);
                        Ok(json!(r[i]))
                    },
                )
                .unwrap();
                let expected = decode_all(
                    result,
                    |_| ResultColumns::new(names, hints),
                    |r, i, _| Ok(json!(r[i])),
                )
                .unwrap();
                assert_eq!(set.len(), result.len());
                let rows = set.into_rows();
                assert_eq!(rows, expected, "{names:?}");
                for (got, want) in rows.iter().zip(&expected) {
                    assert!(got.keys().eq(want.keys()), "column order of {names:?}");
                }
                let want_types: Vec<Option<ColumnType>> = result
                    .iter()
                    .flat_map(|_| [Some(ColumnType::Integer), Some(ColumnType::Text), None])
                    .collect();
                assert_eq!(types, want_types, "each column decoded as its hint");
            }
        }
        // The first error stops the result set.
        let mut seen = Vec::new();
        let e = decode_set(
            &[1, 2, 3],
            |_| vec!["a"],
            hints,
            |r, _, _| second_row_fails(&mut seen, *r),
        )
        .unwrap_err();
        assert_eq!(e.message(), "bad row");
        assert_eq!(seen, [1, 2]);
    }

    #[test]
    fn types_come_from_the_hints_once_and_errors_stop_the_row() {
        let schema = TableSchema::new("t")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::float("score"));
        let cols = ResultColumns::new(["score", "other", "id"], ColumnHints::Schema(&schema));
        assert_eq!(cols.ty(0), Some(ColumnType::Float));
        assert_eq!(cols.ty(1), None);
        assert_eq!(cols.ty(2), Some(ColumnType::Integer));
        assert_eq!(cols.ty(3), None, "past the end");
        let mut seen = Vec::new();
        let e = cols
            .row(|i, ty| {
                seen.push(ty);
                if i == 1 {
                    Err(Error::internal("bad column"))
                } else {
                    Ok(Value::Null)
                }
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(
            seen,
            [Some(ColumnType::Float), None],
            "each column gets its type; none is decoded after the error"
        );
    }
}
