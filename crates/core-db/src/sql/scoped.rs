//! [`Database::scoped`] of the shared SQL engine (PostgreSQL only): a
//! handle whose every call runs as a request's database role with its
//! verified claims, so the database's row-level security policies apply.
//!
//! Every call of a [`Scoped`] handle is ONE transaction on a pooled
//! connection:
//!
//! ```sql
//! BEGIN;
//! select set_config('role', $1, true),                     -- the scope's role
//!        set_config('request.jwt.claims', $2, true),       -- the claims, as JSON text
//!        set_config('request.jwt.claim.sub', $3, true),    -- claims.sub ('' without one)
//!        set_config('request.jwt.claim.role', $4, true);   -- claims.role, else the role
//! -- the operation's statements (reads too)
//! COMMIT;                                                  -- ROLLBACK on any error
//! ```
//!
//! The settings are transaction-local (`is_local = true`, never a
//! session-level `SET`): the connection goes back to the pool as it came.
//! The values are bound, never spliced into SQL. Table schemas (the
//! engine's [`super::engine::SCHEMA_TABLE`] cache) are loaded before the
//! role switch, through the provider's own connections, so a role needs no
//! access to the provider's bookkeeping.
//!
//! What a scoped handle refuses, with [`ErrorKind::PermissionDenied`]:
//! DDL (`create_table`, `drop_table`, `alter_table`, `create_index`: schema
//! changes are the application's, not a request's), `subscribe_changes`
//! (the change feed is not filtered by row-level security), `disconnect`
//! (the pool is shared) and scoping a scoped handle again.
//!
//! `raw_query` runs the caller's SQL in the scoped transaction through
//! [`SqlProvider::query_raw_in`]. db-postgres binds parameters as the types
//! PostgreSQL infers for them, as its unscoped `raw_query` does; a provider
//! that keeps the default binds them by their JSON types (strings as
//! `text`, integers as `bigint`, ...), and SQL run there must cast where
//! another type is needed (`:id::uuid`). Raw SQL must be the application's own: SQL
//! can leave the role (`RESET ROLE`), so never run an end user's SQL, scoped
//! or not.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::compile::{self, Bind, SqlDialect, Statement};
use super::engine::{schema_of, ColumnHints, SqlProvider};
use super::keyed::StatementCache;
use super::rewrite_named;
use super::write::{RowWriter, SqlTransaction};
use crate::{
    AlterTable, ChangeStream, ColumnType, Database, DbCapabilities, DbResult, Error, ErrorKind,
    Filter, Health, IndexSpec, Operation, OperationOutput, Params, ProviderInfo, Query,
    RequestScope, Row, RowChange, TableSchema, Value,
};

/// The statement every scoped transaction starts with.
const PROLOGUE: &str = "select set_config('role', $1, true), \
     set_config('request.jwt.claims', $2, true), \
     set_config('request.jwt.claim.sub', $3, true), \
     set_config('request.jwt.claim.role', $4, true)";

/// A [`Database`] handle running every call of the SQL provider `P` as a
/// [`RequestScope`] (see the module documentation). Made by
/// [`Database::scoped`] on a PostgreSQL provider.
pub struct Scoped<P> {
    db: Arc<P>,
    scope: RequestScope,
    /// The claims as JSON text (`request.jwt.claims`).
    claims: String,
}

/// Claims are credentials: the role and subject only.
impl<P> std::fmt::Debug for Scoped<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// `Database::scoped` of the engine: PostgreSQL only.
pub(crate) fn scoped<P: SqlProvider>(
    db: Arc<P>,
    scope: RequestScope,
) -> DbResult<Arc<dyn Database>> {
    let state = db.sql_state();
    if state.dialect() != SqlDialect::Postgres {
        return Err(Error::unsupported(format!(
            "the {} database provider does not run calls as a request's role (no row-level \
             security)",
            state.info().name
        ))
        .with_operation("db.scoped"));
    }
    let claims = serde_json::to_string(&scope.claims).map_err(|e| {
        Error::invalid_input("a request scope's claims cannot be written as JSON")
            .with_source(e)
            .with_operation("db.scoped")
    })?;
    Ok(Arc::new(Scoped { db, scope, claims }))
}

