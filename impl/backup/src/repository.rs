//! The in-process service: index shards, chunk store and manifests over one
//! repository directory, behind [`BackupService`].
//!
//! Layout on the [`Disk`]: `config.json`, `data/` (packs, see [`ChunkStore`]),
//! `index/<shard>/` (segments, see [`Index`]), `snapshots/<id>.json`.
//!
//! Crash safety is an ordering argument, the same at every step:
//! 1. a pack is written to a temp name, fsynced, renamed, and its directory
//!    fsynced before [`ChunkStore::put_batch`] returns;
//! 2. only then do the index shards record its fingerprints (in memory at
//!    once, in a durable segment at the next commit: a lost record costs a
//!    re-upload that the store absorbs as a duplicate, never a lost chunk);
//! 3. a manifest is committed last, with `write_atomic`, after every chunk it
//!    names was reported present or stored.
//!
//! A `kill -9` between any two steps leaves a `.tmp` file or chunks no
//! manifest names: unreferenced leftovers that fsck reports as harmless and
//! that later backups reuse. It never leaves a committed manifest naming a
//! chunk that is not durable, so every earlier snapshot stays restorable.

use std::sync::Arc;

use crate::disk::{self, Disk};
use crate::index::Index;
use crate::manifest::{EntryKind, Manifest, SnapshotId, SnapshotSummary};
use crate::service::{
    Answer, BackupService, ClientId, ConcurrencyMode, PutOutcome, RepoConfig, ServiceError,
    ServiceResult,
};
use crate::store::ChunkStore;
use crate::{BloomFilter, ChunkBytes, Fingerprint, Ring};

/// The file that makes a directory a repository.
pub const CONFIG_PATH: &str = "config.json";
const SNAPSHOTS_DIR: &str = "snapshots";
const INDEX_DIR: &str = "index";
/// Bytes read from the start of a manifest for its label and time.
const MANIFEST_HEAD_BYTES: usize = 16 * 1024;

/// Target false-positive rate of the Bloom filter shipped to clients.
pub const BLOOM_FALSE_POSITIVE_RATE: f64 = 0.01;

/// Manifests, one file each, named by snapshot id.
pub struct ManifestStore {
    disk: Arc<dyn Disk>,
}

impl ManifestStore {
    /// Manifests under `snapshots/` of `disk`.
    pub fn new(disk: Arc<dyn Disk>) -> Self {
        Self { disk }
    }

    /// Commits `manifest` atomically and durably; returns its id.
    pub fn commit(&self, manifest: &Manifest) -> ServiceResult<SnapshotId> {
        let bytes = manifest.to_json();
        let id = SnapshotId(Fingerprint::of(&bytes).to_hex());
        let path = self.path_of(&id);
        disk::write_atomic(self.disk.as_ref(), &path, &bytes)
            .map_err(|error| ServiceError::storage(&path, &error))?;
        Ok(id)
    }

    /// The manifest of snapshot `id`, checked against its id.
    pub fn get(&self, id: &SnapshotId) -> ServiceResult<Manifest> {
        let bytes = self.read_checked(id)?;
        serde_json::from_slice(&bytes).map_err(|error| ServiceError::ManifestInvalid {
            id: id.0.clone(),
            problem: format!("unparsable JSON: {error}"),
        })
    }

