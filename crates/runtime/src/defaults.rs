//! The settings a provider of this workspace actually runs with: the
//! configured ones over the provider's own defaults (`truststream config`).

use serde_json::Value;

/// The settings of provider `kind` of section `section` after the
/// provider's config type filled in its defaults (the SQLite path, pool
/// sizes), as JSON; `None` for a provider this build does not know the
/// config type of, or settings it would refuse (the build names why).
#[allow(unused_variables)]
pub(crate) fn effective(section: &str, kind: &str, settings: &Value) -> Option<Value> {
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(
        settings: &Value,
    ) -> Option<Value> {
        let parsed: T = truststream_core::parse_settings(settings.clone()).ok()?;
        serde_json::to_value(parsed).ok()
    }
    match (section, kind) {
        #[cfg(feature = "db-memory")]
        ("database", "memory") => through::<truststream_db_memory::MemoryConfig>(settings),
        #[cfg(feature = "db-sqlite")]
        ("database", "sqlite") => through::<truststream_db_sqlite::SqliteConfig>(settings),
        #[cfg(feature = "db-postgres")]
        ("database", "postgres") => through::<truststream_db_postgres::PgConfig>(settings),
        #[cfg(feature = "storage-memory")]
        ("storage", "memory") => {
            through::<truststream_storage_memory::MemoryStorageConfig>(settings)
        }
        #[cfg(feature = "storage-fs")]
        ("storage", "fs") => through::<truststream_storage_fs::FsStorageConfig>(settings),
        #[cfg(feature = "realtime-memory")]
        ("realtime", "memory") => {
            through::<truststream_realtime_memory::MemoryRealtimeConfig>(settings)
        }
        #[cfg(feature = "realtime-ws")]
        ("realtime", "ws") => through::<truststream_realtime_ws::WsRealtimeConfig>(settings),
        #[cfg(feature = "auth-jwt")]
        ("auth", "jwt") => through::<truststream_auth_jwt::JwtAuthConfig>(settings),
        _ => None,
    }
}

/// `given` with every key of `effective` it lacks added (the configured
/// values and their order first, then the defaults).
pub(crate) fn fill(given: &mut serde_json::Map<String, Value>, effective: Value) {
    if let Value::Object(all) = effective {
        for (k, v) in all {
            given.entry(k).or_insert(v);
        }
    }
}