fn text(column: &str, value: &str) -> Bind {
    Bind {
        value: Value::String(value.to_string()),
        ty: Some(ColumnType::Text),
        column: column.into(),
    }
}

fn refused(op: &'static str, what: &str) -> Error {
    Error::permission_denied(format!(
        "{what} is not allowed through a request-scoped database handle"
    ))
    .with_operation(op)
}

/// A scoped transaction as the shared write paths see it.
struct ScopedTx<'a, P: SqlProvider> {
    db: &'a P,
    conn: P::Conn,
}

#[async_trait]
impl<P: SqlProvider> SqlTransaction for ScopedTx<'_, P> {
    fn dialect(&self) -> SqlDialect {
        self.db.sql_state().dialect()
    }

    fn statement_cache(&self) -> Option<&StatementCache> {
        Some(self.db.sql_state().statements())
    }

    /// Never through the scoped connection (its role may not read the
    /// provider's metadata): the cache, which the call filled before the
    /// role switch, else the provider's own connection.
    async fn schema(&mut self, table: &str) -> DbResult<Arc<TableSchema>> {
        schema_of(self.db, table).await
    }

    async fn fetch(&mut self, statement: Statement, schema: &TableSchema) -> DbResult<Vec<Row>> {
        P::fetch_all(&mut self.conn, statement, ColumnHints::Schema(schema)).await
    }

    async fn fetch_optional(
        &mut self,
        statement: Statement,
        schema: &TableSchema,
    ) -> DbResult<Option<Row>> {
        P::fetch_optional(&mut self.conn, statement, ColumnHints::Schema(schema)).await
    }
}

impl<P: SqlProvider> Scoped<P> {
    /// The `set_config` statement of this scope.
    fn prologue(&self) -> Statement {
        let sub = self.scope.subject().unwrap_or("");
        let role_claim = self
            .scope
            .claims
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or(&self.scope.role);
        Statement {
            sql: PROLOGUE.into(),
            binds: vec![
                text("role", &self.scope.role),
                text("request.jwt.claims", &self.claims),
                text("request.jwt.claim.sub", sub),
                text("request.jwt.claim.role", role_claim),
            ],
        }
    }

    /// Begins the transaction and switches to the scope. Errors here
    /// changed nothing ([`Error::unapplied`]).
    async fn open(&self, op: &'static str) -> DbResult<(P::Conn, bool)> {
        let db = &*self.db;
        let pool = db.sql_state().pool_for(op)?;
        let (mut conn, record) = db
            .begin(&pool, false)
            .await
            .map_err(|e| e.with_operation(op).unapplied())?;
        if let Err(e) = P::execute(&mut conn, self.prologue()).await {
            P::rollback(conn).await;
            let role = &self.scope.role;
            let message = format!(
                "cannot run as the database role {role} (does it exist, and is it granted to \
                 the provider's user?): {}",
                e.message()
            );
            return Err(Error::new(e.kind(), message)
                .with_context("role", role.clone())
                .with_source(e)
                .with_operation(op)
                .unapplied());
        }
        Ok((conn, record))
    }

    /// Commits when `result` is `Ok`, else rolls back.
    async fn end<T>(
        &self,
        op: &'static str,
        conn: P::Conn,
        changes: Vec<RowChange>,
        result: DbResult<T>,
    ) -> DbResult<T> {
        match result {
            Ok(v) => {
                self.db
                    .commit(conn, changes)
                    .await
                    .map_err(|e| e.with_operation(op))?;
                Ok(v)
            }
            Err(e) => {
                P::rollback(conn).await;
                Err(e.with_operation(op))
            }
        }
    }

