//! The change feed: row triggers that `pg_notify` each committed change, and
//! one listening connection per provider that turns notifications back into
//! [`RowChange`]s.
//!
//! - A table has a trigger while some subscriber (of this or another
//!   process) watches it. Each provider counts its subscribers per table and
//!   holds a shared advisory lock per watched table on a connection of its
//!   own; the first subscriber installs the trigger (once), and when the
//!   last one leaves the provider drops the trigger only if it can take that
//!   lock exclusively — that is, no other process still watches the table.
//!   A process that dies releases its locks with its connection.
//! - A trigger sees every writer of the database — this process, other
//!   processes, `psql` — so the feed's scope is `database`.
//! - The trigger is deferred: it runs at `COMMIT`, one committing
//!   transaction at a time (an advisory lock per schema), so each change
//!   gets the next number of a sequence in commit order, and its
//!   `committed_at` is read then. A rolled back transaction numbers nothing,
//!   so a number the listener never saw means a lost change: it is reported
//!   as an `Unavailable` item.
//! - NOTIFY payloads are limited to 8000 bytes. A change whose JSON is
//!   larger is written to `_truststream_changes` and the notification
//!   carries only its id; the listener reads it from there, so a large row
//!   still arrives whole. The trigger itself bounds that table (every 64th
//!   row it deletes rows more than 1024 behind or older than ten minutes),
//!   with or without a listener.
//! - If the listening connection breaks (server restart), subscribers get
//!   one `Unavailable` item saying changes may have been lost, and the
//!   listener reconnects and listens again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt as _};
use sqlx::postgres::{PgConnection, PgListener, PgPool};
use sqlx::Connection as _;
use tokio::task::JoinHandle;
use truststream_core_db::value::parse_timestamp;
use truststream_core_db::{
    ident, ChangeFeed, ChangeKind, ChangeStream, DbResult, Error, ErrorKind, RowChange,
    TableSchema, Value,
};

use crate::{error, load_schema, lock, value, SCHEMA_TABLE};

/// Where changes too large for a NOTIFY payload wait for the listener.
pub(crate) const OVERFLOW_TABLE: &str = "_truststream_changes";
const SEQUENCE: &str = "_truststream_change_seq";
const FUNCTION: &str = "_truststream_notify";
const TRIGGER: &str = "_truststream_notify";
/// Payloads above this many bytes go through [`OVERFLOW_TABLE`] (NOTIFY's
/// limit is 8000).
const MAX_PAYLOAD: usize = 7000;
/// [`OVERFLOW_TABLE`] keeps at most this many rows (plus up to
/// [`OVERFLOW_PRUNE_EVERY`]) ...
pub(crate) const OVERFLOW_KEEP: i64 = 1024;
/// ... pruned by the trigger every this many overflow rows.
pub(crate) const OVERFLOW_PRUNE_EVERY: i64 = 64;
/// Advisory-lock class (first key) of the per-schema lock that orders
/// commits of watched tables.
const ORDER_LOCK: i32 = 0x7473_0001;
/// Advisory-lock class of the per-table "someone watches this table" locks.
const WATCH_LOCK: i32 = 0x7473_0002;

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
/// runs with the search path of whoever writes. `SECURITY DEFINER` (with a
/// fixed search path): a write made as another role (a request-scoped
/// handle under row-level security, `Database::scoped`) still numbers and
/// records its change with the provider's own rights on the sequence and
/// the overflow table.
fn function_ddl(schema: &str) -> String {
    let seq = qualified(schema, SEQUENCE);
    format!(
        "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql \
         SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  body text;
  ref bigint;
  n bigint;
BEGIN
  -- Deferred: this runs at COMMIT. One committing transaction at a time
  -- (until its commit ends), so numbers and notifications follow commit order.
  PERFORM pg_advisory_xact_lock({ORDER_LOCK}, hashtext(TG_TABLE_SCHEMA));
  n := nextval('{seq}');
  body := json_build_object(
    'schema', TG_TABLE_SCHEMA,
    'table', TG_TABLE_NAME,
    'op', TG_OP,
    'seq', n,
    'at', clock_timestamp(),
    'old', CASE WHEN TG_OP <> 'INSERT' THEN row_to_json(OLD) END,
    'new', CASE WHEN TG_OP <> 'DELETE' THEN row_to_json(NEW) END)::text;
  IF octet_length(body) > {MAX_PAYLOAD} THEN
    INSERT INTO {overflow} (payload) VALUES (body) RETURNING id INTO ref;
    IF ref % {OVERFLOW_PRUNE_EVERY} = 0 THEN
      DELETE FROM {overflow}
       WHERE id <= ref - {OVERFLOW_KEEP} OR created_at < clock_timestamp() - interval '10 minutes';
    END IF;
    body := json_build_object('schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'seq', n,
                              'ref', ref)::text;
  END IF;
  PERFORM pg_notify(TG_ARGV[0], body);
  RETURN NULL;
END
$fn$",
        func = qualified(schema, FUNCTION),
        overflow = qualified(schema, OVERFLOW_TABLE),
    )
}

