//! The hub's wire protocol, driven by a raw client: vsn 1.0.0 and 2.0.0,
//! binary broadcasts, presence, postgres_changes, tokens, heartbeats.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::sync::Arc;

use common::{auth, broadcast_config, token, Client};
use serde_json::{json, Value};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_db_memory::MemoryDatabase;
use truststream_realtime_ws::{TableRule, Vsn, WsRealtime, WsRealtimeConfig};

/// A hub publishing `agents` (readable by anonymous subscribers when there
/// is no auth provider).
async fn start(db: Option<Arc<dyn Database>>, with_auth: bool) -> (WsRealtime, String) {
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.publish = vec!["agents".into()];
    let rule = TableRule {
        anon: !with_auth,
        ..TableRule::default()
    };
    config.tables.insert("agents".into(), rule);
    let rt = WsRealtime::start(config, db, with_auth.then(auth))
        .await
        .unwrap();
    let url = rt.url().unwrap();
    (rt, url)
}

#[tokio::test]
async fn heartbeats_are_answered_in_both_versions() {
    let (_hub, url) = start(None, false).await;
    for vsn in [Vsn::V1, Vsn::V2] {
        let mut c = Client::connect(&url, vsn, None).await;
        let r = c.push(None, "phoenix", "heartbeat", json!({})).await;
        let m = c.expect("phx_reply").await;
        assert_eq!(m.reference, json!(r));
        assert_eq!(m.topic, "phoenix");
        assert_eq!(m.payload, json!({"status": "ok", "response": {}}));
    }
}

#[tokio::test]
async fn broadcast_between_clients_v1_and_v2_with_self_and_ack() {
    let (_hub, url) = start(None, false).await;
    let topic = "realtime:room-1";
    let mut a = Client::connect(&url, Vsn::V2, None).await;
    let mut b = Client::connect(&url, Vsn::V1, None).await;
    let ja = a.join_ok(topic, broadcast_config(true, true)).await;
    let jb = b.join_ok(topic, broadcast_config(false, false)).await;
    a.expect("presence_state").await;
    b.expect("presence_state").await;

    // a (vsn 2, self + ack) sends a kind 3 binary frame.
    let r = a
        .push_binary_broadcast(&ja, topic, "msg", json!({"text": "hi"}))
        .await;
    let own = a.expect("broadcast").await;
    assert!(own.binary, "vsn 2 receivers get kind 4 frames");
    assert_eq!(
        own.payload,
        json!({"type": "broadcast", "event": "msg", "payload": {"text": "hi"}})
    );
    assert_eq!(a.reply(&r).await["status"], "ok", "ack");
    let got = b.expect("broadcast").await;
    assert_eq!(got.join_ref, json!(jb), "vsn 1 pushes name the member");
    assert_eq!(got.payload["payload"], json!({"text": "hi"}));

    // b (vsn 1, no self, no ack) sends a JSON broadcast.
    b.push(
        Some(&jb),
        topic,
        "broadcast",
        json!({"type": "broadcast", "event": "msg", "payload": {"n": 2}}),
    )
    .await;
    let got = a.expect("broadcast").await;
    assert_eq!(got.payload["payload"], json!({"n": 2}));
    b.expect_quiet(&[]).await; // neither its own copy nor an ack reply
}

