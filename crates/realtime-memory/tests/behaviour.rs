//! What the conformance suite cannot see from outside: bounded member
//! queues, channel and task cleanup, the change feed's health, configuration.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use truststream_core::{ErrorKind, HealthStatus};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_core_realtime::{
    handler, ChangeSpec, Channel, ChannelOptions, Message, PresenceEvent, Realtime, RealtimeDeps,
    RealtimeRegistry, RowChange, Subscription,
};
use truststream_db_memory::{MemoryConfig, MemoryDatabase};
use truststream_realtime_memory::{register, MemoryRealtime, MemoryRealtimeConfig};

const WAIT: Duration = Duration::from_secs(5);

fn collector<T: Send + 'static>() -> (truststream_core_realtime::Handler<T>, UnboundedReceiver<T>) {
    let (tx, rx) = unbounded_channel();
    (
        handler(move |v: T| {
            let _ = tx.send(v);
        }),
        rx,
    )
}

async fn recv<T>(rx: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a delivery within 5 s")
        .expect("the handler is alive")
}

/// Polls `cond` until it holds or 5 s pass.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn small_queues(capacity: usize) -> MemoryRealtime {
    MemoryRealtime::from_config(
        MemoryRealtimeConfig {
            member_queue_capacity: capacity,
            ..MemoryRealtimeConfig::default()
        },
        None,
    )
    .expect("valid config")
}

async fn joined(rt: &MemoryRealtime, name: &str, options: ChannelOptions) -> Arc<dyn Channel> {
    let ch = rt.channel(name, options).await.expect("channel");
    ch.join().await.expect("join");
    ch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_member_is_dropped_and_its_queue_stays_bounded() {
    const CAP: usize = 8;
    let rt = small_queues(CAP);

    // The slow member's handler blocks on its first message until released.
    let (entered_tx, mut entered) = unbounded_channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let slow_calls = Arc::new(AtomicUsize::new(0));
    let calls = slow_calls.clone();
    let slow = rt
        .channel("busy", ChannelOptions::new().presence_key("slow"))
        .await
        .expect("channel");
    let _slow_on = slow.on(
        "*",
        handler(move |_m: Message| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = entered_tx.send(());
                let _ = release_rx.lock().expect("lock").recv();
            }
        }),
    );
    slow.join().await.expect("join");
    slow.track(json!({"speed": "slow"})).await.expect("track");

    let fast = rt
        .channel("busy", ChannelOptions::new().presence_key("fast"))
        .await
        .expect("channel");
    let (h, mut fast_msgs) = collector::<Message>();
    let _fast_on = fast.on("*", h);
    let (h, mut fast_presence) = collector::<PresenceEvent>();
    let _fast_presence = fast.on_presence(h);
    fast.join().await.expect("join");

    // The fast member keeps up (lockstep here: its queue is small too, and a
    // burst larger than a queue would drop any member).
    let sender = joined(&rt, "busy", ChannelOptions::default()).await;
    for i in 0..CAP + 200 {
        sender
            .send("m", json!(i))
            .await
            .expect("sends never fail or wait");
        if i == 0 {
            recv(&mut entered).await; // the slow handler now holds message 0
        }
        assert_eq!(recv(&mut fast_msgs).await.payload, json!(i));
        if i == CAP {
            // Messages 1..=CAP fill the slow member's queue exactly.
            assert!(slow.is_joined(), "a full queue of {CAP} is within bounds");
        }
        if i == CAP + 1 {
            assert!(
                !slow.is_joined(),
                "one more than the queue holds drops the member"
            );
        }
    }

    let err = slow
        .send("m", json!("late"))
        .await
        .expect_err("dropped member cannot send");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("member_queue_capacity"),
        "the error says why: {err}"
    );

    // The fast member saw the slow member's presence leave.
    loop {
        if let PresenceEvent::Diff(d) = recv(&mut fast_presence).await {
            if d.leaves.contains_key("slow") {
                break;
            }
        }
    }
    let state = sender.presence_state().await.expect("state");
    assert!(!state.contains_key("slow"), "{state:?}");

    // Released, the slow handler gets nothing of what was queued for it.
    release_tx.send(()).expect("release");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(slow_calls.load(Ordering::SeqCst), 1);

    // It may join again.
    slow.join().await.expect("rejoin");
    assert!(slow.is_joined());
    sender.send("m", json!("again")).await.expect("send");
    eventually("the rejoined member gets messages", || {
        slow_calls.load(Ordering::SeqCst) == 2
    })
    .await;
}

