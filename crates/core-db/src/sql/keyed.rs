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

/// INSERT statements by shape (table, columns given, number of rows), kept
/// so that single creates and repeated `create_many` chunks do not run the
/// compiler (and rebuild the SQL text) every time. Values are always bound
/// per call; a shape is reused only while the table's schema is the one it
/// was compiled from.
#[derive(Debug, Default)]
pub struct WriteShapes {
    cache: Mutex<HashMap<String, Vec<Arc<InsertShape>>>>,
    updates: Mutex<HashMap<String, Vec<Arc<UpdateShape>>>>,
}

/// An `UPDATE ... SET <patch columns> WHERE <key> = ? RETURNING *`.
#[derive(Debug)]
struct UpdateShape {
    dialect: SqlDialect,
    schema: TableSchema,
    columns: Vec<(Arc<str>, Option<ColumnType>)>,
    key: Bind,
    sql: String,
}

/// Shapes kept per table (oldest dropped first).
const SHAPES_PER_TABLE: usize = 16;

/// Adds `shape` to `schema`'s table, dropping shapes of older schemas and
/// the oldest beyond [`SHAPES_PER_TABLE`].
fn remember<T>(
    cache: &Mutex<HashMap<String, Vec<Arc<T>>>>,
    schema: &TableSchema,
    shape: Arc<T>,
    schema_of: fn(&T) -> &TableSchema,
) {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    let shapes = cache.entry(schema.name.clone()).or_default();
    shapes.retain(|s| schema_of(s) == schema);
    if shapes.len() >= SHAPES_PER_TABLE {
        shapes.remove(0);
    }
    shapes.push(shape);
}

#[derive(Debug)]
struct InsertShape {
    dialect: SqlDialect,
    schema: TableSchema,
    rows: usize,
    columns: Vec<(Arc<str>, Option<ColumnType>)>,
    sql: String,
}

impl InsertShape {
    fn fits(&self, dialect: SqlDialect, schema: &TableSchema, rows: &[crate::Row]) -> bool {
        self.dialect == dialect
            && self.rows == rows.len()
            && self.schema == *schema
            && rows.iter().all(|r| {
                r.len() == self.columns.len()
                    && self.columns.iter().all(|(c, _)| r.contains_key(&**c))
            })
    }
}

impl WriteShapes {
    /// The INSERT of `rows` into `schema`'s table, as
    /// [`compile::insert_rows`] makes it (same SQL, same binds, same
    /// errors), from the cache when this shape was seen before.
    pub fn insert(
        &self,
        dialect: SqlDialect,
        schema: &TableSchema,
        rows: Vec<crate::Row>,
    ) -> DbResult<compile::Statement> {
        let hit = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.get(&schema.name).and_then(|shapes| {
                shapes
                    .iter()
                    .find(|s| s.fits(dialect, schema, &rows))
                    .cloned()
            })
        };
        if let Some(shape) = hit {
            let mut binds = Vec::with_capacity(rows.len() * shape.columns.len());
            for mut row in rows {
                for (name, ty) in &shape.columns {
                    binds.push(Bind {
                        value: row.remove(&**name).unwrap_or(Value::Null),
                        ty: *ty,
                        column: Arc::clone(name),
                    });
                }
            }
            return Ok(compile::Statement {
                sql: shape.sql.clone(),
                binds,
            });
        }
        let n = rows.len();
        let catalog: HashMap<String, TableSchema> = [(schema.name.clone(), schema.clone())].into();
        let stmt = compile::insert_rows(dialect, &catalog, &schema.name, rows)?;
        let per_row = stmt.binds.len().checked_div(n).unwrap_or(0);
        if per_row > 0 && per_row * n == stmt.binds.len() {
            let shape = Arc::new(InsertShape {
                dialect,
                schema: schema.clone(),
                rows: n,
                columns: stmt.binds[..per_row]
                    .iter()
                    .map(|b| (Arc::clone(&b.column), b.ty))
                    .collect(),
                sql: stmt.sql.clone(),
            });
            remember(&self.cache, schema, shape, |s| &s.schema);
        }
        Ok(stmt)
    }
}

