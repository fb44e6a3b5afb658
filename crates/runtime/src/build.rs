//! Provider registries and building the configured providers, each wrapped
//! in its section's layers.

use std::sync::Arc;

use serde_json::Value;
use truststream_core::{BoxFuture, Error, Registry, Result};
use truststream_core_auth::{Auth, AuthDeps, AuthRegistry};
use truststream_core_db::{Database, DbRegistry};
use truststream_core_jobs::{Jobs, JobsRegistry};
use truststream_core_realtime::{Realtime, RealtimeDeps, RealtimeRegistry};
use truststream_core_storage::{Storage, StorageRegistry};
use truststream_layer::{LayerDeps, LayerRegistry, ProviderBuilder, Stack};

use crate::closing::Closing;
use crate::config::{
    Config, Interface, ProviderSection, JOBS_NONE, JOBS_SECTION, LAYERS_KEY, NONE,
};
use crate::disabled::Disabled;
use crate::redact;

/// One provider registry per interface, and the layers.
///
/// [`Registries::compiled_in`] holds the providers and layers enabled as
/// cargo features of this crate; add your own with the `register` methods
/// of each field (see [`truststream_core::Registry::register`] and
/// [`LayerRegistry::register`]) or through [`crate::RuntimeBuilder`].
///
/// Building takes the registries in an [`Arc`] (`self: &Arc<Self>`): a
/// layer that needs a second provider (the composite's secondary) builds
/// it from these registries, through [`Registries::layer_deps`].
pub struct Registries {
    /// Database providers.
    pub database: DbRegistry,
    /// Auth providers (`auth.type = "none"` needs no entry).
    pub auth: AuthRegistry,
    /// Storage providers.
    pub storage: StorageRegistry,
    /// Realtime providers (built with the database and auth providers).
    pub realtime: RealtimeRegistry,
    /// Background jobs providers, built with the configured (layered)
    /// database (`jobs.type = "none"` needs no entry).
    pub jobs: JobsRegistry,
    /// Layers, by their name in a section's `layers` table.
    pub layers: LayerRegistry,
}

/// A provider wrapped in its section's layers, and those layers.
pub(crate) struct Layered<T: ?Sized> {
    pub(crate) provider: Arc<T>,
    pub(crate) stack: Stack,
}

impl Registries {
    /// Empty registries.
    pub fn empty() -> Self {
        Registries {
            database: Registry::new("database"),
            auth: Registry::new("auth"),
            storage: Registry::new("storage"),
            realtime: Registry::new("realtime"),
            jobs: Registry::new(JOBS_SECTION),
            layers: LayerRegistry::new(),
        }
    }

    /// The providers compiled in (cargo features `db-memory`, `db-sqlite`,
    /// `storage-memory`, `realtime-memory`, ...) and the layers compiled in
    /// (`layer-resilience`, `layer-metrics`, `layer-cache`,
    /// `layer-composite`).
    pub fn compiled_in() -> Self {
        #[allow(unused_mut)]
        let mut r = Self::empty();
        #[cfg(feature = "db-memory")]
        truststream_db_memory::register(&mut r.database);
        #[cfg(feature = "db-sqlite")]
        truststream_db_sqlite::register(&mut r.database);
        #[cfg(feature = "db-postgres")]
        truststream_db_postgres::register(&mut r.database);
        #[cfg(feature = "storage-memory")]
        truststream_storage_memory::register(&mut r.storage);
        #[cfg(feature = "storage-fs")]
        truststream_storage_fs::register(&mut r.storage);
        #[cfg(feature = "storage-s3")]
        truststream_storage_s3::register(&mut r.storage);
        #[cfg(feature = "realtime-memory")]
        truststream_realtime_memory::register(&mut r.realtime);
        #[cfg(feature = "realtime-ws")]
        truststream_realtime_ws::register(&mut r.realtime);
        #[cfg(feature = "realtime-socketio")]
        truststream_realtime_socketio::register(&mut r.realtime);
        #[cfg(feature = "auth-jwt")]
        truststream_auth_jwt::register(&mut r.auth);
        #[cfg(feature = "db-supabase")]
        register_db_supabase(&mut r.database);
        #[cfg(feature = "auth-supabase")]
        truststream_auth_supabase::register(&mut r.auth);
        #[cfg(feature = "storage-supabase")]
        truststream_storage_supabase::register(&mut r.storage);
        #[cfg(feature = "jobs-memory")]
        truststream_jobs_memory::register(&mut r.jobs);
        #[cfg(feature = "jobs-db")]
        truststream_jobs_db::register(&mut r.jobs);
        #[cfg(feature = "jobs-postgres")]
        truststream_jobs_postgres::register(&mut r.jobs);
        #[cfg(feature = "layer-resilience")]
        truststream_layer_resilience::register(&mut r.layers);
        #[cfg(feature = "layer-metrics")]
        truststream_layer_metrics::register(&mut r.layers);
        #[cfg(feature = "layer-cache")]
        truststream_layer_cache::register(&mut r.layers);
        #[cfg(feature = "layer-composite")]
        truststream_layer_composite::register(&mut r.layers);
        r
    }

