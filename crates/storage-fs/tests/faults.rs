//! Faults and hostile input specific to a filesystem: symbolic links (made
//! before and after an object was written), traversal attempts that reach the
//! filesystem, long and reserved-looking names, corruption, truncation and
//! replacement during a stream, temporary-file leftovers, other processes'
//! writes.

#![allow(clippy::unwrap_used)] // test helpers, not library code

use std::os::unix::fs::{symlink, FileExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use truststream_core_storage::{
    ErrorKind, ListOptions, Storage, StorageExt, UploadOptions, WriteCondition,
};
use truststream_storage_fs::{FsStorage, FsStorageConfig};

/// A store with the default settings (metadata in extended attributes).
async fn store(root: &Path) -> FsStorage {
    store_with(root, true).await
}

/// A store keeping metadata in sidecar files (`xattr_metadata = false`).
async fn sidecar_store(root: &Path) -> FsStorage {
    store_with(root, false).await
}

async fn store_with(root: &Path, xattr_metadata: bool) -> FsStorage {
    let mut cfg = FsStorageConfig::new(root);
    cfg.buckets = vec!["docs".into()];
    cfg.xattr_metadata = xattr_metadata;
    FsStorage::with_config(cfg).await.unwrap()
}

/// Replaces the file at `p` by a new inode with the same content (as a
/// backup restore does), without its extended attributes.
fn rewrite_as_new_inode(p: &Path) {
    let body = std::fs::read(p).unwrap();
    std::fs::remove_file(p).unwrap();
    std::fs::write(p, &body).unwrap();
}

/// Asserts that the fixture bucket lists no object.
async fn assert_no_objects(s: &FsStorage) {
    let page = s.list("docs", &ListOptions::new()).await.unwrap();
    assert!(page.objects.is_empty(), "{:?}", page.objects);
}

/// The extended attribute holding an object's metadata.
const META_XATTR: &str = "user.truststream.meta";

fn xattr_of(path: &Path) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    match rustix::fs::lgetxattr(path, META_XATTR, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn opts() -> UploadOptions {
    UploadOptions::new()
}

/// A directory outside the root with a file that must never be read or
/// changed.
fn outside() -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("secret.txt"), b"outside secret").unwrap();
    std::fs::write(out.path().join(".~msecret.txt"), b"{}").unwrap();
    out
}

fn assert_outside_untouched(out: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![".~msecret.txt", "secret.txt"],
        "files outside the root changed"
    );
    assert_eq!(
        std::fs::read(out.join("secret.txt")).unwrap(),
        b"outside secret"
    );
}

fn denied<T: std::fmt::Debug>(r: Result<T, truststream_core_storage::Error>, what: &str) {
    match r {
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::InvalidInput
            ),
            "{what}: expected permission_denied or invalid_input, got {e}"
        ),
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
    }
}

async fn assert_all_refused(s: &FsStorage, bucket: &str, key: &str) {
    denied(s.download(bucket, key).await, "download");
    denied(s.get_metadata(bucket, key).await, "get_metadata");
    denied(
        s.upload(bucket, key, Bytes::from("evil"), &opts()).await,
        "upload",
    );
    denied(
        s.download_stream(bucket, key, None).await.map(|_| ()),
        "download_stream",
    );
}

#[tokio::test]
async fn bucket_directory_swapped_for_a_link_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let out = outside();
    let s = store(root.path()).await;
    s.upload("docs", "secret.txt", Bytes::from("inside"), &opts())
        .await
        .unwrap();
    // Swap the bucket directory for a link to outside the root.
    std::fs::rename(root.path().join("docs"), root.path().join("docs-moved")).unwrap();
    symlink(out.path(), root.path().join("docs")).unwrap();
    assert_all_refused(&s, "docs", "secret.txt").await;
    denied(s.list("docs", &ListOptions::new()).await, "list");
    denied(s.delete("docs", "secret.txt").await, "delete");
    denied(s.delete_bucket("docs").await, "delete_bucket");
    assert!(!s
        .list_buckets()
        .await
        .unwrap()
        .iter()
        .any(|b| b.name == "docs"));
    assert_outside_untouched(out.path());
}

