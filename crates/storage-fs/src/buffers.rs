//! Read buffers: aligned like the file, and large ones reused.
//!
//! The kernel copies a read from the page cache with `rep movsb`, which on
//! some CPUs runs several times slower when the destination is not aligned
//! like the source (measured on the 2-core AMD EPYC build machine, in one
//! run: 4 KiB reads 1.7 us into a 64-byte-aligned buffer, 4.2 us 16 bytes
//! off; 64 MiB 19 ms against 46-50 ms). The allocator only promises 16
//! bytes, so every read buffer is placed at an address congruent to the
//! file offset it is read from, modulo [`ALIGN`] (over-allocating by
//! [`SLACK`] bytes to place it).
//!
//! Filling fresh memory costs a page fault per 4 KiB page: for a 64 MiB
//! object that is 16,384 faults, about as long as copying the bytes from the
//! page cache (measured on the 2-core build machine: a 64 MiB read into new
//! memory 30-60 ms, into reused memory ~10 ms). So buffers of
//! [`POOL_MIN`] bytes and more are handed out as `Bytes` whose owner gives the
//! memory back here when the last clone is dropped, and the next large read
//! reuses it: no page faults, no zeroing. The pool keeps at most
//! `FsStorageConfig::read_buffer_pool_bytes` (default 128 MiB) of idle
//! buffers; beyond that, returned buffers are freed.
//!
//! Buffers are sized in powers of two, so one buffer serves every object up
//! to its size (at most twice the memory of the object it holds). A reused
//! buffer still holds the bytes of an earlier read until they are
//! overwritten: every read fills the whole range it hands out, and a failed
//! read hands out nothing.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Reads smaller than this get their own buffer.
pub(crate) const POOL_MIN: usize = 4 * 1024 * 1024;
/// Cache line: buffers start at the file offset's position within one.
const ALIGN: usize = 64;
/// What a buffer is over-allocated by to place its start.
const SLACK: usize = 2 * ALIGN;

/// Zeroed memory with room to place `len` bytes anywhere within a cache
/// line (see [`start_in`]).
fn placed(len: usize) -> Vec<u8> {
    vec![0u8; len + SLACK]
}

/// Where a read at file offset `offset` starts in `buf` (from [`placed`]).
fn start_in(buf: &[u8], offset: u64) -> usize {
    // Both below ALIGN, so the start is below SLACK.
    buf.as_ptr().align_offset(ALIGN) + (offset % ALIGN as u64) as usize
}
/// Idle buffers kept at most, whatever their size.
const MAX_IDLE: usize = 8;

/// Idle large buffers.
#[derive(Debug)]
pub(crate) struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
    max_bytes: usize,
}

impl BufferPool {
    /// A pool keeping at most `max_bytes` of idle buffers (0: none).
    pub(crate) fn new(max_bytes: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            idle: Mutex::new(Vec::new()),
            max_bytes,
        })
    }

    /// A buffer for at least `len` bytes, whatever their placement (its
    /// size class is a power of two): an idle one of that class, or a new
    /// one.
    fn take(&self, len: usize) -> Vec<u8> {
        let class = len.next_power_of_two().max(POOL_MIN);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match idle.iter().position(|b| class_of(b) == class) {
            Some(i) => idle.swap_remove(i),
            None => {
                drop(idle);
                placed(class)
            }
        }
    }

    /// Keeps `buf` for reuse if the pool has room, else frees it.
    fn give_back(&self, buf: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let held: usize = idle.iter().map(|b| class_of(b)).sum();
        if idle.len() < MAX_IDLE && held + class_of(&buf) <= self.max_bytes {
            idle.push(buf);
        }
    }

    /// Bytes held by idle buffers (their size classes).
    #[cfg(test)]
    pub(crate) fn idle_bytes(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.iter().map(|b| class_of(b)).sum()
    }
}

/// The size class of a pooled buffer.
fn class_of(buf: &[u8]) -> usize {
    buf.len() - SLACK
}

