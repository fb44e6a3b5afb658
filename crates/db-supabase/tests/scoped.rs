//! Per-user access through `Database::scoped`: the caller's token goes to
//! the server, whose policy (here serve's owner rule, the counterpart of an
//! RLS policy `using (owner = auth.uid())`) decides. User A never reads or
//! changes user B's rows.

mod support;

use std::sync::Arc;
use support::row;

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_auth::{Auth, SignUp};
use truststream_core_db::{
    col, ColumnDef, ColumnDefault, Database, Query, RequestScope, TableSchema,
};
use truststream_db_supabase::{SupabaseDb, SupabaseDbConfig};
use truststream_serve::{TableAction, TablePolicy};

async fn user(auth: &truststream_auth_jwt::JwtAuth, email: &str) -> (String, String) {
    let s = auth
        .sign_up(SignUp::new(email, "correct horse battery staple"))
        .await
        .expect("sign up");
    (s.user.id.clone(), s.access_token.expose().to_string())
}

fn scope(id: &str, token: &str) -> RequestScope {
    RequestScope::new(
        "authenticated",
        row(json!({"sub": id, "role": "authenticated"})),
    )
    .expect("scope")
    .with_token(token)
}

#[tokio::test(flavor = "multi_thread")]
async fn users_see_and_change_only_their_rows() {
    let mem: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    mem.create_table(
        &TableSchema::new("notes")
            .column(
                ColumnDef::uuid("id")
                    .primary_key()
                    .default(ColumnDefault::RandomUuid),
            )
            .column(ColumnDef::text("body"))
            .column(ColumnDef::text("owner")),
    )
    .await
    .expect("notes");
    let served_db = mem.clone();
    let served = support::serve(
        mem,
        vec![(
            "notes",
            TablePolicy {
                anon: vec![],
                authenticated: TableAction::ALL.to_vec(),
                owner_column: Some("owner".into()),
                ..TablePolicy::default()
            },
        )],
    )
    .await
    .expect("serve");
    let anon = Arc::new(
        SupabaseDb::new(SupabaseDbConfig::anon(
            served.server.url.clone(),
            served.server.keys.anon().to_string(),
        ))
        .expect("db"),
    );
    assert!(anon.capabilities().row_security);
    let (a_id, a_token) = user(&served.auth, "a@example.com").await;
    let (b_id, b_token) = user(&served.auth, "b@example.com").await;
    let a = anon
        .clone()
        .scoped(scope(&a_id, &a_token))
        .expect("scoped a");
    let b = anon
        .clone()
        .scoped(scope(&b_id, &b_token))
        .expect("scoped b");

    let note_a = a
        .create("notes", row(json!({"body": "a's"})))
        .await
        .expect("a creates");
    assert_eq!(note_a["owner"], json!(a_id), "the server set the owner");
    let note_b = b
        .create("notes", row(json!({"body": "b's"})))
        .await
        .expect("b creates");
    let a_rows = a.read("notes", &Query::new()).await.expect("a reads");
    assert_eq!(a_rows.len(), 1);
    assert_eq!(a_rows[0]["body"], json!("a's"));

    // A cannot see, change or delete B's row, nor create a row for B.
    assert_eq!(a.get("notes", &note_b["id"]).await.expect("get"), None);
    let e = a
        .update("notes", &note_b["id"], row(json!({"body": "hacked"})))
        .await
        .expect_err("not a's");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!a.delete("notes", &note_b["id"]).await.expect("delete"));
    assert_eq!(
        a.update_many("notes", &col("body").eq("b's"), row(json!({"body": "x"})))
            .await
            .expect("update_many"),
        0
    );
    assert_eq!(
        a.delete_many("notes", &col("owner").eq(b_id.as_str()))
            .await
            .expect("dm"),
        0
    );
    let e = a
        .create("notes", row(json!({"body": "forged", "owner": b_id})))
        .await
        .expect_err("forged owner");
    assert!(matches!(e.kind(), ErrorKind::PermissionDenied), "{e}");
    let b_rows = b.read("notes", &Query::new()).await.expect("b reads");
    assert_eq!(b_rows.len(), 1);
    assert_eq!(b_rows[0]["body"], json!("b's"), "B's row is untouched");

    // With a SQL backend that cannot run as the caller (db-memory has no
    // row-level security), the scoped handle has no SQL path at all: no
    // transaction or raw SQL may bypass the policy. CRUD still goes over
    // REST, with the table's schema known.
    let mem = served_db.clone();
    let with_sql = Arc::new(
        SupabaseDb::new(SupabaseDbConfig::anon(
            served.server.url.clone(),
            served.server.keys.anon().to_string(),
        ))
        .expect("db")
        .with_sql(mem),
    );
    assert!(with_sql.capabilities().transactions);
    let a2 = with_sql
        .clone()
        .scoped(scope(&a_id, &a_token))
        .expect("scoped");
    assert!(!a2.capabilities().transactions && !a2.capabilities().schema);
    let e = a2
        .transaction(vec![truststream_core_db::Operation::Delete {
            table: "notes".into(),
            id: note_b["id"].clone(),
        }])
        .await
        .expect_err("no unscoped transaction");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(
        a2.read("notes", &Query::new()).await.expect("read").len(),
        1
    );
    assert_eq!(a2.get("notes", &note_b["id"]).await.expect("get"), None);

    // The anon key alone may not read the table at all.
    let e = anon.read("notes", &Query::new()).await.expect_err("anon");
    assert!(
        matches!(
            e.kind(),
            ErrorKind::PermissionDenied | ErrorKind::Unauthenticated
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_and_missing_tokens() {
    let mem: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    mem.create_table(
        &TableSchema::new("notes")
            .column(
                ColumnDef::integer("id")
                    .primary_key()
                    .default(ColumnDefault::AutoIncrement),
            )
            .column(ColumnDef::text("owner")),
    )
    .await
    .expect("notes");
    let served = support::serve(mem, vec![]).await.expect("serve");
    let anon = Arc::new(
        SupabaseDb::new(SupabaseDbConfig::anon(
            served.server.url.clone(),
            served.server.keys.anon().to_string(),
        ))
        .expect("db"),
    );
    let no_token = RequestScope::new("authenticated", Default::default()).expect("scope");
    let Err(e) = anon.clone().scoped(no_token) else {
        panic!("a scope without a token was accepted")
    };
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4Iiwicm9sZSI6ImF1dGhlbnRpY2F0ZWQiLCJleHAiOjF9.c2lnbmF0dXJl";
    let s = RequestScope::new("authenticated", Default::default())
        .expect("scope")
        .with_token(forged);
    let bad = anon.clone().scoped(s).expect("handle");
    let e = bad
        .read("notes", &Query::new())
        .await
        .expect_err("forged token");
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(
        !e.to_string().contains(forged),
        "the token is not echoed: {e}"
    );
    let s = RequestScope::new("authenticated", Default::default())
        .expect("scope")
        .with_token("two words");
    let Err(e) = anon.clone().scoped(s) else {
        panic!("a token with a space was accepted")
    };
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
