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
//! Pooled buffers are aligned (to [`BLOCK_BYTES`], and to huge pages when
//! they span whole ones), so that a chunk, or a run of chunks cut one after
//! another, can be written to a pack with `O_DIRECT` straight from the
//! buffer it was read into ([`ChunkBytes::block_window`]): from the page
//! cache to the pack file the bytes cross memory once, in the `read` call.
//!
//! On the wire it is a plain byte sequence, exactly as a `Vec<u8>` is.

use std::alloc::Layout;
use std::ops::{Deref, DerefMut, Range};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use crate::disk::{BLOCK_BYTES, HUGE_PAGE_BYTES};

/// Idle pooled buffers are kept up to this many bytes in all; more are
/// freed. It covers what a parallel backup holds in flight at once (the
/// pipeline's budget and two upload batches), so a steady run reuses.
const POOL_IDLE_BYTES_MAX: usize = 96 << 20;

/// Read buffers no chunk holds, ready for reuse.
static POOL: Mutex<Vec<AlignedBytes>> = Mutex::new(Vec::new());

/// Zeroed memory aligned to [`BLOCK_BYTES`], or to [`HUGE_PAGE_BYTES`]
/// (and asked to be backed by huge pages) when its length is a multiple of
/// a huge page. Huge pages matter to `O_DIRECT` writes from it: 4 KiB pages
/// scattered in physical memory cap a device request at its segment limit
/// (254 segments, about 1 MiB, on this project's virtual disks), whereas a
/// huge page is one segment, so each write goes out in fewer, larger
/// requests (about a tenth off a 1 GiB first backup's wall time, measured
/// when packs were still staged). Where the kernel has no transparent huge
/// pages the advice is ignored.
struct AlignedBytes {
    pointer: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the memory is owned exclusively, like a `Box<[u8]>`.
unsafe impl Send for AlignedBytes {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBytes {}

impl AlignedBytes {
    fn zeroed(length_bytes: usize) -> Self {
        assert!(
            length_bytes > 0 && length_bytes.is_multiple_of(BLOCK_BYTES),
            "aligned buffers are whole blocks; asked for {length_bytes} bytes"
        );
        let huge = length_bytes.is_multiple_of(HUGE_PAGE_BYTES);
        let align_bytes = if huge { HUGE_PAGE_BYTES } else { BLOCK_BYTES };
        let layout = Layout::from_size_align(length_bytes, align_bytes).expect("a valid layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(pointer) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        // SAFETY: the range is this allocation. The advice (before the first
        // touch, so the pages are faulted in huge) never changes contents,
        // and a refusal leaves ordinary pages. Zeroing then initialises
        // every byte before any is read.
        unsafe {
            if huge {
                libc::madvise(pointer.as_ptr().cast(), length_bytes, libc::MADV_HUGEPAGE);
            }
            pointer.as_ptr().write_bytes(0, length_bytes);
        }
        Self { pointer, layout }
    }
}

impl Deref for AlignedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: initialised (zeroed at allocation), owned, and alive.
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr(), self.layout.size()) }
    }
}

impl DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.pointer.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBytes {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this very layout.
        unsafe { std::alloc::dealloc(self.pointer.as_ptr(), self.layout) }
    }
}

enum Storage {
    Heap(Vec<u8>),
    Pooled(Option<AlignedBytes>),
}

/// A buffer chunks are cut from. A pooled one returns to the pool when
/// dropped, that is when the last chunk cut from it is.
pub struct Buffer {
    storage: Storage,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Buffer({} bytes, aligned: {})",
            self.len(),
            self.is_aligned()
        )
    }
}

impl Buffer {
    /// An aligned buffer of exactly `size_bytes` (a whole number of
    /// [`BLOCK_BYTES`]), from the pool when one of that size is idle there.
    /// Its contents are unspecified (zeroes, or an earlier use's bytes).
    pub fn pooled(size_bytes: usize) -> Self {
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|poison| poison.into_inner());
            let index = pool.iter().position(|bytes| bytes.len() == size_bytes);
            index.map(|index| pool.swap_remove(index))
        };
        let bytes = reused.unwrap_or_else(|| AlignedBytes::zeroed(size_bytes));
        Self {
            storage: Storage::Pooled(Some(bytes)),
        }
    }

    fn is_aligned(&self) -> bool {
        matches!(self.storage, Storage::Pooled(_))
    }
}