    /// Loads the schemas of `tables` (before the role switch).
    async fn warm<'t>(&self, tables: impl IntoIterator<Item = &'t str>) -> DbResult<()> {
        for t in tables {
            schema_of(&*self.db, t).await?;
        }
        Ok(())
    }

    /// Starts a write: loads the schemas of `tables` (before the role
    /// switch), then opens the scoped transaction. End it with
    /// [`Scoped::finish`].
    async fn begin<'t>(
        &self,
        op: &'static str,
        tables: impl IntoIterator<Item = &'t str>,
    ) -> DbResult<Writer<'_, P>> {
        self.warm(tables)
            .await
            .map_err(|e| e.with_operation(op).unapplied())?;
        let (conn, record) = self.open(op).await?;
        let tx = ScopedTx {
            db: &*self.db,
            conn,
        };
        Ok(if record {
            RowWriter::new(tx)
        } else {
            RowWriter::without_changes(tx)
        })
    }

    /// Commits a write when `result` is `Ok`, else rolls back.
    async fn finish<T>(&self, op: &'static str, w: Writer<'_, P>, r: DbResult<T>) -> DbResult<T> {
        let (ScopedTx { conn, .. }, changes) = w.into_parts();
        self.end(op, conn, changes, r).await
    }

    /// Runs one read statement in a scoped transaction.
    async fn read_one(
        &self,
        op: &'static str,
        statement: Statement,
        types: &[ColumnType],
        single: bool,
    ) -> DbResult<Vec<Row>> {
        let (mut conn, _) = self.open(op).await?;
        let hints = ColumnHints::Position(types);
        let r = if single {
            P::fetch_optional(&mut conn, statement, hints)
                .await
                .map(Vec::from_iter)
        } else {
            P::fetch_all(&mut conn, statement, hints).await
        };
        self.end(op, conn, Vec::new(), r).await
    }
}

type Writer<'a, P> = RowWriter<ScopedTx<'a, P>>;

#[async_trait]
impl<P: SqlProvider> Database for Scoped<P> {
    fn info(&self) -> ProviderInfo {
        self.db.info()
    }

    /// The provider's, without the change feed (not filtered by row-level
    /// security) and without schema changes (refused).
    fn capabilities(&self) -> DbCapabilities {
        let mut c = self.db.capabilities();
        c.change_feed = false;
        c.change_feed_scope = None;
        c.schema = false;
        c
    }

    async fn health(&self) -> Health {
        self.db.health().await
    }

    async fn connect(&self) -> DbResult<()> {
        self.db.connect().await
    }

    async fn disconnect(&self) -> DbResult<()> {
        Err(refused("db.disconnect", "disconnecting the shared pool"))
    }

    async fn create(&self, table: &str, row: Row) -> DbResult<Row> {
        let op = "db.create";
        let mut w = self.begin(op, [table]).await?;
        let r = match w.create_many_owned(table, vec![row]).await {
            Ok(mut rows) => rows
                .pop()
                .ok_or_else(|| Error::internal("insert returned no row")),
            Err(e) => Err(e),
        };
        self.finish(op, w, r).await
    }

    async fn read(&self, table: &str, query: &Query) -> DbResult<Vec<Row>> {
        let op = "db.read";
        let run = async {
            let mut cat = HashMap::new();
            cat.insert(
                table.to_string(),
                TableSchema::clone(&*schema_of(&*self.db, table).await?),
            );
            for j in &query.joins {
                if !cat.contains_key(&j.table) {
                    let joined = schema_of(&*self.db, &j.table).await?;
                    cat.insert(j.table.clone(), TableSchema::clone(&joined));
                }
            }
            let s = compile::select(self.db.sql_state().dialect(), &cat, table, query)?;
            let types: Vec<ColumnType> = s.columns.iter().map(|c| c.ty).collect();
            self.read_one(op, s.statement, &types, query.limit == Some(1))
                .await
        };
        run.await.map_err(|e: Error| e.with_operation(op))
    }

    async fn get(&self, table: &str, id: &Value) -> DbResult<Option<Row>> {
        let op = "db.get";
        let run = async {
            let schema = schema_of(&*self.db, table).await?;
            let select = self
                .db
                .sql_state()
                .statements()
                .select_by_key(&schema, id)?;
            let rows = self
                .read_one(op, select.statement, &select.column_types, true)
                .await?;
            Ok(rows.into_iter().next())
        };
        run.await.map_err(|e: Error| e.with_operation(op))
    }

    async fn update(&self, table: &str, id: &Value, patch: Row) -> DbResult<Row> {
        let mut w = self.begin("db.update", [table]).await?;
        let r = w.update(table, id, &patch).await;
        self.finish("db.update", w, r).await
    }

