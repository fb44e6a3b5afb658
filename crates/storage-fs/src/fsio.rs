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
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{openat, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use sha2::Digest;
use truststream_core_storage::{Error, ObjectMeta, StorageResult};

/// Names starting with this are the provider's own (sidecars, temporary
/// files, hashed long names). A user key segment that starts with it is
/// stored under a hashed name, so user keys can never produce one of ours.
pub(crate) const RESERVED: &str = ".~";
/// Prefix of a sidecar file: `.~m` + the object's file name.
pub(crate) const SIDECAR: &str = ".~m";
/// Prefix of a temporary data file.
pub(crate) const TEMP_DATA: &str = ".~t";
/// Prefix of a temporary sidecar.
pub(crate) const TEMP_SIDECAR: &str = ".~u";
/// Prefix of a hashed name (a segment too long for the filesystem, or one that
/// starts with [`RESERVED`]).
pub(crate) const HASHED: &str = ".~h";
/// Longest segment stored under its own name. Filesystems allow 255 bytes per
/// name; the sidecar adds a 3-byte prefix, and a margin keeps room for
/// filesystems that count differently.
pub(crate) const PLAIN_MAX: usize = 200;
/// Largest sidecar read (user metadata is at most 2 KiB).
const SIDECAR_MAX: u64 = 64 * 1024;
/// Version of the sidecar format.
const SIDECAR_FORMAT: u32 = 1;

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

/// A fresh temporary name with `prefix`.
pub(crate) fn temp_name(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// What a sidecar holds: the object's metadata and the inode number of the
/// data file it describes (how a reader knows the two belong together).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sidecar {
    /// Format version.
    pub(crate) format: u32,
    /// Inode number of the data file this metadata belongs to.
    pub(crate) ino: u64,
    /// The metadata.
    pub(crate) meta: ObjectMeta,
}

impl Sidecar {
    pub(crate) fn new(ino: u64, meta: ObjectMeta) -> Self {
        Sidecar {
            format: SIDECAR_FORMAT,
            ino,
            meta,
        }
    }
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
    if !OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(root, path, dir_flags(), Mode::empty(), resolve) {
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

/// Opens a regular file for reading without following a link. `O_NONBLOCK`
/// keeps a FIFO planted at the path from blocking the open; it has no effect
/// on regular files.
pub(crate) fn open_file_read(dir: impl AsFd, name: &str) -> Result<File, Errno> {
    let fd = openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
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

/// Reads and parses a sidecar; `Ok(None)` when there is none.
pub(crate) fn read_sidecar(dir: impl AsFd, name: &str) -> StorageResult<Option<Sidecar>> {
    let side = sidecar_name(name);
    let file = match open_file_read(dir, &side) {
        Ok(f) => f,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(errno(e, format!("open metadata {side:?}"))),
    };
    let mut buf = Vec::with_capacity(4096);
    file.take(SIDECAR_MAX)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(e, format!("read metadata {side:?}")))?;
    let sc: Sidecar = serde_json::from_slice(&buf).map_err(|e| {
        Error::internal(format!(
            "metadata file {side:?} is damaged ({e}); delete the object or upload it again"
        ))
    })?;
    Ok(Some(sc))
}

/// Writes `sidecar` to a new temporary file in `dir` (flushed to disk when
/// `sync`) and returns the temporary name.
pub(crate) fn write_temp_sidecar(
    dir: impl AsFd,
    sidecar: &Sidecar,
    sync: bool,
) -> StorageResult<String> {
    let tmp = temp_name(TEMP_SIDECAR);
    let body = serde_json::to_vec(sidecar)
        .map_err(|e| Error::internal(format!("cannot encode metadata: {e}")))?;
    let dir = dir.as_fd();
    let mut f = create_file(dir, &tmp).map_err(|e| errno(e, "create metadata file"))?;
    let res = f
        .write_all(&body)
        .and_then(|()| if sync { f.sync_all() } else { Ok(()) });
    if let Err(e) = res {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
        return Err(io_err(e, "write metadata file"));
    }
    Ok(tmp)
}

/// Flushes a directory's entries (after renames) to disk.
pub(crate) fn sync_dir(dir: impl AsFd) -> StorageResult<()> {
    rustix::fs::fsync(dir).map_err(|e| errno(e, "flush directory"))
}

/// Names in a directory (without `.` and `..`), with their types where the
/// filesystem reports them.
pub(crate) fn read_dir(dir: impl AsFd) -> Result<Vec<(String, FileType)>, Errno> {
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
        out.push((name.to_string(), ft));
    }
    Ok(out)
}
