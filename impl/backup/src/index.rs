//! One index shard: which fingerprints the chunk store holds durably.
//!
//! The index answers "which of these do you lack?" so clients upload only
//! new chunks. Its one rule: **a fingerprint is recorded only after the store
//! holds the chunk durably** ([`Index::record`] is called by the service after
//! the pack is fsynced). A crash between the two leaves a chunk the index does
//! not know: the next backup uploads it again, harmlessly. The reverse — the
//! index claiming a chunk the store lacks — would make later snapshots name
//! missing bytes; [`ConcurrencyMode::Naive`] commits exactly that bug on
//! purpose. Records are durable segment files, `<dir>/<sequence>.seg`,
//! written with `write_atomic`.
//!
//! A segment is the magic `CCIDXSG1`, a run of 32-byte fingerprints, and the
//! SHA-256 of everything before it. A segment that fails that check on open
//! (a bit flip at rest, a torn write, a file from before checksums) is
//! reported as a [`SegmentDamage`] naming it, and its fingerprints are left
//! out: a damaged segment never makes the index claim a chunk, and losing
//! claims is safe — the next backup uploads those chunks again. The file
//! stays until the next compaction, so it can be inspected.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::disk::{self, Disk};
use crate::service::{Answer, ClientId, ConcurrencyMode, ServiceError, ServiceResult};
use crate::{BloomFilter, Fingerprint};

/// Segments beyond this many are merged into one at the next record.
const SEGMENT_COUNT_MAX: usize = 64;
/// The first bytes of every segment: its format, version 1.
const SEGMENT_MAGIC: &[u8; 8] = b"CCIDXSG1";
/// The checksum closing every segment: SHA-256, the size of a fingerprint.
const SEGMENT_CHECKSUM_BYTES: usize = Fingerprint::SIZE_BYTES;

/// A segment whose bytes failed the check on open; its fingerprints were left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "index segment {path} is damaged ({reason}): expected a checksummed segment; its \
     fingerprints are ignored and their chunks will be uploaded again; the file is removed \
     at the next compaction"
)]
pub struct SegmentDamage {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    holder: ClientId,
    expires_at_ms: u64,
}

#[derive(Debug, Default)]
struct IndexState {
    present: HashSet<Fingerprint>,
    leases: HashMap<Fingerprint, Lease>,
    segment_names: Vec<String>,
    segment_sequence_next: u64,
    /// Recorded in memory, not yet in a segment (see [`Index::record_deferred`]).
    pending: Vec<Fingerprint>,
    /// Segments found damaged at open; their files go at the next compaction.
    damaged: Vec<SegmentDamage>,
    damaged_names: Vec<String>,
    /// No lease is granted before this time (see [`Index::refuse_leases_until`]).
    leases_refused_until_ms: u64,
}

/// One shard of the fingerprint index, durable on its own [`Disk`] under `dir`.
pub struct Index {
    disk: Arc<dyn Disk>,
    dir: String,
    mode: ConcurrencyMode,
    state: Mutex<IndexState>,
}

impl Index {
    /// Opens (or starts) the shard stored under `dir`, loading every sound
    /// segment; damaged ones are left out and listed by
    /// [`Index::damaged_segments`] (see the module doc). An I/O error fails the
    /// open: unlike damage, it may pass, and retrying is the caller's choice.
    /// Leases are not durable: after a restart every lease is free, which is
    /// safe because a lease only avoids duplicate uploads.
    pub fn open(disk: Arc<dyn Disk>, dir: &str, mode: ConcurrencyMode) -> ServiceResult<Self> {
        let mut state = IndexState::default();
        let names = disk
            .list(dir)
            .map_err(|error| ServiceError::storage(dir, &error))?;
        for name in names.into_iter().filter(|name| name.ends_with(".seg")) {
            let path = disk::join(dir, &name);
            let bytes = disk
                .read(&path)
                .map_err(|error| ServiceError::storage(&path, &error))?;
            let sequence = name.trim_end_matches(".seg").parse::<u64>().unwrap_or(0);
            state.segment_sequence_next = state.segment_sequence_next.max(sequence + 1);
            match decode_segment(&bytes) {
                Ok(fingerprints) => {
                    state.present.extend(fingerprints);
                    state.segment_names.push(name);
                }
                Err(reason) => {
                    let damage = SegmentDamage { path, reason };
                    tracing::info!("{damage}");
                    state.damaged.push(damage);
                    state.damaged_names.push(name);
                }
            }
        }
        Ok(Self {
            disk,
            dir: dir.to_string(),
            mode,
            state: Mutex::new(state),
        })
    }

