//! Content-defined chunking: FastCDC v2020 over any `std::io::Read`, streaming.
//!
//! Cut points depend only on the bytes near them, so an insertion moves the
//! boundaries around the edit and nowhere else; every later chunk keeps its
//! fingerprint and deduplicates. The reader reads into buffers of a few
//! maximum-size chunks and cuts chunks out of them without copying; it never
//! holds the whole file.

use std::io::{self, Read};
use std::sync::Arc;

use fastcdc::v2020::{self, Normalization};

use crate::chunk_bytes::{Buffer, ChunkBytes};
use crate::disk::{BLOCK_BYTES, HUGE_PAGE_BYTES};

/// Chunk size bounds handed to FastCDC.
///
/// The default average is 64 KiB. Measured on this kind of machine (see the
/// project notes), FastCDC + SHA-256 at a 16 KiB average deduplicated three
/// versions of a 1 GiB file 2.99×, at 1 MiB (restic's average) 2.51×: smaller
/// chunks find more of the unchanged bytes around each edit. 64 KiB keeps most
/// of that gain while holding per-chunk costs (index entries, manifest size,
/// one channel message and one lookup per chunk) to a quarter of 16 KiB's.
/// The benchmark reports the ratio for other averages; change
/// [`ChunkerConfig::DEFAULT_SIZE_AVG_BYTES`] to move the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerConfig {
    /// No cut before this many bytes (except a file's last chunk).
    pub size_min_bytes: usize,
    /// The target average chunk size.
    pub size_avg_bytes: usize,
    /// A cut is forced at this size.
    pub size_max_bytes: usize,
}

impl ChunkerConfig {
    /// The default average chunk size; minimum and maximum follow as ¼ and 4×.
    pub const DEFAULT_SIZE_AVG_BYTES: usize = 64 * 1024;

    /// min = avg/4, max = avg*4: FastCDC's recommended spread around `avg`.
    pub fn with_average(size_avg_bytes: usize) -> Self {
        Self {
            size_min_bytes: size_avg_bytes / 4,
            size_avg_bytes,
            size_max_bytes: size_avg_bytes * 4,
        }
    }

    /// Checks the bounds FastCDC v2020 accepts: even sizes,
    /// 64 ≤ min ≤ avg ≤ max, avg in 256 B..=4 MiB, max ≤ 16 MiB.
    pub fn validate(&self) -> Result<(), ChunkerConfigError> {
        let Self {
            size_min_bytes: min,
            size_avg_bytes: avg,
            size_max_bytes: max,
        } = *self;
        let problem = if !(v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min) {
            Some(format!("min {min} is outside 64..=1048576"))
        } else if !(v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg) {
            Some(format!("avg {avg} is outside 256..=4194304"))
        } else if !(v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max) {
            Some(format!("max {max} is outside 1024..=16777216"))
        } else if !(min <= avg && avg <= max) {
            Some(format!("min {min} <= avg {avg} <= max {max} does not hold"))
        } else if min % 2 + avg % 2 + max % 2 != 0 {
            Some(format!("sizes {min}/{avg}/{max} must all be even"))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(ChunkerConfigError {
                config: *self,
                problem,
            }),
            None => Ok(()),
        }
    }
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self::with_average(Self::DEFAULT_SIZE_AVG_BYTES)
    }
}

/// Chunk sizes FastCDC cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "chunker sizes {config:?} are not usable: {problem}; use even sizes with \
     64 <= min <= avg <= max, avg in 256..=4194304 and max <= 16777216"
)]
pub struct ChunkerConfigError {
    /// The configuration refused.
    pub config: ChunkerConfig,
    /// Which bound it breaks.
    pub problem: String,
}

/// Streams the chunks of a reader: each item is one chunk's bytes, in order.
/// Concatenated, the chunks are exactly the reader's bytes.
///
/// Chunks are cut out of the read buffer without a copy ([`ChunkBytes`]):
/// a refill starts a fresh buffer (from the pool) while chunks still hold
/// the current one, carrying over only the unconsumed tail.
pub struct ChunkReader<R> {
    reader: R,
    config: ChunkerConfig,
    mask_s: u64,
    mask_l: u64,
    buffer: Arc<Buffer>,
    start_index: usize,
    end_index: usize,
    at_eof: bool,
}

impl<R: Read> ChunkReader<R> {
    /// A chunk stream over `reader`. Panics on a config that fails
    /// [`ChunkerConfig::validate`]: callers validate once at the boundary.
    pub fn new(reader: R, config: ChunkerConfig) -> Self {
        Self::with_size_hint(reader, config, usize::MAX)
    }

