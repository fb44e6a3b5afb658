//! The operation list of [`crate::Database::transaction`].

use serde::{Deserialize, Serialize};

use crate::{DbResult, Error, Filter, Row, Value};

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Operation {
    /// Insert one row.
    Create {
        /// Table.
        table: String,
        /// The row.
        data: Row,
    },
    /// Insert many rows.
    CreateMany {
        /// Table.
        table: String,
        /// The rows.
        rows: Vec<Row>,
    },
    /// Insert many rows without returning them: [`crate::Database::insert_many`]
    /// as part of a transaction (the same checks, defaults and errors as
    /// `CreateMany`). Its output is [`OperationOutput::Affected`], how many
    /// rows were inserted; a provider skips reading the stored rows back.
    InsertMany {
        /// Table.
        table: String,
        /// The rows.
        rows: Vec<Row>,
    },
    /// Update one row by primary key; a missing row fails the transaction.
    Update {
        /// Table.
        table: String,
        /// Primary-key value.
        id: Value,
        /// Columns to set.
        data: Row,
    },
    /// Update the rows matching a filter.
    UpdateMany {
        /// Table.
        table: String,
        /// Which rows.
        filter: Filter,
        /// Columns to set.
        data: Row,
    },
    /// Update the rows matching a filter and fail the transaction with
    /// `Conflict` (rolling back every operation) unless exactly `expected`
    /// rows matched: a compare-and-set that is part of a transaction, e.g.
    /// `id = .. AND version = ..` with `expected: 1`. Its output is
    /// [`OperationOutput::Affected`].
    UpdateChecked {
        /// Table.
        table: String,
        /// Which rows.
        filter: Filter,
        /// Columns to set.
        data: Row,
        /// How many rows must match.
        expected: u64,
    },
    /// Delete one row by primary key (no error when missing).
    Delete {
        /// Table.
        table: String,
        /// Primary-key value.
        id: Value,
    },
    /// Delete the rows matching a filter.
    DeleteMany {
        /// Table.
        table: String,
        /// Which rows.
        filter: Filter,
    },
}

impl Operation {
    /// The table the operation writes.
    pub fn table(&self) -> &str {
        match self {
            Operation::Create { table, .. }
            | Operation::CreateMany { table, .. }
            | Operation::InsertMany { table, .. }
            | Operation::Update { table, .. }
            | Operation::UpdateMany { table, .. }
            | Operation::UpdateChecked { table, .. }
            | Operation::Delete { table, .. }
            | Operation::DeleteMany { table, .. } => table,
        }
    }

    /// Short name for errors (`"create"`, `"update_many"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Create { .. } => "create",
            Operation::CreateMany { .. } => "create_many",
            Operation::InsertMany { .. } => "insert_many",
            Operation::Update { .. } => "update",
            Operation::UpdateMany { .. } => "update_many",
            Operation::UpdateChecked { .. } => "update_checked",
            Operation::Delete { .. } => "delete",
            Operation::DeleteMany { .. } => "delete_many",
        }
    }
}

/// The answer of an [`Operation::UpdateChecked`] that changed `affected`
/// rows: `affected` when it is `expected`, else the `Conflict` that fails
/// the transaction. Shared by every provider.
pub fn check_updated(table: &str, expected: u64, affected: u64) -> DbResult<u64> {
    if affected == expected {
        return Ok(affected);
    }
    Err(Error::conflict(format!(
        "update_checked on table {table} matched {affected} rows where {expected} were expected \
         (the rows changed since they were read); the transaction was rolled back"
    ))
    .with_context("table", table.to_string()))
}

/// The result of one transaction operation, in the same position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationOutput {
    /// `Create` / `Update`: the row as stored.
    Row(Row),
    /// `CreateMany`: the rows as stored.
    Rows(Vec<Row>),
    /// `InsertMany`: rows inserted; `UpdateMany` / `UpdateChecked` /
    /// `DeleteMany`: rows affected.
    Affected(u64),
    /// `Delete`: whether a row was deleted.
    Deleted(bool),
}

impl OperationOutput {
    /// The row of a `Create` / `Update` output.
    pub fn into_row(self) -> Option<Row> {
        match self {
            OperationOutput::Row(r) => Some(r),
            _ => None,
        }
    }
}
