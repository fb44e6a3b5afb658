//! A storage provider written outside TrustStream, the way a third party
//! would: it implements `truststream::storage::Storage`, declares only the
//! capabilities it has, is held to them by the conformance suite
//! (`truststream-conformance`), and is then registered with the runtime under
//! its own type name and picked by configuration.
//!
//! ```sh
//! cargo run -p truststream --example third_party
//! ```
//!
//! The provider keeps objects in one ordered map in memory. It serves
//! uploads (also streamed), whole, ranged and streamed downloads, metadata
//! (also with the bytes, in one lookup), conditional writes, paged
//! listings, bucket management and the public flag; it has no copy, no signed URLs and no checksums, so it answers
//! those calls `Unsupported` and the suite skips the cases that need them
//! (and checks that the calls are refused).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use truststream::prelude::*;
use truststream::storage::keys::{validate_bucket, validate_key};
use truststream::storage::list::ListPlan;
use truststream::storage::{
    BucketInfo, ByteRange, ByteStream, ListOptions, ListPage, ObjectDownload, ObjectMeta,
    ProviderInfo, SignedUrl, SignedUrlMethod, StorageCapabilities, StorageResult,
};
use truststream::ConfigSources;
use truststream_conformance::storage::{self as suite, StorageFixture};

/// The type name the provider registers under (`storage.type = "ordered-map"`).
pub const TYPE_NAME: &str = "ordered-map";

/// One stored object: its bytes and metadata, replaced whole on write.
#[derive(Clone)]
struct Object {
    data: Bytes,
    meta: ObjectMeta,
}

/// Bucket name -> (creation time, key -> object).
type Buckets = BTreeMap<String, (chrono::DateTime<chrono::Utc>, BTreeMap<String, Object>)>;

/// The third-party provider.
#[derive(Default)]
pub struct OrderedMapStorage {
    buckets: RwLock<Buckets>,
}

impl OrderedMapStorage {
    /// A store with these buckets.
    pub fn with_buckets(names: &[String]) -> Result<Self> {
        let store = Self::default();
        {
            let mut buckets = store
                .buckets
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for name in names {
                validate_bucket(name)?;
                buckets.insert(name.clone(), (chrono::Utc::now(), BTreeMap::new()));
            }
        }
        Ok(store)
    }

    fn object(&self, bucket: &str, key: &str) -> Result<Object> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        let buckets = self.buckets.read().unwrap_or_else(PoisonError::into_inner);
        let (_, objects) = buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        objects.get(key).cloned().ok_or_else(|| {
            Error::not_found(format!(
                "object {key:?} does not exist in bucket {bucket:?}"
            ))
        })
    }

    fn put(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        options.validate_upload(bucket, key)?;
        let meta = ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: data.len() as u64,
            content_type: options.content_type.clone(),
            // New on every write, so an `IfMatch` condition sees any overwrite.
            etag: format!("\"{:032x}\"", rand::random::<u128>()),
            last_modified: chrono::Utc::now(),
            metadata: options.metadata.clone(),
            // Kept as data: a server in front of the store decides what it serves.
            public: options.public,
            checksum: None,
        };
        // The condition is checked and the object replaced under one lock.
        let mut buckets = self.buckets.write().unwrap_or_else(PoisonError::into_inner);
        let (_, objects) = buckets.get_mut(bucket).ok_or_else(|| no_bucket(bucket))?;
        options
            .condition
            .check(objects.get(key).map(|o| o.meta.etag.as_str()), bucket, key)?;
        objects.insert(
            key.to_string(),
            Object {
                data,
                meta: meta.clone(),
            },
        );
        Ok(meta)
    }
}

fn no_bucket(bucket: &str) -> Error {
    Error::not_found(format!("bucket {bucket:?} does not exist"))
}

