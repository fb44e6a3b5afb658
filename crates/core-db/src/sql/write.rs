//! The write paths every SQL provider shares: input checks, defaults,
//! batched inserts, updates and deletes with `RETURNING`, transactions over an
//! [`Operation`] list, and the row changes they produce. No I/O: a provider
//! hands in a [`SqlTransaction`] (its driver's open transaction) and gets the
//! same behaviour as every other SQL provider.
//!
//! The rules, so providers agree with `db-memory`:
//! - row and patch keys are checked as identifiers before anything else, so a
//!   hostile key is [`crate::ErrorKind::InvalidInput`] whatever else is wrong;
//! - an insert fills in constant, `now` and random-UUID defaults on the
//!   client (the stored value is the returned value, on every dialect), and
//!   leaves an auto-increment key out so the database assigns it;
//! - values are normalized to their column types
//!   ([`crate::value::normalize`]) and `NOT NULL` is checked up front with a
//!   message naming the column;
//! - `create_many` sends one `INSERT ... RETURNING` per chunk, each chunk as
//!   large as the dialect's bind-parameter limit allows.

use std::collections::HashMap;

use async_trait::async_trait;

use super::compile::{self, SqlDialect, Statement};
use crate::{
    ident, value, AlterTable, ChangeKind, ColumnDef, ColumnDefault, DbResult, Error, Filter,
    Operation, OperationOutput, Query, Row, RowChange, TableSchema, Value,
};
use truststream_core::echo;

/// Table names starting with this are the providers' own bookkeeping.
pub const RESERVED_PREFIX: &str = "_truststream";

/// An open transaction of a SQL provider, as the shared write paths use it.
#[async_trait]
pub trait SqlTransaction: Send {
    /// The dialect statements are compiled for.
    fn dialect(&self) -> SqlDialect;

    /// The provider's cache of compiled statements by shape, when it keeps
    /// one (see [`super::keyed::StatementCache`]): inserts, updates by key
    /// and filtered updates (with the select of the rows they replace)
    /// reuse them. `None` compiles every statement.
    fn statement_cache(&self) -> Option<&super::keyed::StatementCache> {
        None
    }

    /// The schema of `table`, read through this transaction (the pool may
    /// have no other free connection); a missing table is
    /// [`crate::ErrorKind::NotFound`]. Shared with the provider's schema
    /// cache, so a lookup copies no schema.
    async fn schema(&mut self, table: &str) -> DbResult<std::sync::Arc<TableSchema>>;

    /// Runs `statement` and returns the rows it returns, decoded to the
    /// documented JSON shapes of `schema`'s columns.
    async fn fetch(&mut self, statement: Statement, schema: &TableSchema) -> DbResult<Vec<Row>>;

    /// Runs `statement`, which returns at most one row (an insert of one
    /// row, an update or delete by primary key). Drivers answer this
    /// without the streaming machinery of [`SqlTransaction::fetch`]; the
    /// default calls `fetch`.
    async fn fetch_optional(
        &mut self,
        statement: Statement,
        schema: &TableSchema,
    ) -> DbResult<Option<Row>> {
        Ok(self.fetch(statement, schema).await?.into_iter().next())
    }

    /// [`SqlTransaction::fetch`] of an `INSERT ... RETURNING` whose input
    /// rows come back as `husks`, their values taken as binds (see
    /// [`super::rows::decode_into`]); the rows are those `fetch` returns.
    /// The default calls `fetch`.
    async fn fetch_into(
        &mut self,
        statement: Statement,
        schema: &TableSchema,
        husks: Vec<Row>,
    ) -> DbResult<Vec<Row>> {
        drop(husks);
        self.fetch(statement, schema).await
    }

    /// [`SqlTransaction::fetch_optional`] of an `INSERT ... RETURNING` of
    /// one row whose input row comes back as `husk`, its values taken as
    /// binds (see [`super::rows::decode_one_into`]); the row is the one
    /// `fetch_optional` returns. The default calls `fetch_optional`.
    async fn fetch_optional_into(
        &mut self,
        statement: Statement,
        schema: &TableSchema,
        husk: Option<Row>,
    ) -> DbResult<Option<Row>> {
        drop(husk);
        self.fetch_optional(statement, schema).await
    }

    /// Runs `statement`, an `UPDATE` or `DELETE` without `RETURNING`, and
    /// returns how many rows it changed (see
    /// [`super::engine::SqlProvider::execute_count`]). The default appends
    /// `RETURNING 1` and counts the rows [`SqlTransaction::fetch`] returns.
    async fn execute_count(&mut self, mut statement: Statement) -> DbResult<u64> {
        statement.sql = format!("{} RETURNING 1", statement.sql).into();
        let rows = self.fetch(statement, &TableSchema::new("")).await?;
        Ok(rows.len() as u64)
    }

