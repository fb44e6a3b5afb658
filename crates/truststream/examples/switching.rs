//! Switching a provider while the application runs: start on the
//! in-memory database (tests, demos), move to SQLite, and see a refused
//! switch leave everything as it was.
//!
//! ```sh
//! cargo run -p truststream --example switching
//! ```
//!
//! Code that asks the runtime for `db()` per request follows the switch; a
//! handle taken before it keeps the old provider until it is dropped.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use truststream::db::to_row;
use truststream::prelude::*;
use truststream::ConfigSources;

/// What the run saw.
#[derive(Debug)]
pub struct Report {
    /// The database provider's name before and after the switch.
    pub providers: (String, String),
    /// Rows in `notes` on the new database (it starts empty: a switch
    /// moves no data; `truststream migrate` does).
    pub rows_after_switch: usize,
    /// The error of a switch to a database that cannot be opened.
    pub refused: String,
    /// The provider still in place after the refused switch.
    pub still: String,
}

async fn write_note(db: &dyn Database, text: &str) -> Result<()> {
    db.create_table(
        &TableSchema::new("notes")
            .if_not_exists()
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("text")),
    )
    .await?;
    db.create("notes", to_row(&json!({ "id": text, "text": text }))?)
        .await?;
    Ok(())
}

/// Starts on memory, switches to SQLite under `dir`, then tries a bad switch.
pub async fn run(dir: &Path) -> Result<Report> {
    let config = ConfigSources::new()
        .toml_str("[default.database]\ntype = \"memory\"\n")
        .load()?;
    let runtime = Runtime::builder().config(config).build().await?;
    write_note(runtime.db().as_ref(), "kept in memory").await?;
    let before = runtime.db().info().name.to_string();

    let switch = runtime
        .switch_database("sqlite", json!({ "path": dir.join("notes.db") }))
        .await?;
    // Waits for calls still running on the old provider, then disconnects it.
    switch.close(Duration::from_secs(5)).await?;
    let after = runtime.db().info().name.to_string();
    write_note(runtime.db().as_ref(), "kept in SQLite").await?;
    let rows_after_switch = runtime.db().read("notes", &Query::new()).await?.len();

    // A provider that cannot start is refused; the current one stays.
    // (Its directory would be under a regular file.)
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a directory").map_err(|e| Error::internal(e.to_string()))?;
    let refused = match runtime
        .switch_database("sqlite", json!({ "path": file.join("notes.db") }))
        .await
    {
        Ok(_) => "accepted".to_string(),
        Err(e) => e.to_string(),
    };
    let still = runtime.db().info().name.to_string();
    Ok(Report {
        providers: (before, after),
        rows_after_switch,
        refused,
        still,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
    let r = run(dir.path()).await?;
    println!("database: {} -> {}", r.providers.0, r.providers.1);
    println!("rows in the new database: {}", r.rows_after_switch);
    println!("a bad switch: {}", r.refused);
    println!("still on: {}", r.still);
    Ok(())
}
