//! The compatibility report (the guide's `CompatibilityChecker`): per
//! interface, who the provider is, what it can do, and how it is doing.

use std::fmt;
use std::fmt::Write as _;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use truststream_core::{BuildOptions, Health, HealthStatus, ProviderInfo};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_core_jobs::Jobs;
use truststream_core_realtime::{Realtime, RealtimeDeps};
use truststream_core_storage::Storage;

use crate::build::{Layered, Registries};
use crate::closing::Closing;
use crate::config::{Config, Interface, ProviderSection, JOBS_NONE, NONE};
use crate::redact;

/// The report of one interface.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InterfaceReport {
    /// Which interface.
    pub interface: Interface,
    /// The configured provider type (`memory`, `none`, ...).
    pub configured_type: String,
    /// The provider's name and version; `None` when none is configured
    /// (`auth.type = "none"`) or it failed to build.
    pub provider: Option<ProviderInfo>,
    /// The provider's layers, outermost first, as `name(settings)`
    /// (`retry(attempts=4, ...)`).
    pub layers: Vec<String>,
    /// Each field of the provider's capability struct, in declaration order.
    pub capabilities: Vec<(String, Value)>,
    /// The provider's health; `None` when there is no provider.
    pub health: Option<Health>,
    /// Why the provider could not be built.
    pub error: Option<String>,
}

impl InterfaceReport {
    /// A report for a provider that was built from `section`, in `layers`
    /// (outermost first). The health message and the layers' descriptions
    /// are scrubbed of the section's secret values (a driver may quote its
    /// connection URL, a layer its settings).
    pub fn built(
        interface: Interface,
        info: ProviderInfo,
        capabilities: Value,
        mut health: Health,
        section: &ProviderSection,
        layers: Vec<String>,
    ) -> Self {
        let secrets = section.secrets();
        if let Some(m) = &health.message {
            health.message = Some(redact::scrub(m, &secrets));
        }
        InterfaceReport {
            interface,
            configured_type: section.kind().to_string(),
            provider: Some(info),
            layers: layers.iter().map(|l| redact::scrub(l, &secrets)).collect(),
            capabilities: capability_lines(capabilities),
            health: Some(health),
            error: None,
        }
    }

    /// A report for a provider that failed to build.
    pub fn failed(interface: Interface, configured_type: &str, error: String) -> Self {
        InterfaceReport {
            interface,
            configured_type: configured_type.to_string(),
            provider: None,
            layers: Vec::new(),
            capabilities: Vec::new(),
            health: None,
            error: Some(error),
        }
    }

    /// A report for an interface with no provider configured (`type =
    /// "none"`: turned off).
    pub fn not_configured(interface: Interface) -> Self {
        InterfaceReport {
            interface,
            configured_type: NONE.to_string(),
            provider: None,
            layers: Vec::new(),
            capabilities: Vec::new(),
            health: None,
            error: None,
        }
    }

    /// Built and not unhealthy (degraded counts as serving), or not configured.
    pub fn is_ok(&self) -> bool {
        serving(self.error.as_deref(), self.health.as_ref())
    }

    /// `healthy (0.1 ms)`, `unhealthy (3.0 ms): connection refused`,
    /// `not configured`, `failed to build: ...`.
    pub fn health_line(&self) -> String {
        health_text(
            self.error.as_deref(),
            self.health.as_ref(),
            &format!("not configured ({}.type = \"{NONE}\")", self.interface),
        )
    }
}

/// The report of the background jobs provider (the `[jobs]` section).
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobsReport {
    /// The configured provider type (`none`, `memory`, `database`, ...).
    pub configured_type: String,
    /// The provider's name and version; `None` when none is configured or
    /// it failed to build.
    pub provider: Option<ProviderInfo>,
    /// Each field of the provider's capability struct, in declaration order.
    pub capabilities: Vec<(String, Value)>,
    /// The provider's health; `None` when there is no provider.
    pub health: Option<Health>,
    /// Why the provider could not be built.
    pub error: Option<String>,
}