    /// The known type names of `interface`, `none` (turned off) first.
    pub fn names(&self, interface: Interface) -> Vec<&'static str> {
        let mut n = vec![NONE];
        n.extend(match interface {
            Interface::Database => self.database.names(),
            Interface::Storage => self.storage.names(),
            Interface::Realtime => self.realtime.names(),
            Interface::Auth => self.auth.names(),
        });
        n
    }

    /// The known jobs provider types (`none` first).
    pub fn jobs_names(&self) -> Vec<&'static str> {
        let mut n = vec![JOBS_NONE];
        n.extend(self.jobs.names());
        n
    }

    /// Builds the jobs provider of `config` (the `[jobs]` section) with
    /// `db`, the configured database in its layers (`jobs.type =
    /// "database"` keeps its jobs there, so its `enqueue_operation` runs in
    /// that database's `transaction`); `None` when `jobs.type = "none"`.
    /// The jobs provider takes no layers.
    pub async fn build_jobs(
        &self,
        config: &Config,
        db: Option<Arc<dyn Database>>,
    ) -> Result<Option<Arc<dyn Jobs>>> {
        let s = config.jobs_section();
        let kind = s.kind();
        if kind == JOBS_NONE {
            return Ok(None);
        }
        database_needed(config, JOBS_SECTION, kind)?;
        let db = db.filter(|_| database_on(config));
        let jobs =
            build_section(&self.jobs, config, JOBS_SECTION, &self.jobs_names(), s, db).await?;
        Ok(Some(jobs))
    }

    /// What layers are built with: builders of database and storage
    /// providers from these registries (plain providers, without layers),
    /// for layers that need a second provider.
    pub fn layer_deps(self: &Arc<Self>) -> LayerDeps {
        // Second providers are built as the first: read-only in a health
        // check.
        let options = crate::report::build_options();
        let registries = Arc::clone(self);
        let database: ProviderBuilder<dyn Database> =
            Arc::new(move |kind: String, settings: Value| {
                let registries = Arc::clone(&registries);
                Box::pin(async move {
                    registries
                        .database
                        .build_with(&kind, settings, (), options)
                        .await
                }) as BoxFuture<'static, Result<Arc<dyn Database>>>
            });
        let registries = Arc::clone(self);
        let storage: ProviderBuilder<dyn Storage> =
            Arc::new(move |kind: String, settings: Value| {
                let registries = Arc::clone(&registries);
                Box::pin(async move {
                    registries
                        .storage
                        .build_with(&kind, settings, (), options)
                        .await
                }) as BoxFuture<'static, Result<Arc<dyn Storage>>>
            });
        LayerDeps {
            database: Some(database),
            storage: Some(storage),
        }
    }

    /// The layers of `interface` in `config`, outermost first. An unknown
    /// layer name or a bad value is `InvalidInput` naming the key
    /// (`database.layers.retry`) and where it was set.
    pub fn stack(self: &Arc<Self>, config: &Config, interface: Interface) -> Result<Stack> {
        let section = config.section(interface);
        self.layers
            .stack(interface, section.layers(), &self.layer_deps())
            .map_err(|e| layer_error(e, config, interface, section))
    }

    /// Builds the database provider of `config`, in its layers.
    pub async fn build_database(self: &Arc<Self>, config: &Config) -> Result<Arc<dyn Database>> {
        Ok(self.database_layered(config).await?.provider)
    }

    pub(crate) async fn database_layered(
        self: &Arc<Self>,
        config: &Config,
    ) -> Result<Layered<dyn Database>> {
        let i = Interface::Database;
        let stack = self.stack(config, i)?;
        let s = config.section(i);
        if config.is_off(i) {
            return Ok(Layered {
                provider: Disabled::database(config),
                stack: Stack::empty(i),
            });
        }
        #[cfg(feature = "db-supabase")]
        let db = {
            let feed = self.supabase_change_feed(config).await?;
            SUPABASE_FEED
                .scope(feed, build(&self.database, self, config, i, s, ()))
                .await?
        };
        #[cfg(not(feature = "db-supabase"))]
        let db = build(&self.database, self, config, i, s, ()).await?;
        match stack.wrap_database(Arc::clone(&db)).await {
            Ok(provider) => Ok(Layered { provider, stack }),
            Err(e) => {
                // Built for nothing: let it go before its owner learns why.
                let _ = db.disconnect().await;
                Err(layer_error(e, config, i, s))
            }
        }
    }

    /// `database.type = "supabase"` with a realtime section that is a
    /// client of a remote server (`type = "ws"` with `url`, e.g. the
    /// project's `/realtime/v1/websocket`): a realtime client of its own
    /// (in the realtime section's layers) for the database's change feed,
    /// built before the database (a client needs neither database nor
    /// auth). Any other realtime section feeds on the database, so it
    /// cannot also feed it: `None`.
    #[cfg(feature = "db-supabase")]
    async fn supabase_change_feed(
        self: &Arc<Self>,
        config: &Config,
    ) -> Result<Option<Arc<dyn Realtime>>> {
        let rt = config.section(Interface::Realtime);
        let client =
            rt.kind() == "ws" && rt.settings_json().get("url").is_some_and(|u| !u.is_null());
        if config.section(Interface::Database).kind() != "supabase" || !client {
            return Ok(None);
        }
        let deps = RealtimeDeps {
            db: None,
            auth: None,
        };
        Ok(Some(self.realtime_layered(config, deps).await?.provider))
    }

    /// Builds the auth provider of `config`, in its layers, on `db`;
    /// `None` when `auth.type = "none"`.
    pub async fn build_auth(
        self: &Arc<Self>,
        config: &Config,
        db: Option<Arc<dyn Database>>,
    ) -> Result<Option<Arc<dyn Auth>>> {
        Ok(self.auth_layered(config, db).await?.map(|a| a.provider))
    }

    pub(crate) async fn auth_layered(
        self: &Arc<Self>,
        config: &Config,
        db: Option<Arc<dyn Database>>,
    ) -> Result<Option<Layered<dyn Auth>>> {
        let i = Interface::Auth;
        let s = config.section(i);
        // Checked even with no provider: a misspelt layer is an error.
        let stack = self.stack(config, i)?;
        if config.is_off(i) {
            return Ok(None);
        }
        database_needed(config, i.as_str(), s.kind())?;
        let db = db.filter(|_| database_on(config));
        let auth = build(&self.auth, self, config, i, s, AuthDeps { db }).await?;
        let provider = stack
            .wrap_auth(auth)
            .await
            .map_err(|e| layer_error(e, config, i, s))?;
        Ok(Some(Layered { provider, stack }))
    }

    /// Builds the storage provider of `config`, in its layers.
    pub async fn build_storage(self: &Arc<Self>, config: &Config) -> Result<Arc<dyn Storage>> {
        Ok(self.storage_layered(config).await?.provider)
    }

    pub(crate) async fn storage_layered(
        self: &Arc<Self>,
        config: &Config,
    ) -> Result<Layered<dyn Storage>> {
        let i = Interface::Storage;
        let s = config.section(i);
        let stack = self.stack(config, i)?;
        if config.is_off(i) {
            return Ok(Layered {
                provider: Disabled::storage(config),
                stack: Stack::empty(i),
            });
        }
        let storage = build(&self.storage, self, config, i, s, ()).await?;
        let provider = stack
            .wrap_storage(storage)
            .await
            .map_err(|e| layer_error(e, config, i, s))?;
        Ok(Layered { provider, stack })
    }

    /// Builds the realtime provider of `config`, in its layers, wired to
    /// `deps`.
    pub async fn build_realtime(
        self: &Arc<Self>,
        config: &Config,
        deps: RealtimeDeps,
    ) -> Result<Arc<dyn Realtime>> {
        Ok(self.realtime_layered(config, deps).await?.provider)
    }

    pub(crate) async fn realtime_layered(
        self: &Arc<Self>,
        config: &Config,
        mut deps: RealtimeDeps,
    ) -> Result<Layered<dyn Realtime>> {
        let i = Interface::Realtime;
        let s = config.section(i);
        let stack = self.stack(config, i)?;
        if config.is_off(i) {
            return Ok(Layered {
                provider: Disabled::realtime(config),
                stack: Stack::empty(i),
            });
        }
        // No row change feed from a turned-off database.
        deps.db = deps.db.filter(|_| database_on(config));
        let realtime = build(&self.realtime, self, config, i, s, deps).await?;
        let provider = stack
            .wrap_realtime(realtime)
            .await
            .map_err(|e| layer_error(e, config, i, s))?;
        Ok(Layered { provider, stack })
    }
}

