//! The storage composite: the storage conformance suite through it (memory
//! primary and secondary; fs primary and secondary with a SQLite journal),
//! replication of every kind of write (the secondary ends equal to the
//! primary), a write under way left alone by the replicator, reads falling
//! back while the primary is stopped mid-load and the catch-up after it,
//! and the layer built from configuration.

#![allow(clippy::unwrap_used)] // test helpers, not library code

#[path = "support/snapshot.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use truststream_conformance::{factory, storage};
use truststream_core::{BoxFuture, Error, ErrorKind, HealthStatus, Result};
use truststream_core_db::Database;
use truststream_core_storage::{ListOptions, SignedUrlMethod, Storage, StorageExt, UploadOptions};
use truststream_db_memory::MemoryDatabase;
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_layer::{
    around_storage, Access, Around, Interface, LayerDeps, LayerRegistry, LayeredStorage, Next, Op,
    ProviderBuilder,
};
use truststream_layer_composite::{StorageCompositeConfig, StorageCompositeLayer};
use truststream_storage_fs::{FsStorage, FsStorageConfig};
use truststream_storage_memory::MemoryStorage;

use support::snapshot;

const BUCKET: &str = "conformance";

type Composite = Arc<LayeredStorage<StorageCompositeLayer>>;

fn config() -> StorageCompositeConfig {
    let mut c = StorageCompositeConfig::new("memory", "memory");
    c.interval = Duration::from_millis(20);
    c
}

/// A composite over memory storages with a memory journal (no background
/// passes: the tests drive replication).
async fn memory_composite() -> (Composite, Arc<MemoryStorage>, Arc<MemoryStorage>) {
    let primary = Arc::new(MemoryStorage::new());
    let secondary = Arc::new(MemoryStorage::new());
    let mut c = config();
    c.interval = Duration::from_secs(3600);
    let store = StorageCompositeLayer::wrap(
        primary.clone(),
        secondary.clone(),
        Arc::new(MemoryDatabase::new()),
        &c,
    )
    .await
    .unwrap();
    (store, primary, secondary)
}

