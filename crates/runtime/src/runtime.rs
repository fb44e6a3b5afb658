//! The live set of providers, with atomic switching and draining.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::Value;
use truststream_core::{Error, ErrorKind, Result};
use truststream_core_auth::{Auth, AuthDeps};
use truststream_core_db::Database;
use truststream_core_jobs::Jobs;
use truststream_core_realtime::{Realtime, RealtimeDeps};
use truststream_core_storage::Storage;

use truststream_layer::{LayerDeps, LayerSpec};

use crate::build::{realtime_deps, Layered, Registries, Services};
use crate::closing::Closing;
use crate::config::{Config, ConfigSources, Interface, ProviderSection, LAYERS_KEY};
use crate::health::HealthReport;
use crate::redact;
use crate::report::{CompatibilityReport, InterfaceReport, JobsReport};
use crate::tracked::{InFlight, Track};

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

    /// Registers a layer under `name` (its key in a section's `layers`
    /// table) at `rank` (its place in the stack, lower is outer: see
    /// [`truststream_layer::rank`]). `parse` turns its settings (a table;
    /// `{}` for `name = true`) into a [`LayerSpec`] and fails with
    /// `InvalidInput` on a bad value.
    pub fn register_layer<F>(mut self, name: &'static str, rank: u16, parse: F) -> Self
    where
        F: Fn(Value, &LayerDeps) -> Result<Arc<dyn LayerSpec>> + Send + Sync + 'static,
    {
        self.registries.layers.register(name, rank, parse);
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
        let registries = Arc::new(self.registries);
        let live = Live::build(&registries, config).await?;
        Ok(Runtime {
            registries,
            live: ArcSwap::from_pointee(live),
            switching: tokio::sync::Mutex::new(()),
            shut_down: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The configured providers and the configuration they were built from, held
/// together in one atomic slot so that a provider can be switched while the
/// service runs (the guide's `ProviderManager`).
///
/// [`Runtime::db`] (and friends) return the current provider. A caller
/// holding it keeps using it until done, even after a switch: calls in
/// flight finish on the old provider, new `rt.db()` calls get the new one.
/// Each provider handed out counts its calls in flight, so the [`Switch`] a
/// switch returns can wait for them ([`Switch::drain`]) before closing the
/// old provider ([`Switch::close`]).
///
/// A switch replaces the interface's provider and rebuilds, in the same
/// step, the providers built on it: switching the database rebuilds auth
/// (its user store), realtime (its row change feed) and a jobs provider
/// that keeps its jobs there (`JobsCapabilities::in_database`, e.g.
/// `jobs.type = "database"`) on the new database;
/// switching auth rebuilds realtime (which checks tokens with it). If a
/// dependent cannot be rebuilt the switch is refused with an error naming
/// it, and nothing changes. Providers and configuration change together,
/// atomically; concurrent switches run one after the other.
pub struct Runtime {
    registries: Arc<Registries>,
    live: ArcSwap<Live>,
    /// Held for a whole switch (build, health checks, swap) and for
    /// [`Runtime::shutdown`].
    switching: tokio::sync::Mutex<()>,
    /// Set by [`Runtime::shutdown`]: switches are refused from then on.
    shut_down: std::sync::atomic::AtomicBool,
}

impl Runtime {
    /// A builder with the compiled-in providers.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }

    /// The current database provider.
    pub fn db(&self) -> Arc<dyn Database> {
        Arc::clone(&self.live.load().db.provider)
    }

    /// The current storage provider.
    pub fn storage(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.live.load().storage.provider)
    }

    /// The current realtime provider.
    pub fn realtime(&self) -> Arc<dyn Realtime> {
        Arc::clone(&self.live.load().realtime.provider)
    }

    /// The current auth provider (`None` with `auth.type = "none"`).
    pub fn auth(&self) -> Option<Arc<dyn Auth>> {
        self.live
            .load()
            .auth
            .as_ref()
            .map(|a| Arc::clone(&a.provider))
    }

    /// The current background jobs provider (`None` with `jobs.type =
    /// "none"`, the default). `jobs.type = "database"` keeps its jobs in
    /// the current database (through its layers): run its
    /// `enqueue_operation` in [`Runtime::db`]'s `transaction`.
    pub fn jobs(&self) -> Option<Arc<dyn Jobs>> {
        self.live.load().jobs.clone()
    }

    /// A snapshot of the current providers.
    pub fn services(&self) -> Services {
        self.live.load().services()
    }

    /// The configuration in effect (switches included).
    pub fn config(&self) -> Config {
        self.live.load().config.clone()
    }

    /// The current providers and the configuration they were built from,
    /// read together (a switch never shows one without the other).
    pub fn snapshot(&self) -> (Services, Config) {
        let live = self.live.load();
        (live.services(), live.config.clone())
    }

    /// The registries the runtime builds from.
    pub fn registries(&self) -> &Arc<Registries> {
        &self.registries
    }

    /// Switches the database: builds a provider of type `kind` from
    /// `settings` (a JSON object) and requires its `health()` to be healthy,
    /// rebuilds auth and realtime on it (each must build and be healthy
    /// too), then swaps all of them and the configuration in one step. On
    /// any failure nothing changes; a dependent that cannot be rebuilt is
    /// named in the error.
    ///
    /// The returned [`Switch`] holds the providers taken out of service:
    /// [`Switch::close`] waits for their calls in flight, then closes them
    /// and disconnects the old database. Subscriptions made on the old
    /// realtime provider stay there until then: subscribe again on
    /// [`Runtime::realtime`].
    ///
    /// The new provider is wrapped in the section's layers: those of
    /// `settings["layers"]` when given (a table, as in the configuration
    /// file; `{}` for none), else the ones the section has now.
    ///
    /// `health()` is awaited without a deadline: wrap the call in a timeout
    /// if the candidate may hang. Other switches wait for this one.
    pub async fn switch_database(&self, kind: &str, settings: Value) -> Result<Switch> {
        self.switch(Interface::Database, kind, settings).await
    }

    /// [`Runtime::switch_database`] for auth (`kind = "none"` removes the
    /// auth provider); the new provider is built on the current database,
    /// and realtime is rebuilt with it.
    pub async fn switch_auth(&self, kind: &str, settings: Value) -> Result<Switch> {
        self.switch(Interface::Auth, kind, settings).await
    }

    /// [`Runtime::switch_database`] for storage (nothing depends on it).
    pub async fn switch_storage(&self, kind: &str, settings: Value) -> Result<Switch> {
        self.switch(Interface::Storage, kind, settings).await
    }

    /// [`Runtime::switch_database`] for realtime; the new provider is wired
    /// to the current database and auth providers.
    pub async fn switch_realtime(&self, kind: &str, settings: Value) -> Result<Switch> {
        self.switch(Interface::Realtime, kind, settings).await
    }

    /// Switches `interface` to provider `kind` with `settings` (a JSON
    /// object); the typed `switch_*` methods call this.
    pub async fn switch(
        &self,
        interface: Interface,
        kind: &str,
        settings: Value,
    ) -> Result<Switch> {
        let new_layers = settings.get(LAYERS_KEY).is_some();
        let mut section = ProviderSection::from_json(kind, settings)?;
        let _one_at_a_time = self.switching.lock().await;
        if self.is_shut_down() {
            return Err(Error::unavailable(format!(
                "refusing to switch {interface} to provider {kind:?}: the runtime was shut down \
                 (Runtime::shutdown); build a new one"
            ))
            .with_context("section", interface.as_str()));
        }
        let current = self.live.load_full();
        if !new_layers {
            let layers = current.config.section(interface).layers().clone();
            section = section.with_layers(layers);
        }
        let mut next = (*current).clone();
        next.config.set_section(interface, section);
        let affected = with_dependents(interface);
        for &i in affected {
            let failed = match next.rebuild(&self.registries, i).await {
                Err(e) => Some(e),
                Ok(()) => next.health_problem(i).await,
            };
            if let Some(e) = failed {
                // The candidates built for this switch go out of service
                // unused: close them (never a current one, still in `next`
                // where its replacement failed to build or was not due).
                let _ = next.not_in(&current).close().await;
                return Err(refused(
                    interface,
                    kind,
                    i,
                    next.config.section(i).kind(),
                    e,
                ));
            }
        }
        let next = Arc::new(next);
        self.live.store(Arc::clone(&next));
        Ok(Switch::retire(&current, &next, affected))
    }

    /// The compatibility report of the current providers: per interface
    /// the provider, its layers (outermost first), capabilities and health
    /// (health messages scrubbed of the section's secret values).
    pub async fn check(&self) -> CompatibilityReport {
        let live = self.live.load_full();
        let config = &live.config;
        let off = |i: Interface| config.is_off(i);
        let mut interfaces = vec![if off(Interface::Database) {
            InterfaceReport::not_configured(Interface::Database)
        } else {
            live.db.report(Interface::Database, config).await
        }];
        interfaces.push(match &live.auth {
            Some(a) => a.report(Interface::Auth, config).await,
            None => InterfaceReport::not_configured(Interface::Auth),
        });
        interfaces.push(if off(Interface::Storage) {
            InterfaceReport::not_configured(Interface::Storage)
        } else {
            live.storage.report(Interface::Storage, config).await
        });
        interfaces.push(if off(Interface::Realtime) {
            InterfaceReport::not_configured(Interface::Realtime)
        } else {
            live.realtime.report(Interface::Realtime, config).await
        });
        let jobs = JobsReport::of(config, &Ok(live.jobs.clone())).await;
        CompatibilityReport {
            profile: config.profile().to_string(),
            interfaces,
            jobs,
        }
    }

    /// The health of every current provider, checked in parallel, each
    /// within `deadline` (see [`HealthReport`]).
    pub async fn health(&self, deadline: Duration) -> HealthReport {
        let (services, config) = self.snapshot();
        HealthReport::of(&services, &config, deadline).await
    }

    /// Shuts every current provider down, for the end of the process (see
    /// [`Services::close`]): realtime first (its servers stop listening,
    /// its change feed readers end), then jobs (completions waiting in a
    /// batch are committed, wake-up listeners stop), then auth (its
    /// revocation feed), then the database's pools are closed. Waits for
    /// a switch in progress; later switches are refused.
    ///
    /// Idempotent: a second call closes nothing new and returns `Ok` — or,
    /// when a provider failed to close the first time, tries it again.
    /// After it, calls on the providers (through handles taken before or
    /// after) fail with an error — `Unavailable` for the database
    /// ("disconnected"), realtime and jobs — instead of waiting for a
    /// connection. Storage holds no connections to close.
    ///
    /// Every provider is closed even when one fails; the first failure is
    /// returned, naming the interface.
    pub async fn shutdown(&self) -> Result<()> {
        let _no_switch = self.switching.lock().await;
        self.shut_down
            .store(true, std::sync::atomic::Ordering::Release);
        // Not skipped on a second call: every provider's close is
        // idempotent, so a second call closes nothing new when the first
        // succeeded, and retries what failed when it did not.
        self.live.load().services().close().await
    }

    /// Whether [`Runtime::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Services {
    /// Closes every provider, in the order that lets each finish its work
    /// on the ones below it: realtime (servers, listeners, change feed
    /// readers), jobs (batched completions committed, then its background
    /// tasks and own connections), auth (background tasks), and last the
    /// database ([`Database::disconnect`]: its pools and change feed
    /// listener; through its layers, so a composite's secondary is closed
    /// too). Each provider's `close` is idempotent, so is this.
    ///
    /// Every provider is closed even when one fails; the first failure is
    /// returned, prefixed with the interface (`closing jobs: ...`).
    pub async fn close(&self) -> Result<()> {
        Closing {
            realtime: Some(Arc::clone(&self.realtime)),
            jobs: self.jobs.clone(),
            auth: self.auth.clone(),
            db: Some(Arc::clone(&self.db)),
        }
        .close()
        .await
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (services, config) = self.snapshot();
        f.debug_struct("Runtime")
            .field("services", &services)
            .field("config", &config)
            .finish()
    }
}

/// `interface`, then the interfaces whose providers are built on it, in
/// build order: the database feeds auth (its store) and realtime (its
/// change feed); auth feeds realtime (token checks).
fn with_dependents(interface: Interface) -> &'static [Interface] {
    match interface {
        Interface::Database => &[Interface::Database, Interface::Auth, Interface::Realtime],
        Interface::Auth => &[Interface::Auth, Interface::Realtime],
        Interface::Storage => &[Interface::Storage],
        Interface::Realtime => &[Interface::Realtime],
    }
}

/// One live provider: the handle given out (the provider in its layers,
/// in the counting layer), its counter, and its layers.
struct Slot<T: ?Sized> {
    provider: Arc<T>,
    calls: Arc<InFlight>,
    layers: Vec<String>,
}

impl<T: ?Sized> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Slot {
            provider: Arc::clone(&self.provider),
            calls: Arc::clone(&self.calls),
            layers: self.layers.clone(),
        }
    }
}