impl Default for Registries {
    fn default() -> Self {
        Self::compiled_in()
    }
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("database", &self.database.names())
            .field("auth", &self.names(Interface::Auth))
            .field("storage", &self.storage.names())
            .field("realtime", &self.realtime.names())
            .field("jobs", &self.jobs_names())
            .field("layers", &self.layers.names())
            .finish()
    }
}

/// A layer's error (a bad setting, a second provider that could not be
/// built): scrubbed of the section's secrets (provider and layer settings),
/// named by its key (`database.layers...`), and told where the layer was
/// set.
fn layer_error(
    e: Error,
    config: &Config,
    interface: Interface,
    section: &ProviderSection,
) -> Error {
    let raw = redact::scrub(e.message(), &section.secrets());
    let prefix = format!("{interface}.{LAYERS_KEY}");
    let mut message = if raw.contains(&prefix) {
        raw
    } else {
        format!("{prefix}: {raw}")
    };
    message = joined_key(&message, &prefix);
    let set_in = section.layers().keys().find_map(|name| {
        let key = format!("{prefix}.{name}");
        let named = message.match_indices(&key).any(|(at, _)| {
            !message[at + key.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        });
        named.then(|| config.origin(&key)).flatten()
    });
    if let Some(origin) = set_in {
        message = format!("{message} (set in {origin})");
    }
    Error::new(e.kind(), message).with_retryable(e.is_retryable())
}

/// `database.layers.retry: attempts: expected ...` (the registry names the
/// layer, the layer names its setting) -> `database.layers.retry.attempts:
/// expected ...`: one key, as in the file.
fn joined_key(message: &str, prefix: &str) -> String {
    let Some(rest) = message
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
    else {
        return message.to_string();
    };
    let Some((layer, after)) = rest.split_once(": ") else {
        return message.to_string();
    };
    let Some((field, reason)) = after.split_once(": ") else {
        return message.to_string();
    };
    let is_key = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
    };
    if is_key(layer) && is_key(field) {
        format!("{prefix}.{layer}.{field}: {reason}")
    } else {
        message.to_string()
    }
}

