#![doc = include_str!("../README.md")]

mod build;
mod config;
pub mod redact;
mod report;
mod runtime;
mod tracked;

pub use build::{Registries, Services};
pub use config::{
    Config, ConfigSources, Interface, ProviderSection, AUTH_NONE, BUILTIN_PROFILES,
    DEFAULT_CONFIG_FILE, ENV_CONFIG_FILE, ENV_PREFIX, ENV_PROFILE,
};
pub use report::{CompatibilityReport, InterfaceReport};
pub use runtime::{Retired, Runtime, RuntimeBuilder, Switch};
