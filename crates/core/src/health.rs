//! Health reports and provider identity.

use std::time::Duration;

/// Overall state of a provider, as reported by `health()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Serving normally.
    Healthy,
    /// Serving, with reduced capacity or elevated latency.
    Degraded,
    /// Not serving.
    Unhealthy,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// The answer of a provider's `health()`: status, how long the probe took, and
/// an optional explanation (never containing secrets).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Health {
    /// Overall state.
    pub status: HealthStatus,
    /// Time the health probe took.
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// Why the provider is degraded or unhealthy, or a short note.
    pub message: Option<String>,
}

impl Health {
    /// A healthy report with the given probe latency.
    pub fn healthy(latency: Duration) -> Self {
        Health {
            status: HealthStatus::Healthy,
            latency,
            message: None,
        }
    }

    /// An unhealthy report with a reason.
    pub fn unhealthy(latency: Duration, message: impl Into<String>) -> Self {
        Health {
            status: HealthStatus::Unhealthy,
            latency,
            message: Some(message.into()),
        }
    }

    /// Whether the status is [`HealthStatus::Healthy`].
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

/// Who a provider is: its registry type name and its crate version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderInfo {
    /// Type name under which the provider registers (`"memory"`, `"postgres"`).
    pub name: &'static str,
    /// Version of the provider crate (`env!("CARGO_PKG_VERSION")`).
    pub version: &'static str,
}
