//! The storage composite layer over the primary: writes journaled first,
//! reads with fallback, health.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use truststream_core::{Error, ErrorKind, Health, HealthStatus, Result};
use truststream_core_db::Database;
use truststream_core_storage::signing::VerifiedUrl;
use truststream_core_storage::{
    keys, BucketInfo, ByteRange, ByteStream, ListOptions, ListPage, ObjectDownload, ObjectMeta,
    SignedUrl, SignedUrlMethod, Storage, UploadOptions,
};
use truststream_layer::{LayeredStorage, StorageLayer};

use super::config::StorageCompositeConfig;
use super::journal::{self, Target};
use super::replicator;
use crate::layer::ReplicationLag;
use crate::outbox::now_ms;
use crate::watch::{Fallbacks, Labels, Passes, Verdict};

/// What the storage composite has done since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageCompositeStats {
    /// Reads answered by the secondary because the primary answered
    /// `Unavailable` or `Timeout`.
    pub read_fallbacks: u64,
    /// Journal entries applied to the secondary and removed.
    pub applied: u64,
    /// Replication passes that ended on an error.
    pub failed_passes: u64,
}

/// The state the layer and its replicator share.
pub(crate) struct Shared {
    pub primary: Arc<dyn Storage>,
    pub secondary: Arc<dyn Storage>,
    pub journal: Arc<dyn Database>,
    pub config: StorageCompositeConfig,
    /// Targets with a write on the primary under way in this process: the
    /// replicator leaves their entries until the write has ended, so that
    /// it never copies the state from before the write and then removes
    /// the entry.
    pub in_flight: Mutex<HashMap<Target, usize>>,
    /// Serializes passes (the background task and explicit calls), and
    /// holds where the next one starts: after the last entry the previous
    /// pass read when it read a full batch, else at the start. Passes go
    /// round the journal, so entries that keep failing (an object the
    /// secondary refuses) never hold back those after them.
    pub pass: tokio::sync::Mutex<i64>,
    pub passes: Passes,
    fallbacks: Fallbacks,
    pub labels: Labels,
}

impl Shared {
    pub(crate) fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Target, usize>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks a target in flight while it lives.
struct InFlight {
    shared: Arc<Shared>,
    target: Target,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>, target: Target) -> Self {
        *shared.in_flight().entry(target.clone()).or_insert(0) += 1;
        InFlight {
            shared: Arc::clone(shared),
            target,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.shared.in_flight();
        if let Some(n) = map.get_mut(&self.target) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.target);
            }
        }
    }
}

/// The storage composite (primary/secondary) layer: see the
/// [crate documentation](crate#storage).
///
/// Built by [`StorageCompositeLayer::wrap`]; the replicator runs in the
/// background until the layer is dropped.
pub struct StorageCompositeLayer {
    shared: Arc<Shared>,
    // Dropping the layer drops the sender, which stops the replicator.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for StorageCompositeLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageCompositeLayer")
            .field("primary", &self.shared.primary.info().name)
            .field("secondary", &self.shared.secondary.info().name)
            .field("journal_table", &self.shared.config.journal_table)
            .finish()
    }
}

