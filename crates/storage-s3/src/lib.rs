#![doc = include_str!("../README.md")]

mod config;
mod error;
mod list;
mod meta;
mod transfer;

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use bytes::Bytes;
use futures::StreamExt;
use truststream_core_storage::keys::{validate_bucket, validate_key};
use truststream_core_storage::signing;
use truststream_core_storage::{
    BucketInfo, ByteRange, ByteStream, Checksum, Error, ErrorKind, Health, ListOptions, ListPage,
    ObjectDownload, ObjectMeta, ProviderInfo, SignedUrl, SignedUrlMethod, Storage,
    StorageCapabilities, StorageRegistry, StorageResult, UploadOptions, WriteCondition,
};

pub use config::{ConditionalWrites, S3StorageConfig};
use error::{map_sdk, Target};

/// The registry type name of this provider.
const TYPE_NAME: &str = "s3";
/// Largest object S3 stores.
const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// Content type stored when the upload names none (what S3 would pick).
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A storage provider for Amazon S3 and S3-compatible servers (Garage, MinIO,
/// Ceph, R2, ...), built on `aws-sdk-s3`.
///
/// - Every object gets a CRC32C checksum at upload
///   ([`truststream_core_storage::Checksum`]), kept as metadata, so whole
///   downloads are verified and corruption is an [`ErrorKind::Internal`]
///   error instead of data; request bodies are signed with their SHA-256
///   (SigV4), so the server checks the bytes it received. Range reads are not
///   verified (that would need the whole object).
/// - Uploads above [`S3StorageConfig::multipart_threshold`] use multipart
///   upload, parts sent concurrently (bounded) and the upload aborted on
///   failure, so no partial object is ever visible.
/// - Conditional writes are `If-None-Match: *` and `If-Match: <etag>` on the
///   PUT (or the multipart completion): the server decides atomically, and a
///   failed condition is [`ErrorKind::Conflict`].
/// - Streaming downloads resume after a broken connection with a `Range`
///   request pinned to the object's ETag (`If-Match`), so a changed object is
///   a [`ErrorKind::Conflict`] error, never a mixed body.
/// - Signed URLs are SigV4 presigned URLs (at most 7 days).
/// - User metadata keeps the case of its keys (see the crate docs).
///
/// Cheap to clone: clones share the SDK client and its connection pool.
#[derive(Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

struct Inner {
    client: aws_sdk_s3::Client,
    config: S3StorageConfig,
    /// With `ConditionalWrites::Auto`: whether the server honours
    /// conditional PUTs, once probed (empty: not known yet).
    conditional_probe: tokio::sync::OnceCell<bool>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl S3Storage {
    /// Builds the provider from `config` (credentials and region from the
    /// AWS environment where the config leaves them out).
    ///
    /// With `conditional_writes = "auto"` (the default) it probes the server
    /// before returning, so [`Storage::capabilities`] is exact from the
    /// start: in `probe_bucket` when set (a probe failing otherwise than
    /// with an unreachable server fails the connect: a missing bucket, no
    /// permission), else in the first bucket the credentials list. When no
    /// probe can run (server unreachable, no bucket, no permission) the
    /// connect still succeeds, an unreachable server shows in
    /// [`Storage::health`] and in the calls, and `conditional_writes` reads
    /// `false` (not known to hold) until a probe has run: the first
    /// conditional write runs one.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for an invalid configuration.
    pub async fn connect(config: S3StorageConfig) -> StorageResult<Self> {
        let client = config.client().await?;
        let probe = config.conditional_writes == ConditionalWrites::Auto;
        let probe_bucket = config.probe_bucket.clone();
        let store = S3Storage {
            inner: Arc::new(Inner {
                client,
                config,
                conditional_probe: tokio::sync::OnceCell::new(),
            }),
        };
        match probe_bucket {
            Some(bucket) => match store.probe_conditional_writes(&bucket).await {
                Ok(_) => {}
                // Unreachable now: not a configuration error.
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    tracing::info!(bucket, error = %e, "conditional-write probe failed at connect");
                }
                Err(e) => return Err(e),
            },
            None if probe => store.probe_in_a_listed_bucket().await,
            None => {}
        }
        Ok(store)
    }

    /// Probes in the first bucket the credentials list, if any; a failure
    /// leaves the answer unknown (logged, not an error: the provider may
    /// still be used for what needs no condition).
    async fn probe_in_a_listed_bucket(&self) {
        let listed = match self.client().list_buckets().max_buckets(1).send().await {
            Ok(listed) => listed,
            Err(e) => {
                let e = map_sdk(e, Target::Service);
                tracing::info!(error = %e, "conditional-write probe skipped at connect");
                return;
            }
        };
        let Some(bucket) = listed.buckets().iter().find_map(|b| b.name()) else {
            tracing::info!("conditional-write probe skipped at connect: no bucket to probe in");
            return;
        };
        if let Err(e) = self.probe_conditional_writes(bucket).await {
            tracing::info!(bucket, error = %e, "conditional-write probe failed at connect");
        }
    }

    /// Finds out whether the server honours conditional PUTs
    /// (`If-None-Match: *` and `If-Match`), by writing and deleting a probe
    /// object under `.truststream-probe/` in `bucket`. Some servers (Garage
    /// 2.5, older MinIO) accept the headers and ignore them; there a
    /// conditional write would silently overwrite, so it is refused as
    /// [`ErrorKind::Unsupported`] and [`StorageCapabilities::conditional_writes`]
    /// turns `false`.
    ///
    /// Runs once per provider instance (later calls return the first
    /// answer); with `conditional_writes = "on"` or `"off"` it only reports
    /// the configured answer. In `"auto"` mode [`S3Storage::connect`] runs
    /// it, and so does the first conditional write if it has not run yet.
    pub async fn probe_conditional_writes(&self, bucket: &str) -> StorageResult<bool> {
        match self.inner.config.conditional_writes {
            ConditionalWrites::On => return Ok(true),
            ConditionalWrites::Off => return Ok(false),
            ConditionalWrites::Auto => {}
        }
        validate_bucket(bucket)?;
        self.inner
            .conditional_probe
            .get_or_try_init(|| self.run_probe(bucket))
            .await
            .copied()
            .map_err(|e| e.with_operation("storage.probe_conditional_writes"))
    }

    async fn run_probe(&self, bucket: &str) -> StorageResult<bool> {
        let key = format!(
            ".truststream-probe/{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let target = Target::Object(bucket, &key);
        let put = || {
            self.client()
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(SdkBody::from(Bytes::from_static(b"probe")))
        };
        let first = put().send().await.map_err(|e| map_sdk(e, target))?;
        let refused = |r: Result<_, _>| match r {
            Ok(_) => Ok(false),
            Err(e) => {
                let e = map_sdk(e, target);
                match e.kind() {
                    ErrorKind::Conflict => Ok(true),
                    ErrorKind::Unsupported | ErrorKind::InvalidInput => Ok(false),
                    _ => Err(e),
                }
            }
        };
        let result = async {
            let none_match = refused(put().if_none_match("*").send().await)?;
            let stale = format!(
                "\"0{}\"",
                first.e_tag().unwrap_or_default().trim_matches('"')
            );
            let if_match = refused(put().if_match(stale).send().await)?;
            Ok(none_match && if_match)
        }
        .await;
        let _ = self
            .client()
            .delete_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await;
        if matches!(result, Ok(false)) {
            tracing::warn!(
                bucket,
                "the S3 server ignores If-None-Match/If-Match on PUT: conditional writes are \
                 refused as unsupported"
            );
        }
        result
    }

    /// The configuration in use.
    pub fn config(&self) -> &S3StorageConfig {
        &self.inner.config
    }

    /// The underlying SDK client, for what the [`Storage`] interface does not
    /// cover (lifecycle rules, bucket policies, ...).
    pub fn sdk_client(&self) -> &aws_sdk_s3::Client {
        &self.inner.client
    }

    fn client(&self) -> &aws_sdk_s3::Client {
        &self.inner.client
    }

    /// What the capabilities say: on when configured on or when a probe
    /// saw the server honour conditions; off when configured off, when the
    /// probe found the server ignores them, and while no probe has run.
    fn conditional_writes(&self) -> bool {
        match self.inner.config.conditional_writes {
            ConditionalWrites::On => true,
            ConditionalWrites::Off => false,
            ConditionalWrites::Auto => self.inner.conditional_probe.get() == Some(&true),
        }
    }

    /// Checks that `condition` can be honoured (probing the server first in
    /// `auto` mode).
    async fn check_condition(&self, bucket: &str, condition: &WriteCondition) -> StorageResult<()> {
        if *condition == WriteCondition::None {
            return Ok(());
        }
        if !self.probe_conditional_writes(bucket).await? {
            return Err(Error::unsupported(
                "this S3 server does not honour conditional writes (If-None-Match/If-Match on \
                 PUT), or they are turned off (conditional_writes = \"off\"): a create-only or \
                 if-ETag-matches write cannot be made atomic here",
            ));
        }
        if let WriteCondition::IfMatch(etag) = condition {
            if etag.trim().trim_matches('"').is_empty() {
                return Err(Error::invalid_input("IfMatch needs a non-empty ETag"));
            }
        }
        Ok(())
    }

    /// A single PUT of an object whose checksum is known.
    async fn put_single(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
        checksum: Checksum,
    ) -> StorageResult<ObjectMeta> {
        let metadata = meta::encode(options, Some(checksum))?;
        let size = data.len() as u64;
        let content_type = content_type_of(options);
        let mut req = self
            .client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(&content_type)
            .set_metadata(Some(metadata))
            .body(SdkBody::from(data));
        req = match &options.condition {
            WriteCondition::None => req,
            WriteCondition::IfNotExists => req.if_none_match("*"),
            WriteCondition::IfMatch(etag) => req.if_match(quoted(etag)),
        };
        // SigV4 signs the body's SHA-256 (`x-amz-content-sha256`), so the
        // server checks the bytes it got.
        let out = req
            .send()
            .await
            .map_err(|e| condition_error(map_sdk(e, Target::Object(bucket, key)), options))?;
        let etag = out.e_tag().map(str::to_string).ok_or_else(|| {
            Error::internal(format!(
                "the S3 server returned no ETag for object {key:?} in bucket {bucket:?}"
            ))
        })?;
        Ok(ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size,
            content_type: Some(content_type),
            etag,
            last_modified: now_seconds(),
            metadata: options.metadata.clone(),
            public: options.public,
            checksum: Some(checksum),
        })
    }

    /// HEAD of an object as [`ObjectMeta`].
    async fn head(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta> {
        let out = self
            .client()
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_sdk(e, Target::Object(bucket, key)))?;
        Ok(meta::ObjectHeaders::of_head(&out).into_meta(bucket, key))
    }
}

/// The content type to store.
fn content_type_of(options: &UploadOptions) -> String {
    options
        .content_type
        .clone()
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string())
}

