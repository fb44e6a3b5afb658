//! The realtime suite: every `core-realtime` provider runs these cases.
//!
//! Cases use only the interfaces (`core-realtime`, and `core-db` to write
//! rows), so the same suite runs over an in-process hub, a WebSocket hub and
//! a WebSocket client. The fixture's `peer` is "the other participant": the
//! same instance for in-process providers, a second connection for networked
//! ones. Channel and table names are unique per case, so a long-lived hub or
//! database can serve every case.
//!
//! Deliveries are asynchronous: a case waits for an expected delivery up to
//! [`RECV_TIMEOUT`] and asserts that something is *not* delivered by waiting
//! [`QUIET_PERIOD`].
//!
//! ```rust,no_run
//! use std::sync::Arc;
//! use truststream_conformance::{factory, realtime};
//! # fn my_provider() -> Arc<dyn truststream_core_realtime::Realtime> { unimplemented!() }
//! # async fn run() {
//! let report = realtime::run(
//!     "mine",
//!     factory(|| async {
//!         let rt = my_provider();
//!         Ok(realtime::RealtimeFixture { realtime: rt.clone(), peer: rt, db: None })
//!     }),
//!     None,
//! )
//! .await;
//! report.print_table();
//! assert_eq!(report.failed(), 0, "{}", report.summary());
//! # }
//! ```

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::Instant;
use truststream_core::{BoxFuture, ErrorKind};
use truststream_core_db::{col, ColumnDef, Database, Row, TableSchema};
use truststream_core_realtime::{
    handler, ChangeKind, ChangeSpec, Channel, ChannelOptions, Handler, Message, PresenceDiff,
    PresenceEvent, PresenceState, Realtime, RealtimeExt, RowChange, Value,
};

use crate::harness::{run_cases, Case, Factory};

mod capability;
use crate::{ensure, ensure_eq, expect_kind, CaseResult, Failure, Report};

/// What a realtime case gets.
#[derive(Clone)]
pub struct RealtimeFixture {
    /// The provider under test.
    pub realtime: Arc<dyn Realtime>,
    /// A second handle on the same realtime system, as another participant
    /// would have it: the same instance for in-process providers, a second
    /// client connection for networked ones.
    pub peer: Arc<dyn Realtime>,
    /// The database whose change feed the provider is wired to (row cases
    /// write through it), if any.
    pub db: Option<Arc<dyn Database>>,
}

/// Builds a fresh fixture per case.
pub type RealtimeFactory = Factory<RealtimeFixture>;

/// How long a case waits for a delivery it expects.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a case waits to be sure something is not delivered.
pub const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// Runs the realtime suite against `provider`; `only` keeps the cases whose
/// name contains it.
pub async fn run(provider: &str, factory: RealtimeFactory, only: Option<&str>) -> Report {
    run_cases(
        "realtime",
        provider,
        factory,
        &cases(),
        |f| serde_json::to_value(f.realtime.capabilities()).unwrap_or_default(),
        only,
    )
    .await
}

macro_rules! case {
    ($name:literal, [$($need:literal),*], $body:path) => {
        Case {
            name: $name,
            needs: &[$($need),*],
            run: |fx| -> BoxFuture<'static, CaseResult> { Box::pin($body(fx)) },
        }
    };
}

/// Every case of the suite, in run order.
pub fn cases() -> Vec<Case<RealtimeFixture>> {
    vec![
        case!(
            "channel.join_send_on_between_members",
            ["broadcast"],
            join_send_on_between_members
        ),
        case!(
            "channel.join_leave_idempotent",
            ["broadcast"],
            join_leave_idempotent
        ),
        case!(
            "channel.leave_stops_deliveries_and_rejoin_works",
            ["broadcast"],
            leave_stops_deliveries_and_rejoin_works
        ),
        case!("channel.invalid_names_rejected", [], invalid_names_rejected),
        case!(
            "channel.unicode_names_and_payloads",
            ["broadcast"],
            unicode_names_and_payloads
        ),
        case!(
            "broadcast.event_filter_and_wildcard",
            ["broadcast"],
            event_filter_and_wildcard
        ),
        case!(
            "broadcast.self_excluded_by_default",
            ["broadcast"],
            self_excluded_by_default
        ),
        case!(
            "broadcast.self_included_when_enabled",
            ["broadcast"],
            self_included_when_enabled
        ),
        case!("broadcast.ack_send", ["broadcast", "ack"], ack_send),
        case!(
            "broadcast.send_requires_join",
            ["broadcast"],
            send_requires_join
        ),
        case!(
            "broadcast.unsubscribe_stops_handler",
            ["broadcast"],
            unsubscribe_stops_handler
        ),
        case!("broadcast.order_preserved", ["broadcast"], order_preserved),
        case!(
            "broadcast.payload_over_limit_too_large",
            ["broadcast"],
            payload_over_limit_too_large
        ),
        case!("presence.state_on_join", ["presence"], state_on_join),
        case!(
            "presence.track_sends_join_diff",
            ["presence"],
            track_sends_join_diff
        ),
        case!(
            "presence.update_replaces_state",
            ["presence"],
            update_replaces_state
        ),
        case!(
            "presence.untrack_and_leave_send_leaves",
            ["presence"],
            untrack_and_leave_send_leaves
        ),
        case!(
            "presence.dropped_handle_leaves",
            ["presence"],
            dropped_handle_leaves
        ),
        case!(
            "presence.state_lists_both_members",
            ["presence"],
            state_lists_both_members
        ),
        case!(
            "presence.track_presence_ext",
            ["presence"],
            track_presence_ext
        ),
        case!(
            "presence.shared_key_multiple_metas",
            ["presence"],
            shared_key_multiple_metas
        ),
        case!(
            "presence.track_requires_join",
            ["presence"],
            track_requires_join
        ),
        case!(
            "rows.subscribe_to_row_changes",
            ["row_changes"],
            subscribe_to_row_changes
        ),
        case!(
            "rows.table_subscription_event_filter",
            ["row_changes"],
            table_subscription_event_filter
        ),
        case!(
            "rows.filter_subscription",
            ["row_changes"],
            filter_subscription
        ),
        case!(
            "rows.unsubscribe_stops_events",
            ["row_changes"],
            unsubscribe_stops_row_events
        ),
        case!(
            "rows.invalid_spec_rejected",
            ["row_changes"],
            invalid_spec_rejected
        ),
        case!(
            "edge.many_members_receive_broadcast",
            ["broadcast"],
            many_members_receive_broadcast
        ),
        case!("health.healthy", [], health_healthy),
        case!("capability.broadcast", [], capability::broadcast),
        case!("capability.ack", [], capability::ack),
        case!("capability.presence", [], capability::presence),
        case!("capability.row_changes", [], capability::row_changes),
    ]
}

