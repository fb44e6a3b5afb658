//! The compatibility report (the guide's `CompatibilityChecker`): per
//! interface, who the provider is, what it can do, and how it is doing.

use std::fmt;
use std::fmt::Write as _;

use serde_json::Value;
use truststream_core::{Health, HealthStatus, ProviderInfo};
use truststream_core_realtime::RealtimeDeps;

use crate::build::Registries;
use crate::config::{Config, Interface, AUTH_NONE};

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
    /// Each field of the provider's capability struct, in declaration order.
    pub capabilities: Vec<(String, Value)>,
    /// The provider's health; `None` when there is no provider.
    pub health: Option<Health>,
    /// Why the provider could not be built.
    pub error: Option<String>,
}

impl InterfaceReport {
    /// A report for a provider that was built.
    pub fn built(
        interface: Interface,
        info: ProviderInfo,
        capabilities: Value,
        health: Health,
    ) -> Self {
        InterfaceReport {
            interface,
            configured_type: info.name.to_string(),
            provider: Some(info),
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
            capabilities: Vec::new(),
            health: None,
            error: Some(error),
        }
    }

    /// A report for an interface with no provider configured (auth `none`).
    pub fn not_configured(interface: Interface) -> Self {
        InterfaceReport {
            interface,
            configured_type: AUTH_NONE.to_string(),
            provider: None,
            capabilities: Vec::new(),
            health: None,
            error: None,
        }
    }

    /// Built and not unhealthy (degraded counts as serving), or not configured.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
            && self
                .health
                .as_ref()
                .is_none_or(|h| h.status != HealthStatus::Unhealthy)
    }

    /// `healthy (0.1 ms)`, `unhealthy (3.0 ms): connection refused`,
    /// `not configured`, `failed to build: ...`.
    pub fn health_line(&self) -> String {
        if let Some(e) = &self.error {
            return format!("failed to build: {e}");
        }
        match &self.health {
            None => "not configured (auth.type = \"none\")".to_string(),
            Some(h) => {
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
        }
    }
}

/// The report of every interface.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompatibilityReport {
    /// The active profile.
    pub profile: String,
    /// Database, auth, storage, realtime.
    pub interfaces: Vec<InterfaceReport>,
}

impl CompatibilityReport {
    /// Whether every provider was built and none is unhealthy.
    pub fn is_ok(&self) -> bool {
        self.interfaces.iter().all(InterfaceReport::is_ok)
    }

    /// Builds each configured provider on its own (so one failure does not
    /// hide the others) and reports it. Realtime is wired to the database
    /// when that one was built.
    pub async fn check(registries: &Registries, config: &Config) -> Self {
        let mut interfaces = Vec::with_capacity(4);
        let section = |i: Interface| config.section(i).kind().to_string();

        let db = registries.build_database(config).await;
        let db_arc = db.as_ref().ok().cloned();
        interfaces.push(match db {
            Ok(db) => InterfaceReport::built(
                Interface::Database,
                db.info(),
                serde_json::to_value(db.capabilities()).unwrap_or_default(),
                db.health().await,
            ),
            Err(e) => InterfaceReport::failed(
                Interface::Database,
                &section(Interface::Database),
                e.display_chain().to_string(),
            ),
        });

        let auth = registries.build_auth(config, db_arc.clone()).await;
        let auth_arc = auth.as_ref().ok().cloned().flatten();
        interfaces.push(match auth {
            Ok(Some(a)) => InterfaceReport::built(
                Interface::Auth,
                a.info(),
                serde_json::to_value(a.capabilities()).unwrap_or_default(),
                a.health().await,
            ),
            Ok(None) => InterfaceReport::not_configured(Interface::Auth),
            Err(e) => InterfaceReport::failed(
                Interface::Auth,
                &section(Interface::Auth),
                e.display_chain().to_string(),
            ),
        });

        interfaces.push(match registries.build_storage(config).await {
            Ok(s) => InterfaceReport::built(
                Interface::Storage,
                s.info(),
                serde_json::to_value(s.capabilities()).unwrap_or_default(),
                s.health().await,
            ),
            Err(e) => InterfaceReport::failed(
                Interface::Storage,
                &section(Interface::Storage),
                e.display_chain().to_string(),
            ),
        });

        let deps = RealtimeDeps {
            db: db_arc,
            auth: auth_arc,
        };
        interfaces.push(match registries.build_realtime(config, deps).await {
            Ok(r) => InterfaceReport::built(
                Interface::Realtime,
                r.info(),
                serde_json::to_value(r.capabilities()).unwrap_or_default(),
                r.health().await,
            ),
            Err(e) => InterfaceReport::failed(
                Interface::Realtime,
                &section(Interface::Realtime),
                e.display_chain().to_string(),
            ),
        });

        CompatibilityReport {
            profile: config.profile().to_string(),
            interfaces,
        }
    }

    /// One health line per interface: `database: healthy (0.1 ms)`.
    pub fn health_lines(&self) -> String {
        let mut s = String::new();
        for i in &self.interfaces {
            let _ = writeln!(s, "{}: {}", i.interface, i.health_line());
        }
        s
    }
}

/// Renders the full report: per interface `database: memory 0.1.0`, its
/// capability lines, then its health line.
impl fmt::Display for CompatibilityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "profile: {}", self.profile)?;
        for i in &self.interfaces {
            match (&i.provider, &i.error) {
                (Some(p), _) => writeln!(f, "{}: {} {}", i.interface, p.name, p.version)?,
                (None, Some(_)) => {
                    writeln!(f, "{}: {} (not built)", i.interface, i.configured_type)?
                }
                (None, None) => writeln!(f, "{}: {}", i.interface, i.configured_type)?,
            }
            for (name, value) in &i.capabilities {
                writeln!(f, "  {name}: {}", show(value))?;
            }
            writeln!(f, "  health: {}", i.health_line())?;
        }
        Ok(())
    }
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
