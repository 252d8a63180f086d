//! The chunk store: chunks keyed by fingerprint, kept durably in packs.
//!
//! One upload batch becomes one pack file written with `write_atomic`, so a
//! batch costs one fsync instead of one per chunk (at ~0.5 ms per fsync here,
//! per-chunk files would cap a first backup near 30 MiB/s). A pack is a
//! header naming its chunks with each one's offset and length, then their
//! bytes. Its name is the SHA-256 of the header, so a damaged header is
//! detected at open and two uploads of the same batch write the same pack.
//! Hold in mind: **a chunk is located only after the pack holding it is
//! durable**, and reads verify every byte against the fingerprint.
//!
//! The offsets are explicit so that chunks can be written straight from the
//! aligned buffers they were read into: a run of chunks cut one after
//! another from one buffer is placed where the file's blocks line up with
//! the buffer's, and goes to disk with `O_DIRECT` uncopied; the few bytes
//! skipped between runs belong to no chunk. Chunks from other memory are
//! packed tightly and staged. Packs of the first format (`CCPACK01`, each
//! chunk right after the one before) are still read.
//!
//! Layout: `data/<first two hex digits>/<pack id>.pack`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::disk::{self, Disk};
use crate::service::{ChunkProblem, PutOutcome, ServiceError, ServiceResult};
use crate::{ChunkBytes, Fingerprint};

/// The format written: entries of fingerprint, offset (u64) and length
/// (u32), big-endian.
const PACK_MAGIC: &[u8; 8] = b"CCPACK02";
/// The first format, still read: entries of fingerprint and length, the
/// chunks packed in order right after the header.
const PACK_MAGIC_V1: &[u8; 8] = b"CCPACK01";
const PACK_PREAMBLE_BYTES: usize = 12;
const PACK_ENTRY_BYTES: usize = Fingerprint::SIZE_BYTES + 8 + 4;
const PACK_ENTRY_V1_BYTES: usize = Fingerprint::SIZE_BYTES + 4;
pub(crate) const DATA_DIR: &str = "data";
/// Where repair moves packs it cannot read (outside [`DATA_DIR`]).
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// A chunk's entry in a pack header: fingerprint, offset and length in bytes.
type PackEntry = (Fingerprint, u64, u32);

#[derive(Debug, Clone, Copy)]
struct Location {
    pack_index: usize,
    offset_bytes: u64,
    length_bytes: u32,
}

#[derive(Debug, Default)]
struct StoreState {
    pack_paths: Vec<String>,
    locations: HashMap<Fingerprint, Location>,
    damaged_packs: Vec<(String, ChunkProblem)>,
}

impl StoreState {
    /// Records pack `pack_path` holding `entries`; for each entry, its length
    /// and whether the chunk is new (a chunk already held keeps the place
    /// it has: both copies are sound).
    fn add_pack(&mut self, pack_path: String, entries: Vec<PackEntry>) -> Vec<(u32, bool)> {
        let pack_index = self.pack_paths.len();
        self.pack_paths.push(pack_path);
        entries
            .into_iter()
            .map(|(fingerprint, offset_bytes, length_bytes)| {
                let location = Location {
                    pack_index,
                    offset_bytes,
                    length_bytes,
                };
                let new = match self.locations.entry(fingerprint) {
                    Entry::Vacant(slot) => {
                        slot.insert(location);
                        true
                    }
                    Entry::Occupied(_) => false,
                };
                (length_bytes, new)
            })
            .collect()
    }
}

/// A pack that could not be opened, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DamagedPack {
    /// Disk path of the pack.
    pub path: String,
    /// What is wrong with it.
    pub problem: ChunkProblem,
}

/// The result of re-reading one pack in full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackCheck {
    /// Chunks whose bytes hash to their fingerprint.
    pub sound: Vec<Fingerprint>,
    /// Chunks whose bytes do not, with the problem.
    pub damaged: Vec<(Fingerprint, ChunkProblem)>,
    /// Set when the pack as a whole is unreadable (its chunks are unknown).
    pub pack_problem: Option<ChunkProblem>,
}

/// Content-addressed chunk storage over a [`Disk`].
pub struct ChunkStore {
    disk: Arc<dyn Disk>,
    state: Mutex<StoreState>,
}