// ---------------------------------------------------------------- helpers

/// A handler that forwards what it gets into a channel the case reads.
fn collector<T: Send + 'static>() -> (Handler<T>, UnboundedReceiver<T>) {
    let (tx, rx) = unbounded_channel();
    (
        handler(move |v: T| {
            let _ = tx.send(v);
        }),
        rx,
    )
}

/// The next delivery, within [`RECV_TIMEOUT`].
async fn recv_within<T>(rx: &mut UnboundedReceiver<T>, what: &str) -> Result<T, Failure> {
    match tokio::time::timeout(RECV_TIMEOUT, rx.recv()).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(Failure::new(format!(
            "{what}: the handler was dropped before anything arrived"
        ))),
        Err(_) => Err(Failure::new(format!(
            "{what}: nothing arrived within {RECV_TIMEOUT:?}"
        ))),
    }
}

/// The first delivery `pred` accepts within [`RECV_TIMEOUT`], skipping
/// others (networked providers may interleave, say, a presence state).
async fn recv_matching<T: Debug>(
    rx: &mut UnboundedReceiver<T>,
    what: &str,
    pred: impl Fn(&T) -> bool,
) -> Result<T, Failure> {
    let deadline = Instant::now() + RECV_TIMEOUT;
    let mut skipped = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) if pred(&v) => return Ok(v),
            Ok(Some(v)) => skipped.push(format!("{v:?}")),
            Ok(None) => {
                return Err(Failure::new(format!(
                    "{what}: the handler was dropped; other deliveries: {skipped:?}"
                )))
            }
            Err(_) => {
                return Err(Failure::new(format!(
                    "{what}: nothing matching arrived within {RECV_TIMEOUT:?}; other deliveries: {skipped:?}"
                )))
            }
        }
    }
}

/// Fails if anything arrives within [`QUIET_PERIOD`].
async fn expect_nothing<T: Debug>(rx: &mut UnboundedReceiver<T>, what: &str) -> CaseResult {
    match tokio::time::timeout(QUIET_PERIOD, rx.recv()).await {
        Ok(Some(v)) => Err(Failure::new(format!(
            "{what}: expected no delivery, got {v:?}"
        ))),
        Ok(None) | Err(_) => Ok(()),
    }
}

/// A channel name no other case (or run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}:{}", uuid::Uuid::new_v4().simple())
}

/// A joined handle.
async fn joined(
    rt: &Arc<dyn Realtime>,
    name: &str,
    options: ChannelOptions,
) -> Result<Arc<dyn Channel>, Failure> {
    let ch = rt.channel(name, options).await?;
    ch.join().await?;
    ensure!(ch.is_joined(), "is_joined() is false right after join()");
    Ok(ch)
}

fn keyed(key: &str) -> ChannelOptions {
    ChannelOptions::new().presence_key(key)
}

/// The states tracked under `key`, sorted by their JSON text.
fn states_of(state: &PresenceState, key: &str) -> Vec<Value> {
    let mut v: Vec<Value> = state
        .get(key)
        .map(|metas| metas.iter().map(|m| m.state.clone()).collect())
        .unwrap_or_default();
    v.sort_by_key(|s| s.to_string());
    v
}

fn is_state(ev: &PresenceEvent) -> bool {
    matches!(ev, PresenceEvent::State(_))
}

fn diff_joins(ev: &PresenceEvent, key: &str) -> bool {
    matches!(ev, PresenceEvent::Diff(d) if d.joins.contains_key(key))
}

fn diff_leaves(ev: &PresenceEvent, key: &str) -> bool {
    matches!(ev, PresenceEvent::Diff(d) if d.leaves.contains_key(key))
}

fn as_diff(ev: PresenceEvent) -> Result<PresenceDiff, Failure> {
    match ev {
        PresenceEvent::Diff(d) => Ok(d),
        other => Err(Failure::new(format!(
            "expected a presence diff, got {other:?}"
        ))),
    }
}

/// A handle on `name` (from `rt`) whose presence events go to the returned
/// receiver; it has joined and seen its initial state.
async fn presence_watcher(
    rt: &Arc<dyn Realtime>,
    name: &str,
    key: &str,
) -> Result<
    (
        Arc<dyn Channel>,
        truststream_core_realtime::Subscription,
        UnboundedReceiver<PresenceEvent>,
    ),
    Failure,
