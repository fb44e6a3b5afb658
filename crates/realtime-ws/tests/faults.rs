//! Bad input and faults: every case is answered with an error reply or a
//! close with a reason, never a panic or unbounded memory; 1,000 clients
//! that vanish abruptly leave no presence, connection or task behind.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Client};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;
use truststream_core_realtime::{ChannelOptions, Realtime};
use truststream_realtime_ws::{Vsn, WsRealtime, WsRealtimeConfig};

async fn start_with(f: impl FnOnce(&mut WsRealtimeConfig)) -> (WsRealtime, String) {
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    f(&mut config);
    let rt = WsRealtime::start(config, None, None).await.unwrap();
    let url = rt.url().unwrap();
    (rt, url)
}

/// The next error reply; asserts the connection is still usable after.
async fn error_reply(c: &mut Client) -> Value {
    let m = c.expect("phx_reply").await;
    assert_eq!(m.payload["status"], "error", "{}", m.payload);
    assert!(m.payload["response"]["reason"].is_string(), "{}", m.payload);
    m.payload
}

async fn still_alive(c: &mut Client) {
    let r = c.push(None, "phoenix", "heartbeat", json!({})).await;
    assert_eq!(c.reply(&r).await["status"], "ok");
}

/// The close frame the hub sends, as (code, reason).
async fn close_frame(c: &mut Client) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), c.ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(WsMessage::Close(Some(f)))) => return (f.code, f.reason.to_string()),
            Some(Ok(WsMessage::Close(None))) | None => panic!("closed without a reason"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("read error before the close frame: {e}"),
        }
    }
}

