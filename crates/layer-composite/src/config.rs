//! The layer's settings: `composite = { secondary = { type = "sqlite", ... }, ... }`.

use std::time::Duration;

use truststream_core::{echo, Error, Result};
use truststream_core_db::ident;

/// The composite layer's settings.
///
/// ```toml
/// [production.database.layers]
/// composite = { secondary = { type = "sqlite", path = "./data/replica.db" }, outbox_table = "truststream_outbox", interval_ms = 200, batch = 500, lag_degraded_s = 30 }
/// ```
///
/// Every key but `secondary` has a default; unknown keys are refused.
#[derive(Clone, PartialEq)]
pub struct CompositeConfig {
    /// The secondary database: its provider type name (`type`) and that
    /// provider's own settings (every other key of the table). Required.
    pub secondary: SecondaryConfig,
    /// The outbox table on the primary (default `truststream_outbox`; names
    /// starting with `_truststream` are the SQL providers' own). The
    /// layer's table catalog lives next to it, in `<outbox_table>_tables`.
    pub outbox_table: String,
    /// Pause between replication passes when the outbox is drained
    /// (`interval_ms`, default 200).
    pub interval: Duration,
    /// Most outbox entries one pass takes (`batch`, default 500).
    pub batch: u64,
    /// Replication lag (age of the oldest outbox entry) beyond which
    /// `health()` reports degraded (`lag_degraded_s`, default 30).
    pub lag_degraded: Duration,
}

/// The secondary provider: a type name and its settings, as the runtime's
/// database registry takes them.
#[derive(Clone, PartialEq)]
pub struct SecondaryConfig {
    /// The provider's registry type name (`"sqlite"`).
    pub provider: String,
    /// The provider's settings (may hold secrets: never printed).
    pub settings: serde_json::Value,
}

impl std::fmt::Debug for SecondaryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecondaryConfig")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CompositeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositeConfig")
            .field("secondary", &self.secondary)
            .field("outbox_table", &self.outbox_table)
            .field("interval", &self.interval)
            .field("batch", &self.batch)
            .field("lag_degraded", &self.lag_degraded)
            .finish()
    }
}

/// Default outbox table name.
pub const DEFAULT_OUTBOX_TABLE: &str = "truststream_outbox";

impl CompositeConfig {
    /// Settings with the defaults and the given secondary.
    pub fn new(secondary_provider: &str, secondary_settings: serde_json::Value) -> Self {
        CompositeConfig {
            secondary: SecondaryConfig {
                provider: secondary_provider.to_string(),
                settings: secondary_settings,
            },
            outbox_table: DEFAULT_OUTBOX_TABLE.to_string(),
            interval: Duration::from_millis(200),
            batch: 500,
            lag_degraded: Duration::from_secs(30),
        }
    }

    /// Parses the layer's settings (a table, through
    /// [`truststream_layer::parse_settings`]). A missing `secondary`, an
    /// unknown key or a bad value is `InvalidInput` naming the key
    /// (`batch: ...`; the registry puts `database.layers.composite` before
    /// it).
    pub fn parse(settings: &serde_json::Value) -> Result<Self> {
        let raw: Raw = truststream_layer::parse_settings(settings.clone())?;
        let mut config = CompositeConfig::new("", serde_json::Value::Null);
        config.secondary = parse_provider(
            "secondary",
            raw.secondary,
            "the secondary database, e.g. { type = \"sqlite\", path = \"./data/replica.db\" }",
        )?;
        if let Some(name) = raw.outbox_table {
            // The catalog table's name adds `_tables`.
            let catalog = format!("{name}_tables");
            if ident::validate(&name)
                .and_then(|_| ident::validate(&catalog))
                .is_err()
            {
                return Err(bad(
                    "outbox_table",
                    &format!(
                        "{:?} is not a usable table name (letters, digits, '_', at most {} bytes)",
                        echo(&name).to_string(),
                        ident::MAX_LEN - "_tables".len()
                    ),
                ));
            }
            if name.starts_with("_truststream") {
                return Err(bad(
                    "outbox_table",
                    "names starting with _truststream are reserved by the SQL providers",
                ));
            }
            config.outbox_table = name;
        }
        if let Some(ms) = raw.interval_ms {
            config.interval = Duration::from_millis(positive(ms, "interval_ms")?);
        }
        if let Some(n) = raw.batch {
            config.batch = positive(n, "batch")?;
        }
        if let Some(s) = raw.lag_degraded_s {
            config.lag_degraded = Duration::from_secs(positive(s, "lag_degraded_s")?);
        }
        Ok(config)
    }

