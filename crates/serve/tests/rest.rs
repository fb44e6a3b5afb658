//! `/rest/v1` over db-memory (and db-sqlite for typing), driven over HTTP
//! as postgrest-js drives it.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common {
    pub mod rest_util;
}

use common::rest_util::{json, start, Backend, Env};
use reqwest::Method;
use serde_json::{json, Value};
use truststream_core_db::{ColumnDef, ColumnDefault, TableSchema};
use truststream_serve::{TableAction, TablePolicy};

fn todos() -> TableSchema {
    TableSchema::new("todos")
        .column(
            ColumnDef::integer("id")
                .primary_key()
                .default(ColumnDefault::AutoIncrement),
        )
        .column(ColumnDef::text("title").not_null())
        .column(ColumnDef::boolean("done").not_null().default_value(false))
        .column(ColumnDef::integer("priority"))
        .column(ColumnDef::float("score"))
        .column(ColumnDef::json("data"))
        .column(ColumnDef::text("slug").unique())
        .column(ColumnDef::timestamp("due"))
}

fn notes() -> TableSchema {
    TableSchema::new("notes")
        .column(
            ColumnDef::uuid("id")
                .primary_key()
                .default(ColumnDefault::RandomUuid),
        )
        .column(ColumnDef::text("body"))
        .column(ColumnDef::text("owner"))
}

fn owner_policy() -> TablePolicy {
    TablePolicy {
        anon: vec![],
        authenticated: TableAction::ALL.to_vec(),
        owner_column: Some("owner".into()),
        ..TablePolicy::default()
    }
}

async fn env(backend: Backend) -> Env {
    start(
        backend,
        vec![todos(), notes()],
        vec![
            (
                "todos",
                TablePolicy {
                    anon: vec![TableAction::Select],
                    ..TablePolicy::default()
                },
            ),
            ("notes", owner_policy()),
        ],
        |_| {},
    )
    .await
}

/// Five todos (ids 1..=5).
async fn seed(e: &Env) {
    let rows = json!([
        {"title": "alpha", "done": false, "priority": 1, "score": 1.5, "data": {"a": {"b": "x"}, "n": 1}, "slug": "a", "due": "2024-01-01T00:00:00Z"},
        {"title": "beta", "done": true, "priority": 2, "score": 2.5, "data": {"a": {"b": "y"}, "n": 2}, "slug": "b", "due": "2024-02-01T00:00:00Z"},
        {"title": "Gamma", "done": false, "priority": null, "score": 3.5, "data": null, "slug": "c", "due": null},
        {"title": "delta, the fourth", "done": true, "priority": 4, "score": null, "data": {"n": 4}, "slug": "d", "due": "2024-04-01T00:00:00Z"},
        {"title": "epsilon", "done": false, "priority": 5, "score": 5.5, "data": {"n": 5}, "slug": "e", "due": "2024-05-01T00:00:00Z"}
    ]);
    let (s, _) = json(
        e.service(
            Method::POST,
            "todos?columns=\"title\",\"done\",\"priority\",\"score\",\"data\",\"slug\",\"due\"",
        )
        .json(&rows),
    )
    .await;
    assert_eq!(s, 201);
}