/// Whether the database is on (`database.type` is not `"none"`).
pub(crate) fn database_on(config: &Config) -> bool {
    !config.is_off(Interface::Database)
}

/// A provider of this workspace that keeps its data in the configured
/// database (auth `jwt`, jobs `database`), configured with the database
/// turned off: `InvalidInput` naming both keys and where each was set.
pub(crate) fn database_needed(config: &Config, section: &str, kind: &str) -> Result<()> {
    let keeps = match (section, kind) {
        ("auth", "jwt") => "keeps its users and sessions in the configured database",
        (JOBS_SECTION, "database") => "keeps its jobs in the configured database",
        _ => return Ok(()),
    };
    if database_on(config) {
        return Ok(());
    }
    Err(Error::invalid_input(format!(
        "`{section}.type = {kind:?}` ({}) {keeps}, but `database.type = \"{NONE}\"` ({}): set \
         `database.type` to a database provider, or `{section}.type` to a provider that needs \
         no database",
        set_in(config, section, "type"),
        set_in(config, "database", "type")
    )))
}

/// Builds the section of `interface` from `registry` (see
/// [`build_section`]).
pub(crate) async fn build<T: ?Sized, C>(
    registry: &Registry<T, C>,
    all: &Registries,
    config: &Config,
    interface: Interface,
    section: &ProviderSection,
    deps: C,
) -> Result<Arc<T>> {
    let known = all.names(interface);
    build_section(registry, config, interface.as_str(), &known, section, deps).await
}

