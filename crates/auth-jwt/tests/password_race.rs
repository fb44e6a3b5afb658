//! A password change races a sign-out of the session making it: the
//! session is checked live first, and the new hash is written (ending the
//! user's other sessions) by a later transaction. A sign-out that commits
//! between the two must win: the change is `Unauthenticated` and writes
//! nothing. The sign-out is put exactly there by a database layer that
//! revokes the session just before the transaction reaches the database,
//! on memory, SQLite and (when a server is there) PostgreSQL.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::*;
use serde_json::{json, Map};
use truststream_auth_jwt::JwtAuth;
use truststream_core_auth::{Auth, ErrorKind, SignIn, SignUp, UserUpdate};
use truststream_core_db::{col, Database, Operation, OperationOutput};
use truststream_db_postgres::testing::{self, Scratch};
use truststream_db_postgres::PgDatabase;
use truststream_layer::{DatabaseLayer, LayeredDatabase};

/// Signs out the session it is given (once) right before the next
/// transaction that writes the users table: between the provider's
/// liveness check and its write.
#[derive(Default)]
struct SignOutBeforeUserWrite {
    session: Mutex<Option<String>>,
}

#[async_trait]
impl DatabaseLayer for SignOutBeforeUserWrite {
    async fn transaction(
        &self,
        next: &dyn Database,
        operations: Vec<Operation>,
    ) -> truststream_core::Result<Vec<OperationOutput>> {
        let writes_users = operations.iter().any(|o| o.table() == "auth_users");
        let session = writes_users
            .then(|| self.session.lock().unwrap().take())
            .flatten();
        if let Some(sid) = session {
            let mut patch = Map::new();
            patch.insert("revoked_at".into(), json!(chrono::Utc::now().to_rfc3339()));
            let n = next
                .update_many("auth_sessions", &col("id").eq(sid.as_str()), patch)
                .await?;
            assert_eq!(n, 1, "the hook signed out the session");
        }
        next.transaction(operations).await
    }
}

async fn sign_out_between_check_and_write(db: Arc<dyn Database>) {
    let hook = Arc::new(SignOutBeforeUserWrite::default());
    let db: Arc<dyn Database> = Arc::new(LayeredDatabase::new(db, hook.clone()));
    let auth = JwtAuth::new(config(), db).await.unwrap();
    let email = unique_email();
    let a1 = auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let a2 = auth.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
    let p1 = auth.validate_token(a1.access_token.expose()).await.unwrap();

    *hook.session.lock().unwrap() = p1.session_id.clone();
    let new_password = format!("{PASSWORD}-changed");
    let e = auth
        .update_user(
            &p1,
            UserUpdate {
                password: Some(new_password.as_str().into()),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert!(hook.session.lock().unwrap().is_none(), "the hook ran");
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");

    // Nothing was written: the old password signs in, the new one does
    // not, and the other session still refreshes.
    auth.sign_in(SignIn::new(&email, PASSWORD)).await.unwrap();
    let e = auth
        .sign_in(SignIn::new(&email, new_password.as_str()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    auth.refresh_session(a2.refresh_token.expose())
        .await
        .unwrap();

    // Without the race, a live session changes the password as before.
    let p3 = auth
        .validate_token(
            auth.sign_in(SignIn::new(&email, PASSWORD))
                .await
                .unwrap()
                .access_token
                .expose(),
        )
        .await
        .unwrap();
    auth.update_user(
        &p3,
        UserUpdate {
            password: Some(new_password.as_str().into()),
            ..UserUpdate::default()
        },
    )
    .await
    .unwrap();
    auth.sign_in(SignIn::new(&email, new_password.as_str()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_sign_out_between_check_and_write_wins_on_memory() {
    sign_out_between_check_and_write(memory_db()).await;
}

#[tokio::test]
async fn a_sign_out_between_check_and_write_wins_on_sqlite() {
    sign_out_between_check_and_write(sqlite_db().await).await;
}

#[tokio::test]
async fn a_sign_out_between_check_and_write_wins_on_postgres() {
    let Some(url) = testing::server().await else {
        return;
    };
    let scratch = Scratch::new(url);
    let db = PgDatabase::open(scratch.config("authpwrace"))
        .await
        .unwrap();
    sign_out_between_check_and_write(Arc::new(db)).await;
}
