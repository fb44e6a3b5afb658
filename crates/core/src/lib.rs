#![doc = include_str!("../README.md")]

mod error;
mod health;

pub use error::{Error, ErrorKind, Result};
pub use health::{Health, HealthStatus, ProviderInfo};