> {
    let ch = rt.channel(name, keyed(key)).await?;
    let (h, mut rx) = collector();
    let sub = ch.on_presence(h);
    ch.join().await?;
    recv_matching(&mut rx, "the watcher's presence state on join", is_state).await?;
    Ok((ch, sub, rx))
}

/// Polls `ch.presence_state()` until `pred` holds, within [`RECV_TIMEOUT`].
async fn wait_for_state(
    ch: &Arc<dyn Channel>,
    what: &str,
    pred: impl Fn(&PresenceState) -> bool,
) -> Result<PresenceState, Failure> {
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let state = ch.presence_state().await?;
        if pred(&state) {
            return Ok(state);
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(format!(
                "{what}: presence state never matched within {RECV_TIMEOUT:?}; last: {state:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn require_db(fx: &RealtimeFixture) -> Result<Arc<dyn Database>, Failure> {
    fx.db.clone().ok_or_else(|| {
        Failure::new(
            "the provider reports row_changes, but the fixture has no database to write rows through",
        )
    })
}

/// Creates a fresh table `rt_items_<random>` (id text primary key, status
/// text, n integer).
async fn items_table(db: &Arc<dyn Database>) -> Result<String, Failure> {
    if !db.capabilities().schema {
        return Err(Failure::skip(
            "the fixture's database cannot create tables (no schema capability)",
        ));
    }
    let name = format!(
        "rt_items_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    db.create_table(
        &TableSchema::new(&name)
            .column(ColumnDef::text("id").primary_key())
            .column(ColumnDef::text("status"))
            .column(ColumnDef::integer("n")),
    )
    .await?;
    Ok(name)
}

fn row(v: Value) -> Row {
    v.as_object().cloned().unwrap_or_default()
}

/// Checks one row change: table, kind, key, and `n` of the old and new rows.
fn check_change(
    c: &RowChange,
    table: &str,
    kind: ChangeKind,
    key: &str,
    old_n: Option<i64>,
    new_n: Option<i64>,
) -> CaseResult {
    let what = format!("{kind:?} of {key}");
    ensure_eq!(c.table.as_str(), table, "{what}: table");
    ensure_eq!(c.kind, kind, "{what}: kind");
    ensure_eq!(c.key, json!(key), "{what}: key");
    let n = |r: &Option<Row>| r.as_ref().map(|r| r.get("n").and_then(Value::as_i64));
    ensure_eq!(n(&c.old), old_n.map(Some), "{what}: old row's n");
    ensure_eq!(n(&c.new), new_n.map(Some), "{what}: new row's n");
    Ok(())
}

// ---------------------------------------------------------------- channel

/// The guide's notification system: one member listens on
/// `user:<id>:notifications`, another sends a notification, the first
/// acknowledges it.
async fn join_send_on_between_members(fx: RealtimeFixture) -> CaseResult {
    let name = unique("user:42:notifications");
    let inbox = fx.peer.channel(&name, ChannelOptions::default()).await?;
    ensure_eq!(inbox.name(), name.as_str());
    ensure!(!inbox.is_joined(), "a new handle must not be joined");
    let (h, mut notifications) = collector::<Message>();
    let _on = inbox.on("notification", h);
    inbox.join().await?;
    ensure!(inbox.is_joined());

    let server = joined(&fx.realtime, &name, ChannelOptions::default()).await?;
    let (h, mut receipts) = collector::<Message>();
    let _receipts = server.on("notification_received", h);

    let payload = json!({
        "id": "n-1",
        "title": "Trust score changed",
        "message": "Agent 7 is now at 0.92",
        "type": "info",
        "timestamp": "2024-05-01T12:00:00Z"
    });
    server.send("notification", payload.clone()).await?;
    let got = recv_within(&mut notifications, "the notification").await?;
    ensure_eq!(got.channel, name, "message channel");
    ensure_eq!(got.event.as_str(), "notification", "message event");
    ensure_eq!(got.payload, payload, "message payload");

    let receipt = json!({"notificationId": "n-1", "receivedAt": "2024-05-01T12:00:01Z"});
    inbox.send("notification_received", receipt.clone()).await?;
    let got = recv_within(&mut receipts, "the receipt").await?;
    ensure_eq!(got.event.as_str(), "notification_received");
    ensure_eq!(got.payload, receipt);
    expect_nothing(&mut notifications, "after the one notification").await
}

async fn join_leave_idempotent(fx: RealtimeFixture) -> CaseResult {
    let name = unique("idempotent");
    let member = fx.peer.channel(&name, ChannelOptions::default()).await?;
    let (h, mut rx) = collector::<Message>();
    let _on = member.on("ping", h);
    member.join().await?;
    member.join().await?;
    ensure!(member.is_joined(), "joined after two joins");

    let sender = joined(&fx.realtime, &name, ChannelOptions::default()).await?;
    sender.send("ping", json!(1)).await?;
    let got = recv_within(&mut rx, "the ping").await?;
    ensure_eq!(got.payload, json!(1));
    expect_nothing(&mut rx, "a second copy after joining twice").await?;

    member.leave().await?;
    member.leave().await?;
    ensure!(!member.is_joined(), "still joined after leave()");
    member.join().await?;
    ensure!(member.is_joined(), "not joined after joining again");
    sender.send("ping", json!(2)).await?;
    let got = recv_within(&mut rx, "the ping after rejoining").await?;
    ensure_eq!(got.payload, json!(2));
    Ok(())
}

async fn leave_stops_deliveries_and_rejoin_works(fx: RealtimeFixture) -> CaseResult {
    let name = unique("leave");
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut rx) = collector::<Message>();
    let _on = member.on("tick", h);
    let sender = joined(&fx.realtime, &name, ChannelOptions::default()).await?;

    sender.send("tick", json!({"n": 1})).await?;
    ensure_eq!(
        recv_within(&mut rx, "tick 1").await?.payload,
        json!({"n": 1})
    );

    member.leave().await?;
    ensure!(!member.is_joined());
    sender.send("tick", json!({"n": 2})).await?;
    expect_nothing(&mut rx, "a tick sent after leave()").await?;

    member.join().await?;
    sender.send("tick", json!({"n": 3})).await?;
    let got = recv_within(&mut rx, "tick 3 after rejoining").await?;
    ensure_eq!(
        got.payload,
        json!({"n": 3}),
        "the tick sent while away must not be delivered"
    );
    Ok(())
}

async fn invalid_names_rejected(fx: RealtimeFixture) -> CaseResult {
    let long = "n".repeat(256);
    for bad in [
        "",
        long.as_str(),
        "line\nbreak",
        "tab\there",
        "nul\0",
        "del\u{7f}",
    ] {
        expect_kind(
            fx.realtime
                .channel(bad, ChannelOptions::default())
                .await
                .map(|_| ()),
            ErrorKind::InvalidInput,
            &format!(
                "channel name {:?}",
                bad.chars().take(20).collect::<String>()
            ),
        )?;
    }
    // 255 bytes is the longest valid name.
    let mut longest = unique("x");
    longest.push_str(&"y".repeat(255 - longest.len()));
    let ch = fx
        .realtime
        .channel(&longest, ChannelOptions::default())
        .await?;
    ch.join().await?;
    ensure!(ch.is_joined(), "a 255-byte name is valid");
    Ok(())
}

async fn unicode_names_and_payloads(fx: RealtimeFixture) -> CaseResult {
    let name = unique("документ:文書:🚀");
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut rx) = collector::<Message>();
    let _on = member.on("édition", h);
    let sender = joined(&fx.realtime, &name, ChannelOptions::default()).await?;
    let payload = json!({
        "text": "héllo wörld — 你好 👋",
        "emoji": "🦀",
        "rtl": "مرحبا",
        "combining": "e\u{301}",
        "escapes": "quote \" backslash \\ tab \t"
    });
    sender.send("édition", payload.clone()).await?;
    let got = recv_within(&mut rx, "the unicode message").await?;
    ensure_eq!(got.channel, name);
    ensure_eq!(got.event.as_str(), "édition");
    ensure_eq!(got.payload, payload);
    Ok(())
}

// ---------------------------------------------------------------- broadcast

async fn event_filter_and_wildcard(fx: RealtimeFixture) -> CaseResult {
    let name = unique("events");
    let member = fx.peer.channel(&name, ChannelOptions::default()).await?;
    let (h, mut only_a) = collector::<Message>();
    let _a = member.on("a", h);
    let (h, mut all) = collector::<Message>();
    let _all = member.on("*", h);
    member.join().await?;
    let sender = joined(&fx.realtime, &name, ChannelOptions::default()).await?;

    sender.send("a", json!("first")).await?;
    sender.send("b", json!("second")).await?;
    let got = recv_within(&mut only_a, "event a").await?;
    ensure_eq!(got.event.as_str(), "a");
    ensure_eq!(got.payload, json!("first"));
    let first = recv_within(&mut all, "wildcard: a").await?;
    let second = recv_within(&mut all, "wildcard: b").await?;
    ensure_eq!(
        (first.event.as_str(), second.event.as_str()),
        ("a", "b"),
        "the wildcard handler gets every event, in order"
    );
    expect_nothing(&mut only_a, "event b at the handler of a").await
}

async fn self_excluded_by_default(fx: RealtimeFixture) -> CaseResult {
    let name = unique("self-off");
    let sender = fx
        .realtime
        .channel(&name, ChannelOptions::default())
        .await?;
    let (h, mut own) = collector::<Message>();
    let _own = sender.on("*", h);
    sender.join().await?;
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut other) = collector::<Message>();
    let _other = member.on("*", h);

    sender.send("hello", json!({"from": "sender"})).await?;
    recv_within(&mut other, "the other member's copy").await?;
    expect_nothing(&mut own, "the sender's own broadcast (broadcast_self off)").await
}

