//! `/rest/v1` JSON and full-text operators as postgrest-js sends them:
//! `cs`/`cd`/`ov` with array literals (`{a,b}`) and JSON, `fts`/`plfts`/
//! `phfts`/`wfts` with an optional `(config)`, `not.` and inside `or=()`,
//! over memory, SQLite and PostgreSQL; malformed values, wrong column types
//! and hostile configuration names answer PostgREST-shaped 400s, and a
//! provider without text search says so (0A000). PostgreSQL comes from
//! `truststream_db_postgres::testing` (skipped with a message outside CI
//! when it is missing).

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common {
    pub mod rest_util;
}

use std::sync::Arc;

use common::rest_util::{json, start, start_on, Backend, Env};
use reqwest::Method;
use serde_json::{json, Value};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
use truststream_serve::{TableAction, TablePolicy};

fn items() -> TableSchema {
    TableSchema::new("items")
        .column(ColumnDef::integer("id").primary_key())
        .column(ColumnDef::json("tags"))
        .column(ColumnDef::json("meta"))
        .column(ColumnDef::text("body"))
}

fn policies() -> Vec<(&'static str, TablePolicy)> {
    vec![(
        "items",
        TablePolicy {
            anon: vec![TableAction::Select],
            ..TablePolicy::default()
        },
    )]
}

async fn seed(e: &Env) {
    let rows = json!([
        {"id": 1, "tags": ["a", "b"], "meta": {"k": 1, "lang": "en"}, "body": "The lazy dog sleeps"},
        {"id": 2, "tags": ["b", "c,d"], "meta": {"k": 2}, "body": "Cats are jumping"},
        {"id": 3, "tags": [1, 2], "meta": {}, "body": "a quick fox"},
        {"id": 4, "tags": null, "meta": null, "body": null}
    ]);
    let (s, v) = json(e.service(Method::POST, "items").json(&rows)).await;
    assert_eq!(s, 201, "{v}");
}

