//! The backup client: chunk, fingerprint, ask, upload the missing, commit.
//!
//! The client holds one rule: **the manifest is committed only after every
//! chunk it names was reported present or acknowledged as stored.** It talks
//! to any [`BackupService`], reads any [`Source`], and takes time from a
//! [`Clock`] the caller provides (virtual under the simulator), so the same
//! code runs in-process, in the CLI and as a simulated node.
//!
//! Per batch of new chunks: a chunk the Bloom filter rules out is uploaded
//! without asking (a lookup saved); "maybe present" asks the index; the index
//! may say present, upload, or (pessimistic mode) wait for another client's
//! lease. A Bloom filter can be stale only towards "absent" for chunks added
//! since it was fetched, which costs a duplicate upload, never a lost chunk.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use crate::manifest::{Entry, EntryKind, Manifest, SnapshotId};
use crate::pipeline::{self, EventStream, Pipeline, SourceEvent};
use crate::service::{Answer, BackupService, ClientId, ConcurrencyMode, ServiceError};
use crate::source::{Source, SourceError, SourceKind};
use crate::{BloomFilter, Fingerprint};

/// Time as the caller sees it: real for the CLI, virtual in the simulator.
pub trait Clock: Send + Sync {
    /// Milliseconds on the caller's clock (the index compares lease times).
    fn now_ms(&self) -> u64;
    /// Waits `duration_ms` (between re-asks for a leased chunk).
    fn sleep_ms(&self, duration_ms: u64) -> impl Future<Output = ()> + Send;
}

/// Progress callbacks for a progress bar; every method defaults to nothing.
pub trait Progress: Sync {
    /// The source was listed: this many files and bytes are to be read.
    fn started(&self, _file_count: u64, _size_bytes: u64) {}
    /// `bytes` more were read and chunked.
    fn advanced(&self, _bytes: u64) {}
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// How to run one backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Stored in the manifest (e.g. the source directory).
    pub label: String,
    /// Stored in the manifest: the caller's clock at the start.
    pub time_unix_ms: u64,
    /// This client's identity for index leases.
    pub client: ClientId,
    /// Inline (simulator) or parallel (CLI) chunking and hashing.
    pub pipeline: Pipeline,
    /// New chunks are uploaded in batches of about this many bytes; each
    /// batch is one pack and one fsync on the service.
    pub batch_size_bytes: usize,
    /// Use the Bloom filter to skip index lookups (ignored in pessimistic
    /// mode, where only asking the index takes a lease).
    pub use_bloom: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            label: String::new(),
            time_unix_ms: 0,
            client: 0,
            pipeline: Pipeline::Inline,
            batch_size_bytes: 16 << 20,
            use_bloom: true,
        }
    }
}

/// A source entry left out of the snapshot, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkippedEntry {
    /// Relative path in the source.
    pub path: String,
    /// Why it was not backed up.
    pub reason: String,
}

/// What a backup read, stored and saved.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackupStats {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub directories: u64,
    /// Symlinks in the snapshot (stored as links).
    pub symlinks: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Chunks cut (repeats counted).
    pub chunks: u64,
    /// Chunks the store did not have and now holds.
    pub new_chunks: u64,
    /// Their bytes.
    pub new_bytes: u64,
    /// Chunks uploaded that the store already held.
    pub duplicate_uploads: u64,
    /// Chunks uploaded because the Bloom filter ruled them out: index
    /// lookups saved.
    pub bloom_lookups_saved: u64,
    /// Chunks the Bloom filter called "maybe present" that the index lacked.
    pub bloom_false_positives: u64,
    /// Fingerprints sent to the index.
    pub index_lookups: u64,
    /// Times a chunk was leased to another client and had to be re-asked.
    pub lease_waits: u64,
    /// Entries not backed up (special files, unreadable files, bad names).
    pub skipped: Vec<SkippedEntry>,
}

impl BackupStats {
    /// Bytes read per byte newly stored; infinite when nothing new was stored.
    pub fn dedup_ratio(&self) -> f64 {
        if self.new_bytes == 0 {
            f64::INFINITY
        } else {
            self.bytes_read as f64 / self.new_bytes as f64
        }
    }
}

/// A committed backup.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackupReport {
    /// The snapshot committed.
    pub snapshot: SnapshotId,
    /// Figures.
    pub stats: BackupStats,
}

/// Why a backup did not commit. Nothing committed means no snapshot; chunks
/// already uploaded stay as harmless, reusable leftovers.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The source root is unusable.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The service failed.
    #[error("backup failed, no snapshot committed: {0}")]
    Service(#[from] ServiceError),
    /// The service answered out of protocol.
    #[error("the service broke the protocol: {0}; this is a bug in the service")]
    Protocol(String),
}

