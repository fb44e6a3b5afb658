//! Layered configuration: built-in defaults < `truststream.toml` (profile
//! sections) < `TRUSTSTREAM_*` environment variables.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value as FigValue};
use figment::{Figment, Metadata, Profile, Provider};
use serde_json::{json, Value};
use truststream_core::{Error, Result};

use crate::redact;

/// Prefix of the environment variables read by the runtime.
pub const ENV_PREFIX: &str = "TRUSTSTREAM_";
/// Environment variable naming the configuration file.
pub const ENV_CONFIG_FILE: &str = "TRUSTSTREAM_CONFIG";
/// Environment variable naming the profile.
pub const ENV_PROFILE: &str = "TRUSTSTREAM_PROFILE";
/// The file looked for in the working directory when `TRUSTSTREAM_CONFIG` is unset.
pub const DEFAULT_CONFIG_FILE: &str = "truststream.toml";
/// The profiles that always exist (a file may add its own).
pub const BUILTIN_PROFILES: [&str; 4] = ["default", "development", "staging", "production"];
/// The value of `auth.type` that means "no auth provider": [`NONE`], under
/// the name it had before every section could be turned off.
pub const AUTH_NONE: &str = NONE;
/// The type that turns an interface off: `type = "none"` in the
/// `database`, `storage`, `realtime` (as in the `auth` and `jobs`)
/// section. The runtime's accessor of a turned-off interface hands out a
/// provider that refuses every call with `Unsupported`, naming the key.
pub const NONE: &str = "none";

/// Metadata name of the embedded defaults.
const DEFAULTS_SOURCE: &str = "built-in defaults";
/// Metadata name of the environment layer.
const ENV_SOURCE: &str = "the environment (TRUSTSTREAM_* variables)";

/// One of the four interfaces, as named in configuration (`database`, ...).
pub use truststream_layer::Interface;

/// The environment variable that sets `field` of the section named
/// `section` (`TRUSTSTREAM_DATABASE__API_KEY`; `jobs` too, which is not an
/// [`Interface`]).
fn env_var(section: &str, field: &str) -> String {
    format!(
        "{ENV_PREFIX}{}__{}",
        section.to_ascii_uppercase(),
        field.to_ascii_uppercase().replace('.', "__")
    )
}

/// The key of a section's layer table (`[production.database.layers]`).
pub const LAYERS_KEY: &str = "layers";

/// The configuration of one interface: the provider `type`, that provider's
/// own settings (handed to its factory as a JSON object), and the `layers`
/// table (layer name -> settings; never handed to the factory).
#[derive(Clone, PartialEq)]
pub struct ProviderSection {
    kind: String,
    settings: serde_json::Map<String, Value>,
    layers: serde_json::Map<String, Value>,
}

impl ProviderSection {
    /// A section for provider type `kind` with `settings` (without `type`).
    /// A `layers` table in `settings` becomes the section's
    /// [layers](ProviderSection::layers).
    pub fn new(kind: impl Into<String>, settings: serde_json::Map<String, Value>) -> Self {
        let mut settings = settings;
        settings.remove("type");
        let layers = match settings.remove(LAYERS_KEY) {
            Some(Value::Object(layers)) => layers,
            // Not a table: left for the factory to refuse by name
            // (`from_json` and loading refuse it first).
            Some(other) => {
                settings.insert(LAYERS_KEY.into(), other);
                serde_json::Map::new()
            }
            None => serde_json::Map::new(),
        };
        ProviderSection {
            kind: kind.into(),
            settings,
            layers,
        }
    }

    /// A section from a provider type and a JSON value that must be an
    /// object or null (no settings); its `layers`, when present, must be a
    /// table.
    pub fn from_json(kind: &str, settings: Value) -> Result<Self> {
        match settings {
            Value::Null => Ok(Self::new(kind, serde_json::Map::new())),
            Value::Object(m) => {
                if let Some(layers) = m.get(LAYERS_KEY).filter(|l| !l.is_object()) {
                    return Err(not_a_layer_table(None, layers));
                }
                Ok(Self::new(kind, m))
            }
            other => Err(Error::invalid_input(format!(
                "provider settings must be a JSON object, got {}",
                json_type(&other)
            ))),
        }
    }