impl<T: ?Sized + Track> Slot<T> {
    /// Wraps a freshly built, layered provider in its counting handle.
    fn new(built: Layered<T>) -> Self {
        let (provider, calls) = T::track(built.provider);
        Slot {
            provider,
            calls,
            layers: built.stack.describe(),
        }
    }
}

/// The report of one live provider.
macro_rules! slot_report {
    ($interface:ident) => {
        impl Slot<dyn $interface> {
            async fn report(&self, interface: Interface, config: &Config) -> InterfaceReport {
                InterfaceReport::built(
                    interface,
                    self.provider.info(),
                    serde_json::to_value(self.provider.capabilities()).unwrap_or_default(),
                    self.provider.health().await,
                    config.section(interface),
                    self.layers.clone(),
                )
            }
        }
    };
}

slot_report!(Database);
slot_report!(Auth);
slot_report!(Storage);
slot_report!(Realtime);

/// Everything a switch replaces at once: the providers and the
/// configuration they were built from.
#[derive(Clone)]
struct Live {
    config: Config,
    db: Slot<dyn Database>,
    auth: Option<Slot<dyn Auth>>,
    storage: Slot<dyn Storage>,
    realtime: Slot<dyn Realtime>,
    /// Built on `db` (rebuilt when the database is switched).
    jobs: Option<Arc<dyn Jobs>>,
}

