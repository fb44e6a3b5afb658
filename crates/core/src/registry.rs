//! Provider factories by type name, the way configuration picks providers.
//!
//! Each interface crate names its registry (`DbRegistry`, `StorageRegistry`,
//! ...). A provider crate exports `register(&mut XxxRegistry)`, which adds a
//! factory under the provider's type name; the runtime registers the providers
//! compiled in and builds the configured one.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Error, Result};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Builds a provider from its configuration section (a JSON value, deserialized
/// by the provider into its own `Config`), the interface's dependencies `C`
/// and how the caller wants it built ([`BuildOptions`]).
pub type Factory<T, C> = Arc<
    dyn Fn(serde_json::Value, C, BuildOptions) -> BoxFuture<'static, Result<Arc<T>>> + Send + Sync,
>;

/// How a provider is built: what the caller lets it do while it starts.
///
/// The default is an ordinary build. The runtime builds with
/// [`BuildOptions::read_only`] for the check that must leave the services
/// as it found them (`truststream health`); `truststream check` builds
/// as usual (it may create a provider's tables or files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuildOptions {
    /// Build without writing to the provider's store: no tables, indexes,
    /// sequences, triggers, schemas or database files created, no
    /// migrations run, no background writers started. A provider that
    /// finds something missing builds anyway and says so from its
    /// `health()` (unhealthy, naming what is missing and how to create
    /// it) instead of creating it. A provider registered with
    /// [`Registry::register`] is built as usual (it has nothing to skip);
    /// one that writes while it starts registers with
    /// [`Registry::register_with_options`] and honours this.
    pub read_only: bool,
}

impl BuildOptions {
    /// A build that writes nothing (see [`BuildOptions::read_only`]).
    pub fn read_only() -> Self {
        BuildOptions { read_only: true }
    }
}

/// Provider factories of one interface, by type name.
pub struct Registry<T: ?Sized, C = ()> {
    interface: &'static str,
    factories: BTreeMap<&'static str, Factory<T, C>>,
}