    /// The catalog table: the tables the layer replicates, with their
    /// schemas.
    pub fn catalog_table(&self) -> String {
        format!("{}_tables", self.outbox_table)
    }
}

/// The settings as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    secondary: Option<serde_json::Map<String, serde_json::Value>>,
    outbox_table: Option<String>,
    interval_ms: Option<u64>,
    batch: Option<u64>,
    lag_degraded_s: Option<u64>,
}

fn bad(key: &str, why: &str) -> Error {
    Error::invalid_input(format!("{key}: {why}"))
}

/// `n`, or `InvalidInput` naming `key` when it is 0.
pub(crate) fn positive(n: u64, key: &str) -> Result<u64> {
    if n == 0 {
        return Err(bad(key, "must be above 0"));
    }
    Ok(n)
}

/// A provider table (`{ type = "...", ...its settings }`) at `key`;
/// `InvalidInput` naming the key when it is missing (`example` says what
/// is expected) or has no `type`.
pub(crate) fn parse_provider(
    key: &str,
    settings: Option<serde_json::Map<String, serde_json::Value>>,
    example: &str,
) -> Result<SecondaryConfig> {
    let mut settings = settings.ok_or_else(|| bad(key, &format!("required: {example}")))?;
    let provider = match settings.remove("type") {
        Some(serde_json::Value::String(t)) if !t.is_empty() => t,
        Some(_) => return Err(bad(&format!("{key}.type"), "expected a provider type name")),
        None => {
            return Err(bad(
                &format!("{key}.type"),
                "required: the provider's type name (\"sqlite\", \"fs\", ...)",
            ))
        }
    };
    Ok(SecondaryConfig {
        provider,
        settings: serde_json::Value::Object(settings),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: serde_json::Value) -> String {
        match CompositeConfig::parse(&v) {
            Ok(c) => panic!("accepted {c:?}"),
            Err(e) => {
                assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput);
                e.message().to_string()
            }
        }
    }

    #[test]
    fn defaults_and_full_settings() {
        let c = CompositeConfig::parse(&json!({"secondary": {"type": "sqlite", "path": "r.db"}}))
            .expect("parses");
        assert_eq!(c.secondary.provider, "sqlite");
        assert_eq!(c.secondary.settings, json!({"path": "r.db"}));
        assert_eq!(c.outbox_table, "truststream_outbox");
        assert_eq!(c.catalog_table(), "truststream_outbox_tables");
        assert_eq!(c.interval, Duration::from_millis(200));
        assert_eq!(c.batch, 500);
        assert_eq!(c.lag_degraded, Duration::from_secs(30));

        let c = CompositeConfig::parse(&json!({
            "secondary": {"type": "memory"}, "outbox_table": "ob", "interval_ms": 5,
            "batch": 7, "lag_degraded_s": 9
        }))
        .expect("parses");
        assert_eq!(
            (c.outbox_table.as_str(), c.interval, c.batch, c.lag_degraded),
            ("ob", Duration::from_millis(5), 7, Duration::from_secs(9))
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        assert!(err(json!({})).starts_with("secondary: required"));
        assert!(err(json!({"secondary": "sqlite"})).starts_with("secondary: "));
        assert!(err(json!({"secondary": {"path": "x"}})).starts_with("secondary.type: "));
        assert!(err(json!({"secondary": {"type": 3}})).starts_with("secondary.type: "));
        let s = json!({"type": "memory"});
        assert!(err(json!({"secondary": s, "batch": 0})).contains("batch: "));
        assert!(err(json!({"secondary": s, "batch": "x"})).contains("batch: "));
        assert!(err(json!({"secondary": s, "interval_ms": -1})).contains("interval_ms: "));
        assert!(err(json!({"secondary": s, "lag_degraded_s": 1.5})).contains("lag_degraded_s: "));
        assert!(err(json!({"secondary": s, "outbox_table": "no-dash"})).contains("outbox_table: "));
        assert!(
            err(json!({"secondary": s, "outbox_table": "_truststream_outbox"}))
                .contains("reserved")
        );
        assert!(
            err(json!({"secondary": s, "outbox_table": "x".repeat(60)})).contains("outbox_table: ")
        );
        let e = err(json!({"secondary": s, "intervall_ms": 1}));
        assert!(
            e.contains("intervall_ms") && e.contains("interval_ms"),
            "{e}"
        );
        assert!(!err(json!(true)).is_empty());
    }

    #[test]
    fn debug_never_shows_the_secondary_settings() {
        let c = CompositeConfig::parse(&json!({
            "secondary": {"type": "postgres", "url": "postgres://u:hunter2@h/db"}
        }))
        .expect("parses");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("postgres"),
            "{shown}"
        );
    }
}