async fn self_included_when_enabled(fx: RealtimeFixture) -> CaseResult {
    let name = unique("self-on");
    let sender = fx
        .realtime
        .channel(&name, ChannelOptions::new().broadcast_self(true))
        .await?;
    let (h, mut own) = collector::<Message>();
    let _own = sender.on("hello", h);
    sender.join().await?;
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut other) = collector::<Message>();
    let _other = member.on("hello", h);

    sender.send("hello", json!({"n": 1})).await?;
    let mine = recv_within(&mut own, "the sender's own copy (broadcast_self on)").await?;
    ensure_eq!(mine.payload, json!({"n": 1}));
    recv_within(&mut other, "the other member's copy").await?;
    expect_nothing(&mut own, "a second own copy").await
}

async fn ack_send(fx: RealtimeFixture) -> CaseResult {
    let name = unique("ack");
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut rx) = collector::<Message>();
    let _on = member.on("acked", h);
    let sender = joined(&fx.realtime, &name, ChannelOptions::new().ack(true)).await?;
    for i in 0..3 {
        sender.send("acked", json!({"i": i})).await?;
    }
    for i in 0..3 {
        let got = recv_within(&mut rx, "an acknowledged message").await?;
        ensure_eq!(got.payload, json!({"i": i}));
    }
    Ok(())
}

