//! The cache's settings: `[<env>.database.layers] cache = { ... }`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use truststream_core::{echo, Error, Result};
use truststream_core_db::ident;

/// The longest time to live accepted, in seconds (one year).
pub const MAX_TTL_S: u64 = 365 * 24 * 3600;

/// Settings of the [`Cache`](crate::Cache) layer.
///
/// ```toml
/// [production.database.layers]
/// cache = { default_ttl_s = 300, tables = { trust_scores = 60, system_config = 3600 }, max_entries = 100000 }
/// ```
///
/// Unknown keys are refused; a bad value is `InvalidInput` naming its key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How long a cached result of a table not listed in `tables` is
    /// served, in seconds (default 300). `0`: tables not listed are never
    /// cached.
    pub default_ttl_s: u64,
    /// Time to live per table, in seconds; `0` means "never cache this
    /// table". Table names are matched ignoring ASCII case (SQLite's table
    /// names are case-insensitive). Default: none.
    pub tables: BTreeMap<String, u64>,
    /// Most results kept (default 100 000; at least 1).
    pub max_entries: u64,
    /// Most bytes kept, as estimated from the results' JSON size; no bound
    /// when absent (the default). With both bounds, each entry counts for
    /// at least `max_bytes / max_entries` bytes, so neither is exceeded.
    pub max_bytes: Option<u64>,
    /// Whether to follow the provider's change feed when it sees every
    /// writer of the database (PostgreSQL), so that other processes'
    /// writes invalidate the cache (default `true`). `false` trades that
    /// for no change triggers on the tables: other processes' writes are
    /// then seen only when an entry's TTL ends.
    pub follow_changes: bool,
    /// When a result is stored: on its key's second miss (the default) or
    /// on the first. See [`Admission`].
    pub admission: Admission,
}

/// When a miss's result is stored (`admission = "second_miss"` or
/// `"first_miss"`).
///
/// Storing a result is most of what a miss costs the cache (a copy of
/// the rows, moka's insert and its bookkeeping), and a result read once
/// is never served: with [`Admission::SecondMiss`] the layer remembers a
/// fingerprint of each key it missed recently (a doorkeeper, as TinyLFU
/// has) and stores a result only when its key misses again while still
/// remembered. A key read once costs a hash and one table slot; a key
/// read twice is served from its third read on. [`Admission::FirstMiss`]
/// stores every miss (served from the second read on) at the full cost
/// on every miss.
///
/// The doorkeeper holds one 4-byte slot per entry of `max_entries`,
/// rounded up to a power of two between 1,024 and 1,048,576 (512 KiB
/// with the defaults), with either admission: a key is looked up in moka
/// only while its slot says it was stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Admission {
    /// Store a result when its key misses a second time within the
    /// doorkeeper's memory (about `max_entries` other keys' misses).
    #[default]
    SecondMiss,
    /// Store every miss's result.
    FirstMiss,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            default_ttl_s: 300,
            tables: BTreeMap::new(),
            max_entries: 100_000,
            max_bytes: None,
            follow_changes: true,
            admission: Admission::SecondMiss,
        }
    }
}

impl CacheConfig {
    /// Parses the layer's settings (an object; `null` for the defaults),
    /// then [`CacheConfig::validate`]s them. Every error is `InvalidInput`
    /// naming the key (`tables.trust_scores: invalid type: expected u64`);
    /// serde's quote of a bad value is left out.
    pub fn from_settings(settings: serde_json::Value) -> Result<Self> {
        let config: CacheConfig = truststream_layer::parse_settings(settings)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and table names; `InvalidInput` naming the key.
    pub fn validate(&self) -> Result<()> {
        at_most("default_ttl_s", self.default_ttl_s, MAX_TTL_S)?;
        let mut seen: HashMap<String, &str> = HashMap::new();
        for (table, ttl) in &self.tables {
            let key = format!("tables.{}", echo(table));
            if ident::validate(table).is_err() {
                return Err(Error::invalid_input(format!(
                    "{key}: not a table name (letters, digits and '_', not first; at most {} bytes)",
                    ident::MAX_LEN
                )));
            }
            at_most(&key, *ttl, MAX_TTL_S)?;
            if let Some(other) = seen.insert(table.to_ascii_lowercase(), table) {
                return Err(Error::invalid_input(format!(
                    "{key}: the same table as tables.{other} (names are matched ignoring case)"
                )));
            }
        }
        if self.max_entries == 0 {
            return Err(Error::invalid_input(
                "max_entries must be at least 1 (leave the layer out to cache nothing)",
            ));
        }
        if let Some(bytes) = self.max_bytes {
            if bytes < self.max_entries.min(1024) {
                return Err(Error::invalid_input(format!(
                    "max_bytes must be at least {} (max_entries, up to 1024), not {bytes}",
                    self.max_entries.min(1024)
                )));
            }
        }
        Ok(())
    }

    /// The settings in one line, for `truststream check`.
    pub fn describe(&self) -> String {
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|(t, s)| format!("{t}={s}"))
            .collect();
        let mut out = format!(
            "default_ttl_s={}, max_entries={}",
            self.default_ttl_s, self.max_entries
        );
        if let Some(b) = self.max_bytes {
            out.push_str(&format!(", max_bytes={b}"));
        }
        if !tables.is_empty() {
            out.push_str(&format!(", tables={{{}}}", tables.join(", ")));
        }
        if !self.follow_changes {
            out.push_str(", follow_changes=false");
        }
        if self.admission == Admission::FirstMiss {
            out.push_str(", admission=first_miss");
        }
        out
    }

