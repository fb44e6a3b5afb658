//! One mechanism to wrap any TrustStream provider.
//!
//! A layer is written once and applies to every method of an interface:
//!
//! - A **generic** layer ([`Around`]: timeout, retry, circuit breaker,
//!   concurrency limit, metrics, tracing) sees every call of every
//!   interface as an [`Op`] — interface, provider, method, table / bucket /
//!   channel, read or write, idempotent or not — and runs the rest of the
//!   stack through [`Next`], as often as it decides. [`Generic`] makes it a
//!   layer of each interface; [`around_database`] and friends wrap a
//!   provider with it.
//! - An **interface** layer ([`DatabaseLayer`], [`StorageLayer`],
//!   [`AuthLayer`], [`RealtimeLayer`]: a cache, a replicating composite)
//!   overrides only the methods it changes; every other method forwards to
//!   the layer below by default. [`LayeredDatabase`] and friends make it a
//!   provider.
//!
//! A layered provider is itself a provider (`Arc<dyn Database>`), so layers
//! stack by wrapping again. The runtime builds stacks from configuration
//! through a [`LayerRegistry`] (each layer's place in the stack is its
//! [`rank`]) and lists them in `truststream check`.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use truststream_core::{BoxFuture, Result};
//! use truststream_core_db::Database;
//! use truststream_layer::{around_database, Around, Next, Op};
//!
//! /// Counts the writes that reach the provider.
//! #[derive(Default)]
//! struct CountWrites(AtomicU64);
//!
//! impl Around for CountWrites {
//!     fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
//!         if op.access == truststream_layer::Access::Write {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!         next.run()
//!     }
//! }
//!
//! fn counted(db: Arc<dyn Database>) -> (Arc<dyn Database>, Arc<CountWrites>) {
//!     let counter = Arc::new(CountWrites::default());
//!     (around_database(db, Arc::clone(&counter)), counter)
//! }
//! ```

mod around;
mod auth;
mod database;
mod realtime;
mod spec;
mod storage;

use std::sync::Arc;

pub use around::{Access, Around, Chain, Interface, Next, Op};
pub use auth::{AuthLayer, LayeredAuth};
pub use database::{DatabaseLayer, LayeredDatabase};
pub use realtime::{LayeredRealtime, RealtimeLayer};
pub use spec::{parse_settings, rank, LayerDeps, LayerRegistry, LayerSpec, ProviderBuilder, Stack};
pub use storage::{LayeredStorage, StorageLayer};

use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_core_storage::Storage;

/// A generic layer ([`Around`]) as a layer of every interface: each method
/// becomes an [`Op`] run through [`Around::around`].
pub struct Generic<A: ?Sized>(pub Arc<A>);

impl<A: ?Sized> Clone for Generic<A> {
    fn clone(&self) -> Self {
        Generic(Arc::clone(&self.0))
    }
}

impl<A: ?Sized> std::fmt::Debug for Generic<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Generic")
    }
}

/// `layer` around every method of a database provider.
pub fn around_database<A: Around + ?Sized>(
    inner: Arc<dyn Database>,
    layer: Arc<A>,
) -> Arc<dyn Database> {
    Arc::new(LayeredDatabase::new(inner, Arc::new(Generic(layer))))
}

/// `layer` around every method of an auth provider.
pub fn around_auth<A: Around + ?Sized>(inner: Arc<dyn Auth>, layer: Arc<A>) -> Arc<dyn Auth> {
    Arc::new(LayeredAuth::new(inner, Arc::new(Generic(layer))))
}

/// `layer` around every method of a storage provider.
pub fn around_storage<A: Around + ?Sized>(
    inner: Arc<dyn Storage>,
    layer: Arc<A>,
) -> Arc<dyn Storage> {
    Arc::new(LayeredStorage::new(inner, Arc::new(Generic(layer))))
}

/// `layer` around the methods of a realtime provider.
pub fn around_realtime<A: Around + ?Sized>(
    inner: Arc<dyn Realtime>,
    layer: Arc<A>,
) -> Arc<dyn Realtime> {
    Arc::new(LayeredRealtime::new(inner, Arc::new(Generic(layer))))
}
