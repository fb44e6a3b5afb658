//! The four layers built from configuration through `register` and
//! `LayerRegistry::stack`: bad settings are named, and a whole stack runs.

#![allow(clippy::unwrap_used)] // test helpers, not library code
mod support;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use support::{agent, memory_db};
use truststream_core::{Error, ErrorKind};
use truststream_core_realtime::{ChannelOptions, Realtime};
use truststream_core_storage::{Storage, UploadOptions};
use truststream_layer::{Interface, LayerDeps, LayerRegistry, Stack};
use truststream_layer_resilience::{register, register_with_handles, BreakerState, Handles};
use truststream_realtime_memory::MemoryRealtime;
use truststream_storage_memory::MemoryStorage;

fn registry() -> LayerRegistry {
    let mut registry = LayerRegistry::new();
    register(&mut registry);
    registry
}

fn stack(registry: &LayerRegistry, interface: Interface, layers: Value) -> Result<Stack, Error> {
    registry.stack(
        interface,
        layers.as_object().unwrap(),
        &LayerDeps::default(),
    )
}

fn refused(layers: Value) -> String {
    let e = stack(&registry(), Interface::Database, layers).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    e.message().to_string()
}

#[test]
fn names_ranks_and_defaults() {
    let registry = registry();
    assert_eq!(
        registry.names(),
        ["circuit_breaker", "limit", "retry", "timeout"]
    );
    let s = stack(
        &registry,
        Interface::Database,
        json!({"timeout": true, "limit": {"max_in_flight": 8}, "circuit_breaker": {}, "retry": null}),
    )
    .unwrap();
    assert_eq!(
        s.describe(),
        [
            "retry(attempts=3, base_ms=50, max_ms=2000, budget_ms=5000)",
            "circuit_breaker(failure_ratio=0.5, min_calls=20, window_s=10, open_s=30)",
            "limit(max_in_flight=8, queue=1024, queue_timeout_ms=1000)",
            "timeout(read_ms=5000, write_ms=10000, schema_ms=30000, stream_ms=10000, admin_ms=5000)",
        ]
    );
    for interface in Interface::ALL {
        let s = stack(&registry, interface, json!({"retry": {"attempts": 2}})).unwrap();
        assert_eq!(s.layers().len(), 1, "{interface}");
    }
}

#[test]
fn unknown_fields_and_bad_values_name_the_key() {
    assert_eq!(
        refused(json!({"retry": {"atempts": 3}})),
        "database.layers.retry: unknown field `atempts`, expected one of \
         `attempts`, `base_ms`, `max_ms`, `budget_ms`"
    );
    assert_eq!(
        refused(json!({"timeout": {"read_ms": "fast"}})),
        "database.layers.timeout: read_ms: invalid type: expected u64"
    );
    assert_eq!(
        refused(json!({"timeout": {"write_ms": 0}})),
        "database.layers.timeout: write_ms must be at least 1, not 0"
    );
    assert_eq!(
        refused(json!({"timeout": {"read_ms": -5}})),
        "database.layers.timeout: read_ms: invalid value: expected u64"
    );
    assert_eq!(
        refused(json!({"retry": {"attempts": 0}})),
        "database.layers.retry: attempts must be at least 1, not 0"
    );
    assert_eq!(
        refused(json!({"retry": {"base_ms": 500, "max_ms": 100}})),
        "database.layers.retry: max_ms must be at least base_ms (500), not 100"
    );
    assert_eq!(
        refused(json!({"retry": {"budget_ms": 0}})),
        "database.layers.retry: budget_ms must be at least 1, not 0"
    );
    assert_eq!(
        refused(json!({"circuit_breaker": {"failure_ratio": 1.5}})),
        "database.layers.circuit_breaker: failure_ratio must be more than 0 and at most 1, not 1.5"
    );
    assert_eq!(
        refused(json!({"circuit_breaker": {"min_calls": 0}})),
        "database.layers.circuit_breaker: min_calls must be at least 1, not 0"
    );
    assert_eq!(
        refused(json!({"circuit_breaker": {"open_s": 0}})),
        "database.layers.circuit_breaker: open_s must be at least 1, not 0"
    );
    assert_eq!(
        refused(json!({"limit": {"max_in_flight": 0}})),
        "database.layers.limit: max_in_flight must be at least 1, not 0"
    );
    assert_eq!(
        refused(json!({"limit": {"queue_timeout_ms": 0}})),
        "database.layers.limit: queue_timeout_ms must be at least 1, not 0"
    );
    assert_eq!(
        refused(json!({"limit": 5})),
        "database.layers.limit: invalid type: expected struct LimitConfig"
    );
    // A zero-length queue is allowed: calls beyond max_in_flight are shed.
    stack(
        &registry(),
        Interface::Database,
        json!({"limit": {"queue": 0}}),
    )
    .unwrap();
}