    /// This section with `layers` as its layer table (layer name ->
    /// settings: a table, `true` for the defaults, `false` to leave the
    /// layer out).
    pub fn with_layers(mut self, layers: serde_json::Map<String, Value>) -> Self {
        self.layers = layers;
        self
    }

    /// The layer table: layer name -> settings, as configured (checked when
    /// the provider is built).
    pub fn layers(&self) -> &serde_json::Map<String, Value> {
        &self.layers
    }

    /// The secret values of the section (provider settings and layer
    /// settings), to scrub from messages.
    pub(crate) fn secrets(&self) -> Vec<String> {
        redact::secret_values(&self.to_json())
    }

    /// The provider type name (`memory`, `postgres`, ...).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The provider's settings (everything in the section but `type`).
    pub fn settings(&self) -> &serde_json::Map<String, Value> {
        &self.settings
    }

    /// The settings as the JSON object a provider factory receives.
    pub fn settings_json(&self) -> Value {
        Value::Object(self.settings.clone())
    }

    /// The section as JSON (`type` first, then the settings, then `layers`
    /// when there are any), secrets intact.
    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), Value::String(self.kind.clone()));
        m.extend(self.settings.clone());
        if !self.layers.is_empty() {
            m.insert(LAYERS_KEY.into(), Value::Object(self.layers.clone()));
        }
        Value::Object(m)
    }
}

impl fmt::Debug for ProviderSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = self.to_json();
        redact::redact_in_place(&mut v);
        write!(f, "{v}")
    }
}

/// The resolved configuration: the active profile and the four sections.
///
/// `Debug` shows the [redacted](Config::redacted) form, never a secret.
#[derive(Clone)]
pub struct Config {
    profile: String,
    file: Option<String>,
    sections: BTreeMap<Interface, ProviderSection>,
    /// The `[serve]` table (`truststream serve`), as given.
    serve: serde_json::Map<String, Value>,
    /// The `[jobs]` section (`type = "none"` when absent).
    jobs: ProviderSection,
    origins: BTreeMap<String, String>,
    /// For keys set in the file: the profile whose tables set them
    /// (`production` for `[production.database]`).
    file_tables: BTreeMap<String, String>,
    /// What loading noticed but did not refuse (a profile no environment
    /// uses, a profile without a section).
    warnings: Vec<String>,
}