/// Installs the trigger on `table` unless it is there (`schema` and
/// `channel` are validated identifiers). A constraint trigger, deferred to
/// `COMMIT`; one of an older version (not deferred) is replaced. Safe
/// against another process installing it at the same moment.
pub(crate) fn trigger_ddl(schema: &str, table: &str, channel: &str) -> String {
    let rel = qualified(schema, table);
    let trigger = ident::quote(TRIGGER);
    format!(
        "DO $do$
DECLARE
  deferred boolean;
BEGIN
  SELECT tgdeferrable INTO deferred FROM pg_trigger
   WHERE tgrelid = '{rel}'::regclass AND tgname = '{TRIGGER}';
  IF deferred THEN
    RETURN;
  ELSIF deferred IS NOT NULL THEN
    DROP TRIGGER {trigger} ON {rel};
  END IF;
  CREATE CONSTRAINT TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {rel}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {func}('{channel}');
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL; -- another process installed it first
END
$do$",
        func = qualified(schema, FUNCTION),
    )
}

/// Drops the trigger on `table` if the table is still there.
fn drop_trigger_ddl(schema: &str, table: &str) -> String {
    let rel = qualified(schema, table);
    format!(
        "DO $do$ BEGIN IF to_regclass('{rel}') IS NOT NULL THEN \
         DROP TRIGGER IF EXISTS {} ON {rel}; END IF; END $do$",
        ident::quote(TRIGGER)
    )
}

/// The second key of a table's watch lock: `hashtext('schema.table')`
/// (computed by the server, so every process agrees).
const WATCH_KEY: &str = "hashtext($1)";

/// Which tables this provider watches, and the connection holding the
/// watch locks.
#[derive(Default)]
struct Watch {
    /// Set by a disconnect ([`Feed::stop_and_wait`]) until the next
    /// subscription: a subscription dropped after it lets go of nothing
    /// (its lock went with the closed connection) instead of opening a
    /// connection again.
    stopped: bool,
    /// Subscribers per table.
    tables: HashMap<String, usize>,
    /// Subscribers to every table.
    all: usize,
    /// Tables whose watch lock this provider holds (their trigger is in
    /// place).
    held: HashSet<String>,
    /// The connection holding the watch locks (session-level shared
    /// advisory locks: they go with it).
    conn: Option<PgConnection>,
}

impl Watch {
    fn wanted(&self, table: &str) -> bool {
        self.all > 0 || self.tables.get(table).is_some_and(|n| *n > 0)
    }

    /// The lock connection, opened (with the pool's settings) when missing
    /// or broken; a new one re-takes every lock held before.
    fn conn<'a>(
        &'a mut self,
        pool: &'a PgPool,
        schema: &'a str,
    ) -> BoxFuture<'a, DbResult<&'a mut PgConnection>> {
        async move {
            let alive = match self.conn.as_mut() {
                Some(c) => c.ping().await.is_ok(),
                None => false,
            };
            if !alive {
                self.conn = None;
                let mut c = pool.acquire().await.map_err(error::map)?.detach();
                for t in &self.held {
                    take_watch_lock(&mut c, schema, t).await?;
                }
                self.conn = Some(c);
            }
            self.conn
                .as_mut()
                .ok_or_else(|| Error::internal("the change feed's lock connection is missing"))
        }
        .boxed()
    }

    /// Takes `table`'s watch lock and installs its trigger, unless held.
    fn hold<'a>(
        &'a mut self,
        pool: &'a PgPool,
        schema: &'a str,
        table: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, DbResult<()>> {
        async move {
            if self.held.contains(table) {
                return Ok(());
            }
            // Lock first: a process dropping the trigger holds the lock
            // exclusively, so this waits for the drop and installs after it.
            take_watch_lock(self.conn(pool, schema).await?, schema, table).await?;
            self.held.insert(table.to_string());
            sqlx::raw_sql(&trigger_ddl(schema, table, channel))
                .execute(pool)
                .await
                .map_err(error::map)?;
            Ok(())
        }
        .boxed()
    }

    /// Lets go of `table`: releases its watch lock, and drops the trigger
    /// when no other process holds the lock (best effort: a trigger left
    /// behind costs a NOTIFY per change until the next subscriber of the
    /// table leaves).
    fn let_go<'a>(
        &'a mut self,
        pool: &'a PgPool,
        schema: &'a str,
        table: &'a str,
    ) -> BoxFuture<'a, ()> {
        async move {
            if !self.held.remove(table) {
                return;
            }
            let key = format!("{schema}.{table}");
            if let Ok(c) = self.conn(pool, schema).await {
                let _ = sqlx::query(&format!(
                    "SELECT pg_advisory_unlock_shared({WATCH_LOCK}, {WATCH_KEY})"
                ))
                .bind(&key)
                .execute(c)
                .await;
            }
            if let Err(e) = drop_unwatched(pool, schema, table).await {
                tracing::debug!(table, error = %e, "change feed: trigger left in place");
            }
        }
        .boxed()
    }

    /// After the server came back: a fresh lock connection re-takes the
    /// locks, and the triggers are put back (another process may have
    /// dropped them while this one held no lock).
    fn resync<'a>(
        &'a mut self,
        pool: &'a PgPool,
        schema: &'a str,
        channel: &'a str,
    ) -> BoxFuture<'a, DbResult<()>> {
        async move {
            self.conn(pool, schema).await?;
            for t in self.held.clone() {
                sqlx::raw_sql(&trigger_ddl(schema, &t, channel))
                    .execute(pool)
                    .await
                    .map_err(error::map)?;
            }
            Ok(())
        }
        .boxed()
    }
}

