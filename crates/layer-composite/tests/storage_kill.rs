//! kill -9 in the middle of storage replication: a child process (this
//! test binary run again, with `TS_STORAGE_COMPOSITE_CHILD` set) writes
//! through a storage composite — fs primary, fs secondary that takes 30 ms
//! a call, SQLite journal, batches of 5 — and prints each acknowledged
//! write (puts, overwrites, deletes, copies, stream uploads). The parent
//! SIGKILLs it while the journal still holds entries, then opens the same
//! directories and journal with a fresh layer: replication resumes from
//! the journal, the journal ends empty, the primary holds every
//! acknowledged write (all but the one write under way at the kill), and
//! the secondary's objects equal the primary's.

#![allow(clippy::unwrap_used)] // test helpers, not library code

#[path = "support/snapshot.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use truststream_core::{BoxFuture, ErrorKind, Result};
use truststream_core_db::Database;
use truststream_core_storage::{Storage, UploadOptions};
use truststream_db_sqlite::{SqliteConfig, SqliteDatabase};
use truststream_layer::{around_storage, Around, Next, Op};
use truststream_layer_composite::{StorageCompositeConfig, StorageCompositeLayer};
use truststream_storage_fs::FsStorage;

use support::snapshot;

/// Set in the child: the directory holding both stores and the journal.
const CHILD: &str = "TS_STORAGE_COMPOSITE_CHILD";
const BUCKET: &str = "kill";
const KEYS: u64 = 60;

async fn open(dir: &Path) -> (Arc<FsStorage>, Arc<FsStorage>, Arc<dyn Database>) {
    let primary = Arc::new(FsStorage::open(dir.join("primary")).await.unwrap());
    let secondary = Arc::new(FsStorage::open(dir.join("secondary")).await.unwrap());
    let journal = SqliteDatabase::open(SqliteConfig::file(dir.join("journal.db")))
        .await
        .unwrap();
    (primary, secondary, Arc::new(journal))
}

/// Waits after each call.
struct SlowAfter(Duration);

impl Around for SlowAfter {
    fn around<'a>(&'a self, _op: Op<'a>, next: Next<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let result = next.run().await;
            tokio::time::sleep(self.0).await;
            result
        })
    }
}

fn key(j: u64) -> String {
    format!("obj{j:03}")
}

