//! The Phoenix-channels wire format as `@supabase/realtime-js` speaks it.
//!
//! - vsn `1.0.0`: text frames holding a JSON object
//!   `{topic, event, payload, ref, join_ref}`.
//! - vsn `2.0.0`: text frames holding a JSON array
//!   `[join_ref, ref, topic, event, payload]`, plus binary user broadcasts:
//!   kind 3 (client -> hub: u8 lengths of join_ref, ref, topic, event and
//!   metadata, an encoding byte, the strings, the payload) and kind 4 (hub ->
//!   client: u8 lengths of topic, event and metadata, an encoding byte, the
//!   strings, the payload). The payload encoding is 0 (raw bytes) or 1
//!   (JSON); the metadata is JSON text (length 0: none).
//!
//! Everything here is pure: decoding never panics, whatever the bytes.

use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;
use tokio_tungstenite::tungstenite::Bytes;

/// Binary frame kind of a user broadcast sent by a client.
pub(crate) const KIND_USER_BROADCAST_PUSH: u8 = 3;
/// Binary frame kind of a user broadcast sent to a client.
pub(crate) const KIND_USER_BROADCAST: u8 = 4;
const ENCODING_BINARY: u8 = 0;
const ENCODING_JSON: u8 = 1;

/// The serializer version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    /// `1.0.0`: JSON objects.
    V1,
    /// `2.0.0`: JSON arrays and binary user broadcasts.
    V2,
}

impl Vsn {
    /// Parses the `vsn` query parameter (absent means `1.0.0`, as Phoenix).
    pub fn parse(s: Option<&str>) -> Option<Vsn> {
        match s {
            None | Some("1.0.0") => Some(Vsn::V1),
            Some("2.0.0") => Some(Vsn::V2),
            Some(_) => None,
        }
    }

    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        }
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frame {
    pub join_ref: Option<String>,
    pub reference: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
    /// The raw payload of a kind 3 frame with encoding 0 (binary).
    pub binary: Option<Bytes>,
}

/// Why a frame could not be decoded. `reference` and `topic` are what could
/// be read, so the error can still be answered as a reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DecodeError {
    pub reference: Option<String>,
    pub topic: Option<String>,
    pub message: String,
}

impl DecodeError {
    fn new(message: impl Into<String>) -> Self {
        DecodeError {
            reference: None,
            topic: None,
            message: message.into(),
        }
    }
}

fn opt_string(v: Option<&Value>, what: &str) -> Result<Option<String>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // Phoenix clients send refs as strings; numbers are accepted too.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(DecodeError::new(format!(
            "{what} must be a string or null, got {}",
            type_name(other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required_string(v: Option<&Value>, what: &str) -> Result<String, DecodeError> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(DecodeError::new(format!(
            "{what} must be a string, got {}",
            type_name(other)
        ))),
        None => Err(DecodeError::new(format!("{what} is missing"))),
    }
}