#[tokio::test]
async fn channel_entries_are_removed_with_their_last_handle() {
    let rt = MemoryRealtime::new();
    assert_eq!(rt.channel_count(), 0);
    let a = rt.channel("x", ChannelOptions::default()).await.expect("a");
    let b = joined(&rt, "x", ChannelOptions::default()).await;
    b.track(json!({"here": true})).await.expect("track");
    let c = rt.channel("y", ChannelOptions::default()).await.expect("c");
    let sub = c.on("*", handler(|_m: Message| {}));
    assert_eq!(rt.channel_count(), 2);
    drop(a);
    assert_eq!(rt.channel_count(), 2, "b still holds x");
    drop(b);
    assert_eq!(rt.channel_count(), 1);
    drop(c);
    assert_eq!(
        rt.channel_count(),
        0,
        "a live Subscription does not keep a channel"
    );
    drop(sub);

    // A name used again gets a fresh channel.
    let d = joined(&rt, "x", ChannelOptions::default()).await;
    assert!(d.presence_state().await.expect("state").is_empty());
    assert_eq!(rt.channel_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_tasks_end_on_leave() {
    let rt = MemoryRealtime::new();
    let gauge = rt.task_gauge();
    let a = joined(&rt, "t", ChannelOptions::default()).await;
    let b = joined(&rt, "t", ChannelOptions::default()).await;
    assert_eq!(gauge.load(Ordering::SeqCst), 2);
    a.leave().await.expect("leave");
    drop(b);
    eventually("member tasks end", || gauge.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_end_when_the_hub_is_dropped() {
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let rt = MemoryRealtime::with_change_feed(db.clone());
    let gauge = rt.task_gauge();
    let (h, _rows) = collector::<RowChange>();
    let row_sub = rt
        .subscribe_changes(ChangeSpec::table("items"), h)
        .await
        .expect("subscribe");
    let survivor = joined(&rt, "c", ChannelOptions::default()).await;
    let _other = joined(&rt, "c", ChannelOptions::default()).await;
    let _third = joined(&rt, "d", ChannelOptions::default()).await;
    assert_eq!(
        gauge.load(Ordering::SeqCst),
        4,
        "3 members + the feed reader"
    );

    drop(rt);
    eventually("every task ends after the hub is dropped", || {
        gauge.load(Ordering::SeqCst) == 0
    })
    .await;

    // Handles that outlive the hub say so instead of pretending.
    assert!(!survivor.is_joined());
    let e = survivor.join().await.expect_err("join after shutdown");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let e = survivor
        .send("x", json!(1))
        .await
        .expect_err("send after shutdown");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    survivor.leave().await.expect("leave is always fine");
    drop(row_sub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_degrades_when_the_change_feed_lags() {
    let db = Arc::new(MemoryDatabase::with_config(MemoryConfig {
        change_feed_capacity: 1,
        ..MemoryConfig::default()
    }));
    db.create_table(
        &TableSchema::new("items")
            .column(ColumnDef::integer("id").primary_key())
            .column(ColumnDef::text("v")),
    )
    .await
    .expect("table");
    let rt = MemoryRealtime::with_change_feed(db.clone());
    assert!(rt.health().await.is_healthy());

    // A row handler that blocks the feed reader on the first change.
    let (entered_tx, mut entered) = unbounded_channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let _sub = rt
        .subscribe_changes(
            ChangeSpec::table("items"),
            handler(move |_c: RowChange| {
                if count.fetch_add(1, Ordering::SeqCst) == 0 {
                    let _ = entered_tx.send(());
                    let _ = release_rx.lock().expect("lock").recv();
                }
            }),
        )
        .await
        .expect("subscribe");

    for id in 0..10 {
        let row = json!({"id": id, "v": "x"})
            .as_object()
            .cloned()
            .expect("object");
        db.create("items", row).await.expect("insert");
        if id == 0 {
            recv(&mut entered).await;
        }
    }
    release_tx.send(()).expect("release");
    let mut status = rt.health().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while status.status != HealthStatus::Degraded && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = rt.health().await;
    }
    assert_eq!(status.status, HealthStatus::Degraded, "{status:?}");
    let message = status.message.expect("a reason");
    assert!(message.contains("change feed"), "{message}");

    // The reader keeps going after the loss.
    let row = json!({"id": 100, "v": "after"})
        .as_object()
        .cloned()
        .expect("object");
    let before = seen.load(Ordering::SeqCst);
    db.create("items", row).await.expect("insert");
    eventually("changes after the lag are delivered", || {
        seen.load(Ordering::SeqCst) > before
    })
    .await;
}

#[tokio::test]
async fn row_changes_need_a_change_feed() {
    let rt = MemoryRealtime::new();
    assert!(!rt.capabilities().row_changes);
    let (h, _rx) = collector::<RowChange>();
    let e = rt
        .subscribe_changes(ChangeSpec::table("items"), h)
        .await
        .expect_err("no feed");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("with_change_feed"), "{e}");

    let wired = MemoryRealtime::with_change_feed(Arc::new(MemoryDatabase::new()));
    let caps = wired.capabilities();
    assert!(caps.row_changes && caps.broadcast && caps.presence && caps.ack && !caps.remote);
    assert_eq!(caps.max_payload_bytes, Some(256 * 1024));
}

#[tokio::test]
async fn registry_builds_from_config_and_deps() {
    let mut reg = RealtimeRegistry::new("realtime");
    register(&mut reg);
    assert_eq!(reg.names(), ["memory"]);
    let no_deps = || RealtimeDeps {
        db: None,
        auth: None,
    };

    let rt = reg
        .build("memory", json!({"max_payload_bytes": 1000}), no_deps())
        .await
        .expect("build");
    assert_eq!(rt.info().name, "memory");
    assert_eq!(rt.capabilities().max_payload_bytes, Some(1000));
    assert!(!rt.capabilities().row_changes);

    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let rt = reg
        .build(
            "memory",
            serde_json::Value::Null,
            RealtimeDeps {
                db: Some(db),
                auth: None,
            },
        )
        .await
        .expect("build with db");
    assert!(
        rt.capabilities().row_changes,
        "the runtime's database is wired"
    );

    for bad in [
        json!({"member_queue_capacity": 0}),
        json!({"max_payload_bytes": 0}),
        json!({"queue": 5}),
        json!({"max_payload_bytes": "big"}),
    ] {
        let e = reg
            .build("memory", bad.clone(), no_deps())
            .await
            .map(|_| ())
            .expect_err("invalid config");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}: {e}");
    }
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let rt = MemoryRealtime::from_config(
        MemoryRealtimeConfig {
            max_payload_bytes: 64,
            ..MemoryRealtimeConfig::default()
        },
        None,
    )
    .expect("config");
    let ch = rt
        .channel("c", ChannelOptions::default())
        .await
        .expect("channel");

    let e = ch.presence_state().await.expect_err("not joined");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("join"), "{e}");
    ch.untrack().await.expect("untrack without join is a no-op");

    ch.join().await.expect("join");
    for bad in ["", "*", "a\nb", &"e".repeat(256)] {
        let e = ch.send(bad, json!(1)).await.expect_err("bad event");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    let e = ch
        .track(json!({"blob": "x".repeat(100)}))
        .await
        .expect_err("state too large");
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert!(e.to_string().contains("64 bytes"), "{e}");
    // A huge payload is refused without serializing all of it.
    let e = ch
        .send("big", json!("y".repeat(50 * 1024 * 1024)))
        .await
        .expect_err("payload too large");
    assert_eq!(e.kind(), ErrorKind::TooLarge);

    for key in ["k\u{1}", &"k".repeat(256)] {
        let e = rt
            .channel("c", ChannelOptions::new().presence_key(key))
            .await
            .map(|_| ())
            .expect_err("bad presence key");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}

#[test]
fn join_outside_a_runtime_is_unavailable_not_a_panic() {
    let rt = MemoryRealtime::new();
    let ch = futures::executor::block_on(rt.channel("c", ChannelOptions::default()))
        .expect("a handle needs no runtime");
    let e = futures::executor::block_on(ch.join()).expect_err("no runtime");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.to_string().contains("tokio"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_does_not_stop_delivery() {
    let rt = MemoryRealtime::new();
    let member = rt
        .channel("p", ChannelOptions::default())
        .await
        .expect("ch");
    let _bad = member.on(
        "*",
        handler(|_m: Message| panic!("handler bug (expected by this test)")),
    );
    let (h, mut rx) = collector::<Message>();
    let _good = member.on("*", h);
    member.join().await.expect("join");
    let sender = joined(&rt, "p", ChannelOptions::default()).await;
    for i in 0..3 {
        sender.send("e", json!(i)).await.expect("send");
    }
    for i in 0..3 {
        assert_eq!(recv(&mut rx).await.payload, json!(i));
    }
    assert!(member.is_joined());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_may_unsubscribe_themselves() {
    let rt = MemoryRealtime::new();
    let member = rt
        .channel("u", ChannelOptions::default())
        .await
        .expect("ch");
    let slot: Arc<Mutex<Option<Subscription>>> = Arc::new(Mutex::new(None));
    let calls = Arc::new(AtomicUsize::new(0));
    let (s, c) = (slot.clone(), calls.clone());
    let sub = member.on(
        "*",
        handler(move |_m: Message| {
            c.fetch_add(1, Ordering::SeqCst);
            // Dropping our own subscription from inside the handler.
            drop(s.lock().expect("lock").take());
        }),
    );
    *slot.lock().expect("lock") = Some(sub);
    let (h, mut rx) = collector::<Message>();
    let _witness = member.on("*", h);
    member.join().await.expect("join");
    let sender = joined(&rt, "u", ChannelOptions::default()).await;
    sender.send("e", json!(1)).await.expect("send");
    sender.send("e", json!(2)).await.expect("send");
    recv(&mut rx).await;
    recv(&mut rx).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "unsubscribed after the first call"
    );
}

/// A database that only has a change feed, scripted by the test: each
/// `subscribe_changes` takes the next entry (a stream fed by the test, or an
/// error).
mod scripted {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::sync::mpsc::UnboundedReceiver;
    use truststream_core::{Error, Health, ProviderInfo};
    use truststream_core_db::{
        AlterTable, ChangeStream, Database, DbCapabilities, DbResult, Filter, IndexSpec, Operation,
        OperationOutput, Params, Query, Row, RowChange, TableSchema, Value,
    };

    pub type Feed = UnboundedReceiver<DbResult<RowChange>>;

    pub struct ScriptedDb {
        pub script: Mutex<VecDeque<DbResult<Feed>>>,
    }

    fn no<T>() -> DbResult<T> {
        Err(Error::unsupported(
            "scripted test database: change feed only",
        ))
    }

    #[async_trait]
    impl Database for ScriptedDb {
        fn info(&self) -> ProviderInfo {
            ProviderInfo {
                name: "scripted",
                version: "0",
            }
        }
        fn capabilities(&self) -> DbCapabilities {
            let mut c = DbCapabilities::none();
            c.change_feed = true;
            c
        }
        async fn health(&self) -> Health {
            Health::healthy(std::time::Duration::ZERO)
        }
        async fn connect(&self) -> DbResult<()> {
            Ok(())
        }
        async fn disconnect(&self) -> DbResult<()> {
            Ok(())
        }
        async fn create(&self, _: &str, _: Row) -> DbResult<Row> {
            no()
        }
        async fn read(&self, _: &str, _: &Query) -> DbResult<Vec<Row>> {
            no()
        }
        async fn get(&self, _: &str, _: &Value) -> DbResult<Option<Row>> {
            no()
        }
        async fn update(&self, _: &str, _: &Value, _: Row) -> DbResult<Row> {
            no()
        }
        async fn delete(&self, _: &str, _: &Value) -> DbResult<bool> {
            no()
        }
        async fn create_many(&self, _: &str, _: Vec<Row>) -> DbResult<Vec<Row>> {
            no()
        }
        async fn update_many(&self, _: &str, _: &Filter, _: Row) -> DbResult<u64> {
            no()
        }
        async fn delete_many(&self, _: &str, _: &Filter) -> DbResult<u64> {
            no()
        }
        async fn raw_query(&self, _: &str, _: &Params) -> DbResult<Vec<Row>> {
            no()
        }
        async fn transaction(&self, _: Vec<Operation>) -> DbResult<Vec<OperationOutput>> {
            no()
        }
        async fn create_table(&self, _: &TableSchema) -> DbResult<()> {
            no()
        }
        async fn drop_table(&self, _: &str, _: bool) -> DbResult<()> {
            no()
        }
        async fn alter_table(&self, _: &str, _: &[AlterTable]) -> DbResult<()> {
            no()
        }
        async fn create_index(&self, _: &IndexSpec) -> DbResult<()> {
            no()
        }
        async fn subscribe_changes(&self, _: Option<&str>) -> DbResult<ChangeStream> {
            let next = self
                .script
                .lock()
                .map_err(|_| Error::internal("poisoned"))?
                .pop_front()
                .unwrap_or_else(|| Err(Error::unavailable("script exhausted")));
            let rx = next?;
            Ok(ChangeStream::new(futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
            )))
        }
    }
}

fn change(id: i64) -> RowChange {
    RowChange {
        table: "items".into(),
        kind: truststream_core_db::ChangeKind::Insert,
        key: json!(id),
        old: None,
        new: json!({"id": id}).as_object().cloned(),
        committed_at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_feed_is_resubscribed() {
    let (tx1, rx1) = unbounded_channel();
    let (tx2, rx2) = unbounded_channel();
    let db = Arc::new(scripted::ScriptedDb {
        script: Mutex::new(
            [
                Ok(rx1),
                Err(truststream_core::Error::unavailable("database restarting")),
                Ok(rx2),
            ]
            .into_iter()
            .collect(),
        ),
    });
    let rt = MemoryRealtime::with_change_feed(db);
    let (h, mut rows) = collector::<RowChange>();
    let _sub = rt
        .subscribe_changes(ChangeSpec::table("items").key(2), h)
        .await
        .expect("subscribe");

    tx1.send(Ok(change(1))).expect("feed 1");
    tx1.send(Ok(change(2))).expect("feed 1");
    assert_eq!(
        recv(&mut rows).await.key,
        json!(2),
        "only the subscribed key"
    );
    tx1.send(Err(truststream_core::Error::unavailable("lost 3 changes")))
        .expect("feed 1");
    drop(tx1); // the feed ends

    eventually("health reports the disconnection", || {
        futures::executor::block_on(rt.health())
            .message
            .is_some_and(|m| m.contains("disconnected"))
    })
    .await;
    let health = rt.health().await;
    assert_eq!(health.status, HealthStatus::Degraded);

    // After one failed attempt the reader is back on the second stream.
    eventually("the feed reconnects", || {
        futures::executor::block_on(rt.health())
            .message
            .is_some_and(|m| !m.contains("disconnected"))
    })
    .await;
    tx2.send(Ok(change(2))).expect("feed 2");
    assert_eq!(recv(&mut rows).await.key, json!(2));
    let h = rt.health().await;
    assert_eq!(h.status, HealthStatus::Degraded, "recent losses still show");
    let message = h.message.expect("message");
    assert!(message.contains("re-subscribing"), "{message}");
}