    async fn delete(&self, table: &str, id: &Value) -> DbResult<bool> {
        let mut w = self.begin("db.delete", [table]).await?;
        let r = w.delete(table, id).await;
        self.finish("db.delete", w, r).await
    }

    async fn create_many(&self, table: &str, rows: Vec<Row>) -> DbResult<Vec<Row>> {
        let op = "db.create_many";
        // Checks the name and that the table exists, also for no rows.
        let schema = schema_of(&*self.db, table)
            .await
            .map_err(|e| e.with_operation(op))?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        drop(schema);
        let mut w = self.begin(op, [table]).await?;
        let r = w.create_many_owned(table, rows).await;
        self.finish(op, w, r).await
    }

    async fn update_many(&self, table: &str, filter: &Filter, patch: Row) -> DbResult<u64> {
        let mut w = self.begin("db.update_many", [table]).await?;
        let r = w.update_count(table, filter, &patch).await;
        self.finish("db.update_many", w, r).await
    }

    async fn delete_many(&self, table: &str, filter: &Filter) -> DbResult<u64> {
        let mut w = self.begin("db.delete_many", [table]).await?;
        let r = w.delete_where(table, filter).await;
        self.finish("db.delete_many", w, r).await
    }

    async fn raw_query(&self, sql: &str, params: &Params) -> DbResult<Vec<Row>> {
        let op = "db.raw_query";
        let run = async {
            let (sql, values) = rewrite_named(sql, params, self.db.sql_state().dialect())?;
            let (mut conn, _) = self.open(op).await?;
            let r = P::query_raw_in(&mut conn, sql, values).await;
            self.end(op, conn, Vec::new(), r).await
        };
        run.await.map_err(|e: Error| e.with_operation(op))
    }

    async fn transaction(&self, operations: Vec<Operation>) -> DbResult<Vec<OperationOutput>> {
        let tables: Vec<String> = operations.iter().map(|o| o.table().to_string()).collect();
        let op = "db.transaction";
        let mut w = self.begin(op, tables.iter().map(String::as_str)).await?;
        let r = w.apply_all_owned(operations).await;
        self.finish(op, w, r).await
    }

    async fn create_table(&self, _schema: &TableSchema) -> DbResult<()> {
        Err(refused("db.create_table", "creating a table"))
    }

    async fn drop_table(&self, _table: &str, _if_exists: bool) -> DbResult<()> {
        Err(refused("db.drop_table", "dropping a table"))
    }

    async fn alter_table(&self, _table: &str, _changes: &[AlterTable]) -> DbResult<()> {
        Err(refused("db.alter_table", "altering a table"))
    }

    async fn create_index(&self, _index: &IndexSpec) -> DbResult<()> {
        Err(refused("db.create_index", "creating an index"))
    }

    /// Table metadata (the provider's, read unscoped): not row data.
    async fn describe_table(&self, table: &str) -> DbResult<Option<TableSchema>> {
        self.db.describe_table(table).await
    }

    /// Deny by default: a scoped handle cannot change whom it runs as.
    fn scoped(self: Arc<Self>, _scope: RequestScope) -> DbResult<Arc<dyn Database>> {
        Err(refused(
            "db.scoped",
            "scoping a request-scoped handle again",
        ))
    }

    /// The change feed is not filtered by row-level security: refused.
    async fn subscribe_changes(&self, _table: Option<&str>) -> DbResult<ChangeStream> {
        Err(Error::new(
            ErrorKind::PermissionDenied,
            "the change feed is not filtered by row-level security: a request-scoped handle \
             cannot subscribe to changes",
        )
        .with_operation("db.subscribe_changes"))
    }
}

#[cfg(test)]
mod tests {
    use super::PROLOGUE;

    #[test]
    fn the_prologue_binds_every_value_and_is_transaction_local() {
        assert_eq!(PROLOGUE.matches("true)").count(), 4);
        for n in 1..=4 {
            assert!(PROLOGUE.contains(&format!("${n}")));
        }
        assert!(!PROLOGUE.to_lowercase().contains("set role"));
    }
}
