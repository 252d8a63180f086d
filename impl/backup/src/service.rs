//! The service boundary the client talks to: index, chunk store, manifests.
//!
//! [`BackupService`] is the whole protocol of a backup and a restore. The
//! in-process [`crate::Repository`] implements it over a directory; the
//! simulator implements it over RPC to separate nodes. Every type crossing it
//! is plain data (serde), and every failure is a [`ServiceError`] that can be
//! sent back over a network. Time enters as `now_ms` from the caller.

use std::future::Future;

use crate::{
    BloomFilter, ChunkBytes, ChunkerConfig, Fingerprint, Manifest, SnapshotId, SnapshotSummary,
};

/// Who is asking the index, so a lease can name its holder.
pub type ClientId = u64;

/// How an index shard handles two clients asking for the same missing chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum ConcurrencyMode {
    /// Lock-free: every asker of a missing chunk uploads it; PUTs are
    /// idempotent, so the cost is duplicate transfers, never a lost chunk.
    Optimistic,
    /// The first asker of a missing chunk gets a lease and uploads; others
    /// are told to wait and ask again. A lease frees when the chunk is
    /// recorded or at `lease_ms` after it was granted.
    Pessimistic { lease_ms: u64 },
    /// DELIBERATE BUG, for the simulator to catch: the index marks a chunk
    /// present the moment it is first asked about, before any upload. A
    /// second client is then told "present" for bytes nobody stored; if the
    /// first client crashes or is slow, a committed snapshot names a chunk
    /// that does not exist.
    Naive,
}

/// The index's answer about one fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "answer", rename_all = "lowercase")]
pub enum Answer {
    /// Stored durably; do not upload.
    Present,
    /// Missing: upload it (in pessimistic mode the asker now holds the lease).
    Upload,
    /// Missing, and another client holds the lease until this time: ask again.
    Wait { lease_expires_at_ms: u64 },
}

/// What a chunk upload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PutOutcome {
    /// Chunks the store did not have and now holds durably.
    pub stored_chunks: u64,
    /// Their total size.
    pub stored_bytes: u64,
    /// Chunks sent that the store already had (a stale Bloom filter, a race
    /// between clients, or a retry after a crash): harmless, counted.
    pub duplicate_chunks: u64,
}

/// Settings fixed when a repository is created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepoConfig {
    /// On-disk format; [`RepoConfig::FORMAT_VERSION`] for this code.
    pub format_version: u32,
    /// Every backup into a repository must chunk alike, or nothing dedups.
    pub chunker: ChunkerConfig,
    /// Index shards on the consistent-hash ring.
    pub shard_count: usize,
    /// Ring points per shard.
    pub vnodes_per_shard: usize,
    /// How the index treats concurrent askers.
    pub mode: ConcurrencyMode,
}

impl RepoConfig {
    /// The on-disk format this code writes: 2 since packs give each chunk's
    /// offset (CCPACK02).
    pub const FORMAT_VERSION: u32 = 2;
    /// The oldest format this code reads. A repository of an older format
    /// is upgraded (its `format_version` raised) before the first pack of
    /// the new format goes into it, so a build that cannot read those packs
    /// refuses the repository instead of calling them damaged.
    pub const FORMAT_VERSION_MIN: u32 = 1;
}

impl Default for RepoConfig {
    fn default() -> Self {
        Self {
            format_version: Self::FORMAT_VERSION,
            chunker: ChunkerConfig::default(),
            shard_count: 4,
            vnodes_per_shard: crate::Ring::DEFAULT_VNODES_PER_SHARD,
            mode: ConcurrencyMode::Optimistic,
        }
    }
}

/// Why a chunk's stored bytes cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum ChunkProblem {
    /// The bytes hash to something else (a bit flip, an overwrite).
    #[error("its bytes hash to {found}")]
    HashMismatch { found: Fingerprint },
    /// Fewer bytes than recorded (a truncated object).
    #[error("truncated: expected {expected_bytes} bytes, found {found_bytes}")]
    Truncated {
        expected_bytes: u64,
        found_bytes: u64,
    },
    /// An empty object where a chunk was recorded.
    #[error("the stored object is empty (zero length)")]
    ZeroLength,
    /// The object holding it could not be read or parsed.
    #[error("its pack is unreadable: {detail}")]
    Unreadable { detail: String },
}