impl Live {
    /// Builds every configured provider, each in its layers and on the
    /// (layered, counted) ones it depends on.
    /// When a later provider fails, the ones already built are closed
    /// before the error is returned.
    async fn build(registries: &Arc<Registries>, config: Config) -> Result<Self> {
        let mut built = Closing::default();
        match Self::build_into(registries, config, &mut built).await {
            Ok(live) => Ok(live),
            Err(e) => built.abandon(e).await,
        }
    }

    /// [`Live::build`], noting each provider in `built` as soon as it
    /// exists, so that a later failure can close it.
    async fn build_into(
        registries: &Arc<Registries>,
        config: Config,
        built: &mut Closing,
    ) -> Result<Self> {
        let db = Slot::new(registries.database_layered(&config).await?);
        built.db = Some(Arc::clone(&db.provider));
        let auth = build_auth(registries, &config, &db).await?;
        built.auth = auth.as_ref().map(|a| Arc::clone(&a.provider));
        let storage = Slot::new(registries.storage_layered(&config).await?);
        let realtime = build_realtime(registries, &config, &db, &auth).await?;
        built.realtime = Some(Arc::clone(&realtime.provider));
        let jobs = build_jobs(registries, &config, &db).await?;
        Ok(Live {
            config,
            db,
            auth,
            storage,
            realtime,
            jobs,
        })
    }

