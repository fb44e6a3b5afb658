//! Layers built from configuration: a registry of layer factories by name,
//! each with its place in the stack, and the [`Stack`] they make.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use truststream_core::{echo, BoxFuture, Error, Result};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_core_storage::Storage;

use crate::{
    around_auth, around_database, around_realtime, around_storage, Around, Chain, Interface,
};

/// Where each layer of this workspace sits in a stack: lower is outer.
/// Layers apply in this order whatever order the configuration lists them
/// in; `truststream check` shows the result, outermost first.
///
/// metrics (sees what the caller sees, cache hits included) > cache (a hit
/// costs nothing below) > composite (falls back to the secondary after the
/// primary's own resilience gave up) > retry (each attempt goes through what
/// is below) > circuit breaker (counts each attempt) > concurrency limit
/// (queues before the provider) > timeout (bounds each attempt at the
/// provider) > provider.
pub mod rank {
    /// Metrics and tracing.
    pub const METRICS: u16 = 100;
    /// Database read cache.
    pub const CACHE: u16 = 200;
    /// Primary/secondary replication with read fallback.
    pub const COMPOSITE: u16 = 300;
    /// Retries with backoff.
    pub const RETRY: u16 = 400;
    /// Circuit breaker.
    pub const CIRCUIT_BREAKER: u16 = 500;
    /// Concurrency limit / load shedding.
    pub const LIMIT: u16 = 600;
    /// Timeout per attempt.
    pub const TIMEOUT: u16 = 700;
}

/// Builds a provider of one interface from its type name and settings (the
/// runtime's registries), for layers that need a second provider (the
/// composite's secondary).
pub type ProviderBuilder<T> =
    Arc<dyn Fn(String, serde_json::Value) -> BoxFuture<'static, Result<Arc<T>>> + Send + Sync>;

/// What a layer may need from whoever builds it.
#[derive(Clone, Default)]
pub struct LayerDeps {
    /// Builds database providers.
    pub database: Option<ProviderBuilder<dyn Database>>,
    /// Builds storage providers.
    pub storage: Option<ProviderBuilder<dyn Storage>>,
}

impl std::fmt::Debug for LayerDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerDeps")
            .field("database", &self.database.is_some())
            .field("storage", &self.storage.is_some())
            .finish()
    }
}

fn not_for(name: &str, interface: Interface) -> Error {
    Error::invalid_input(format!(
        "layer {name:?} does not apply to the {interface} interface"
    ))
}

/// A configured layer: settings parsed and checked, ready to wrap a
/// provider of each interface it applies to. Each `wrap_*` call makes a
/// layer with state of its own (a circuit breaker per provider instance).
#[async_trait]
pub trait LayerSpec: Send + Sync + 'static {
    /// The layer's name in configuration (`"retry"`).
    fn name(&self) -> &'static str;

    /// The settings in one short line for `truststream check` (no secrets).
    fn describe(&self) -> String;

    /// The interfaces this layer applies to.
    fn interfaces(&self) -> &'static [Interface] {
        &Interface::ALL
    }

    /// For a generic layer: the [`Around`] that [`LayerSpec::wrap_database`]
    /// and friends would wrap a provider of `interface` in, made for the
    /// provider (or layer) named `provider` below it. A [`Stack`] runs
    /// consecutive generic layers as one [`Chain`] (one wrapper for all of
    /// them, the same calls in the same order) instead of wrapping each.
    /// `None`, the default: the stack calls the `wrap_*` method (an
    /// interface layer, a cache, a composite).
    fn around(&self, interface: Interface, provider: &'static str) -> Option<Arc<dyn Around>> {
        let _ = (interface, provider);
        None
    }

    /// Wraps a database provider.
    async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        let _ = inner;
        Err(not_for(self.name(), Interface::Database))
    }

    /// Wraps an auth provider.
    async fn wrap_auth(&self, inner: Arc<dyn Auth>) -> Result<Arc<dyn Auth>> {
        let _ = inner;
        Err(not_for(self.name(), Interface::Auth))
    }

    /// Wraps a storage provider.
    async fn wrap_storage(&self, inner: Arc<dyn Storage>) -> Result<Arc<dyn Storage>> {
        let _ = inner;
        Err(not_for(self.name(), Interface::Storage))
    }

    /// Wraps a realtime provider.
    async fn wrap_realtime(&self, inner: Arc<dyn Realtime>) -> Result<Arc<dyn Realtime>> {
        let _ = inner;
        Err(not_for(self.name(), Interface::Realtime))
    }
}

