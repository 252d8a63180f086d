//! fsck: re-hash every chunk, check every manifest, sort damage from debris.
//!
//! Damage is anything that makes a snapshot unrestorable or a future backup
//! unsafe: a chunk whose bytes do not match its name, a manifest naming a
//! chunk the store lacks, a damaged manifest, an index claiming a chunk the
//! store lacks (later backups would skip uploading it). Leftovers are what an
//! interrupted backup leaves and nothing needs: `.tmp` files from an
//! interrupted `write_atomic`, chunks no manifest names. [`cleanup`] removes
//! the `.tmp` files; later backups reuse unreferenced chunks.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::Fingerprint;
use crate::disk::{self, Disk};
use crate::manifest::{EntryKind, SnapshotId};
use crate::repository::Repository;
use crate::service::{ChunkProblem, ServiceError};
use crate::store::DamagedPack;

/// A file in a snapshot that cannot be restored, and the chunk at fault.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DamagedFile {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// The file's path in it.
    pub path: String,
    /// The file's first bad chunk; `None` when every chunk is sound but
    /// together they do not hold the file's recorded size.
    pub chunk: Option<Fingerprint>,
    /// What is wrong with the chunk (or the file).
    pub problem: String,
}

/// A stored chunk whose bytes are bad.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DamagedChunk {
    /// The chunk's fingerprint.
    pub chunk: Fingerprint,
    /// The pack holding the bad copy.
    pub pack: String,
    /// What is wrong, as data.
    pub problem: ChunkProblem,
    /// What is wrong, in words.
    pub description: String,
}

impl DamagedChunk {
    fn new(chunk: Fingerprint, pack: &str, problem: ChunkProblem) -> Self {
        let description = problem.to_string();
        Self {
            chunk,
            pack: pack.to_string(),
            problem,
            description,
        }
    }
}

/// A snapshot whose manifest cannot be read or trusted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DamagedManifest {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// What is wrong.
    pub problem: String,
}

/// An index segment that failed its checksum on open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DamagedSegment {
    /// The segment's path in the repository.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// Everything fsck found. Every finding is an object with named fields, so
/// that `--json` reads without positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FsckReport {
    /// Packs re-read.
    pub packs_checked: u64,
    /// Chunks re-hashed.
    pub chunks_checked: u64,
    /// Snapshots checked.
    pub snapshots_checked: u64,
    /// Chunks whose stored bytes are bad, in the pack reads go to. Every
    /// snapshot naming one is damaged.
    pub damaged_chunks: Vec<DamagedChunk>,
    /// Damaged spare copies: bad bytes of a chunk whose reads go to a sound
    /// copy in another pack (two uploads of it raced). No snapshot is
    /// affected, but the disk is damaging data; repair drops them.
    pub damaged_spare_copies: Vec<DamagedChunk>,
    /// Packs that cannot be read at all.
    pub damaged_packs: Vec<DamagedPack>,
    /// Snapshots whose manifest cannot be read or trusted.
    pub damaged_manifests: Vec<DamagedManifest>,
    /// Files that cannot be restored, per snapshot.
    pub damaged_files: Vec<DamagedFile>,
    /// Chunks an index shard claims that the store lacks.
    pub index_claims_missing: Vec<Fingerprint>,
    /// Index segments that failed their checksum on open. Their claims were
    /// dropped, so no chunk is lost, but the disk is damaging data; chunks
    /// the store still holds are found there, and the next backup uploads
    /// any it lacks again.
    pub damaged_index_segments: Vec<DamagedSegment>,
    /// Names under `snapshots/` that hold no manifest file (a directory, a
    /// dangling link), each with what is there. Not snapshots, they restore
    /// nothing and stop nothing, but the repository is not as a backup left
    /// it; repair leaves them, for whoever put them there to remove.
    #[serde(default)]
    pub stray_snapshot_entries: Vec<String>,
    /// Harmless: `.tmp` files left by interrupted writes.
    pub temp_files: Vec<String>,
    /// Harmless: chunks stored that no snapshot names.
    pub unreferenced_chunks: u64,
}

impl FsckReport {
    /// True when nothing is damaged (leftovers are allowed).
    pub fn is_clean(&self) -> bool {
        self.damage_free() && self.stray_snapshot_entries.is_empty()
    }

    /// True when the only finding is stray entries under `snapshots/`
    /// (which repair leaves: only their owner can remove them).
    pub fn is_clean_but_for_strays(&self) -> bool {
        self.damage_free() && !self.stray_snapshot_entries.is_empty()
    }

    /// True when no data, manifest or index is damaged (strays aside).
    fn damage_free(&self) -> bool {
        self.damaged_chunks.is_empty()
            && self.damaged_spare_copies.is_empty()
            && self.damaged_packs.is_empty()
            && self.damaged_manifests.is_empty()
            && self.damaged_files.is_empty()
            && self.index_claims_missing.is_empty()
            && self.damaged_index_segments.is_empty()
    }

