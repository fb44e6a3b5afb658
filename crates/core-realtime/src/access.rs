//! Who may do what over a realtime provider's own client protocol: which
//! channels a remote client may join ([`ChannelAccess`], [`ChannelRule`]),
//! which tables it may subscribe to and what each subscriber may read of a
//! change ([`Publication`], [`TableRule`]). The server-side providers check
//! their clients with these, so the rules mean the same whatever the wire:
//! realtime-ws and realtime-socketio apply the table rules; private
//! channels are realtime-socketio's only (realtime-ws refuses a private
//! join and has no `channels` setting). In-process calls are application
//! code and are not checked.
//!
//! A table is bound only when the configuration publishes it
//! (`publish`: names, or `prefix*` patterns). Some names can never be
//! published: the auth provider's tables (its
//! [`AuthCapabilities::private_tables`], and every `auth_*` table, auth-jwt's
//! default prefix) and the providers' own `_truststream*` tables. Each
//! published table has a [`TableRule`] (the default one when `tables` names
//! none): an owner column, a required permission, hidden columns, and
//! whether anonymous subscribers may read it.
//!
//! The check runs per subscriber and per change: a change whose rows the
//! subscriber may not read is never sent, and hidden columns are removed
//! from every payload.
//!
//! [`AuthCapabilities::private_tables`]: truststream_core_auth::AuthCapabilities::private_tables

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::RtResult;
use serde_json::Value;
use truststream_core::{echo, Error, ErrorKind};
use truststream_core_auth::{Auth, Permission, Principal};
use truststream_core_db::{ident, ChangeKind, RequestScope, RowChange};

/// Prefixes of tables that are never published, whatever the
/// configuration says: auth-jwt's default table prefix, and the providers'
/// own tables (`_truststream_schema`, `_truststream_changes`, ...).
pub const RESERVED_PREFIXES: [&str; 2] = ["auth_", "_truststream"];

/// The role that marks a token as anonymous (Supabase's anon key carries
/// `role: "anon"`).
const ANON_ROLE: &str = "anon";

/// How subscribers may read one published table (`[realtime.tables.<name>]`).
///
/// A table without `owner_column` and without `permission` is readable by
/// every authenticated subscriber.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableRule {
    /// A subscriber receives a change only when this column of the row
    /// holds its user id (the token's `sub`). An update is sent when the
    /// new row is the subscriber's; its old row only when that was theirs
    /// too. A delete is sent when the old row was theirs.
    pub owner_column: Option<String>,
    /// A core-auth permission (`action:resource`, e.g. `read:agents`) the
    /// subscriber must hold to bind the table; checked at the join and
    /// again when the client sends a new access token.
    pub permission: Option<String>,
    /// Columns removed from every `record` and `old_record` (and from
    /// `columns`); bindings may not filter on them.
    pub hidden: Vec<String>,
    /// Whether anonymous subscribers (no auth provider, or a token whose
    /// role is `anon`) may bind the table (default `false`). A table with
    /// an owner column or a permission is never readable anonymously.
    pub anon: bool,
    /// Check every change against the database's row-level security, as
    /// the subscriber (default `false`; needs a database whose capabilities
    /// report `row_security`, i.e. PostgreSQL — a server refuses to start
    /// otherwise; realtime-ws checks it, realtime-socketio refuses the rule
    /// as unsupported).
    ///
    /// Before an insert or update is sent, the server reads the row by its
    /// primary key through [`Database::scoped`], running as the subscriber's
    /// role (`authenticated`, or `anon` for anonymous subscribers) with its
    /// verified token claims, so policies such as
    /// `USING (owner = auth.uid())` decide; the change is sent only when
    /// that read returns the row, still as the change carries it (a row
    /// written again since is no evidence for the older values; its later
    /// change is checked in turn). The other rules still apply first.
    ///
    /// Deny by default where a policy cannot be evaluated:
    /// - an update is sent without its old row (the old row's visibility
    ///   cannot be read any more) unless `owner_column` shows it was the
    ///   subscriber's;
    /// - a delete (the row is gone) is sent only when `owner_column` shows
    ///   the old row was the subscriber's, so a table without an owner
    ///   column sends no deletes;
    /// - a table without a primary key, a failed or timed-out check, or a
    ///   checking queue that fell behind sends nothing (recorded in the
    ///   provider's health).
    ///
    /// Changes stay in order per table: checks run before the next change
    /// of the hub's checking queue is sent. Cost: one scoped read per
    /// distinct subscriber identity and change.
    ///
    /// [`Database::scoped`]: truststream_core_db::Database::scoped
    pub row_security: bool,
}