    /// The providers of `self` that `other` does not share (those a switch
    /// built, or those it retired), to close.
    fn not_in(&self, other: &Live) -> Closing {
        fn own<T: ?Sized>(mine: Option<&Arc<T>>, theirs: Option<&Arc<T>>) -> Option<Arc<T>> {
            match (mine, theirs) {
                (Some(m), Some(t)) if Arc::ptr_eq(m, t) => None,
                (m, _) => m.cloned(),
            }
        }
        fn slot(s: &Option<Slot<dyn Auth>>) -> Option<&Arc<dyn Auth>> {
            s.as_ref().map(|a| &a.provider)
        }
        Closing {
            realtime: own(
                Some(&self.realtime.provider),
                Some(&other.realtime.provider),
            ),
            jobs: own(self.jobs.as_ref(), other.jobs.as_ref()),
            auth: own(slot(&self.auth), slot(&other.auth)),
            db: own(Some(&self.db.provider), Some(&other.db.provider)),
        }
    }

    /// Rebuilds the provider of `interface` from the configuration, in its
    /// layers, on the current providers it depends on.
    async fn rebuild(&mut self, registries: &Arc<Registries>, interface: Interface) -> Result<()> {
        let config = &self.config;
        match interface {
            Interface::Database => {
                self.db = Slot::new(registries.database_layered(config).await?);
                // Jobs kept in the database follow it; jobs kept elsewhere
                // stay with the provider that holds them.
                if self
                    .jobs
                    .as_ref()
                    .is_some_and(|j| j.capabilities().in_database)
                {
                    self.jobs = build_jobs(registries, config, &self.db).await?;
                }
            }
            Interface::Auth => self.auth = build_auth(registries, config, &self.db).await?,
            Interface::Storage => {
                self.storage = Slot::new(registries.storage_layered(config).await?)
            }
            Interface::Realtime => {
                self.realtime = build_realtime(registries, config, &self.db, &self.auth).await?
            }
        }
        Ok(())
    }

