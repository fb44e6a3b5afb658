//! The database suite: every `core-db` provider runs these cases.
//!
//! The factory must return a fresh, empty, isolated database per case (a new
//! in-memory instance, a new schema, a new file); cases create the tables they
//! need, through [`Database::create_table`] (so they need the `schema`
//! capability). Cases use only the [`Database`] / [`DatabaseExt`] interface and
//! never assume row order without `order_by`.
//!
//! The tables are the usage guide's: `agents` (uuid key with a random default,
//! `status` defaulting to `'active'`, `created_at` defaulting to now, soft
//! delete through `deleted_at`), `agent_metrics` (auto-increment key) and
//! `resource_allocations` (a unique `allocation_key`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_db::{
    and, col, not, or, AggFunc, AlterTable, ChangeKind, ChangeStream, ColumnDef, ColumnDefault,
    Database, DatabaseExt, Filter, IndexSpec, NullsOrder, Operation, OperationOutput, Params,
    Query, Row, RowChange, SelectItem, SortDirection, TableSchema, Value,
};

use crate::harness::{run_cases, Case, Factory};

mod bulk;
mod capability;
mod describe;
mod foreign;
mod operators;
use crate::{ensure, ensure_eq, expect_kind, CaseResult, Failure, Report};

/// Builds a fresh database per case.
pub type DbFactory = Factory<Arc<dyn Database>>;

/// Runs the database suite against `provider` (a label for the report);
/// `only` keeps the cases whose name contains it.
pub async fn run(provider: &str, factory: DbFactory, only: Option<&str>) -> Report {
    run_cases(
        "database",
        provider,
        factory,
        &cases(),
        |db| serde_json::to_value(db.capabilities()).unwrap_or_default(),
        only,
    )
    .await
}

type Db = Arc<dyn Database>;

const SCHEMA: &[&str] = &["schema"];
const SCHEMA_TX: &[&str] = &["schema", "transactions"];
const SCHEMA_JOINS: &[&str] = &["schema", "joins"];
const SCHEMA_AGG: &[&str] = &["schema", "aggregates"];
const SCHEMA_FEED: &[&str] = &["schema", "change_feed"];

macro_rules! case {
    ($name:literal, $needs:expr, $f:path) => {
        Case {
            name: $name,
            needs: $needs,
            run: |db| Box::pin($f(db)),
        }
    };
}

/// Every case of the suite, in run order.
pub fn cases() -> Vec<Case<Arc<dyn Database>>> {
    vec![
        case!("health.healthy", &[], health_healthy),
        case!(
            "crud.create_returns_row_with_defaults",
            SCHEMA,
            crud_create_returns_row
        ),
        case!("crud.get_by_primary_key", SCHEMA, crud_get_by_primary_key),
        case!("crud.update_status", SCHEMA, crud_update_status),
        case!("crud.soft_delete", SCHEMA, crud_soft_delete),
        case!("crud.delete_by_primary_key", SCHEMA, crud_delete),
        case!("crud.typed_roundtrip", SCHEMA, crud_typed_roundtrip),
        case!("crud.auto_increment_keys", SCHEMA, crud_auto_increment),
        case!(
            "types.every_column_type_roundtrips",
            SCHEMA,
            types_every_column_type
        ),
        case!("query.active_agents", SCHEMA, query_active_agents),
        case!("query.comparison_operators", SCHEMA, query_comparisons),
        case!("query.in_and_not_in", SCHEMA, query_in_not_in),
        case!("query.like_and_ilike", SCHEMA, query_like_ilike),
        case!("query.null_semantics", SCHEMA, query_null_semantics),
        case!("query.and_or_not", SCHEMA, query_and_or_not),
        case!("query.order_nulls", SCHEMA, query_order_nulls),
        case!(
            "query.limit_and_offset_edges",
            SCHEMA,
            query_limit_offset_edges
        ),
        case!(
            "query.select_columns_and_aliases",
            SCHEMA,
            query_select_aliases
        ),
        case!("query.empty_results", SCHEMA, query_empty_results),
        case!(
            "query.timestamps_compare_as_times",
            SCHEMA,
            query_timestamps
        ),
        case!("join.left_join_metrics", SCHEMA_JOINS, join_left_metrics),
        case!("join.inner_join_drops_unmatched", SCHEMA_JOINS, join_inner),
        case!("join.table_aliases", SCHEMA_JOINS, join_aliases),
        case!(
            "join.ambiguous_and_duplicate_names_rejected",
            SCHEMA_JOINS,
            join_ambiguous
        ),
        case!(
            "aggregate.agent_statistics",
            SCHEMA_AGG,
            aggregate_statistics
        ),
        case!("aggregate.group_by", SCHEMA_AGG, aggregate_group_by),
        case!("aggregate.over_no_rows", SCHEMA_AGG, aggregate_no_rows),
        case!(
            "aggregate.raw_query_guide_sql",
            &["schema", "raw_sql"],
            aggregate_raw_sql
        ),
        case!("batch.create_many_1000", SCHEMA, batch_create_many_1000),
        case!(
            "batch.create_many_all_or_nothing",
            SCHEMA,
            batch_all_or_nothing
        ),
        case!(
            "batch.insert_many_stores_what_create_many_does",
            SCHEMA,
            bulk::insert_many_stores_what_create_many_does
        ),
        case!(
            "batch.insert_many_generated_keys",
            SCHEMA,
            bulk::insert_many_generated_keys
        ),
        case!(
            "batch.insert_many_all_or_nothing",
            SCHEMA,
            bulk::insert_many_all_or_nothing
        ),
        case!(
            "batch.update_many_and_delete_many",
            SCHEMA,
            batch_update_delete_many
        ),
        case!("tx.deploy_agent_with_resources", SCHEMA_TX, tx_commit),
        case!(
            "tx.rollback_when_second_operation_fails",
            SCHEMA_TX,
            tx_rollback
        ),
        case!("tx.mixed_operations", SCHEMA_TX, tx_mixed),
        case!("tx.update_checked", SCHEMA_TX, tx_update_checked),
        case!("tx.insert_many", SCHEMA_TX, tx_insert_many),
        case!(
            "page.cursor_every_row_once",
            SCHEMA,
            page_cursor_every_row_once
        ),
        case!(
            "page.cursor_stable_with_inserts",
            SCHEMA,
            page_cursor_stable
        ),
        case!("page.offset_pagination", SCHEMA, page_offset),
        case!("page.invalid_cursor_rejected", SCHEMA, page_invalid_cursor),
        case!("edge.missing_rows", SCHEMA, edge_missing_rows),
        case!("edge.duplicate_primary_key", SCHEMA, edge_duplicate_pk),
        case!("edge.duplicate_unique_value", SCHEMA, edge_duplicate_unique),
        case!(
            "edge.invalid_identifiers",
            SCHEMA_JOINS,
            edge_invalid_identifiers
        ),
        case!("edge.unknown_table_and_columns", SCHEMA, edge_unknown_names),
        case!("edge.wrong_value_types", SCHEMA, edge_wrong_types),
        case!("edge.not_null_violation", SCHEMA, edge_not_null),
        case!("edge.empty_patch_rejected", SCHEMA, edge_empty_patch),
        case!("edge.unicode_roundtrip", SCHEMA, edge_unicode),
        case!("edge.large_values", SCHEMA, edge_large_values),
        case!("edge.concurrent_creates", SCHEMA, edge_concurrent_creates),
        case!("edge.concurrent_updates", SCHEMA, edge_concurrent_updates),
        case!(
            "raw.one_statement_per_call",
            &["schema", "raw_sql"],
            raw_one_statement_per_call
        ),
        case!("schema.create_table_twice", SCHEMA, schema_create_twice),
        case!("schema.drop_table", SCHEMA, schema_drop_table),
        case!("schema.alter_table", SCHEMA, schema_alter_table),
        case!("schema.unique_index", SCHEMA, schema_unique_index),
        case!("schema.describe_table", SCHEMA, describe::describe_table),
        case!("schema.foreign_keys", SCHEMA, foreign::foreign_keys),
        case!(
            "changes.insert_update_delete",
            SCHEMA_FEED,
            changes_insert_update_delete
        ),
        case!("changes.table_filter", SCHEMA_FEED, changes_table_filter),
        case!(
            "changes.batch_and_transaction",
            &["schema", "change_feed", "transactions"],
            changes_batch_and_tx
        ),
        case!(
            "changes.nothing_on_rollback",
            &["schema", "change_feed", "transactions"],
            changes_rollback
        ),
        case!("capability.transactions", SCHEMA, capability::transactions),
        case!("capability.raw_sql", SCHEMA, capability::raw_sql),
        case!("capability.joins", SCHEMA, capability::joins),
        case!("capability.aggregates", SCHEMA, capability::aggregates),
        case!("capability.schema", &[], capability::schema),
        case!(
            "capability.add_foreign_keys",
            SCHEMA,
            bulk::add_foreign_keys
        ),
        case!("capability.change_feed", SCHEMA, capability::change_feed),
        case!(
            "capability.unique_constraints",
            SCHEMA,
            capability::unique_constraints
        ),
        case!(
            "query.json_containment",
            &["schema", "json_containment"],
            operators::json_containment
        ),
        case!(
            "query.full_text_search",
            &["schema", "full_text_search"],
            operators::full_text_search
        ),
        case!(
            "capability.json_containment",
            SCHEMA,
            operators::json_containment_flag
        ),
        case!(
            "capability.full_text_search",
            SCHEMA,
            operators::full_text_search_flag
        ),
    ]
}

// ---------------------------------------------------------------- helpers

/// A JSON object literal as a [`Row`].
fn row(v: Value) -> Row {
    match v {
        Value::Object(m) => m,
        _ => Row::new(),
    }
}

fn agents_schema() -> TableSchema {
    TableSchema::new("agents")
        .column(
            ColumnDef::uuid("id")
                .primary_key()
                .default(ColumnDefault::RandomUuid),
        )
        .column(ColumnDef::text("name").not_null())
        .column(ColumnDef::text("type"))
        .column(ColumnDef::text("status").not_null().default_value("active"))
        .column(ColumnDef::float("performance_score"))
        .column(
            ColumnDef::timestamp("created_at")
                .not_null()
                .default(ColumnDefault::Now),
        )
        .column(ColumnDef::timestamp("updated_at"))
        .column(ColumnDef::timestamp("deleted_at"))
}

async fn agents(db: &Db) -> CaseResult {
    db.create_table(&agents_schema()).await?;
    Ok(())
}

async fn metrics(db: &Db) -> CaseResult {
    db.create_table(
        &TableSchema::new("agent_metrics")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::uuid("agent_id"))
            .column(ColumnDef::float("performance_score"))
            .column(ColumnDef::integer("task_count"))
            .column(ColumnDef::float("success_rate")),
    )
    .await?;
    Ok(())
}

async fn allocations(db: &Db) -> CaseResult {
    db.create_table(
        &TableSchema::new("resource_allocations")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::uuid("agent_id").not_null())
            .column(ColumnDef::text("allocation_key").not_null().unique())
            .column(ColumnDef::integer("cpu_millis")),
    )
    .await?;
    Ok(())
}

/// Creates an agent from a JSON object and returns the stored row.
async fn add(db: &Db, v: Value) -> Result<Row, Failure> {
    Ok(db.create("agents", row(v)).await?)
}

fn s(r: &Row, k: &str) -> String {
    r.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn id_of(r: &Row) -> Value {
    r.get("id").cloned().unwrap_or(Value::Null)
}

/// Sorted values of `column` over `rows` as strings (for order-free checks).
fn names(rows: &[Row]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| s(r, "name")).collect();
    v.sort();
    v
}

fn ts(r: &Row, k: &str) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    let raw = s(r, k);
    chrono::DateTime::parse_from_rfc3339(&raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            Failure::new(format!(
                "column {k} = {raw:?} is not an RFC 3339 timestamp: {e}"
            ))
        })
}

/// Whether two floats are equal up to rounding.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn num(r: &Row, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::as_f64)
}

