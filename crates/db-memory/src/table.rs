//! One table: schema, rows in insertion order, primary-key and unique indexes.

use std::collections::{BTreeMap, HashMap};

use truststream_core_db::{ident, ColumnDefault, Error, Row, TableSchema, Value};

use crate::value::{self, normalize};

/// An index. Unique indexes keep `key -> row sequence number` to enforce
/// uniqueness; other indexes are recorded (their names are reserved) but need
/// no structure, since every read scans.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    pub name: String,
    pub columns: Vec<String>,
    pub unique: bool,
    entries: HashMap<String, u64>,
}

/// A table and its rows.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// The schema, with constant defaults already normalized.
    pub schema: TableSchema,
    /// Primary-key column name.
    pub pk: String,
    /// Rows by sequence number (insertion order).
    pub rows: BTreeMap<u64, Row>,
    by_pk: HashMap<String, u64>,
    next_seq: u64,
    /// Last value handed out by an auto-increment primary key.
    pub auto_inc: i64,
    pub indexes: Vec<Index>,
}

/// The lookup key of a tuple of values; `None` when any is null (SQL unique
/// constraints do not compare nulls).
fn key_of<'a>(values: impl IntoIterator<Item = Option<&'a Value>>) -> Option<String> {
    let mut parts = Vec::new();
    for v in values {
        match v {
            None | Some(Value::Null) => return None,
            Some(v) => parts.push(v),
        }
    }
    serde_json::to_string(&parts).ok()
}

impl Table {
    /// A new empty table; the schema must be validated already.
    pub fn new(mut schema: TableSchema) -> Result<Table, Error> {
        let table_name = schema.name.clone();
        let mut pk = None;
        let mut indexes = Vec::new();
        for c in &mut schema.columns {
            if let Some(ColumnDefault::Value(v)) = &c.default {
                if v.is_null() {
                    c.default = None;
                } else {
                    let v = normalize(&c.name, c.ty, v)
                        .map_err(|e| e.with_context("table", table_name.clone()))?;
                    c.default = Some(ColumnDefault::Value(v));
                }
            }
            if c.primary_key {
                c.nullable = false;
                pk = Some(c.name.clone());
            } else if c.unique {
                let mut name = format!("{}_{}_key", table_name, c.name);
                name.truncate(ident::MAX_LEN);
                indexes.push(Index {
                    name,
                    columns: vec![c.name.clone()],
                    unique: true,
                    entries: HashMap::new(),
                });
            }
        }
        let pk = pk.ok_or_else(|| {
            Error::invalid_input(format!("table {table_name} has no primary-key column"))
        })?;
        Ok(Table {
            schema,
            pk,
            rows: BTreeMap::new(),
            by_pk: HashMap::new(),
            next_seq: 0,
            auto_inc: 0,
            indexes,
        })
    }

    fn name(&self) -> &str {
        &self.schema.name
    }

    /// The lookup key of a primary-key value.
    fn pk_key(v: &Value) -> Option<String> {
        key_of([Some(v)])
    }

    fn index_key(idx: &Index, row: &Row) -> Option<String> {
        key_of(idx.columns.iter().map(|c| row.get(c)))
    }

    /// The sequence number of the row with primary key `id` (raw, normalized
    /// here). A value that does not fit the key's type is `InvalidInput`.
    pub fn find(&self, id: &Value) -> Result<Option<u64>, Error> {
        if id.is_null() {
            return Err(Error::invalid_input(format!(
                "the primary key {} of table {} cannot be null",
                self.pk,
                self.name()
            )));
        }
        let ty = self.schema.find(&self.pk).map(|c| c.ty).ok_or_else(|| {
            Error::internal(format!("table {} lost its primary key", self.name()))
        })?;
        let id = normalize(&self.pk, ty, id)?;
        Ok(Self::pk_key(&id).and_then(|k| self.by_pk.get(&k).copied()))
    }

    /// Whether a row holds `values` (none null) in `columns`: through the
    /// primary key or a unique index over exactly `columns` (what a
    /// foreign key references), else by a scan.
    pub fn has_tuple(&self, columns: &[String], values: &[Value]) -> bool {
        if let Some(k) = key_of(values.iter().map(Some)) {
            if matches!(columns, [c] if *c == self.pk) {
                return self.by_pk.contains_key(&k);
            }
            if let Some(idx) = self
                .indexes
                .iter()
                .find(|i| i.unique && i.columns == columns)
            {
                return idx.entries.contains_key(&k);
            }
        }
        self.rows
            .values()
            .any(|r| columns.iter().zip(values).all(|(c, v)| r.get(c) == Some(v)))
    }

