//! The `metrics` layer's settings.

use serde::Deserialize;
use truststream_core::{Error, Result};

/// Settings of the `metrics` layer.
///
/// ```toml
/// [production.database.layers]
/// metrics = true                                 # the defaults
/// # metrics = { tracing = false, max_targets = 200 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Open a `tracing` span per call (`truststream.call`, at debug level:
    /// shown with `RUST_LOG=truststream_layer_metrics=debug`; with the
    /// interface, provider, operation and target, and the error kind when
    /// the call fails). Free while debug is filtered out. Default `true`.
    pub tracing: bool,
    /// The most distinct targets (tables, buckets, channels) the registry
    /// gives series of their own; calls on targets seen after that are
    /// counted under `"other"`. Shared by every layer recording into the
    /// same registry. Default 1000, at most 100000.
    pub max_targets: usize,
    /// Record realtime channel names as targets (default `false`: realtime
    /// calls are counted under `"-"`). Channel names are chosen at run time
    /// and often carry user identifiers (`user:123`), and whoever reads
    /// `/metrics` or `truststream stats` would see them; tables and buckets
    /// are named by the schema and are always recorded.
    pub channel_names: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            tracing: true,
            max_targets: 1000,
            channel_names: false,
        }
    }
}

/// The largest `max_targets`: beyond it the series would cost more memory
/// than a label is worth (each holds a latency histogram of a few KiB).
const MAX_TARGETS: usize = 100_000;

impl MetricsConfig {
    /// Checks the values: `InvalidInput` naming the key of one out of range.
    pub fn validate(&self) -> Result<()> {
        if self.max_targets > MAX_TARGETS {
            return Err(Error::invalid_input(format!(
                "max_targets must be at most {MAX_TARGETS}, not {}",
                self.max_targets
            )));
        }
        Ok(())
    }

    /// Parses and checks settings from configuration (`{}` or null for the
    /// defaults): `InvalidInput` naming the key of a bad value.
    pub fn from_settings(settings: serde_json::Value) -> Result<Self> {
        let config: MetricsConfig = parse(settings)?;
        config.validate()?;
        Ok(config)
    }
}

use truststream_layer::parse_settings as parse;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_bad_values_and_unknown_keys() {
        assert_eq!(
            MetricsConfig::from_settings(json!({})).unwrap(),
            MetricsConfig::default()
        );
        assert_eq!(
            MetricsConfig::from_settings(json!({"tracing": false, "max_targets": 3})).unwrap(),
            MetricsConfig {
                tracing: false,
                max_targets: 3,
                channel_names: false,
            }
        );
        let e = MetricsConfig::from_settings(json!({"max_targets": "many"})).unwrap_err();
        assert_eq!(e.message(), "max_targets: invalid type: expected usize");
        let e = MetricsConfig::from_settings(json!({"max_targets": 100_001})).unwrap_err();
        assert_eq!(
            e.message(),
            "max_targets must be at most 100000, not 100001"
        );
        let e = MetricsConfig::from_settings(json!({"tracnig": true})).unwrap_err();
        assert_eq!(
            e.message(),
            "unknown field `tracnig`, expected one of `tracing`, `max_targets`, `channel_names`"
        );
        assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput);
    }
}