impl ChunkStore {
    /// Opens the store, reading every pack header. Damaged packs do not stop
    /// the open: they are listed by [`ChunkStore::damaged_packs`] and their
    /// chunks count as absent.
    pub fn open(disk: Arc<dyn Disk>) -> ServiceResult<Self> {
        let state = load_state(disk.as_ref())?;
        Ok(Self {
            disk,
            state: Mutex::new(state),
        })
    }

    /// Rewrites every pack holding damaged chunks without them, and returns
    /// each rewritten pack's old path with the chunks dropped. Each pack is
    /// read once; its sound chunks go to a new pack, durable before the old
    /// one is removed, so a crash in between leaves only a second copy of
    /// sound chunks. The store then no longer holds a dropped chunk (unless
    /// another pack has a sound copy), so the next backup of the same data
    /// stores it again.
    pub fn drop_damaged_chunks(&self) -> ServiceResult<Vec<(String, Vec<Fingerprint>)>> {
        let mut rewritten = Vec::new();
        for pack_path in self.pack_paths() {
            let bytes = self
                .disk
                .read(&pack_path)
                .map_err(|error| ServiceError::storage(&pack_path, &error))?;
            let Ok(entries) = parse_pack_header(&pack_path, &bytes) else {
                continue;
            };
            let mut kept: Vec<(Fingerprint, ChunkBytes)> = Vec::new();
            let mut dropped = Vec::new();
            for (fingerprint, chunk) in check_entries(&bytes, entries) {
                match chunk {
                    Ok(chunk) => kept.push((fingerprint, chunk.to_vec().into())),
                    Err(_) => dropped.push(fingerprint),
                }
            }
            if dropped.is_empty() {
                continue;
            }
            if !kept.is_empty() {
                self.write_pack(&kept.iter().collect::<Vec<_>>())?;
            }
            self.disk
                .remove(&pack_path)
                .map_err(|error| ServiceError::storage(&pack_path, &error))?;
            let dir = disk::parent_dir(&pack_path);
            self.disk
                .fsync_dir(dir)
                .map_err(|error| ServiceError::storage(dir, &error))?;
            rewritten.push((pack_path, dropped));
        }
        if !rewritten.is_empty() {
            *self.state.lock().expect("store lock") = load_state(self.disk.as_ref())?;
        }
        Ok(rewritten)
    }

    /// Moves every pack found unreadable at open (its header cannot be read,
    /// so its chunks are unknown and already count as absent) out of the
    /// store into `quarantine/`, bytes unchanged: nothing is deleted, and
    /// fsck stops reporting a pack that no backup can use. Returns the new
    /// paths.
    pub fn quarantine_unreadable_packs(&self) -> ServiceResult<Vec<String>> {
        let damaged = self.damaged_packs();
        let mut moved = Vec::with_capacity(damaged.len());
        for pack in damaged {
            let bytes = self
                .disk
                .read(&pack.path)
                .map_err(|error| ServiceError::storage(&pack.path, &error))?;
            let name = pack.path.rsplit('/').next().unwrap_or(&pack.path);
            let to = disk::free_path(self.disk.as_ref(), &format!("{QUARANTINE_DIR}/{name}"))
                .map_err(|error| ServiceError::storage(QUARANTINE_DIR, &error))?;
            disk::write_atomic(self.disk.as_ref(), &to, &bytes)
                .map_err(|error| ServiceError::storage(&to, &error))?;
            self.disk
                .remove(&pack.path)
                .map_err(|error| ServiceError::storage(&pack.path, &error))?;
            let dir = disk::parent_dir(&pack.path);
            self.disk
                .fsync_dir(dir)
                .map_err(|error| ServiceError::storage(dir, &error))?;
            moved.push(to);
        }
        if !moved.is_empty() {
            *self.state.lock().expect("store lock") = load_state(self.disk.as_ref())?;
        }
        Ok(moved)
    }

