//! Provider registries and building the configured providers.

use std::sync::Arc;

use truststream_core::{Error, Registry, Result};
use truststream_core_auth::{Auth, AuthDeps, AuthRegistry};
use truststream_core_db::{Database, DbRegistry};
use truststream_core_realtime::{Realtime, RealtimeDeps, RealtimeRegistry};
use truststream_core_storage::{Storage, StorageRegistry};

use crate::config::{Config, Interface, ProviderSection, AUTH_NONE};
use crate::redact;

/// One provider registry per interface.
///
/// [`Registries::compiled_in`] holds the providers enabled as cargo features
/// of this crate; add your own with the `register` methods of each field
/// (see [`truststream_core::Registry::register`]) or through
/// [`crate::RuntimeBuilder`].
pub struct Registries {
    /// Database providers.
    pub database: DbRegistry,
    /// Auth providers (`auth.type = "none"` needs no entry).
    pub auth: AuthRegistry,
    /// Storage providers.
    pub storage: StorageRegistry,
    /// Realtime providers (built with the database and auth providers).
    pub realtime: RealtimeRegistry,
}

impl Registries {
    /// Empty registries.
    pub fn empty() -> Self {
        Registries {
            database: Registry::new("database"),
            auth: Registry::new("auth"),
            storage: Registry::new("storage"),
            realtime: Registry::new("realtime"),
        }
    }

    /// The providers compiled in (cargo features `db-memory`, `db-sqlite`,
    /// `storage-memory`, `realtime-memory`, ...).
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
        #[cfg(feature = "auth-jwt")]
        truststream_auth_jwt::register(&mut r.auth);
        r
    }

    /// The known type names of `interface` (auth includes `none`).
    pub fn names(&self, interface: Interface) -> Vec<&'static str> {
        match interface {
            Interface::Database => self.database.names(),
            Interface::Storage => self.storage.names(),
            Interface::Realtime => self.realtime.names(),
            Interface::Auth => {
                let mut n = vec![AUTH_NONE];
                n.extend(self.auth.names());
                n
            }
        }
    }

    /// Builds the database provider of `config`.
    pub async fn build_database(&self, config: &Config) -> Result<Arc<dyn Database>> {
        let s = config.section(Interface::Database);
        build(&self.database, self, config, Interface::Database, s, ()).await
    }

    /// Builds the auth provider of `config`; `None` when `auth.type = "none"`.
    pub async fn build_auth(
        &self,
        config: &Config,
        db: Option<Arc<dyn Database>>,
    ) -> Result<Option<Arc<dyn Auth>>> {
        let s = config.section(Interface::Auth);
        if s.kind() == AUTH_NONE {
            return Ok(None);
        }
        build(
            &self.auth,
            self,
            config,
            Interface::Auth,
            s,
            AuthDeps { db },
        )
        .await
        .map(Some)
    }

    /// Builds the storage provider of `config`.
    pub async fn build_storage(&self, config: &Config) -> Result<Arc<dyn Storage>> {
        let s = config.section(Interface::Storage);
        build(&self.storage, self, config, Interface::Storage, s, ()).await
    }

    /// Builds the realtime provider of `config`, wired to `deps`.
    pub async fn build_realtime(
        &self,
        config: &Config,
        deps: RealtimeDeps,
    ) -> Result<Arc<dyn Realtime>> {
        let s = config.section(Interface::Realtime);
        build(&self.realtime, self, config, Interface::Realtime, s, deps).await
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
            .finish()
    }
}

/// Builds `section` from `registry`, turning the failures a person can fix
/// into messages naming the configuration key and environment variable.
pub(crate) async fn build<T: ?Sized, C>(
    registry: &Registry<T, C>,
    all: &Registries,
    config: &Config,
    interface: Interface,
    section: &ProviderSection,
    deps: C,
) -> Result<Arc<T>> {
    let kind = section.kind();
    if !registry.contains(kind) {
        let from = config
            .origin(&format!("{interface}.type"))
            .map(|o| format!(" (set in {o})"))
            .unwrap_or_default();
        return Err(Error::invalid_input(format!(
            "{interface}.type: unknown {interface} provider type {kind:?}{from}; known types: {}. \
             Providers are compiled in as cargo features of truststream-runtime; {}",
            all.names(interface).join(", "),
            config.where_to_set(interface, "type")
        )));
    }
    let secrets = redact::secret_values(&section.settings_json());
    registry
        .build(kind, section.settings_json(), deps)
        .await
        .map_err(|e| explain(e, config, interface, kind, &secrets))
}

/// Rewrites a provider's build error: a missing or unknown setting names the
/// full key, the environment variable and the profile; every message is
/// scrubbed of the section's secret values.
fn explain(
    e: Error,
    config: &Config,
    interface: Interface,
    kind: &str,
    secrets: &[String],
) -> Error {
    let raw = redact::scrub(e.message(), secrets);
    let message = if let Some(field) = backticked_after(&raw, "missing field `") {
        format!(
            "missing required setting `{interface}.{field}` for the {interface} provider {kind:?}: {}",
            config.where_to_set(interface, &field)
        )
    } else if let Some(field) = backticked_after(&raw, "unknown field `") {
        format!(
            "unknown setting `{interface}.{field}` for the {interface} provider {kind:?} \
             (profile {:?}): {raw}",
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
/// `auth-jwt`) keeps its users in the configured database.
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
}

impl Services {
    /// Builds every configured provider: database, then auth (given the
    /// database), storage, and realtime (given database and auth).
    pub async fn build(registries: &Registries, config: &Config) -> Result<Self> {
        let db = registries.build_database(config).await?;
        let auth = registries.build_auth(config, Some(db.clone())).await?;
        let storage = registries.build_storage(config).await?;
        let realtime = registries
            .build_realtime(config, realtime_deps(db.clone(), auth.clone()))
            .await?;
        Ok(Services {
            db,
            storage,
            realtime,
            auth,
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
            .finish()
    }
}