impl Config {
    /// The embedded default: database `sqlite` (the file
    /// `./data/truststream.db`; `memory` without the `db-sqlite` feature),
    /// storage `fs` (root `./data/storage`; `memory` without the
    /// `storage-fs` feature), realtime `memory`, auth `none`. Used when there is no file and no environment variable.
    pub fn embedded_default() -> Self {
        let mut sections = BTreeMap::new();
        for i in Interface::ALL {
            sections.insert(i, ProviderSection::new(default_type(i), Default::default()));
        }
        Config {
            profile: "default".into(),
            file: None,
            sections,
            serve: serde_json::Map::new(),
            jobs: ProviderSection::new(JOBS_NONE, Default::default()),
            origins: BTreeMap::new(),
            file_tables: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Loads the configuration the way the `truststream` binary does: the
    /// process's `TRUSTSTREAM_*` variables, `TRUSTSTREAM_CONFIG` or
    /// `./truststream.toml` when present, `TRUSTSTREAM_PROFILE`.
    pub fn load() -> Result<Self> {
        ConfigSources::from_process().load()
    }

    /// The active profile.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The configuration file that was read, if any.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The section of `interface`.
    pub fn section(&self, interface: Interface) -> &ProviderSection {
        // Every interface has a section: `Config` is only built with all four.
        &self.sections[&interface]
    }

    /// Whether `interface` is turned off (`type = "none"`, see [`NONE`]):
    /// no provider is built for it.
    pub fn is_off(&self, interface: Interface) -> bool {
        self.section(interface).kind() == NONE
    }

    /// Replaces the section of `interface` (the runtime does this after
    /// switching a provider).
    pub fn set_section(&mut self, interface: Interface, section: ProviderSection) {
        let other = |k: &String| {
            !k.starts_with(interface.as_str())
                || k.as_bytes().get(interface.as_str().len()) != Some(&b'.')
        };
        self.origins.retain(|k, _| other(k));
        self.file_tables.retain(|k, _| other(k));
        self.sections.insert(interface, section);
    }

    /// The `[serve]` table as given (parsed by `truststream serve`, which
    /// names unknown keys); empty when absent.
    pub fn serve_settings(&self) -> &serde_json::Map<String, Value> {
        &self.serve
    }

    /// Replaces the `[serve]` table.
    pub fn set_serve_settings(&mut self, settings: serde_json::Map<String, Value>) {
        self.serve = settings;
    }

    /// The `[jobs]` section: the background jobs provider (`type = "none"`,
    /// the default, for none).
    pub fn jobs_section(&self) -> &ProviderSection {
        &self.jobs
    }

    /// Replaces the `[jobs]` section.
    pub fn set_jobs_section(&mut self, section: ProviderSection) {
        self.jobs = section;
    }

    /// Where the value of `key` (`database.type`) came from: a file name, the
    /// environment or the built-in defaults. `None` when unknown.
    pub fn origin(&self, key: &str) -> Option<&str> {
        self.origins.get(key).map(String::as_str)
    }

    /// Where `key` (`database.max_connections`, `database.pool.max`,
    /// `auth.roles[0]`) was set, as a person would go and change it: the
    /// file and its table (`truststream.toml, table [production.database]`),
    /// the environment variable (`the environment variable
    /// TRUSTSTREAM_DATABASE__MAX_CONNECTIONS`), or the built-in defaults.
    /// A key without an origin of its own is looked up by its parents.
    /// `None` when unknown.
    pub fn origin_detail(&self, key: &str) -> Option<String> {
        let key = key.split('[').next().unwrap_or(key);
        let mut at = key;
        let origin = loop {
            if let Some(o) = self.origins.get(at) {
                break o;
            }
            at = &at[..at.rfind('.')?];
        };
        if origin == ENV_SOURCE {
            let (section, field) = at.split_once('.')?;
            return Some(format!(
                "the environment variable {}",
                env_var(section, field)
            ));
        }
        Some(match self.file_tables.get(at) {
            // The table that holds the key itself: `[production.auth.argon2]`
            // for `auth.argon2.memory_kib`.
            Some(profile) => {
                let table = key.rsplit_once('.').map_or(key, |(table, _)| table);
                format!("{origin}, table [{profile}.{table}]")
            }
            None => origin.clone(),
        })
    }

    /// The resolved configuration as JSON, secrets intact. Never print this:
    /// use [`Config::redacted`].
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (i, s) in &self.sections {
            m.insert(i.as_str().into(), s.to_json());
        }
        if !self.serve.is_empty() {
            m.insert(SERVE_SECTION.into(), Value::Object(self.serve.clone()));
        }
        if self.jobs.kind() != JOBS_NONE {
            m.insert(JOBS_SECTION.into(), self.jobs.to_json());
        }
        Value::Object(m)
    }

    /// What loading noticed but did not refuse, one sentence each: a
    /// profile of the file that no known environment uses and that is not
    /// active (a typo like `[prodution.database]`), or a selected profile
    /// the file has no table for. The CLI prints them on stderr.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// [`Config::redacted`] with each provider's own defaults filled in
    /// for the settings the configuration does not give (the SQLite path,
    /// pool sizes), for the providers of this workspace that are compiled
    /// in; secrets redacted.
    pub fn resolved_redacted(&self) -> Value {
        let mut v = self.to_json();
        if let Value::Object(root) = &mut v {
            let sections = Interface::ALL
                .iter()
                .map(|i| (i.as_str(), self.section(*i)))
                .chain(std::iter::once((JOBS_SECTION, &self.jobs)));
            for (name, section) in sections {
                let Some(Value::Object(out)) = root.get_mut(name) else {
                    continue;
                };
                if let Some(all) =
                    crate::defaults::effective(name, section.kind(), &section.settings_json())
                {
                    crate::defaults::fill(out, all);
                }
            }
        }
        redact::redact_in_place(&mut v);
        v
    }

    /// The resolved configuration as JSON with every value whose key looks
    /// secret (password, secret, token, key, credential, private, ...)
    /// replaced by `"<redacted>"`, and passwords in URLs with user info
    /// (`postgres://user:pw@host`) masked. `type` is never redacted.
    pub fn redacted(&self) -> Value {
        let mut v = self.to_json();
        redact::redact_in_place(&mut v);
        v
    }

    /// A hint telling where `section.field` is set: the file section and the
    /// environment variable.
    pub(crate) fn where_to_set(&self, section: &str, field: &str) -> String {
        where_to_set(&self.profile, self.file.as_deref(), section, field)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("profile", &self.profile)
            .field("file", &self.file)
            .field("sections", &self.redacted())
            .finish()
    }
}

/// The table of `truststream serve`'s settings.
pub(crate) const SERVE_SECTION: &str = "serve";

/// The section of the background jobs provider.
pub const JOBS_SECTION: &str = "jobs";

/// `jobs.type` when no jobs provider is configured (the default): [`NONE`].
pub const JOBS_NONE: &str = NONE;

fn default_type(i: Interface) -> &'static str {
    match i {
        Interface::Auth => AUTH_NONE,
        // A file under ./data (the provider's default path).
        #[cfg(feature = "db-sqlite")]
        Interface::Database => "sqlite",
        // Files under ./data/storage (the provider's default root).
        #[cfg(feature = "storage-fs")]
        Interface::Storage => "fs",
        _ => "memory",
    }
}

