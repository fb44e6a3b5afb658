//! The Phoenix-channels wire format as `@supabase/realtime-js` speaks it.
//!
//! - vsn `1.0.0`: text frames holding a JSON object
//!   `{topic, event, payload, ref, join_ref}`.
//! - vsn `2.0.0`: text frames holding a JSON array
//!   `[join_ref, ref, topic, event, payload]`, plus binary user broadcasts:
//!   kind 3 (client -> hub: u8 lengths of join_ref, ref, topic, event and
//!   metadata, an encoding byte, the strings, the payload) and kind 4 (hub ->
//!   client: u8 lengths of topic, event and metadata, an encoding byte, the
//!   strings, the payload).
//!
//! Everything here is pure: decoding never panics, whatever the bytes.

use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;

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
    })
}

/// Decodes a binary frame: only kind 3 (a user broadcast push) is valid from
/// a client. It becomes an ordinary `broadcast` frame whose payload is
/// `{type: "broadcast", event, payload[, meta]}`.
pub(crate) fn decode_binary(bytes: &[u8]) -> Result<Frame, DecodeError> {
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
    let payload_bytes = &body[offset..];
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
    let user_payload = match encoding {
        ENCODING_JSON => serde_json::from_slice::<Value>(payload_bytes).map_err(|e| {
            err(format!(
                "the JSON payload of a kind 3 frame is invalid: {e}"
            ))
        })?,
        ENCODING_BINARY => {
            return Err(err(
                "binary broadcast payloads are not supported by this hub; send JSON".to_string(),
            ))
        }
        other => return Err(err(format!("unknown payload encoding {other} (0 or 1)"))),
    };
    let mut payload = Map::new();
    payload.insert("type".into(), json!("broadcast"));
    payload.insert("event".into(), Value::String(event));
    payload.insert("payload".into(), user_payload);
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

/// Encodes a user broadcast as a kind 4 binary frame, or `None` when a
/// string is too long for the u8 length fields.
pub(crate) fn encode_user_broadcast(
    topic: &str,
    event: &str,
    payload: &Value,
) -> Option<WsMessage> {
    if topic.len() > 255 || event.len() > 255 {
        return None;
    }
    let json = serde_json::to_vec(payload).ok()?;
    let mut out = Vec::with_capacity(5 + topic.len() + event.len() + json.len());
    out.push(KIND_USER_BROADCAST);
    out.push(u8::try_from(topic.len()).ok()?);
    out.push(u8::try_from(event.len()).ok()?);
    out.push(0);
    out.push(ENCODING_JSON);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(&json);
    Some(WsMessage::binary(out))
}

/// Encodes a kind 3 frame (what realtime-js sends for `channel.send`), for
/// clients and tests.
pub fn encode_user_broadcast_push(
    join_ref: &str,
    reference: &str,
    topic: &str,
    event: &str,
    payload: &Value,
) -> Option<Vec<u8>> {
    let parts = [join_ref, reference, topic, event, ""];
    let mut out = vec![KIND_USER_BROADCAST_PUSH];
    for p in parts {
        out.push(u8::try_from(p.len()).ok()?);
    }
    out.push(ENCODING_JSON);
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(&serde_json::to_vec(payload).ok()?);
    Some(out)
}

/// Decodes a kind 4 frame into (topic, event, payload), for clients and
/// tests.
pub fn decode_user_broadcast(bytes: &[u8]) -> Option<(String, String, Value)> {
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
    if body.len() < t + e + m || enc != ENCODING_JSON {
        return None;
    }
    let topic = std::str::from_utf8(&body[..t]).ok()?.to_string();
    let event = std::str::from_utf8(&body[t..t + e]).ok()?.to_string();
    let payload = serde_json::from_slice(&body[t + e + m..]).ok()?;
    Some((topic, event, payload))
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
        let f = decode_binary(&bytes).unwrap();
        assert_eq!(f.event, "broadcast");
        assert_eq!(f.reference.as_deref(), Some("3"));
        assert_eq!(f.topic, "realtime:r");
        assert_eq!(
            f.payload,
            json!({"type": "broadcast", "event": "ev", "payload": {"x": [1, 2]}})
        );
        // Truncated anywhere: an error, never a panic.
        for cut in 0..bytes.len() - 1 {
            let _ = decode_binary(&bytes[..cut]);
        }
        assert!(decode_binary(&bytes[..5]).is_err());
        assert!(decode_binary(&bytes[..10]).is_err());
        let mut wrong = bytes.clone();
        wrong[3] = 200; // topic length beyond the frame
        assert!(decode_binary(&wrong).is_err());
        let mut kind = bytes.clone();
        kind[0] = 4;
        assert!(decode_binary(&kind).is_err());
        let mut enc = bytes;
        enc[6] = 0;
        let e = decode_binary(&enc).unwrap_err();
        assert!(e.message.contains("binary"), "{}", e.message);
        assert_eq!(e.reference.as_deref(), Some("3"));
    }

    #[test]
    fn kind4_round_trip() {
        let msg = encode_user_broadcast("realtime:r", "ev", &json!({"n": 1})).unwrap();
        let data = msg.into_data();
        let (t, e, p) = decode_user_broadcast(&data).unwrap();
        assert_eq!(
            (t.as_str(), e.as_str(), p),
            ("realtime:r", "ev", json!({"n": 1}))
        );
        assert!(encode_user_broadcast(&"t".repeat(256), "e", &json!(1)).is_none());
    }

    #[test]
    fn vsn_parse() {
        assert_eq!(Vsn::parse(None), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Some(Vsn::V2));
        assert_eq!(Vsn::parse(Some("3.0.0")), None);
    }
}
