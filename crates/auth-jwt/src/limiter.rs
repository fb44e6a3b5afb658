//! The failed sign-in limit per account: counted in this process's memory
//! (the default) or in a table of the configured database, shared by every
//! process that uses it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use truststream_core_auth::{AuthResult, Error, ErrorKind};
use truststream_core_db::{and, col, ColumnDef, Database, DatabaseExt, TableSchema};

use crate::config::{FailureStore, SignInRateLimit};

/// Compare-and-set attempts of one increment before giving up (each lost
/// attempt means another process's increment won, so this is only reached
/// under a flood of concurrent failures for one account).
const MAX_CAS_ATTEMPTS: usize = 32;

/// Every this many recorded failures, rows whose window has passed are
/// deleted (so the table holds about the accounts failing right now).
const PRUNE_EVERY: u64 = 64;

/// Counts failed sign-ins per account key (the normalized email).
pub(crate) enum Limiter {
    /// Off (`max_failures = 0`).
    Off,
    /// In memory, per provider instance.
    Process {
        max: u32,
        failures: moka::sync::Cache<String, Arc<AtomicU32>>,
    },
    /// In a database table, per database.
    Database(DbCounter),
}

/// The shared counter table: `id` (SHA-256 of the key, hex: the table
/// holds no email), `failures`, `window_start_ms` (Unix ms of the window's
/// first failure).
pub(crate) struct DbCounter {
    db: Arc<dyn Database>,
    table: String,
    max: u32,
    window_ms: i64,
    recorded: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct CounterRow {
    id: String,
    failures: i64,
    window_start_ms: i64,
}

impl Limiter {
    /// The limiter `cfg` asks for; the database one creates its table on
    /// `db` when missing.
    pub(crate) async fn new(
        cfg: &SignInRateLimit,
        db: &Arc<dyn Database>,
        table_prefix: &str,
        create: bool,
    ) -> AuthResult<Self> {
        if cfg.max_failures == 0 {
            return Ok(Limiter::Off);
        }
        Ok(match cfg.store {
            FailureStore::Process => Limiter::Process {
                max: cfg.max_failures,
                failures: moka::sync::Cache::builder()
                    .max_capacity(cfg.max_tracked.max(1))
                    .time_to_live(Duration::from_secs(cfg.window_secs.max(1)))
                    .build(),
            },
            FailureStore::Database => {
                let table = table_name(table_prefix);
                if create {
                    db.create_table(
                        &TableSchema::new(&table)
                            .column(ColumnDef::text("id").primary_key())
                            .column(ColumnDef::integer("failures").not_null())
                            .column(ColumnDef::integer("window_start_ms").not_null())
                            .if_not_exists(),
                    )
                    .await
                    .map_err(|e| e.with_operation("auth.create_tables"))?;
                }
                Limiter::Database(DbCounter {
                    db: db.clone(),
                    table,
                    max: cfg.max_failures,
                    window_ms: i64::try_from(cfg.window_secs.saturating_mul(1000))
                        .unwrap_or(i64::MAX),
                    recorded: AtomicU64::new(0),
                })
            }
        })
    }

    /// The counter table, when failures are kept in the database.
    pub(crate) fn table(&self) -> Option<&str> {
        match self {
            Limiter::Database(c) => Some(&c.table),
            _ => None,
        }
    }

    /// Whether `key` has used up its failures in the current window.
    pub(crate) async fn limited(&self, key: &str) -> AuthResult<bool> {
        match self {
            Limiter::Off => Ok(false),
            Limiter::Process { max, failures } => Ok(failures
                .get(key)
                .is_some_and(|c| c.load(Ordering::Relaxed) >= *max)),
            Limiter::Database(c) => c.limited(key).await,
        }
    }

