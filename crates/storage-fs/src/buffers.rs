//! Reuse of large read buffers.
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

/// Reads smaller than this get their own exactly sized buffer.
pub(crate) const POOL_MIN: usize = 4 * 1024 * 1024;
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

    /// A buffer of at least `len` bytes (its length is its power-of-two
    /// size class): an idle one of that class, or a new one.
    fn take(&self, len: usize) -> Vec<u8> {
        let class = len.next_power_of_two().max(POOL_MIN);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match idle.iter().position(|b| b.len() == class) {
            Some(i) => idle.swap_remove(i),
            None => {
                drop(idle);
                vec![0u8; class]
            }
        }
    }

    /// Keeps `buf` for reuse if the pool has room, else frees it.
    fn give_back(&self, buf: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let held: usize = idle.iter().map(Vec::len).sum();
        if idle.len() < MAX_IDLE && held + buf.len() <= self.max_bytes {
            idle.push(buf);
        }
    }

    /// Bytes held by idle buffers.
    #[cfg(test)]
    pub(crate) fn idle_bytes(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.iter().map(Vec::len).sum()
    }
}

/// Memory for one read, handed to the caller as `Bytes` without a copy.
pub(crate) enum ReadBuf {
    /// Exactly sized, freed with the `Bytes`.
    Own(Vec<u8>),
    /// From the pool; `len` bytes of it are the read's.
    Pooled {
        buf: Vec<u8>,
        len: usize,
        pool: Arc<BufferPool>,
    },
}

impl ReadBuf {
    /// Room for `len` bytes: pooled from `pool` when the read is large
    /// enough and a pool is given.
    pub(crate) fn new(len: usize, pool: Option<&Arc<BufferPool>>) -> ReadBuf {
        match pool {
            Some(pool) if len >= POOL_MIN && pool.max_bytes > 0 => ReadBuf::Pooled {
                buf: pool.take(len),
                len,
                pool: pool.clone(),
            },
            _ => ReadBuf::Own(vec![0u8; len]),
        }
    }

    /// The `len` bytes to fill.
    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        match self {
            ReadBuf::Own(v) => v,
            ReadBuf::Pooled { buf, len, .. } => &mut buf[..*len],
        }
    }

    /// The filled bytes, without copying them.
    pub(crate) fn into_bytes(self) -> Bytes {
        match self {
            ReadBuf::Own(v) => Bytes::from(v),
            ReadBuf::Pooled { buf, len, pool } => Bytes::from_owner(Lent { buf, len, pool }),
        }
    }
}

/// Owner of a pooled buffer behind a `Bytes`: returns it when dropped.
struct Lent {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
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
        let mut a = ReadBuf::new(5 * 1024 * 1024, Some(&pool));
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
        let mut b = ReadBuf::new(6 * 1024 * 1024, Some(&pool));
        assert_eq!(pool.idle_bytes(), 0);
        assert_eq!(b.as_mut().len(), 6 * 1024 * 1024);
        b.as_mut().fill(1);
        let b = b.into_bytes();
        // Past the limit: a second large buffer is freed, not kept.
        let c = ReadBuf::new(16 * 1024 * 1024, Some(&pool)).into_bytes();
        drop(b);
        drop(c);
        assert_eq!(pool.idle_bytes(), 8 * 1024 * 1024);

        // Small reads and a disabled pool never go through it.
        assert!(matches!(ReadBuf::new(1024, Some(&pool)), ReadBuf::Own(_)));
        let off = BufferPool::new(0);
        assert!(matches!(
            ReadBuf::new(POOL_MIN, Some(&off)),
            ReadBuf::Own(_)
        ));
    }
}
