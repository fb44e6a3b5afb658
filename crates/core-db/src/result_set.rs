//! [`ResultSet`]: the rows of one result as one shared table of column
//! names and the values of every row in column order, for callers that
//! deserialize rows into their own types ([`crate::DatabaseExt::get_as`],
//! [`crate::DatabaseExt::read_as`]) without first building a JSON object
//! per row.
//!
//! A [`Row`] is a `serde_json` map that keeps its columns in order: each
//! row allocates its index and entries and copies every column name. A
//! result set's rows all have the same names in the same order, so a
//! [`ResultSet`] keeps the names once and the values of all rows in one
//! vector. Deserializing a row hands the deserializer the same
//! `(name, value)` entries, in the same order, that the row's JSON object
//! holds, so a type deserializes exactly as it does from the [`Row`]
//! ([`ResultSet::deserialize`] is tested against `serde_json::from_value`
//! of the rows).

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::de::value::MapDeserializer;
use serde::de::{DeserializeOwned, IgnoredAny, IntoDeserializer, Visitor};
use serde::{forward_to_deserialize_any, Deserializer};

use crate::{DbResult, Error, Row, Value};

/// The rows of one result: as [`Row`]s, or as one table of column names
/// and every row's values in column order.
///
/// Providers without a cheaper representation hand over their [`Row`]s
/// ([`ResultSet::from_rows`]); the SQL providers build the shared form
/// ([`crate::sql::rows::decode_set`]). Either way [`ResultSet::into_rows`]
/// gives the rows the map API returns and [`ResultSet::deserialize`] the
/// typed rows `from_value` of those rows gives.
#[derive(Clone)]
pub struct ResultSet {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Rows(Vec<Row>),
    /// A driver's own rows, read cell by cell ([`ResultSet::from_cells`]);
    /// the names are built on the first [`ResultSet::columns`].
    Cells {
        rows: Arc<dyn CellRows>,
        names: OnceLock<Vec<String>>,
    },
    Columns {
        /// Each name once, in result order.
        names: Vec<String>,
        /// Row after row, `names.len()` values each.
        values: Vec<Value>,
        /// How many rows (also when there are no columns).
        rows: usize,
    },
}

impl fmt::Debug for ResultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone().into_rows()).finish()
    }
}

impl Default for ResultSet {
    fn default() -> Self {
        ResultSet::from_rows(Vec::new())
    }
}

impl ResultSet {
    /// A result of ready-made rows.
    pub fn from_rows(rows: Vec<Row>) -> Self {
        ResultSet {
            inner: Inner::Rows(rows),
        }
    }

    /// A result of `values.len() / names.len()` rows (`rows` when there are
    /// no columns), each `names.len()` values in column order. The names
    /// must be distinct (a row is then exactly the JSON object of its
    /// entries); repeated names or a value count that does not fit are
    /// [`crate::ErrorKind::Internal`].
    pub fn from_columns(names: Vec<String>, values: Vec<Value>, rows: usize) -> DbResult<Self> {
        let fits = if names.is_empty() {
            values.is_empty()
        } else {
            values.len() == rows * names.len()
        };
        if !fits {
            return Err(Error::internal(format!(
                "a result set of {rows} rows and {} columns cannot hold {} values",
                names.len(),
                values.len()
            )));
        }
        if let Some(n) = repeated(&names) {
            return Err(Error::internal(format!(
                "a result set's column names must be distinct; {n} repeats"
            )));
        }
        Ok(ResultSet::columns_unchecked(names, values, rows))
    }

    /// [`ResultSet::from_columns`] for a caller that has checked the names
    /// ([`repeated`]) and the value count.
    pub(crate) fn columns_unchecked(names: Vec<String>, values: Vec<Value>, rows: usize) -> Self {
        debug_assert!(repeated(&names).is_none());
        ResultSet {
            inner: Inner::Columns {
                names,
                values,
                rows,
            },
        }
    }

