//! The README's agents service, end to end, on the embedded default
//! (SQLite): a schema, typed rows, filtered reads, keyset pages, a
//! transaction of several operations and a bulk insert.
//!
//! ```sh
//! cargo run -p truststream --example agents
//! ```
//!
//! It works in a temporary directory; point `database.path` at a file of
//! your own (or set `TRUSTSTREAM_DATABASE__TYPE=postgres` and `..__URL`)
//! and nothing else changes.

use std::path::Path;

use serde::{Deserialize, Serialize};
use truststream::db::to_row;
use truststream::prelude::*;
use truststream::ConfigSources;

/// One row of `agents`, typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Primary key.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `active`, `idle` or `retired`.
    pub status: String,
    /// Trust score.
    pub score: i64,
}

/// What the run found, for `main` to print and the tests to check.
#[derive(Debug)]
pub struct Report {
    /// The three best active agents, best first.
    pub top: Vec<Agent>,
    /// Every active agent's id, in id order, read 10 to a page.
    pub active_ids: Vec<String>,
    /// How many pages that took.
    pub pages: usize,
    /// The agents left after the transaction, by status.
    pub by_status: Vec<(String, usize)>,
}

/// The table the service needs.
pub fn agents_table() -> TableSchema {
    TableSchema::new("agents")
        .if_not_exists()
        .column(ColumnDef::text("id").primary_key())
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::text("status").not_null())
        .column(ColumnDef::integer("score").not_null())
}

/// Runs the service's calls against the runtime's database.
pub async fn run(runtime: &Runtime) -> Result<Report> {
    let db = runtime.db();
    db.create_table(&agents_table()).await?;

    // A bulk insert: typed rows in, the stored rows back, typed.
    let agents: Vec<Agent> = (0..25)
        .map(|i| Agent {
            id: format!("agent-{i:02}"),
            name: format!("Agent {i}"),
            status: if i % 3 == 0 { "idle" } else { "active" }.to_string(),
            score: i,
        })
        .collect();
    let created: Vec<Agent> = db.create_many_as("agents", &agents).await?;
    assert_eq!(created, agents);

    // A filtered, ordered read.
    let q = Query::new()
        .filter(col("status").eq("active"))
        .order_by_desc("score")
        .limit(3);
    let top: Vec<Agent> = db.read_as("agents", &q).await?;

    // Keyset pages: the order ends in the primary key, each page starts
    // after the last row of the one before (no skipped or repeated rows
    // when others write in between, unlike offsets).
    let q = Query::new()
        .filter(col("status").eq("active"))
        .order_by_asc("id");
    let (mut active_ids, mut pages, mut cursor) = (Vec::new(), 0, None);
    loop {
        let page = db
            .read_page_as::<Agent>("agents", &q, 10, cursor.as_deref())
            .await?;
        pages += 1;
        active_ids.extend(page.items.into_iter().map(|a| a.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }

    // Several writes that commit together or not at all.
    let newcomer = Agent {
        id: "agent-99".into(),
        name: "Newcomer".into(),
        status: "active".into(),
        score: 0,
    };
    db.transaction(vec![
        Operation::UpdateMany {
            table: "agents".into(),
            filter: col("status").eq("idle"),
            data: to_row(&serde_json::json!({ "status": "retired" }))?,
        },
        Operation::Delete {
            table: "agents".into(),
            id: Value::from("agent-01"),
        },
        Operation::Create {
            table: "agents".into(),
            data: to_row(&newcomer)?,
        },
    ])
    .await?;

    let mut by_status = Vec::new();
    for status in ["active", "idle", "retired"] {
        let rows = db
            .read("agents", &Query::new().filter(col("status").eq(status)))
            .await?;
        by_status.push((status.to_string(), rows.len()));
    }
    Ok(Report {
        top,
        active_ids,
        pages,
        by_status,
    })
}

/// The embedded default's database, kept under `dir`.
pub async fn embedded_runtime(dir: &Path) -> Result<Runtime> {
    let toml = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n",
        dir.join("agents.db")
    );
    let config = ConfigSources::new().toml_str(&toml).load()?;
    Runtime::builder().config(config).build().await
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
    let runtime = embedded_runtime(dir.path()).await?;
    let report = run(&runtime).await?;
    println!("top agents:");
    for a in &report.top {
        println!("  {} ({}) score {}", a.name, a.id, a.score);
    }
    println!(
        "{} active agents in {} pages",
        report.active_ids.len(),
        report.pages
    );
    for (status, n) in &report.by_status {
        println!("{status}: {n}");
    }
    Ok(())
}