    /// The shard's concurrency mode.
    pub fn mode(&self) -> ConcurrencyMode {
        self.mode
    }

    /// The segments [`Index::open`] found damaged and left out.
    pub fn damaged_segments(&self) -> Vec<SegmentDamage> {
        self.state.lock().expect("index lock").damaged.clone()
    }

    /// Grants no lease before `until_ms`: every missing fingerprint is answered
    /// `Wait` until then. A shard restarting with leases of its previous life
    /// forgotten (leases are not durable) calls this with its start time plus
    /// `lease_ms`, so that a holder from before the restart, still counting its
    /// lease as live, cannot meet a second holder granted after it. Found by the
    /// simulator: without it a restarted shard leased a chunk that a client was
    /// still uploading under its old lease.
    pub fn refuse_leases_until(&self, until_ms: u64) {
        let mut state = self.state.lock().expect("index lock");
        state.leases_refused_until_ms = state.leases_refused_until_ms.max(until_ms);
    }

    /// One answer per fingerprint. In pessimistic mode a missing fingerprint
    /// whose lease is free (or expired at `now_ms`) is leased to `client`.
    pub fn query(
        &self,
        client: ClientId,
        fingerprints: &[Fingerprint],
        now_ms: u64,
    ) -> Vec<Answer> {
        let mut state = self.state.lock().expect("index lock");
        let mut answers = Vec::with_capacity(fingerprints.len());
        for fingerprint in fingerprints {
            if state.present.contains(fingerprint) {
                answers.push(Answer::Present);
                continue;
            }
            let answer = match self.mode {
                ConcurrencyMode::Optimistic => Answer::Upload,
                ConcurrencyMode::Naive => {
                    // The bug: claimed before a single byte is stored.
                    state.present.insert(*fingerprint);
                    Answer::Upload
                }
                ConcurrencyMode::Pessimistic { .. } if now_ms < state.leases_refused_until_ms => {
                    Answer::Wait {
                        lease_expires_at_ms: state.leases_refused_until_ms,
                    }
                }
                ConcurrencyMode::Pessimistic { lease_ms } => {
                    match state.leases.get_mut(fingerprint) {
                        // The holder asking again renews its lease from now: the asker
                        // counts its lease from when it sent the question, so every
                        // `Upload` must mean "yours until at least then + lease_ms". Not
                        // renewing let a holder whose first answer was lost take the old,
                        // nearly spent lease for a fresh one (found by the simulator).
                        Some(lease) if lease.expires_at_ms > now_ms => {
                            if lease.holder == client {
                                lease.expires_at_ms = lease.expires_at_ms.max(now_ms + lease_ms);
                                Answer::Upload
                            } else {
                                Answer::Wait {
                                    lease_expires_at_ms: lease.expires_at_ms,
                                }
                            }
                        }
                        _ => {
                            let lease = Lease {
                                holder: client,
                                expires_at_ms: now_ms + lease_ms,
                            };
                            state.leases.insert(*fingerprint, lease);
                            Answer::Upload
                        }
                    }
                }
            };
            answers.push(answer);
        }
        answers
    }

    /// Records fingerprints the store now holds durably, durably, and frees
    /// their leases. The caller must have the store's durable acknowledgement.
    pub fn record(&self, fingerprints: &[Fingerprint]) -> ServiceResult<()> {
        self.record_deferred(fingerprints);
        self.persist()
    }

    /// Records fingerprints the store holds durably in memory at once (later
    /// queries see them) and on disk at the next [`Index::persist`]. Safe
    /// because losing a record only makes a later backup upload the chunk
    /// again, which the store turns into a counted duplicate; what must
    /// never happen, claiming a chunk the store lacks, is ruled out by the
    /// caller's ordering (store durable first), not by this write.
    pub fn record_deferred(&self, fingerprints: &[Fingerprint]) {
        let mut state = self.state.lock().expect("index lock");
        for fingerprint in fingerprints {
            state.present.insert(*fingerprint);
            state.leases.remove(fingerprint);
        }
        // Naive mode already "has" them in memory; the segment still makes
        // them durable so a restart keeps the bug's consequences.
        state.pending.extend_from_slice(fingerprints);
    }

