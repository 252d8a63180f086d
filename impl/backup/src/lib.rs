//! The deduplicating backup service, as real code.
//!
//! Files are cut into content-defined chunks ([`chunker`], FastCDC v2020),
//! each named by its SHA-256 [`Fingerprint`]; the [`index`] (sharded over a
//! consistent-hash [`ring`], fronted by a [`bloom`] filter at the client)
//! answers which fingerprints it lacks; only those chunks are uploaded to the
//! [`store`]; a [`manifest`] of ordered fingerprints per file is committed
//! last. The one idea to hold: **a manifest may only be committed once every
//! chunk it names is durably stored**, and the index may only claim a chunk
//! after the store holds it durably.
//!
//! Map of the crate:
//! - [`service::BackupService`] is the boundary between client and service;
//!   [`Repository`] implements it in-process over a [`disk::Disk`]; the
//!   simulator implements it over RPC with the same [`index::Index`],
//!   [`store::ChunkStore`] and [`repository::ManifestStore`] on separate nodes.
//! - [`client::backup`] reads a [`source::Source`] through a
//!   [`pipeline::Pipeline`] (inline, or parallel on every core). Chunks
//!   travel as [`ChunkBytes`], ranges of pooled read buffers, never copied
//!   on the way to the pack that the store writes from them.
//! - [`restore::restore`] validates every manifest path before writing.
//! - [`fsck::fsck`] tells damage from harmless leftovers.
//!
//! Crash safety (with a [`disk::RealDisk`]) is argued in [`repository`]: pack
//! durable → index records → manifest committed last, so a `kill -9` at any
//! point leaves every earlier snapshot restorable. No function here reads a
//! clock; time comes in as arguments. Threads are spawned only by
//! [`source::FsSource`]'s listing, [`pipeline::Pipeline::Parallel`] and
//! [`Repository::with_upload_thread`], none of which the simulator uses.

pub mod bloom;
pub mod chunk_bytes;
pub mod chunker;
pub mod client;
pub mod disk;
pub mod fingerprint;
pub mod fsck;
pub mod index;
pub mod manifest;
pub mod pipeline;
pub mod repository;
pub mod restore;
pub mod ring;
pub mod service;
pub mod source;
pub mod store;

pub use bloom::BloomFilter;
pub use chunk_bytes::ChunkBytes;
pub use chunker::{ChunkReader, ChunkerConfig};
pub use client::{
    BackupError, BackupOptions, BackupReport, BackupStats, Clock, NoProgress, Progress,
};
pub use fingerprint::Fingerprint;
pub use fsck::{FsckReport, cleanup, fsck};
pub use manifest::{Entry, EntryKind, Manifest, SnapshotId, SnapshotSummary};
pub use pipeline::Pipeline;
pub use repository::{NewestSnapshot, Repository, UploadThread};
pub use restore::{RestoreError, RestoreStats};
pub use ring::Ring;
pub use service::{Answer, BackupService, ClientId, ConcurrencyMode, RepoConfig, ServiceError};
pub use source::{FileStamp, FsSource, MemoryEntry, MemorySource, Source, SourceEntry, SourceKind};