/// Who a subscriber is, for the per-row check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// No auth provider, or an `anon` token.
    Anonymous,
    /// An authenticated user, by id.
    User(String),
}

impl Viewer {
    /// The viewer of a join checked with `principal` (`None`: the hub has
    /// no auth provider).
    pub fn of(principal: Option<&Principal>) -> Viewer {
        match principal {
            Some(p) if !is_anonymous(p) => Viewer::User(p.user_id.clone()),
            _ => Viewer::Anonymous,
        }
    }
}

fn is_anonymous(p: &Principal) -> bool {
    p.user_id.is_empty()
        || p.roles.iter().any(|r| r == ANON_ROLE)
        || p.claims.get("role").and_then(Value::as_str) == Some(ANON_ROLE)
}

/// The database identity of a subscriber, for tables with
/// [`TableRule::row_security`]: role `authenticated` with the token's
/// verified claims (`sub` and `role` set), or role `anon` for anonymous
/// subscribers. The token's own `role` claim is not trusted as a database
/// role: a subscriber never runs as anything else (the service role
/// included, which joins as anonymous here).
pub fn scope_of(principal: Option<&Principal>) -> Option<Arc<RequestScope>> {
    let viewer = Viewer::of(principal);
    let mut claims = principal.map(|p| p.claims.clone()).unwrap_or_default();
    let role = match &viewer {
        Viewer::Anonymous => ANON_ROLE,
        Viewer::User(id) => {
            claims.insert("sub".into(), Value::String(id.clone()));
            "authenticated"
        }
    };
    claims.insert("role".into(), Value::String(role.into()));
    RequestScope::new(role, claims).ok().map(Arc::new)
}

/// What a subscriber gets of one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Nothing: the change is not sent.
    None,
    /// The change with its new row only (an update of a row that was not
    /// the subscriber's before).
    NewOnly,
    /// The whole change (hidden columns removed).
    Full,
}

/// One `publish` entry: a table name, or a `prefix*` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Name(String),
    Prefix(String),
}

impl Entry {
    fn parse(s: &str) -> RtResult<Entry> {
        let bad = |why: &str| {
            Error::invalid_input(format!("realtime.publish contains {}: {why}", shown(s)))
        };
        match s.strip_suffix('*') {
            Some("") => Err(bad(
                "\"*\" would publish every table, the auth provider's included; list the tables \
                 (or prefix* patterns)",
            )),
            Some(prefix) => {
                // The prefix of a valid name is a valid name itself.
                ident::validate(prefix)
                    .map_err(|_| bad("a pattern is a table-name prefix followed by '*'"))?;
                Ok(Entry::Prefix(prefix.to_string()))
            }
            None => {
                ident::validate(s).map_err(|_| bad("not a table name"))?;
                Ok(Entry::Name(s.to_string()))
            }
        }
    }

    fn matches(&self, table: &str) -> bool {
        match self {
            Entry::Name(n) => n == table,
            Entry::Prefix(p) => table.starts_with(p.as_str()),
        }
    }

    /// Whether some table starting with `reserved` would match.
    fn covers_prefix(&self, reserved: &str) -> bool {
        match self {
            Entry::Name(n) => n.starts_with(reserved),
            Entry::Prefix(p) => p.starts_with(reserved) || reserved.starts_with(p.as_str()),
        }
    }
}

/// The rule of the entry that covers `name`: a name beats a pattern, a
/// longer pattern a shorter one.
fn most_specific<'a, T>(entries: &'a [(Entry, T)], name: &str) -> Option<&'a T> {
    entries
        .iter()
        .filter(|(e, _)| e.matches(name))
        .max_by_key(|(e, _)| match e {
            Entry::Name(_) => usize::MAX,
            Entry::Prefix(p) => p.len(),
        })
        .map(|(_, rule)| rule)
}

/// A caller's value as shown in an error: quoted, bounded by
/// [`echo`].
pub fn shown(s: &str) -> String {
    format!("{:?}", echo(s).to_string())
}

fn reserved(table: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| table.starts_with(p))
}

/// The published tables and their rules, checked once when the hub starts.
#[derive(Debug, Default)]
pub struct Publication {
    /// Entries and their rules, in configuration order.
    entries: Vec<(Entry, TableRule)>,
    /// The auth provider's own tables.
    private: Vec<String>,
}

