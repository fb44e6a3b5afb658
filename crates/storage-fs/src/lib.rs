#![doc = include_str!("../README.md")]

mod attr;
mod buffers;
mod fsio;
mod store;
mod writers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use truststream_core::Secret;
use truststream_core_storage::keys::validate_bucket;
use truststream_core_storage::signing::{UrlSigner, VerifiedUrl};
use truststream_core_storage::{
    BucketInfo, ByteRange, ByteStream, ChecksumAlgorithm, ChecksumHasher, Error, Health,
    ListOptions, ListPage, ObjectDownload, ObjectMeta, ProviderInfo, SignedUrl, SignedUrlMethod,
    Storage, StorageCapabilities, StorageRegistry, StorageResult, UploadOptions,
};

use store::{Content, Store};

/// The registry type name of this provider.
const TYPE_NAME: &str = "fs";
/// Size of the chunks `download_stream` yields.
const CHUNK_SIZE: usize = 256 * 1024;
/// Default root directory.
const DEFAULT_ROOT: &str = "./data/storage";
/// Default base of signed URLs.
const DEFAULT_BASE_URL: &str = "fs://local";

/// Configuration of the filesystem provider (the `storage` section of the
/// TrustStream configuration when `type = "fs"`). Every field is optional.
///
/// `Debug` and `Serialize` never show the signing secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsStorageConfig {
    /// Directory holding one directory per bucket; created if missing.
    /// Default `./data/storage`. The root itself may be a symbolic link;
    /// nothing below it is ever followed.
    pub root: PathBuf,
    /// Buckets created when the store is opened (existing ones are kept).
    pub buckets: Vec<String>,
    /// Largest object accepted, in bytes; larger uploads fail with
    /// `ErrorKind::TooLarge`. `None`: no limit besides the disk.
    pub max_object_size: Option<u64>,
    /// Secret (at least 32 bytes) that signs URLs; every process sharing the
    /// root should use the same one. `None`: a random secret per instance, so
    /// URLs stop working when the instance is dropped and are not accepted by
    /// other processes.
    #[serde(skip_serializing)]
    pub signing_secret: Option<Secret>,
    /// Base of signed URLs (the address of the HTTP layer serving them);
    /// default `fs://local`.
    pub base_url: Option<String>,
    /// Flush file contents and directory entries to disk (`fsync`) before a
    /// write returns (default `true`). With `false`, writes are still atomic
    /// (a reader or a killed process never sees a torn object) but the last
    /// writes may be lost if the machine loses power.
    pub fsync: bool,
    /// Age (seconds) from which temporary files written by earlier versions
    /// of this provider, which do not name their writer, are removed when
    /// the store is opened. Default 3600. Temporary files of this version
    /// name their writer: they are removed at open as soon as their writer
    /// is gone (killed), whatever their age, and never while it lives.
    pub temp_max_age_secs: u64,
    /// Bytes of idle large read buffers (downloads of 4 MiB and more) kept
    /// for reuse, so a large download fills memory that is already mapped
    /// instead of faulting in fresh pages (a 64 MiB download: ~10 ms instead
    /// of 30-60 ms). Default 128 MiB; 0 frees every buffer after use.
    pub read_buffer_pool_bytes: u64,
    /// Keep each object's metadata in an extended attribute of its data
    /// file (`user.truststream.meta`, default `true`): the rename that
    /// publishes the data publishes the metadata with it, and a read gets
    /// both from one descriptor in fewer system calls than with a sidecar
    /// file (4 KiB gets 1.2x-1.5x faster on ext4; puts cost the same).
    /// Writes fall back to the sidecar on their own
    /// when the filesystem has no user attributes or the metadata does not
    /// fit in one (ext4: about 4 KiB). With `false`, every write uses the
    /// sidecar. Either way, objects written the other way still read.
    ///
    /// Backups and copies of the root must keep extended attributes
    /// (`cp -a`, `rsync -aX`, `tar --xattrs`): a copy without them loses
    /// the metadata of every object stored in them, and those objects are
    /// no longer found. Set `false` when the root is backed up by a tool that
    /// drops them.
    pub xattr_metadata: bool,
}

impl Default for FsStorageConfig {
    fn default() -> Self {
        FsStorageConfig {
            root: PathBuf::from(DEFAULT_ROOT),
            buckets: Vec::new(),
            max_object_size: None,
            signing_secret: None,
            base_url: None,
            fsync: true,
            temp_max_age_secs: 3600,
            read_buffer_pool_bytes: 128 * 1024 * 1024,
            xattr_metadata: true,
        }
    }
}

