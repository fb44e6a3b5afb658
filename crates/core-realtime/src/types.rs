//! Data types of the realtime interface.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use truststream_core::Error;
use truststream_core_db::{eval, ident, ChangeKind, Filter, RowChange, Value};

use crate::RtResult;

/// A broadcast as delivered to handlers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Channel name.
    pub channel: String,
    /// Event name.
    pub event: String,
    /// Payload.
    pub payload: Value,
}

/// Options of a channel handle (Supabase's `config.broadcast` and
/// `config.presence`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelOptions {
    /// Receive your own broadcasts.
    pub broadcast_self: bool,
    /// `send` waits for the provider to accept the message.
    pub ack: bool,
    /// This member's presence key; `None` lets the provider pick a unique one.
    pub presence_key: Option<String>,
}

impl ChannelOptions {
    /// Defaults: no self-broadcast, no ack, generated presence key.
    pub fn new() -> Self {
        Self::default()
    }
    /// Receive your own broadcasts.
    pub fn broadcast_self(mut self, yes: bool) -> Self {
        self.broadcast_self = yes;
        self
    }
    /// Wait for acknowledgement on send.
    pub fn ack(mut self, yes: bool) -> Self {
        self.ack = yes;
        self
    }
    /// Sets the presence key.
    pub fn presence_key(mut self, key: impl Into<String>) -> Self {
        self.presence_key = Some(key.into());
        self
    }
}

/// One presence entry of a key (a key may be tracked by several handles).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceMeta {
    /// Unique reference of this tracking.
    pub presence_ref: String,
    /// The tracked state.
    pub state: Value,
}

/// Presence of a channel: key -> entries.
pub type PresenceState = BTreeMap<String, Vec<PresenceMeta>>;

/// A change of presence: who joined (or changed state) and who left.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PresenceDiff {
    /// Entries added (a state change is a leave of the old entry and a join
    /// of the new one).
    pub joins: PresenceState,
    /// Entries removed.
    pub leaves: PresenceState,
}

impl PresenceDiff {
    /// The diff of one entry leaving: `meta` of `key`.
    pub fn leave(key: String, meta: PresenceMeta) -> Self {
        let mut diff = PresenceDiff::default();
        diff.leaves.insert(key, vec![meta]);
        diff
    }
}

/// A channel's presence state from its members' `(key, entry)` pairs, in
/// member order (members that track nothing are left out by the caller).
pub fn presence_state_of<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a PresenceMeta)>,
) -> PresenceState {
    let mut state = PresenceState::new();
    for (key, meta) in entries {
        state.entry(key.to_string()).or_default().push(meta.clone());
    }
    state
}

/// What presence handlers receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    /// The full state (on join).
    State(PresenceState),
    /// A change.
    Diff(PresenceDiff),
}

/// Which row changes a subscription wants (Supabase's `postgres_changes`
/// binding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeSpec {
    /// The table.
    pub table: String,
    /// Only this kind of change; `None` for all.
    pub event: Option<ChangeKind>,
    /// Only the row with this primary key.
    pub key: Option<Value>,
    /// Only changes whose new row (old row for deletes) matches.
    pub filter: Option<Filter>,
}