#[tokio::test]
async fn binary_broadcasts_reach_v2_clients_only() {
    use truststream_core_realtime::{handler, ChannelOptions, Message, Realtime};

    let (hub, url) = start(None, false).await;
    let topic = "realtime:bin-room";
    let mut a = Client::connect(&url, Vsn::V2, None).await;
    let mut b = Client::connect(&url, Vsn::V2, None).await;
    let mut c = Client::connect(&url, Vsn::V1, None).await;
    let ja = a.join_ok(topic, broadcast_config(true, true)).await;
    let jb = b.join_ok(topic, broadcast_config(false, false)).await;
    c.join_ok(topic, broadcast_config(false, false)).await;
    for x in [&mut a, &mut b, &mut c] {
        x.expect("presence_state").await;
    }
    // An in-process handle of the hub in the same channel.
    let local = hub
        .channel("bin-room", ChannelOptions::new())
        .await
        .unwrap();
    let (tx, mut local_rx) = tokio::sync::mpsc::unbounded_channel();
    let _on = local.on(
        "*",
        handler(move |m: Message| {
            let _ = tx.send(m);
        }),
    );
    local.join().await.unwrap();

    // a (vsn 2, self + ack) sends bytes 0..=255 in a kind 3 frame with
    // encoding 0 and metadata.
    let data: Vec<u8> = (0..=255).collect();
    let r = a
        .push_bytes_broadcast(&ja, topic, "bin", r#"{"id":7}"#, &data)
        .await;
    let own = a.expect("broadcast").await;
    assert!(own.binary);
    assert_eq!(own.bytes.as_deref(), Some(&data[..]), "self: true");
    assert_eq!(a.reply(&r).await["status"], "ok", "ack");
    let got = b.expect("broadcast").await;
    assert!(got.binary, "vsn 2 receivers get a kind 4 frame");
    assert_eq!(got.topic, topic);
    assert_eq!(got.bytes.as_deref(), Some(&data[..]), "identical bytes");
    assert_eq!(
        got.payload,
        json!({"type": "broadcast", "event": "bin", "meta": {"id": 7}}),
        "metadata forwarded"
    );

    // b (vsn 2, no self, no ack) sends bytes: a gets them, b does not.
    b.push_bytes_broadcast(&jb, topic, "bin2", "", &[1, 2, 3])
        .await;
    let got = a.expect("broadcast").await;
    assert_eq!(got.bytes.as_deref(), Some(&[1u8, 2, 3][..]));
    assert_eq!(got.payload, json!({"type": "broadcast", "event": "bin2"}));

    // A JSON broadcast with meta after them: it is the first broadcast the
    // vsn 1 client and the in-process handle get (they skipped the binary
    // ones), and b's first since its own (it skipped that: self false).
    let r = a
        .push(
            Some(&ja),
            topic,
            "broadcast",
            json!({"type": "broadcast", "event": "after", "payload": {"n": 1}, "meta": {"m": 1}}),
        )
        .await;
    assert_eq!(a.reply(&r).await["status"], "ok");
    let got = c.expect("broadcast").await;
    assert_eq!(
        got.payload,
        json!({"type": "broadcast", "event": "after", "payload": {"n": 1}, "meta": {"m": 1}})
    );
    let got = b.expect("broadcast").await;
    assert!(got.binary);
    assert_eq!(
        got.payload,
        json!({"type": "broadcast", "event": "after", "payload": {"n": 1}, "meta": {"m": 1}})
    );
    let m = tokio::time::timeout(common::WAIT, local_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.event.as_str(), m.payload), ("after", json!({"n": 1})));

    // Over max_payload_bytes: an error reply of kind too_large.
    let big = vec![0u8; 262_145];
    let r = a.push_bytes_broadcast(&ja, topic, "big", "", &big).await;
    let reply = a.reply(&r).await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["response"]["code"], "too_large");
    c.expect_quiet(&[]).await;
    b.expect_quiet(&[]).await;
}

#[tokio::test]
async fn presence_state_diffs_and_leave_on_disconnect() {
    let (_hub, url) = start(None, false).await;
    let topic = "realtime:doc-7";
    let cfg = |key: &str| json!({"presence": {"key": key, "enabled": true}});
    let mut a = Client::connect(&url, Vsn::V2, None).await;
    let ja = a.join_ok(topic, cfg("ada")).await;
    assert_eq!(a.expect("presence_state").await.payload, json!({}));
    let r = a
        .push(
            Some(&ja),
            topic,
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"name": "Ada"}}),
        )
        .await;
    // The hub fans the diff out before it replies.
    let diff = a.expect("presence_diff").await.payload;
    assert_eq!(a.reply(&r).await["status"], "ok");
    assert_eq!(diff["joins"]["ada"]["metas"][0]["name"], "Ada");
    assert!(diff["joins"]["ada"]["metas"][0]["phx_ref"].is_string());

    let mut b = Client::connect(&url, Vsn::V1, None).await;
    b.join_ok(topic, cfg("bob")).await;
    let state = b.expect("presence_state").await.payload;
    assert_eq!(state["ada"]["metas"][0]["name"], "Ada", "{state}");

    drop(a); // abrupt disconnect
    let diff = b.expect("presence_diff").await.payload;
    assert_eq!(diff["leaves"]["ada"]["metas"][0]["name"], "Ada", "{diff}");
}