    /// A result of a driver's rows, read cell by cell: a typed read
    /// ([`ResultSet::deserialize`]) hands each cell to the caller's type
    /// as it is (text as borrowed text, JSON text straight to the type),
    /// without first building a [`Value`] per cell; every other use makes
    /// the cells' values ([`Cell::into_value`]) first. A result whose
    /// names repeat (a raw query's `SELECT a.id, b.id`) is built as rows,
    /// each name at its first position with its last value.
    pub fn from_cells(rows: impl CellRows) -> Self {
        let width = rows.width();
        // Pairwise over the few columns of a typical result, no list.
        let repeats = if width <= 32 {
            (0..width).any(|a| (a + 1..width).any(|b| rows.name(a) == rows.name(b)))
        } else {
            let names: Vec<&str> = (0..width).map(|c| rows.name(c)).collect();
            repeated(&names).is_some()
        };
        if repeats {
            let names: Vec<&str> = (0..width).map(|c| rows.name(c)).collect();
            let mut out = Vec::with_capacity(rows.len());
            for r in 0..rows.len() {
                let mut row = Row::with_capacity(width);
                for (c, name) in names.iter().enumerate() {
                    row.insert((*name).to_string(), rows.cell(r, c).into_value());
                }
                out.push(row);
            }
            return ResultSet::from_rows(out);
        }
        ResultSet {
            inner: Inner::Cells {
                rows: Arc::new(rows),
                names: OnceLock::new(),
            },
        }
    }

    /// A cell-held set as the column-held set of its values (any other
    /// set as it is).
    fn materialized(self) -> Self {
        let Inner::Cells { rows, .. } = &self.inner else {
            return self;
        };
        let width = rows.width();
        let names = (0..width).map(|c| rows.name(c).to_string()).collect();
        let mut values = Vec::with_capacity(rows.len() * width);
        for r in 0..rows.len() {
            for c in 0..width {
                values.push(rows.cell(r, c).into_value());
            }
        }
        ResultSet::columns_unchecked(names, values, rows.len())
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Rows(r) => r.len(),
            Inner::Columns { rows, .. } => *rows,
            Inner::Cells { rows, .. } => rows.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows as JSON objects, as the map API ([`crate::Database::read`])
    /// returns them.
    pub fn into_rows(self) -> Vec<Row> {
        match self.materialized().inner {
            Inner::Cells { .. } => unreachable!("materialized"),
            Inner::Rows(r) => r,
            Inner::Columns {
                names,
                values,
                rows,
            } => each_row(&names, values, rows, |entries| {
                let mut row = Row::with_capacity(names.len());
                for (n, v) in entries {
                    row.insert(n.to_string(), v);
                }
                row
            })
            .collect(),
        }
    }

    /// The column names, once, in result order, when the set holds its
    /// rows by column (as the SQL providers' [`crate::Database::read_set`]
    /// does); `None` for a set made of [`Row`]s, whose rows may differ.
    pub fn columns(&self) -> Option<&[String]> {
        match &self.inner {
            Inner::Rows(_) => None,
            Inner::Columns { names, .. } => Some(names),
            Inner::Cells { rows, names } => Some(names.get_or_init(|| {
                (0..rows.width())
                    .map(|c| rows.name(c).to_string())
                    .collect()
            })),
        }
    }

    /// Every row deserialized into `T`, as `serde_json::from_value` of the
    /// row's JSON object does it; a row that does not fit is
    /// [`crate::ErrorKind::InvalidInput`] naming `T`.
    pub fn deserialize<T: DeserializeOwned>(self) -> DbResult<Vec<T>> {
        match self.inner {
            Inner::Rows(rows) => rows.into_iter().map(from_row).collect(),
            Inner::Cells { rows, .. } => {
                (0..rows.len()).map(|r| cell_row::<T>(&*rows, r)).collect()
            }
            Inner::Columns {
                names,
                values,
                rows,
            } => each_row(&names, values, rows, |entries| {
                T::deserialize(RowDeserializer { entries }).map_err(mismatch::<T>)
            })
            .collect(),
        }
    }

    /// The first row deserialized into `T` ([`ResultSet::deserialize`]),
    /// or `None` for no rows; the other rows are dropped undecoded.
    pub fn deserialize_first<T: DeserializeOwned>(self) -> DbResult<Option<T>> {
        match self.inner {
            Inner::Rows(rows) => rows.into_iter().next().map(from_row).transpose(),
            Inner::Cells { rows, .. } => (!rows.is_empty())
                .then(|| cell_row::<T>(&*rows, 0))
                .transpose(),
            Inner::Columns {
                mut names,
                mut values,
                rows,
            } => {
                if rows == 0 {
                    return Ok(None);
                }
                values.truncate(names.len());
                names.shrink_to_fit();
                let first = ResultSet {
                    inner: Inner::Columns {
                        names,
                        values,
                        rows: 1,
                    },
                };
                Ok(first.deserialize()?.pop())
            }
        }
    }
}

/// The rows as a sequence of maps, each map's entries in column order:
/// what serializing [`ResultSet::into_rows`] gives (`serde_json::to_string`
/// of the set is the JSON array of the rows), without building a map per
/// row.
impl serde::Serialize for ResultSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match &self.inner {
            Inner::Rows(rows) => rows.serialize(serializer),
            Inner::Cells { .. } => self.clone().materialized().serialize(serializer),
            Inner::Columns {
                names,
                values,
                rows,
            } => {
                let mut seq = serializer.serialize_seq(Some(*rows))?;
                if names.is_empty() {
                    for _ in 0..*rows {
                        seq.serialize_element(&Row::new())?;
                    }
                } else {
                    for row in values.chunks(names.len()) {
                        seq.serialize_element(&RowRef { names, values: row })?;
                    }
                }
                seq.end()
            }
        }
    }
}

