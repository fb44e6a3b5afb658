//! Checks every realtime provider makes the same way: names, sizes, and
//! the error for a call that needs a joined handle.

use serde_json::Value;
use truststream_core::{echo, Error};

use crate::RtResult;

/// The longest channel name, event name or presence key, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a channel name: 1 to 255 bytes, no control characters.
pub fn validate_channel_name(name: &str) -> RtResult<()> {
    if name.is_empty() || !is_short_and_printable(name) {
        return Err(Error::invalid_input(format!(
            "invalid channel name {:?}: 1-255 bytes without control characters",
            shown(name)
        )));
    }
    Ok(())
}

/// Checks a broadcast event name: 1 to 255 bytes, no control characters,
/// and not `"*"` (the wildcard of [`Channel::on`](crate::Channel::on)).
pub fn validate_event(event: &str) -> RtResult<()> {
    if event.is_empty() || !is_short_and_printable(event) {
        return Err(Error::invalid_input(format!(
            "invalid event name {:?}: 1-255 bytes without control characters",
            shown(event)
        )));
    }
    if event == "*" {
        return Err(Error::invalid_input(
            "\"*\" is the wildcard of on(); a broadcast needs a concrete event name",
        ));
    }
    Ok(())
}

/// Checks a presence key: at most 255 bytes, no control characters (an
/// empty key lets the provider pick one).
pub fn validate_presence_key(key: &str) -> RtResult<()> {
    if !is_short_and_printable(key) {
        return Err(Error::invalid_input(format!(
            "invalid presence key {:?}: at most 255 bytes without control characters",
            shown(key)
        )));
    }
    Ok(())
}

/// The presence key a handle uses: `requested` when it is not empty (and
/// valid, see [`validate_presence_key`]), else a new one from `generate`
/// (providers use a UUID).
pub fn presence_key(
    requested: Option<&str>,
    generate: impl FnOnce() -> String,
) -> RtResult<String> {
    match requested {
        Some(k) if !k.is_empty() => {
            validate_presence_key(k)?;
            Ok(k.to_string())
        }
        _ => Ok(generate()),
    }
}

fn is_short_and_printable(s: &str) -> bool {
    s.len() <= MAX_NAME_BYTES && !s.chars().any(char::is_control)
}

/// A refused name, bounded for an error message (see [`echo`]).
fn shown(s: &str) -> String {
    echo(s).to_string()
}

/// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) when `value`
/// serializes to more than `limit` bytes of JSON. `what` names the value in
/// the message ("the broadcast payload"). Serializing stops at the limit,
/// so a huge value costs no more than `limit` bytes of work.
pub fn check_json_size(value: &Value, limit: usize, what: &str) -> RtResult<()> {
    let mut counter = SizeLimit { written: 0, limit };
    if serde_json::to_writer(&mut counter, value).is_err() {
        return Err(Error::too_large(format!(
            "{what} is larger than the limit of {limit} bytes of serialized JSON \
             (max_payload_bytes); send a reference to the data instead"
        )));
    }
    Ok(())
}

/// Checks a broadcast before it is sent: its event name
/// ([`validate_event`]) and its payload's size ([`check_json_size`] against
/// `max_payload_bytes`; the error names the event).
pub fn validate_broadcast(event: &str, payload: &Value, max_payload_bytes: usize) -> RtResult<()> {
    validate_event(event)?;
    check_json_size(payload, max_payload_bytes, "the broadcast payload")
        .map_err(|e| e.with_context("event", event.to_string()))
}

/// Counts serialized bytes and fails the serializer once over `limit`.
struct SizeLimit {
    written: usize,
    limit: usize,
}

impl std::io::Write for SizeLimit {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error of `op` (e.g. `"send"`) on a handle of `channel` that is not
/// joined: [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput),
/// saying why the provider removed the handle when it did (`removal`: "removed
/// from channel ... because ...").
pub fn not_joined(channel: &str, op: &str, removal: Option<&str>) -> Error {
    match removal {
        Some(reason) => Error::invalid_input(format!(
            "{op} needs a joined handle, and this handle was {reason}; join again"
        )),
        None => Error::invalid_input(format!(
            "join channel {channel:?} first: {op} needs a joined handle"
        )),
    }
    .with_context("channel", channel.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    #[test]
    fn names_are_1_to_255_bytes_without_control_characters() {
        for ok in ["a", "room:1", &"x".repeat(255), "émoji 🎉"] {
            validate_channel_name(ok).expect(ok);
            validate_event(ok).expect(ok);
            validate_presence_key(ok).expect(ok);
        }
        for bad in [&"x".repeat(256), "a\nb", "\u{7f}"] {
            for result in [
                validate_channel_name(bad),
                validate_event(bad),
                validate_presence_key(bad),
            ] {
                let e = result.expect_err(bad);
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
            }
        }
        // Empty: a channel and an event need a name, a presence key may be
        // left to the provider.
        assert!(validate_channel_name("").is_err());
        assert!(validate_event("").is_err());
        validate_presence_key("").expect("an empty key is picked by the provider");
    }

    #[test]
    fn an_empty_presence_key_is_generated() {
        let new = || "generated".to_string();
        assert_eq!(presence_key(Some("me"), new).ok(), Some("me".into()));
        assert_eq!(presence_key(Some(""), new).ok(), Some("generated".into()));
        assert_eq!(presence_key(None, new).ok(), Some("generated".into()));
        let e = presence_key(Some("a\u{0}"), new).expect_err("control character");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn the_wildcard_is_not_an_event_to_send() {
        let e = validate_event("*").expect_err("*");
        assert!(e.message().contains("wildcard"), "{e}");
    }

    #[test]
    fn refused_names_are_cut_in_the_message() {
        let e = validate_event(&format!("{}\n", "n".repeat(1000))).expect_err("long");
        assert!(e.message().len() < 200, "{}", e.message());
    }

    #[test]
    fn json_size_is_checked_at_the_limit() {
        let v = json!({"s": "x".repeat(100)});
        let len = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or_default();
        check_json_size(&v, len, "the payload").expect("exactly at the limit");
        let e = check_json_size(&v, len - 1, "the payload").expect_err("one byte over");
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert!(
            e.message()
                .starts_with("the payload is larger than the limit of"),
            "{e}"
        );
    }

    #[test]
    fn broadcasts_are_checked_for_event_and_size() {
        validate_broadcast("ev", &json!({"a": 1}), 100).expect("fits");
        let e = validate_broadcast("*", &json!({}), 100).expect_err("wildcard");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = validate_broadcast("ev", &json!({"s": "x".repeat(200)}), 100).expect_err("big");
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert!(e.message().starts_with("the broadcast payload"), "{e}");
    }

    #[test]
    fn not_joined_says_why() {
        let e = not_joined("room", "send", None);
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("join channel \"room\" first"), "{e}");
        let e = not_joined(
            "room",
            "track",
            Some("removed from channel \"room\" because X"),
        );
        assert!(e.message().contains("because X; join again"), "{e}");
    }
}