/// Drops `table`'s trigger if no process holds its watch lock (taken
/// exclusively until the drop commits, so no one installs meanwhile).
fn drop_unwatched<'a>(
    pool: &'a PgPool,
    schema: &'a str,
    table: &'a str,
) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    async move {
        let mut tx = pool.begin().await?;
        // DROP TRIGGER waits for an exclusive lock on the table, and every
        // reader queues behind it: rather leave the trigger than stall
        // them behind a long transaction.
        sqlx::query("SET LOCAL lock_timeout = '2s'")
            .execute(tx.as_mut())
            .await?;
        if try_watch_lock_xact(tx.as_mut(), schema, table).await? {
            sqlx::query(&drop_trigger_ddl(schema, table))
                .execute(tx.as_mut())
                .await?;
        }
        tx.commit().await
    }
    .boxed()
}

/// Whether no session holds `schema.table`'s watch lock: the test
/// [`drop_unwatched`] makes before it drops the trigger, in a transaction
/// rolled back ([`crate::testing::watch_lock_free`]).
#[cfg(feature = "testing")]
pub(crate) async fn watch_lock_free(
    c: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = c.begin().await?;
    let free = try_watch_lock_xact(tx.as_mut(), schema, table).await?;
    tx.rollback().await?;
    Ok(free)
}

/// Takes `schema.table`'s watch lock exclusively until the transaction
/// ends, if no session holds it: whether it was free.
async fn try_watch_lock_xact(
    tx: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<bool, sqlx::Error> {
    let (free,): (bool,) = sqlx::query_as(&format!(
        "SELECT pg_try_advisory_xact_lock({WATCH_LOCK}, {WATCH_KEY})"
    ))
    .bind(format!("{schema}.{table}"))
    .fetch_one(tx)
    .await?;
    Ok(free)
}

fn take_watch_lock<'a>(
    c: &'a mut PgConnection,
    schema: &'a str,
    table: &'a str,
) -> BoxFuture<'a, DbResult<()>> {
    async move {
        sqlx::query(&format!(
            "SELECT pg_advisory_lock_shared({WATCH_LOCK}, {WATCH_KEY})"
        ))
        .bind(format!("{schema}.{table}"))
        .execute(c)
        .await
        .map_err(error::map)?;
        Ok(())
    }
    .boxed()
}

/// State shared by the provider, its listener and the subscriptions'
/// drop guards.
struct Shared {
    changes: ChangeFeed,
    channel: String,
    /// The schema the provider's tables live in (`current_schema()`).
    schema: OnceLock<String>,
    watch: tokio::sync::Mutex<Watch>,
}

impl Shared {
    fn schema(&self) -> DbResult<&str> {
        self.schema
            .get()
            .map(String::as_str)
            .ok_or_else(|| Error::unavailable("not connected; call connect() first"))
    }
}

