//! storage-fs side by side with raw `tokio::fs`, `object_store`'s
//! `LocalFileSystem` and OpenDAL's `fs` service, in one run.
//!
//! ```sh
//! cargo bench -p truststream-bench-storage-fs            # full run
//! BENCH_REPS=3 cargo bench -p truststream-bench-storage-fs  # quicker
//! ```
//!
//! Every contender gets its own fresh directory on the same filesystem (the
//! system temp dir, or `BENCH_DIR`). Each row is run once to warm up, then
//! `BENCH_REPS` times (default 7), each round starting with the next
//! contender and each run after an untimed `sync(2)`; the table shows the
//! median and each contender's time relative to storage-fs with the same
//! durability (`x` > 1: storage-fs is faster).
//!
//! What each contender does per put (the work differs; that is the point of
//! the comparison, so it is stated):
//!
//! - `storage-fs fsync`: CRC32C of the content, temp file with the metadata
//!   in its extended attribute + fsync, bucket lock (mutex + flock),
//!   condition check against the current version's attribute, one rename,
//!   directory fsync, the presence test (is another store open?). Atomic
//!   and durable.
//! - `storage-fs`: the same with `fsync = false`: atomic, not durable.
//! - `storage-fs sidecar`: `fsync = false` with `xattr_metadata = false`:
//!   the metadata goes into the spare slot of a sidecar file instead (the
//!   layout of earlier versions, and the fallback).
//! - `storage-fs shared`: `fsync = false` with a second store open on the
//!   same root (as another process would have): every commit also bumps the
//!   shared commit counter, which a store alone with its buckets skips.
//! - `storage-fs fresh buffers`: `fsync = false` with
//!   `read_buffer_pool_bytes = 0`. The default store hands large reads
//!   buffers it pooled from earlier reads (no page faults, no zeroing);
//!   every other contender allocates fresh memory per read. This row reads
//!   under the same conditions as they do, so the 64 MiB get's gain from
//!   the pool and from the rest of the read path can be told apart.
//! - `tokio::fs durable`: temp file, `sync_all`, rename, directory fsync:
//!   atomic and durable, no checksum, no metadata.
//! - `tokio::fs`: `tokio::fs::write` to the final path: neither atomic nor
//!   durable, no checksum, no metadata.
//! - `object_store`: `LocalFileSystem::put` (temp file + rename, no fsync):
//!   atomic, not durable, no checksum, no metadata.
//! - `OpenDAL`: `Operator::write` on the `fs` service with an atomic write
//!   dir (temp file + `sync_all` + rename, no directory fsync): atomic, the
//!   content durable but not the rename.
//!
//! Gets read the whole object (storage-fs also verifies its CRC32C); lists
//! return 1,000 entries with size and modification time (storage-fs: from
//! its index; `warm` after its own writes, `cold` right after another
//! instance wrote, which forces a rebuild from the files' attributes).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use truststream_core_storage::{ListOptions, Storage, UploadOptions};
use truststream_storage_fs::{FsStorage, FsStorageConfig};

const SMALL: usize = 4 * 1024;
const COUNT: usize = 1000;
const LARGE: usize = 64 * 1024 * 1024;
const BUCKET: &str = "bench";

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone)]
enum Imp {
    Fs(Arc<FsStorage>),
    Raw { root: PathBuf, durable: bool },
    ObjectStore(Arc<object_store::local::LocalFileSystem>),
    OpenDal(opendal::Operator),
}