fn embedded_defaults_json() -> Value {
    json!({
        "database": { "type": default_type(Interface::Database) },
        "auth": { "type": default_type(Interface::Auth) },
        "storage": { "type": default_type(Interface::Storage) },
        "realtime": { "type": default_type(Interface::Realtime) },
    })
}

/// Where the TOML layer comes from.
#[derive(Debug, Clone, Default)]
enum TomlSource {
    /// No file layer.
    #[default]
    None,
    /// `./truststream.toml` in the working directory, if it exists.
    SearchCwd,
    /// This file, which must exist.
    File(PathBuf),
    /// TOML text given directly (tests, embedding).
    Inline { name: String, content: String },
}

/// The inputs of configuration loading, injectable so that tests never
/// depend on the process environment.
///
/// ```
/// use truststream_runtime::{ConfigSources, Interface};
/// let cfg = ConfigSources::new()
///     .toml_str("[production.storage]\nmax_object_size = 10\n")
///     .env([("TRUSTSTREAM_PROFILE", "production"), ("TRUSTSTREAM_DATABASE__TYPE", "memory")])
///     .load()
///     .unwrap();
/// assert_eq!(cfg.profile(), "production");
/// assert_eq!(cfg.section(Interface::Storage).settings()["max_object_size"], 10);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    toml: TomlSource,
    explicit_toml: bool,
    env: Vec<(String, String)>,
    profile: Option<String>,
}

impl ConfigSources {
    /// No file, no environment: loading gives the embedded default.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process: its `TRUSTSTREAM_*` variables, and `./truststream.toml`
    /// when present and `TRUSTSTREAM_CONFIG` is unset.
    pub fn from_process() -> Self {
        let vars = std::env::vars_os().filter_map(|(k, v)| {
            let k = k.to_string_lossy().into_owned();
            k.starts_with(ENV_PREFIX)
                .then(|| (k, v.to_string_lossy().into_owned()))
        });
        let mut s = Self::new().env(vars);
        if matches!(s.toml, TomlSource::None) {
            s.toml = TomlSource::SearchCwd;
        }
        s
    }