impl ResultSet {
    /// The set as the JSON array of its rows: the bytes `serde_json::to_vec`
    /// of the set (and of [`ResultSet::into_rows`]) gives, made faster for
    /// a column-held set: each column name is escaped once for the whole
    /// set, not once per row, and the output is sized up front.
    pub fn to_json_vec(&self) -> Vec<u8> {
        match &self.inner {
            Inner::Rows(rows) => serde_json::to_vec(rows).unwrap_or_else(|_| b"[]".to_vec()),
            Inner::Cells { .. } => self.clone().materialized().to_json_vec(),
            Inner::Columns {
                names,
                values,
                rows,
            } => {
                if names.is_empty() {
                    return serde_json::to_vec(self).unwrap_or_else(|_| b"[]".to_vec());
                }
                // `"name":` of each column, escaped as serde_json escapes a key.
                let keys: Vec<Vec<u8>> = names
                    .iter()
                    .map(|n| {
                        let mut k = serde_json::to_vec(n).unwrap_or_default();
                        k.push(b':');
                        k
                    })
                    .collect();
                let key_bytes: usize = keys.iter().map(Vec::len).sum();
                let mut out = Vec::with_capacity(2 + rows * (key_bytes + names.len() * 16 + 2));
                out.push(b'[');
                for (i, row) in values.chunks(names.len()).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'{');
                    for (j, (key, value)) in keys.iter().zip(row).enumerate() {
                        if j > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(key);
                        write_value(&mut out, value);
                    }
                    out.push(b'}');
                }
                out.push(b']');
                out
            }
        }
    }
}

/// `value` as serde_json writes it (a `Value` cannot fail to serialize
/// into memory: its map keys are strings).
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        v => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
    }
}

/// One row of a column-held set, serialized as a map.
struct RowRef<'a> {
    names: &'a [String],
    values: &'a [Value],
}

impl serde::Serialize for RowRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.names.len()))?;
        for (n, v) in self.names.iter().zip(self.values) {
            map.serialize_entry(n, v)?;
        }
        map.end()
    }
}

/// One row's `(name, value)` entries, in column order.
type Entries<'a, 'v> = std::iter::Zip<
    std::iter::Map<std::slice::Iter<'a, String>, fn(&String) -> &str>,
    std::iter::Take<&'v mut std::vec::IntoIter<Value>>,
>;

