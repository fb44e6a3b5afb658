//! db-supabase against `truststream serve` over PostgreSQL with
//! `serve.row_security = true`: the database suite (service role), and
//! real row-level security through scoped handles — a policy
//! `using (owner = auth.uid())` decides, serve's table policy grants the
//! actions only. Needs the PostgreSQL server of
//! `truststream_db_postgres::testing` (a failure under `CI=true` when it is
//! missing; skipped with a message elsewhere).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use support::row;

use serde_json::json;
use truststream_conformance::{db, factory};
use truststream_core::ErrorKind;
use truststream_core_auth::{Auth, SignUp};
use truststream_core_db::{
    col, ColumnDef, ColumnDefault, Database, Params, Query, RequestScope, TableSchema,
};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_serve::{TableAction, TablePolicy};

#[tokio::test(flavor = "multi_thread")]
async fn serve_over_postgres_with_row_security_passes_the_database_suite() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Arc::new(Scratch::new(url));
    let s = scratch.clone();
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f = factory(move || {
        let s = s.clone();
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let mut config = s.config(&format!("sbrls{i}"));
            config.max_connections = 4;
            let pg: Arc<dyn Database> = Arc::new(
                truststream_db_postgres::PgDatabase::open(config)
                    .await
                    .map_err(|e| e.to_string())?,
            );
            let served = support::serve_with(pg.clone(), vec![], true).await?;
            // The backend keeps the server alive as long as the case's
            // handle (the server stops when the last Arc goes).
            let backend = support::Recording {
                inner: pg,
                calls: Arc::new(support::Calls::default()),
                server: Some(served.server.clone()),
                after_read: None,
            };
            let db = support::rest_only(&served).with_sql(Arc::new(backend));
            Ok(Arc::new(db) as Arc<dyn Database>)
        }
    });
    let report = db::run("supabase(serve+postgres, row_security)", f, None).await;
    report.print_table();
    scratch.cleanup().await.expect("drop the scratch schemas");
    assert_eq!(report.failed(), 0, "failures: {}", report.summary());
    // change_feed is false without a realtime provider attached.
    let want = [
        "changes.insert_update_delete",
        "changes.table_filter",
        "changes.batch_and_transaction",
        "changes.nothing_on_rollback",
    ];
    let mut skipped = report.skipped_cases();
    skipped.sort();
    let mut want = want.to_vec();
    want.sort();
    assert_eq!(skipped, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn row_security_policies_decide_through_scoped_handles() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let config = scratch.config("sbrls_policy");
    let schema = config.schema.clone().expect("a scratch schema");
    let pg: Arc<dyn Database> = Arc::new(
        truststream_db_postgres::PgDatabase::open(config)
            .await
            .expect("PostgreSQL"),
    );
    pg.create_table(
        &TableSchema::new("notes")
            .column(
                ColumnDef::uuid("id")
                    .primary_key()
                    .default(ColumnDefault::RandomUuid),
            )
            .column(ColumnDef::uuid("owner").not_null())
            .column(ColumnDef::text("body")),
    )
    .await
    .expect("notes");
    // serve grants the actions; the rows are the policy's.
    let served = support::serve_with(
        pg.clone(),
        vec![(
            "notes",
            TablePolicy {
                authenticated: TableAction::ALL.to_vec(),
                ..TablePolicy::default()
            },
        )],
        true,
    )
    .await
    .expect("serve");
    let t = format!("\"{schema}\".notes");
    for sql in [
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {t} TO authenticated"),
        format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"),
        format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"),
        format!(
            "CREATE POLICY own ON {t} FOR ALL TO authenticated \
             USING (owner = auth.uid()) WITH CHECK (owner = auth.uid())"
        ),
    ] {
        pg.raw_query(&sql, &Params::new()).await.expect("policy");
    }
    let service = Arc::new(support::rest_only(&served).with_sql(pg.clone()));
    let mut users = BTreeMap::new();
    for email in ["a@example.com", "b@example.com"] {
        let s = served
            .auth
            .sign_up(SignUp::new(email, "correct horse battery staple"))
            .await
            .expect("sign up");
        let p = served
            .auth
            .validate_token(s.access_token.expose())
            .await
            .expect("valid token");
        let scope = RequestScope::new("authenticated", p.claims.clone())
            .expect("scope")
            .with_token(s.access_token.expose());
        let handle = service.clone().scoped(scope).expect("scoped handle");
        users.insert(email, (s.user.id.clone(), handle));
    }
    let (a_id, a) = &users["a@example.com"];
    let (b_id, b) = &users["b@example.com"];

    let mine = a
        .create("notes", row(json!({"owner": a_id, "body": "a's"})))
        .await
        .expect("A writes its own row");
    let id = mine["id"].clone();
    b.create("notes", row(json!({"owner": b_id, "body": "b's"})))
        .await
        .expect("B writes its own row");
    // WITH CHECK: B cannot write a row owned by A.
    let e = b
        .create("notes", row(json!({"owner": a_id, "body": "forged"})))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::PermissionDenied | ErrorKind::Unauthenticated
        ),
        "{e}"
    );
    // USING: B never sees, changes or deletes A's row.
    let seen = b.read("notes", &Query::new()).await.expect("B reads");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["owner"], json!(b_id));
    assert_eq!(b.get("notes", &id).await.expect("get"), None);
    let e = b
        .update("notes", &id, row(json!({"body": "stolen"})))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(!b.delete("notes", &id).await.expect("delete"));
    assert_eq!(
        b.update_many(
            "notes",
            &col("owner").eq(a_id.as_str()),
            row(json!({"body": "x"}))
        )
        .await
        .expect("update_many"),
        0
    );
    assert_eq!(
        b.delete_many("notes", &col("owner").eq(a_id.as_str()))
            .await
            .expect("delete_many"),
        0
    );
    // A's row is untouched; the service role sees both rows.
    let back = a.get("notes", &id).await.expect("get").expect("A's row");
    assert_eq!(back["body"], "a's");
    assert_eq!(service.read("notes", &Query::new()).await.unwrap().len(), 2);
    // A scoped handle without a token is refused before any request.
    let no_token = RequestScope::new("authenticated", row(json!({"sub": a_id}))).unwrap();
    let e = service
        .clone()
        .scoped(no_token)
        .err()
        .expect("a REST scope needs the caller's token");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    drop(users);
    scratch.cleanup().await.expect("drop the scratch schema");
}
