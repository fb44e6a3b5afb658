//! Capabilities that tell the truth: one case per flag that gates a call.
//!
//! Each case makes the call the flag is about. A provider that reports the
//! flag `true` must serve it; one that reports `false` must answer
//! [`ErrorKind::Unsupported`] and change nothing. The cases run whatever the
//! flag says (a skip would let a provider that reports `false` and then does
//! the work anyway, or half of it, pass). `change_feed_scope`,
//! `sql_dialect` and `max_bind_params` describe the flagged feature rather
//! than gate a call: they are checked beside their flag.

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_db::{
    AggFunc, ColumnDef, IndexSpec, Operation, Params, Query, SelectItem, TableSchema,
};

use super::{add, agents, metrics, row, s, Db};
use crate::{ensure, ensure_eq, expect_kind, CaseResult};

/// The names of the agents, sorted.
async fn names(db: &Db) -> Result<Vec<String>, crate::Failure> {
    let mut n: Vec<String> = db
        .read("agents", &Query::new())
        .await?
        .iter()
        .map(|r| s(r, "name"))
        .collect();
    n.sort();
    Ok(n)
}

/// `transaction` runs the operations, or is `Unsupported` and applies none.
pub(super) async fn transactions(db: Db) -> CaseResult {
    agents(&db).await?;
    let ops = vec![
        Operation::Create {
            table: "agents".into(),
            data: row(json!({"name": "tx-a"})),
        },
        Operation::Create {
            table: "agents".into(),
            data: row(json!({"name": "tx-b"})),
        },
    ];
    let r = db.transaction(ops).await;
    if db.capabilities().transactions {
        ensure_eq!(r?.len(), 2, "two outputs");
        ensure_eq!(names(&db).await?, ["tx-a", "tx-b"]);
    } else {
        expect_kind(
            r,
            ErrorKind::Unsupported,
            "transaction without transactions",
        )?;
        ensure_eq!(names(&db).await?, Vec::<String>::new(), "nothing applied");
    }
    Ok(())
}

/// `raw_query` runs SQL, or is `Unsupported` and runs nothing (a `DELETE`
/// leaves the row); `sql_dialect` is named exactly when raw SQL runs.
pub(super) async fn raw_sql(db: Db) -> CaseResult {
    agents(&db).await?;
    add(&db, json!({"name": "kept"})).await?;
    let caps = db.capabilities();
    if caps.raw_sql {
        let rows = db
            .raw_query("SELECT COUNT(*) AS n FROM agents", &Params::new())
            .await?;
        ensure_eq!(rows.len(), 1);
        ensure!(
            caps.sql_dialect.is_some(),
            "raw_sql providers name their dialect"
        );
    } else {
        expect_kind(
            db.raw_query("DELETE FROM agents", &Params::new()).await,
            ErrorKind::Unsupported,
            "raw_query without raw_sql",
        )?;
        ensure!(caps.sql_dialect.is_none(), "no dialect without raw_sql");
        ensure!(caps.max_bind_params.is_none(), "no bind limit without SQL");
    }
    ensure_eq!(names(&db).await?, ["kept"], "the row is still there");
    Ok(())
}

/// A query with a join is served, or `Unsupported`.
pub(super) async fn joins(db: Db) -> CaseResult {
    agents(&db).await?;
    metrics(&db).await?;
    add(&db, json!({"name": "joined"})).await?;
    let q = Query::new()
        .select(["agents.name", "agent_metrics.task_count"])
        .left_join("agent_metrics", "agents.id", "agent_metrics.agent_id");
    let r = db.read("agents", &q).await;
    if db.capabilities().joins {
        ensure_eq!(r?.len(), 1);
    } else {
        expect_kind(r, ErrorKind::Unsupported, "a join without joins")?;
    }
    Ok(())
}

/// A query with an aggregate is served, or `Unsupported`.
pub(super) async fn aggregates(db: Db) -> CaseResult {
    agents(&db).await?;
    add(&db, json!({"name": "counted"})).await?;
    let q = Query::new().select_item(SelectItem::aggregate(AggFunc::Count, None, "n"));
    let r = db.read("agents", &q).await;
    if db.capabilities().aggregates {
        let rows = r?;
        ensure_eq!(rows.len(), 1);
        ensure_eq!(rows[0].get("n").and_then(|v| v.as_i64()), Some(1));
    } else {
        expect_kind(r, ErrorKind::Unsupported, "an aggregate without aggregates")?;
    }
    Ok(())
}

/// Schema calls work, or each is `Unsupported` and no table appears.
pub(super) async fn schema(db: Db) -> CaseResult {
    let t = TableSchema::new("cap_schema")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("name"));
    let r = db.create_table(&t).await;
    if db.capabilities().schema {
        r?;
        db.create_index(&IndexSpec::new("cap_schema", ["name"]))
            .await?;
        db.drop_table("cap_schema", false).await?;
    } else {
        expect_kind(r, ErrorKind::Unsupported, "create_table without schema")?;
        expect_kind(
            db.read("cap_schema", &Query::new()).await,
            ErrorKind::NotFound,
            "no table was created",
        )?;
        expect_kind(
            db.create_index(&IndexSpec::new("cap_schema", ["name"]))
                .await,
            ErrorKind::Unsupported,
            "create_index without schema",
        )?;
        expect_kind(
            db.drop_table("cap_schema", true).await,
            ErrorKind::Unsupported,
            "drop_table without schema",
        )?;
    }
    Ok(())
}

/// `subscribe_changes` works, or is `Unsupported`; a scope is reported
/// exactly when there is a feed.
pub(super) async fn change_feed(db: Db) -> CaseResult {
    agents(&db).await?;
    let caps = db.capabilities();
    let r = db.subscribe_changes(Some("agents")).await;
    if caps.change_feed {
        r?;
        ensure!(caps.change_feed_scope.is_some(), "a feed names its scope");
    } else {
        expect_kind(
            r,
            ErrorKind::Unsupported,
            "subscribe_changes without change_feed",
        )?;
        ensure!(caps.change_feed_scope.is_none(), "no scope without a feed");
    }
    Ok(())
}

/// A unique column is enforced (a duplicate is `Conflict`), or declaring
/// one is `Unsupported` and no table appears: a provider must never accept
/// a unique constraint it will not keep.
pub(super) async fn unique_constraints(db: Db) -> CaseResult {
    let t = TableSchema::new("cap_unique")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("email").unique());
    let r = db.create_table(&t).await;
    if db.capabilities().unique_constraints {
        r?;
        db.create("cap_unique", row(json!({"id": 1, "email": "a@x"})))
            .await?;
        expect_kind(
            db.create("cap_unique", row(json!({"id": 2, "email": "a@x"})))
                .await,
            ErrorKind::Conflict,
            "a duplicate unique value",
        )?;
        ensure_eq!(db.read("cap_unique", &Query::new()).await?.len(), 1);
    } else {
        expect_kind(
            r,
            ErrorKind::Unsupported,
            "a unique column without unique_constraints",
        )?;
        expect_kind(
            db.read("cap_unique", &Query::new()).await,
            ErrorKind::NotFound,
            "no table was created",
        )?;
        agents(&db).await?;
        expect_kind(
            db.create_index(&IndexSpec::new("agents", ["name"]).unique())
                .await,
            ErrorKind::Unsupported,
            "a unique index without unique_constraints",
        )?;
    }
    Ok(())
}
