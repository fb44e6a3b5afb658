//! Low-level filesystem steps: name mapping, directory walks that never follow
//! a symbolic link, sidecar files, and turning `io` errors into storage errors.
//!
//! Every path is resolved one component at a time with `openat` relative to
//! an already opened directory, with `O_NOFOLLOW` (and `O_DIRECTORY` for
//! directories). A symbolic link anywhere below the root — the bucket
//! directory, an intermediate directory, the object file or its sidecar —
//! makes the call fail with `ErrorKind::PermissionDenied` before anything
//! behind the link is opened. Once a directory is open, later renames of the
//! path cannot redirect the operation (it keeps working on the directory it
//! opened), so there is no check-then-use window.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{openat, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use truststream_core_storage::{Error, ObjectMeta, StorageResult};

use crate::attr::{self, AttrMeta};

/// Names starting with this are the provider's own (sidecars, temporary
/// files, hashed long names). A user key segment that starts with it is
/// stored under a hashed name, so user keys can never produce one of ours.
pub(crate) const RESERVED: &str = ".~";
/// Prefix of a sidecar file: `.~m` + the object's file name.
pub(crate) const SIDECAR: &str = ".~m";
/// Prefix of a temporary data file.
pub(crate) const TEMP_DATA: &str = ".~t";
/// Prefix of a hashed name (a segment too long for the filesystem, or one that
/// starts with [`RESERVED`]).
pub(crate) const HASHED: &str = ".~h";
/// Longest segment stored under its own name. Filesystems allow 255 bytes per
/// name; the sidecar adds a 3-byte prefix, and a margin keeps room for
/// filesystems that count differently.
pub(crate) const PLAIN_MAX: usize = 200;
/// Size of one metadata slot; a sidecar holds two. Large enough for the
/// biggest metadata the key and metadata limits allow, JSON-escaped.
pub(crate) const SLOT_SIZE: usize = 8192;
/// Marks (and versions) a slot: magic, sequence number, data inode, JSON
/// length, CRC32C of the JSON, then the JSON.
const SLOT_MAGIC: &[u8; 4] = b"TSm2";
const SLOT_HEADER: usize = 4 + 8 + 8 + 4 + 4;
/// The slot format of earlier versions, still read: its JSON is guarded by a
/// SHA-256 instead of a CRC32C.
const SLOT_MAGIC_V1: &[u8; 4] = b"TSm1";
const SLOT_HEADER_V1: usize = 4 + 8 + 8 + 4 + 32;

/// Name of the extended attribute holding an object's metadata on its data
/// file (the `user.` namespace: any owner may set it, no privilege needed).
pub(crate) const META_XATTR: &str = "user.truststream.meta";
/// Attributes up to this size are read in one call without allocating
/// (ext4 holds at most one block, 4 KiB, of attributes per file).
const XATTR_READ_BUF: usize = 4096;

/// The file or directory name of one key segment: the segment itself, or a
/// hash of it when it is longer than [`PLAIN_MAX`] bytes or starts with
/// [`RESERVED`]. Listings never decode names: every sidecar holds its key.
pub(crate) fn seg_name(seg: &str) -> Cow<'_, str> {
    if seg.len() <= PLAIN_MAX && !seg.starts_with(RESERVED) {
        Cow::Borrowed(seg)
    } else {
        let h = hex::encode(sha2::Sha256::digest(seg.as_bytes()));
        Cow::Owned(format!("{HASHED}{}", &h[..48]))
    }
}

/// The sidecar name of an object file name.
pub(crate) fn sidecar_name(name: &str) -> String {
    format!("{SIDECAR}{name}")
}

/// One metadata slot of a sidecar: the metadata of one version of the
/// object, and the inode number of that version's data file.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// Which write came later (higher).
    pub(crate) seq: u64,
    /// Inode number of the data file this metadata describes.
    pub(crate) ino: u64,
    /// The metadata.
    pub(crate) meta: ObjectMeta,
}

/// The two slots of a sidecar; a torn, empty or foreign slot is `None`.
pub(crate) type Slots = [Option<Slot>; 2];

/// The slot describing the data file with inode `ino` (the later one if
/// both do), and its index.
pub(crate) fn pick(slots: &Slots, ino: u64) -> Option<(usize, &Slot)> {
    slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
        .filter(|(_, s)| s.ino == ino)
        .max_by_key(|(_, s)| s.seq)
}

