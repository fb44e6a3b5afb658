#![doc = include_str!("../README.md")]

mod build;
mod closing;
mod config;
mod defaults;
mod disabled;
mod health;
pub mod redact;
mod report;
mod runtime;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "layer-metrics")]
pub mod stats;
mod tracked;

pub use build::{Registries, Services};
pub use config::{
    Config, ConfigSources, Interface, ProviderSection, AUTH_NONE, BUILTIN_PROFILES,
    DEFAULT_CONFIG_FILE, ENV_CONFIG_FILE, ENV_PREFIX, ENV_PROFILE, JOBS_NONE, JOBS_SECTION,
    LAYERS_KEY, NONE,
};
pub use health::{HealthReport, JobsHealth, ServiceHealth, DEFAULT_HEALTH_DEADLINE};
pub use report::{CompatibilityReport, InterfaceReport, JobsReport};
pub use runtime::{Retired, Runtime, RuntimeBuilder, Switch};
/// The layer mechanism (write your own layers with it; register them with
/// [`RuntimeBuilder::register_layer`] or [`Registries::layers`]).
pub use truststream_layer as layer;