#[tokio::test]
async fn intermediate_directory_swapped_for_a_link_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let out = outside();
    let s = store(root.path()).await;
    s.upload("docs", "a/b/secret.txt", Bytes::from("inside"), &opts())
        .await
        .unwrap();
    std::fs::rename(
        root.path().join("docs/a/b"),
        root.path().join("docs/a/b-moved"),
    )
    .unwrap();
    symlink(out.path(), root.path().join("docs/a/b")).unwrap();
    assert_all_refused(&s, "docs", "a/b/secret.txt").await;
    assert_all_refused(&s, "docs", "a/b/new.txt").await;
    s.delete("docs", "a/b/secret.txt").await.ok();
    // Listings do not follow the link.
    let page = s.list("docs", &ListOptions::new()).await.unwrap();
    assert!(page.objects.is_empty(), "{:?}", page.objects);
    assert_outside_untouched(out.path());
    // A link made by the user inside a bucket is not followed either.
    symlink(out.path(), root.path().join("docs/linked")).unwrap();
    assert_all_refused(&s, "docs", "linked/secret.txt").await;
    assert_outside_untouched(out.path());
}

#[tokio::test]
async fn object_and_sidecar_swapped_for_links_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let out = outside();
    let s = store(root.path()).await;
    s.upload("docs", "secret.txt", Bytes::from("inside"), &opts())
        .await
        .unwrap();
    let obj = root.path().join("docs/secret.txt");
    std::fs::remove_file(&obj).unwrap();
    symlink(out.path().join("secret.txt"), &obj).unwrap();
    assert_all_refused(&s, "docs", "secret.txt").await;
    assert_outside_untouched(out.path());

    // An object whose metadata is in a sidecar, read by both kinds of store.
    sidecar_store(root.path())
        .await
        .upload("docs", "other.txt", Bytes::from("inside"), &opts())
        .await
        .unwrap();
    let side = root.path().join("docs/.~mother.txt");
    std::fs::remove_file(&side).unwrap();
    symlink(out.path().join(".~msecret.txt"), &side).unwrap();
    denied(
        s.download("docs", "other.txt").await,
        "download with a linked sidecar",
    );
    denied(
        s.get_metadata("docs", "other.txt").await,
        "metadata with a linked sidecar",
    );
    assert_outside_untouched(out.path());
}

#[tokio::test]
async fn a_fifo_in_place_of_an_object_does_not_hang() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    s.upload("docs", "pipe", Bytes::from("x"), &opts())
        .await
        .unwrap();
    std::fs::remove_file(root.path().join("docs/pipe")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(root.path().join("docs/pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let r = tokio::time::timeout(Duration::from_secs(5), s.download("docs", "pipe"))
        .await
        .expect("download of a FIFO hung");
    assert!(r.is_err(), "{r:?}");
}

#[tokio::test]
async fn traversal_lookalikes_stay_inside_the_bucket() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    // Encoded separators and dots are ordinary characters of one name.
    for key in [
        "%2e%2e%2fescape",
        "..%2fescape",
        "a/%2e%2e/b",
        "...",
        "a/.../b",
    ] {
        s.upload("docs", key, Bytes::from(key.to_string()), &opts())
            .await
            .unwrap();
        assert_eq!(s.download("docs", key).await.unwrap(), key);
    }
    assert!(root.path().join("docs/%2e%2e%2fescape").is_file());
    assert!(root.path().join("docs/a/%2e%2e/b").is_file());
    for key in ["../x", "/etc/passwd", "a/../../x", "a\0b", "a\\..\\b", "."] {
        let e = s
            .upload("docs", key, Bytes::from("x"), &opts())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{key:?}: {e}");
    }
    for bucket in ["..", ".truststream", "../docs", "docs/..", "."] {
        let e = s
            .upload(bucket, "k", Bytes::from("x"), &opts())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bucket:?}: {e}");
    }
    // Nothing appeared next to the root.
    let parent: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(parent.len(), 2, "{parent:?}"); // docs and .truststream
}

#[tokio::test]
async fn long_and_reserved_names_map_to_safe_files() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    let long_seg = "é".repeat(150); // 300 bytes: over NAME_MAX
    let keys = vec![
        format!("{long_seg}/{long_seg}/x"),
        format!("a/{long_seg}"),
        ".~mfoo".to_string(),
        "foo".to_string(),
        ".~t123".to_string(),
        "dir/.~u1/.~h2".to_string(),
        ".truststream".to_string(),
        ".hidden".to_string(),
    ];
    for k in &keys {
        s.upload("docs", k, Bytes::from(format!("body {k}")), &opts())
            .await
            .unwrap();
    }
    for k in &keys {
        assert_eq!(
            s.download("docs", k).await.unwrap(),
            format!("body {k}"),
            "{k}"
        );
    }
    let page = s.list("docs", &ListOptions::new()).await.unwrap();
    let mut expected = keys.clone();
    expected.sort();
    let listed: Vec<String> = page.objects.iter().map(|o| o.key.clone()).collect();
    assert_eq!(listed, expected);
    // A key whose leaf is a sidecar name of another key does not touch it.
    assert_eq!(s.download("docs", "foo").await.unwrap(), "body foo");
}