fn encode_slot(seq: u64, ino: u64, meta: &ObjectMeta) -> StorageResult<Vec<u8>> {
    let json = serde_json::to_vec(meta)
        .map_err(|e| Error::internal(format!("cannot encode metadata: {e}")))?;
    if SLOT_HEADER + json.len() > SLOT_SIZE {
        return Err(Error::too_large(format!(
            "the metadata of this object takes {} bytes, more than the {SLOT_SIZE} a sidecar slot holds",
            json.len()
        )));
    }
    let mut out = Vec::with_capacity(SLOT_HEADER + json.len());
    out.extend_from_slice(SLOT_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ino.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc_fast::crc32_iscsi(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

fn decode_slot(buf: &[u8]) -> Option<Slot> {
    let (header_len, end) = slot_bounds(buf)?;
    let header = buf.get(..header_len)?;
    let seq = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let ino = u64::from_le_bytes(header[12..20].try_into().ok()?);
    let json = buf.get(header_len..end)?;
    // A slot torn by a killed writer fails here and is ignored.
    let intact = if header_len == SLOT_HEADER {
        crc_fast::crc32_iscsi(json).to_le_bytes() == header[24..28]
    } else {
        Sha256::digest(json).as_slice() == &header[24..56]
    };
    if !intact {
        return None;
    }
    let meta = serde_json::from_slice(json).ok()?;
    Some(Slot { seq, ino, meta })
}

/// What setting the metadata attribute on a data file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XattrWrite {
    /// The attribute holds the metadata.
    Written,
    /// Not for this value (too large for the filesystem's limit per file)
    /// or this file: keep this version's metadata in the sidecar.
    Refused,
    /// The filesystem has no user extended attributes.
    Unsupported,
}

/// Sets the metadata attribute of `file` to `value` (from [`attr::encode`]).
pub(crate) fn write_xattr(file: &File, value: &[u8]) -> StorageResult<XattrWrite> {
    match rustix::fs::fsetxattr(file, META_XATTR, value, rustix::fs::XattrFlags::empty()) {
        Ok(()) => Ok(XattrWrite::Written),
        // ext4 and others: no room in the attribute block (ENOSPC), a value
        // over the filesystem's limit (E2BIG, ERANGE); EPERM: attributes
        // refused for this file (an immutable or append-only directory
        // policy, a security module).
        Err(Errno::NOSPC | Errno::TOOBIG | Errno::RANGE | Errno::PERM) => Ok(XattrWrite::Refused),
        Err(Errno::NOTSUP) => Ok(XattrWrite::Unsupported),
        Err(e) => Err(errno(e, "write metadata attribute")),
    }
}

/// What the metadata attribute of a data file holds.
#[derive(Debug)]
pub(crate) enum Attr {
    /// This version's metadata.
    Meta(AttrMeta),
    /// No attribute: a version whose metadata is in the sidecar, a file this
    /// provider did not write, or a filesystem without user attributes.
    Absent,
    /// An attribute that fails its checksum or does not parse.
    Damaged,
}

impl Attr {
    /// The metadata, `None` when absent; a damaged attribute is
    /// `ErrorKind::Internal` (the object's metadata cannot be trusted).
    pub(crate) fn into_meta(self) -> StorageResult<Option<AttrMeta>> {
        match self {
            Attr::Meta(m) => Ok(Some(m)),
            Attr::Absent => Ok(None),
            Attr::Damaged => Err(Error::internal(format!(
                "the metadata attribute ({META_XATTR}) of this object is damaged: its checksum \
                 or format is wrong; upload the object again"
            ))),
        }
    }
}

/// Reads the metadata attribute of an open data file.
pub(crate) fn read_xattr(file: &File) -> StorageResult<Attr> {
    let mut buf = [0u8; XATTR_READ_BUF];
    let big;
    let value: &[u8] = match rustix::fs::fgetxattr(file, META_XATTR, &mut buf[..]) {
        Ok(n) => buf.get(..n).unwrap_or_default(),
        Err(Errno::RANGE) => {
            // Larger than one ext4 block: other filesystems allow more.
            let len = rustix::fs::fgetxattr(file, META_XATTR, &mut [0u8; 0][..])
                .map_err(|e| errno(e, "read metadata attribute"))?;
            let mut v = vec![0u8; len];
            let n = rustix::fs::fgetxattr(file, META_XATTR, &mut v[..])
                .map_err(|e| errno(e, "read metadata attribute"))?;
            v.truncate(n);
            big = v;
            &big
        }
        Err(Errno::NODATA | Errno::NOTSUP) => return Ok(Attr::Absent),
        Err(e) => return Err(errno(e, "read metadata attribute")),
    };
    Ok(attr::decode(value).map_or(Attr::Damaged, Attr::Meta))
}

/// Opens `name`'s sidecar for reading; `Ok(None)` when there is none.
pub(crate) fn open_sidecar(dir: impl AsFd, name: &str) -> StorageResult<Option<File>> {
    let side = sidecar_name(name);
    match open_file_read(dir, &side) {
        Ok(f) => Ok(Some(f)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(errno(e, format!("open metadata {side:?}"))),
    }
}

/// Opens (creating if needed) `name`'s sidecar for writing.
pub(crate) fn open_sidecar_rw(dir: impl AsFd, name: &str) -> StorageResult<File> {
    let side = sidecar_name(name);
    let fd = openat_noatime(
        dir,
        &side,
        OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| errno(e, format!("open metadata {side:?}")))?;
    Ok(File::from(fd))
}

/// Bytes of a slot read at first: the header and the JSON of typical
/// metadata. Longer metadata takes a second read.
const SLOT_PREFIX: usize = 1024;

/// Reads both slots of a sidecar: the start of each (so a typical lookup
/// copies 2 KiB, not the 16 KiB of both slots), then the rest of a slot whose
/// header says its metadata is longer.
pub(crate) fn read_slots(file: &File) -> StorageResult<Slots> {
    let read_slot = |index: usize| -> StorageResult<Option<Slot>> {
        let at = (index * SLOT_SIZE) as u64;
        let mut buf = [0u8; SLOT_PREFIX];
        let n = read_full_at(file, &mut buf, at)?;
        let head = &buf[..n];
        let needed = match slot_bounds(head) {
            Some((_, len)) if len > n && len <= SLOT_SIZE => len,
            _ => return Ok(decode_slot(head)),
        };
        let mut whole = vec![0u8; needed];
        let n = read_full_at(file, &mut whole, at)?;
        Ok(decode_slot(&whole[..n]))
    };
    Ok([read_slot(0)?, read_slot(1)?])
}

/// The header length and the total length (header and JSON) of the slot
/// starting at `buf`, from its magic and header; `None` when `buf` does not
/// start with one.
fn slot_bounds(buf: &[u8]) -> Option<(usize, usize)> {
    let magic = buf.get(..4)?;
    let header = if magic == SLOT_MAGIC {
        SLOT_HEADER
    } else if magic == SLOT_MAGIC_V1 {
        SLOT_HEADER_V1
    } else {
        return None;
    };
    let len = u32::from_le_bytes(buf.get(20..24)?.try_into().ok()?) as usize;
    Some((header, header.checked_add(len)?))
}

/// Reads into `buf` from `offset` until it is full or the file ends;
/// returns how many bytes were read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> StorageResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e, "read metadata")),
        }
    }
    Ok(done)
}