impl FsStorageConfig {
    /// The defaults with `root` as the root directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStorageConfig {
            root: root.into(),
            ..Default::default()
        }
    }
}

/// A storage provider keeping each bucket as a directory and each object as a
/// plain file, with its metadata in an extended attribute of that file (or a
/// sidecar file beside it).
///
/// See the crate documentation for the layout, the commit protocol and the
/// guarantees. Cheap to clone (the state is shared).
#[derive(Clone)]
pub struct FsStorage {
    store: Arc<Store>,
    signer: UrlSigner,
}

impl std::fmt::Debug for FsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStorage")
            .field("root", &self.store.root_path)
            .field("base_url", &self.signer.base_url())
            .field("fsync", &self.store.sync)
            .field("max_object_size", &self.store.max_object_size)
            .finish_non_exhaustive()
    }
}

/// What [`FsStorage::recover_metadata`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Keys given fresh metadata, in the order they were found: they read,
    /// list and download again.
    pub recovered: Vec<String>,
    /// Files (paths under the bucket) whose key their path does not tell,
    /// left as they are.
    pub unmapped: Vec<String>,
}

impl FsStorage {
    /// Opens (creating if needed) a store at `root` with the default
    /// settings: `fsync` on, no size limit, a random URL-signing secret.
    pub async fn open(root: impl AsRef<Path>) -> StorageResult<Self> {
        Self::with_config(FsStorageConfig::new(root.as_ref())).await
    }

    /// Opens a store from `config`: creates the root and the listed buckets,
    /// and removes the temporary files no live writer owns (left by killed
    /// writers, in any process) and those of earlier versions older than
    /// `temp_max_age_secs`.
    ///
    /// Fails with `ErrorKind::InvalidInput` for an invalid bucket name, a
    /// signing secret shorter than 32 bytes or a bad base URL, and with the
    /// error of the filesystem when the root cannot be created or opened.
    pub async fn with_config(config: FsStorageConfig) -> StorageResult<Self> {
        Self::with_options(config, truststream_core::BuildOptions::default()).await
    }