#[tokio::test]
async fn key_that_is_also_a_prefix_is_a_conflict() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    s.upload("docs", "a", Bytes::from("file"), &opts())
        .await
        .unwrap();
    let e = s
        .upload("docs", "a/b", Bytes::from("x"), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    s.upload("docs", "d/e", Bytes::from("x"), &opts())
        .await
        .unwrap();
    let e = s
        .upload("docs", "d", Bytes::from("x"), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(
        s.get_metadata("docs", "d").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(s.download("docs", "a").await.unwrap(), "file");
}

#[tokio::test]
async fn corruption_and_truncation_are_errors_not_data() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    let body = Bytes::from(vec![7u8; 600_000]);
    s.upload("docs", "c.bin", body.clone(), &opts())
        .await
        .unwrap();
    let path = root.path().join("docs/c.bin");
    // Flip one byte in place (same inode, same size).
    let mut raw = std::fs::read(&path).unwrap();
    raw[300_000] ^= 0xff;
    std::fs::write(&path, &raw).unwrap();
    let e = s.download("docs", "c.bin").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(e.message().contains("corrupt"), "{e}");
    let parts: Vec<_> = s
        .download_stream("docs", "c.bin", None)
        .await
        .unwrap()
        .collect()
        .await;
    let last = parts.last().unwrap();
    assert_eq!(last.as_ref().unwrap_err().kind(), ErrorKind::Internal);
    // Truncated in place: the download fails instead of returning a short body.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let e = s.download("docs", "c.bin").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    // A damaged sidecar is an error too.
    sidecar_store(root.path())
        .await
        .upload("docs", "m.bin", Bytes::from("x"), &opts())
        .await
        .unwrap();
    std::fs::write(root.path().join("docs/.~mm.bin"), b"{not json").unwrap();
    let e = s.get_metadata("docs", "m.bin").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    // Uploading again repairs both.
    s.upload("docs", "c.bin", body.clone(), &opts())
        .await
        .unwrap();
    assert_eq!(s.download("docs", "c.bin").await.unwrap(), body);
}

/// A body of `len` bytes that differs for each `seed`.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn large_objects_are_checked_in_both_halves_and_reused_buffers_hold_only_their_own_bytes() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    // Whole reads of 8 MiB and more read and check two halves on two
    // threads: damage in either half, or at the seam, is an error.
    let big = pattern(9 * 1024 * 1024 + 3, 1);
    let path = root.path().join("docs/big.bin");
    for at in [10, big.len() / 2 - 1, big.len() / 2, big.len() - 1] {
        s.upload("docs", "big.bin", big.clone(), &opts())
            .await
            .unwrap();
        assert!(s.download("docs", "big.bin").await.unwrap() == big);
        let mut raw = std::fs::read(&path).unwrap();
        raw[at] ^= 0x01;
        std::fs::write(&path, &raw).unwrap();
        let e = s.download("docs", "big.bin").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal, "byte {at}: {e}");
        assert!(e.message().contains("corrupt"), "{e}");
    }

    // Downloads of 4 MiB and more reuse buffers earlier downloads gave back:
    // each one still returns exactly its own object, whatever a buffer held
    // before (a longer object of another content, then a shorter one).
    let sizes = [7 * 1024 * 1024 + 5, 5 * 1024 * 1024, 4 * 1024 * 1024 + 1];
    for (i, len) in sizes.into_iter().enumerate() {
        let body = pattern(len, 10 + i as u8);
        let key = format!("reuse-{i}.bin");
        s.upload("docs", &key, body.clone(), &opts()).await.unwrap();
        let got = s.download("docs", &key).await.unwrap();
        assert_eq!(got.len(), len);
        assert!(got == body, "download {i} differs from its object");
        let range = s
            .download_range(
                "docs",
                &key,
                truststream_core_storage::ByteRange::new(1, len as u64),
            )
            .await
            .unwrap();
        assert!(range == body.slice(1..), "range {i} differs");
        // A clone outlives the first handle: the buffer is not reused
        // while any clone is alive.
        let tail = got.slice(len - 10..);
        drop(got);
        let again = s.download("docs", &key).await.unwrap();
        assert!(again == body);
        assert!(tail == body.slice(len - 10..));
    }
}