fn titles(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| r["title"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn get_titles(e: &Env, q: &str) -> Vec<String> {
    let (s, v) = json(e.service(Method::GET, &format!("todos?select=title&{q}"))).await;
    assert_eq!(s, 200, "{q}: {v}");
    titles(&v)
}

#[tokio::test]
async fn filters_select_order_and_paging() {
    let e = env(Backend::Memory).await;
    seed(&e).await;
    assert_eq!(get_titles(&e, "order=id").await.len(), 5);
    assert_eq!(get_titles(&e, "priority=eq.2").await, ["beta"]);
    assert_eq!(
        get_titles(&e, "priority=gt.2&order=id").await,
        ["delta, the fourth", "epsilon"]
    );
    assert_eq!(
        get_titles(&e, "priority=lte.2&order=id").await,
        ["alpha", "beta"]
    );
    assert_eq!(
        get_titles(&e, "priority=neq.2&order=id").await,
        ["alpha", "delta, the fourth", "epsilon"]
    );
    assert_eq!(get_titles(&e, "title=like.*ta&order=id").await, ["beta"]);
    assert_eq!(get_titles(&e, "title=ilike.g*").await, ["Gamma"]);
    assert_eq!(
        get_titles(&e, "title=like(any).{a*,e*}&order=id").await,
        ["alpha", "epsilon"]
    );
    assert_eq!(
        get_titles(&e, "title=ilike(all).{*e*,*t*}&order=id").await,
        ["beta", "delta, the fourth"]
    );
    assert_eq!(
        get_titles(&e, "title=in.(alpha,\"delta, the fourth\")&order=id").await,
        ["alpha", "delta, the fourth"]
    );
    assert_eq!(get_titles(&e, "priority=is.null").await, ["Gamma"]);
    assert_eq!(
        get_titles(&e, "priority=not.is.null&order=id").await.len(),
        4
    );
    assert_eq!(
        get_titles(&e, "done=is.true&order=id").await,
        ["beta", "delta, the fourth"]
    );
    assert_eq!(
        get_titles(&e, "priority=not.eq.1&order=id").await,
        ["beta", "delta, the fourth", "epsilon"]
    );
    assert_eq!(
        get_titles(&e, "priority=isdistinct.1&order=id").await,
        ["beta", "Gamma", "delta, the fourth", "epsilon"]
    );
    assert_eq!(
        get_titles(
            &e,
            "or=(priority.eq.1,and(priority.gt.3,done.is.false))&order=id"
        )
        .await,
        ["alpha", "epsilon"]
    );
    assert_eq!(
        get_titles(
            &e,
            "and=(done.eq.false,or(title.eq.Gamma,priority.eq.5))&order=id"
        )
        .await,
        ["Gamma", "epsilon"]
    );
    assert_eq!(
        get_titles(&e, "not.or=(done.eq.true,priority.is.null)&order=id").await,
        ["alpha", "epsilon"]
    );
    // + is a space in query strings, and whitespace outside quotes in
    // select= is ignored.
    assert_eq!(
        get_titles(&e, "title=eq.delta,+the+fourth").await,
        ["delta, the fourth"]
    );
    // Order with nulls placement, limit and offset.
    assert_eq!(
        get_titles(&e, "order=priority.desc.nullslast&limit=2").await,
        ["epsilon", "delta, the fourth"]
    );
    assert_eq!(
        get_titles(&e, "order=priority.desc.nullsfirst&limit=2").await,
        ["Gamma", "epsilon"]
    );
    assert_eq!(
        get_titles(&e, "order=id&limit=2&offset=1").await,
        ["beta", "Gamma"]
    );

    // select: alias, several columns, *.
    let (s, v) = json(e.service(Method::GET, "todos?select= t:title , priority &id=eq.1")).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!([{"t": "alpha", "priority": 1}]));
    let (_, v) = json(e.service(Method::GET, "todos?id=eq.1")).await;
    assert_eq!(v[0]["slug"], "a");
    assert_eq!(v[0].as_object().unwrap().len(), 8, "* is every column");

    // Content-Range, count=exact, 206.
    let r = e
        .service(Method::GET, "todos?select=id&order=id&limit=2&offset=1")
        .header("Prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.headers()["content-range"], "1-2/5");
    assert_eq!(r.headers()["preference-applied"], "count=exact");
    let r = e
        .service(Method::GET, "todos?select=id&limit=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-range"], "0-1/*");
    let r = e
        .service(Method::GET, "todos?id=gt.100")
        .header("Prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-range"], "*/0");
    let r = e
        .service(Method::GET, "todos?done=eq.true")
        .header("Prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-range"], "0-1/2");
    let (s, v) = json(
        e.service(Method::GET, "todos?offset=10")
            .header("Prefer", "count=exact"),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (416, Some("PGRST103")));

    // HEAD: the headers, no body.
    let r = e
        .service(Method::HEAD, "todos?done=eq.false")
        .header("Prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-range"], "0-2/3");
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn json_paths_casts_single_object_and_csv() {
    let e = env(Backend::Memory).await;
    seed(&e).await;
    let (s, v) = json(e.service(
        Method::GET,
        "todos?select=id,data->a->>b,inner:data->a,n:data->n::text,score::int,priority::text&id=eq.1",
    ))
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!([{"id": 1, "b": "x", "inner": {"b": "x"}, "n": "1", "score": 2, "priority": "1"}])
    );

    let (s, v) = json(
        e.service(Method::GET, "todos?select=title&id=eq.2")
            .header("Accept", "application/vnd.pgrst.object+json"),
    )
    .await;
    assert_eq!((s, v), (200, json!({"title": "beta"})));
    let (s, v) = json(
        e.service(Method::GET, "todos?select=title&done=eq.true")
            .header("Accept", "application/vnd.pgrst.object+json"),
    )
    .await;
    assert_eq!(s, 406);
    assert_eq!(v["code"], "PGRST116");
    assert_eq!(v["details"], "The result contains 2 rows");
    let (s, v) = json(
        e.service(Method::GET, "todos?id=eq.99")
            .header("Accept", "application/vnd.pgrst.object+json"),
    )
    .await;
    assert_eq!(
        (s, v["details"].as_str()),
        (406, Some("The result contains 0 rows"))
    );

    let r = e
        .service(
            Method::GET,
            "todos?select=id,title&id=lte.4&order=id.desc&limit=2",
        )
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        r.text().await.unwrap(),
        "id,title\n4,\"delta, the fourth\"\n3,Gamma\n"
    );
}