/// The child: writes until killed (or two minutes pass), printing `ack put
/// <key> <body>`, `ack del <key>`, `ack copy <from> <to>` after each
/// acknowledged write and `applied <n>` as the replicator progresses.
async fn child(dir: &Path) {
    // libtest (one test thread) has printed "test <name> ... " with no
    // line end: end that line, or the first acknowledgement would share
    // it and the parent would not read it (an acknowledged write it does
    // not know of).
    println!();
    let (primary, secondary, journal) = open(dir).await;
    let mut config = StorageCompositeConfig::new("fs", "sqlite");
    config.batch = 5;
    config.interval = Duration::from_millis(50);
    // A slow secondary, so that the kill most likely lands between objects
    // copied to the secondary and their entries removed from the journal.
    let secondary = around_storage(secondary, Arc::new(SlowAfter(Duration::from_millis(30))));
    let store = StorageCompositeLayer::wrap(primary, secondary, journal, &config)
        .await
        .unwrap();
    store.create_bucket(BUCKET).await.unwrap();
    {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                let applied = store.layer().stats().applied;
                if applied != last {
                    println!("applied {applied}");
                    last = applied;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    let started = Instant::now();
    let mut lcg: u64 = 7;
    let mut next = || {
        lcg = lcg
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lcg >> 33
    };
    let mut i: u64 = 0;
    while started.elapsed() < Duration::from_secs(120) {
        i += 1;
        let (roll, a, b) = (next() % 100, key(next() % KEYS), key(next() % KEYS));
        let body = format!("{a}-v{i}");
        match roll {
            0..=59 => {
                let r = store
                    .upload(BUCKET, &a, Bytes::from(body.clone()), &UploadOptions::new())
                    .await;
                if r.is_ok() {
                    println!("ack put {a} {body}");
                }
            }
            60..=69 => {
                let chunks: Vec<Result<Bytes>> = vec![
                    Ok(Bytes::from(body.clone().into_bytes()[..2].to_vec())),
                    Ok(Bytes::from(body.clone().into_bytes()[2..].to_vec())),
                ];
                let stream = Box::pin(futures::stream::iter(chunks));
                if store
                    .upload_stream(BUCKET, &a, stream, &UploadOptions::new())
                    .await
                    .is_ok()
                {
                    println!("ack put {a} {body}");
                }
            }
            70..=84 => {
                if store.delete(BUCKET, &a).await.is_ok() {
                    println!("ack del {a}");
                }
            }
            _ => match store.copy(BUCKET, &a, BUCKET, &b).await {
                Ok(_) => println!("ack copy {a} {b}"),
                Err(e) if e.kind() == ErrorKind::NotFound => println!("ack nocopy {a}"),
                Err(_) => {}
            },
        }
    }
}

/// Applies one acknowledged line to the model of the primary.
fn replay(model: &mut BTreeMap<String, String>, line: &str) -> bool {
    let parts: Vec<&str> = line.split_whitespace().collect();
    match parts.as_slice() {
        ["ack", "put", key, body] => {
            model.insert(key.to_string(), body.to_string());
        }
        ["ack", "del", key] => {
            model.remove(*key);
        }
        ["ack", "copy", from, to] => {
            let body = model
                .get(*from)
                .cloned()
                .expect("copied from a modelled key");
            model.insert(to.to_string(), body);
        }
        ["ack", "nocopy", from] => assert!(!model.contains_key(*from), "{line}"),
        _ => return false,
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_storage_replication() {
    if let Ok(dir) = std::env::var(CHILD) {
        return child(Path::new(&dir)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_mid_storage_replication",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut model = BTreeMap::new();
    let mut acks = 0usize;
    let mut applied = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    // Kill once plenty is written and the replicator is under way.
    while acks < 300 || applied < 30 {
        assert!(
            Instant::now() < deadline,
            "the child did not get going ({acks} acks, {applied} applied)"
        );
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            panic!("the child went quiet ({acks} acks, {applied} applied)");
        };
        if replay(&mut model, &line) {
            acks += 1;
        } else if let Some(n) = line.strip_prefix("applied ") {
            applied = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed: {status:?}");
    reader.join().unwrap();
    for line in rx.try_iter() {
        replay(&mut model, &line);
    }

    // A fresh layer on the same stores and journal resumes.
    let (primary, secondary, journal) = open(dir.path()).await;
    let mut config = StorageCompositeConfig::new("fs", "sqlite");
    config.interval = Duration::from_secs(3600);
    let store = StorageCompositeLayer::wrap(primary.clone(), secondary.clone(), journal, &config)
        .await
        .unwrap();
    let left = store.layer().lag().await.unwrap();
    let started = Instant::now();
    store.layer().catch_up().await.unwrap();
    eprintln!(
        "{acks} writes acknowledged before the kill, {applied} journal entries applied by the \
         child, {} left in the journal; caught up in {:?}",
        left.entries,
        started.elapsed()
    );
    assert!(left.entries > 0, "the kill came after replication finished");
    assert_eq!(store.layer().lag().await.unwrap().entries, 0);

    let p = snapshot(&*primary).await;
    let s = snapshot(&*secondary).await;
    // Nothing acknowledged is lost: the primary is the model, but for the
    // one write under way at the kill (one key).
    let on_primary: BTreeMap<String, String> = p
        .objects
        .iter()
        .map(|((_, k), o)| (k.clone(), String::from_utf8(o.data.clone()).unwrap()))
        .collect();
    let differing: std::collections::BTreeSet<&String> = model
        .keys()
        .chain(on_primary.keys())
        .filter(|k| model.get(*k) != on_primary.get(*k))
        .collect();
    assert!(
        differing.len() <= 1,
        "acknowledged writes missing on the primary: {differing:?}"
    );
    // The secondary equals the primary, object for object.
    assert_eq!(s.buckets, p.buckets);
    assert_eq!(s.objects.len(), p.objects.len());
    assert_eq!(s, p);
}