/// Prints `report` and asserts that every case of the storage suite ran
/// and passed (none failed, none skipped).
fn assert_whole_suite_passed(report: &truststream_conformance::Report) {
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(report.skipped_cases(), Vec::<&str>::new());
    assert_eq!(
        report.passed(),
        storage::cases().len(),
        "{}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_suite_passes_through_the_composite_over_memory() {
    let report = storage::run(
        "memory+composite",
        factory(|| async {
            let primary = Arc::new(MemoryStorage::new());
            let secondary = Arc::new(MemoryStorage::new());
            for s in [&primary, &secondary] {
                s.create_bucket(BUCKET).await.map_err(|e| e.to_string())?;
            }
            let store = StorageCompositeLayer::wrap(
                primary.clone(),
                secondary,
                Arc::new(MemoryDatabase::new()),
                &config(),
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(storage::StorageFixture::new(store, BUCKET).with_url_client(
                move |method, url, body| {
                    let primary = primary.clone();
                    async move { primary.fetch_signed(method, &url, body).await }
                },
            ))
        }),
        None,
    )
    .await;
    assert_whole_suite_passed(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_suite_passes_through_the_composite_over_fs() {
    let report = storage::run(
        "fs+composite",
        factory(|| async {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let open = |name: &str| {
                let mut cfg = FsStorageConfig::new(dir.path().join(name));
                cfg.buckets = vec![BUCKET.into()];
                FsStorage::with_config(cfg)
            };
            let primary = Arc::new(open("primary").await.map_err(|e| e.to_string())?);
            let secondary = Arc::new(open("secondary").await.map_err(|e| e.to_string())?);
            let journal = SqliteDatabase::open(SqliteConfig::file(dir.path().join("j.db")))
                .await
                .map_err(|e| e.to_string())?;
            let store = StorageCompositeLayer::wrap(
                primary.clone(),
                secondary,
                Arc::new(journal),
                &config(),
            )
            .await
            .map_err(|e| e.to_string())?;
            // The directory lives as long as the fixture does.
            let keep = Arc::new(dir);
            Ok(storage::StorageFixture::new(store, BUCKET).with_url_client(
                move |method, url, body| {
                    let primary = primary.clone();
                    let _keep = keep.clone();
                    async move { primary.fetch_signed(method, &url, body).await }
                },
            ))
        }),
        None,
    )
    .await;
    assert_whole_suite_passed(&report);
}

fn opts(ct: &str, tag: &str) -> UploadOptions {
    UploadOptions::new()
        .content_type(ct)
        .metadata("tag", tag)
        .public(tag == "public")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_overwrites_deletes_copies_and_buckets_converge() {
    let (store, primary, secondary) = memory_composite().await;
    let layer = store.layer();
    store.create_bucket("aaa").await.unwrap();
    store.create_bucket("bbb").await.unwrap();
    store.create_bucket("gone").await.unwrap();
    for i in 0..20 {
        let key = format!("dir/k{i:02}");
        store
            .upload(
                "aaa",
                &key,
                Bytes::from(format!("v1 {i}")),
                &opts("text/plain", "one"),
            )
            .await
            .unwrap();
    }
    // Overwrites, with other options.
    for i in 0..20 {
        if i % 3 == 0 {
            let key = format!("dir/k{i:02}");
            store
                .upload(
                    "aaa",
                    &key,
                    Bytes::from(format!("v2 {i}")),
                    &opts("text/csv", "public"),
                )
                .await
                .unwrap();
        }
    }
    // Some replicated now, the rest with what follows.
    layer.replicate_once().await.unwrap();
    // Deletes, one of a missing key.
    for i in [1, 2, 5, 7] {
        store.delete("aaa", &format!("dir/k{i:02}")).await.unwrap();
    }
    store.delete("aaa", "never-there").await.unwrap();
    // A copy across buckets, a move (copy then delete), a copy over an
    // existing object, a stream upload.
    store.copy("aaa", "dir/k03", "bbb", "copied").await.unwrap();
    store
        .copy("aaa", "dir/k04", "aaa", "moved/k04")
        .await
        .unwrap();
    store.delete("aaa", "dir/k04").await.unwrap();
    store
        .copy("aaa", "dir/k06", "aaa", "dir/k08")
        .await
        .unwrap();
    let chunks: Vec<Result<Bytes>> = (0..4)
        .map(|i| Ok(Bytes::from(vec![i as u8; 1000])))
        .collect();
    store
        .upload_stream(
            "bbb",
            "streamed",
            Box::pin(futures::stream::iter(chunks)),
            &opts("application/octet-stream", "s"),
        )
        .await
        .unwrap();
    // A bucket made, filled, emptied and deleted.
    store
        .upload("gone", "x", Bytes::from_static(b"x"), &UploadOptions::new())
        .await
        .unwrap();
    store.delete("gone", "x").await.unwrap();
    store.delete_bucket("gone").await.unwrap();
    // A write the primary refuses (a failed condition): its entry is
    // harmless.
    let refused = store
        .upload(
            "aaa",
            "dir/k00",
            Bytes::from_static(b"never"),
            &UploadOptions::new().condition(truststream_core_storage::WriteCondition::IfNotExists),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict);

    assert!(layer.lag().await.unwrap().entries > 0);
    layer.catch_up().await.unwrap();
    assert_eq!(layer.lag().await.unwrap().entries, 0);

    let p = snapshot(&*primary).await;
    let s = snapshot(&*secondary).await;
    assert_eq!(p.buckets, ["aaa", "bbb"]);
    assert_eq!(s, p);
    let moved = &s.objects[&("aaa".to_string(), "moved/k04".to_string())];
    assert_eq!(moved.data, b"v1 4");
    assert_eq!(
        moved.metadata,
        BTreeMap::from([("tag".to_string(), "one".to_string())])
    );
    let k00 = &s.objects[&("aaa".to_string(), "dir/k00".to_string())];
    assert_eq!((k00.data.as_slice(), k00.public), (&b"v2 0"[..], true));
    assert_eq!(k00.content_type.as_deref(), Some("text/csv"));
    assert!(!s
        .objects
        .contains_key(&("aaa".to_string(), "dir/k04".to_string())));
    assert_eq!(
        s.objects[&("bbb".to_string(), "streamed".to_string())]
            .data
            .len(),
        4000
    );
    assert!(layer.stats().applied > 0);
    assert_eq!(layer.stats().failed_passes, 0);
    assert_eq!(store.health().await.status, HealthStatus::Healthy);
}

/// Objects written to the primary before the layer (and a stale object on
/// the secondary) converge after `resync_bucket`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_bucket_brings_a_prefilled_primary_over() {
    let (store, primary, secondary) = memory_composite().await;
    primary.create_bucket("old").await.unwrap();
    for i in 0..30 {
        primary
            .upload(
                "old",
                &format!("k{i}"),
                Bytes::from(vec![i as u8; 10]),
                &UploadOptions::new(),
            )
            .await
            .unwrap();
    }
    secondary.create_bucket("old").await.unwrap();
    secondary
        .upload(
            "old",
            "stale",
            Bytes::from_static(b"stale"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    store.layer().resync_bucket("old").await.unwrap();
    assert_eq!(store.layer().lag().await.unwrap().entries, 32);
    store.layer().catch_up().await.unwrap();
    assert_eq!(snapshot(&*secondary).await, snapshot(&*primary).await);
}

/// Holds uploads to the primary until released.
struct Gate(tokio::sync::Semaphore);

impl Around for Gate {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if op.method == "upload" {
                let _permit = self.0.acquire().await.unwrap();
            }
            next.run().await
        })
    }
}

/// While a write is under way its entry is due but left alone: a pass then
/// would copy the object from before the write and drop the entry. After
/// the write, the new content is what reaches the secondary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_way_is_not_replicated_half_way() {
    let memory = Arc::new(MemoryStorage::new());
    memory.create_bucket("bbb").await.unwrap();
    memory
        .upload(
            "bbb",
            "k",
            Bytes::from_static(b"before"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    let gate = Arc::new(Gate(tokio::sync::Semaphore::new(0)));
    let primary = around_storage(memory.clone(), gate.clone());
    let secondary = Arc::new(MemoryStorage::new());
    let mut c = config();
    c.interval = Duration::from_secs(3600);
    let store = StorageCompositeLayer::wrap(
        primary,
        secondary.clone(),
        Arc::new(MemoryDatabase::new()),
        &c,
    )
    .await
    .unwrap();
    let write = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .upload(
                    "bbb",
                    "k",
                    Bytes::from_static(b"after"),
                    &UploadOptions::new(),
                )
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.layer().lag().await.unwrap().entries == 0 {
        assert!(Instant::now() < deadline, "the write's entry never showed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.layer().replicate_once().await.unwrap(), 0);
    assert_eq!(store.layer().lag().await.unwrap().entries, 1);
    assert!(!secondary.exists("bbb", "k").await.unwrap());
    gate.0.add_permits(1);
    write.await.unwrap().unwrap();
    store.layer().catch_up().await.unwrap();
    assert_eq!(&secondary.download("bbb", "k").await.unwrap()[..], b"after");
    assert_eq!(store.layer().lag().await.unwrap().entries, 0);
}

/// Answers every call with `Unavailable` while `down` is set: a stopped
/// primary.
#[derive(Default)]
struct Switch {
    down: AtomicBool,
}

impl Around for Switch {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::unavailable("primary stopped (test)"));
            }
            next.run().await
        })
    }
}

/// Refuses writes (`Unavailable`) while `down` is set; reads and health
/// answer: a secondary that takes no copies but looks healthy.
#[derive(Default)]
struct RefuseWrites {
    down: AtomicBool,
}

impl Around for RefuseWrites {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if op.access == Access::Write && self.down.load(Ordering::SeqCst) {
                return Err(Error::unavailable("secondary refuses writes (test)"));
            }
            next.run().await
        })
    }
}