#[tokio::test]
async fn a_stream_keeps_its_version_when_the_object_is_replaced() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    let old = Bytes::from(vec![b'o'; 2_000_000]);
    let new = Bytes::from(vec![b'n'; 1_500_000]);
    s.upload("docs", "big", old.clone(), &opts()).await.unwrap();
    let mut stream = s.download_stream("docs", "big", None).await.unwrap();
    let mut got = stream.next().await.unwrap().unwrap().to_vec();
    s.upload("docs", "big", new.clone(), &opts()).await.unwrap();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == old, "the stream spliced two versions");
    assert_eq!(s.download("docs", "big").await.unwrap(), new);

    // Truncated in place mid-stream: an error, never a short body.
    let mut stream = s.download_stream("docs", "big", None).await.unwrap();
    stream.next().await.unwrap().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.path().join("docs/big"))
        .unwrap()
        .set_len(300_000)
        .unwrap();
    let rest: Vec<_> = stream.collect().await;
    assert!(rest.iter().any(|r| r.is_err()), "truncation went unnoticed");
}

#[tokio::test]
async fn leftovers_are_ignored_and_swept() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    s.upload("docs", "dir/kept.txt", Bytes::from("kept"), &opts())
        .await
        .unwrap();
    std::fs::write(root.path().join("docs/dir/.~tdeadbeef"), b"half a write").unwrap();
    std::fs::write(root.path().join("docs/.~t00"), b"another half").unwrap();
    let page = s.list("docs", &ListOptions::new()).await.unwrap();
    assert_eq!(page.objects.len(), 1);
    // Young files stay (a writer in another process may own them).
    assert_eq!(
        s.sweep_temp_files(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    assert_eq!(s.sweep_temp_files(Duration::ZERO).await.unwrap(), 2);
    assert!(!root.path().join("docs/dir/.~tdeadbeef").exists());
    assert_eq!(s.download("docs", "dir/kept.txt").await.unwrap(), "kept");
    // Deleting the last object prunes its empty directory, and the bucket
    // can then be deleted.
    s.delete("docs", "dir/kept.txt").await.unwrap();
    assert!(!root.path().join("docs/dir").exists());
    s.delete_bucket("docs").await.unwrap();
}

#[tokio::test]
async fn torn_metadata_slots_are_ignored_or_reported() {
    let root = tempfile::tempdir().unwrap();
    let s = sidecar_store(root.path()).await;
    let side = root.path().join("docs/.~mk");
    s.upload("docs", "k", Bytes::from("version one"), &opts())
        .await
        .unwrap();
    let v2 = s
        .upload("docs", "k", Bytes::from("version two!"), &opts())
        .await
        .unwrap();
    // A writer killed while filling the spare slot (the one of version one)
    // leaves it torn: readers do not care.
    let mut raw = std::fs::read(&side).unwrap();
    let (first, second) = raw.split_at_mut(8192);
    let v1_size: &[u8] = b"\"size\":11,";
    let spare = if first.windows(v1_size.len()).any(|w| w == v1_size) {
        first
    } else {
        second
    };
    spare[60..90].fill(b'#');
    std::fs::write(&side, &raw).unwrap();
    assert_eq!(s.get_metadata("docs", "k").await.unwrap().etag, v2.etag);
    assert_eq!(s.download("docs", "k").await.unwrap(), "version two!");
    // The next write reuses the spare slot.
    let v3 = s
        .upload("docs", "k", Bytes::from("version three"), &opts())
        .await
        .unwrap();
    assert_eq!(s.get_metadata("docs", "k").await.unwrap().etag, v3.etag);
    // Damage to the slot in use is an error, never wrong data.
    let mut raw = std::fs::read(&side).unwrap();
    for b in raw.iter_mut().take(2 * 8192).skip(60).step_by(97) {
        *b ^= 0x55;
    }
    std::fs::write(&side, &raw).unwrap();
    let e = s.download("docs", "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    assert_no_objects(&s).await;
}

#[tokio::test]
async fn a_restored_copy_with_new_inodes_still_reads() {
    let root = tempfile::tempdir().unwrap();
    let s = sidecar_store(root.path()).await;
    s.upload("docs", "a/b.txt", Bytes::from("payload"), &opts())
        .await
        .unwrap();
    // Rewrite the data file as a new inode with the same content (as a
    // backup restore would).
    rewrite_as_new_inode(&root.path().join("docs/a/b.txt"));
    assert_eq!(s.download("docs", "a/b.txt").await.unwrap(), "payload");
}

#[tokio::test]
async fn a_restored_copy_keeps_attribute_metadata_only_with_its_attributes() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    let put = s
        .upload(
            "docs",
            "a/b.txt",
            Bytes::from("payload"),
            &opts().content_type("text/plain"),
        )
        .await
        .unwrap();
    let p = root.path().join("docs/a/b.txt");
    let Some(attr) = xattr_of(&p) else {
        // This filesystem has no user attributes: the sidecar holds it.
        assert!(root.path().join("docs/a/.~mb.txt").exists());
        return;
    };
    assert!(!root.path().join("docs/a/.~mb.txt").exists());
    // `cp -a` / `rsync -aX`: a new inode with the attribute.
    rewrite_as_new_inode(&p);
    rustix::fs::setxattr(&p, META_XATTR, &attr, rustix::fs::XattrFlags::empty()).unwrap();
    let meta = s.get_metadata("docs", "a/b.txt").await.unwrap();
    assert_eq!((meta.etag, meta.content_type), (put.etag, put.content_type));
    assert_eq!(s.download("docs", "a/b.txt").await.unwrap(), "payload");
    // A copy that dropped the attribute lost the metadata: the file is not
    // an object any more (documented: backups must keep attributes), until
    // `recover_metadata` gives it new metadata.
    rustix::fs::removexattr(&p, META_XATTR).unwrap();
    let e = s.get_metadata("docs", "a/b.txt").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_no_objects(&s).await;
}

#[tokio::test]
async fn a_damaged_metadata_attribute_is_an_error_and_a_new_upload_repairs_it() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    s.upload("docs", "x.bin", Bytes::from("data"), &opts())
        .await
        .unwrap();
    s.upload("docs", "y.bin", Bytes::from("other"), &opts())
        .await
        .unwrap();
    let p = root.path().join("docs/x.bin");
    let Some(mut attr) = xattr_of(&p) else {
        return; // no user attributes here: covered by the sidecar tests
    };
    // One flipped bit inside the JSON (a digit of the size, say).
    let at = attr.len() / 2;
    attr[at] ^= 0x01;
    rustix::fs::setxattr(&p, META_XATTR, &attr, rustix::fs::XattrFlags::empty()).unwrap();
    for e in [
        s.get_metadata("docs", "x.bin").await.unwrap_err(),
        s.download("docs", "x.bin").await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
        assert!(e.message().contains("damaged"), "{e}");
    }
    // Listings leave it out instead of failing for every object.
    let page = s.list("docs", &ListOptions::new()).await.unwrap();
    let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["y.bin"]);
    // A conditional write cannot be checked against it; a plain one repairs it.
    for condition in [
        WriteCondition::IfNotExists,
        WriteCondition::IfMatch("\"x\"".into()),
    ] {
        let e = s
            .upload(
                "docs",
                "x.bin",
                Bytes::from("new"),
                &opts().condition(condition),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    }
    s.upload("docs", "x.bin", Bytes::from("new"), &opts())
        .await
        .unwrap();
    assert_eq!(s.download("docs", "x.bin").await.unwrap(), "new");
    // Garbage that is not even of this format is reported the same way.
    rustix::fs::setxattr(&p, META_XATTR, b"{}", rustix::fs::XattrFlags::empty()).unwrap();
    let e = s.get_metadata("docs", "x.bin").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    s.delete("docs", "x.bin").await.unwrap();
    assert!(!p.exists());
}