    /// Writes `chunks` as one pack, durably (see [`lay_out_pack`]); returns
    /// its path and each chunk's place in it.
    fn write_pack(
        &self,
        chunks: &[&(Fingerprint, ChunkBytes)],
    ) -> ServiceResult<(String, Vec<PackEntry>)> {
        let layout = lay_out_pack(chunks);
        let header_piece = disk::Piece {
            offset_bytes: 0,
            bytes: &layout.header,
            block_window: None,
        };
        let run_pieces = layout.runs.iter().map(|(offset_bytes, bytes)| disk::Piece {
            offset_bytes: *offset_bytes,
            bytes,
            block_window: bytes.block_window(),
        });
        let pieces: Vec<disk::Piece<'_>> =
            std::iter::once(header_piece).chain(run_pieces).collect();
        let pack_path = layout.pack_path;
        disk::write_atomic_pieces(self.disk.as_ref(), &pack_path, layout.length_bytes, &pieces)
            .map_err(|error| ServiceError::storage(&pack_path, &error))?;
        Ok((pack_path, layout.entries))
    }

    /// True when the store holds `fingerprint` durably.
    pub fn contains(&self, fingerprint: &Fingerprint) -> bool {
        self.state
            .lock()
            .expect("store lock")
            .locations
            .contains_key(fingerprint)
    }

    /// The first of `fingerprints` the store does not hold, checked under
    /// one lock (a manifest names tens of thousands).
    pub fn first_missing<'a>(
        &self,
        fingerprints: impl IntoIterator<Item = &'a Fingerprint>,
    ) -> Option<Fingerprint> {
        let state = self.state.lock().expect("store lock");
        fingerprints
            .into_iter()
            .find(|fingerprint| !state.locations.contains_key(fingerprint))
            .copied()
    }

    /// The length in bytes of chunk `fingerprint`, when the store holds it.
    pub fn length_of(&self, fingerprint: &Fingerprint) -> Option<u64> {
        let state = self.state.lock().expect("store lock");
        let location = state.locations.get(fingerprint)?;
        Some(u64::from(location.length_bytes))
    }

    /// The pack a read of `fingerprint` goes to: of several copies, the one
    /// registered first.
    pub fn pack_of(&self, fingerprint: &Fingerprint) -> Option<String> {
        let state = self.state.lock().expect("store lock");
        let location = state.locations.get(fingerprint)?;
        Some(state.pack_paths[location.pack_index].clone())
    }

    /// Number of distinct chunks held.
    pub fn chunk_count(&self) -> usize {
        self.state.lock().expect("store lock").locations.len()
    }

    /// Every fingerprint held.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.state
            .lock()
            .expect("store lock")
            .locations
            .keys()
            .copied()
            .collect()
    }

    /// Every readable pack's disk path.
    pub fn pack_paths(&self) -> Vec<String> {
        self.state.lock().expect("store lock").pack_paths.clone()
    }

    /// Packs found unreadable at open.
    pub fn damaged_packs(&self) -> Vec<DamagedPack> {
        let state = self.state.lock().expect("store lock");
        let damaged = state.damaged_packs.iter().cloned();
        damaged
            .map(|(path, problem)| DamagedPack { path, problem })
            .collect()
    }

    /// Stores the chunks not yet held, as one pack, durably; returns after
    /// the pack is fsynced and renamed into place. Idempotent: chunks already
    /// held (or repeated in the batch) are counted as duplicates, not written.
    ///
    /// The bytes are trusted to match their fingerprints; a receiver at a
    /// trust boundary (an RPC server) calls [`verify_chunks`] first.
    pub fn put_batch(&self, chunks: &[(Fingerprint, ChunkBytes)]) -> ServiceResult<PutOutcome> {
        let mut outcome = PutOutcome::default();
        let mut new_chunks: Vec<&(Fingerprint, ChunkBytes)> = Vec::with_capacity(chunks.len());
        {
            let state = self.state.lock().expect("store lock");
            let mut in_batch = HashSet::with_capacity(chunks.len());
            for chunk in chunks {
                if state.locations.contains_key(&chunk.0) || !in_batch.insert(chunk.0) {
                    outcome.duplicate_chunks += 1;
                } else {
                    new_chunks.push(chunk);
                }
            }
        }
        if new_chunks.is_empty() {
            return Ok(outcome);
        }
        let (pack_path, entries) = self.write_pack(&new_chunks)?;
        // Durable now: only from here may anyone learn these chunks exist.
        let mut state = self.state.lock().expect("store lock");
        for (length_bytes, new) in state.add_pack(pack_path, entries) {
            if new {
                outcome.stored_chunks += 1;
                outcome.stored_bytes += u64::from(length_bytes);
            } else {
                // Another put landed the same chunk meanwhile; both copies are sound.
                outcome.duplicate_chunks += 1;
            }
        }
        Ok(outcome)
    }

    /// The bytes of `fingerprint`, verified: a typed error names the chunk
    /// when it is absent, empty, truncated or hashes to something else.
    pub fn get(&self, fingerprint: &Fingerprint) -> ServiceResult<Vec<u8>> {
        let (pack_path, location) = {
            let state = self.state.lock().expect("store lock");
            let location = *state
                .locations
                .get(fingerprint)
                .ok_or(ServiceError::ChunkMissing {
                    fingerprint: *fingerprint,
                })?;
            (state.pack_paths[location.pack_index].clone(), location)
        };
        let length_bytes = location.length_bytes as usize;
        let bytes = self
            .disk
            .read_range(&pack_path, location.offset_bytes, length_bytes)
            .map_err(|error| ServiceError::ChunkDamaged {
                fingerprint: *fingerprint,
                problem: ChunkProblem::Unreadable {
                    detail: format!("{pack_path}: {error}"),
                },
            })?;
        let damaged = |problem| ServiceError::ChunkDamaged {
            fingerprint: *fingerprint,
            problem,
        };
        if bytes.len() < length_bytes {
            let pack_empty = bytes.is_empty()
                && self
                    .disk
                    .read_range(&pack_path, 0, 1)
                    .map(|b| b.is_empty())
                    .unwrap_or(false);
            return Err(damaged(if pack_empty {
                ChunkProblem::ZeroLength
            } else {
                ChunkProblem::Truncated {
                    expected_bytes: length_bytes as u64,
                    found_bytes: bytes.len() as u64,
                }
            }));
        }
        check_chunk(fingerprint, &bytes).map_err(damaged)?;
        Ok(bytes)
    }

    /// Re-reads a whole pack and re-hashes each of its chunks (for fsck).
    pub fn check_pack(&self, pack_path: &str) -> ServiceResult<PackCheck> {
        let bytes = self
            .disk
            .read(pack_path)
            .map_err(|error| ServiceError::storage(pack_path, &error))?;
        let mut check = PackCheck::default();
        let entries = match parse_pack_header(pack_path, &bytes) {
            Ok(entries) => entries,
            Err(problem) => {
                check.pack_problem = Some(problem);
                return Ok(check);
            }
        };
        for (fingerprint, chunk) in check_entries(&bytes, entries) {
            match chunk {
                Ok(_) => check.sound.push(fingerprint),
                Err(problem) => check.damaged.push((fingerprint, problem)),
            }
        }
        Ok(check)
    }
}