impl JobsReport {
    /// Reports `built` (the provider of `config`'s `[jobs]` section, `None`
    /// for `type = "none"`, or why it failed to build).
    pub(crate) async fn of(
        config: &Config,
        built: &std::result::Result<Option<Arc<dyn Jobs>>, String>,
    ) -> Self {
        let section = config.jobs_section();
        let mut r = JobsReport {
            configured_type: section.kind().to_string(),
            provider: None,
            capabilities: Vec::new(),
            health: None,
            error: None,
        };
        match built {
            Ok(Some(j)) => {
                let mut health = j.health().await;
                if let Some(m) = &health.message {
                    health.message = Some(redact::scrub(m, &section.secrets()));
                }
                r.provider = Some(j.info());
                r.capabilities =
                    capability_lines(serde_json::to_value(j.capabilities()).unwrap_or_default());
                r.health = Some(health);
            }
            Ok(None) => {}
            Err(e) => r.error = Some(e.clone()),
        }
        r
    }

    /// Built and not unhealthy, or not configured.
    pub fn is_ok(&self) -> bool {
        serving(self.error.as_deref(), self.health.as_ref())
    }

    /// As [`InterfaceReport::health_line`].
    pub fn health_line(&self) -> String {
        health_text(
            self.error.as_deref(),
            self.health.as_ref(),
            &format!("not configured (jobs.type = \"{JOBS_NONE}\")"),
        )
    }
}

/// The report of every interface.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompatibilityReport {
    /// The active profile.
    pub profile: String,
    /// Database, auth, storage, realtime.
    pub interfaces: Vec<InterfaceReport>,
    /// The background jobs provider.
    pub jobs: JobsReport,
}

impl CompatibilityReport {
    /// Whether every provider was built and none is unhealthy.
    pub fn is_ok(&self) -> bool {
        self.interfaces.iter().all(InterfaceReport::is_ok) && self.jobs.is_ok()
    }

    /// Builds each configured provider in its layers, on its own (so one
    /// failure does not hide the others), and reports it. Auth and realtime
    /// are wired to the database (and realtime to auth) when those were
    /// built.
    pub async fn check(registries: &Arc<Registries>, config: &Config) -> Self {
        let built = Built::each(registries, config, None).await;
        let interfaces = vec![
            report(Interface::Database, config, &built.database).await,
            report(Interface::Auth, config, &built.auth).await,
            report(Interface::Storage, config, &built.storage).await,
            report(Interface::Realtime, config, &built.realtime).await,
        ];
        let jobs = JobsReport::of(config, &built.jobs).await;
        built.close().await;
        CompatibilityReport {
            profile: config.profile().to_string(),
            interfaces,
            jobs,
        }
    }

    /// One health line per interface: `database: healthy (0.1 ms)`.
    pub fn health_lines(&self) -> String {
        let mut s = String::new();
        for i in &self.interfaces {
            let _ = writeln!(s, "{}: {}", i.interface, i.health_line());
        }
        if self.jobs.configured_type != JOBS_NONE {
            let _ = writeln!(s, "jobs: {}", self.jobs.health_line());
        }
        s
    }
}

/// Renders the full report: per interface `database: memory 0.1.0`, its
/// capability lines, then its health line.
impl fmt::Display for CompatibilityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(true))
    }
}

impl CompatibilityReport {
    /// The report as [`fmt::Display`] renders it; with `with_errors` false,
    /// a provider that failed to build says `failed to build (error on
    /// stderr)` instead of repeating the error (the CLI prints each error
    /// once, on stderr).
    pub fn render(&self, with_errors: bool) -> String {
        let mut s = String::new();
        let _ = self.render_into(&mut s, with_errors);
        s
    }

