//! The capability cases catch a provider that lies: one that reports
//! `conditional_writes = false` and then overwrites silently passed every
//! storage case before `capability.conditional_writes` (issue 13). An
//! honest provider without the capability passes the whole suite.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use truststream_conformance::{factory, storage, CaseOutcome, Report};
use truststream_core::Error;
use truststream_core_storage::{
    ByteStream, ObjectMeta, Storage, StorageCapabilities, StorageResult, UploadOptions,
    WriteCondition,
};
use truststream_layer::{LayeredStorage, StorageLayer};
use truststream_storage_memory::MemoryStorage;

/// What the wrapper does with a conditional upload.
#[derive(Clone, Copy, PartialEq)]
enum Conditions {
    /// Drops the condition and overwrites: the lie.
    Ignore,
    /// Answers `Unsupported`: the truth.
    Refuse,
}

/// A layer over storage-memory that reports `conditional_writes = false`;
/// it overrides the three methods it changes and forwards the rest.
struct NoConditions {
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

#[async_trait]
impl StorageLayer for NoConditions {
    fn capabilities(&self, next: &dyn Storage) -> StorageCapabilities {
        let mut caps = next.capabilities();
        caps.conditional_writes = false;
        caps
    }

    async fn upload(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let options = self.unconditional(options)?;
        next.upload(bucket, key, data, &options).await
    }

    async fn upload_stream(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let options = self.unconditional(options)?;
        next.upload_stream(bucket, key, data, &options).await
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
            let store: Arc<dyn Storage> = Arc::new(LayeredStorage::new(
                inner,
                Arc::new(NoConditions { conditions }),
            ));
            Ok(
                storage::StorageFixture::new(store, "conformance").with_url_client(
                    move |method, url, body| {
                        let client = client.clone();
                        async move { client.fetch_signed(method, &url, body).await }
                    },
                ),
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