    /// Forgets the claims on `fingerprints` (chunks the store no longer
    /// holds, so the next backup uploads them again) and drops damaged
    /// segments, by compacting every remaining record into one segment.
    /// Returns how many claims were forgotten; with nothing to forget and no
    /// damaged segment, writes nothing.
    pub fn forget(&self, fingerprints: &HashSet<Fingerprint>) -> ServiceResult<usize> {
        let mut state = self.state.lock().expect("index lock");
        let before = state.present.len();
        state
            .present
            .retain(|fingerprint| !fingerprints.contains(fingerprint));
        let forgotten = before - state.present.len();
        if forgotten > 0 || !state.damaged_names.is_empty() {
            // The compacted segment holds every record, pending ones too.
            state.pending.clear();
            self.compact(&mut state)?;
        }
        Ok(forgotten)
    }

    /// Writes every deferred record as one durable segment.
    pub fn persist(&self) -> ServiceResult<()> {
        let mut state = self.state.lock().expect("index lock");
        let pending = std::mem::take(&mut state.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let name = self.write_segment(state.segment_sequence_next, pending.iter())?;
        state.segment_sequence_next += 1;
        state.segment_names.push(name);
        if state.segment_names.len() > SEGMENT_COUNT_MAX {
            self.compact(&mut state)?;
        }
        Ok(())
    }

    /// Merges all segments into one and removes damaged ones. The merged
    /// segment is durable before the old ones go, so a crash in between only
    /// leaves duplicates.
    fn compact(&self, state: &mut IndexState) -> ServiceResult<()> {
        let mut recorded: Vec<&Fingerprint> = state.present.iter().collect();
        recorded.sort_unstable();
        let name = self.write_segment(state.segment_sequence_next, recorded.into_iter())?;
        let mut old_names = std::mem::take(&mut state.segment_names);
        old_names.append(&mut state.damaged_names);
        // The damaged segments go with the rest: nothing is left to report.
        state.damaged.clear();
        for old_name in old_names {
            let old_path = disk::join(&self.dir, &old_name);
            self.disk
                .remove(&old_path)
                .map_err(|error| ServiceError::storage(&old_path, &error))?;
        }
        self.disk
            .fsync_dir(&self.dir)
            .map_err(|error| ServiceError::storage(&self.dir, &error))?;
        state.segment_sequence_next += 1;
        state.segment_names.push(name);
        Ok(())
    }

    /// Writes `fingerprints` durably as segment number `sequence` and returns
    /// its file name.
    fn write_segment<'a>(
        &self,
        sequence: u64,
        fingerprints: impl ExactSizeIterator<Item = &'a Fingerprint>,
    ) -> ServiceResult<String> {
        let mut bytes = Vec::with_capacity(
            SEGMENT_MAGIC.len()
                + fingerprints.len() * Fingerprint::SIZE_BYTES
                + SEGMENT_CHECKSUM_BYTES,
        );
        bytes.extend_from_slice(SEGMENT_MAGIC);
        fingerprints.for_each(|fingerprint| bytes.extend_from_slice(&fingerprint.0));
        let checksum = Fingerprint::of(&bytes);
        bytes.extend_from_slice(&checksum.0);
        debug_assert!(decode_segment(&bytes).is_ok());
        let name = format!("{sequence:016}.seg");
        let path = disk::join(&self.dir, &name);
        disk::write_atomic(self.disk.as_ref(), &path, &bytes)
            .map_err(|error| ServiceError::storage(&path, &error))?;
        Ok(name)
    }

    /// True when the shard claims `fingerprint` is stored.
    pub fn contains(&self, fingerprint: &Fingerprint) -> bool {
        self.state
            .lock()
            .expect("index lock")
            .present
            .contains(fingerprint)
    }

    /// Number of fingerprints claimed.
    pub fn len(&self) -> usize {
        self.state.lock().expect("index lock").present.len()
    }

    /// True when the shard claims nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every fingerprint claimed.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.state
            .lock()
            .expect("index lock")
            .present
            .iter()
            .copied()
            .collect()
    }

    /// Adds every fingerprint claimed to `filter`.
    pub fn add_to_bloom(&self, filter: &mut BloomFilter) {
        let state = self.state.lock().expect("index lock");
        state
            .present
            .iter()
            .for_each(|fingerprint| filter.insert(fingerprint));
    }
}

