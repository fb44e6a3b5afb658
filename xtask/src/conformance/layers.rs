//! The `+layers` entries: a provider run through a stack of layers built
//! from configuration, as the runtime builds it (each layer by its name,
//! with its default settings, at its rank). The suites must pass through
//! the stack exactly as they pass on the bare provider: same cases, same
//! skips.

use truststream_conformance::{db, factory, storage};
use truststream_layer::{Interface, LayerDeps, LayerRegistry, Stack};

/// The layers of the database entries (every layer that applies to a
/// database; the registry orders them by rank).
pub const DB_LAYERS: &[&str] = &["retry", "circuit_breaker", "limit", "timeout"];

/// The layers of the storage entries (the generic ones).
pub const STORAGE_LAYERS: &[&str] = &["retry", "circuit_breaker", "limit", "timeout"];

/// Every layer crate of the workspace, registered.
fn registry() -> LayerRegistry {
    let mut reg = LayerRegistry::new();
    truststream_layer_resilience::register(&mut reg);
    reg
}

/// The stack of `names` (each with its defaults: `name = true`) for
/// `interface`; an unknown name or a layer that does not apply fails.
pub fn stack(interface: Interface, names: &[&str]) -> Result<Stack, String> {
    let config: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .map(|n| (n.to_string(), serde_json::Value::Bool(true)))
        .collect();
    registry()
        .stack(interface, &config, &LayerDeps::default())
        .map_err(|e| e.to_string())
}

/// `bare`'s databases wrapped in [`DB_LAYERS`] (a fresh stack per case, so
/// no state — a breaker's window, a cache — crosses cases).
pub fn db(bare: db::DbFactory) -> db::DbFactory {
    factory(move || {
        let bare = bare.clone();
        async move {
            let db = bare().await?;
            stack(Interface::Database, DB_LAYERS)?
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
            fixture.storage = stack(Interface::Storage, STORAGE_LAYERS)?
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
        let db = stack(Interface::Database, DB_LAYERS).unwrap();
        assert_eq!(names(&db), DB_LAYERS);
        let st = stack(Interface::Storage, STORAGE_LAYERS).unwrap();
        assert_eq!(names(&st), STORAGE_LAYERS);
    }
}
