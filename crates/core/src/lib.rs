#![doc = include_str!("../README.md")]

mod error;
mod health;
mod registry;
mod secret;

pub use error::{Error, ErrorKind, Result};
pub use health::{Health, HealthStatus, ProviderInfo};
pub use registry::{parse_config, BoxFuture, Factory, Registry};
pub use secret::Secret;