/// The ids `GET items?<q>` answers (200 expected), in id order.
async fn ids(e: &Env, q: &str) -> Vec<i64> {
    let (s, v) = json(e.service(Method::GET, &format!("items?select=id&order=id&{q}"))).await;
    assert_eq!(s, 200, "{q}: {v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// `GET items?<q>`: (status, code).
async fn error(e: &Env, q: &str) -> (u16, String, Value) {
    let (s, v) = json(e.service(Method::GET, &format!("items?{q}"))).await;
    (s, v["code"].as_str().unwrap_or("").to_string(), v)
}

async fn json_operators(e: &Env) {
    seed(e).await;
    assert_eq!(ids(e, "tags=cs.{a}").await, [1]);
    assert_eq!(ids(e, "tags=cs.{b}").await, [1, 2]);
    assert_eq!(
        ids(e, "tags=cs.%7B%22c%2Cd%22%7D").await,
        [2],
        "quoted element"
    );
    assert_eq!(ids(e, "tags=cs.[\"a\",\"b\"]").await, [1]);
    assert_eq!(ids(e, "tags=cs.{1}").await, [3], "numbers stay numbers");
    assert_eq!(ids(e, "meta=cs.{\"k\":1}").await, [1]);
    assert_eq!(ids(e, "meta=cs.{}").await, [1, 2, 3]);
    assert_eq!(ids(e, "tags=cd.{a,b,c,d}").await, [1]);
    assert_eq!(
        ids(e, "meta=cd.{\"k\":1,\"lang\":\"en\",\"x\":0}").await,
        [1, 3]
    );
    assert_eq!(ids(e, "tags=ov.{c,a}").await, [1]);
    assert_eq!(ids(e, "tags=ov.{z,2}").await, [3]);
    assert_eq!(ids(e, "tags=ov.[\"b\"]").await, [1, 2]);
    assert_eq!(ids(e, "tags=not.cs.{a}").await, [2, 3], "NULL is left out");
    assert_eq!(ids(e, "tags=not.ov.{a,b}").await, [3]);
    assert_eq!(
        ids(e, "or=(tags.cs.{a},meta.cs.\"{\\\"k\\\":2}\")").await,
        [1, 2]
    );
    assert_eq!(ids(e, "and=(tags.cs.{b},not.tags.cs.{a})").await, [2]);
    // A write filtered by cs.
    let (s, _) = json(
        e.service(Method::PATCH, "items?tags=cs.{%22c%2Cd%22}")
            .json(&json!({"body": "changed"})),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(ids(e, "body=eq.changed").await, [2]);

    for (q, code) in [
        ("tags=cs.notjson", "22P02"),
        ("tags=cs.{a", "22P02"),
        ("tags=cs.{a,NULL}", "22P02"),
        ("tags=ov.{\"a\":1}", "22P02"),
        ("tags=ov.[{\"a\":1}]", "PGRST100"),
        ("tags=ov.5", "22P02"),
        ("body=cs.{a}", "42883"),
        ("id=ov.{1}", "42883"),
        ("tags=cs(x).{a}", "PGRST100"),
    ] {
        let (s, c, v) = error(e, q).await;
        assert_eq!((s, c.as_str()), (400, code), "{q}: {v}");
    }
}

/// Hostile or malformed text-search configurations never reach a query.
async fn bad_text_search(e: &Env) {
    for q in [
        "body=fts(english');drop table items;--).x",
        "body=fts(english.x",
        "body=plfts(a b).x",
        "body=wfts(1abc).x",
        "body=phfts().x",
        "body=fts(a.b.c).x",
    ] {
        let (s, c, v) = error(e, q).await;
        assert_eq!((s, c.as_str()), (400, "PGRST100"), "{q}: {v}");
        assert!(!v.to_string().contains("SELECT"), "{q}: {v}");
    }
    let (s, c, v) = error(e, "tags=fts.a").await;
    assert_eq!((s, c.as_str()), (400, "42883"), "{v}");
    let (_, v) = json(e.service(Method::GET, "items?select=id")).await;
    assert_eq!(v.as_array().unwrap().len(), 4, "the table is intact");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_operators_over_memory_and_sqlite() {
    for backend in [Backend::Memory, Backend::Sqlite] {
        let e = start(backend, vec![items()], policies(), |_| {}).await;
        json_operators(&e).await;
        bad_text_search(&e).await;
        // No text search here: 0A000 naming the operator.
        let (s, c, v) = error(&e, "body=plfts(english).lazy").await;
        assert_eq!((s, c.as_str()), (400, "0A000"), "{v}");
        assert!(v["message"].as_str().unwrap().contains("plfts"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_and_text_search_over_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let db: Arc<dyn Database> =
        Arc::new(PgDatabase::open(scratch.config("operators")).await.unwrap());
    let e = start_on(db, None, vec![items()], policies(), |_| {}).await;
    json_operators(&e).await;
    bad_text_search(&e).await;
    let (s, _) = json(
        e.service(Method::PATCH, "items?id=eq.2")
            .json(&json!({"body": "Cats are jumping"})),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(ids(&e, "body=fts(english).lazy").await, [1]);
    assert_eq!(ids(&e, "body=plfts(english).jumping+cat").await, [2]);
    assert_eq!(ids(&e, "body=phfts(english).lazy+dog").await, [1]);
    assert_eq!(
        ids(&e, "body=phfts(english).dog+lazy").await,
        Vec::<i64>::new()
    );
    assert_eq!(ids(&e, "body=wfts(english).fox+or+sleeping").await, [1, 3]);
    assert_eq!(ids(&e, "body=fts(pg_catalog.simple).fox").await, [3]);
    assert_eq!(ids(&e, "body=fts.fox").await, [3]);
    assert_eq!(
        ids(&e, "body=not.plfts(english).lazy").await,
        [2, 3],
        "NULL left out"
    );
    assert_eq!(
        ids(
            &e,
            "or=(body.plfts(english).lazy,body.wfts(english).\"quick fox\")"
        )
        .await,
        [1, 3]
    );
    let (s, c, v) = error(&e, "body=fts(no_such_config).x").await;
    assert_eq!(s, 400, "{v}");
    assert_ne!(c, "XX000", "{v}");
    let (s, _, v) = error(&e, "body=fts(english).cat+dog").await;
    assert_eq!(s, 400, "a tsquery syntax error: {v}");
    drop(e);
    scratch.cleanup().await.unwrap();
}