/// Decodes a text frame.
pub(crate) fn decode_text(vsn: Vsn, text: &str) -> Result<Frame, DecodeError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| DecodeError::new(format!("the frame is not JSON: {e}")))?;
    let (join_ref, reference, topic, event, payload) = match (vsn, value) {
        (Vsn::V1, Value::Object(mut o)) => {
            let payload = o.remove("payload").unwrap_or(Value::Null);
            (
                o.get("join_ref").cloned(),
                o.get("ref").cloned(),
                o.get("topic").cloned(),
                o.get("event").cloned(),
                payload,
            )
        }
        (Vsn::V2, Value::Array(a)) if a.len() == 5 => {
            let mut it = a.into_iter();
            let mut next = || it.next().unwrap_or(Value::Null);
            let (j, r, t, e, p) = (next(), next(), next(), next(), next());
            (Some(j), Some(r), Some(t), Some(e), p)
        }
        (Vsn::V1, other) => {
            return Err(DecodeError::new(format!(
            "vsn 1.0.0 frames are JSON objects {{topic, event, payload, ref, join_ref}}, got {}",
            type_name(&other)
        )))
        }
        (Vsn::V2, other) => {
            return Err(DecodeError::new(format!(
            "vsn 2.0.0 text frames are JSON arrays [join_ref, ref, topic, event, payload], got {}",
            match &other {
                Value::Array(a) => format!("an array of {} elements", a.len()),
                v => type_name(v).to_string(),
            }
        )))
        }
    };
    let reference = opt_string(reference.as_ref(), "ref")?;
    let with_ref = |mut e: DecodeError| {
        e.reference = reference.clone();
        e
    };
    let join_ref = opt_string(join_ref.as_ref(), "join_ref").map_err(with_ref)?;
    let topic = required_string(topic.as_ref(), "topic").map_err(with_ref)?;
    let event = required_string(event.as_ref(), "event").map_err(|mut e| {
        e.reference = reference.clone();
        e.topic = Some(topic.clone());
        e
    })?;
    Ok(Frame {
        join_ref,
        reference,
        topic,
        event,
        payload,
        binary: None,
    })
}

/// Decodes a binary frame: only kind 3 (a user broadcast push) is valid from
/// a client. It becomes an ordinary `broadcast` frame whose payload is
/// `{type: "broadcast", event, payload[, meta]}`; with encoding 0 (binary)
/// the payload object has no `payload` and the bytes are in
/// [`Frame::binary`] (a slice of `bytes`, not a copy).
pub(crate) fn decode_binary(bytes: &Bytes) -> Result<Frame, DecodeError> {
    let Some((&kind, rest)) = bytes.split_first() else {
        return Err(DecodeError::new("empty binary frame"));
    };
    if kind != KIND_USER_BROADCAST_PUSH {
        return Err(DecodeError::new(format!(
            "binary frames from clients must be user broadcast pushes (kind 3), got kind {kind}"
        )));
    }
    if rest.len() < 6 {
        return Err(DecodeError::new(format!(
            "a kind 3 frame needs a 7-byte header, got {} bytes",
            bytes.len()
        )));
    }
    let lens = [rest[0], rest[1], rest[2], rest[3], rest[4]].map(usize::from);
    let encoding = rest[5];
    let body = &rest[6..];
    let strings_len: usize = lens.iter().sum();
    if body.len() < strings_len {
        return Err(DecodeError::new(format!(
            "a kind 3 frame declares {strings_len} bytes of join_ref, ref, topic, event and \
             metadata but has {} bytes after its header",
            body.len()
        )));
    }
    let mut offset = 0;
    let mut strings = Vec::with_capacity(5);
    for (len, what) in lens
        .iter()
        .zip(["join_ref", "ref", "topic", "event", "metadata"])
    {
        let s = std::str::from_utf8(&body[offset..offset + len])
            .map_err(|_| DecodeError::new(format!("the {what} of a kind 3 frame is not UTF-8")))?;
        strings.push(s.to_string());
        offset += len;
    }
    // The payload starts after the 7-byte header and the strings.
    let payload_start = 7 + offset;
    let payload_bytes = &bytes[payload_start..];
    let [join_ref, reference, topic, event, metadata]: [String; 5] = strings
        .try_into()
        .map_err(|_| DecodeError::new("internal: kind 3 string count"))?;
    let nonempty = |s: String| if s.is_empty() { None } else { Some(s) };
    let reference = nonempty(reference);
    let err = |message: String| DecodeError {
        reference: reference.clone(),
        topic: Some(topic.clone()),
        message,
    };
    let (user_payload, binary) = match encoding {
        ENCODING_JSON => {
            let v = serde_json::from_slice::<Value>(payload_bytes).map_err(|e| {
                err(format!(
                    "the JSON payload of a kind 3 frame is invalid: {e}"
                ))
            })?;
            (Some(v), None)
        }
        ENCODING_BINARY => (None, Some(bytes.slice(payload_start..))),
        other => return Err(err(format!("unknown payload encoding {other} (0 or 1)"))),
    };
    let mut payload = Map::new();
    payload.insert("type".into(), json!("broadcast"));
    payload.insert("event".into(), Value::String(event));
    if let Some(p) = user_payload {
        payload.insert("payload".into(), p);
    }
    if !metadata.is_empty() {
        let meta: Value = serde_json::from_str(&metadata)
            .map_err(|e| err(format!("the metadata of a kind 3 frame is not JSON: {e}")))?;
        payload.insert("meta".into(), meta);
    }
    Ok(Frame {
        join_ref: nonempty(join_ref),
        reference,
        topic,
        event: "broadcast".into(),
        payload: Value::Object(payload),
        binary,
    })
}