async fn send_requires_join(fx: RealtimeFixture) -> CaseResult {
    let name = unique("not-joined");
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut rx) = collector::<Message>();
    let _on = member.on("*", h);

    let sender = fx
        .realtime
        .channel(&name, ChannelOptions::default())
        .await?;
    expect_kind(
        sender.send("early", json!(1)).await,
        ErrorKind::InvalidInput,
        "send before join",
    )?;
    sender.join().await?;
    sender.leave().await?;
    expect_kind(
        sender.send("late", json!(2)).await,
        ErrorKind::InvalidInput,
        "send after leave",
    )?;
    expect_nothing(&mut rx, "a message from a handle that is not joined").await
}

async fn unsubscribe_stops_handler(fx: RealtimeFixture) -> CaseResult {
    let name = unique("unsubscribe");
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut dropped_rx) = collector::<Message>();
    let dropped = member.on("news", h);
    let (h, mut explicit_rx) = collector::<Message>();
    let explicit = member.on("news", h);
    let (h, mut kept_rx) = collector::<Message>();
    let _kept = member.on("news", h);
    let sender = joined(&fx.realtime, &name, ChannelOptions::default()).await?;

    sender.send("news", json!(1)).await?;
    for rx in [&mut dropped_rx, &mut explicit_rx, &mut kept_rx] {
        recv_within(rx, "news 1 while subscribed").await?;
    }
    drop(dropped);
    explicit.unsubscribe();
    sender.send("news", json!(2)).await?;
    let got = recv_within(&mut kept_rx, "news 2 at the handler still subscribed").await?;
    ensure_eq!(got.payload, json!(2));
    expect_nothing(&mut dropped_rx, "news 2 after dropping the Subscription").await?;
    expect_nothing(&mut explicit_rx, "news 2 after unsubscribe()").await
}

async fn order_preserved(fx: RealtimeFixture) -> CaseResult {
    const N: i64 = 100;
    let name = unique("order");
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut rx) = collector::<Message>();
    let _on = member.on("seq", h);
    let sender = joined(&fx.realtime, &name, ChannelOptions::default()).await?;
    for i in 0..N {
        sender.send("seq", json!({"i": i})).await?;
    }
    for i in 0..N {
        let got = recv_within(&mut rx, &format!("message {i} of {N}")).await?;
        ensure_eq!(got.payload, json!({"i": i}), "message {i} out of order");
    }
    expect_nothing(&mut rx, "after the last message").await
}

async fn payload_over_limit_too_large(fx: RealtimeFixture) -> CaseResult {
    let Some(max) = fx.realtime.capabilities().max_payload_bytes else {
        return Err(Failure::skip(
            "the provider reports no max_payload_bytes limit",
        ));
    };
    let name = unique("limits");
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut rx) = collector::<Message>();
    let _on = member.on("*", h);
    let sender = joined(&fx.realtime, &name, ChannelOptions::new().ack(true)).await?;

    // A JSON string of `max` characters serializes to max + 2 bytes.
    let too_big = Value::String("x".repeat(max));
    expect_kind(
        sender.send("big", too_big).await,
        ErrorKind::TooLarge,
        &format!("a payload over max_payload_bytes ({max})"),
    )?;
    expect_nothing(&mut rx, "the refused payload").await?;

    // Well under the limit still goes through, on the same handle.
    let fits = Value::String("y".repeat((max / 2).min(64 * 1024)));
    sender.send("fits", fits.clone()).await?;
    let got = recv_within(&mut rx, "a payload under the limit").await?;
    ensure_eq!(got.event.as_str(), "fits");
    ensure!(
        got.payload == fits,
        "the payload under the limit changed in transit"
    );
    Ok(())
}

// ---------------------------------------------------------------- presence

async fn state_on_join(fx: RealtimeFixture) -> CaseResult {
    let name = unique("presence-state");
    let alice_state = json!({"userId": "u-alice", "userName": "Alice", "cursor": null});
    let alice = joined(&fx.realtime, &name, keyed("alice")).await?;
    alice.track(alice_state.clone()).await?;

    let bob = fx.peer.channel(&name, keyed("bob")).await?;
    let (h, mut rx) = collector::<PresenceEvent>();
    let _p = bob.on_presence(h);
    bob.join().await?;
    let ev = recv_matching(
        &mut rx,
        "bob's presence state on join",
        |ev| matches!(ev, PresenceEvent::State(s) if s.contains_key("alice")),
    )
    .await?;
    let PresenceEvent::State(state) = ev else {
        return Err(Failure::new("recv_matching returned a non-state event"));
    };
    ensure_eq!(
        states_of(&state, "alice"),
        vec![alice_state],
        "alice's state"
    );
    ensure!(
        !state.contains_key("bob"),
        "bob has not tracked anything yet, but the state lists him: {state:?}"
    );
    Ok(())
}

async fn track_sends_join_diff(fx: RealtimeFixture) -> CaseResult {
    let name = unique("presence-join");
    let (_bob, _sub, mut events) = presence_watcher(&fx.peer, &name, "bob").await?;
    let alice = joined(&fx.realtime, &name, keyed("alice")).await?;
    let st = json!({"userName": "Alice", "status": "editing"});
    alice.track(st.clone()).await?;

    let diff = as_diff(
        recv_matching(&mut events, "the join diff for alice", |ev| {
            diff_joins(ev, "alice")
        })
        .await?,
    )?;
    ensure_eq!(states_of(&diff.joins, "alice"), vec![st], "joined state");
    ensure!(
        !diff.leaves.contains_key("alice"),
        "a first track must not list alice as leaving: {diff:?}"
    );
    let metas = &diff.joins["alice"];
    ensure!(
        !metas[0].presence_ref.is_empty(),
        "a presence meta needs a presence_ref"
    );
    Ok(())
}