    /// Label and time of snapshot `id` as the first bytes of its manifest
    /// give them, unchecked: one small read, to choose among snapshots
    /// without reading each whole (a manifest of a large tree is tens of
    /// MB). `None` when they cannot be read there (damage, or a label
    /// longer than the read); whoever uses the snapshot reads it with
    /// [`ManifestStore::get`], which checks every byte.
    pub fn head_unchecked(&self, id: &SnapshotId) -> ServiceResult<Option<(String, u64)>> {
        #[derive(serde::Deserialize)]
        struct Head {
            label: String,
            time_unix_ms: u64,
        }
        let path = self.path_of(id);
        let prefix = self
            .disk
            .read_range(&path, 0, MANIFEST_HEAD_BYTES)
            .map_err(|error| manifest_read_error(id, &path, &error))?;
        // A manifest is written label, time, then entries. Inside a JSON
        // string every quote is escaped, so the first `,"entries":` is where
        // the head ends.
        const ENTRIES_KEY: &[u8] = b",\"entries\":";
        let Some(end) = prefix
            .windows(ENTRIES_KEY.len())
            .position(|window| window == ENTRIES_KEY)
        else {
            return Ok(None);
        };
        let mut head_json = prefix[..end].to_vec();
        head_json.push(b'}');
        Ok(serde_json::from_slice::<Head>(&head_json)
            .ok()
            .map(|head| (head.label, head.time_unix_ms)))
    }

    /// The stored bytes of snapshot `id`, which must hash to `id`.
    fn read_checked(&self, id: &SnapshotId) -> ServiceResult<Vec<u8>> {
        let path = self.path_of(id);
        let bytes = self
            .disk
            .read(&path)
            .map_err(|error| manifest_read_error(id, &path, &error))?;
        let invalid = |problem: String| ServiceError::ManifestInvalid {
            id: id.0.clone(),
            problem,
        };
        let found = Fingerprint::of(&bytes).to_hex();
        if found != id.0 {
            return Err(invalid(format!(
                "its bytes hash to {found}: the file is damaged"
            )));
        }
        Ok(bytes)
    }

    /// Where the manifest of `id` is kept, relative to the repository.
    pub fn path_of(&self, id: &SnapshotId) -> String {
        format!("{SNAPSHOTS_DIR}/{id}.json")
    }

    /// What stands at listed snapshot `id` when it is no manifest file: a
    /// directory, or nothing readable (a dangling link); `None` for a file.
    pub fn stray_entry(&self, id: &SnapshotId) -> ServiceResult<Option<String>> {
        let path = self.path_of(id);
        match self.disk.read_range(&path, 0, 1) {
            Ok(_) => Ok(None),
            Err(error) => match stray_description(&path, &error) {
                Some(stray) => Ok(Some(stray)),
                None => Err(ServiceError::storage(&path, &error)),
            },
        }
    }

    /// Moves the manifest file of `id`, bytes unchanged, to `quarantine/`
    /// (for a damaged manifest: nothing is deleted, and it no longer counts
    /// as a snapshot). Returns the new path.
    pub fn quarantine(&self, id: &SnapshotId) -> ServiceResult<String> {
        let path = self.path_of(id);
        let bytes = self
            .disk
            .read(&path)
            .map_err(|error| ServiceError::storage(&path, &error))?;
        let to = format!("{}/{SNAPSHOTS_DIR}/{id}.json", crate::store::QUARANTINE_DIR);
        let to = disk::free_path(self.disk.as_ref(), &to)
            .map_err(|error| ServiceError::storage(&to, &error))?;
        disk::write_atomic(self.disk.as_ref(), &to, &bytes)
            .map_err(|error| ServiceError::storage(&to, &error))?;
        self.disk
            .remove(&path)
            .map_err(|error| ServiceError::storage(&path, &error))?;
        self.disk
            .fsync_dir(SNAPSHOTS_DIR)
            .map_err(|error| ServiceError::storage(SNAPSHOTS_DIR, &error))?;
        Ok(to)
    }

    /// The snapshot whose id starts with `prefix`, matched against every
    /// manifest, damaged ones too: a prefix naming a damaged manifest is
    /// never resolved to another snapshot (it is ambiguous, or the damage
    /// is the error).
    pub fn resolve(&self, prefix: &str) -> ServiceResult<SnapshotId> {
        let mut matching = self.ids()?;
        // Ids are lowercase hex; a prefix copied in capitals still matches.
        let lowercase = prefix.to_ascii_lowercase();
        matching.retain(|id| !prefix.is_empty() && id.0.starts_with(&lowercase));
        match matching.as_slice() {
            [] => Err(ServiceError::SnapshotNotFound {
                id: prefix.to_string(),
            }),
            [id] => self.read_checked(id).map(|_| id.clone()),
            several => Err(ServiceError::SnapshotAmbiguous {
                prefix: prefix.to_string(),
                count: several.len(),
            }),
        }
    }