/// Writes slot `index` of a sidecar in place (flushed to disk when `sync`).
pub(crate) fn write_slot(
    file: &File,
    index: usize,
    seq: u64,
    ino: u64,
    meta: &ObjectMeta,
    sync: bool,
) -> StorageResult<()> {
    let bytes = encode_slot(seq, ino, meta)?;
    file.write_all_at(&bytes, (index * SLOT_SIZE) as u64)
        .map_err(|e| io_err(e, "write metadata"))?;
    if sync {
        file.sync_data().map_err(|e| io_err(e, "flush metadata"))?;
    }
    Ok(())
}

/// Type and inode number of `name` in `dir`, without following a link;
/// `None` if absent.
pub(crate) fn stat_of(dir: impl AsFd, name: &str) -> Result<Option<(FileType, u64)>, Errno> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some((FileType::from_raw_mode(st.st_mode), ino_of(&st)))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[allow(clippy::useless_conversion)] // `st_ino`'s type differs between targets
fn ino_of(st: &rustix::fs::Stat) -> u64 {
    u64::from(st.st_ino)
}

/// Maps an `io` error of `what` to a storage error, keeping it as `source()`.
pub(crate) fn io_err(e: io::Error, what: impl std::fmt::Display) -> Error {
    let msg = format!("{what}: {e}");
    let err = match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::LOOP) => {
            Error::permission_denied(format!("{what}: refusing to follow a symbolic link"))
        }
        Some(Errno::ACCESS | Errno::PERM | Errno::ROFS) => Error::permission_denied(msg),
        Some(Errno::NOENT) => Error::not_found(msg),
        Some(Errno::NOSPC | Errno::DQUOT | Errno::MFILE | Errno::NFILE) => Error::unavailable(msg),
        Some(Errno::NAMETOOLONG) => Error::invalid_input(msg),
        _ => Error::internal(msg),
    };
    err.with_source(e)
}

