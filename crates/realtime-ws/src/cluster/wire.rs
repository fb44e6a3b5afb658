//! What hubs of a cluster say to each other on the broker.
//!
//! Every message is one broker payload: a fixed header (magic `TS`, format
//! version, kind, the sending node's id and incarnation), then the body. A
//! broadcast's body is binary (topic, event, metadata, then the payload's
//! bytes as they are, so a broadcast costs its payload plus a few dozen
//! bytes); the other kinds, rarer, carry JSON.
//!
//! Decoding never trusts its input: a short, oversized or malformed message
//! is an error (logged and dropped by the receiver), never a panic.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Bytes;
use truststream_core_realtime::PresenceMeta;

use crate::hub::{Broadcast, BroadcastPayload};

const MAGIC: [u8; 2] = *b"TS";
const VERSION: u8 = 1;

/// The kind of a cluster message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Broadcast = 1,
    Presence = 2,
    Hello = 3,
    Heartbeat = 4,
    SnapshotBegin = 5,
    TopicSnapshot = 6,
    SnapshotEnd = 7,
    Bye = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Broadcast,
            2 => Kind::Presence,
            3 => Kind::Hello,
            4 => Kind::Heartbeat,
            5 => Kind::SnapshotBegin,
            6 => Kind::TopicSnapshot,
            7 => Kind::SnapshotEnd,
            8 => Kind::Bye,
            _ => return None,
        })
    }
}

/// A member's presence on its node: set (`meta`) or gone (`None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PresenceEvent {
    pub topic: String,
    /// The member's id on its node.
    pub id: u64,
    pub key: String,
    pub meta: Option<PresenceMeta>,
}

/// One tracked member in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotEntry {
    pub id: u64,
    pub key: String,
    pub meta: PresenceMeta,
}

/// A node's tracked members of one topic, replacing what receivers held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TopicSnapshot {
    pub topic: String,
    pub entries: Vec<SnapshotEntry>,
}

/// A decoded message.
#[derive(Debug)]
pub(crate) enum Body {
    Broadcast(Broadcast),
    Presence(PresenceEvent),
    Hello,
    Heartbeat,
    SnapshotBegin,
    TopicSnapshot(TopicSnapshot),
    SnapshotEnd,
    Bye,
}

/// A decoded message with its sender.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub node: String,
    pub incarnation: u64,
    pub body: Body,
}

fn header(kind: Kind, node: &str, incarnation: u64, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + node.len() + capacity);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    // Node ids are checked to be 1-64 bytes at configuration.
    out.push(u8::try_from(node.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&node.as_bytes()[..node.len().min(255)]);
    out.extend_from_slice(&incarnation.to_be_bytes());
    out
}

/// A message without a body.
pub(crate) fn encode_empty(kind: Kind, node: &str, incarnation: u64) -> Bytes {
    Bytes::from(header(kind, node, incarnation, 0))
}

/// A message with a JSON body.
pub(crate) fn encode_json<T: Serialize>(
    kind: Kind,
    node: &str,
    incarnation: u64,
    body: &T,
) -> Result<Bytes, String> {
    let json = serde_json::to_vec(body).map_err(|e| format!("cannot encode {kind:?}: {e}"))?;
    let mut out = header(kind, node, incarnation, json.len());
    out.extend_from_slice(&json);
    Ok(Bytes::from(out))
}

/// A broadcast: topic, event and metadata with length prefixes, then the
/// payload (JSON text, or the raw bytes of a binary payload).
pub(crate) fn encode_broadcast(
    node: &str,
    incarnation: u64,
    b: &Broadcast,
) -> Result<Bytes, String> {
    let too_long = |what: &str| format!("the broadcast's {what} is too long for the cluster");
    let topic_len = u16::try_from(b.topic.len()).map_err(|_| too_long("topic"))?;
    let event_len = u16::try_from(b.event.len()).map_err(|_| too_long("event"))?;
    let meta = match &b.meta {
        Some(m) => serde_json::to_vec(m).map_err(|e| format!("cannot encode metadata: {e}"))?,
        None => Vec::new(),
    };
    let meta_len = u32::try_from(meta.len()).map_err(|_| too_long("metadata"))?;
    let (binary, payload): (u8, std::borrow::Cow<'_, [u8]>) = match &b.payload {
        BroadcastPayload::Json(v) => (
            0,
            serde_json::to_vec(v)
                .map_err(|e| format!("cannot encode the payload: {e}"))?
                .into(),
        ),
        BroadcastPayload::Binary(bytes) => (1, bytes.as_ref().into()),
    };
    let mut out = header(
        Kind::Broadcast,
        node,
        incarnation,
        9 + b.topic.len() + b.event.len() + meta.len() + payload.len(),
    );
    out.extend_from_slice(&topic_len.to_be_bytes());
    out.extend_from_slice(b.topic.as_bytes());
    out.extend_from_slice(&event_len.to_be_bytes());
    out.extend_from_slice(b.event.as_bytes());
    out.extend_from_slice(&meta_len.to_be_bytes());
    out.extend_from_slice(&meta);
    out.push(binary);
    out.extend_from_slice(&payload);
    Ok(Bytes::from(out))
}

/// Reads fields off the front of a message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the message is truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, String> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .map_err(|_| "a length does not fit".to_string())
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn str(&mut self, n: usize) -> Result<&'a str, String> {
        std::str::from_utf8(self.take(n)?).map_err(|_| "a name is not UTF-8".to_string())
    }
}

fn json<'a, T: Deserialize<'a>>(kind: Kind, bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed {kind:?} message: {e}"))
}

