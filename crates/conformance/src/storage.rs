//! The storage suite: every `core-storage` provider runs these cases.
//!
//! The factory must return a fresh, isolated store per case with no objects
//! in it; cases create the buckets they need (or use the fixture's bucket on
//! providers that cannot create buckets).
//!
//! Cases that use signed URLs need a way to perform a request on one, given as
//! [`StorageFixture::url_client`]: the memory provider passes its
//! `fetch_signed`, a filesystem provider its HTTP layer, S3 a plain HTTP
//! client. Without one, those cases are reported as skipped, by name.
//! The `signed.fetch_signed_*` cases need no client: they hold a provider
//! that claims [`StorageCapabilities::fetch_signed`] to serving its own URLs
//! through `Storage::fetch_signed` and checking them through
//! `Storage::verify_signed` (and refusing forged, expired and
//! path-escaping ones); `capability.fetch_signed` holds one that does not
//! to answering `Unsupported` to both.
//!
//! ```rust,no_run
//! use std::sync::Arc;
//! use truststream_conformance::{factory, storage};
//! # fn my_provider() -> Arc<dyn truststream_core_storage::Storage> { unimplemented!() }
//! # async fn run() {
//! let report = storage::run(
//!     "mine",
//!     factory(|| async {
//!         let store = my_provider();
//!         store.create_bucket("conformance").await.map_err(|e| e.to_string())?;
//!         Ok(storage::StorageFixture::new(store, "conformance"))
//!     }),
//!     None,
//! )
//! .await;
//! report.print_table();
//! assert_eq!(report.failed(), 0, "{}", report.summary());
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use truststream_core::{BoxFuture, Error, ErrorKind};
use truststream_core_storage::{
    ByteRange, Checksum, ListOptions, ObjectMeta, SignedUrlMethod, Storage, StorageCapabilities,
    StorageExt, UploadOptions, UploadRequest, WriteCondition,
};

use crate::harness::{run_cases, Case, Factory};

mod capability;
use crate::{ensure, ensure_eq, expect_kind, CaseResult, Failure, Report};

/// Performs one request on a signed URL: `(method, url, body)` to the body of
/// a GET (`Some`) or `None` after a PUT. A refused request (bad signature,
/// expired, wrong method; HTTP 401/403) must be an
/// [`ErrorKind::PermissionDenied`] error.
pub type UrlClient = Arc<
    dyn Fn(
            SignedUrlMethod,
            String,
            Option<Bytes>,
        ) -> BoxFuture<'static, Result<Option<Bytes>, Error>>
        + Send
        + Sync,
>;

/// What a storage case gets: the provider and a bucket that exists and is empty.
#[derive(Clone)]
pub struct StorageFixture {
    /// The provider under test.
    pub storage: Arc<dyn Storage>,
    /// An existing, empty bucket the case may use.
    pub bucket: String,
    /// How to use a signed URL; `None` skips the cases that need it.
    pub url_client: Option<UrlClient>,
}

impl StorageFixture {
    /// A fixture without a URL client.
    pub fn new(storage: Arc<dyn Storage>, bucket: impl Into<String>) -> Self {
        StorageFixture {
            storage,
            bucket: bucket.into(),
            url_client: None,
        }
    }

    /// Sets the client that performs requests on signed URLs.
    pub fn with_url_client<F, Fut>(mut self, client: F) -> Self
    where
        F: Fn(SignedUrlMethod, String, Option<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Option<Bytes>, Error>> + Send + 'static,
    {
        self.url_client = Some(Arc::new(move |m, url, body| Box::pin(client(m, url, body))));
        self
    }
}

/// Builds a fresh fixture per case.
pub type StorageFactory = Factory<StorageFixture>;

/// Runs the storage suite against `provider`; `only` keeps the cases whose
/// name contains it.
pub async fn run(provider: &str, factory: StorageFactory, only: Option<&str>) -> Report {
    run_cases(
        "storage",
        provider,
        factory,
        &cases(),
        |f| serde_json::to_value(f.storage.capabilities()).unwrap_or_default(),
        only,
    )
    .await
}

macro_rules! case {
    ($name:literal, [$($need:literal),*], $body:path) => {
        Case {
            name: $name,
            needs: &[$($need),*],
            run: |fx| -> BoxFuture<'static, CaseResult> { Box::pin($body(fx)) },
        }
    };
}

/// Every case of the suite, in run order.
pub fn cases() -> Vec<Case<StorageFixture>> {
    vec![
        case!(
            "upload.with_options_roundtrip",
            [],
            upload_with_options_roundtrip
        ),
        case!(
            "upload.overwrite_changes_etag",
            [],
            upload_overwrite_changes_etag
        ),
        case!(
            "upload.checksum_recorded",
            ["checksums"],
            upload_checksum_recorded
        ),
        case!("upload.stream", ["streaming"], upload_stream),
        case!(
            "upload.stream_error_stores_nothing",
            ["streaming"],
            upload_stream_error
        ),
        case!("meta.missing_is_not_found", [], meta_missing_is_not_found),
        case!(
            "meta.invalid_metadata_rejected",
            [],
            meta_invalid_metadata_rejected
        ),
        case!("download.range", ["range_reads"], download_range),
        case!(
            "download.stream_large",
            ["streaming"],
            download_stream_large
        ),
        case!(
            "download.stream_never_splices_versions",
            ["streaming"],
            download_stream_never_splices
        ),
        case!(
            "download.with_metadata",
            ["streaming"],
            download_with_metadata
        ),
        case!(
            "download.with_metadata_range",
            ["streaming", "range_reads"],
            download_with_metadata_range
        ),
        case!(
            "download.with_metadata_missing",
            ["streaming"],
            download_with_metadata_missing
        ),
        case!(
            "download.with_metadata_consistent_under_overwrite",
            ["streaming"],
            download_with_metadata_consistent
        ),
        case!("batch.upload_multiple", [], batch_upload_multiple),
        case!(
            "batch.bad_entry_fails_alone",
            [],
            batch_bad_entry_fails_alone
        ),
        case!(
            "cond.if_not_exists",
            ["conditional_writes"],
            cond_if_not_exists
        ),
        case!("cond.if_match", ["conditional_writes"], cond_if_match),
        case!(
            "cond.if_not_exists_race",
            ["conditional_writes"],
            cond_if_not_exists_race
        ),
        case!(
            "cond.if_match_race",
            ["conditional_writes"],
            cond_if_match_race
        ),
        case!("list.prefix", [], list_prefix),
        case!("list.delimited", [], list_delimited),
        case!("list.pagination", [], list_pagination),
        case!(
            "list.pages_stable_under_writes",
            [],
            list_pages_stable_under_writes
        ),
        case!("list.empty", [], list_empty),
        case!("copy.within_bucket", ["copy"], copy_within_bucket),
        case!(
            "copy.across_buckets",
            ["copy", "manage_buckets"],
            copy_across_buckets
        ),
        case!("delete.idempotent", [], delete_idempotent),
        case!("edge.unicode_and_long_keys", [], edge_unicode_and_long_keys),
        case!(
            "edge.long_segments_and_dot_names",
            [],
            edge_long_segments_and_dot_names
        ),
        case!(
            "edge.path_traversal_rejected",
            [],
            edge_path_traversal_rejected
        ),
        case!("edge.empty_object", [], edge_empty_object),
        case!("edge.concurrent_uploads", [], edge_concurrent_uploads),
        case!("edge.health_is_healthy", [], edge_health_is_healthy),
        case!(
            "bucket.list_includes_fixture",
            [],
            bucket_list_includes_fixture
        ),
        case!(
            "bucket.invalid_names_rejected",
            [],
            bucket_invalid_names_rejected
        ),
        case!(
            "bucket.missing_is_not_found",
            [],
            bucket_missing_is_not_found
        ),
        case!(
            "bucket.delete_non_empty_conflict",
            ["manage_buckets"],
            bucket_delete_non_empty
        ),
        case!("signed.expires_at", ["signed_urls"], signed_expires_at),
        case!(
            "signed.get_fetches_object",
            ["signed_urls"],
            signed_get_fetches_object
        ),
        case!(
            "signed.tampered_rejected",
            ["signed_urls"],
            signed_tampered_rejected
        ),
        case!(
            "signed.expired_rejected",
            ["signed_urls"],
            signed_expired_rejected
        ),
        case!(
            "signed.wrong_method_rejected",
            ["signed_urls"],
            signed_wrong_method_rejected
        ),
        case!(
            "signed.put_stores_body",
            ["signed_upload_urls"],
            signed_put_stores_body
        ),
        case!(
            "signed.fetch_signed_roundtrip",
            ["fetch_signed"],
            signed_fetch_roundtrip
        ),
        case!(
            "signed.fetch_signed_refuses_forged",
            ["fetch_signed"],
            signed_fetch_refuses_forged
        ),
        case!(
            "signed.fetch_signed_refuses_expired",
            ["fetch_signed"],
            signed_fetch_refuses_expired
        ),
        case!("capability.range_reads", [], capability::range_reads),
        case!("capability.streaming", [], capability::streaming),
        case!(
            "capability.conditional_writes",
            [],
            capability::conditional_writes
        ),
        case!("capability.checksums", [], capability::checksums),
        case!("capability.copy", [], capability::copy),
        case!("capability.signed_urls", [], capability::signed_urls),
        case!("capability.fetch_signed", [], capability::fetch_signed),
        case!("capability.manage_buckets", [], capability::manage_buckets),
        case!("capability.public_objects", [], capability::public_objects),
    ]
}

// ---------------------------------------------------------------- helpers

fn caps(fx: &StorageFixture) -> StorageCapabilities {
    fx.storage.capabilities()
}

async fn put(
    fx: &StorageFixture,
    key: &str,
    data: impl Into<Bytes>,
) -> Result<ObjectMeta, Failure> {
    fx.storage
        .upload(&fx.bucket, key, data.into(), &UploadOptions::new())
        .await
        .map_err(|e| Failure::new(format!("upload of {key:?} failed: {e}")))
}

async fn get(fx: &StorageFixture, key: &str) -> Result<Bytes, Failure> {
    fx.storage
        .download(&fx.bucket, key)
        .await
        .map_err(|e| Failure::new(format!("download of {key:?} failed: {e}")))
}

fn client(fx: &StorageFixture) -> Result<UrlClient, Failure> {
    fx.url_client.clone().ok_or_else(|| {
        Failure::skip("the fixture has no url_client, so signed URLs cannot be used")
    })
}

/// Deterministic bytes that differ at every offset modulo 251.
fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A bucket name no other case uses.
fn unique_bucket() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("ts-conf-{}", &id[..12])
}