impl Publication {
    /// Checks `publish` and `tables` of the configuration (identifiers,
    /// reserved names, every rule naming a published entry).
    pub fn check_config(
        publish: &[String],
        tables: &BTreeMap<String, TableRule>,
    ) -> RtResult<Publication> {
        let mut entries = Vec::with_capacity(publish.len());
        for s in publish {
            let entry = Entry::parse(s)?;
            if let Some(p) = RESERVED_PREFIXES.iter().find(|p| entry.covers_prefix(p)) {
                return Err(Error::invalid_input(format!(
                    "realtime.publish contains {}: tables starting with {p:?} (the auth \
                     provider's and TrustStream's own) can never be published",
                    shown(s)
                )));
            }
            let rule = tables.get(s).cloned().unwrap_or_default();
            check_rule(s, &rule)?;
            entries.push((entry, rule));
        }
        if let Some(key) = tables.keys().find(|k| !publish.contains(k)) {
            return Err(Error::invalid_input(format!(
                "realtime.tables.{} names no entry of realtime.publish (a rule applies to a \
                 published table or pattern, written as in publish)",
                echo(key)
            )));
        }
        Ok(Publication {
            entries,
            private: Vec::new(),
        })
    }

    /// Adds the auth provider's tables; refuses a configuration that
    /// publishes one of them.
    pub fn with_private_tables(mut self, auth: Option<&Arc<dyn Auth>>) -> RtResult<Publication> {
        let Some(auth) = auth else {
            return Ok(self);
        };
        self.private = auth.capabilities().private_tables;
        for table in &self.private {
            if let Some((entry, _)) = self.entries.iter().find(|(e, _)| e.matches(table)) {
                let written = match entry {
                    Entry::Name(n) => n.clone(),
                    Entry::Prefix(p) => format!("{p}*"),
                };
                return Err(Error::invalid_input(format!(
                    "realtime.publish contains {}: it covers {}, a table of the auth provider \
                     ({}), which holds credentials and can never be published",
                    shown(&written),
                    shown(table),
                    auth.info().name
                )));
            }
        }
        Ok(self)
    }

    /// The rule of `table` when a client may bind it; a
    /// [`ErrorKind::PermissionDenied`] error saying why not otherwise.
    pub fn rule(&self, table: &str) -> RtResult<&TableRule> {
        if reserved(table) || self.private.iter().any(|t| t == table) {
            return Err(denied(format!(
                "table {} belongs to the auth provider or to TrustStream itself and is never \
                 published for realtime",
                shown(table)
            )));
        }
        self.published(table).ok_or_else(|| {
            denied(format!(
                "table {} is not published for realtime (realtime.publish)",
                shown(table)
            ))
        })
    }

    /// The publish entries (as written in the configuration) whose rule
    /// sets [`TableRule::row_security`].
    pub fn row_security_entries(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, rule)| rule.row_security)
            .map(|(e, _)| match e {
                Entry::Name(n) => n.clone(),
                Entry::Prefix(p) => format!("{p}*"),
            })
            .collect()
    }

    /// The rule of the `publish` entry that covers `table`: a name beats a
    /// pattern, a longer pattern a shorter one.
    fn published(&self, table: &str) -> Option<&TableRule> {
        most_specific(&self.entries, table)
    }

    /// The rule of a table whose change is being dispatched (`None`: not
    /// published, so no client binding can match it).
    pub fn rule_for_change(&self, table: &str) -> Option<&TableRule> {
        if reserved(table) || self.private.iter().any(|t| t == table) {
            return None;
        }
        self.published(table)
    }

    /// Checks that a subscriber (`principal`, `None` without an auth
    /// provider) may bind `table`, and that `columns` (the binding's filter
    /// columns) name no hidden column.
    pub async fn authorize(
        &self,
        auth: Option<&Arc<dyn Auth>>,
        principal: Option<&Principal>,
        table: &str,
        columns: &[&str],
    ) -> RtResult<()> {
        let rule = self.rule(table)?;
        if let Some(c) = columns.iter().find(|c| rule.hidden.iter().any(|h| h == *c)) {
            return Err(denied(format!(
                "column {} of table {table} is hidden (realtime.tables.{table}.hidden): a \
                 binding cannot filter on it",
                shown(c)
            )));
        }
        let anonymous = Viewer::of(principal) == Viewer::Anonymous;
        let guarded = rule.owner_column.is_some() || rule.permission.is_some();
        if anonymous && (guarded || !rule.anon) {
            return Err(denied(format!(
                "table {table} is not readable by anonymous subscribers: join with a user's \
                 access token"
            )));
        }
        if let (Some(permission), Some(auth), Some(p)) = (&rule.permission, auth, principal) {
            if !holds(auth, p, permission).await? {
                return Err(denied(format!(
                    "reading table {table} needs the permission {permission}, which this user \
                     does not hold"
                )));
            }
        }
        Ok(())
    }
}