/// Builds `section` (the one named `name`, whose known provider types are
/// `known`) from `registry`, turning the failures a person can fix into
/// messages naming the configuration key and environment variable.
async fn build_section<T: ?Sized, C>(
    registry: &Registry<T, C>,
    config: &Config,
    name: &str,
    known: &[&str],
    section: &ProviderSection,
    deps: C,
) -> Result<Arc<T>> {
    let kind = section.kind();
    if !registry.contains(kind) {
        let from = config
            .origin(&format!("{name}.type"))
            .map(|o| format!(" (set in {o})"))
            .unwrap_or_default();
        if let Some(feature) = feature_of(name, kind) {
            return Err(Error::invalid_input(format!(
                "{name}.type: the {name} provider {kind:?}{from} is not compiled in: enable \
                 the cargo feature `{feature}` of truststream-runtime (or of the truststream \
                 crate); compiled in: {}",
                known.join(", ")
            )));
        }
        return Err(Error::invalid_input(format!(
            "{name}.type: unknown {name} provider type {kind:?}{from}; known types: {}. \
             Providers are compiled in as cargo features of truststream-runtime; {}",
            known.join(", "),
            config.where_to_set(name, "type")
        )));
    }
    let secrets = section.secrets();
    // Read-only inside a health check (`report::read_only`).
    let options = crate::report::build_options();
    registry
        .build_with(kind, section.settings_json(), deps, options)
        .await
        .map_err(|e| explain(e, config, name, kind, &secrets))
}

/// The cargo feature of truststream-runtime that compiles in the provider
/// `kind` of section `section`, for the providers this workspace ships.
fn feature_of(section: &str, kind: &str) -> Option<&'static str> {
    Some(match (section, kind) {
        ("database", "memory") => "db-memory",
        ("database", "sqlite") => "db-sqlite",
        ("database", "postgres") => "db-postgres",
        ("database", "supabase") => "db-supabase",
        ("storage", "memory") => "storage-memory",
        ("storage", "fs") => "storage-fs",
        ("storage", "s3") => "storage-s3",
        ("storage", "supabase") => "storage-supabase",
        ("realtime", "memory") => "realtime-memory",
        ("realtime", "ws") => "realtime-ws",
        ("realtime", "socketio" | "socket-io") => "realtime-socketio",
        ("auth", "jwt") => "auth-jwt",
        ("auth", "supabase") => "auth-supabase",
        (JOBS_SECTION, "memory") => "jobs-memory",
        (JOBS_SECTION, "database") => "jobs-db",
        (JOBS_SECTION, "postgres") => "jobs-postgres",
        _ => return None,
    })
}

