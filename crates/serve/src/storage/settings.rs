//! Bucket settings (public, size limit, allowed MIME types), which the core
//! `Storage` interface has no place for: they are kept as a small JSON
//! object inside the bucket itself, under a reserved key that no request
//! can read, write, list or delete ([`super::access::check_key`]), so they
//! live wherever the bucket lives and survive restarts on every provider.
//!
//! Reading them costs a provider call, so [`SettingsCache`] keeps them for
//! [`SETTINGS_TTL`]: this server's own bucket updates and deletes drop the
//! entry at once; a change made by another process (another server over the
//! same storage, a tool writing the settings object) is seen within the TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use truststream_core::{Error, ErrorKind};
use truststream_core_storage::{Storage, UploadOptions};

/// Keys starting with this belong to the server.
pub(crate) const RESERVED_PREFIX: &str = ".truststream-";

/// The key of a bucket's settings.
pub(crate) const SETTINGS_KEY: &str = ".truststream-bucket.json";

/// Largest settings object read back (guards against a tampered file).
const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// A bucket's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct BucketSettings {
    /// Objects may be downloaded by anyone (`/object/public/...`).
    pub public: bool,
    /// Largest object in bytes (the server's `max_upload_bytes` caps it).
    pub file_size_limit: Option<u64>,
    /// MIME types uploads may have (`image/*` wildcards); `None` = any.
    pub allowed_mime_types: Option<Vec<String>>,
    /// When the bucket was created through the API.
    pub created_at: Option<DateTime<Utc>>,
    /// When the settings last changed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl BucketSettings {
    /// Whether `mime` (parameters ignored, case-insensitive) is allowed.
    pub(crate) fn allows_mime(&self, mime: &str) -> bool {
        let Some(allowed) = &self.allowed_mime_types else {
            return true;
        };
        if allowed.is_empty() {
            return true;
        }
        let mime = base_mime(mime);
        allowed.iter().any(|pattern| {
            let pattern = pattern.trim().to_ascii_lowercase();
            match pattern.strip_suffix("/*") {
                Some(top) => mime
                    .split_once('/')
                    .is_some_and(|(t, _)| t == top || top == "*"),
                None => pattern == "*" || pattern == "*/*" || pattern == mime,
            }
        })
    }
}

