//! `/rest/v1` embedded resources over foreign keys, driven over HTTP as
//! postgrest-js drives them, over SQLite and PostgreSQL: many-to-one,
//! one-to-many, one-to-one, nested, `!inner`, hints and ambiguity
//! (PGRST201), spread, `<ref>.order|limit|offset`, filters on embedded
//! columns, chunked `in` lists, embeds on written rows; and who may read an
//! embedded table: `[serve.tables]` (deny by default, the owner rule) and,
//! on PostgreSQL with `row_security`, the database's policies. Many-to-many
//! through a junction table (found in the catalog on SQLite and
//! PostgreSQL, named by the hint elsewhere), `!inner`, hints, PGRST201.
//! PostgreSQL comes from `truststream_db_postgres::testing` (skipped with a
//! message outside CI when it is missing).

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common {
    pub mod rest_util;
}

use std::sync::Arc;

use common::rest_util::{json, start, start_on, Backend, Env};
use reqwest::Method;
use serde_json::{json, Value};
use truststream_core_db::{ColumnDef, ColumnDefault, Database, Params, TableSchema};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
use truststream_serve::{TableAction, TablePolicy};

fn auto_id(name: &str) -> TableSchema {
    TableSchema::new(name).column(
        ColumnDef::integer("id")
            .primary_key()
            .default(ColumnDefault::AutoIncrement),
    )
}

fn tables() -> Vec<TableSchema> {
    vec![
        auto_id("users").column(ColumnDef::text("name").not_null()),
        auto_id("posts")
            .column(ColumnDef::integer("author_id"))
            .column(ColumnDef::integer("editor_id"))
            .column(ColumnDef::text("title").not_null())
            .references("author_id", "users", "id")
            .references("editor_id", "users", "id"),
        auto_id("comments")
            .column(ColumnDef::integer("post_id").not_null())
            .column(ColumnDef::text("body").not_null())
            .column(ColumnDef::text("status").not_null())
            .references("post_id", "posts", "id"),
        auto_id("notes")
            .column(ColumnDef::integer("post_id").not_null())
            .column(ColumnDef::text("body").not_null())
            .column(ColumnDef::text("owner"))
            .references("post_id", "posts", "id"),
        auto_id("profiles")
            .column(ColumnDef::integer("user_id").unique())
            .column(ColumnDef::text("bio"))
            .references("user_id", "users", "id"),
        auto_id("secrets")
            .column(ColumnDef::integer("post_id"))
            .column(ColumnDef::text("body"))
            .references("post_id", "posts", "id"),
    ]
}

fn read_policy() -> TablePolicy {
    TablePolicy {
        anon: vec![TableAction::Select],
        authenticated: TableAction::ALL.to_vec(),
        ..TablePolicy::default()
    }
}

/// Anon and users read users, posts, comments and profiles; notes are
/// their owner's (the owner rule); secrets have no policy (service role
/// only).
fn policies() -> Vec<(&'static str, TablePolicy)> {
    vec![
        ("users", read_policy()),
        ("posts", read_policy()),
        ("profiles", read_policy()),
        ("comments", read_policy()),
        (
            "notes",
            TablePolicy {
                anon: vec![TableAction::Select],
                authenticated: TableAction::ALL.to_vec(),
                owner_column: Some("owner".into()),
                ..TablePolicy::default()
            },
        ),
    ]
}

async fn seed(e: &Env) {
    for (table, rows) in [
        (
            "users",
            json!([{"name": "ada"}, {"name": "bob"}, {"name": "cy"}]),
        ),
        (
            "posts",
            json!([
                {"author_id": 1, "editor_id": 2, "title": "p1"},
                {"author_id": 2, "editor_id": null, "title": "p2"},
                {"author_id": null, "editor_id": null, "title": "p3"}
            ]),
        ),
        (
            "comments",
            json!([
                {"post_id": 1, "body": "first", "status": "approved"},
                {"post_id": 1, "body": "spam", "status": "spam"},
                {"post_id": 1, "body": "third", "status": "approved"},
                {"post_id": 2, "body": "only", "status": "approved"}
            ]),
        ),
        (
            "notes",
            json!([{"post_id": 1, "body": "someone else's", "owner": "nobody"}]),
        ),
        ("profiles", json!([{"user_id": 1, "bio": "math"}])),
        ("secrets", json!([{"post_id": 1, "body": "hidden"}])),
    ] {
        let (s, v) = json(e.service(Method::POST, table).json(&rows)).await;
        assert_eq!(s, 201, "{table}: {v}");
    }
}