    /// Why the provider of `interface` cannot be switched to: its health
    /// check does not report healthy (its message scrubbed of the
    /// section's secret values). `None` when it does (or there is no
    /// provider: `auth.type = "none"`).
    async fn health_problem(&self, interface: Interface) -> Option<Error> {
        let health = match interface {
            Interface::Database => self.db.provider.health().await,
            Interface::Auth => self.auth.as_ref()?.provider.health().await,
            Interface::Storage => self.storage.provider.health().await,
            Interface::Realtime => self.realtime.provider.health().await,
        };
        if health.is_healthy() {
            return None;
        }
        let why = health.message.as_deref().unwrap_or("no reason given");
        // Scrubbed like a build error: the candidate's message may quote
        // its settings (a connection URL, a password).
        let why = redact::scrub(why, &self.config.section(interface).secrets());
        Some(Error::unavailable(format!(
            "its health check reports {} ({why})",
            health.status
        )))
    }

    fn services(&self) -> Services {
        Services {
            db: Arc::clone(&self.db.provider),
            storage: Arc::clone(&self.storage.provider),
            realtime: Arc::clone(&self.realtime.provider),
            auth: self.auth.as_ref().map(|a| Arc::clone(&a.provider)),
            jobs: self.jobs.clone(),
        }
    }
}

/// The jobs provider on the live database handle (its layers, its count of
/// calls in flight).
async fn build_jobs(
    registries: &Arc<Registries>,
    config: &Config,
    db: &Slot<dyn Database>,
) -> Result<Option<Arc<dyn Jobs>>> {
    registries
        .build_jobs(config, Some(Arc::clone(&db.provider)))
        .await
}

/// Auth on the live database: the layered, counted handle, so that auth's
/// own database calls go through the database's layers (retry, metrics; a
/// cache invalidates on every write path, so a refresh token's
/// compare-and-set stays correct) and count for the database's drain.
async fn build_auth(
    registries: &Arc<Registries>,
    config: &Config,
    db: &Slot<dyn Database>,
) -> Result<Option<Slot<dyn Auth>>> {
    let auth = registries
        .auth_layered(config, Some(Arc::clone(&db.provider)))
        .await?;
    Ok(auth.map(Slot::new))
}

/// Realtime on the live database and auth handles (the row change feed is
/// set up through the database's layers).
async fn build_realtime(
    registries: &Arc<Registries>,
    config: &Config,
    db: &Slot<dyn Database>,
    auth: &Option<Slot<dyn Auth>>,
) -> Result<Slot<dyn Realtime>> {
    let deps = realtime_deps(
        Arc::clone(&db.provider),
        auth.as_ref().map(|a| Arc::clone(&a.provider)),
    );
    Ok(Slot::new(registries.realtime_layered(config, deps).await?))
}

/// A provider a switch took out of service, with the count of calls still
/// running on it.
pub struct Retired<T: ?Sized> {
    interface: Interface,
    kind: String,
    slot: Slot<T>,
}

impl<T: ?Sized> Retired<T> {
    /// The old provider (calls on it still work until it is closed).
    pub fn provider(&self) -> &Arc<T> {
        &self.slot.provider
    }