    /// Whether `row` is stored, unchanged (found by its primary key).
    pub fn holds(&self, row: &Row) -> bool {
        row.get(&self.pk)
            .and_then(Self::pk_key)
            .and_then(|k| self.by_pk.get(&k))
            .and_then(|seq| self.rows.get(seq))
            .is_some_and(|r| r == row)
    }

    /// Fails with `Conflict` if `row` would duplicate the primary key or a
    /// unique index of another row than `ignore`.
    fn check_conflicts(&self, row: &Row, ignore: Option<u64>) -> Result<(), Error> {
        let pk_value = row.get(&self.pk).unwrap_or(&Value::Null);
        if let Some(seq) = Self::pk_key(pk_value).and_then(|k| self.by_pk.get(&k)) {
            if Some(*seq) != ignore {
                return Err(Error::conflict(format!(
                    "table {} already has a row with primary key {} = {}",
                    self.name(),
                    self.pk,
                    value::describe(pk_value)
                )));
            }
        }
        for idx in self.indexes.iter().filter(|i| i.unique) {
            if let Some(seq) = Self::index_key(idx, row).and_then(|k| idx.entries.get(&k)) {
                if Some(*seq) != ignore {
                    return Err(Error::conflict(format!(
                        "duplicate value for unique {} of table {} (constraint {})",
                        if idx.columns.len() == 1 {
                            format!("column {}", idx.columns[0])
                        } else {
                            format!("columns ({})", idx.columns.join(", "))
                        },
                        self.name(),
                        idx.name
                    )));
                }
            }
        }
        Ok(())
    }

    fn register(&mut self, seq: u64, row: &Row) {
        if let Some(k) = row.get(&self.pk).and_then(Self::pk_key) {
            self.by_pk.insert(k, seq);
        }
        for idx in self.indexes.iter_mut().filter(|i| i.unique) {
            if let Some(k) = Self::index_key(idx, row) {
                idx.entries.insert(k, seq);
            }
        }
    }

    fn unregister(&mut self, row: &Row) {
        if let Some(k) = row.get(&self.pk).and_then(Self::pk_key) {
            self.by_pk.remove(&k);
        }
        for idx in self.indexes.iter_mut().filter(|i| i.unique) {
            if let Some(k) = Self::index_key(idx, row) {
                idx.entries.remove(&k);
            }
        }
    }

    /// Inserts a prepared row; `Conflict` on a duplicate key.
    pub fn insert(&mut self, row: Row) -> Result<u64, Error> {
        self.check_conflicts(&row, None)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.register(seq, &row);
        self.rows.insert(seq, row);
        Ok(seq)
    }

    /// Removes a row.
    pub fn remove(&mut self, seq: u64) -> Option<Row> {
        let row = self.rows.remove(&seq)?;
        self.unregister(&row);
        Some(row)
    }

    /// Puts back a row removed by [`Table::remove`] (undo; no checks needed
    /// because everything done after the removal was undone first).
    pub fn restore(&mut self, seq: u64, row: Row) {
        self.register(seq, &row);
        self.rows.insert(seq, row);
    }

    /// Replaces a row with `new`; `Conflict` if that duplicates another row's
    /// key. Returns the old row.
    pub fn replace(&mut self, seq: u64, new: Row) -> Result<Row, Error> {
        self.check_conflicts(&new, Some(seq))?;
        let old = self
            .rows
            .remove(&seq)
            .ok_or_else(|| Error::internal("row vanished during update"))?;
        self.unregister(&old);
        self.register(seq, &new);
        self.rows.insert(seq, new);
        Ok(old)
    }

    /// Replaces a row without checks (undo of [`Table::replace`]).
    pub fn replace_unchecked(&mut self, seq: u64, row: Row) {
        if let Some(current) = self.rows.remove(&seq) {
            self.unregister(&current);
        }
        self.register(seq, &row);
        self.rows.insert(seq, row);
    }

    fn check_keys(&self, row: &Row) -> Result<(), Error> {
        for key in row.keys() {
            ident::validate(key).map_err(|e| e.with_context("table", self.name().to_string()))?;
            if self.schema.find(key).is_none() {
                return Err(Error::invalid_input(format!(
                    "table {} has no column {key}",
                    self.name()
                )));
            }
        }
        Ok(())
    }