/// An ETag in the quoted form S3 compares.
fn quoted(etag: &str) -> String {
    format!("\"{}\"", etag.trim().trim_matches('"'))
}

/// A failed conditional write is a conflict, whatever the server called it
/// (S3 answers `If-Match` on a missing object with 404).
fn condition_error(e: Error, options: &UploadOptions) -> Error {
    match (&options.condition, e.kind()) {
        (WriteCondition::IfMatch(etag), ErrorKind::NotFound)
            if !e.message().starts_with("bucket ") =>
        {
            Error::conflict(format!(
                "the object does not exist, so it cannot match ETag {etag}"
            ))
            .with_source(e)
        }
        (WriteCondition::IfMatch(etag), ErrorKind::Conflict) => Error::conflict(format!(
            "the object changed: its ETag is no longer {etag}; read it again and retry"
        ))
        .with_source(e),
        (WriteCondition::IfNotExists, ErrorKind::Conflict) => {
            Error::conflict("the object already exists (write condition: if not exists)")
                .with_source(e)
        }
        _ => e,
    }
}

pub(crate) fn to_chrono(
    t: &aws_sdk_s3::primitives::DateTime,
) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// The current time in whole seconds: S3 keeps modification times to the
/// second, so an upload's result must not claim a later instant than the
/// server records.
pub(crate) fn now_seconds() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