    /// [`FsStorage::with_config`], told how to build. Read-only
    /// ([`truststream_core::BuildOptions::read_only`], `truststream
    /// health`): creates and removes nothing — no root, no buckets, no lock
    /// directory or writer lock, no sweep of temporary files. A missing root
    /// is `Unavailable`, naming it and saying that it is created when the
    /// application starts; on an existing root the store lists buckets (its
    /// [`Storage::health`]), and writes fail with `Unavailable`.
    pub async fn with_options(
        config: FsStorageConfig,
        options: truststream_core::BuildOptions,
    ) -> StorageResult<Self> {
        let secret = match &config.signing_secret {
            Some(s) => s.expose().as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let base_url = config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let signer = UrlSigner::configured(TYPE_NAME, &secret, base_url)?;
        for b in &config.buckets {
            validate_bucket(b).map_err(|e| e.with_context("option", "buckets"))?;
        }
        let cfg = config.clone();
        let store = blocking(move || {
            if options.read_only {
                return Store::open_read_only(
                    &cfg.root,
                    cfg.fsync,
                    cfg.max_object_size,
                    cfg.xattr_metadata,
                );
            }
            let pool = usize::try_from(cfg.read_buffer_pool_bytes).unwrap_or(usize::MAX);
            let store = Store::open(
                &cfg.root,
                cfg.fsync,
                cfg.max_object_size,
                pool,
                cfg.xattr_metadata,
            )?;
            for b in &cfg.buckets {
                match store.create_bucket(b) {
                    Ok(()) => {}
                    Err(e) if e.kind() == truststream_core_storage::ErrorKind::Conflict => {}
                    Err(e) => return Err(e),
                }
            }
            store.sweep(Duration::from_secs(cfg.temp_max_age_secs))?;
            Ok(store)
        })
        .await
        .map_err(|e| e.with_operation("storage.open"))?;
        Ok(FsStorage {
            store: Arc::new(store),
            signer,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.store.root_path
    }

    /// Removes the temporary data files that killed writers left behind:
    /// those whose writer (a store, in this process or another) is gone,
    /// whatever their age, and those of earlier versions (which do not name
    /// their writer) older than `older_than`. A temporary file whose writer
    /// lives is never removed. Returns how many were removed.
    ///
    /// Runs at open (with `temp_max_age_secs`); call it yourself on a
    /// long-lived store to clear up after writers that died since.
    pub async fn sweep_temp_files(&self, older_than: Duration) -> StorageResult<usize> {
        let store = self.store.clone();
        blocking(move || store.sweep(older_than))
            .await
            .map_err(|e| e.with_operation("storage.sweep"))
    }

    /// Gives metadata back to objects that lost it: data files in `bucket`
    /// with neither a metadata attribute nor a sidecar, as after a restore
    /// by a backup tool that dropped extended attributes (such objects read
    /// as `NotFound` and are not listed), or files copied into the bucket
    /// by hand.
    ///
    /// Each such file gets fresh metadata: its size, a CRC32C of its
    /// content as it is now (so later corruption is detected again, but
    /// damage from before the recovery is not), a new ETag, its file's
    /// modification time, no content type, no user metadata, not public.
    /// Those were lost with the attribute; upload again what needs them.
    /// Runs under the bucket lock; objects that have metadata, including
    /// damaged metadata, are left alone. A file stored under a hashed name
    /// (a key segment over 200 bytes or starting with `.~`) cannot be given
    /// its key back: it is reported in [`Recovery::unmapped`] and left as
    /// it is.
    ///
    /// ```no_run
    /// # async fn demo() -> truststream_core_storage::StorageResult<()> {
    /// use truststream_storage_fs::FsStorage;
    ///
    /// let storage = FsStorage::open("./data/storage").await?;
    /// let report = storage.recover_metadata("avatars").await?;
    /// println!("recovered {} objects", report.recovered.len());
    /// for path in &report.unmapped {
    ///     eprintln!("cannot tell the key of {path}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn recover_metadata(&self, bucket: &str) -> StorageResult<Recovery> {
        let (store, bucket) = (self.store.clone(), bucket.to_string());
        blocking(move || store.recover_metadata(&bucket))
            .await
            .map_err(|e| e.with_operation("storage.recover_metadata"))
    }

    /// Checks a URL made by [`Storage::signed_url`] for a request with
    /// `method`, the way [`Storage::fetch_signed`] does before it serves one
    /// (an HTTP layer that streams the object itself can check with this): the
    /// signature (HMAC-SHA256 over method, bucket, key and expiry, compared in
    /// constant time) and the expiry. A tampered, expired, foreign or
    /// malformed URL, or one signed for another method, is
    /// `ErrorKind::PermissionDenied`.
    pub fn verify_signed_url(
        &self,
        method: SignedUrlMethod,
        url: &str,
    ) -> StorageResult<VerifiedUrl> {
        self.signer.verify_issued(method, url)
    }

    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Store) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let store = self.store.clone();
        blocking(move || f(&store))
            .await
            .map_err(|e| e.with_operation(op))
    }
}

/// Runs blocking filesystem work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("filesystem task failed: {e}")))?
}

/// State of a streaming download.
struct StreamState {
    file: Arc<std::fs::File>,
    pos: u64,
    end: u64,
    /// Checksum of the whole object, checked at the end (whole-object
    /// streams of objects that have one).
    hasher: Option<ChecksumHasher>,
    meta: ObjectMeta,
    done: bool,
}

/// Streams `range` of an open file in chunks. Each chunk is read at its
/// offset from the descriptor opened for this download, so a concurrent
/// overwrite (a rename) never changes what the stream yields, and a failed
/// read is retried at the same offset. The stream ends with an error if the
/// file was truncated in place or (for a whole object) the checksum fails.
fn file_stream(
    file: std::fs::File,
    meta: ObjectMeta,
    range: std::ops::Range<u64>,
    verify_whole: bool,
) -> ByteStream {
    let state = StreamState {
        file: Arc::new(file),
        pos: range.start,
        end: range.end,
        hasher: meta
            .checksum
            .filter(|_| verify_whole)
            .map(|sum| ChecksumHasher::new(sum.algorithm())),
        meta,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if st.pos >= st.end {
            st.done = true;
            let actual = st.hasher.take()?.finish();
            let expected = st.meta.checksum?;
            return match expected.verify(&actual, &st.meta.bucket, &st.meta.key) {
                Ok(()) => None,
                Err(e) => Some((Err(e.with_operation("storage.download_stream")), st)),
            };
        }
        let len = usize::try_from((st.end - st.pos).min(CHUNK_SIZE as u64)).unwrap_or(CHUNK_SIZE);
        let (file, pos) = (st.file.clone(), st.pos);
        let res = blocking(move || store::read_exact_at(&file, pos, len, None)).await;
        match res {
            Ok(buf) => {
                if let Some(h) = st.hasher.as_mut() {
                    h.update(&buf);
                }
                st.pos += buf.len() as u64;
                Some((Ok(buf), st))
            }
            Err(e) => {
                st.done = true;
                Some((Err(e.with_operation("storage.download_stream")), st))
            }
        }
    }))
}