impl<T: ?Sized, C> Registry<T, C> {
    /// An empty registry for `interface` (`"database"`, used in messages).
    pub fn new(interface: &'static str) -> Self {
        Registry {
            interface,
            factories: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the factory for `name`: a provider that writes
    /// nothing while it is built (see [`BuildOptions`]; otherwise use
    /// [`Registry::register_with_options`]).
    pub fn register<F, Fut>(&mut self, name: &'static str, factory: F)
    where
        F: Fn(serde_json::Value, C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<T>>> + Send + 'static,
    {
        self.factories.insert(
            name,
            Arc::new(move |cfg, ctx, _| Box::pin(factory(cfg, ctx))),
        );
    }

    /// Adds (or replaces) the factory for `name`, which is told how to
    /// build ([`BuildOptions`]: a read-only build creates nothing).
    pub fn register_with_options<F, Fut>(&mut self, name: &'static str, factory: F)
    where
        F: Fn(serde_json::Value, C, BuildOptions) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<T>>> + Send + 'static,
    {
        self.factories.insert(
            name,
            Arc::new(move |cfg, ctx, options| Box::pin(factory(cfg, ctx, options))),
        );
    }

    /// The registered type names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.factories.keys().copied().collect()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Builds the provider registered as `name`. An unknown name is
    /// [`crate::ErrorKind::InvalidInput`] listing the known ones.
    pub async fn build(&self, name: &str, config: serde_json::Value, deps: C) -> Result<Arc<T>> {
        self.build_with(name, config, deps, BuildOptions::default())
            .await
    }

    /// [`Registry::build`] with `options` (e.g. [`BuildOptions::read_only`]).
    pub async fn build_with(
        &self,
        name: &str,
        config: serde_json::Value,
        deps: C,
        options: BuildOptions,
    ) -> Result<Arc<T>> {
        let Some(f) = self.factories.get(name) else {
            return Err(Error::invalid_input(format!(
                "unknown {} provider type {:?}; known types: {}",
                self.interface,
                crate::echo(name).to_string(),
                self.names().join(", ")
            )));
        };
        f(config, deps, options)
            .await
            .map_err(|e| e.with_context("provider", name.to_string()))
    }
}

impl<T: ?Sized, C> std::fmt::Debug for Registry<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("interface", &self.interface)
            .field("types", &self.names())
            .finish()
    }
}

/// Deserializes a provider's configuration section, turning serde's error into
/// an [`crate::ErrorKind::InvalidInput`] that names the provider and the
/// setting's path inside the section (see [`parse_settings`]), so that the
/// runtime can name the whole key (`database.max_connections`) and where it
/// was set.
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// struct PoolConfig { max_connections: u32 }
///
/// let e = truststream_core::parse_config::<PoolConfig>(
///     "postgres",
///     serde_json::json!({"max_connections": "many"}),
/// )
/// .unwrap_err();
/// assert_eq!(
///     e.message(),
///     "invalid configuration for provider \"postgres\": max_connections: invalid type: expected u32"
/// );
/// assert_eq!(e.context(), [(truststream_core::SETTING_PATH, "max_connections".to_string())]);
/// ```
pub fn parse_config<T: serde::de::DeserializeOwned>(
    provider: &str,
    config: serde_json::Value,
) -> Result<T> {
    parse_settings(config).map_err(|e| {
        let message = format!(
            "invalid configuration for provider {provider:?}: {}",
            e.message()
        );
        let mut out = Error::invalid_input(message);
        for (k, v) in e.context() {
            out = out.with_context(k, v.clone());
        }
        out
    })
}

/// The context key under which a provider names the setting an error is
/// about, by its name inside the provider's own section (`path`, `url`,
/// `listen`, `root`): the runtime turns it into the whole key
/// (`database.path`) and says where that key was set.
///
/// ```
/// use truststream_core::{Error, SETTING};
/// let e = Error::invalid_input("cannot open the file").with_context(SETTING, "path");
/// assert_eq!(e.context(), [("setting", "path".to_string())]);
/// ```
pub const SETTING: &str = "setting";

/// The context key under which [`parse_settings`] and [`parse_config`] put
/// the path of the setting that failed, inside the section they were given
/// (`max_connections`, `pool.idle_timeout_secs`, `roles[0]`).
pub const SETTING_PATH: &str = "setting_path";

/// Deserializes a table of settings (`{}` for null) into `T`: a bad value
/// is `InvalidInput` whose message starts with the path of the setting
/// inside the table (`attempts: invalid type: expected u32`), with that
/// path also as the [`SETTING_PATH`] context, and without quoting the value
/// itself (it may be a secret; see [`without_values`]).
///
/// ```
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct RetryConfig { attempts: u32 }
///
/// let e = truststream_core::parse_settings::<RetryConfig>(serde_json::json!({"attempts": "x"}))
///     .unwrap_err();
/// assert_eq!(e.message(), "attempts: invalid type: expected u32");
/// ```
pub fn parse_settings<T: serde::de::DeserializeOwned>(settings: serde_json::Value) -> Result<T> {
    let settings = if settings.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        settings
    };
    serde_path_to_error::deserialize(settings).map_err(|e| {
        let path = e.path().to_string();
        let message = without_values(&e.inner().to_string());
        // No path (the table itself), or one serde could not follow.
        if path == "." || path == "?" || path.is_empty() {
            return Error::invalid_input(message);
        }
        // An unknown field's path is the field itself, which serde's
        // message already names; a missing field's path is its table.
        let error = if message.starts_with("unknown field") {
            Error::invalid_input(message)
        } else {
            Error::invalid_input(format!("{path}: {message}"))
        };
        error.with_context(SETTING_PATH, path)
    })
}

/// serde's messages quote the offending value (`invalid type: string "hunter2",
/// expected ...`, `unknown variant `hunter2`, expected one of ...`), and that
/// value may be a secret: keep only what was expected. Field names
/// (`missing field `x``, `unknown field `x``) are kept.
///
/// ```
/// use truststream_core::without_values;
/// assert_eq!(
///     without_values("invalid type: string \"hunter2\", expected u16"),
///     "invalid type: expected u16"
/// );
/// assert_eq!(
///     without_values("unknown variant `hunter2`, expected `HS256` or `RS256`"),
///     "unknown variant: expected `HS256` or `RS256`"
/// );
/// ```
pub fn without_values(msg: &str) -> String {
    for kind in [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
    ] {
        if let Some(rest) = msg.strip_prefix(kind) {
            return match rest.rfind(", expected ") {
                Some(i) => format!("{kind}: expected {}", &rest[i + ", expected ".len()..]),
                None => kind.to_string(),
            };
        }
    }
    msg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Thing: Send + Sync {}
    struct One;
    impl Thing for One {}

    #[test]
    fn unknown_lists_known() {
        let mut r: Registry<dyn Thing> = Registry::new("thing");
        r.register("one", |_, ()| async { Ok(Arc::new(One) as Arc<dyn Thing>) });
        r.register("alpha", |_, ()| async {
            Ok(Arc::new(One) as Arc<dyn Thing>)
        });
        let e = block_on(r.build("oracle", serde_json::Value::Null, ()))
            .err()
            .unwrap();
        assert_eq!(
            e.message(),
            "unknown thing provider type \"oracle\"; known types: alpha, one"
        );
    }

    #[test]
    fn a_factory_registered_with_options_is_told_how_to_build() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut r: Registry<dyn Thing> = Registry::new("thing");
        let log = seen.clone();
        r.register_with_options("writer", move |_, (), options: BuildOptions| {
            log.lock().unwrap().push(options.read_only);
            async { Ok(Arc::new(One) as Arc<dyn Thing>) }
        });
        block_on(r.build("writer", serde_json::Value::Null, ())).unwrap();
        block_on(r.build_with(
            "writer",
            serde_json::Value::Null,
            (),
            BuildOptions::read_only(),
        ))
        .unwrap();
        assert_eq!(*seen.lock().unwrap(), [false, true]);
    }

    #[test]
    fn config_errors_do_not_echo_values() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct C {
            port: u16,
            api_key: String,
        }
        let e = parse_config::<C>("p", serde_json::json!({"port": "hunter2", "api_key": "k"}))
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("expected u16"), "{e}");
        let e = parse_config::<C>("p", serde_json::json!({"port": 1})).unwrap_err();
        assert!(e.to_string().contains("missing field `api_key`"), "{e}");
    }

    #[test]
    fn an_unknown_variant_is_not_quoted() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        enum Mode {
            Fast,
            Safe,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct C {
            mode: Mode,
        }
        let e = parse_config::<C>("p", serde_json::json!({"mode": "hunter2"})).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(
            e.message(),
            "invalid configuration for provider \"p\": mode: unknown variant: expected `Fast` or `Safe`"
        );
    }

    // A tiny executor for a future that never pends (keeps tokio out of core).
    fn block_on<F: Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
