//! Which path serves what, per configuration: capabilities that tell the
//! truth, `Unsupported` naming the setting, `prefer = "sql"`, registration,
//! connect/disconnect, and no secret in `Debug`.

mod support;

use std::sync::Arc;

use serde_json::json;
use support::{Calls, Recording};
use truststream_core::ErrorKind;
use truststream_core_db::{
    ColumnDef, Database, DbRegistry, Operation, Params, Query, Row, TableSchema,
};
use truststream_db_supabase::{Prefer, SupabaseDb, SupabaseDbConfig};

fn table() -> TableSchema {
    TableSchema::new("t")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::text("name"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_only_refuses_what_rest_cannot_do_and_names_the_setting() {
    let mem: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    mem.create_table(&table()).await.expect("t");
    let served = support::serve(mem, vec![]).await.expect("serve");
    let db = support::rest_only(&served);
    let c = db.capabilities();
    assert!(!c.raw_sql && !c.transactions && !c.schema && !c.joins && !c.aggregates);
    assert!(!c.change_feed && c.row_security && c.unique_constraints);
    assert_eq!(c.sql_dialect, None);
    let errors = vec![
        db.raw_query("select 1", &Params::new()).await.map(|_| ()),
        db.transaction(vec![Operation::Delete {
            table: "t".into(),
            id: json!(1),
        }])
        .await
        .map(|_| ()),
        db.create_table(&table()).await,
        db.drop_table("t", true).await,
        db.describe_table("t").await.map(|_| ()),
        db.read("t", &Query::new().left_join("u", "t.id", "u.id"))
            .await
            .map(|_| ()),
        db.subscribe_changes(Some("t")).await.map(|_| ()),
    ];
    for r in errors {
        let e = r.expect_err("unsupported");
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(
            e.message().contains("pooler_url") || e.message().contains("with_change_feed"),
            "{e}"
        );
    }
    // CRUD works over REST alone (primary key `id`).
    let r = db
        .create(
            "t",
            json!({"id": 1, "name": "x"})
                .as_object()
                .cloned()
                .expect("o"),
        )
        .await
        .expect("create");
    assert_eq!(r["name"], json!("x"));
    assert_eq!(db.get("t", &json!(1)).await.expect("get"), Some(r));
    assert!(db.health().await.is_healthy());
    assert!(!format!("{db:?}").contains(served.server.keys.service_role()));

    // disconnect: calls fail (unapplied) until connect.
    db.disconnect().await.expect("disconnect");
    let e = db.read("t", &Query::new()).await.expect_err("disconnected");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_unapplied());
    db.connect().await.expect("connect");
    assert_eq!(db.read("t", &Query::new()).await.expect("read").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_tables_and_columns_over_rest() {
    let mem: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    mem.create_table(&table()).await.expect("t");
    let served = support::serve(mem, vec![]).await.expect("serve");
    let db = support::rest_only(&served);
    let e = db.read("nope", &Query::new()).await.expect_err("no table");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = db
        .read("nope", &Query::new().filter(truststream_core_db::or([])))
        .await
        .expect_err("no table, empty filter");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = db
        .read("t", &Query::new().where_eq("nope", 1))
        .await
        .expect_err("no column");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = db
        .create("t", json!({"id": "x"}).as_object().cloned().expect("o"))
        .await
        .expect_err("bad type");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = db
        .read("bad name", &Query::new())
        .await
        .expect_err("bad table name");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_sql_the_capabilities_are_the_backends_and_prefer_sql_routes_everything() {
    let mem: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let calls = Arc::new(Calls::default());
    let backend: Arc<dyn Database> = Arc::new(Recording {
        inner: mem.clone(),
        calls: calls.clone(),
        server: None,
        after_read: None,
    });
    let cfg = SupabaseDbConfig {
        prefer: Prefer::Sql,
        pooler_url: Some(truststream_core::Secret::new("postgres://unused")),
        ..SupabaseDbConfig::default()
    };
    let db = SupabaseDb::new(cfg).expect("prefer sql").with_sql(backend);
    assert_eq!(db.capabilities(), mem.capabilities());
    db.create_table(&table()).await.expect("create_table");
    let row: Row = json!({"id": 1, "name": "x"})
        .as_object()
        .cloned()
        .expect("o");
    db.create("t", row).await.expect("create");
    assert_eq!(db.read("t", &Query::new()).await.expect("read").len(), 1);
    assert_eq!(calls.all(), ["create_table", "create", "read"]);

    // prefer = "sql" without a backend: every call names the setting.
    let cfg = SupabaseDbConfig {
        prefer: Prefer::Sql,
        ..SupabaseDbConfig::default()
    };
    let db = SupabaseDb::new(cfg).expect("config");
    let e = db.read("t", &Query::new()).await.expect_err("no backend");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("pooler_url"), "{e}");
}

#[tokio::test]
async fn registers_as_supabase() {
    let mut reg = DbRegistry::new("database");
    truststream_db_supabase::register(&mut reg);
    assert!(reg.contains("supabase"));
    let db = reg
        .build(
            "supabase",
            json!({"url": "http://127.0.0.1:9", "anon_key": "k", "request_timeout_ms": 1000}),
            (),
        )
        .await
        .expect("build");
    assert_eq!(db.info().name, "supabase");
    let Err(e) = reg
        .build(
            "supabase",
            json!({"url": "http://h", "anon_key": "k", "bogus": 1}),
            (),
        )
        .await
    else {
        panic!("unknown field accepted")
    };
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let Err(e) = reg
        .build(
            "supabase",
            json!({"url": "http://h", "service_role_key": "hunter2-secret", "anon_key": "a"}),
            (),
        )
        .await
    else {
        panic!("two keys accepted")
    };
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
