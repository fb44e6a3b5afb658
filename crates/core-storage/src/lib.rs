#![doc = include_str!("../README.md")]

mod capabilities;
mod checksum;
mod ext;
pub mod keys;
pub mod list;
pub mod signing;
mod types;

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

pub use capabilities::StorageCapabilities;
pub use checksum::{Checksum, ChecksumAlgorithm, ChecksumHasher};
pub use ext::{StorageExt, UploadRequest};
pub use truststream_core::{Error, ErrorKind, Health, HealthStatus, ProviderInfo};
pub use types::{
    BucketInfo, ByteRange, ByteStream, ListOptions, ListPage, ObjectDownload, ObjectMeta,
    SignedUrl, SignedUrlMethod, UploadOptions, WriteCondition,
};

/// `Result` of storage operations.
pub type StorageResult<T> = Result<T, Error>;
/// The storage error type (the shared TrustStream [`Error`]).
pub type StorageError = Error;

/// Storage provider factories by type name (see [`truststream_core::Registry`]).
pub type StorageRegistry = truststream_core::Registry<dyn Storage>;

/// A storage provider.
///
/// Objects live in buckets and are addressed by key. Every provider applies the
/// same rules to bucket names and keys ([`keys`]), so a key that works on one
/// provider works on all. A method the provider cannot serve returns
/// [`ErrorKind::Unsupported`] and its [`StorageCapabilities`] flag is `false`.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Provider type name and crate version.
    fn info(&self) -> ProviderInfo;

    /// What this provider can do.
    fn capabilities(&self) -> StorageCapabilities;

    /// Probes the provider and reports status and latency. Never fails.
    async fn health(&self) -> Health;

    /// Stores `data` at `bucket/key`, replacing any object there unless
    /// `options.condition` says otherwise (a failed condition is
    /// [`ErrorKind::Conflict`]). Readers see the old object or the new one,
    /// never a mix. Returns the stored object's metadata, with its ETag and
    /// the CRC32C checksum of `data` where the provider records checksums
    /// ([`StorageCapabilities::checksums`]; see [`Checksum`]).
    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta>;

    /// Like [`Storage::upload`] from a stream of chunks, for objects too large
    /// to hold in memory. Requires [`StorageCapabilities::streaming`].
    async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta>;

    /// The whole object. Its checksum is verified where one was recorded, so
    /// silent corruption is an [`ErrorKind::Internal`] error, not data.
    async fn download(&self, bucket: &str, key: &str) -> StorageResult<Bytes>;

    /// Part of the object. A range starting past the end is
    /// [`ErrorKind::InvalidInput`]; one ending past it is cut at the end.
    /// Requires [`StorageCapabilities::range_reads`].
    async fn download_range(
        &self,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> StorageResult<Bytes>;

    /// The object (or a range of it) as a stream of chunks.
    /// Requires [`StorageCapabilities::streaming`].
    async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ByteStream>;

    /// The object (or a range of it) as a stream, together with its
    /// metadata, in one call: what an HTTP layer needs to answer a download
    /// (headers from the metadata, then the body). `range` is checked as
    /// [`Storage::download_stream`] checks it (one starting past the end is
    /// [`ErrorKind::InvalidInput`], one ending past it is cut at the end);
    /// a missing object is [`ErrorKind::NotFound`]. Requires
    /// [`StorageCapabilities::streaming`].
    ///
    /// Providers that can read both at once override it, so that the
    /// metadata always describes the bytes of the stream even while the
    /// object is overwritten, at the cost of one provider operation. The
    /// default is [`Storage::get_metadata`] then [`Storage::download_stream`]:
    /// two operations, and **not atomic** (an overwrite between them pairs
    /// the new metadata with the old bytes or the reverse).
    async fn download_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ObjectDownload> {
        let op = |e: Error| e.with_operation("storage.download_with_metadata");
        let meta = self.get_metadata(bucket, key).await.map_err(op)?;
        let served = match range {
            Some(r) => r.resolve(meta.size).map_err(op)?,
            None => 0..meta.size,
        };
        let body = self.download_stream(bucket, key, range).await.map_err(op)?;
        Ok(ObjectDownload {
            meta,
            range: served,
            body,
        })
    }

    /// Metadata of one object; [`ErrorKind::NotFound`] when missing
    /// (see [`StorageExt::metadata_opt`]).
    async fn get_metadata(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta>;

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, bucket: &str, key: &str) -> StorageResult<()>;

    /// One page of the objects whose keys start with `options.prefix`, in key
    /// order. Entries carry size, ETag and modification time.
    async fn list(&self, bucket: &str, options: &ListOptions) -> StorageResult<ListPage>;

    /// Copies an object (metadata included). Requires
    /// [`StorageCapabilities::copy`].
    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> StorageResult<ObjectMeta>;

    /// A URL that allows `method` on the object until `expires_in` has passed,
    /// without other credentials. Requires [`StorageCapabilities::signed_urls`].
    async fn signed_url(
        &self,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> StorageResult<SignedUrl>;

    /// Performs the request a URL made by this provider's
    /// [`Storage::signed_url`] allows, the way the HTTP layer serving the
    /// URLs does (`truststream serve` at `/storage/v1/signed`): a GET returns
    /// the object's bytes, a PUT stores `body` (empty when `None`) and
    /// returns `None`. Requires [`StorageCapabilities::fetch_signed`].
    ///
    /// The URL is checked first: one that was tampered with (bucket, key,
    /// expiry or signature changed, a path with `..`), has expired, was
    /// signed for the other method or under another base URL is
    /// [`ErrorKind::PermissionDenied`], and nothing is read or written. A
    /// GET with a body is [`ErrorKind::InvalidInput`].
    ///
    /// Providers that sign URLs themselves implement it with
    /// [`signing::UrlSigner::fetch`]. The default is
    /// [`ErrorKind::Unsupported`], naming the provider: it is what providers
    /// whose URLs a remote server answers (S3, Supabase) keep — fetch those
    /// URLs over HTTP instead.
    async fn fetch_signed(
        &self,
        method: SignedUrlMethod,
        url: &str,
        body: Option<Bytes>,
    ) -> StorageResult<Option<Bytes>> {
        let _ = (method, url, body);
        Err(Error::unsupported(format!(
            "the {} storage provider does not serve its signed URLs itself: a remote server \
             answers them, so send the request to the URL over HTTP",
            self.info().name
        ))
        .with_operation("storage.fetch_signed"))
    }

    /// Checks a URL made by this provider's [`Storage::signed_url`] for a
    /// request with `method`, exactly as [`Storage::fetch_signed`] checks it,
    /// and answers the bucket and key it grants, reading and writing
    /// nothing. An HTTP layer that serves the object itself (streamed, with
    /// its content type, `HEAD` without the body, ranges) checks with this
    /// and then uses the ordinary calls. Required with
    /// [`StorageCapabilities::fetch_signed`].
    ///
    /// A URL that was tampered with, has expired, was signed for the other
    /// method or under another base URL is [`ErrorKind::PermissionDenied`].
    /// Providers that sign URLs themselves implement it with
    /// [`signing::UrlSigner::verify_issued`]; the default is
    /// [`ErrorKind::Unsupported`], as for [`Storage::fetch_signed`].
    async fn verify_signed(
        &self,
        method: SignedUrlMethod,
        url: &str,
    ) -> StorageResult<signing::VerifiedUrl> {
        let _ = (method, url);
        Err(Error::unsupported(format!(
            "the {} storage provider does not check its signed URLs itself: a remote server \
             answers them, so send the request to the URL over HTTP",
            self.info().name
        ))
        .with_operation("storage.verify_signed"))
    }

    /// The buckets.
    async fn list_buckets(&self) -> StorageResult<Vec<BucketInfo>>;

    /// Creates a bucket; an existing one is [`ErrorKind::Conflict`].
    /// Requires [`StorageCapabilities::manage_buckets`].
    async fn create_bucket(&self, name: &str) -> StorageResult<()>;

    /// Deletes an empty bucket; a non-empty one is [`ErrorKind::Conflict`].
    /// Requires [`StorageCapabilities::manage_buckets`].
    async fn delete_bucket(&self, name: &str) -> StorageResult<()>;
}