impl StorageCompositeLayer {
    /// Wraps `primary`, replicating to `secondary` through a journal in
    /// `journal` (the table `config.journal_table`, created if missing),
    /// and starts the replicator (on the current tokio runtime), which
    /// resumes from whatever the journal holds.
    ///
    /// The journal must be durable for a crash to lose nothing (`sqlite`
    /// on a local file, `postgres`); one composite (one process) uses a
    /// journal at a time.
    pub async fn wrap(
        primary: Arc<dyn Storage>,
        secondary: Arc<dyn Storage>,
        journal: Arc<dyn Database>,
        config: &StorageCompositeConfig,
    ) -> Result<Arc<LayeredStorage<StorageCompositeLayer>>> {
        journal
            .create_table(&journal::schema(&config.journal_table))
            .await?;
        let labels = [
            ("primary", primary.info().name.to_string()),
            ("secondary", secondary.info().name.to_string()),
        ];
        let shared = Arc::new(Shared {
            primary: Arc::clone(&primary),
            secondary,
            journal,
            config: config.clone(),
            in_flight: Mutex::new(HashMap::new()),
            pass: tokio::sync::Mutex::new(0),
            passes: Passes::new(
                "truststream_composite_storage_failed_passes_total",
                "storage",
            ),
            fallbacks: Fallbacks::new(
                "truststream_composite_storage_read_fallbacks_total",
                "storage",
            ),
            labels,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(replicator::run(Arc::clone(&shared), stopped));
        let layer = StorageCompositeLayer {
            shared,
            _stop: stop,
        };
        Ok(Arc::new(LayeredStorage::new(primary, Arc::new(layer))))
    }

    /// The secondary storage.
    pub fn secondary(&self) -> &Arc<dyn Storage> {
        &self.shared.secondary
    }

    /// The journal's database.
    pub fn journal(&self) -> &Arc<dyn Database> {
        &self.shared.journal
    }

    /// The settings.
    pub fn config(&self) -> &StorageCompositeConfig {
        &self.shared.config
    }

    /// The replication lag: the journal entries due and the age of the
    /// oldest (also published as the gauges
    /// `truststream_composite_storage_journal_entries` and
    /// `truststream_composite_storage_lag_seconds`).
    pub async fn lag(&self) -> Result<ReplicationLag> {
        replicator::lag(&self.shared).await
    }

    /// Runs one replication pass now (at most `batch` entries, in journal
    /// order) and returns how many entries it applied. Passes never
    /// overlap: this waits for a running one.
    pub async fn replicate_once(&self) -> Result<usize> {
        replicator::pass(&self.shared).await
    }

    /// Runs passes until one round of the journal applies nothing; fails
    /// with the first pass that fails. Entries of writes still under way,
    /// or of signed upload URLs not yet expired, are not waited for.
    pub async fn catch_up(&self) -> Result<()> {
        let mut applied_this_round = 0;
        loop {
            let n = replicator::pass(&self.shared).await?;
            applied_this_round += n;
            if *self.shared.pass.lock().await == 0 {
                // The pass reached the end of the journal.
                if applied_this_round == 0 {
                    return Ok(());
                }
                applied_this_round = 0;
            }
        }
    }

    /// Journals every object of `bucket` on either side, and the bucket
    /// itself, so that the replicator makes the secondary's copy equal to
    /// the primary's: for a secondary added to a primary that already
    /// holds objects, or after writing to the primary without the layer.
    pub async fn resync_bucket(&self, bucket: &str) -> Result<()> {
        let s = &self.shared;
        let mut targets = vec![Target::Bucket(bucket.to_string())];
        for side in [&s.primary, &s.secondary] {
            for key in replicator::keys(&**side, bucket).await? {
                targets.push(Target::object(bucket, &key));
            }
        }
        for chunk in targets.chunks(500) {
            journal::record(&*s.journal, &s.config.journal_table, chunk, now_ms()).await?;
        }
        Ok(())
    }

    /// Counters since the layer was built.
    pub fn stats(&self) -> StorageCompositeStats {
        let s = &self.shared;
        StorageCompositeStats {
            read_fallbacks: s.fallbacks.count(),
            applied: s.passes.applied.load(Ordering::Relaxed),
            failed_passes: s.passes.failed(),
        }
    }

    /// A write of `target` on the primary: marked in flight, journaled
    /// (durably, before the write: a journal that does not answer fails the
    /// write), then run. It runs in a task of its own, so that a caller
    /// giving up on it does not end it between the journal and the write's
    /// end while the replicator copies the state from before.
    async fn write<T, F, Fut>(&self, target: Target, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn Storage>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        check_names(&target)?;
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let _in_flight = InFlight::enter(&shared, target.clone());
            journal::record(
                &*shared.journal,
                &shared.config.journal_table,
                std::slice::from_ref(&target),
                now_ms(),
            )
            .await
            .map_err(journal_refused)?;
            write(Arc::clone(&shared.primary)).await
        });
        task.await
            .map_err(|e| Error::internal("composite: a write task failed").with_source(e))?
    }