/// Rewrites a provider's build error: a missing or unknown setting names the
/// full key, the environment variable and the profile; every message is
/// scrubbed of the section's secret values.
fn explain(e: Error, config: &Config, interface: &str, kind: &str, secrets: &[String]) -> Error {
    let raw = redact::scrub(e.message(), secrets);
    // The setting's path inside the section, when the provider's config
    // type said which one failed (truststream_core::parse_config).
    let path = e
        .context()
        .iter()
        .find(|(k, _)| *k == truststream_core::SETTING_PATH)
        .map(|(_, p)| p.as_str());
    let message = if let Some(field) = backticked_after(&raw, "missing field `") {
        let field = match path {
            Some(table) => format!("{table}.{field}"),
            None => field,
        };
        format!(
            "missing required setting `{interface}.{field}` for the {interface} provider {kind:?}: {}",
            config.where_to_set(interface, &field)
        )
    } else if let Some(path) = path.filter(|_| !raw.contains("unknown field `")) {
        let key = format!("{interface}.{path}");
        let reason = raw
            .split_once(&format!("{path}: "))
            .map_or(raw.as_str(), |(_, reason)| reason);
        let set_in = match config.origin_detail(&key) {
            Some(origin) => format!("set in {origin}"),
            None => config.where_to_set(interface, path),
        };
        format!(
            "`{key}`: {reason}; {set_in} (the {interface} provider {kind:?}, profile {:?})",
            config.profile()
        )
    } else if let Some(field) = backticked_after(&raw, "unknown field `") {
        // An unknown field's path is the field itself, with the tables
        // above it (`argon2.bogus`).
        let field = path.map_or(field, str::to_string);
        format!(
            "unknown setting `{interface}.{field}` for the {interface} provider {kind:?} \
             (profile {:?}): {raw}",
            config.profile()
        )
    } else if let Some(setting) = setting_of(&e) {
        // A provider that failed on one of its settings (a file it cannot
        // open, an address it cannot listen on, a server it cannot reach).
        let key = format!("{interface}.{setting}");
        format!(
            "`{key}`: {raw}; {} (the {interface} provider {kind:?}, profile {:?})",
            set_in(config, interface, setting),
            config.profile()
        )
    } else {
        format!(
            "the {interface} provider {kind:?} could not be built (profile {:?}): {raw}",
            config.profile()
        )
    };
    Error::new(e.kind(), message).with_retryable(e.is_retryable())
}

pub(crate) use truststream_core::SETTING;

/// The setting a provider's error names ([`SETTING`]), when it names one
/// by its path inside the section; the last one added wins (a wrapper
/// knows better: db-supabase's `pooler_url` is db-postgres's `url`).
pub(crate) fn setting_of(e: &Error) -> Option<&str> {
    e.context()
        .iter()
        .rev()
        .find(|(k, _)| *k == SETTING)
        .map(|(_, v)| v.as_str())
        .filter(|s| {
            !s.is_empty()
                && s.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
        })
}

/// Where `section.field` was set (`set in truststream.toml, table
/// [production.database]`), or, for a provider's default, where to set it.
pub(crate) fn set_in(config: &Config, section: &str, field: &str) -> String {
    match config.origin_detail(&format!("{section}.{field}")) {
        Some(origin) => format!("set in {origin}"),
        None => format!("the default value; {}", config.where_to_set(section, field)),
    }
}

/// The text between `prefix` and the next backtick.
fn backticked_after(s: &str, prefix: &str) -> Option<String> {
    let start = s.find(prefix)? + prefix.len();
    let len = s[start..].find('`')?;
    Some(s[start..start + len].to_string())
}

/// What the realtime provider is built with: the database (its row change
/// feed) and the auth provider (token checks).
pub(crate) fn realtime_deps(db: Arc<dyn Database>, auth: Option<Arc<dyn Auth>>) -> RealtimeDeps {
    RealtimeDeps { db: Some(db), auth }
}

/// The four configured services, built from a [`Config`].
///
/// `auth` is an `Option` because no auth provider is required: the default
/// configuration has `auth.type = "none"`; `auth.type = "jwt"` (feature
/// `auth-jwt`) keeps its users in the configured database. The database,
/// storage and realtime can be turned off too (`type = "none"`): their
/// field then holds a provider that refuses every call with
/// `Unsupported`, naming the key that turned it off.
#[derive(Clone)]
pub struct Services {
    /// The database provider.
    pub db: Arc<dyn Database>,
    /// The storage provider.
    pub storage: Arc<dyn Storage>,
    /// The realtime provider, wired to `db` (row change feed) and `auth`.
    pub realtime: Arc<dyn Realtime>,
    /// The auth provider; `None` when `auth.type = "none"`.
    pub auth: Option<Arc<dyn Auth>>,
    /// The background jobs provider (on `db` for `jobs.type =
    /// "database"`); `None` when `jobs.type = "none"` (the default).
    pub jobs: Option<Arc<dyn Jobs>>,
}

