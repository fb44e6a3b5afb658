//! Foreign keys: checked at the end of each statement (`NO ACTION`, as
//! PostgreSQL and SQLite do), so one `delete_many` may remove a parent and
//! its children together.

use std::collections::HashSet;

use truststream_core_db::{Error, ForeignKey, Row, Value};

use crate::State;

/// A row a statement wrote or removed, to check when the statement ends.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A row inserted or updated: its references must exist.
    Written { table: String, row: Row },
    /// A row deleted or updated (the old row): nothing may still reference
    /// the values it had, unless another row of its table has them.
    Gone { table: String, row: Row },
}

/// The values of `columns` in `row`; `None` when any is null (a NULL
/// references nothing).
fn tuple(row: &Row, columns: &[String]) -> Option<Vec<Value>> {
    columns
        .iter()
        .map(|c| row.get(c).filter(|v| !v.is_null()).cloned())
        .collect()
}

fn has_tuple(state: &State, table: &str, columns: &[String], values: &[Value]) -> bool {
    state
        .tables
        .get(table)
        .is_some_and(|t| t.has_tuple(columns, values))
}

fn show(values: &[Value]) -> String {
    values
        .iter()
        .map(crate::value::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks every pending row; the first violation is `Conflict`.
pub(crate) fn check(state: &State, pending: &[Pending]) -> Result<(), Error> {
    // Referenced tuples already found, per (table, columns).
    let mut present: HashSet<(String, Vec<String>, String)> = HashSet::new();
    if !state
        .tables
        .values()
        .any(|t| !t.schema.foreign_keys.is_empty())
    {
        return Ok(());
    }
    for p in pending {
        match p {
            Pending::Written { table, row } => {
                let Some(t) = state.tables.get(table) else {
                    continue;
                };
                // The row may have been changed or removed later in the
                // statement; only a row still stored counts.
                if !t.holds(row) {
                    continue;
                }
                for fk in &t.schema.foreign_keys {
                    let Some(values) = tuple(row, &fk.columns) else {
                        continue;
                    };
                    let key = (
                        fk.referenced_table.clone(),
                        fk.referenced_columns.clone(),
                        serde_json::to_string(&values).unwrap_or_default(),
                    );
                    if present.contains(&key) {
                        continue;
                    }
                    if !has_tuple(state, &fk.referenced_table, &fk.referenced_columns, &values) {
                        return Err(missing_reference(table, fk, &values));
                    }
                    present.insert(key);
                }
            }
            Pending::Gone { table, row } => {
                for (other, t) in &state.tables {
                    for fk in t
                        .schema
                        .foreign_keys
                        .iter()
                        .filter(|fk| fk.referenced_table == *table)
                    {
                        let Some(values) = tuple(row, &fk.referenced_columns) else {
                            continue;
                        };
                        if has_tuple(state, table, &fk.referenced_columns, &values) {
                            continue;
                        }
                        if has_tuple(state, other, &fk.columns, &values) {
                            return Err(still_referenced(table, other, fk, &values));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn missing_reference(table: &str, fk: &ForeignKey, values: &[Value]) -> Error {
    Error::conflict(format!(
        "insert or update on table {table} violates foreign key {}: ({}) = ({}) is not present in table {}",
        fk.resolved_name(table),
        fk.columns.join(", "),
        show(values),
        fk.referenced_table
    ))
    .with_context("table", table.to_string())
}

fn still_referenced(table: &str, other: &str, fk: &ForeignKey, values: &[Value]) -> Error {
    Error::conflict(format!(
        "update or delete on table {table} violates foreign key {} on table {other}: ({}) = ({}) is still referenced",
        fk.resolved_name(other),
        fk.referenced_columns.join(", "),
        show(values)
    ))
    .with_context("table", table.to_string())
}