    /// Adds environment variables (name, value). Names without the
    /// `TRUSTSTREAM_` prefix are ignored. `TRUSTSTREAM_CONFIG` and
    /// `TRUSTSTREAM_PROFILE` choose the file and the profile unless
    /// [`ConfigSources::file`] / [`ConfigSources::profile`] were given.
    pub fn env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            let (k, v) = (k.into(), v.into());
            if k == ENV_CONFIG_FILE {
                if !self.explicit_toml {
                    self.toml = TomlSource::File(PathBuf::from(&v));
                }
            } else if k.starts_with(ENV_PREFIX) {
                self.env.push((k, v));
            }
        }
        self
    }

    /// Reads this file (it must exist); overrides `TRUSTSTREAM_CONFIG`.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.toml = TomlSource::File(path.into());
        self.explicit_toml = true;
        self
    }

    /// Uses this TOML text as the file layer; overrides `TRUSTSTREAM_CONFIG`.
    pub fn toml_str(mut self, content: impl Into<String>) -> Self {
        self.toml = TomlSource::Inline {
            name: "inline TOML".into(),
            content: content.into(),
        };
        self.explicit_toml = true;
        self
    }

    /// Selects this profile; overrides `TRUSTSTREAM_PROFILE`.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// The active profile: the explicit one, else `TRUSTSTREAM_PROFILE`, else
    /// `default`.
    pub fn active_profile(&self) -> String {
        self.profile
            .clone()
            .or_else(|| {
                self.env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == ENV_PROFILE)
                    .map(|(_, v)| v.clone())
            })
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "default".into())
    }

    fn read_toml(&self) -> Result<Option<(String, String)>> {
        match &self.toml {
            TomlSource::None => Ok(None),
            TomlSource::Inline { name, content } => Ok(Some((name.clone(), content.clone()))),
            TomlSource::SearchCwd => {
                let p = Path::new(DEFAULT_CONFIG_FILE);
                if p.is_file() {
                    read_file(p).map(Some)
                } else {
                    Ok(None)
                }
            }
            TomlSource::File(p) => read_file(p).map(Some),
        }
    }

    /// The layered figment (defaults < file < environment) with the active
    /// profile selected, and the name of the file layer, if any.
    ///
    /// A layer that changes a section's `type` starts that section afresh:
    /// the settings of the layers below it (meant for the other provider)
    /// are dropped.
    pub fn figment(&self) -> Result<(Figment, Option<String>)> {
        self.figment_and_file().map(|(fig, file, _)| (fig, file))
    }

    /// [`ConfigSources::figment`], and the file layer's tables by profile
    /// (after [`restart_changed_types`]).
    fn figment_and_file(&self) -> Result<(Figment, Option<String>, Map<Profile, Dict>)> {
        let profile = self.active_profile();
        let defaults = Serialized::defaults(embedded_defaults_json())
            .data()
            .map_err(|e| Error::internal(format!("built-in defaults: {e}")))?;
        let mut layers = vec![Layer {
            name: DEFAULTS_SOURCE.into(),
            data: defaults,
        }];
        let toml = self.read_toml()?;
        let mut file_profiles: Vec<String> = Vec::new();
        if let Some((name, content)) = &toml {
            let data = Toml::string(content).nested().data().map_err(|e| {
                // figment's TOML error is a caret diagram over several
                // lines: kept as it is.
                Error::invalid_input(format!(
                    "malformed configuration file {name}:\n{}",
                    e.to_string().trim_end()
                ))
            })?;
            for p in data.keys() {
                let p = p.as_str().to_string();
                if Interface::from_name(&p).is_some() {
                    return Err(Error::invalid_input(format!(
                        "configuration file {name}: section [{p}] must sit inside a profile, \
                         like [default.{p}] (applies to every profile) or [production.{p}]"
                    )));
                }
                file_profiles.push(p);
            }
            layers.push(Layer {
                name: name.clone(),
                data,
            });
        }
        let builtin = BUILTIN_PROFILES.contains(&profile.as_str());
        if !builtin && !file_profiles.contains(&profile) {
            let mut known: Vec<String> = BUILTIN_PROFILES.iter().map(|s| s.to_string()).collect();
            known.extend(
                file_profiles
                    .iter()
                    .filter(|p| !BUILTIN_PROFILES.contains(&p.as_str()) && *p != "global")
                    .cloned(),
            );
            return Err(Error::invalid_input(format!(
                "unknown profile {profile:?} (from --profile or {ENV_PROFILE}); known profiles: {}",
                known.join(", ")
            )));
        }
        let env = EnvPairs(self.env.clone()).data().map_err(|e| {
            Error::invalid_input(format!(
                "invalid configuration (from {ENV_SOURCE}): {}",
                one_line(&e.to_string())
            ))
        })?;
        layers.push(Layer {
            name: ENV_SOURCE.into(),
            data: env,
        });
        restart_changed_types(&mut layers, &Profile::new(&profile));
        let file_data = match &toml {
            Some((name, _)) => layers
                .iter()
                .find(|l| l.name == *name)
                .map(|l| l.data.clone())
                .unwrap_or_default(),
            None => Map::new(),
        };
        let fig = layers
            .into_iter()
            .fold(Figment::new(), Figment::merge)
            .select(profile.as_str());
        Ok((fig, toml.map(|(n, _)| n), file_data))
    }

    /// Resolves the configuration.
    pub fn load(&self) -> Result<Config> {
        let (fig, file, file_data) = self.figment_and_file()?;
        let profile = self.active_profile();
        let source_of = |e: &figment::Error| {
            e.metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default()
        };
        let root: Value = fig.extract().map_err(|e| {
            Error::invalid_input(format!(
                "invalid configuration{}: {}",
                source_of(&e),
                one_line(&e.to_string())
            ))
        })?;
        let Value::Object(root) = root else {
            return Err(Error::invalid_input("the configuration must be a table"));
        };
        let mut sections = BTreeMap::new();
        let mut origins = BTreeMap::new();
        let mut serve = serde_json::Map::new();
        let mut jobs = ProviderSection::new(JOBS_NONE, Default::default());
        for (key, value) in root {
            if key == JOBS_SECTION {
                jobs = jobs_section(&profile, file.as_deref(), value, &fig, &mut origins)?;
                continue;
            }
            if key == SERVE_SECTION {
                let Value::Object(settings) = value else {
                    return Err(Error::invalid_input(format!(
                        "configuration key `{SERVE_SECTION}` must be a table, like [{profile}.{SERVE_SECTION}] bind = \"127.0.0.1:54321\""
                    )));
                };
                for k in settings.keys() {
                    let key = format!("{SERVE_SECTION}.{k}");
                    if let Some(m) = fig.find_metadata(&key) {
                        origins.insert(key, m.name.to_string());
                    }
                }
                serve = settings;
                continue;
            }
            let Some(interface) = Interface::from_name(&key) else {
                let from = fig
                    .find_metadata(&key)
                    .map(|m| format!(" (set in {})", m.name))
                    .unwrap_or_default();
                return Err(Error::invalid_input(format!(
                    "unknown configuration section `{key}`{from}; known sections: database, auth, storage, realtime, jobs, serve"
                )));
            };
            let (kind, settings) = typed_table(&key, value, &profile, file.as_deref())?;
            let mut fields: Vec<String> = std::iter::once("type")
                .chain(settings.keys().map(String::as_str))
                .map(|f| format!("{key}.{f}"))
                .collect();
            match settings.get(LAYERS_KEY) {
                None => {}
                Some(Value::Object(layers)) => {
                    fields.extend(layers.keys().map(|l| format!("{key}.{LAYERS_KEY}.{l}")));
                }
                Some(other) => {
                    let from = fig
                        .find_metadata(&format!("{key}.{LAYERS_KEY}"))
                        .map(|m| m.name.to_string());
                    return Err(not_a_layer_table(Some((interface, from.as_deref())), other));
                }
            }
            for k in fields {
                if let Some(m) = fig.find_metadata(&k) {
                    origins.insert(k, m.name.to_string());
                }
            }
            sections.insert(interface, ProviderSection::new(kind, settings));
        }
        for i in Interface::ALL {
            sections
                .entry(i)
                .or_insert_with(|| ProviderSection::new(default_type(i), Default::default()));
        }
        let warnings = profile_warnings(&profile, file.as_deref(), &file_data);
        let file_tables = origins
            .iter()
            .filter(|(_, origin)| file.as_deref() == Some(origin.as_str()))
            .filter_map(|(key, _)| {
                let from = file_profile(&file_data, &profile, key)?;
                Some((key.clone(), from))
            })
            .collect();
        Ok(Config {
            profile,
            file,
            sections,
            serve,
            jobs,
            origins,
            file_tables,
            warnings,
        })
    }
}

