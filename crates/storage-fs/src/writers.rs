//! Which writer owns a temporary file, so a sweep removes exactly the files
//! no live writer owns.
//!
//! Each store holds an exclusive `flock` on
//! `<root>/.truststream/writers/<id>.lock` for as long as it, or a write it
//! staged, lives, and names its temporary files `.~t<id>-<random>`. The
//! kernel releases the lock when the process ends, however it ends (a
//! `kill -9` included), so a sweep that can take the lock itself, or finds
//! no lock file, knows the writer is gone and removes its temporary files at
//! once, whatever their age; a file whose writer still holds its lock is
//! never removed, however old. The lock file is created under another name,
//! locked, then renamed into place, so no sweep ever finds it unlocked while
//! its writer lives. Temporary files of earlier versions (`.~t<random>`, no
//! owner) keep the age rule.
//!
//! The locks are `flock`s like the bucket locks: processes sharing a root
//! must see each other's locks (one machine, or a network filesystem that
//! forwards `flock`).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::{renameat, unlinkat, AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use truststream_core_storage::StorageResult;

use crate::fsio::{self, errno};

/// Directory of the writer locks, under the provider's own directory.
pub(crate) const WRITERS_DIR: &str = "writers";
/// Ending of a writer lock file's name.
const LOCK_SUFFIX: &str = ".lock";
/// Hex digits of a writer id.
const ID_LEN: usize = 16;

/// This store's writer lock: held (and its file kept) until the store and
/// every write it staged are gone.
pub(crate) struct WriterLock {
    dir: OwnedFd,
    id: String,
    /// Holds the `flock`.
    _file: File,
}

impl WriterLock {
    /// Takes a new writer id and its lock in `dir` (the writers directory).
    pub(crate) fn acquire(dir: OwnedFd) -> StorageResult<Arc<WriterLock>> {
        let id = hex::encode(rand::random::<[u8; ID_LEN / 2]>());
        let fresh = format!(".{id}.new");
        let file =
            fsio::create_file(&dir, &fresh).map_err(|e| errno(e, "create the writer lock file"))?;
        let locked = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive)
            .and_then(|()| renameat(&dir, &fresh, &dir, lock_name(&id)));
        if let Err(e) = locked {
            let _ = unlinkat(&dir, &fresh, AtFlags::empty());
            return Err(errno(e, "take the writer lock"));
        }
        Ok(Arc::new(WriterLock {
            dir,
            id,
            _file: file,
        }))
    }

    /// A new name for a temporary file of this writer.
    pub(crate) fn temp_name(&self) -> String {
        let random = hex::encode(rand::random::<[u8; 8]>());
        format!("{}{}-{random}", fsio::TEMP_DATA, self.id)
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Nothing of this writer is left to protect. If this fails, a later
        // sweep finds the lock free and removes the file.
        let _ = unlinkat(&self.dir, lock_name(&self.id), AtFlags::empty());
    }
}

fn lock_name(id: &str) -> String {
    format!("{id}{LOCK_SUFFIX}")
}

/// The writer id in a temporary file's name, or `None` for a name of an
/// earlier version (no owner recorded).
pub(crate) fn owner_of(temp: &str) -> Option<&str> {
    let (id, _) = temp.strip_prefix(fsio::TEMP_DATA)?.split_once('-')?;
    let hex = id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then_some(id)
}

/// What one sweep learnt about writers: whose lock is free.
pub(crate) struct Owners<'a> {
    me: &'a WriterLock,
    alive: HashMap<String, bool>,
    /// Lock files of writers found gone, locked by this sweep until removed.
    gone: Vec<(String, File)>,
}

impl<'a> Owners<'a> {
    /// A sweep by the store holding `me`.
    pub(crate) fn new(me: &'a WriterLock) -> Self {
        Owners {
            me,
            alive: HashMap::new(),
            gone: Vec::new(),
        }
    }

    /// Whether writer `id` is alive: its lock file exists and another open
    /// file holds its lock. Any doubt (an error other than a missing file)
    /// counts as alive.
    pub(crate) fn is_alive(&mut self, id: &str) -> bool {
        if id == self.me.id {
            return true;
        }
        if let Some(alive) = self.alive.get(id) {
            return *alive;
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let alive = match fsio::openat_noatime(&self.me.dir, &lock_name(id), flags, Mode::empty()) {
            Err(Errno::NOENT) => false,
            Err(_) => true,
            Ok(fd) => match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    self.gone.push((id.to_string(), File::from(fd)));
                    false
                }
                Err(_) => true,
            },
        };
        self.alive.insert(id.to_string(), alive);
        alive
    }

    /// Removes the lock files of writers that are gone: those this sweep
    /// found, and any other in the directory (a writer killed before it
    /// staged anything). Call after their temporary files are removed;
    /// best effort (a lock file left behind is removed by a later sweep).
    pub(crate) fn remove_gone_locks(mut self) {
        if let Ok(entries) = fsio::read_dir(&self.me.dir) {
            for (name, ft, _) in entries {
                if ft != FileType::RegularFile {
                    continue;
                }
                if let Some(id) = name.strip_suffix(LOCK_SUFFIX) {
                    self.is_alive(id);
                }
            }
        }
        for (id, _locked) in &self.gone {
            let _ = unlinkat(&self.me.dir, lock_name(id), AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_new_names_only() {
        assert_eq!(
            owner_of(".~t0123456789abcdef-00ff"),
            Some("0123456789abcdef")
        );
        // Earlier versions: `.~t` and 24 hex digits, no owner.
        assert_eq!(owner_of(".~t0123456789abcdef01234567"), None);
        assert_eq!(owner_of(".~tshort-00"), None);
        assert_eq!(owner_of("obj-1"), None);
    }
}
