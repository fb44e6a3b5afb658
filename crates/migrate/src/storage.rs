//! Copying buckets: the bucket (created on the target when missing), then
//! its objects page by page in key order, each streamed from the source's
//! download to the target's upload (never whole in memory where both
//! providers stream) with its content type, user metadata and public flag;
//! the CRC32C of the bytes that passed is checked against what each side
//! recorded. Bucket settings kept as objects in the bucket (serve's
//! `.truststream-bucket.json`: public flag, size and MIME limits) travel as
//! objects. The checkpoint is the listing cursor after the last page whose
//! objects were all copied; a resumed run re-lists that page and skips the
//! objects the target already holds with the same size and checksum.

use std::sync::{Arc, Mutex};

use futures::{StreamExt as _, TryStreamExt as _};
use truststream_core::{Error, Result};
use truststream_core_storage::{
    ByteStream, Checksum, ChecksumAlgorithm, ChecksumHasher, ListOptions, ObjectMeta, Storage,
    UploadOptions,
};

use crate::progress::Task;
use crate::state::{BucketState, StateFile};
use crate::verify::{full_meta, object_fields};

/// Objects listed (and checkpointed) per page.
const PAGE: usize = 500;

/// Objects copied at once within a page.
const CONCURRENCY: usize = 8;

/// The bucket exists on the target afterwards.
pub(crate) async fn ensure_bucket(target: &dyn Storage, bucket: &str) -> Result<()> {
    if target
        .list_buckets()
        .await?
        .iter()
        .any(|b| b.name == bucket)
    {
        return Ok(());
    }
    match target.create_bucket(bucket).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == truststream_core::ErrorKind::Conflict => Ok(()),
        Err(e) => Err(e.with_context("bucket", bucket.to_string())),
    }
}

/// Totals of one bucket (for progress): objects and bytes.
pub(crate) async fn totals(source: &dyn Storage, bucket: &str) -> Result<(u64, u64)> {
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut cursor = None;
    loop {
        let mut o = ListOptions::new().limit(1000);
        if let Some(c) = cursor {
            o = o.cursor(c);
        }
        let p = source.list(bucket, &o).await?;
        n += p.objects.len() as u64;
        bytes += p.objects.iter().map(|m| m.size).sum::<u64>();
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok((n, bytes)),
        }
    }
}

/// Copies one object, streaming where both sides stream.
async fn copy_object(source: &dyn Storage, target: &dyn Storage, meta: &ObjectMeta) -> Result<()> {
    let options = UploadOptions {
        content_type: meta.content_type.clone(),
        metadata: meta.metadata.clone(),
        public: meta.public,
        ..UploadOptions::default()
    };
    let hasher = Arc::new(Mutex::new(ChecksumHasher::new(ChecksumAlgorithm::Crc32c)));
    let stored = if source.capabilities().streaming && target.capabilities().streaming {
        let h = Arc::clone(&hasher);
        let stream: ByteStream = Box::pin(
            source
                .download_stream(&meta.bucket, &meta.key, None)
                .await?
                .inspect_ok(move |chunk| {
                    if let Ok(mut h) = h.lock() {
                        h.update(chunk);
                    }
                }),
        );
        target
            .upload_stream(&meta.bucket, &meta.key, stream, &options)
            .await?
    } else {
        let data = source.download(&meta.bucket, &meta.key).await?;
        if let Ok(mut h) = hasher.lock() {
            h.update(&data);
        }
        target
            .upload(&meta.bucket, &meta.key, data, &options)
            .await?
    };
    let passed = hasher
        .lock()
        .map(|h| h.clone().finish())
        .map_err(|_| Error::internal("checksum state poisoned"))?;
    let check = |recorded: &Option<Checksum>, side: &str| -> Result<()> {
        match recorded {
            Some(c @ Checksum::Crc32c(_)) if *c != passed => Err(Error::internal(format!(
                "object {}/{}: the bytes copied do not match the {side}'s checksum",
                meta.bucket, meta.key
            ))),
            _ => Ok(()),
        }
    };
    check(&meta.checksum, "source")?;
    check(&stored.checksum, "target")?;
    if stored.size != meta.size {
        return Err(Error::internal(format!(
            "object {}/{}: {} bytes on the source, {} stored on the target",
            meta.bucket, meta.key, meta.size, stored.size
        )));
    }
    Ok(())
}

/// Copies one bucket's objects from its checkpoint on.
pub(crate) async fn copy_bucket(
    source: Arc<dyn Storage>,
    target: Arc<dyn Storage>,
    bucket: &str,
    state: &StateFile,
    resume: bool,
    task: &Task,
) -> Result<(u64, u64)> {
    let mut st: BucketState = state.bucket(bucket).await;
    task.set(st.bytes);
    if st.done {
        return Ok((0, 0));
    }
    ensure_bucket(target.as_ref(), bucket).await?;
    let (mut objects, mut bytes) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut o = ListOptions::new().limit(PAGE);
        if let Some(c) = &st.cursor {
            o = o.cursor(c.clone());
        }
        let page = source.list(bucket, &o).await?;
        let check_existing = resume && first;
        first = false;
        let results: Vec<Result<u64>> = futures::stream::iter(page.objects.iter())
            .map(|m| {
                let (source, target) = (Arc::clone(&source), Arc::clone(&target));
                async move {
                    let named =
                        |e: Error| e.with_context("object", format!("{}/{}", m.bucket, m.key));
                    // The listing may lack the content type, user metadata
                    // and public flag (S3, Supabase): copy what get_metadata
                    // reports, or they would be lost on the target.
                    let m = full_meta(source.as_ref(), m.clone()).await.map_err(named)?;
                    if check_existing {
                        if let Ok(t) = target.get_metadata(&m.bucket, &m.key).await {
                            if object_fields(&m, &t).is_empty() {
                                return Ok(m.size);
                            }
                        }
                    }
                    copy_object(source.as_ref(), target.as_ref(), &m)
                        .await
                        .map_err(named)?;
                    Ok(m.size)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .inspect(|r| {
                if let Ok(n) = r {
                    task.inc(*n);
                }
            })
            .collect()
            .await;
        for r in results {
            let n = r?;
            objects += 1;
            bytes += n;
            st.objects += 1;
            st.bytes += n;
        }
        st.cursor = page.next_cursor.clone();
        st.done = page.next_cursor.is_none();
        state.set_bucket(bucket, st.clone()).await?;
        if st.done {
            return Ok((objects, bytes));
        }
    }
}