/// `row` of each row's entries, for `rows` rows of `names.len()` values.
fn each_row<'a, T>(
    names: &'a [String],
    values: Vec<Value>,
    rows: usize,
    mut row: impl for<'v> FnMut(Entries<'a, 'v>) -> T + 'a,
) -> impl Iterator<Item = T> + 'a {
    let mut values = values.into_iter();
    let as_str: fn(&String) -> &str = String::as_str;
    (0..rows).map(move |_| {
        row(names
            .iter()
            .map(as_str)
            .zip(values.by_ref().take(names.len())))
    })
}

/// The first name that appears again later in `names`, if any (pairwise
/// for the few columns of a typical result, hashed for many).
pub(crate) fn repeated<S: AsRef<str>>(names: &[S]) -> Option<&str> {
    if names.len() <= 32 {
        names
            .iter()
            .enumerate()
            .find(|(i, n)| names[i + 1..].iter().any(|m| m.as_ref() == n.as_ref()))
            .map(|(_, n)| n.as_ref())
    } else {
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        names.iter().map(AsRef::as_ref).find(|n| !seen.insert(*n))
    }
}

/// A [`Row`] deserialized into `T` (`serde_json::from_value`).
pub(crate) fn from_row<T: DeserializeOwned>(row: Row) -> DbResult<T> {
    serde_json::from_value(Value::Object(row)).map_err(mismatch::<T>)
}

fn mismatch<T>(e: serde_json::Error) -> Error {
    Error::invalid_input(format!(
        "row does not match the requested type {}",
        std::any::type_name::<T>()
    ))
    .with_source(e)
}

/// One row's `(name, value)` entries as the deserializer of a JSON object
/// (`serde_json::Value::Object`) presents them: a map to every request but
/// an option's (`Some` of the map), a newtype's (its content) and an enum's
/// (the object read as an externally tagged enum).
struct RowDeserializer<'a, I, C>
where
    I: Iterator<Item = (&'a str, C)>,
{
    entries: I,
}

impl<'de, I, C> Deserializer<'de> for RowDeserializer<'de, I, C>
where
    I: Iterator<Item = (&'de str, C)>,
    C: IntoDeserializer<'de, serde_json::Error> + Into<Value>,
{
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let mut map = MapDeserializer::<_, serde_json::Error>::new(self.entries);
        let value = visitor.visit_map(&mut map)?;
        map.end()?;
        Ok(value)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // Rare (a row read as an enum): the object itself decides.
        let object: Row = self
            .entries
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect::<Row>();
        Value::Object(object)
            .into_deserializer()
            .deserialize_enum(name, variants, visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// The rows of one result as a driver holds them, read cell by cell
/// ([`ResultSet::from_cells`]).
///
/// Every row has [`CellRows::width`] columns, named by
/// [`CellRows::name`]. A cell is always readable: whatever can fail (text
/// that is not UTF-8, say) the driver checks when it builds the rows.
pub trait CellRows: Send + Sync + 'static {
    /// How many rows.
    fn len(&self) -> usize;

    /// Whether there are no rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many columns each row has.
    fn width(&self) -> usize;

    /// The name of column `column` (`column < width`).
    fn name(&self, column: usize) -> &str;

    /// The value at `row` and `column` (both in range).
    fn cell(&self, row: usize, column: usize) -> Cell<'_>;
}

/// One value of a driver's row ([`CellRows::cell`]), borrowed where it
/// can be. Its JSON value ([`Cell::into_value`]) is what the row's map
/// holds; a typed read hands the cell to the caller's type without
/// building that value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// SQL `NULL`: JSON `null`.
    Null,
    /// An integer: a JSON number.
    Int(i64),
    /// Text: a JSON string.
    Text(&'a str),
    /// The text of a JSON column: its JSON value when it parses, else a
    /// JSON string of the text.
    Json(&'a str),
    /// Any other value, already decoded.
    Value(Value),
}

impl Cell<'_> {
    /// The cell's JSON value.
    pub fn into_value(self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Int(i) => Value::from(i),
            Cell::Text(s) => Value::String(s.to_string()),
            Cell::Json(t) => {
                serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string()))
            }
            Cell::Value(v) => v,
        }
    }

    /// A JSON cell whose text is not JSON as the text it is.
    fn settled(self) -> Self {
        match self {
            Cell::Json(t) if serde_json::from_str::<IgnoredAny>(t).is_err() => Cell::Text(t),
            c => c,
        }
    }
}

