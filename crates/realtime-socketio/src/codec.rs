//! The engine.io v4 / socket.io v5 text packets the client mode speaks
//! over the WebSocket transport, main namespace, JSON only.
//!
//! Hand-written (about 100 lines) because the Rust Socket.IO client,
//! rust_socketio 0.6, links OpenSSL through native-tls unconditionally,
//! which deny.toml keeps out of the tree; socketioxide is a server only.

use serde_json::Value;

/// One packet from the server.
#[derive(Debug, PartialEq)]
pub(crate) enum Packet {
    /// engine.io open (`0{sid, pingInterval, ...}`).
    Open(Value),
    /// engine.io close (`1`).
    Close,
    /// engine.io ping (`2`): answer with a pong.
    Ping,
    /// socket.io connect (`40{sid}`).
    Connect,
    /// socket.io disconnect (`41`).
    Disconnect,
    /// socket.io event (`42[id][name, ...args]`).
    Event { ack: Option<u64>, args: Vec<Value> },
    /// socket.io ack (`43id[...args]`).
    Ack { id: u64, args: Vec<Value> },
    /// socket.io connect error (`44{message}`).
    ConnectError(Value),
    /// Anything else (other namespaces, binary events, upgrades, noop).
    Other,
}

/// Decodes one WebSocket text frame.
pub(crate) fn decode(text: &str) -> Packet {
    let mut chars = text.chars();
    match chars.next() {
        Some('0') => Packet::Open(serde_json::from_str(chars.as_str()).unwrap_or(Value::Null)),
        Some('1') => Packet::Close,
        Some('2') => Packet::Ping,
        Some('4') => decode_socketio(chars.as_str()),
        _ => Packet::Other,
    }
}

fn decode_socketio(s: &str) -> Packet {
    let mut chars = s.chars();
    let Some(kind) = chars.next() else {
        return Packet::Other;
    };
    let mut rest = chars.as_str();
    // A namespace other than "/" is not ours.
    if rest.starts_with('/') {
        match rest.split_once(',') {
            Some(("/", tail)) => rest = tail,
            _ => return Packet::Other,
        }
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = rest[..digits].parse::<u64>().ok();
    let body = &rest[digits..];
    let json = || serde_json::from_str::<Value>(body).ok();
    let args = || match json() {
        Some(Value::Array(a)) => Some(a),
        _ => None,
    };
    match kind {
        '0' => Packet::Connect,
        '1' => Packet::Disconnect,
        '2' => args().map_or(Packet::Other, |args| Packet::Event { ack: id, args }),
        '3' => match (id, args()) {
            (Some(id), Some(args)) => Packet::Ack { id, args },
            _ => Packet::Other,
        },
        '4' => Packet::ConnectError(json().unwrap_or(Value::Null)),
        _ => Packet::Other,
    }
}

/// socket.io connect to the main namespace with an `auth` payload.
pub(crate) fn connect(auth: Option<&Value>) -> String {
    match auth {
        Some(a) => format!("40{a}"),
        None => "40".to_string(),
    }
}

/// engine.io pong.
pub(crate) const PONG: &str = "3";

/// socket.io event `name` with one argument, asking for an ack when `ack`
/// is set.
pub(crate) fn event(ack: Option<u64>, name: &str, data: &Value) -> String {
    let args = Value::Array(vec![Value::String(name.to_string()), data.clone()]);
    match ack {
        Some(id) => format!("42{id}{args}"),
        None => format!("42{args}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn packets_decode() {
        assert_eq!(decode("2"), Packet::Ping);
        assert_eq!(decode("40{\"sid\":\"x\"}"), Packet::Connect);
        assert_eq!(
            decode("42[\"rt:message\",{\"a\":1}]"),
            Packet::Event {
                ack: None,
                args: vec![json!("rt:message"), json!({"a": 1})]
            }
        );
        assert_eq!(
            decode("4317[{\"ok\":true}]"),
            Packet::Ack {
                id: 17,
                args: vec![json!({"ok": true})]
            }
        );
        assert_eq!(
            decode("44{\"message\":\"no\"}"),
            Packet::ConnectError(json!({"message": "no"}))
        );
        assert_eq!(decode("42/admin,[\"x\"]"), Packet::Other);
        assert_eq!(
            decode("451-[\"bin\",{\"_placeholder\":true,\"num\":0}]"),
            Packet::Other
        );
        assert!(matches!(decode("0{\"sid\":\"s\"}"), Packet::Open(_)));
    }

    #[test]
    fn packets_encode() {
        assert_eq!(
            event(Some(3), "rt:send", &json!({"a": 1})),
            "423[\"rt:send\",{\"a\":1}]"
        );
        assert_eq!(event(None, "e", &json!(null)), "42[\"e\",null]");
        assert_eq!(connect(Some(&json!({"token": "t"}))), "40{\"token\":\"t\"}");
        assert_eq!(connect(None), "40");
    }
}