/// The sending node's id and incarnation, read from the header alone (a
/// node drops its own messages, which Redis echoes, without decoding them).
pub(crate) fn sender(msg: &[u8]) -> Result<(&str, u64), String> {
    let mut r = Reader(msg);
    r.take(4)?;
    let node_len = usize::from(r.u8()?);
    let node = r.str(node_len)?;
    Ok((node, r.u64()?))
}

/// Decodes a message (`msg` is the whole broker payload; a binary
/// broadcast's bytes are sliced out of it without a copy).
pub(crate) fn decode(msg: &Bytes) -> Result<Envelope, String> {
    let mut r = Reader(msg);
    if r.take(2)? != MAGIC {
        return Err("not a TrustStream cluster message".into());
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(format!(
            "cluster message format {version}, this hub speaks {VERSION}: upgrade every node"
        ));
    }
    let kind = Kind::from_u8(r.u8()?).ok_or("unknown cluster message kind")?;
    let node_len = usize::from(r.u8()?);
    let node = r.str(node_len)?.to_string();
    let incarnation = r.u64()?;
    let body = match kind {
        Kind::Broadcast => {
            let n = r.u16()?;
            let topic = r.str(n)?;
            let n = r.u16()?;
            let event = r.str(n)?;
            let n = r.u32()?;
            let meta = match r.take(n)? {
                [] => None,
                m => Some(json::<Value>(kind, m)?),
            };
            let binary = r.u8()?;
            let rest = r.0;
            let payload = match binary {
                0 => BroadcastPayload::Json(json(kind, rest)?),
                1 => BroadcastPayload::Binary(msg.slice(msg.len() - rest.len()..)),
                _ => return Err("unknown broadcast payload kind".into()),
            };
            Body::Broadcast(Broadcast::with(topic, event, payload, meta))
        }
        Kind::Presence => Body::Presence(json(kind, r.0)?),
        Kind::TopicSnapshot => Body::TopicSnapshot(json(kind, r.0)?),
        Kind::Hello => Body::Hello,
        Kind::Heartbeat => Body::Heartbeat,
        Kind::SnapshotBegin => Body::SnapshotBegin,
        Kind::SnapshotEnd => Body::SnapshotEnd,
        Kind::Bye => Body::Bye,
    };
    Ok(Envelope {
        node,
        incarnation,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_broadcast_round_trips_with_its_metadata() {
        let b = Broadcast::with(
            "realtime:room",
            "msg",
            BroadcastPayload::Json(json!({"n": 1})),
            Some(json!({"by": "x"})),
        );
        let bytes = encode_broadcast("node-a", 7, &b).unwrap();
        let env = decode(&bytes).unwrap();
        assert_eq!(env.node, "node-a");
        assert_eq!(env.incarnation, 7);
        let Body::Broadcast(d) = env.body else {
            panic!("not a broadcast: {:?}", env.body)
        };
        assert_eq!(d.topic, "realtime:room");
        assert_eq!(d.event, "msg");
        assert_eq!(d.payload, BroadcastPayload::Json(json!({"n": 1})));
        assert_eq!(d.meta, Some(json!({"by": "x"})));
    }

    #[test]
    fn a_binary_broadcast_costs_its_bytes_plus_the_envelope() {
        let payload = Bytes::from_static(&[0, 1, 2, 255]);
        let b = Broadcast::with("t", "e", BroadcastPayload::Binary(payload.clone()), None);
        let bytes = encode_broadcast("n", 1, &b).unwrap();
        // 2 magic + version + kind + node len + node + incarnation +
        // topic (2+1) + event (2+1) + meta len + binary flag + payload.
        assert_eq!(bytes.len(), 2 + 1 + 1 + 1 + 1 + 8 + 3 + 3 + 4 + 1 + 4);
        let Body::Broadcast(d) = decode(&bytes).unwrap().body else {
            panic!("not a broadcast")
        };
        assert_eq!(d.payload, BroadcastPayload::Binary(payload));
        assert_eq!(d.meta, None);
    }

    #[test]
    fn presence_and_control_messages_round_trip() {
        let ev = PresenceEvent {
            topic: "realtime:t".into(),
            id: 3,
            key: "k".into(),
            meta: Some(PresenceMeta {
                presence_ref: "r".into(),
                state: json!({"a": 1}),
            }),
        };
        let bytes = encode_json(Kind::Presence, "n", 2, &ev).unwrap();
        match decode(&bytes).unwrap().body {
            Body::Presence(d) => assert_eq!(d, ev),
            other => panic!("not presence: {other:?}"),
        }
        let bye = encode_empty(Kind::Bye, "n", 2);
        assert!(matches!(decode(&bye).unwrap().body, Body::Bye));
        assert_eq!(sender(&bytes).unwrap(), ("n", 2));
        assert!(sender(&bytes[..6]).is_err());
    }

    #[test]
    fn garbage_and_truncated_messages_are_errors() {
        assert!(decode(&Bytes::from_static(b"")).is_err());
        assert!(decode(&Bytes::from_static(b"XX\x01\x01")).is_err());
        let b = Broadcast::new("topic", "e", json!([1, 2, 3]));
        let bytes = encode_broadcast("node", 1, &b).unwrap();
        for cut in 0..bytes.len() - 1 {
            assert!(
                decode(&bytes.slice(..cut)).is_err(),
                "a message cut at {cut} bytes decoded"
            );
        }
        let mut wrong_version = bytes.to_vec();
        wrong_version[2] = 9;
        let err = decode(&Bytes::from(wrong_version)).unwrap_err();
        assert!(err.contains("upgrade every node"), "{err}");
    }
}
