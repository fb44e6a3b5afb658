//! The capability cases catch a provider that lies: one that reports
//! `conditional_writes = false` and then overwrites silently passed every
//! storage case before `capability.conditional_writes` (issue 13). An
//! honest provider without the capability passes the whole suite.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use truststream_conformance::{factory, storage, CaseOutcome, Report};
use truststream_core::{Error, Health, ProviderInfo};
use truststream_core_storage::{
    BucketInfo, ByteRange, ByteStream, ListOptions, ListPage, ObjectMeta, SignedUrl,
    SignedUrlMethod, Storage, StorageCapabilities, StorageResult, UploadOptions, WriteCondition,
};
use truststream_storage_memory::MemoryStorage;

/// What the wrapper does with a conditional upload.
#[derive(Clone, Copy, PartialEq)]
enum Conditions {
    /// Drops the condition and overwrites: the lie.
    Ignore,
    /// Answers `Unsupported`: the truth.
    Refuse,
}

/// storage-memory, reporting `conditional_writes = false`.
struct NoConditions {
    inner: Arc<MemoryStorage>,
    conditions: Conditions,
}

impl NoConditions {
    fn unconditional(&self, options: &UploadOptions) -> StorageResult<UploadOptions> {
        if options.condition == WriteCondition::None {
            return Ok(options.clone());
        }
        match self.conditions {
            Conditions::Ignore => {
                let mut o = options.clone();
                o.condition = WriteCondition::None;
                Ok(o)
            }
            Conditions::Refuse => Err(Error::unsupported("no conditional writes here")),
        }
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Storage for NoConditions {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }

    fn capabilities(&self) -> StorageCapabilities {
        let mut caps = self.inner.capabilities();
        caps.conditional_writes = false;
        caps
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let options = self.unconditional(options)?;
        self.inner.upload(bucket, key, data, &options).await
    }

    async fn upload_stream(
        &self,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let options = self.unconditional(options)?;
        self.inner.upload_stream(bucket, key, data, &options).await
    }

    async fn download(&self, bucket: &str, key: &str) -> StorageResult<Bytes> {
        self.inner.download(bucket, key).await
    }

    async fn download_range(
        &self,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> StorageResult<Bytes> {
        self.inner.download_range(bucket, key, range).await
    }

    async fn download_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ByteStream> {
        self.inner.download_stream(bucket, key, range).await
    }

    async fn get_metadata(&self, bucket: &str, key: &str) -> StorageResult<ObjectMeta> {
        self.inner.get_metadata(bucket, key).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> StorageResult<()> {
        self.inner.delete(bucket, key).await
    }

    async fn list(&self, bucket: &str, options: &ListOptions) -> StorageResult<ListPage> {
        self.inner.list(bucket, options).await
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> StorageResult<ObjectMeta> {
        self.inner
            .copy(from_bucket, from_key, to_bucket, to_key)
            .await
    }

    async fn signed_url(
        &self,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> StorageResult<SignedUrl> {
        self.inner.signed_url(bucket, key, method, expires_in).await
    }

    async fn list_buckets(&self) -> StorageResult<Vec<BucketInfo>> {
        self.inner.list_buckets().await
    }

    async fn create_bucket(&self, name: &str) -> StorageResult<()> {
        self.inner.create_bucket(name).await
    }

    async fn delete_bucket(&self, name: &str) -> StorageResult<()> {
        self.inner.delete_bucket(name).await
    }
}

async fn run(conditions: Conditions) -> Report {
    storage::run(
        "no-conditions",
        factory(move || async move {
            let inner = Arc::new(MemoryStorage::new());
            inner
                .create_bucket("conformance")
                .await
                .map_err(|e| e.to_string())?;
            let client = inner.clone();
            let store = Arc::new(NoConditions { inner, conditions });
            Ok(
                storage::StorageFixture::new(store as Arc<dyn Storage>, "conformance")
                    .with_url_client(move |method, url, body| {
                        let client = client.clone();
                        async move { client.fetch_signed(method, &url, body).await }
                    }),
            )
        }),
        None,
    )
    .await
}

fn failed(report: &Report) -> Vec<&'static str> {
    report
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, CaseOutcome::Failed(_)))
        .map(|c| c.case)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_reports_no_conditional_writes_and_overwrites_fails() {
    let report = run(Conditions::Ignore).await;
    report.print_table();
    assert_eq!(failed(&report), ["capability.conditional_writes"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_refuses_what_it_does_not_report_passes() {
    let report = run(Conditions::Refuse).await;
    report.print_table();
    assert_eq!(failed(&report), Vec::<&str>::new(), "{}", report.summary());
    let skipped = report.skipped_cases();
    assert!(
        !skipped.is_empty() && skipped.iter().all(|c| c.starts_with("cond.")),
        "{skipped:?}"
    );
}
