//! The change feed: row triggers that `pg_notify` each committed change, and
//! one listening connection per provider that turns notifications back into
//! [`RowChange`]s.
//!
//! - Triggers are installed per watched table (when something subscribes to
//!   it, or to all tables), so tables nobody watches pay nothing.
//! - A trigger sees every writer of the database — this process, other
//!   processes, `psql` — so the feed's scope is `database`.
//! - NOTIFY payloads are limited to 8000 bytes. A change whose JSON is
//!   larger is written to `_truststream_changes` and the notification
//!   carries only its id; the listener reads it from there, so a large row
//!   still arrives whole. Such rows are deleted after ten minutes.
//! - Notifications are delivered after commit, in commit order; a rolled
//!   back transaction sends none.
//! - If the listening connection breaks (server restart), subscribers get
//!   one `Unavailable` item saying changes may have been lost, and the
//!   listener reconnects and listens again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::task::JoinHandle;
use truststream_core_db::value::parse_timestamp;
use truststream_core_db::{
    ident, ChangeFeed, ChangeKind, ChangeStream, DbResult, Error, ErrorKind, RowChange,
    TableSchema, Value,
};

use crate::{error, load_schema, lock, value, PgDatabase, SCHEMA_TABLE};

/// Where changes too large for a NOTIFY payload wait for the listener.
pub(crate) const OVERFLOW_TABLE: &str = "_truststream_changes";
const SEQUENCE: &str = "_truststream_change_seq";
const FUNCTION: &str = "_truststream_notify";
const TRIGGER: &str = "_truststream_notify";
/// Payloads above this many bytes go through [`OVERFLOW_TABLE`] (NOTIFY's
/// limit is 8000).
const MAX_PAYLOAD: usize = 7000;

/// The provider's tables, created at connect.
pub(crate) fn bookkeeping_ddl() -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY NOT NULL, schema TEXT NOT NULL)",
            ident::quote(SCHEMA_TABLE)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL, \
             created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            ident::quote(OVERFLOW_TABLE)
        ),
        format!("CREATE SEQUENCE IF NOT EXISTS {}", ident::quote(SEQUENCE)),
    ]
}

/// `schema.name`, both quoted.
fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident::quote(schema), ident::quote(name))
}

/// The trigger function. Every name in it is schema-qualified: a trigger
/// runs with the search path of whoever writes.
fn function_ddl(schema: &str) -> String {
    let seq = qualified(schema, SEQUENCE);
    format!(
        "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  body text;
  ref bigint;
BEGIN
  body := json_build_object(
    'schema', TG_TABLE_SCHEMA,
    'table', TG_TABLE_NAME,
    'op', TG_OP,
    'seq', nextval('{seq}'),
    'at', clock_timestamp(),
    'old', CASE WHEN TG_OP <> 'INSERT' THEN row_to_json(OLD) END,
    'new', CASE WHEN TG_OP <> 'DELETE' THEN row_to_json(NEW) END)::text;
  IF octet_length(body) > {MAX_PAYLOAD} THEN
    INSERT INTO {overflow} (payload) VALUES (body) RETURNING id INTO ref;
    body := json_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'ref', ref)::text;
  END IF;
  PERFORM pg_notify(TG_ARGV[0], body);
  RETURN NULL;
END
$fn$",
        func = qualified(schema, FUNCTION),
        overflow = qualified(schema, OVERFLOW_TABLE),
    )
}

/// The trigger on `table` (idempotent). `schema` and `channel` are
/// validated identifiers.
pub(crate) fn trigger_ddl(schema: &str, table: &str, channel: &str) -> String {
    format!(
        "CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table} \
         FOR EACH ROW EXECUTE FUNCTION {func}('{channel}')",
        trigger = ident::quote(TRIGGER),
        table = qualified(schema, table),
        func = qualified(schema, FUNCTION),
    )
}

