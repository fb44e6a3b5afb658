//! The storage composite's settings:
//! `composite = { secondary = { type = "fs", ... }, journal = { type = "sqlite", ... }, ... }`.

use std::time::Duration;

use truststream_core::{echo, Error, Result};
use truststream_core_db::ident;

use crate::config::{parse_provider, positive, SecondaryConfig};

/// Default journal table name.
pub const DEFAULT_JOURNAL_TABLE: &str = "truststream_storage_journal";

/// The storage composite layer's settings.
///
/// ```toml
/// [production.storage.layers]
/// composite = { secondary = { type = "fs", root = "./data/replica" }, journal = { type = "sqlite", path = "./data/storage-journal.db" }, journal_table = "truststream_storage_journal", interval_ms = 200, batch = 200, lag_degraded_s = 30 }
/// ```
///
/// `secondary` and `journal` are required; every other key has a default;
/// unknown keys are refused.
#[derive(Clone, PartialEq)]
pub struct StorageCompositeConfig {
    /// The secondary storage: its provider type name (`type`) and that
    /// provider's own settings (every other key of the table).
    pub secondary: SecondaryConfig,
    /// The database holding the journal (a durable one: `sqlite` on a
    /// local file, or `postgres`), as `secondary` is given.
    pub journal: SecondaryConfig,
    /// The journal table in that database (`journal_table`, default
    /// `truststream_storage_journal`).
    pub journal_table: String,
    /// Pause between replication passes when the journal is drained
    /// (`interval_ms`, default 200).
    pub interval: Duration,
    /// Most journal entries one pass takes (`batch`, default 200).
    pub batch: u64,
    /// Replication lag (age of the oldest due journal entry) beyond which
    /// `health()` reports degraded (`lag_degraded_s`, default 30).
    pub lag_degraded: Duration,
}

impl std::fmt::Debug for StorageCompositeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageCompositeConfig")
            .field("secondary", &self.secondary)
            .field("journal", &self.journal)
            .field("journal_table", &self.journal_table)
            .field("interval", &self.interval)
            .field("batch", &self.batch)
            .field("lag_degraded", &self.lag_degraded)
            .finish()
    }
}

impl StorageCompositeConfig {
    /// Settings with the defaults, the given secondary storage and journal
    /// database (type names and settings, as the runtime's registries take
    /// them; [`StorageCompositeLayer::wrap`](crate::StorageCompositeLayer::wrap)
    /// takes built providers and uses only the names, for labels).
    pub fn new(secondary_provider: &str, journal_provider: &str) -> Self {
        let named = |provider: &str| SecondaryConfig {
            provider: provider.to_string(),
            settings: serde_json::Value::Object(Default::default()),
        };
        StorageCompositeConfig {
            secondary: named(secondary_provider),
            journal: named(journal_provider),
            journal_table: DEFAULT_JOURNAL_TABLE.to_string(),
            interval: Duration::from_millis(200),
            batch: 200,
            lag_degraded: Duration::from_secs(30),
        }
    }

    /// Parses the layer's settings (a table). A missing `secondary` or
    /// `journal`, an unknown key or a bad value is `InvalidInput` naming
    /// the key (the registry puts `storage.layers.composite` before it).
    pub fn parse(settings: &serde_json::Value) -> Result<Self> {
        let raw: Raw = truststream_layer::parse_settings(settings.clone())?;
        let mut config = StorageCompositeConfig::new("", "");
        config.secondary = parse_provider(
            "secondary",
            raw.secondary,
            "the secondary storage, e.g. { type = \"fs\", root = \"./data/replica\" }",
        )?;
        config.journal = parse_provider(
            "journal",
            raw.journal,
            "the database of the replication journal, e.g. { type = \"sqlite\", path = \"./data/storage-journal.db\" }",
        )?;
        if let Some(name) = raw.journal_table {
            if ident::validate(&name).is_err() || name.starts_with("_truststream") {
                return Err(Error::invalid_input(format!(
                    "journal_table: {:?} is not a usable table name (letters, digits, '_'; \
                     names starting with _truststream are reserved)",
                    echo(&name).to_string()
                )));
            }
            config.journal_table = name;
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
}

/// The settings as written.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    secondary: Option<serde_json::Map<String, serde_json::Value>>,
    journal: Option<serde_json::Map<String, serde_json::Value>>,
    journal_table: Option<String>,
    interval_ms: Option<u64>,
    batch: Option<u64>,
    lag_degraded_s: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: serde_json::Value) -> String {
        match StorageCompositeConfig::parse(&v) {
            Ok(c) => panic!("accepted {c:?}"),
            Err(e) => {
                assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput);
                e.message().to_string()
            }
        }
    }

    #[test]
    fn defaults_and_full_settings() {
        let c = StorageCompositeConfig::parse(&json!({
            "secondary": {"type": "fs", "root": "r"},
            "journal": {"type": "sqlite", "path": "j.db"},
        }))
        .expect("parses");
        assert_eq!(c.secondary.provider, "fs");
        assert_eq!(c.secondary.settings, json!({"root": "r"}));
        assert_eq!(c.journal.provider, "sqlite");
        assert_eq!(c.journal.settings, json!({"path": "j.db"}));
        assert_eq!(c.journal_table, DEFAULT_JOURNAL_TABLE);
        assert_eq!(c.interval, Duration::from_millis(200));
        assert_eq!(c.batch, 200);
        assert_eq!(c.lag_degraded, Duration::from_secs(30));

        let c = StorageCompositeConfig::parse(&json!({
            "secondary": {"type": "memory"}, "journal": {"type": "memory"},
            "journal_table": "j", "interval_ms": 5, "batch": 7, "lag_degraded_s": 9
        }))
        .expect("parses");
        assert_eq!(
            (
                c.journal_table.as_str(),
                c.interval,
                c.batch,
                c.lag_degraded
            ),
            ("j", Duration::from_millis(5), 7, Duration::from_secs(9))
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let s = json!({"type": "memory"});
        assert!(err(json!({"journal": s})).starts_with("secondary: required"));
        assert!(err(json!({"secondary": s})).starts_with("journal: required"));
        assert!(
            err(json!({"secondary": s, "journal": {"path": "x"}})).starts_with("journal.type: ")
        );
        assert!(err(json!({"secondary": s, "journal": s, "batch": 0})).contains("batch: "));
        assert!(
            err(json!({"secondary": s, "journal": s, "interval_ms": "x"})).contains("interval_ms")
        );
        assert!(
            err(json!({"secondary": s, "journal": s, "journal_table": "no-dash"}))
                .contains("journal_table: ")
        );
        assert!(
            err(json!({"secondary": s, "journal": s, "journal_table": "_truststream_j"}))
                .contains("reserved")
        );
        let e = err(json!({"secondary": s, "journal": s, "outbox_table": "o"}));
        assert!(e.contains("outbox_table"), "{e}");
    }

    #[test]
    fn debug_never_shows_provider_settings() {
        let c = StorageCompositeConfig::parse(&json!({
            "secondary": {"type": "s3", "secret_access_key": "hunter2"},
            "journal": {"type": "postgres", "url": "postgres://u:swordfish@h/db"},
        }))
        .expect("parses");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish") && shown.contains("s3"),
            "{shown}"
        );
    }
}