/// Each entry of a pack (`bytes`, its header already parsed into `entries`)
/// with its chunk's bytes when they are all there and hash to its name.
fn check_entries(
    bytes: &[u8],
    entries: Vec<PackEntry>,
) -> impl Iterator<Item = (Fingerprint, Result<&[u8], ChunkProblem>)> {
    entries
        .into_iter()
        .map(move |(fingerprint, offset_bytes, length_bytes)| {
            let start_index = offset_bytes as usize;
            let end_index = start_index + length_bytes as usize;
            let chunk = if end_index > bytes.len() {
                Err(ChunkProblem::Truncated {
                    expected_bytes: u64::from(length_bytes),
                    found_bytes: bytes.len().saturating_sub(start_index) as u64,
                })
            } else {
                let chunk = &bytes[start_index..end_index];
                check_chunk(&fingerprint, chunk).map(|()| chunk)
            };
            (fingerprint, chunk)
        })
}

/// Reads every pack header: where each chunk is, and which packs are
/// unreadable (their chunks count as absent).
fn load_state(disk: &dyn Disk) -> ServiceResult<StoreState> {
    let mut state = StoreState::default();
    for pack_path in list_packs(disk)? {
        match read_pack_header(disk, &pack_path) {
            Ok(entries) => {
                state.add_pack(pack_path, entries);
            }
            Err(PackError::Damaged(problem)) => state.damaged_packs.push((pack_path, problem)),
            Err(PackError::Storage(error)) => return Err(error),
        }
    }
    Ok(state)
}