/// Values typed by the column's type on SQLite: integers, booleans,
/// floats, timestamps; an unparsable value is 22P02.
#[tokio::test]
async fn values_are_typed_by_column_on_sqlite() {
    let e = env(Backend::Sqlite).await;
    seed(&e).await;
    assert_eq!(get_titles(&e, "priority=eq.5").await, ["epsilon"]);
    assert_eq!(
        get_titles(&e, "priority=in.(1,2)&order=id").await,
        ["alpha", "beta"]
    );
    assert_eq!(
        get_titles(&e, "done=eq.true&order=id").await,
        ["beta", "delta, the fourth"]
    );
    assert_eq!(
        get_titles(&e, "score=gt.3&order=id").await,
        ["Gamma", "epsilon"]
    );
    assert_eq!(
        get_titles(&e, "due=gte.2024-04-01&order=id").await,
        ["delta, the fourth", "epsilon"]
    );
    assert_eq!(
        get_titles(&e, "due=lt.2024-02-01T00:00:00%2B00:00").await,
        ["alpha"]
    );
    for (q, ty) in [
        ("priority=eq.five", "bigint"),
        ("priority=in.(1,x)", "bigint"),
        ("done=eq.maybe", "boolean"),
        ("score=gt.abc", "double precision"),
        ("due=gt.yesterday", "timestamp with time zone"),
    ] {
        let (s, v) = json(e.service(Method::GET, &format!("todos?{q}"))).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v["code"], "22P02", "{q}");
        assert!(v["message"].as_str().unwrap().contains(ty), "{q}: {v}");
    }
    // Writes and reads on SQLite too.
    let (s, v) = json(
        e.service(Method::PATCH, "todos?priority=gte.4")
            .header("Prefer", "return=representation")
            .json(&json!({"done": true})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    // tx=rollback on the SQL engine: run, then nothing kept.
    for (method, path, body) in [
        (Method::POST, "todos", Some(json!({"title": "ghost"}))),
        (Method::PATCH, "todos", Some(json!({"title": "ghost"}))),
        (Method::DELETE, "todos", None),
    ] {
        let mut r = e
            .service(method.clone(), path)
            .header("Prefer", "tx=rollback");
        if let Some(b) = body {
            r = r.json(&b);
        }
        let (s, v) = json(r).await;
        assert!(s == 201 || s == 204, "{method} {s} {v}");
    }
    assert_eq!(get_titles(&e, "order=id").await.len(), 5);
    assert!(get_titles(&e, "title=eq.ghost").await.is_empty());
    // A rolled-back insert still reports a real failure.
    let (s, v) = json(
        e.service(Method::POST, "todos")
            .header("Prefer", "tx=rollback")
            .json(&json!({"title": "dup", "slug": "a"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("23505")));
    // Upsert and a delete without filters on SQLite.
    let (s, v) = json(
        e.service(Method::POST, "todos?on_conflict=slug&select=title")
            .header(
                "Prefer",
                "resolution=merge-duplicates,return=representation",
            )
            .json(&json!([{"title": "A", "slug": "a"}, {"title": "Z", "slug": "z"}])),
    )
    .await;
    assert_eq!((s, v), (201, json!([{"title": "A"}, {"title": "Z"}])));
    let (s, _) = json(e.service(Method::DELETE, "todos")).await;
    assert_eq!(s, 204);
    assert!(get_titles(&e, "").await.is_empty());
}

#[tokio::test]
async fn unsupported_features_say_so() {
    let e = env(Backend::Memory).await;
    seed(&e).await;
    for q in [
        "title=fts.alpha",
        "title=plfts(english).alpha",
        "title=match.^a",
        "data->>n=eq.1",
    ] {
        let (s, v) = json(e.service(Method::GET, &format!("todos?{q}"))).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v["code"], "0A000", "{q}");
        let m = v["message"].as_str().unwrap();
        assert!(
            m.contains("not supported") || m.contains("needs PostgreSQL"),
            "{q}: {v}"
        );
    }
    let (s, v) = json(e.service(Method::GET, "todos?select=id,notes(body)")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")));
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("relationship between 'todos' and 'notes'"));
    let (s, v) = json(e.service(Method::GET, "todos?select=id,notes!inner(body)")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")));
    let (s, v) = json(e.service(Method::GET, "todos?select=count()")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST123")));
    let (s, v) = json(
        e.service(Method::POST, "rpc/do_things")
            .json(&json!({"a": 1})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("PGRST202")));
    assert!(v["details"]
        .as_str()
        .unwrap()
        .contains("functions are not supported"));
    let (s, v) = json(
        e.service(Method::PUT, "todos?id=eq.1")
            .json(&json!({"id": 1})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (405, Some("PGRST117")));
    let (s, v) = json(
        e.service(Method::GET, "todos")
            .header("Accept-Profile", "private"),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (406, Some("PGRST106")));
    let (s, _) = json(
        e.service(Method::GET, "todos")
            .header("Accept-Profile", "public"),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = json(
        e.service(Method::POST, "todos")
            .header("Content-Profile", "other")
            .json(&json!({"title": "x"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (406, Some("PGRST106")));
}

#[tokio::test]
async fn inserts() {
    let e = env(Backend::Memory).await;
    // One object, minimal: 201 and no body.
    let r = e
        .service(Method::POST, "todos")
        .json(&json!({"title": "one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert!(r.text().await.unwrap().is_empty());
    // Representation with select=: defaults filled in.
    let (s, v) = json(
        e.service(Method::POST, "todos?select=id,title,done")
            .header("Prefer", "return=representation")
            .json(&json!({"title": "two"})),
    )
    .await;
    assert_eq!(
        (s, v),
        (201, json!([{"id": 2, "title": "two", "done": false}]))
    );
    // single(): an object back.
    let (s, v) = json(
        e.service(Method::POST, "todos?select=title")
            .header("Prefer", "return=representation")
            .header("Accept", "application/vnd.pgrst.object+json")
            .json(&json!({"title": "three"})),
    )
    .await;
    assert_eq!((s, v), (201, json!({"title": "three"})));
    // headers-only: Location of the new row.
    let r = e
        .service(Method::POST, "todos")
        .header("Prefer", "return=headers-only")
        .json(&json!({"title": "four"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["location"], "/todos?id=eq.4");
    // Bulk with columns= (postgrest-js sends the union of keys): absent keys
    // are null; with missing=default they take the default.
    let (s, v) = json(
        e.service(
            Method::POST,
            "todos?columns=\"title\",\"done\",\"priority\"&select=title,done,priority",
        )
        .header("Prefer", "return=representation,missing=default")
        .json(&json!([{"title": "b1", "priority": 3}, {"title": "b2", "done": true}])),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v,
        json!([{"title": "b1", "done": false, "priority": 3}, {"title": "b2", "done": true, "priority": null}])
    );
    let (s, v) = json(
        e.service(
            Method::POST,
            "todos?columns=\"title\",\"priority\"&select=title,priority,slug",
        )
        .header("Prefer", "return=representation")
        .json(&json!([{"title": "c1", "priority": 3, "slug": "ignored"}, {"title": "c2"}])),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v,
        json!([{"title": "c1", "priority": 3, "slug": null}, {"title": "c2", "priority": null, "slug": null}])
    );
    // Different keys without columns=.
    let (s, v) = json(
        e.service(Method::POST, "todos")
            .json(&json!([{"title": "x"}, {"title": "y", "priority": 1}])),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST102")));
    assert_eq!(v["message"], "All object keys must match");
    // Unknown column.
    let (s, v) = json(
        e.service(Method::POST, "todos")
            .json(&json!({"title": "x", "nope": 1})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST204")));
    assert_eq!(
        v["message"],
        "Could not find the 'nope' column of 'todos' in the schema cache"
    );
    // Not JSON.
    let (s, v) = json(
        e.service(Method::POST, "todos")
            .header("Content-Type", "application/json")
            .body("{\"title\": "),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST102")));
    // A duplicate unique value: 409 23505, nothing of the batch stored.
    let before = count(&e).await;
    let (s, v) = json(
        e.service(Method::POST, "todos?columns=\"title\",\"slug\"")
            .json(&json!([{"title": "u1", "slug": "same"}, {"title": "u2", "slug": "same"}])),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("23505")));
    assert_eq!(count(&e).await, before, "all or nothing");
    // A wrong value type is a 400, not a 500.
    let (s, _) = json(e.service(Method::POST, "todos").json(&json!({"title": 5}))).await;
    assert_eq!(s, 400);
    // tx=rollback: runs, then nothing is kept.
    let r = e
        .service(Method::POST, "todos")
        .header("Prefer", "tx=rollback")
        .json(&json!({"title": "ghost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["preference-applied"], "tx=rollback");
    assert_eq!(count(&e).await, before);
    let (s, v) = json(
        e.service(Method::POST, "todos")
            .header("Prefer", "tx=rollback")
            .json(&json!({"nope": 1})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST204")));
}

async fn count(e: &Env) -> u64 {
    let r = e
        .service(Method::HEAD, "todos")
        .header("Prefer", "count=exact")
        .send()
        .await
        .unwrap();
    let range = r.headers()["content-range"].to_str().unwrap().to_string();
    range.rsplit('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn upserts() {
    let e = env(Backend::Memory).await;
    seed(&e).await;
    // merge-duplicates on the primary key: row 1 updated, a new row made.
    let (s, v) = json(
        e.service(
            Method::POST,
            "todos?select=id,title,priority&columns=\"id\",\"title\"",
        )
        .header(
            "Prefer",
            "resolution=merge-duplicates,return=representation",
        )
        .json(&json!([{"id": 1, "title": "ALPHA"}, {"id": 50, "title": "new"}])),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v,
        json!([{"id": 1, "title": "ALPHA", "priority": 1}, {"id": 50, "title": "new", "priority": null}])
    );
    // ignore-duplicates on a unique column: the existing row is untouched.
    let (s, v) = json(
        e.service(Method::POST, "todos?on_conflict=slug&select=title")
            .header(
                "Prefer",
                "resolution=ignore-duplicates,return=representation",
            )
            .json(&json!([{"title": "dup", "slug": "b"}, {"title": "fresh", "slug": "z"}])),
    )
    .await;
    assert_eq!((s, v), (201, json!([{"title": "fresh"}])));
    assert_eq!(get_titles(&e, "slug=eq.b").await, ["beta"]);
    // merge on the unique column.
    let (s, _) = json(
        e.service(Method::POST, "todos?on_conflict=slug")
            .header("Prefer", "resolution=merge-duplicates")
            .json(&json!({"title": "BETA", "slug": "b"})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(get_titles(&e, "slug=eq.b").await, ["BETA"]);
    let (s, v) = json(
        e.service(Method::POST, "todos?on_conflict=nope")
            .header("Prefer", "resolution=merge-duplicates")
            .json(&json!({"title": "x"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("42703")));
    // A bulk upsert over more rows than one lookup read takes.
    let first: Vec<Value> = (0..600)
        .map(|i| json!({"title": format!("old{i}"), "slug": format!("k{i}")}))
        .collect();
    let (s, _) = json(e.service(Method::POST, "todos").json(&first)).await;
    assert_eq!(s, 201);
    let before = count(&e).await;
    let second: Vec<Value> = (300..1200)
        .map(|i| json!({"title": format!("new{i}"), "slug": format!("k{i}")}))
        .collect();
    let (s, v) = json(
        e.service(Method::POST, "todos?on_conflict=slug&select=title")
            .header(
                "Prefer",
                "resolution=merge-duplicates,return=representation",
            )
            .json(&second),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 900);
    assert_eq!(count(&e).await, before + 600, "300 updated, 600 created");
    assert_eq!(get_titles(&e, "slug=eq.k299").await, ["old299"]);
    assert_eq!(get_titles(&e, "slug=eq.k300").await, ["new300"]);
    assert_eq!(get_titles(&e, "slug=eq.k1199").await, ["new1199"]);
    let (s, v) = json(
        e.service(Method::POST, "todos?on_conflict=title")
            .header("Prefer", "resolution=merge-duplicates")
            .json(&json!({"title": "alpha"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("42P10")));
}

#[tokio::test]
async fn updates_and_deletes() {
    let e = env(Backend::Memory).await;
    seed(&e).await;
    // Minimal: 204.
    let r = e
        .service(Method::PATCH, "todos?id=eq.1")
        .json(&json!({"priority": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // Representation: exactly the updated rows, even when the patch changes
    // the filtered column.
    let (s, v) = json(
        e.service(Method::PATCH, "todos?done=eq.false&select=id,done&order=id")
            .header("Prefer", "return=representation")
            .json(&json!({"done": true})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!([{"id": 1, "done": true}, {"id": 3, "done": true}, {"id": 5, "done": true}])
    );
    // Unknown column in a patch.
    let (s, v) = json(
        e.service(Method::PATCH, "todos?id=eq.1")
            .json(&json!({"nope": 1})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST204")));
    // max-affected with handling=strict.
    let (s, v) = json(
        e.service(Method::PATCH, "todos?done=eq.true")
            .header("Prefer", "handling=strict, max-affected=2")
            .json(&json!({"priority": 0})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST124")));
    assert_eq!(
        get_titles(&e, "priority=eq.0").await.len(),
        0,
        "nothing changed"
    );
    let r = e
        .service(Method::PATCH, "todos?id=eq.2")
        .header("Prefer", "handling=strict, max-affected=1")
        .json(&json!({"priority": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // tx=rollback on an update: nothing kept.
    let r = e
        .service(Method::PATCH, "todos")
        .header("Prefer", "tx=rollback")
        .json(&json!({"title": "rolled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(get_titles(&e, "title=eq.rolled").await.is_empty());
    // Delete with representation: the deleted rows.
    let (s, v) = json(
        e.service(Method::DELETE, "todos?id=in.(1,2)&select=id,title&order=id")
            .header("Prefer", "return=representation"),
    )
    .await;
    assert_eq!(
        (s, v),
        (
            200,
            json!([{"id": 1, "title": "alpha"}, {"id": 2, "title": "beta"}])
        )
    );
    let r = e
        .service(Method::DELETE, "todos?id=eq.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // A limited delete removes only `limit` rows (in order).
    let r = e
        .service(Method::DELETE, "todos?order=id.desc&limit=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(get_titles(&e, "order=id").await, ["delta, the fourth"]);
    // tx=rollback on a delete; then a delete without filters (allowed).
    let r = e
        .service(Method::DELETE, "todos")
        .header("Prefer", "tx=rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(count(&e).await, 1);
    let r = e.service(Method::DELETE, "todos").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(count(&e).await, 0);
}

#[tokio::test]
async fn bad_input_is_a_4xx() {
    let e = start(Backend::Memory, vec![todos()], vec![], |c| {
        c.max_json_body_bytes = 1024;
    })
    .await;
    seed(&e).await;
    let cases: Vec<(&str, u16, &str)> = vec![
        ("nothing_here", 404, "PGRST205"),
        ("todos?select=nope", 400, "42703"),
        ("todos?nope=eq.1", 400, "42703"),
        ("todos?order=nope", 400, "42703"),
        ("todos?id=zz.1", 400, "PGRST100"),
        ("todos?id=1", 400, "PGRST100"),
        ("todos?select=id;drop table x", 400, "PGRST100"),
        ("todos?select=id,title)", 400, "PGRST100"),
        ("todos?or=(id.eq.1", 400, "PGRST100"),
        ("todos?or=id.eq.1", 400, "PGRST100"),
        ("todos?limit=-1", 400, "PGRST100"),
        ("todos?order=id.sideways", 400, "PGRST100"),
        ("todos?id=is.maybe", 400, "PGRST100"),
        ("todos\";drop table todos;--", 404, "PGRST205"),
        ("todos?id\";drop=eq.1", 400, "PGRST100"),
    ];
    for (path, status, code) in cases {
        let (s, v) = json(e.service(Method::GET, path)).await;
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{path}: {v}");
        for k in ["message", "details", "hint"] {
            assert!(v.get(k).is_some(), "{path}: {k} missing in {v}");
        }
    }
    // Deep nesting: refused with a 400, no stack overflow.
    let deep = format!(
        "todos?or=({}id.eq.1{})",
        "and(".repeat(5000),
        ")".repeat(5000)
    );
    let (s, v) = json(e.service(Method::GET, &deep)).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST100")));
    // A long select string: 414.
    let long = format!("todos?select={}", "id,".repeat(15_000));
    let (s, v) = json(e.service(Method::GET, &long)).await;
    assert_eq!((s, v["code"].as_str()), (414, Some("PGRST100")));
    // 10 MB of select (too long for an http::Uri, so written raw): refused
    // by the HTTP layer or us, never a 2xx or 5xx, and the server lives on.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(e.server.addr).await.unwrap();
        let head = format!(
            "GET /rest/v1/todos?select={} HTTP/1.1\r\nHost: x\r\napikey: {}\r\n\r\n",
            "a".repeat(10 * 1024 * 1024),
            e.server.keys.service_role()
        );
        let _ = tcp.write_all(head.as_bytes()).await;
        let mut buf = vec![0u8; 64];
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        if n > 0 {
            let status: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            assert!((400..500).contains(&status), "{line}");
        }
    }
    assert_eq!(get_titles(&e, "id=eq.1").await, ["alpha"]);
    // Body over max_json_body_bytes: 413.
    let big = json!({"title": "x".repeat(4096)});
    let (s, v) = json(e.service(Method::POST, "todos").json(&big)).await;
    assert_eq!((s, v["code"].as_str()), (413, Some("PGRST413")));
    // Keys and tokens.
    let (s, v) = json(e.http.get(e.url("todos"))).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("PGRST301")));
    let (s, _) = json(e.http.get(e.url("todos")).header("apikey", "wrong")).await;
    assert_eq!(s, 401);
    let forged = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4Iiwicm9sZSI6InNlcnZpY2Vfcm9sZSJ9.c2lnbmF0dXJl";
    let (s, v) = json(e.user(forged, Method::GET, "todos")).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("PGRST301")));
}

#[tokio::test]
async fn policies_and_hidden_tables() {
    let e = env(Backend::Memory).await;
    seed(&e).await;
    e.db.create_table(&TableSchema::new("secrets").column(ColumnDef::integer("id").primary_key()))
        .await
        .unwrap();
    // anon may read todos (policy) but not write them.
    let (s, v) = json(e.anon(Method::GET, "todos?select=title&id=eq.1")).await;
    assert_eq!((s, v), (200, json!([{"title": "alpha"}])));
    let (s, v) = json(e.anon(Method::POST, "todos").json(&json!({"title": "x"}))).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("42501")));
    assert_eq!(v["message"], "permission denied for table todos");
    let (s, _) = json(e.anon(Method::DELETE, "todos")).await;
    assert_eq!(s, 401);
    assert_eq!(count(&e).await, 5);
    // No policy: the service role only (anon 401, a user 403).
    let (s, v) = json(e.anon(Method::GET, "secrets")).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("42501")));
    let (_, token) = e.sign_up("pol@example.com").await;
    let (s, v) = json(e.user(&token, Method::GET, "secrets")).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("42501")));
    let (s, _) = json(
        e.user(&token, Method::POST, "todos")
            .json(&json!({"title": "x"})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = json(e.service(Method::GET, "secrets")).await;
    assert_eq!(s, 200);
    // Hidden, whoever asks: the auth provider's tables, auth_*, _truststream*.
    for t in [
        "auth_users",
        "auth_sessions",
        "auth_anything",
        "_truststream_schema",
    ] {
        let (s, v) = json(e.service(Method::GET, t)).await;
        assert_eq!((s, v["code"].as_str()), (404, Some("PGRST205")), "{t}");
        let (s, _) = json(e.service(Method::DELETE, t)).await;
        assert_eq!(s, 404, "{t}");
    }
    let (s, _) = json(
        e.service(Method::POST, "auth_users")
            .json(&json!({"id": "x"})),
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn owner_rule_keeps_users_apart() {
    let e = env(Backend::Memory).await;
    let (a_id, a) = e.sign_up("a@example.com").await;
    let (b_id, b) = e.sign_up("b@example.com").await;
    // Inserts get the owner set; another user's id is refused.
    let (s, v) = json(
        e.user(&a, Method::POST, "notes")
            .header("Prefer", "return=representation")
            .json(&json!({"body": "a's note"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v[0]["owner"], a_id.as_str());
    let a_note = v[0]["id"].as_str().unwrap().to_string();
    let (s, v) = json(
        e.user(&a, Method::POST, "notes")
            .json(&json!({"body": "forged", "owner": b_id})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("42501")));
    let (s, _) = json(
        e.user(&b, Method::POST, "notes")
            .json(&json!({"body": "b's note"})),
    )
    .await;
    assert_eq!(s, 201);
    // Each sees only their own.
    let (_, v) = json(e.user(&a, Method::GET, "notes?select=body")).await;
    assert_eq!(v, json!([{"body": "a's note"}]));
    let (_, v) = json(e.user(&b, Method::GET, &format!("notes?id=eq.{a_note}"))).await;
    assert_eq!(v, json!([]));
    // B cannot update or delete A's note (nothing matches).
    let (s, v) = json(
        e.user(&b, Method::PATCH, &format!("notes?id=eq.{a_note}"))
            .header("Prefer", "return=representation")
            .json(&json!({"body": "hacked"})),
    )
    .await;
    assert_eq!((s, v), (200, json!([])));
    let (s, _) = json(
        e.user(&b, Method::PATCH, "notes")
            .json(&json!({"body": "all hacked"})),
    )
    .await;
    assert_eq!(s, 204);
    let (s, v) = json(
        e.user(&b, Method::DELETE, &format!("notes?id=eq.{a_note}"))
            .header("Prefer", "return=representation"),
    )
    .await;
    assert_eq!((s, v), (200, json!([])));
    let (_, v) = json(e.service(Method::GET, &format!("notes?id=eq.{a_note}&select=body"))).await;
    assert_eq!(v, json!([{"body": "a's note"}]));
    // Nor take it over by upsert, nor give A's own note away.
    let (s, _) = json(
        e.user(&b, Method::POST, "notes")
            .header("Prefer", "resolution=merge-duplicates")
            .json(&json!({"id": a_note, "body": "mine now"})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = json(
        e.user(&a, Method::PATCH, &format!("notes?id=eq.{a_note}"))
            .json(&json!({"owner": b_id})),
    )
    .await;
    assert_eq!(s, 403);
    // A updates their own.
    let (s, v) = json(
        e.user(
            &a,
            Method::PATCH,
            &format!("notes?id=eq.{a_note}&select=body"),
        )
        .header("Prefer", "return=representation")
        .json(&json!({"body": "edited"})),
    )
    .await;
    assert_eq!((s, v), (200, json!([{"body": "edited"}])));
    // anon has no grant on notes.
    let (s, _) = json(e.anon(Method::GET, "notes")).await;
    assert_eq!(s, 401);
}

/// Anonymous callers with a grant on an owned table own no row: they read
/// nothing and cannot insert.
#[tokio::test]
async fn anonymous_callers_own_nothing() {
    let mut policy = owner_policy();
    policy.anon = vec![
        TableAction::Select,
        TableAction::Insert,
        TableAction::Delete,
    ];
    let e = start(
        Backend::Memory,
        vec![notes()],
        vec![("notes", policy)],
        |_| {},
    )
    .await;
    let (_, a) = e.sign_up("own@example.com").await;
    let (s, _) = json(
        e.user(&a, Method::POST, "notes")
            .json(&json!({"body": "x"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = json(e.anon(Method::GET, "notes")).await;
    assert_eq!((s, v), (200, json!([])));
    let (s, v) = json(e.anon(Method::POST, "notes").json(&json!({"body": "anon"}))).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("42501")));
    let (s, _) = json(e.anon(Method::DELETE, "notes")).await;
    assert_eq!(s, 204);
    let (_, v) = json(e.service(Method::GET, "notes?select=body")).await;
    assert_eq!(
        v,
        json!([{"body": "x"}]),
        "the anonymous delete removed nothing"
    );
}

#[tokio::test]
async fn per_action_permissions() {
    let mut policy = owner_policy();
    policy
        .permissions
        .insert(TableAction::Delete, "delete:notes".into());
    let e = start(
        Backend::Memory,
        vec![notes()],
        vec![("notes", policy)],
        |_| {},
    )
    .await;
    let (_, a) = e.sign_up("perm@example.com").await;
    let (s, _) = json(
        e.user(&a, Method::POST, "notes")
            .json(&json!({"body": "x"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = json(e.user(&a, Method::DELETE, "notes")).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("42501")));
    let (_, v) = json(e.user(&a, Method::GET, "notes?select=body")).await;
    assert_eq!(v, json!([{"body": "x"}]));
}
