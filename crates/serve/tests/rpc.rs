//! `/rest/v1/rpc/<fn>` over PostgreSQL: functions listed in `[serve.rpc]`
//! called with named arguments (POST body, GET query), results shaped as
//! PostgREST shapes them, deny by default, and (with `row_security`) the
//! call running as the caller's role with their claims; `select=`,
//! filters, `order`, `limit`, `offset` and counts on a function's rows. Needs the
//! PostgreSQL server of `truststream_db_postgres::testing` (skipped with a
//! message outside CI when it is missing). The `PGRST202` answer of
//! providers without functions is in `rest.rs`.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common {
    pub mod rest_util;
}

use std::sync::Arc;

use common::rest_util::{json, start_on, Env};
use reqwest::Method;
use serde_json::{json, Value};
use truststream_core_db::{Database, Params};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
use truststream_serve::RpcPolicy;

/// A server over a scratch schema with `row_security` and the test
/// functions created in the schema.
async fn start(s: &Scratch) -> Env {
    let config = s.config("serve_rpc");
    let schema = config.schema.clone().unwrap();
    let db: Arc<dyn Database> = Arc::new(PgDatabase::open(config).await.unwrap());
    let open = RpcPolicy {
        anon: true,
        authenticated: true,
    };
    let e = start_on(db.clone(), None, vec![], vec![], |c| {
        c.row_security = true;
        for f in [
            "add",
            "series",
            "pairs",
            "nums",
            "info",
            "noop",
            "echo_json",
            "copy_vault",
        ] {
            c.rpc.insert(f.into(), open.clone());
        }
        c.rpc.insert(
            "whoami".into(),
            RpcPolicy {
                anon: false,
                authenticated: true,
            },
        );
    })
    .await;
    let s = format!("\"{schema}\"");
    for sql in [
        format!("CREATE FUNCTION {s}.add(a int, b int) RETURNS int LANGUAGE sql AS $$ SELECT a + b $$"),
        format!("CREATE FUNCTION {s}.series(n int) RETURNS SETOF int LANGUAGE sql AS $$ SELECT generate_series(1, n) $$"),
        format!(
            "CREATE FUNCTION {s}.pairs(x text) RETURNS TABLE(k text, n int) LANGUAGE sql AS \
             $$ SELECT x, length(x) UNION ALL SELECT x || x, 2 * length(x) $$"
        ),
        format!(
            "CREATE FUNCTION {s}.nums(n int) RETURNS TABLE(a int, label text) LANGUAGE sql AS \
             $$ SELECT i, 'n' || i FROM generate_series(1, n) i $$"
        ),
        format!("CREATE FUNCTION {s}.info(x text, OUT k text, OUT n int) LANGUAGE sql AS $$ SELECT upper(x), length(x) $$"),
        format!("CREATE FUNCTION {s}.noop() RETURNS void LANGUAGE sql AS $$ SELECT $$"),
        format!("CREATE FUNCTION {s}.echo_json(body jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT body $$"),
        format!("CREATE FUNCTION {s}.secret() RETURNS int LANGUAGE sql AS $$ SELECT 42 $$"),
        // A table no policy exposes, and a function that fails on it with
        // a message naming the table, its constraint and a stored value.
        format!("CREATE TABLE {s}.vault_internal (v text NOT NULL UNIQUE)"),
        format!("INSERT INTO {s}.vault_internal VALUES ('hunter2-topsecret')"),
        format!(
            "CREATE FUNCTION {s}.copy_vault() RETURNS void LANGUAGE sql AS \
             $$ INSERT INTO vault_internal SELECT v FROM vault_internal $$"
        ),
        format!(
            "CREATE FUNCTION {s}.whoami() RETURNS text LANGUAGE sql STABLE AS \
             $$ SELECT coalesce(auth.uid()::text, 'none') || ':' || current_user $$"
        ),
    ] {
        db.raw_query(&sql, &Params::new()).await.unwrap();
    }
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn listed_functions_answer_in_postgrest_shapes() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let e = start(&s).await;

    let (st, v) = json(
        e.anon(Method::POST, "rpc/add")
            .json(&json!({"a": 1, "b": 2})),
    )
    .await;
    assert_eq!((st, v.clone()), (200, json!(3)), "{v}");
    // GET: query arguments, bound as the function's parameter types.
    let (st, v) = json(e.anon(Method::GET, "rpc/add?a=2&b=5")).await;
    assert_eq!((st, v.clone()), (200, json!(7)), "{v}");
    let (st, v) = json(e.anon(Method::POST, "rpc/series").json(&json!({"n": 3}))).await;
    assert_eq!((st, v.clone()), (200, json!([1, 2, 3])), "{v}");
    let (st, v) = json(e.anon(Method::POST, "rpc/pairs").json(&json!({"x": "ab"}))).await;
    assert_eq!(
        (st, v.clone()),
        (200, json!([{"k": "ab", "n": 2}, {"k": "abab", "n": 4}])),
        "{v}"
    );
    let (st, v) = json(e.anon(Method::POST, "rpc/info").json(&json!({"x": "abc"}))).await;
    assert_eq!((st, v.clone()), (200, json!({"k": "ABC", "n": 3})), "{v}");
    let (st, v) = json(e.anon(Method::POST, "rpc/noop")).await;
    assert_eq!((st, v.clone()), (204, Value::Null), "{v}");
    let body = json!({"nested": {"list": [1, "two"]}, "quote": "'); DROP TABLE x; --"});
    let (st, v) = json(
        e.anon(Method::POST, "rpc/echo_json")
            .header("prefer", "params=single-object")
            .json(&body),
    )
    .await;
    assert_eq!((st, v.clone()), (200, body), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unlisted_ungranted_and_malformed_calls_are_refused() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let e = start(&s).await;

    // Not listed: 404 for everyone, the service role included.
    for r in [
        e.service(Method::POST, "rpc/secret"),
        e.anon(Method::POST, "rpc/secret"),
        e.service(Method::POST, "rpc/missing_fn"),
        e.service(Method::POST, "rpc/add%22()%3B%20drop"),
    ] {
        let (st, v) = json(r.json(&json!({}))).await;
        assert_eq!((st, v["code"].as_str()), (404, Some("PGRST202")), "{v}");
    }
    // Listed for users only: anon gets 401.
    let (st, v) = json(e.anon(Method::POST, "rpc/whoami")).await;
    assert_eq!((st, v["code"].as_str()), (401, Some("42501")), "{v}");
    // A bad argument name, an unknown argument, a body not an object.
    let (st, v) = json(
        e.anon(Method::POST, "rpc/add")
            .json(&json!({"a) + (select 1": 1, "b": 2})),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (400, Some("PGRST100")), "{v}");
    let (st, v) = json(
        e.anon(Method::POST, "rpc/add")
            .json(&json!({"a": 1, "c": 2})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = json(e.anon(Method::POST, "rpc/add").json(&json!([1, 2]))).await;
    assert_eq!((st, v["code"].as_str()), (400, Some("PGRST102")), "{v}");
    let (st, v) = json(e.anon(Method::PATCH, "rpc/add").json(&json!({}))).await;
    assert_eq!((st, v["code"].as_str()), (405, Some("PGRST101")), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_function_does_not_show_the_database_message() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let e = start(&s).await;
    // The function's unique violation would name the table, the
    // constraint and the stored value the caller cannot read.
    let (st, v) = json(e.service(Method::POST, "rpc/copy_vault")).await;
    assert_eq!((st, v["code"].as_str()), (409, Some("23505")), "{v}");
    let text = v.to_string();
    for leak in ["hunter2-topsecret", "vault_internal", "_key"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_row_security_the_call_runs_as_the_caller() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let e = start(&s).await;
    let (uid, token) = e.sign_up("rpc@example.com").await;
    let (st, v) = json(e.user(&token, Method::POST, "rpc/whoami")).await;
    assert_eq!(
        (st, v.clone()),
        (200, json!(format!("{uid}:authenticated"))),
        "{v}"
    );
    // The service role is not scoped: no claims, the server's own user.
    let (st, v) = json(e.service(Method::POST, "rpc/whoami")).await;
    assert_eq!(st, 200, "{v}");
    let who = v.as_str().unwrap();
    assert!(who.starts_with("none:"), "{who}");
    assert!(!who.ends_with(":authenticated"), "{who}");
}

/// PostgREST applies `select`, filters, `order`, `limit` and `offset` to
/// the rows a function returns, on GET (the arguments are the parameters
/// naming one) and POST (the body's).
#[tokio::test(flavor = "multi_thread")]
async fn a_function_result_is_filtered_ordered_and_paged() {
    let Some(url) = testing::server().await else {
        return;
    };
    let s = Scratch::new(url);
    let e = start(&s).await;
    let get = |q: &str| json(e.anon(Method::GET, q));
    let (st, v) = get("rpc/nums?n=6&select=a&a=gt.3&order=a.desc&limit=2").await;
    assert_eq!((st, v.clone()), (200, json!([{"a": 6}, {"a": 5}])), "{v}");
    let (st, v) = json(
        e.anon(
            Method::POST,
            "rpc/nums?select=a,label&a=gt.3&order=a.desc&limit=2",
        )
        .json(&json!({"n": 6})),
    )
    .await;
    assert_eq!(
        (st, v.clone()),
        (
            200,
            json!([{"a": 6, "label": "n6"}, {"a": 5, "label": "n5"}])
        ),
        "{v}"
    );
    // Without filters the page is the statement's; Content-Range is sent.
    let r = e
        .anon(
            Method::GET,
            "rpc/nums?n=6&select=a&order=a.desc&limit=2&offset=1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-range"], "1-2/*");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"a": 5}, {"a": 4}])
    );
    // A count: the matching rows' total, 206 for a part of them.
    let r = e
        .anon(Method::GET, "rpc/nums?n=6&select=a&a=lte.3&limit=1")
        .header("prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "0-0/3");
    assert_eq!(r.json::<Value>().await.unwrap(), json!([{"a": 1}]));
    // A count with nothing else to shape: the whole result and its total,
    // on POST and GET, for rows and for a set of scalars.
    for (method, q) in [(Method::POST, "rpc/nums"), (Method::GET, "rpc/nums?n=4")] {
        let r = e
            .anon(method.clone(), q)
            .header("prefer", "count=exact")
            .json(&json!({"n": 4}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method} {q}");
        assert_eq!(r.headers()["content-range"], "0-3/4", "{method} {q}");
    }
    let r = e
        .anon(Method::POST, "rpc/series")
        .header("prefer", "count=exact")
        .json(&json!({"n": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-range"], "*/0");
    // `or`, `not.`, `in`, aliases and text filters.
    let (st, v) = get("rpc/nums?n=6&select=x:a&or=(a.eq.1,label.eq.n2)").await;
    assert_eq!((st, v.clone()), (200, json!([{"x": 1}, {"x": 2}])), "{v}");
    let (st, v) = get("rpc/nums?n=4&select=a&a=not.in.(1,2)&label=like.n*").await;
    assert_eq!((st, v.clone()), (200, json!([{"a": 3}, {"a": 4}])), "{v}");
    // A function returning one row: select applies.
    let (st, v) = get("rpc/info?x=abc&select=n").await;
    assert_eq!((st, v.clone()), (200, json!({"n": 3})), "{v}");

    // Bad input: an unknown result column, a value not of its type, an
    // unknown order column, filters on a scalar result (an unknown
    // argument of a GET call reads as one).
    for (q, status) in [
        ("rpc/nums?n=3&nope=eq.1", 400),
        ("rpc/nums?n=3&select=nope", 400),
        ("rpc/nums?n=3&a=gt.abc", 400),
        ("rpc/nums?n=3&order=nope.desc", 400),
        ("rpc/series?n=3&value=gt.1", 400),
        ("rpc/add?a=1&b=2&c=3", 400),
        ("rpc/nums?n=3&select=a,tags(*)", 400),
    ] {
        let (st, v) = get(q).await;
        assert_eq!(st, status, "{q}: {v}");
        assert!(
            v["code"].is_string() && v["message"].is_string(),
            "{q}: {v}"
        );
    }
    let (st, v) = get("rpc/series?n=3&value=gt.1").await;
    assert_eq!((st, v["code"].as_str()), (400, Some("PGRST100")), "{v}");
}
