//! The live set of providers, with atomic switching.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::Value;
use truststream_core::{Error, Health, Result};
use truststream_core_auth::{Auth, AuthDeps};
use truststream_core_db::Database;
use truststream_core_realtime::{Realtime, RealtimeDeps};
use truststream_core_storage::Storage;

use crate::build::{build, Registries, Services};
use crate::config::{Config, ConfigSources, Interface, ProviderSection};
use crate::report::{CompatibilityReport, InterfaceReport};

/// Builds a [`Runtime`]: the registries (compiled-in providers plus your
/// own) and the configuration.
///
/// ```no_run
/// # async fn run() -> truststream_core::Result<()> {
/// use truststream_runtime::{ConfigSources, Runtime};
/// let rt = Runtime::builder()
///     .config(ConfigSources::new().load()?) // the embedded default
///     .build()
///     .await?;
/// let db = rt.db();
/// # let _ = db; Ok(()) }
/// ```
pub struct RuntimeBuilder {
    registries: Registries,
    config: Option<Config>,
}

impl RuntimeBuilder {
    /// The compiled-in providers; configuration from the process unless
    /// [`RuntimeBuilder::config`] is called.
    pub fn new() -> Self {
        RuntimeBuilder {
            registries: Registries::compiled_in(),
            config: None,
        }
    }

    /// Uses this configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Replaces the registries (start from [`Registries::empty`] to allow
    /// only your own providers).
    pub fn registries(mut self, registries: Registries) -> Self {
        self.registries = registries;
        self
    }

    /// The registries, to register providers of any interface.
    pub fn registries_mut(&mut self) -> &mut Registries {
        &mut self.registries
    }

