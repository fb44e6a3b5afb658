//! Unit tests for what the conformance suite cannot see: lag, disconnect,
//! limits, configuration, rollback details.

use std::time::Duration;

use serde_json::json;
use truststream_core_db::{
    col, AlterTable, ColumnDef, ColumnDefault, Database, DbRegistry, ErrorKind, HealthStatus,
    IndexSpec, Operation, Params, Query, Row, TableSchema,
};

use crate::{register, MemoryConfig, MemoryDatabase};

fn row(v: serde_json::Value) -> Row {
    v.as_object().cloned().unwrap()
}

async fn with_items(config: MemoryConfig) -> MemoryDatabase {
    let db = MemoryDatabase::with_config(config);
    db.create_table(
        &TableSchema::new("items")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("name").not_null())
            .column(ColumnDef::text("code").unique()),
    )
    .await
    .unwrap();
    db
}

#[tokio::test]
async fn lagging_subscriber_gets_one_error_then_continues() {
    let db = with_items(MemoryConfig {
        change_feed_capacity: 4,
        ..MemoryConfig::default()
    })
    .await;
    let mut feed = db.subscribe_changes(Some("items")).await.unwrap();
    for i in 0..10 {
        db.create("items", row(json!({"name": format!("n{i}")})))
            .await
            .unwrap();
    }
    let err = feed.recv().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("lost 6 changes"), "{err}");
    // The four newest changes are still delivered, in order.
    for i in 6..10 {
        let c = feed.recv().await.unwrap().unwrap();
        assert_eq!(c.new.unwrap()["name"], json!(format!("n{i}")));
    }
    db.create("items", row(json!({"name": "after"})))
        .await
        .unwrap();
    let c = feed.recv().await.unwrap().unwrap();
    assert_eq!(c.new.unwrap()["name"], json!("after"));
}

#[tokio::test]
async fn disconnect_makes_calls_unavailable_and_keeps_data() {
    let db = with_items(MemoryConfig::default()).await;
    db.create("items", row(json!({"name": "kept"})))
        .await
        .unwrap();
    db.disconnect().await.unwrap();
    let h = db.health().await;
    assert_eq!(h.status, HealthStatus::Unhealthy);
    assert!(h.message.is_some());
    for e in [
        db.read("items", &Query::new()).await.unwrap_err(),
        db.create("items", row(json!({"name": "x"})))
            .await
            .unwrap_err(),
        db.get("items", &json!(1)).await.unwrap_err(),
        db.raw_query("SELECT 1", &Params::new()).await.unwrap_err(),
        db.drop_table("items", false).await.unwrap_err(),
        db.subscribe_changes(None).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.is_retryable());
    }
    db.connect().await.unwrap();
    assert!(db.health().await.is_healthy());
    let rows = db.read("items", &Query::new()).await.unwrap();
    assert_eq!(rows.len(), 1, "data survives a disconnect");
}