#[tokio::test]
async fn postgres_changes_reach_bindings_with_ids_and_records() {
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    db.create_table(
        &TableSchema::new("agents")
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("status"))
            .column(ColumnDef::integer("score")),
    )
    .await
    .unwrap();
    let (_hub, url) = start(Some(db.clone()), false).await;
    let mut c = Client::connect(&url, Vsn::V2, None).await;
    let bindings = json!([
        {"event": "*", "schema": "public", "table": "agents"},
        {"event": "UPDATE", "schema": "public", "table": "agents", "filter": "score=gte.10"},
    ]);
    let (_, reply) = c
        .join(
            "realtime:db",
            json!({"config": {"postgres_changes": bindings}}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let echo = reply["response"]["postgres_changes"].as_array().unwrap();
    assert_eq!(echo.len(), 2);
    assert_eq!(echo[1]["filter"], "score=gte.10");
    let (all, updates) = (echo[0]["id"].clone(), echo[1]["id"].clone());
    assert_ne!(all, updates);

    let row = |v: Value| v.as_object().cloned().unwrap();
    db.create(
        "agents",
        row(json!({"id": "a7", "status": "idle", "score": 1})),
    )
    .await
    .unwrap();
    db.update(
        "agents",
        &json!("a7"),
        row(json!({"status": "active", "score": 12})),
    )
    .await
    .unwrap();
    db.delete("agents", &json!("a7")).await.unwrap();

    let m = c.expect("postgres_changes").await.payload;
    assert_eq!(m["ids"], json!([all]));
    assert_eq!(m["data"]["type"], "INSERT");
    assert_eq!(m["data"]["table"], "agents");
    assert_eq!(m["data"]["record"]["status"], "idle");
    let m = c.expect("postgres_changes").await.payload;
    assert_eq!(m["ids"], json!([all, updates]));
    assert_eq!(m["data"]["type"], "UPDATE");
    assert_eq!(m["data"]["record"]["score"], 12);
    assert_eq!(m["data"]["old_record"]["score"], 1);
    let m = c.expect("postgres_changes").await.payload;
    assert_eq!(m["ids"], json!([all]));
    assert_eq!(m["data"]["type"], "DELETE");
    assert_eq!(m["data"]["old_record"]["id"], "a7");

    // Bad bindings are refused with a reason.
    for bad in [
        json!([{"event": "TRUNCATE", "schema": "public", "table": "agents"}]),
        json!([{"event": "*", "schema": "public", "table": "bad name"}]),
        json!([{"event": "*", "schema": "public", "table": "agents", "filter": "score=like.1"}]),
        json!([{"event": "*", "schema": "private", "table": "agents"}]),
    ] {
        let (_, reply) = c
            .join(
                "realtime:bad",
                json!({"config": {"postgres_changes": bad.clone()}}),
            )
            .await;
        assert_eq!(reply["status"], "error", "{bad}");
        assert!(reply["response"]["reason"].is_string());
    }
}

#[tokio::test]
async fn postgres_changes_without_a_feed_are_unsupported() {
    let (_hub, url) = start(None, false).await;
    let mut c = Client::connect(&url, Vsn::V1, None).await;
    let (_, reply) = c
        .join(
            "realtime:x",
            json!({"config": {"postgres_changes": [{"event": "*", "schema": "public"}]}}),
        )
        .await;
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["response"]["code"], "unsupported");
}

#[tokio::test]
async fn tokens_are_checked_at_connect_and_join_and_expire() {
    let (_hub, url) = start(None, true).await;
    // No apikey, a bad one, an expired one: refused at the handshake (401).
    for key in [None, Some("not-a-jwt".to_string()), Some(token("u", -10))] {
        let e = Client::try_connect(&url, Vsn::V2, key.as_deref())
            .await
            .err()
            .expect("refused");
        match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                assert_eq!(resp.status().as_u16(), 401);
                let body: Value = serde_json::from_slice(resp.body().as_ref().unwrap()).unwrap();
                assert!(body["error"].is_string(), "{body}");
            }
            other => panic!("expected an HTTP refusal, got {other}"),
        }
    }
    let good = token("u", 3600);
    let mut c = Client::connect(&url, Vsn::V2, Some(&good)).await;
    // A join with an invalid access token is refused.
    let (_, reply) = c
        .join(
            "realtime:secure",
            json!({"config": {}, "access_token": token("u", -5)}),
        )
        .await;
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["response"]["code"], "unauthenticated");

    // A join whose token expires in 2 s: the channel is closed then.
    let (jr, reply) = c
        .join(
            "realtime:secure",
            json!({"config": {}, "access_token": token("u", 2)}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let sys = c.expect("system").await;
    assert_eq!(sys.payload["status"], "error");
    assert_eq!(sys.payload["channel"], "secure");
    let close = c.expect("phx_close").await;
    assert_eq!(close.join_ref, json!(jr));

    // Refreshing the token (access_token event) keeps the channel open.
    let (jr, _) = c
        .join(
            "realtime:secure",
            json!({"config": {}, "access_token": token("u", 2)}),
        )
        .await;
    c.push(
        Some(&jr),
        "realtime:secure",
        "access_token",
        json!({"access_token": token("u", 3600)}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = c
        .push(
            Some(&jr),
            "realtime:secure",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"still": "here"}}),
        )
        .await;
    assert_eq!(
        c.reply(&r).await["status"],
        "ok",
        "still joined after refresh"
    );

    // An invalid refreshed token closes the channel at once.
    c.push(
        Some(&jr),
        "realtime:secure",
        "access_token",
        json!({"access_token": "garbage"}),
    )
    .await;
    assert_eq!(c.expect("system").await.payload["status"], "error");
    c.expect("phx_close").await;
}

#[tokio::test]
async fn leave_replies_then_closes() {
    let (_hub, url) = start(None, false).await;
    let mut c = Client::connect(&url, Vsn::V2, None).await;
    let jr = c.join_ok("realtime:l", json!({})).await;
    let r = c
        .push(Some(&jr), "realtime:l", "phx_leave", json!({}))
        .await;
    assert_eq!(c.reply(&r).await["status"], "ok");
    c.expect("phx_close").await;
    // After leaving, the topic is unmatched.
    let r = c
        .push(
            Some(&jr),
            "realtime:l",
            "broadcast",
            json!({"type": "broadcast", "event": "x", "payload": {}}),
        )
        .await;
    let reply = c.reply(&r).await;
    assert_eq!(reply["status"], "error");
    assert!(reply["response"]["reason"]
        .as_str()
        .unwrap()
        .contains("unmatched topic"));
}
