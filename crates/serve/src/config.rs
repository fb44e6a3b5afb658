//! `[serve]` configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use truststream_core::{Error, Secret};

/// Configuration of `truststream serve` (the `[<profile>.serve]` table).
/// Every field has a default; unknown keys are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on (default `127.0.0.1:54321`, the port
    /// `supabase start` uses for its API).
    pub bind: String,
    /// The URL clients reach the server at, used in signed URLs and printed
    /// at start (default `http://<bind>`).
    pub public_url: Option<String>,
    /// Where the generated API keys and signing secret are kept
    /// (`<data_dir>/serve-keys.json`, mode 0600; default `./data`, beside
    /// the embedded database and storage).
    pub data_dir: String,
    /// The anon key (default: generated once and kept in `data_dir`).
    #[serde(skip_serializing)]
    pub anon_key: Option<Secret>,
    /// The service-role key (default: generated once and kept in `data_dir`).
    #[serde(skip_serializing)]
    pub service_role_key: Option<Secret>,
    /// Largest JSON body of `/rest/v1` and `/auth/v1` requests in bytes
    /// (default 1 MiB); larger bodies get 413.
    pub max_json_body_bytes: usize,
    /// Largest upload through `/storage/v1` in bytes unless a bucket sets a
    /// smaller `file_size_limit` (default 50 MiB, Supabase's default).
    pub max_upload_bytes: u64,
    /// Requests other than uploads, downloads and WebSockets must finish
    /// within this many seconds (default 30); slower ones get 504.
    pub request_timeout_s: u64,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish
    /// (default 10 s) before the process exits.
    pub shutdown_grace_s: u64,
    /// CORS: allowed origins (default `["*"]`, like Supabase's API gateway).
    pub cors_allowed_origins: Vec<String>,
    /// Who may touch each table (keyed by table name). A table without an
    /// entry is reachable by the service role only. With `row_security`
    /// these policies still apply, before the database's own (defense in
    /// depth): leave `owner_column` out to leave the rows to the
    /// database's row-level security policies alone.
    pub tables: BTreeMap<String, TablePolicy>,
    /// Run every `/rest/v1` request of an anon or signed-in caller as the
    /// PostgreSQL role `anon` or `authenticated` with the caller's
    /// verified JWT claims (`request.jwt.claims`, `auth.uid()`,
    /// `auth.role()`, `auth.jwt()`), so the database's row-level security
    /// policies decide which rows they see and change; the service role
    /// stays unscoped (default `false`). Needs a database with row-level
    /// security (PostgreSQL): any other fails the start naming this key.
    /// At start the server makes the roles `anon`, `authenticated` and
    /// `service_role` (NOLOGIN, `service_role` BYPASSRLS) when missing,
    /// grants them to its own user, creates the schema `auth` with
    /// `auth.uid()`, `auth.role()` and `auth.jwt()`, and grants the roles
    /// USAGE on `public`, `auth` and the provider's schema. Table
    /// privileges (`GRANT SELECT ... TO authenticated`), `ENABLE ROW LEVEL
    /// SECURITY` and the policies are the application's.
    ///
    /// Realtime follows the same policies: every table of
    /// `realtime.publish` is checked per subscriber (the realtime-ws rule
    /// `row_security`), so a `postgres_changes` subscriber gets a change
    /// only when its own read of the row returns it.
    pub row_security: bool,
    /// Who may touch the objects of each bucket (keyed by bucket id). A
    /// bucket without an entry: public buckets are readable by anyone,
    /// everything else is the service role's only.
    pub buckets: BTreeMap<String, BucketPolicy>,
    /// `/auth/v1` settings.
    pub auth: AuthSettings,
    /// Tables realtime clients may bind `postgres_changes` to, and how each
    /// subscriber may read them (the realtime-ws hub's `publish` and
    /// `tables`).
    pub realtime: RealtimeSettings,
    /// Database functions callable through `/rest/v1/rpc/<fn>` (keyed by
    /// function name). Deny by default: a function without an entry is not
    /// callable, whoever asks; the service role may call every listed one.
    /// Needs a database with functions (PostgreSQL).
    pub rpc: BTreeMap<String, RpcPolicy>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: "127.0.0.1:54321".into(),
            public_url: None,
            data_dir: "./data".into(),
            anon_key: None,
            service_role_key: None,
            max_json_body_bytes: 1024 * 1024,
            max_upload_bytes: 50 * 1024 * 1024,
            request_timeout_s: 30,
            shutdown_grace_s: 10,
            cors_allowed_origins: vec!["*".into()],
            tables: BTreeMap::new(),
            row_security: false,
            buckets: BTreeMap::new(),
            auth: AuthSettings::default(),
            realtime: RealtimeSettings::default(),
            rpc: BTreeMap::new(),
        }
    }
}

