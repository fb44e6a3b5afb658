//! The protocol over Socket.IO: event names and payloads, shared by the
//! server and the client mode. The crate README documents them for
//! `socket.io-client` front ends.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use truststream_core::{Error, ErrorKind};
use truststream_core_realtime::{ChangeSpec, PresenceState, RowChange, RtResult};

/// The protocol version `rt:hello` answers.
pub const PROTOCOL_VERSION: u32 = 1;

/// Client to server: capabilities of the server (ack:
/// `{ok, protocol, max_payload_bytes, row_changes}`).
pub const HELLO: &str = "rt:hello";
/// Client to server: join a channel.
pub const JOIN: &str = "rt:join";
/// Client to server: leave a channel.
pub const LEAVE: &str = "rt:leave";
/// Client to server: broadcast to a channel.
pub const SEND: &str = "rt:send";
/// Client to server: publish (or replace) this member's presence state.
pub const TRACK: &str = "rt:track";
/// Client to server: remove this member's presence state.
pub const UNTRACK: &str = "rt:untrack";
/// Client to server: the channel's presence state (ack: `{ok, state}`).
pub const PRESENCE: &str = "rt:presence";
/// Client to server: subscribe to row changes (ack: `{ok, id}`).
pub const SUBSCRIBE_ROWS: &str = "rt:subscribe_rows";
/// Client to server: end a row subscription.
pub const UNSUBSCRIBE_ROWS: &str = "rt:unsubscribe_rows";
/// Client to server: a refreshed access token for this connection (of the
/// same user), before the current one expires.
pub const ACCESS_TOKEN: &str = "rt:access_token";

/// Server to client: a broadcast.
pub const MESSAGE: &str = "rt:message";
/// Server to client: the full presence state (the sync), right after a join.
pub const PRESENCE_STATE: &str = "rt:presence_state";
/// Server to client: who joined and who left.
pub const PRESENCE_DIFF: &str = "rt:presence_diff";
/// Server to client: a row change of a subscription.
pub const ROW_CHANGE: &str = "rt:row_change";
/// Server to client: the member was removed from a channel, with a reason.
pub const CLOSED: &str = "rt:closed";
/// Server to client: the connection is about to be closed, with a reason.
pub const ERROR: &str = "rt:error";
/// Server to client: a row subscription the server ended, with a reason.
pub const ROWS_CLOSED: &str = "rt:rows_closed";
/// The `code` of the `rt:error` sent when the connection's token expired.
pub const TOKEN_EXPIRED: &str = "token_expired";

/// Every client-to-server event, in the order the server registers them.
pub const CLIENT_EVENTS: [&str; 10] = [
    HELLO,
    JOIN,
    LEAVE,
    SEND,
    TRACK,
    UNTRACK,
    PRESENCE,
    SUBSCRIBE_ROWS,
    UNSUBSCRIBE_ROWS,
    ACCESS_TOKEN,
];

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

/// Which membership a request is about: the channel and the client's own
/// handle id (empty for the one membership a browser tab usually has).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Target {
    /// Channel name.
    pub channel: String,
    /// The client's handle id; several handles of one connection may be
    /// members of one channel.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub handle: String,
}

/// `rt:join`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Channel and handle.
    #[serde(flatten)]
    pub target: Target,
    /// Receive your own broadcasts.
    #[serde(default, rename = "self")]
    pub broadcast_self: bool,
    /// Presence key; absent or empty for a generated one.
    #[serde(default)]
    pub presence_key: Option<String>,
}

/// `rt:send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendRequest {
    /// Channel and handle.
    #[serde(flatten)]
    pub target: Target,
    /// Event name.
    pub event: String,
    /// Payload.
    #[serde(default)]
    pub payload: Value,
}

/// `rt:track`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackRequest {
    /// Channel and handle.
    #[serde(flatten)]
    pub target: Target,
    /// The presence state.
    #[serde(default)]
    pub state: Value,
}

