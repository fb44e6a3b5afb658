//! Two processes on one root: each one's listing follows the other's writes
//! (the shared commit counter), and a process alone with a bucket does not
//! write that counter at all.
//!
//! The test re-runs its own binary as the second process (selected by an
//! environment variable) and drives it line by line over its stdin/stdout.

#![allow(clippy::unwrap_used)] // test code

mod support;

use std::io::BufRead;
use std::path::Path;

use bytes::Bytes;
use support::Peer;
use truststream_core_storage::{ListOptions, Storage, UploadOptions};
use truststream_storage_fs::FsStorage;

const PEER_ROOT: &str = "TS_STORAGE_FS_PEER_ROOT";
const TEST_NAME: &str =
    "listings_follow_another_processs_writes_and_a_lone_process_skips_the_counter";

async fn keys(s: &FsStorage) -> String {
    let page = s.list("docs", &ListOptions::new()).await.unwrap();
    let keys: Vec<_> = page.objects.into_iter().map(|o| o.key).collect();
    keys.join(",")
}

/// The peer process: answers `put KEY`, `list` and `exit`, one line each.
fn peer(root: &Path) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = FsStorage::open(root).await.unwrap();
        for line in std::io::stdin().lock().lines() {
            let line = line.unwrap();
            let answer = match line.split_once(' ') {
                Some(("put", key)) => {
                    s.upload("docs", key, Bytes::from("peer"), &UploadOptions::new())
                        .await
                        .unwrap();
                    "ok".to_string()
                }
                _ if line == "list" => keys(&s).await,
                _ => break,
            };
            support::say(&answer);
        }
    });
    std::process::exit(0)
}

/// Sends one command and returns the peer's answer.
fn ask(peer: &mut Peer, command: &str) -> String {
    peer.send(command);
    peer.next()
}

/// The shared commit counter of the bucket.
fn counter(root: &Path) -> u64 {
    let b = std::fs::read(root.join(".truststream/locks/docs.lock")).unwrap_or_default();
    b.get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

#[test]
fn listings_follow_another_processs_writes_and_a_lone_process_skips_the_counter() {
    if let Ok(root) = std::env::var(PEER_ROOT) {
        peer(Path::new(&root));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let s = FsStorage::open(root).await.unwrap();
        s.create_bucket("docs").await.unwrap();
        let opts = UploadOptions::new();
        let put = |key: &'static str| s.upload("docs", key, Bytes::from("me"), &opts);

        // Alone: writes and listings, and the shared counter stays untouched.
        put("p1").await.unwrap();
        assert_eq!(keys(&s).await, "p1");
        put("p2").await.unwrap();
        assert_eq!(keys(&s).await, "p1,p2");
        assert_eq!(counter(root), 0, "a lone process wrote the shared counter");

        // A second process: its first listing scans; after that, each side's
        // warm index must follow the other's writes.
        let mut peer = Peer::start(TEST_NAME, PEER_ROOT, root);
        assert_eq!(ask(&mut peer, "list"), "p1,p2");
        put("p3").await.unwrap();
        assert_eq!(ask(&mut peer, "list"), "p1,p2,p3");
        assert_eq!(ask(&mut peer, "put c1"), "ok");
        assert_eq!(keys(&s).await, "c1,p1,p2,p3");
        s.delete("docs", "p1").await.unwrap();
        assert_eq!(ask(&mut peer, "list"), "c1,p2,p3");
        assert_eq!(ask(&mut peer, "put c2"), "ok");
        assert_eq!(keys(&s).await, "c1,c2,p2,p3");
        let bumped = counter(root);
        assert!(
            bumped >= 4,
            "commits beside a peer were not counted: {bumped}"
        );

        // Alone again: no more counter writes, and listings stay right.
        peer.exit();
        put("p4").await.unwrap();
        s.delete("docs", "c1").await.unwrap();
        assert_eq!(keys(&s).await, "c2,p2,p3,p4");
        assert_eq!(counter(root), bumped);

        // A store opened later sees everything, counter or not.
        let late = FsStorage::open(root).await.unwrap();
        assert_eq!(keys(&late).await, "c2,p2,p3,p4");
    });
}
