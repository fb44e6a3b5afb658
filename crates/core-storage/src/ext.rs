//! Conveniences over any [`Storage`], written once.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::{ErrorKind, ObjectMeta, Storage, StorageResult, UploadOptions};

/// One upload of a batch.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Content.
    pub data: Bytes,
    /// Options.
    pub options: UploadOptions,
}

/// Conveniences for every [`Storage`] (including `dyn Storage`).
#[async_trait]
pub trait StorageExt: Storage {
    /// Uploads many objects with at most `concurrency` in flight (at least 1).
    /// Returns one result per request, in request order: one failed upload does
    /// not stop the others.
    async fn upload_multiple(
        &self,
        uploads: Vec<UploadRequest>,
        concurrency: usize,
    ) -> Vec<StorageResult<ObjectMeta>> {
        futures::stream::iter(uploads)
            .map(|u| async move { self.upload(&u.bucket, &u.key, u.data, &u.options).await })
            .buffered(concurrency.max(1))
            .collect()
            .await
    }

    /// Metadata, or `None` when the object does not exist.
    async fn metadata_opt(&self, bucket: &str, key: &str) -> StorageResult<Option<ObjectMeta>> {
        match self.get_metadata(bucket, key).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the object exists.
    async fn exists(&self, bucket: &str, key: &str) -> StorageResult<bool> {
        Ok(self.metadata_opt(bucket, key).await?.is_some())
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}