async fn update_replaces_state(fx: RealtimeFixture) -> CaseResult {
    let name = unique("presence-update");
    let (bob, _sub, mut events) = presence_watcher(&fx.peer, &name, "bob").await?;
    let alice = joined(&fx.realtime, &name, keyed("alice")).await?;
    let s1 = json!({"cursor": {"line": 1}});
    let s2 = json!({"cursor": {"line": 2}});
    alice.track(s1.clone()).await?;
    let first = as_diff(
        recv_matching(&mut events, "join diff of the first state", |ev| {
            diff_joins(ev, "alice")
        })
        .await?,
    )?;
    alice.track(s2.clone()).await?;
    let update = as_diff(
        recv_matching(&mut events, "the update diff", |ev| {
            diff_leaves(ev, "alice")
        })
        .await?,
    )?;
    ensure_eq!(
        states_of(&update.leaves, "alice"),
        vec![s1],
        "the state that left"
    );
    ensure_eq!(
        states_of(&update.joins, "alice"),
        vec![s2.clone()],
        "the state that joined"
    );
    ensure!(
        update.joins["alice"][0].presence_ref != first.joins["alice"][0].presence_ref,
        "a replaced state needs a new presence_ref"
    );
    ensure_eq!(
        update.leaves["alice"][0].presence_ref,
        first.joins["alice"][0].presence_ref,
        "the leave names the replaced entry"
    );
    let state = wait_for_state(&bob, "alice's updated state", |s| {
        states_of(s, "alice") == vec![s2.clone()]
    })
    .await?;
    ensure_eq!(
        state["alice"].len(),
        1,
        "one entry for alice after the update"
    );
    Ok(())
}

async fn untrack_and_leave_send_leaves(fx: RealtimeFixture) -> CaseResult {
    let name = unique("presence-leave");
    let (bob, _sub, mut events) = presence_watcher(&fx.peer, &name, "bob").await?;
    let alice = joined(&fx.realtime, &name, keyed("alice")).await?;
    let st = json!({"userName": "Alice"});

    alice.track(st.clone()).await?;
    recv_matching(&mut events, "join diff", |ev| diff_joins(ev, "alice")).await?;
    alice.untrack().await?;
    let diff = as_diff(
        recv_matching(&mut events, "leave diff after untrack", |ev| {
            diff_leaves(ev, "alice")
        })
        .await?,
    )?;
    ensure_eq!(states_of(&diff.leaves, "alice"), vec![st.clone()]);
    ensure!(alice.is_joined(), "untrack must not leave the channel");
    wait_for_state(&bob, "alice gone after untrack", |s| {
        !s.contains_key("alice")
    })
    .await?;
    alice.untrack().await?; // nothing tracked: a no-op

    alice.track(st.clone()).await?;
    recv_matching(&mut events, "join diff after tracking again", |ev| {
        diff_joins(ev, "alice")
    })
    .await?;
    alice.leave().await?;
    let diff = as_diff(
        recv_matching(&mut events, "leave diff after leave()", |ev| {
            diff_leaves(ev, "alice")
        })
        .await?,
    )?;
    ensure_eq!(states_of(&diff.leaves, "alice"), vec![st]);
    wait_for_state(&bob, "alice gone after leave", |s| !s.contains_key("alice")).await?;
    Ok(())
}

async fn dropped_handle_leaves(fx: RealtimeFixture) -> CaseResult {
    let name = unique("presence-drop");
    let (bob, _sub, mut events) = presence_watcher(&fx.peer, &name, "bob").await?;
    let alice = joined(&fx.realtime, &name, keyed("alice")).await?;
    alice.track(json!({"tab": 1})).await?;
    recv_matching(&mut events, "join diff", |ev| diff_joins(ev, "alice")).await?;
    drop(alice);
    recv_matching(&mut events, "leave diff after dropping the handle", |ev| {
        diff_leaves(ev, "alice")
    })
    .await?;
    wait_for_state(&bob, "alice gone after her handle was dropped", |s| {
        !s.contains_key("alice")
    })
    .await?;
    Ok(())
}

async fn state_lists_both_members(fx: RealtimeFixture) -> CaseResult {
    let name = unique("presence-both");
    let alice = joined(&fx.realtime, &name, keyed("alice")).await?;
    let bob = joined(&fx.peer, &name, keyed("bob")).await?;
    let sa = json!({"userName": "Alice"});
    let sb = json!({"userName": "Bob"});
    alice.track(sa.clone()).await?;
    bob.track(sb.clone()).await?;
    for (who, ch) in [("alice", &alice), ("bob", &bob)] {
        let state = wait_for_state(ch, &format!("{who}'s view of both members"), |s| {
            s.contains_key("alice") && s.contains_key("bob")
        })
        .await?;
        ensure_eq!(
            states_of(&state, "alice"),
            vec![sa.clone()],
            "{who} sees alice"
        );
        ensure_eq!(states_of(&state, "bob"), vec![sb.clone()], "{who} sees bob");
        ensure_eq!(state.len(), 2, "{who} sees exactly two keys: {state:?}");
    }
    Ok(())
}