    /// `read` on the primary, or on the secondary when the primary answers
    /// `Unavailable` / `Timeout` (the primary's error when the secondary
    /// fails too).
    async fn read<'a, T, F, Fut>(&'a self, next: &'a dyn Storage, read: F) -> Result<T>
    where
        F: Fn(&'a dyn Storage) -> Fut,
        Fut: Future<Output = Result<T>> + 'a,
    {
        let s = &self.shared;
        s.fallbacks
            .read(&s.labels, read(next), || read(&*s.secondary))
            .await
    }
}

/// Refuses a bucket name or key every provider refuses, before it is
/// journaled: the replicator could never apply its entry, which would
/// stay in the journal, fail every pass that meets it and hold the lag up.
fn check_names(target: &Target) -> Result<()> {
    match target {
        Target::Object { bucket, key } => {
            keys::validate_bucket(bucket)?;
            keys::validate_key(key)
        }
        Target::Bucket(bucket) => keys::validate_bucket(bucket),
    }
}

/// The error of a write whose journal entry could not be recorded. The
/// journal's own kind is kept only when it is transient (`Unavailable`,
/// `Timeout`, `RateLimited`: the write may be retried). Any other kind is
/// about the server's journal, not the caller's request, so it becomes
/// `Internal`; passing `InvalidInput`, `NotFound` or `Conflict` on would
/// tell the client that its upload was bad, missing or a duplicate, and
/// put the journal database's message in front of it.
fn journal_refused(e: Error) -> Error {
    let kind = if e.kind().is_retryable_by_default() {
        e.kind()
    } else {
        ErrorKind::Internal
    };
    let message = format!(
        "composite: the replication journal refused the write's entry, so the write was not \
         made: {}",
        e.message()
    );
    Error::new(kind, message).with_source(e)
}

#[async_trait]
impl StorageLayer for StorageCompositeLayer {
    async fn health(&self, next: &dyn Storage) -> Health {
        let started = Instant::now();
        let s = &self.shared;
        let (primary, secondary, journal) =
            tokio::join!(next.health(), s.secondary.health(), s.journal.health());
        let mut verdict = Verdict::of_sides(started, &primary, &secondary);
        if verdict.primary_answers() {
            if journal.status == HealthStatus::Unhealthy {
                verdict.degrade(format!(
                    "replication journal unreachable ({}): writes fail",
                    journal.message.as_deref().unwrap_or("no detail")
                ));
            } else {
                verdict.lag(
                    replicator::lag(s).await,
                    s.config.lag_degraded,
                    "journal entries",
                );
            }
        }
        verdict.into_health()
    }

    async fn upload(
        &self,
        _next: &dyn Storage,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        let (b, k, options) = (bucket.to_string(), key.to_string(), options.clone());
        self.write(Target::object(bucket, key), move |primary| async move {
            primary.upload(&b, &k, data, &options).await
        })
        .await
    }

    async fn upload_stream(
        &self,
        _next: &dyn Storage,
        bucket: &str,
        key: &str,
        data: ByteStream,
        options: &UploadOptions,
    ) -> Result<ObjectMeta> {
        let (b, k, options) = (bucket.to_string(), key.to_string(), options.clone());
        self.write(Target::object(bucket, key), move |primary| async move {
            primary.upload_stream(&b, &k, data, &options).await
        })
        .await
    }

    async fn download(&self, next: &dyn Storage, bucket: &str, key: &str) -> Result<Bytes> {
        self.read(next, |s| s.download(bucket, key)).await
    }

    async fn download_range(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: ByteRange,
    ) -> Result<Bytes> {
        self.read(next, |s| s.download_range(bucket, key, range))
            .await
    }

