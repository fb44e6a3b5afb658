//! Test helpers: a raw Phoenix-protocol WebSocket client and an HS256 JWT
//! `Auth` test double (no auth provider crate is a dependency).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use truststream_core::{Error, Health, ProviderInfo};
use truststream_core_auth::{
    Auth, AuthCapabilities, AuthResult, Principal, Session, SessionInfo, SignIn, SignUp, User,
};
use truststream_realtime_ws::protocol::{
    decode_user_broadcast_frame, encode_binary_user_broadcast_push, encode_user_broadcast_push,
    UserPayload,
};
use truststream_realtime_ws::Vsn;

pub const SECRET: &[u8] = b"test-secret-of-at-least-32-bytes!!";

/// An HS256 token for `sub` expiring in `secs` seconds (negative: expired).
pub fn token(sub: &str, secs: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + secs;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": exp, "role": "authenticated"}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// Validates HS256 tokens signed with [`SECRET`] (exp checked, no leeway);
/// every other method is unsupported.
pub struct JwtAuth;

fn unsupported<T>() -> AuthResult<T> {
    Err(Error::unsupported("test double: only validate_token"))
}

#[async_trait]
impl Auth for JwtAuth {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "test-jwt",
            version: "0",
        }
    }
    fn capabilities(&self) -> AuthCapabilities {
        AuthCapabilities::none()
    }
    async fn health(&self) -> Health {
        Health::healthy(Duration::ZERO)
    }
    async fn sign_up(&self, _: SignUp) -> AuthResult<Session> {
        unsupported()
    }
    async fn sign_in(&self, _: SignIn) -> AuthResult<Session> {
        unsupported()
    }
    async fn sign_out(&self, _: &Principal) -> AuthResult<()> {
        unsupported()
    }
    async fn sign_out_everywhere(&self, _: &Principal) -> AuthResult<()> {
        unsupported()
    }
    async fn get_user(&self, _: &Principal) -> AuthResult<User> {
        unsupported()
    }
    async fn get_session(&self, _: &Principal) -> AuthResult<SessionInfo> {
        unsupported()
    }
    async fn refresh_session(&self, _: &str) -> AuthResult<Session> {
        unsupported()
    }
    async fn validate_token(&self, token: &str) -> AuthResult<Principal> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.leeway = 0;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(SECRET),
            &v,
        )
        .map_err(|e| Error::unauthenticated(format!("invalid token: {e}")))?;
        let claims = data.claims;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok(Principal {
            user_id: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            email: None,
            roles: vec![],
            session_id: None,
            expires_at: chrono::DateTime::from_timestamp(exp, 0).unwrap_or_default(),
            claims,
        })
    }
    async fn get_user_roles(&self, _: &Principal) -> AuthResult<Vec<String>> {
        unsupported()
    }
    async fn has_permission(&self, _: &Principal, _: &str) -> AuthResult<bool> {
        unsupported()
    }
}

pub fn auth() -> Arc<dyn Auth> {
    Arc::new(JwtAuth)
}

/// A decoded message from the hub.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub join_ref: Value,
    pub reference: Value,
    pub topic: String,
    pub event: String,
    pub payload: Value,
    /// Whether it came as a kind 4 binary frame.
    pub binary: bool,
    /// The raw payload of a kind 4 frame with encoding 0 (binary); its
    /// `payload` then has no `payload` field.
    pub bytes: Option<Vec<u8>>,
}

/// A raw protocol client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub vsn: Vsn,
    next: u64,
}

/// How long a test waits for a message it expects. Generous: under
/// `cargo xtask test` the 2-core CI machine runs many test binaries at once
/// (argon2 bursts among them), and a 5 s wait once ran out there although
/// nothing was lost. Only failing tests ever wait this long.
pub const WAIT: Duration = Duration::from_secs(30);

impl Client {
    pub async fn connect(url: &str, vsn: Vsn, apikey: Option<&str>) -> Client {
        Self::try_connect(url, vsn, apikey).await.unwrap()
    }