#[tokio::test]
async fn a_whole_stack_from_config_over_db_memory() {
    let mut registry = LayerRegistry::new();
    let handles = Handles::new();
    register_with_handles(&mut registry, &handles);
    let layers = json!({
        "timeout": {"read_ms": 2000, "write_ms": 5000},
        "retry": {"attempts": 4, "base_ms": 50, "max_ms": 2000, "budget_ms": 5000},
        "circuit_breaker": {"failure_ratio": 0.5, "min_calls": 20, "window_s": 10, "open_s": 30},
        "limit": {"max_in_flight": 4, "queue": 16, "queue_timeout_ms": 1000},
    });
    let s = stack(&registry, Interface::Database, layers.clone()).unwrap();
    let names: Vec<_> = s.layers().iter().map(|l| l.name()).collect();
    assert_eq!(names, ["retry", "circuit_breaker", "limit", "timeout"]);

    let inner = memory_db().await;
    let db = s.wrap_database(Arc::clone(&inner)).await.unwrap();
    assert_eq!(db.info().name, "memory");
    let stored = db.create("agents", agent("a", "Ada")).await.unwrap();
    assert_eq!(stored["name"], "Ada");
    let got = db.get("agents", &json!("a")).await.unwrap().unwrap();
    assert_eq!(got, stored);
    let patch = json!({"name": "Ada L."}).as_object().unwrap().clone();
    assert_eq!(
        db.update("agents", &json!("a"), patch).await.unwrap()["name"],
        "Ada L."
    );
    let e = db.create("agents", agent("a", "again")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(db.get("agents", &json!("b")).await.unwrap().is_none());
    assert!(db.delete("agents", &json!("a")).await.unwrap());
    assert_eq!(
        db.read("agents", &Default::default()).await.unwrap().len(),
        0
    );

    // One of each layer, for this provider, and what they saw.
    {
        let breakers = handles.breakers();
        assert_eq!(breakers.len(), 1);
        assert_eq!(breakers[0].interface, Interface::Database);
        assert_eq!(breakers[0].provider, "memory");
        assert_eq!(breakers[0].layer.state(), BreakerState::Closed);
        assert_eq!(breakers[0].layer.window(), (7, 0));
        let retries = handles.retries();
        assert_eq!(retries.len(), 1);
        assert_eq!(retries[0].layer.stats().calls, 7);
        assert_eq!(retries[0].layer.stats().retries, 0);
        assert_eq!(handles.limits().len(), 1);
        assert_eq!(handles.limits()[0].layer.in_flight(), 0);
        assert_eq!(handles.timeouts().len(), 1);
    }

    // A second provider gets layers of its own; dropped, they leave the list.
    let storage = stack(&registry, Interface::Storage, layers).unwrap();
    let store = storage
        .wrap_storage(Arc::new(MemoryStorage::new()) as Arc<dyn Storage>)
        .await
        .unwrap();
    store.create_bucket("docs").await.unwrap();
    store
        .upload(
            "docs",
            "a.txt",
            Bytes::from_static(b"hi"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(store.download("docs", "a.txt").await.unwrap(), "hi");
    let breakers = handles.breakers();
    assert_eq!(breakers.len(), 2);
    assert_eq!(breakers[1].interface, Interface::Storage);
    assert_eq!(breakers[1].layer.window(), (3, 0));
    // (A handle holds its layer as long as it is kept.)
    drop(breakers);
    drop(store);
    assert_eq!(handles.breakers().len(), 1);
    drop(db);
    assert!(handles.breakers().is_empty());
}

#[tokio::test]
async fn a_realtime_provider_gets_the_same_layers() {
    let mut registry = LayerRegistry::new();
    let handles = Handles::new();
    register_with_handles(&mut registry, &handles);
    let s = stack(
        &registry,
        Interface::Realtime,
        json!({"timeout": true, "retry": true, "circuit_breaker": true, "limit": true}),
    )
    .unwrap();
    let realtime = s
        .wrap_realtime(Arc::new(MemoryRealtime::new()) as Arc<dyn Realtime>)
        .await
        .unwrap();
    let channel = realtime
        .channel("room", ChannelOptions::default())
        .await
        .unwrap();
    assert_eq!(channel.name(), "room");
    let breakers = handles.breakers();
    assert_eq!(breakers.len(), 1);
    assert_eq!(breakers[0].interface, Interface::Realtime);
    assert_eq!(breakers[0].layer.window(), (1, 0));
    assert_eq!(handles.retries()[0].layer.stats().calls, 1);
}