impl ServeConfig {
    /// Parses the `[serve]` table (unknown keys name themselves).
    pub fn from_json(value: serde_json::Value) -> Result<Self, Error> {
        let config: ServeConfig = serde_json::from_value(value)
            .map_err(|e| Error::invalid_input(format!("invalid [serve] configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks limits and policies, naming the bad key.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_json_body_bytes == 0 {
            return Err(Error::invalid_input(
                "serve.max_json_body_bytes must be at least 1",
            ));
        }
        if self.max_upload_bytes == 0 {
            return Err(Error::invalid_input(
                "serve.max_upload_bytes must be at least 1",
            ));
        }
        if self.request_timeout_s == 0 {
            return Err(Error::invalid_input(
                "serve.request_timeout_s must be at least 1",
            ));
        }
        for (table, policy) in &self.tables {
            truststream_core_db::ident::validate(table).map_err(|e| {
                Error::invalid_input(format!(
                    "serve.tables.{}: {e}",
                    truststream_core::echo(table)
                ))
            })?;
            policy.validate(table)?;
        }
        for function in self.rpc.keys() {
            truststream_core_db::ident::validate(function).map_err(|e| {
                Error::invalid_input(format!(
                    "serve.rpc.{}: {e}",
                    truststream_core::echo(function)
                ))
            })?;
        }
        Ok(())
    }

    /// The URL clients reach the server at.
    pub fn public_url(&self, bound: std::net::SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{bound}"),
        }
    }
}

/// A table operation a policy grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableAction {
    /// Read rows (`GET`/`HEAD`, and what writes return).
    Select,
    /// Insert rows (and the insert half of an upsert).
    Insert,
    /// Update rows (and the update half of an upsert).
    Update,
    /// Delete rows.
    Delete,
}

impl TableAction {
    /// Every action.
    pub const ALL: [TableAction; 4] = [
        TableAction::Select,
        TableAction::Insert,
        TableAction::Update,
        TableAction::Delete,
    ];

    /// The lower-case name (`select`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TableAction::Select => "select",
            TableAction::Insert => "insert",
            TableAction::Update => "update",
            TableAction::Delete => "delete",
        }
    }
}

/// Access to one table for requests that are not the service role's.
/// With [`ServeConfig::row_security`] the database's own row-level
/// security policies apply too, after these: a table may then leave out
/// `owner_column` and leave the rows to the database.
///
/// ```toml
/// [default.serve.tables.todos]
/// anon = ["select"]                              # what the anon key may do
/// authenticated = ["select", "insert", "update", "delete"]
/// owner_column = "user_id"                       # signed-in users: own rows only
/// permissions = { delete = "delete:todos" }      # and, per action, a permission
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TablePolicy {
    /// Actions requests with the anon key (no user) may take.
    pub anon: Vec<TableAction>,
    /// Actions signed-in users may take.
    pub authenticated: Vec<TableAction>,
    /// A signed-in user reads, updates and deletes only rows whose
    /// `owner_column` is their user id, and inserts only rows that carry it
    /// (set when left out). Anonymous requests never match an owner.
    /// Optional: without it the granted actions reach every row (with
    /// `row_security`, every row the database's policies let through).
    pub owner_column: Option<String>,
    /// Per action, a permission (`action:resource`) the signed-in user must
    /// also hold (core-auth's role permissions).
    pub permissions: BTreeMap<TableAction, String>,
}

impl TablePolicy {
    fn validate(&self, table: &str) -> Result<(), Error> {
        if let Some(c) = &self.owner_column {
            truststream_core_db::ident::validate(c).map_err(|e| {
                Error::invalid_input(format!("serve.tables.{table}.owner_column: {e}"))
            })?;
        }
        for (action, p) in &self.permissions {
            truststream_core_auth::Permission::parse(p).map_err(|e| {
                Error::invalid_input(format!(
                    "serve.tables.{table}.permissions.{}: {e}",
                    action.name()
                ))
            })?;
        }
        Ok(())
    }
}

/// Access to the objects of one bucket for requests that are not the
/// service role's. Bucket creation, update, emptying and deletion are the
/// service role's only.
///
/// ```toml
/// [default.serve.buckets.avatars]
/// anon = ["select"]                                  # download, list, info
/// authenticated = ["select", "insert", "update", "delete"]
/// owner_folder = true      # signed-in users: only keys under "<user id>/"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BucketPolicy {
    /// Actions requests with the anon key may take (`select` = download,
    /// info, list, sign; `insert` = upload a new object; `update` =
    /// overwrite (upsert) or be a move/copy destination; `delete`).
    pub anon: Vec<TableAction>,
    /// Actions signed-in users may take.
    pub authenticated: Vec<TableAction>,
    /// A signed-in user may touch only keys under `<user id>/`.
    pub owner_folder: bool,
}

/// `/auth/v1` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Refuse `POST /auth/v1/signup` (users are made by the service role).
    pub disable_signup: bool,
}

/// Realtime settings of the mounted hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeSettings {
    /// Tables clients may bind `postgres_changes` to (names or `prefix*`).
    pub publish: Vec<String>,
    /// How subscribers may read each published table.
    pub tables: BTreeMap<String, truststream_realtime_ws::TableRule>,
    /// Largest broadcast payload in bytes (default: the hub's, 256 KiB).
    pub max_payload_bytes: Option<usize>,
}

/// Who may call one database function through `/rest/v1/rpc/<fn>` (the
/// service role always may).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcPolicy {
    /// Anonymous callers (the anon key) may call it.
    pub anon: bool,
    /// Signed-in users may call it.
    pub authenticated: bool,
}