    /// Turns an insert's input into the row to store: every column in schema
    /// order, values type-checked and normalized, defaults filled in, NOT NULL
    /// checked. Advances the auto-increment counter.
    pub fn prepare_insert(&mut self, input: &Row) -> Result<Row, Error> {
        self.check_keys(input)?;
        let mut row = Row::new();
        for c in &self.schema.columns {
            let v = match input.get(&c.name) {
                Some(Value::Null) => Value::Null,
                Some(v) => {
                    let v = normalize(&c.name, c.ty, v)?;
                    if matches!(c.default, Some(ColumnDefault::AutoIncrement)) {
                        if let Some(i) = v.as_i64() {
                            self.auto_inc = self.auto_inc.max(i);
                        }
                    }
                    v
                }
                None => match &c.default {
                    None => Value::Null,
                    Some(ColumnDefault::Value(v)) => v.clone(),
                    Some(ColumnDefault::Now) => value::now(),
                    Some(ColumnDefault::RandomUuid) => {
                        Value::String(uuid::Uuid::new_v4().hyphenated().to_string())
                    }
                    Some(ColumnDefault::AutoIncrement) => {
                        self.auto_inc = self.auto_inc.checked_add(1).ok_or_else(|| {
                            Error::too_large(format!(
                                "the auto-increment column {} of table {} is exhausted",
                                c.name, self.schema.name
                            ))
                        })?;
                        Value::from(self.auto_inc)
                    }
                },
            };
            if v.is_null() && !c.nullable {
                return Err(not_null(&self.schema.name, &c.name));
            }
            row.insert(c.name.clone(), v);
        }
        Ok(row)
    }

    /// Checks and normalizes an update's patch.
    pub fn prepare_patch(&self, patch: &Row) -> Result<Row, Error> {
        if patch.is_empty() {
            return Err(Error::invalid_input(format!(
                "an update of table {} needs at least one column to set",
                self.name()
            )));
        }
        self.check_keys(patch)?;
        let mut out = Row::new();
        for (k, v) in patch {
            let c = self
                .schema
                .find(k)
                .ok_or_else(|| Error::internal("column vanished"))?;
            let v = if v.is_null() {
                if !c.nullable {
                    return Err(not_null(self.name(), k));
                }
                Value::Null
            } else {
                normalize(k, c.ty, v)?
            };
            out.insert(k.clone(), v);
        }
        Ok(out)
    }

    /// `row` with `patch` applied (column order kept).
    pub fn patched(row: &Row, patch: &Row) -> Row {
        let mut new = row.clone();
        for (k, v) in patch {
            if let Some(slot) = new.get_mut(k) {
                *slot = v.clone();
            }
        }
        new
    }

    /// Adds an index over existing rows; `Conflict` when a unique index finds
    /// duplicates.
    pub fn add_index(
        &mut self,
        name: String,
        columns: Vec<String>,
        unique: bool,
    ) -> Result<(), Error> {
        let mut idx = Index {
            name,
            columns,
            unique,
            entries: HashMap::new(),
        };
        if unique {
            for (seq, row) in &self.rows {
                if let Some(k) = Self::index_key(&idx, row) {
                    if idx.entries.insert(k, *seq).is_some() {
                        return Err(Error::conflict(format!(
                            "cannot create unique index {} on table {}: existing rows have duplicate ({})",
                            idx.name,
                            self.name(),
                            idx.columns.join(", ")
                        )));
                    }
                }
            }
        }
        self.indexes.push(idx);
        Ok(())
    }

    /// Renames a column in rows, schema and indexes (row column order kept).
    pub fn rename_column(&mut self, from: &str, to: &str) {
        for row in self.rows.values_mut() {
            let old = std::mem::take(row);
            *row = old
                .into_iter()
                .map(|(k, v)| {
                    if k == from {
                        (to.to_string(), v)
                    } else {
                        (k, v)
                    }
                })
                .collect();
        }
        self.schema.rename_column(from, to);
        for idx in &mut self.indexes {
            for c in &mut idx.columns {
                if c == from {
                    *c = to.to_string();
                }
            }
        }
        if self.pk == from {
            self.pk = to.to_string();
        }
    }

    /// Drops a (non-key) column from rows, schema and the indexes using it;
    /// returns the names of the dropped indexes.
    pub fn drop_column(&mut self, column: &str) -> Vec<String> {
        for row in self.rows.values_mut() {
            row.shift_remove(column);
        }
        self.schema.columns.retain(|c| c.name != column);
        let (dropped, kept): (Vec<Index>, Vec<Index>) = std::mem::take(&mut self.indexes)
            .into_iter()
            .partition(|i| i.columns.iter().any(|c| c == column));
        self.indexes = kept;
        dropped.into_iter().map(|i| i.name).collect()
    }
}

fn not_null(table: &str, column: &str) -> Error {
    Error::invalid_input(format!(
        "column {column} of table {table} is NOT NULL: give it a value"
    ))
}
