#![doc = include_str!("../README.md")]

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use truststream_core::Secret;
use truststream_core_storage::keys::{validate_bucket, validate_key};
use truststream_core_storage::list::ListPlan;
use truststream_core_storage::signing::UrlSigner;
use truststream_core_storage::{
    BucketInfo, ByteRange, ByteStream, Checksum, Error, Health, ListOptions, ListPage,
    ObjectDownload, ObjectMeta, ProviderInfo, SignedUrl, SignedUrlMethod, Storage,
    StorageCapabilities, StorageRegistry, StorageResult, UploadOptions,
};

/// The registry type name of this provider.
const TYPE_NAME: &str = "memory";
/// Size of the chunks `download_stream` yields.
const CHUNK_SIZE: usize = 64 * 1024;

/// Configuration of the memory provider (the `storage` section of the
/// TrustStream configuration when `type = "memory"`). Every field is optional.
///
/// `Debug` and `Serialize` never show the signing secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryStorageConfig {
    /// Buckets created when the store is built.
    pub buckets: Vec<String>,
    /// Largest object accepted, in bytes; larger uploads fail with
    /// `ErrorKind::TooLarge`. `None`: no limit besides memory.
    pub max_object_size: Option<u64>,
    /// Secret (at least 32 bytes) that signs URLs. `None`: a random secret per
    /// instance, so URLs stop working when the instance is dropped.
    pub signing_secret: Option<Secret>,
    /// Base of signed URLs; default `memory://<instance-id>`.
    pub base_url: Option<String>,
}

/// An object as stored: its bytes and metadata, replaced as a whole on write
/// so readers holding the `Arc` keep a consistent snapshot.
struct StoredObject {
    data: Bytes,
    meta: ObjectMeta,
}

struct BucketState {
    created_at: DateTime<Utc>,
    objects: BTreeMap<String, Arc<StoredObject>>,
}

impl BucketState {
    fn new() -> Self {
        BucketState {
            created_at: Utc::now(),
            objects: BTreeMap::new(),
        }
    }
}