impl From<Vec<u8>> for Buffer {
    /// An unpooled buffer: freed, not kept, when dropped.
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            storage: Storage::Heap(bytes),
        }
    }
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(bytes) => bytes,
            Storage::Pooled(bytes) => bytes.as_deref().expect("present until dropped"),
        }
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Heap(bytes) => bytes,
            Storage::Pooled(bytes) => bytes.as_deref_mut().expect("present until dropped"),
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let Storage::Pooled(bytes) = &mut self.storage else {
            return;
        };
        let Some(bytes) = bytes.take() else {
            return;
        };
        let mut pool = POOL.lock().unwrap_or_else(|poison| poison.into_inner());
        let idle_bytes: usize = pool.iter().map(|idle| idle.len()).sum();
        if idle_bytes + bytes.len() <= POOL_IDLE_BYTES_MAX {
            pool.push(bytes);
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
                Ok(mut buffer) => match &mut buffer.storage {
                    Storage::Heap(bytes) => std::mem::take(bytes),
                    Storage::Pooled(_) => buffer.to_vec(),
                },
                Err(buffer) => buffer.to_vec(),
            }
        } else {
            self.buffer[self.range].to_vec()
        }
    }

    /// The same bytes in an allocation of their own (a copy), so that the
    /// buffer they were cut from is no longer held by them.
    pub fn detached(&self) -> ChunkBytes {
        ChunkBytes::from(self.to_vec())
    }

    /// Which buffer these bytes lie in (equal for every chunk cut from one
    /// buffer while it lives), and its size: what holding them keeps
    /// allocated.
    pub fn buffer_identity(&self) -> (usize, usize) {
        (Arc::as_ptr(&self.buffer) as usize, self.buffer.len())
    }

    /// These bytes followed by `next`'s, as one range, when `next` was cut
    /// from the same buffer right after them; otherwise `None`.
    pub fn joined(&self, next: &ChunkBytes) -> Option<ChunkBytes> {
        let adjacent =
            Arc::ptr_eq(&self.buffer, &next.buffer) && self.range.end == next.range.start;
        adjacent.then(|| ChunkBytes {
            buffer: Arc::clone(&self.buffer),
            range: self.range.start..next.range.end,
        })
    }

    /// These bytes widened to whole [`BLOCK_BYTES`] blocks of the aligned
    /// buffer they lie in, and where they start in that window; `None` for
    /// bytes of an unaligned buffer. The window is what an `O_DIRECT` write
    /// can take uncopied. The bytes around these are the buffer's own: the
    /// same file's neighbouring bytes, or zeroes past its end (the chunker
    /// clears the rest of a file's last block), never another file's.
    pub fn block_window(&self) -> Option<(&[u8], usize)> {
        if !self.buffer.is_aligned() {
            return None;
        }
        let start_index = self.range.start - self.range.start % BLOCK_BYTES;
        let end_index = self.range.end.next_multiple_of(BLOCK_BYTES);
        let window = self.buffer.get(start_index..end_index)?;
        Some((window, self.range.start - start_index))
    }
}

impl Deref for ChunkBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buffer[self.range.clone()]
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

impl PartialEq for ChunkBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for ChunkBytes {}

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
        let size_bytes = 3 * BLOCK_BYTES;
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
    fn adjacent_cuts_join_and_widen_to_whole_blocks_of_an_aligned_buffer() {
        let mut buffer = Buffer::pooled(4 * BLOCK_BYTES);
        for (index, byte) in buffer.iter_mut().enumerate() {
            *byte = index as u8;
        }
        let buffer = Arc::new(buffer);
        let first = ChunkBytes::cut(&buffer, 100..5000);
        let second = ChunkBytes::cut(&buffer, 5000..9000);
        let run = first.joined(&second).expect("adjacent cuts join");
        assert_eq!(&*run, &buffer[100..9000]);
        assert!(second.joined(&first).is_none(), "only in order");
        let (window, start_index) = run.block_window().expect("an aligned buffer");
        assert_eq!(window.as_ptr() as usize % BLOCK_BYTES, 0);
        assert_eq!((window.len(), start_index), (3 * BLOCK_BYTES, 100));
        assert_eq!(&window[start_index..start_index + run.len()], &*run);
        let unaligned = ChunkBytes::from(vec![1_u8; 10]);
        assert!(unaligned.block_window().is_none());
        assert!(unaligned.joined(&run).is_none());
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
        assert_eq!(
            encoded,
            serde_json::to_string(&vec![2_u8, 3]).expect("encodes")
        );
        let decoded: ChunkBytes = serde_json::from_str(&encoded).expect("decodes");
        assert_eq!(decoded, chunk);
    }
}