/// Every entry of a listing, following cursors: (keys, common prefixes, pages).
async fn list_all(
    fx: &StorageFixture,
    options: ListOptions,
) -> Result<(Vec<String>, Vec<String>, usize), Failure> {
    let mut keys = Vec::new();
    let mut prefixes = Vec::new();
    let mut opts = options;
    for pages in 1..=1000 {
        let page = fx.storage.list(&fx.bucket, &opts).await?;
        ensure!(
            page.objects.len() + page.common_prefixes.len() <= opts.page_size(),
            "page {pages} has {} entries, more than the limit {}",
            page.objects.len() + page.common_prefixes.len(),
            opts.page_size()
        );
        keys.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.common_prefixes);
        match page.next_cursor {
            Some(c) => opts.cursor = Some(c),
            None => return Ok((keys, prefixes, pages)),
        }
    }
    Err(Failure::new("listing did not end after 1000 pages"))
}

// ----------------------------------------------------------------- upload

async fn upload_with_options_roundtrip(fx: StorageFixture) -> CaseResult {
    // The guide's avatar upload: content type, metadata, public.
    let key = "agent-avatars/42/1700000000000-avatar.png";
    let data = Bytes::from_static(b"\x89PNG fake avatar bytes");
    let options = UploadOptions::new()
        .content_type("image/png")
        .metadata("agentId", "42")
        .metadata("uploadedBy", "user-7")
        .metadata("uploadedAt", "2024-01-01T00:00:00.000Z")
        .public(true);
    let up = fx
        .storage
        .upload(&fx.bucket, key, data.clone(), &options)
        .await?;
    ensure_eq!(up.bucket, fx.bucket, "returned bucket");
    ensure_eq!(up.key, key, "returned key");
    ensure_eq!(up.size, data.len() as u64, "returned size");
    ensure_eq!(
        up.content_type.as_deref(),
        Some("image/png"),
        "returned content type"
    );
    ensure_eq!(up.metadata, options.metadata, "returned metadata");
    ensure!(!up.etag.is_empty(), "upload returned an empty ETag");
    ensure_eq!(get(&fx, key).await?, data, "downloaded bytes");

    let meta = fx.storage.get_metadata(&fx.bucket, key).await?;
    ensure_eq!(meta.key, up.key, "metadata key");
    ensure_eq!(meta.size, up.size, "metadata size");
    ensure_eq!(meta.content_type, up.content_type, "metadata content type");
    ensure_eq!(meta.etag, up.etag, "metadata ETag equals the upload's");
    ensure_eq!(
        meta.metadata,
        options.metadata,
        "user metadata (keys keep their case)"
    );
    ensure_eq!(meta.checksum, up.checksum, "metadata checksum");
    if caps(&fx).public_objects {
        ensure!(up.public && meta.public, "public flag was not kept");
    }
    let drift = (meta.last_modified - up.last_modified).num_seconds().abs();
    ensure!(
        drift <= 2,
        "last_modified differs by {drift} s between upload and get_metadata"
    );
    Ok(())
}

async fn upload_overwrite_changes_etag(fx: StorageFixture) -> CaseResult {
    let first = put(&fx, "doc.txt", "version one").await?;
    let second = put(&fx, "doc.txt", "version two, longer").await?;
    ensure!(
        first.etag != second.etag,
        "ETag did not change: {}",
        first.etag
    );
    ensure_eq!(
        get(&fx, "doc.txt").await?,
        Bytes::from("version two, longer")
    );
    let meta = fx.storage.get_metadata(&fx.bucket, "doc.txt").await?;
    ensure_eq!(meta.etag, second.etag, "metadata shows the new ETag");
    ensure_eq!(meta.size, 19, "metadata shows the new size");
    Ok(())
}

async fn upload_checksum_recorded(fx: StorageFixture) -> CaseResult {
    let data = pattern(100_003);
    let up = put(&fx, "sum.bin", data.clone()).await?;
    ensure!(
        up.checksum.is_some(),
        "the provider claims checksums but the upload recorded none"
    );
    let sum = up.checksum.unwrap_or(Checksum::Crc32c(0));
    ensure!(
        sum.matches(&data),
        "upload checksum {sum} does not match the content"
    );
    let meta = fx.storage.get_metadata(&fx.bucket, "sum.bin").await?;
    ensure_eq!(meta.checksum, Some(sum), "stored checksum");
    ensure_eq!(get(&fx, "sum.bin").await?, data, "verified download");
    Ok(())
}

async fn upload_stream(fx: StorageFixture) -> CaseResult {
    let data = pattern(300_000);
    let chunks: Vec<Result<Bytes, Error>> = vec![
        Ok(data.slice(..1)),
        Ok(data.slice(1..70_000)),
        Ok(Bytes::new()),
        Ok(data.slice(70_000..)),
    ];
    let options = UploadOptions::new().content_type("application/octet-stream");
    let up = fx
        .storage
        .upload_stream(
            &fx.bucket,
            "streamed.bin",
            Box::pin(futures::stream::iter(chunks)),
            &options,
        )
        .await?;
    ensure_eq!(up.size, data.len() as u64, "streamed size");
    ensure_eq!(up.content_type.as_deref(), Some("application/octet-stream"));
    if caps(&fx).checksums {
        ensure!(
            up.checksum.is_some_and(|sum| sum.matches(&data)),
            "streamed checksum {:?} does not match the content",
            up.checksum
        );
    }
    ensure!(
        get(&fx, "streamed.bin").await? == data,
        "streamed upload reads back different bytes"
    );
    Ok(())
}

async fn upload_stream_error(fx: StorageFixture) -> CaseResult {
    let chunks: Vec<Result<Bytes, Error>> = vec![
        Ok(Bytes::from_static(b"partial ")),
        Err(Error::unavailable("the client went away")),
    ];
    let result = fx
        .storage
        .upload_stream(
            &fx.bucket,
            "aborted.bin",
            Box::pin(futures::stream::iter(chunks)),
            &UploadOptions::new(),
        )
        .await;
    ensure!(
        result.is_err(),
        "an upload whose stream failed succeeded: {result:?}"
    );
    let after = fx.storage.metadata_opt(&fx.bucket, "aborted.bin").await?;
    ensure!(
        after.is_none(),
        "a failed streaming upload left an object: {after:?}"
    );
    Ok(())
}

// ------------------------------------------------------------------- meta

async fn meta_missing_is_not_found(fx: StorageFixture) -> CaseResult {
    let key = "agent-exports/404/data.json";
    expect_kind(
        fx.storage.get_metadata(&fx.bucket, key).await,
        ErrorKind::NotFound,
        "get_metadata of a missing object",
    )?;
    ensure!(
        fx.storage.metadata_opt(&fx.bucket, key).await?.is_none(),
        "metadata_opt is not None"
    );
    ensure!(!fx.storage.exists(&fx.bucket, key).await?, "exists is true");
    expect_kind(
        fx.storage.download(&fx.bucket, key).await,
        ErrorKind::NotFound,
        "download of a missing object",
    )
}

async fn meta_invalid_metadata_rejected(fx: StorageFixture) -> CaseResult {
    for (k, v) in [("bad key", "v"), ("", "v"), ("ok", "line\nbreak")] {
        expect_kind(
            fx.storage
                .upload(
                    &fx.bucket,
                    "m.txt",
                    Bytes::from("x"),
                    &UploadOptions::new().metadata(k, v),
                )
                .await,
            ErrorKind::InvalidInput,
            &format!("metadata {k:?} = {v:?}"),
        )?;
    }
    ensure!(
        fx.storage
            .metadata_opt(&fx.bucket, "m.txt")
            .await?
            .is_none(),
        "rejected upload stored an object"
    );
    Ok(())
}