/// Rounds up to a whole second (presigned expiries are whole seconds).
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

#[async_trait]
impl Storage for S3Storage {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn capabilities(&self) -> StorageCapabilities {
        let mut caps = StorageCapabilities::none();
        caps.range_reads = true;
        caps.streaming = true;
        caps.conditional_writes = self.conditional_writes();
        caps.checksums = true;
        caps.copy = true;
        caps.signed_urls = true;
        caps.signed_upload_urls = true;
        caps.manage_buckets = self.inner.config.manage_buckets;
        caps.public_objects = true;
        caps.max_object_size = Some(MAX_OBJECT_SIZE);
        caps
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        let probe = self.client().list_buckets().send().await;
        let latency = start.elapsed();
        match probe {
            Ok(out) => {
                let mut h = Health::healthy(latency);
                h.message = Some(format!("{} bucket(s) visible", out.buckets().len()));
                h
            }
            Err(e) => {
                let e = map_sdk(e, Target::Service);
                if e.kind() == ErrorKind::PermissionDenied {
                    // Reachable and authenticated; the key may only lack
                    // ListBuckets, which the other calls do not need.
                    let mut h = Health::healthy(latency);
                    h.message = Some("reachable (the key may not list buckets)".into());
                    h
                } else {
                    Health::unhealthy(latency, e.to_string())
                }
            }
        }
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let run = async {
            options.validate_upload(bucket, key)?;
            self.check_condition(bucket, &options.condition).await?;
            let checksum = Checksum::crc32c(&data);
            if data.len() as u64 > self.inner.config.multipart_threshold {
                let part = self.inner.config.part_size_for(Some(data.len() as u64));
                self.multipart_bytes(bucket, key, data, options, checksum, part)
                    .await
            } else {
                self.put_single(bucket, key, data, options, checksum).await
            }
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.upload"))
    }