    /// As [`ChunkReader::new`], starting with a buffer fitted to a reader
    /// expected to hold `size_hint_bytes` (many small files then cost no
    /// megabyte-sized buffers). The buffer grows if the reader holds more.
    pub fn with_size_hint(reader: R, config: ChunkerConfig, size_hint_bytes: usize) -> Self {
        config
            .validate()
            .expect("chunker config is validated when the repository opens");
        let (mask_s, mask_l) = v2020::select_masks(config.size_avg_bytes, Normalization::Level1);
        // One byte past the hint lets the first refill see the end of file;
        // whole huge pages keep the pool's buffers to a few sizes.
        let buffer_size_bytes = size_hint_bytes
            .saturating_add(1)
            .min(buffer_size_max(&config))
            .next_multiple_of(HUGE_PAGE_BYTES);
        Self {
            reader,
            config,
            mask_s,
            mask_l,
            buffer: Arc::new(Buffer::pooled(buffer_size_bytes)),
            start_index: 0,
            end_index: 0,
            at_eof: false,
        }
    }

    /// Moves the unconsumed tail to the front and reads until the buffer is
    /// full or the reader is exhausted.
    fn refill(&mut self) -> io::Result<()> {
        let tail = self.start_index..self.end_index;
        let full = tail.len() == self.buffer.len();
        if full {
            // Only a buffer smaller than one maximum chunk can be full here.
            assert!(self.buffer.len() < self.config.size_max_bytes);
        }
        match Arc::get_mut(&mut self.buffer) {
            Some(writable) if !full => writable.copy_within(tail.clone(), 0),
            // Chunks still hold it (or it is too small): start another.
            _ => {
                let mut next = Buffer::pooled(buffer_size_max(&self.config));
                next[..tail.len()].copy_from_slice(&self.buffer[tail.clone()]);
                self.buffer = Arc::new(next);
            }
        }
        self.start_index = 0;
        self.end_index = tail.len();
        let buffer = Arc::get_mut(&mut self.buffer).expect("held by no chunk while reading");
        while self.end_index < buffer.len() {
            match self.reader.read(&mut buffer[self.end_index..]) {
                Ok(0) => {
                    self.at_eof = true;
                    break;
                }
                Ok(count) => self.end_index += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        if self.at_eof {
            // Past the end lies an earlier use's data, perhaps another
            // file's: zero the rest of the last block, which a pack write
            // straight from this buffer covers (ChunkBytes::block_window).
            let block_end = self
                .end_index
                .next_multiple_of(BLOCK_BYTES)
                .min(buffer.len());
            buffer[self.end_index..block_end].fill(0);
        }
        Ok(())
    }

    fn cut_next(&mut self) -> ChunkBytes {
        let window = &self.buffer[self.start_index..self.end_index];
        let size_bytes = cut_length(window, &self.config, self.mask_s, self.mask_l);
        let range = self.start_index..self.start_index + size_bytes;
        self.start_index += size_bytes;
        ChunkBytes::cut(&self.buffer, range)
    }
}

/// The length of the chunk at the start of `window`, which holds at least a
/// maximum-size chunk or else the rest of the input.
fn cut_length(window: &[u8], config: &ChunkerConfig, mask_s: u64, mask_l: u64) -> usize {
    let ChunkerConfig {
        size_min_bytes,
        size_avg_bytes,
        size_max_bytes,
    } = *config;
    let (_, size_bytes) = v2020::cut(
        window,
        size_min_bytes,
        size_avg_bytes,
        size_max_bytes,
        mask_s,
        mask_l,
        mask_s << 1,
        mask_l << 1,
    );
    assert!(size_bytes > 0 && size_bytes <= size_max_bytes.min(window.len()));
    size_bytes
}

/// Splits bytes already in memory into the chunks a [`ChunkReader`] over them
/// would yield, each a range of `bytes` (no copy); empty input is no chunk.
pub fn split_in_memory(bytes: Vec<u8>, config: ChunkerConfig) -> Vec<ChunkBytes> {
    config
        .validate()
        .expect("chunker config is validated when the repository opens");
    let (mask_s, mask_l) = v2020::select_masks(config.size_avg_bytes, Normalization::Level1);
    let mut lengths = Vec::new();
    let mut start_index = 0;
    while start_index < bytes.len() {
        let length = cut_length(&bytes[start_index..], &config, mask_s, mask_l);
        lengths.push(length);
        start_index += length;
    }
    let buffer = Arc::new(Buffer::from(bytes));
    let mut chunks = Vec::with_capacity(lengths.len());
    let mut start_index = 0;
    for length in lengths {
        chunks.push(ChunkBytes::cut(&buffer, start_index..start_index + length));
        start_index += length;
    }
    chunks
}

/// Four maximum chunks per refill amortise the carrying over of the tail
/// (at least 4 MiB, so it is a few percent of the bytes read), in whole
/// huge pages.
fn buffer_size_max(config: &ChunkerConfig) -> usize {
    (config.size_max_bytes * 4)
        .max(4 << 20)
        .next_multiple_of(HUGE_PAGE_BYTES)
}

impl<R: Read> Iterator for ChunkReader<R> {
    type Item = io::Result<ChunkBytes>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let available_bytes = self.end_index - self.start_index;
            // A cut needs a full maximum-size window, or the file's tail.
            if available_bytes >= self.config.size_max_bytes || (self.at_eof && available_bytes > 0)
            {
                return Some(Ok(self.cut_next()));
            }
            if self.at_eof {
                return None;
            }
            if let Err(error) = self.refill() {
                self.at_eof = true;
                self.start_index = self.end_index;
                return Some(Err(error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::Fingerprint;

    fn random_bytes(size_bytes: usize, seed: u64) -> Vec<u8> {
        let mut bytes = vec![0; size_bytes];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
        bytes
    }

    fn fingerprints(bytes: &[u8], config: ChunkerConfig) -> Vec<Fingerprint> {
        let chunks = ChunkReader::new(bytes, config).map(|chunk| chunk.unwrap());
        chunks.map(|chunk| Fingerprint::of(&chunk)).collect()
    }

    #[test]
    fn chunks_concatenate_to_the_input_and_match_fastcdc_in_memory() {
        let config = ChunkerConfig::with_average(4096);
        let bytes = random_bytes(3 << 20, 1);
        let streamed: Vec<Vec<u8>> = ChunkReader::new(&bytes[..], config)
            .map(|chunk| chunk.unwrap().into_vec())
            .collect();
        assert_eq!(streamed.concat(), bytes);
        let in_memory: Vec<usize> = v2020::FastCDC::new(&bytes, 1024, 4096, 16384)
            .map(|chunk| chunk.length)
            .collect();
        let streamed_sizes: Vec<usize> = streamed.iter().map(Vec::len).collect();
        assert_eq!(streamed_sizes, in_memory);
        assert!(ChunkReader::new(&b""[..], config).next().is_none());
        assert_eq!(split_in_memory(bytes.clone(), config), streamed);
        assert!(split_in_memory(Vec::new(), config).is_empty());
        let one_chunk = bytes[..3000].to_vec();
        assert_eq!(split_in_memory(one_chunk.clone(), config), vec![one_chunk]);
        // A wrong size hint (the file grew after listing) still reads it all.
        let hinted: Vec<Vec<u8>> = ChunkReader::with_size_hint(&bytes[..], config, 10)
            .map(|chunk| chunk.unwrap().into_vec())
            .collect();
        assert_eq!(hinted, streamed);
    }

    /// Inserting bytes mid-file must only disturb the chunks around the
    /// edit; fixed-size blocks would shift, and so change, every later block.
    #[test]
    fn insertion_changes_only_chunks_near_the_edit() {
        let config = ChunkerConfig::with_average(8192);
        let original = random_bytes(4 << 20, 2);
        let mut edited = original.clone();
        let middle_index = original.len() / 2;
        edited.splice(middle_index..middle_index, random_bytes(100, 3));

        let before = fingerprints(&original, config);
        let after = fingerprints(&edited, config);
        let kept: std::collections::HashSet<_> = before.iter().collect();
        let new_count = after
            .iter()
            .filter(|fingerprint| !kept.contains(fingerprint))
            .count();
        assert!(
            before.len() > 300,
            "expected hundreds of chunks, got {}",
            before.len()
        );
        assert!((1..=3).contains(&new_count), "{new_count} chunks changed");

        let block_size_bytes = 8192;
        let blocks = |bytes: &[u8]| -> Vec<Fingerprint> {
            bytes
                .chunks(block_size_bytes)
                .map(Fingerprint::of)
                .collect()
        };
        let fixed_before: std::collections::HashSet<_> = blocks(&original).into_iter().collect();
        let fixed_changed = blocks(&edited)
            .iter()
            .filter(|block| !fixed_before.contains(block))
            .count();
        let block_count = original.len() / block_size_bytes;
        assert!(
            fixed_changed >= block_count / 2,
            "fixed blocks changed: {fixed_changed}"
        );
    }

    #[test]
    fn bad_configs_are_refused_with_the_bound_named() {
        let small = ChunkerConfig {
            size_min_bytes: 64,
            size_avg_bytes: 100,
            size_max_bytes: 4096,
        };
        let error = small.validate().unwrap_err();
        assert!(error.to_string().contains("avg 100 is outside"), "{error}");
        let odd = ChunkerConfig {
            size_min_bytes: 1025,
            size_avg_bytes: 4096,
            size_max_bytes: 8192,
        };
        assert!(odd.validate().unwrap_err().problem.contains("even"));
        ChunkerConfig::default().validate().unwrap();
    }
}