/// `type/subtype` of a content type, lower-case, without parameters.
pub(crate) fn base_mime(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The settings object of `bucket`, `None` when there is none (the bucket
/// was made by another tool, or does not exist). One provider call.
pub(crate) async fn read(
    storage: &dyn Storage,
    bucket: &str,
) -> Result<Option<BucketSettings>, Error> {
    match storage.download(bucket, SETTINGS_KEY).await {
        Ok(bytes) if bytes.len() <= MAX_SETTINGS_BYTES => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::internal(format!(
                    "the settings of bucket {bucket:?} are not readable: {e}"
                ))
            })
        }
        Ok(_) => Err(Error::internal(format!(
            "the settings of bucket {bucket:?} are too large"
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// How long a cached settings object is trusted: the longest a change made
/// by another process (not through this server) goes unseen.
pub(crate) const SETTINGS_TTL: Duration = Duration::from_secs(2);

/// Most buckets whose settings are cached at once.
const MAX_CACHED_BUCKETS: usize = 1024;

/// Bucket settings as last read, per bucket, for [`SETTINGS_TTL`].
///
/// A read that started before an [`SettingsCache::invalidate`] does not
/// put its (possibly older) result back: every invalidation moves a
/// generation counter, and a result is kept only if the counter did not
/// move while it was read. Failed reads are not cached.
#[derive(Debug)]
pub(crate) struct SettingsCache {
    inner: Mutex<CacheInner>,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct CacheInner {
    generation: u64,
    entries: HashMap<String, (Instant, Option<BucketSettings>)>,
}

impl Default for SettingsCache {
    fn default() -> Self {
        SettingsCache::new(SETTINGS_TTL)
    }
}

impl SettingsCache {
    /// An empty cache whose entries live `ttl`.
    pub(crate) fn new(ttl: Duration) -> Self {
        SettingsCache {
            inner: Mutex::new(CacheInner::default()),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Like [`read`], from the cache when the entry is younger than the TTL.
    pub(crate) async fn read(
        &self,
        storage: &dyn Storage,
        bucket: &str,
    ) -> Result<Option<BucketSettings>, Error> {
        let generation = {
            let inner = self.lock();
            if let Some((at, s)) = inner.entries.get(bucket) {
                if at.elapsed() < self.ttl {
                    return Ok(s.clone());
                }
            }
            inner.generation
        };
        // The entry ages from when the read started: the object may have
        // changed at any moment of a slow read.
        let started = Instant::now();
        let fresh = read(storage, bucket).await?;
        let mut inner = self.lock();
        if inner.generation == generation {
            if inner.entries.len() >= MAX_CACHED_BUCKETS {
                let ttl = self.ttl;
                inner.entries.retain(|_, (at, _)| at.elapsed() < ttl);
                if inner.entries.len() >= MAX_CACHED_BUCKETS {
                    inner.entries.clear();
                }
            }
            inner
                .entries
                .insert(bucket.to_string(), (started, fresh.clone()));
        }
        Ok(fresh)
    }

    /// The settings of `bucket`: the defaults (private, no limits) when
    /// none were written, or when the bucket does not exist (callers find
    /// that out from the operation itself).
    pub(crate) async fn load(
        &self,
        storage: &dyn Storage,
        bucket: &str,
    ) -> Result<BucketSettings, Error> {
        Ok(self.read(storage, bucket).await?.unwrap_or_default())
    }

    /// Forgets `bucket` (its settings were written or the bucket deleted).
    pub(crate) fn invalidate(&self, bucket: &str) {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        inner.entries.remove(bucket);
    }

    /// How many buckets are cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Writes the settings of `bucket`.
pub(crate) async fn store(
    storage: &dyn Storage,
    bucket: &str,
    settings: &BucketSettings,
) -> Result<(), Error> {
    let body = serde_json::to_vec(settings)
        .map_err(|e| Error::internal(format!("bucket settings: {e}")))?;
    storage
        .upload(
            bucket,
            SETTINGS_KEY,
            Bytes::from(body),
            &UploadOptions::new().content_type("application/json"),
        )
        .await
        .map(|_| ())
}

/// The error for an unreadable `file_size_limit` string (the caller's
/// value echoed bounded).
fn size_limit_unreadable(s: &str) -> String {
    format!(
        "file_size_limit \"{}\": use bytes or a size like \"20MB\"",
        truststream_core::echo(s)
    )
}

/// Parses a `file_size_limit`: a number of bytes, or a string such as
/// `"20MB"`, `"512KB"`, `"1GB"` or `"100"` (units of 1024, as Supabase
/// reads them). `null` or `0` mean no limit of the bucket's own.
pub(crate) fn parse_size_limit(value: &serde_json::Value) -> Result<Option<u64>, String> {
    let n = match value {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or_else(|| "file_size_limit must be a positive number".to_string())?,
        serde_json::Value::String(s) => {
            let s = s.trim().to_ascii_uppercase();
            let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
                Some(i) => (&s[..i], s[i..].trim()),
                None => (s.as_str(), ""),
            };
            let factor: u64 = match unit {
                "" | "B" => 1,
                "K" | "KB" => 1024,
                "M" | "MB" => 1024 * 1024,
                "G" | "GB" => 1024 * 1024 * 1024,
                _ => return Err(size_limit_unreadable(&s)),
            };
            let number: f64 = digits.parse().map_err(|_| size_limit_unreadable(&s))?;
            (number * factor as f64) as u64
        }
        _ => return Err("file_size_limit must be a number or a string like \"20MB\"".into()),
    };
    Ok((n > 0).then_some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cache_reads_once_and_forgets_on_invalidate() {
        let storage = truststream_storage_memory::MemoryStorage::new();
        storage.create_bucket("bkt").await.expect("bucket");
        let cache = SettingsCache::new(Duration::from_secs(3600));
        assert_eq!(cache.read(&storage, "bkt").await.expect("read"), None);
        let public = BucketSettings {
            public: true,
            ..Default::default()
        };
        store(&storage, "bkt", &public).await.expect("store");
        // Still the cached answer until invalidated.
        assert_eq!(cache.read(&storage, "bkt").await.expect("read"), None);
        cache.invalidate("bkt");
        assert_eq!(cache.load(&storage, "bkt").await.expect("load"), public);
        assert_eq!(cache.len(), 1);
        // A zero TTL reads every time.
        let uncached = SettingsCache::new(Duration::ZERO);
        assert!(uncached.load(&storage, "bkt").await.expect("load").public);
        store(&storage, "bkt", &BucketSettings::default())
            .await
            .expect("store");
        assert!(!uncached.load(&storage, "bkt").await.expect("load").public);
    }

    /// Sleeps before every `download`.
    struct SlowDownload(Duration);

    impl truststream_layer::Around for SlowDownload {
        fn around<'a>(
            &'a self,
            op: truststream_layer::Op<'a>,
            next: truststream_layer::Next<'a>,
        ) -> truststream_core::BoxFuture<'a, truststream_core::Result<()>> {
            Box::pin(async move {
                if op.method == "download" {
                    tokio::time::sleep(self.0).await;
                }
                next.run().await
            })
        }
    }

    #[tokio::test]
    async fn a_cached_read_ages_from_when_it_started() {
        let inner: std::sync::Arc<dyn Storage> =
            std::sync::Arc::new(truststream_storage_memory::MemoryStorage::new());
        inner.create_bucket("bkt").await.expect("bucket");
        let slow = truststream_layer::around_storage(
            inner.clone(),
            std::sync::Arc::new(SlowDownload(Duration::from_millis(1500))),
        );
        let cache = SettingsCache::new(Duration::from_secs(1));
        // The read takes longer than the TTL: what it found may already be
        // older than the TTL when it comes back.
        assert_eq!(cache.read(&*slow, "bkt").await.expect("read"), None);
        let public = BucketSettings {
            public: true,
            ..Default::default()
        };
        store(&*inner, "bkt", &public).await.expect("store");
        assert_eq!(cache.load(&*slow, "bkt").await.expect("load"), public);
    }

    #[test]
    fn mime_patterns() {
        let s = BucketSettings {
            allowed_mime_types: Some(vec!["image/*".into(), "application/pdf".into()]),
            ..Default::default()
        };
        assert!(s.allows_mime("image/png"));
        assert!(s.allows_mime("IMAGE/JPEG; q=1"));
        assert!(s.allows_mime("application/pdf"));
        assert!(!s.allows_mime("text/plain"));
        assert!(!s.allows_mime("imagex/png"));
        assert!(BucketSettings::default().allows_mime("text/plain"));
    }

    #[test]
    fn size_limits() {
        use serde_json::json;
        assert_eq!(parse_size_limit(&json!(100)), Ok(Some(100)));
        assert_eq!(parse_size_limit(&json!("1MB")), Ok(Some(1024 * 1024)));
        assert_eq!(parse_size_limit(&json!("512kb")), Ok(Some(512 * 1024)));
        assert_eq!(parse_size_limit(&json!(null)), Ok(None));
        assert!(parse_size_limit(&json!("lots")).is_err());
        assert!(parse_size_limit(&json!(-1)).is_err());
        // The caller's value comes back bounded.
        let e = parse_size_limit(&json!("9".repeat(10_000) + "XB")).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }
}