/// Checks that every chunk's bytes hash to its fingerprint: what a service
/// receiving chunks from the network runs before [`ChunkStore::put_batch`].
pub fn verify_chunks(chunks: &[(Fingerprint, ChunkBytes)]) -> ServiceResult<()> {
    for (fingerprint, bytes) in chunks {
        check_chunk(fingerprint, bytes).map_err(|problem| ServiceError::ChunkDamaged {
            fingerprint: *fingerprint,
            problem,
        })?;
    }
    Ok(())
}

fn check_chunk(fingerprint: &Fingerprint, bytes: &[u8]) -> Result<(), ChunkProblem> {
    let found = Fingerprint::of(bytes);
    if found == *fingerprint {
        Ok(())
    } else if bytes.is_empty() {
        Err(ChunkProblem::ZeroLength)
    } else {
        Err(ChunkProblem::HashMismatch { found })
    }
}

enum PackError {
    Damaged(ChunkProblem),
    Storage(ServiceError),
}

fn list_packs(disk: &dyn Disk) -> ServiceResult<Vec<String>> {
    let listing_error = |path: &str, error: std::io::Error| ServiceError::storage(path, &error);
    let mut pack_paths = Vec::new();
    for prefix in disk
        .list(DATA_DIR)
        .map_err(|error| listing_error(DATA_DIR, error))?
    {
        // Packs live in directories named by two hex digits; anything else
        // (a stray README) is not the store's.
        let is_pack_dir = prefix.len() == 2 && prefix.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_pack_dir {
            continue;
        }
        let prefix_dir = disk::join(DATA_DIR, &prefix);
        let names = match disk.list(&prefix_dir) {
            Ok(names) => names,
            Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(error) => return Err(listing_error(&prefix_dir, error)),
        };
        for name in names {
            if name.ends_with(".pack") {
                pack_paths.push(disk::join(&prefix_dir, &name));
            }
        }
    }
    Ok(pack_paths)
}

/// Reads only the header: two small range reads per pack at open.
fn read_pack_header(disk: &dyn Disk, pack_path: &str) -> Result<Vec<PackEntry>, PackError> {
    let storage =
        |error: std::io::Error| PackError::Storage(ServiceError::storage(pack_path, &error));
    let preamble = disk
        .read_range(pack_path, 0, PACK_PREAMBLE_BYTES)
        .map_err(storage)?;
    let header_size_bytes = match parse_preamble(&preamble) {
        Ok(format) => format.header_size_bytes,
        Err(problem) => return Err(PackError::Damaged(problem)),
    };
    let header = disk
        .read_range(pack_path, 0, header_size_bytes)
        .map_err(storage)?;
    parse_pack_header(pack_path, &header).map_err(PackError::Damaged)
}

/// What a pack's preamble says.
struct PackFormat {
    first_format: bool,
    entry_count: usize,
    header_size_bytes: usize,
}

fn parse_preamble(bytes: &[u8]) -> Result<PackFormat, ChunkProblem> {
    if bytes.is_empty() {
        return Err(ChunkProblem::ZeroLength);
    }
    let magic = bytes.get(..8);
    let first_format = magic == Some(PACK_MAGIC_V1);
    if bytes.len() < PACK_PREAMBLE_BYTES || !(first_format || magic == Some(PACK_MAGIC)) {
        let detail = "the pack does not start with a CCPACK02 (or CCPACK01) header".to_string();
        return Err(ChunkProblem::Unreadable { detail });
    }
    let entry_count = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let entry_bytes = if first_format {
        PACK_ENTRY_V1_BYTES
    } else {
        PACK_ENTRY_BYTES
    };
    Ok(PackFormat {
        first_format,
        entry_count,
        header_size_bytes: PACK_PREAMBLE_BYTES + entry_count * entry_bytes,
    })
}