/// Seeds agents with names a..e and a spread of scores/statuses/types.
async fn seed_five(db: &Db) -> CaseResult {
    agents(db).await?;
    for v in [
        json!({"name": "alpha", "type": "AI_LEADER", "status": "active", "performance_score": 90.0}),
        json!({"name": "bravo", "type": "AI_WORKER", "status": "active", "performance_score": 75.5}),
        json!({"name": "charlie", "type": null, "status": "paused", "performance_score": 60.0}),
        json!({"name": "delta", "type": "AI_WORKER", "status": "retired"}),
        json!({"name": "Echo", "type": "ai_worker", "status": "active", "performance_score": 75.5}),
    ] {
        add(db, v).await?;
    }
    Ok(())
}

async fn read_names(db: &Db, f: Filter) -> Result<Vec<String>, Failure> {
    Ok(names(&db.read("agents", &Query::new().filter(f)).await?))
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn count_rows(db: &Db, table: &str) -> Result<usize, Failure> {
    Ok(db.read(table, &Query::new()).await?.len())
}

async fn next_change(stream: &mut ChangeStream) -> Result<RowChange, Failure> {
    match tokio::time::timeout(Duration::from_secs(5), stream.recv()).await {
        Ok(Some(Ok(c))) => Ok(c),
        Ok(Some(Err(e))) => Err(Failure::new(format!("change feed error: {e}"))),
        Ok(None) => Err(Failure::new("change feed ended")),
        Err(_) => Err(Failure::new("no change arrived within 5 s")),
    }
}

/// The guide's typed agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Agent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    agent_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    performance_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_at: Option<String>,
}

// ---------------------------------------------------------------- health, crud

async fn health_healthy(db: Db) -> CaseResult {
    let h = db.health().await;
    ensure!(h.is_healthy(), "health is {:?}", h);
    Ok(())
}

async fn crud_create_returns_row(db: Db) -> CaseResult {
    agents(&db).await?;
    let before = chrono::Utc::now() - chrono::Duration::seconds(60);
    let r = add(&db, json!({"name": "Test Agent", "type": "AI_LEADER"})).await?;
    let id = s(&r, "id");
    ensure!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "generated id {id:?} is not a UUID"
    );
    ensure_eq!(id, id.to_lowercase(), "uuid is lowercase");
    ensure_eq!(s(&r, "name"), "Test Agent");
    ensure_eq!(s(&r, "type"), "AI_LEADER");
    ensure_eq!(s(&r, "status"), "active", "status default");
    ensure!(ts(&r, "created_at")? > before, "created_at default is now");
    for c in ["performance_score", "updated_at", "deleted_at"] {
        ensure_eq!(r.get(c), Some(&Value::Null), "column {c} present and null");
    }
    let keys: Vec<&str> = r.keys().map(String::as_str).collect();
    ensure_eq!(
        keys,
        vec![
            "id",
            "name",
            "type",
            "status",
            "performance_score",
            "created_at",
            "updated_at",
            "deleted_at"
        ],
        "all columns in schema order"
    );
    let r2 = add(&db, json!({"name": "Second"})).await?;
    ensure!(s(&r2, "id") != id, "each row gets its own id");
    Ok(())
}

async fn crud_get_by_primary_key(db: Db) -> CaseResult {
    agents(&db).await?;
    let r = add(&db, json!({"name": "Getter", "performance_score": 12.5})).await?;
    let got = db.get("agents", &id_of(&r)).await?;
    ensure_eq!(got.as_ref(), Some(&r), "get returns the row as created");
    // Upper-case spelling of the same uuid finds it too.
    let upper = Value::String(s(&r, "id").to_uppercase());
    ensure!(
        db.get("agents", &upper).await?.is_some(),
        "uuid keys are case-insensitive"
    );
    Ok(())
}

async fn crud_update_status(db: Db) -> CaseResult {
    agents(&db).await?;
    let r = add(&db, json!({"name": "Updater"})).await?;
    let now = chrono::Utc::now().to_rfc3339();
    let u = db
        .update(
            "agents",
            &id_of(&r),
            row(json!({"status": "paused", "updated_at": now})),
        )
        .await?;
    ensure_eq!(s(&u, "status"), "paused");
    ensure_eq!(s(&u, "name"), "Updater", "other columns unchanged");
    ensure_eq!(u.get("id"), r.get("id"));
    ensure!(ts(&u, "updated_at").is_ok(), "updated_at set");
    let got = db
        .get("agents", &id_of(&r))
        .await?
        .ok_or("row vanished".to_string())?;
    ensure_eq!(got, u, "get sees the update");
    Ok(())
}

fn active_query() -> Query {
    Query::new()
        .filter(col("status").eq("active"))
        .filter(col("deleted_at").is_null())
        .order_by_desc("created_at")
        .limit(50)
}

async fn crud_soft_delete(db: Db) -> CaseResult {
    agents(&db).await?;
    let a = add(&db, json!({"name": "keeper"})).await?;
    let b = add(&db, json!({"name": "goner"})).await?;
    db.update(
        "agents",
        &id_of(&b),
        row(json!({"deleted_at": chrono::Utc::now().to_rfc3339()})),
    )
    .await?;
    let active = db.read("agents", &active_query()).await?;
    ensure_eq!(names(&active), strs(&["keeper"]));
    ensure_eq!(active[0].get("id"), a.get("id"));
    ensure!(
        db.get("agents", &id_of(&b)).await?.is_some(),
        "soft-deleted row still exists"
    );
    Ok(())
}

async fn crud_delete(db: Db) -> CaseResult {
    agents(&db).await?;
    let a = add(&db, json!({"name": "a"})).await?;
    let b = add(&db, json!({"name": "b"})).await?;
    ensure!(
        db.delete("agents", &id_of(&a)).await?,
        "delete returns true"
    );
    ensure!(
        db.get("agents", &id_of(&a)).await?.is_none(),
        "deleted row is gone"
    );
    ensure!(
        !db.delete("agents", &id_of(&a)).await?,
        "second delete returns false"
    );
    ensure!(
        db.get("agents", &id_of(&b)).await?.is_some(),
        "other row kept"
    );
    Ok(())
}

async fn crud_typed_roundtrip(db: Db) -> CaseResult {
    agents(&db).await?;
    let input = Agent {
        id: None,
        name: "Typed".into(),
        agent_type: Some("AI_LEADER".into()),
        status: None,
        performance_score: Some(88.25),
        created_at: None,
        updated_at: None,
        deleted_at: None,
    };
    let created: Agent = db.create_as("agents", &input).await?;
    let id = created
        .id
        .clone()
        .ok_or("created agent has no id".to_string())?;
    ensure_eq!(created.status.as_deref(), Some("active"));
    ensure_eq!(created.performance_score, Some(88.25));
    let got: Option<Agent> = db.get_as("agents", &json!(id)).await?;
    ensure_eq!(got.as_ref(), Some(&created));
    let list: Vec<Agent> = db.read_as("agents", &active_query()).await?;
    ensure_eq!(list, vec![created]);
    Ok(())
}

async fn crud_auto_increment(db: Db) -> CaseResult {
    metrics(&db).await?;
    let a = db
        .create("agent_metrics", row(json!({"task_count": 1})))
        .await?;
    let b = db
        .create("agent_metrics", row(json!({"task_count": 2})))
        .await?;
    let (ia, ib) = (
        a.get("id")
            .and_then(Value::as_i64)
            .ok_or("id not an integer".to_string())?,
        b.get("id")
            .and_then(Value::as_i64)
            .ok_or("id not an integer".to_string())?,
    );
    ensure!(ib > ia, "auto-increment ids grow: {ia} then {ib}");
    ensure!(db.get("agent_metrics", &json!(ib)).await?.is_some());
    Ok(())
}

/// Every column of the `typed` table as a caller's serde type.
#[derive(Debug, PartialEq, Deserialize)]
struct TypedRow {
    id: i64,
    t: Option<String>,
    i: Option<i64>,
    f: Option<f64>,
    b: Option<bool>,
    ts: Option<chrono::DateTime<chrono::Utc>>,
    u: Option<String>,
    j: Option<Value>,
    by: Option<String>,
    n: Option<f64>,
    created: chrono::DateTime<chrono::Utc>,
}

/// The typed reads (`get_as`, `read_as`, `read_one_as`: a provider may
/// deserialize them from its result set without a JSON object per row)
/// give what `serde_json::from_value` of the JSON rows gives: same values
/// (NULLs, unicode, big integers, JSON, bytes, timestamps), same column
/// order.
async fn typed_reads_match_json_rows(db: &Db, id: &Value) -> CaseResult {
    let all = Query::new().order_by("id", SortDirection::Asc);
    let rows = db.read("typed", &all).await?;
    ensure!(rows.len() >= 2, "the typed rows: {rows:?}");
    let from_json = |r: &Row| serde_json::from_value::<TypedRow>(Value::Object(r.clone()));
    let expected: Vec<TypedRow> = rows
        .iter()
        .map(from_json)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("from_value: {e}"))?;
    ensure_eq!(db.read_as::<TypedRow>("typed", &all).await?, expected);
    let as_values: Vec<Value> = db.read_as("typed", &all).await?;
    ensure_eq!(as_values.len(), rows.len());
    for (v, r) in as_values.iter().zip(&rows) {
        ensure_eq!(v, &Value::Object(r.clone()));
        let keys = v.as_object().map(|o| o.keys().collect::<Vec<_>>());
        ensure_eq!(keys, Some(r.keys().collect()), "column order");
    }
    let json_row = db.get("typed", id).await?.ok_or("no row".to_string())?;
    let one: Option<TypedRow> = db.get_as("typed", id).await?;
    ensure_eq!(one.as_ref(), expected.first());
    let value: Option<Value> = db.get_as("typed", id).await?;
    ensure_eq!(value, Some(Value::Object(json_row)));
    let first: Option<TypedRow> = db.read_one_as("typed", &all).await?;
    ensure_eq!(first.as_ref(), expected.first());
    let missing: Option<TypedRow> = db.get_as("typed", &json!(-1)).await?;
    ensure_eq!(missing, None);
    // A row that does not fit the type is InvalidInput naming it.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct NotNull {
        t: String,
    }
    expect_kind(
        db.read_as::<NotNull>("typed", &all).await,
        ErrorKind::InvalidInput,
        "read_as of a null into a String",
    )
}