impl Services {
    /// Builds every configured provider, each in its section's layers:
    /// database, then auth (given the layered database), storage,
    /// realtime (given the layered database and auth), and jobs (given
    /// the layered database; none unless `[jobs]` names a type). When a later
    /// provider fails, the ones already built are closed (as
    /// [`Services::close`] does) before the error is returned.
    pub async fn build(registries: &Arc<Registries>, config: &Config) -> Result<Self> {
        let mut built = Closing::default();
        match Self::build_into(registries, config, &mut built).await {
            Ok(services) => Ok(services),
            Err(e) => built.abandon(e).await,
        }
    }

    /// [`Services::build`], noting each provider in `built` as soon as it
    /// exists, so that a later failure can close it.
    async fn build_into(
        registries: &Arc<Registries>,
        config: &Config,
        built: &mut Closing,
    ) -> Result<Self> {
        let db = registries.build_database(config).await?;
        built.db = Some(db.clone());
        let auth = registries.build_auth(config, Some(db.clone())).await?;
        built.auth = auth.clone();
        let storage = registries.build_storage(config).await?;
        let realtime = registries
            .build_realtime(config, realtime_deps(db.clone(), auth.clone()))
            .await?;
        built.realtime = Some(realtime.clone());
        let jobs = registries.build_jobs(config, Some(db.clone())).await?;
        Ok(Services {
            db,
            storage,
            realtime,
            auth,
            jobs,
        })
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("db", &self.db.info())
            .field("storage", &self.storage.info())
            .field("realtime", &self.realtime.info())
            .field("auth", &self.auth.as_ref().map(|a| a.info()))
            .field("jobs", &self.jobs.as_ref().map(|j| j.info()))
            .finish()
    }
}

#[cfg(feature = "db-supabase")]
tokio::task_local! {
    /// The realtime client a `type = "supabase"` database being built
    /// takes its change feed from (set by `database_layered` around the
    /// factory call; unset when the factory is called another way).
    static SUPABASE_FEED: Option<Arc<dyn Realtime>>;
}

/// `database.type = "supabase"`: the REST client, and, when `pooler_url`
/// is set, db-postgres through that transaction-mode pooler (Supavisor) as
/// its SQL backend (raw SQL, transactions, schema changes, joins,
/// aggregates; everything with `prefer = "sql"`); when the realtime
/// section is a client of the project (`Registries::supabase_change_feed`),
/// a realtime client of its own as its change feed. The providers stay
/// independent: the runtime joins them.
#[cfg(feature = "db-supabase")]
fn register_db_supabase(reg: &mut DbRegistry) {
    use truststream_db_postgres::{PgConfig, PgDatabase, Pooler};
    use truststream_db_supabase::{SupabaseDb, SupabaseDbConfig};
    reg.register("supabase", |cfg, ()| async move {
        let cfg: SupabaseDbConfig = truststream_core::parse_config("supabase", cfg)?;
        let pooler = cfg.pooler_url.clone();
        let schema = cfg.schema.clone().filter(|s| s != "public");
        let db = SupabaseDb::new(cfg)?;
        let db = match pooler {
            None => db,
            Some(url) => {
                let mut pg = PgConfig::new(url.expose()).with_pooler(Pooler::Transaction);
                pg.schema = schema;
                let pg = PgDatabase::open(pg)
                    .await
                    .map_err(|e| e.with_context(SETTING, "pooler_url"))?;
                db.with_sql(Arc::new(pg))
            }
        };
        let db = match SUPABASE_FEED.try_with(Clone::clone).ok().flatten() {
            Some(rt) => db.with_change_feed(rt),
            None => db,
        };
        Ok(Arc::new(db) as Arc<dyn Database>)
    });
}

#[cfg(test)]
mod tests {
    use super::joined_key;

    #[test]
    fn a_layer_setting_is_named_by_its_whole_key() {
        let p = "database.layers";
        assert_eq!(
            joined_key("database.layers.retry: attempts: invalid type", p),
            "database.layers.retry.attempts: invalid type"
        );
        assert_eq!(
            joined_key("database.layers.composite: secondary.url: missing", p),
            "database.layers.composite.secondary.url: missing"
        );
        for unchanged in [
            "database.layers.retry: attempts must be at least 1",
            "database.layers.retry: the budget: is short",
            "unknown layer database.layers.retyr; known layers: retry",
            "database.layers: cannot build the secondary: refused",
        ] {
            assert_eq!(joined_key(unchanged, p), unchanged);
        }
    }
}
