//! Users, sessions and refresh tokens, kept in any `core-db` provider.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use truststream_core_auth::{AuthResult, Error, ErrorKind, SessionInfo, User};
use truststream_core_db::value::format_timestamp;
use truststream_core_db::{
    and, col, ChangeFeedScope, ChangeStream, ColumnDef, Database, DatabaseExt, IndexSpec,
    Operation, OperationOutput, Query, TableSchema,
};
use truststream_core_realtime::feed::{follow_change_feed, DatabaseFeed, FeedSource, FeedTarget};

use crate::revocation::RevocationView;

/// The three table names.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub(crate) users: String,
    pub(crate) sessions: String,
    pub(crate) refresh_tokens: String,
}

impl Tables {
    pub(crate) fn new(prefix: &str) -> Self {
        Tables {
            users: format!("{prefix}users"),
            sessions: format!("{prefix}sessions"),
            refresh_tokens: format!("{prefix}refresh_tokens"),
        }
    }

    /// The three table names (what `capabilities().private_tables` reports).
    pub(crate) fn names(&self) -> Vec<String> {
        vec![
            self.users.clone(),
            self.sessions.clone(),
            self.refresh_tokens.clone(),
        ]
    }

    fn schemas(&self) -> [TableSchema; 3] {
        [
            TableSchema::new(&self.users)
                .column(ColumnDef::uuid("id").primary_key())
                .column(ColumnDef::text("email").not_null().unique())
                .column(ColumnDef::text("password_hash").not_null())
                .column(ColumnDef::json("roles").not_null())
                .column(ColumnDef::json("user_metadata").not_null())
                .column(ColumnDef::json("app_metadata").not_null())
                .column(ColumnDef::timestamp("created_at").not_null())
                .column(ColumnDef::timestamp("updated_at").not_null())
                .if_not_exists(),
            TableSchema::new(&self.sessions)
                .column(ColumnDef::uuid("id").primary_key())
                .column(ColumnDef::uuid("user_id").not_null())
                .column(ColumnDef::timestamp("created_at").not_null())
                .column(ColumnDef::timestamp("refreshed_at"))
                .column(ColumnDef::timestamp("not_after").not_null())
                .column(ColumnDef::timestamp("revoked_at"))
                .column(ColumnDef::integer("refresh_counter").not_null())
                .if_not_exists(),
            TableSchema::new(&self.refresh_tokens)
                // SHA-256 of the token, hex: the token itself is never stored.
                .column(ColumnDef::text("id").primary_key())
                .column(ColumnDef::uuid("session_id").not_null())
                .column(ColumnDef::integer("generation").not_null())
                .column(ColumnDef::timestamp("created_at").not_null())
                .if_not_exists(),
        ]
    }
}

/// A user row. No `Debug`: it holds the password hash.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) password_hash: String,
    pub(crate) roles: Vec<String>,
    pub(crate) user_metadata: Map<String, Value>,
    pub(crate) app_metadata: Map<String, Value>,
    #[serde(with = "stamp")]
    pub(crate) created_at: DateTime<Utc>,
    #[serde(with = "stamp")]
    pub(crate) updated_at: DateTime<Utc>,
}

impl UserRow {
    pub(crate) fn to_user(&self) -> User {
        User {
            id: self.id.clone(),
            email: self.email.clone(),
            roles: self.roles.clone(),
            user_metadata: self.user_metadata.clone(),
            app_metadata: self.app_metadata.clone(),
            created_at: self.created_at,
        }
    }
}

/// The columns of a user that reach a client ([`User`]): the row without
/// its password hash and update time, read where no password is checked.
#[derive(Deserialize)]
struct ProfileRow {
    id: String,
    email: String,
    roles: Vec<String>,
    user_metadata: Map<String, Value>,
    app_metadata: Map<String, Value>,
    #[serde(with = "stamp")]
    created_at: DateTime<Utc>,
}

impl ProfileRow {
    /// [`ProfileRow`]'s columns, in order.
    const COLUMNS: [&'static str; 6] = [
        "id",
        "email",
        "roles",
        "user_metadata",
        "app_metadata",
        "created_at",
    ];

    fn into_user(self) -> User {
        User {
            id: self.id,
            email: self.email,
            roles: self.roles,
            user_metadata: self.user_metadata,
            app_metadata: self.app_metadata,
            created_at: self.created_at,
        }
    }
}