/// Encodes a frame as a text message.
pub(crate) fn encode(
    vsn: Vsn,
    join_ref: Option<&str>,
    reference: Option<&str>,
    topic: &str,
    event: &str,
    payload: &Value,
) -> WsMessage {
    let text = match vsn {
        Vsn::V1 => json!({
            "topic": topic,
            "event": event,
            "payload": payload,
            "ref": reference,
            "join_ref": join_ref,
        })
        .to_string(),
        Vsn::V2 => json!([join_ref, reference, topic, event, payload]).to_string(),
    };
    WsMessage::text(text)
}

/// Encodes a user broadcast as a kind 4 binary frame: `metadata` is JSON
/// text (empty: none), `payload` JSON text when `binary` is false, raw bytes
/// when it is true. `None` when a string is too long for the u8 length
/// fields.
pub(crate) fn encode_user_broadcast(
    topic: &str,
    event: &str,
    metadata: &str,
    binary: bool,
    payload: &[u8],
) -> Option<WsMessage> {
    let lens = [topic, event, metadata].map(|s| u8::try_from(s.len()).ok());
    let [Some(t), Some(e), Some(m)] = lens else {
        return None;
    };
    let mut out =
        Vec::with_capacity(5 + topic.len() + event.len() + metadata.len() + payload.len());
    out.push(KIND_USER_BROADCAST);
    out.extend_from_slice(&[t, e, m]);
    out.push(if binary {
        ENCODING_BINARY
    } else {
        ENCODING_JSON
    });
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(metadata.as_bytes());
    out.extend_from_slice(payload);
    Some(WsMessage::binary(out))
}

/// Encodes a kind 3 frame with a JSON payload (what realtime-js sends for
/// `channel.send`), for clients and tests.
pub fn encode_user_broadcast_push(
    join_ref: &str,
    reference: &str,
    topic: &str,
    event: &str,
    payload: &Value,
) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(payload).ok()?;
    encode_push(
        [join_ref, reference, topic, event, ""],
        ENCODING_JSON,
        &json,
    )
}

/// Encodes a kind 3 frame with a binary payload (what realtime-js sends for
/// `channel.send` with an `ArrayBuffer` payload) and `metadata` (JSON text,
/// empty for none), for clients and tests.
pub fn encode_binary_user_broadcast_push(
    join_ref: &str,
    reference: &str,
    topic: &str,
    event: &str,
    metadata: &str,
    payload: &[u8],
) -> Option<Vec<u8>> {
    encode_push(
        [join_ref, reference, topic, event, metadata],
        ENCODING_BINARY,
        payload,
    )
}

fn encode_push(parts: [&str; 5], encoding: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![KIND_USER_BROADCAST_PUSH];
    for p in parts {
        out.push(u8::try_from(p.len()).ok()?);
    }
    out.push(encoding);
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(payload);
    Some(out)
}

/// The payload of a decoded kind 4 frame.
#[derive(Debug, Clone, PartialEq)]
pub enum UserPayload {
    /// Encoding 1: JSON.
    Json(Value),
    /// Encoding 0: raw bytes.
    Binary(Vec<u8>),
}