/// State of one backup run, threaded through the event loop.
struct Run<'a, S: BackupService, C: Clock> {
    service: &'a S,
    clock: &'a C,
    options: &'a BackupOptions,
    bloom: Option<BloomFilter>,
    seen: HashSet<Fingerprint>,
    batch: Vec<(Fingerprint, Vec<u8>)>,
    batch_bytes: usize,
    stats: BackupStats,
}

/// Backs up `source` into `service` and commits a snapshot.
pub async fn backup<S: BackupService, C: Clock>(
    service: &S,
    source: Arc<dyn Source>,
    options: &BackupOptions,
    clock: &C,
    progress: &dyn Progress,
) -> Result<BackupReport, BackupError> {
    let config = service.config().await?;
    let entries = source.list()?;
    let (file_count, size_bytes) = entries
        .iter()
        .fold((0, 0), |(count, bytes), entry| match entry.kind {
            SourceKind::File { size_bytes } => (count + 1, bytes + size_bytes),
            _ => (count, bytes),
        });
    progress.started(file_count, size_bytes);
    let bloom_usable =
        options.use_bloom && !matches!(config.mode, ConcurrencyMode::Pessimistic { .. });
    let bloom = if bloom_usable {
        Some(service.bloom().await?)
    } else {
        None
    };
    let mut run = Run {
        service,
        clock,
        options,
        bloom,
        seen: HashSet::new(),
        batch: Vec::new(),
        batch_bytes: 0,
        stats: BackupStats::default(),
    };
    let events = pipeline::start(options.pipeline, source, entries, config.chunker);
    let manifest_entries = run.consume(events, progress).await?;
    run.flush().await?;
    // Every chunk named is now present or durably stored: commit, last.
    let manifest = Manifest {
        label: options.label.clone(),
        time_unix_ms: options.time_unix_ms,
        entries: manifest_entries,
    };
    let snapshot = service.commit_manifest(manifest).await?;
    Ok(BackupReport {
        snapshot,
        stats: run.stats,
    })
}

fn protocol(what: &str) -> BackupError {
    BackupError::Protocol(format!("the pipeline produced {what}"))
}