/// What a refresh needs of its token's row: the session it belongs to and
/// its place in that session's chain.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenRef {
    pub(crate) session_id: String,
    pub(crate) generation: i64,
}

impl TokenRef {
    const COLUMNS: [&'static str; 2] = ["session_id", "generation"];
}

/// A session row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionRow {
    pub(crate) id: String,
    pub(crate) user_id: String,
    #[serde(with = "stamp")]
    pub(crate) created_at: DateTime<Utc>,
    #[serde(default, with = "stamp::option")]
    pub(crate) refreshed_at: Option<DateTime<Utc>>,
    #[serde(with = "stamp")]
    pub(crate) not_after: DateTime<Utc>,
    #[serde(default, with = "stamp::option")]
    pub(crate) revoked_at: Option<DateTime<Utc>>,
    pub(crate) refresh_counter: i64,
}

impl SessionRow {
    pub(crate) fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.not_after > now
    }

    pub(crate) fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            created_at: self.created_at,
            refreshed_at: self.refreshed_at,
            revoked_at: self.revoked_at,
        }
    }
}

/// A refresh-token row (the hash, never the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RefreshRow {
    pub(crate) id: String,
    pub(crate) session_id: String,
    pub(crate) generation: i64,
    #[serde(with = "stamp")]
    pub(crate) created_at: DateTime<Utc>,
}

/// The stored row of a refresh token: what `to_row` makes of a
/// [`RefreshRow`] (its fields in order, the timestamp in stored form),
/// built without serde, for a rotation's hot path.
fn token_row(
    id: &str,
    session_id: &str,
    generation: i64,
    created_at: DateTime<Utc>,
) -> Map<String, Value> {
    let mut row = Map::with_capacity(4);
    row.insert("id".into(), Value::String(id.to_string()));
    row.insert("session_id".into(), Value::String(session_id.to_string()));
    row.insert("generation".into(), Value::from(generation));
    row.insert("created_at".into(), ts(created_at));
    row
}

/// What a rotation attempt came to.
pub(crate) enum Rotation {
    /// This call rotated the token.
    Won,
    /// Another call rotated it first, or the session was revoked meanwhile.
    Lost,
}

/// A timestamp as the database stores it (microseconds, `Z`).
pub(crate) fn ts(t: DateTime<Utc>) -> Value {
    Value::String(format_timestamp(t))
}

/// The rows' timestamps in serde: written in the database's stored form
/// (which core-db keeps as it is instead of parsing and writing it again),
/// read with chrono's strict RFC 3339 parser first (what the database
/// returns) and its relaxed one, which chrono's own `Deserialize` uses,
/// for anything else: the same instants chrono's serde gives, at a
/// fraction of the parse.
mod stamp {
    use chrono::{DateTime, FixedOffset, Utc};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_timestamp(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(Visitor)
    }

    fn parse(s: &str) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(s)
            .or_else(|_| s.parse::<DateTime<FixedOffset>>())
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DateTime<Utc>, E> {
            parse(v).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
        }
    }

    /// [`stamp`](self) for an optional timestamp (`null` is `None`).
    pub(crate) mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            #[derive(Deserialize)]
            struct Stamp(#[serde(with = "super")] DateTime<Utc>);
            Ok(Option::<Stamp>::deserialize(d)?.map(|s| s.0))
        }
    }
}

/// Database access of the provider. Database errors keep their kind
/// (`Unavailable` stays retryable) with the operation named.
///
/// Every revocation goes through here and tells [`Store::revocations`]
/// once the database has answered: a committed one ends the session in
/// the view; one answered with an error (committed or not, nobody knows)
/// only marks it, which costs the next validation a read of what the
/// database holds.
pub(crate) struct Store {
    pub(crate) db: Arc<dyn Database>,
    pub(crate) tables: Tables,
    /// What `revocation = "checked"` validates against.
    pub(crate) revocations: Arc<RevocationView>,
}