// --------------------------------------------------------------- download

async fn download_range(fx: StorageFixture) -> CaseResult {
    let data = pattern(1000);
    put(&fx, "range.bin", data.clone()).await?;
    let s = &fx.storage;
    let b = &fx.bucket;
    ensure_eq!(
        s.download_range(b, "range.bin", ByteRange::new(100, 200))
            .await?,
        data.slice(100..200),
        "middle"
    );
    ensure_eq!(
        s.download_range(b, "range.bin", ByteRange::from(990))
            .await?,
        data.slice(990..),
        "from 990"
    );
    ensure_eq!(
        s.download_range(b, "range.bin", ByteRange::new(0, 1))
            .await?,
        data.slice(0..1),
        "first byte"
    );
    ensure_eq!(
        s.download_range(b, "range.bin", ByteRange::new(900, 5000))
            .await?,
        data.slice(900..),
        "end past the size is cut at the end"
    );
    expect_kind(
        s.download_range(b, "range.bin", ByteRange::from(1000))
            .await,
        ErrorKind::InvalidInput,
        "range starting at the size",
    )?;
    expect_kind(
        s.download_range(b, "range.bin", ByteRange::new(5000, 6000))
            .await,
        ErrorKind::InvalidInput,
        "range starting past the end",
    )?;
    expect_kind(
        s.download_range(b, "missing.bin", ByteRange::new(0, 1))
            .await,
        ErrorKind::NotFound,
        "range of a missing object",
    )
}

async fn download_stream_large(fx: StorageFixture) -> CaseResult {
    let data = pattern(5 * 1024 * 1024);
    put(&fx, "large.bin", data.clone()).await?;
    let mut stream = fx
        .storage
        .download_stream(&fx.bucket, "large.bin", None)
        .await?;
    let mut got = Vec::with_capacity(data.len());
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk?);
    }
    ensure_eq!(got.len(), data.len(), "streamed length");
    ensure!(got == data, "streamed bytes differ from the uploaded ones");
    if caps(&fx).range_reads {
        let range = ByteRange::new(1_000_000, 1_000_100);
        let stream = fx
            .storage
            .download_stream(&fx.bucket, "large.bin", Some(range))
            .await?;
        let parts: Vec<Result<Bytes, Error>> = stream.collect().await;
        let mut got = Vec::new();
        for p in parts {
            got.extend_from_slice(&p?);
        }
        ensure!(
            got == data.slice(1_000_000..1_000_100),
            "ranged stream differs"
        );
    }
    Ok(())
}

async fn download_stream_never_splices(fx: StorageFixture) -> CaseResult {
    // A stream that is overwritten while it is read yields the version it
    // started with, or fails; never the start of one and the end of another.
    let old = pattern(3 * 1024 * 1024);
    let new: Bytes = old
        .iter()
        .map(|b| b.wrapping_add(1))
        .collect::<Vec<u8>>()
        .into();
    put(&fx, "splice.bin", old.clone()).await?;
    let mut stream = fx
        .storage
        .download_stream(&fx.bucket, "splice.bin", None)
        .await?;
    let mut got = Vec::with_capacity(old.len());
    let mut failed = None;
    match stream.next().await {
        Some(Ok(chunk)) => got.extend_from_slice(&chunk),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(Failure::new("the stream of a 3 MiB object was empty")),
    }
    put(&fx, "splice.bin", new.clone()).await?;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if failed.is_none() {
        ensure_eq!(got.len(), old.len(), "streamed length");
        ensure!(
            got == old,
            "the stream mixed the old and the new version (first difference at byte {:?})",
            got.iter().zip(old.iter()).position(|(a, b)| a != b)
        );
    }
    ensure!(
        get(&fx, "splice.bin").await? == new,
        "the overwrite was not stored"
    );
    Ok(())
}

async fn download_with_metadata(fx: StorageFixture) -> CaseResult {
    let data = pattern(300_000);
    let options = UploadOptions::new()
        .content_type("application/x-conformance")
        .metadata("agentId", "7");
    fx.storage
        .upload(&fx.bucket, "wm.bin", data.clone(), &options)
        .await?;
    let dl = fx
        .storage
        .download_with_metadata(&fx.bucket, "wm.bin", None)
        .await?;
    let meta = fx.storage.get_metadata(&fx.bucket, "wm.bin").await?;
    ensure_eq!(dl.meta, meta, "metadata of download_with_metadata");
    ensure_eq!(dl.range, 0..300_000, "range served of a whole download");
    ensure!(!dl.is_partial(), "a whole download reports a partial range");
    let got = dl.into_bytes().await?;
    ensure_eq!(got.len(), data.len(), "downloaded length");
    ensure!(got == data, "bytes differ from the uploaded ones");
    ensure!(
        got == get(&fx, "wm.bin").await?,
        "bytes differ from download's"
    );

    put(&fx, "wm-empty.bin", Bytes::new()).await?;
    let dl = fx
        .storage
        .download_with_metadata(&fx.bucket, "wm-empty.bin", None)
        .await?;
    ensure_eq!(dl.meta.size, 0, "size of an empty object");
    ensure_eq!(dl.range, 0..0, "range served of an empty object");
    ensure!(
        dl.into_bytes().await?.is_empty(),
        "an empty object's body is not empty"
    );
    Ok(())
}

async fn download_with_metadata_range(fx: StorageFixture) -> CaseResult {
    let data = pattern(1000);
    let options = UploadOptions::new().content_type("text/plain");
    fx.storage
        .upload(&fx.bucket, "wmr.bin", data.clone(), &options)
        .await?;
    let meta = fx.storage.get_metadata(&fx.bucket, "wmr.bin").await?;
    let s = &fx.storage;
    let b = &fx.bucket;
    for (range, served, what) in [
        (ByteRange::new(100, 200), 100..200, "middle"),
        (ByteRange::from(990), 990..1000, "from 990"),
        (ByteRange::new(0, 1), 0..1, "first byte"),
        (
            ByteRange::new(900, 5000),
            900..1000,
            "end past the size is cut at the end",
        ),
    ] {
        let dl = s.download_with_metadata(b, "wmr.bin", Some(range)).await?;
        ensure_eq!(dl.meta, meta, "metadata of a ranged download ({what})");
        ensure_eq!(dl.range, served.clone(), "range served ({what})");
        ensure!(
            dl.is_partial(),
            "{what}: the download is not marked partial"
        );
        let got = dl.into_bytes().await?;
        ensure_eq!(
            got,
            data.slice(served.start as usize..served.end as usize),
            "bytes ({what})"
        );
    }
    expect_kind(
        s.download_with_metadata(b, "wmr.bin", Some(ByteRange::from(1000)))
            .await,
        ErrorKind::InvalidInput,
        "range starting at the size",
    )?;
    expect_kind(
        s.download_with_metadata(b, "wmr.bin", Some(ByteRange::new(5000, 6000)))
            .await,
        ErrorKind::InvalidInput,
        "range starting past the end",
    )?;
    expect_kind(
        s.download_with_metadata(b, "wmr.bin", Some(ByteRange::new(10, 10)))
            .await,
        ErrorKind::InvalidInput,
        "empty range",
    )
}

async fn download_with_metadata_missing(fx: StorageFixture) -> CaseResult {
    put(&fx, "present.txt", "here").await?;
    expect_kind(
        fx.storage
            .download_with_metadata(&fx.bucket, "missing.txt", None)
            .await,
        ErrorKind::NotFound,
        "download_with_metadata of a missing object",
    )?;
    if caps(&fx).range_reads {
        expect_kind(
            fx.storage
                .download_with_metadata(&fx.bucket, "missing.txt", Some(ByteRange::new(0, 1)))
                .await,
            ErrorKind::NotFound,
            "ranged download_with_metadata of a missing object",
        )?;
    }
    Ok(())
}

