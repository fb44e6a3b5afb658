//! A writer process killed with SIGKILL in the middle of writes leaves the
//! old object or the new one, never a torn file, and its leftovers are never
//! listed and are removed by the next store to open the root.
//!
//! The test re-runs its own binary as the writer (selected by an environment
//! variable), kills it at a random moment, and checks the object from a fresh
//! store instance, several times.

#![allow(clippy::unwrap_used)] // test code

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use truststream_core_storage::{ListOptions, Storage, UploadOptions};
use truststream_storage_fs::{FsStorage, FsStorageConfig};

const CHILD_ROOT: &str = "TS_STORAGE_FS_CRASH_WRITER_ROOT";
const TEST_NAME: &str = "a_killed_writer_leaves_the_old_or_the_new_object";
const ROUNDS: usize = 6;

/// Version `i` of the object: one repeated byte, a length that differs
/// between versions, so a mix of two versions cannot pass the check.
fn version(i: usize) -> Bytes {
    let len = 4 * 1024 * 1024 + (i % 7) * 4099;
    Bytes::from(vec![b'a' + (i % 26) as u8; len])
}

/// The writer: uploads new versions (whole and streamed, with metadata in
/// the data file's attribute and in the sidecar, so each kind replaces the
/// other) until killed.
fn writer(root: &Path) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let attr = FsStorage::open(root).await.unwrap();
        let mut cfg = FsStorageConfig::new(root);
        cfg.xattr_metadata = false;
        let side = FsStorage::with_config(cfg).await.unwrap();
        for i in 1.. {
            let s = if i % 4 < 2 { &attr } else { &side };
            let data = version(i);
            if i % 2 == 0 {
                s.upload("crash", "obj", data, &UploadOptions::new())
                    .await
                    .unwrap();
            } else {
                let chunks: Vec<Result<Bytes, truststream_core_storage::Error>> = data
                    .chunks(300_000)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                s.upload_stream(
                    "crash",
                    "obj",
                    Box::pin(futures::stream::iter(chunks)),
                    &UploadOptions::new(),
                )
                .await
                .unwrap();
            }
            if i == 1 {
                std::fs::write(root.join("started"), b"1").unwrap();
            }
        }
    });
    unreachable!("the writer loops until it is killed")
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".~t"))
        .collect()
}

#[test]
fn a_killed_writer_leaves_the_old_or_the_new_object() {
    if let Ok(root) = std::env::var(CHILD_ROOT) {
        writer(Path::new(&root));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(parent());
}

async fn parent() {
    let root = tempfile::tempdir().unwrap();
    {
        let s = FsStorage::open(root.path()).await.unwrap();
        s.create_bucket("crash").await.unwrap();
        s.upload("crash", "obj", version(0), &UploadOptions::new())
            .await
            .unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    for round in 0..ROUNDS {
        let _ = std::fs::remove_file(root.path().join("started"));
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ROOT, root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !root.path().join("started").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the writer did not start"
            );
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the writer exited early: {status}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Kill at a different point of a write each round.
        let pause = rand_ms(round);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // A fresh instance, as after a restart: its open removes the killed
        // writer's temporary files at once, young as they are.
        let s = FsStorage::open(root.path()).await.unwrap();
        assert_eq!(
            temp_files(&root.path().join("crash")),
            Vec::<String>::new(),
            "round {round}: the killed writer's temporary files were kept"
        );
        let meta = s.get_metadata("crash", "obj").await.unwrap();
        let body = s
            .download("crash", "obj")
            .await
            .unwrap_or_else(|e| panic!("round {round}: download failed after the kill: {e}"));
        assert_eq!(body.len() as u64, meta.size, "round {round}");
        let first = body[0];
        let i = (0..200usize)
            .find(|i| version(*i).len() == body.len() && b'a' + (i % 26) as u8 == first)
            .unwrap_or_else(|| panic!("round {round}: the object is no version that was written"));
        assert!(body == version(i), "round {round}: torn object");
        let page = s.list("crash", &ListOptions::new()).await.unwrap();
        let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec!["obj"], "round {round}: leftovers were listed");
    }
    let s = FsStorage::open(root.path()).await.unwrap();
    assert_eq!(s.sweep_temp_files(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(temp_files(&root.path().join("crash")), Vec::<String>::new());
    s.download("crash", "obj").await.unwrap();
}

/// A pause in milliseconds that differs between rounds (0 to 119).
fn rand_ms(round: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos % 97) + (round as u64 * 7) % 23
}