type Parse = Arc<dyn Fn(serde_json::Value, &LayerDeps) -> Result<Arc<dyn LayerSpec>> + Send + Sync>;

struct Factory {
    rank: u16,
    parse: Parse,
}

/// Layer factories by configuration name.
#[derive(Default)]
pub struct LayerRegistry {
    factories: BTreeMap<&'static str, Factory>,
}

impl std::fmt::Debug for LayerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerRegistry")
            .field("layers", &self.names())
            .finish()
    }
}

impl LayerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the layer `name` at `rank` (see [`rank`]); `parse`
    /// turns its settings (an object; `{}` for `name = true`) into a spec
    /// and fails with `InvalidInput` on a bad value.
    pub fn register<F>(&mut self, name: &'static str, rank: u16, parse: F)
    where
        F: Fn(serde_json::Value, &LayerDeps) -> Result<Arc<dyn LayerSpec>> + Send + Sync + 'static,
    {
        self.factories.insert(
            name,
            Factory {
                rank,
                parse: Arc::new(parse),
            },
        );
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// Parses one interface's `layers` table (`name -> settings`) into a
    /// stack. `name = false` leaves the layer out, `name = true` uses its
    /// defaults. An unknown name, a bad value or a layer that does not apply
    /// to `interface` is `InvalidInput` naming the key
    /// (`database.layers.retry`).
    pub fn stack(
        &self,
        interface: Interface,
        layers: &serde_json::Map<String, serde_json::Value>,
        deps: &LayerDeps,
    ) -> Result<Stack> {
        let mut specs = Vec::with_capacity(layers.len());
        for (name, settings) in layers {
            let key = format!("{interface}.layers.{}", echo(name));
            let Some(factory) = self.factories.get(name.as_str()) else {
                return Err(Error::invalid_input(format!(
                    "unknown layer {key}; known layers: {}",
                    self.names().join(", ")
                )));
            };
            let settings = match settings {
                serde_json::Value::Bool(false) => continue,
                serde_json::Value::Bool(true) | serde_json::Value::Null => {
                    serde_json::Value::Object(Default::default())
                }
                other => other.clone(),
            };
            let spec = (factory.parse)(settings, deps).map_err(|e| keyed(e, &key))?;
            if !spec.interfaces().contains(&interface) {
                return Err(Error::invalid_input(format!(
                    "layer {key} does not apply to the {interface} interface"
                )));
            }
            specs.push((factory.rank, spec));
        }
        specs.sort_by_key(|(rank, _)| *rank);
        Ok(Stack {
            interface,
            layers: specs.into_iter().map(|(_, s)| s).collect(),
        })
    }
}

/// Deserializes a layer's settings (`{}` for `name = true` or a missing
/// value) into its config type: a bad value is `InvalidInput` naming the
/// path inside the settings (`retry.attempts` becomes `attempts: ...`;
/// [`LayerRegistry::stack`] prefixes `database.layers.<name>`), without
/// quoting the value itself (it may be a secret).
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct RetryConfig { attempts: u32 }
///
/// let e = truststream_layer::parse_settings::<RetryConfig>(serde_json::json!({"attempts": "x"}))
///     .unwrap_err();
/// assert_eq!(e.message(), "attempts: invalid type: expected u32");
/// ```
pub fn parse_settings<T: serde::de::DeserializeOwned>(settings: serde_json::Value) -> Result<T> {
    truststream_core::parse_settings(settings)
}

fn keyed(e: Error, key: &str) -> Error {
    if e.message().contains(key) {
        return e;
    }
    Error::new(e.kind(), format!("{key}: {}", e.message()))
}

/// The configured layers of one interface, outermost first.
#[derive(Clone)]
pub struct Stack {
    interface: Interface,
    layers: Vec<Arc<dyn LayerSpec>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("interface", &self.interface)
            .field("layers", &self.describe())
            .finish()
    }
}