    /// The report as a JSON document for scripts (`truststream check
    /// --json`): `profile`, `ok`, `interfaces` (in order database, auth,
    /// storage, realtime: `interface`, `type`, `provider` {`name`,
    /// `version`} or null, `layers` outermost first, `capabilities` as an
    /// object, `health` {`status`, `latency_ms`, `message`} or null,
    /// `error`, `ok`) and `jobs` (the same fields without `interface` and
    /// `layers`).
    pub fn to_json(&self) -> Value {
        fn health_json(h: Option<&Health>) -> Value {
            h.map_or(Value::Null, |h| {
                serde_json::json!({
                    "status": h.status,
                    "latency_ms": h.latency.as_secs_f64() * 1000.0,
                    "message": h.message,
                })
            })
        }
        fn caps(c: &[(String, Value)]) -> Value {
            Value::Object(c.iter().cloned().collect())
        }
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                serde_json::json!({
                    "interface": i.interface,
                    "type": i.configured_type,
                    "provider": i.provider,
                    "layers": i.layers,
                    "capabilities": caps(&i.capabilities),
                    "health": health_json(i.health.as_ref()),
                    "error": i.error,
                    "ok": i.is_ok(),
                })
            })
            .collect();
        let j = &self.jobs;
        serde_json::json!({
            "profile": self.profile,
            "ok": self.is_ok(),
            "interfaces": interfaces,
            "jobs": {
                "type": j.configured_type,
                "provider": j.provider,
                "capabilities": caps(&j.capabilities),
                "health": health_json(j.health.as_ref()),
                "error": j.error,
                "ok": j.is_ok(),
            },
        })
    }

    fn render_into(&self, f: &mut String, with_errors: bool) -> fmt::Result {
        let line = |error: Option<&str>, text: String| {
            if error.is_some() && !with_errors {
                "failed to build (error on stderr)".to_string()
            } else {
                text
            }
        };
        writeln!(f, "profile: {}", self.profile)?;
        for i in &self.interfaces {
            match (&i.provider, &i.error) {
                (Some(p), _) if i.layers.is_empty() => {
                    writeln!(f, "{}: {} {}", i.interface, p.name, p.version)?
                }
                (Some(p), _) => writeln!(
                    f,
                    "{}: {} {}, layers: {}",
                    i.interface,
                    p.name,
                    p.version,
                    i.layers.join(" > ")
                )?,
                (None, Some(_)) => {
                    writeln!(f, "{}: {} (not built)", i.interface, i.configured_type)?
                }
                (None, None) => writeln!(f, "{}: {}", i.interface, i.configured_type)?,
            }
            for (name, value) in &i.capabilities {
                writeln!(f, "  {name}: {}", show(value))?;
            }
            writeln!(f, "  health: {}", line(i.error.as_deref(), i.health_line()))?;
        }
        let j = &self.jobs;
        if j.configured_type == JOBS_NONE {
            return writeln!(f, "jobs: {JOBS_NONE}");
        }
        match &j.provider {
            Some(p) => writeln!(f, "jobs: {} {}", p.name, p.version)?,
            None => writeln!(f, "jobs: {} (not built)", j.configured_type)?,
        }
        for (name, value) in &j.capabilities {
            writeln!(f, "  {name}: {}", show(value))?;
        }
        writeln!(f, "  health: {}", line(j.error.as_deref(), j.health_line()))?;
        Ok(())
    }
}

/// Built and not unhealthy (degraded counts as serving), or not configured.
fn serving(error: Option<&str>, health: Option<&Health>) -> bool {
    error.is_none() && health.is_none_or(|h| h.status != HealthStatus::Unhealthy)
}

/// `healthy (0.1 ms)`, `unhealthy (3.0 ms): connection refused`,
/// `not_configured` when there is no health, `failed to build: ...`.
fn health_text(error: Option<&str>, health: Option<&Health>, not_configured: &str) -> String {
    if let Some(e) = error {
        return format!("failed to build: {e}");
    }
    let Some(h) = health else {
        return not_configured.to_string();
    };
    let ms = h.latency.as_secs_f64() * 1000.0;
    let mut s = if ms < 0.1 {
        format!("{} ({:.3} ms)", h.status, ms)
    } else {
        format!("{} ({:.1} ms)", h.status, ms)
    };
    if let Some(m) = &h.message {
        let _ = write!(s, ": {m}");
    }
    s
}

fn capability_lines(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Object(m) => m.into_iter().collect(),
        Value::Null => Vec::new(),
        other => vec![("capabilities".to_string(), other)],
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "none".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A provider interface the reports can ask for info, capabilities and
/// health.
pub(crate) trait Probe: Send + Sync {
    fn info(&self) -> ProviderInfo;
    fn capabilities_json(&self) -> Value;
    fn health(&self) -> truststream_core::BoxFuture<'_, Health>;
}

macro_rules! probe {
    ($interface:ident) => {
        impl Probe for Arc<dyn $interface> {
            fn info(&self) -> ProviderInfo {
                $interface::info(&**self)
            }
            fn capabilities_json(&self) -> Value {
                serde_json::to_value($interface::capabilities(&**self)).unwrap_or_default()
            }
            fn health(&self) -> truststream_core::BoxFuture<'_, Health> {
                $interface::health(&**self)
            }
        }
    };
}

probe!(Database);
probe!(Auth);
probe!(Storage);
probe!(Realtime);

/// One interface built on its own: the layered provider, `None` when none
/// is configured (auth `none`), or why it could not be built.
pub(crate) type BuiltOne<T> = std::result::Result<Option<Layered<T>>, String>;