/// `io_err` for rustix's errno.
pub(crate) fn errno(e: Errno, what: impl std::fmt::Display) -> Error {
    io_err(io::Error::from(e), what)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `name` in `parent` without following a link.
pub(crate) fn open_dir(parent: impl AsFd, name: &str) -> Result<OwnedFd, Errno> {
    openat(parent, name, dir_flags(), Mode::empty())
}

/// Whether `openat2(2)` is available (Linux 5.6+); cleared on `ENOSYS`.
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// Opens the directory at `path` (mapped names joined by `/`) below `root`
/// in one system call: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
/// refuses `..`, absolute paths and every symbolic link on the way. `None`
/// when it fails for any reason or is unavailable: callers then walk one
/// component at a time, which creates missing directories and says what
/// was wrong.
pub(crate) fn open_dir_beneath(root: impl AsFd, path: &str) -> Option<OwnedFd> {
    open_beneath(root.as_fd(), path, dir_flags())
}

/// Opens the file at `path` below `root` for reading the way
/// [`open_dir_beneath`] opens a directory (no link anywhere on the way,
/// including the file itself), without updating its access time. `None`
/// when that fails for any reason: callers walk to it instead.
pub(crate) fn open_file_beneath(root: impl AsFd, path: &str) -> Option<File> {
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if NOATIME.load(Ordering::Relaxed) {
        flags |= OFlags::NOATIME;
    }
    open_beneath(root.as_fd(), path, flags).map(File::from)
}

fn open_beneath(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> Option<OwnedFd> {
    if !OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(root, path, flags, Mode::empty(), resolve) {
        Ok(fd) => Some(fd),
        Err(Errno::NOSYS) => {
            OPENAT2.store(false, Ordering::Relaxed);
            None
        }
        Err(_) => None,
    }
}

/// The type of `name` in `dir`, without following a link; `None` if absent.
pub(crate) fn type_of(dir: impl AsFd, name: &str) -> Result<Option<FileType>, Errno> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Why opening a directory component failed, as the error callers see.
/// `ENOTDIR`/`ELOOP` are told apart: a link is refused (PermissionDenied), a
/// regular file in the way is reported by `on_file`.
pub(crate) fn dir_open_error(
    parent: impl AsFd,
    name: &str,
    e: Errno,
    what: &str,
    on_file: impl FnOnce() -> Error,
) -> Error {
    if matches!(e, Errno::NOTDIR | Errno::LOOP) {
        return match type_of(parent, name) {
            Ok(Some(FileType::Symlink)) | Err(_) => Error::permission_denied(format!(
                "{what}: {name:?} is a symbolic link; links are never followed inside the storage root"
            )),
            Ok(Some(FileType::Directory)) | Ok(None) => errno(e, what),
            Ok(Some(_)) => on_file(),
        };
    }
    errno(e, what)
}

/// Whether `O_NOATIME` may be used; cleared when the kernel refuses it
/// (`EPERM`: the files belong to another user).
static NOATIME: AtomicBool = AtomicBool::new(cfg!(any(target_os = "linux", target_os = "android")));

/// `openat` adding `O_NOATIME` where the kernel allows it, so reads do not
/// dirty the inode: the provider reads its sidecars and lock files right
/// after writing them, and with `relatime` each such read would update the
/// access time (a journaled inode update on ext4).
pub(crate) fn openat_noatime(
    dir: impl AsFd,
    name: &str,
    flags: OFlags,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let dir = dir.as_fd();
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if NOATIME.load(Ordering::Relaxed) {
        match openat(dir, name, flags | OFlags::NOATIME, mode) {
            Err(Errno::PERM) => NOATIME.store(false, Ordering::Relaxed),
            other => return other,
        }
    }
    openat(dir, name, flags, mode)
}

/// Opens a regular file for reading without following a link. `O_NONBLOCK`
/// keeps a FIFO planted at the path from blocking the open; it has no effect
/// on regular files.
pub(crate) fn open_file_read(dir: impl AsFd, name: &str) -> Result<File, Errno> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    Ok(File::from(openat_noatime(dir, name, flags, Mode::empty())?))
}

/// Creates a new file (failing if it exists) for writing.
pub(crate) fn create_file(dir: impl AsFd, name: &str) -> Result<File, Errno> {
    let fd = openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    Ok(File::from(fd))
}

/// Flushes a directory's entries (after renames) to disk.
pub(crate) fn sync_dir(dir: impl AsFd) -> StorageResult<()> {
    rustix::fs::fsync(dir).map_err(|e| errno(e, "flush directory"))
}

/// Names in a directory (without `.` and `..`), with their types and inode
/// numbers as the directory reports them.
pub(crate) fn read_dir(dir: impl AsFd) -> Result<Vec<(String, FileType, u64)>, Errno> {
    let dir = dir.as_fd();
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            // Not UTF-8: not a name this provider writes.
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let mut ft = entry.file_type();
        if ft == FileType::Unknown {
            ft = match type_of(dir, name) {
                Ok(Some(t)) => t,
                _ => continue,
            };
        }
        out.push((name.to_string(), ft, entry.ino()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_json(checksum_field: &str) -> Vec<u8> {
        format!(
            r#"{{"bucket":"b","key":"k","size":1,"content_type":null,"etag":"\"e\"",
            "last_modified":"2026-01-01T00:00:00Z","metadata":{{}},"public":false,{checksum_field}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn slots_round_trip_and_a_torn_slot_is_ignored() {
        let meta: ObjectMeta =
            serde_json::from_slice(&meta_json(r#""checksum":"crc32c:e3069283""#)).unwrap();
        let bytes = encode_slot(7, 42, &meta).unwrap();
        let slot = decode_slot(&bytes).unwrap();
        assert_eq!((slot.seq, slot.ino), (7, 42));
        assert_eq!(slot.meta, meta);
        let mut torn = bytes.clone();
        let last = torn.len() - 2;
        torn[last] ^= 1;
        assert!(decode_slot(&torn).is_none());
        assert!(decode_slot(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn long_metadata_is_read_whole_from_either_slot() {
        let mut meta: ObjectMeta =
            serde_json::from_slice(&meta_json(r#""checksum":"crc32c:e3069283""#)).unwrap();
        meta.key = "k/".repeat(500);
        meta.metadata.insert("note".into(), "é".repeat(400));
        let short: ObjectMeta =
            serde_json::from_slice(&meta_json(r#""checksum":"crc32c:00000001""#)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("side"))
            .unwrap();
        for (long_at, short_at) in [(0, 1), (1, 0)] {
            write_slot(&file, long_at, 5, 50, &meta, false).unwrap();
            write_slot(&file, short_at, 4, 40, &short, false).unwrap();
            let slots = read_slots(&file).unwrap();
            let long = slots[long_at].as_ref().unwrap();
            assert!(serde_json::to_vec(&long.meta).unwrap().len() > SLOT_PREFIX);
            assert_eq!((long.seq, long.ino, &long.meta), (5, 50, &meta));
            let other = slots[short_at].as_ref().unwrap();
            assert_eq!((other.seq, &other.meta), (4, &short));
        }
    }

    #[test]
    fn slots_of_earlier_versions_still_read() {
        // Format 1: a SHA-256 guards the JSON, which records the content's
        // SHA-256 as `checksum_sha256`.
        let sha = "ab".repeat(32);
        let json = meta_json(&format!(r#""checksum_sha256":"{sha}""#));
        let mut v1 = Vec::new();
        v1.extend_from_slice(SLOT_MAGIC_V1);
        v1.extend_from_slice(&3u64.to_le_bytes());
        v1.extend_from_slice(&9u64.to_le_bytes());
        v1.extend_from_slice(&(json.len() as u32).to_le_bytes());
        v1.extend_from_slice(&Sha256::digest(&json));
        v1.extend_from_slice(&json);
        let slot = decode_slot(&v1).unwrap();
        assert_eq!((slot.seq, slot.ino), (3, 9));
        assert_eq!(
            slot.meta.checksum,
            Some(truststream_core_storage::Checksum::Sha256([0xab; 32]))
        );
        let last = v1.len() - 2;
        v1[last] ^= 1;
        assert!(decode_slot(&v1).is_none());
    }
}
