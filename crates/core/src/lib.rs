#![doc = include_str!("../README.md")]

mod ci;
mod error;
mod health;
mod registry;
mod secret;

pub use ci::{in_ci, is_ci_value, node_packages_ready, CI_VAR};
pub use error::{
    echo, Echo, Error, ErrorChain, ErrorKind, Result, ECHO_MAX_CHARS, MAX_MESSAGE_BYTES,
};
pub use health::{Health, HealthStatus, ProviderInfo};
pub use registry::{
    parse_config, parse_settings, without_values, BoxFuture, BuildOptions, Factory, Registry,
    SETTING, SETTING_PATH,
};
pub use secret::Secret;