/// The provider's side of the feed.
pub(crate) struct Feed {
    shared: Arc<Shared>,
    start: tokio::sync::Mutex<()>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Feed {
    pub(crate) fn new(changes: ChangeFeed, channel: String) -> Self {
        Feed {
            shared: Arc::new(Shared {
                changes,
                channel,
                schema: OnceLock::new(),
                watch: tokio::sync::Mutex::new(Watch::default()),
            }),
            start: tokio::sync::Mutex::new(()),
            task: Mutex::new(None),
        }
    }

    pub(crate) fn set_schema(&self, schema: String) {
        let _ = self.shared.schema.set(schema);
    }

    pub(crate) fn schema(&self) -> DbResult<&str> {
        self.shared.schema()
    }

    /// Whether some subscriber here watches `table` (or every table): a
    /// table created under that name gets its trigger as it is created
    /// (also one dropped and made again while watched).
    pub(crate) async fn watches(&self, table: &str) -> bool {
        self.shared.watch.lock().await.wanted(table)
    }

    /// A watched table was created, its trigger with it: take its watch
    /// lock.
    pub(crate) async fn created(&self, pool: &PgPool, table: &str) -> DbResult<()> {
        let schema = self.schema()?;
        let mut w = self.shared.watch.lock().await;
        if w.wanted(table) {
            w.hold(pool, schema, table, &self.shared.channel).await?;
        }
        Ok(())
    }

    /// Subscribes to `table` (or every table in `tables`, for `None`),
    /// starting the listener if it is not running and installing the
    /// triggers a table does not have yet. Dropping the stream
    /// unsubscribes; the last subscriber of a table takes its trigger away.
    pub(crate) async fn subscribe(
        &self,
        pool: &PgPool,
        table: Option<String>,
        tables: Vec<String>,
    ) -> DbResult<ChangeStream> {
        let shared = &self.shared;
        let schema = shared.schema()?.to_string();
        // Listen first, then install the triggers: no change between the
        // two is missed.
        let stream = shared.changes.subscribe(table.clone());
        self.start_listener(pool, &schema).await?;
        let guard = {
            let mut w = shared.watch.lock().await;
            w.stopped = false;
            match &table {
                Some(t) => *w.tables.entry(t.clone()).or_default() += 1,
                None => w.all += 1,
            }
            // From here on the drop guard undoes the count, also when
            // installing fails.
            let guard = Subscription {
                shared: Some(shared.clone()),
                pool: pool.clone(),
                table: table.clone(),
            };
            for t in &tables {
                w.hold(pool, &schema, t, &shared.channel).await?;
            }
            guard
        };
        Ok(ChangeStream::new(Guarded {
            inner: stream,
            _guard: guard,
        }))
    }

    async fn start_listener(&self, pool: &PgPool, schema: &str) -> DbResult<()> {
        let _guard = self.start.lock().await;
        let running = lock(&self.task).as_ref().is_some_and(|t| !t.is_finished());
        if running {
            return Ok(());
        }
        sqlx::raw_sql(&function_ddl(schema))
            .execute(pool)
            .await
            .map_err(error::map)?;
        let mut listener = PgListener::connect_with(pool).await.map_err(error::map)?;
        listener
            .listen(&self.shared.channel)
            .await
            .map_err(error::map)?;
        let task = tokio::spawn(listen(listener, pool.clone(), self.shared.clone()));
        *lock(&self.task) = Some(task);
        Ok(())
    }

    /// Stops the listener and lets go of the watch locks (disconnect,
    /// drop). Triggers stay until a later subscriber of their table leaves.
    pub(crate) fn stop(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
        if let Ok(mut w) = self.shared.watch.try_lock() {
            w.conn = None;
            w.held.clear();
        }
    }

    /// [`Feed::stop`] for a disconnect: waits for the listener task to end
    /// and for a subscriber still using the watch connection (a
    /// subscription dropped just before), so that no connection of the
    /// feed is left open when this returns.
    pub(crate) async fn stop_and_wait(&self) {
        let task = lock(&self.task).take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
        let mut w = self.shared.watch.lock().await;
        w.stopped = true;
        if let Some(c) = w.conn.take() {
            let _ = sqlx::Connection::close(c).await;
        }
        w.held.clear();
    }
}

/// A subscriber's stream, with the guard that unsubscribes on drop.
struct Guarded {
    inner: ChangeStream,
    _guard: Subscription,
}

impl futures::Stream for Guarded {
    type Item = DbResult<RowChange>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// One subscription's hold on its table(s); dropping it counts the
/// subscriber out and lets go of tables nobody here watches any more.
struct Subscription {
    shared: Option<Arc<Shared>>,
    pool: PgPool,
    table: Option<String>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let pool = self.pool.clone();
        let table = self.table.take();
        let release = async move {
            let Ok(schema) = shared.schema().map(str::to_string) else {
                return;
            };
            let mut w = shared.watch.lock().await;
            if w.stopped {
                return;
            }
            let gone: Vec<String> = match &table {
                Some(t) => {
                    if let Some(n) = w.tables.get_mut(t) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            w.tables.remove(t);
                        }
                    }
                    vec![t.clone()]
                }
                None => {
                    w.all = w.all.saturating_sub(1);
                    w.held.iter().cloned().collect()
                }
            };
            for t in gone {
                if !w.wanted(&t) {
                    w.let_go(&pool, &schema, &t).await;
                }
            }
        };
        // Without a runtime (dropped at shutdown) the locks go with the
        // connection, and the triggers stay for the next subscriber.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(release);
        }
    }
}