    /// Its provider type name (`memory`, `postgres`, ...).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The calls running on it now.
    pub fn calls_in_flight(&self) -> usize {
        self.slot.calls.count()
    }

    /// Its layers, outermost first (`retry(attempts=4, ...)`).
    pub fn layers(&self) -> &[String] {
        &self.slot.layers
    }
}

impl<T: ?Sized> std::fmt::Debug for Retired<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retired")
            .field("interface", &self.interface)
            .field("kind", &self.kind)
            .field("calls_in_flight", &self.calls_in_flight())
            .finish()
    }
}

/// What a switch took out of service: the previous provider of the switched
/// interface and of each dependent rebuilt with it (a database switch
/// retires the old database, auth and realtime providers, and the jobs
/// provider when it keeps its jobs in the database).
///
/// Drop it to let the old providers go when their last user does, or call
/// [`Switch::close`] to wait (with a deadline) for the calls still running
/// on them and then close them (realtime, jobs, auth, then the database).
#[must_use = "close the switch to drain and disconnect the old providers"]
pub struct Switch {
    database: Option<Retired<dyn Database>>,
    auth: Option<Retired<dyn Auth>>,
    storage: Option<Retired<dyn Storage>>,
    realtime: Option<Retired<dyn Realtime>>,
    /// The old jobs provider, when a database switch rebuilt the jobs kept
    /// in it.
    jobs: Option<Arc<dyn Jobs>>,
    replaced: &'static [Interface],
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch")
            .field("database", &self.database)
            .field("auth", &self.auth)
            .field("storage", &self.storage)
            .field("realtime", &self.realtime)
            .field("jobs", &self.jobs.as_ref().map(|j| j.info()))
            .field("replaced", &self.replaced)
            .finish()
    }
}

impl Switch {
    fn retire(old: &Live, new: &Live, replaced: &'static [Interface]) -> Self {
        let retire = |i: Interface| replaced.contains(&i);
        let kind = |i: Interface| old.config.section(i).kind().to_string();
        Switch {
            database: retire(Interface::Database).then(|| Retired {
                interface: Interface::Database,
                kind: kind(Interface::Database),
                slot: old.db.clone(),
            }),
            auth: old
                .auth
                .as_ref()
                .filter(|_| retire(Interface::Auth))
                .map(|a| Retired {
                    interface: Interface::Auth,
                    kind: kind(Interface::Auth),
                    slot: a.clone(),
                }),
            storage: retire(Interface::Storage).then(|| Retired {
                interface: Interface::Storage,
                kind: kind(Interface::Storage),
                slot: old.storage.clone(),
            }),
            realtime: retire(Interface::Realtime).then(|| Retired {
                interface: Interface::Realtime,
                kind: kind(Interface::Realtime),
                slot: old.realtime.clone(),
            }),
            jobs: old.not_in(new).jobs,
            replaced,
        }
    }

    /// The interfaces whose providers were replaced: the switched one first,
    /// then the dependents rebuilt with it.
    pub fn replaced(&self) -> &[Interface] {
        self.replaced
    }

    /// The old database provider, when the database was replaced.
    pub fn database(&self) -> Option<&Retired<dyn Database>> {
        self.database.as_ref()
    }

    /// The old auth provider, when auth was replaced and there was one.
    pub fn auth(&self) -> Option<&Retired<dyn Auth>> {
        self.auth.as_ref()
    }

    /// The old storage provider, when storage was replaced.
    pub fn storage(&self) -> Option<&Retired<dyn Storage>> {
        self.storage.as_ref()
    }

    /// The old realtime provider, when realtime was replaced.
    pub fn realtime(&self) -> Option<&Retired<dyn Realtime>> {
        self.realtime.as_ref()
    }

    /// The old jobs provider, when the database was replaced and the jobs
    /// were kept in it (`jobs.type = "database"`): the new one works on the
    /// new database. [`Switch::close`] closes the old one.
    pub fn jobs(&self) -> Option<&Arc<dyn Jobs>> {
        self.jobs.as_ref()
    }