    /// Snapshots with any damage (a damaged manifest or an unrestorable file).
    pub fn damaged_snapshots(&self) -> Vec<SnapshotId> {
        let mut ids: Vec<SnapshotId> = self
            .damaged_manifests
            .iter()
            .map(|damaged| damaged.snapshot.clone())
            .collect();
        ids.extend(self.damaged_files.iter().map(|file| file.snapshot.clone()));
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Checks the whole repository. `on_pack(done, total)` is called after each
/// pack is re-read, for a progress bar.
pub fn fsck(
    repository: &Repository,
    on_pack: &mut dyn FnMut(u64, u64),
) -> Result<FsckReport, ServiceError> {
    let mut report = FsckReport::default();
    let store = repository.store();
    report.damaged_packs = store.damaged_packs();
    let mut bad_chunks: HashMap<Fingerprint, String> = HashMap::new();
    let pack_paths = store.pack_paths();
    for (done, pack_path) in pack_paths.iter().enumerate() {
        let check = store.check_pack(pack_path)?;
        report.packs_checked += 1;
        report.chunks_checked += (check.sound.len() + check.damaged.len()) as u64;
        if let Some(problem) = check.pack_problem {
            report.damaged_packs.push(DamagedPack {
                path: pack_path.clone(),
                problem,
            });
        }
        for (fingerprint, problem) in check.damaged {
            // Only the copy reads go to decides whether snapshots restore;
            // a sound copy elsewhere is checked with its own pack.
            if store.pack_of(&fingerprint).as_ref() == Some(pack_path) {
                bad_chunks.insert(fingerprint, problem.to_string());
                let damaged = DamagedChunk::new(fingerprint, pack_path, problem);
                report.damaged_chunks.push(damaged);
            } else {
                let damaged = DamagedChunk::new(fingerprint, pack_path, problem);
                report.damaged_spare_copies.push(damaged);
            }
        }
        on_pack(done as u64 + 1, pack_paths.len() as u64);
    }
    let referenced = check_manifests(repository, &bad_chunks, &mut report)?;
    let stored: HashSet<Fingerprint> = store.fingerprints().into_iter().collect();
    report.unreferenced_chunks = stored.iter().filter(|f| !referenced.contains(f)).count() as u64;
    for shard in repository.shards() {
        report.index_claims_missing.extend(
            shard
                .fingerprints()
                .into_iter()
                .filter(|f| !stored.contains(f)),
        );
    }
    report.index_claims_missing.sort();
    for shard in repository.shards() {
        let damaged = shard.damaged_segments().into_iter();
        report
            .damaged_index_segments
            .extend(damaged.map(|damage| DamagedSegment {
                path: damage.path,
                problem: damage.reason,
            }));
    }
    report.temp_files = find_temp_files(repository.disk().as_ref(), "")?;
    Ok(report)
}

/// Checks each manifest's references; returns every chunk referenced.
fn check_manifests(
    repository: &Repository,
    bad_chunks: &HashMap<Fingerprint, String>,
    report: &mut FsckReport,
) -> Result<HashSet<Fingerprint>, ServiceError> {
    let store = repository.store();
    let mut referenced = HashSet::new();
    let mut ids = repository.manifests().ids()?;
    ids.sort();
    for id in ids {
        let read = repository.manifests().get(&id);
        if read.is_err()
            && let Some(stray) = repository.manifests().stray_entry(&id)?
        {
            report.stray_snapshot_entries.push(stray);
            continue;
        }
        report.snapshots_checked += 1;
        let manifest = match read {
            Ok(manifest) => manifest,
            Err(error) => {
                let problem = error.to_string();
                report.damaged_manifests.push(DamagedManifest {
                    snapshot: id,
                    problem,
                });
                continue;
            }
        };
        if let Err(error) = manifest.validate() {
            report.damaged_manifests.push(DamagedManifest {
                snapshot: id.clone(),
                problem: error.to_string(),
            });
        }
        for entry in &manifest.entries {
            let EntryKind::File {
                chunks, size_bytes, ..
            } = &entry.kind
            else {
                continue;
            };
            referenced.extend(chunks.iter().copied());
            let first_bad = chunks.iter().find_map(|chunk| match bad_chunks.get(chunk) {
                Some(problem) => Some((Some(*chunk), format!("is damaged: {problem}"))),
                None if !store.contains(chunk) => {
                    Some((Some(*chunk), "is missing from the store".to_string()))
                }
                None => None,
            });
            // Sound chunks that do not add up to the file (a manifest that
            // hashes right but was not written by a backup): restore refuses it.
            let first_bad = first_bad.or_else(|| {
                let found_bytes: u64 = chunks.iter().filter_map(|c| store.length_of(c)).sum();
                (found_bytes != *size_bytes).then(|| {
                    let problem = format!(
                        "its chunks hold {found_bytes} bytes, the manifest says {size_bytes}"
                    );
                    (None, problem)
                })
            });
            if let Some((chunk, problem)) = first_bad {
                report.damaged_files.push(DamagedFile {
                    snapshot: id.clone(),
                    path: entry.path.clone(),
                    chunk,
                    problem,
                });
            }
        }
    }
    Ok(referenced)
}

fn find_temp_files(disk: &dyn Disk, dir: &str) -> Result<Vec<String>, ServiceError> {
    let mut found = Vec::new();
    let names = match disk.list(dir) {
        Ok(names) => names,
        // A stray file with a dotless name (someone's README): not ours.
        Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => return Ok(found),
        Err(error) => return Err(ServiceError::storage(dir, &error)),
    };
    for name in names {
        let path = disk::join(dir, &name);
        if disk::is_temp_name(&name) {
            found.push(path);
        } else if !name.contains('.') {
            // Repository directories have no dots in their names; files do.
            found.extend(find_temp_files(disk, &path)?);
        }
    }
    Ok(found)
}

/// What [`repair`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepairReport {
    /// Packs whose header is unreadable, moved (unchanged) to these paths.
    pub packs_quarantined: Vec<String>,
    /// Damaged manifests (or files posing as one), moved unchanged to these
    /// paths: no backup can heal a manifest, and it restores nothing.
    pub manifests_quarantined: Vec<String>,
    /// Names under `snapshots/` that hold no manifest file (a directory, a
    /// dangling link), left where they are, each with what is there. They
    /// restore nothing and stop nothing; whoever put them there removes them.
    #[serde(default)]
    pub manifests_left: Vec<String>,
    /// Packs rewritten without their damaged chunks (the old paths).
    pub packs_rewritten: Vec<String>,
    /// Damaged chunks the store no longer holds.
    pub chunks_dropped: Vec<Fingerprint>,
    /// Index claims forgotten: chunks the store does not hold.
    pub index_claims_forgotten: u64,
    /// Damaged index segments removed (their sound records were kept).
    pub index_segments_removed: u64,
}

/// Makes a damaged repository ready for the next backup to heal it: packs
/// are rewritten without their damaged chunks, and the index forgets every
/// chunk the store does not hold (dropped, or lost with a pack) and drops
/// its damaged segments. Nothing sound is removed, and no snapshot changes:
/// a snapshot naming a dropped or lost chunk stays damaged until a backup
/// of the same data stores the chunk again, and is then restorable, since
/// snapshots name chunks by content. Packs whose header is unreadable (their
/// chunks already count as absent) and damaged manifests are moved,
/// unchanged, to `quarantine/`.
/// Run with no backup running (the CLI holds the repository lock
/// exclusively).
pub fn repair(repository: &Repository) -> Result<RepairReport, ServiceError> {
    let mut report = RepairReport::default();
    let store = repository.store();
    report.packs_quarantined = store.quarantine_unreadable_packs()?;
    let manifests = repository.manifests();
    for id in manifests.ids()? {
        let error = match manifests.get(&id) {
            // Sound bytes, but a path restore must refuse: as damaged.
            Ok(manifest) if manifest.validate().is_err() => None,
            Ok(_) => continue,
            Err(error) => Some(error),
        };
        if error.is_some()
            && let Some(stray) = manifests.stray_entry(&id)?
        {
            report.manifests_left.push(stray);
        } else if matches!(error, None | Some(ServiceError::ManifestInvalid { .. })) {
            report
                .manifests_quarantined
                .push(manifests.quarantine(&id)?);
        }
    }
    repository.upgrade_format()?;
    for (pack_path, dropped) in store.drop_damaged_chunks()? {
        report.packs_rewritten.push(pack_path);
        report.chunks_dropped.extend(dropped);
    }
    let stored: HashSet<Fingerprint> = store.fingerprints().into_iter().collect();
    for shard in repository.shards() {
        let lacking: HashSet<Fingerprint> = shard
            .fingerprints()
            .into_iter()
            .filter(|fingerprint| !stored.contains(fingerprint))
            .collect();
        let damaged_segments = shard.damaged_segments().len() as u64;
        report.index_claims_forgotten += shard.forget(&lacking)? as u64;
        report.index_segments_removed += damaged_segments - shard.damaged_segments().len() as u64;
    }
    Ok(report)
}

/// Removes `.tmp` leftovers of interrupted writes; returns their paths.
///
/// Not yet: removing unreferenced chunks (prune). A pack can only go once
/// none of its chunks is referenced and the index shards have forgotten them
/// first, with no backup running (the CLI's exclusive repository lock gives
/// that last part: see `lock_repository` in `src/cli_backup.rs`).
pub fn cleanup(repository: &Repository) -> Result<Vec<String>, ServiceError> {
    let disk = repository.disk().as_ref();
    let mut temp_files = find_temp_files(disk, "")?;
    let mut dirs = BTreeMap::new();
    let mut removed = Vec::with_capacity(temp_files.len());
    for path in temp_files.drain(..) {
        match disk.remove(&path) {
            Ok(()) => {}
            // A directory with a temp name is no write of ours: left alone.
            Err(error) if error.kind() == std::io::ErrorKind::IsADirectory => continue,
            Err(error) => return Err(ServiceError::storage(&path, &error)),
        }
        dirs.insert(disk::parent_dir(&path).to_string(), ());
        removed.push(path);
    }
    let temp_files = removed;
    for dir in dirs.keys() {
        disk.fsync_dir(dir)
            .map_err(|error| ServiceError::storage(dir, &error))?;
    }
    Ok(temp_files)
}
