//! TrustStream layers for resilience: timeout, retry with backoff, circuit
//! breaker, concurrency limit.
//!
//! Each is a generic layer ([`Around`]) that applies to every method of all
//! four interfaces, built from configuration by the name it is
//! [`register`]ed under, at its [`rank`] in the stack (outermost first):
//!
//! | name | layer | settings | rank |
//! | --- | --- | --- | --- |
//! | `retry` | [`Retry`] | [`RetryConfig`] | [`rank::RETRY`] |
//! | `circuit_breaker` | [`CircuitBreaker`] | [`BreakerConfig`] | [`rank::CIRCUIT_BREAKER`] |
//! | `limit` | [`Limit`] | [`LimitConfig`] | [`rank::LIMIT`] |
//! | `timeout` | [`Timeout`] | [`TimeoutConfig`] | [`rank::TIMEOUT`] |
//!
//! So a retry repeats the whole of what is below it, the breaker counts
//! each attempt, the limit queues before the provider, and the timeout
//! bounds each attempt. The layers agree through the error's marks: a
//! timeout is retryable but not [`Error::unapplied`] (so a `create` that
//! timed out is never repeated); the limit's and the open breaker's
//! refusals are unapplied (nothing reached the provider); the breaker's and
//! a retry's give-ups are [`Error::permanent`] (an outer retry does not
//! repeat them).
//!
//! A stack built through [`register_with_handles`] keeps a [`Handle`] on
//! each layer it makes ([`Handles::breakers`] for a breaker's state and
//! transitions, [`Handles::retries`] for retry counts).
//!
//! ```
//! use serde_json::json;
//! use truststream_layer::{Interface, LayerDeps, LayerRegistry};
//!
//! let mut registry = LayerRegistry::new();
//! truststream_layer_resilience::register(&mut registry);
//! let layers = json!({
//!     "timeout": { "read_ms": 2000 },
//!     "retry": { "attempts": 4 },
//!     "circuit_breaker": true,
//!     "limit": { "max_in_flight": 64 },
//! });
//! let stack = registry
//!     .stack(Interface::Database, layers.as_object().unwrap(), &LayerDeps::default())
//!     .unwrap();
//! let names: Vec<_> = stack.layers().iter().map(|l| l.name()).collect();
//! assert_eq!(names, ["retry", "circuit_breaker", "limit", "timeout"]);
//! ```

mod breaker;
mod config;
mod limit;
mod retry;
mod timeout;

use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use truststream_core::{Error, Result};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_realtime::Realtime;
use truststream_core_storage::Storage;
use truststream_layer::{
    around_auth, around_database, around_realtime, around_storage, rank, Around, Interface,
    LayerRegistry, LayerSpec, Op,
};

pub use breaker::{BreakerConfig, BreakerCounts, BreakerState, CircuitBreaker};
pub use limit::{Limit, LimitConfig};
pub use retry::{Retry, RetryConfig, RetryStats};
pub use timeout::{Timeout, TimeoutConfig};

/// Registers `timeout`, `retry`, `circuit_breaker` and `limit`.
pub fn register(registry: &mut LayerRegistry) {
    add(registry, None);
}

/// Registers the layers as [`register`] does, and keeps a [`Handle`] on
/// every layer that the stacks built from `registry` make, in `handles`
/// (to show a breaker's state in a health report, or to watch it in a test).
pub fn register_with_handles(registry: &mut LayerRegistry, handles: &Handles) {
    add(registry, Some(handles.clone()));
}

fn add(registry: &mut LayerRegistry, handles: Option<Handles>) {
    add_one::<Timeout>(registry, rank::TIMEOUT, handles.clone());
    add_one::<Retry>(registry, rank::RETRY, handles.clone());
    add_one::<CircuitBreaker>(registry, rank::CIRCUIT_BREAKER, handles.clone());
    add_one::<Limit>(registry, rank::LIMIT, handles);
}