    /// Each retired provider: interface, type name, calls running now.
    fn in_flight(&self) -> Vec<(Interface, &str, usize)> {
        let mut v = Vec::new();
        if let Some(r) = &self.database {
            v.push((r.interface, r.kind(), r.calls_in_flight()));
        }
        if let Some(r) = &self.auth {
            v.push((r.interface, r.kind(), r.calls_in_flight()));
        }
        if let Some(r) = &self.storage {
            v.push((r.interface, r.kind(), r.calls_in_flight()));
        }
        if let Some(r) = &self.realtime {
            v.push((r.interface, r.kind(), r.calls_in_flight()));
        }
        v
    }

    /// The calls still running on the retired providers, all together.
    pub fn calls_in_flight(&self) -> usize {
        self.in_flight().iter().map(|(_, _, n)| n).sum()
    }

    /// Waits until no call is running on any retired provider, at most
    /// `deadline`. Calls started through an old handle after the drain began
    /// are waited for too; streams and channels opened before are not calls.
    ///
    /// Past the deadline: [`ErrorKind::Timeout`], naming how many calls were
    /// still running on which provider.
    pub async fn drain(&self, deadline: Duration) -> Result<()> {
        let end = Instant::now() + deadline;
        let counters = [
            self.auth.as_ref().map(|r| &r.slot.calls),
            self.realtime.as_ref().map(|r| &r.slot.calls),
            self.storage.as_ref().map(|r| &r.slot.calls),
            // Last: auth and realtime calls may be calling the database.
            self.database.as_ref().map(|r| &r.slot.calls),
        ];
        // Until one pass finds every provider idle: a call may start on one
        // while waiting for another (through an old handle).
        loop {
            for calls in counters.iter().flatten() {
                let left = end.saturating_duration_since(Instant::now());
                if calls.idle(left).await.is_err() {
                    return Err(self.still_running(deadline));
                }
            }
            if self.calls_in_flight() == 0 {
                return Ok(());
            }
        }
    }

    fn still_running(&self, deadline: Duration) -> Error {
        let running: Vec<String> = self
            .in_flight()
            .into_iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(i, kind, n)| format!("{n} on the old {i} provider {kind:?}"))
            .collect();
        Error::new(
            ErrorKind::Timeout,
            format!(
                "drain: calls still running after {deadline:?}: {}; the old providers stay open",
                running.join(", ")
            ),
        )
        .with_retryable(true)
    }

    /// [`Switch::drain`], then closes the retired providers in the
    /// runtime's one order (as [`Services::close`] does): the old realtime
    /// provider (its servers stop listening; subscriptions made on it end),
    /// the old jobs provider, the old auth provider, and last the old
    /// database is disconnected. Every one is closed even when one fails;
    /// the first failure is returned, naming the interface. Closing is
    /// idempotent, so a second call retries only what failed.
    ///
    /// Past the deadline nothing is closed and the error says what is still
    /// running: close again, or disconnect [`Switch::database`] yourself to
    /// cut those calls short.
    pub async fn close(&self, deadline: Duration) -> Result<()> {
        self.drain(deadline).await?;
        Closing {
            realtime: self.realtime.as_ref().map(|r| Arc::clone(r.provider())),
            jobs: self.jobs.clone(),
            auth: self.auth.as_ref().map(|r| Arc::clone(r.provider())),
            db: self.database.as_ref().map(|r| Arc::clone(r.provider())),
        }
        .close()
        .await
    }
}

/// The switch of `switched` to `kind` is refused because the provider of
/// `failed` (the switched interface itself, or a dependent rebuilt with it)
/// could not be built or is unhealthy: `e` says why.
fn refused(
    switched: Interface,
    kind: &str,
    failed: Interface,
    failed_kind: &str,
    e: Error,
) -> Error {
    let message = if failed == switched {
        format!(
            "refusing to switch {switched} to provider {kind:?}: {}; the current provider stays \
             in place",
            e.message()
        )
    } else {
        format!(
            "refusing to switch {switched} to provider {kind:?}: the {failed} provider \
             {failed_kind:?} is built on the {switched} provider and could not be rebuilt on the \
             new one: {}; the current providers stay in place",
            e.message()
        )
    };
    Error::new(e.kind(), message)
        .with_retryable(e.is_retryable())
        .with_context("section", switched.as_str())
        .with_context("failed", failed.as_str())
}