#[tokio::test]
async fn max_rows_per_table_is_too_large() {
    let db = with_items(MemoryConfig {
        max_rows_per_table: Some(3),
        ..MemoryConfig::default()
    })
    .await;
    for i in 0..3 {
        db.create("items", row(json!({"name": format!("n{i}")})))
            .await
            .unwrap();
    }
    let e = db
        .create("items", row(json!({"name": "too many"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert!(e.message().contains("max_rows_per_table"), "{e}");
    db.delete("items", &json!(1)).await.unwrap();
    let e = db
        .create_many(
            "items",
            vec![row(json!({"name": "a"})), row(json!({"name": "b"}))],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    db.create("items", row(json!({"name": "fits"})))
        .await
        .unwrap();
}

#[tokio::test]
async fn registry_builds_fresh_databases_and_rejects_bad_config() {
    let mut reg = DbRegistry::new("database");
    register(&mut reg);
    let a = reg.build("memory", json!({}), ()).await.unwrap();
    let b = reg
        .build("memory", serde_json::Value::Null, ())
        .await
        .unwrap();
    a.create_table(&TableSchema::new("t").column(ColumnDef::integer("id").primary_key()))
        .await
        .unwrap();
    assert_eq!(
        b.read("t", &Query::new()).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "each build is a separate database"
    );
    let e = reg
        .build("memory", json!({"max_rows": 5}), ())
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let caps = a.capabilities();
    assert!(caps.transactions && caps.joins && caps.aggregates && caps.schema);
    assert!(caps.change_feed && caps.unique_constraints && !caps.raw_sql);
    assert_eq!(
        caps.change_feed_scope,
        Some(truststream_core_db::ChangeFeedScope::Instance)
    );
    assert_eq!(a.info().name, "memory");
}

#[tokio::test]
async fn rollback_restores_rows_keys_and_counters() {
    let db = with_items(MemoryConfig::default()).await;
    let first = db
        .create("items", row(json!({"name": "a", "code": "A"})))
        .await
        .unwrap();
    assert_eq!(first["id"], json!(1));
    let e = db
        .transaction(vec![
            Operation::Update {
                table: "items".into(),
                id: json!(1),
                data: row(json!({"code": "Z"})),
            },
            Operation::Create {
                table: "items".into(),
                data: row(json!({"name": "b", "code": "A"})),
            },
            Operation::Create {
                table: "items".into(),
                data: row(json!({"name": "c", "code": "Z"})),
            },
        ])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e
        .context()
        .iter()
        .any(|(k, v)| *k == "operation_index" && v == "2"));
    // The update was undone, so code "Z" is free and "A" is taken again.
    let got = db.get("items", &json!(1)).await.unwrap().unwrap();
    assert_eq!(got, first);
    db.create("items", row(json!({"name": "z", "code": "Z"})))
        .await
        .unwrap();
    let dup = db
        .create("items", row(json!({"name": "a2", "code": "A"})))
        .await;
    assert_eq!(dup.unwrap_err().kind(), ErrorKind::Conflict);
    // Auto-increment values used by the rolled-back inserts are handed out again.
    let rows = db
        .read("items", &Query::new().order_by_asc("id"))
        .await
        .unwrap();
    let ids: Vec<_> = rows.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, vec![json!(1), json!(2)]);
}

#[tokio::test]
async fn failed_alter_table_changes_nothing() {
    let db = with_items(MemoryConfig::default()).await;
    db.create("items", row(json!({"name": "a"}))).await.unwrap();
    let e = db
        .alter_table(
            "items",
            &[
                AlterTable::AddColumn(ColumnDef::integer("level")),
                AlterTable::DropColumn("missing".into()),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let r = db.get("items", &json!(1)).await.unwrap().unwrap();
    assert!(!r.contains_key("level"), "first change was not applied");
    // Renaming keeps uniqueness on the renamed column; dropping removes it.
    db.alter_table(
        "items",
        &[AlterTable::RenameColumn {
            from: "code".into(),
            to: "sku".into(),
        }],
    )
    .await
    .unwrap();
    db.create("items", row(json!({"name": "b", "sku": "S"})))
        .await
        .unwrap();
    let dup = db
        .create("items", row(json!({"name": "c", "sku": "S"})))
        .await;
    assert_eq!(dup.unwrap_err().kind(), ErrorKind::Conflict);
    db.alter_table("items", &[AlterTable::DropColumn("sku".into())])
        .await
        .unwrap();
    // The unique index went with the column, so its name is free again.
    db.create_index(&IndexSpec::new("items", ["name"]).named("items_code_key"))
        .await
        .unwrap();
}

#[tokio::test]
async fn subscribe_to_missing_table_is_not_found() {
    let db = MemoryDatabase::new();
    let e = db.subscribe_changes(Some("nope")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = db.subscribe_changes(Some("bad name")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn errors_name_the_operation() {
    let db = with_items(MemoryConfig::default()).await;
    let e = db.read("ghost", &Query::new()).await.unwrap_err();
    assert_eq!(e.operation(), Some("db.read"));
    let e = db
        .update("items", &json!(99), row(json!({"name": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.operation(), Some("db.update"));
    let e = db.get("items", &json!("seven")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "key of the wrong type");
}

#[tokio::test]
async fn like_only_on_text_and_filters_type_check_literals() {
    let db = with_items(MemoryConfig::default()).await;
    let e = db
        .read("items", &Query::new().filter(col("id").like("1%")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = db
        .read("items", &Query::new().filter(col("name").eq(5)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("name"), "{e}");
}

#[tokio::test]
async fn change_feed_ends_when_database_is_dropped() {
    let db = with_items(MemoryConfig::default()).await;
    let mut feed = db.subscribe_changes(None).await.unwrap();
    drop(db);
    let next = tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .unwrap();
    assert!(next.is_none());
}

/// Foreign keys are checked when each statement ends (`NO ACTION`): one
/// `delete_many` may remove a parent and its child together; a violation
/// undoes the whole call, and in a transaction the whole transaction; a
/// renamed referenced column carries the other table's reference along;
/// a referenced column cannot be dropped.
#[tokio::test]
async fn foreign_keys_are_checked_per_statement() {
    let db = MemoryDatabase::new();
    db.create_table(
        &TableSchema::new("nodes")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::integer("parent"))
            .references("parent", "nodes", "id"),
    )
    .await
    .unwrap();
    db.create_many(
        "nodes",
        vec![
            row(json!({"id": 2, "parent": 1})),
            row(json!({"id": 1, "parent": null})),
        ],
    )
    .await
    .expect("a child inserted before its parent in one statement");
    let e = db.delete("nodes", &json!(1)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.message().contains("nodes_parent_fkey"), "{e}");
    let tx = db
        .transaction(vec![
            Operation::Create {
                table: "nodes".into(),
                data: row(json!({"id": 3, "parent": 2})),
            },
            Operation::Create {
                table: "nodes".into(),
                data: row(json!({"id": 4, "parent": 99})),
            },
        ])
        .await
        .unwrap_err();
    assert_eq!(tx.kind(), ErrorKind::Conflict, "{tx}");
    assert!(
        db.get("nodes", &json!(3)).await.unwrap().is_none(),
        "rolled back"
    );
    assert_eq!(
        db.delete_many("nodes", &col("id").gt(0)).await.unwrap(),
        2,
        "parent and child together"
    );

    db.create_table(&TableSchema::new("users").column(ColumnDef::integer("id").primary_key()))
        .await
        .unwrap();
    db.create_table(
        &TableSchema::new("posts")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::integer("author"))
            .references("author", "users", "id"),
    )
    .await
    .unwrap();
    db.alter_table(
        "users",
        &[AlterTable::RenameColumn {
            from: "id".into(),
            to: "uid".into(),
        }],
    )
    .await
    .unwrap();
    let posts = db.describe_table("posts").await.unwrap().unwrap();
    assert_eq!(posts.foreign_keys[0].referenced_columns, ["uid"]);
    db.create("users", row(json!({"uid": 7}))).await.unwrap();
    db.create("posts", row(json!({"id": 1, "author": 7})))
        .await
        .unwrap();
    db.alter_table(
        "users",
        &[AlterTable::AddColumn(ColumnDef::integer("code").unique())],
    )
    .await
    .unwrap();
    db.create_table(
        &TableSchema::new("badges")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::integer("code"))
            .references("code", "users", "code"),
    )
    .await
    .unwrap();
    let e = db
        .alter_table("users", &[AlterTable::DropColumn("code".into())])
        .await
        .unwrap_err();
    assert!(e.message().contains("badges_code_fkey"), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}
