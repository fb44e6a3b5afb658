//! Compiled `get` statements (select one row by primary key), kept per table
//! so that a provider's `get` does not run the query compiler every time.
//!
//! The SQL text of a by-key select depends only on the table's schema; each
//! call binds its own id. An entry is reused only while the schema it was
//! compiled from is still the table's schema, so `alter_table` (or a schema
//! reloaded after another process changed it) can never leave a stale
//! statement behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::compile::{self, Bind, SqlDialect};
use crate::{ColumnType, DbResult, Query, TableSchema, Value};

/// A by-key select compiled for one table.
#[derive(Debug)]
pub struct KeySelect {
    schema: TableSchema,
    /// The SQL text, with the id as its one placeholder.
    pub sql: String,
    /// The type of each result column, by position.
    pub column_types: Vec<ColumnType>,
    template: Bind,
}

impl KeySelect {
    /// The one bind of this statement, for `id`.
    pub fn bind(&self, id: &Value) -> Bind {
        Bind {
            value: id.clone(),
            ty: self.template.ty,
            column: self.template.column.clone(),
        }
    }
}

/// By-key selects per table (for one dialect).
#[derive(Debug)]
pub struct KeySelects {
    dialect: SqlDialect,
    cache: Mutex<HashMap<String, Arc<KeySelect>>>,
}

impl KeySelects {
    /// An empty cache for `dialect`.
    pub fn new(dialect: SqlDialect) -> Self {
        KeySelects {
            dialect,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The by-key select of `schema`'s table, compiled on first use (or
    /// again after the schema changed), and the bind for `id`. A null id is
    /// `InvalidInput`, as in [`compile::by_primary_key`].
    pub fn get(&self, schema: &TableSchema, id: &Value) -> DbResult<(Arc<KeySelect>, Bind)> {
        // Validates the id the way the compiler does, every time.
        let filter = compile::by_primary_key(schema, id)?;
        // Only scalar ids reuse a statement (the compiler may render other
        // JSON values differently).
        let scalar = matches!(id, Value::String(_) | Value::Number(_) | Value::Bool(_));
        if scalar {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(hit) = cache.get(&schema.name).filter(|k| k.schema == *schema) {
                let bind = hit.bind(id);
                return Ok((Arc::clone(hit), bind));
            }
        }
        let catalog: HashMap<String, TableSchema> = [(schema.name.clone(), schema.clone())].into();
        let compiled = compile::select(
            self.dialect,
            &catalog,
            &schema.name,
            &Query::new().filter(filter).limit(1),
        )?;
        let mut binds = compiled.statement.binds;
        let entry = Arc::new(KeySelect {
            schema: schema.clone(),
            sql: compiled.statement.sql,
            column_types: compiled.columns.iter().map(|c| c.ty).collect(),
            template: binds.first().cloned().unwrap_or(Bind {
                value: Value::Null,
                ty: None,
                column: "".into(),
            }),
        });
        if scalar && binds.len() == 1 {
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(schema.name.clone(), Arc::clone(&entry));
        }
        let bind = binds.pop().unwrap_or_else(|| entry.bind(id));
        Ok((entry, bind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ColumnDef, ErrorKind};
    use serde_json::json;

    fn agents() -> TableSchema {
        TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("name"))
    }

    #[test]
    fn reused_while_the_schema_stays_and_recompiled_after_it_changes() {
        let keyed = KeySelects::new(SqlDialect::Postgres);
        let (a, bind_a) = keyed.get(&agents(), &json!("a1")).unwrap();
        let (b, bind_b) = keyed.get(&agents(), &json!("b2")).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second get reuses the statement");
        assert_eq!(bind_a.value, json!("a1"));
        assert_eq!(bind_b.value, json!("b2"));
        assert_eq!(&*bind_b.column, "id");
        assert_eq!(a.column_types, [ColumnType::Text, ColumnType::Text]);
        assert!(!a.sql.contains("b2"), "values are bound, never in the text");

        let altered = agents().column(ColumnDef::integer("score"));
        let (c, _) = keyed.get(&altered, &json!("a1")).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "a changed schema compiles again");
        assert!(c.sql.contains("\"score\""), "{}", c.sql);
        assert_eq!(c.column_types.len(), 3);
    }

    #[test]
    fn null_ids_are_refused_and_odd_ids_are_not_cached() {
        let keyed = KeySelects::new(SqlDialect::Sqlite);
        let e = keyed.get(&agents(), &Value::Null).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let (a, _) = keyed.get(&agents(), &json!("a1")).unwrap();
        let (b, bind) = keyed.get(&agents(), &json!(["x"])).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(bind.value, json!(["x"]));
        let (c, _) = keyed.get(&agents(), &json!("a2")).unwrap();
        assert!(
            Arc::ptr_eq(&a, &c),
            "the scalar entry is still the cached one"
        );
    }
}