/// The `[jobs]` section: a table with a non-empty `type`. The jobs provider
/// is not wrapped in layers, so a `layers` key is refused.
fn jobs_section(
    profile: &str,
    file: Option<&str>,
    value: Value,
    fig: &Figment,
    origins: &mut BTreeMap<String, String>,
) -> Result<ProviderSection> {
    let (kind, settings) = typed_table(JOBS_SECTION, value, profile, file)?;
    let origin = |k: &str| fig.find_metadata(k).map(|m| m.name.to_string());
    if settings.contains_key(LAYERS_KEY) {
        let from = origin(&format!("{JOBS_SECTION}.{LAYERS_KEY}"))
            .map(|f| format!(" (set in {f})"))
            .unwrap_or_default();
        return Err(Error::invalid_input(format!(
            "`{JOBS_SECTION}.{LAYERS_KEY}`{from}: the jobs provider takes no layers; remove the key"
        )));
    }
    for k in std::iter::once("type").chain(settings.keys().map(String::as_str)) {
        let key = format!("{JOBS_SECTION}.{k}");
        if let Some(o) = origin(&key) {
            origins.insert(key, o);
        }
    }
    Ok(ProviderSection::new(kind, settings))
}

/// A provider section `key`: a table with a non-empty `type`. Its type,
/// and its other settings.
fn typed_table(
    key: &str,
    value: Value,
    profile: &str,
    file: Option<&str>,
) -> Result<(String, serde_json::Map<String, Value>)> {
    let Value::Object(mut settings) = value else {
        return Err(Error::invalid_input(format!(
            "configuration key `{key}` must be a table with a `type`, like [{profile}.{key}] type = \"memory\""
        )));
    };
    match settings.remove("type") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok((s.trim().to_string(), settings)),
        other => Err(Error::invalid_input(format!(
            "`{key}.type` must be a provider type name (a non-empty string), got {}; {}",
            other.as_ref().map_or("nothing", json_type),
            where_to_set(profile, file, key, "type")
        ))),
    }
}