    async fn download_stream(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ByteStream> {
        self.read(next, |s| s.download_stream(bucket, key, range))
            .await
    }

    async fn download_with_metadata(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectDownload> {
        self.read(next, |s| s.download_with_metadata(bucket, key, range))
            .await
    }

    async fn get_metadata(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
    ) -> Result<ObjectMeta> {
        self.read(next, |s| s.get_metadata(bucket, key)).await
    }

    async fn delete(&self, _next: &dyn Storage, bucket: &str, key: &str) -> Result<()> {
        let (b, k) = (bucket.to_string(), key.to_string());
        self.write(Target::object(bucket, key), move |primary| async move {
            primary.delete(&b, &k).await
        })
        .await
    }

    async fn list(
        &self,
        next: &dyn Storage,
        bucket: &str,
        options: &ListOptions,
    ) -> Result<ListPage> {
        self.read(next, |s| s.list(bucket, options)).await
    }

    async fn copy(
        &self,
        _next: &dyn Storage,
        from_bucket: &str,
        from_key: &str,
        to_bucket: &str,
        to_key: &str,
    ) -> Result<ObjectMeta> {
        let names = [from_bucket, from_key, to_bucket, to_key].map(str::to_string);
        self.write(
            Target::object(to_bucket, to_key),
            move |primary| async move {
                let [fb, fk, tb, tk] = names;
                primary.copy(&fb, &fk, &tb, &tk).await
            },
        )
        .await
    }

    /// GET URLs fall back to the secondary's like reads. A PUT URL allows
    /// writes the layer does not see: its object is journaled as due when
    /// the URL expires (plus a second), and replicated then.
    async fn signed_url(
        &self,
        next: &dyn Storage,
        bucket: &str,
        key: &str,
        method: SignedUrlMethod,
        expires_in: Duration,
    ) -> Result<SignedUrl> {
        match method {
            SignedUrlMethod::Get => {
                self.read(next, |s| s.signed_url(bucket, key, method, expires_in))
                    .await
            }
            SignedUrlMethod::Put => {
                let target = Target::object(bucket, key);
                check_names(&target)?;
                let s = &self.shared;
                let after = i64::try_from(expires_in.as_millis())
                    .unwrap_or(i64::MAX)
                    .saturating_add(1_000);
                journal::record(
                    &*s.journal,
                    &s.config.journal_table,
                    &[target],
                    now_ms().saturating_add(after),
                )
                .await
                .map_err(journal_refused)?;
                next.signed_url(bucket, key, method, expires_in).await
            }
        }
    }

    /// A GET falls back to the secondary like reads (it can serve only the
    /// URLs it signed itself: those `signed_url` handed out while the
    /// primary was down, or all of them when both sides share
    /// `signing_secret` and `base_url`). A PUT goes to the primary only:
    /// its object was journaled when the URL was signed and is replicated
    /// once the URL expires.
    async fn fetch_signed(
        &self,
        next: &dyn Storage,
        method: SignedUrlMethod,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<Option<Bytes>> {
        match method {
            SignedUrlMethod::Get => {
                self.read(next, |s| s.fetch_signed(method, url, body.clone()))
                    .await
            }
            SignedUrlMethod::Put => next.fetch_signed(method, url, body).await,
        }
    }

    /// As [`StorageLayer::fetch_signed`]: a GET's check goes where a GET's
    /// read would, a PUT's to the primary.
    async fn verify_signed(
        &self,
        next: &dyn Storage,
        method: SignedUrlMethod,
        url: &str,
    ) -> Result<VerifiedUrl> {
        match method {
            SignedUrlMethod::Get => self.read(next, |s| s.verify_signed(method, url)).await,
            SignedUrlMethod::Put => next.verify_signed(method, url).await,
        }
    }

    async fn list_buckets(&self, next: &dyn Storage) -> Result<Vec<BucketInfo>> {
        self.read(next, |s| s.list_buckets()).await
    }

    async fn create_bucket(&self, _next: &dyn Storage, name: &str) -> Result<()> {
        let n = name.to_string();
        self.write(
            Target::Bucket(name.to_string()),
            move |primary| async move { primary.create_bucket(&n).await },
        )
        .await
    }

    async fn delete_bucket(&self, _next: &dyn Storage, name: &str) -> Result<()> {
        let n = name.to_string();
        self.write(
            Target::Bucket(name.to_string()),
            move |primary| async move { primary.delete_bucket(&n).await },
        )
        .await
    }
}
