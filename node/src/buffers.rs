//! Chunk buffers reused between transfers. A chunk travels in a buffer of up to a few MiB;
//! taking a fresh one for every chunk (the served chunk read from disk, the fetched chunk read
//! from the stream) made the allocator map, fault in, zero and unmap that memory again and
//! again, a good part of a transfer's time. Buffers handed back once a chunk is written (to
//! the stream, or to the store) are kept, a bounded number of them, and the next chunk reuses
//! one, bytes and all: whoever takes a buffer overwrites it whole.

use std::sync::Mutex;

/// Buffers kept, at most (with [`MAX_POOLED_LEN`], the most memory a pool holds: 128 MiB,
/// 32 MiB with the default 1 MiB chunks).
const MAX_POOLED: usize = 32;
/// Largest buffer kept: larger chunks are rare and are not pooled.
pub(crate) const MAX_POOLED_LEN: usize = 4 << 20;

/// A bounded set of spare buffers.
pub(crate) struct BufferPool(Mutex<Vec<Vec<u8>>>);

/// The process's pool, shared by serving, fetching and the store.
pub(crate) static CHUNKS: BufferPool = BufferPool::new();

impl BufferPool {
    /// An empty pool.
    pub(crate) const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    fn spare(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A spare buffer with room for `len` bytes, if any.
    fn pooled(&self, len: usize) -> Option<Vec<u8>> {
        if len == 0 || len > MAX_POOLED_LEN {
            return None;
        }
        let mut spare = self.spare();
        let i = spare.iter().position(|b| b.capacity() >= len)?;
        Some(spare.swap_remove(i))
    }

    /// A buffer of exactly `len` bytes whose contents are unspecified (left from an earlier
    /// chunk), if the pool holds one large enough; the caller overwrites every byte. `None`
    /// when it has none, and the caller allocates as it would without a pool.
    pub(crate) fn take(&self, len: usize) -> Option<Vec<u8>> {
        let mut buf = self.pooled(len)?;
        // The bytes below `len()` are initialised; beyond, within the capacity, they are
        // zeroed once (a buffer that grew to its capacity never needs it again).
        buf.resize(len, 0);
        Some(buf)
    }

    /// An empty buffer with room for `len` bytes: a pooled one when the pool has one, else a
    /// new one (for readers that append, such as `read_to_end`).
    pub(crate) fn take_empty(&self, len: usize) -> Vec<u8> {
        match self.pooled(len) {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Hands a buffer back once its bytes are no longer needed; it is kept when there is room.
    pub(crate) fn give(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > MAX_POOLED_LEN {
            return;
        }
        let mut spare = self.spare();
        if spare.len() < MAX_POOLED {
            spare.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_at_the_length_asked() {
        let pool = BufferPool::new();
        assert!(pool.take(100).is_none(), "an empty pool has nothing");
        let buf = vec![7u8; 1 << 20];
        let ptr = buf.as_ptr();
        pool.give(buf);
        let shorter = pool.take(1000).expect("a pooled buffer");
        assert_eq!(shorter.len(), 1000);
        assert_eq!(
            shorter.as_ptr(),
            ptr,
            "the same memory, not a new allocation"
        );
        pool.give(shorter);
        let whole = pool.take(1 << 20).expect("the buffer again");
        assert_eq!(whole.len(), 1 << 20, "grown back within its capacity");
        assert!(
            pool.take(1).is_none(),
            "taken buffers are gone from the pool"
        );
        pool.give(whole);
        let empty = pool.take_empty(10);
        assert!(empty.is_empty() && empty.as_ptr() == ptr, "{}", empty.len());
        assert!(
            pool.take_empty(10).capacity() >= 10,
            "a new one when none is spare"
        );
        pool.give(vec![0; MAX_POOLED_LEN + 1]);
        assert!(pool.take(1).is_none(), "oversized buffers are not kept");
        for _ in 0..MAX_POOLED + 5 {
            pool.give(vec![0; 16]);
        }
        assert_eq!(pool.spare().len(), MAX_POOLED, "the pool is bounded");
    }
}