#[tokio::test]
async fn malformed_frames_get_error_replies() {
    let (_hub, url) = start_with(|_| {}).await;
    for vsn in [Vsn::V1, Vsn::V2] {
        let mut c = Client::connect(&url, vsn, None).await;
        for text in [
            "not json",
            "{\"unterminated\": ",
            "42",
            "[1, 2, 3]",
            "{\"topic\": 5, \"event\": \"x\", \"payload\": {}}",
            "[null, \"9\", \"realtime:x\", 7, {}]",
            "{\"topic\": \"realtime:x\", \"event\": \"x\", \"ref\": {\"nested\": 1}}",
        ] {
            c.send_raw(WsMessage::text(text)).await;
            let reply = error_reply(&mut c).await;
            assert!(
                reply["response"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("malformed"),
                "{text}: {reply}"
            );
        }
        still_alive(&mut c).await;
    }
}

#[tokio::test]
async fn unknown_events_and_unmatched_topics_get_error_replies() {
    let (_hub, url) = start_with(|_| {}).await;
    let mut c = Client::connect(&url, Vsn::V2, None).await;
    c.push(None, "phoenix", "reboot", json!({})).await;
    error_reply(&mut c).await;
    c.push(None, "realtime:nowhere", "broadcast", json!({}))
        .await;
    let reply = error_reply(&mut c).await;
    assert!(reply["response"]["reason"]
        .as_str()
        .unwrap()
        .contains("unmatched topic"));
    let jr = c.join_ok("realtime:t", json!({})).await;
    c.push(Some(&jr), "realtime:t", "explode", json!({})).await;
    let reply = error_reply(&mut c).await;
    assert!(reply["response"]["reason"]
        .as_str()
        .unwrap()
        .contains("unknown event"));
    // Broadcasts and presence pushes of the wrong shape.
    for (event, payload) in [
        ("broadcast", json!("text")),
        ("broadcast", json!({"type": "broadcast"})),
        ("broadcast", json!({"type": "broadcast", "event": "*"})),
        ("presence", json!({"type": "presence", "event": "dance"})),
        (
            "presence",
            json!({"type": "presence", "event": "track", "payload": [1]}),
        ),
    ] {
        c.push(Some(&jr), "realtime:t", event, payload.clone())
            .await;
        let reply = error_reply(&mut c).await;
        assert_eq!(reply["response"]["code"], "invalid_input", "{payload}");
    }
    still_alive(&mut c).await;
}

#[tokio::test]
async fn bad_topics_are_refused() {
    let (_hub, url) = start_with(|_| {}).await;
    let mut c = Client::connect(&url, Vsn::V1, None).await;
    let long = format!("realtime:{}", "n".repeat(256));
    for topic in [
        long.as_str(),
        "room-without-prefix",
        "realtime:",
        "realtime:a\nb",
    ] {
        let (_, reply) = c.join(topic, json!({"config": {}})).await;
        assert_eq!(reply["status"], "error", "{topic}");
        assert_eq!(reply["response"]["code"], "invalid_input");
    }
    // 255 bytes of channel name is fine.
    c.join_ok(&format!("realtime:{}", "n".repeat(255)), json!({}))
        .await;
}

#[tokio::test]
async fn binary_frames_with_wrong_lengths_get_error_replies() {
    let (_hub, url) = start_with(|_| {}).await;
    let mut c = Client::connect(&url, Vsn::V2, None).await;
    let jr = c.join_ok("realtime:bin", json!({})).await;
    let good = truststream_realtime_ws::protocol::encode_user_broadcast_push(
        &jr,
        "77",
        "realtime:bin",
        "ev",
        &json!({"a": 1}),
    )
    .unwrap();
    let mut wrong_topic_len = good.clone();
    wrong_topic_len[3] = 250;
    let mut bad_json = good.clone();
    bad_json.truncate(good.len() - 2);
    let mut bad_kind = good.clone();
    bad_kind[0] = 1;
    let mut unknown_encoding = good.clone();
    unknown_encoding[6] = 2;
    for (what, bytes) in [
        ("empty", vec![]),
        ("header only", good[..4].to_vec()),
        ("lengths beyond the frame", wrong_topic_len),
        ("truncated JSON", bad_json),
        ("kind 1 from a client", bad_kind),
        ("unknown payload encoding", unknown_encoding),
    ] {
        c.send_raw(WsMessage::binary(bytes)).await;
        let reply = error_reply(&mut c).await;
        assert!(reply["response"]["reason"].is_string(), "{what}");
    }
    still_alive(&mut c).await;
}

#[tokio::test]
async fn payload_limits() {
    let (_hub, url) = start_with(|c| c.max_payload_bytes = 1024).await;
    let mut c = Client::connect(&url, Vsn::V2, None).await;
    let cfg = common::broadcast_config(false, true);
    let jr = c.join_ok("realtime:big", cfg).await;
    // Over max_payload_bytes: an error reply of kind too_large.
    let r = c
        .push_binary_broadcast(&jr, "realtime:big", "x", json!({"s": "x".repeat(2000)}))
        .await;
    let reply = c.reply(&r).await;
    assert_eq!(reply["status"], "error");
    assert_eq!(reply["response"]["code"], "too_large");
    let r = c
        .push(
            Some(&jr),
            "realtime:big",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"s": "x".repeat(2000)}}),
        )
        .await;
    assert_eq!(c.reply(&r).await["response"]["code"], "too_large");
    still_alive(&mut c).await;
    // A frame over the frame limit (payload limit + 64 KiB): closed with 1009.
    c.send_raw(WsMessage::text(format!(
        "[null, \"1\", \"phoenix\", \"heartbeat\", \"{}\"]",
        "x".repeat(70 * 1024)
    )))
    .await;
    let (code, reason) = close_frame(&mut c).await;
    assert_eq!(code, CloseCode::Size);
    assert!(reason.contains("over the limit"), "{reason}");
}