/// `get_columns_set` / `get_columns_as`: the named columns of `get`'s row,
/// in the order asked, with the same values; every column for an empty
/// list; no row for a missing id; a list that is not plain, distinct,
/// known column names refused as `InvalidInput`, row or no row (where the
/// provider can describe tables).
async fn projected_gets_match_json_rows(db: &Db, id: &Value) -> CaseResult {
    let full = db.get("typed", id).await?.ok_or("no row".to_string())?;
    let lists: [&[&str]; 5] = [
        &["t", "i"],
        &["n", "created", "j", "id"],
        &["by"],
        &[
            "ts", "u", "b", "f", "i", "t", "j", "by", "n", "created", "id",
        ],
        &[],
    ];
    for round in 0..2 {
        for columns in lists {
            let got = db.get_columns_set("typed", id, columns).await?.into_rows();
            ensure_eq!(got.len(), 1, "{columns:?} (round {round})");
            let expected: Row = if columns.is_empty() {
                full.clone()
            } else {
                columns
                    .iter()
                    .map(|c| (c.to_string(), full.get(*c).cloned().unwrap_or(Value::Null)))
                    .collect()
            };
            ensure_eq!(got[0], expected, "{columns:?}");
            let keys: Vec<&String> = got[0].keys().collect();
            ensure_eq!(keys, expected.keys().collect::<Vec<_>>(), "column order");
        }
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct Some2 {
        n: Option<f64>,
        t: Option<String>,
    }
    let typed: Option<Some2> = db.get_columns_as("typed", id, &["n", "t"]).await?;
    let from_json = serde_json::from_value::<Some2>(json!({"n": full["n"], "t": full["t"]}))
        .map_err(|e| format!("from_value: {e}"))?;
    ensure_eq!(typed, Some(from_json));
    let all: Option<TypedRow> = db.get_columns_as("typed", id, &[]).await?;
    ensure_eq!(
        all,
        Some(serde_json::from_value(Value::Object(full)).map_err(|e| format!("{e}"))?)
    );
    let missing = json!(-1);
    ensure!(db
        .get_columns_set("typed", &missing, &["t"])
        .await?
        .is_empty());
    let none: Option<Some2> = db.get_columns_as("typed", &missing, &["n", "t"]).await?;
    ensure_eq!(none, None);
    let describes = db.describe_table("typed").await.is_ok();
    for bad in [
        &["nope"][..],
        &["t", "nope"],
        &["t", "t"],
        &["*"],
        &["typed.t"],
        &["t as x"],
        &["t\"; DROP TABLE typed; --"],
        &[""],
    ] {
        expect_kind(
            db.get_columns_set("typed", id, bad).await,
            ErrorKind::InvalidInput,
            &format!("get_columns_set {bad:?}"),
        )?;
        let unknown_only = bad == ["nope"] || bad == ["t", "nope"];
        if describes || !unknown_only {
            expect_kind(
                db.get_columns_set("typed", &missing, bad).await,
                ErrorKind::InvalidInput,
                &format!("get_columns_set {bad:?} of a missing row"),
            )?;
        }
    }
    // A missing table is NotFound, whatever the list.
    for list in [&["t"][..], &["*"]] {
        expect_kind(
            db.get_columns_set("no_such_table", id, list).await,
            ErrorKind::NotFound,
            &format!("get_columns_set of a missing table, {list:?}"),
        )?;
    }
    ensure!(db.get("typed", id).await?.is_some(), "the table is intact");
    Ok(())
}

/// The documented mapping between JSON values and column types: what goes
/// in comes back in one normalized form, from `create`, `get` and filters,
/// on every provider.
async fn types_every_column_type(db: Db) -> CaseResult {
    db.create_table(
        &TableSchema::new("typed")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("t"))
            .column(ColumnDef::integer("i"))
            .column(ColumnDef::float("f"))
            .column(ColumnDef::boolean("b"))
            .column(ColumnDef::timestamp("ts"))
            .column(ColumnDef::uuid("u").default(ColumnDefault::RandomUuid))
            .column(ColumnDef::json("j"))
            .column(ColumnDef::bytes("by"))
            .column(ColumnDef::numeric("n"))
            .column(ColumnDef::timestamp("created").default(ColumnDefault::Now)),
    )
    .await?;
    let input = json!({
        "t": "héllo 'quoted' \"x\" ; DROP TABLE typed; --",
        "i": -9_007_199_254_740_993_i64,
        "f": 1.5,
        "b": true,
        "ts": "2024-05-01T14:00:00.25+02:00",
        "u": "67E55044-10B1-426F-9247-BB680E5FE0C8",
        "j": {"a": [1, 2, {"b": null}], "s": "x"},
        "by": "AAEC/w==",
        "n": "12.5",
    });
    let created = db.create("typed", row(input)).await?;
    let expected = json!({
        "t": "héllo 'quoted' \"x\" ; DROP TABLE typed; --",
        "i": -9_007_199_254_740_993_i64,
        "f": 1.5,
        "b": true,
        "ts": "2024-05-01T12:00:00.250000Z",
        "u": "67e55044-10b1-426f-9247-bb680e5fe0c8",
        "j": {"a": [1, 2, {"b": null}], "s": "x"},
        "by": "AAEC/w==",
        "n": 12.5,
    });
    for (k, v) in expected.as_object().into_iter().flatten() {
        ensure_eq!(created.get(k), Some(v), "column {k}");
    }
    let stamp = created
        .get("created")
        .and_then(Value::as_str)
        .ok_or("created is not a string".to_string())?;
    ensure!(
        stamp.len() == "2024-05-01T12:00:00.000000Z".len() && stamp.ends_with('Z'),
        "now default in the documented form: {stamp}"
    );
    let u = created
        .get("u")
        .and_then(Value::as_str)
        .ok_or("u is not a string".to_string())?;
    ensure!(u.len() == 36, "uuid in hyphenated form: {u}");
    let id = created.get("id").cloned().unwrap_or(Value::Null);
    let got = db.get("typed", &id).await?;
    ensure_eq!(got.as_ref(), Some(&created));
    // Filters on typed columns take the same (unnormalized) forms.
    for f in [
        col("b").eq(true),
        col("ts").eq("2024-05-01T12:00:00.25Z"),
        col("ts").gt("2024-05-01"),
        col("u").eq("67E55044-10B1-426F-9247-BB680E5FE0C8"),
        col("by").eq("AAEC/w=="),
        col("f").gt(1),
        col("i").lt(0),
        col("n").eq(12.5),
        col("j").eq(json!({"a": [1, 2, {"b": null}], "s": "x"})),
    ] {
        let rows = db.read("typed", &Query::new().filter(f.clone())).await?;
        ensure_eq!(rows.len(), 1, "filter {f:?}");
    }
    // Null in every nullable column.
    let nulls = db
        .create(
            "typed",
            row(
                json!({"t": null, "i": null, "f": null, "b": null, "ts": null,
                       "u": null, "j": null, "by": null, "n": null}),
            ),
        )
        .await?;
    for k in ["t", "i", "f", "b", "ts", "u", "j", "by", "n"] {
        ensure_eq!(nulls.get(k), Some(&Value::Null), "column {k}");
    }
    typed_reads_match_json_rows(&db, &id).await?;
    projected_gets_match_json_rows(&db, &id).await?;
    // Wrong types are InvalidInput naming the column.
    for (k, v) in [
        ("i", json!("five")),
        ("i", json!(1.5)),
        ("b", json!(1)),
        ("ts", json!("yesterday")),
        ("u", json!("not-a-uuid")),
        ("by", json!("***")),
        ("n", json!("1,5")),
    ] {
        let mut r = Row::new();
        r.insert(k.to_string(), v.clone());
        match db.create("typed", r).await {
            Err(e) if e.kind() == ErrorKind::InvalidInput => {
                ensure!(e.message().contains(k), "message names column {k}: {e}");
            }
            other => {
                return Err(Failure::new(format!(
                    "column {k} = {v}: expected InvalidInput, got {other:?}"
                )))
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- query

async fn query_active_agents(db: Db) -> CaseResult {
    agents(&db).await?;
    for i in 0..60 {
        let status = if i % 3 == 0 { "inactive" } else { "active" };
        let created = format!("2024-01-01T00:{:02}:00Z", i);
        let mut v =
            json!({"name": format!("agent-{i:02}"), "status": status, "created_at": created});
        if i % 10 == 1 {
            v["deleted_at"] = json!("2024-02-01T00:00:00Z");
        }
        add(&db, v).await?;
    }
    let rows = db.read("agents", &active_query()).await?;
    // 40 active, of which i%10==1 and i%3!=0 are deleted: 1, 11, 31, 41 -> 36.
    ensure_eq!(rows.len(), 36, "active, not deleted");
    for r in &rows {
        ensure_eq!(s(r, "status"), "active");
        ensure_eq!(r.get("deleted_at"), Some(&Value::Null));
    }
    for w in rows.windows(2) {
        ensure!(
            ts(&w[0], "created_at")? > ts(&w[1], "created_at")?,
            "created_at descending"
        );
    }
    ensure_eq!(s(&rows[0], "name"), "agent-59");
    let limited = db.read("agents", &active_query().limit(5)).await?;
    ensure_eq!(limited.len(), 5, "limit");
    Ok(())
}

async fn query_comparisons(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let f = |f: Filter| read_names(&db, f);
    ensure_eq!(
        f(col("performance_score").eq(75.5)).await?,
        strs(&["Echo", "bravo"])
    );
    ensure_eq!(
        f(col("performance_score").eq(90)).await?,
        strs(&["alpha"]),
        "integer literal on float column"
    );
    ensure_eq!(
        f(col("performance_score").ne(75.5)).await?,
        strs(&["alpha", "charlie"]),
        "ne skips nulls"
    );
    ensure_eq!(
        f(col("performance_score").gt(75.5)).await?,
        strs(&["alpha"])
    );
    ensure_eq!(
        f(col("performance_score").gte(75.5)).await?,
        strs(&["Echo", "alpha", "bravo"])
    );
    ensure_eq!(
        f(col("performance_score").lt(75.5)).await?,
        strs(&["charlie"])
    );
    ensure_eq!(
        f(col("performance_score").lte(75.5)).await?,
        strs(&["Echo", "bravo", "charlie"])
    );
    ensure_eq!(
        f(col("name").gt("charlie")).await?,
        strs(&["delta"]),
        "text compares by bytes"
    );
    ensure_eq!(f(col("name").eq("alpha")).await?, strs(&["alpha"]));
    Ok(())
}

async fn query_in_not_in(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let f = |f: Filter| read_names(&db, f);
    ensure_eq!(
        f(col("status").is_in(["paused", "retired"])).await?,
        strs(&["charlie", "delta"])
    );
    ensure_eq!(
        f(col("status").not_in(["active"])).await?,
        strs(&["charlie", "delta"])
    );
    ensure_eq!(
        f(col("type").not_in(["AI_WORKER"])).await?,
        strs(&["Echo", "alpha"]),
        "not in skips nulls"
    );
    ensure_eq!(
        f(col("status").is_in(Vec::<String>::new())).await?,
        Vec::<String>::new(),
        "empty in"
    );
    ensure_eq!(
        f(col("type").not_in(Vec::<String>::new())).await?.len(),
        4,
        "empty not in: every non-null"
    );
    ensure_eq!(
        f(col("performance_score").is_in([60.0, 90.0])).await?,
        strs(&["alpha", "charlie"])
    );
    Ok(())
}

async fn query_like_ilike(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let f = |f: Filter| read_names(&db, f);
    ensure_eq!(
        f(col("type").like("AI_%")).await?,
        strs(&["alpha", "bravo", "delta"]),
        "like is case-sensitive"
    );
    ensure_eq!(
        f(col("type").ilike("ai_%")).await?,
        strs(&["Echo", "alpha", "bravo", "delta"])
    );
    ensure_eq!(f(col("name").like("_ravo")).await?, strs(&["bravo"]));
    ensure_eq!(f(col("name").like("%ar%")).await?, strs(&["charlie"]));
    ensure_eq!(f(col("name").ilike("ECHO")).await?, strs(&["Echo"]));
    ensure_eq!(
        f(col("name").like("alph")).await?,
        Vec::<String>::new(),
        "like without % is exact"
    );
    ensure_eq!(
        f(not(col("type").like("AI%"))).await?,
        strs(&["Echo"]),
        "not like skips nulls"
    );
    Ok(())
}

async fn query_null_semantics(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let f = |f: Filter| read_names(&db, f);
    ensure_eq!(f(col("type").is_null()).await?, strs(&["charlie"]));
    ensure_eq!(f(col("type").is_not_null()).await?.len(), 4);
    ensure_eq!(
        f(col("type").ne("AI_LEADER")).await?,
        strs(&["Echo", "bravo", "delta"]),
        "ne excludes nulls"
    );
    ensure_eq!(
        f(not(col("type").eq("AI_LEADER"))).await?,
        strs(&["Echo", "bravo", "delta"]),
        "not(eq) excludes nulls"
    );
    ensure_eq!(
        f(col("type").eq(Value::Null)).await?,
        strs(&["charlie"]),
        "eq(null) means is null"
    );
    ensure_eq!(
        f(col("performance_score").lt(1000)).await?.len(),
        4,
        "comparison with null is not true"
    );
    ensure_eq!(
        f(not(col("performance_score").lt(1000))).await?.len(),
        0,
        "nor false"
    );
    Ok(())
}

async fn query_and_or_not(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let f = |f: Filter| read_names(&db, f);
    ensure_eq!(
        f(and([
            col("status").eq("active"),
            col("performance_score").gt(80)
        ]))
        .await?,
        strs(&["alpha"])
    );
    ensure_eq!(
        f(or([col("status").eq("paused"), col("name").eq("delta")])).await?,
        strs(&["charlie", "delta"])
    );
    ensure_eq!(
        f(and([
            col("status").eq("active"),
            not(or([col("name").eq("alpha"), col("name").eq("bravo")]))
        ]))
        .await?,
        strs(&["Echo"])
    );
    ensure_eq!(f(and([])).await?.len(), 5, "empty and is true");
    ensure_eq!(f(or([])).await?.len(), 0, "empty or is false");
    ensure_eq!(f(not(or([]))).await?.len(), 5, "not(empty or) is true");
    // unknown OR true = true; unknown AND false = false.
    ensure_eq!(
        f(or([col("type").eq("x"), col("name").eq("charlie")])).await?,
        strs(&["charlie"])
    );
    ensure_eq!(
        f(not(and([col("type").eq("x"), col("name").eq("zzz")])))
            .await?
            .len(),
        5
    );
    Ok(())
}

fn column_of(rows: &[Row], k: &str) -> Vec<Value> {
    rows.iter()
        .map(|r| r.get(k).cloned().unwrap_or(Value::Null))
        .collect()
}

async fn query_order_nulls(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let order = |q: Query| {
        let db = db.clone();
        async move {
            Ok::<_, Failure>(column_of(
                &db.read("agents", &q.order_by_asc("name")).await?,
                "name",
            ))
        }
    };
    let q = || Query::new();
    let asc = order(q().order_by_asc("performance_score")).await?;
    ensure_eq!(
        asc,
        vec![
            json!("charlie"),
            json!("Echo"),
            json!("bravo"),
            json!("alpha"),
            json!("delta")
        ],
        "asc: nulls last by default, ties by name"
    );
    let desc = order(q().order_by_desc("performance_score")).await?;
    ensure_eq!(
        desc,
        vec![
            json!("delta"),
            json!("alpha"),
            json!("Echo"),
            json!("bravo"),
            json!("charlie")
        ],
        "desc: nulls first by default"
    );
    let asc_first = order(
        q().order_by_asc("performance_score")
            .nulls(NullsOrder::First),
    )
    .await?;
    ensure_eq!(asc_first[0], json!("delta"), "asc nulls first");
    let desc_last = order(
        q().order_by_desc("performance_score")
            .nulls(NullsOrder::Last),
    )
    .await?;
    ensure_eq!(desc_last[4], json!("delta"), "desc nulls last");
    ensure_eq!(desc_last[0], json!("alpha"));
    let by_name = column_of(
        &db.read("agents", &q().order_by_desc("name")).await?,
        "name",
    );
    ensure_eq!(
        by_name,
        vec![
            json!("delta"),
            json!("charlie"),
            json!("bravo"),
            json!("alpha"),
            json!("Echo")
        ],
        "text orders by bytes"
    );
    Ok(())
}

async fn query_limit_offset_edges(db: Db) -> CaseResult {
    seed_five(&db).await?;
    ensure_eq!(
        db.read("agents", &Query::new().limit(0)).await?.len(),
        0,
        "limit 0"
    );
    ensure_eq!(
        db.read("agents", &Query::new().offset(5)).await?.len(),
        0,
        "offset at end"
    );
    ensure_eq!(
        db.read("agents", &Query::new().offset(1000).limit(10))
            .await?
            .len(),
        0,
        "offset past end"
    );
    ensure_eq!(
        db.read("agents", &Query::new().limit(1000)).await?.len(),
        5,
        "limit beyond end"
    );
    let q = Query::new().order_by_asc("name").offset(1).limit(2);
    ensure_eq!(
        column_of(&db.read("agents", &q).await?, "name"),
        vec![json!("alpha"), json!("bravo")]
    );
    Ok(())
}

async fn query_select_aliases(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let q = Query::new()
        .select([
            "name",
            "agents.status AS state",
            "performance_score as score",
        ])
        .filter(col("name").eq("alpha"));
    let rows = db.read("agents", &q).await?;
    ensure_eq!(rows.len(), 1);
    let keys: Vec<&str> = rows[0].keys().map(String::as_str).collect();
    ensure_eq!(
        keys,
        vec!["name", "state", "score"],
        "output names in select order"
    );
    ensure_eq!(rows[0].get("state"), Some(&json!("active")));
    ensure_eq!(num(&rows[0], "score"), Some(90.0));
    let star = db
        .read("agents", &Query::new().select(["*"]).limit(1))
        .await?;
    ensure_eq!(star[0].len(), 8, "* selects every column");
    let dup = db
        .read("agents", &Query::new().select(["name", "status as name"]))
        .await;
    expect_kind(
        dup,
        ErrorKind::InvalidInput,
        "two output columns named name",
    )?;
    Ok(())
}

async fn query_empty_results(db: Db) -> CaseResult {
    agents(&db).await?;
    ensure_eq!(
        db.read("agents", &Query::new()).await?.len(),
        0,
        "empty table"
    );
    add(&db, json!({"name": "only"})).await?;
    let none = db
        .read("agents", &Query::new().filter(col("name").eq("nobody")))
        .await?;
    ensure!(none.is_empty(), "no match: empty result, not an error");
    let typed: Vec<Agent> = db
        .read_as("agents", &Query::new().filter(col("status").eq("gone")))
        .await?;
    ensure!(typed.is_empty());
    Ok(())
}

async fn query_timestamps(db: Db) -> CaseResult {
    agents(&db).await?;
    add(
        &db,
        json!({"name": "early", "created_at": "2024-03-01T10:00:00Z"}),
    )
    .await?;
    add(
        &db,
        json!({"name": "late", "created_at": "2024-03-01T12:30:00+02:00"}),
    )
    .await?;
    add(
        &db,
        json!({"name": "later", "created_at": "2024-03-01T11:00:00.5Z"}),
    )
    .await?;
    let got = db
        .read("agents", &Query::new().order_by_asc("created_at"))
        .await?;
    ensure_eq!(
        column_of(&got, "name"),
        vec![json!("early"), json!("late"), json!("later")],
        "ordered as times (12:30+02:00 = 10:30Z)"
    );
    let late = got
        .iter()
        .find(|r| s(r, "name") == "late")
        .ok_or("late missing".to_string())?;
    ensure_eq!(
        ts(late, "created_at")?,
        chrono::DateTime::parse_from_rfc3339("2024-03-01T10:30:00Z")
            .map_err(|e| e.to_string())?
            .with_timezone(&chrono::Utc),
        "returned in UTC"
    );
    ensure!(
        s(late, "created_at").ends_with('Z') || s(late, "created_at").ends_with("+00:00"),
        "UTC offset"
    );
    let f = |f: Filter| read_names(&db, f);
    ensure_eq!(
        f(col("created_at").gt("2024-03-01T12:15:00+02:00")).await?,
        strs(&["late", "later"]),
        "literal with offset compares as time"
    );
    ensure_eq!(
        f(col("created_at").eq("2024-03-01T10:00:00.000Z")).await?,
        strs(&["early"]),
        "equal instants are equal"
    );
    Ok(())
}

// ---------------------------------------------------------------- joins

async fn seed_join(db: &Db) -> Result<(Row, Row), Failure> {
    agents(db).await?;
    metrics(db).await?;
    let with = add(db, json!({"name": "measured", "performance_score": 1.0})).await?;
    let without = add(db, json!({"name": "unmeasured"})).await?;
    db.create(
        "agent_metrics",
        row(json!({"agent_id": id_of(&with), "performance_score": 97.5, "task_count": 12, "success_rate": 0.75})),
    )
    .await?;
    Ok((with, without))
}

fn metrics_query() -> Query {
    Query::new()
        .select([
            "agents.*",
            "agent_metrics.performance_score AS metric_score",
            "agent_metrics.task_count",
            "agent_metrics.success_rate",
        ])
        .left_join("agent_metrics", "agents.id", "agent_metrics.agent_id")
}

async fn join_left_metrics(db: Db) -> CaseResult {
    let (with, without) = seed_join(&db).await?;
    let one = db
        .read(
            "agents",
            &metrics_query().filter(col("agents.id").eq(id_of(&with))),
        )
        .await?;
    ensure_eq!(one.len(), 1);
    let r = &one[0];
    ensure_eq!(r.len(), 11, "agents.* (8) + 3 metric columns");
    ensure_eq!(s(r, "name"), "measured");
    ensure_eq!(
        num(r, "performance_score"),
        Some(1.0),
        "agents.performance_score kept"
    );
    ensure_eq!(num(r, "metric_score"), Some(97.5));
    ensure_eq!(r.get("task_count").and_then(Value::as_i64), Some(12));
    ensure_eq!(num(r, "success_rate"), Some(0.75));
    let all = db
        .read("agents", &metrics_query().order_by_asc("name"))
        .await?;
    ensure_eq!(all.len(), 2, "left join keeps the agent without metrics");
    let r = &all[1];
    ensure_eq!(r.get("id"), without.get("id"));
    for c in ["metric_score", "task_count", "success_rate"] {
        ensure_eq!(r.get(c), Some(&Value::Null), "{c} is null without metrics");
    }
    Ok(())
}

async fn join_inner(db: Db) -> CaseResult {
    let (with, _) = seed_join(&db).await?;
    let mut q = metrics_query();
    q.joins[0].kind = truststream_core_db::JoinKind::Inner;
    let rows = db.read("agents", &q).await?;
    ensure_eq!(rows.len(), 1, "inner join drops the agent without metrics");
    ensure_eq!(rows[0].get("id"), with.get("id"));
    // Two metric rows for one agent: two joined rows.
    db.create(
        "agent_metrics",
        row(json!({"agent_id": id_of(&with), "task_count": 3})),
    )
    .await?;
    let rows = db.read("agents", &q.order_by_asc("task_count")).await?;
    ensure_eq!(column_of(&rows, "task_count"), vec![json!(3), json!(12)]);
    Ok(())
}

async fn join_aliases(db: Db) -> CaseResult {
    let (with, _) = seed_join(&db).await?;
    let q = Query::new()
        .select(["agents.id", "agents.name", "am.task_count AS tasks"])
        .left_join("agent_metrics am", "agents.id", "am.agent_id")
        .filter(col("am.task_count").gte(10));
    let rows = db.read("agents", &q).await?;
    ensure_eq!(rows.len(), 1);
    ensure_eq!(rows[0].get("id"), with.get("id"));
    ensure_eq!(rows[0].get("tasks"), Some(&json!(12)));
    // Unqualified names resolve when only one table has them.
    let q = Query::new()
        .select(["name", "task_count"])
        .left_join("agent_metrics", "agents.id", "agent_metrics.agent_id")
        .filter(col("task_count").is_null());
    let rows = db.read("agents", &q).await?;
    ensure_eq!(names(&rows), strs(&["unmeasured"]));
    Ok(())
}

async fn join_ambiguous(db: Db) -> CaseResult {
    seed_join(&db).await?;
    let base = || Query::new().left_join("agent_metrics", "agents.id", "agent_metrics.agent_id");
    expect_kind(
        db.read("agents", &base().filter(col("performance_score").gt(1)))
            .await,
        ErrorKind::InvalidInput,
        "unqualified performance_score is ambiguous",
    )?;
    expect_kind(
        db.read(
            "agents",
            &base().select(["agents.*", "agent_metrics.performance_score"]),
        )
        .await,
        ErrorKind::InvalidInput,
        "two output columns named performance_score",
    )?;
    expect_kind(
        db.read("agents", &base().select(["nope.name"])).await,
        ErrorKind::InvalidInput,
        "unknown table qualifier",
    )?;
    expect_kind(
        db.read(
            "agents",
            &Query::new().left_join("no_such_table", "agents.id", "no_such_table.agent_id"),
        )
        .await,
        ErrorKind::NotFound,
        "join of a missing table",
    )?;
    Ok(())
}

// ---------------------------------------------------------------- aggregates

async fn aggregate_statistics(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let q = Query::new()
        .select_item(SelectItem::aggregate(AggFunc::Count, None, "total_agents"))
        .select_item(
            SelectItem::aggregate(AggFunc::Count, None, "active_agents")
                .filtered(col("status").eq("active")),
        )
        .select_item(SelectItem::aggregate(
            AggFunc::Avg,
            Some("performance_score"),
            "avg_performance",
        ))
        .select_item(SelectItem::aggregate(
            AggFunc::Max,
            Some("performance_score"),
            "max_performance",
        ))
        .select_item(SelectItem::aggregate(
            AggFunc::Min,
            Some("name"),
            "first_name",
        ))
        .select_item(SelectItem::aggregate(
            AggFunc::Count,
            Some("performance_score"),
            "scored",
        ))
        .select_item(SelectItem::aggregate(
            AggFunc::Max,
            Some("created_at"),
            "latest_creation",
        ))
        .filter(col("deleted_at").is_null());
    let rows = db.read("agents", &q).await?;
    ensure_eq!(rows.len(), 1, "one row without group_by");
    let r = &rows[0];
    ensure_eq!(r.get("total_agents").and_then(Value::as_i64), Some(5));
    ensure_eq!(r.get("active_agents").and_then(Value::as_i64), Some(3));
    ensure_eq!(
        r.get("scored").and_then(Value::as_i64),
        Some(4),
        "count(col) skips nulls"
    );
    let avg = num(r, "avg_performance").ok_or("avg is not a number".to_string())?;
    ensure!(close(avg, 75.25), "avg = {avg}, want 75.25");
    ensure_eq!(num(r, "max_performance"), Some(90.0));
    ensure_eq!(s(r, "first_name"), "Echo", "min over text by bytes");
    ensure!(
        ts(r, "latest_creation").is_ok(),
        "max(created_at) is a timestamp"
    );
    Ok(())
}

async fn aggregate_group_by(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let q = Query::new()
        .select(["status"])
        .select_item(SelectItem::aggregate(AggFunc::Count, None, "n"))
        .select_item(SelectItem::aggregate(
            AggFunc::Sum,
            Some("performance_score"),
            "total",
        ))
        .group_by("status")
        .order_by_desc("n")
        .order_by_asc("status");
    let rows = db.read("agents", &q).await?;
    ensure_eq!(
        column_of(&rows, "status"),
        vec![json!("active"), json!("paused"), json!("retired")]
    );
    ensure_eq!(
        rows.iter()
            .map(|r| r.get("n").and_then(Value::as_i64))
            .collect::<Vec<_>>(),
        vec![Some(3), Some(1), Some(1)]
    );
    ensure_eq!(num(&rows[0], "total"), Some(241.0));
    ensure_eq!(
        rows[2].get("total"),
        Some(&Value::Null),
        "sum over only nulls is null"
    );
    expect_kind(
        db.read(
            "agents",
            &Query::new()
                .select(["name"])
                .select_item(SelectItem::aggregate(AggFunc::Count, None, "n"))
                .group_by("status"),
        )
        .await,
        ErrorKind::InvalidInput,
        "selected column neither grouped nor aggregated",
    )?;
    Ok(())
}

async fn aggregate_no_rows(db: Db) -> CaseResult {
    agents(&db).await?;
    let q = Query::new()
        .select_item(SelectItem::aggregate(AggFunc::Count, None, "n"))
        .select_item(SelectItem::aggregate(
            AggFunc::Sum,
            Some("performance_score"),
            "total",
        ))
        .select_item(SelectItem::aggregate(
            AggFunc::Avg,
            Some("performance_score"),
            "avg",
        ))
        .select_item(SelectItem::aggregate(
            AggFunc::Max,
            Some("created_at"),
            "latest",
        ));
    let rows = db.read("agents", &q).await?;
    ensure_eq!(
        rows.len(),
        1,
        "an aggregate over no rows still returns one row"
    );
    ensure_eq!(rows[0].get("n").and_then(Value::as_i64), Some(0));
    for c in ["total", "avg", "latest"] {
        ensure_eq!(rows[0].get(c), Some(&Value::Null), "{c} over no rows");
    }
    let grouped = db.read("agents", &q.group_by("status")).await?;
    ensure!(grouped.is_empty(), "group_by over no rows: no groups");
    Ok(())
}

async fn aggregate_raw_sql(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let sql = "SELECT \
        COUNT(*) AS total_agents, \
        COUNT(CASE WHEN status = 'active' THEN 1 END) AS active_agents, \
        COUNT(CASE WHEN created_at >= :start_date THEN 1 END) AS new_agents, \
        AVG(performance_score) AS avg_performance \
      FROM agents WHERE deleted_at IS NULL";
    let mut params = Params::new();
    params.insert("start_date".into(), json!("2000-01-01T00:00:00Z"));
    let rows = db.raw_query(sql, &params).await?;
    ensure_eq!(rows.len(), 1);
    let r = &rows[0];
    let int = |k: &str| {
        r.get(k).and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
    };
    ensure_eq!(int("total_agents"), Some(5));
    ensure_eq!(int("active_agents"), Some(3));
    ensure_eq!(int("new_agents"), Some(5));
    let avg = r
        .get("avg_performance")
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .ok_or("avg_performance missing".to_string())?;
    ensure!(close(avg, 75.25), "avg = {avg}");
    Ok(())
}

// ---------------------------------------------------------------- batch

async fn batch_create_many_1000(db: Db) -> CaseResult {
    agents(&db).await?;
    let rows: Vec<Row> = (0..1000)
        .map(|i| row(json!({"name": format!("bulk-{i:04}"), "performance_score": i as f64})))
        .collect();
    let created = db.create_many("agents", rows).await?;
    ensure_eq!(created.len(), 1000);
    let ids: HashSet<String> = created.iter().map(|r| s(r, "id")).collect();
    ensure_eq!(ids.len(), 1000, "distinct generated ids");
    ensure!(
        created.iter().all(|r| s(r, "status") == "active"),
        "defaults filled in"
    );
    ensure_eq!(count_rows(&db, "agents").await?, 1000);
    let high = db
        .read(
            "agents",
            &Query::new().filter(col("performance_score").gte(900)),
        )
        .await?;
    ensure_eq!(high.len(), 100);
    ensure!(
        db.create_many("agents", Vec::new()).await?.is_empty(),
        "empty batch is a no-op"
    );
    Ok(())
}

async fn batch_all_or_nothing(db: Db) -> CaseResult {
    agents(&db).await?;
    let dup = uuid::Uuid::new_v4().to_string();
    let rows = vec![
        row(json!({"name": "one"})),
        row(json!({"id": dup, "name": "two"})),
        row(json!({"name": "three"})),
        row(json!({"id": dup, "name": "four"})),
    ];
    expect_kind(
        db.create_many("agents", rows).await,
        ErrorKind::Conflict,
        "duplicate key inside the batch",
    )?;
    ensure_eq!(count_rows(&db, "agents").await?, 0, "nothing inserted");
    let rows = vec![row(json!({"name": "ok"})), row(json!({"name": 5}))];
    expect_kind(
        db.create_many("agents", rows).await,
        ErrorKind::InvalidInput,
        "bad row in the batch",
    )?;
    ensure_eq!(count_rows(&db, "agents").await?, 0, "nothing inserted");
    let existing = add(&db, json!({"name": "existing"})).await?;
    let rows = vec![
        row(json!({"name": "new"})),
        row(json!({"id": id_of(&existing), "name": "clash"})),
    ];
    expect_kind(
        db.create_many("agents", rows).await,
        ErrorKind::Conflict,
        "clash with an existing row",
    )?;
    ensure_eq!(
        names(&db.read("agents", &Query::new()).await?),
        strs(&["existing"])
    );
    Ok(())
}

async fn batch_update_delete_many(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let n = db
        .update_many(
            "agents",
            &col("status").eq("active"),
            row(json!({"status": "paused"})),
        )
        .await?;
    ensure_eq!(n, 3, "three active agents paused");
    ensure_eq!(read_names(&db, col("status").eq("paused")).await?.len(), 4);
    let n = db
        .update_many(
            "agents",
            &col("name").eq("nobody"),
            row(json!({"status": "x"})),
        )
        .await?;
    ensure_eq!(n, 0, "no match, no update");
    let n = db
        .delete_many("agents", &col("performance_score").lt(80))
        .await?;
    ensure_eq!(n, 3, "75.5, 75.5 and 60 deleted; null score kept");
    ensure_eq!(
        names(&db.read("agents", &Query::new()).await?),
        strs(&["alpha", "delta"])
    );
    expect_kind(
        db.update_many("agents", &and([]), row(json!({"name": Value::Null})))
            .await,
        ErrorKind::InvalidInput,
        "update_many setting NOT NULL column to null",
    )?;
    ensure_eq!(
        names(&db.read("agents", &Query::new()).await?),
        strs(&["alpha", "delta"]),
        "failed update_many changed nothing"
    );
    let n = db.delete_many("agents", &and([])).await?;
    ensure_eq!(n, 2, "empty and matches every row");
    ensure_eq!(count_rows(&db, "agents").await?, 0);
    Ok(())
}

// ---------------------------------------------------------------- transactions

async fn tx_commit(db: Db) -> CaseResult {
    agents(&db).await?;
    allocations(&db).await?;
    let agent_id = uuid::Uuid::new_v4().to_string();
    let ops = vec![
        Operation::Create {
            table: "agents".into(),
            data: row(json!({"id": agent_id, "name": "Deployed", "type": "AI_WORKER"})),
        },
        Operation::Create {
            table: "resource_allocations".into(),
            data: row(json!({"agent_id": agent_id, "allocation_key": "gpu-1", "cpu_millis": 500})),
        },
    ];
    let out = db.transaction(ops).await?;
    ensure_eq!(out.len(), 2);
    let first = out[0]
        .clone()
        .into_row()
        .ok_or("first output is not a row".to_string())?;
    ensure_eq!(
        s(&first, "status"),
        "active",
        "defaults applied inside transactions"
    );
    ensure!(matches!(&out[1], OperationOutput::Row(r) if s(r, "allocation_key") == "gpu-1"));
    ensure!(
        db.get("agents", &json!(agent_id)).await?.is_some(),
        "agent committed"
    );
    let allocs = db
        .read(
            "resource_allocations",
            &Query::new().filter(col("agent_id").eq(agent_id.clone())),
        )
        .await?;
    ensure_eq!(allocs.len(), 1, "allocation committed");
    Ok(())
}

async fn tx_rollback(db: Db) -> CaseResult {
    agents(&db).await?;
    allocations(&db).await?;
    db.create(
        "resource_allocations",
        row(json!({"agent_id": uuid::Uuid::new_v4().to_string(), "allocation_key": "taken"})),
    )
    .await?;
    let agent_id = uuid::Uuid::new_v4().to_string();
    let ops = vec![
        Operation::Create {
            table: "agents".into(),
            data: row(json!({"id": agent_id, "name": "Doomed"})),
        },
        Operation::Create {
            table: "resource_allocations".into(),
            data: row(json!({"agent_id": agent_id, "allocation_key": "taken"})),
        },
    ];
    let err = match db.transaction(ops).await {
        Ok(v) => {
            return Err(Failure::new(format!(
                "transaction with a duplicate succeeded: {v:?}"
            )))
        }
        Err(e) => e,
    };
    ensure_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "the failing operation's kind ({err})"
    );
    ensure!(
        err.context()
            .iter()
            .any(|(k, v)| *k == "operation_index" && v == "1"),
        "error names operation_index 1: {err}"
    );
    ensure!(
        db.get("agents", &json!(agent_id)).await?.is_none(),
        "first operation rolled back"
    );
    ensure_eq!(count_rows(&db, "agents").await?, 0);
    ensure_eq!(count_rows(&db, "resource_allocations").await?, 1);
    // A missing row in an update also fails the transaction.
    let ops = vec![
        Operation::Create {
            table: "agents".into(),
            data: row(json!({"name": "Also doomed"})),
        },
        Operation::Update {
            table: "agents".into(),
            id: json!(uuid::Uuid::new_v4().to_string()),
            data: row(json!({"status": "x"})),
        },
    ];
    expect_kind(
        db.transaction(ops).await,
        ErrorKind::NotFound,
        "update of a missing row",
    )?;
    ensure_eq!(count_rows(&db, "agents").await?, 0, "rolled back");
    Ok(())
}

async fn tx_mixed(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let alpha = db
        .read("agents", &Query::new().filter(col("name").eq("alpha")))
        .await?;
    let alpha_id = alpha
        .first()
        .map(id_of)
        .ok_or("alpha missing".to_string())?;
    let ops = vec![
        Operation::Update {
            table: "agents".into(),
            id: alpha_id.clone(),
            data: row(json!({"status": "retired"})),
        },
        Operation::UpdateMany {
            table: "agents".into(),
            filter: col("status").eq("active"),
            data: row(json!({"performance_score": 1.0})),
        },
        Operation::DeleteMany {
            table: "agents".into(),
            filter: col("status").eq("retired"),
        },
        Operation::CreateMany {
            table: "agents".into(),
            rows: vec![row(json!({"name": "new1"})), row(json!({"name": "new2"}))],
        },
        Operation::Delete {
            table: "agents".into(),
            id: alpha_id.clone(),
        },
    ];
    let out = db.transaction(ops).await?;
    ensure_eq!(
        out[1],
        OperationOutput::Affected(2),
        "bravo and Echo updated"
    );
    ensure_eq!(
        out[2],
        OperationOutput::Affected(2),
        "alpha and delta deleted"
    );
    ensure!(matches!(&out[3], OperationOutput::Rows(r) if r.len() == 2));
    ensure_eq!(
        out[4],
        OperationOutput::Deleted(false),
        "alpha already deleted inside the transaction"
    );
    ensure_eq!(
        names(&db.read("agents", &Query::new()).await?),
        strs(&["Echo", "bravo", "charlie", "new1", "new2"])
    );
    Ok(())
}

/// `InsertMany` inserts its rows as `CreateMany` does (defaults filled in,
/// all or none with the rest of the transaction) and answers with how many.
async fn tx_insert_many(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let alpha = read_names_rows(&db, "alpha").await?;
    let alpha_id = alpha
        .first()
        .map(id_of)
        .ok_or("alpha missing".to_string())?;
    let insert = |rows: Vec<Value>| Operation::InsertMany {
        table: "agents".into(),
        rows: rows.into_iter().map(row).collect(),
    };
    let out = db
        .transaction(vec![
            insert(vec![
                json!({"name": "new1"}),
                json!({"name": "new2", "status": "paused"}),
            ]),
            Operation::UpdateMany {
                table: "agents".into(),
                filter: col("name").eq("new1"),
                data: row(json!({"performance_score": 3.0})),
            },
            insert(vec![]),
        ])
        .await?;
    ensure_eq!(out[0], OperationOutput::Affected(2), "two rows inserted");
    ensure_eq!(
        out[1],
        OperationOutput::Affected(1),
        "the later operation sees the inserted row"
    );
    ensure_eq!(
        out[2],
        OperationOutput::Affected(0),
        "no rows, none inserted"
    );
    let new1 = read_names_rows(&db, "new1").await?;
    ensure!(
        new1.len() == 1 && num(&new1[0], "performance_score") == Some(3.0),
        "new1 stored and updated: {new1:?}"
    );
    let new1_id = new1.first().map(id_of).ok_or("new1 missing".to_string())?;
    ensure!(!new1_id.is_null(), "the key was filled in: {new1:?}");
    ensure_eq!(count_rows(&db, "agents").await?, 7);
    // A duplicate key fails the whole transaction with Conflict: the
    // earlier insert of the same operation and the update before it are
    // gone.
    let mut dup = row(json!({"name": "dup"}));
    dup.insert("id".into(), alpha_id.clone());
    let failed = db
        .transaction(vec![
            Operation::UpdateMany {
                table: "agents".into(),
                filter: col("name").eq("bravo"),
                data: row(json!({"status": "retired"})),
            },
            Operation::InsertMany {
                table: "agents".into(),
                rows: vec![row(json!({"name": "before the duplicate"})), dup],
            },
        ])
        .await;
    expect_kind(
        failed,
        ErrorKind::Conflict,
        "a duplicate key in insert_many",
    )?;
    // An unknown column is InvalidInput, with nothing written.
    expect_kind(
        db.transaction(vec![insert(vec![
            json!({"name": "fine"}),
            json!({"name": "bad", "no_such_column": 1}),
        ])])
        .await,
        ErrorKind::InvalidInput,
        "an unknown column in insert_many",
    )?;
    ensure_eq!(count_rows(&db, "agents").await?, 7, "both rolled back");
    ensure_eq!(
        read_names(&db, col("status").eq("retired")).await?,
        strs(&["delta"]),
        "the update before the failed insert rolled back"
    );
    Ok(())
}

async fn read_names_rows(db: &Db, name: &str) -> Result<Vec<Row>, Failure> {
    Ok(db
        .read("agents", &Query::new().filter(col("name").eq(name)))
        .await?)
}

/// `UpdateChecked` commits when exactly `expected` rows match, and fails
/// the whole transaction with `Conflict` otherwise (a compare-and-set).
async fn tx_update_checked(db: Db) -> CaseResult {
    seed_five(&db).await?;
    let checked = |status: &str, expected: u64| Operation::UpdateChecked {
        table: "agents".into(),
        filter: col("status").eq(status),
        data: row(json!({"performance_score": 7.0})),
        expected,
    };
    let create = || Operation::Create {
        table: "agents".into(),
        data: row(json!({"name": "written with the check", "status": "paused"})),
    };
    // Three rows are active (alpha, bravo, Echo): expecting three commits.
    let out = db.transaction(vec![create(), checked("active", 3)]).await?;
    ensure_eq!(out[1], OperationOutput::Affected(3), "three rows matched");
    ensure_eq!(count_rows(&db, "agents").await?, 6, "the create committed");
    // One expected, three match: Conflict, and the create before it is gone.
    match db.transaction(vec![create(), checked("active", 1)]).await {
        Err(e) if e.kind() == ErrorKind::Conflict => {
            ensure!(
                e.display_chain().to_string().contains("agents"),
                "the error names the table: {e}"
            );
        }
        other => {
            return Err(Failure::new(format!(
                "three rows matched where one was expected: expected a conflict, got {other:?}"
            )))
        }
    }
    // None match: Conflict too.
    expect_kind(
        db.transaction(vec![create(), checked("no such status", 1)])
            .await,
        ErrorKind::Conflict,
        "no row matched where one was expected",
    )?;
    ensure_eq!(count_rows(&db, "agents").await?, 6, "both rolled back");
    // Zero expected and zero matched commits.
    let out = db.transaction(vec![checked("no such status", 0)]).await?;
    ensure_eq!(out[0], OperationOutput::Affected(0));
    Ok(())
}

// ---------------------------------------------------------------- pagination

async fn seed_timeline(db: &Db, n: usize, base_minute: i64) -> Result<(), Failure> {
    let base = chrono::DateTime::parse_from_rfc3339("2024-06-01T00:00:00Z")
        .map_err(|e| Failure::new(e.to_string()))?;
    let rows: Vec<Row> = (0..n)
        .map(|i| {
            // Three rows share each timestamp, so the id tie-breaker matters.
            let t = base + chrono::Duration::minutes(base_minute + (i / 3) as i64);
            row(json!({"name": format!("p{base_minute}-{i:03}"), "created_at": t.to_rfc3339()}))
        })
        .collect();
    db.create_many("agents", rows).await?;
    Ok(())
}

fn page_query() -> Query {
    Query::new().order_by_desc("created_at").order_by_asc("id")
}

async fn page_cursor_every_row_once(db: Db) -> CaseResult {
    agents(&db).await?;
    seed_timeline(&db, 95, 0).await?;
    let expected: Vec<Value> = column_of(&db.read("agents", &page_query()).await?, "id");
    ensure_eq!(expected.len(), 95);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = db
            .read_page("agents", &page_query(), 20, cursor.as_deref())
            .await?;
        pages += 1;
        ensure!(pages <= 5, "more than 5 pages of 20 for 95 rows");
        ensure!(
            page.items.len() == 20 || page.next_cursor.is_none(),
            "only the last page is short"
        );
        seen.extend(column_of(&page.items, "id"));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ensure_eq!(pages, 5);
    ensure_eq!(seen, expected, "every row exactly once, in order");
    Ok(())
}

async fn page_cursor_stable(db: Db) -> CaseResult {
    agents(&db).await?;
    seed_timeline(&db, 95, 1000).await?;
    let original: HashSet<String> = db
        .read("agents", &Query::new())
        .await?
        .iter()
        .map(|r| s(r, "id"))
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0;
    loop {
        let page = db
            .read_page("agents", &page_query(), 20, cursor.as_deref())
            .await?;
        seen.extend(page.items.iter().map(|r| s(r, "id")));
        round += 1;
        ensure!(round <= 10, "pagination does not end");
        if round == 1 {
            // Newer rows land before the cursor, older ones after it.
            seed_timeline(&db, 5, 5000).await?;
            seed_timeline(&db, 5, 0).await?;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    ensure_eq!(unique.len(), seen.len(), "no row repeated");
    ensure_eq!(
        seen.len(),
        100,
        "95 originals + 5 older rows inserted mid-way"
    );
    ensure!(
        original.iter().all(|id| unique.contains(id)),
        "no original row skipped"
    );
    Ok(())
}

async fn page_offset(db: Db) -> CaseResult {
    agents(&db).await?;
    seed_timeline(&db, 45, 0).await?;
    let mut seen = Vec::new();
    for page in 0..3u64 {
        let q = page_query().offset(page * 20).limit(20);
        let rows = db.read("agents", &q).await?;
        ensure_eq!(
            rows.len(),
            if page < 2 { 20 } else { 5 },
            "page {page} size"
        );
        seen.extend(column_of(&rows, "id"));
    }
    ensure_eq!(
        seen,
        column_of(&db.read("agents", &page_query()).await?, "id")
    );
    Ok(())
}

async fn page_invalid_cursor(db: Db) -> CaseResult {
    agents(&db).await?;
    seed_timeline(&db, 3, 0).await?;
    expect_kind(
        db.read_page("agents", &page_query(), 2, Some("not a cursor!"))
            .await,
        ErrorKind::InvalidInput,
        "garbage cursor",
    )?;
    expect_kind(
        db.read_page("agents", &page_query(), 0, None).await,
        ErrorKind::InvalidInput,
        "page size 0",
    )?;
    for absurd in [u64::MAX, truststream_core_db::MAX_PAGE_SIZE + 1] {
        expect_kind(
            db.read_page("agents", &page_query(), absurd, None).await,
            ErrorKind::InvalidInput,
            &format!("page size {absurd}"),
        )?;
    }
    let most = db
        .read_page(
            "agents",
            &page_query(),
            truststream_core_db::MAX_PAGE_SIZE,
            None,
        )
        .await?;
    ensure_eq!(most.items.len(), 3, "the largest page size is accepted");
    expect_kind(
        db.read_page("agents", &Query::new(), 2, None).await,
        ErrorKind::InvalidInput,
        "no order_by",
    )?;
    Ok(())
}

// ---------------------------------------------------------------- edges

async fn edge_missing_rows(db: Db) -> CaseResult {
    agents(&db).await?;
    let ghost = json!(uuid::Uuid::new_v4().to_string());
    ensure!(
        db.get("agents", &ghost).await?.is_none(),
        "get of a missing row is None"
    );
    expect_kind(
        db.update("agents", &ghost, row(json!({"status": "x"})))
            .await,
        ErrorKind::NotFound,
        "update of a missing row",
    )?;
    ensure!(
        !db.delete("agents", &ghost).await?,
        "delete of a missing row is false"
    );
    ensure_eq!(count_rows(&db, "agents").await?, 0, "update did not insert");
    Ok(())
}

async fn edge_duplicate_pk(db: Db) -> CaseResult {
    agents(&db).await?;
    let a = add(&db, json!({"name": "original"})).await?;
    expect_kind(
        db.create("agents", row(json!({"id": id_of(&a), "name": "impostor"})))
            .await,
        ErrorKind::Conflict,
        "duplicate primary key",
    )?;
    let upper = s(&a, "id").to_uppercase();
    expect_kind(
        db.create("agents", row(json!({"id": upper, "name": "impostor"})))
            .await,
        ErrorKind::Conflict,
        "same uuid, other case",
    )?;
    let b = add(&db, json!({"name": "other"})).await?;
    expect_kind(
        db.update("agents", &id_of(&b), row(json!({"id": id_of(&a)})))
            .await,
        ErrorKind::Conflict,
        "update to a taken primary key",
    )?;
    ensure_eq!(
        db.get("agents", &id_of(&a)).await?.as_ref(),
        Some(&a),
        "original unchanged"
    );
    ensure_eq!(
        db.get("agents", &id_of(&b)).await?.as_ref(),
        Some(&b),
        "other unchanged"
    );
    ensure_eq!(count_rows(&db, "agents").await?, 2);
    Ok(())
}

async fn edge_duplicate_unique(db: Db) -> CaseResult {
    allocations(&db).await?;
    let agent = uuid::Uuid::new_v4().to_string();
    let a = db
        .create(
            "resource_allocations",
            row(json!({"agent_id": agent, "allocation_key": "k1", "cpu_millis": 1})),
        )
        .await?;
    expect_kind(
        db.create(
            "resource_allocations",
            row(json!({"agent_id": agent, "allocation_key": "k1"})),
        )
        .await,
        ErrorKind::Conflict,
        "duplicate unique value",
    )?;
    let b = db
        .create(
            "resource_allocations",
            row(json!({"agent_id": agent, "allocation_key": "k2"})),
        )
        .await?;
    expect_kind(
        db.update(
            "resource_allocations",
            &id_of(&b),
            row(json!({"allocation_key": "k1"})),
        )
        .await,
        ErrorKind::Conflict,
        "update to a taken unique value",
    )?;
    ensure_eq!(
        db.get("resource_allocations", &id_of(&a)).await?.as_ref(),
        Some(&a)
    );
    ensure_eq!(
        db.get("resource_allocations", &id_of(&b)).await?.as_ref(),
        Some(&b)
    );
    // Updating a row to its own value is not a conflict.
    db.update(
        "resource_allocations",
        &id_of(&a),
        row(json!({"allocation_key": "k1", "cpu_millis": 2})),
    )
    .await?;
    Ok(())
}

async fn edge_invalid_identifiers(db: Db) -> CaseResult {
    agents(&db).await?;
    metrics(&db).await?;
    let keep = add(&db, json!({"name": "survivor"})).await?;
    let evil = "name; DROP TABLE agents";
    let evil_table = "agents; DROP TABLE agents";
    let q = Query::new;
    let ii = ErrorKind::InvalidInput;
    expect_kind(db.read(evil_table, &q()).await, ii, "table name")?;
    expect_kind(
        db.create(evil_table, row(json!({"name": "x"}))).await,
        ii,
        "create table name",
    )?;
    expect_kind(
        db.get(evil_table, &id_of(&keep)).await,
        ii,
        "get table name",
    )?;
    expect_kind(
        db.delete(evil_table, &id_of(&keep)).await,
        ii,
        "delete table name",
    )?;
    expect_kind(
        db.create("agents", row(json!({"name": "x", evil: "y"})))
            .await,
        ii,
        "JSON row key",
    )?;
    expect_kind(
        db.update("agents", &id_of(&keep), row(json!({evil: "y"})))
            .await,
        ii,
        "patch key",
    )?;
    expect_kind(
        db.read("agents", &q().filter(col(evil).eq(1))).await,
        ii,
        "filter column",
    )?;
    expect_kind(
        db.read("agents", &q().order_by_asc(evil)).await,
        ii,
        "order column",
    )?;
    expect_kind(
        db.read("agents", &q().select([evil])).await,
        ii,
        "select column",
    )?;
    expect_kind(
        db.read("agents", &q().select(["name AS \"x\"; --"])).await,
        ii,
        "alias",
    )?;
    expect_kind(
        db.read(
            "agents",
            &q().left_join(
                "agent_metrics; DROP TABLE agents",
                "agents.id",
                "agent_metrics.agent_id",
            ),
        )
        .await,
        ii,
        "join table",
    )?;
    expect_kind(
        db.read("agents", &q().left_join("agent_metrics", "agents.id", evil))
            .await,
        ii,
        "join column",
    )?;
    expect_kind(
        db.update_many("agents", &col(evil).eq(1), row(json!({"status": "x"})))
            .await,
        ii,
        "update_many filter",
    )?;
    expect_kind(
        db.delete_many("agents", &col(evil).is_null()).await,
        ii,
        "delete_many filter",
    )?;
    expect_kind(
        db.create_table(
            &TableSchema::new(evil_table).column(ColumnDef::integer("id").primary_key()),
        )
        .await,
        ii,
        "create_table name",
    )?;
    expect_kind(db.drop_table(evil_table, true).await, ii, "drop_table name")?;
    let rows = db.read("agents", &q()).await?;
    ensure_eq!(rows, vec![keep], "table intact");
    Ok(())
}

async fn edge_unknown_names(db: Db) -> CaseResult {
    agents(&db).await?;
    expect_kind(
        db.read("ghosts", &Query::new()).await,
        ErrorKind::NotFound,
        "read of a missing table",
    )?;
    expect_kind(
        db.create("ghosts", row(json!({"name": "x"}))).await,
        ErrorKind::NotFound,
        "create in a missing table",
    )?;
    expect_kind(
        db.get("ghosts", &json!(1)).await,
        ErrorKind::NotFound,
        "get from a missing table",
    )?;
    let ii = ErrorKind::InvalidInput;
    // Empty table: the columns are still checked.
    expect_kind(
        db.read("agents", &Query::new().filter(col("colour").eq("red")))
            .await,
        ii,
        "unknown filter column",
    )?;
    expect_kind(
        db.read("agents", &Query::new().order_by_asc("colour"))
            .await,
        ii,
        "unknown order column",
    )?;
    expect_kind(
        db.read("agents", &Query::new().select(["colour"])).await,
        ii,
        "unknown select column",
    )?;
    expect_kind(
        db.create("agents", row(json!({"name": "x", "colour": "red"})))
            .await,
        ii,
        "unknown row column",
    )?;
    let a = add(&db, json!({"name": "a"})).await?;
    expect_kind(
        db.update("agents", &id_of(&a), row(json!({"colour": "red"})))
            .await,
        ii,
        "unknown patch column",
    )?;
    let e = match db
        .create("agents", row(json!({"name": "x", "colour": "red"})))
        .await
    {
        Err(e) => e,
        Ok(_) => return Err(Failure::new("unknown column accepted")),
    };
    ensure!(
        e.to_string().contains("colour"),
        "error names the column: {e}"
    );
    Ok(())
}

async fn edge_wrong_types(db: Db) -> CaseResult {
    agents(&db).await?;
    metrics(&db).await?;
    let ii = ErrorKind::InvalidInput;
    for (table, v, what) in [
        ("agents", json!({"name": 42}), "number into text"),
        (
            "agents",
            json!({"name": "x", "performance_score": "high"}),
            "string into float",
        ),
        (
            "agents",
            json!({"name": "x", "created_at": "last tuesday"}),
            "bad timestamp",
        ),
        (
            "agents",
            json!({"name": "x", "id": "not-a-uuid"}),
            "bad uuid",
        ),
        ("agents", json!({"name": ["x"]}), "array into text"),
        (
            "agent_metrics",
            json!({"task_count": 1.5}),
            "fraction into integer",
        ),
        (
            "agent_metrics",
            json!({"task_count": "7"}),
            "string into integer",
        ),
    ] {
        let r = db.create(table, row(v)).await;
        if let Err(e) = &r {
            if e.kind() == ii && what == "number into text" {
                ensure!(
                    e.to_string().contains("name"),
                    "error names the column: {e}"
                );
            }
        }
        expect_kind(r, ii, what)?;
    }
    ensure_eq!(count_rows(&db, "agents").await?, 0);
    ensure_eq!(count_rows(&db, "agent_metrics").await?, 0);
    let a = add(&db, json!({"name": "a"})).await?;
    expect_kind(
        db.update(
            "agents",
            &id_of(&a),
            row(json!({"performance_score": true})),
        )
        .await,
        ii,
        "bool into float (update)",
    )?;
    Ok(())
}

async fn edge_not_null(db: Db) -> CaseResult {
    agents(&db).await?;
    let ii = ErrorKind::InvalidInput;
    expect_kind(
        db.create("agents", row(json!({"type": "AI"}))).await,
        ii,
        "missing NOT NULL name",
    )?;
    expect_kind(
        db.create("agents", row(json!({"name": null}))).await,
        ii,
        "explicit null name",
    )?;
    let a = add(&db, json!({"name": "a"})).await?;
    expect_kind(
        db.update("agents", &id_of(&a), row(json!({"status": null})))
            .await,
        ii,
        "update to null",
    )?;
    ensure_eq!(
        db.get("agents", &id_of(&a)).await?.as_ref(),
        Some(&a),
        "row unchanged"
    );
    ensure_eq!(count_rows(&db, "agents").await?, 1);
    Ok(())
}

async fn edge_empty_patch(db: Db) -> CaseResult {
    agents(&db).await?;
    let a = add(&db, json!({"name": "a"})).await?;
    expect_kind(
        db.update("agents", &id_of(&a), Row::new()).await,
        ErrorKind::InvalidInput,
        "empty patch",
    )?;
    expect_kind(
        db.update_many("agents", &and([]), Row::new()).await,
        ErrorKind::InvalidInput,
        "empty update_many patch",
    )?;
    Ok(())
}

async fn edge_unicode(db: Db) -> CaseResult {
    agents(&db).await?;
    let samples = [
        "🤖 agent 🚀",
        "数据代理",
        "وكيل البيانات",
        "e\u{301}cole",
        "Zürich ß",
        "a\u{200d}b",
        "quote ' \" back\\slash",
    ];
    for n in samples {
        let r = add(&db, json!({"name": n, "type": n})).await?;
        ensure_eq!(s(&r, "name"), n, "create returns it unchanged");
        let got = db
            .get("agents", &id_of(&r))
            .await?
            .ok_or("row missing".to_string())?;
        ensure_eq!(s(&got, "name"), n, "get returns it unchanged");
        let found = db
            .read("agents", &Query::new().filter(col("name").eq(n)))
            .await?;
        ensure_eq!(found.len(), 1, "{n:?} compares equal to itself");
    }
    ensure_eq!(
        read_names(&db, col("name").eq("école")).await?.len(),
        0,
        "composed é differs from e + combining accent"
    );
    ensure_eq!(
        read_names(&db, col("name").like("%🚀")).await?,
        strs(&["🤖 agent 🚀"])
    );
    Ok(())
}

async fn edge_large_values(db: Db) -> CaseResult {
    db.create_table(
        &TableSchema::new("documents")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("body"))
            .column(ColumnDef::json("doc")),
    )
    .await?;
    let big = "x€".repeat(1024 * 1024 / 4); // 4 bytes each: 1 MiB
    let mut nested = json!({"leaf": [1, 2.5, "three", null, true]});
    for i in 0..100 {
        nested = json!({"level": i, "child": nested});
    }
    let r = db
        .create("documents", row(json!({"body": big, "doc": nested})))
        .await?;
    let got = db
        .get("documents", &id_of(&r))
        .await?
        .ok_or("row missing".to_string())?;
    ensure!(
        got.get("body").and_then(Value::as_str) == Some(big.as_str()),
        "1 MiB text round-trips"
    );
    ensure!(
        got.get("doc") == Some(&nested),
        "deeply nested JSON round-trips"
    );
    Ok(())
}

async fn edge_concurrent_creates(db: Db) -> CaseResult {
    agents(&db).await?;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                let r = db
                    .create("agents", row(json!({"name": format!("w{t}-{i}")})))
                    .await?;
                ids.push(s(&r, "id"));
            }
            Ok::<_, truststream_core::Error>(ids)
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        let got = task
            .await
            .map_err(|e| Failure::new(format!("task failed: {e}")))??;
        ids.extend(got);
    }
    ensure_eq!(ids.len(), 400, "400 distinct ids");
    ensure_eq!(count_rows(&db, "agents").await?, 400, "400 rows stored");
    Ok(())
}

async fn edge_concurrent_updates(db: Db) -> CaseResult {
    agents(&db).await?;
    let a = add(&db, json!({"name": "contended", "performance_score": 0.0})).await?;
    let id = id_of(&a);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (db, id) = (db.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                db.update(
                    "agents",
                    &id,
                    row(json!({"performance_score": (t * 100 + i) as f64})),
                )
                .await?;
            }
            Ok::<_, truststream_core::Error>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| Failure::new(format!("task failed: {e}")))??;
    }
    let rows = db.read("agents", &Query::new()).await?;
    ensure_eq!(rows.len(), 1, "still exactly one row");
    let score = num(&rows[0], "performance_score").ok_or("score lost".to_string())?;
    ensure!(
        (0..8).any(|t| score == (t * 100 + 19) as f64),
        "final score {score} is some writer's last write"
    );
    ensure_eq!(s(&rows[0], "name"), "contended");
    Ok(())
}