impl From<Cell<'_>> for Value {
    fn from(c: Cell<'_>) -> Value {
        c.into_value()
    }
}

/// Row `row` of `rows` deserialized into `T`, as `from_value` of the
/// row's JSON object does it.
fn cell_row<T: DeserializeOwned>(rows: &dyn CellRows, row: usize) -> DbResult<T> {
    let entries = (0..rows.width()).map(|c| (rows.name(c), rows.cell(row, c)));
    T::deserialize(RowDeserializer { entries }).map_err(mismatch::<T>)
}

/// JSON text handed to `visit` through serde_json's own deserializer, to
/// its end (as `serde_json::from_str` reads it).
fn from_json_text<'de, V: Visitor<'de>>(
    text: &'de str,
    visit: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
    ) -> Result<V::Value, serde_json::Error>,
) -> Result<V::Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = visit(&mut de)?;
    de.end()?;
    Ok(value)
}

impl<'de> IntoDeserializer<'de, serde_json::Error> for Cell<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// A cell presents itself as its JSON value's deserializer
/// (`serde_json::Value`'s) would: the same visits, without the value.
impl<'de> Deserializer<'de> for Cell<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.settled() {
            Cell::Null => visitor.visit_unit(),
            // A JSON number of an `i64`: non-negative ones are `u64`s.
            Cell::Int(i) => match u64::try_from(i) {
                Ok(u) => visitor.visit_u64(u),
                Err(_) => visitor.visit_i64(i),
            },
            Cell::Text(s) => visitor.visit_str(s),
            Cell::Json(t) => from_json_text::<V>(t, |de| de.deserialize_any(visitor)),
            Cell::Value(v) => v.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.settled() {
            Cell::Null => visitor.visit_none(),
            Cell::Json(t) => from_json_text::<V>(t, |de| de.deserialize_option(visitor)),
            Cell::Value(v) => v.deserialize_option(visitor),
            c => visitor.visit_some(c),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.settled() {
            Cell::Json(t) => {
                from_json_text::<V>(t, |de| de.deserialize_newtype_struct(name, visitor))
            }
            Cell::Value(v) => v.deserialize_newtype_struct(name, visitor),
            c => visitor.visit_newtype_struct(c),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // Rare: the value itself decides.
        self.into_value().deserialize_enum(name, variants, visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn set(names: &[&str], rows: &[Vec<Value>]) -> ResultSet {
        ResultSet::from_columns(
            names.iter().map(|n| n.to_string()).collect(),
            rows.iter().flatten().cloned().collect(),
            rows.len(),
        )
        .unwrap()
    }

    fn rows_of(names: &[&str], rows: &[Vec<Value>]) -> Vec<Row> {
        rows.iter()
            .map(|r| {
                names
                    .iter()
                    .map(|n| n.to_string())
                    .zip(r.iter().cloned())
                    .collect()
            })
            .collect()
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Agent {
        id: i64,
        name: Option<String>,
        tags: Vec<String>,
        meta: BTreeMap<String, Value>,
        #[serde(default)]
        absent: Option<i32>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Wrapped(Agent);

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        id: i64,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Tagged {
        A { x: i64 },
        B(String),
    }

    /// Deserializing from the shared form gives what `from_value` of the
    /// rows gives, value or error, for `T`.
    fn same<T: DeserializeOwned + PartialEq + fmt::Debug>(names: &[&str], rows: &[Vec<Value>]) {
        let expected: Result<Vec<T>, String> = rows_of(names, rows)
            .into_iter()
            .map(|r| serde_json::from_value(Value::Object(r)).map_err(|e| e.to_string()))
            .collect();
        let got: Result<Vec<T>, String> = set(names, rows)
            .deserialize()
            .map_err(|e| std::error::Error::source(&e).expect("source").to_string());
        assert_eq!(
            got,
            expected,
            "{} from {names:?}",
            std::any::type_name::<T>()
        );
        // Through the rows: the same again.
        let via_rows: Result<Vec<T>, String> = ResultSet::from_rows(rows_of(names, rows))
            .deserialize()
            .map_err(|e| std::error::Error::source(&e).expect("source").to_string());
        assert_eq!(via_rows, expected);
        // Through cells (JSON values as their text): the same values, and
        // an error where there was one (serde_json's message may add
        // where in the text it stopped).
        for as_json in [false, true] {
            let via_cells = cells(names, rows, as_json).deserialize::<T>();
            match (&via_cells, &expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{}", std::any::type_name::<T>()),
                (Err(e), Err(_)) => assert_eq!(e.kind(), crate::ErrorKind::InvalidInput),
                _ => panic!(
                    "{} from cells: {via_cells:?}, from values: {expected:?}",
                    std::any::type_name::<T>()
                ),
            }
        }
    }

    /// A driver's cells: each value as the cell a driver would give for
    /// it (with `as_json`, strings, arrays and objects as JSON text).
    struct TestCells {
        names: Vec<String>,
        rows: Vec<Vec<Stored>>,
    }

    enum Stored {
        Null,
        Int(i64),
        Text(String),
        Json(String),
        Value(Value),
    }

    impl CellRows for TestCells {
        fn len(&self) -> usize {
            self.rows.len()
        }
        fn width(&self) -> usize {
            self.names.len()
        }
        fn name(&self, column: usize) -> &str {
            &self.names[column]
        }
        fn cell(&self, row: usize, column: usize) -> Cell<'_> {
            match &self.rows[row][column] {
                Stored::Null => Cell::Null,
                Stored::Int(i) => Cell::Int(*i),
                Stored::Text(s) => Cell::Text(s),
                Stored::Json(t) => Cell::Json(t),
                Stored::Value(v) => Cell::Value(v.clone()),
            }
        }
    }

    fn cells(names: &[&str], rows: &[Vec<Value>], as_json: bool) -> ResultSet {
        let stored = |v: &Value| match v {
            Value::Null => Stored::Null,
            Value::Number(n) if n.is_i64() => Stored::Int(n.as_i64().unwrap()),
            Value::String(s) if !as_json => Stored::Text(s.clone()),
            Value::String(_) | Value::Array(_) | Value::Object(_) if as_json => {
                Stored::Json(v.to_string())
            }
            v => Stored::Value(v.clone()),
        };
        ResultSet::from_cells(TestCells {
            names: names.iter().map(|n| n.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(stored).collect())
                .collect(),
        })
    }

    #[test]
    fn cells_hold_the_values_of_their_rows() {
        let names = ["id", "name", "doc", "bad_json", "n", "flag"];
        let rows = vec![
            vec![
                json!(-3),
                json!("é \"q\""),
                json!({"b": [1, null], "a": "x"}),
                json!("{not json"),
                json!(1.5),
                json!(true),
            ],
            vec![
                json!(u32::MAX),
                Value::Null,
                json!([]),
                json!(""),
                json!(-0.0),
                json!(false),
            ],
        ];
        let set = || {
            ResultSet::from_cells(TestCells {
                names: names.iter().map(|n| n.to_string()).collect(),
                rows: rows
                    .iter()
                    .map(|r| {
                        vec![
                            Stored::Int(r[0].as_i64().unwrap()),
                            r[1].as_str()
                                .map_or(Stored::Null, |s| Stored::Text(s.into())),
                            Stored::Json(r[2].to_string()),
                            // Not JSON: the text itself.
                            Stored::Json(r[3].as_str().unwrap().into()),
                            Stored::Value(r[4].clone()),
                            Stored::Value(r[5].clone()),
                        ]
                    })
                    .collect(),
            })
        };
        let expected = rows_of(&names, &rows);
        assert_eq!(set().len(), 2);
        assert_eq!(set().columns().unwrap(), &names.map(String::from)[..]);
        assert_eq!(set().into_rows(), expected);
        assert_eq!(set().deserialize::<Row>().unwrap(), expected);
        assert_eq!(
            set().deserialize_first::<Value>().unwrap(),
            Some(Value::Object(expected[0].clone()))
        );
        let text = serde_json::to_string(&expected).unwrap();
        assert_eq!(serde_json::to_string(&set()).unwrap(), text);
        assert_eq!(String::from_utf8(set().to_json_vec()).unwrap(), text);
        assert_eq!(format!("{:?}", set()), format!("{expected:?}"));
        // Repeated names: rows, each name at its first position with its
        // last value.
        let repeated = ResultSet::from_cells(TestCells {
            names: vec!["a".into(), "b".into(), "a".into()],
            rows: vec![vec![Stored::Int(1), Stored::Int(2), Stored::Int(3)]],
        });
        assert!(repeated.columns().is_none());
        let row = &repeated.into_rows()[0];
        assert_eq!(Value::Object(row.clone()), json!({"a": 3, "b": 2}));
        assert!(row.keys().eq(["a", "b"]));
        // No rows.
        let empty = ResultSet::from_cells(TestCells {
            names: vec!["a".into()],
            rows: Vec::new(),
        });
        assert!(empty.is_empty());
        assert_eq!(empty.deserialize_first::<Value>().unwrap(), None);
    }

    #[test]
    fn typed_rows_are_what_from_value_of_the_json_rows_gives() {
        let names = ["id", "name", "tags", "meta", "extra"];
        let rows = vec![
            vec![
                json!(1),
                json!("Ünïcødé ✓ 🦀"),
                json!(["a", "b"]),
                json!({"z": 1, "a": [null]}),
                json!(true),
            ],
            vec![
                json!(i64::MAX),
                Value::Null,
                json!([]),
                json!({}),
                Value::Null,
            ],
        ];
        same::<Agent>(&names, &rows);
        same::<Wrapped>(&names, &rows);
        same::<Option<Agent>>(&names, &rows);
        same::<Value>(&names, &rows);
        same::<Row>(&names, &rows);
        same::<BTreeMap<String, Value>>(&names, &rows);
        // Errors: a wrong type, a missing field, an unknown field, a
        // number out of range, a row that is not a sequence.
        same::<Strict>(&names, &rows);
        same::<Agent>(
            &["id", "name", "tags"],
            &[vec![json!(1), json!("x"), json!([])]],
        );
        same::<Agent>(
            &names,
            &[vec![
                json!("1"),
                json!("x"),
                json!([]),
                json!({}),
                Value::Null,
            ]],
        );
        same::<BTreeMap<String, i8>>(&["a"], &[vec![json!(300)]]);
        same::<Vec<Value>>(&["a"], &[vec![json!(1)]]);
        same::<(String, Value)>(&["a"], &[vec![json!(1)]]);
        same::<String>(&["a"], &[vec![json!(1)]]);
        // Enums read the object as externally tagged.
        same::<Tagged>(&["A"], &[vec![json!({"x": 5})]]);
        same::<Tagged>(&["B"], &[vec![json!("s")]]);
        same::<Tagged>(&["A", "B"], &[vec![json!({"x": 5}), json!("s")]]);
    }

    #[test]
    fn json_values_keep_their_order_and_rows_their_columns() {
        let names = ["z", "a", "m"];
        let rows = vec![
            vec![json!(1), json!({"y": 1, "b": 2}), json!("x")],
            vec![json!(2), json!(null), json!("y")],
        ];
        let typed: Vec<Value> = set(&names, &rows).deserialize().unwrap();
        for (t, r) in typed.iter().zip(rows_of(&names, &rows)) {
            let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["z", "a", "m"]);
            assert_eq!(t, &Value::Object(r));
        }
        let inner: Vec<&String> = typed[0]["a"].as_object().unwrap().keys().collect();
        assert_eq!(inner, ["y", "b"]);
        let back = set(&names, &rows).into_rows();
        assert_eq!(back, rows_of(&names, &rows));
        assert!(back[0].keys().eq(names.iter()));
    }

    #[test]
    fn serializing_a_set_gives_the_json_of_its_rows() {
        let names = ["z", "a", "m"];
        let rows = vec![
            vec![json!(1), json!({"y": 1, "b": [2, "é\"q"]}), json!("x")],
            vec![json!(null), json!(null), json!(-2.5)],
        ];
        let by_column = set(&names, &rows);
        assert_eq!(by_column.columns().unwrap(), &names.map(String::from)[..]);
        let text = serde_json::to_string(&by_column).unwrap();
        assert_eq!(
            text,
            serde_json::to_string(&rows_of(&names, &rows)).unwrap()
        );
        assert!(text.starts_with(r#"[{"z":1,"a":{"y":1,"b":"#), "{text}");
        let by_row = ResultSet::from_rows(rows_of(&names, &rows));
        assert!(by_row.columns().is_none());
        assert_eq!(serde_json::to_string(&by_row).unwrap(), text);
        // No rows; rows of no columns.
        assert_eq!(serde_json::to_string(&set(&names, &[])).unwrap(), "[]");
        let empty = ResultSet::from_columns(Vec::new(), Vec::new(), 2).unwrap();
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[{},{}]");
    }

    #[test]
    fn to_json_vec_is_serde_jsons_bytes() {
        // Keys and values that need escaping, unicode, nested JSON, every
        // scalar kind, nulls.
        let names = ["id", "quote\"d", "ünï\u{7}", "nested", "flag", "f"];
        let rows = vec![
            vec![
                json!("0d8f6f0a-5a55-4c38-9c1e-2f6f4f5f6f7f"),
                json!("line\nbreak \\ \"q\" \u{1}"),
                json!("日本"),
                json!({"b": [1, {"c": null}], "a": "x"}),
                json!(true),
                json!(1.5),
            ],
            vec![
                json!(null),
                json!(""),
                json!(-7),
                json!([]),
                json!(false),
                json!(u64::MAX),
            ],
        ];
        for s in [
            set(&names, &rows),
            ResultSet::from_rows(rows_of(&names, &rows)),
            set(&names, &[]),
            ResultSet::from_columns(Vec::new(), Vec::new(), 2).unwrap(),
        ] {
            assert_eq!(
                String::from_utf8(s.to_json_vec()).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
        assert_eq!(set(&names, &[]).to_json_vec(), b"[]");
    }

    #[test]
    fn the_first_row_and_empty_results() {
        let names = ["id"];
        let rows = vec![vec![json!(1)], vec![json!("not a number")]];
        #[derive(Debug, PartialEq, Deserialize)]
        struct Id {
            id: i64,
        }
        assert_eq!(
            set(&names, &rows).deserialize_first::<Id>().unwrap(),
            Some(Id { id: 1 }),
            "later rows are not decoded"
        );
        assert!(set(&names, &rows).deserialize::<Id>().is_err());
        let empty = set(&names, &[]);
        assert!(empty.is_empty());
        assert_eq!(empty.clone().deserialize_first::<Id>().unwrap(), None);
        assert_eq!(empty.into_rows(), Vec::<Row>::new());
        // Rows without columns.
        let no_cols = ResultSet::from_columns(Vec::new(), Vec::new(), 2).unwrap();
        assert_eq!(no_cols.len(), 2);
        assert_eq!(no_cols.into_rows(), vec![Row::new(), Row::new()]);
    }

    #[test]
    fn malformed_sets_are_refused() {
        let e = ResultSet::from_columns(vec!["a".into(), "a".into()], vec![], 0).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Internal);
        assert!(e.message().contains("a repeats"), "{e}");
        let e = ResultSet::from_columns(vec!["a".into()], vec![json!(1)], 2).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Internal);
        let e = ResultSet::from_columns(vec![], vec![json!(1)], 1).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Internal);
    }

    #[test]
    fn repeated_names_are_found_few_or_many() {
        assert_eq!(repeated(&["a", "b", "c"]), None);
        assert_eq!(repeated(&["a", "b", "a"]), Some("a"));
        assert_eq!(repeated::<&str>(&[]), None);
        let many: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        assert_eq!(repeated(&many), None);
        let mut again = many.clone();
        again.push("c7".into());
        assert_eq!(repeated(&again), Some("c7"));
    }

    #[test]
    fn a_mismatch_names_the_type() {
        let e = set(&["id"], &[vec![json!("x")]])
            .deserialize::<Strict>()
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.message().contains("Strict"), "{e}");
    }
}
