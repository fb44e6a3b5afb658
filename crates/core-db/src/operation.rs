//! The operation list of [`crate::Database::transaction`].

use serde::{Deserialize, Serialize};

use crate::{Filter, Row, Value};

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
            | Operation::Update { table, .. }
            | Operation::UpdateMany { table, .. }
            | Operation::Delete { table, .. }
            | Operation::DeleteMany { table, .. } => table,
        }
    }

    /// Short name for errors (`"create"`, `"update_many"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Create { .. } => "create",
            Operation::CreateMany { .. } => "create_many",
            Operation::Update { .. } => "update",
            Operation::UpdateMany { .. } => "update_many",
            Operation::Delete { .. } => "delete",
            Operation::DeleteMany { .. } => "delete_many",
        }
    }
}

/// The result of one transaction operation, in the same position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationOutput {
    /// `Create` / `Update`: the row as stored.
    Row(Row),
    /// `CreateMany`: the rows as stored.
    Rows(Vec<Row>),
    /// `UpdateMany` / `DeleteMany`: rows affected.
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