/// Warnings about the file's profiles: one that no known environment uses
/// and that is not active (`[prodution.database]`, a typo, is otherwise
/// silently a profile of its own), and an active profile with no table in
/// the file (only `[default.*]` applies).
fn profile_warnings(profile: &str, file: Option<&str>, data: &Map<Profile, Dict>) -> Vec<String> {
    let Some(file) = file else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut names: Vec<String> = data
        .keys()
        .map(|p| p.as_str().as_str().to_ascii_lowercase())
        .collect();
    names.sort();
    for p in &names {
        if BUILTIN_PROFILES.contains(&p.as_str()) || p == "global" || p == profile {
            continue;
        }
        let near = BUILTIN_PROFILES
            .iter()
            .find(|b| edit_distance(b, p) <= 2)
            .map(|b| format!(" (did you mean [{b}.*]?)"))
            .unwrap_or_default();
        out.push(format!(
            "configuration file {file}: profile [{p}.*] is not one of the known environments \
             ({}) and is not the active profile ({profile:?}), so nothing uses it{near}; \
             select it with --profile {p} or {ENV_PROFILE}={p}",
            BUILTIN_PROFILES.join(", ")
        ));
    }
    if profile != "default" && !names.iter().any(|p| p == profile) {
        out.push(format!(
            "configuration file {file} has no [{profile}.*] table for the active profile \
             {profile:?} (from --profile or {ENV_PROFILE}): only [default.*] and the \
             environment apply"
        ));
    }
    out
}

/// The number of single-character edits between `a` and `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The profile of the file whose tables set `key` (`database.max_connections`
/// -> `production` for `[production.database]`) for the active `profile`:
/// the first of `global`, the profile, `default` (figment's precedence) that
/// has it.
fn file_profile(data: &Map<Profile, Dict>, profile: &str, key: &str) -> Option<String> {
    let path: Vec<&str> = key.split('.').collect();
    let selected = Profile::new(profile);
    [Profile::Global, selected, Profile::Default]
        .into_iter()
        .find(|p| {
            let Some(mut dict) = data.get(p) else {
                return false;
            };
            for (n, part) in path.iter().enumerate() {
                match dict.get(*part) {
                    Some(v) if n + 1 == path.len() => return !matches!(v, FigValue::Empty(..)),
                    Some(v) => match v.as_dict() {
                        Some(d) => dict = d,
                        None => return false,
                    },
                    None => return false,
                }
            }
            false
        })
        .map(|p| p.as_str().as_str().to_ascii_lowercase())
}

/// `layers` of `interface` (set in `from`) is not a table.
fn not_a_layer_table(at: Option<(Interface, Option<&str>)>, got: &Value) -> Error {
    let (key, from) = match at {
        Some((i, from)) => (
            format!("{i}.{LAYERS_KEY}"),
            from.map(|f| format!(" (set in {f})")).unwrap_or_default(),
        ),
        None => (LAYERS_KEY.to_string(), String::new()),
    };
    Error::invalid_input(format!(
        "`{key}`{from} must be a table of layers (name = settings, true or false), got {}",
        json_type(got)
    ))
}

/// "set `field` under [profile.section] in FILE, or the environment variable ...".
fn where_to_set(profile: &str, file: Option<&str>, section: &str, field: &str) -> String {
    let table = format!("[{profile}.{section}]");
    let file = file.unwrap_or(DEFAULT_CONFIG_FILE);
    format!(
        "set `{field}` under {table} in {file}, or the environment variable {} (active profile: {profile:?})",
        env_var(section, field)
    )
}