#[tokio::test]
async fn sidecar_and_attribute_versions_replace_each_other() {
    let root = tempfile::tempdir().unwrap();
    let attr = store(root.path()).await;
    let side = sidecar_store(root.path()).await;
    let sidecar = root.path().join("docs/k/.~mv");
    let opts = |n: &str| opts().metadata("n", n).content_type("text/plain");
    // Written with a sidecar (as earlier versions did), read and listed by
    // a store that writes attributes.
    let v1 = side
        .upload("docs", "k/v", Bytes::from("one"), &opts("1"))
        .await
        .unwrap();
    assert!(sidecar.exists());
    assert_eq!(
        attr.get_metadata("docs", "k/v").await.unwrap().etag,
        v1.etag
    );
    let listed = attr.list("docs", &ListOptions::new()).await.unwrap();
    assert_eq!(listed.objects.len(), 1);
    assert_eq!(listed.objects[0].metadata["n"], "1");
    // Replaced with an attribute version: the sidecar goes (when the
    // filesystem has attributes), and an IfMatch against the sidecar
    // version's ETag works.
    let v2 = attr
        .upload(
            "docs",
            "k/v",
            Bytes::from("two"),
            &opts("2").condition(WriteCondition::IfMatch(v1.etag.clone())),
        )
        .await
        .unwrap();
    let has_attrs = xattr_of(&root.path().join("docs/k/v")).is_some();
    assert_eq!(sidecar.exists(), !has_attrs);
    for s in [&attr, &side] {
        let m = s.get_metadata("docs", "k/v").await.unwrap();
        assert_eq!(
            (m.etag.as_str(), m.metadata["n"].as_str()),
            (v2.etag.as_str(), "2")
        );
        assert_eq!(s.download("docs", "k/v").await.unwrap(), "two");
    }
    // And back: a sidecar version over an attribute version.
    let v3 = side
        .upload(
            "docs",
            "k/v",
            Bytes::from("three"),
            &opts("3").condition(WriteCondition::IfMatch(v2.etag.clone())),
        )
        .await
        .unwrap();
    for s in [&attr, &side] {
        let m = s.get_metadata("docs", "k/v").await.unwrap();
        assert_eq!(
            (m.etag.as_str(), m.metadata["n"].as_str()),
            (v3.etag.as_str(), "3")
        );
        assert_eq!(s.download("docs", "k/v").await.unwrap(), "three");
        let listed = s.list("docs", &ListOptions::new()).await.unwrap();
        assert_eq!(listed.objects.len(), 1);
        assert_eq!(listed.objects[0].etag, v3.etag);
    }
    // Either store deletes either kind, sidecar included.
    attr.delete("docs", "k/v").await.unwrap();
    assert!(!root.path().join("docs/k").exists());
    side.upload("docs", "x", Bytes::from("x"), &opts("x"))
        .await
        .unwrap();
    attr.delete("docs", "x").await.unwrap();
    attr.upload("docs", "y", Bytes::from("y"), &opts("y"))
        .await
        .unwrap();
    side.delete("docs", "y").await.unwrap();
    attr.delete_bucket("docs").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_miss_an_object_whose_metadata_moves_between_sidecar_and_attribute() {
    let root = tempfile::tempdir().unwrap();
    let attr = store(root.path()).await;
    let side = sidecar_store(root.path()).await;
    attr.upload("docs", "r", Bytes::from("v0"), &opts())
        .await
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (attr, side, done) = (attr.clone(), side.clone(), done.clone());
        tokio::spawn(async move {
            for i in 1..400 {
                // Each write replaces the other kind, so attribute writes
                // remove the sidecar under the readers' feet.
                let s = if i % 2 == 0 { &attr } else { &side };
                s.upload("docs", "r", Bytes::from(format!("v{i}")), &opts())
                    .await
                    .unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut reads = 0;
    while !done.load(Ordering::SeqCst) {
        for s in [&attr, &side] {
            let body = s
                .download("docs", "r")
                .await
                .unwrap_or_else(|e| panic!("read {reads} failed during the writes: {e}"));
            assert!(body.starts_with(b"v"), "{body:?}");
            s.get_metadata("docs", "r").await.unwrap();
            reads += 1;
        }
    }
    writer.await.unwrap();
    assert!(reads > 10, "only {reads} reads overlapped the writes");
}

#[tokio::test]
async fn metadata_too_large_for_an_attribute_goes_to_the_sidecar() {
    let root = tempfile::tempdir().unwrap();
    let s = store(root.path()).await;
    // A 1,000-byte key and 2 KiB of quotes (4 KiB once JSON-escaped): more
    // than ext4 keeps in one file's attributes.
    let key = format!("big/{}", "k".repeat(150)).repeat(6);
    let quotes = "\"".repeat(2040);
    let o = opts().metadata("q", quotes.clone());
    let put = s.upload("docs", &key, Bytes::from("v1"), &o).await.unwrap();
    // Exactly one of the two holds it.
    let file = root.path().join("docs").join(&key);
    let sidecar = file
        .parent()
        .unwrap()
        .join(format!(".~m{}", "k".repeat(150)));
    assert_ne!(xattr_of(&file).is_some(), sidecar.exists());
    let meta = s.get_metadata("docs", &key).await.unwrap();
    assert_eq!((meta.etag, &meta.metadata["q"]), (put.etag, &quotes));
    assert_eq!(s.download("docs", &key).await.unwrap(), "v1");
    let listed = s.list("docs", &ListOptions::new()).await.unwrap();
    assert_eq!(listed.objects.len(), 1);
    assert_eq!(listed.objects[0].key, key);
    // Small metadata again: back in the attribute.
    let put = s
        .upload("docs", &key, Bytes::from("v2"), &opts())
        .await
        .unwrap();
    if xattr_of(&file).is_some() {
        assert!(!sidecar.exists());
    }
    let meta = s.get_metadata("docs", &key).await.unwrap();
    assert_eq!((meta.etag, meta.metadata.len()), (put.etag, 0));
    assert_eq!(s.download("docs", &key).await.unwrap(), "v2");
}

/// What a filesystem that ignores case shows when keys `dir/a.txt` and
/// `dir/A.txt` meet: the one file, holding the other key's object. Simulated
/// by renaming the file (and its sidecar), which is also what a by-hand move
/// looks like. For each way metadata is kept: the compact attribute (no user
/// metadata), the JSON one (user metadata) and the sidecar.
#[tokio::test]
async fn a_file_under_another_keys_name_is_not_that_keys_object() {
    for (xattr, user_meta) in [(true, false), (true, true), (false, false)] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("docs/dir");
        let mut o = opts();
        if user_meta {
            o = o.metadata("owner", "lower");
        }
        let s = store_with(root.path(), xattr).await;
        s.upload("docs", "dir/a.txt", Bytes::from("lower"), &o)
            .await
            .unwrap();
        let swap = |from: &str, to: &str| {
            std::fs::rename(dir.join(from), dir.join(to)).unwrap();
            let side = dir.join(format!(".~m{from}"));
            if side.exists() {
                std::fs::rename(side, dir.join(format!(".~m{to}"))).unwrap();
            }
        };
        swap("a.txt", "A.txt");
        let case = format!("xattr {xattr}, user metadata {user_meta}");
        // A fresh instance: its listing comes from the files.
        let s = store_with(root.path(), xattr).await;
        for r in [
            s.download("docs", "dir/A.txt").await.map(|_| ()),
            s.get_metadata("docs", "dir/A.txt").await.map(|_| ()),
        ] {
            assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound, "{case}");
        }
        assert_no_objects(&s).await;
        for cond in [WriteCondition::None, WriteCondition::IfNotExists] {
            let err = s
                .upload(
                    "docs",
                    "dir/A.txt",
                    Bytes::from("upper"),
                    &opts().condition(cond),
                )
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Conflict, "{case}: {err}");
        }
        s.delete("docs", "dir/A.txt").await.unwrap();
        swap("A.txt", "a.txt");
        assert_eq!(
            s.download("docs", "dir/a.txt").await.unwrap(),
            Bytes::from("lower"),
            "{case}: the other key's object was changed"
        );
        // By-hand renames are not commits: a fresh instance lists them.
        let s = store_with(root.path(), xattr).await;
        let page = s.list("docs", &ListOptions::new()).await.unwrap();
        let keys: Vec<_> = page.objects.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["dir/a.txt"], "{case}");
    }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn metadata_lost_in_a_restore_is_recovered_from_the_files() {
    let long = format!("{}/c", "x".repeat(250));
    for xattr in [true, false] {
        let root = tempfile::tempdir().unwrap();
        let s = store_with(root.path(), xattr).await;
        let big = pattern(300_000, 9);
        s.upload(
            "docs",
            "a.txt",
            Bytes::from("alpha"),
            &opts().content_type("text/plain"),
        )
        .await
        .unwrap();
        s.upload("docs", "dir/b.bin", big.clone(), &opts().metadata("k", "v"))
            .await
            .unwrap();
        s.upload("docs", &long, Bytes::from("gamma"), &opts())
            .await
            .unwrap();
        let before = s.get_metadata("docs", "dir/b.bin").await.unwrap();

        // A restore that kept the bytes but dropped attributes and sidecars.
        for p in files_under(&root.path().join("docs")) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(".~m") {
                std::fs::remove_file(&p).unwrap();
            } else {
                rewrite_as_new_inode(&p);
            }
        }
        let s = store_with(root.path(), xattr).await;
        let e = s.download("docs", "a.txt").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "xattr {xattr}: {e}");
        assert_no_objects(&s).await;

        let report = s.recover_metadata("docs").await.unwrap();
        let mut keys = report.recovered.clone();
        keys.sort();
        assert_eq!(keys, ["a.txt", "dir/b.bin"], "xattr {xattr}");
        assert_eq!(report.unmapped.len(), 1, "{:?}", report.unmapped);
        assert!(
            report.unmapped[0].starts_with(".~h"),
            "{:?}",
            report.unmapped
        );

        assert_eq!(
            s.download("docs", "a.txt").await.unwrap(),
            Bytes::from("alpha")
        );
        assert_eq!(s.download("docs", "dir/b.bin").await.unwrap(), big);
        let after = s.get_metadata("docs", "dir/b.bin").await.unwrap();
        assert_eq!(after.size, before.size);
        assert_eq!(
            after.checksum, before.checksum,
            "the content's CRC32C again"
        );
        assert_ne!(after.etag, before.etag);
        assert!(after.metadata.is_empty() && after.content_type.is_none());
        let page = s.list("docs", &ListOptions::new()).await.unwrap();
        let listed: Vec<_> = page.objects.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(listed, ["a.txt", "dir/b.bin"]);

        // Recovered objects are checked again: damage after the recovery is an error.
        let p = root.path().join("docs/a.txt");
        let mut body = std::fs::read(&p).unwrap();
        body[0] ^= 1;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(&body, 0)
            .unwrap();
        assert!(s.download("docs", "a.txt").await.is_err());

        // Nothing left to recover; objects with metadata are left alone.
        let again = s.recover_metadata("docs").await.unwrap();
        assert!(again.recovered.is_empty(), "{:?}", again.recovered);
        assert_eq!(s.get_metadata("docs", "dir/b.bin").await.unwrap(), after);
        let e = s.recover_metadata("nope").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}