    /// Ids of every committed snapshot (unordered; `.tmp` leftovers skipped).
    pub fn ids(&self) -> ServiceResult<Vec<SnapshotId>> {
        let names = self
            .disk
            .list(SNAPSHOTS_DIR)
            .map_err(|error| ServiceError::storage(SNAPSHOTS_DIR, &error))?;
        let ids = names
            .into_iter()
            .filter_map(|name| name.strip_suffix(".json").map(str::to_string));
        Ok(ids.map(SnapshotId).collect())
    }
}

/// Unreadable packs a chunk's error names (one unreadable pack costs every
/// chunk in it, and each error would repeat the list).
const UNREADABLE_PACKS_NAMED_MAX: usize = 3;

/// What [`Repository::newest_manifest`] found.
#[derive(Debug, Default)]
pub struct NewestSnapshot {
    /// The newest sound snapshot asked for, with its manifest.
    pub found: Option<(SnapshotId, Manifest)>,
    /// Snapshots passed over as damaged (or holding no manifest file) that
    /// could have been chosen: newer ones of the label asked for, and those
    /// whose label and time could not be read at all.
    pub passed_over: Vec<SnapshotId>,
    /// The label of every snapshot whose head was read, sound or not.
    pub labels: std::collections::BTreeSet<String>,
}

/// What a failed read of manifest `id` at `path` means: an absent snapshot
/// (a listed name may be a dangling link, or removed meanwhile), a damaged
/// one when the name holds no file (a directory, a symlink loop), or a
/// storage failure.
fn manifest_read_error(id: &SnapshotId, path: &str, error: &std::io::Error) -> ServiceError {
    match (error.kind(), stray_description(path, error)) {
        (std::io::ErrorKind::NotFound, _) => ServiceError::SnapshotNotFound { id: id.0.clone() },
        (_, Some(problem)) => ServiceError::ManifestInvalid {
            id: id.0.clone(),
            problem,
        },
        _ => ServiceError::storage(path, error),
    }
}

/// What stands at manifest path `path` when reading it failed with `error`
/// because no manifest file is there (a directory, a dangling link, a
/// symlink loop); `None` for any other failure.
fn stray_description(path: &str, error: &std::io::Error) -> Option<String> {
    match error.kind() {
        std::io::ErrorKind::IsADirectory => {
            Some(format!("{path} is a directory, not a manifest file"))
        }
        std::io::ErrorKind::NotFound => Some(format!(
            "{path} is listed, but no file can be read there (a dangling link?)"
        )),
        _ if error.raw_os_error() == Some(libc::ELOOP) => {
            Some(format!("{path} is a symlink loop, not a manifest file"))
        }
        _ => None,
    }
}

/// Passes over listed snapshot `id` when `error` says it is damaged or
/// holds no manifest file (logging `what` is done with it); any other
/// error is the caller's.
fn pass_over(id: &SnapshotId, error: ServiceError, what: &str) -> ServiceResult<()> {
    match error {
        ServiceError::ManifestInvalid { problem, .. } => {
            tracing::warn!(snapshot = %id, %problem, "damaged manifest {what}");
            Ok(())
        }
        ServiceError::SnapshotNotFound { .. } => {
            tracing::warn!(snapshot = %id, "listed manifest unreadable (a dangling link?); {what}");
            Ok(())
        }
        error => Err(error),
    }
}