#[async_trait]
impl Storage for FsStorage {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> StorageCapabilities {
        StorageCapabilities::all(self.store.max_object_size)
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        let res = self
            .run("storage.health", |s| s.list_buckets().map(|b| b.len()))
            .await;
        match res {
            Ok(n) => {
                let mut h = Health::healthy(start.elapsed());
                h.message = Some(format!(
                    "{n} bucket(s) under {}",
                    self.store.root_path.display()
                ));
                h
            }
            Err(e) => Health::unhealthy(start.elapsed(), e.to_string()),
        }
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let (b, k, o) = (bucket.to_string(), key.to_string(), options.clone());
        self.run("storage.upload", move |s| {
            o.validate_upload(&b, &k)?;
            s.check_size(data.len() as u64)?;
            let mut staged = s.stage(&b, &k)?;
            let content = s.fill(&mut staged, &data)?;
            s.commit(staged, content, &o, None)
        })
        .await
    }

    async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        mut data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let op = |e: Error| e.with_operation("storage.upload_stream");
        options.validate_upload(bucket, key).map_err(op)?;
        let (b, k) = (bucket.to_string(), key.to_string());
        let store = self.store.clone();
        // The staged file travels into each blocking write and back.
        let mut staged = blocking(move || store.stage(&b, &k)).await.map_err(op)?;
        let mut hasher = ChecksumHasher::new(ChecksumAlgorithm::Crc32c);
        let mut size = 0u64;
        while let Some(chunk) = data.next().await {
            // An error item aborts the upload: dropping `staged` removes the
            // temporary file, and nothing was committed.
            let chunk = chunk.map_err(op)?;
            size += chunk.len() as u64;
            self.store.check_size(size).map_err(op)?;
            hasher.update(&chunk);
            staged = blocking(move || {
                use std::io::Write;
                staged
                    .file
                    .write_all(&chunk)
                    .map_err(|e| fsio::io_err(e, "write object"))?;
                Ok(staged)
            })
            .await
            .map_err(op)?;
        }
        let content = Content {
            size,
            checksum: hasher.finish(),
        };
        let o = options.clone();
        self.run("storage.upload_stream", move |s| {
            s.commit(staged, content, &o, None)
        })
        .await
    }

    async fn download(&self, bucket: &str, key: &str) -> StorageResult<Bytes> {
        let (b, k) = (bucket.to_string(), key.to_string());
        self.run("storage.download", move |s| {
            let (file, meta) = s.open_object(&b, &k)?;
            store::read_verified(&file, &meta, &s.buffers)
        })
        .await
    }

    async fn download_range(
        &self,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> StorageResult<Bytes> {
        let (b, k) = (bucket.to_string(), key.to_string());
        self.run("storage.download_range", move |s| {
            let (file, meta) = s.open_object(&b, &k)?;
            let r = range.resolve(meta.size)?;
            let len = usize::try_from(r.end - r.start)
                .map_err(|_| Error::too_large("range is larger than this machine's memory"))?;
            store::read_exact_at(&file, r.start, len, Some(&s.buffers))
        })
        .await
    }

    async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ByteStream> {
        let (b, k) = (bucket.to_string(), key.to_string());
        self.run("storage.download_stream", move |s| {
            let (file, meta) = s.open_object(&b, &k)?;
            let (r, whole) = match range {
                Some(r) => (r.resolve(meta.size)?, false),
                None => (0..meta.size, true),
            };
            Ok(file_stream(file, meta, r, whole))
        })
        .await
    }

    /// One open: the metadata is the one that belongs to the opened file
    /// (its attribute, or the sidecar slot naming it, as every read pairs
    /// them), so it describes the bytes read even while the object is
    /// overwritten. A body of at most one chunk (256 KiB) is read, and a
    /// whole object verified, in the same blocking call; larger ones stream
    /// as [`Storage::download_stream`] does.
    async fn download_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ObjectDownload> {
        let (b, k) = (bucket.to_string(), key.to_string());
        self.run("storage.download_with_metadata", move |s| {
            let (file, meta) = s.open_object(&b, &k)?;
            let (r, whole) = match range {
                Some(r) => (r.resolve(meta.size)?, false),
                None => (0..meta.size, true),
            };
            let len = r.end - r.start;
            let body = if len <= CHUNK_SIZE as u64 {
                let bytes = if whole {
                    store::read_verified(&file, &meta, &s.buffers)?
                } else {
                    // At most CHUNK_SIZE: fits in usize.
                    store::read_exact_at(&file, r.start, len as usize, Some(&s.buffers))?
                };
                let chunks = (!bytes.is_empty()).then_some(Ok(bytes));
                Box::pin(futures::stream::iter(chunks)) as ByteStream
            } else {
                file_stream(file, meta.clone(), r.clone(), whole)
            };
            Ok(ObjectDownload {
                meta,
                range: r,
                body,
            })
        })
        .await
    }

    async fn get_metadata(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta> {
        let (b, k) = (bucket.to_string(), key.to_string());
        self.run("storage.get_metadata", move |s| s.metadata(&b, &k))
            .await
    }

    async fn delete(&self, bucket: &str, key: &str) -> StorageResult<()> {
        let (b, k) = (bucket.to_string(), key.to_string());
        self.run("storage.delete", move |s| s.delete(&b, &k)).await
    }

    async fn list(&self, bucket: &str, options: &ListOptions) -> StorageResult<ListPage> {
        let (b, o) = (bucket.to_string(), options.clone());
        self.run("storage.list", move |s| {
            validate_bucket(&b)?;
            s.list(&b, &o)
        })
        .await
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> StorageResult<ObjectMeta> {
        let (fb, fk, tb, tk) = (
            from_bucket.to_string(),
            from_key.to_string(),
            to_bucket.to_string(),
            to_key.to_string(),
        );
        self.run("storage.copy", move |s| s.copy(&fb, &fk, &tb, &tk))
            .await
    }

    async fn signed_url(
        &self,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> StorageResult<SignedUrl> {
        self.signer
            .sign_for(method, bucket, key, expires_in)
            .map_err(|e| e.with_operation("storage.signed_url"))
    }

    /// Checks the URL with [`FsStorage::verify_signed_url`], then reads or
    /// writes the object as [`Storage::download`] / [`Storage::upload`]
    /// would (so never outside the root).
    async fn fetch_signed(
        &self,
        method: SignedUrlMethod,
        url: &str,
        body: Option<Bytes>,
    ) -> StorageResult<Option<Bytes>> {
        self.signer.fetch(self, method, url, body).await
    }

    /// [`FsStorage::verify_signed_url`]: the check `fetch_signed` makes.
    async fn verify_signed(
        &self,
        method: SignedUrlMethod,
        url: &str,
    ) -> StorageResult<VerifiedUrl> {
        self.verify_signed_url(method, url)
            .map_err(|e| e.with_operation("storage.verify_signed"))
    }

    async fn list_buckets(&self) -> StorageResult<Vec<BucketInfo>> {
        self.run("storage.list_buckets", |s| s.list_buckets()).await
    }

    async fn create_bucket(&self, name: &str) -> StorageResult<()> {
        let n = name.to_string();
        self.run("storage.create_bucket", move |s| s.create_bucket(&n))
            .await
    }

    async fn delete_bucket(&self, name: &str) -> StorageResult<()> {
        let n = name.to_string();
        self.run("storage.delete_bucket", move |s| s.delete_bucket(&n))
            .await
    }
}

/// Registers the provider as `"fs"`: each build opens a store from its
/// [`FsStorageConfig`] ([`FsStorage::with_options`]: a read-only build
/// creates nothing).
pub fn register(reg: &mut StorageRegistry) {
    reg.register_with_options(TYPE_NAME, |cfg, (), options| async move {
        let cfg: FsStorageConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        let store = FsStorage::with_options(cfg, options).await?;
        Ok(Arc::new(store) as Arc<dyn Storage>)
    });
}

#[cfg(test)]
mod tests;