async fn get(e: &Env, q: &str) -> Value {
    let (s, v) = json(e.anon(Method::GET, q)).await;
    assert_eq!(s, 200, "{q}: {v}");
    v
}

async fn error(e: &Env, q: &str) -> (u16, Value) {
    let (s, v) = json(e.anon(Method::GET, q)).await;
    assert!(s >= 300, "{q}: {s} {v}");
    (s, v)
}

/// Every embed feature over `e` (seeded by [`seed`]).
async fn scenario(e: &Env) {
    seed(e).await;
    // Many-to-one, with a hint (two foreign keys reach users).
    assert_eq!(
        get(
            e,
            "posts?select=id,title,author:users!author_id(name)&order=id"
        )
        .await,
        json!([
            {"id": 1, "title": "p1", "author": {"name": "ada"}},
            {"id": 2, "title": "p2", "author": {"name": "bob"}},
            {"id": 3, "title": "p3", "author": null}
        ])
    );
    // The hint may be the constraint name.
    assert_eq!(
        get(
            e,
            "posts?select=id,editor:users!posts_editor_id_fkey(name)&id=eq.1"
        )
        .await,
        json!([{"id": 1, "editor": {"name": "bob"}}])
    );
    // Ambiguity: PostgREST's PGRST201 (300) with the candidates.
    let (s, v) = error(e, "posts?select=id,users(name)").await;
    assert_eq!((s, v["code"].as_str()), (300, Some("PGRST201")), "{v}");
    assert_eq!(
        v["message"],
        "Could not embed because more than one relationship was found for 'posts' and 'users'"
    );
    assert_eq!(
        v["details"],
        json!([
            {"cardinality": "many-to-one", "embedding": "posts with users",
             "relationship": "posts_author_id_fkey using posts(author_id) and users(id)"},
            {"cardinality": "many-to-one", "embedding": "posts with users",
             "relationship": "posts_editor_id_fkey using posts(editor_id) and users(id)"}
        ])
    );
    assert!(v["hint"]
        .as_str()
        .unwrap()
        .contains("'users!posts_author_id_fkey', 'users!posts_editor_id_fkey'"));
    // `*` with an embed.
    let v = get(e, "posts?select=*,author:users!author_id(*)&id=eq.1").await;
    assert_eq!(
        v,
        json!([{"id": 1, "author_id": 1, "editor_id": 2, "title": "p1",
                "author": {"id": 1, "name": "ada"}}])
    );
    // One-to-many, ordered per parent; a parent without children gets [].
    assert_eq!(
        get(
            e,
            "posts?select=id,comments(id,body)&order=id&comments.order=id"
        )
        .await,
        json!([
            {"id": 1, "comments": [{"id": 1, "body": "first"}, {"id": 2, "body": "spam"}, {"id": 3, "body": "third"}]},
            {"id": 2, "comments": [{"id": 4, "body": "only"}]},
            {"id": 3, "comments": []}
        ])
    );
    // Filters, order, limit and offset on the embedded rows.
    let ids = |v: &Value| -> Vec<Vec<i64>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p["comments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["id"].as_i64().unwrap())
                    .collect()
            })
            .collect()
    };
    let v = get(
        e,
        "posts?select=id,comments(id)&order=id&comments.status=eq.approved&comments.order=id.desc",
    )
    .await;
    assert_eq!(ids(&v), [vec![3, 1], vec![4], vec![]]);
    let v = get(
        e,
        "posts?select=id,comments(id)&order=id&comments.order=id&comments.limit=1&comments.offset=1",
    )
    .await;
    assert_eq!(ids(&v), [vec![2], vec![], vec![]]);
    let v = get(
        e,
        "posts?select=id,comments(id)&order=id&comments.or=(status.eq.spam,body.eq.only)",
    )
    .await;
    assert_eq!(ids(&v), [vec![2], vec![4], vec![]]);
    // !inner: parents without a match are left out, before limit and count.
    let (s, v) = json(
        e.anon(
            Method::GET,
            "posts?select=id,comments!inner(id)&comments.status=eq.approved&order=id&limit=1&offset=1",
        )
        .header("prefer", "count=exact"),
    )
    .await;
    assert_eq!(s, 206, "{v}");
    assert_eq!(ids(&v), [vec![4]]);
    let v = get(
        e,
        "posts?select=id,author:users!author_id!inner(name)&order=id",
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let v = get(
        e,
        "posts?select=id,author:users!author_id!inner(name)&author.name=eq.bob",
    )
    .await;
    assert_eq!(v, json!([{"id": 2, "author": {"name": "bob"}}]));
    // An empty embed filters and is left out of the answer.
    assert_eq!(
        get(
            e,
            "posts?select=id,comments!inner()&comments.status=eq.spam"
        )
        .await,
        json!([{"id": 1}])
    );
    // !left (the default) keeps them.
    let v = get(
        e,
        "posts?select=id,comments!left(id)&comments.status=eq.spam&order=id",
    )
    .await;
    assert_eq!(ids(&v), [vec![2], vec![], vec![]]);
    // Nested, both ways.
    assert_eq!(
        get(
            e,
            "users?select=name,posts!author_id(title,comments(body))&order=id&posts.order=id&posts.comments.order=id&posts.comments.status=eq.approved",
        )
        .await,
        json!([
            {"name": "ada", "posts": [{"title": "p1", "comments": [{"body": "first"}, {"body": "third"}]}]},
            {"name": "bob", "posts": [{"title": "p2", "comments": [{"body": "only"}]}]},
            {"name": "cy", "posts": []}
        ])
    );
    assert_eq!(
        get(
            e,
            "comments?select=body,post:posts(title,author:users!author_id(name))&id=eq.4"
        )
        .await,
        json!([{"body": "only", "post": {"title": "p2", "author": {"name": "bob"}}}])
    );
    // One-to-one (a unique referencing column): an object.
    assert_eq!(
        get(e, "users?select=name,profiles(bio)&order=id&limit=2").await,
        json!([{"name": "ada", "profiles": {"bio": "math"}}, {"name": "bob", "profiles": null}])
    );
    // Spread: the embedded columns in the parent.
    assert_eq!(
        get(
            e,
            "posts?select=title,...users!author_id(author_name:name)&order=id"
        )
        .await,
        json!([
            {"title": "p1", "author_name": "ada"},
            {"title": "p2", "author_name": "bob"},
            {"title": "p3", "author_name": null}
        ])
    );
    // Errors.
    let (s, v) = error(e, "posts?select=id,nope(*)").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")), "{v}");
    assert_eq!(
        v["message"],
        "Could not find a relationship between 'posts' and 'nope' in the schema cache"
    );
    let (s, v) = error(e, "posts?select=id,auth_users(*)").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")), "{v}");
    let (s, v) = error(e, "users?select=id,profiles!nope(*)").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")), "{v}");
    let (s, v) = error(e, "posts?select=id&comments.status=eq.x").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST108")), "{v}");
    let (s, v) = error(e, "posts?select=id,comments(nope)").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("42703")), "{v}");
    let (s, v) = error(e, "posts?select=id,comments(id)&comments.id=eq.abc").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("22P02")), "{v}");
    let (s, v) = error(e, "posts?select=id,comments(id)&comments.order=nope").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("42703")), "{v}");
    let (s, v) = error(e, "posts?select=id,...comments(id)").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST119")), "{v}");
    let deep = format!(
        "posts?select={}",
        (0..20)
            .map(|i| format!("c{i}:comments(id)"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (s, v) = error(e, &deep).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST100")), "{v}");
    // No policy on secrets: anon may not embed it (deny by default); the
    // service role may.
    let (s, v) = error(e, "posts?select=id,secrets(body)").await;
    assert_eq!((s, v["code"].as_str()), (401, Some("42501")), "{v}");
    // Refused before its relationships are looked at: no PGRST200/201
    // naming the foreign keys of a table the caller may not read.
    let (s, v) = error(e, "posts?select=id,secrets!nope(body)").await;
    assert_eq!((s, v["code"].as_str()), (401, Some("42501")), "{v}");
    let (s, v) = json(e.service(Method::GET, "posts?select=id,secrets(body)&id=eq.1")).await;
    assert_eq!(
        (s, v),
        (200, json!([{"id": 1, "secrets": [{"body": "hidden"}]}]))
    );
    // Embeds on the rows a write returns.
    let (s, v) = json(
        e.service(
            Method::POST,
            "posts?select=title,author:users!author_id(name)",
        )
        .header("prefer", "return=representation")
        .json(&json!({"author_id": 3, "title": "p4"})),
    )
    .await;
    assert_eq!(
        (s, v),
        (201, json!([{"title": "p4", "author": {"name": "cy"}}]))
    );
    // A bad embed is refused before anything is written.
    let (s, v) = json(
        e.service(Method::POST, "posts?select=title,nope(*)")
            .header("prefer", "return=representation")
            .json(&json!({"title": "never"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")), "{v}");
    let (s, v) = json(e.service(Method::DELETE, "posts?title=eq.p4&select=id,nope(*)")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")), "{v}");
    assert_eq!(
        get(e, "posts?select=title&or=(title.eq.never,title.eq.p4)").await,
        json!([{"title": "p4"}])
    );
    // The owner rule applies to embedded rows: a signed-in user reads only
    // their own notes through an embed, anon none.
    let (uid, token) = e.sign_up("embed-owner@example.com").await;
    let (s, v) = json(e.service(Method::POST, "notes").json(&json!({
        "post_id": 2, "body": "mine", "owner": uid
    })))
    .await;
    assert_eq!(s, 201, "{v}");
    let q = "posts?select=id,notes(body)&order=id&limit=2";
    let (s, v) = json(e.user(&token, Method::GET, q)).await;
    assert_eq!(
        (s, v),
        (
            200,
            json!([{"id": 1, "notes": []}, {"id": 2, "notes": [{"body": "mine"}]}])
        )
    );
    assert_eq!(
        get(e, q).await,
        json!([{"id": 1, "notes": []}, {"id": 2, "notes": []}])
    );
    // More parents than one `in` list holds: read in chunks, all stitched.
    let many: Vec<Value> = (0..1200)
        .map(|i| json!({"name": format!("u{i}")}))
        .collect();
    let (s, _) = json(e.service(Method::POST, "users").json(&many)).await;
    assert_eq!(s, 201);
    let (s, _) = json(
        e.service(Method::POST, "posts")
            .json(&json!([{"author_id": 1203, "title": "late"}])),
    )
    .await;
    assert_eq!(s, 201);
    let v = get(e, "users?select=id,posts!author_id(title)&order=id").await;
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 1203);
    assert_eq!(v[1202], json!({"id": 1203, "posts": [{"title": "late"}]}));
    assert_eq!(v[0]["posts"], json!([{"title": "p1"}]));
    assert_eq!(v[600]["posts"], json!([]));
    // `<ref>.limit` over more parents than are read one by one: paged in
    // the server, per parent, all the same.
    let (s, _) = json(
        e.service(Method::POST, "posts")
            .json(&json!([{"author_id": 1203, "title": "later"}])),
    )
    .await;
    assert_eq!(s, 201);
    let v = get(
        e,
        "users?select=id,posts!author_id(title)&order=id&posts.order=title&posts.limit=1&posts.offset=1",
    )
    .await;
    let v = v.as_array().unwrap();
    assert_eq!(v[1202], json!({"id": 1203, "posts": [{"title": "later"}]}));
    assert_eq!(v[0]["posts"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn embeds_over_sqlite() {
    let e = start(Backend::Sqlite, tables(), policies(), |_| {}).await;
    scenario(&e).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embeds_over_memory() {
    let e = start(Backend::Memory, tables(), policies(), |_| {}).await;
    scenario(&e).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embeds_over_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let db: Arc<dyn Database> = Arc::new(PgDatabase::open(scratch.config("embed")).await.unwrap());
    let e = start_on(db, None, tables(), policies(), |_| {}).await;
    scenario(&e).await;
    drop(e);
    scratch.cleanup().await.unwrap();
}

/// Films and tags linked by `films_tags`; actors linked to films twice
/// (`roles`, readable, and `cameos`, the service role's only).
fn m2m_tables() -> Vec<TableSchema> {
    vec![
        auto_id("films").column(ColumnDef::text("title").not_null()),
        auto_id("tags").column(ColumnDef::text("name").not_null()),
        auto_id("films_tags")
            .column(ColumnDef::integer("film_id").not_null())
            .column(ColumnDef::integer("tag_id").not_null())
            .references("film_id", "films", "id")
            .references("tag_id", "tags", "id"),
        auto_id("actors").column(ColumnDef::text("name").not_null()),
        auto_id("roles")
            .column(ColumnDef::integer("film_id").not_null())
            .column(ColumnDef::integer("actor_id").not_null())
            .references("film_id", "films", "id")
            .references("actor_id", "actors", "id"),
        auto_id("cameos")
            .column(ColumnDef::integer("film_id").not_null())
            .column(ColumnDef::integer("actor_id").not_null())
            .references("film_id", "films", "id")
            .references("actor_id", "actors", "id"),
    ]
}

fn m2m_policies() -> Vec<(&'static str, TablePolicy)> {
    ["films", "tags", "films_tags", "actors", "roles"]
        .into_iter()
        .map(|t| (t, read_policy()))
        .collect()
}

async fn m2m_seed(e: &Env) {
    for (table, rows) in [
        (
            "films",
            json!([{"title": "alien"}, {"title": "brazil"}, {"title": "casablanca"}, {"title": "dune"}]),
        ),
        (
            "tags",
            json!([{"name": "scifi"}, {"name": "drama"}, {"name": "comedy"}]),
        ),
        (
            "films_tags",
            json!([
                {"film_id": 1, "tag_id": 1}, {"film_id": 2, "tag_id": 1},
                {"film_id": 2, "tag_id": 3}, {"film_id": 3, "tag_id": 2}
            ]),
        ),
        ("actors", json!([{"name": "sigourney"}, {"name": "ingrid"}])),
        (
            "roles",
            json!([{"film_id": 1, "actor_id": 1}, {"film_id": 3, "actor_id": 2}]),
        ),
        ("cameos", json!([{"film_id": 2, "actor_id": 1}])),
    ] {
        let (s, v) = json(e.service(Method::POST, table).json(&rows)).await;
        assert_eq!(s, 201, "{table}: {v}");
    }
}

/// The hinted many-to-many embeds every provider serves.
async fn m2m_hinted(e: &Env) {
    assert_eq!(
        get(
            e,
            "films?select=title,tags!films_tags(name)&order=id&tags.order=name"
        )
        .await,
        json!([
            {"title": "alien", "tags": [{"name": "scifi"}]},
            {"title": "brazil", "tags": [{"name": "comedy"}, {"name": "scifi"}]},
            {"title": "casablanca", "tags": [{"name": "drama"}]},
            {"title": "dune", "tags": []}
        ])
    );
    assert_eq!(
        get(e, "films?select=title,actors!roles(name)&order=id").await,
        json!([
            {"title": "alien", "actors": [{"name": "sigourney"}]},
            {"title": "brazil", "actors": []},
            {"title": "casablanca", "actors": [{"name": "ingrid"}]},
            {"title": "dune", "actors": []}
        ])
    );
    // A junction table without a policy: the embed is refused for anon.
    let (s, v) = error(e, "films?select=title,actors!cameos(name)").await;
    assert_eq!((s, v["code"].as_str()), (401, Some("42501")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("cameos"), "{v}");
    // A hint naming no junction (nor foreign key): PGRST200.
    let (s, v) = error(e, "films?select=title,tags!nope(name)").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")), "{v}");
}

async fn m2m_scenario(e: &Env) {
    m2m_seed(e).await;
    m2m_hinted(e).await;
    // Found in the catalog: both directions, ordered and paged per parent.
    assert_eq!(
        get(
            e,
            "films?select=title,tags(name)&order=id&tags.order=name.desc&tags.limit=1"
        )
        .await,
        json!([
            {"title": "alien", "tags": [{"name": "scifi"}]},
            {"title": "brazil", "tags": [{"name": "scifi"}]},
            {"title": "casablanca", "tags": [{"name": "drama"}]},
            {"title": "dune", "tags": []}
        ])
    );
    assert_eq!(
        get(
            e,
            "tags?select=name,films(title)&order=id&films.order=title.desc"
        )
        .await,
        json!([
            {"name": "scifi", "films": [{"title": "brazil"}, {"title": "alien"}]},
            {"name": "drama", "films": [{"title": "casablanca"}]},
            {"name": "comedy", "films": [{"title": "brazil"}]}
        ])
    );
    // !inner: films with a tag at all, and with a matching tag.
    assert_eq!(
        get(e, "films?select=title,tags!inner()&order=id").await,
        json!([{"title": "alien"}, {"title": "brazil"}, {"title": "casablanca"}])
    );
    assert_eq!(
        get(
            e,
            "films?select=title,t:tags!inner(name)&t.name=eq.scifi&order=id.desc&limit=1"
        )
        .await,
        json!([{"title": "brazil", "t": [{"name": "scifi"}]}])
    );
    // Nested: the tags of each film and the films of each tag.
    assert_eq!(
        get(e, "films?select=title,tags(name,films(title))&id=eq.3").await,
        json!([{"title": "casablanca",
                "tags": [{"name": "drama", "films": [{"title": "casablanca"}]}]}])
    );
    // Two junctions between films and actors: PGRST201 naming both.
    let (s, v) = error(e, "films?select=title,actors(name)").await;
    assert_eq!((s, v["code"].as_str()), (300, Some("PGRST201")), "{v}");
    assert_eq!(
        v["details"],
        json!([
            {"cardinality": "many-to-many", "embedding": "films with actors",
             "relationship": "cameos using cameos_film_id_fkey(film_id) and cameos_actor_id_fkey(actor_id)"},
            {"cardinality": "many-to-many", "embedding": "films with actors",
             "relationship": "roles using roles_film_id_fkey(film_id) and roles_actor_id_fkey(actor_id)"}
        ])
    );
    assert!(
        v["hint"]
            .as_str()
            .unwrap()
            .contains("'actors!cameos', 'actors!roles'"),
        "{v}"
    );
    // A spread needs a to-one relationship.
    let (s, v) = error(e, "films?select=title,...tags(name)").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST119")), "{v}");
    // Unrelated tables: PGRST200.
    let (s, v) = error(e, "tags?select=name,actors(name)").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_to_many_over_sqlite() {
    let e = start(Backend::Sqlite, m2m_tables(), m2m_policies(), |_| {}).await;
    m2m_scenario(&e).await;
}

/// Without a SQL catalog the junction is named by the hint; unhinted, the
/// embed is PGRST200.
#[tokio::test(flavor = "multi_thread")]
async fn many_to_many_over_memory_by_hint() {
    let e = start(Backend::Memory, m2m_tables(), m2m_policies(), |_| {}).await;
    m2m_seed(&e).await;
    m2m_hinted(&e).await;
    let (s, v) = error(&e, "films?select=title,tags(name)").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("PGRST200")), "{v}");
}

/// More junction tables than are considered (20): ambiguous, and said so,
/// rather than deciding among the first 20 in name order.
#[tokio::test(flavor = "multi_thread")]
async fn more_junctions_than_considered_are_ambiguous() {
    let mut tables = vec![
        auto_id("films").column(ColumnDef::text("title").not_null()),
        auto_id("tags").column(ColumnDef::text("name").not_null()),
    ];
    for i in 0..21 {
        tables.push(
            auto_id(&format!("j{i:02}"))
                .column(ColumnDef::integer("film_id").not_null())
                .column(ColumnDef::integer("tag_id").not_null())
                .references("film_id", "films", "id")
                .references("tag_id", "tags", "id"),
        );
    }
    let policies = vec![("films", read_policy()), ("tags", read_policy())];
    let e = start(Backend::Sqlite, tables, policies, |_| {}).await;
    let (s, v) = error(&e, "films?select=title,tags(name)").await;
    assert_eq!((s, v["code"].as_str()), (300, Some("PGRST201")), "{v}");
    // Not a choice among the first 20 in name order: the caller names it.
    assert!(
        v["hint"]
            .as_str()
            .unwrap()
            .contains("tags!<junction table>"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn many_to_many_over_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let db: Arc<dyn Database> = Arc::new(PgDatabase::open(scratch.config("m2m")).await.unwrap());
    let e = start_on(db, None, m2m_tables(), m2m_policies(), |_| {}).await;
    m2m_scenario(&e).await;
    drop(e);
    scratch.cleanup().await.unwrap();
}

/// With `row_security`, an embedded table's rows are the database's
/// policies' to decide: a user reads only their own comments through an
/// embed, anon (no policy for it on comments) none, the service role all.
#[tokio::test(flavor = "multi_thread")]
async fn row_security_applies_to_embedded_tables() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let config = scratch.config("embed_rls");
    let schema = config.schema.clone().unwrap();
    let db: Arc<dyn Database> = Arc::new(PgDatabase::open(config).await.unwrap());
    let rls_tables = vec![
        auto_id("posts").column(ColumnDef::text("title").not_null()),
        auto_id("comments")
            .column(ColumnDef::integer("post_id").not_null())
            .column(ColumnDef::text("body").not_null())
            .column(ColumnDef::uuid("owner"))
            .references("post_id", "posts", "id"),
    ];
    // No owner_column: the rows are the database's.
    let e = start_on(
        db.clone(),
        None,
        rls_tables,
        vec![("posts", read_policy()), ("comments", read_policy())],
        |c| c.row_security = true,
    )
    .await;
    for t in ["posts", "comments"] {
        let t = format!("\"{schema}\".{t}");
        for sql in [
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO authenticated, anon"),
            format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
            format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"),
        ] {
            db.raw_query(&sql, &Params::new()).await.unwrap();
        }
    }
    for sql in [
        format!("CREATE POLICY all_read ON \"{schema}\".posts FOR SELECT TO anon, authenticated USING (true)"),
        format!(
            "CREATE POLICY own ON \"{schema}\".comments FOR SELECT TO authenticated USING (owner = auth.uid())"
        ),
    ] {
        db.raw_query(&sql, &Params::new()).await.unwrap();
    }
    let (a, token_a) = e.sign_up("rls-embed-a@example.com").await;
    let (b, _) = e.sign_up("rls-embed-b@example.com").await;
    let (s, v) = json(
        e.service(Method::POST, "posts")
            .json(&json!([{"title": "p1"}])),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = json(e.service(Method::POST, "comments").json(&json!([
        {"post_id": 1, "body": "from a", "owner": a},
        {"post_id": 1, "body": "from b", "owner": b}
    ])))
    .await;
    assert_eq!(s, 201, "{v}");
    let q = "posts?select=title,comments(body)";
    let (s, v) = json(e.user(&token_a, Method::GET, q)).await;
    assert_eq!(
        (s, v),
        (
            200,
            json!([{"title": "p1", "comments": [{"body": "from a"}]}])
        )
    );
    let (s, v) = json(e.anon(Method::GET, q)).await;
    assert_eq!((s, v), (200, json!([{"title": "p1", "comments": []}])));
    // !inner through the policies: no visible comment, no post.
    let (s, v) = json(e.anon(Method::GET, "posts?select=title,comments!inner(body)")).await;
    assert_eq!((s, v), (200, json!([])));
    let (s, v) = json(e.service(Method::GET, &format!("{q}&comments.order=body"))).await;
    assert_eq!(
        (s, v),
        (
            200,
            json!([{"title": "p1", "comments": [{"body": "from a"}, {"body": "from b"}]}])
        )
    );
    drop(e);
    scratch.cleanup().await.unwrap();
}