    /// Time to live per table (lowercased name; `None`: never cached) and
    /// for the others.
    pub(crate) fn ttls(&self) -> (HashMap<Box<str>, Option<Duration>>, Option<Duration>) {
        let ttl = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let tables = self
            .tables
            .iter()
            .map(|(t, s)| (t.to_ascii_lowercase().into_boxed_str(), ttl(*s)))
            .collect();
        (tables, ttl(self.default_ttl_s))
    }
}

fn at_most(key: &str, value: u64, max: u64) -> Result<()> {
    if value > max {
        return Err(Error::invalid_input(format!(
            "{key} must be at most {max} (one year), not {value}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn err(v: serde_json::Value) -> String {
        let e = CacheConfig::from_settings(v).unwrap_err();
        assert_eq!(e.kind(), truststream_core::ErrorKind::InvalidInput);
        e.message().to_string()
    }

    #[test]
    fn defaults_and_the_guide_example() {
        let c = CacheConfig::from_settings(serde_json::Value::Null).unwrap();
        assert_eq!(c, CacheConfig::default());
        assert_eq!(c.default_ttl_s, 300);
        assert_eq!(c.max_entries, 100_000);
        let c = CacheConfig::from_settings(json!({
            "default_ttl_s": 300,
            "tables": { "trust_scores": 60, "system_config": 3600, "audit": 0 },
            "max_entries": 100000,
            "max_bytes": 67108864u64,
        }))
        .unwrap();
        let (tables, default) = c.ttls();
        assert_eq!(default, Some(Duration::from_secs(300)));
        assert_eq!(tables["trust_scores"], Some(Duration::from_secs(60)));
        assert_eq!(tables["audit"], None);
        assert_eq!(
            c.describe(),
            "default_ttl_s=300, max_entries=100000, max_bytes=67108864, \
             tables={audit=0, system_config=3600, trust_scores=60}"
        );
    }

    #[test]
    fn admission_is_second_miss_unless_told() {
        assert_eq!(CacheConfig::default().admission, Admission::SecondMiss);
        let c = CacheConfig::from_settings(json!({"admission": "first_miss"})).unwrap();
        assert_eq!(c.admission, Admission::FirstMiss);
        assert_eq!(
            c.describe(),
            "default_ttl_s=300, max_entries=100000, admission=first_miss"
        );
        let c = CacheConfig::from_settings(json!({"admission": "second_miss"})).unwrap();
        assert_eq!(c, CacheConfig::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            err(json!({"tables": {"trust_scores": "sixty"}})),
            "tables.trust_scores: invalid type: expected u64"
        );
        assert_eq!(
            err(json!({"default_ttl_s": -1})),
            "default_ttl_s: invalid value: expected u64"
        );
        assert!(err(json!({"ttl": 3})).starts_with("unknown field `ttl`"));
        assert!(err(json!({"tables": {"bad name": 3}})).starts_with("tables.bad name: not a table"));
        assert!(err(json!({"tables": {"a": 1, "A": 2}})).contains("the same table"));
        assert!(err(json!({"tables": {"a": MAX_TTL_S + 1}})).starts_with("tables.a must be"));
        assert!(err(json!({"max_entries": 0})).starts_with("max_entries must be"));
        assert!(err(json!({"max_bytes": 10})).starts_with("max_bytes must be"));
        assert!(err(json!(7)).starts_with("invalid type: expected"));
        assert!(err(json!({"admission": "always"})).starts_with("admission: unknown variant"));
    }
}