/// A decoded kind 4 frame (a user broadcast sent to a client).
#[derive(Debug, Clone, PartialEq)]
pub struct UserBroadcast {
    /// The topic (`realtime:<name>`).
    pub topic: String,
    /// The user event.
    pub event: String,
    /// The metadata (JSON), when the frame has any.
    pub meta: Option<Value>,
    /// The payload.
    pub payload: UserPayload,
}

/// A kind 4 frame's parts, borrowed from the frame (nothing copied or
/// parsed but the UTF-8 of its strings): what a client that reads a field
/// or two needs. [`decode_user_broadcast_frame`] is the owned, parsed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserBroadcastRef<'a> {
    /// The topic (`realtime:<name>`).
    pub topic: &'a str,
    /// The user event.
    pub event: &'a str,
    /// The metadata, JSON text (empty: none).
    pub meta: &'a str,
    /// Whether the payload is raw bytes (encoding 0) rather than JSON text
    /// (encoding 1).
    pub binary: bool,
    /// The payload's bytes.
    pub payload: &'a [u8],
}

impl UserBroadcastRef<'_> {
    /// The JSON payload, parsed (`None` for a binary payload or one that is
    /// not JSON).
    pub fn json(&self) -> Option<Value> {
        if self.binary {
            return None;
        }
        json_from_bytes(self.payload)
    }
}

/// Splits a kind 4 frame into its parts (`None`: not a well-formed kind 4
/// frame).
pub fn split_user_broadcast(bytes: &[u8]) -> Option<UserBroadcastRef<'_>> {
    let (&kind, rest) = bytes.split_first()?;
    if kind != KIND_USER_BROADCAST || rest.len() < 4 {
        return None;
    }
    let (t, e, m, enc) = (
        usize::from(rest[0]),
        usize::from(rest[1]),
        usize::from(rest[2]),
        rest[3],
    );
    let body = &rest[4..];
    if body.len() < t + e + m {
        return None;
    }
    let binary = match enc {
        ENCODING_JSON => false,
        ENCODING_BINARY => true,
        _ => return None,
    };
    let (topic, body) = body.split_at(t);
    let (event, body) = body.split_at(e);
    let (meta, payload) = body.split_at(m);
    Some(UserBroadcastRef {
        topic: std::str::from_utf8(topic).ok()?,
        event: std::str::from_utf8(event).ok()?,
        meta: std::str::from_utf8(meta).ok()?,
        binary,
        payload,
    })
}

/// JSON text in bytes, parsed: the UTF-8 checked once for the whole text,
/// then parsed as a `str` (`serde_json::from_slice` checks each string on
/// its own, which costs more; both accept the same texts, as bytes that are
/// not UTF-8 are never valid JSON outside strings either).
fn json_from_bytes(bytes: &[u8]) -> Option<Value> {
    serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()
}

/// Decodes a kind 4 frame, JSON or binary, for clients and tests.
pub fn decode_user_broadcast_frame(bytes: &[u8]) -> Option<UserBroadcast> {
    let b = split_user_broadcast(bytes)?;
    let meta = match b.meta {
        "" => None,
        m => Some(serde_json::from_str(m).ok()?),
    };
    let payload = match b.binary {
        false => UserPayload::Json(json_from_bytes(b.payload)?),
        true => UserPayload::Binary(b.payload.to_vec()),
    };
    Some(UserBroadcast {
        topic: b.topic.to_string(),
        event: b.event.to_string(),
        meta,
        payload,
    })
}