    /// Whether [`SqlTransaction::copy_in`] is the driver's bulk path
    /// (`false` by default: inserts are statements).
    fn copies(&self) -> bool {
        false
    }

    /// Inserts `rows`, prepared by [`prepare_insert`] and each giving
    /// exactly `columns` (in schema order), as one statement of the
    /// driver's bulk path (PostgreSQL's `COPY ... FROM STDIN`), and returns
    /// how many. Called only when [`SqlTransaction::copies`] says so; the
    /// default refuses.
    async fn copy_in(
        &mut self,
        table: &str,
        columns: &[&ColumnDef],
        rows: Vec<Row>,
    ) -> DbResult<u64> {
        let _ = (columns, rows);
        Err(Error::internal(format!(
            "this provider has no bulk copy (table {table})"
        )))
    }
}

/// Runs row writes in a [`SqlTransaction`] and records the [`RowChange`]s
/// they make, for the provider to publish after commit.
pub struct RowWriter<T> {
    tx: T,
    changes: Vec<RowChange>,
    record: bool,
}

impl<T: SqlTransaction> RowWriter<T> {
    /// Writes through `tx`, recording changes.
    pub fn new(tx: T) -> Self {
        RowWriter {
            tx,
            changes: Vec::new(),
            record: true,
        }
    }

    /// Writes through `tx` without recording changes (a provider whose
    /// change feed comes from the database itself).
    pub fn without_changes(tx: T) -> Self {
        RowWriter {
            record: false,
            ..Self::new(tx)
        }
    }

    /// The transaction.
    pub fn tx(&mut self) -> &mut T {
        &mut self.tx
    }

    /// The transaction and the changes made through it, in order.
    pub fn into_parts(self) -> (T, Vec<RowChange>) {
        (self.tx, self.changes)
    }

    fn change(
        &mut self,
        table: &str,
        kind: ChangeKind,
        key: Value,
        old: Option<Row>,
        new: Option<Row>,
    ) {
        if self.record {
            self.changes.push(RowChange {
                table: table.to_string(),
                kind,
                key,
                old,
                new,
                committed_at: chrono::Utc::now(),
            });
        }
    }

    /// Inserts `rows` (all or none) and returns them as stored.
    pub async fn create_many(&mut self, table: &str, rows: &[Row]) -> DbResult<Vec<Row>> {
        ident::table(table)?;
        rows.iter().try_for_each(check_row_keys)?;
        let schema = self.tx.schema(table).await?;
        let n = rows.len();
        let prepared = prepare_all(n, rows.iter().map(|r| prepare_insert(&schema, r)))?;
        Ok(self
            .insert_prepared(table, &schema, prepared, true)
            .await?
            .0)
    }