/// Whether `p` holds `permission`. The auth provider's own error
/// (possibly its database's) stays in the server's log; the caller learns
/// only that the check could not run, with the error's kind.
async fn holds(auth: &Arc<dyn Auth>, p: &Principal, permission: &str) -> RtResult<bool> {
    auth.has_permission(p, permission).await.map_err(|e| {
        tracing::warn!(error = %e.display_chain(), %permission, "realtime: permission check failed");
        Error::new(
            e.kind(),
            format!("checking permission {permission} failed; try again later"),
        )
    })
}

fn denied(message: String) -> Error {
    Error::new(ErrorKind::PermissionDenied, message)
}

fn check_rule(key: &str, rule: &TableRule) -> RtResult<()> {
    let bad = |field: &str, why: String| {
        Error::invalid_input(format!("realtime.tables.{}.{field}: {why}", echo(key)))
    };
    if let Some(c) = &rule.owner_column {
        ident::validate(c).map_err(|e| bad("owner_column", e.message().to_string()))?;
    }
    for c in &rule.hidden {
        ident::validate(c).map_err(|e| bad("hidden", e.message().to_string()))?;
    }
    if let Some(c) = rule
        .owner_column
        .as_ref()
        .filter(|c| rule.hidden.contains(c))
    {
        return Err(bad(
            "hidden",
            format!("the owner column {c} cannot be hidden (the check reads it)"),
        ));
    }
    if let Some(p) = &rule.permission {
        Permission::parse(p).map_err(|e| bad("permission", e.message().to_string()))?;
    }
    if rule.anon && (rule.owner_column.is_some() || rule.permission.is_some()) {
        return Err(bad(
            "anon",
            "a table with an owner column or a permission is never readable anonymously".into(),
        ));
    }
    Ok(())
}

impl TableRule {
    /// What a subscriber who may see `seen` of `change` by the other rules
    /// may see under [`TableRule::row_security`], and whether the database
    /// must still confirm it (a read of the row as the subscriber).
    pub fn under_row_security(&self, seen: Visibility, change: &RowChange) -> (Visibility, bool) {
        // Only the owner column can speak for a row that is gone or changed.
        let vouched = self.owner_column.is_some();
        match change.kind {
            ChangeKind::Insert => (seen, true),
            ChangeKind::Update if seen == Visibility::Full && !vouched => {
                (Visibility::NewOnly, true)
            }
            ChangeKind::Update => (seen, true),
            ChangeKind::Delete if vouched => (seen, false),
            ChangeKind::Delete => (Visibility::None, false),
        }
    }

    /// What `viewer` may see of `change`.
    pub fn visibility(&self, viewer: &Viewer, change: &RowChange) -> Visibility {
        if *viewer == Viewer::Anonymous
            && (!self.anon || self.owner_column.is_some() || self.permission.is_some())
        {
            return Visibility::None;
        }
        let Some(column) = &self.owner_column else {
            return Visibility::Full;
        };
        let owns = |row: Option<&truststream_core_db::Row>| {
            let Viewer::User(id) = viewer else {
                return false;
            };
            row.and_then(|r| r.get(column))
                .is_some_and(|v| owner_matches(v, id))
        };
        match change.kind {
            ChangeKind::Insert => {
                if owns(change.new.as_ref()) {
                    Visibility::Full
                } else {
                    Visibility::None
                }
            }
            ChangeKind::Update => {
                if !owns(change.new.as_ref()) {
                    Visibility::None
                } else if change.old.is_none() || owns(change.old.as_ref()) {
                    Visibility::Full
                } else {
                    Visibility::NewOnly
                }
            }
            ChangeKind::Delete => {
                if owns(change.old.as_ref()) {
                    Visibility::Full
                } else {
                    Visibility::None
                }
            }
        }
    }

    /// What `viewer` gets of `change` under this rule, owner column and
    /// hidden columns applied (`None`: nothing). For a provider that
    /// delivers per subscriber; [`TableRule::row_security`] is not applied
    /// here (it needs a read of the database).
    ///
    /// Takes the change by value: a per-subscriber handler already holds
    /// its own copy, which is trimmed in place rather than copied again.
    pub fn visible_to(&self, viewer: &Viewer, mut change: RowChange) -> Option<RowChange> {
        let seen = self.visibility(viewer, &change);
        if seen == Visibility::None {
            return None;
        }
        self.strip_in_place(&mut change);
        if seen == Visibility::NewOnly {
            change.old = None;
        }
        Some(change)
    }

    /// `change` without the hidden columns (`None`: nothing is hidden, send
    /// it as it is). When the primary key is (part of) a hidden column, the
    /// change's `key` is removed too (null), so neither the payload's `key`
    /// nor a binding's `key` reveals it.
    pub fn strip(&self, change: &RowChange) -> Option<RowChange> {
        if self.hidden.is_empty() {
            return None;
        }
        let mut c = change.clone();
        self.strip_in_place(&mut c);
        Some(c)
    }