#[tokio::test]
async fn two_instances_on_one_root_see_each_other() {
    // Separate instances share nothing in memory, like two processes.
    let root = tempfile::tempdir().unwrap();
    let a = store(root.path()).await;
    let b = store(root.path()).await;
    let create = UploadOptions::new().condition(WriteCondition::IfNotExists);
    assert!(a
        .list("docs", &ListOptions::new())
        .await
        .unwrap()
        .objects
        .is_empty());
    a.upload("docs", "k", Bytes::from("from a"), &create)
        .await
        .unwrap();
    let e = b
        .upload("docs", "k", Bytes::from("from b"), &create)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // b's and a's listings follow each other's writes.
    assert_eq!(
        b.list("docs", &ListOptions::new())
            .await
            .unwrap()
            .objects
            .len(),
        1
    );
    b.upload("docs", "k2", Bytes::from("from b"), &opts())
        .await
        .unwrap();
    assert_eq!(
        a.list("docs", &ListOptions::new())
            .await
            .unwrap()
            .objects
            .len(),
        2
    );
    b.delete("docs", "k").await.unwrap();
    let keys: Vec<String> = a
        .list("docs", &ListOptions::new())
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, vec!["k2"]);

    // Create-only races between instances: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let create = UploadOptions::new().condition(WriteCondition::IfNotExists);
            s.upload("docs", "race", Bytes::from(format!("w{i}")), &create)
                .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict),
        }
    }
    assert_eq!(wins, 1);
    assert!(a.exists("docs", "race").await.unwrap());
}