/// `data` as a stream of 16 KiB chunks.
fn chunked(data: Bytes) -> ByteStream {
    let chunks: Vec<StorageResult<Bytes>> = data
        .chunks(16 * 1024)
        .map(|c| Ok(data.slice_ref(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

fn slice(data: &Bytes, range: ByteRange) -> Result<Bytes> {
    let r = range.resolve(data.len() as u64)?;
    Ok(data.slice(r.start as usize..r.end as usize))
}

#[async_trait::async_trait]
impl Storage for OrderedMapStorage {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: TYPE_NAME,
            version: "0.1.0",
        }
    }

    fn capabilities(&self) -> StorageCapabilities {
        let mut caps = StorageCapabilities::none();
        caps.range_reads = true;
        caps.streaming = true;
        caps.conditional_writes = true;
        caps.manage_buckets = true;
        caps.public_objects = true;
        caps
    }

    async fn health(&self) -> truststream::core::Health {
        let start = Instant::now();
        let _ = self
            .buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        truststream::core::Health::healthy(start.elapsed())
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        self.put(bucket, key, data, options)
    }

    async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        mut data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        options.validate_upload(bucket, key)?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = data.next().await {
            // An error item aborts the upload before anything is stored.
            buf.extend_from_slice(&chunk?);
        }
        self.put(bucket, key, buf.freeze(), options)
    }

    async fn download(&self, bucket: &str, key: &str) -> StorageResult<Bytes> {
        Ok(self.object(bucket, key)?.data)
    }

    async fn download_range(
        &self,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> StorageResult<Bytes> {
        slice(&self.object(bucket, key)?.data, range)
    }

    async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ByteStream> {
        let data = self.object(bucket, key)?.data;
        let data = match range {
            Some(range) => slice(&data, range)?,
            None => data,
        };
        Ok(chunked(data))
    }

    // Overridden: the provided default reads the metadata, then the bytes,
    // in two calls, so an overwrite in between could pair one version's
    // metadata with the other's bytes (the suite's
    // `download.with_metadata_consistent_under_overwrite` catches that).
    // One lookup here takes both from the same stored object.
    async fn download_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ObjectDownload> {
        let Object { data, meta } = self.object(bucket, key)?;
        let size = data.len() as u64;
        let served = match range {
            Some(r) => r.resolve(size)?,
            None => 0..size,
        };
        Ok(ObjectDownload {
            body: chunked(data.slice(served.start as usize..served.end as usize)),
            meta,
            range: served,
        })
    }

    async fn get_metadata(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta> {
        Ok(self.object(bucket, key)?.meta)
    }

    async fn delete(&self, bucket: &str, key: &str) -> StorageResult<()> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        let mut buckets = self.buckets.write().unwrap_or_else(PoisonError::into_inner);
        let (_, objects) = buckets.get_mut(bucket).ok_or_else(|| no_bucket(bucket))?;
        objects.remove(key);
        Ok(())
    }

    async fn list(&self, bucket: &str, options: &ListOptions) -> StorageResult<ListPage> {
        validate_bucket(bucket)?;
        let plan = ListPlan::new(options)?;
        let buckets = self.buckets.read().unwrap_or_else(PoisonError::into_inner);
        let (_, objects) = buckets.get(bucket).ok_or_else(|| no_bucket(bucket))?;
        Ok(plan.page(objects, |o| o.meta.clone()))
    }

    async fn copy(&self, _: &str, _: &str, _: &str, _: &str) -> StorageResult<ObjectMeta> {
        Err(Error::unsupported(
            "ordered-map storage cannot copy objects",
        ))
    }

    async fn signed_url(
        &self,
        _: &str,
        _: &str,
        _: SignedUrlMethod,
        _: Duration,
    ) -> StorageResult<SignedUrl> {
        Err(Error::unsupported("ordered-map storage has no signed URLs"))
    }

    async fn list_buckets(&self) -> StorageResult<Vec<BucketInfo>> {
        let buckets = self.buckets.read().unwrap_or_else(PoisonError::into_inner);
        Ok(buckets
            .iter()
            .map(|(name, (created, _))| BucketInfo {
                name: name.clone(),
                created_at: Some(*created),
            })
            .collect())
    }

    async fn create_bucket(&self, name: &str) -> StorageResult<()> {
        validate_bucket(name)?;
        let mut buckets = self.buckets.write().unwrap_or_else(PoisonError::into_inner);
        if buckets.contains_key(name) {
            return Err(Error::conflict(format!("bucket {name:?} already exists")));
        }
        buckets.insert(name.to_string(), (chrono::Utc::now(), BTreeMap::new()));
        Ok(())
    }

    async fn delete_bucket(&self, name: &str) -> StorageResult<()> {
        validate_bucket(name)?;
        let mut buckets = self.buckets.write().unwrap_or_else(PoisonError::into_inner);
        let (_, objects) = buckets.get(name).ok_or_else(|| no_bucket(name))?;
        if !objects.is_empty() {
            return Err(Error::conflict(format!("bucket {name:?} is not empty")));
        }
        buckets.remove(name);
        Ok(())
    }
}

/// The provider's settings (`[<profile>.storage]` with `type = "ordered-map"`).
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
struct OrderedMapConfig {
    buckets: Vec<String>,
}

/// What [`run`] found.
#[derive(Debug)]
pub struct Report {
    /// Conformance cases passed.
    pub passed: usize,
    /// Conformance cases failed, with their messages.
    pub failed: Vec<String>,
    /// The suite's summary line.
    pub summary: String,
    /// The cases skipped because a capability is off.
    pub skipped: Vec<&'static str>,
    /// The provider the runtime built from `storage.type = "ordered-map"`.
    pub runtime_provider: &'static str,
    /// What the runtime's storage gave back after an upload.
    pub downloaded: Bytes,
}

/// Runs the storage conformance suite against the provider, then builds a
/// runtime whose configuration picks it by type name.
pub async fn run() -> Result<Report> {
    // 1. The conformance suite: a fresh store with one empty bucket per case.
    let factory = truststream_conformance::factory(|| async {
        let store = OrderedMapStorage::with_buckets(&["conformance".to_string()])
            .map_err(|e| e.to_string())?;
        Ok(StorageFixture::new(Arc::new(store), "conformance"))
    });
    let report = suite::run(TYPE_NAME, factory, None).await;

    // 2. The runtime: registered under its type name, chosen by configuration.
    let config = ConfigSources::new()
        .toml_str(
            "[default.database]\ntype = \"memory\"\n\
             [default.storage]\ntype = \"ordered-map\"\nbuckets = [\"docs\"]\n",
        )
        .load()?;
    let runtime = Runtime::builder()
        .register_storage(TYPE_NAME, |settings, ()| async move {
            let config: OrderedMapConfig = truststream::core::parse_config(TYPE_NAME, settings)?;
            let store = OrderedMapStorage::with_buckets(&config.buckets)?;
            Ok(Arc::new(store) as Arc<dyn Storage>)
        })
        .config(config)
        .build()
        .await?;
    let storage = runtime.storage();
    storage
        .upload(
            "docs",
            "readme.txt",
            Bytes::from("hello"),
            &UploadOptions::new(),
        )
        .await?;
    let downloaded = storage.download("docs", "readme.txt").await?;

    Ok(Report {
        passed: report.passed(),
        failed: report
            .cases
            .iter()
            .filter_map(|c| match &c.outcome {
                truststream_conformance::CaseOutcome::Failed(why) => {
                    Some(format!("{}: {why}", c.case))
                }
                _ => None,
            })
            .collect(),
        summary: report.summary(),
        skipped: report.skipped_cases(),
        runtime_provider: storage.info().name,
        downloaded,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let report = run().await?;
    println!("conformance: {}", report.summary);
    println!("skipped (capability off): {}", report.skipped.join(", "));
    println!(
        "runtime storage: {} -> {:?}",
        report.runtime_provider, report.downloaded
    );
    if !report.failed.is_empty() {
        return Err(Error::internal(format!(
            "conformance cases failed: {}",
            report.failed.join("; ")
        )));
    }
    Ok(())
}