    /// Registers a database provider factory under `name`.
    pub fn register_database<F, Fut>(mut self, name: &'static str, factory: F) -> Self
    where
        F: Fn(Value, ()) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Database>>> + Send + 'static,
    {
        self.registries.database.register(name, factory);
        self
    }

    /// Registers a storage provider factory under `name`.
    pub fn register_storage<F, Fut>(mut self, name: &'static str, factory: F) -> Self
    where
        F: Fn(Value, ()) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Storage>>> + Send + 'static,
    {
        self.registries.storage.register(name, factory);
        self
    }

    /// Registers a realtime provider factory under `name`.
    pub fn register_realtime<F, Fut>(mut self, name: &'static str, factory: F) -> Self
    where
        F: Fn(Value, RealtimeDeps) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Realtime>>> + Send + 'static,
    {
        self.registries.realtime.register(name, factory);
        self
    }

    /// Registers an auth provider factory under `name`.
    pub fn register_auth<F, Fut>(mut self, name: &'static str, factory: F) -> Self
    where
        F: Fn(Value, AuthDeps) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Auth>>> + Send + 'static,
    {
        self.registries.auth.register(name, factory);
        self
    }

    /// Loads the configuration if none was given, builds every provider and
    /// returns the runtime.
    pub async fn build(self) -> Result<Runtime> {
        let config = match self.config {
            Some(c) => c,
            None => ConfigSources::from_process().load()?,
        };
        let services = Services::build(&self.registries, &config).await?;
        Ok(Runtime {
            registries: self.registries,
            config: Mutex::new(config),
            db: ArcSwap::from_pointee(services.db),
            storage: ArcSwap::from_pointee(services.storage),
            realtime: ArcSwap::from_pointee(services.realtime),
            auth: ArcSwapOption::new(services.auth.map(Arc::new)),
        })
    }
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The configured providers, each in an atomic slot so it can be switched
/// while the service runs (the guide's `ProviderManager`).
///
/// [`Runtime::db`] (and friends) return the current provider. A caller
/// holding it keeps using it until done, even after a switch: in-flight calls
/// finish on the old provider, new calls go to the new one.
///
/// Switching the database does not rewire realtime's row change feed: call
/// [`Runtime::switch_realtime`] afterwards to follow the new database.
pub struct Runtime {
    registries: Registries,
    config: Mutex<Config>,
    db: ArcSwap<Arc<dyn Database>>,
    storage: ArcSwap<Arc<dyn Storage>>,
    realtime: ArcSwap<Arc<dyn Realtime>>,
    auth: ArcSwapOption<Arc<dyn Auth>>,
}

impl Runtime {
    /// A builder with the compiled-in providers.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }

    /// The current database provider.
    pub fn db(&self) -> Arc<dyn Database> {
        Arc::clone(&self.db.load())
    }

    /// The current storage provider.
    pub fn storage(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.storage.load())
    }

    /// The current realtime provider.
    pub fn realtime(&self) -> Arc<dyn Realtime> {
        Arc::clone(&self.realtime.load())
    }

    /// The current auth provider (`None` with `auth.type = "none"`).
    pub fn auth(&self) -> Option<Arc<dyn Auth>> {
        self.auth.load().as_deref().cloned()
    }

    /// A snapshot of the current providers.
    pub fn services(&self) -> Services {
        Services {
            db: self.db(),
            storage: self.storage(),
            realtime: self.realtime(),
            auth: self.auth(),
        }
    }

    /// The configuration in effect (switches included).
    pub fn config(&self) -> Config {
        self.lock_config().clone()
    }

    /// The registries the runtime builds from.
    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    fn lock_config(&self) -> std::sync::MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds a database provider of type `kind` from `settings` (a JSON
    /// object), requires its `health()` to be healthy, then swaps it in
    /// atomically and returns the previous provider (to disconnect it once
    /// its in-flight calls are done). On any failure the current provider
    /// stays.
    ///
    /// `health()` is awaited without a deadline: wrap the call in a timeout
    /// if the candidate may hang.
    pub async fn switch_database(&self, kind: &str, settings: Value) -> Result<Arc<dyn Database>> {
        let (section, cfg) = self.candidate(Interface::Database, kind, settings)?;
        let new = build(
            &self.registries.database,
            &self.registries,
            &cfg,
            Interface::Database,
            &section,
            (),
        )
        .await?;
        require_healthy(Interface::Database, kind, new.health().await)?;
        let old = self.db.swap(Arc::new(new));
        self.lock_config().set_section(Interface::Database, section);
        Ok(Arc::clone(&old))
    }

    /// [`Runtime::switch_database`] for storage.
    pub async fn switch_storage(&self, kind: &str, settings: Value) -> Result<Arc<dyn Storage>> {
        let (section, cfg) = self.candidate(Interface::Storage, kind, settings)?;
        let new = build(
            &self.registries.storage,
            &self.registries,
            &cfg,
            Interface::Storage,
            &section,
            (),
        )
        .await?;
        require_healthy(Interface::Storage, kind, new.health().await)?;
        let old = self.storage.swap(Arc::new(new));
        self.lock_config().set_section(Interface::Storage, section);
        Ok(Arc::clone(&old))
    }

    /// [`Runtime::switch_database`] for realtime; the new provider is wired
    /// to the current database and auth providers.
    pub async fn switch_realtime(&self, kind: &str, settings: Value) -> Result<Arc<dyn Realtime>> {
        let (section, cfg) = self.candidate(Interface::Realtime, kind, settings)?;
        let deps = RealtimeDeps {
            db: Some(self.db()),
            auth: self.auth(),
        };
        let new = build(
            &self.registries.realtime,
            &self.registries,
            &cfg,
            Interface::Realtime,
            &section,
            deps,
        )
        .await?;
        require_healthy(Interface::Realtime, kind, new.health().await)?;
        let old = self.realtime.swap(Arc::new(new));
        self.lock_config().set_section(Interface::Realtime, section);
        Ok(Arc::clone(&old))
    }

    fn candidate(
        &self,
        interface: Interface,
        kind: &str,
        settings: Value,
    ) -> Result<(ProviderSection, Config)> {
        let section = ProviderSection::from_json(kind, settings)?;
        let mut cfg = self.config();
        cfg.set_section(interface, section.clone());
        Ok((section, cfg))
    }

    /// The compatibility report of the current providers.
    pub async fn check(&self) -> CompatibilityReport {
        let s = self.services();
        let mut interfaces = vec![InterfaceReport::built(
            Interface::Database,
            s.db.info(),
            serde_json::to_value(s.db.capabilities()).unwrap_or_default(),
            s.db.health().await,
        )];
        interfaces.push(match &s.auth {
            Some(a) => InterfaceReport::built(
                Interface::Auth,
                a.info(),
                serde_json::to_value(a.capabilities()).unwrap_or_default(),
                a.health().await,
            ),
            None => InterfaceReport::not_configured(Interface::Auth),
        });
        interfaces.push(InterfaceReport::built(
            Interface::Storage,
            s.storage.info(),
            serde_json::to_value(s.storage.capabilities()).unwrap_or_default(),
            s.storage.health().await,
        ));
        interfaces.push(InterfaceReport::built(
            Interface::Realtime,
            s.realtime.info(),
            serde_json::to_value(s.realtime.capabilities()).unwrap_or_default(),
            s.realtime.health().await,
        ));
        CompatibilityReport {
            profile: self.lock_config().profile().to_string(),
            interfaces,
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("services", &self.services())
            .field("config", &*self.lock_config())
            .finish()
    }
}

fn require_healthy(interface: Interface, kind: &str, health: Health) -> Result<()> {
    if health.is_healthy() {
        return Ok(());
    }
    let why = health.message.as_deref().unwrap_or("no reason given");
    Err(Error::unavailable(format!(
        "refusing to switch {interface} to provider {kind:?}: its health check reports {} ({why}); \
         the current provider stays in place",
        health.status
    ))
    .with_context("section", interface.key()))
}