#[tokio::test]
async fn connection_and_channel_limits() {
    let (hub, url) = start_with(|c| {
        c.max_connections = 3;
        c.max_channels_per_connection = 2;
    })
    .await;
    let mut a = Client::connect(&url, Vsn::V2, None).await;
    a.join_ok("realtime:one", json!({})).await;
    a.join_ok("realtime:two", json!({})).await;
    let (_, reply) = a.join("realtime:three", json!({"config": {}})).await;
    assert_eq!(reply["response"]["code"], "rate_limited", "{reply}");
    let _b = Client::connect(&url, Vsn::V2, None).await;
    let _c = Client::connect(&url, Vsn::V2, None).await;
    match Client::try_connect(&url, Vsn::V2, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429)
        }
        Err(e) => panic!("expected 429, got {e}"),
        Ok(_) => panic!("a fourth connection was accepted"),
    }
    // Wrong path and unknown vsn: plain HTTP refusals.
    let base = url.trim_end_matches("/realtime/v1/websocket");
    drop(_b);
    let counters = hub.counters().unwrap();
    eventually("a slot to free up", || {
        counters.connections.load(Ordering::SeqCst) < 3
    })
    .await;
    for (u, status) in [
        (format!("{base}/elsewhere"), 404),
        (format!("{url}?vsn=9.9.9"), 400),
    ] {
        match tokio_tungstenite::connect_async(u.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{u}")
            }
            Err(e) => panic!("{u}: expected {status}, got {e}"),
            Ok(_) => panic!("{u}: accepted"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_with_a_reason() {
    let (hub, url) = start_with(|c| c.outgoing_queue_bytes = 1024 * 1024).await;
    let counters = hub.counters().unwrap();
    // The slow client joins, then never reads again.
    let mut slow = Client::connect(&url, Vsn::V2, None).await;
    slow.join_ok("realtime:flood", json!({})).await;
    slow.expect("presence_state").await;
    // A fast reader on the same topic keeps up.
    let mut fast = Client::connect(&url, Vsn::V2, None).await;
    fast.join_ok("realtime:flood", json!({})).await;
    let sender = hub
        .channel("flood", ChannelOptions::default())
        .await
        .unwrap();
    truststream_core_realtime::Channel::join(sender.as_ref())
        .await
        .unwrap();
    let payload = json!({"blob": "y".repeat(64 * 1024)});
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(m) = fast.recv().await {
            if m.event == "broadcast" {
                n += 1;
                if n == 400 {
                    break;
                }
            }
        }
        (n, fast)
    });
    for _ in 0..400 {
        sender.send("blob", payload.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eventually("the slow client to be disconnected", || {
        counters.slow_disconnects.load(Ordering::SeqCst) == 1
    })
    .await;
    let (n, _fast) = reader.await.unwrap();
    assert_eq!(n, 400, "the fast client got everything");
    eventually("only the fast client to remain", || {
        counters.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    // The close frame (with the reason) is sent best-effort: the slow
    // client's buffers were full. If it got through, it names the reason.
    let mut reason = None;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), slow.ws.next()).await {
        if let Ok(WsMessage::Close(Some(f))) = m {
            reason = Some(f.reason.to_string());
            break;
        }
    }
    if let Some(reason) = reason {
        assert!(reason.contains("outgoing_queue_bytes"), "{reason}");
    }
}

/// Sends broadcasts of `bytes` bytes on `channel` until the hub's outgoing
/// queues hold bytes that stay queued (the slow client's socket buffers are
/// full, its writer waits).
async fn fill_socket_buffers(
    sender: &dyn truststream_core_realtime::Channel,
    counters: &truststream_realtime_ws::Counters,
    bytes: usize,
) {
    let payload = json!({"blob": "f".repeat(bytes)});
    for _ in 0..10_000 {
        sender.send("fill", payload.clone()).await.unwrap();
        let mut stalled = 0;
        while counters.queued_bytes.load(Ordering::SeqCst) > 0 && stalled < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stalled += 1;
        }
        if stalled == 3 {
            return;
        }
    }
    panic!("the socket buffers never filled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_disconnected_by_queued_bytes_not_frames() {
    const BUDGET: usize = 1024 * 1024;
    let (hub, url) = start_with(|c| c.outgoing_queue_bytes = BUDGET).await;
    let counters = hub.counters().unwrap();
    let mut slow = Client::connect(&url, Vsn::V2, None).await;
    slow.join_ok("realtime:bytes", json!({})).await;
    slow.expect("presence_state").await;
    // From here on the client reads nothing.
    let sender = hub
        .channel("bytes", ChannelOptions::default())
        .await
        .unwrap();
    sender.join().await.unwrap();
    fill_socket_buffers(sender.as_ref(), &counters, 32 * 1024).await;
    let before = counters.queued_bytes.load(Ordering::SeqCst);
    assert!(before < BUDGET / 4, "{before} bytes queued after filling");

    // 5,000 tiny frames (far more than the 1,024 frames the queue used to
    // hold) fit in the byte budget: the client stays connected.
    for i in 0..5_000 {
        sender.send("t", json!({ "i": i })).await.unwrap();
    }
    let queued = counters.queued_bytes.load(Ordering::SeqCst);
    assert_eq!(
        counters.slow_disconnects.load(Ordering::SeqCst),
        0,
        "disconnected by tiny frames ({queued} bytes queued)"
    );
    assert!(
        queued >= before + 5_000 * 20 && queued <= BUDGET,
        "{queued} bytes queued (before the tiny frames: {before})"
    );

    // A few large frames go over the budget: disconnected after at most as
    // many as fit in what was left of it, plus one.
    let big = json!({"blob": "B".repeat(200 * 1024)});
    let mut large = 0;
    while counters.slow_disconnects.load(Ordering::SeqCst) == 0 {
        assert!(large < 10, "still connected after {large} large frames");
        // The sender is not the slow member: its send succeeds.
        sender.send("big", big.clone()).await.unwrap();
        large += 1;
    }
    let room = (BUDGET - queued) / (200 * 1024);
    assert!(large <= room + 1, "{large} large frames for room of {room}");
    // The slow client's queue is released: nothing stays counted.
    eventually("the queued bytes to be released", || {
        counters.queued_bytes.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnected_for_reading_slowly_reads_the_close_frame_and_its_reason() {
    let (hub, url) = start_with(|c| {
        c.max_payload_bytes = 64 * 1024;
        c.outgoing_queue_bytes = 256 * 1024;
    })
    .await;
    let counters = hub.counters().unwrap();
    // A raw tokio-tungstenite client: it joins, then stops reading.
    let mut slow = Client::connect(&url, Vsn::V2, None).await;
    slow.join_ok("realtime:backlog", json!({})).await;
    slow.expect("presence_state").await;
    let sender = hub
        .channel("backlog", ChannelOptions::default())
        .await
        .unwrap();
    sender.join().await.unwrap();
    let payload = json!({"blob": "z".repeat(32 * 1024)});
    let mut sent = 0;
    while counters.slow_disconnects.load(Ordering::SeqCst) == 0 {
        assert!(sent < 10_000, "never disconnected after {sent} broadcasts");
        sender.send("blob", payload.clone()).await.unwrap();
        sent += 1;
        if sent % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // Still not reading for a while (longer than the hub used to wait
    // before dropping the socket), but sending heartbeats as realtime-js
    // does.
    for i in 0..6 {
        let heartbeat = json!([null, format!("hb{i}"), "phoenix", "heartbeat", {}]);
        if let Err(e) = slow.ws.send(WsMessage::text(heartbeat.to_string())).await {
            panic!("the hub dropped the connection instead of closing it: {e}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Reading again: the backlog, then the close frame with the reason.
    let mut frames = 0;
    let (code, reason) = loop {
        let m = tokio::time::timeout(common::WAIT, slow.ws.next())
            .await
            .expect("the close frame in time");
        match m {
            Some(Ok(WsMessage::Close(Some(f)))) => break (f.code, f.reason.to_string()),
            Some(Ok(WsMessage::Close(None))) => panic!("a close frame without a reason"),
            Some(Ok(_)) => frames += 1,
            Some(Err(e)) => panic!("after {frames} frames, {e} instead of a close frame"),
            None => panic!("after {frames} frames, the connection ended without a close frame"),
        }
    };
    assert_eq!(code, CloseCode::Policy, "{reason}");
    assert!(
        reason.contains("outgoing_queue_bytes") && reason.contains("read fast enough"),
        "{reason}"
    );
    // The client's close reply completes the handshake: a clean end.
    match tokio::time::timeout(common::WAIT, slow.ws.next()).await {
        Ok(None) => {}
        Ok(Some(other)) => panic!("after the close frame: {other:?}"),
        Err(_) => panic!("the connection did not end after the close handshake"),
    }
    eventually("the connection to be gone", || {
        counters.connections.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn a_text_broadcast_meta_over_the_payload_limit_is_refused() {
    let (_hub, url) = start_with(|c| c.max_payload_bytes = 1024).await;
    let mut c = Client::connect(&url, Vsn::V2, None).await;
    let jr = c
        .join_ok("realtime:meta", common::broadcast_config(false, true))
        .await;
    let small = json!({"type": "broadcast", "event": "x", "payload": {}, "meta": {"id": 7}});
    let r = c.push(Some(&jr), "realtime:meta", "broadcast", small).await;
    assert_eq!(c.reply(&r).await["status"], "ok");
    let big = json!({
        "type": "broadcast", "event": "x", "payload": {},
        "meta": {"s": "m".repeat(2000)},
    });
    let r = c.push(Some(&jr), "realtime:meta", "broadcast", big).await;
    let reply = c.reply(&r).await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["response"]["code"], "too_large", "{reply}");
    let reason = reply["response"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("meta") && reason.contains("max_payload_bytes"),
        "{reason}"
    );
    still_alive(&mut c).await;
}

#[test]
fn the_outgoing_queue_holds_at_least_one_largest_frame() {
    let mut config = WsRealtimeConfig::hub("127.0.0.1:0");
    config.max_payload_bytes = 256 * 1024;
    config.outgoing_queue_bytes = 256 * 1024;
    let e = config.validate().unwrap_err();
    assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput);
    assert!(e.message().contains("outgoing_queue_bytes"), "{e}");
    config.outgoing_queue_bytes = 256 * 1024 + 64 * 1024;
    config.validate().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_vanish_and_nothing_is_left_behind() {
    const CLIENTS: usize = 1000;
    // The clients never read and never send heartbeats: on a loaded
    // machine connecting 1,000 of them one by one (debug build) can take
    // longer than the default 60 s idle limit, and the first ones would be
    // closed for it before the last one tracks. Each client is sent up to
    // 1,000 presence diffs; the queues hold them all.
    let (hub, url) = start_with(|c| {
        c.heartbeat_timeout_secs = 3600;
        c.member_queue_capacity = 4096;
    })
    .await;
    let counters = hub.counters().unwrap();
    let baseline_tasks = counters.tasks.load(Ordering::SeqCst);
    let observer = hub
        .channel("crowd", ChannelOptions::new().presence_key("observer"))
        .await
        .unwrap();
    observer.join().await.unwrap();
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = Client::connect(&url, if i % 2 == 0 { Vsn::V2 } else { Vsn::V1 }, None).await;
        let jr = c
            .join_ok(
                "realtime:crowd",
                json!({"presence": {"key": format!("user-{i}")}}),
            )
            .await;
        c.push(
            Some(&jr),
            "realtime:crowd",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"i": i}}),
        )
        .await;
        clients.push(c);
    }
    let obs = observer.clone();
    // Generous: 1,000 tracks are 500,000 presence diffs, and debug builds
    // under a parallel test run are slow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let n = obs.presence_state().await.unwrap().len();
        if n == CLIENTS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {n} of {CLIENTS} tracked ({} connections open)",
            counters.connections.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counters.connections.load(Ordering::SeqCst), CLIENTS);
    // Abrupt: the sockets are dropped without a close handshake.
    drop(clients);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let state = obs.presence_state().await.unwrap();
        let conns = counters.connections.load(Ordering::SeqCst);
        let tasks = counters.tasks.load(Ordering::SeqCst);
        let members = counters.members.load(Ordering::SeqCst);
        // Left: the observer's member and its delivery task.
        if state.is_empty() && conns == 0 && members == 1 && tasks == baseline_tasks + 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: presence {}, connections {conns}, members {members}, tasks {tasks} \
             (baseline {baseline_tasks} + 1)",
            state.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(observer);
    drop(obs);
    let counters = Arc::clone(&counters);
    drop(hub);
    eventually("every hub task to end after shutdown", || {
        counters.tasks.load(Ordering::SeqCst) == 0
    })
    .await;
}