/// True for a name the repository itself keeps at its top level (what an
/// interrupted creation may have left before `config.json`), temp files of
/// its atomic writes included.
pub fn is_repository_entry(name: &str) -> bool {
    let own = [
        CONFIG_PATH,
        crate::store::DATA_DIR,
        INDEX_DIR,
        SNAPSHOTS_DIR,
        crate::store::QUARANTINE_DIR,
    ];
    own.contains(&name) || disk::is_temp_name(name)
}

/// A repository directory served in-process.
pub struct Repository {
    disk: Arc<dyn Disk>,
    config: RepoConfig,
    /// The format `config.json` says, raised by [`Repository::upgrade_format`].
    format_version_on_disk: std::sync::Mutex<u32>,
    ring: Ring,
    shards: Vec<Index>,
    store: ChunkStore,
    manifests: ManifestStore,
}

impl Repository {
    /// Creates a repository on an empty disk. Refuses a disk that already
    /// holds one.
    pub fn create(disk: Arc<dyn Disk>, config: RepoConfig) -> ServiceResult<Self> {
        config
            .chunker
            .validate()
            .map_err(|error| ServiceError::Repository {
                detail: error.to_string(),
            })?;
        if config.shard_count == 0 || config.vnodes_per_shard == 0 {
            let detail = "shard_count and vnodes_per_shard must be at least 1".to_string();
            return Err(ServiceError::Repository { detail });
        }
        if disk
            .exists(CONFIG_PATH)
            .map_err(|error| ServiceError::storage(CONFIG_PATH, &error))?
        {
            let detail = "a repository already exists here; open it instead".to_string();
            return Err(ServiceError::Repository { detail });
        }
        let bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
        disk::write_atomic(disk.as_ref(), CONFIG_PATH, &bytes)
            .map_err(|error| ServiceError::storage(CONFIG_PATH, &error))?;
        Self::open(disk)
    }

