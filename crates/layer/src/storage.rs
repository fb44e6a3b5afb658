//! Layers over [`Storage`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use truststream_core::{Health, ProviderInfo, Result};
use truststream_core_storage::signing::VerifiedUrl;
use truststream_core_storage::{
    BucketInfo, ByteRange, ByteStream, ListOptions, ListPage, ObjectDownload, ObjectMeta,
    SignedUrl, SignedUrlMethod, Storage, StorageCapabilities, UploadOptions, WriteCondition,
};

use crate::around::{
    copy_clone, copy_none, copy_unit, health_through, through, Access, Around, Interface, Op,
};
use crate::Generic;

/// A layer over [`Storage`]: every method defaults to the same method of
/// `next`, so a layer overrides only what it changes. Wrap a provider with
/// [`LayeredStorage`]; generic layers get this through [`Generic`].
#[allow(missing_docs)] // each method is the `Storage` method of that name
#[async_trait]
pub trait StorageLayer: Send + Sync + 'static {
    fn info(&self, next: &dyn Storage) -> ProviderInfo {
        next.info()
    }
    fn capabilities(&self, next: &dyn Storage) -> StorageCapabilities {
        next.capabilities()
    }
    async fn health(&self, next: &dyn Storage) -> Health {
        next.health().await
    }
    async fn upload(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        next.upload(bucket, key, data, options).await
    }
    async fn upload_stream(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        next.upload_stream(bucket, key, data, options).await
    }
    async fn download(&self, next: &dyn Storage, bucket: &str, key: &str) -> Result<Bytes> {
        next.download(bucket, key).await
    }
    async fn download_range(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> Result<Bytes> {
        next.download_range(bucket, key, range).await
    }
    async fn download_stream(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        next.download_stream(bucket, key, range).await
    }
    async fn download_with_metadata(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectDownload> {
        next.download_with_metadata(bucket, key, range).await
    }
    async fn get_metadata(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectMeta> {
        next.get_metadata(bucket, key).await
    }
    async fn delete(&self, next: &dyn Storage, bucket: &str, key: &str) -> Result<()> {
        next.delete(bucket, key).await
    }
    async fn list(
        &self,
        next: &dyn Storage,
        bucket: &str,
        options: &ListOptions,
    ) -> Result<ListPage> {
        next.list(bucket, options).await
    }
    async fn copy(
        &self,
        next: &dyn Storage,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<ObjectMeta> {
        next.copy(from_bucket, from_key, to_bucket, to_key).await
    }
    async fn signed_url(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> Result<SignedUrl> {
        next.signed_url(bucket, key, method, expires_in).await
    }
    async fn fetch_signed(
        &self,
        next: &dyn Storage,
        method: SignedUrlMethod,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<Option<Bytes>> {
        next.fetch_signed(method, url, body).await
    }
    async fn verify_signed(
        &self,
        next: &dyn Storage,
        method: SignedUrlMethod,
        url: &str,
    ) -> Result<VerifiedUrl> {
        next.verify_signed(method, url).await
    }
    async fn list_buckets(&self, next: &dyn Storage) -> Result<Vec<BucketInfo>> {
        next.list_buckets().await
    }
    async fn create_bucket(&self, next: &dyn Storage, name: &str) -> Result<()> {
        next.create_bucket(name).await
    }
    async fn delete_bucket(&self, next: &dyn Storage, name: &str) -> Result<()> {
        next.delete_bucket(name).await
    }
}

/// A [`Storage`] provider with a layer over it (itself a `Storage`).
pub struct LayeredStorage<L: ?Sized> {
    inner: Arc<dyn Storage>,
    layer: Arc<L>,
}

impl<L: StorageLayer + ?Sized> LayeredStorage<L> {
    /// `layer` over `inner`.
    pub fn new(inner: Arc<dyn Storage>, layer: Arc<L>) -> Self {
        LayeredStorage { inner, layer }
    }

    /// The provider (or layer) below.
    pub fn inner(&self) -> &Arc<dyn Storage> {
        &self.inner
    }

    /// The layer.
    pub fn layer(&self) -> &Arc<L> {
        &self.layer
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl<L: StorageLayer + ?Sized> Storage for LayeredStorage<L> {
    fn info(&self) -> ProviderInfo {
        self.layer.info(&*self.inner)
    }
    fn capabilities(&self) -> StorageCapabilities {
        self.layer.capabilities(&*self.inner)
    }
    async fn health(&self) -> Health {
        self.layer.health(&*self.inner).await
    }
    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        self.layer
            .upload(&*self.inner, bucket, key, data, options)
            .await
    }
    async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        self.layer
            .upload_stream(&*self.inner, bucket, key, data, options)
            .await
    }
    async fn download(&self, bucket: &str, key: &str) -> Result<Bytes> {
        self.layer.download(&*self.inner, bucket, key).await
    }
    async fn download_range(&self, bucket: &str, key: &str, range: ByteRange) -> Result<Bytes> {
        self.layer
            .download_range(&*self.inner, bucket, key, range)
            .await
    }
    async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        self.layer
            .download_stream(&*self.inner, bucket, key, range)
            .await
    }
    async fn download_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectDownload> {
        self.layer
            .download_with_metadata(&*self.inner, bucket, key, range)
            .await
    }
    async fn get_metadata(&self, bucket: &str, key: &str) -> Result<ObjectMeta> {
        self.layer.get_metadata(&*self.inner, bucket, key).await
    }
    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.layer.delete(&*self.inner, bucket, key).await
    }
    async fn list(&self, bucket: &str, options: &ListOptions) -> Result<ListPage> {
        self.layer.list(&*self.inner, bucket, options).await
    }
    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<ObjectMeta> {
        self.layer
            .copy(&*self.inner, from_bucket, from_key, to_bucket, to_key)
            .await
    }
    async fn signed_url(
        &self,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> Result<SignedUrl> {
        self.layer
            .signed_url(&*self.inner, bucket, key, method, expires_in)
            .await
    }
    async fn fetch_signed(
        &self,
        method: SignedUrlMethod,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<Option<Bytes>> {
        self.layer
            .fetch_signed(&*self.inner, method, url, body)
            .await
    }
    async fn verify_signed(&self, method: SignedUrlMethod, url: &str) -> Result<VerifiedUrl> {
        self.layer.verify_signed(&*self.inner, method, url).await
    }
    async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        self.layer.list_buckets(&*self.inner).await
    }
    async fn create_bucket(&self, name: &str) -> Result<()> {
        self.layer.create_bucket(&*self.inner, name).await
    }
    async fn delete_bucket(&self, name: &str) -> Result<()> {
        self.layer.delete_bucket(&*self.inner, name).await
    }
}

fn op<'a>(
    next: &dyn Storage,
    method: &'static str,
    access: Access,
    target: Option<&'a str>,
    idempotent: bool,
) -> Op<'a> {
    Op {
        interface: Interface::Storage,
        provider: next.info().name,
        method,
        access,
        target,
        idempotent,
        replayable: true,
    }
}

#[async_trait]
impl<A: Around + ?Sized> StorageLayer for Generic<A> {
    async fn health(&self, next: &dyn Storage) -> Health {
        let op = Op {
            interface: Interface::Storage,
            provider: next.info().name,
            method: "health",
            access: Access::Admin,
            target: None,
            idempotent: true,
            replayable: true,
        };
        health_through(&*self.0, op, || next.health()).await
    }
    async fn upload(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        // A conditional write repeated after a lost answer would fail on
        // its own first attempt's object.
        let unconditional = options.condition == WriteCondition::None;
        let op = op(next, "upload", Access::Write, Some(bucket), unconditional);
        // `Bytes` clones share the buffer: replaying costs no copy.
        through(&*self.0, op, data, copy_clone, |data| {
            next.upload(bucket, key, data, options)
        })
        .await
    }
    async fn upload_stream(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        let mut op = op(next, "upload_stream", Access::Write, Some(bucket), false);
        op.replayable = false;
        through(&*self.0, op, data, copy_none, |data| {
            next.upload_stream(bucket, key, data, options)
        })
        .await
    }
    async fn download(&self, next: &dyn Storage, bucket: &str, key: &str) -> Result<Bytes> {
        let op = op(next, "download", Access::Read, Some(bucket), true);
        through(&*self.0, op, (), copy_unit, |()| next.download(bucket, key)).await
    }
    async fn download_range(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> Result<Bytes> {
        let op = op(next, "download_range", Access::Read, Some(bucket), true);
        through(&*self.0, op, range, copy_clone, |range| {
            next.download_range(bucket, key, range)
        })
        .await
    }
    async fn download_stream(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        let op = op(next, "download_stream", Access::Stream, Some(bucket), true);
        through(&*self.0, op, range, copy_clone, |range| {
            next.download_stream(bucket, key, range)
        })
        .await
    }
    /// Like `download_stream`: the call covers opening the download (the
    /// metadata and the start of the body), not reading the body.
    async fn download_with_metadata(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectDownload> {
        let op = op(
            next,
            "download_with_metadata",
            Access::Stream,
            Some(bucket),
            true,
        );
        through(&*self.0, op, range, copy_clone, |range| {
            next.download_with_metadata(bucket, key, range)
        })
        .await
    }
    async fn get_metadata(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectMeta> {
        let op = op(next, "get_metadata", Access::Read, Some(bucket), true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.get_metadata(bucket, key)
        })
        .await
    }
    async fn delete(&self, next: &dyn Storage, bucket: &str, key: &str) -> Result<()> {
        let op = op(next, "delete", Access::Write, Some(bucket), true);
        through(&*self.0, op, (), copy_unit, |()| next.delete(bucket, key)).await
    }
    async fn list(
        &self,
        next: &dyn Storage,
        bucket: &str,
        options: &ListOptions,
    ) -> Result<ListPage> {
        let op = op(next, "list", Access::Read, Some(bucket), true);
        through(&*self.0, op, (), copy_unit, |()| next.list(bucket, options)).await
    }
    async fn copy(
        &self,
        next: &dyn Storage,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<ObjectMeta> {
        let op = op(next, "copy", Access::Write, Some(to_bucket), true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.copy(from_bucket, from_key, to_bucket, to_key)
        })
        .await
    }
    async fn signed_url(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> Result<SignedUrl> {
        let op = op(next, "signed_url", Access::Read, Some(bucket), true);
        through(&*self.0, op, method, copy_clone, |method| {
            next.signed_url(bucket, key, method, expires_in)
        })
        .await
    }
    /// A GET is a read. A PUT is a write the layer cannot see into (the
    /// bucket and key are the provider's to read from the URL, so no
    /// target), so it is treated as not idempotent: it is repeated only
    /// after an error that says nothing was applied.
    async fn fetch_signed(
        &self,
        next: &dyn Storage,
        method: SignedUrlMethod,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<Option<Bytes>> {
        let op = match method {
            SignedUrlMethod::Get => op(next, "fetch_signed", Access::Read, None, true),
            SignedUrlMethod::Put => op(next, "fetch_signed", Access::Write, None, false),
        };
        // `Bytes` clones share the buffer: replaying costs no copy.
        through(&*self.0, op, body, copy_clone, |body| {
            next.fetch_signed(method, url, body)
        })
        .await
    }
    /// A read of nothing (the check only): no target, idempotent.
    async fn verify_signed(
        &self,
        next: &dyn Storage,
        method: SignedUrlMethod,
        url: &str,
    ) -> Result<VerifiedUrl> {
        let op = op(next, "verify_signed", Access::Read, None, true);
        through(&*self.0, op, (), copy_unit, |()| {
            next.verify_signed(method, url)
        })
        .await
    }
    async fn list_buckets(&self, next: &dyn Storage) -> Result<Vec<BucketInfo>> {
        let op = op(next, "list_buckets", Access::Read, None, true);
        through(&*self.0, op, (), copy_unit, |()| next.list_buckets()).await
    }
    async fn create_bucket(&self, next: &dyn Storage, name: &str) -> Result<()> {
        let op = op(next, "create_bucket", Access::Schema, Some(name), false);
        through(&*self.0, op, (), copy_unit, |()| next.create_bucket(name)).await
    }
    async fn delete_bucket(&self, next: &dyn Storage, name: &str) -> Result<()> {
        let op = op(next, "delete_bucket", Access::Schema, Some(name), false);
        through(&*self.0, op, (), copy_unit, |()| next.delete_bucket(name)).await
    }
}