    async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let run = async {
            options.validate_upload(bucket, key)?;
            self.check_condition(bucket, &options.condition).await?;
            self.upload_from_stream(bucket, key, data, options).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.upload_stream"))
    }

    async fn download(&self, bucket: &str, key: &str) -> StorageResult<Bytes> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            let (stream, size) = self.open_stream(bucket, key, None).await?;
            let mut buf = bytes::BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
            let mut stream = std::pin::pin!(stream);
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk?);
            }
            Ok(buf.freeze())
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.download"))
    }

    async fn download_range(
        &self,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> StorageResult<Bytes> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            check_range(range)?;
            let out = self
                .client()
                .get_object()
                .bucket(bucket)
                .key(key)
                .range(range_header(range.start, range.end))
                .send()
                .await
                .map_err(|e| map_sdk(e, Target::Object(bucket, key)))?;
            let body = out.body.collect().await.map_err(|e| {
                Error::unavailable(format!(
                    "the body of object {key:?} in bucket {bucket:?} was cut off"
                ))
                .with_source(e)
            })?;
            Ok(body.into_bytes())
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.download_range"))
    }

    async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ByteStream> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            if let Some(r) = range {
                check_range(r)?;
            }
            let (stream, _) = self.open_stream(bucket, key, range).await?;
            Ok(Box::pin(stream) as ByteStream)
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.download_stream"))
    }

    /// One `GetObject`: the metadata comes from its answer's headers (the
    /// same mapping as a HEAD's), so it describes the version the body
    /// comes from; a resumed body asks for that version (`If-Match` on its
    /// ETag) as [`Storage::download_stream`]'s does.
    async fn download_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ObjectDownload> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            if let Some(r) = range {
                check_range(r)?;
            }
            self.open_with_metadata(bucket, key, range).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.download_with_metadata"))
    }

    async fn get_metadata(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            self.head(bucket, key).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.get_metadata"))
    }

    async fn delete(&self, bucket: &str, key: &str) -> StorageResult<()> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            self.client()
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| map_sdk(e, Target::Object(bucket, key)))?;
            Ok(())
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.delete"))
    }

    async fn list(&self, bucket: &str, options: &ListOptions) -> StorageResult<ListPage> {
        let run = async {
            validate_bucket(bucket)?;
            list::list_page(self.client(), bucket, options).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.list"))
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> StorageResult<ObjectMeta> {
        let run = async {
            validate_bucket(from_bucket)?;
            validate_key(from_key)?;
            validate_bucket(to_bucket)?;
            validate_key(to_key)?;
            if from_bucket == to_bucket && from_key == to_key {
                // S3 refuses a copy onto itself that changes nothing; the
                // result would be the object as it is.
                return self.head(from_bucket, from_key).await;
            }
            self.client()
                .copy_object()
                .copy_source(list::copy_source(from_bucket, from_key))
                .bucket(to_bucket)
                .key(to_key)
                .metadata_directive(aws_sdk_s3::types::MetadataDirective::Copy)
                .send()
                .await
                .map_err(|e| {
                    let e = map_sdk(e, Target::Object(from_bucket, from_key));
                    if e.kind() == ErrorKind::NotFound && e.message().starts_with("bucket ") {
                        Error::not_found(format!(
                            "bucket {from_bucket:?} or bucket {to_bucket:?} does not exist"
                        ))
                        .with_source(e)
                    } else {
                        e
                    }
                })?;
            self.head(to_bucket, to_key).await
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.copy"))
    }

    async fn signed_url(
        &self,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> StorageResult<SignedUrl> {
        let run = async {
            validate_bucket(bucket)?;
            validate_key(key)?;
            signing::check_lifetime(expires_in)?;
            let lifetime = whole_seconds(expires_in);
            let start = std::time::SystemTime::now();
            let presign = PresigningConfig::builder()
                .start_time(start)
                .expires_in(lifetime)
                .build()
                .map_err(|e| Error::invalid_input("invalid presigning lifetime").with_source(e))?;
            let target = Target::Object(bucket, key);
            let request = match method {
                SignedUrlMethod::Get => self
                    .client()
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .presigned(presign)
                    .await
                    .map_err(|e| map_sdk(e, target))?,
                SignedUrlMethod::Put => self
                    .client()
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .presigned(presign)
                    .await
                    .map_err(|e| map_sdk(e, target))?,
            };
            let start: chrono::DateTime<chrono::Utc> = start.into();
            let expires_at = start
                + chrono::Duration::from_std(lifetime)
                    .map_err(|_| Error::invalid_input("signed URL lifetime is too long"))?;
            Ok(SignedUrl {
                url: request.uri().to_string(),
                method,
                expires_at,
            })
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.signed_url"))
    }

    async fn list_buckets(&self) -> StorageResult<Vec<BucketInfo>> {
        let run = async {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client()
                    .list_buckets()
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| map_sdk(e, Target::Service))?;
                out.extend(page.buckets().iter().filter_map(|b| {
                    Some(BucketInfo {
                        name: b.name()?.to_string(),
                        created_at: b.creation_date().and_then(to_chrono),
                    })
                }));
                match page.continuation_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.list_buckets"))
    }

    async fn create_bucket(&self, name: &str) -> StorageResult<()> {
        let run = async {
            validate_bucket(name)?;
            if !self.inner.config.manage_buckets {
                return Err(Error::unsupported(
                    "bucket management is turned off for this S3 provider (manage_buckets = false)",
                ));
            }
            // Amazon S3 in us-east-1 answers 200 to creating a bucket the key
            // already owns; look first so that is a conflict everywhere.
            let exists = self.client().head_bucket().bucket(name).send().await;
            if exists.is_ok() {
                return Err(Error::conflict(format!("bucket {name:?} already exists")));
            }
            self.client()
                .create_bucket()
                .bucket(name)
                .send()
                .await
                .map_err(|e| map_sdk(e, Target::Bucket(name)))?;
            Ok(())
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.create_bucket"))
    }

    async fn delete_bucket(&self, name: &str) -> StorageResult<()> {
        let run = async {
            validate_bucket(name)?;
            if !self.inner.config.manage_buckets {
                return Err(Error::unsupported(
                    "bucket management is turned off for this S3 provider (manage_buckets = false)",
                ));
            }
            self.client()
                .delete_bucket()
                .bucket(name)
                .send()
                .await
                .map_err(|e| map_sdk(e, Target::Bucket(name)))?;
            Ok(())
        };
        run.await
            .map_err(|e: Error| e.with_operation("storage.delete_bucket"))
    }
}

/// Rejects empty and reversed ranges before asking the server.
fn check_range(range: ByteRange) -> StorageResult<()> {
    if range.end.is_some_and(|e| e <= range.start) {
        return Err(Error::invalid_input(format!(
            "empty or reversed byte range {}..{:?}",
            range.start, range.end
        )));
    }
    Ok(())
}

/// The HTTP `Range` header for `start..end` (end exclusive).
pub(crate) fn range_header(start: u64, end: Option<u64>) -> String {
    match end {
        Some(end) => format!("bytes={start}-{}", end.saturating_sub(1)),
        None => format!("bytes={start}-"),
    }
}

/// Registers the provider as `"s3"`: each build connects a client from its
/// [`S3StorageConfig`].
pub fn register(reg: &mut StorageRegistry) {
    reg.register(TYPE_NAME, |cfg, ()| async move {
        let cfg: S3StorageConfig = truststream_core::parse_config(TYPE_NAME, cfg)?;
        let store = S3Storage::connect(cfg).await?;
        Ok(Arc::new(store) as Arc<dyn Storage>)
    });
}
