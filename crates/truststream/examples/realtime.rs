//! Realtime on the embedded default (the in-process hub, fed by the
//! database's change feed): a broadcast between two members, presence, and
//! a subscription to one row's changes.
//!
//! ```sh
//! cargo run -p truststream --example realtime
//! ```
//!
//! With `realtime.type = "ws"` the same calls go through the WebSocket hub
//! that `@supabase/realtime-js` front ends connect to.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use truststream::db::to_row;
use truststream::prelude::*;
use truststream::realtime::PresenceEvent;
use truststream::ConfigSources;

/// What the run received.
#[derive(Debug)]
pub struct Report {
    /// The payload the second member received on `score`.
    pub broadcast: serde_json::Value,
    /// Presence keys the second member saw join.
    pub joined: Vec<String>,
    /// The `score` values of the row's changes, in order.
    pub row_changes: Vec<serde_json::Value>,
}

/// Waits for the next value from a handler, or fails after 5 s.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| Error::internal(format!("no {what} within 5 s")))
}

/// Runs the realtime calls against the runtime's realtime and database.
pub async fn run(runtime: &Runtime) -> Result<Report> {
    let realtime = runtime.realtime();
    let db = runtime.db();

    // Two members of one channel: what one sends, the other receives.
    let alice = realtime
        .channel("room:lobby", ChannelOptions::new().presence_key("alice"))
        .await?;
    let bob = realtime
        .channel("room:lobby", ChannelOptions::new().presence_key("bob"))
        .await?;
    let (tx, mut messages) = mpsc::unbounded_channel();
    let _on_score = bob.on(
        "score",
        handler(move |m: truststream::realtime::Message| {
            let _ = tx.send(m.payload);
        }),
    );
    let (tx, mut presence) = mpsc::unbounded_channel();
    let _on_presence = bob.on_presence(handler(move |e: PresenceEvent| {
        if let PresenceEvent::Diff(diff) = e {
            for key in diff.joins.keys() {
                let _ = tx.send(key.clone());
            }
        }
    }));
    bob.join().await?;
    alice.join().await?;
    alice.track(json!({ "status": "online" })).await?;
    alice
        .send("score", json!({ "agent": "ada", "score": 97 }))
        .await?;
    let broadcast = next(&mut messages, "broadcast").await?;
    let joined = vec![next(&mut presence, "presence join").await?];

    // One row's committed changes, as they happen.
    db.create_table(
        &TableSchema::new("scores")
            .if_not_exists()
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::integer("score").not_null()),
    )
    .await?;
    db.create("scores", to_row(&json!({ "id": "ada", "score": 90 }))?)
        .await?;
    let (tx, mut changes) = mpsc::unbounded_channel();
    let _on_row = realtime
        .subscribe_to_row(
            "scores",
            Value::from("ada"),
            handler(move |c: truststream::realtime::RowChange| {
                let _ = tx.send(c.new.and_then(|row| row.get("score").cloned()));
            }),
        )
        .await?;
    for score in [95, 97] {
        db.update(
            "scores",
            &Value::from("ada"),
            to_row(&json!({ "score": score }))?,
        )
        .await?;
    }
    let mut row_changes = Vec::new();
    for _ in 0..2 {
        row_changes.push(next(&mut changes, "row change").await?.unwrap_or_default());
    }
    Ok(Report {
        broadcast,
        joined,
        row_changes,
    })
}

/// The embedded default (SQLite under `dir`, the in-process hub).
pub async fn embedded_runtime(dir: &Path) -> Result<Runtime> {
    let toml = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n",
        dir.join("app.db"),
    );
    let config = ConfigSources::new().toml_str(&toml).load()?;
    Runtime::builder().config(config).build().await
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
    let runtime = embedded_runtime(dir.path()).await?;
    let r = run(&runtime).await?;
    println!("bob received {}", r.broadcast);
    println!("bob saw {:?} join", r.joined);
    println!("scores of ada, as they changed: {:?}", r.row_changes);
    Ok(())
}