/// Parses a header (and possibly data after it) into (fingerprint, absolute
/// offset, length) triples, checking the header hashes to the pack's name.
fn parse_pack_header(pack_path: &str, bytes: &[u8]) -> Result<Vec<PackEntry>, ChunkProblem> {
    let format = parse_preamble(bytes)?;
    let header_size_bytes = format.header_size_bytes;
    if bytes.len() < header_size_bytes {
        let detail = format!(
            "header truncated: {} of {header_size_bytes} bytes",
            bytes.len()
        );
        return Err(ChunkProblem::Unreadable { detail });
    }
    let header = &bytes[..header_size_bytes];
    let expected_name = format!("{}.pack", Fingerprint::of(header).to_hex());
    if !pack_path.ends_with(&expected_name) {
        let detail = "the header does not hash to the pack's name (damaged header)".to_string();
        return Err(ChunkProblem::Unreadable { detail });
    }
    let mut entries = Vec::with_capacity(format.entry_count);
    if format.first_format {
        let mut offset_bytes = header_size_bytes as u64;
        for entry in header[PACK_PREAMBLE_BYTES..].chunks_exact(PACK_ENTRY_V1_BYTES) {
            let fingerprint = Fingerprint(entry[..32].try_into().expect("32 bytes"));
            let length_bytes = u32::from_be_bytes(entry[32..36].try_into().expect("4 bytes"));
            entries.push((fingerprint, offset_bytes, length_bytes));
            offset_bytes += u64::from(length_bytes);
        }
        return Ok(entries);
    }
    for entry in header[PACK_PREAMBLE_BYTES..].chunks_exact(PACK_ENTRY_BYTES) {
        let fingerprint = Fingerprint(entry[..32].try_into().expect("32 bytes"));
        let offset_bytes = u64::from_be_bytes(entry[32..40].try_into().expect("8 bytes"));
        let length_bytes = u32::from_be_bytes(entry[40..44].try_into().expect("4 bytes"));
        if offset_bytes < header_size_bytes as u64 || offset_bytes > u64::MAX / 2 {
            let detail = format!(
                "an entry places a chunk at offset {offset_bytes}, expected one past the \
                 {header_size_bytes}-byte header"
            );
            return Err(ChunkProblem::Unreadable { detail });
        }
        entries.push((fingerprint, offset_bytes, length_bytes));
    }
    Ok(entries)
}

/// Where a new pack's bytes go: its header (which names it), each chunk's
/// entry, and the runs of chunk bytes with their offsets.
struct PackLayout {
    pack_path: String,
    header: Vec<u8>,
    entries: Vec<PackEntry>,
    /// Chunk bytes in offset order: a run of chunks cut one after another
    /// from one aligned buffer is one item.
    runs: Vec<(u64, ChunkBytes)>,
    length_bytes: u64,
}