impl WriteShapes {
    /// The update by primary key of `schema`'s table with `patch` (already
    /// prepared), as [`compile::update`] makes it with
    /// [`compile::by_primary_key`], from the cache when this shape (the
    /// patch's columns, in order) was seen before.
    pub fn update_by_key(
        &self,
        dialect: SqlDialect,
        schema: &TableSchema,
        patch: &crate::Row,
        id: &Value,
    ) -> DbResult<compile::Statement> {
        let filter = compile::by_primary_key(schema, id)?;
        let scalar = matches!(id, Value::String(_) | Value::Number(_) | Value::Bool(_));
        if scalar {
            let hit = {
                let cache = self.updates.lock().unwrap_or_else(PoisonError::into_inner);
                cache.get(&schema.name).and_then(|shapes| {
                    shapes
                        .iter()
                        .find(|s| {
                            s.dialect == dialect
                                && s.schema == *schema
                                && s.columns.len() == patch.len()
                                && s.columns
                                    .iter()
                                    .zip(patch.keys())
                                    .all(|((c, _), k)| **c == **k)
                        })
                        .cloned()
                })
            };
            if let Some(shape) = hit {
                let mut binds: Vec<Bind> = shape
                    .columns
                    .iter()
                    .zip(patch.values())
                    .map(|((c, ty), v)| Bind {
                        value: v.clone(),
                        ty: *ty,
                        column: Arc::clone(c),
                    })
                    .collect();
                binds.push(Bind {
                    value: id.clone(),
                    ty: shape.key.ty,
                    column: Arc::clone(&shape.key.column),
                });
                return Ok(compile::Statement {
                    sql: shape.sql.clone(),
                    binds,
                });
            }
        }
        let catalog: HashMap<String, TableSchema> = [(schema.name.clone(), schema.clone())].into();
        let stmt = compile::update(dialect, &catalog, &schema.name, patch, &filter)?;
        if scalar && stmt.binds.len() == patch.len() + 1 {
            let (cols, key) = stmt.binds.split_at(patch.len());
            let shape = Arc::new(UpdateShape {
                dialect,
                schema: schema.clone(),
                columns: cols.iter().map(|b| (Arc::clone(&b.column), b.ty)).collect(),
                key: key[0].clone(),
                sql: stmt.sql.clone(),
            });
            remember(&self.updates, schema, shape, |s| &s.schema);
        }
        Ok(stmt)
    }
}

#[cfg(test)]
mod insert_tests {
    use super::*;
    use crate::{ColumnDef, ErrorKind, Row};
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap_or_default()
    }

    fn agents() -> TableSchema {
        TableSchema::new("agents")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("name"))
            .column(ColumnDef::float("score"))
    }

    #[test]
    fn cached_shapes_make_what_the_compiler_makes() {
        let shapes = WriteShapes::default();
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), agents())].into();
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            for rows in [
                vec![row(json!({"id": 1, "name": "a"}))],
                vec![row(json!({"name": "b", "id": 2}))],
                vec![
                    row(json!({"id": 3, "name": "c", "score": 1.5})),
                    row(json!({"score": 2.5, "id": 4, "name": "d"})),
                ],
                vec![row(json!({"id": 5, "name": "e"}))],
            ] {
                let expected = compile::insert(dialect, &cat, "agents", &rows).unwrap();
                let got = shapes.insert(dialect, &agents(), rows).unwrap();
                assert_eq!(got, expected);
            }
        }
    }

    #[test]
    fn cached_updates_make_what_the_compiler_makes() {
        let shapes = WriteShapes::default();
        let cat: HashMap<String, TableSchema> = [("agents".to_string(), agents())].into();
        for dialect in [SqlDialect::Sqlite, SqlDialect::Postgres] {
            for (patch, id) in [
                (row(json!({"name": "a"})), json!(1)),
                (row(json!({"name": "b"})), json!(2)),
                (row(json!({"score": 1.5, "name": "c"})), json!(3)),
                (row(json!({"name": "d", "score": 2.5})), json!(4)),
                (row(json!({"score": 3.5, "name": "e"})), json!(5)),
            ] {
                let filter = compile::by_primary_key(&agents(), &id).unwrap();
                let expected = compile::update(dialect, &cat, "agents", &patch, &filter).unwrap();
                let got = shapes
                    .update_by_key(dialect, &agents(), &patch, &id)
                    .unwrap();
                assert_eq!(got, expected);
            }
        }
        let e = shapes
            .update_by_key(
                SqlDialect::Sqlite,
                &agents(),
                &row(json!({"nope": 1})),
                &json!(1),
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = shapes
            .update_by_key(
                SqlDialect::Sqlite,
                &agents(),
                &row(json!({"name": "x"})),
                &Value::Null,
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn errors_and_schema_changes_go_through_the_compiler() {
        let shapes = WriteShapes::default();
        let d = SqlDialect::Sqlite;
        shapes
            .insert(d, &agents(), vec![row(json!({"id": 1, "name": "a"}))])
            .unwrap();
        // Other columns than the first row: the compiler's error.
        let e = shapes
            .insert(
                d,
                &agents(),
                vec![row(json!({"id": 1, "name": "a"})), row(json!({"id": 2}))],
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // Unknown column: the compiler's error, not a cached shape.
        let e = shapes
            .insert(d, &agents(), vec![row(json!({"id": 1, "nope": "a"}))])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // A changed schema compiles again (the new column is known).
        let altered = agents().column(ColumnDef::text("status"));
        let s = shapes
            .insert(
                d,
                &altered,
                vec![row(json!({"id": 1, "name": "a", "status": "x"}))],
            )
            .unwrap();
        assert!(s.sql.contains("\"status\""), "{}", s.sql);
    }
}