/// The listener task: notifications in, changes out, gaps reported.
async fn listen(mut listener: PgListener, pool: PgPool, shared: Arc<Shared>) {
    let changes = &shared.changes;
    let Ok(schema) = shared.schema().map(str::to_string) else {
        return;
    };
    let mut schemas: HashMap<String, TableSchema> = HashMap::new();
    let mut down = false;
    let mut resync: Option<JoinHandle<()>> = None;
    let mut last_seq: Option<i64> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                down = false;
                backoff = Duration::from_millis(100);
                let v: Value = match serde_json::from_str(n.payload()) {
                    Ok(v) => v,
                    Err(_) => {
                        changes.publish_gap("a change notification was not JSON and was lost");
                        continue;
                    }
                };
                // Other schemas' triggers may share the channel.
                if v.get("schema").and_then(Value::as_str) != Some(schema.as_str()) {
                    continue;
                }
                if let Some(seq) = v.get("seq").and_then(Value::as_i64) {
                    if let Some(lost) = last_seq.and_then(|l| lost_between(l, seq)) {
                        changes.publish_gap(format!(
                            "{lost} row change(s) before this one never reached the change feed \
                             (sequence {} to {}): re-read the data you need",
                            seq - lost,
                            seq - 1
                        ));
                    }
                    last_seq = Some(last_seq.map_or(seq, |l| l.max(seq)));
                }
                match read_change(&pool, &mut schemas, v).await {
                    Ok(change) => changes.publish([change]),
                    Err(e) => changes
                        .publish_gap(format!("a row change could not be read and was lost: {e}")),
                }
            }
            // The connection dropped; the next call reconnects and listens
            // again.
            Ok(None) => {
                if !down {
                    down = true;
                    last_seq = None;
                    if resync.as_ref().is_none_or(JoinHandle::is_finished) {
                        resync = Some(tokio::spawn(resync_when_back(pool.clone(), shared.clone())));
                    }
                    changes.publish_gap(
                        "the change feed's connection to PostgreSQL was lost; changes until it \
                         is back are not delivered: re-read the data you need",
                    );
                }
            }
            Err(e) => {
                if !down {
                    down = true;
                    last_seq = None;
                    if resync.as_ref().is_none_or(JoinHandle::is_finished) {
                        resync = Some(tokio::spawn(resync_when_back(pool.clone(), shared.clone())));
                    }
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

/// After the listener lost its connection: re-takes the watch locks and
/// puts the triggers back once the server answers (retrying with backoff;
/// gives up when the pool is closed).
async fn resync_when_back(pool: PgPool, shared: Arc<Shared>) {
    let Ok(schema) = shared.schema().map(str::to_string) else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    while !pool.is_closed() {
        tokio::time::sleep(backoff).await;
        let mut w = shared.watch.lock().await;
        if w.resync(&pool, &schema, &shared.channel).await.is_ok() {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// How many numbered changes were skipped between the last one seen and
/// `seq` (`None` when none were).
fn lost_between(last: i64, seq: i64) -> Option<i64> {
    let lost = seq.checked_sub(last)?.checked_sub(1)?;
    (lost > 0).then_some(lost)
}

/// Turns one notification of our schema into a change.
async fn read_change(
    pool: &PgPool,
    schemas: &mut HashMap<String, TableSchema>,
    mut v: Value,
) -> DbResult<RowChange> {
    if let Some(id) = v.get("ref").and_then(Value::as_i64) {
        let overflow = ident::quote(OVERFLOW_TABLE);
        let body: Option<(String,)> =
            sqlx::query_as(&format!("SELECT payload FROM {overflow} WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(error::map)?;
        let (body,) = body.ok_or_else(|| {
            Error::unavailable(format!(
                "its stored copy was pruned first (the change table keeps the last \
                 {OVERFLOW_KEEP} large changes, ten minutes at most)"
            ))
        })?;
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
    Ok(RowChange {
        table,
        kind,
        key,
        old,
        new,
        committed_at,
    })
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