impl Stack {
    /// No layers.
    pub fn empty(interface: Interface) -> Self {
        Stack {
            interface,
            layers: Vec::new(),
        }
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers, outermost first.
    pub fn layers(&self) -> &[Arc<dyn LayerSpec>] {
        &self.layers
    }

    /// `name(settings)` of each layer, outermost first.
    pub fn describe(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|l| format!("{}({})", l.name(), l.describe()))
            .collect()
    }

    /// Wraps a database provider in every layer (the innermost first).
    pub async fn wrap_database(&self, mut inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        let mut chain = Vec::new();
        for layer in self.layers.iter().rev() {
            if let Some(a) = layer.around(Interface::Database, inner.info().name) {
                chain.push(a);
                continue;
            }
            inner = fused(inner, &mut chain, around_database);
            inner = layer.wrap_database(inner).await?;
        }
        Ok(fused(inner, &mut chain, around_database))
    }

    /// Wraps an auth provider in every layer.
    pub async fn wrap_auth(&self, mut inner: Arc<dyn Auth>) -> Result<Arc<dyn Auth>> {
        let mut chain = Vec::new();
        for layer in self.layers.iter().rev() {
            if let Some(a) = layer.around(Interface::Auth, inner.info().name) {
                chain.push(a);
                continue;
            }
            inner = fused(inner, &mut chain, around_auth);
            inner = layer.wrap_auth(inner).await?;
        }
        Ok(fused(inner, &mut chain, around_auth))
    }

    /// Wraps a storage provider in every layer.
    pub async fn wrap_storage(&self, mut inner: Arc<dyn Storage>) -> Result<Arc<dyn Storage>> {
        let mut chain = Vec::new();
        for layer in self.layers.iter().rev() {
            if let Some(a) = layer.around(Interface::Storage, inner.info().name) {
                chain.push(a);
                continue;
            }
            inner = fused(inner, &mut chain, around_storage);
            inner = layer.wrap_storage(inner).await?;
        }
        Ok(fused(inner, &mut chain, around_storage))
    }

    /// Wraps a realtime provider in every layer.
    pub async fn wrap_realtime(&self, mut inner: Arc<dyn Realtime>) -> Result<Arc<dyn Realtime>> {
        let mut chain = Vec::new();
        for layer in self.layers.iter().rev() {
            if let Some(a) = layer.around(Interface::Realtime, inner.info().name) {
                chain.push(a);
                continue;
            }
            inner = fused(inner, &mut chain, around_realtime);
            inner = layer.wrap_realtime(inner).await?;
        }
        Ok(fused(inner, &mut chain, around_realtime))
    }
}

/// `inner` wrapped in the generic layers gathered in `chain` (innermost
/// first), emptied: one layer as it is, several as one [`Chain`].
fn fused<T: ?Sized>(
    inner: Arc<T>,
    chain: &mut Vec<Arc<dyn Around>>,
    wrap: fn(Arc<T>, Arc<dyn Around>) -> Arc<T>,
) -> Arc<T> {
    match chain.len() {
        0 => inner,
        1 => wrap(inner, chain.remove(0)),
        _ => {
            let outermost_first: Vec<_> = chain.drain(..).rev().collect();
            wrap(inner, Arc::new(Chain::new(outermost_first)))
        }
    }
}