    pub async fn try_connect(
        url: &str,
        vsn: Vsn,
        apikey: Option<&str>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut u = format!("{url}?vsn={}", vsn.as_str());
        if let Some(k) = apikey {
            u.push_str(&format!("&apikey={k}"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(u).await?;
        Ok(Client { ws, vsn, next: 1 })
    }

    pub fn next_ref(&mut self) -> String {
        self.next += 1;
        self.next.to_string()
    }

    pub async fn send_raw(&mut self, m: WsMessage) {
        self.ws.send(m).await.unwrap();
    }

    /// Sends a frame; returns its ref.
    pub async fn push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.next_ref();
        let text = match self.vsn {
            Vsn::V1 => {
                json!({"topic": topic, "event": event, "payload": payload, "ref": r, "join_ref": join_ref})
            }
            Vsn::V2 => json!([join_ref, r, topic, event, payload]),
        };
        self.send_raw(WsMessage::text(text.to_string())).await;
        r
    }

    /// A kind 3 broadcast, as realtime-js 2.x sends `channel.send`.
    pub async fn push_binary_broadcast(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.next_ref();
        let bytes = encode_user_broadcast_push(join_ref, &r, topic, event, &payload).unwrap();
        self.send_raw(WsMessage::binary(bytes)).await;
        r
    }

    /// A kind 3 broadcast with a binary payload (realtime-js 2.x sends
    /// `channel.send` with an `ArrayBuffer` payload so).
    pub async fn push_bytes_broadcast(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        metadata: &str,
        payload: &[u8],
    ) -> String {
        let r = self.next_ref();
        let bytes =
            encode_binary_user_broadcast_push(join_ref, &r, topic, event, metadata, payload)
                .unwrap();
        self.send_raw(WsMessage::binary(bytes)).await;
        r
    }

    /// The next message, or `None` when the connection closed.
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing arrived in time")?;
            match m {
                Ok(WsMessage::Text(t)) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    return Some(match self.vsn {
                        Vsn::V1 => Msg {
                            join_ref: v["join_ref"].clone(),
                            reference: v["ref"].clone(),
                            topic: v["topic"].as_str().unwrap().to_string(),
                            event: v["event"].as_str().unwrap().to_string(),
                            payload: v["payload"].clone(),
                            binary: false,
                            bytes: None,
                        },
                        Vsn::V2 => Msg {
                            join_ref: v[0].clone(),
                            reference: v[1].clone(),
                            topic: v[2].as_str().unwrap().to_string(),
                            event: v[3].as_str().unwrap().to_string(),
                            payload: v[4].clone(),
                            binary: false,
                            bytes: None,
                        },
                    });
                }
                Ok(WsMessage::Binary(b)) => {
                    let u = decode_user_broadcast_frame(&b).unwrap();
                    let mut payload = json!({"type": "broadcast", "event": u.event});
                    let bytes = match u.payload {
                        UserPayload::Json(v) => {
                            payload["payload"] = v;
                            None
                        }
                        UserPayload::Binary(b) => Some(b),
                    };
                    if let Some(meta) = u.meta {
                        payload["meta"] = meta;
                    }
                    return Some(Msg {
                        join_ref: Value::Null,
                        reference: Value::Null,
                        topic: u.topic,
                        event: "broadcast".into(),
                        payload,
                        binary: true,
                        bytes,
                    });
                }
                Ok(WsMessage::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next message whose event is `event`, skipping others.
    pub async fn expect(&mut self, event: &str) -> Msg {
        let mut skipped = Vec::new();
        loop {
            match self.recv().await {
                Some(m) if m.event == event => return m,
                Some(m) => skipped.push(format!("{}:{}", m.event, m.payload)),
                None => panic!("connection closed while waiting for {event}; skipped {skipped:?}"),
            }
        }
    }

    /// The reply to `reference`.
    pub async fn reply(&mut self, reference: &str) -> Value {
        loop {
            let m = self.expect("phx_reply").await;
            if m.reference == json!(reference) {
                return m.payload;
            }
        }
    }

    /// Joins `topic` with `config`; returns the join ref and the reply.
    pub async fn join(&mut self, topic: &str, payload: Value) -> (String, Value) {
        let r = self.next_ref();
        let text = match self.vsn {
            Vsn::V1 => {
                json!({"topic": topic, "event": "phx_join", "payload": payload, "ref": r, "join_ref": r})
            }
            Vsn::V2 => json!([r, r, topic, "phx_join", payload]),
        };
        self.send_raw(WsMessage::text(text.to_string())).await;
        let reply = self.reply(&r).await;
        (r, reply)
    }

    /// Joins and asserts the reply is ok; returns the join ref.
    pub async fn join_ok(&mut self, topic: &str, config: Value) -> String {
        let (r, reply) = self.join(topic, json!({ "config": config })).await;
        assert_eq!(reply["status"], "ok", "join {topic}: {reply}");
        r
    }

    /// Nothing arrives within 300 ms (other than what `ignore` accepts).
    pub async fn expect_quiet(&mut self, ignore: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(None) => return,
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    assert!(
                        ignore.iter().any(|e| t.contains(&format!("\"{e}\""))),
                        "expected nothing, got {t}"
                    );
                }
                Ok(Some(Ok(WsMessage::Binary(b)))) => {
                    panic!("expected nothing, got a binary frame {b:?}")
                }
                Ok(Some(_)) => {}
            }
        }
    }
}

pub fn broadcast_config(self_: bool, ack: bool) -> Value {
    json!({"broadcast": {"self": self_, "ack": ack}, "presence": {"key": ""}, "postgres_changes": []})
}

/// Waits until `f` holds, polling every 20 ms, within 10 s.
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