impl<S: BackupService, C: Clock> Run<'_, S, C> {
    /// Turns the ordered event stream into manifest entries, uploading
    /// chunks batch by batch on the way. The stream (and its threads) ends
    /// before this returns.
    async fn consume(
        &mut self,
        mut events: Box<dyn EventStream + Send>,
        progress: &dyn Progress,
    ) -> Result<Vec<Entry>, BackupError> {
        let mut manifest_entries = Vec::new();
        let mut current_file: Option<(Entry, Vec<Fingerprint>, u64)> = None;
        while let Some(event) = events.next_event() {
            match event {
                SourceEvent::Entry(entry) => self.add_entry(entry, &mut manifest_entries),
                SourceEvent::FileStart(entry) => {
                    let kind = EntryKind::File {
                        size_bytes: 0,
                        chunks: Vec::new(),
                    };
                    let manifest_entry = Entry {
                        path: entry.path,
                        mode: entry.mode,
                        kind,
                    };
                    current_file = Some((manifest_entry, Vec::new(), 0));
                }
                SourceEvent::Chunk { fingerprint, bytes } => {
                    let (_, chunks, size_bytes) = current_file
                        .as_mut()
                        .ok_or_else(|| protocol("a chunk outside a file"))?;
                    chunks.push(fingerprint);
                    *size_bytes += bytes.len() as u64;
                    progress.advanced(bytes.len() as u64);
                    self.add_chunk(fingerprint, bytes).await?;
                }
                SourceEvent::FileEnd => {
                    let (mut entry, chunks, size_bytes) = current_file
                        .take()
                        .ok_or_else(|| protocol("a file end outside a file"))?;
                    entry.kind = EntryKind::File { size_bytes, chunks };
                    self.stats.files += 1;
                    manifest_entries.push(entry);
                }
                SourceEvent::FileFailed { reason } => {
                    let (entry, ..) = current_file
                        .take()
                        .ok_or_else(|| protocol("a file failure outside a file"))?;
                    self.stats.skipped.push(SkippedEntry {
                        path: entry.path,
                        reason,
                    });
                }
            }
        }
        Ok(manifest_entries)
    }

    fn add_entry(&mut self, entry: crate::source::SourceEntry, out: &mut Vec<Entry>) {
        let kind = match entry.kind {
            SourceKind::Directory => {
                self.stats.directories += 1;
                EntryKind::Directory
            }
            SourceKind::Symlink { target } => {
                self.stats.symlinks += 1;
                EntryKind::Symlink { target }
            }
            SourceKind::Skipped { reason } => {
                self.stats.skipped.push(SkippedEntry {
                    path: entry.path,
                    reason,
                });
                return;
            }
            SourceKind::File { .. } => unreachable!("files arrive as FileStart"),
        };
        out.push(Entry {
            path: entry.path,
            mode: entry.mode,
            kind,
        });
    }

    async fn add_chunk(
        &mut self,
        fingerprint: Fingerprint,
        bytes: Vec<u8>,
    ) -> Result<(), BackupError> {
        self.stats.chunks += 1;
        self.stats.bytes_read += bytes.len() as u64;
        // A chunk seen earlier in this run is handled by its first batch.
        if !self.seen.insert(fingerprint) {
            return Ok(());
        }
        self.batch_bytes += bytes.len();
        self.batch.push((fingerprint, bytes));
        if self.batch_bytes >= self.options.batch_size_bytes {
            self.flush().await?;
        }
        Ok(())
    }

    /// Settles the current batch: every chunk in it ends present in the store.
    async fn flush(&mut self) -> Result<(), BackupError> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if batch.is_empty() {
            return Ok(());
        }
        let mut upload = Vec::new();
        let mut ask = Vec::new();
        for (fingerprint, bytes) in batch {
            match &self.bloom {
                Some(bloom) if !bloom.may_contain(&fingerprint) => {
                    self.stats.bloom_lookups_saved += 1;
                    upload.push((fingerprint, bytes));
                }
                _ => ask.push((fingerprint, bytes)),
            }
        }
        while !ask.is_empty() || !upload.is_empty() {
            let (to_upload, waiting, soonest_expiry_ms) = self.ask_index(ask).await?;
            upload.extend(to_upload);
            if !upload.is_empty() {
                let outcome = self.service.put_chunks(std::mem::take(&mut upload)).await?;
                self.stats.new_chunks += outcome.stored_chunks;
                self.stats.new_bytes += outcome.stored_bytes;
                self.stats.duplicate_uploads += outcome.duplicate_chunks;
            }
            ask = waiting;
            if let Some(expiry_ms) = soonest_expiry_ms {
                // Another client holds these leases: wait for it (or expiry).
                let now_ms = self.clock.now_ms();
                self.clock
                    .sleep_ms(expiry_ms.saturating_sub(now_ms).clamp(1, 100))
                    .await;
            }
        }
        Ok(())
    }

    /// Asks the index about `ask`; returns (upload now, ask again, the
    /// soonest lease expiry among those to ask again).
    async fn ask_index(
        &mut self,
        ask: Vec<(Fingerprint, Vec<u8>)>,
    ) -> Result<
        (
            Vec<(Fingerprint, Vec<u8>)>,
            Vec<(Fingerprint, Vec<u8>)>,
            Option<u64>,
        ),
        BackupError,
    > {
        if ask.is_empty() {
            return Ok((Vec::new(), Vec::new(), None));
        }
        let fingerprints: Vec<Fingerprint> =
            ask.iter().map(|(fingerprint, _)| *fingerprint).collect();
        self.stats.index_lookups += fingerprints.len() as u64;
        let answers = self
            .service
            .query(self.options.client, fingerprints, self.clock.now_ms())
            .await?;
        if answers.len() != ask.len() {
            let problem = format!("{} answers for {} fingerprints", answers.len(), ask.len());
            return Err(BackupError::Protocol(problem));
        }
        let (mut upload, mut waiting, mut soonest_expiry_ms) = (Vec::new(), Vec::new(), None);
        for (chunk, answer) in ask.into_iter().zip(answers) {
            match answer {
                Answer::Present => {}
                Answer::Upload => {
                    if self.bloom.is_some() {
                        self.stats.bloom_false_positives += 1;
                    }
                    upload.push(chunk);
                }
                Answer::Wait {
                    lease_expires_at_ms,
                } => {
                    self.stats.lease_waits += 1;
                    let soonest = soonest_expiry_ms.get_or_insert(lease_expires_at_ms);
                    *soonest = (*soonest).min(lease_expires_at_ms);
                    waiting.push(chunk);
                }
            }
        }
        Ok((upload, waiting, soonest_expiry_ms))
    }
}

/// The snapshot whose id starts with `prefix`: exactly one must match.
pub async fn find_snapshot<S: BackupService>(
    service: &S,
    prefix: &str,
) -> Result<SnapshotId, ServiceError> {
    let matches: Vec<SnapshotId> = service
        .list_snapshots()
        .await?
        .into_iter()
        .map(|summary| summary.id)
        .filter(|id| !prefix.is_empty() && id.0.starts_with(prefix))
        .collect();
    match matches.len() {
        0 => Err(ServiceError::SnapshotNotFound {
            id: prefix.to_string(),
        }),
        1 => Ok(matches.into_iter().next().expect("one match")),
        count => Err(ServiceError::SnapshotAmbiguous {
            prefix: prefix.to_string(),
            count,
        }),
    }
}