/// Every provider refuses a second statement in `raw_query` (SQLite would
/// run it, PostgreSQL refuses it): `InvalidInput`, and nothing it says is
/// done. A trailing `;`, whitespace or comment is still one statement.
async fn raw_one_statement_per_call(db: Db) -> CaseResult {
    agents(&db).await?;
    add(&db, json!({"name": "survivor"})).await?;
    let none = Params::new();
    for sql in [
        "SELECT 1 AS one; DROP TABLE agents",
        "SELECT 1 AS one;DELETE FROM agents;",
        "SELECT ';' AS semi; DELETE FROM agents",
        "SELECT 1 AS one; -- two\nDELETE FROM agents",
    ] {
        expect_kind(
            db.raw_query(sql, &none).await,
            ErrorKind::InvalidInput,
            &format!("raw_query({sql:?})"),
        )?;
    }
    let rows = db.read("agents", &Query::new()).await?;
    ensure_eq!(rows.len(), 1, "the table and its row survive");
    ensure_eq!(s(&rows[0], "name"), "survivor");
    for sql in [
        "SELECT COUNT(*) AS n FROM agents;",
        "SELECT COUNT(*) AS n FROM agents ; \n",
        "SELECT COUNT(*) AS n FROM agents; -- counted",
        "SELECT COUNT(*) AS n FROM agents /* ; */",
    ] {
        let rows = db.raw_query(sql, &none).await?;
        ensure_eq!(rows.len(), 1, "{sql:?} is one statement");
        let n = rows[0].get("n").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        ensure_eq!(n, Some(1), "{sql:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------- schema

async fn schema_create_twice(db: Db) -> CaseResult {
    agents(&db).await?;
    let a = add(&db, json!({"name": "kept"})).await?;
    expect_kind(
        db.create_table(&agents_schema()).await,
        ErrorKind::Conflict,
        "second create_table",
    )?;
    db.create_table(&agents_schema().if_not_exists()).await?;
    ensure_eq!(
        db.read("agents", &Query::new()).await?,
        vec![a],
        "if_not_exists leaves the data alone"
    );
    expect_kind(
        db.create_table(&TableSchema::new("no_pk").column(ColumnDef::text("x")))
            .await,
        ErrorKind::InvalidInput,
        "table without a primary key",
    )?;
    Ok(())
}

async fn schema_drop_table(db: Db) -> CaseResult {
    agents(&db).await?;
    add(&db, json!({"name": "a"})).await?;
    db.drop_table("agents", false).await?;
    expect_kind(
        db.read("agents", &Query::new()).await,
        ErrorKind::NotFound,
        "read after drop",
    )?;
    expect_kind(
        db.drop_table("agents", false).await,
        ErrorKind::NotFound,
        "drop of a missing table",
    )?;
    db.drop_table("agents", true).await?;
    agents(&db).await?;
    ensure_eq!(
        count_rows(&db, "agents").await?,
        0,
        "re-created table is empty"
    );
    Ok(())
}

async fn schema_alter_table(db: Db) -> CaseResult {
    agents(&db).await?;
    let a = add(&db, json!({"name": "a"})).await?;
    db.alter_table(
        "agents",
        &[AlterTable::AddColumn(
            ColumnDef::integer("level").not_null().default_value(1),
        )],
    )
    .await?;
    let got = db
        .get("agents", &id_of(&a))
        .await?
        .ok_or("row missing".to_string())?;
    ensure_eq!(
        got.get("level"),
        Some(&json!(1)),
        "existing rows get the default"
    );
    db.alter_table("agents", &[AlterTable::AddColumn(ColumnDef::text("notes"))])
        .await?;
    let got = db
        .get("agents", &id_of(&a))
        .await?
        .ok_or("row missing".to_string())?;
    ensure_eq!(
        got.get("notes"),
        Some(&Value::Null),
        "nullable column without default is null"
    );
    expect_kind(
        db.alter_table(
            "agents",
            &[AlterTable::AddColumn(ColumnDef::text("must").not_null())],
        )
        .await,
        ErrorKind::InvalidInput,
        "NOT NULL without default on a non-empty table",
    )?;
    db.alter_table(
        "agents",
        &[AlterTable::RenameColumn {
            from: "notes".into(),
            to: "remarks".into(),
        }],
    )
    .await?;
    let b = add(&db, json!({"name": "b", "remarks": "renamed", "level": 3})).await?;
    ensure_eq!(s(&b, "remarks"), "renamed");
    ensure_eq!(
        read_names(&db, col("remarks").eq("renamed")).await?,
        strs(&["b"])
    );
    expect_kind(
        db.read("agents", &Query::new().filter(col("notes").is_null()))
            .await,
        ErrorKind::InvalidInput,
        "old name is gone",
    )?;
    db.alter_table("agents", &[AlterTable::DropColumn("remarks".into())])
        .await?;
    let got = db
        .get("agents", &id_of(&b))
        .await?
        .ok_or("row missing".to_string())?;
    ensure!(
        !got.contains_key("remarks"),
        "dropped column gone from rows"
    );
    ensure_eq!(got.get("level"), Some(&json!(3)));
    expect_kind(
        db.alter_table("agents", &[AlterTable::DropColumn("id".into())])
            .await,
        ErrorKind::InvalidInput,
        "drop primary key",
    )?;
    expect_kind(
        db.alter_table("ghosts", &[AlterTable::DropColumn("x".into())])
            .await,
        ErrorKind::NotFound,
        "alter missing table",
    )?;
    Ok(())
}

async fn schema_unique_index(db: Db) -> CaseResult {
    agents(&db).await?;
    add(&db, json!({"name": "dup"})).await?;
    add(&db, json!({"name": "dup"})).await?;
    expect_kind(
        db.create_index(&IndexSpec::new("agents", ["name"]).unique())
            .await,
        ErrorKind::Conflict,
        "unique index over existing duplicates",
    )?;
    db.create_index(&IndexSpec::new("agents", ["type", "status"]))
        .await?;
    db.create_index(
        &IndexSpec::new("agents", ["performance_score"])
            .unique()
            .named("agents_score_uq"),
    )
    .await?;
    add(&db, json!({"name": "x", "performance_score": 1.0})).await?;
    expect_kind(
        db.create(
            "agents",
            row(json!({"name": "y", "performance_score": 1.0})),
        )
        .await,
        ErrorKind::Conflict,
        "unique index enforced",
    )?;
    add(&db, json!({"name": "z"})).await?;
    ensure_eq!(count_rows(&db, "agents").await?, 4, "nulls never conflict");
    expect_kind(
        db.create_index(&IndexSpec::new("agents", ["name"]).named("agents_score_uq"))
            .await,
        ErrorKind::Conflict,
        "index name taken",
    )?;
    db.create_index(
        &IndexSpec::new("agents", ["name"])
            .named("agents_score_uq")
            .if_not_exists(),
    )
    .await?;
    expect_kind(
        db.create_index(&IndexSpec::new("agents", ["colour"])).await,
        ErrorKind::InvalidInput,
        "index on a missing column",
    )?;
    Ok(())
}

// ---------------------------------------------------------------- change feed

async fn changes_insert_update_delete(db: Db) -> CaseResult {
    agents(&db).await?;
    let mut feed = db.subscribe_changes(Some("agents")).await?;
    let a = add(&db, json!({"name": "watched"})).await?;
    let u = db
        .update("agents", &id_of(&a), row(json!({"status": "paused"})))
        .await?;
    db.delete("agents", &id_of(&a)).await?;
    let c = next_change(&mut feed).await?;
    ensure_eq!((c.table.as_str(), c.kind), ("agents", ChangeKind::Insert));
    ensure_eq!(c.key, id_of(&a));
    ensure_eq!(c.new.as_ref(), Some(&a), "insert carries the new row");
    ensure!(c.old.is_none());
    let c = next_change(&mut feed).await?;
    ensure_eq!(c.kind, ChangeKind::Update);
    ensure_eq!(c.old.as_ref(), Some(&a), "update carries the old row");
    ensure_eq!(c.new.as_ref(), Some(&u), "and the new row");
    let c = next_change(&mut feed).await?;
    ensure_eq!(c.kind, ChangeKind::Delete);
    ensure_eq!(c.key, id_of(&a));
    ensure!(c.new.is_none());
    ensure_eq!(
        c.old.as_ref().and_then(|r| r.get("id")),
        Some(&id_of(&a)),
        "delete carries the old row"
    );
    Ok(())
}

async fn changes_table_filter(db: Db) -> CaseResult {
    agents(&db).await?;
    metrics(&db).await?;
    let mut only_agents = db.subscribe_changes(Some("agents")).await?;
    let mut all = db.subscribe_changes(None).await?;
    db.create("agent_metrics", row(json!({"task_count": 1})))
        .await?;
    let a = add(&db, json!({"name": "a"})).await?;
    let c = next_change(&mut only_agents).await?;
    ensure_eq!(c.table, "agents", "filtered feed skips other tables");
    ensure_eq!(c.key, id_of(&a));
    ensure_eq!(next_change(&mut all).await?.table, "agent_metrics");
    ensure_eq!(next_change(&mut all).await?.table, "agents");
    Ok(())
}

async fn changes_batch_and_tx(db: Db) -> CaseResult {
    agents(&db).await?;
    allocations(&db).await?;
    let mut feed = db.subscribe_changes(None).await?;
    db.create_many(
        "agents",
        vec![row(json!({"name": "b1"})), row(json!({"name": "b2"}))],
    )
    .await?;
    let agent_id = uuid::Uuid::new_v4().to_string();
    db.transaction(vec![
        Operation::Create {
            table: "agents".into(),
            data: row(json!({"id": agent_id, "name": "t"})),
        },
        Operation::Create {
            table: "resource_allocations".into(),
            data: row(json!({"agent_id": agent_id, "allocation_key": "k"})),
        },
    ])
    .await?;
    let mut got = Vec::new();
    for _ in 0..4 {
        let c = next_change(&mut feed).await?;
        ensure_eq!(c.kind, ChangeKind::Insert);
        got.push(c.table);
    }
    ensure_eq!(
        got,
        vec!["agents", "agents", "agents", "resource_allocations"]
    );
    Ok(())
}

async fn changes_rollback(db: Db) -> CaseResult {
    agents(&db).await?;
    let mut feed = db.subscribe_changes(None).await?;
    let dup = uuid::Uuid::new_v4().to_string();
    let r = db
        .transaction(vec![
            Operation::Create {
                table: "agents".into(),
                data: row(json!({"id": dup, "name": "first"})),
            },
            Operation::Create {
                table: "agents".into(),
                data: row(json!({"id": dup, "name": "dup"})),
            },
        ])
        .await;
    expect_kind(r, ErrorKind::Conflict, "duplicate inside the transaction")?;
    let r = db
        .create_many(
            "agents",
            vec![row(json!({"name": "ok"})), row(json!({"name": null}))],
        )
        .await;
    expect_kind(r, ErrorKind::InvalidInput, "bad batch")?;
    let marker = add(&db, json!({"name": "marker"})).await?;
    let c = next_change(&mut feed).await?;
    ensure_eq!(
        c.key,
        id_of(&marker),
        "first change seen is the marker, nothing from rolled-back writes"
    );
    Ok(())
}