/// The guide's collaborative editing: `trackPresence(channel, state)`.
async fn track_presence_ext(fx: RealtimeFixture) -> CaseResult {
    let name = unique("document:42");
    let (_bob, _sub, mut events) = presence_watcher(&fx.peer, &name, "bob").await?;
    let me = json!({"userId": "u-1", "userName": "Ada", "avatar": null, "cursor": null});
    let ch = fx.realtime.track_presence(&name, me.clone()).await?;
    ensure!(ch.is_joined(), "track_presence returns a joined channel");
    ensure_eq!(ch.name(), name.as_str());

    let ev = recv_matching(&mut events, "the join diff of track_presence", |ev| {
        matches!(ev, PresenceEvent::Diff(d) if d.joins.values().flatten().any(|m| m.state == me))
    })
    .await?;
    let diff = as_diff(ev)?;
    let (key, _) = diff
        .joins
        .iter()
        .find(|(_, metas)| metas.iter().any(|m| m.state == me))
        .ok_or_else(|| Failure::new("the join diff lost its entry"))?;
    ensure!(
        !key.is_empty(),
        "a generated presence key must not be empty"
    );
    ensure!(key != "bob", "the generated key must differ from bob's");
    let state = ch.presence_state().await?;
    ensure_eq!(
        states_of(&state, key),
        vec![me],
        "own state under the generated key"
    );
    Ok(())
}

async fn shared_key_multiple_metas(fx: RealtimeFixture) -> CaseResult {
    let name = unique("presence-shared");
    let tab1 = joined(&fx.realtime, &name, keyed("user-1")).await?;
    let tab2 = joined(&fx.peer, &name, keyed("user-1")).await?;
    let s1 = json!({"tab": 1});
    let s2 = json!({"tab": 2});
    tab1.track(s1.clone()).await?;
    tab2.track(s2.clone()).await?;
    let state = wait_for_state(&tab1, "two entries under one key", |s| {
        s.get("user-1").is_some_and(|m| m.len() == 2)
    })
    .await?;
    ensure_eq!(states_of(&state, "user-1"), vec![s1.clone(), s2]);
    let refs: Vec<&str> = state["user-1"]
        .iter()
        .map(|m| m.presence_ref.as_str())
        .collect();
    ensure!(
        refs[0] != refs[1],
        "each entry has its own presence_ref: {refs:?}"
    );

    tab2.untrack().await?;
    wait_for_state(&tab1, "one entry left after untrack", |s| {
        states_of(s, "user-1") == vec![s1.clone()]
    })
    .await?;
    Ok(())
}

async fn track_requires_join(fx: RealtimeFixture) -> CaseResult {
    let name = unique("presence-not-joined");
    let ch = fx.realtime.channel(&name, keyed("alice")).await?;
    expect_kind(
        ch.track(json!({"x": 1})).await,
        ErrorKind::InvalidInput,
        "track before join",
    )?;
    ch.join().await?;
    ch.track(json!({"x": 1})).await?;
    ch.leave().await?;
    expect_kind(
        ch.track(json!({"x": 2})).await,
        ErrorKind::InvalidInput,
        "track after leave",
    )
}

// ---------------------------------------------------------------- rows

/// The guide's agent status monitoring: `subscribeToRow('agents', id, ...)`.
async fn subscribe_to_row_changes(fx: RealtimeFixture) -> CaseResult {
    let db = require_db(&fx)?;
    let table = items_table(&db).await?;
    let (h, mut rx) = collector::<RowChange>();
    let sub = fx.realtime.subscribe_to_row(&table, json!("a"), h).await?;

    db.create(&table, row(json!({"id": "a", "status": "active", "n": 1})))
        .await?;
    db.create(&table, row(json!({"id": "b", "status": "active", "n": 10})))
        .await?;
    db.update(&table, &json!("b"), row(json!({"n": 11})))
        .await?;
    db.update(&table, &json!("a"), row(json!({"n": 2}))).await?;
    db.delete(&table, &json!("b")).await?;
    db.delete(&table, &json!("a")).await?;

    let c = recv_within(&mut rx, "INSERT of a").await?;
    check_change(&c, &table, ChangeKind::Insert, "a", None, Some(1))?;
    let c = recv_within(&mut rx, "UPDATE of a").await?;
    check_change(&c, &table, ChangeKind::Update, "a", Some(1), Some(2))?;
    ensure_eq!(
        c.new.as_ref().and_then(|r| r.get("status")),
        Some(&json!("active")),
        "the new row is whole, not just the patch"
    );
    let c = recv_within(&mut rx, "DELETE of a").await?;
    check_change(&c, &table, ChangeKind::Delete, "a", Some(2), None)?;
    expect_nothing(&mut rx, "changes of other rows").await?;
    drop(sub);
    let _ = db.drop_table(&table, true).await;
    Ok(())
}

async fn table_subscription_event_filter(fx: RealtimeFixture) -> CaseResult {
    let db = require_db(&fx)?;
    let table = items_table(&db).await?;
    let (h, mut updates) = collector::<RowChange>();
    let _updates = fx
        .realtime
        .subscribe_changes(ChangeSpec::table(&table).event(ChangeKind::Update), h)
        .await?;
    let (h, mut all) = collector::<RowChange>();
    let _all = fx
        .realtime
        .subscribe_changes(ChangeSpec::table(&table), h)
        .await?;

    db.create(&table, row(json!({"id": "a", "status": "new", "n": 1})))
        .await?;
    db.update(&table, &json!("a"), row(json!({"n": 2}))).await?;
    db.delete(&table, &json!("a")).await?;

    let c = recv_within(&mut updates, "the UPDATE").await?;
    check_change(&c, &table, ChangeKind::Update, "a", Some(1), Some(2))?;
    expect_nothing(
        &mut updates,
        "INSERT or DELETE at an UPDATE-only subscription",
    )
    .await?;
    let kinds = [
        recv_within(&mut all, "change 1 of 3").await?.kind,
        recv_within(&mut all, "change 2 of 3").await?.kind,
        recv_within(&mut all, "change 3 of 3").await?.kind,
    ];
    ensure_eq!(
        kinds,
        [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete],
        "a table subscription gets every change, in commit order"
    );
    let _ = db.drop_table(&table, true).await;
    Ok(())
}