impl Store {
    /// Creates the tables and indexes when missing.
    pub(crate) async fn ensure_schema(&self) -> AuthResult<()> {
        let caps = self.db.capabilities();
        if !caps.schema || !caps.transactions {
            return Err(Error::unsupported(format!(
                "auth-jwt needs a database provider with schema and transaction support; {} has schema = {}, transactions = {}",
                self.db.info().name,
                caps.schema,
                caps.transactions
            )));
        }
        for schema in self.tables.schemas() {
            self.db
                .create_table(&schema)
                .await
                .map_err(|e| e.with_operation("auth.create_tables"))?;
        }
        for index in [
            IndexSpec::new(&self.tables.sessions, ["user_id"]).if_not_exists(),
            IndexSpec::new(&self.tables.refresh_tokens, ["session_id"]).if_not_exists(),
        ] {
            self.db
                .create_index(&index)
                .await
                .map_err(|e| e.with_operation("auth.create_tables"))?;
        }
        Ok(())
    }

    /// Follows the sessions table's changes into the revocation view, when
    /// revocations are remembered and the database's change feed sees
    /// every writer (PostgreSQL): a session revoked by another process is
    /// then ended here as soon as its change arrives, rather than when
    /// what this process remembers of it ages out. Returns the following
    /// task (it re-subscribes with backoff when the feed ends; a first
    /// subscription that fails is retried the same way, with only the
    /// staleness bound meanwhile).
    pub(crate) async fn follow_revocations(&self) -> Option<tokio::task::AbortHandle> {
        let caps = self.db.capabilities();
        if !self.revocations.enabled()
            || !caps.change_feed
            || caps.change_feed_scope != Some(ChangeFeedScope::Database)
        {
            return None;
        }
        let source = DatabaseFeed {
            db: Arc::clone(&self.db),
            table: Some(self.tables.sessions.clone()),
        };
        let first = match source.subscribe().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "auth: cannot follow the sessions' change feed yet; other processes' revocations are seen within revocation_staleness_ms until it can"
                );
                self.revocations.feed_health().record_problem(
                    format!("subscribing to the sessions' change feed failed: {e}"),
                    true,
                );
                // An ended stream: the reader subscribes again with backoff.
                ChangeStream::new(futures::stream::empty())
            }
        };
        let target = Arc::downgrade(&self.revocations);
        Some(
            tokio::spawn(async move {
                follow_change_feed(target, &source, first, tokio::time::sleep).await;
            })
            .abort_handle(),
        )
    }

    pub(crate) async fn user_by_email(&self, email: &str) -> AuthResult<Option<UserRow>> {
        self.db
            .read_one_as(&self.tables.users, &Query::new().where_eq("email", email))
            .await
            .map_err(|e| e.with_operation("auth.read_user"))
    }

    /// The user `id` as a client sees it, without reading its password
    /// hash.
    pub(crate) async fn user_profile(&self, id: &str) -> AuthResult<Option<User>> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        let row: Option<ProfileRow> = self
            .db
            .get_columns_as(&self.tables.users, &json!(id), &ProfileRow::COLUMNS)
            .await
            .map_err(|e| e.with_operation("auth.read_user"))?;
        Ok(row.map(ProfileRow::into_user))
    }

    pub(crate) async fn user_by_id(&self, id: &str) -> AuthResult<Option<UserRow>> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        self.db
            .get_as(&self.tables.users, &json!(id))
            .await
            .map_err(|e| e.with_operation("auth.read_user"))
    }

    /// Inserts a user; a taken email is `Conflict` with a message that says
    /// no more than that.
    pub(crate) async fn insert_user(&self, user: &UserRow) -> AuthResult<()> {
        match self
            .db
            .create_as::<Value, _>(&self.tables.users, user)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Conflict => Err(email_taken()),
            Err(e) => Err(e.with_operation("auth.sign_up")),
        }
    }

    pub(crate) async fn set_roles(&self, user_id: &str, roles: &[String]) -> AuthResult<bool> {
        let mut patch = Map::new();
        patch.insert("roles".into(), json!(roles));
        patch.insert("updated_at".into(), ts(Utc::now()));
        let n = self
            .db
            .update_many(&self.tables.users, &col("id").eq(user_id), patch)
            .await
            .map_err(|e| e.with_operation("auth.set_user_roles"))?;
        Ok(n > 0)
    }

    /// Writes a user's changed email, password hash and metadata (the whole
    /// row but its id, roles and creation time); a taken email is
    /// `Conflict`. Returns whether the user still exists.
    pub(crate) async fn update_user(&self, user: &UserRow) -> AuthResult<bool> {
        match self
            .db
            .update_many(
                &self.tables.users,
                &col("id").eq(user.id.as_str()),
                user_patch(user),
            )
            .await
        {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == ErrorKind::Conflict => {
                Err(Error::conflict("an account with this email already exists")
                    .with_operation("auth.update_user"))
            }
            Err(e) => Err(e.with_operation("auth.update_user")),
        }
    }

    /// Opens a session and stores its first refresh token, in one transaction.
    pub(crate) async fn insert_session(
        &self,
        session: &SessionRow,
        token_hash: &str,
    ) -> AuthResult<()> {
        let session_row = truststream_core_db::to_row(session)?;
        let token_row = truststream_core_db::to_row(&RefreshRow {
            id: token_hash.to_string(),
            session_id: session.id.clone(),
            generation: 0,
            created_at: session.created_at,
        })?;
        self.db
            .transaction(vec![
                Operation::Create {
                    table: self.tables.sessions.clone(),
                    data: session_row,
                },
                Operation::Create {
                    table: self.tables.refresh_tokens.clone(),
                    data: token_row,
                },
            ])
            .await
            .map_err(|e| e.with_operation("auth.open_session"))?;
        Ok(())
    }

    pub(crate) async fn session(&self, id: &str) -> AuthResult<Option<SessionRow>> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        self.db
            .get_as(&self.tables.sessions, &json!(id))
            .await
            .map_err(|e| e.with_operation("auth.read_session"))
    }

    /// The session and generation of the refresh token whose hash is
    /// `token_hash`.
    pub(crate) async fn refresh_token(&self, token_hash: &str) -> AuthResult<Option<TokenRef>> {
        self.db
            .get_columns_as(
                &self.tables.refresh_tokens,
                &json!(token_hash),
                &TokenRef::COLUMNS,
            )
            .await
            .map_err(|e| e.with_operation("auth.read_refresh_token"))
    }

    /// Compare-and-set rotation: moves the session from `from_counter` to
    /// `from_counter + 1` and stores the child token, all or nothing. The
    /// update only matches while the counter is unchanged and the session
    /// live, and the child token's id is derived from the parent, so two
    /// rotations of one token can never both commit: on every provider the
    /// loser sees zero rows updated or a duplicate key.
    pub(crate) async fn rotate(
        &self,
        session_id: &str,
        from_counter: i64,
        child_hash: &str,
        now: DateTime<Utc>,
    ) -> AuthResult<Rotation> {
        let mut patch = Map::new();
        patch.insert("refresh_counter".into(), json!(from_counter + 1));
        patch.insert("refreshed_at".into(), ts(now));
        let child = token_row(child_hash, session_id, from_counter + 1, now);
        let ops = vec![
            Operation::UpdateMany {
                table: self.tables.sessions.clone(),
                filter: and([
                    col("id").eq(session_id),
                    col("refresh_counter").eq(from_counter),
                    col("revoked_at").is_null(),
                ]),
                data: patch,
            },
            // The stored row is not needed back: no `RETURNING` read.
            Operation::InsertMany {
                table: self.tables.refresh_tokens.clone(),
                rows: vec![child],
            },
        ];
        match self.db.transaction(ops).await {
            Ok(out) => match out.first() {
                Some(OperationOutput::Affected(1)) => Ok(Rotation::Won),
                _ => Ok(Rotation::Lost),
            },
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(Rotation::Lost),
            Err(e) => Err(e.with_operation("auth.refresh_session")),
        }
    }

    /// Revokes one session (no-op when already revoked).
    pub(crate) async fn revoke_session(&self, id: &str) -> AuthResult<()> {
        let mut patch = Map::new();
        patch.insert("revoked_at".into(), ts(Utc::now()));
        let out = self
            .db
            .update_many(
                &self.tables.sessions,
                &and([col("id").eq(id), col("revoked_at").is_null()]),
                patch,
            )
            .await;
        match out {
            Ok(_) => {
                self.revocations.revoked_session(id);
                Ok(())
            }
            Err(e) => {
                self.revocations.maybe_revoked_session(id);
                Err(e.with_operation("auth.sign_out"))
            }
        }
    }

    /// Revokes every live session of a user; returns how many.
    pub(crate) async fn revoke_user_sessions(&self, user_id: &str) -> AuthResult<u64> {
        let mut patch = Map::new();
        patch.insert("revoked_at".into(), ts(Utc::now()));
        let out = self
            .db
            .update_many(
                &self.tables.sessions,
                &and([col("user_id").eq(user_id), col("revoked_at").is_null()]),
                patch,
            )
            .await;
        self.revocations.revoked_user_sessions(user_id);
        out.map_err(|e| e.with_operation("auth.sign_out_everywhere"))
    }

    /// Revokes every live session of `user_id` but `keep`, and deletes
    /// those sessions' refresh-token hashes, in one transaction; returns
    /// how many sessions were revoked.
    ///
    /// The revocation matches by user, so a session opened while this runs
    /// is ended too; only the refresh tokens of the sessions read first are
    /// deleted, which is enough, since a refresh needs a live session.
    pub(crate) async fn revoke_other_sessions(&self, user_id: &str, keep: &str) -> AuthResult<u64> {
        let op = "auth.sign_out_others";
        let ops = self.end_other_sessions(user_id, keep, op).await?;
        let out = self.db.transaction(ops).await;
        self.revocations.revoked_user_sessions(user_id);
        let out = out.map_err(|e| e.with_operation(op))?;
        Ok(match out.first() {
            Some(OperationOutput::Affected(n)) => *n,
            _ => 0,
        })
    }

    /// Writes `user` as [`Store::update_user`] does and, in the same
    /// transaction, ends every other live session of the user as
    /// [`Store::revoke_other_sessions`] does (a password change: whoever
    /// holds another session's tokens is signed out with the old password).
    /// `false` when the user no longer exists (nothing is written).
    ///
    /// The transaction's first operation checks that `keep` is still a
    /// live session of the user (a compare-and-set on its row, which also
    /// locks it where the database locks rows): a session ended after the
    /// caller checked it, and before this commits, fails the whole
    /// transaction with `Unauthenticated` and nothing is written.
    pub(crate) async fn update_user_ending_other_sessions(
        &self,
        user: &UserRow,
        keep: &str,
    ) -> AuthResult<bool> {
        let op = "auth.update_user";
        // Sets `revoked_at` to what it must already be: the row changes in
        // nothing, and the update matches only while the session is live.
        let mut still_live = Map::new();
        still_live.insert("revoked_at".into(), Value::Null);
        let mut ops = vec![
            Operation::UpdateChecked {
                table: self.tables.sessions.clone(),
                filter: and([
                    col("id").eq(keep),
                    col("user_id").eq(user.id.as_str()),
                    col("revoked_at").is_null(),
                ]),
                data: still_live,
                expected: 1,
            },
            Operation::UpdateMany {
                table: self.tables.users.clone(),
                filter: col("id").eq(user.id.as_str()),
                data: user_patch(user),
            },
        ];
        ops.extend(self.end_other_sessions(&user.id, keep, op).await?);
        let out = self.db.transaction(ops).await;
        self.revocations.revoked_user_sessions(&user.id);
        match out {
            Ok(out) => match out.get(1) {
                Some(OperationOutput::Affected(n)) if *n > 0 => Ok(true),
                // The user is gone: the transaction changed no user, and
                // whatever it revoked belonged to a deleted user.
                _ => Ok(false),
            },
            Err(e) if e.kind() == ErrorKind::Conflict && failed_operation(&e) == Some(0) => {
                Err(Error::unauthenticated("the session has ended").with_operation(op))
            }
            Err(e) if e.kind() == ErrorKind::Conflict => Err(email_taken().with_operation(op)),
            Err(e) => Err(e.with_operation(op)),
        }
    }

    /// The operations that revoke every live session of `user_id` but
    /// `keep` and delete those sessions' refresh-token hashes.
    ///
    /// The revocation matches by user, so a session opened between the
    /// read and the transaction is ended too; only the refresh tokens of
    /// the sessions read first are deleted, which is enough, since a
    /// refresh needs a live session.
    async fn end_other_sessions(
        &self,
        user_id: &str,
        keep: &str,
        op: &'static str,
    ) -> AuthResult<Vec<Operation>> {
        let others = and([
            col("user_id").eq(user_id),
            col("id").ne(keep),
            col("revoked_at").is_null(),
        ]);
        let ids: Vec<Value> = self
            .db
            .read(
                &self.tables.sessions,
                &Query::new().select(["id"]).filter(others.clone()),
            )
            .await
            .map_err(|e| e.with_operation(op))?
            .into_iter()
            .filter_map(|mut row| row.remove("id"))
            .collect();
        let mut patch = Map::new();
        patch.insert("revoked_at".into(), ts(Utc::now()));
        let mut ops = vec![Operation::UpdateMany {
            table: self.tables.sessions.clone(),
            filter: others,
            data: patch,
        }];
        if !ids.is_empty() {
            ops.push(Operation::DeleteMany {
                table: self.tables.refresh_tokens.clone(),
                filter: col("session_id").is_in(ids),
            });
        }
        Ok(ops)
    }
}