    /// Opens an existing repository.
    pub fn open(disk: Arc<dyn Disk>) -> ServiceResult<Self> {
        let bytes = disk.read(CONFIG_PATH).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => ServiceError::Repository {
                detail: format!(
                    "no {CONFIG_PATH} found: this is not a crosscheck repository; \
                     `crosscheck backup` creates one on first use"
                ),
            },
            _ => ServiceError::storage(CONFIG_PATH, &error),
        })?;
        let config: RepoConfig =
            serde_json::from_slice(&bytes).map_err(|error| ServiceError::Repository {
                detail: format!("{CONFIG_PATH} is unreadable: {error}"),
            })?;
        let readable = RepoConfig::FORMAT_VERSION_MIN..=RepoConfig::FORMAT_VERSION;
        if !readable.contains(&config.format_version) {
            return Err(ServiceError::Repository {
                detail: format!(
                    "format version {} found, this build reads versions {} to {}; \
                     use a crosscheck that reads it",
                    config.format_version,
                    RepoConfig::FORMAT_VERSION_MIN,
                    RepoConfig::FORMAT_VERSION
                ),
            });
        }
        let ring = Ring::new(config.shard_count, config.vnodes_per_shard);
        let shards = (0..config.shard_count)
            .map(|shard| Index::open(disk.clone(), &format!("{INDEX_DIR}/{shard}"), config.mode))
            .collect::<ServiceResult<Vec<_>>>()?;
        let store = ChunkStore::open(disk.clone())?;
        let manifests = ManifestStore::new(disk.clone());
        Ok(Self {
            disk,
            format_version_on_disk: std::sync::Mutex::new(config.format_version),
            config,
            ring,
            shards,
            store,
            manifests,
        })
    }

    /// Opens the repository, creating it with `config` if the disk has none.
    pub fn open_or_create(disk: Arc<dyn Disk>, config: RepoConfig) -> ServiceResult<Self> {
        if disk
            .exists(CONFIG_PATH)
            .map_err(|error| ServiceError::storage(CONFIG_PATH, &error))?
        {
            Self::open(disk)
        } else {
            Self::create(disk, config)
        }
    }

    /// The repository's settings.
    pub fn repo_config(&self) -> &RepoConfig {
        &self.config
    }

    /// The disk it lives on.
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    /// The chunk store.
    pub fn store(&self) -> &ChunkStore {
        &self.store
    }

    /// The index shards, by shard index.
    pub fn shards(&self) -> &[Index] {
        &self.shards
    }

    /// The manifest store.
    pub fn manifests(&self) -> &ManifestStore {
        &self.manifests
    }

    /// The shard owning `fingerprint`.
    pub fn shard_for(&self, fingerprint: &Fingerprint) -> &Index {
        &self.shards[self.ring.shard_of(fingerprint)]
    }

    fn query_now(
        &self,
        client: ClientId,
        fingerprints: &[Fingerprint],
        now_ms: u64,
    ) -> Vec<Answer> {
        // Group by shard, ask each once, then put answers back in order.
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.shards.len()];
        for (position, fingerprint) in fingerprints.iter().enumerate() {
            by_shard[self.ring.shard_of(fingerprint)].push(position);
        }
        let mut answers = vec![Answer::Present; fingerprints.len()];
        for (shard, positions) in by_shard.iter().enumerate() {
            let asked: Vec<Fingerprint> = positions.iter().map(|&i| fingerprints[i]).collect();
            let shard_answers = self.shards[shard].query(client, &asked, now_ms);
            for (&position, answer) in positions.iter().zip(shard_answers) {
                answers[position] = answer;
            }
        }
        answers
    }

    /// Raises `config.json`'s format version to this build's, durably,
    /// unless it is there already: called before anything of the current
    /// format is written. Only the version changes.
    pub fn upgrade_format(&self) -> ServiceResult<()> {
        let mut on_disk = self
            .format_version_on_disk
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if *on_disk >= RepoConfig::FORMAT_VERSION {
            return Ok(());
        }
        let config = RepoConfig {
            format_version: RepoConfig::FORMAT_VERSION,
            ..self.config.clone()
        };
        let bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
        disk::write_atomic(self.disk.as_ref(), CONFIG_PATH, &bytes)
            .map_err(|error| ServiceError::storage(CONFIG_PATH, &error))?;
        *on_disk = RepoConfig::FORMAT_VERSION;
        Ok(())
    }

    fn put_now(&self, chunks: &[(Fingerprint, ChunkBytes)]) -> ServiceResult<PutOutcome> {
        self.upgrade_format()?;
        let outcome = self.store.put_batch(chunks)?;
        // The pack is durable: now, and only now, the index may learn of it.
        // Chunks the store already had are recorded too, which heals an index
        // that lost them to a crash between the two steps.
        let mut by_shard: Vec<Vec<Fingerprint>> = vec![Vec::new(); self.shards.len()];
        for (fingerprint, _) in chunks {
            let shard = self.ring.shard_of(fingerprint);
            if !self.shards[shard].contains(fingerprint)
                || self.config.mode == ConcurrencyMode::Naive
            {
                by_shard[shard].push(*fingerprint);
            }
        }
        // Deferred: one segment per shard per snapshot instead of per batch
        // (each is two fsyncs); see Index::record_deferred for why it is safe.
        for (shard, fingerprints) in by_shard.iter().enumerate() {
            self.shards[shard].record_deferred(fingerprints);
        }
        Ok(outcome)
    }

    fn get_chunk_now(&self, fingerprint: &Fingerprint) -> ServiceResult<Vec<u8>> {
        match self.store.get(fingerprint) {
            // Recorded, yet in no readable pack: name the unreadable packs,
            // if any (with none, a pack was lost, and it is just missing).
            Err(missing @ ServiceError::ChunkMissing { .. })
                if self.shard_for(fingerprint).contains(fingerprint) =>
            {
                let damaged = self.store.damaged_packs();
                if damaged.is_empty() {
                    return Err(missing);
                }
                // A few named; fsck lists them all with their problems.
                let mut names: Vec<String> = damaged
                    .iter()
                    .take(UNREADABLE_PACKS_NAMED_MAX)
                    .map(|pack| format!("{}: {}", pack.path, pack.problem))
                    .collect();
                if damaged.len() > names.len() {
                    names.push(format!("{} more", damaged.len() - names.len()));
                }
                let detail = format!(
                    "the index records it, yet no readable pack holds it: it was in a pack \
                     that cannot be read ({}), or in one since lost",
                    names.join(", ")
                );
                Err(ServiceError::ChunkDamaged {
                    fingerprint: *fingerprint,
                    problem: crate::service::ChunkProblem::Unreadable { detail },
                })
            }
            other => other,
        }
    }

    fn commit_now(&self, manifest: &Manifest) -> ServiceResult<SnapshotId> {
        // The id costs a serialization: worked out here only for an error;
        // `commit` serializes once for both id and bytes.
        let invalid = |problem: String| ServiceError::ManifestInvalid {
            id: manifest.id().0,
            problem,
        };
        manifest
            .validate()
            .map_err(|error| invalid(error.to_string()))?;
        // Defence in depth: refuse a manifest naming a chunk not durable. Not
        // in naive mode, whose bug the simulator must see, not have masked.
        let named = manifest.entries.iter().flat_map(|entry| match &entry.kind {
            EntryKind::File { chunks, .. } => chunks.as_slice(),
            _ => &[],
        });
        let missing = self.store.first_missing(named);
        if let (Some(missing), false) = (missing, self.config.mode == ConcurrencyMode::Naive) {
            return Err(invalid(format!(
                "it names chunk {missing}, which the store does not hold (lost or damaged: \
                 `crosscheck fsck --repair` makes the next backup store it again)"
            )));
        }
        self.persist_index()?;
        self.manifests.commit(manifest)
    }

    /// Makes every deferred index record durable (done at each commit, and
    /// on drop as a best effort).
    pub fn persist_index(&self) -> ServiceResult<()> {
        self.shards.iter().try_for_each(Index::persist)
    }

    fn list_now(&self) -> ServiceResult<Vec<SnapshotSummary>> {
        let mut summaries = Vec::new();
        for id in self.manifests.ids()? {
            match self.manifests.get(&id) {
                Ok(manifest) => summaries.push(manifest.summary_as(id)),
                // One damaged manifest must not hide the others (restore finds
                // snapshots through this list); fsck names it.
                Err(error) => pass_over(&id, error, "left out of the list")?,
            }
        }
        summaries.sort_by(|a, b| (a.time_unix_ms, &a.id).cmp(&(b.time_unix_ms, &b.id)));
        Ok(summaries)
    }

    /// The newest sound snapshot labelled `label`, by its time (then id),
    /// with its manifest. Only that manifest is read whole and checked:
    /// the others' labels and times come from their first bytes. A damaged
    /// manifest is passed over with a warning, and the next newest tried;
    /// one whose head cannot be read from its first bytes is read whole.
    pub fn latest_manifest(&self, label: &str) -> ServiceResult<Option<(SnapshotId, Manifest)>> {
        Ok(self.newest_manifest(Some(label), false)?.found)
    }

    /// As [`Repository::latest_manifest`], over the snapshots of every label
    /// when `label` is `None`; also says which snapshots it passed over and
    /// which labels it saw. With `restorable`, a manifest whose paths
    /// restore must refuse ([`Manifest::validate`]) is passed over too.
    pub fn newest_manifest(
        &self,
        label: Option<&str>,
        restorable: bool,
    ) -> ServiceResult<NewestSnapshot> {
        let mut newest = NewestSnapshot::default();
        let mut candidates: Vec<(u64, SnapshotId)> = Vec::new();
        for id in self.manifests.ids()? {
            let head = match self.manifests.head_unchecked(&id) {
                Ok(Some(head)) => Ok(head),
                Ok(None) => self
                    .manifests
                    .get(&id)
                    .map(|manifest| (manifest.label, manifest.time_unix_ms)),
                Err(error) => Err(error),
            };
            let (head_label, time_unix_ms) = match head {
                Ok(head) => head,
                Err(error) => {
                    pass_over(&id, error, "passed over")?;
                    newest.passed_over.push(id);
                    continue;
                }
            };
            if label.is_none_or(|label| head_label == label) {
                candidates.push((time_unix_ms, id));
            }
            newest.labels.insert(head_label);
        }
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        for (_, id) in candidates {
            let checked = self
                .manifests
                .get(&id)
                .and_then(|manifest| match restorable {
                    true => manifest
                        .validate()
                        .map(|()| manifest)
                        .map_err(|unsafe_path| ServiceError::ManifestInvalid {
                            id: id.0.clone(),
                            problem: unsafe_path.to_string(),
                        }),
                    false => Ok(manifest),
                });
            match checked {
                // A sound manifest's head is what its first bytes said.
                Ok(manifest) => {
                    newest.found = Some((id, manifest));
                    break;
                }
                Err(error) => {
                    pass_over(&id, error, "passed over")?;
                    newest.passed_over.push(id);
                }
            }
        }
        Ok(newest)
    }

    /// The id [`Repository::latest_manifest`] finds.
    pub fn latest_snapshot(&self, label: &str) -> ServiceResult<Option<SnapshotId>> {
        Ok(self.latest_manifest(label)?.map(|(id, _)| id))
    }

    fn bloom_now(&self) -> BloomFilter {
        let count: usize = self.shards.iter().map(Index::len).sum();
        // Sized with headroom so the filter stays near its rate as it ages.
        let mut filter = BloomFilter::with_capacity(count * 2 + 1024, BLOOM_FALSE_POSITIVE_RATE);
        self.shards
            .iter()
            .for_each(|shard| shard.add_to_bloom(&mut filter));
        filter
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        // Best effort: a failure here only costs re-uploads later.
        if let Err(error) = self.persist_index() {
            tracing::warn!(%error, "index records not persisted at close; later backups re-upload");
        }
    }
}