    /// Counts one failed sign-in of `key`.
    pub(crate) async fn record_failure(&self, key: &str) -> AuthResult<()> {
        match self {
            Limiter::Off => Ok(()),
            Limiter::Process { failures, .. } => {
                failures
                    .get_with(key.to_string(), || Arc::new(AtomicU32::new(0)))
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Limiter::Database(c) => c.record(key).await,
        }
    }

    /// Forgets `key`'s failures (after a successful sign-in).
    pub(crate) async fn clear(&self, key: &str) -> AuthResult<()> {
        match self {
            Limiter::Off => Ok(()),
            Limiter::Process { failures, .. } => {
                failures.invalidate(key);
                Ok(())
            }
            Limiter::Database(c) => {
                c.db.delete(&c.table, &json!(row_id(key)))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.with_operation("auth.sign_in"))
            }
        }
    }
}

/// The counter table's name for `prefix`.
pub(crate) fn table_name(prefix: &str) -> String {
    format!("{prefix}sign_in_failures")
}

fn row_id(key: &str) -> String {
    crate::refresh::sha256_hex(key.as_bytes())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl DbCounter {
    async fn row(&self, id: &str) -> AuthResult<Option<CounterRow>> {
        self.db
            .get_as(&self.table, &json!(id))
            .await
            .map_err(|e| e.with_operation("auth.sign_in"))
    }

    async fn limited(&self, key: &str) -> AuthResult<bool> {
        Ok(self.row(&row_id(key)).await?.is_some_and(|r| {
            now_ms().saturating_sub(r.window_start_ms) < self.window_ms
                && r.failures >= i64::from(self.max)
        }))
    }

    /// Adds one failure: a compare-and-set on (`failures`,
    /// `window_start_ms`) as read, so concurrent increments from any
    /// number of processes each land exactly once; a window that has
    /// passed starts again at 1.
    async fn record(&self, key: &str) -> AuthResult<()> {
        let op = "auth.sign_in";
        let id = row_id(key);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let now = now_ms();
            match self.row(&id).await? {
                None => {
                    let row = truststream_core_db::to_row(&CounterRow {
                        id: id.clone(),
                        failures: 1,
                        window_start_ms: now,
                    })?;
                    match self.db.create(&self.table, row).await {
                        Ok(_) => {
                            self.maybe_prune(now).await;
                            return Ok(());
                        }
                        // Another process created it first: count on it.
                        Err(e) if e.kind() == ErrorKind::Conflict => continue,
                        Err(e) => return Err(e.with_operation(op)),
                    }
                }
                Some(r) => {
                    let (failures, start) =
                        if now.saturating_sub(r.window_start_ms) >= self.window_ms {
                            (1, now)
                        } else {
                            (r.failures.saturating_add(1), r.window_start_ms)
                        };
                    let mut patch = Map::new();
                    patch.insert("failures".into(), json!(failures));
                    patch.insert("window_start_ms".into(), json!(start));
                    let n = self
                        .db
                        .update_many(
                            &self.table,
                            &and([
                                col("id").eq(id.as_str()),
                                col("failures").eq(r.failures),
                                col("window_start_ms").eq(r.window_start_ms),
                            ]),
                            patch,
                        )
                        .await
                        .map_err(|e| e.with_operation(op))?;
                    if n == 1 {
                        self.maybe_prune(now).await;
                        return Ok(());
                    }
                }
            }
        }
        Err(Error::unavailable(
            "too many concurrent sign-in failures for one account to count; try again",
        )
        .with_operation(op))
    }

    /// Deletes rows whose window has passed, every [`PRUNE_EVERY`]
    /// failures. A failed prune only leaves rows for the next one.
    async fn maybe_prune(&self, now: i64) {
        if self.recorded.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY != PRUNE_EVERY - 1 {
            return;
        }
        let before = now.saturating_sub(self.window_ms);
        if let Err(e) = self
            .db
            .delete_many(&self.table, &col("window_start_ms").lt(before))
            .await
        {
            tracing::warn!(error = %e, "pruning expired sign-in failure counters failed");
        }
    }
}