/// The columns [`Store::update_user`] writes.
fn user_patch(user: &UserRow) -> Map<String, Value> {
    let mut patch = Map::new();
    patch.insert("email".into(), json!(user.email));
    patch.insert("password_hash".into(), json!(user.password_hash));
    patch.insert(
        "user_metadata".into(),
        Value::Object(user.user_metadata.clone()),
    );
    patch.insert("updated_at".into(), ts(user.updated_at));
    patch
}

/// The position of the transaction operation that failed with `e`, from
/// the `operation_index` context every provider adds.
fn failed_operation(e: &Error) -> Option<usize> {
    e.context()
        .iter()
        .find(|(k, _)| *k == "operation_index")
        .and_then(|(_, v)| v.parse().ok())
}

/// The one error a taken email gives: the interface promises `Conflict`,
/// and nothing about the existing account is added.
pub(crate) fn email_taken() -> Error {
    Error::conflict("an account with this email already exists").with_operation("auth.sign_up")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_with(created_at: &str, refreshed_at: Value) -> serde_json::Result<SessionRow> {
        serde_json::from_value(json!({
            "id": "00000000-0000-4000-8000-000000000002",
            "user_id": "00000000-0000-4000-8000-000000000001",
            "created_at": created_at,
            "refreshed_at": refreshed_at,
            "not_after": "2999-01-01T00:00:00.000000Z",
            "revoked_at": null,
            "refresh_counter": 0,
        }))
    }

    /// The rows read every timestamp chrono's serde reads, as the same
    /// instant, and refuse what it refuses.
    #[test]
    fn row_timestamps_read_what_chrono_reads() {
        for s in [
            "2024-05-01T12:00:00.000000Z",
            "2024-05-01T12:00:00Z",
            "2024-05-01T14:00:00.5+02:00",
            "2024-05-01t12:00:00z",
            "2024-05-01 12:00:00Z",
            "2024-05-01T12:00:00.123456789-00:30",
            "  2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00",
            "2024-13-01T12:00:00Z",
            "yesterday",
            "",
        ] {
            let chrono: Result<DateTime<Utc>, _> = serde_json::from_value(json!(s));
            let ours = session_with(s, json!(s));
            match (chrono, ours) {
                (Ok(t), Ok(row)) => {
                    assert_eq!(row.created_at, t, "{s}");
                    assert_eq!(row.refreshed_at, Some(t), "{s}");
                }
                (Err(_), Err(_)) => {}
                (c, o) => panic!("{s}: chrono {c:?}, rows {:?}", o.map(|r| r.created_at)),
            }
        }
        let row = session_with("2024-05-01T12:00:00Z", Value::Null).unwrap();
        assert_eq!(row.refreshed_at, None);
        assert!(session_with("2024-05-01T12:00:00Z", json!(5)).is_err());
    }

    /// Rows are written with their timestamps in the database's stored
    /// form, so core-db keeps them as they are.
    #[test]
    fn row_timestamps_are_written_in_stored_form() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T14:00:00.123456789+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let row = truststream_core_db::to_row(&RefreshRow {
            id: "x".into(),
            session_id: "y".into(),
            generation: 1,
            created_at: t,
        })
        .unwrap();
        assert_eq!(row["created_at"], json!("2024-05-01T12:00:00.123456Z"));
        assert!(truststream_core_db::value::is_stored_timestamp(
            row["created_at"].as_str().unwrap()
        ));
        assert_eq!(ts(t), row["created_at"]);
        // The rotation's own row builder makes the same row, keys in order.
        let direct = token_row("x", "y", 1, t);
        assert_eq!(direct, row);
        assert!(direct.keys().eq(row.keys()));
    }
}