fn data(len: usize, seed: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| ((i * 31 + seed) % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn small_key(i: usize) -> String {
    format!("small/obj-{i:04}.bin")
}

async fn raw_put(root: &Path, key: &str, body: &Bytes, durable: bool) -> Res<()> {
    let path = root.join(key);
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    if !durable {
        tokio::fs::write(&path, body).await?;
        return Ok(());
    }
    use tokio::io::AsyncWriteExt;
    let tmp = path.with_extension("tmp");
    let mut f = tokio::fs::File::create(&tmp).await?;
    f.write_all(body).await?;
    f.sync_all().await?;
    drop(f);
    tokio::fs::rename(&tmp, &path).await?;
    if let Some(parent) = path.parent() {
        tokio::fs::File::open(parent).await?.sync_all().await?;
    }
    Ok(())
}

impl Imp {
    async fn put(&self, key: &str, body: Bytes) -> Res<()> {
        match self {
            Imp::Fs(s) => {
                s.upload(BUCKET, key, body, &UploadOptions::new()).await?;
            }
            Imp::Raw { root, durable } => raw_put(root, key, &body, *durable).await?,
            Imp::ObjectStore(s) => {
                s.put(&object_store::path::Path::from(key), body.into())
                    .await?;
            }
            Imp::OpenDal(op) => {
                op.write(key, body).await?;
            }
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Res<usize> {
        Ok(match self {
            Imp::Fs(s) => s.download(BUCKET, key).await?.len(),
            Imp::Raw { root, .. } => tokio::fs::read(root.join(key)).await?.len(),
            Imp::ObjectStore(s) => s
                .get(&object_store::path::Path::from(key))
                .await?
                .bytes()
                .await?
                .len(),
            Imp::OpenDal(op) => op.read(key).await?.len(),
        })
    }

    /// Lists `small/`: (entries, total size) so every contender reads sizes.
    async fn list(&self) -> Res<(usize, u64)> {
        Ok(match self {
            Imp::Fs(s) => {
                let page = s
                    .list(BUCKET, &ListOptions::new().prefix("small/").limit(1000))
                    .await?;
                (
                    page.objects.len(),
                    page.objects.iter().map(|o| o.size).sum(),
                )
            }
            Imp::Raw { root, .. } => {
                let mut rd = tokio::fs::read_dir(root.join("small")).await?;
                let mut n = 0;
                let mut total = 0;
                let mut names = Vec::new();
                while let Some(e) = rd.next_entry().await? {
                    let m = e.metadata().await?;
                    let _modified = m.modified()?;
                    total += m.len();
                    n += 1;
                    names.push(e.file_name());
                }
                names.sort();
                (n, total)
            }
            Imp::ObjectStore(s) => {
                let prefix = object_store::path::Path::from("small");
                let all: Vec<_> = s.list(Some(&prefix)).try_collect().await?;
                (all.len(), all.iter().map(|o| o.size).sum())
            }
            Imp::OpenDal(op) => {
                let all = op.list("small/").await?;
                let files: Vec<_> = all.iter().filter(|e| e.metadata().is_file()).collect();
                (
                    files.len(),
                    files.iter().map(|e| e.metadata().content_length()).sum(),
                )
            }
        })
    }
}

async fn fs_store(root: &Path, fsync: bool, xattr: bool) -> Res<Arc<FsStorage>> {
    fs_store_with(root, fsync, xattr, None).await
}

/// A store as [`fs_store`] makes, with `read_buffer_pool_bytes` set when
/// given (0: every large read gets fresh memory, as the other contenders'
/// reads do).
async fn fs_store_with(
    root: &Path,
    fsync: bool,
    xattr: bool,
    pool_bytes: Option<u64>,
) -> Res<Arc<FsStorage>> {
    let mut cfg = FsStorageConfig::new(root);
    cfg.fsync = fsync;
    cfg.xattr_metadata = xattr;
    if let Some(b) = pool_bytes {
        cfg.read_buffer_pool_bytes = b;
    }
    cfg.buckets = vec![BUCKET.into()];
    Ok(Arc::new(FsStorage::with_config(cfg).await?))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The rows of the table.
#[derive(Clone, Copy)]
enum Op {
    PutSmall,
    GetSmall,
    PutLarge,
    GetLarge,
    List,
}

impl Op {
    fn label(self) -> String {
        match self {
            Op::PutSmall => format!("put {COUNT} x 4 KiB"),
            Op::GetSmall => format!("get {COUNT} x 4 KiB"),
            Op::PutLarge => "put 1 x 64 MiB".into(),
            Op::GetLarge => "get 1 x 64 MiB".into(),
            Op::List => format!("list {COUNT}"),
        }
    }
}

/// One timed run of `op` on `imp`.
async fn run(imp: &Imp, op: Op, bodies: &[Bytes], large: &Bytes) -> Res<Duration> {
    // Untimed: write back what earlier runs left dirty, so the kernel's
    // background writeback of one contender's pages does not land in another
    // contender's timing.
    tokio::task::spawn_blocking(rustix::fs::sync).await?;
    let start = Instant::now();
    match op {
        Op::PutSmall => {
            for (i, b) in bodies.iter().enumerate() {
                imp.put(&small_key(i), b.clone()).await?;
            }
        }
        Op::GetSmall => {
            for i in 0..COUNT {
                assert_eq!(imp.get(&small_key(i)).await?, SMALL);
            }
        }
        Op::PutLarge => imp.put("large.bin", large.clone()).await?,
        Op::GetLarge => assert_eq!(imp.get("large.bin").await?, LARGE),
        Op::List => {
            let (n, total) = imp.list().await?;
            assert_eq!((n, total), (COUNT, (COUNT * SMALL) as u64));
        }
    }
    Ok(start.elapsed())
}

/// Runs `op` on every contender in turn, `reps` rounds after a warm-up
/// round, so load changes on the machine hit every contender alike; each
/// round starts with the next contender, so none always runs right after the
/// same neighbour (whose dirty pages the kernel may still be writing back).
/// The median per contender.
async fn row<'a>(
    contenders: &'a [(&'a str, Imp)],
    op: Op,
    reps: usize,
    bodies: &[Bytes],
    large: &Bytes,
) -> Res<Vec<(&'a str, Duration)>> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    let n = contenders.len();
    for round in 0..=reps {
        for i in (0..n).map(|k| (k + round) % n) {
            let d = run(&contenders[i].1, op, bodies, large).await?;
            if round > 0 {
                times[i].push(d);
            }
        }
    }
    Ok(contenders
        .iter()
        .zip(times)
        .map(|((name, _), t)| (*name, median(t)))
        .collect())
}

fn fmt(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let base = std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let tmp = tempfile::tempdir_in(&base)?;
    let dir = |name: &str| -> Res<PathBuf> {
        let p = tmp.path().join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    };

    let fs_sync = fs_store(&dir("fs-sync")?, true, true).await?;
    let fs_plain_root = dir("fs")?;
    let fs_plain = fs_store(&fs_plain_root, false, true).await?;
    // A store with a second store (as another process would) open on its
    // root: its commits also bump the shared counter.
    let fs_shared_root = dir("fs-shared")?;
    let fs_shared = fs_store(&fs_shared_root, false, true).await?;
    let _fs_shared_peer = fs_store(&fs_shared_root, false, true).await?;
    let fs_sidecar = fs_store(&dir("fs-sidecar")?, false, false).await?;
    // The default store reuses pooled read buffers between large gets; the
    // other contenders fault fresh pages every time. This one gets fresh
    // memory per read too, so its row compares the same buffer conditions.
    let fs_fresh = fs_store_with(&dir("fs-fresh")?, false, true, Some(0)).await?;
    let os = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir(
        "object_store",
    )?)?);
    let odal_root = dir("opendal")?;
    let odal = opendal::Operator::new(
        opendal::services::Fs::default()
            .root(&odal_root.to_string_lossy())
            .atomic_write_dir(&dir("opendal-tmp")?.to_string_lossy()),
    )?;

    let contenders: Vec<(&str, Imp)> = vec![
        ("storage-fs fsync", Imp::Fs(fs_sync)),
        (
            "tokio::fs durable",
            Imp::Raw {
                root: dir("raw-durable")?,
                durable: true,
            },
        ),
        ("OpenDAL", Imp::OpenDal(odal)),
        ("storage-fs", Imp::Fs(fs_plain.clone())),
        ("storage-fs sidecar", Imp::Fs(fs_sidecar)),
        ("storage-fs shared", Imp::Fs(fs_shared)),
        ("storage-fs fresh buffers", Imp::Fs(fs_fresh)),
        (
            "tokio::fs",
            Imp::Raw {
                root: dir("raw")?,
                durable: false,
            },
        ),
        ("object_store", Imp::ObjectStore(os)),
    ];

    // BENCH_ONLY=name,name keeps some contenders (profiling).
    let only = std::env::var("BENCH_ONLY").ok();
    let contenders: Vec<(&str, Imp)> = contenders
        .into_iter()
        .filter(|(n, _)| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|x| x == *n))
        })
        .collect();
    let bodies: Vec<Bytes> = (0..COUNT).map(|i| data(SMALL, i)).collect();
    let large = data(LARGE, 7);
    let large_reps = reps.min(5);
    println!(
        "storage-fs benchmark: {COUNT} x {} KiB, 1 x {} MiB, list of {COUNT}; median of {reps} ({large_reps} for 64 MiB) after a warm-up",
        SMALL / 1024,
        LARGE / (1024 * 1024)
    );
    let mut rows: Vec<(String, Vec<(&str, Duration)>)> = Vec::new();
    // BENCH_ROWS=put-large,get-large keeps some rows (profiling; gets and
    // lists read what the puts wrote). `list` includes the cold listing.
    let rows_wanted = std::env::var("BENCH_ROWS").ok();
    let wanted = |name: &str| {
        rows_wanted
            .as_deref()
            .is_none_or(|w| w.split(',').any(|x| x == name))
    };
    for (op, name) in [
        (Op::PutSmall, "put-small"),
        (Op::GetSmall, "get-small"),
        (Op::PutLarge, "put-large"),
        (Op::GetLarge, "get-large"),
        (Op::List, "list"),
    ] {
        if !wanted(name) {
            continue;
        }
        let n = match op {
            Op::PutLarge | Op::GetLarge => large_reps,
            _ => reps,
        };
        rows.push((op.label(), row(&contenders, op, n, &bodies, &large).await?));
    }
    if !wanted("list") {
        return print_table(&rows);
    }
    let mut r = rows.pop().map(|(_, r)| r).unwrap_or_default();
    let reader = Imp::Fs(fs_plain);
    // Opened only now, so the rows above ran with the store alone.
    let fs_other = fs_store(&fs_plain_root, false, true).await?;
    let mut cold = Vec::new();
    for _ in 0..=reps {
        // Another instance (as another process would) writes first, untimed:
        // the reader's index is stale and the listing rebuilds it.
        fs_other
            .upload(
                BUCKET,
                "other/touch",
                Bytes::from_static(b"x"),
                &UploadOptions::new(),
            )
            .await?;
        let start = Instant::now();
        let (n, _) = reader.list().await?;
        assert_eq!(n, COUNT);
        cold.push(start.elapsed());
    }
    cold.remove(0);
    r.push(("storage-fs cold", median(cold)));
    rows.push((format!("list {COUNT}"), r));

    print_table(&rows)
}

/// Prints the table: storage-fs with fsync is compared with the durable
/// contenders, storage-fs without with the rest.
fn print_table(rows: &[(String, Vec<(&str, Duration)>)]) -> Res<()> {
    println!();
    println!("| operation | contender | median | storage-fs is faster by |");
    println!("|---|---|---:|---:|");
    for (op, r) in rows {
        let find = |n: &str| r.iter().find(|(name, _)| *name == n).map(|(_, d)| *d);
        for (name, d) in r {
            let reference = match *name {
                "tokio::fs durable" | "OpenDAL" => find("storage-fs fsync"),
                "tokio::fs" | "object_store" | "storage-fs sidecar" | "storage-fs shared" => {
                    find("storage-fs")
                }
                _ => None,
            };
            let ratio = reference
                .map(|s| format!("{:.2}x", d.as_secs_f64() / s.as_secs_f64()))
                .unwrap_or_else(|| "-".into());
            println!("| {op} | {name} | {} | {ratio} |", fmt(*d));
        }
    }
    Ok(())
}