impl ChangeSpec {
    /// Every change of `table`.
    pub fn table(table: &str) -> Self {
        ChangeSpec {
            table: table.to_string(),
            event: None,
            key: None,
            filter: None,
        }
    }
    /// Only changes of this kind.
    pub fn event(mut self, kind: ChangeKind) -> Self {
        self.event = Some(kind);
        self
    }
    /// Only the row with this primary key.
    pub fn key(mut self, key: impl Into<Value>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Only rows matching `filter`.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
    /// Whether `change` passes the table, event and key parts of the spec
    /// (not the filter; see [`ChangeSpec::matches`]).
    pub fn matches_head(&self, change: &RowChange) -> bool {
        change.table == self.table
            && self.event.is_none_or(|e| e == change.kind)
            && self.key.as_ref().is_none_or(|k| *k == change.key)
    }

    /// Whether `change` passes the whole spec: table, event, key, and the
    /// filter on the new row (the old row for deletes; see
    /// [`crate::feed::filter_matches`]).
    pub fn matches(&self, change: &RowChange) -> bool {
        self.matches_head(change)
            && self
                .filter
                .as_ref()
                .is_none_or(|f| crate::feed::filter_matches(f, change))
    }

    /// Checks the spec: a valid table name, a key that is a primary-key
    /// value (string, number or bool), a valid filter that names no other
    /// table. [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
    /// otherwise.
    pub fn validate(&self) -> RtResult<()> {
        ident::table(&self.table)?;
        if let Some(key) = &self.key {
            if key.is_null() || key.is_array() || key.is_object() {
                return Err(Error::invalid_input(format!(
                    "a row subscription's key must be a primary-key value (string, number or bool), got {key}"
                ))
                .with_context("table", self.table.clone()));
            }
        }
        if let Some(filter) = &self.filter {
            filter
                .validate()
                .map_err(|e| e.with_context("table", self.table.clone()))?;
            for column in eval::filter_columns(filter) {
                if column.table.as_ref().is_some_and(|t| *t != self.table) {
                    return Err(Error::invalid_input(format!(
                        "the filter of a subscription to table {} refers to column {column} of another table",
                        self.table
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Capabilities of a realtime provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RealtimeCapabilities {
    /// Broadcast between members.
    pub broadcast: bool,
    /// `ack` on send.
    pub ack: bool,
    /// Presence tracking.
    pub presence: bool,
    /// Row change subscriptions.
    pub row_changes: bool,
    /// Members in other processes (over the network).
    pub remote: bool,
    /// Largest broadcast payload (serialized JSON bytes), if limited.
    pub max_payload_bytes: Option<usize>,
}

impl RealtimeCapabilities {
    /// What every provider with channels offers: broadcast, `ack` and
    /// presence (the rest off).
    pub const fn channels() -> Self {
        let mut caps = Self::none();
        caps.broadcast = true;
        caps.ack = true;
        caps.presence = true;
        caps
    }

    /// Everything off.
    pub const fn none() -> Self {
        RealtimeCapabilities {
            broadcast: false,
            ack: false,
            presence: false,
            row_changes: false,
            remote: false,
            max_payload_bytes: None,
        }
    }
}

impl Default for RealtimeCapabilities {
    fn default() -> Self {
        Self::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use truststream_core_db::col;

    #[test]
    fn presence_state_groups_entries_by_key() {
        let meta = |r: &str| PresenceMeta {
            presence_ref: r.into(),
            state: json!({}),
        };
        let (a1, b, a2) = (meta("a1"), meta("b"), meta("a2"));
        let state = presence_state_of([("a", &a1), ("b", &b), ("a", &a2)]);
        assert_eq!(state.len(), 2);
        assert_eq!(state["a"], vec![a1.clone(), a2]);
        let diff = PresenceDiff::leave("a".into(), a1.clone());
        assert!(diff.joins.is_empty());
        assert_eq!(diff.leaves["a"], vec![a1]);
    }

    #[test]
    fn specs_are_validated() {
        let bad = [
            ChangeSpec::table("bad name"),
            ChangeSpec::table("items").key(Value::Null),
            ChangeSpec::table("items").key(json!([1])),
            ChangeSpec::table("items").filter(col("x;y").eq(1)),
            ChangeSpec::table("items").filter(col("other.x").eq(1)),
        ];
        for spec in bad {
            let e = spec.validate().expect_err("must be rejected");
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{spec:?}");
        }
        ChangeSpec::table("items")
            .key("a")
            .filter(col("items.status").eq("x"))
            .validate()
            .expect("valid spec");
    }

    #[test]
    fn matches_applies_head_and_filter() {
        let change = |table: &str, status: &str| RowChange {
            table: table.into(),
            kind: ChangeKind::Update,
            key: json!("a"),
            old: None,
            new: json!({"id": "a", "status": status}).as_object().cloned(),
            committed_at: chrono::Utc::now(),
        };
        let spec = ChangeSpec::table("items")
            .event(ChangeKind::Update)
            .key("a")
            .filter(col("status").eq("on"));
        assert!(spec.matches(&change("items", "on")));
        assert!(!spec.matches(&change("items", "off")));
        assert!(!spec.matches(&change("other", "on")));
        assert!(spec.matches_head(&change("items", "off")));
        assert!(!spec
            .clone()
            .event(ChangeKind::Insert)
            .matches(&change("items", "on")));
        assert!(!spec.key("b").matches(&change("items", "on")));
    }
}