impl BackupService for Repository {
    async fn config(&self) -> ServiceResult<RepoConfig> {
        Ok(self.config.clone())
    }

    async fn bloom(&self) -> ServiceResult<BloomFilter> {
        Ok(self.bloom_now())
    }

    async fn query(
        &self,
        client: ClientId,
        fingerprints: Vec<Fingerprint>,
        now_ms: u64,
    ) -> ServiceResult<Vec<Answer>> {
        Ok(self.query_now(client, &fingerprints, now_ms))
    }

    async fn put_chunks(
        &self,
        chunks: Vec<(Fingerprint, ChunkBytes)>,
    ) -> ServiceResult<PutOutcome> {
        self.put_now(&chunks)
    }

    async fn get_chunk(&self, fingerprint: Fingerprint) -> ServiceResult<Vec<u8>> {
        self.get_chunk_now(&fingerprint)
    }

    async fn commit_manifest(&self, manifest: Manifest) -> ServiceResult<SnapshotId> {
        self.commit_now(&manifest)
    }

    async fn get_manifest(&self, id: SnapshotId) -> ServiceResult<Manifest> {
        self.manifests.get(&id)
    }

    async fn list_snapshots(&self) -> ServiceResult<Vec<SnapshotSummary>> {
        self.list_now()
    }
}