fn read_file(p: &Path) -> Result<(String, String)> {
    let name = p.display().to_string();
    match std::fs::read_to_string(p) {
        Ok(content) => Ok((name, content)),
        Err(e) => Err(Error::invalid_input(format!(
            "cannot read configuration file {name}: {e} (set by --config or {ENV_CONFIG_FILE})"
        ))),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// One configuration source, already read: its name (so messages name the
/// file) and its values by profile.
struct Layer {
    name: String,
    data: Map<Profile, Dict>,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }
    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(self.data.clone())
    }
}

/// Where a section changes provider, starts it afresh: for each section,
/// the tables of `layers` (in precedence order: each layer's `default`
/// profile, then the `selected` one, then `global`, as figment merges them)
/// that sit below the last table changing the section's `type` lose their
/// provider settings, so that the settings of one provider
/// (`[default.storage] root = ...` for `fs`) never reach another
/// (`[production.storage] type = "s3"`, or `TRUSTSTREAM_STORAGE__TYPE=memory`).
///
/// Their `layers` tables stay: layers wrap whatever provider the section
/// has (metrics, retry, a cache are the interface's policy, not a
/// provider's settings); a higher layer turns one off with `name = false`.
fn restart_changed_types(layers: &mut [Layer], selected: &Profile) {
    let mut profiles = vec![Profile::Default];
    if *selected != Profile::Default && *selected != Profile::Global {
        profiles.push(selected.clone());
    }
    profiles.push(Profile::Global);
    let order: Vec<(usize, &Profile)> = (0..layers.len())
        .flat_map(|l| profiles.iter().map(move |p| (l, p)))
        .collect();
    let sections = Interface::ALL.map(Interface::as_str);
    for key in sections.into_iter().chain([JOBS_SECTION]) {
        let type_at = |&(l, p): &(usize, &Profile)| -> Option<String> {
            let section = layers[l].data.get(p)?.get(key)?.as_dict()?;
            let t = section.get("type")?;
            Some(
                t.as_str()
                    .map_or_else(|| format!("{t:?}"), |s| s.trim().to_string()),
            )
        };
        let mut current: Option<String> = None;
        let mut restart = 0;
        for (pos, at) in order.iter().enumerate() {
            if let Some(t) = type_at(at) {
                if current.as_ref().is_some_and(|c| *c != t) {
                    restart = pos;
                }
                current = Some(t);
            }
        }
        for &(l, p) in &order[..restart] {
            if let Some(dict) = layers[l].data.get_mut(p) {
                let kept = dict
                    .get(key)
                    .and_then(FigValue::as_dict)
                    .and_then(|section| section.get(LAYERS_KEY))
                    .cloned();
                match kept {
                    Some(layer_table) => {
                        let mut only_layers = Dict::new();
                        only_layers.insert(LAYERS_KEY.into(), layer_table);
                        dict.insert(key.into(), FigValue::from(only_layers));
                    }
                    None => {
                        dict.remove(key);
                    }
                }
            }
        }
    }
}

/// `TRUSTSTREAM_*` variables from an injected list, nested with `__`
/// (`TRUSTSTREAM_DATABASE__TYPE` -> `database.type`), values parsed like
/// figment's `Env` (numbers and booleans typed, `"..."` forces a string).
/// They go to the global profile, so they override every file section.
struct EnvPairs(Vec<(String, String)>);

impl Provider for EnvPairs {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE)
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let mut dict = Dict::new();
        for (k, v) in &self.0 {
            if k == ENV_PROFILE || k == ENV_CONFIG_FILE {
                continue;
            }
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest
                .split("__")
                .map(|s| s.trim().to_ascii_lowercase())
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(figment::Error::from(format!(
                    "malformed environment variable name {k}: use {ENV_PREFIX}SECTION__KEY"
                )));
            }
            let value: FigValue = v.parse().unwrap_or_else(|e| match e {});
            insert_path(&mut dict, &path, value);
        }
        let mut map = Map::new();
        map.insert(Profile::Global, dict);
        Ok(map)
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: FigValue) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| FigValue::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = FigValue::from(Dict::new());
            }
            if let FigValue::Dict(_, d) = entry {
                insert_path(d, rest, value);
            }
        }
    }
}