/// Lays out a pack of `chunks`, in their order. A chunk in an aligned
/// buffer ([`ChunkBytes::block_window`]) that does not continue the run
/// before it starts a new run at the next block boundary, plus its own
/// offset within a block, so that the run's file blocks and buffer blocks
/// line up; any other chunk follows the one before it, on a block boundary
/// after a run. Runs thus never share a block, which the disk checks.
fn lay_out_pack(chunks: &[&(Fingerprint, ChunkBytes)]) -> PackLayout {
    let block = disk::BLOCK_BYTES as u64;
    let header_size_bytes = PACK_PREAMBLE_BYTES + chunks.len() * PACK_ENTRY_BYTES;
    let mut end_bytes = header_size_bytes as u64;
    let mut runs: Vec<(u64, ChunkBytes)> = Vec::new();
    let mut entries = Vec::with_capacity(chunks.len());
    let mut in_aligned_run = false;
    for (fingerprint, bytes) in chunks {
        let length_bytes = u32::try_from(bytes.len()).expect("chunks are at most 16 MiB");
        let window = bytes.block_window();
        let joined = match runs.last() {
            Some((_, run)) if in_aligned_run => run.joined(bytes),
            _ => None,
        };
        let offset_bytes = match (joined, window) {
            (Some(joined), _) => {
                runs.last_mut().expect("a run to join").1 = joined;
                end_bytes
            }
            (None, Some((_, start_index))) => {
                let offset_bytes = end_bytes.next_multiple_of(block) + start_index as u64;
                runs.push((offset_bytes, (*bytes).clone()));
                offset_bytes
            }
            (None, None) => {
                let offset_bytes = if in_aligned_run {
                    end_bytes.next_multiple_of(block)
                } else {
                    end_bytes
                };
                runs.push((offset_bytes, (*bytes).clone()));
                offset_bytes
            }
        };
        in_aligned_run = window.is_some();
        entries.push((*fingerprint, offset_bytes, length_bytes));
        end_bytes = offset_bytes + u64::from(length_bytes);
    }
    let mut header = Vec::with_capacity(header_size_bytes);
    header.extend_from_slice(PACK_MAGIC);
    let entry_count = u32::try_from(chunks.len()).expect("batch size");
    header.extend_from_slice(&entry_count.to_be_bytes());
    for (fingerprint, offset_bytes, length_bytes) in &entries {
        header.extend_from_slice(&fingerprint.0);
        header.extend_from_slice(&offset_bytes.to_be_bytes());
        header.extend_from_slice(&length_bytes.to_be_bytes());
    }
    assert_eq!(header.len(), header_size_bytes);
    let pack_id = Fingerprint::of(&header).to_hex();
    PackLayout {
        pack_path: format!("{DATA_DIR}/{}/{pack_id}.pack", &pack_id[..2]),
        header,
        entries,
        runs,
        length_bytes: end_bytes,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::chunk_bytes::Buffer;
    use crate::disk::RealDisk;

    /// A real disk seen only through the required methods, so packs go
    /// through the trait's default `write_pieces` (as on the simulator's).
    struct PlainDisk(RealDisk);

    impl Disk for PlainDisk {
        fn write(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
            self.0.write(path, bytes)
        }
        fn fsync(&self, path: &str) -> io::Result<()> {
            self.0.fsync(path)
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            self.0.rename(from, to)
        }
        fn fsync_dir(&self, dir: &str) -> io::Result<()> {
            self.0.fsync_dir(dir)
        }
        fn read(&self, path: &str) -> io::Result<Vec<u8>> {
            self.0.read(path)
        }
        fn list(&self, dir: &str) -> io::Result<Vec<String>> {
            self.0.list(dir)
        }
        fn remove(&self, path: &str) -> io::Result<()> {
            self.0.remove(path)
        }
        fn exists(&self, path: &str) -> io::Result<bool> {
            self.0.exists(path)
        }
    }

    /// Chunks as a backup hands them over: runs cut from two aligned read
    /// buffers (one run broken by a chunk left out as a duplicate), with
    /// chunks of small files (plain vectors) between them.
    fn mixed_chunks(scale_bytes: usize) -> Vec<(Fingerprint, ChunkBytes)> {
        let mut pattern = 7_u32;
        let mut filled = |size_bytes: usize| {
            let mut buffer = Buffer::pooled(size_bytes);
            for byte in buffer.iter_mut() {
                pattern = pattern.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                *byte = (pattern >> 16) as u8;
            }
            Arc::new(buffer)
        };
        let first = filled(4 * scale_bytes);
        let second = filled(2 * scale_bytes);
        let cuts = [
            ChunkBytes::cut(&first, 13..scale_bytes / 3),
            ChunkBytes::cut(&first, scale_bytes / 3..scale_bytes + 5),
            ChunkBytes::from(vec![1_u8; 777]),
            ChunkBytes::cut(&first, scale_bytes + 5..2 * scale_bytes),
            ChunkBytes::cut(&first, 3 * scale_bytes..4 * scale_bytes - 1),
            ChunkBytes::from(vec![2_u8; 5000]),
            ChunkBytes::from(vec![3_u8; 1]),
            ChunkBytes::cut(&second, 4095..2 * scale_bytes),
        ];
        cuts.into_iter()
            .map(|bytes| (Fingerprint::of(&bytes), bytes))
            .collect()
    }

    fn check_round_trip(disk: Arc<dyn Disk>, chunks: &[(Fingerprint, ChunkBytes)]) {
        let store = ChunkStore::open(Arc::clone(&disk)).unwrap();
        let outcome = store.put_batch(chunks).unwrap();
        assert_eq!(outcome.stored_chunks, chunks.len() as u64);
        let reopened = ChunkStore::open(disk).unwrap();
        for (fingerprint, bytes) in chunks {
            assert_eq!(reopened.get(fingerprint).unwrap(), **bytes);
        }
        let pack_paths = reopened.pack_paths();
        assert_eq!(pack_paths.len(), 1);
        let check = reopened.check_pack(&pack_paths[0]).unwrap();
        assert_eq!((check.sound.len(), check.damaged.len()), (chunks.len(), 0));
    }

    /// The pack format with explicit offsets: every chunk reads back from
    /// real files, whether the pack went out with `O_DIRECT` straight from
    /// the read buffers (a large pack), buffered (a small one), or through
    /// the trait's default.
    #[test]
    fn chunks_read_back_from_packs_written_every_way() {
        for (scale_bytes, plain) in [(1 << 20, false), (16 << 10, false), (1 << 20, true)] {
            let directory = tempfile::tempdir().unwrap();
            let real = RealDisk::open(directory.path()).unwrap();
            let disk: Arc<dyn Disk> = if plain {
                Arc::new(PlainDisk(real))
            } else {
                Arc::new(real)
            };
            check_round_trip(disk, &mixed_chunks(scale_bytes));
        }
    }

    /// Runs from aligned buffers start where file and buffer blocks line up
    /// and never share a block with other bytes; adjacent cuts are one run.
    #[test]
    fn aligned_runs_line_up_with_blocks_and_never_share_one() {
        let chunks = mixed_chunks(64 << 10);
        let layout = lay_out_pack(&chunks.iter().collect::<Vec<_>>());
        let block = disk::BLOCK_BYTES as u64;
        // Three runs from the first buffer (a small file's chunk between
        // two cuts breaks one, a skipped stretch another), one from the
        // second, and the three small chunks each on their own.
        let aligned: Vec<_> = layout
            .runs
            .iter()
            .filter_map(|(offset, bytes)| bytes.block_window().map(|(_, at)| (*offset, at)))
            .collect();
        assert_eq!((aligned.len(), layout.runs.len()), (4, 7));
        for (offset_bytes, start_index) in aligned {
            assert_eq!((offset_bytes - start_index as u64) % block, 0);
        }
        let mut block_end_bytes = (layout.header.len() as u64).next_multiple_of(block);
        let mut previous_aligned = true;
        for (offset_bytes, bytes) in &layout.runs {
            let aligned = bytes.block_window().is_some();
            if aligned || previous_aligned {
                assert!(
                    offset_bytes - offset_bytes % block >= block_end_bytes,
                    "a run at {offset_bytes} shares a block ending at {block_end_bytes}"
                );
            }
            block_end_bytes = (offset_bytes + bytes.len() as u64).next_multiple_of(block);
            previous_aligned = aligned;
        }
        assert_eq!(layout.entries.len(), chunks.len());
        let (last_offset, last_length) = layout.entries.last().map(|e| (e.1, e.2)).unwrap();
        assert_eq!(layout.length_bytes, last_offset + u64::from(last_length));
    }

    /// A damaged entry count (it sizes the header read) makes the pack
    /// unreadable, named at open; it must not make the reader try to
    /// allocate what the count implies.
    #[test]
    fn a_pack_with_a_damaged_entry_count_is_reported_not_fatal() {
        let directory = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(RealDisk::open(directory.path()).unwrap());
        let chunks = mixed_chunks(16 << 10);
        ChunkStore::open(Arc::clone(&disk))
            .unwrap()
            .put_batch(&chunks)
            .unwrap();
        let pack_path = ChunkStore::open(Arc::clone(&disk)).unwrap().pack_paths()[0].clone();
        let mut bytes = disk.read(&pack_path).unwrap();
        bytes[8] = 0xff;
        disk.write(&pack_path, &bytes).unwrap();
        let store = ChunkStore::open(disk).unwrap();
        let damaged = store.damaged_packs();
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].path, pack_path);
        assert!(store.get(&chunks[0].0).is_err());
    }

    /// Packs written before offsets were explicit still open and read.
    #[test]
    fn packs_of_the_first_format_still_read() {
        let directory = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(RealDisk::open(directory.path()).unwrap());
        let chunks = [b"first chunk".to_vec(), b"second".to_vec()];
        let mut header = PACK_MAGIC_V1.to_vec();
        header.extend_from_slice(&2_u32.to_be_bytes());
        for chunk in &chunks {
            header.extend_from_slice(&Fingerprint::of(chunk).0);
            header.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        }
        let pack_id = Fingerprint::of(&header).to_hex();
        let mut pack = header;
        pack.extend(chunks.concat());
        let pack_path = format!("{DATA_DIR}/{}/{pack_id}.pack", &pack_id[..2]);
        disk::write_atomic(disk.as_ref(), &pack_path, &pack).unwrap();
        let store = ChunkStore::open(disk).unwrap();
        assert!(store.damaged_packs().is_empty());
        for chunk in &chunks {
            assert_eq!(&store.get(&Fingerprint::of(chunk)).unwrap(), chunk);
        }
        assert_eq!(store.check_pack(&pack_path).unwrap().sound.len(), 2);
    }
}