/// A [`Repository`] whose uploads are written on a thread of their own, so
/// that a client reads its next batch while a pack is written and fsynced
/// (on this kind of machine the write is most of a first backup's wall
/// time). Nothing else changes: `put_chunks` still returns only once the
/// pack is durable and the index has recorded it, and every other call runs
/// on the caller's thread. Made by [`Repository::with_upload_thread`].
pub struct UploadThread<'a> {
    repository: &'a Repository,
    jobs: crossbeam_channel::Sender<UploadJob>,
    /// Nanoseconds the thread has spent storing packs so far.
    busy_nanos: &'a std::sync::atomic::AtomicU64,
}

impl UploadThread<'_> {
    /// Seconds the thread has spent storing packs (writing, fsyncing and
    /// recording them in the index), for every upload answered so far. Near
    /// a backup's whole wall time, the disk is what limits it.
    pub fn busy_seconds(&self) -> f64 {
        let busy_nanos = self.busy_nanos.load(std::sync::atomic::Ordering::SeqCst);
        busy_nanos as f64 / 1e9
    }
}

/// One batch for the upload thread, and where its outcome goes.
struct UploadJob {
    chunks: Vec<(Fingerprint, ChunkBytes)>,
    done: futures_channel::oneshot::Sender<ServiceResult<PutOutcome>>,
}

