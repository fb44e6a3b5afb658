//! The timeout layer: one limit per access kind, `Timeout` on expiry, never
//! marked unapplied.

#![allow(clippy::unwrap_used)] // test helpers, not library code
mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::{agent, agents, memory_db, stacked, Act, Fault};
use tokio::time::Instant;
use truststream_core::{Error, ErrorKind, Result};
use truststream_core_db::{ColumnDef, Database, TableSchema};
use truststream_layer::Access;
use truststream_layer_resilience::{Timeout, TimeoutConfig};

fn config() -> TimeoutConfig {
    TimeoutConfig {
        read_ms: 100,
        write_ms: 200,
        schema_ms: 300,
        stream_ms: 400,
        admin_ms: 500,
    }
}

/// Each call kind against its own limit.
async fn call(db: &Arc<dyn Database>, access: Access) -> Result<()> {
    match access {
        Access::Read => db.get("agents", &json!("a")).await.map(drop),
        Access::Write => db.create("agents", agent("w", "W")).await.map(drop),
        Access::Schema => db
            .create_table(&TableSchema::new("more").column(ColumnDef::text("id").primary_key()))
            .await
            .map(drop),
        Access::Stream => db.subscribe_changes(Some("agents")).await.map(drop),
        Access::Admin => db.connect().await,
    }
}

fn method(access: Access) -> &'static str {
    match access {
        Access::Read => "get",
        Access::Write => "create",
        Access::Schema => "create_table",
        Access::Stream => "subscribe_changes",
        Access::Admin => "connect",
    }
}

#[tokio::test(start_paused = true)]
async fn each_access_kind_has_its_own_limit() {
    let timeout = Timeout::new(config());
    for (access, ms) in [
        (Access::Read, 100),
        (Access::Write, 200),
        (Access::Schema, 300),
        (Access::Stream, 400),
        (Access::Admin, 500),
    ] {
        assert_eq!(timeout.limit(access), Duration::from_millis(ms));
        let db = memory_db().await;

        // Just within the limit: the call goes through.
        let within = Duration::from_millis(ms - 1);
        let fault = Fault::new(move |_, _| Act::Slow(within));
        let layered = stacked(&db, &fault, Arc::new(Timeout::new(config())));
        let started = Instant::now();
        call(&layered, access).await.unwrap();
        assert_eq!(started.elapsed(), within, "{access:?}");
        if access == Access::Schema {
            db.drop_table("more", false).await.unwrap();
        }
        if access == Access::Write {
            db.delete("agents", &json!("w")).await.unwrap();
        }

        // Just past it: Timeout at the limit, naming the call.
        let past = Duration::from_millis(ms + 1);
        let fault = Fault::new(move |_, _| Act::Slow(past));
        let layered = stacked(&db, &fault, Arc::new(Timeout::new(config())));
        let started = Instant::now();
        let e = call(&layered, access).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(ms), "{access:?}");
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert_eq!(e.operation(), Some(method(access)));
        assert!(e.message().contains(&format!("within {ms} ms")), "{e}");
        assert!(
            e.message()
                .contains(&format!("({} timeout)", access.as_str())),
            "{e}"
        );
        // The outcome is unknown: retryable, never unapplied.
        assert!(e.is_retryable());
        assert!(!e.is_unapplied());
        // The call was cut off before it reached the provider here.
        assert_eq!(fault.reached(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn the_error_names_the_table_and_values_pass_through() {
    let db = memory_db().await;
    let fault = Fault::new(|n, _| {
        if n == 2 {
            Act::Slow(Duration::from_secs(60))
        } else {
            Act::Pass
        }
    });
    let layered = stacked(&db, &fault, Arc::new(Timeout::new(config())));
    let stored = layered.create("agents", agent("a", "Ada")).await.unwrap();
    assert_eq!(stored["name"], "Ada");
    let e = layered.get("agents", &json!("a")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(
        e.context().contains(&("table", "agents".to_string())),
        "{e}"
    );
    assert_eq!(
        layered.get("agents", &json!("a")).await.unwrap().unwrap()["name"],
        "Ada"
    );
    // An error below the timeout comes back unchanged.
    let fault = Fault::always(|| Error::conflict("taken"));
    let layered = stacked(&db, &fault, Arc::new(Timeout::new(config())));
    let e = layered.create("agents", agent("b", "B")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.message(), "taken");
    assert_eq!(agents(&db).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_write_may_still_have_happened() {
    // The provider finishes the write, then the answer is late: the caller
    // sees Timeout (not unapplied), and the row is there.
    struct LateAnswer;
    impl truststream_layer::Around for LateAnswer {
        fn around<'a>(
            &'a self,
            _op: truststream_layer::Op<'a>,
            next: truststream_layer::Next<'a>,
        ) -> truststream_core::BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                next.run().await?;
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
        }
    }
    let db = memory_db().await;
    let layered = truststream_layer::around_database(
        truststream_layer::around_database(Arc::clone(&db), Arc::new(LateAnswer)),
        Arc::new(Timeout::new(config())),
    );
    let e = layered
        .create("agents", agent("late", "L"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(!e.is_unapplied());
    assert_eq!(agents(&db).await.len(), 1);
}