#[derive(Default)]
struct Tally {
    acked: Vec<String>,
    refused: Vec<ErrorKind>,
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_lag_zero(store: &Composite) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.layer().lag().await.unwrap().entries != 0 {
        assert!(Instant::now() < deadline, "replication did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The primary stopped mid-load (fs primary behind a switch, fs secondary,
/// SQLite journal, the background replicator running): writes fail with
/// `Unavailable`, reads of what was replicated keep answering from the
/// secondary, health is degraded; once the primary is back, writes resume,
/// the secondary catches up, and the object sets are equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_stopped_primary_and_the_secondary_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let fs_primary = Arc::new(FsStorage::open(dir.path().join("primary")).await.unwrap());
    let fs_secondary = Arc::new(FsStorage::open(dir.path().join("secondary")).await.unwrap());
    let switch = Arc::new(Switch::default());
    let primary = around_storage(fs_primary.clone(), switch.clone());
    let journal = SqliteDatabase::open(SqliteConfig::file(dir.path().join("journal.db")))
        .await
        .unwrap();
    let store =
        StorageCompositeLayer::wrap(primary, fs_secondary.clone(), Arc::new(journal), &config())
            .await
            .unwrap();
    store.create_bucket("load").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let writer = {
        let (store, stop, tally) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&tally));
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let key = format!("w{i:06}");
                let r = store
                    .upload(
                        "load",
                        &key,
                        Bytes::from(format!("body of {key}")),
                        &UploadOptions::new(),
                    )
                    .await;
                {
                    let mut t = tally.lock().unwrap();
                    match r {
                        Ok(_) => t.acked.push(key),
                        Err(e) => t.refused.push(e.kind()),
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    wait_for("50 acknowledged writes", || {
        tally.lock().unwrap().acked.len() >= 50
    })
    .await;
    // Replicated while the load goes on.
    let replicated: Vec<String> = tally.lock().unwrap().acked.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    for key in &replicated {
        while !fs_secondary.exists("load", key).await.unwrap() {
            assert!(Instant::now() < deadline, "{key} never replicated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Stopped mid-load.
    switch.down.store(true, Ordering::SeqCst);
    let refused_before = tally.lock().unwrap().refused.len();
    wait_for("writes refused", || {
        tally.lock().unwrap().refused.len() >= refused_before + 5
    })
    .await;
    for key in replicated.iter().step_by(7) {
        let body = store.download("load", key).await.unwrap();
        assert_eq!(body, Bytes::from(format!("body of {key}")));
        let meta = store.get_metadata("load", key).await.unwrap();
        assert_eq!(meta.size, body.len() as u64);
    }
    let page = store
        .list("load", &ListOptions::new().limit(10))
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 10);
    assert!(store
        .list_buckets()
        .await
        .unwrap()
        .iter()
        .any(|b| b.name == "load"));
    let url = store
        .signed_url(
            "load",
            &replicated[0],
            SignedUrlMethod::Get,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        fs_secondary
            .fetch_signed(SignedUrlMethod::Get, &url.url, None)
            .await
            .unwrap(),
        Some(Bytes::from(format!("body of {}", replicated[0])))
    );
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    assert!(health
        .message
        .unwrap_or_default()
        .contains("primary unreachable"));
    assert!(store.layer().stats().read_fallbacks >= 5);

    // Back.
    switch.down.store(false, Ordering::SeqCst);
    let acked_before = tally.lock().unwrap().acked.len();
    wait_for("writes to resume", || {
        tally.lock().unwrap().acked.len() >= acked_before + 30
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    wait_for_lag_zero(&store).await;

    let t = std::mem::take(&mut *tally.lock().unwrap());
    assert!(
        t.refused.iter().all(|k| *k == ErrorKind::Unavailable),
        "{:?}",
        t.refused
    );
    let p = snapshot(&*fs_primary).await;
    let s = snapshot(&*fs_secondary).await;
    assert_eq!(
        p.objects.len(),
        t.acked.len(),
        "only acknowledged writes are on the primary"
    );
    for key in &t.acked {
        assert!(
            s.objects.contains_key(&("load".to_string(), key.clone())),
            "{key} lost"
        );
    }
    assert_eq!(s, p);
    assert_eq!(store.health().await.status, HealthStatus::Healthy);
}

/// Builds `memory` providers, keeping each storage built.
fn deps(built: Arc<Mutex<Vec<Arc<MemoryStorage>>>>) -> LayerDeps {
    let storage: ProviderBuilder<dyn Storage> = Arc::new(move |kind: String, _settings| {
        let built = Arc::clone(&built);
        Box::pin(async move {
            assert_eq!(kind, "memory");
            let s = Arc::new(MemoryStorage::new());
            built.lock().unwrap().push(s.clone());
            Ok(s as Arc<dyn Storage>)
        })
    });
    let database: ProviderBuilder<dyn Database> = Arc::new(|kind: String, _settings| {
        Box::pin(async move {
            assert_eq!(kind, "memory");
            Ok(Arc::new(MemoryDatabase::new()) as Arc<dyn Database>)
        })
    });
    LayerDeps {
        database: Some(database),
        storage: Some(storage),
    }
}

/// `[<profile>.storage.layers] composite = { secondary, journal, ... }`
/// through the layer registry, as the runtime builds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_from_configuration_over_storage() {
    let mut registry = LayerRegistry::new();
    truststream_layer_composite::register(&mut registry);
    let built = Arc::new(Mutex::new(Vec::new()));
    let deps = deps(Arc::clone(&built));
    let layers = json!({"composite": {
        "secondary": {"type": "memory"}, "journal": {"type": "memory"}, "interval_ms": 10
    }});
    let stack = registry
        .stack(Interface::Storage, layers.as_object().unwrap(), &deps)
        .unwrap();
    assert_eq!(
        stack.describe(),
        ["composite(secondary=memory, journal=memory, journal_table=truststream_storage_journal, \
          interval_ms=10, batch=200, lag_degraded_s=30)"]
    );
    let primary = Arc::new(MemoryStorage::new());
    let store = stack.wrap_storage(primary.clone()).await.unwrap();
    store.create_bucket("bbb").await.unwrap();
    store
        .upload("bbb", "k", Bytes::from_static(b"v"), &UploadOptions::new())
        .await
        .unwrap();
    let secondary = built.lock().unwrap()[0].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !secondary.exists("bbb", "k").await.unwrap_or(false) {
        assert!(Instant::now() < deadline, "never replicated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Settings without a journal are the database composite's: over
    // storage, the missing key is named.
    let db_style = json!({"composite": {"secondary": {"type": "memory"}}});
    let stack = registry
        .stack(Interface::Storage, db_style.as_object().unwrap(), &deps)
        .unwrap();
    let e = stack
        .wrap_storage(Arc::new(MemoryStorage::new()))
        .await
        .err()
        .expect("refused without a journal");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("journal: required"), "{e}");
    // A journal over a database is refused when the stack is built.
    let e = registry
        .stack(Interface::Database, layers.as_object().unwrap(), &deps)
        .expect_err("refused");
    assert!(
        e.message().contains("does not apply to the database"),
        "{e}"
    );
    // A typo is named.
    let typo = json!({"composite": {
        "secondary": {"type": "memory"}, "journal": {"type": "memory"}, "batchh": 1
    }});
    let e = registry
        .stack(Interface::Storage, typo.as_object().unwrap(), &deps)
        .expect_err("refused");
    assert!(
        e.message().contains("storage.layers.composite") && e.message().contains("batchh"),
        "{e}"
    );
}

/// A journal that does not answer fails the write before the primary sees
/// it; a secondary that does not answer leaves the entries waiting, and
/// once the oldest is older than `lag_degraded_s` health is degraded and
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_down_fails_writes_and_lag_degrades_health() {
    let primary = Arc::new(MemoryStorage::new());
    let secondary = Arc::new(MemoryStorage::new());
    let secondary_switch = Arc::new(RefuseWrites::default());
    let journal_switch = Arc::new(Switch::default());
    let journal =
        truststream_layer::around_database(Arc::new(MemoryDatabase::new()), journal_switch.clone());
    let mut c = config();
    c.lag_degraded = Duration::from_secs(1);
    let store = StorageCompositeLayer::wrap(
        primary.clone(),
        around_storage(secondary.clone(), secondary_switch.clone()),
        journal,
        &c,
    )
    .await
    .unwrap();
    store.create_bucket("bbb").await.unwrap();

    journal_switch.down.store(true, Ordering::SeqCst);
    let e = store
        .upload("bbb", "k", Bytes::from_static(b"v"), &UploadOptions::new())
        .await
        .expect_err("no journal, no write");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("journal"), "{e}");
    assert!(!primary.exists("bbb", "k").await.unwrap());
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    journal_switch.down.store(false, Ordering::SeqCst);

    secondary_switch.down.store(true, Ordering::SeqCst);
    store
        .upload("bbb", "k", Bytes::from_static(b"v"), &UploadOptions::new())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = store.health().await;
        let message = health.message.unwrap_or_default();
        if health.status == HealthStatus::Degraded {
            assert!(message.contains("replication lag"), "{message}");
            break;
        }
        assert!(Instant::now() < deadline, "never degraded: {message}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.layer().stats().failed_passes > 0);
    secondary_switch.down.store(false, Ordering::SeqCst);
    wait_for_lag_zero(&store).await;
    assert_eq!(snapshot(&*secondary).await, snapshot(&*primary).await);
    assert_eq!(store.health().await.status, HealthStatus::Healthy);
}

/// Answers every write with an error of kind `kind` (reads pass): a
/// journal database that refuses its inserts for a reason of its own.
struct RefuseWritesWith {
    kind: ErrorKind,
}

impl Around for RefuseWritesWith {
    fn around<'a>(&'a self, op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if op.access == Access::Write {
                return Err(Error::new(
                    self.kind,
                    "journal table /srv/secret/journal.db refused (test)",
                ));
            }
            next.run().await
        })
    }
}

/// A journal that refuses a write's entry for a reason that is not
/// transient fails the write as `Internal`: its `InvalidInput`,
/// `NotFound` or `Conflict` is about the server's journal, not the
/// caller's upload (serve would answer 400, 404 or 409 and show a 400's
/// message to the client). A transient refusal keeps its kind (the write
/// may be retried). Either way the primary never sees the write, and the
/// journal's error is kept as the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_refusal_that_is_not_transient_fails_the_write_as_internal() {
    let cases = [
        (ErrorKind::InvalidInput, ErrorKind::Internal),
        (ErrorKind::NotFound, ErrorKind::Internal),
        (ErrorKind::Conflict, ErrorKind::Internal),
        (ErrorKind::PermissionDenied, ErrorKind::Internal),
        (ErrorKind::Timeout, ErrorKind::Timeout),
        (ErrorKind::RateLimited, ErrorKind::RateLimited),
    ];
    for (refused, expected) in cases {
        let primary = Arc::new(MemoryStorage::new());
        primary.create_bucket("bbb").await.expect("bucket");
        let journal = truststream_layer::around_database(
            Arc::new(MemoryDatabase::new()),
            Arc::new(RefuseWritesWith { kind: refused }),
        );
        let store = StorageCompositeLayer::wrap(
            primary.clone(),
            Arc::new(MemoryStorage::new()),
            journal,
            &config(),
        )
        .await
        .expect("wrap: creating the table is not refused");
        let e = store
            .upload("bbb", "k", Bytes::from_static(b"v"), &UploadOptions::new())
            .await
            .expect_err("no journal entry, no write");
        assert_eq!(e.kind(), expected, "journal refused with {refused}: {e}");
        assert!(e.message().contains("journal"), "{e}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the journal's error is kept as the source: {e:?}"
        );
        assert!(!primary.exists("bbb", "k").await.expect("exists"));
        // A signed upload URL is journaled the same way, and refused alike.
        let e = store
            .signed_url("bbb", "k", SignedUrlMethod::Put, Duration::from_secs(60))
            .await
            .expect_err("no journal entry, no signed upload URL");
        assert_eq!(
            e.kind(),
            expected,
            "signed upload, journal refused with {refused}: {e}"
        );
        assert!(e.message().contains("journal"), "{e}");
    }
}

/// A signed upload URL allows a write the layer does not see: the object
/// is journaled as due when the URL expires, and replicated then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_upload_is_replicated_after_its_url_expires() {
    let (store, primary, secondary) = memory_composite().await;
    store.create_bucket("bbb").await.unwrap();
    let url = store
        .signed_url("bbb", "up", SignedUrlMethod::Put, Duration::from_secs(1))
        .await
        .unwrap();
    primary
        .fetch_signed(
            SignedUrlMethod::Put,
            &url.url,
            Some(Bytes::from_static(b"direct")),
        )
        .await
        .unwrap();
    // Not due yet: the bucket is replicated, the object waits.
    store.layer().catch_up().await.unwrap();
    assert!(!secondary.exists("bbb", "up").await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !secondary.exists("bbb", "up").await.unwrap() {
        assert!(Instant::now() < deadline, "never replicated");
        tokio::time::sleep(Duration::from_millis(200)).await;
        store.layer().catch_up().await.unwrap();
    }
    assert_eq!(
        &secondary.download("bbb", "up").await.unwrap()[..],
        b"direct"
    );
}

/// A bucket name or key every provider refuses is refused before it is
/// journaled: nothing waits in the journal for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_are_refused_before_the_journal() {
    let (store, _primary, _secondary) = memory_composite().await;
    store.create_bucket("bbb").await.unwrap();
    store.layer().catch_up().await.unwrap();
    let bad = [
        store.create_bucket("NO").await,
        store
            .upload("bbb", "", Bytes::from_static(b"x"), &UploadOptions::new())
            .await
            .map(|_| ()),
        store.delete("x", "k").await,
        store.copy("bbb", "k", "bbb", "../up").await.map(|_| ()),
    ];
    for r in bad {
        assert_eq!(r.expect_err("refused").kind(), ErrorKind::InvalidInput);
    }
    assert_eq!(store.layer().lag().await.unwrap().entries, 0);
}

/// A signed upload URL for a name every provider refuses is refused before
/// its object is journaled: its entry (due when the URL expires) could
/// never be applied, and would fail every pass from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_upload_url_for_an_invalid_name_journals_nothing() {
    let (store, _primary, _secondary) = memory_composite().await;
    store.create_bucket("bbb").await.expect("bucket");
    store.layer().catch_up().await.expect("catch up");
    for (bucket, key) in [("bbb", "../up"), ("bbb", ""), ("NO", "k")] {
        let e = store
            .signed_url(bucket, key, SignedUrlMethod::Put, Duration::from_secs(60))
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bucket}/{key}: {e}");
    }
    // Not due yet, so the lag would not show them: the table must be empty.
    let entries = store
        .layer()
        .journal()
        .read(
            truststream_layer_composite::DEFAULT_JOURNAL_TABLE,
            &truststream_core_db::Query::new(),
        )
        .await
        .expect("read the journal");
    assert!(entries.is_empty(), "{entries:?}");
}