impl Repository {
    /// Runs `body` with this repository behind an [`UploadThread`]; the
    /// thread is joined before this returns.
    pub fn with_upload_thread<R>(&self, body: impl FnOnce(&UploadThread<'_>) -> R) -> R {
        // One waiting batch is enough: the client has one upload in flight.
        let (jobs, queue) = crossbeam_channel::bounded::<UploadJob>(1);
        let busy_nanos = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            let busy = &busy_nanos;
            scope.spawn(move || {
                for job in queue {
                    // Real time, on a real thread: this type never runs
                    // under the simulator.
                    let started = std::time::Instant::now();
                    let outcome = self.put_now(&job.chunks);
                    let elapsed_nanos = started.elapsed().as_nanos() as u64;
                    busy.fetch_add(elapsed_nanos, std::sync::atomic::Ordering::SeqCst);
                    // A client that stopped waiting loses nothing: the
                    // pack is durable and recorded all the same.
                    let _ = job.done.send(outcome);
                }
            });
            // Dropped at the end of this closure, which closes the queue
            // and lets the thread end before the scope joins it.
            let service = UploadThread {
                repository: self,
                jobs,
                busy_nanos: busy,
            };
            body(&service)
        })
    }
}

fn upload_thread_stopped() -> ServiceError {
    ServiceError::Repository {
        detail: "the upload thread stopped before answering (it panicked: see the message \
                 above); this is a bug"
            .to_string(),
    }
}

impl BackupService for UploadThread<'_> {
    async fn config(&self) -> ServiceResult<RepoConfig> {
        self.repository.config().await
    }

    async fn bloom(&self) -> ServiceResult<BloomFilter> {
        self.repository.bloom().await
    }

    async fn query(
        &self,
        client: ClientId,
        fingerprints: Vec<Fingerprint>,
        now_ms: u64,
    ) -> ServiceResult<Vec<Answer>> {
        self.repository.query(client, fingerprints, now_ms).await
    }

    async fn put_chunks(
        &self,
        chunks: Vec<(Fingerprint, ChunkBytes)>,
    ) -> ServiceResult<PutOutcome> {
        let (done, outcome) = futures_channel::oneshot::channel();
        let job = UploadJob { chunks, done };
        self.jobs.send(job).map_err(|_| upload_thread_stopped())?;
        outcome.await.map_err(|_| upload_thread_stopped())?
    }

    async fn get_chunk(&self, fingerprint: Fingerprint) -> ServiceResult<Vec<u8>> {
        self.repository.get_chunk(fingerprint).await
    }

    async fn commit_manifest(&self, manifest: Manifest) -> ServiceResult<SnapshotId> {
        self.repository.commit_manifest(manifest).await
    }

    async fn get_manifest(&self, id: SnapshotId) -> ServiceResult<Manifest> {
        self.repository.get_manifest(id).await
    }

    async fn list_snapshots(&self) -> ServiceResult<Vec<SnapshotSummary>> {
        self.repository.list_snapshots().await
    }
}