/// The fingerprints of a segment's bytes, or why they cannot be trusted.
fn decode_segment(bytes: &[u8]) -> Result<Vec<Fingerprint>, String> {
    let overhead_bytes = SEGMENT_MAGIC.len() + SEGMENT_CHECKSUM_BYTES;
    if bytes.len() < overhead_bytes || !bytes.starts_with(SEGMENT_MAGIC) {
        return Err(format!(
            "{} bytes without the {:?} header",
            bytes.len(),
            String::from_utf8_lossy(SEGMENT_MAGIC)
        ));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - SEGMENT_CHECKSUM_BYTES);
    if Fingerprint::of(body).0.as_slice() != checksum {
        return Err(format!(
            "{} bytes failing their SHA-256 checksum",
            bytes.len()
        ));
    }
    let fingerprints = &body[SEGMENT_MAGIC.len()..];
    if fingerprints.len() % Fingerprint::SIZE_BYTES != 0 {
        // A checksum that matches over a ragged body was written by other code.
        return Err(format!(
            "a checksummed body of {} bytes, not a multiple of 32",
            fingerprints.len()
        ));
    }
    let decoded = fingerprints.chunks_exact(Fingerprint::SIZE_BYTES);
    Ok(decoded
        .map(|raw| Fingerprint(raw.try_into().expect("32 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::RealDisk;

    fn open(mode: ConcurrencyMode) -> (tempfile::TempDir, Arc<dyn Disk>, Index) {
        let dir = tempfile::tempdir().unwrap();
        let disk: Arc<dyn Disk> = Arc::new(RealDisk::open(dir.path()).unwrap());
        let index = Index::open(disk.clone(), "index/0", mode).unwrap();
        (dir, disk, index)
    }

    #[test]
    fn pessimistic_second_asker_waits_until_record_or_expiry() {
        let (_dir, _disk, index) = open(ConcurrencyMode::Pessimistic { lease_ms: 1_000 });
        let chunk = [Fingerprint::of(b"chunk")];
        assert_eq!(index.query(1, &chunk, 0), vec![Answer::Upload]);
        assert_eq!(
            index.query(2, &chunk, 10),
            vec![Answer::Wait {
                lease_expires_at_ms: 1_000
            }]
        );
        // The holder may ask again: it keeps uploading rights, renewed from now.
        assert_eq!(index.query(1, &chunk, 20), vec![Answer::Upload]);
        assert_eq!(
            index.query(2, &chunk, 1_000),
            vec![Answer::Wait {
                lease_expires_at_ms: 1_020
            }]
        );
        // Expiry frees the lease: the second client takes over.
        assert_eq!(index.query(2, &chunk, 1_020), vec![Answer::Upload]);
        assert_eq!(
            index.query(1, &chunk, 1_021),
            vec![Answer::Wait {
                lease_expires_at_ms: 2_020
            }]
        );
        // Success frees it too, and everyone hears "present".
        index.record(&chunk).unwrap();
        assert_eq!(index.query(1, &chunk, 1_002), vec![Answer::Present]);
    }

    #[test]
    fn pessimistic_restart_grants_no_lease_until_old_ones_have_expired() {
        let (_dir, _disk, index) = open(ConcurrencyMode::Pessimistic { lease_ms: 1_000 });
        let chunk = [Fingerprint::of(b"chunk")];
        index.refuse_leases_until(1_500);
        let wait = vec![Answer::Wait {
            lease_expires_at_ms: 1_500,
        }];
        assert_eq!(index.query(1, &chunk, 500), wait);
        assert_eq!(index.query(1, &chunk, 1_499), wait);
        assert_eq!(index.query(1, &chunk, 1_500), vec![Answer::Upload]);
    }

    #[test]
    fn optimistic_lets_every_asker_upload() {
        let (_dir, _disk, index) = open(ConcurrencyMode::Optimistic);
        let chunk = [Fingerprint::of(b"chunk")];
        assert_eq!(index.query(1, &chunk, 0), vec![Answer::Upload]);
        assert_eq!(index.query(2, &chunk, 0), vec![Answer::Upload]);
        assert!(!index.contains(&chunk[0]));
    }

    /// The deliberate bug must stay reachable: a chunk nobody uploaded is
    /// reported present to the second asker.
    #[test]
    fn naive_mode_claims_a_never_uploaded_chunk_present() {
        let (_dir, _disk, index) = open(ConcurrencyMode::Naive);
        let chunk = [Fingerprint::of(b"never uploaded")];
        assert_eq!(index.query(1, &chunk, 0), vec![Answer::Upload]);
        assert_eq!(index.query(2, &chunk, 0), vec![Answer::Present]);
    }

    #[test]
    fn records_survive_reopen_and_compaction() {
        let (_dir, disk, index) = open(ConcurrencyMode::Optimistic);
        let all: Vec<Fingerprint> = (0..200_u32)
            .map(|i| Fingerprint::of(&i.to_le_bytes()))
            .collect();
        for pair in all.chunks(2) {
            index.record(pair).unwrap();
        }
        let segments = disk.list("index/0").unwrap();
        assert!(
            segments.len() <= SEGMENT_COUNT_MAX,
            "{} segments",
            segments.len()
        );
        let reopened = Index::open(disk, "index/0", ConcurrencyMode::Optimistic).unwrap();
        assert_eq!(reopened.len(), 200);
        assert!(all.iter().all(|fingerprint| reopened.contains(fingerprint)));
        assert!(reopened.damaged_segments().is_empty());
    }

    /// A bit flip at rest in a segment: the open must name the segment and
    /// claim none of its fingerprints, while the sound segments still load.
    #[test]
    fn a_flipped_byte_in_a_segment_is_detected_and_claims_nothing() {
        let (_dir, disk, index) = open(ConcurrencyMode::Optimistic);
        let sound = Fingerprint::of(b"sound");
        let damaged = [Fingerprint::of(b"one"), Fingerprint::of(b"two")];
        index.record(&[sound]).unwrap();
        index.record(&damaged).unwrap();
        let path = "index/0/0000000000000001.seg";
        let mut bytes = disk.read(path).unwrap();
        assert_eq!(bytes.len(), 8 + 2 * 32 + 32);
        for at in [0, 8, 40, bytes.len() - 1] {
            bytes[at] ^= 0x10;
            disk::write_atomic(disk.as_ref(), path, &bytes).unwrap();
            let reopened = Index::open(disk.clone(), "index/0", ConcurrencyMode::Optimistic);
            let reopened = reopened.unwrap();
            assert!(reopened.contains(&sound), "flip at byte {at}");
            assert!(
                damaged.iter().all(|f| !reopened.contains(f)),
                "flip at {at}"
            );
            let reports = reopened.damaged_segments();
            assert_eq!(reports.len(), 1, "flip at byte {at}");
            assert_eq!(reports[0].path, path);
            assert!(reports[0].to_string().contains(path), "{}", reports[0]);
            bytes[at] ^= 0x10;
        }
        // A torn write (a prefix) is detected the same way.
        disk::write_atomic(disk.as_ref(), path, &bytes[..50]).unwrap();
        let reopened = Index::open(disk.clone(), "index/0", ConcurrencyMode::Optimistic);
        assert_eq!(reopened.unwrap().damaged_segments().len(), 1);
        disk::write_atomic(disk.as_ref(), path, &bytes).unwrap();
        let healed = Index::open(disk, "index/0", ConcurrencyMode::Optimistic).unwrap();
        assert!(healed.damaged_segments().is_empty() && healed.len() == 3);
    }

    #[test]
    fn compaction_removes_damaged_segments_and_keeps_sound_records() {
        let (_dir, disk, index) = open(ConcurrencyMode::Optimistic);
        index.record(&[Fingerprint::of(b"kept")]).unwrap();
        disk::write_atomic(disk.as_ref(), "index/0/0000000000000007.seg", b"junk").unwrap();
        let reopened = Index::open(disk.clone(), "index/0", ConcurrencyMode::Optimistic).unwrap();
        assert_eq!(reopened.damaged_segments().len(), 1);
        for i in 0..SEGMENT_COUNT_MAX as u32 + 1 {
            reopened
                .record(&[Fingerprint::of(&i.to_le_bytes())])
                .unwrap();
        }
        let names = disk.list("index/0").unwrap();
        assert!(
            !names.contains(&"0000000000000007.seg".to_string()),
            "{names:?}"
        );
        let last = Index::open(disk, "index/0", ConcurrencyMode::Optimistic).unwrap();
        assert!(last.damaged_segments().is_empty());
        assert_eq!(last.len(), SEGMENT_COUNT_MAX + 2);
    }
}