/// The provider's side of the feed.
pub(crate) struct Feed {
    changes: ChangeFeed,
    /// The schema the provider's tables live in (`current_schema()`).
    schema: OnceLock<String>,
    watch_all: AtomicBool,
    start: tokio::sync::Mutex<()>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Feed {
    pub(crate) fn new(changes: ChangeFeed) -> Self {
        Feed {
            changes,
            schema: OnceLock::new(),
            watch_all: AtomicBool::new(false),
            start: tokio::sync::Mutex::new(()),
            task: Mutex::new(None),
        }
    }

    pub(crate) fn set_schema(&self, schema: String) {
        let _ = self.schema.set(schema);
    }

    pub(crate) fn schema(&self) -> DbResult<&str> {
        self.schema
            .get()
            .map(String::as_str)
            .ok_or_else(|| Error::unavailable("not connected; call connect() first"))
    }

    /// Whether some subscriber watches every table (new tables then get a
    /// trigger as they are created).
    pub(crate) fn watches_all(&self) -> bool {
        self.watch_all.load(Ordering::SeqCst)
    }

    /// Subscribes, starting the listener if it is not running. The caller
    /// installs the triggers afterwards.
    pub(crate) async fn subscribe(
        &self,
        db: &PgDatabase,
        pool: &PgPool,
        table: Option<String>,
    ) -> DbResult<ChangeStream> {
        if table.is_none() {
            self.watch_all.store(true, Ordering::SeqCst);
        }
        let stream = self.changes.subscribe(table);
        let _guard = self.start.lock().await;
        let running = lock(&self.task).as_ref().is_some_and(|t| !t.is_finished());
        if !running {
            let schema = self.schema()?.to_string();
            sqlx::raw_sql(&function_ddl(&schema))
                .execute(pool)
                .await
                .map_err(error::map)?;
            let mut listener = PgListener::connect_with(pool).await.map_err(error::map)?;
            listener
                .listen(&db.config.change_channel)
                .await
                .map_err(error::map)?;
            let task = tokio::spawn(listen(listener, pool.clone(), schema, self.changes.clone()));
            *lock(&self.task) = Some(task);
        }
        Ok(stream)
    }

    /// Stops the listener (disconnect, drop).
    pub(crate) fn stop(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

/// The listener task: notifications in, changes out, gaps reported.
async fn listen(mut listener: PgListener, pool: PgPool, schema: String, changes: ChangeFeed) {
    let mut schemas: HashMap<String, TableSchema> = HashMap::new();
    let mut down = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                down = false;
                backoff = Duration::from_millis(100);
                match read_change(&pool, &schema, &mut schemas, n.payload()).await {
                    Ok(Some(change)) => changes.publish([change]),
                    Ok(None) => {}
                    Err(e) => changes
                        .publish_gap(format!("a row change could not be read and was lost: {e}")),
                }
            }
            // The connection dropped; the next call reconnects and listens
            // again.
            Ok(None) => {
                if !down {
                    down = true;
                    changes.publish_gap(
                        "the change feed's connection to PostgreSQL was lost; changes until it \
                         is back are not delivered: re-read the data you need",
                    );
                }
            }
            Err(e) => {
                if !down {
                    down = true;
                    changes.publish_gap(format!(
                        "the change feed cannot reach PostgreSQL ({}); changes until it is back \
                         are not delivered: re-read the data you need",
                        error::map(e).message()
                    ));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Turns one notification payload into a change of one of our tables
/// (`None` for other schemas' changes).
async fn read_change(
    pool: &PgPool,
    schema: &str,
    schemas: &mut HashMap<String, TableSchema>,
    payload: &str,
) -> DbResult<Option<RowChange>> {
    let mut v: Value = serde_json::from_str(payload)
        .map_err(|e| Error::internal("a change notification is not JSON").with_source(e))?;
    if v.get("schema").and_then(Value::as_str) != Some(schema) {
        return Ok(None);
    }
    if let Some(id) = v.get("ref").and_then(Value::as_i64) {
        let overflow = ident::quote(OVERFLOW_TABLE);
        let (body,): (String,) =
            sqlx::query_as(&format!("SELECT payload FROM {overflow} WHERE id = $1"))
                .bind(id)
                .fetch_one(pool)
                .await
                .map_err(error::map)?;
        // Best effort: old overflow rows are of no use to anyone.
        let _ = sqlx::query(&format!(
            "DELETE FROM {overflow} WHERE created_at < now() - interval '10 minutes'"
        ))
        .execute(pool)
        .await;
        v = serde_json::from_str(&body)
            .map_err(|e| Error::internal("a stored change is not JSON").with_source(e))?;
    }
    let table = v
        .get("table")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::internal("a change notification names no table"))?
        .to_string();
    let kind = match v.get("op").and_then(Value::as_str) {
        Some("INSERT") => ChangeKind::Insert,
        Some("UPDATE") => ChangeKind::Update,
        Some("DELETE") => ChangeKind::Delete,
        other => {
            return Err(Error::internal(format!(
                "a change notification has operation {other:?}"
            )))
        }
    };
    let known = match schemas.get(&table) {
        // A column the cached schema does not know: the table was altered
        // since it was read.
        Some(cached) => ["old", "new"].iter().all(|k| {
            v.get(*k)
                .and_then(Value::as_object)
                .is_none_or(|row| row.keys().all(|c| cached.find(c).is_some()))
        }),
        None => false,
    };
    if !known {
        schemas.insert(table.clone(), table_schema(pool, &table).await?);
    }
    let table_schema = &schemas[&table];
    let mut decode = |key: &str| -> DbResult<_> {
        match v.get_mut(key).map(Value::take) {
            None | Some(Value::Null) => Ok(None),
            Some(row) => value::from_row_json(table_schema, row).map(Some),
        }
    };
    let old = decode("old")?;
    let new = decode("new")?;
    let pk = table_schema
        .primary_key()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let key = new
        .as_ref()
        .or(old.as_ref())
        .and_then(|r| r.get(&pk))
        .cloned()
        .unwrap_or(Value::Null);
    let committed_at = v
        .get("at")
        .and_then(Value::as_str)
        .and_then(parse_timestamp)
        .unwrap_or_else(chrono::Utc::now);
    Ok(Some(RowChange {
        table,
        kind,
        key,
        old,
        new,
        committed_at,
    }))
}

/// A table's schema for decoding; a table dropped since the change decodes
/// by JSON kinds alone.
async fn table_schema(pool: &PgPool, table: &str) -> DbResult<TableSchema> {
    match load_schema(pool, table).await {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(TableSchema::new(table)),
        Err(e) => Err(e),
    }
}