/// An object the secondary refuses (too large for it) stays in the journal
/// and fails each pass that meets it, but never holds back the entries
/// after it: passes go round the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_secondary_refuses_does_not_hold_back_the_rest() {
    let primary = Arc::new(MemoryStorage::new());
    let secondary = Arc::new(
        MemoryStorage::with_config(truststream_storage_memory::MemoryStorageConfig {
            max_object_size: Some(100),
            ..Default::default()
        })
        .unwrap(),
    );
    let mut c = config();
    c.interval = Duration::from_secs(3600);
    c.batch = 2;
    let store = StorageCompositeLayer::wrap(
        primary.clone(),
        secondary.clone(),
        Arc::new(MemoryDatabase::new()),
        &c,
    )
    .await
    .unwrap();
    store.create_bucket("bbb").await.unwrap();
    for i in 0..3 {
        let key = format!("huge{i}");
        store
            .upload(
                "bbb",
                &key,
                Bytes::from(vec![0; 1000]),
                &UploadOptions::new(),
            )
            .await
            .unwrap();
    }
    for i in 0..9 {
        let key = format!("small{i}");
        store
            .upload("bbb", &key, Bytes::from(vec![1; 10]), &UploadOptions::new())
            .await
            .unwrap();
    }
    let e = store
        .layer()
        .catch_up()
        .await
        .expect_err("the huge ones fail");
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    // Background-like passes until the small ones are all over.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = store.layer().replicate_once().await;
        let mut all = true;
        for i in 0..9 {
            all &= secondary.exists("bbb", &format!("small{i}")).await.unwrap();
        }
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the small objects were held back"
        );
    }
    assert_eq!(store.layer().lag().await.unwrap().entries, 3);
    assert!(store.layer().stats().failed_passes > 0);
}
