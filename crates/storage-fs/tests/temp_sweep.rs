//! Temporary files of writers in other processes: a writer killed with
//! SIGKILL mid-write leaves one, and the next store to open the root removes
//! it at once (not after `temp_max_age_secs`); a live writer's is never
//! removed, however eager the sweep.
//!
//! The test re-runs its own binary as the writer (`support::Peer`): the
//! writer stages a streamed upload, says `staged`, and finishes it when told
//! `finish`.

#![allow(clippy::unwrap_used)] // test code

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use support::Peer;
use truststream_core_storage::{Storage, UploadOptions};
use truststream_storage_fs::FsStorage;

const WRITER_ROOT: &str = "TS_STORAGE_FS_SWEEP_WRITER_ROOT";
const FIRST: &[u8] = b"first half, ";
const SECOND: &[u8] = b"second half";

/// The temporary files in the bucket's directory.
fn temp_files(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".~t"))
        .collect()
}

/// The files in the writer-lock directory.
fn writer_locks(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join(".truststream/writers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The writer: stages `docs/report` (its first half written), says
/// `staged`, writes the second half and commits when told `finish`.
fn writer(root: &Path) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = FsStorage::open(root).await.unwrap();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let options = UploadOptions::new();
        let body = futures::stream::once(async { Ok(Bytes::from_static(FIRST)) }).chain(
            futures::stream::once(async move {
                wait.await.unwrap();
                Ok(Bytes::from_static(SECOND))
            }),
        );
        let upload = s.upload_stream("docs", "report", Box::pin(body), &options);
        let root = root.to_path_buf();
        let driver = async move {
            while temp_files(&root).is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            support::say("staged");
            let line = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).unwrap();
                line
            })
            .await
            .unwrap();
            assert_eq!(line.trim(), "finish");
            go.send(()).unwrap();
        };
        let (stored, ()) = tokio::join!(upload, driver);
        stored.unwrap();
        support::say("done");
    });
    std::process::exit(0)
}

/// Starts a writer on `root` (re-running `test`) and waits until its
/// upload is staged.
fn start_writer(root: &Path, test: &str) -> Peer {
    let mut w = Peer::start(test, WRITER_ROOT, root);
    assert_eq!(w.next(), "staged");
    w
}

/// A root with the bucket `docs`, made by a store that is closed again.
async fn root_with_bucket() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let s = FsStorage::open(&root).await.unwrap();
    s.create_bucket("docs").await.unwrap();
    drop(s);
    (dir, root)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_killed_writers_temp_file_is_removed_when_a_store_opens() {
    if let Ok(root) = std::env::var(WRITER_ROOT) {
        writer(Path::new(&root));
    }
    runtime().block_on(async {
        let (_dir, root) = root_with_bucket().await;
        for round in 0..3 {
            let mut w = start_writer(
                &root,
                "a_killed_writers_temp_file_is_removed_when_a_store_opens",
            );
            assert_eq!(temp_files(&root).len(), 1, "round {round}");
            w.child.kill().unwrap(); // SIGKILL, mid-write
            w.child.wait().unwrap();
            assert_eq!(temp_files(&root).len(), 1, "the kill removed nothing");
            // The default configuration: temporary files of an hour and
            // older would go by age; this one is seconds old.
            let s = FsStorage::open(&root).await.unwrap();
            assert_eq!(temp_files(&root), Vec::<String>::new(), "round {round}");
            // The killed writer's lock file went too; this store's remains.
            assert_eq!(writer_locks(&root).len(), 1, "{:?}", writer_locks(&root));
            let e = s.download("docs", "report").await.unwrap_err();
            assert_eq!(e.kind(), truststream_core_storage::ErrorKind::NotFound);
        }
    });
}

#[test]
fn a_live_writers_temp_file_is_never_removed() {
    if let Ok(root) = std::env::var(WRITER_ROOT) {
        writer(Path::new(&root));
    }
    runtime().block_on(async {
        let (_dir, root) = root_with_bucket().await;
        let mut w = start_writer(&root, "a_live_writers_temp_file_is_never_removed");
        let staged = temp_files(&root);
        assert_eq!(staged.len(), 1);
        // Opening sweeps, and an explicit sweep of every age as well.
        let s = FsStorage::open(&root).await.unwrap();
        assert_eq!(s.sweep_temp_files(Duration::ZERO).await.unwrap(), 0);
        assert_eq!(
            temp_files(&root),
            staged,
            "a live writer's file was removed"
        );
        // The writer finishes its upload: nothing was lost.
        w.send("finish");
        assert_eq!(w.next(), "done");
        assert!(w.child.wait().unwrap().success());
        let body = s.download("docs", "report").await.unwrap();
        assert_eq!(body, Bytes::from([FIRST, SECOND].concat()));
        assert_eq!(temp_files(&root), Vec::<String>::new());
        // The writer closed its store: only this store's lock file is left.
        assert_eq!(writer_locks(&root).len(), 1, "{:?}", writer_locks(&root));
    });
}