/// Uploads one version (bytes, content type) of the overwritten object.
async fn write_version(
    storage: &Arc<dyn Storage>,
    bucket: &str,
    key: &str,
    (data, content_type): &(Bytes, &'static str),
) -> Result<ObjectMeta, Error> {
    let options = UploadOptions::new().content_type(*content_type);
    storage.upload(bucket, key, data.clone(), &options).await
}

/// What one download of the overwritten object saw.
struct Seen {
    etag: String,
    /// Which version the body is (0 or 1).
    version: usize,
}

async fn download_with_metadata_consistent(fx: StorageFixture) -> CaseResult {
    // Two versions that differ in size, content type and bytes, one above
    // and one below 256 KiB (providers may read small bodies differently).
    let versions: Arc<[(Bytes, &'static str); 2]> = Arc::new([
        (pattern(300_000), "application/x-conformance-a"),
        (
            (0..100_003u32)
                .map(|i| (i * 7 % 253) as u8)
                .collect::<Vec<u8>>()
                .into(),
            "text/x-conformance-b",
        ),
    ]);
    let key = "overwritten.bin";
    write_version(&fx.storage, &fx.bucket, key, &versions[0]).await?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for v in 0..2 {
        let (storage, bucket, versions) = (fx.storage.clone(), fx.bucket.clone(), versions.clone());
        writers.push(tokio::spawn(async move {
            for _ in 0..25 {
                write_version(&storage, &bucket, key, &versions[v]).await?;
            }
            Ok::<(), Error>(())
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (storage, bucket) = (fx.storage.clone(), fx.bucket.clone());
        let (versions, done) = (versions.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut conflicts = 0usize;
            for _ in 0..1000 {
                if done.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                let dl = match storage.download_with_metadata(&bucket, key, None).await {
                    Ok(dl) => dl,
                    // The provider may say the object kept changing.
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        conflicts += 1;
                        continue;
                    }
                    Err(e) => return Err(Failure::new(format!("download failed: {e}"))),
                };
                let (meta, range) = (dl.meta.clone(), dl.range.clone());
                let body = match dl.into_bytes().await {
                    Ok(b) => b,
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        conflicts += 1;
                        continue;
                    }
                    Err(e) => return Err(Failure::new(format!("download body failed: {e}"))),
                };
                let Some(version) = versions.iter().position(|(d, _)| *d == body) else {
                    return Err(Failure::new(format!(
                        "a download's body ({} bytes) is neither version",
                        body.len()
                    )));
                };
                let ct = versions[version].1;
                ensure_eq!(
                    meta.size,
                    body.len() as u64,
                    "size in the metadata of a download whose body is version {version}"
                );
                ensure_eq!(
                    range,
                    0..body.len() as u64,
                    "range served with a body of version {version}"
                );
                ensure_eq!(
                    meta.content_type.as_deref(),
                    Some(ct),
                    "content type in the metadata of a download whose body is version {version}"
                );
                seen.push(Seen {
                    etag: meta.etag,
                    version,
                });
            }
            Ok((seen, conflicts))
        }));
    }
    let mut failure = None;
    for (i, w) in writers.into_iter().enumerate() {
        let r = w
            .await
            .map_err(|e| Failure::new(format!("writer {i} panicked: {e}")))
            .and_then(|r| r.map_err(|e| Failure::new(format!("writer {i}: {e}"))));
        if let Err(f) = r {
            failure.get_or_insert(f);
        }
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let mut all = Vec::new();
    for (i, r) in readers.into_iter().enumerate() {
        let r = r
            .await
            .map_err(|e| Failure::new(format!("reader {i} panicked: {e}")))
            .and_then(|r| r);
        match r {
            Ok((seen, _conflicts)) => all.extend(seen),
            Err(f) => {
                failure.get_or_insert(f);
            }
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    // An ETag names one version: never two bodies under the same one.
    let mut by_etag: BTreeMap<String, usize> = BTreeMap::new();
    for s in &all {
        let first = *by_etag.entry(s.etag.clone()).or_insert(s.version);
        ensure!(
            first == s.version,
            "ETag {} came with the bodies of both versions",
            s.etag
        );
    }
    // Once the writes have stopped, the object reads as its last version.
    let dl = fx
        .storage
        .download_with_metadata(&fx.bucket, key, None)
        .await?;
    let meta = fx.storage.get_metadata(&fx.bucket, key).await?;
    ensure_eq!(dl.meta, meta, "metadata after the overwrites");
    let body = dl.into_bytes().await?;
    ensure_eq!(body.len() as u64, meta.size, "size after the overwrites");
    Ok(())
}

// ------------------------------------------------------------------ batch

async fn batch_upload_multiple(fx: StorageFixture) -> CaseResult {
    let requests: Vec<UploadRequest> = (0..10)
        .map(|i| UploadRequest {
            bucket: fx.bucket.clone(),
            key: format!("agent-documents/7/1700000000000-{i}-doc{i}.txt"),
            data: Bytes::from(format!("document number {i}")),
            options: UploadOptions::new()
                .content_type("text/plain")
                .metadata("agentId", "7"),
        })
        .collect();
    let results = fx.storage.upload_multiple(requests.clone(), 4).await;
    ensure_eq!(results.len(), 10, "one result per request");
    for (req, res) in requests.iter().zip(&results) {
        let meta = res
            .as_ref()
            .map_err(|e| Failure::new(format!("upload of {} failed: {e}", req.key)))?;
        ensure_eq!(meta.key, req.key, "results are in request order");
        ensure_eq!(
            get(&fx, &req.key).await?,
            req.data,
            "content of {}",
            req.key
        );
    }
    Ok(())
}

async fn batch_bad_entry_fails_alone(fx: StorageFixture) -> CaseResult {
    let keys = ["batch/a.txt", "batch/../escape.txt", "batch/c.txt"];
    let requests: Vec<UploadRequest> = keys
        .iter()
        .map(|k| UploadRequest {
            bucket: fx.bucket.clone(),
            key: k.to_string(),
            data: Bytes::from(format!("content of {k}")),
            options: UploadOptions::new(),
        })
        .collect();
    let results = fx.storage.upload_multiple(requests, 2).await;
    ensure_eq!(results.len(), 3, "one result per request");
    ensure!(
        matches!(&results[0], Ok(m) if m.key == "batch/a.txt"),
        "first entry: {:?}",
        results[0]
    );
    match &results[1] {
        Err(e) if e.kind() == ErrorKind::InvalidInput => {}
        other => {
            return Err(Failure::new(format!(
                "the bad entry: expected an invalid_input error, got {other:?}"
            )))
        }
    }
    ensure!(
        matches!(&results[2], Ok(m) if m.key == "batch/c.txt"),
        "third entry: {:?}",
        results[2]
    );
    ensure_eq!(
        get(&fx, "batch/c.txt").await?,
        Bytes::from("content of batch/c.txt")
    );
    let (listed, _, _) = list_all(&fx, ListOptions::new()).await?;
    ensure_eq!(
        listed,
        vec!["batch/a.txt".to_string(), "batch/c.txt".to_string()],
        "stored objects"
    );
    Ok(())
}

// ------------------------------------------------------------ conditional

async fn cond_if_not_exists(fx: StorageFixture) -> CaseResult {
    let create = UploadOptions::new().condition(WriteCondition::IfNotExists);
    fx.storage
        .upload(&fx.bucket, "once.txt", Bytes::from("first"), &create)
        .await?;
    expect_kind(
        fx.storage
            .upload(&fx.bucket, "once.txt", Bytes::from("second"), &create)
            .await,
        ErrorKind::Conflict,
        "second create-only upload",
    )?;
    ensure_eq!(
        get(&fx, "once.txt").await?,
        Bytes::from("first"),
        "content after the refused write"
    );
    Ok(())
}

async fn cond_if_match(fx: StorageFixture) -> CaseResult {
    let v1 = put(&fx, "counter.json", r#"{"n":1}"#).await?;
    let ok = UploadOptions::new().condition(WriteCondition::IfMatch(v1.etag.clone()));
    let v2 = fx
        .storage
        .upload(&fx.bucket, "counter.json", Bytes::from(r#"{"n":2}"#), &ok)
        .await?;
    ensure!(
        v2.etag != v1.etag,
        "ETag did not change after the matched write"
    );
    // v1's ETag is now stale.
    expect_kind(
        fx.storage
            .upload(&fx.bucket, "counter.json", Bytes::from(r#"{"n":99}"#), &ok)
            .await,
        ErrorKind::Conflict,
        "write with a stale ETag",
    )?;
    ensure_eq!(
        get(&fx, "counter.json").await?,
        Bytes::from(r#"{"n":2}"#),
        "content after the refused write"
    );
    Ok(())
}

/// Eight writers upload `key` at once under `condition`; returns the
/// indexes of those that succeeded (every other one must get Conflict).
async fn conditional_race(
    fx: &StorageFixture,
    key: &str,
    condition: WriteCondition,
) -> Result<Vec<usize>, Failure> {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let storage = fx.storage.clone();
        let bucket = fx.bucket.clone();
        let key = key.to_string();
        let options = UploadOptions::new().condition(condition.clone());
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(format!("writer {i}"));
            (i, storage.upload(&bucket, &key, body, &options).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, result) = t
            .await
            .map_err(|e| Failure::new(format!("writer task failed: {e}")))?;
        match result {
            Ok(_) => winners.push(i),
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => {
                return Err(Failure::new(format!(
                    "writer {i}: expected success or conflict, got {e}"
                )))
            }
        }
    }
    Ok(winners)
}

async fn cond_if_not_exists_race(fx: StorageFixture) -> CaseResult {
    let winners = conditional_race(&fx, "lock", WriteCondition::IfNotExists).await?;
    ensure_eq!(
        winners.len(),
        1,
        "exactly one create-only writer wins (winners: {winners:?})"
    );
    ensure_eq!(
        get(&fx, "lock").await?,
        Bytes::from(format!("writer {}", winners[0])),
        "the winner's content"
    );
    Ok(())
}

async fn cond_if_match_race(fx: StorageFixture) -> CaseResult {
    // Read-modify-write from many writers holding the same ETag: one wins.
    let v1 = put(&fx, "counter", "0").await?;
    let winners = conditional_race(&fx, "counter", WriteCondition::IfMatch(v1.etag)).await?;
    ensure_eq!(
        winners.len(),
        1,
        "exactly one writer with the same ETag wins (winners: {winners:?})"
    );
    ensure_eq!(
        get(&fx, "counter").await?,
        Bytes::from(format!("writer {}", winners[0])),
        "the winner's content"
    );
    Ok(())
}

// ------------------------------------------------------------------- list

async fn list_prefix(fx: StorageFixture) -> CaseResult {
    let mut etags = BTreeMap::new();
    for k in [
        "docs/b.txt",
        "docs/a.txt",
        "docs/sub/c.txt",
        "docsx/d.txt",
        "other/e.txt",
        "top.txt",
    ] {
        etags.insert(k, put(&fx, k, format!("body of {k}")).await?);
    }
    let page = fx
        .storage
        .list(&fx.bucket, &ListOptions::new().prefix("docs/"))
        .await?;
    let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    ensure_eq!(
        keys,
        vec!["docs/a.txt", "docs/b.txt", "docs/sub/c.txt"],
        "keys under docs/ in order"
    );
    ensure!(
        page.common_prefixes.is_empty(),
        "common prefixes without delimited: {:?}",
        page.common_prefixes
    );
    ensure_eq!(page.next_cursor, None, "single page has no cursor");
    for o in &page.objects {
        let up = etags
            .get(o.key.as_str())
            .ok_or_else(|| Failure::new(format!("unexpected key {}", o.key)))?;
        ensure_eq!(o.size, up.size, "listed size of {}", o.key);
        ensure_eq!(o.etag, up.etag, "listed ETag of {}", o.key);
    }
    let (all, _, _) = list_all(&fx, ListOptions::new()).await?;
    ensure_eq!(all.len(), 6, "unfiltered listing: {all:?}");
    let (partial, _, _) = list_all(&fx, ListOptions::new().prefix("docs")).await?;
    ensure_eq!(
        partial.len(),
        4,
        "prefix that is not a whole segment: {partial:?}"
    );
    Ok(())
}

async fn list_delimited(fx: StorageFixture) -> CaseResult {
    for k in [
        "docs/a.txt",
        "docs/b.txt",
        "docs/sub/c.txt",
        "docs/sub/deep/d.txt",
        "docsx/e.txt",
        "top.txt",
    ] {
        put(&fx, k, "x").await?;
    }
    let page = fx
        .storage
        .list(&fx.bucket, &ListOptions::new().delimited())
        .await?;
    let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    ensure_eq!(keys, vec!["top.txt"], "root objects");
    ensure_eq!(
        page.common_prefixes,
        vec!["docs/", "docsx/"],
        "root prefixes"
    );
    let page = fx
        .storage
        .list(&fx.bucket, &ListOptions::new().prefix("docs/").delimited())
        .await?;
    let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    ensure_eq!(
        keys,
        vec!["docs/a.txt", "docs/b.txt"],
        "objects directly under docs/"
    );
    ensure_eq!(
        page.common_prefixes,
        vec!["docs/sub/"],
        "prefixes under docs/"
    );
    Ok(())
}

async fn list_pagination(fx: StorageFixture) -> CaseResult {
    let expected: Vec<String> = (0..10).map(|i| format!("page/item-{i:02}")).collect();
    for k in expected.iter().rev() {
        put(&fx, k, "x").await?;
    }
    let (keys, _, pages) = list_all(&fx, ListOptions::new().limit(3)).await?;
    ensure_eq!(keys, expected, "every key exactly once, in order");
    ensure_eq!(pages, 4, "10 objects in pages of 3");
    let exact = fx
        .storage
        .list(&fx.bucket, &ListOptions::new().limit(10))
        .await?;
    ensure_eq!(exact.objects.len(), 10, "one full page");
    ensure_eq!(exact.next_cursor, None, "no cursor after the last object");
    Ok(())
}

async fn list_pages_stable_under_writes(fx: StorageFixture) -> CaseResult {
    for k in ["k-b", "k-d", "k-f", "k-h", "k-j", "k-l"] {
        put(&fx, k, "x").await?;
    }
    let first = fx
        .storage
        .list(&fx.bucket, &ListOptions::new().limit(3))
        .await?;
    let mut seen: Vec<String> = first.objects.into_iter().map(|o| o.key).collect();
    ensure_eq!(seen, vec!["k-b", "k-d", "k-f"], "first page");
    // One key sorts before the cursor, one after it.
    put(&fx, "k-a", "x").await?;
    put(&fx, "k-i", "x").await?;
    let mut cursor = first
        .next_cursor
        .ok_or_else(|| Failure::new("first page has no cursor"))?;
    for _ in 0..10 {
        let page = fx
            .storage
            .list(&fx.bucket, &ListOptions::new().limit(3).cursor(cursor))
            .await?;
        seen.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_cursor {
            Some(c) => cursor = c,
            None => break,
        }
    }
    ensure_eq!(
        seen,
        vec!["k-b", "k-d", "k-f", "k-h", "k-i", "k-j", "k-l"],
        "no repeats; keys added after the cursor appear, keys before it do not"
    );
    Ok(())
}

async fn list_empty(fx: StorageFixture) -> CaseResult {
    let page = fx.storage.list(&fx.bucket, &ListOptions::new()).await?;
    ensure!(
        page.objects.is_empty() && page.common_prefixes.is_empty(),
        "empty bucket lists entries: {page:?}"
    );
    ensure_eq!(page.next_cursor, None, "cursor of an empty listing");
    put(&fx, "a/b.txt", "x").await?;
    let page = fx
        .storage
        .list(&fx.bucket, &ListOptions::new().prefix("zzz/").delimited())
        .await?;
    ensure!(
        page.objects.is_empty() && page.common_prefixes.is_empty(),
        "prefix without matches lists entries: {page:?}"
    );
    ensure_eq!(
        page.next_cursor,
        None,
        "cursor of a listing without matches"
    );
    Ok(())
}

// ------------------------------------------------------------------- copy

async fn copy_within_bucket(fx: StorageFixture) -> CaseResult {
    let options = UploadOptions::new()
        .content_type("application/json")
        .metadata("agentId", "9");
    let src = fx
        .storage
        .upload(&fx.bucket, "src.json", Bytes::from("{\"a\":1}"), &options)
        .await?;
    let copied = fx
        .storage
        .copy(&fx.bucket, "src.json", &fx.bucket, "dir/dst.json")
        .await?;
    ensure_eq!(copied.key, "dir/dst.json", "returned key");
    let meta = fx.storage.get_metadata(&fx.bucket, "dir/dst.json").await?;
    ensure_eq!(meta.size, src.size, "copied size");
    ensure_eq!(
        meta.content_type.as_deref(),
        Some("application/json"),
        "copied content type"
    );
    ensure_eq!(meta.metadata, options.metadata, "copied metadata");
    ensure_eq!(meta.checksum, src.checksum, "copied checksum");
    ensure!(
        meta.last_modified >= src.last_modified,
        "copy is older than its source"
    );
    ensure_eq!(
        get(&fx, "dir/dst.json").await?,
        Bytes::from("{\"a\":1}"),
        "copied bytes"
    );
    ensure_eq!(
        get(&fx, "src.json").await?,
        Bytes::from("{\"a\":1}"),
        "source still there"
    );
    // Onto itself: allowed, content unchanged.
    fx.storage
        .copy(&fx.bucket, "src.json", &fx.bucket, "src.json")
        .await?;
    ensure_eq!(
        get(&fx, "src.json").await?,
        Bytes::from("{\"a\":1}"),
        "self-copy content"
    );
    expect_kind(
        fx.storage
            .copy(&fx.bucket, "missing.json", &fx.bucket, "x.json")
            .await,
        ErrorKind::NotFound,
        "copy of a missing object",
    )
}

async fn copy_across_buckets(fx: StorageFixture) -> CaseResult {
    let other = unique_bucket();
    fx.storage.create_bucket(&other).await?;
    let result: CaseResult = async {
        put(&fx, "shared.txt", "across").await?;
        let copied = fx
            .storage
            .copy(&fx.bucket, "shared.txt", &other, "in/other.txt")
            .await?;
        ensure_eq!(copied.bucket, other, "returned bucket");
        let got = fx.storage.download(&other, "in/other.txt").await?;
        ensure_eq!(got, Bytes::from("across"), "bytes in the other bucket");
        ensure_eq!(
            get(&fx, "shared.txt").await?,
            Bytes::from("across"),
            "source still there"
        );
        Ok(())
    }
    .await;
    let _ = fx.storage.delete(&other, "in/other.txt").await;
    let _ = fx.storage.delete_bucket(&other).await;
    result
}

// ----------------------------------------------------------------- delete

async fn delete_idempotent(fx: StorageFixture) -> CaseResult {
    put(&fx, "gone.txt", "bye").await?;
    put(&fx, "kept.txt", "stay").await?;
    fx.storage.delete(&fx.bucket, "gone.txt").await?;
    expect_kind(
        fx.storage.download(&fx.bucket, "gone.txt").await,
        ErrorKind::NotFound,
        "download after delete",
    )?;
    ensure!(
        !fx.storage.exists(&fx.bucket, "gone.txt").await?,
        "deleted object still exists"
    );
    fx.storage.delete(&fx.bucket, "gone.txt").await?;
    fx.storage.delete(&fx.bucket, "never/existed.txt").await?;
    let (keys, _, _) = list_all(&fx, ListOptions::new()).await?;
    ensure_eq!(
        keys,
        vec!["kept.txt".to_string()],
        "only the other object remains"
    );
    Ok(())
}

// ------------------------------------------------------------------- edge

async fn edge_unicode_and_long_keys(fx: StorageFixture) -> CaseResult {
    let long = format!("long/{}", "k".repeat(1024 - 5));
    let keys = [
        "agent-documents/42/ré sumé.pdf".to_string(),
        "emoji/😀 smile.txt".to_string(),
        "spaces/a file with  two  spaces.txt".to_string(),
        "symbols/a+b=c&d?e#f%20g.txt".to_string(),
        long.clone(),
    ];
    for k in &keys {
        let data = Bytes::from(format!("content of {k}"));
        let meta = fx
            .storage
            .upload(&fx.bucket, k, data.clone(), &UploadOptions::new())
            .await?;
        ensure_eq!(&meta.key, k, "returned key");
        ensure_eq!(get(&fx, k).await?, data, "content of {k:?}");
        ensure_eq!(
            &fx.storage.get_metadata(&fx.bucket, k).await?.key,
            k,
            "metadata key"
        );
    }
    let (mut listed, _, _) = list_all(&fx, ListOptions::new()).await?;
    let mut expected = keys.to_vec();
    expected.sort();
    listed.sort();
    ensure_eq!(listed, expected, "listed keys");
    ensure_eq!(long.len(), 1024);
    expect_kind(
        fx.storage
            .upload(
                &fx.bucket,
                &format!("{long}x"),
                Bytes::from("x"),
                &UploadOptions::new(),
            )
            .await,
        ErrorKind::InvalidInput,
        "1025-byte key",
    )
}

async fn edge_long_segments_and_dot_names(fx: StorageFixture) -> CaseResult {
    // Segments longer than a filesystem name (255 bytes), and names a
    // provider might use for itself: all are ordinary keys.
    let long = "é".repeat(150); // 300 bytes
    let keys = [
        format!("{long}/leaf.txt"),
        format!("a/{long}/b/{long}"),
        format!("top-{long}"),
        ".hidden".to_string(),
        ".well-known/acme".to_string(),
        "dir/.~meta".to_string(),
        "dir/.tmp".to_string(),
        "dir/..name".to_string(),
        "dir/name.".to_string(),
    ];
    for k in &keys {
        let body = Bytes::from(format!("content of {k}"));
        let meta = fx
            .storage
            .upload(&fx.bucket, k, body.clone(), &UploadOptions::new())
            .await?;
        ensure_eq!(&meta.key, k, "returned key");
        ensure_eq!(get(&fx, k).await?, body, "content of {k:?}");
    }
    let (listed, _, _) = list_all(&fx, ListOptions::new()).await?;
    let mut expected = keys.to_vec();
    expected.sort();
    ensure_eq!(listed, expected, "listed keys, in order");
    let (under, _, _) = list_all(&fx, ListOptions::new().prefix(format!("a/{long}/"))).await?;
    ensure_eq!(under, vec![keys[1].clone()], "listing under a long segment");
    for k in &keys {
        fx.storage.delete(&fx.bucket, k).await?;
    }
    let (left, _, _) = list_all(&fx, ListOptions::new()).await?;
    ensure!(left.is_empty(), "objects left after delete: {left:?}");
    Ok(())
}

async fn edge_path_traversal_rejected(fx: StorageFixture) -> CaseResult {
    let bad = [
        "../x",
        "/abs",
        "a/../../b",
        "a\\b",
        "a\0b",
        "a//b",
        "..",
        "./a",
        "a/",
        "",
    ];
    for key in bad {
        let what = |op: &str| format!("{op} with key {key:?}");
        expect_kind(
            fx.storage
                .upload(&fx.bucket, key, Bytes::from("evil"), &UploadOptions::new())
                .await,
            ErrorKind::InvalidInput,
            &what("upload"),
        )?;
        expect_kind(
            fx.storage.download(&fx.bucket, key).await,
            ErrorKind::InvalidInput,
            &what("download"),
        )?;
        expect_kind(
            fx.storage.get_metadata(&fx.bucket, key).await,
            ErrorKind::InvalidInput,
            &what("get_metadata"),
        )?;
        expect_kind(
            fx.storage.delete(&fx.bucket, key).await,
            ErrorKind::InvalidInput,
            &what("delete"),
        )?;
    }
    expect_kind(
        fx.storage
            .list(&fx.bucket, &ListOptions::new().prefix("../"))
            .await,
        ErrorKind::InvalidInput,
        "list with prefix ../",
    )?;
    let (keys, _, _) = list_all(&fx, ListOptions::new()).await?;
    ensure!(keys.is_empty(), "rejected keys stored objects: {keys:?}");
    Ok(())
}

async fn edge_empty_object(fx: StorageFixture) -> CaseResult {
    let meta = put(&fx, "empty.txt", Bytes::new()).await?;
    ensure_eq!(meta.size, 0, "returned size");
    ensure_eq!(
        get(&fx, "empty.txt").await?,
        Bytes::new(),
        "downloaded bytes"
    );
    ensure_eq!(
        fx.storage.get_metadata(&fx.bucket, "empty.txt").await?.size,
        0,
        "metadata size"
    );
    let c = caps(&fx);
    if c.checksums {
        ensure!(
            meta.checksum.is_some_and(|sum| sum.matches(b"")),
            "checksum of nothing: {:?}",
            meta.checksum
        );
    }
    if c.streaming {
        let parts: Vec<Result<Bytes, Error>> = fx
            .storage
            .download_stream(&fx.bucket, "empty.txt", None)
            .await?
            .collect()
            .await;
        let mut total = 0;
        for p in parts {
            total += p?.len();
        }
        ensure_eq!(total, 0, "streamed bytes of an empty object");
    }
    let (keys, _, _) = list_all(&fx, ListOptions::new()).await?;
    ensure_eq!(keys, vec!["empty.txt".to_string()], "listed");
    Ok(())
}

async fn edge_concurrent_uploads(fx: StorageFixture) -> CaseResult {
    let mut tasks = Vec::new();
    for i in 0..32 {
        let storage = fx.storage.clone();
        let bucket = fx.bucket.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("concurrent/{i:02}.txt");
            let body = Bytes::from(format!("payload {i} ").repeat(100 + i));
            storage
                .upload(&bucket, &key, body, &UploadOptions::new())
                .await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        t.await
            .map_err(|e| Failure::new(format!("upload task {i} failed: {e}")))?
            .map_err(|e| Failure::new(format!("upload {i} failed: {e}")))?;
    }
    let (keys, _, _) = list_all(&fx, ListOptions::new().prefix("concurrent/")).await?;
    ensure_eq!(keys.len(), 32, "objects listed: {keys:?}");
    for i in 0..32 {
        let got = get(&fx, &format!("concurrent/{i:02}.txt")).await?;
        ensure!(
            got == format!("payload {i} ").repeat(100 + i),
            "content of object {i} is wrong"
        );
    }
    Ok(())
}

async fn edge_health_is_healthy(fx: StorageFixture) -> CaseResult {
    let h = fx.storage.health().await;
    ensure!(h.is_healthy(), "health is {} ({:?})", h.status, h.message);
    ensure!(
        h.latency < Duration::from_secs(30),
        "health probe took {:?}",
        h.latency
    );
    let info = fx.storage.info();
    ensure!(
        !info.name.is_empty() && !info.version.is_empty(),
        "provider info is empty: {info:?}"
    );
    Ok(())
}

// ----------------------------------------------------------------- bucket

async fn bucket_list_includes_fixture(fx: StorageFixture) -> CaseResult {
    let buckets = fx.storage.list_buckets().await?;
    ensure!(
        buckets.iter().any(|b| b.name == fx.bucket),
        "list_buckets does not include {:?}: {:?}",
        fx.bucket,
        buckets.iter().map(|b| &b.name).collect::<Vec<_>>()
    );
    Ok(())
}

async fn bucket_invalid_names_rejected(fx: StorageFixture) -> CaseResult {
    let long = "a".repeat(64);
    let bad = [
        "",
        "ab",
        "-abc",
        "abc-",
        "ABC",
        "a_b",
        "a.b",
        "a/b",
        "..",
        "../etc",
        long.as_str(),
    ];
    let manage = caps(&fx).manage_buckets;
    for name in bad {
        expect_kind(
            fx.storage
                .upload(name, "k.txt", Bytes::from("x"), &UploadOptions::new())
                .await,
            ErrorKind::InvalidInput,
            &format!("upload into bucket {name:?}"),
        )?;
        expect_kind(
            fx.storage.list(name, &ListOptions::new()).await,
            ErrorKind::InvalidInput,
            &format!("list of bucket {name:?}"),
        )?;
        if manage {
            expect_kind(
                fx.storage.create_bucket(name).await,
                ErrorKind::InvalidInput,
                &format!("create bucket {name:?}"),
            )?;
        }
    }
    Ok(())
}

async fn bucket_missing_is_not_found(fx: StorageFixture) -> CaseResult {
    let missing = unique_bucket();
    let e = fx
        .storage
        .upload(&missing, "k.txt", Bytes::from("x"), &UploadOptions::new())
        .await
        .err()
        .ok_or_else(|| Failure::new(format!("upload into missing bucket {missing} succeeded")))?;
    ensure_eq!(
        e.kind(),
        ErrorKind::NotFound,
        "upload into a missing bucket: {e}"
    );
    ensure!(
        e.to_string().contains(&missing),
        "the error does not name the bucket: {e}"
    );
    expect_kind(
        fx.storage.download(&missing, "k.txt").await,
        ErrorKind::NotFound,
        "download",
    )?;
    expect_kind(
        fx.storage.list(&missing, &ListOptions::new()).await,
        ErrorKind::NotFound,
        "list",
    )
}

async fn bucket_delete_non_empty(fx: StorageFixture) -> CaseResult {
    expect_kind(
        fx.storage.create_bucket(&fx.bucket).await,
        ErrorKind::Conflict,
        "creating an existing bucket",
    )?;
    let name = unique_bucket();
    fx.storage.create_bucket(&name).await?;
    let result: CaseResult = async {
        fx.storage
            .upload(&name, "keep.txt", Bytes::from("x"), &UploadOptions::new())
            .await?;
        expect_kind(
            fx.storage.delete_bucket(&name).await,
            ErrorKind::Conflict,
            "deleting a non-empty bucket",
        )?;
        ensure!(
            fx.storage.exists(&name, "keep.txt").await?,
            "refused bucket delete lost an object"
        );
        fx.storage.delete(&name, "keep.txt").await?;
        fx.storage.delete_bucket(&name).await?;
        let buckets = fx.storage.list_buckets().await?;
        ensure!(
            !buckets.iter().any(|b| b.name == name),
            "deleted bucket still listed"
        );
        expect_kind(
            fx.storage.delete_bucket(&name).await,
            ErrorKind::NotFound,
            "deleting a missing bucket",
        )
    }
    .await;
    if result.is_err() {
        let _ = fx.storage.delete(&name, "keep.txt").await;
        let _ = fx.storage.delete_bucket(&name).await;
    }
    result
}

// ----------------------------------------------------------------- signed

async fn signed_expires_at(fx: StorageFixture) -> CaseResult {
    // The object exists: some services (Supabase Storage) sign only
    // existing objects, and this case is about the expiry.
    put(&fx, "agent-exports/1/data.json", "{}").await?;
    let expires_in = Duration::from_secs(24 * 60 * 60);
    let before = chrono::Utc::now();
    let url = fx
        .storage
        .signed_url(
            &fx.bucket,
            "agent-exports/1/data.json",
            SignedUrlMethod::Get,
            expires_in,
        )
        .await?;
    let after = chrono::Utc::now();
    ensure_eq!(url.method, SignedUrlMethod::Get, "method");
    ensure!(!url.url.is_empty(), "empty URL");
    let day = chrono::Duration::hours(24);
    let slack = chrono::Duration::seconds(2);
    ensure!(
        url.expires_at >= before + day - slack && url.expires_at <= after + day + slack,
        "expires_at {} is not about now + 24 h ({})",
        url.expires_at,
        before + day
    );
    Ok(())
}

async fn signed_get_fetches_object(fx: StorageFixture) -> CaseResult {
    let fetch = client(&fx)?;
    let key = "signed/ré sumé & co.txt";
    put(&fx, key, "signed content").await?;
    let url = fx
        .storage
        .signed_url(
            &fx.bucket,
            key,
            SignedUrlMethod::Get,
            Duration::from_secs(300),
        )
        .await?;
    let body = fetch(SignedUrlMethod::Get, url.url.clone(), None).await?;
    ensure_eq!(
        body,
        Some(Bytes::from("signed content")),
        "body fetched through the signed URL"
    );
    // Reusable until it expires.
    let again = fetch(SignedUrlMethod::Get, url.url, None).await?;
    ensure_eq!(again, Some(Bytes::from("signed content")), "second fetch");
    Ok(())
}

async fn signed_tampered_rejected(fx: StorageFixture) -> CaseResult {
    let fetch = client(&fx)?;
    put(&fx, "signed/tamper-a.txt", "a").await?;
    put(&fx, "signed/tamper-b.txt", "b").await?;
    let url = fx
        .storage
        .signed_url(
            &fx.bucket,
            "signed/tamper-a.txt",
            SignedUrlMethod::Get,
            Duration::from_secs(300),
        )
        .await?
        .url;
    let other_key = url.replace("tamper-a", "tamper-b");
    ensure!(other_key != url, "the URL does not contain the key: {url}");
    expect_kind(
        fetch(SignedUrlMethod::Get, other_key, None).await,
        ErrorKind::PermissionDenied,
        "URL with another key",
    )?;
    if let Some(last) = url.chars().last().filter(char::is_ascii_hexdigit) {
        let flipped = if last == '0' { '1' } else { '0' };
        let bad_sig = format!("{}{flipped}", &url[..url.len() - 1]);
        expect_kind(
            fetch(SignedUrlMethod::Get, bad_sig, None).await,
            ErrorKind::PermissionDenied,
            "URL with a changed signature",
        )?;
    }
    let truncated = url.split('?').next().unwrap_or_default().to_string();
    expect_kind(
        fetch(SignedUrlMethod::Get, truncated, None).await,
        ErrorKind::PermissionDenied,
        "URL without its query",
    )?;
    // The genuine URL still works.
    ensure_eq!(
        fetch(SignedUrlMethod::Get, url, None).await?,
        Some(Bytes::from("a")),
        "genuine URL"
    );
    Ok(())
}

async fn signed_expired_rejected(fx: StorageFixture) -> CaseResult {
    let fetch = client(&fx)?;
    put(&fx, "signed/short.txt", "short-lived").await?;
    let url = fx
        .storage
        .signed_url(
            &fx.bucket,
            "signed/short.txt",
            SignedUrlMethod::Get,
            Duration::from_secs(1),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    expect_kind(
        fetch(SignedUrlMethod::Get, url.url, None).await,
        ErrorKind::PermissionDenied,
        "expired URL",
    )
}

async fn signed_wrong_method_rejected(fx: StorageFixture) -> CaseResult {
    let fetch = client(&fx)?;
    put(&fx, "signed/read-only.txt", "original").await?;
    let get_url = fx
        .storage
        .signed_url(
            &fx.bucket,
            "signed/read-only.txt",
            SignedUrlMethod::Get,
            Duration::from_secs(300),
        )
        .await?;
    expect_kind(
        fetch(
            SignedUrlMethod::Put,
            get_url.url,
            Some(Bytes::from("overwritten")),
        )
        .await,
        ErrorKind::PermissionDenied,
        "PUT with a GET URL",
    )?;
    ensure_eq!(
        get(&fx, "signed/read-only.txt").await?,
        Bytes::from("original"),
        "content after the refused PUT"
    );
    if caps(&fx).signed_upload_urls {
        let put_url = fx
            .storage
            .signed_url(
                &fx.bucket,
                "signed/read-only.txt",
                SignedUrlMethod::Put,
                Duration::from_secs(300),
            )
            .await?;
        expect_kind(
            fetch(SignedUrlMethod::Get, put_url.url, None).await,
            ErrorKind::PermissionDenied,
            "GET with a PUT URL",
        )?;
    }
    Ok(())
}

async fn signed_put_stores_body(fx: StorageFixture) -> CaseResult {
    let fetch = client(&fx)?;
    let url = fx
        .storage
        .signed_url(
            &fx.bucket,
            "signed/uploaded.bin",
            SignedUrlMethod::Put,
            Duration::from_secs(300),
        )
        .await?;
    ensure_eq!(url.method, SignedUrlMethod::Put, "method");
    let body = pattern(70_000);
    fetch(SignedUrlMethod::Put, url.url, Some(body.clone())).await?;
    ensure!(
        get(&fx, "signed/uploaded.bin").await? == body,
        "the signed PUT stored different bytes"
    );
    let meta = fx
        .storage
        .get_metadata(&fx.bucket, "signed/uploaded.bin")
        .await?;
    ensure_eq!(meta.size, body.len() as u64, "stored size");
    Ok(())
}

// ------------------------------------------------------- signed, interface

/// `fetch_signed` through the interface: the URL's object on GET (again and
/// again until it expires), `body` stored on PUT, and a valid URL for a
/// missing object is `NotFound`.
async fn signed_fetch_roundtrip(fx: StorageFixture) -> CaseResult {
    let key = "signed/ré sumé & co.txt";
    put(&fx, key, "served by the provider").await?;
    let url = fx
        .storage
        .signed_url(
            &fx.bucket,
            key,
            SignedUrlMethod::Get,
            Duration::from_secs(300),
        )
        .await?
        .url;
    for attempt in ["first", "second"] {
        ensure_eq!(
            fx.storage
                .fetch_signed(SignedUrlMethod::Get, &url, None)
                .await?,
            Some(Bytes::from("served by the provider")),
            "{attempt} GET through fetch_signed"
        );
    }
    // verify_signed makes the same check and names what the URL grants.
    let granted = fx.storage.verify_signed(SignedUrlMethod::Get, &url).await?;
    ensure_eq!(
        (granted.bucket.as_str(), granted.key.as_str()),
        (fx.bucket.as_str(), key),
        "what verify_signed says the URL grants"
    );
    ensure_eq!(
        granted.method,
        SignedUrlMethod::Get,
        "verify_signed's method"
    );
    expect_kind(
        fx.storage
            .fetch_signed(SignedUrlMethod::Get, &url, Some(Bytes::from("x")))
            .await,
        ErrorKind::InvalidInput,
        "a GET with a body",
    )?;
    let missing = fx
        .storage
        .signed_url(
            &fx.bucket,
            "signed/missing.txt",
            SignedUrlMethod::Get,
            Duration::from_secs(300),
        )
        .await?
        .url;
    expect_kind(
        fx.storage
            .fetch_signed(SignedUrlMethod::Get, &missing, None)
            .await,
        ErrorKind::NotFound,
        "a GET URL of a missing object",
    )?;
    if caps(&fx).signed_upload_urls {
        let up = fx
            .storage
            .signed_url(
                &fx.bucket,
                "signed/put through fetch.bin",
                SignedUrlMethod::Put,
                Duration::from_secs(300),
            )
            .await?
            .url;
        let body = pattern(70_000);
        ensure_eq!(
            fx.storage
                .fetch_signed(SignedUrlMethod::Put, &up, Some(body.clone()))
                .await?,
            None,
            "a PUT through fetch_signed answers no body"
        );
        ensure!(
            get(&fx, "signed/put through fetch.bin").await? == body,
            "the PUT through fetch_signed stored different bytes"
        );
    }
    Ok(())
}

/// Every URL the provider did not sign for this request is
/// `PermissionDenied` and reads or writes nothing: another key, a changed
/// signature or expiry, no query, the other method, another base URL, and
/// paths that climb out of the bucket with `..` (plain or percent-encoded).
async fn signed_fetch_refuses_forged(fx: StorageFixture) -> CaseResult {
    let fetch = |method, url: String, body: Option<Bytes>| {
        let storage = fx.storage.clone();
        async move { storage.fetch_signed(method, &url, body).await }
    };
    put(&fx, "signed/forge-a.txt", "a").await?;
    put(&fx, "signed/forge-b.txt", "b").await?;
    let url = fx
        .storage
        .signed_url(
            &fx.bucket,
            "signed/forge-a.txt",
            SignedUrlMethod::Get,
            Duration::from_secs(300),
        )
        .await?
        .url;
    ensure!(
        url.contains("signed/forge-a.txt") && url.contains('?'),
        "the URL does not hold the key and a query: {url}"
    );
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut forged = vec![
        ("another key", url.replace("forge-a", "forge-b")),
        ("no query", path.to_string()),
        ("a query parameter added", format!("{url}&note=1")),
        (
            "another base URL",
            format!(
                "https://elsewhere.invalid/{}",
                url.split_once("://").map_or(url.as_str(), |(_, rest)| rest)
            ),
        ),
    ];
    // The last hex digit of the query changed (the signature, if the query
    // ends with it), and every digit of the query raised by one in turn
    // would be too many requests: change the last digit and the first.
    if let Some(last) = url.chars().last().filter(char::is_ascii_hexdigit) {
        let flipped = if last == '0' { '1' } else { '0' };
        forged.push((
            "a changed last character",
            format!("{}{flipped}", &url[..url.len() - 1]),
        ));
    }
    if let Some(i) = query.find(|c: char| c.is_ascii_digit()) {
        let at = path.len() + 1 + i;
        let d = url.as_bytes()[at];
        let other = if d == b'9' { '8' } else { char::from(d + 1) };
        forged.push((
            "a changed digit in the query (the expiry, say)",
            format!("{}{other}{}", &url[..at], &url[at + 1..]),
        ));
    }
    for climb in [
        "signed/../signed/forge-b.txt",
        "signed/../../../../etc/passwd",
        "signed/..%2F..%2F..%2Fetc%2Fpasswd",
        "signed/%2E%2E/forge-b.txt",
    ] {
        forged.push(("a path with `..`", url.replace("signed/forge-a.txt", climb)));
    }
    for (what, bad) in forged {
        expect_kind(
            fetch(SignedUrlMethod::Get, bad.clone(), None).await,
            ErrorKind::PermissionDenied,
            &format!("GET on a URL with {what} ({bad})"),
        )?;
        expect_kind(
            fx.storage.verify_signed(SignedUrlMethod::Get, &bad).await,
            ErrorKind::PermissionDenied,
            &format!("verify_signed of a URL with {what} ({bad})"),
        )?;
    }
    // The other method, both ways: nothing written, nothing read.
    expect_kind(
        fetch(
            SignedUrlMethod::Put,
            url.clone(),
            Some(Bytes::from("overwritten")),
        )
        .await,
        ErrorKind::PermissionDenied,
        "PUT with a GET URL",
    )?;
    expect_kind(
        fx.storage.verify_signed(SignedUrlMethod::Put, &url).await,
        ErrorKind::PermissionDenied,
        "verify_signed of a GET URL for a PUT",
    )?;
    ensure_eq!(
        get(&fx, "signed/forge-a.txt").await?,
        Bytes::from("a"),
        "content after the refused PUT"
    );
    if caps(&fx).signed_upload_urls {
        let up = fx
            .storage
            .signed_url(
                &fx.bucket,
                "signed/forge-up.txt",
                SignedUrlMethod::Put,
                Duration::from_secs(300),
            )
            .await?
            .url;
        expect_kind(
            fetch(SignedUrlMethod::Get, up.clone(), None).await,
            ErrorKind::PermissionDenied,
            "GET with a PUT URL",
        )?;
        for (climb, lands) in [
            ("signed/../escaped.txt", "escaped.txt"),
            ("signed/%2E%2E/escaped.txt", "escaped.txt"),
            ("signed/../../escaped.txt", "escaped.txt"),
        ] {
            let bad = up.replace("signed/forge-up.txt", climb);
            ensure!(bad != up, "the PUT URL does not hold the key: {up}");
            expect_kind(
                fetch(SignedUrlMethod::Put, bad.clone(), Some(Bytes::from("x"))).await,
                ErrorKind::PermissionDenied,
                &format!("PUT on a URL with a path with `..` ({bad})"),
            )?;
            expect_kind(
                fx.storage.get_metadata(&fx.bucket, lands).await,
                ErrorKind::NotFound,
                &format!("{lands:?} after the refused PUT on {bad}"),
            )?;
        }
        expect_kind(
            fx.storage
                .get_metadata(&fx.bucket, "signed/forge-up.txt")
                .await,
            ErrorKind::NotFound,
            "the PUT URL's own key after refused requests",
        )?;
    }
    // The genuine URL still works.
    ensure_eq!(
        fetch(SignedUrlMethod::Get, url, None).await?,
        Some(Bytes::from("a")),
        "genuine URL"
    );
    Ok(())
}

/// A URL is refused from the second it expires (waits for that second:
/// at most two).
async fn signed_fetch_refuses_expired(fx: StorageFixture) -> CaseResult {
    put(&fx, "signed/fetch-short.txt", "short-lived").await?;
    let url = fx
        .storage
        .signed_url(
            &fx.bucket,
            "signed/fetch-short.txt",
            SignedUrlMethod::Get,
            Duration::from_secs(1),
        )
        .await?;
    ensure_eq!(
        fx.storage
            .fetch_signed(SignedUrlMethod::Get, &url.url, None)
            .await?,
        Some(Bytes::from("short-lived")),
        "before it expires"
    );
    let left = (url.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    ensure!(
        left <= Duration::from_secs(2),
        "a 1 s URL expires in {left:?}"
    );
    tokio::time::sleep(left + Duration::from_millis(20)).await;
    expect_kind(
        fx.storage
            .fetch_signed(SignedUrlMethod::Get, &url.url, None)
            .await,
        ErrorKind::PermissionDenied,
        "expired URL",
    )
}
