//! A fault-injecting layer placed below the layer under test, and a
//! database with one table.

#![allow(dead_code)] // each test file uses part of it

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use truststream_core::{BoxFuture, Error, Result};
use truststream_core_db::{ColumnDef, Database, Row, TableSchema, Value};
use truststream_db_memory::MemoryDatabase;
use truststream_layer::{around_database, Around, Next, Op};

/// What the fault layer does with one attempt.
pub enum Act {
    /// Lets it through to the provider.
    Pass,
    /// Answers this error without reaching the provider.
    Fail(Error),
    /// Waits, then lets it through.
    Slow(Duration),
    /// Waits, then answers this error.
    SlowFail(Duration, Error),
}

type Script = dyn Fn(u32, &Op<'_>) -> Act + Send + Sync;

/// Decides each attempt with `script(attempt number from 1, op)`; counts
/// the attempts it sees, those that reached the provider, and when each
/// attempt came.
pub struct Fault {
    script: Box<Script>,
    attempts: AtomicU32,
    reached: AtomicU32,
    times: Mutex<Vec<Instant>>,
}

impl Fault {
    pub fn new(script: impl Fn(u32, &Op<'_>) -> Act + Send + Sync + 'static) -> Arc<Fault> {
        Arc::new(Fault {
            script: Box::new(script),
            attempts: AtomicU32::new(0),
            reached: AtomicU32::new(0),
            times: Mutex::new(Vec::new()),
        })
    }

    /// Fails the first `n` attempts with `make()`, then lets calls through.
    pub fn first(n: u32, make: fn() -> Error) -> Arc<Fault> {
        Fault::new(move |i, _| if i <= n { Act::Fail(make()) } else { Act::Pass })
    }

    /// Fails every attempt with `make()`.
    pub fn always(make: fn() -> Error) -> Arc<Fault> {
        Fault::new(move |_, _| Act::Fail(make()))
    }

    /// Attempts seen.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Attempts that reached the provider.
    pub fn reached(&self) -> u32 {
        self.reached.load(Ordering::SeqCst)
    }

    /// When each attempt came.
    pub fn times(&self) -> Vec<Instant> {
        self.times.lock().unwrap().clone()
    }
}

impl Around for Fault {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        self.times.lock().unwrap().push(Instant::now());
        let act = (self.script)(n, &op);
        Box::pin(async move {
            match act {
                Act::Pass => {}
                Act::Fail(e) => return Err(e),
                Act::Slow(d) => tokio::time::sleep(d).await,
                Act::SlowFail(d, e) => {
                    tokio::time::sleep(d).await;
                    return Err(e);
                }
            }
            self.reached.fetch_add(1, Ordering::SeqCst);
            next.run().await
        })
    }
}

/// A memory database with the table `agents (id text primary key, name text)`.
pub async fn memory_db() -> Arc<dyn Database> {
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("name")),
    )
    .await
    .unwrap();
    db
}

/// `layer` over `fault` over `db`.
pub fn stacked<A: Around>(
    db: &Arc<dyn Database>,
    fault: &Arc<Fault>,
    layer: Arc<A>,
) -> Arc<dyn Database> {
    around_database(around_database(Arc::clone(db), Arc::clone(fault)), layer)
}

pub fn row(v: Value) -> Row {
    v.as_object().unwrap().clone()
}

pub fn agent(id: &str, name: &str) -> Row {
    row(json!({"id": id, "name": name}))
}

/// The rows of `agents`, read without layers.
pub async fn agents(db: &Arc<dyn Database>) -> Vec<Row> {
    db.read("agents", &Default::default()).await.unwrap()
}
