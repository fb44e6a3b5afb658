//! TrustStream's database read cache: a
//! [`DatabaseLayer`](truststream_layer::DatabaseLayer) over moka that
//! serves `get` and `read` from memory and is invalidated on every write
//! path through it, and by the change feed when it sees other processes.
//!
//! Built from configuration as the layer `cache` ([`register`]) at
//! [`rank::CACHE`] (under metrics, over composite, retry and the rest), for
//! the database interface only:
//!
//! ```toml
//! [production.database.layers]
//! cache = { default_ttl_s = 300, tables = { trust_scores = 60, system_config = 3600 }, max_entries = 100000 }
//! ```
//!
//! Settings: [`CacheConfig`]. How entries are keyed and invalidated, and
//! which writes it sees: [`Cache`].
//!
//! ```
//! use serde_json::json;
//! use truststream_layer::{Interface, LayerDeps, LayerRegistry};
//!
//! let mut registry = LayerRegistry::new();
//! truststream_layer_cache::register(&mut registry);
//! let layers = json!({ "cache": { "default_ttl_s": 60, "tables": { "audit_log": 0 } } });
//! let stack = registry
//!     .stack(Interface::Database, layers.as_object().unwrap(), &LayerDeps::default())
//!     .unwrap();
//! assert_eq!(
//!     stack.describe(),
//!     ["cache(default_ttl_s=60, max_entries=100000, tables={audit_log=0})"]
//! );
//! ```

mod cache;
mod config;
mod feed;

use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use truststream_core::Result;
use truststream_core_db::Database;
use truststream_layer::{rank, Interface, LayerRegistry, LayerSpec};

pub use cache::{Cache, CacheStats};
pub use config::{Admission, CacheConfig, MAX_TTL_S};

/// The layer's name in configuration.
pub const NAME: &str = "cache";

/// Registers the layer `cache` at [`rank::CACHE`].
pub fn register(registry: &mut LayerRegistry) {
    add(registry, None);
}

/// Registers `cache` as [`register`] does, and keeps a handle on every
/// cache the stacks built from `registry` make, in `handles` (to show its
/// [`CacheStats`]).
pub fn register_with_handles(registry: &mut LayerRegistry, handles: &CacheHandles) {
    add(registry, Some(handles.clone()));
}

fn add(registry: &mut LayerRegistry, handles: Option<CacheHandles>) {
    registry.register(NAME, rank::CACHE, move |settings, _deps| {
        let config = CacheConfig::from_settings(settings)?;
        Ok(Arc::new(Spec {
            config,
            handles: handles.clone(),
        }) as Arc<dyn LayerSpec>)
    });
}

/// The caches made by stacks built through [`register_with_handles`], in
/// the order they were made. Held weakly: a cache dropped with its
/// provider leaves the list.
#[derive(Clone, Default)]
pub struct CacheHandles(Arc<Mutex<Vec<Weak<Cache>>>>);

impl std::fmt::Debug for CacheHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandles")
            .field("caches", &self.caches().len())
            .finish()
    }
}

impl CacheHandles {
    /// No handles yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The caches alive.
    pub fn caches(&self) -> Vec<Arc<Cache>> {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }

    fn push(&self, cache: &Arc<Cache>) {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        list.push(Arc::downgrade(cache));
    }
}

/// The configured layer: each wrapped provider gets a cache of its own.
struct Spec {
    config: CacheConfig,
    handles: Option<CacheHandles>,
}

#[async_trait]
impl LayerSpec for Spec {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> String {
        self.config.describe()
    }

    fn interfaces(&self) -> &'static [Interface] {
        &[Interface::Database]
    }

    async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        let db = Cache::wrap(inner, self.config.clone()).await?;
        if let Some(handles) = &self.handles {
            handles.push(db.layer());
        }
        Ok(db)
    }
}