#[tokio::test]
async fn signed_urls_verify_across_instances_with_a_shared_secret() {
    let root = tempfile::tempdir().unwrap();
    let secret = truststream_core::Secret::new("s".repeat(32));
    let mut cfg = FsStorageConfig::new(root.path());
    cfg.buckets = vec!["docs".into()];
    cfg.signing_secret = Some(secret.clone());
    cfg.base_url = Some("http://localhost:8080/storage/".into());
    let a = FsStorage::with_config(cfg.clone()).await.unwrap();
    let b = FsStorage::with_config(cfg).await.unwrap();
    a.upload("docs", "x.txt", Bytes::from("hi"), &opts())
        .await
        .unwrap();
    let url = a
        .signed_url(
            "docs",
            "x.txt",
            truststream_core_storage::SignedUrlMethod::Get,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(
        url.url
            .starts_with("http://localhost:8080/storage/docs/x.txt?"),
        "{}",
        url.url
    );
    let v = b
        .verify_signed_url(truststream_core_storage::SignedUrlMethod::Get, &url.url)
        .unwrap();
    assert_eq!((v.bucket.as_str(), v.key.as_str()), ("docs", "x.txt"));
    // Without the shared secret, another instance refuses it.
    let c = store(root.path()).await;
    let e = c
        .verify_signed_url(truststream_core_storage::SignedUrlMethod::Get, &url.url)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(!format!("{a:?}").contains("ssss"));
}

#[tokio::test]
async fn config_errors_are_invalid_input() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = FsStorageConfig::new(root.path());
    cfg.signing_secret = Some(truststream_core::Secret::new("short"));
    let e = FsStorage::with_config(cfg).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let mut cfg = FsStorageConfig::new(root.path());
    cfg.buckets = vec!["Bad_Name".into()];
    assert_eq!(
        FsStorage::with_config(cfg).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // A root that is a file cannot be opened: the error names the root,
    // the reason and the `root` setting.
    let file = root.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = FsStorage::open(&file).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.message()
            .starts_with(&format!("cannot use the storage root {}: ", file.display())),
        "{e}"
    );
    assert!(
        e.context().contains(&("setting", "root".to_string())),
        "{e}"
    );
    // So does one below a file (it cannot be created).
    let below = file.join("storage");
    let e = FsStorage::open(&below).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.message().contains(&below.display().to_string())
            && e.message().contains("create the directory"),
        "{e}"
    );
}