/// Each configured provider built on its own, in its layers.
pub(crate) struct Built {
    pub(crate) database: BuiltOne<dyn Database>,
    pub(crate) auth: BuiltOne<dyn Auth>,
    pub(crate) storage: BuiltOne<dyn Storage>,
    pub(crate) realtime: BuiltOne<dyn Realtime>,
    /// The jobs provider (on the layered database); `None` for `none`.
    pub(crate) jobs: std::result::Result<Option<Arc<dyn Jobs>>, String>,
}

impl Built {
    /// Builds each provider, so that one failure does not hide the others;
    /// with a `limit`, a build that takes longer fails ("not built within
    /// N ms").
    pub(crate) async fn each(
        registries: &Arc<Registries>,
        config: &Config,
        limit: Option<Duration>,
    ) -> Self {
        let off = |i: Interface| config.is_off(i);
        let database = if off(Interface::Database) {
            Ok(None)
        } else {
            within(limit, registries.database_layered(config))
                .await
                .map(Some)
        };
        let db = match &database {
            Ok(Some(d)) => Some(Arc::clone(&d.provider)),
            _ => None,
        };
        let auth = within(limit, registries.auth_layered(config, db.clone())).await;
        let auth_arc = match &auth {
            Ok(Some(a)) => Some(Arc::clone(&a.provider)),
            _ => None,
        };
        let storage = if off(Interface::Storage) {
            Ok(None)
        } else {
            within(limit, registries.storage_layered(config))
                .await
                .map(Some)
        };
        let deps = RealtimeDeps {
            db: db.clone(),
            auth: auth_arc,
        };
        let realtime = if off(Interface::Realtime) {
            Ok(None)
        } else {
            within(limit, registries.realtime_layered(config, deps))
                .await
                .map(Some)
        };
        let jobs = within(limit, registries.build_jobs(config, db)).await;
        Built {
            database,
            auth,
            storage,
            realtime,
            jobs,
        }
    }

    /// Done with: every provider built for the report is closed (realtime,
    /// jobs and auth, then the database is disconnected), so a realtime
    /// server's port is free and no pool is left when this returns.
    pub(crate) async fn close(self) {
        fn built<T: ?Sized>(b: &BuiltOne<T>) -> Option<Arc<T>> {
            match b {
                Ok(Some(b)) => Some(Arc::clone(&b.provider)),
                _ => None,
            }
        }
        let closing = Closing {
            realtime: built(&self.realtime),
            jobs: self.jobs.as_ref().ok().cloned().flatten(),
            auth: built(&self.auth),
            db: built(&self.database),
        };
        // A report's providers: nothing to do about a failed close.
        let _ = closing.close().await;
    }
}

tokio::task_local! {
    /// How the providers built in this task are built (set around a
    /// read-only check's builds by [`read_only`]; unset: an ordinary build).
    static BUILD_OPTIONS: BuildOptions;
}

/// Runs `builds` with every provider built in it built read-only
/// ([`BuildOptions::read_only`]: no tables, schemas or files created).
pub(crate) async fn read_only<F: std::future::Future>(builds: F) -> F::Output {
    BUILD_OPTIONS.scope(BuildOptions::read_only(), builds).await
}

/// The build options of the providers being built now (see
/// [`read_only`]).
pub(crate) fn build_options() -> BuildOptions {
    BUILD_OPTIONS.try_with(|o| *o).unwrap_or_default()
}

/// `build`, failing with why (its error, or the `limit` it did not finish
/// within).
async fn within<T>(
    limit: Option<Duration>,
    build: impl std::future::Future<Output = truststream_core::Result<T>>,
) -> std::result::Result<T, String> {
    let result = match limit {
        None => build.await,
        Some(limit) => match tokio::time::timeout(limit, build).await {
            Ok(result) => result,
            Err(_) => return Err(format!("not built within {} ms", limit.as_millis())),
        },
    };
    result.map_err(|e| e.display_chain().to_string())
}

async fn report<T: ?Sized>(
    interface: Interface,
    config: &Config,
    built: &BuiltOne<T>,
) -> InterfaceReport
where
    Arc<T>: Probe,
{
    let section = config.section(interface);
    match built {
        Ok(Some(b)) => InterfaceReport::built(
            interface,
            b.provider.info(),
            b.provider.capabilities_json(),
            b.provider.health().await,
            section,
            b.stack.describe(),
        ),
        Ok(None) => InterfaceReport::not_configured(interface),
        Err(e) => InterfaceReport::failed(interface, section.kind(), e.clone()),
    }
}