/// `rt:subscribe_rows`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscribeRows {
    /// Which changes.
    pub spec: ChangeSpec,
    /// The client's id for the subscription (unique on its connection);
    /// absent for one the server picks. `rt:row_change` carries it.
    #[serde(default)]
    pub id: Option<u64>,
}

/// `rt:unsubscribe_rows`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnsubscribeRows {
    /// The id `rt:subscribe_rows` answered.
    pub id: u64,
}

/// `rt:message`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageOut {
    /// Channel and handle.
    #[serde(flatten)]
    pub target: Target,
    /// Event name.
    pub event: String,
    /// Payload.
    pub payload: Value,
}

/// `rt:presence_state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceStateOut {
    /// Channel and handle.
    #[serde(flatten)]
    pub target: Target,
    /// Key -> entries.
    pub state: PresenceState,
}

/// `rt:presence_diff`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceDiffOut {
    /// Channel and handle.
    #[serde(flatten)]
    pub target: Target,
    /// Entries added.
    pub joins: PresenceState,
    /// Entries removed.
    pub leaves: PresenceState,
}

/// `rt:row_change`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowChangeOut {
    /// The subscription id.
    pub id: u64,
    /// The change.
    pub change: RowChange,
}

/// `rt:closed`: a member removed by the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClosedOut {
    /// Channel and handle.
    #[serde(flatten)]
    pub target: Target,
    /// Why.
    pub reason: String,
}

/// `rt:access_token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessToken {
    /// The new access token.
    pub token: String,
}

/// `rt:rows_closed`: a row subscription ended by the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowsClosedOut {
    /// The subscription id.
    pub id: u64,
    /// Why.
    pub reason: String,
}

/// An acknowledgement: `{ok: true, ...}`.
pub fn ok_reply(extra: Value) -> Value {
    let mut reply = json!({"ok": true});
    if let (Some(map), Value::Object(extra)) = (reply.as_object_mut(), extra) {
        map.extend(extra);
    }
    reply
}

/// A refusal: `{ok: false, error: {code, message}}` (`code` is the
/// [`ErrorKind`] in snake case).
pub fn error_reply(e: &Error) -> Value {
    json!({"ok": false, "error": {"code": e.kind(), "message": e.message()}})
}

/// The error of a refusal (client side): `Ok(reply)` when `ok` is true.
pub fn parse_reply(reply: Value) -> RtResult<Value> {
    if reply.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(reply);
    }
    let error = reply.get("error");
    let kind = error
        .and_then(|e| e.get("code"))
        .and_then(|c| serde_json::from_value::<ErrorKind>(c.clone()).ok())
        .unwrap_or(ErrorKind::Internal);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(
            || format!("the server answered without ok: {}", truncate(&reply)),
            |m| format!("the server refused: {m}"),
        );
    Err(Error::new(kind, message))
}

fn truncate(v: &Value) -> String {
    let s = v.to_string();
    truststream_core::echo(&s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_their_kind() {
        let ok = parse_reply(ok_reply(json!({"id": 3}))).expect("ok");
        assert_eq!(ok["id"], 3);
        let e = parse_reply(error_reply(&Error::too_large("big"))).expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert!(e.message().contains("big"), "{e}");
        let e = parse_reply(json!("nonsense")).expect_err("not a reply");
        assert_eq!(e.kind(), ErrorKind::Internal);
    }

    #[test]
    fn requests_accept_what_browsers_send() {
        let j: JoinRequest =
            serde_json::from_value(json!({"channel": "room", "self": true})).expect("join");
        assert_eq!(j.target.channel, "room");
        assert!(j.target.handle.is_empty() && j.broadcast_self);
        let out = serde_json::to_value(MessageOut {
            target: j.target,
            event: "e".into(),
            payload: json!(1),
        })
        .expect("serialize");
        assert_eq!(out, json!({"channel": "room", "event": "e", "payload": 1}));
    }
}
