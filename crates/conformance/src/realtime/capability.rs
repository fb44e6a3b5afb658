//! Capabilities that tell the truth: one case per flag that gates a call.
//!
//! Each case makes the call the flag is about. A provider that reports the
//! flag `true` must serve it; one that reports `false` must answer
//! [`ErrorKind::Unsupported`] and deliver nothing. The cases run whatever the
//! flag says. `remote` gates no call (it says where members may be), and
//! `max_payload_bytes` is checked by `broadcast.payload_over_limit_too_large`.

use serde_json::json;
use truststream_core::ErrorKind;
use truststream_core_realtime::{ChangeSpec, ChannelOptions, Message, PresenceEvent, RowChange};

use super::{
    collector, expect_nothing, items_table, joined, keyed, recv_within, require_db, row, states_of,
    unique, RealtimeFixture,
};
use crate::{ensure, ensure_eq, expect_kind, CaseResult};

/// `send` reaches the other member, or is `Unsupported` and reaches nobody.
pub(super) async fn broadcast(fx: RealtimeFixture) -> CaseResult {
    let name = unique("cap-broadcast");
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut rx) = collector::<Message>();
    let _on = member.on("*", h);
    let sender = joined(&fx.realtime, &name, ChannelOptions::default()).await?;
    let r = sender.send("hello", json!({"n": 1})).await;
    if fx.realtime.capabilities().broadcast {
        r?;
        let got = recv_within(&mut rx, "a broadcast").await?;
        ensure_eq!(got.payload, json!({"n": 1}));
    } else {
        expect_kind(r, ErrorKind::Unsupported, "send without broadcast")?;
        expect_nothing(&mut rx, "a refused broadcast").await?;
    }
    Ok(())
}

/// A send with `ack` is acknowledged, or is `Unsupported` and reaches
/// nobody.
pub(super) async fn ack(fx: RealtimeFixture) -> CaseResult {
    let caps = fx.realtime.capabilities();
    if !caps.broadcast {
        // Without broadcast every send is refused; `broadcast` covers it.
        return Ok(());
    }
    let name = unique("cap-ack");
    let member = joined(&fx.peer, &name, ChannelOptions::default()).await?;
    let (h, mut rx) = collector::<Message>();
    let _on = member.on("*", h);
    let sender = joined(&fx.realtime, &name, ChannelOptions::new().ack(true)).await?;
    let r = sender.send("acked", json!({"n": 2})).await;
    if caps.ack {
        r?;
        let got = recv_within(&mut rx, "an acknowledged broadcast").await?;
        ensure_eq!(got.payload, json!({"n": 2}));
    } else {
        expect_kind(r, ErrorKind::Unsupported, "an acked send without ack")?;
        expect_nothing(&mut rx, "a refused acked broadcast").await?;
    }
    Ok(())
}

/// `track` shows in the presence state, or is `Unsupported` and shows
/// nowhere.
pub(super) async fn presence(fx: RealtimeFixture) -> CaseResult {
    let name = unique("cap-presence");
    let watcher = joined(&fx.peer, &name, keyed("watcher")).await?;
    let (h, mut events) = collector::<PresenceEvent>();
    let _p = watcher.on_presence(h);
    let member = joined(&fx.realtime, &name, keyed("tracked")).await?;
    let r = member.track(json!({"status": "online"})).await;
    if fx.realtime.capabilities().presence {
        r?;
        let mut found = false;
        for _ in 0..50 {
            let state = member.presence_state().await?;
            if states_of(&state, "tracked") == [json!({"status": "online"})] {
                found = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        ensure!(found, "the tracked state shows in presence_state");
    } else {
        expect_kind(r, ErrorKind::Unsupported, "track without presence")?;
        expect_nothing(&mut events, "presence events of a refused track").await?;
    }
    Ok(())
}

/// A row subscription delivers changes, or is `Unsupported`.
pub(super) async fn row_changes(fx: RealtimeFixture) -> CaseResult {
    if !fx.realtime.capabilities().row_changes {
        let (h, _rx) = collector::<RowChange>();
        return expect_kind(
            fx.realtime
                .subscribe_changes(ChangeSpec::table("cap_rows"), h)
                .await,
            ErrorKind::Unsupported,
            "subscribe_changes without row_changes",
        );
    }
    let db = require_db(&fx)?;
    let table = items_table(&db).await?;
    let (h, mut rx) = collector::<RowChange>();
    let sub = fx
        .realtime
        .subscribe_changes(ChangeSpec::table(&table), h)
        .await?;
    db.create(&table, row(json!({"id": "a", "status": "new", "n": 1})))
        .await?;
    let c = recv_within(&mut rx, "the INSERT").await?;
    ensure_eq!(c.table, table);
    drop(sub);
    let _ = db.drop_table(&table, true).await;
    Ok(())
}