fn add_one<L: Kind>(registry: &mut LayerRegistry, rank: u16, handles: Option<Handles>) {
    registry.register(L::NAME, rank, move |settings, _deps| {
        let config: L::Config = config::parse(settings)?;
        L::validate(&config)?;
        Ok(Arc::new(Spec::<L> {
            config,
            handles: handles.clone(),
        }) as Arc<dyn LayerSpec>)
    });
}

/// A layer made by a configured stack, and what it wraps.
#[derive(Debug)]
pub struct Handle<L> {
    /// The interface of the provider it wraps.
    pub interface: Interface,
    /// The type name of the provider (or layer) it wraps.
    pub provider: &'static str,
    /// The layer itself.
    pub layer: Arc<L>,
}

impl<L> Clone for Handle<L> {
    fn clone(&self) -> Self {
        Handle {
            interface: self.interface,
            provider: self.provider,
            layer: Arc::clone(&self.layer),
        }
    }
}

struct Weakly<L> {
    interface: Interface,
    provider: &'static str,
    layer: Weak<L>,
}

#[derive(Default)]
struct Made {
    timeouts: Vec<Weakly<Timeout>>,
    retries: Vec<Weakly<Retry>>,
    breakers: Vec<Weakly<CircuitBreaker>>,
    limits: Vec<Weakly<Limit>>,
}

/// Handles on the layers that stacks built through
/// [`register_with_handles`] made, in the order they were made. Layers are
/// held weakly: a provider dropped with its stack leaves the list.
#[derive(Clone, Default)]
pub struct Handles(Arc<Mutex<Made>>);

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("breakers", &self.breakers().len())
            .field("retries", &self.retries().len())
            .field("limits", &self.limits().len())
            .field("timeouts", &self.timeouts().len())
            .finish()
    }
}

impl Handles {
    /// No handles yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Made) -> T) -> T {
        let mut made = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut made)
    }

    /// The circuit breakers alive.
    pub fn breakers(&self) -> Vec<Handle<CircuitBreaker>> {
        self.with(|m| alive(&mut m.breakers))
    }

    /// The retry layers alive.
    pub fn retries(&self) -> Vec<Handle<Retry>> {
        self.with(|m| alive(&mut m.retries))
    }

    /// The concurrency limits alive.
    pub fn limits(&self) -> Vec<Handle<Limit>> {
        self.with(|m| alive(&mut m.limits))
    }

    /// The timeout layers alive.
    pub fn timeouts(&self) -> Vec<Handle<Timeout>> {
        self.with(|m| alive(&mut m.timeouts))
    }
}

fn alive<L>(list: &mut Vec<Weakly<L>>) -> Vec<Handle<L>> {
    list.retain(|w| w.layer.strong_count() > 0);
    list.iter()
        .filter_map(|w| {
            Some(Handle {
                interface: w.interface,
                provider: w.provider,
                layer: w.layer.upgrade()?,
            })
        })
        .collect()
}

/// One of this crate's layers, as the registry builds it.
trait Kind: Around + Sized {
    type Config: DeserializeOwned + Send + Sync + 'static;
    const NAME: &'static str;
    fn validate(config: &Self::Config) -> Result<()>;
    fn describe(config: &Self::Config) -> String;
    fn make(config: &Self::Config) -> Self;
    fn list(made: &mut Made) -> &mut Vec<Weakly<Self>>;
}

impl Kind for Timeout {
    type Config = TimeoutConfig;
    const NAME: &'static str = "timeout";
    fn validate(config: &TimeoutConfig) -> Result<()> {
        config.validate()
    }
    fn describe(config: &TimeoutConfig) -> String {
        config.describe()
    }
    fn make(config: &TimeoutConfig) -> Self {
        Timeout::new(config.clone())
    }
    fn list(made: &mut Made) -> &mut Vec<Weakly<Self>> {
        &mut made.timeouts
    }
}