/// Every failure a service call can report. Plain data, so it crosses RPC.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum ServiceError {
    /// No stored chunk has this fingerprint.
    #[error(
        "chunk {fingerprint} is not in the store; run `crosscheck fsck` to see what it affects"
    )]
    ChunkMissing { fingerprint: Fingerprint },
    /// A stored chunk is damaged.
    #[error(
        "chunk {fingerprint} is damaged: {problem}; snapshots naming it cannot be fully \
         restored, others can (run `crosscheck fsck`)"
    )]
    ChunkDamaged {
        fingerprint: Fingerprint,
        problem: ChunkProblem,
    },
    /// No snapshot has this id or prefix.
    #[error("no snapshot matches {id:?}; list them with `crosscheck snapshots`")]
    SnapshotNotFound { id: String },
    /// A prefix matches several snapshots.
    #[error("snapshot prefix {prefix:?} matches {count} snapshots; give more characters")]
    SnapshotAmbiguous { prefix: String, count: usize },
    /// A manifest that is unreadable, or that the service refuses to commit.
    #[error("manifest {id} is invalid: {problem}")]
    ManifestInvalid { id: String, problem: String },
    /// The repository directory is not one this code can use.
    #[error("repository problem: {detail}")]
    Repository { detail: String },
    /// Storage failed under a path.
    #[error("storage failed at {path:?}: {detail}; check the disk and permissions, then retry")]
    Storage { path: String, detail: String },
    /// The service could not be reached (used by RPC implementations).
    #[error("service unavailable: {detail}; retry later")]
    Unavailable { detail: String },
}

impl ServiceError {
    /// A storage failure at `path`.
    pub fn storage(path: &str, error: &std::io::Error) -> Self {
        Self::Storage {
            path: path.to_string(),
            detail: error.to_string(),
        }
    }
}

/// Shorthand for service results.
pub type ServiceResult<T> = Result<T, ServiceError>;

/// The protocol between a backup client and the service. Futures are `Send`
/// so the simulator can spawn clients as tasks.
pub trait BackupService: Send + Sync {
    /// The repository's fixed settings (the client chunks with its chunker).
    fn config(&self) -> impl Future<Output = ServiceResult<RepoConfig>> + Send;

    /// A Bloom filter of every fingerprint the index holds right now.
    fn bloom(&self) -> impl Future<Output = ServiceResult<BloomFilter>> + Send;

    /// One answer per fingerprint, in order. `now_ms` is the caller's clock,
    /// used for leases in pessimistic mode.
    fn query(
        &self,
        client: ClientId,
        fingerprints: Vec<Fingerprint>,
        now_ms: u64,
    ) -> impl Future<Output = ServiceResult<Vec<Answer>>> + Send;

    /// Stores chunks durably, then records them in the index. Idempotent per
    /// fingerprint. Returns only after both are durable.
    fn put_chunks(
        &self,
        chunks: Vec<(Fingerprint, ChunkBytes)>,
    ) -> impl Future<Output = ServiceResult<PutOutcome>> + Send;

    /// A chunk's bytes, verified against its fingerprint.
    fn get_chunk(
        &self,
        fingerprint: Fingerprint,
    ) -> impl Future<Output = ServiceResult<Vec<u8>>> + Send;

    /// Commits a manifest atomically; from then on the snapshot is listed.
    fn commit_manifest(
        &self,
        manifest: Manifest,
    ) -> impl Future<Output = ServiceResult<SnapshotId>> + Send;

    /// The manifest of a snapshot, checked against its id.
    fn get_manifest(&self, id: SnapshotId) -> impl Future<Output = ServiceResult<Manifest>> + Send;

    /// Every committed snapshot, oldest first.
    fn list_snapshots(&self) -> impl Future<Output = ServiceResult<Vec<SnapshotSummary>>> + Send;
}
