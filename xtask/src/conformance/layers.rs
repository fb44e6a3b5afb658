//! The `+layers` entries: a provider run through a stack of layers built
//! from configuration, as the runtime builds it (each layer by its name, at
//! its rank, with its default settings unless said otherwise). The suites
//! must pass through the stack exactly as they pass on the bare provider:
//! same cases, same skips.

use serde_json::Value;
use truststream_conformance::{db, factory, storage};
use truststream_layer::{Interface, LayerDeps, LayerRegistry, Stack};

/// The layers of the database entries: every layer that applies to a
/// database, with its defaults (the registry orders them by rank), but the
/// composite. The composite does not pass the db suite by design: it
/// refuses a `create` without the key when the key is an integer the
/// database would generate (12 cases use such tables); its own test
/// (`crates/layer-composite/tests/conformance.rs`) runs the suite and pins
/// exactly those cases.
pub const DB_LAYERS: &[&str] = &[
    "metrics",
    "cache",
    "retry",
    "circuit_breaker",
    "limit",
    "timeout",
];

/// The layers of the storage entries: the generic ones.
pub const STORAGE_LAYERS: &[&str] = &["metrics", "retry", "circuit_breaker", "limit", "timeout"];

/// Every layer crate of the workspace, registered.
fn registry() -> LayerRegistry {
    let mut reg = LayerRegistry::new();
    truststream_layer_resilience::register(&mut reg);
    truststream_layer_metrics::register(&mut reg);
    truststream_layer_cache::register(&mut reg);
    truststream_layer_composite::register(&mut reg);
    reg
}

/// The stack of `layers` (`name -> settings`) for `interface`; an unknown
/// name, a bad value or a layer that does not apply fails.
pub fn stack(interface: Interface, layers: &[(&str, Value)]) -> Result<Stack, String> {
    let config: serde_json::Map<String, Value> = layers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    registry()
        .stack(interface, &config, &LayerDeps::default())
        .map_err(|e| e.to_string())
}

/// Each of `names` with its defaults (`name = true`).
fn defaults(names: &[&'static str]) -> Vec<(&'static str, Value)> {
    names.iter().map(|n| (*n, Value::Bool(true))).collect()
}

/// [`DB_LAYERS`] with their defaults.
pub fn db_layers() -> Vec<(&'static str, Value)> {
    defaults(DB_LAYERS)
}

/// [`STORAGE_LAYERS`] with their defaults.
pub fn storage_layers() -> Vec<(&'static str, Value)> {
    defaults(STORAGE_LAYERS)
}

/// `bare`'s databases wrapped in `layers()` (a fresh stack per case, so
/// no state — a breaker's window, a cache, an outbox — crosses cases).
pub fn db(bare: db::DbFactory, layers: fn() -> Vec<(&'static str, Value)>) -> db::DbFactory {
    factory(move || {
        let bare = bare.clone();
        async move {
            let db = bare().await?;
            stack(Interface::Database, &layers())?
                .wrap_database(db)
                .await
                .map_err(|e| e.to_string())
        }
    })
}

/// `bare`'s stores wrapped in [`STORAGE_LAYERS`]; signed URLs are still
/// fetched from the provider itself (they do not go through layers).
pub fn storage(bare: storage::StorageFactory) -> storage::StorageFactory {
    factory(move || {
        let bare = bare.clone();
        async move {
            let mut fixture = bare().await?;
            fixture.storage = stack(Interface::Storage, &storage_layers())?
                .wrap_storage(fixture.storage)
                .await
                .map_err(|e| e.to_string())?;
            Ok(fixture)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(stack: &Stack) -> Vec<&'static str> {
        stack.layers().iter().map(|l| l.name()).collect()
    }

    /// No listed layer is dropped or unknown, and the stacks are in rank
    /// order (outermost first).
    #[test]
    fn the_entries_stack_every_listed_layer() {
        let db = stack(Interface::Database, &db_layers()).unwrap();
        assert_eq!(names(&db), DB_LAYERS);
        let st = stack(Interface::Storage, &storage_layers()).unwrap();
        assert_eq!(names(&st), STORAGE_LAYERS);
    }
}