impl Kind for Retry {
    type Config = RetryConfig;
    const NAME: &'static str = "retry";
    fn validate(config: &RetryConfig) -> Result<()> {
        config.validate()
    }
    fn describe(config: &RetryConfig) -> String {
        config.describe()
    }
    fn make(config: &RetryConfig) -> Self {
        Retry::new(config.clone())
    }
    fn list(made: &mut Made) -> &mut Vec<Weakly<Self>> {
        &mut made.retries
    }
}

impl Kind for CircuitBreaker {
    type Config = BreakerConfig;
    const NAME: &'static str = "circuit_breaker";
    fn validate(config: &BreakerConfig) -> Result<()> {
        config.validate()
    }
    fn describe(config: &BreakerConfig) -> String {
        config.describe()
    }
    fn make(config: &BreakerConfig) -> Self {
        CircuitBreaker::new(config.clone())
    }
    fn list(made: &mut Made) -> &mut Vec<Weakly<Self>> {
        &mut made.breakers
    }
}

impl Kind for Limit {
    type Config = LimitConfig;
    const NAME: &'static str = "limit";
    fn validate(config: &LimitConfig) -> Result<()> {
        config.validate()
    }
    fn describe(config: &LimitConfig) -> String {
        config.describe()
    }
    fn make(config: &LimitConfig) -> Self {
        Limit::new(config.clone())
    }
    fn list(made: &mut Made) -> &mut Vec<Weakly<Self>> {
        &mut made.limits
    }
}

/// A configured layer: each `wrap_*` makes a new one (a breaker, a limit
/// and retry counters per provider instance).
struct Spec<L: Kind> {
    config: L::Config,
    handles: Option<Handles>,
}

impl<L: Kind> Spec<L> {
    fn make(&self, interface: Interface, provider: &'static str) -> Arc<L> {
        let layer = Arc::new(L::make(&self.config));
        if let Some(handles) = &self.handles {
            handles.with(|m| {
                L::list(m).push(Weakly {
                    interface,
                    provider,
                    layer: Arc::downgrade(&layer),
                });
            });
        }
        layer
    }
}

#[async_trait]
impl<L: Kind> LayerSpec for Spec<L> {
    fn name(&self) -> &'static str {
        L::NAME
    }

    fn describe(&self) -> String {
        L::describe(&self.config)
    }

    fn around(&self, interface: Interface, provider: &'static str) -> Option<Arc<dyn Around>> {
        Some(self.make(interface, provider))
    }

    async fn wrap_database(&self, inner: Arc<dyn Database>) -> Result<Arc<dyn Database>> {
        let layer = self.make(Interface::Database, inner.info().name);
        Ok(around_database(inner, layer))
    }

    async fn wrap_auth(&self, inner: Arc<dyn Auth>) -> Result<Arc<dyn Auth>> {
        let layer = self.make(Interface::Auth, inner.info().name);
        Ok(around_auth(inner, layer))
    }

    async fn wrap_storage(&self, inner: Arc<dyn Storage>) -> Result<Arc<dyn Storage>> {
        let layer = self.make(Interface::Storage, inner.info().name);
        Ok(around_storage(inner, layer))
    }

    async fn wrap_realtime(&self, inner: Arc<dyn Realtime>) -> Result<Arc<dyn Realtime>> {
        let layer = self.make(Interface::Realtime, inner.info().name);
        Ok(around_realtime(inner, layer))
    }
}

/// `e` with the call's method as its operation and its table, bucket or
/// channel as context.
fn layer_error(e: Error, op: &Op<'_>) -> Error {
    let e = e.with_operation(op.method);
    match op.target {
        Some(target) => {
            let key = match op.interface {
                Interface::Database => "table",
                Interface::Storage => "bucket",
                Interface::Realtime => "channel",
                Interface::Auth => "target",
            };
            e.with_context(key, target)
        }
        None => e,
    }
}