/// A complete storage provider that keeps everything in memory: buckets,
/// objects with metadata, ETags and checksums, conditional writes, paged
/// listings, streaming, and signed URLs (used through
/// [`Storage::fetch_signed`]). Meant for tests and local development;
/// contents are lost when it is dropped.
///
/// Safe to share between tasks (`Arc<MemoryStorage>`): every operation holds
/// the internal lock only for map lookups and inserts, never across an
/// `.await`, and hashing happens outside it.
pub struct MemoryStorage {
    state: RwLock<BTreeMap<String, BucketState>>,
    max_object_size: Option<u64>,
    signer: UrlSigner,
    instance_id: String,
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("instance_id", &self.instance_id)
            .field("base_url", &self.signer.base_url())
            .field("max_object_size", &self.max_object_size)
            .field("buckets", &self.read().len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    /// An empty store with no buckets, no size limit and a random URL-signing
    /// secret.
    pub fn new() -> Self {
        let instance_id = hex::encode(rand::random::<[u8; 8]>());
        let base_url = format!("memory://{instance_id}");
        let signer = UrlSigner::new(&rand::random::<[u8; 32]>(), &base_url)
            .expect("a 32-byte secret is always long enough");
        MemoryStorage {
            state: RwLock::new(BTreeMap::new()),
            max_object_size: None,
            signer,
            instance_id,
        }
    }

    /// A store built from `config`: its buckets created, its limits applied.
    ///
    /// Fails with `ErrorKind::InvalidInput` for an invalid bucket name, a
    /// signing secret shorter than 32 bytes or an empty base URL.
    pub fn with_config(config: MemoryStorageConfig) -> StorageResult<Self> {
        let mut store = Self::new();
        store.max_object_size = config.max_object_size;
        let secret = match &config.signing_secret {
            Some(s) => s.expose().as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let base_url = config.base_url.as_deref();
        let base_url = base_url.unwrap_or(store.signer.base_url()).to_string();
        store.signer = UrlSigner::configured(TYPE_NAME, &secret, &base_url)?;
        {
            let mut state = store.write();
            for name in &config.buckets {
                validate_bucket(name).map_err(|e| e.with_context("option", "buckets"))?;
                state.entry(name.clone()).or_insert_with(BucketState::new);
            }
        }
        Ok(store)
    }

    /// Damages the stored bytes of an object without touching its recorded
    /// checksum, so tests can check that downloads detect corruption.
    /// Returns whether the object existed.
    #[doc(hidden)]
    pub fn corrupt_for_tests(&self, bucket: &str, key: &str) -> bool {
        let mut state = self.write();
        let Some(slot) = state.get_mut(bucket).and_then(|b| b.objects.get_mut(key)) else {
            return false;
        };
        let mut data = slot.data.to_vec();
        match data.first_mut() {
            Some(b) => *b ^= 0xff,
            None => data.push(0),
        }
        *slot = Arc::new(StoredObject {
            data: Bytes::from(data),
            meta: slot.meta.clone(),
        });
        true
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, BucketState>> {
        // The lock is never held across code that can panic midway through
        // an update, so a poisoned lock still guards consistent data.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, BucketState>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_size(&self, size: u64) -> StorageResult<()> {
        match self.max_object_size {
            Some(max) if size > max => Err(Error::too_large(format!(
                "object of {size} bytes exceeds the limit of {max} bytes (max_object_size)"
            ))),
            _ => Ok(()),
        }
    }

    fn require_bucket(&self, bucket: &str) -> StorageResult<()> {
        if self.read().contains_key(bucket) {
            Ok(())
        } else {
            Err(no_bucket(bucket))
        }
    }

    /// A snapshot of one object.
    fn object(&self, bucket: &str, key: &str) -> StorageResult<Arc<StoredObject>> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        let state = self.read();
        let b = state.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        b.objects
            .get(key)
            .cloned()
            .ok_or_else(|| no_object(bucket, key))
    }

    /// A snapshot of one object whose content matches its checksum.
    fn verified_object(&self, bucket: &str, key: &str) -> StorageResult<Arc<StoredObject>> {
        let obj = self.object(bucket, key)?;
        if let Some(expected) = &obj.meta.checksum {
            let actual = Checksum::compute(expected.algorithm(), &obj.data);
            expected.verify(&actual, bucket, key)?;
        }
        Ok(obj)
    }

    /// Stores an object; `options` and the names must already be validated.
    fn put(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        self.check_size(data.len() as u64)?;
        let checksum = Checksum::crc32c(&data);
        // Unique per write (not derived from the content), so an IfMatch
        // write can never be fooled by other content with an equal checksum.
        let etag = format!("\"{:032x}\"", rand::random::<u128>());
        let mut meta = ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: data.len() as u64,
            content_type: options.content_type.clone(),
            etag,
            last_modified: Utc::now(),
            metadata: options.metadata.clone(),
            public: options.public,
            checksum: Some(checksum),
        };
        // The condition is checked and the object replaced under one write
        // lock, so two conditional writers can never both succeed.
        let mut state = self.write();
        let b = state.get_mut(bucket).ok_or_else(|| no_bucket(bucket))?;
        options.condition.check(
            b.objects.get(key).map(|o| o.meta.etag.as_str()),
            bucket,
            key,
        )?;
        meta.last_modified = Utc::now();
        b.objects.insert(
            key.to_string(),
            Arc::new(StoredObject {
                data,
                meta: meta.clone(),
            }),
        );
        Ok(meta)
    }
}

fn no_bucket(bucket: &str) -> Error {
    Error::not_found(format!("bucket {bucket:?} does not exist"))
}

fn no_object(bucket: &str, key: &str) -> Error {
    Error::not_found(format!(
        "object {key:?} does not exist in bucket {bucket:?}"
    ))
}

/// `start..end` of `data` as chunks of at most [`CHUNK_SIZE`] bytes.
fn chunked(data: Bytes) -> ByteStream {
    let chunks: Vec<StorageResult<Bytes>> = (0..data.len())
        .step_by(CHUNK_SIZE)
        .map(|at| Ok(data.slice(at..(at + CHUNK_SIZE).min(data.len()))))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// The slice of `data` that `range` selects.
fn slice(data: &Bytes, range: ByteRange) -> StorageResult<Bytes> {
    let r = range.resolve(data.len() as u64)?;
    // `resolve` keeps both ends within the object, so they fit in usize.
    Ok(data.slice(r.start as usize..r.end as usize))
}

#[async_trait]
impl Storage for MemoryStorage {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> StorageCapabilities {
        StorageCapabilities::all(self.max_object_size)
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        let buckets = self.read().len();
        let mut health = Health::healthy(start.elapsed());
        health.message = Some(format!("{buckets} bucket(s) in memory"));
        health
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        options
            .validate_upload(bucket, key)
            .and_then(|()| self.put(bucket, key, data, options))
            .map_err(|e| e.with_operation("storage.upload"))
    }

    async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        mut data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let op = |e: Error| e.with_operation("storage.upload_stream");
        options
            .validate_upload(bucket, key)
            .and_then(|()| self.require_bucket(bucket))
            .map_err(op)?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = data.next().await {
            // An error item aborts the upload: nothing has been stored yet.
            let chunk = chunk.map_err(op)?;
            self.check_size((buf.len() + chunk.len()) as u64)
                .map_err(op)?;
            buf.extend_from_slice(&chunk);
        }
        self.put(bucket, key, buf.freeze(), options).map_err(op)
    }

    async fn download(&self, bucket: &str, key: &str) -> StorageResult<Bytes> {
        self.verified_object(bucket, key)
            .map(|obj| obj.data.clone())
            .map_err(|e| e.with_operation("storage.download"))
    }

    async fn download_range(
        &self,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> StorageResult<Bytes> {
        self.verified_object(bucket, key)
            .and_then(|obj| slice(&obj.data, range))
            .map_err(|e| e.with_operation("storage.download_range"))
    }

    async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ByteStream> {
        // The stream serves the snapshot taken here: a concurrent overwrite
        // does not change what it yields.
        self.verified_object(bucket, key)
            .and_then(|obj| match range {
                Some(range) => slice(&obj.data, range),
                None => Ok(obj.data.clone()),
            })
            .map(chunked)
            .map_err(|e| e.with_operation("storage.download_stream"))
    }

    /// One lookup under the lock: the metadata and the bytes are those of
    /// the same stored version, whatever overwrites come after.
    async fn download_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ObjectDownload> {
        let run = || {
            let obj = self.verified_object(bucket, key)?;
            let size = obj.data.len() as u64;
            let served = match range {
                Some(r) => r.resolve(size)?,
                None => 0..size,
            };
            // `resolve` keeps both ends within the object, so they fit in usize.
            let data = obj.data.slice(served.start as usize..served.end as usize);
            Ok(ObjectDownload {
                meta: obj.meta.clone(),
                range: served,
                body: chunked(data),
            })
        };
        run().map_err(|e: Error| e.with_operation("storage.download_with_metadata"))
    }

    async fn get_metadata(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta> {
        self.object(bucket, key)
            .map(|obj| obj.meta.clone())
            .map_err(|e| e.with_operation("storage.get_metadata"))
    }

    async fn delete(&self, bucket: &str, key: &str) -> StorageResult<()> {
        let run = || {
            validate_bucket(bucket)?;
            validate_key(key)?;
            let mut state = self.write();
            let b = state.get_mut(bucket).ok_or_else(|| no_bucket(bucket))?;
            b.objects.remove(key);
            Ok(())
        };
        run().map_err(|e: Error| e.with_operation("storage.delete"))
    }

    async fn list(&self, bucket: &str, options: &ListOptions) -> StorageResult<ListPage> {
        let run = || {
            validate_bucket(bucket)?;
            let plan = ListPlan::new(options)?;
            let state = self.read();
            let b = state.get(bucket).ok_or_else(|| no_bucket(bucket))?;
            Ok(plan.page(&b.objects, |o| o.meta.clone()))
        };
        run().map_err(|e: Error| e.with_operation("storage.list"))
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> StorageResult<ObjectMeta> {
        let run = || {
            validate_bucket(from_bucket)?;
            validate_key(from_key)?;
            validate_bucket(to_bucket)?;
            validate_key(to_key)?;
            let mut state = self.write();
            let source = state
                .get(from_bucket)
                .ok_or_else(|| no_bucket(from_bucket))?
                .objects
                .get(from_key)
                .cloned()
                .ok_or_else(|| no_object(from_bucket, from_key))?;
            let target = state
                .get_mut(to_bucket)
                .ok_or_else(|| no_bucket(to_bucket))?;
            let mut meta = source.meta.clone();
            meta.bucket = to_bucket.to_string();
            meta.key = to_key.to_string();
            meta.last_modified = Utc::now();
            target.objects.insert(
                to_key.to_string(),
                Arc::new(StoredObject {
                    data: source.data.clone(),
                    meta: meta.clone(),
                }),
            );
            Ok(meta)
        };
        run().map_err(|e: Error| e.with_operation("storage.copy"))
    }

    async fn signed_url(
        &self,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> StorageResult<SignedUrl> {
        let run = || {
            // `sign_for` checks the names and the lifetime, before the
            // bucket is looked up.
            let url = self.signer.sign_for(method, bucket, key, expires_in)?;
            self.require_bucket(bucket)?;
            Ok(url)
        };
        run().map_err(|e: Error| e.with_operation("storage.signed_url"))
    }

    /// Checks the URL with this instance's signer (HMAC-SHA256, constant
    /// time): a URL signed by another instance (another `base_url` or
    /// secret) is `ErrorKind::PermissionDenied`.
    async fn fetch_signed(
        &self,
        method: SignedUrlMethod,
        url: &str,
        body: Option<Bytes>,
    ) -> StorageResult<Option<Bytes>> {
        self.signer.fetch(self, method, url, body).await
    }

    /// The check `fetch_signed` makes, with this instance's signer.
    async fn verify_signed(
        &self,
        method: SignedUrlMethod,
        url: &str,
    ) -> StorageResult<truststream_core_storage::signing::VerifiedUrl> {
        self.signer
            .verify_issued(method, url)
            .map_err(|e| e.with_operation("storage.verify_signed"))
    }

    async fn list_buckets(&self) -> StorageResult<Vec<BucketInfo>> {
        Ok(self
            .read()
            .iter()
            .map(|(name, b)| BucketInfo {
                name: name.clone(),
                created_at: Some(b.created_at),
            })
            .collect())
    }

    async fn create_bucket(&self, name: &str) -> StorageResult<()> {
        let run = || {
            validate_bucket(name)?;
            let mut state = self.write();
            if state.contains_key(name) {
                return Err(Error::conflict(format!("bucket {name:?} already exists")));
            }
            state.insert(name.to_string(), BucketState::new());
            Ok(())
        };
        run().map_err(|e: Error| e.with_operation("storage.create_bucket"))
    }

    async fn delete_bucket(&self, name: &str) -> StorageResult<()> {
        let run = || {
            validate_bucket(name)?;
            let mut state = self.write();
            let b = state.get(name).ok_or_else(|| no_bucket(name))?;
            if !b.objects.is_empty() {
                return Err(Error::conflict(format!(
                    "bucket {name:?} is not empty ({} objects): delete its objects first",
                    b.objects.len()
                )));
            }
            state.remove(name);
            Ok(())
        };
        run().map_err(|e: Error| e.with_operation("storage.delete_bucket"))
    }
}

/// Registers the provider as `"memory"`: each build makes a fresh store from
/// its [`MemoryStorageConfig`].
pub fn register(reg: &mut StorageRegistry) {
    reg.register(TYPE_NAME, |cfg, ()| async move {
        let cfg: MemoryStorageConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        let store = MemoryStorage::with_config(cfg)?;
        Ok(Arc::new(store) as Arc<dyn Storage>)
    });
}

#[cfg(test)]
mod tests;
