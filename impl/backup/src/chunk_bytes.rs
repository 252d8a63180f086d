//! A chunk's bytes without a copy of their own.
//!
//! The chunker reads a file into large buffers and cuts chunks out of them;
//! copying each chunk into an allocation of its own cost about a tenth of a
//! first backup's CPU time (measured with `perf` on the 1 GiB benchmark).
//! A [`ChunkBytes`] is instead a range of a shared, reference-counted buffer:
//! cloning or cutting it copies nothing, and the buffer goes back to a
//! process-wide pool of read buffers once the last chunk cut from it is
//! dropped, so a long backup allocates (and the kernel zeroes) its buffers
//! once, not per refill. The one idea to hold: the bytes a `ChunkBytes`
//! shows never change while it lives; a buffer is written to only while no
//! chunk holds it.
//!
//! On the wire it is a plain byte sequence, exactly as a `Vec<u8>` is.

use std::ops::{Deref, DerefMut, Range};
use std::sync::{Arc, Mutex};

/// Idle pooled buffers are kept up to this many bytes in all; more are
/// freed. It covers what a parallel backup holds in flight at once (the
/// pipeline's budget and two upload batches), so a steady run reuses.
const POOL_IDLE_BYTES_MAX: usize = 128 << 20;

/// Read buffers no chunk holds, ready for reuse.
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer chunks are cut from. A pooled one returns to the pool when
/// dropped, that is when the last chunk cut from it is.
pub struct Buffer {
    bytes: Vec<u8>,
    pooled: bool,
}

impl Buffer {
    /// A buffer of exactly `size_bytes`, from the pool when one of that size
    /// is idle there. Its contents are unspecified (an earlier use's bytes).
    pub fn pooled(size_bytes: usize) -> Self {
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|poison| poison.into_inner());
            let index = pool.iter().position(|bytes| bytes.len() == size_bytes);
            index.map(|index| pool.swap_remove(index))
        };
        Self {
            bytes: reused.unwrap_or_else(|| vec![0; size_bytes]),
            pooled: true,
        }
    }
}

impl From<Vec<u8>> for Buffer {
    /// An unpooled buffer: freed, not kept, when dropped.
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            pooled: false,
        }
    }
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if !self.pooled || self.bytes.is_empty() {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|poison| poison.into_inner());
        let idle_bytes: usize = pool.iter().map(Vec::len).sum();
        if idle_bytes + self.bytes.len() <= POOL_IDLE_BYTES_MAX {
            pool.push(std::mem::take(&mut self.bytes));
        }
    }
}

/// An immutable range of a shared buffer: one chunk's bytes.
#[derive(Clone)]
pub struct ChunkBytes {
    buffer: Arc<Buffer>,
    range: Range<usize>,
}

impl ChunkBytes {
    /// The bytes `range` of `buffer`, shared. Panics if the range lies
    /// outside the buffer.
    pub fn cut(buffer: &Arc<Buffer>, range: Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= buffer.len(),
            "chunk range {range:?} outside a buffer of {} bytes",
            buffer.len()
        );
        Self {
            buffer: Arc::clone(buffer),
            range,
        }
    }

    /// Copies the bytes out (none are copied when this holds a whole buffer
    /// no one else holds).
    pub fn into_vec(self) -> Vec<u8> {
        if self.range == (0..self.buffer.len()) {
            match Arc::try_unwrap(self.buffer) {
                Ok(mut buffer) if !buffer.pooled => std::mem::take(&mut buffer.bytes),
                Ok(buffer) => buffer.to_vec(),
                Err(buffer) => buffer.to_vec(),
            }
        } else {
            self.buffer[self.range].to_vec()
        }
    }
}

impl Deref for ChunkBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer[self.range.clone()]
    }
}

impl AsRef<[u8]> for ChunkBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for ChunkBytes {
    /// The vector becomes the buffer, uncopied.
    fn from(bytes: Vec<u8>) -> Self {
        let range = 0..bytes.len();
        Self {
            buffer: Arc::new(Buffer::from(bytes)),
            range,
        }
    }
}

impl From<&[u8]> for ChunkBytes {
    fn from(bytes: &[u8]) -> Self {
        Self::from(bytes.to_vec())
    }
}

impl PartialEq for ChunkBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for ChunkBytes {}

impl PartialEq<[u8]> for ChunkBytes {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u8>> for ChunkBytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for ChunkBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBytes({} bytes)", self.len())
    }
}

impl serde::Serialize for ChunkBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // As a sequence, like the `Vec<u8>` this replaced on the wire.
        (**self).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for ChunkBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_shows_its_range_and_holds_the_buffer_until_dropped() {
        let buffer = Arc::new(Buffer::from((0..=9).collect::<Vec<u8>>()));
        let chunk = ChunkBytes::cut(&buffer, 3..6);
        assert_eq!(&*chunk, &[3, 4, 5]);
        assert_eq!(Arc::strong_count(&buffer), 2);
        let copy = chunk.clone();
        drop(chunk);
        assert_eq!(Arc::strong_count(&buffer), 2);
        assert_eq!(copy.into_vec(), vec![3, 4, 5]);
        assert_eq!(Arc::strong_count(&buffer), 1);
    }

    #[test]
    fn a_pooled_buffer_is_reused_once_its_last_chunk_is_dropped() {
        // A size no other test uses, so the pool's other users stay apart.
        let size_bytes = 12_345;
        let mut buffer = Buffer::pooled(size_bytes);
        buffer[..4].copy_from_slice(b"kept");
        let address = buffer.as_ptr();
        let buffer = Arc::new(buffer);
        let chunk = ChunkBytes::cut(&buffer, 0..4);
        drop(buffer);
        assert_eq!(&*chunk, b"kept");
        drop(chunk);
        let again = Buffer::pooled(size_bytes);
        assert_eq!(again.as_ptr(), address);
        assert_eq!(again.len(), size_bytes);
    }

    #[test]
    fn a_whole_unshared_vector_comes_back_uncopied() {
        let bytes = vec![7_u8; 1000];
        let address = bytes.as_ptr();
        let chunk = ChunkBytes::from(bytes);
        let back = chunk.into_vec();
        assert_eq!(back.as_ptr(), address);
        assert_eq!(back, vec![7_u8; 1000]);
    }

    #[test]
    #[should_panic(expected = "outside a buffer of 4 bytes")]
    fn a_range_past_the_buffer_is_refused() {
        let buffer = Arc::new(Buffer::from(vec![0_u8; 4]));
        let _ = ChunkBytes::cut(&buffer, 2..5);
    }

    #[test]
    fn on_the_wire_it_is_a_byte_vector() {
        let chunk = ChunkBytes::cut(&Arc::new(Buffer::from(vec![1, 2, 3, 4])), 1..3);
        let encoded = serde_json::to_string(&chunk).expect("encodes");
        assert_eq!(encoded, serde_json::to_string(&vec![2_u8, 3]).expect("encodes"));
        let decoded: ChunkBytes = serde_json::from_str(&encoded).expect("decodes");
        assert_eq!(decoded, chunk);
    }
}