    /// [`TableRule::strip`] on a change the caller owns.
    fn strip_in_place(&self, c: &mut RowChange) {
        if self.hidden.is_empty() {
            return;
        }
        let key_is_hidden = |v: &Value| match &c.key {
            Value::Array(parts) => parts.contains(v),
            k => k == v,
        };
        let hides_key = [c.old.as_ref(), c.new.as_ref()]
            .into_iter()
            .flatten()
            .any(|row| {
                self.hidden
                    .iter()
                    .any(|h| row.get(h).is_some_and(key_is_hidden))
            });
        if hides_key {
            c.key = Value::Null;
        }
        for row in [c.old.as_mut(), c.new.as_mut()].into_iter().flatten() {
            for h in &self.hidden {
                row.remove(h);
            }
        }
    }
}

/// Whether an owner column's value is the user id (text, or a number
/// written as the id).
fn owner_matches(v: &Value, user_id: &str) -> bool {
    match v {
        Value::String(s) => s == user_id,
        Value::Number(n) => n.to_string() == user_id,
        _ => false,
    }
}

/// Who may join the channels one `channels` entry covers
/// (`[realtime.channels."<name or prefix*>"]`): a **private** channel.
///
/// A channel that no entry covers is public: every client the server let
/// in may join it. A private channel is never joined anonymously (no auth
/// provider, or a token whose role is `anon`); the user must also hold one
/// of `roles` (when any are listed; the token's roles as the auth provider
/// reads them, [`Principal::roles`]) and `permission` (when set; checked by
/// [`Auth::has_permission`]). An entry with neither admits every
/// authenticated user. The check runs at the join and again when the
/// client sends a new token.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelRule {
    /// Roles of which the user must hold at least one (empty: no role
    /// needed).
    pub roles: Vec<String>,
    /// A core-auth permission (`action:resource`, e.g. `join:rooms`) the
    /// user must hold.
    pub permission: Option<String>,
}

/// The private channels of a configuration (its `channels` entries),
/// checked once when the server starts.
#[derive(Debug, Default)]
pub struct ChannelAccess {
    entries: Vec<(Entry, ChannelRule)>,
}

impl ChannelAccess {
    /// Checks the `channels` entries: keys are channel names or `prefix*`
    /// patterns (`"*"` makes every channel private), rules name valid
    /// permissions and non-empty roles.
    pub fn check_config(channels: &BTreeMap<String, ChannelRule>) -> RtResult<ChannelAccess> {
        let mut entries = Vec::with_capacity(channels.len());
        for (key, rule) in channels {
            let bad = |why: String| {
                Error::invalid_input(format!("realtime.channels.{}: {why}", shown(key)))
            };
            let entry = match key.strip_suffix('*') {
                Some("") => Entry::Prefix(String::new()),
                Some(prefix) => {
                    crate::validate_channel_name(prefix)
                        .map_err(|e| bad(format!("not a channel name prefix: {}", e.message())))?;
                    Entry::Prefix(prefix.to_string())
                }
                None => {
                    crate::validate_channel_name(key)
                        .map_err(|e| bad(format!("not a channel name: {}", e.message())))?;
                    Entry::Name(key.clone())
                }
            };
            if rule.roles.iter().any(|r| r.trim().is_empty()) {
                return Err(bad("roles: a role name cannot be empty".into()));
            }
            if let Some(p) = &rule.permission {
                Permission::parse(p).map_err(|e| bad(format!("permission: {}", e.message())))?;
            }
            entries.push((entry, rule.clone()));
        }
        Ok(ChannelAccess { entries })
    }

    /// The rule of `channel` (`None`: a public channel).
    pub fn rule(&self, channel: &str) -> Option<&ChannelRule> {
        most_specific(&self.entries, channel)
    }