/// Decodes a kind 4 frame with a JSON payload into (topic, event, payload),
/// for clients and tests (`None` for a binary payload).
pub fn decode_user_broadcast(bytes: &[u8]) -> Option<(String, String, Value)> {
    let b = decode_user_broadcast_frame(bytes)?;
    match b.payload {
        UserPayload::Json(v) => Some((b.topic, b.event, v)),
        UserPayload::Binary(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_text_round_trip() {
        for vsn in [Vsn::V1, Vsn::V2] {
            let msg = encode(
                vsn,
                Some("1"),
                Some("2"),
                "realtime:room",
                "phx_join",
                &json!({"a": 1}),
            );
            let text = msg.into_text().unwrap();
            let f = decode_text(vsn, &text).unwrap();
            assert_eq!(f.join_ref.as_deref(), Some("1"));
            assert_eq!(f.reference.as_deref(), Some("2"));
            assert_eq!(f.topic, "realtime:room");
            assert_eq!(f.event, "phx_join");
            assert_eq!(f.payload, json!({"a": 1}));
        }
    }

    #[test]
    fn malformed_text_frames_are_errors() {
        let cases = [
            (Vsn::V1, "not json"),
            (Vsn::V1, "[1,2,3,4,5]"),
            (Vsn::V1, r#"{"topic": 1, "event": "x"}"#),
            (Vsn::V1, r#"{"topic": "t"}"#),
            (Vsn::V1, r#"{"topic": "t", "event": "e", "ref": {}}"#),
            (Vsn::V2, r#"{"topic": "t", "event": "e"}"#),
            (Vsn::V2, r#"[null, "1", "t", "e"]"#),
            (Vsn::V2, r#"[null, "1", "t", 5, {}]"#),
            (Vsn::V2, ""),
        ];
        for (vsn, text) in cases {
            assert!(decode_text(vsn, text).is_err(), "{vsn:?} {text}");
        }
        let e = decode_text(Vsn::V2, r#"[null, "7", "t", 5, {}]"#).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("7"));
        assert_eq!(e.topic.as_deref(), Some("t"));
    }

    #[test]
    fn kind3_round_trip_and_bad_lengths() {
        let bytes = encode_user_broadcast_push("1", "3", "realtime:r", "ev", &json!({"x": [1, 2]}))
            .unwrap();
        let f = decode_binary(&Bytes::from(bytes.clone())).unwrap();
        assert_eq!(f.event, "broadcast");
        assert_eq!(f.reference.as_deref(), Some("3"));
        assert_eq!(f.topic, "realtime:r");
        assert_eq!(
            f.payload,
            json!({"type": "broadcast", "event": "ev", "payload": {"x": [1, 2]}})
        );
        assert_eq!(f.binary, None);
        let cut = |n: usize| Bytes::copy_from_slice(&bytes[..n]);
        // Truncated anywhere: an error, never a panic.
        for n in 0..bytes.len() - 1 {
            let _ = decode_binary(&cut(n));
        }
        assert!(decode_binary(&cut(5)).is_err());
        assert!(decode_binary(&cut(10)).is_err());
        let mut wrong = bytes.clone();
        wrong[3] = 200; // topic length beyond the frame
        assert!(decode_binary(&Bytes::from(wrong)).is_err());
        let mut kind = bytes.clone();
        kind[0] = 4;
        assert!(decode_binary(&Bytes::from(kind)).is_err());
        let mut enc = bytes;
        enc[6] = 7;
        let e = decode_binary(&Bytes::from(enc)).unwrap_err();
        assert!(e.message.contains("encoding 7"), "{}", e.message);
        assert_eq!(e.reference.as_deref(), Some("3"));
    }

    #[test]
    fn kind3_binary_payload_and_metadata() {
        let data: Vec<u8> = (0..=255).collect();
        let bytes =
            encode_binary_user_broadcast_push("1", "4", "realtime:r", "bin", r#"{"id":7}"#, &data)
                .unwrap();
        assert_eq!(bytes[6], ENCODING_BINARY);
        let f = decode_binary(&Bytes::from(bytes.clone())).unwrap();
        assert_eq!(f.event, "broadcast");
        assert_eq!(f.join_ref.as_deref(), Some("1"));
        assert_eq!(f.reference.as_deref(), Some("4"));
        assert_eq!(f.topic, "realtime:r");
        assert_eq!(
            f.payload,
            json!({"type": "broadcast", "event": "bin", "meta": {"id": 7}})
        );
        assert_eq!(f.binary.as_deref(), Some(&data[..]));
        // An empty binary payload is valid.
        let empty =
            encode_binary_user_broadcast_push("1", "5", "realtime:r", "bin", "", &[]).unwrap();
        let f = decode_binary(&Bytes::from(empty)).unwrap();
        assert_eq!(f.binary.as_deref(), Some(&[][..]));
        assert_eq!(f.payload, json!({"type": "broadcast", "event": "bin"}));
        // Lengths beyond the frame are still rejected with a binary payload.
        let header = 7 + 1 + 1 + "realtime:r".len() + 3 + 8;
        for n in 0..header {
            assert!(
                decode_binary(&Bytes::copy_from_slice(&bytes[..n])).is_err(),
                "{n}"
            );
        }
        let mut wrong = bytes.clone();
        wrong[5] = 255; // metadata length beyond the frame
        wrong.truncate(header + 10);
        assert!(decode_binary(&Bytes::from(wrong)).is_err());
        let mut bad_meta = bytes;
        bad_meta[header - 1] = b'x'; // metadata no longer JSON
        assert!(decode_binary(&Bytes::from(bad_meta)).is_err());
    }

    #[test]
    fn kind4_round_trip() {
        let msg = encode_user_broadcast("realtime:r", "ev", "", false, br#"{"n":1}"#).unwrap();
        let data = msg.into_data();
        let (t, e, p) = decode_user_broadcast(&data).unwrap();
        assert_eq!(
            (t.as_str(), e.as_str(), p),
            ("realtime:r", "ev", json!({"n": 1}))
        );
        let parts = split_user_broadcast(&data).unwrap();
        assert_eq!(
            (parts.topic, parts.event, parts.meta, parts.binary),
            ("realtime:r", "ev", "", false)
        );
        assert_eq!(parts.json(), Some(json!({"n": 1})));
        // Not JSON, or not UTF-8: no payload, as before.
        for bad in [&b"{\"n\":"[..], b"{\"s\":\"\xff\"}", b"\xff"] {
            let msg = encode_user_broadcast("realtime:r", "ev", "", false, bad).unwrap();
            assert_eq!(split_user_broadcast(&msg.into_data()).unwrap().json(), None);
        }
        assert!(encode_user_broadcast(&"t".repeat(256), "e", "", false, b"1").is_none());
        assert!(encode_user_broadcast("t", "e", &"m".repeat(256), true, b"1").is_none());
    }

    #[test]
    fn kind4_binary_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        let msg = encode_user_broadcast("realtime:r", "bin", r#"{"id":7}"#, true, &bytes).unwrap();
        let data = msg.into_data();
        assert_eq!(data[4], ENCODING_BINARY);
        let b = decode_user_broadcast_frame(&data).unwrap();
        assert_eq!(
            b,
            UserBroadcast {
                topic: "realtime:r".into(),
                event: "bin".into(),
                meta: Some(json!({"id": 7})),
                payload: UserPayload::Binary(bytes.clone()),
            }
        );
        assert!(decode_user_broadcast(&data).is_none(), "not JSON");
        let parts = split_user_broadcast(&data).unwrap();
        assert!(parts.binary);
        assert_eq!((parts.meta, parts.payload), (r#"{"id":7}"#, &bytes[..]));
        assert_eq!(parts.json(), None);
        for n in 0..5 + 10 + 3 + 8 {
            assert!(decode_user_broadcast_frame(&data[..n]).is_none(), "{n}");
        }
    }

    #[test]
    fn vsn_parse() {
        assert_eq!(Vsn::parse(None), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Some(Vsn::V2));
        assert_eq!(Vsn::parse(Some("3.0.0")), None);
    }
}