    /// [`RowWriter::create_many`] taking the rows by value: their values
    /// move into the rows to store instead of being copied.
    pub async fn create_many_owned(&mut self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>> {
        let (schema, prepared) = self.prepare_owned(table, rows).await?;
        Ok(self
            .insert_prepared(table, &schema, prepared, true)
            .await?
            .0)
    }

    /// The table's schema and `rows` as [`prepare_insert_owned`] makes them
    /// (names checked first, the first bad row named).
    async fn prepare_owned(
        &mut self,
        table: &str,
        rows: Vec<Row>,
    ) -> DbResult<(std::sync::Arc<TableSchema>, Vec<Row>)> {
        ident::table(table)?;
        rows.iter().try_for_each(check_row_keys)?;
        let schema = self.tx.schema(table).await?;
        let n = rows.len();
        let prepared = prepare_all(
            n,
            rows.into_iter().map(|r| prepare_insert_owned(&schema, r)),
        )?;
        Ok((schema, prepared))
    }

    /// [`RowWriter::create_many_owned`] without the stored rows: how many
    /// were inserted. Through the provider's bulk copy
    /// ([`SqlTransaction::copy_in`]) when it has one, the rows give the
    /// same columns and no change is recorded here (a provider whose feed
    /// the writes record takes the `INSERT` path, which records them).
    pub async fn insert_many(&mut self, table: &str, rows: Vec<Row>) -> DbResult<u64> {
        let (schema, prepared) = self.prepare_owned(table, rows).await?;
        let uniform = prepared
            .first()
            .is_some_and(|first| prepared.iter().all(|r| same_columns(first, r)));
        if uniform && !self.record && self.tx.copies() && copies_rows(prepared.len()) {
            let columns: Vec<&ColumnDef> = prepared
                .first()
                .map(|first| {
                    schema
                        .columns
                        .iter()
                        .filter(|c| first.contains_key(&c.name))
                        .collect()
                })
                .unwrap_or_default();
            return self.tx.copy_in(table, &columns, prepared).await;
        }
        Ok(self
            .insert_prepared(table, &schema, prepared, false)
            .await?
            .1)
    }

    /// Inserts rows made by [`prepare_insert`], chunk by chunk, and returns
    /// the stored rows (when `rows_back`, or while changes are recorded)
    /// and how many were inserted. Without either, the statements have no
    /// `RETURNING` and count their rows ([`SqlTransaction::execute_count`]).
    async fn insert_prepared(
        &mut self,
        table: &str,
        schema: &std::sync::Arc<TableSchema>,
        prepared: Vec<Row>,
        rows_back: bool,
    ) -> DbResult<(Vec<Row>, u64)> {
        let counted = !rows_back && !self.record;
        let mut count = 0u64;
        let pk = pk_name(schema)?;
        let dialect = self.tx.dialect();
        let per_chunk = (dialect.max_binds() / schema.columns.len().max(1)).max(1);
        let mut out = Vec::with_capacity(prepared.len());
        // Chunks: consecutive rows giving the same columns (only an
        // auto-increment key given for some rows and not others splits a
        // batch), within the bind limit.
        let mut bounds = Vec::new();
        let mut start = 0;
        while start < prepared.len() {
            let mut end = start + 1;
            while end < prepared.len()
                && end - start < per_chunk
                && same_columns(&prepared[start], &prepared[end])
            {
                end += 1;
            }
            bounds.push(end - start);
            start = end;
        }
        // The rows move into the statements' binds, chunk by chunk.
        let mut rows_left = prepared.into_iter();
        for n in bounds {
            let mut chunk: Vec<Row> = rows_left.by_ref().take(n).collect();
            // Through the cache the rows' values become the binds and
            // their maps come back as the returned rows' (`fetch_into`).
            let (stmt, husks) = match self.tx.statement_cache() {
                Some(cache) => (cache.insert_taking(schema, &mut chunk)?, chunk),
                None => (
                    compile::insert_rows(dialect, &catalog(schema), table, chunk)?,
                    Vec::new(),
                ),
            };
            if counted {
                drop(husks);
                count += self.tx.execute_count(without_returning(stmt)?).await?;
                continue;
            }
            let stored = if n == 1 {
                let husk = husks.into_iter().next();
                let one = self.tx.fetch_optional_into(stmt, schema, husk).await?;
                Vec::from_iter(one)
            } else {
                self.tx.fetch_into(stmt, schema, husks).await?
            };
            // Copies for the feed only while it records.
            if self.record {
                for r in &stored {
                    let key = r.get(pk).cloned().unwrap_or(Value::Null);
                    self.change(table, ChangeKind::Insert, key, None, Some(r.clone()));
                }
            }
            count += stored.len() as u64;
            out.extend(stored);
        }
        Ok((out, count))
    }

    /// Updates the rows matching `filter` and returns them as stored.
    pub async fn update_where(
        &mut self,
        table: &str,
        filter: &Filter,
        patch: &Row,
    ) -> DbResult<Vec<Row>> {
        ident::table(table)?;
        check_row_keys(patch)?;
        filter.validate()?;
        let schema = self.tx.schema(table).await?;
        let patch = prepare_patch(&schema, patch)?;
        let pk = pk_name(&schema)?;
        let dialect = self.tx.dialect();
        let old_rows = if self.record {
            let mut old = match self.tx.statement_cache() {
                Some(cache) => cache.select_where(&schema, filter)?,
                None => {
                    let query = Query::new().filter(filter.clone());
                    compile::select(dialect, &catalog(&schema), table, &query)?.statement
                }
            };
            if dialect == SqlDialect::Postgres {
                // Lock what the update will change, so the old rows are the
                // ones it replaces.
                old.sql = format!("{} FOR UPDATE", old.sql).into();
            }
            let rows = self.tx.fetch(old, &schema).await?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            rows
        } else {
            Vec::new()
        };
        let stmt = match self.tx.statement_cache() {
            Some(cache) => cache.update_where(&schema, patch, filter)?,
            None => compile::update(dialect, &catalog(&schema), table, &patch, filter)?,
        };
        let new_rows = self.tx.fetch(stmt, &schema).await?;
        if self.record {
            let key_of = |r: &Row| r.get(pk).map(Value::to_string);
            let mut old_by_key: HashMap<String, Row> = old_rows
                .into_iter()
                .filter_map(|r| key_of(&r).map(|k| (k, r)))
                .collect();
            for r in &new_rows {
                let old = key_of(r).and_then(|k| old_by_key.remove(&k));
                let key = r.get(pk).cloned().unwrap_or(Value::Null);
                self.change(table, ChangeKind::Update, key, old, Some(r.clone()));
            }
        }
        Ok(new_rows)
    }

    /// Updates the rows matching `filter` and returns how many: what
    /// [`RowWriter::update_where`] does, without decoding the updated rows
    /// when no change is recorded (the statement returns a constant per
    /// row instead of every column). Recording, it is `update_where`.
    pub async fn update_count(
        &mut self,
        table: &str,
        filter: &Filter,
        patch: &Row,
    ) -> DbResult<u64> {
        if self.record {
            return Ok(self.update_where(table, filter, patch).await?.len() as u64);
        }
        ident::table(table)?;
        check_row_keys(patch)?;
        filter.validate()?;
        let schema = self.tx.schema(table).await?;
        let patch = prepare_patch(&schema, patch)?;
        pk_name(&schema)?;
        let stmt = match self.tx.statement_cache() {
            Some(cache) => cache.update_where(&schema, patch, filter)?,
            None => compile::update(self.tx.dialect(), &catalog(&schema), table, &patch, filter)?,
        };
        self.tx.execute_count(without_returning(stmt)?).await
    }

    /// Updates the row with primary key `id`; a missing row is
    /// [`crate::ErrorKind::NotFound`].
    pub async fn update(&mut self, table: &str, id: &Value, patch: &Row) -> DbResult<Row> {
        ident::table(table)?;
        check_row_keys(patch)?;
        let schema = self.tx.schema(table).await?;
        let prepared = prepare_patch(&schema, patch)?;
        let updated = if self.record {
            let filter = compile::by_primary_key(&schema, id)?;
            self.update_where(table, &filter, patch).await?.pop()
        } else {
            // One UPDATE ... RETURNING of at most one row.
            let stmt = match self.tx.statement_cache() {
                Some(cache) => cache.update_by_key(&schema, &prepared, id)?,
                None => {
                    let filter = compile::by_primary_key(&schema, id)?;
                    compile::update(
                        self.tx.dialect(),
                        &catalog(&schema),
                        table,
                        &prepared,
                        &filter,
                    )?
                }
            };
            self.tx.fetch_optional(stmt, &schema).await?
        };
        updated.ok_or_else(|| {
            Error::not_found(format!(
                "table {table} has no row with {} = {}",
                schema.primary_key().map_or("id", |c| c.name.as_str()),
                value::describe(id)
            ))
            .with_context("table", table.to_string())
        })
    }

    /// Deletes the rows matching `filter`; returns how many.
    pub async fn delete_where(&mut self, table: &str, filter: &Filter) -> DbResult<u64> {
        ident::table(table)?;
        filter.validate()?;
        let schema = self.tx.schema(table).await?;
        let pk = pk_name(&schema)?;
        let stmt = compile::delete(self.tx.dialect(), &catalog(&schema), table, filter)?;
        if !self.record {
            return self.tx.execute_count(without_returning(stmt)?).await;
        }
        let old = self.tx.fetch(stmt, &schema).await?;
        let n = old.len() as u64;
        for r in old {
            let key = r.get(pk).cloned().unwrap_or(Value::Null);
            self.change(table, ChangeKind::Delete, key, Some(r), None);
        }
        Ok(n)
    }

    /// Deletes the row with primary key `id`; `false` when there was none.
    pub async fn delete(&mut self, table: &str, id: &Value) -> DbResult<bool> {
        ident::table(table)?;
        let schema = self.tx.schema(table).await?;
        let filter = compile::by_primary_key(&schema, id)?;
        if self.record {
            return Ok(self.delete_where(table, &filter).await? > 0);
        }
        let stmt = compile::delete(self.tx.dialect(), &catalog(&schema), table, &filter)?;
        Ok(self.tx.execute_count(without_returning(stmt)?).await? > 0)
    }

    /// Runs one transaction operation.
    pub async fn apply(&mut self, op: &Operation) -> DbResult<OperationOutput> {
        Ok(match op {
            Operation::Create { table, data } => {
                let mut rows = self.create_many(table, std::slice::from_ref(data)).await?;
                OperationOutput::Row(
                    rows.pop()
                        .ok_or_else(|| Error::internal("insert returned no row"))?,
                )
            }
            Operation::CreateMany { table, rows } => {
                OperationOutput::Rows(self.create_many(table, rows).await?)
            }
            Operation::InsertMany { table, rows } => {
                OperationOutput::Affected(self.insert_many(table, rows.clone()).await?)
            }
            Operation::Update { table, id, data } => {
                OperationOutput::Row(self.update(table, id, data).await?)
            }
            Operation::UpdateMany {
                table,
                filter,
                data,
            } => OperationOutput::Affected(self.update_count(table, filter, data).await?),
            Operation::UpdateChecked {
                table,
                filter,
                data,
                expected,
            } => {
                let n = self.update_count(table, filter, data).await?;
                OperationOutput::Affected(crate::operation::check_updated(table, *expected, n)?)
            }
            Operation::Delete { table, id } => {
                OperationOutput::Deleted(self.delete(table, id).await?)
            }
            Operation::DeleteMany { table, filter } => {
                OperationOutput::Affected(self.delete_where(table, filter).await?)
            }
        })
    }

    /// [`RowWriter::apply`] taking the operation by value: the rows of a
    /// `Create` or `CreateMany` move into the insert
    /// ([`RowWriter::create_many_owned`]) instead of being copied.
    pub async fn apply_owned(&mut self, op: Operation) -> DbResult<OperationOutput> {
        match op {
            Operation::Create { table, data } => {
                let mut rows = self.create_many_owned(&table, vec![data]).await?;
                Ok(OperationOutput::Row(rows.pop().ok_or_else(|| {
                    Error::internal("insert returned no row")
                })?))
            }
            Operation::CreateMany { table, rows } => Ok(OperationOutput::Rows(
                self.create_many_owned(&table, rows).await?,
            )),
            Operation::InsertMany { table, rows } => Ok(OperationOutput::Affected(
                self.insert_many(&table, rows).await?,
            )),
            op => self.apply(&op).await,
        }
    }

    /// [`RowWriter::apply_all`] taking the operations by value
    /// ([`RowWriter::apply_owned`]).
    pub async fn apply_all_owned(
        &mut self,
        operations: Vec<Operation>,
    ) -> DbResult<Vec<OperationOutput>> {
        let mut out = Vec::with_capacity(operations.len());
        for (i, op) in operations.into_iter().enumerate() {
            let name = op.name();
            match self.apply_owned(op).await {
                Ok(o) => out.push(o),
                Err(e) => {
                    return Err(e
                        .with_context("operation_index", i.to_string())
                        .with_context("operation", name))
                }
            }
        }
        Ok(out)
    }

    /// Runs `operations` in order; the first failure stops the run and names
    /// the operation (`operation_index`, `operation` context). The caller
    /// commits on `Ok` and rolls back on `Err`.
    pub async fn apply_all(&mut self, operations: &[Operation]) -> DbResult<Vec<OperationOutput>> {
        let mut out = Vec::with_capacity(operations.len());
        for (i, op) in operations.iter().enumerate() {
            match self.apply(op).await {
                Ok(o) => out.push(o),
                Err(e) => {
                    return Err(e
                        .with_context("operation_index", i.to_string())
                        .with_context("operation", op.name()))
                }
            }
        }
        Ok(out)
    }
}

fn catalog(schema: &TableSchema) -> HashMap<String, TableSchema> {
    [(schema.name.clone(), schema.clone())]
        .into_iter()
        .collect()
}

/// Whether [`RowWriter::create_many`] inserts `rows` with one statement
/// (they fit one chunk, and an auto-increment key is given for all rows or
/// for none), so a provider can run it without an explicit transaction.
pub fn is_single_insert(dialect: SqlDialect, schema: &TableSchema, rows: &[Row]) -> bool {
    let fits = rows.len() <= (dialect.max_binds() / schema.columns.len().max(1)).max(1);
    fits && same_prepared_columns(schema, rows)
}

/// Fewest rows a provider's bulk copy ([`SqlTransaction::copy_in`]) takes:
/// a smaller insert is a cached, prepared `INSERT` (a `COPY` is parsed on
/// every use and costs the copy protocol's extra messages; PostgreSQL's
/// one-row refresh insert went through it).
pub const COPY_MIN_ROWS: usize = 64;

/// Whether an insert of `rows` rows goes through the bulk copy when the
/// provider has one and the rows allow it.
pub fn copies_rows(rows: usize) -> bool {
    rows >= COPY_MIN_ROWS
}

/// Whether the rows [`prepare_insert`] makes of `rows` all give the same
/// columns: a prepared row has every column but an auto-increment key
/// left to the database, so only such a key given for some rows and not
/// for others splits them.
pub fn same_prepared_columns(schema: &TableSchema, rows: &[Row]) -> bool {
    !schema
        .columns
        .iter()
        .filter(|c| matches!(c.default, Some(ColumnDefault::AutoIncrement)))
        .any(|c| {
            let given = |r: &Row| r.get(&c.name).is_some_and(|v| !v.is_null());
            rows.iter().any(given) && !rows.iter().all(given)
        })
}

fn same_columns(a: &Row, b: &Row) -> bool {
    // Prepared rows list their columns in schema order, so the same
    // columns are nearly always the same sequence (compared without
    // hashing any name).
    a.len() == b.len() && (a.keys().eq(b.keys()) || a.keys().all(|k| b.contains_key(k)))
}

/// Collects prepared rows; the first error names its row (`row_index`)
/// when there are several.
fn prepare_all(n: usize, rows: impl Iterator<Item = DbResult<Row>>) -> DbResult<Vec<Row>> {
    let mut prepared = Vec::with_capacity(n);
    for (i, r) in rows.enumerate() {
        match r {
            Ok(r) => prepared.push(r),
            Err(e) if n > 1 => return Err(e.with_context("row_index", i.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(prepared)
}

/// Checks a row's or patch's keys as identifiers.
pub fn check_row_keys(row: &Row) -> DbResult<()> {
    row.keys().try_for_each(|k| ident::validate(k))
}

fn not_null(table: &str, column: &str) -> Error {
    Error::invalid_input(format!(
        "column {column} of table {table} is NOT NULL: give it a value"
    ))
}

/// The name of a table's primary-key column; empty for a table without
/// one (made outside TrustStream, described from the catalog), whose
/// changes carry a null key.
pub fn pk_name(schema: &TableSchema) -> DbResult<&str> {
    Ok(schema.primary_key().map_or("", |c| c.name.as_str()))
}

/// Turns an insert's input into the row to store: values normalized,
/// defaults filled in, `NOT NULL` checked; an auto-increment key that is not
/// given is left out so the database assigns it.
pub fn prepare_insert(schema: &TableSchema, input: &Row) -> DbResult<Row> {
    check_insert_columns(schema, input)?;
    let mut row = Row::with_capacity(schema.columns.len());
    for c in &schema.columns {
        let given = input.get(&c.name).map(|v| match v {
            Value::Null => Ok(Value::Null),
            v => value::normalize(&c.name, c.ty, v),
        });
        store_column(schema, c, given.transpose()?, &mut row)?;
    }
    Ok(row)
}

/// [`prepare_insert`] taking the input by value: values already in their
/// stored form (strings of text columns, JSON) move into the row instead
/// of being copied. Same row, same errors.
pub fn prepare_insert_owned(schema: &TableSchema, mut input: Row) -> DbResult<Row> {
    check_insert_columns(schema, &input)?;
    let owned = |c: &ColumnDef, v: Value| match v {
        Value::Null => Ok(Value::Null),
        v => value::normalize_owned(&c.name, c.ty, v),
    };
    if stored_as_given(schema, &input) {
        // The usual case (a row built from a struct or a literal in table
        // order, every column given): the input is the row to store, its
        // values normalized in place. No name is copied or hashed.
        let mut given = input.iter_mut().peekable();
        for c in &schema.columns {
            if let Some((_, v)) = given.next_if(|(k, _)| **k == c.name) {
                let taken = std::mem::take(v);
                if taken.is_null() && !c.nullable {
                    return Err(not_null(&schema.name, &c.name));
                }
                *v = owned(c, taken)?;
            }
        }
        return Ok(input);
    }
    let mut row = Row::with_capacity(schema.columns.len());
    for c in &schema.columns {
        let v = input.get_mut(&c.name).map(std::mem::take);
        store_column(schema, c, v.map(|v| owned(c, v)).transpose()?, &mut row)?;
    }
    Ok(row)
}

/// Whether the row to store from `input` has exactly `input`'s columns in
/// `input`'s order: every column given in schema order, except an
/// auto-increment key left out (a given null one is left out of the row
/// to store, so it does not qualify).
fn stored_as_given(schema: &TableSchema, input: &Row) -> bool {
    let mut given = input.iter().peekable();
    for c in &schema.columns {
        let auto = matches!(c.default, Some(ColumnDefault::AutoIncrement));
        match given.next_if(|(k, _)| **k == c.name) {
            Some((_, v)) if auto && v.is_null() => return false,
            Some(_) => {}
            None if auto => {}
            None => return false,
        }
    }
    given.next().is_none()
}

/// Every key of an insert's input is a column of the table.
fn check_insert_columns(schema: &TableSchema, input: &Row) -> DbResult<()> {
    for key in input.keys() {
        if schema.find(key).is_none() {
            return Err(Error::invalid_input(format!(
                "table {} has no column {}",
                schema.name,
                echo(key)
            )));
        }
    }
    Ok(())
}

/// Adds column `c` to a row to store: `given` (normalized) when the input
/// has it, else its default; left out when it is an auto-increment key
/// without a value.
fn store_column(
    schema: &TableSchema,
    c: &ColumnDef,
    given: Option<Value>,
    row: &mut Row,
) -> DbResult<()> {
    let v = match given {
        Some(v) => v,
        None => match &c.default {
            None | Some(ColumnDefault::AutoIncrement) => Value::Null,
            Some(ColumnDefault::Value(v)) => v.clone(),
            Some(ColumnDefault::Now) => value::now(),
            Some(ColumnDefault::RandomUuid) => {
                Value::String(uuid::Uuid::new_v4().hyphenated().to_string())
            }
        },
    };
    if v.is_null() && matches!(c.default, Some(ColumnDefault::AutoIncrement)) {
        return Ok(());
    }
    if v.is_null() && !c.nullable {
        return Err(not_null(&schema.name, &c.name));
    }
    row.insert(c.name.clone(), v);
    Ok(())
}

/// Checks and normalizes an update's patch.
pub fn prepare_patch(schema: &TableSchema, patch: &Row) -> DbResult<Row> {
    if patch.is_empty() {
        return Err(Error::invalid_input(format!(
            "an update of table {} needs at least one column to set",
            schema.name
        )));
    }
    let mut out = Row::new();
    for (k, v) in patch {
        let c = schema.find(k).ok_or_else(|| {
            Error::invalid_input(format!("table {} has no column {}", schema.name, echo(k)))
        })?;
        let v = if v.is_null() {
            if !c.nullable {
                return Err(not_null(&schema.name, k));
            }
            Value::Null
        } else if value::is_stored_form(c.ty, v) {
            v.clone()
        } else {
            value::normalize(k, c.ty, v)?
        };
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// A schema as a SQL provider stores it: constant defaults normalized to
/// their column types (so they are stored, rendered and returned in one
/// form), primary keys `NOT NULL`, `if_not_exists` cleared.
pub fn normalize_defaults(schema: &TableSchema) -> DbResult<TableSchema> {
    let mut s = schema.clone();
    for c in &mut s.columns {
        if let Some(ColumnDefault::Value(v)) = &c.default {
            if v.is_null() {
                c.default = None;
            } else {
                let v = value::normalize(&c.name, c.ty, v)
                    .map_err(|e| e.with_context("table", schema.name.clone()))?;
                c.default = Some(ColumnDefault::Value(v));
            }
        }
        if c.primary_key {
            c.nullable = false;
        }
    }
    s.if_not_exists = false;
    Ok(s)
}

/// Refuses table names in the providers' reserved namespace
/// ([`RESERVED_PREFIX`]).
pub fn reserved(table: &str) -> DbResult<()> {
    if table.starts_with(RESERVED_PREFIX) {
        return Err(Error::invalid_input(format!(
            "table names starting with {RESERVED_PREFIX} are reserved for the provider ({table})"
        )));
    }
    Ok(())
}

/// One checked `alter_table` change, as a SQL provider carries it out.
#[derive(Debug, Clone, PartialEq)]
pub enum AlterStep {
    /// Add this column (its constant default normalized).
    Add(ColumnDef),
    /// Drop this column.
    Drop(String),
    /// Rename a column.
    Rename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// Add this foreign key.
    AddForeignKey(crate::ForeignKey),
}

impl AlterStep {
    /// The change to compile ([`compile::alter_table`]).
    pub fn to_change(&self) -> AlterTable {
        match self {
            AlterStep::Add(c) => AlterTable::AddColumn(c.clone()),
            AlterStep::Drop(c) => AlterTable::DropColumn(c.clone()),
            AlterStep::Rename { from, to } => AlterTable::RenameColumn {
                from: from.clone(),
                to: to.clone(),
            },
            AlterStep::AddForeignKey(fk) => AlterTable::AddForeignKey(fk.clone()),
        }
    }
}

/// Checks `changes` against `schema` (the rules every provider shares: no
/// second column of a name, no dropping the primary key, renames of known
/// columns) and returns the schema after them and the steps to carry out (a
/// rename to the same name is no step). Whether a NOT NULL column can be
/// added depends on the rows, which the provider checks.
pub fn plan_alter(
    schema: &TableSchema,
    changes: &[AlterTable],
) -> DbResult<(TableSchema, Vec<AlterStep>)> {
    let table = schema.name.clone();
    changes.iter().try_for_each(AlterTable::validate)?;
    let mut schema = schema.clone();
    let mut steps = Vec::new();
    for change in changes {
        match change {
            AlterTable::AddColumn(def) => {
                if schema.find(&def.name).is_some() {
                    return Err(Error::conflict(format!(
                        "table {table} already has a column {}",
                        def.name
                    )));
                }
                let probe = normalize_defaults(&TableSchema::new(&table).column(def.clone()))?;
                let def = probe
                    .columns
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::internal("column vanished while normalizing"))?;
                schema.columns.push(def.clone());
                steps.push(AlterStep::Add(def));
            }
            AlterTable::DropColumn(c) => {
                let def = schema.find(c).ok_or_else(|| {
                    Error::invalid_input(format!("table {table} has no column {c}"))
                })?;
                if def.primary_key {
                    return Err(Error::invalid_input(format!(
                        "cannot drop column {c}: it is the primary key of table {table}"
                    )));
                }
                schema.check_droppable(c)?;
                schema.columns.retain(|d| d.name != *c);
                steps.push(AlterStep::Drop(c.clone()));
            }
            AlterTable::RenameColumn { from, to } => {
                if schema.find(from).is_none() {
                    return Err(Error::invalid_input(format!(
                        "table {table} has no column {from}"
                    )));
                }
                if from == to {
                    continue;
                }
                if schema.find(to).is_some() {
                    return Err(Error::conflict(format!(
                        "table {table} already has a column {to}"
                    )));
                }
                schema.rename_column(from, to);
                steps.push(AlterStep::Rename {
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            AlterTable::AddForeignKey(fk) => {
                schema.foreign_keys.push(fk.clone());
                // Its columns, as many referenced ones, a name not taken.
                schema.validate()?;
                steps.push(AlterStep::AddForeignKey(fk.clone()));
            }
        }
    }
    Ok((schema, steps))
}

/// `statement` (an `UPDATE` or `DELETE` compiled with ` RETURNING *`)
/// without its `RETURNING` clause, for [`SqlTransaction::execute_count`].
fn without_returning(mut statement: Statement) -> DbResult<Statement> {
    match statement.sql.strip_suffix(" RETURNING *") {
        Some(rest) => {
            let sql = rest.into();
            statement.sql = sql;
            Ok(statement)
        }
        None => Err(Error::internal(
            "a counted write was compiled without its RETURNING clause",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ColumnType;
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    fn schema() -> TableSchema {
        TableSchema::new("t")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("name").not_null())
            .column(ColumnDef::new("n", ColumnType::Integer).default_value(json!(7)))
    }

    #[test]
    fn insert_fills_defaults_and_leaves_out_auto_keys() {
        let r = prepare_insert(&schema(), &row(json!({"name": "a"}))).unwrap();
        assert_eq!(Value::Object(r), json!({"name": "a", "n": 7}));
        let r = prepare_insert(&schema(), &row(json!({"id": 5.0, "name": "a"}))).unwrap();
        assert_eq!(r["id"], json!(5));
        let e = prepare_insert(&schema(), &row(json!({"n": 1}))).unwrap_err();
        assert!(e.message().contains("name"), "{e}");
        let e = prepare_insert(&schema(), &row(json!({"name": "a", "zz": 1}))).unwrap_err();
        assert!(e.message().contains("zz"), "{e}");
    }

    #[test]
    fn owned_inputs_prepare_as_borrowed_ones() {
        let schema = schema()
            .column(ColumnDef::float("score"))
            .column(ColumnDef::json("meta"))
            .column(ColumnDef::text("note"));
        let inputs = [
            json!({"id": 1, "name": "a", "n": 2, "score": 1, "meta": {"k": [1]}, "note": "x"}),
            // Other orders, subsets, nulls, values to normalize.
            json!({"note": "x", "name": "a", "id": 2.0}),
            json!({"name": "a", "score": 2.5, "id": 3}),
            json!({"score": null, "name": "b"}),
            json!({"meta": "text", "name": "c", "n": 4.0}),
            json!({"name": "d", "n": 5, "id": null}),
            // Every column in schema order (the input becomes the row),
            // with a null auto key (left out: not as given).
            json!({"id": 4, "name": "e", "n": 6, "score": 1.5, "meta": null, "note": null}),
            json!({"id": null, "name": "e", "n": 6, "score": 1.5, "meta": null, "note": "y"}),
            json!({"name": "f", "n": 6.0, "score": 2, "meta": [1], "note": "z"}),
            json!({"id": 5, "name": "g", "n": 6, "score": "x", "meta": null, "note": null}),
            json!({"id": 5, "name": null, "n": 6, "score": 1, "meta": null, "note": null}),
            // Errors: unknown column, NOT NULL, wrong type.
            json!({"name": "a", "zz": 1}),
            json!({"n": 1}),
            json!({"name": null}),
            json!({"name": "a", "n": "x"}),
            json!({"name": 7}),
        ];
        for input in inputs {
            let borrowed = prepare_insert(&schema, &row(input.clone()));
            let owned = prepare_insert_owned(&schema, row(input.clone()));
            match (borrowed, owned) {
                (Ok(b), Ok(o)) => {
                    assert_eq!(b, o, "{input}");
                    assert!(b.keys().eq(o.keys()), "column order of {input}");
                }
                (Err(b), Err(o)) => {
                    assert_eq!(b.kind(), o.kind(), "{input}");
                    assert_eq!(b.message(), o.message(), "{input}");
                }
                (b, o) => panic!("{input}: borrowed {b:?}, owned {o:?}"),
            }
        }
    }

    #[test]
    fn patches_are_checked() {
        assert!(prepare_patch(&schema(), &Row::new()).is_err());
        assert!(prepare_patch(&schema(), &row(json!({"name": null}))).is_err());
        assert_eq!(
            prepare_patch(&schema(), &row(json!({"n": 2.0}))).unwrap()["n"],
            json!(2)
        );
        assert!(reserved("_truststream_x").is_err());
        assert!(reserved("agents").is_ok());
    }
}