async fn filter_subscription(fx: RealtimeFixture) -> CaseResult {
    let db = require_db(&fx)?;
    let table = items_table(&db).await?;
    let (h, mut rx) = collector::<RowChange>();
    let _sub = fx
        .realtime
        .subscribe_changes(
            ChangeSpec::table(&table).filter(col("status").eq("active")),
            h,
        )
        .await?;

    db.create(&table, row(json!({"id": "a", "status": "active", "n": 1})))
        .await?; // matches
    db.create(&table, row(json!({"id": "b", "status": "idle", "n": 1})))
        .await?; // does not
    db.update(
        &table,
        &json!("b"),
        row(json!({"status": "active", "n": 2})),
    )
    .await?; // new row matches
    db.update(&table, &json!("a"), row(json!({"status": "idle", "n": 2})))
        .await?; // new row does not
    db.delete(&table, &json!("b")).await?; // old row matches
    db.delete(&table, &json!("a")).await?; // old row does not

    let c = recv_within(&mut rx, "INSERT of the active row a").await?;
    check_change(&c, &table, ChangeKind::Insert, "a", None, Some(1))?;
    let c = recv_within(&mut rx, "UPDATE of b to active").await?;
    check_change(&c, &table, ChangeKind::Update, "b", Some(1), Some(2))?;
    let c = recv_within(&mut rx, "DELETE of the active row b").await?;
    check_change(&c, &table, ChangeKind::Delete, "b", Some(2), None)?;
    expect_nothing(&mut rx, "changes whose row does not match the filter").await?;
    let _ = db.drop_table(&table, true).await;
    Ok(())
}

async fn unsubscribe_stops_row_events(fx: RealtimeFixture) -> CaseResult {
    let db = require_db(&fx)?;
    let table = items_table(&db).await?;
    let (h, mut rx) = collector::<RowChange>();
    let sub = fx
        .realtime
        .subscribe_changes(ChangeSpec::table(&table), h)
        .await?;
    let (h, mut kept) = collector::<RowChange>();
    let _kept = fx
        .realtime
        .subscribe_changes(ChangeSpec::table(&table), h)
        .await?;

    db.create(&table, row(json!({"id": "a", "status": "x", "n": 1})))
        .await?;
    recv_within(&mut rx, "INSERT while subscribed").await?;
    recv_within(&mut kept, "INSERT at the other subscription").await?;
    sub.unsubscribe();
    db.update(&table, &json!("a"), row(json!({"n": 2}))).await?;
    let c = recv_within(&mut kept, "UPDATE at the subscription still active").await?;
    check_change(&c, &table, ChangeKind::Update, "a", Some(1), Some(2))?;
    expect_nothing(&mut rx, "a change after unsubscribe()").await?;
    let _ = db.drop_table(&table, true).await;
    Ok(())
}

async fn invalid_spec_rejected(fx: RealtimeFixture) -> CaseResult {
    let (h, _rx) = collector::<RowChange>();
    expect_kind(
        fx.realtime
            .subscribe_changes(ChangeSpec::table("items; DROP TABLE items"), h.clone())
            .await,
        ErrorKind::InvalidInput,
        "a table name that is not an identifier",
    )?;
    expect_kind(
        fx.realtime
            .subscribe_changes(
                ChangeSpec::table("items").filter(col("bad column").eq(1)),
                h,
            )
            .await,
        ErrorKind::InvalidInput,
        "a filter on a column name that is not an identifier",
    )
}

// ---------------------------------------------------------------- edge

async fn many_members_receive_broadcast(fx: RealtimeFixture) -> CaseResult {
    const MEMBERS: usize = 100;
    let name = unique("crowd");
    let (tx, mut rx) = unbounded_channel::<usize>();
    let mut handles = Vec::with_capacity(MEMBERS);
    let mut subs = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let rt = if i % 2 == 0 { &fx.realtime } else { &fx.peer };
        let ch = rt.channel(&name, ChannelOptions::default()).await?;
        let tx = tx.clone();
        subs.push(ch.on(
            "announce",
            handler(move |_m: Message| {
                let _ = tx.send(i);
            }),
        ));
        ch.join().await?;
        handles.push(ch);
    }
    drop(tx);
    let sender = joined(&fx.realtime, &name, ChannelOptions::default()).await?;
    sender.send("announce", json!({"to": "everyone"})).await?;
    let mut seen = [false; MEMBERS];
    for n in 0..MEMBERS {
        let i = recv_within(&mut rx, &format!("delivery {n} of {MEMBERS}")).await?;
        ensure!(!seen[i], "member {i} got the broadcast twice");
        seen[i] = true;
    }
    expect_nothing(&mut rx, "more deliveries than members").await
}

// ---------------------------------------------------------------- health

async fn health_healthy(fx: RealtimeFixture) -> CaseResult {
    for (who, rt) in [("realtime", &fx.realtime), ("peer", &fx.peer)] {
        let h = rt.health().await;
        ensure!(h.is_healthy(), "{who}: expected healthy, got {h:?}");
        ensure!(
            !rt.info().name.is_empty(),
            "{who}: provider info has no name"
        );
    }
    Ok(())
}