/// Memory for one read, handed to the caller as `Bytes` without a copy:
/// `len` bytes from `start` of `buf`.
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    /// Where `buf` goes back to, if it came from a pool.
    pool: Option<Arc<BufferPool>>,
}

impl ReadBuf {
    /// Room for `len` bytes to be read from file offset `offset`: pooled
    /// from `pool` when the read is large enough and a pool is given.
    pub(crate) fn new(len: usize, offset: u64, pool: Option<&Arc<BufferPool>>) -> ReadBuf {
        let (buf, pool) = match pool {
            Some(pool) if len >= POOL_MIN && pool.max_bytes > 0 => {
                (pool.take(len), Some(pool.clone()))
            }
            _ => (placed(len), None),
        };
        ReadBuf {
            start: start_in(&buf, offset),
            buf,
            len,
            pool,
        }
    }

    /// Whether the memory came from a pool.
    #[cfg(test)]
    fn pooled(&self) -> bool {
        self.pool.is_some()
    }

    /// The `len` bytes to fill.
    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// The filled bytes, without copying them.
    pub(crate) fn into_bytes(self) -> Bytes {
        let range = self.start..self.start + self.len;
        match self.pool {
            None => Bytes::from(self.buf).slice(range),
            Some(pool) => Bytes::from_owner(Lent {
                buf: self.buf,
                start: self.start,
                len: self.len,
                pool,
            }),
        }
    }
}

/// Owner of a pooled buffer behind a `Bytes`: returns it when dropped.
struct Lent {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_and_are_reused_within_the_limit() {
        let pool = BufferPool::new(16 * 1024 * 1024);
        let mut a = ReadBuf::new(5 * 1024 * 1024, 0, Some(&pool));
        a.as_mut().fill(7);
        let bytes = a.into_bytes();
        assert_eq!(bytes.len(), 5 * 1024 * 1024);
        let clone = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.idle_bytes(), 0, "a clone still holds the buffer");
        assert_eq!(&clone[..], &[7u8; 10]);
        drop(clone);
        assert_eq!(pool.idle_bytes(), 8 * 1024 * 1024);

        // Reused for the same size class, whatever the exact length, and
        // the reader sees only the length it asked for.
        let mut b = ReadBuf::new(6 * 1024 * 1024, 0, Some(&pool));
        assert_eq!(pool.idle_bytes(), 0);
        assert_eq!(b.as_mut().len(), 6 * 1024 * 1024);
        b.as_mut().fill(1);
        let b = b.into_bytes();
        // Past the limit: a second large buffer is freed, not kept.
        let c = ReadBuf::new(16 * 1024 * 1024, 0, Some(&pool)).into_bytes();
        drop(b);
        drop(c);
        assert_eq!(pool.idle_bytes(), 8 * 1024 * 1024);

        // Small reads and a disabled pool never go through it.
        assert!(!ReadBuf::new(1024, 0, Some(&pool)).pooled());
        let off = BufferPool::new(0);
        assert!(!ReadBuf::new(POOL_MIN, 0, Some(&off)).pooled());
    }

    #[test]
    fn reads_land_where_the_file_offset_does_within_a_cache_line() {
        let pool = BufferPool::new(64 * 1024 * 1024);
        for offset in [0u64, 1, 63, 64, 4097, 1 << 40] {
            for (len, pool) in [
                (0, None),
                (10, None),
                (4096, None),
                (POOL_MIN + 3, Some(&pool)),
            ] {
                let mut b = ReadBuf::new(len, offset, pool);
                let p = b.as_mut();
                assert_eq!(p.len(), len);
                assert_eq!(
                    p.as_ptr() as usize % ALIGN,
                    (offset % ALIGN as u64) as usize
                );
                p.fill(3);
                let bytes = b.into_bytes();
                assert_eq!(bytes.len(), len);
                assert_eq!(
                    bytes.as_ptr() as usize % ALIGN,
                    (offset % ALIGN as u64) as usize
                );
                assert!(bytes.iter().all(|&x| x == 3));
            }
        }
    }
}