    /// Checks that a client (`principal`, `None` without an auth provider)
    /// may join `channel`; a [`ErrorKind::PermissionDenied`] error saying
    /// what it lacks otherwise (a missing permission is named, as for
    /// tables; the roles a channel accepts are not).
    pub async fn authorize(
        &self,
        auth: Option<&Arc<dyn Auth>>,
        principal: Option<&Principal>,
        channel: &str,
    ) -> RtResult<()> {
        let Some(rule) = self.rule(channel) else {
            return Ok(());
        };
        let shown_channel = shown(channel);
        let (Some(auth), Some(p)) = (auth, principal) else {
            return Err(denied(format!(
                "channel {shown_channel} is private: join with a user's access token"
            )));
        };
        if Viewer::of(Some(p)) == Viewer::Anonymous {
            return Err(denied(format!(
                "channel {shown_channel} is private: join with a user's access token"
            )));
        }
        if !rule.roles.is_empty() && !rule.roles.iter().any(|r| p.roles.contains(r)) {
            return Err(denied(format!(
                "channel {shown_channel} is private: joining it needs a role this user does \
                 not hold"
            )));
        }
        if let Some(permission) = &rule.permission {
            if !holds(auth, p, permission).await? {
                return Err(denied(format!(
                    "channel {shown_channel} is private: joining it needs the permission \
                     {permission}, which this user does not hold"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(kind: ChangeKind, old: Option<Value>, new: Option<Value>) -> RowChange {
        let row = |v: Value| v.as_object().cloned().unwrap_or_default();
        RowChange {
            table: "agents".into(),
            kind,
            key: json!("a"),
            old: old.map(row),
            new: new.map(row),
            committed_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn row_security_checks_inserts_and_updates_and_sends_deletes_only_when_an_owner_vouches() {
        let plain = TableRule {
            row_security: true,
            ..TableRule::default()
        };
        let owned = TableRule {
            row_security: true,
            owner_column: Some("user_id".into()),
            ..TableRule::default()
        };
        let ins = change(ChangeKind::Insert, None, Some(json!({"user_id": "u"})));
        let upd = change(
            ChangeKind::Update,
            Some(json!({"user_id": "u"})),
            Some(json!({"user_id": "u"})),
        );
        let del = change(ChangeKind::Delete, Some(json!({"user_id": "u"})), None);
        let full = Visibility::Full;
        assert_eq!(plain.under_row_security(full, &ins), (full, true));
        // Nothing speaks for the old row: it is not sent.
        assert_eq!(
            plain.under_row_security(full, &upd),
            (Visibility::NewOnly, true)
        );
        assert_eq!(owned.under_row_security(full, &upd), (full, true));
        assert_eq!(
            plain.under_row_security(full, &del),
            (Visibility::None, false)
        );
        assert_eq!(owned.under_row_security(full, &del), (full, false));
        assert_eq!(
            owned.under_row_security(Visibility::None, &del),
            (Visibility::None, false)
        );
    }

    #[test]
    fn a_subscriber_runs_as_authenticated_or_anon_whatever_its_role_claim_says() {
        let mut claims = serde_json::Map::new();
        claims.insert("role".into(), json!("postgres"));
        claims.insert("sub".into(), json!("forged"));
        let user = Principal {
            user_id: "u1".into(),
            email: None,
            roles: Vec::new(),
            session_id: None,
            expires_at: chrono::Utc::now(),
            claims,
        };
        let scope = scope_of(Some(&user)).expect("a scope");
        assert_eq!(scope.role, "authenticated");
        assert_eq!(scope.claims["role"], "authenticated");
        assert_eq!(scope.subject(), Some("u1"));
        let anon = scope_of(None).expect("a scope");
        assert_eq!(anon.role, "anon");
        assert_eq!(anon.subject(), None);
    }

    /// An auth provider whose every call fails with its database's words.
    struct BrokenAuth;

    const INTERNAL: &str = "connection to postgres://app:hunter2@db.internal failed";

    fn broken<T>() -> truststream_core_auth::AuthResult<T> {
        Err(Error::new(ErrorKind::Unavailable, INTERNAL))
    }

    #[async_trait::async_trait]
    impl Auth for BrokenAuth {
        fn info(&self) -> truststream_core::ProviderInfo {
            truststream_core::ProviderInfo {
                name: "broken",
                version: "0",
            }
        }
        fn capabilities(&self) -> truststream_core_auth::AuthCapabilities {
            truststream_core_auth::AuthCapabilities::none()
        }
        async fn health(&self) -> truststream_core::Health {
            truststream_core::Health::unhealthy(std::time::Duration::ZERO, INTERNAL)
        }
        async fn sign_up(
            &self,
            _: truststream_core_auth::SignUp,
        ) -> truststream_core_auth::AuthResult<truststream_core_auth::Session> {
            broken()
        }
        async fn sign_in(
            &self,
            _: truststream_core_auth::SignIn,
        ) -> truststream_core_auth::AuthResult<truststream_core_auth::Session> {
            broken()
        }
        async fn sign_out(&self, _: &Principal) -> truststream_core_auth::AuthResult<()> {
            broken()
        }
        async fn sign_out_everywhere(
            &self,
            _: &Principal,
        ) -> truststream_core_auth::AuthResult<()> {
            broken()
        }
        async fn get_user(
            &self,
            _: &Principal,
        ) -> truststream_core_auth::AuthResult<truststream_core_auth::User> {
            broken()
        }
        async fn get_session(
            &self,
            _: &Principal,
        ) -> truststream_core_auth::AuthResult<truststream_core_auth::SessionInfo> {
            broken()
        }
        async fn refresh_session(
            &self,
            _: &str,
        ) -> truststream_core_auth::AuthResult<truststream_core_auth::Session> {
            broken()
        }
        async fn validate_token(&self, _: &str) -> truststream_core_auth::AuthResult<Principal> {
            broken()
        }
        async fn get_user_roles(
            &self,
            _: &Principal,
        ) -> truststream_core_auth::AuthResult<Vec<String>> {
            broken()
        }
        async fn has_permission(
            &self,
            _: &Principal,
            _: &str,
        ) -> truststream_core_auth::AuthResult<bool> {
            broken()
        }
    }

    #[tokio::test]
    async fn a_failing_permission_check_keeps_the_providers_words_from_the_client() {
        let mut rules = BTreeMap::new();
        rules.insert(
            "agents".to_string(),
            TableRule {
                permission: Some("read:agents".into()),
                ..TableRule::default()
            },
        );
        let p = Publication::check_config(&["agents".into()], &rules).unwrap();
        let auth: Arc<dyn Auth> = Arc::new(BrokenAuth);
        let principal = Principal {
            user_id: "u1".into(),
            email: None,
            roles: vec![],
            session_id: None,
            expires_at: chrono::Utc::now(),
            claims: serde_json::Map::new(),
        };
        let e = p
            .authorize(Some(&auth), Some(&principal), "agents", &[])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().contains("read:agents"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!e.to_string().contains("postgres://"), "{e}");
    }

    #[test]
    fn publish_entries_and_reserved_names() {
        let none = BTreeMap::new();
        for bad in [
            "*",
            "auth_users",
            "auth*",
            "a*",
            "_truststream_schema",
            "_*",
            "x y",
        ] {
            let e = Publication::check_config(&[bad.to_string()], &none).unwrap_err();
            assert!(e.message().contains("realtime.publish"), "{bad}: {e}");
        }
        let p = Publication::check_config(&["agents".into(), "rt_*".into()], &none).unwrap();
        assert!(p.rule("agents").is_ok());
        assert!(p.rule("rt_items_1").is_ok());
        assert!(p.rule("agent").is_err());
        assert!(p.rule("auth_users").is_err());
        let mut rules = BTreeMap::new();
        rules.insert("payments".to_string(), TableRule::default());
        let e = Publication::check_config(&["agents".into()], &rules).unwrap_err();
        assert!(e.message().contains("realtime.tables.payments"), "{e}");
    }

    #[test]
    fn owner_rule_per_change_kind() {
        let rule = TableRule {
            owner_column: Some("user_id".into()),
            ..TableRule::default()
        };
        let me = Viewer::User("u1".into());
        let mine = json!({"user_id": "u1"});
        let theirs = json!({"user_id": "u2"});
        let v = |c: RowChange| rule.visibility(&me, &c);
        assert_eq!(
            v(change(ChangeKind::Insert, None, Some(mine.clone()))),
            Visibility::Full
        );
        assert_eq!(
            v(change(ChangeKind::Insert, None, Some(theirs.clone()))),
            Visibility::None
        );
        assert_eq!(
            v(change(
                ChangeKind::Update,
                Some(mine.clone()),
                Some(theirs.clone())
            )),
            Visibility::None
        );
        assert_eq!(
            v(change(
                ChangeKind::Update,
                Some(theirs.clone()),
                Some(mine.clone())
            )),
            Visibility::NewOnly
        );
        assert_eq!(
            v(change(ChangeKind::Delete, Some(mine), None)),
            Visibility::Full
        );
        assert_eq!(
            v(change(ChangeKind::Delete, Some(theirs), None)),
            Visibility::None
        );
        let anyone = TableRule::default();
        let c = change(ChangeKind::Insert, None, Some(json!({})));
        assert_eq!(anyone.visibility(&me, &c), Visibility::Full);
        assert_eq!(anyone.visibility(&Viewer::Anonymous, &c), Visibility::None);
    }

    #[test]
    fn a_hidden_primary_key_is_not_sent_as_the_key() {
        let rule = TableRule {
            hidden: vec!["id".into()],
            ..TableRule::default()
        };
        let c = change(
            ChangeKind::Update,
            Some(json!({"id": "a", "name": "x"})),
            Some(json!({"id": "a", "name": "y"})),
        );
        let s = rule.strip(&c).unwrap();
        assert_eq!(s.key, Value::Null);
        assert!(s.new.unwrap().get("id").is_none());
        // A visible key stays.
        let rule = TableRule {
            hidden: vec!["name".into()],
            ..TableRule::default()
        };
        assert_eq!(rule.strip(&c).unwrap().key, json!("a"));
    }

    #[test]
    fn visible_to_applies_the_owner_rule_and_the_hidden_columns() {
        let rule = TableRule {
            owner_column: Some("user_id".into()),
            hidden: vec!["secret".into()],
            ..TableRule::default()
        };
        let me = Viewer::User("u1".into());
        let mine = json!({"user_id": "u1", "secret": "s", "name": "n"});
        let theirs = json!({"user_id": "u2", "secret": "s", "name": "n"});
        // Someone else's row: nothing.
        let c = change(ChangeKind::Insert, None, Some(theirs.clone()));
        assert_eq!(rule.visible_to(&me, c), None);
        assert_eq!(
            rule.visible_to(
                &Viewer::Anonymous,
                change(ChangeKind::Insert, None, Some(mine.clone()))
            ),
            None
        );
        // A row that became mine: the new row only, without the secret.
        let c = change(ChangeKind::Update, Some(theirs), Some(mine.clone()));
        let got = rule.visible_to(&me, c).unwrap();
        assert_eq!(got.old, None);
        let new = got.new.unwrap();
        assert!(new.get("secret").is_none() && new.get("name").is_some());
        assert_eq!(got.key, json!("a"));
        // My row throughout: both rows, neither with the secret.
        let c = change(ChangeKind::Update, Some(mine.clone()), Some(mine));
        let got = rule.visible_to(&me, c).unwrap();
        assert!(got.old.unwrap().get("secret").is_none());
        assert!(got.new.unwrap().get("secret").is_none());
        // Nothing hidden: the change as it is.
        let open = TableRule::default();
        let c = change(ChangeKind::Insert, None, Some(json!({"secret": "s"})));
        assert_eq!(open.visible_to(&me, c.clone()), Some(c));
    }

    fn user(id: &str, roles: &[&str]) -> Principal {
        Principal {
            user_id: id.into(),
            email: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            session_id: None,
            expires_at: chrono::Utc::now(),
            claims: serde_json::Map::new(),
        }
    }

    #[tokio::test]
    async fn private_channels_need_a_user_with_the_role() {
        let mut channels = BTreeMap::new();
        channels.insert(
            "admin:*".to_string(),
            ChannelRule {
                roles: vec!["admin".into()],
                permission: None,
            },
        );
        channels.insert("admin:lobby".to_string(), ChannelRule::default());
        let access = ChannelAccess::check_config(&channels).unwrap();
        let auth: Arc<dyn Auth> = Arc::new(BrokenAuth);
        let admin = user("u1", &["admin"]);
        let plain = user("u2", &["authenticated"]);
        let anon = user("u3", &["anon"]);
        let ok = |r: RtResult<()>| r.is_ok();
        // A public channel: anyone the server let in.
        assert!(ok(access.authorize(None, None, "room:1").await));
        assert!(ok(access
            .authorize(Some(&auth), Some(&admin), "admin:ops")
            .await));
        let e = access
            .authorize(Some(&auth), Some(&plain), "admin:ops")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.message().contains("needs a role"), "{e}");
        assert!(
            !e.message().contains("admin\""),
            "the accepted roles stay private: {e}"
        );
        // The longer entry wins: any signed-in user, never anonymous.
        assert!(ok(access
            .authorize(Some(&auth), Some(&plain), "admin:lobby")
            .await));
        for (a, p) in [(Some(&auth), Some(&anon)), (None, None)] {
            let e = access.authorize(a, p, "admin:lobby").await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::PermissionDenied);
            assert!(e.message().contains("access token"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_channel_permission_is_checked_and_its_failure_kept_from_the_client() {
        let mut channels = BTreeMap::new();
        channels.insert(
            "*".to_string(),
            ChannelRule {
                roles: Vec::new(),
                permission: Some("join:rooms".into()),
            },
        );
        let access = ChannelAccess::check_config(&channels).unwrap();
        let auth: Arc<dyn Auth> = Arc::new(BrokenAuth);
        let e = access
            .authorize(Some(&auth), Some(&user("u1", &[])), "anything")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn channel_rules_are_checked_at_start() {
        for (key, rule) in [
            ("bad\u{7}name", ChannelRule::default()),
            (
                "ok",
                ChannelRule {
                    roles: vec![" ".into()],
                    permission: None,
                },
            ),
            (
                "ok",
                ChannelRule {
                    roles: Vec::new(),
                    permission: Some("no-colon".into()),
                },
            ),
        ] {
            let mut channels = BTreeMap::new();
            channels.insert(key.to_string(), rule);
            let e = ChannelAccess::check_config(&channels).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.message().starts_with("realtime.channels."), "{e}");
        }
    }
}
