//! Data types of the realtime interface.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use truststream_core_db::{ChangeKind, Filter, RowChange, Value};

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
    /// Whether `change` passes the table, event and key parts of the spec (the
    /// filter is evaluated by the provider, which knows the row semantics).
    pub fn matches_head(&self, change: &RowChange) -> bool {
        change.table == self.table
            && self.event.is_none_or(|e| e == change.kind)
            && self.key.as_ref().is_none_or(|k| *k == change.key)
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
