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

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use crate::manifest::{Entry, EntryKind, Manifest, SnapshotId};
use crate::pipeline::{self, EventStream, Pipeline, SourceEvent};
use crate::service::{Answer, BackupService, ClientId, ConcurrencyMode, ServiceError};
use crate::source::{FileStamp, Source, SourceEntry, SourceError, SourceKind};
use crate::{BloomFilter, ChunkBytes, Fingerprint};

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
    /// True when it could not be read (the snapshot is incomplete); false
    /// for special files, which are never backed up.
    pub unreadable: bool,
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
    /// Files the parent snapshot had with the same size and stamp, whose
    /// chunks were reused without reading them.
    pub unchanged_files: u64,
    /// Their bytes.
    pub unchanged_bytes: u64,
    /// Chunks in the snapshot's files (repeats and reused chunks counted).
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
    /// The bytes of the snapshot's files: read, or reused unchanged.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_read + self.unchanged_bytes
    }

    /// Bytes backed up per byte newly stored; infinite when nothing new was
    /// stored.
    pub fn dedup_ratio(&self) -> f64 {
        if self.new_bytes == 0 {
            f64::INFINITY
        } else {
            self.bytes_total() as f64 / self.new_bytes as f64
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
    /// (Not a `#[source]`: the message already holds it, and error chains
    /// would print it twice.)
    #[error("backup failed, no snapshot committed: {0}")]
    Service(ServiceError),
    /// The service answered out of protocol.
    #[error("the service broke the protocol: {0}; this is a bug in the service")]
    Protocol(String),
}

impl From<ServiceError> for BackupError {
    fn from(error: ServiceError) -> Self {
        Self::Service(error)
    }
}

/// A batch of new chunks, in the order they were read.
type Batch = Vec<(Fingerprint, ChunkBytes)>;

/// What uploads a batch: the service, the caller's clock and the Bloom
/// filter fetched at the start. Only shared borrows, so one batch can
/// upload while the reading of the next goes on.
struct Uploader<'a, S: BackupService, C: Clock> {
    service: &'a S,
    clock: &'a C,
    options: &'a BackupOptions,
    bloom: Option<BloomFilter>,
}

/// The figures an upload adds to a run's [`BackupStats`].
#[derive(Debug, Default)]
struct UploadStats {
    new_chunks: u64,
    new_bytes: u64,
    duplicate_uploads: u64,
    bloom_lookups_saved: u64,
    bloom_false_positives: u64,
    index_lookups: u64,
    lease_waits: u64,
}

impl BackupStats {
    fn add_upload(&mut self, upload: &UploadStats) {
        self.new_chunks += upload.new_chunks;
        self.new_bytes += upload.new_bytes;
        self.duplicate_uploads += upload.duplicate_uploads;
        self.bloom_lookups_saved += upload.bloom_lookups_saved;
        self.bloom_false_positives += upload.bloom_false_positives;
        self.index_lookups += upload.index_lookups;
        self.lease_waits += upload.lease_waits;
    }
}

/// State of one backup run.
struct Run<'a, S: BackupService, C: Clock> {
    uploader: Uploader<'a, S, C>,
    /// Fingerprints already settled or batched in this run: each is
    /// uploaded at most once per run, by its first batch.
    seen: HashSet<Fingerprint>,
    stats: BackupStats,
}

/// Backs up `source` into `service` and commits a snapshot, reading every
/// file.
pub async fn backup<S: BackupService, C: Clock>(
    service: &S,
    source: Arc<dyn Source>,
    options: &BackupOptions,
    clock: &C,
    progress: &dyn Progress,
) -> Result<BackupReport, BackupError> {
    backup_after(service, source, None, options, clock, progress).await
}

/// Backs up `source` into `service` and commits a snapshot. A file that
/// `parent` (an earlier snapshot of the same tree) holds with the same size
/// and [`crate::FileStamp`] is not read: its chunks are reused, once the
/// index confirms that every one is present. A chunk the index lacks (a
/// damaged or incomplete store) sends its file back to be read.
pub async fn backup_after<S: BackupService, C: Clock>(
    service: &S,
    source: Arc<dyn Source>,
    parent: Option<&Manifest>,
    options: &BackupOptions,
    clock: &C,
    progress: &dyn Progress,
) -> Result<BackupReport, BackupError> {
    let entries = source.list()?;
    backup_listed(service, source, entries, parent, options, clock, progress).await
}

/// [`backup_after`] over `entries`, a listing of `source` the caller has
/// already taken (say, on another thread while it read the parent).
pub async fn backup_listed<S: BackupService, C: Clock>(
    service: &S,
    source: Arc<dyn Source>,
    entries: Vec<SourceEntry>,
    parent: Option<&Manifest>,
    options: &BackupOptions,
    clock: &C,
    progress: &dyn Progress,
) -> Result<BackupReport, BackupError> {
    let config = service.config().await?;
    let root = source.root_attributes();
    let (file_count, size_bytes) = entries
        .iter()
        .fold((0, 0), |(count, bytes), entry| match entry.kind {
            SourceKind::File { size_bytes, .. } => (count + 1, bytes + size_bytes),
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
        uploader: Uploader {
            service,
            clock,
            options,
            bloom,
        },
        seen: HashSet::new(),
        stats: BackupStats::default(),
    };
    let candidates = parent.map(|parent| unchanged_candidates(&entries, parent));
    let mut reused = match candidates {
        Some(candidates) if !candidates.is_empty() => run.confirm_present(candidates).await?,
        _ => HashMap::new(),
    };
    progress.advanced(run.stats.unchanged_bytes);
    let order: Vec<String> = entries.iter().map(|entry| entry.path.clone()).collect();
    let to_read = entries
        .into_iter()
        .filter(|entry| !reused.contains_key(&entry.path))
        .collect();
    let events = pipeline::start(options.pipeline, source, to_read, config.chunker);
    let mut read = run.consume(events, progress).await?.into_iter().peekable();
    // Both halves are in listing order (parents first): merge them. A
    // skipped entry is in neither.
    let manifest_entries = order
        .iter()
        .filter_map(|path| {
            let reused = (!reused.is_empty()).then(|| reused.remove(path)).flatten();
            reused.or_else(|| read.next_if(|entry| entry.path == *path))
        })
        .collect();
    if let Some(entry) = read.next() {
        let what = format!("an entry out of the listing's order: {:?}", entry.path);
        return Err(protocol(&what));
    }
    // Every chunk named is now present or durably stored: commit, last.
    let manifest = Manifest {
        label: options.label.clone(),
        time_unix_ms: options.time_unix_ms,
        entries: manifest_entries,
        root,
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
    /// every new chunk on the way; when it returns, every chunk the entries
    /// name is present or durably stored. The stream (and its threads) ends
    /// before this returns.
    ///
    /// Each turn reads the next batch while the one before it uploads. With
    /// a service that writes on a thread of its own (the CLI's
    /// [`crate::UploadThread`]) the pack write then overlaps the reading,
    /// chunking and hashing instead of stalling them; with any other service
    /// the upload runs to its end first, and the order of calls is the same.
    async fn consume(
        &mut self,
        mut events: Box<dyn EventStream + Send>,
        progress: &dyn Progress,
    ) -> Result<Vec<Entry>, BackupError> {
        let uploader = &self.uploader;
        let batch_size_bytes = uploader.options.batch_size_bytes;
        let mut reader = BatchReader::new(&mut self.seen, &mut self.stats, batch_size_bytes);
        let mut upload_stats = UploadStats::default();
        let mut uploading = Batch::new();
        let mut ended = false;
        while !ended || !uploading.is_empty() {
            let upload = uploader.upload(std::mem::take(&mut uploading), &mut upload_stats);
            let read = async {
                if ended {
                    return Ok(None);
                }
                reader.read_batch(&mut *events, progress).map(Some)
            };
            let (uploaded, read) = futures_util::future::join(upload, read).await;
            uploaded?;
            if let Some((batch, at_end)) = read? {
                (uploading, ended) = (batch, at_end);
            }
        }
        let entries = std::mem::take(&mut reader.entries);
        self.stats.add_upload(&upload_stats);
        Ok(entries)
    }

    /// Keeps the candidates whose every chunk the index says is present,
    /// and counts them as reused. Fingerprints are asked once each, in
    /// batches; those confirmed need not be asked again in this run.
    async fn confirm_present(
        &mut self,
        candidates: HashMap<String, Entry>,
    ) -> Result<HashMap<String, Entry>, BackupError> {
        let mut unique = HashSet::new();
        for entry in candidates.values() {
            unique.extend(file_chunks(entry).iter().copied());
        }
        let mut unique: Vec<Fingerprint> = unique.into_iter().collect();
        unique.sort_unstable();
        let mut present = HashSet::new();
        let mut upload_stats = UploadStats::default();
        for batch in unique.chunks(CONFIRM_BATCH_FINGERPRINTS) {
            let answers = self
                .uploader
                .query_index(batch.to_vec(), &mut upload_stats)
                .await?;
            let confirmed = batch.iter().zip(&answers);
            present.extend(
                confirmed
                    .filter(|(_, answer)| **answer == Answer::Present)
                    .map(|(f, _)| *f),
            );
        }
        self.stats.add_upload(&upload_stats);
        let mut reused = HashMap::new();
        for (path, entry) in candidates {
            let chunks = file_chunks(&entry);
            if chunks
                .iter()
                .all(|fingerprint| present.contains(fingerprint))
            {
                self.stats.files += 1;
                self.stats.unchanged_files += 1;
                self.stats.chunks += chunks.len() as u64;
                if let EntryKind::File { size_bytes, .. } = entry.kind {
                    self.stats.unchanged_bytes += size_bytes;
                }
                reused.insert(path, entry);
            }
        }
        self.seen.extend(present);
        Ok(reused)
    }
}

/// The reading side of [`Run::consume`]: events in, manifest entries and
/// batches of new chunks out. Synchronous: it never waits on the service.
struct BatchReader<'r> {
    seen: &'r mut HashSet<Fingerprint>,
    stats: &'r mut BackupStats,
    batch_size_bytes: usize,
    batch: Batch,
    batch_bytes: usize,
    /// Per read buffer the batch's chunks lie in: its size and the bytes
    /// of it the batch holds (see [`BatchReader::release_sparse_buffers`]).
    held_buffers: HashMap<usize, (usize, usize)>,
    /// Sum of the sizes of `held_buffers`.
    held_buffer_bytes: usize,
    /// Manifest entries in the order read, which is the listing's.
    entries: Vec<Entry>,
    /// The file being read: its entry, its chunks so far and their bytes.
    current_file: Option<(Entry, Vec<Fingerprint>, u64)>,
}

impl<'r> BatchReader<'r> {
    fn new(
        seen: &'r mut HashSet<Fingerprint>,
        stats: &'r mut BackupStats,
        batch_size_bytes: usize,
    ) -> Self {
        Self {
            seen,
            stats,
            batch_size_bytes,
            batch: Batch::new(),
            batch_bytes: 0,
            held_buffers: HashMap::new(),
            held_buffer_bytes: 0,
            entries: Vec::new(),
            current_file: None,
        }
    }

    /// Takes events until a batch is full or the stream ends; returns the
    /// batch, and whether the stream ended.
    fn read_batch(
        &mut self,
        events: &mut dyn EventStream,
        progress: &dyn Progress,
    ) -> Result<(Batch, bool), BackupError> {
        while let Some(event) = events.next_event() {
            if self.take_event(event, progress)? {
                return Ok((self.take_batch(), false));
            }
        }
        if self.current_file.is_some() {
            return Err(protocol("a file without its end"));
        }
        Ok((self.take_batch(), true))
    }

    fn take_batch(&mut self) -> Batch {
        self.batch_bytes = 0;
        self.held_buffers.clear();
        self.held_buffer_bytes = 0;
        std::mem::take(&mut self.batch)
    }

    /// A chunk keeps its whole read buffer allocated (4 MiB, typically),
    /// however little of it the chunk is: when files differ from ones
    /// already stored by an edit or two, each new chunk may be all a buffer
    /// still holds. Once the buffers a batch holds add up to twice the batch
    /// size, the chunks that hold less than half their buffer are copied
    /// out, so the buffers go back to the pool and memory stays bounded. A
    /// first backup, whose batches hold their buffers nearly whole, never
    /// gets here.
    fn release_sparse_buffers(&mut self) {
        let held_buffers = &self.held_buffers;
        for (_, bytes) in &mut self.batch {
            let (key, _) = bytes.buffer_identity();
            let (size_bytes, used_bytes) = held_buffers[&key];
            if used_bytes * 2 < size_bytes {
                *bytes = bytes.detached();
            }
        }
        self.held_buffers.clear();
        self.held_buffer_bytes = 0;
        for index in 0..self.batch.len() {
            self.hold(index);
        }
    }

    /// Counts the buffer of the batch's chunk at `index` as held.
    fn hold(&mut self, index: usize) {
        let bytes = &self.batch[index].1;
        let (key, size_bytes) = bytes.buffer_identity();
        let held = self.held_buffers.entry(key).or_insert_with(|| {
            self.held_buffer_bytes += size_bytes;
            (size_bytes, 0)
        });
        held.1 += bytes.len();
    }

    /// Takes one event; true once the batch is full.
    fn take_event(
        &mut self,
        event: SourceEvent,
        progress: &dyn Progress,
    ) -> Result<bool, BackupError> {
        match event {
            SourceEvent::Entry(entry) => self.add_entry(entry),
            SourceEvent::FileStart(entry) => {
                let stamp = match entry.kind {
                    SourceKind::File { stamp, .. } => stamp,
                    _ => return Err(protocol("a file start for a non-file")),
                };
                // Size and chunks are filled in at the file's end.
                let kind = EntryKind::File {
                    size_bytes: 0,
                    chunks: Vec::new(),
                    stamp,
                };
                let manifest_entry = Entry {
                    path: entry.path,
                    mode: entry.mode,
                    owner: entry.owner,
                    kind,
                };
                self.current_file = Some((manifest_entry, Vec::new(), 0));
            }
            SourceEvent::Chunk { fingerprint, bytes } => {
                let (_, chunks, size_bytes) = self
                    .current_file
                    .as_mut()
                    .ok_or_else(|| protocol("a chunk outside a file"))?;
                chunks.push(fingerprint);
                *size_bytes += bytes.len() as u64;
                progress.advanced(bytes.len() as u64);
                return Ok(self.add_chunk(fingerprint, bytes));
            }
            SourceEvent::FileEnd => {
                let (mut entry, new_chunks, new_size_bytes) = self
                    .current_file
                    .take()
                    .ok_or_else(|| protocol("a file end outside a file"))?;
                if let EntryKind::File {
                    size_bytes, chunks, ..
                } = &mut entry.kind
                {
                    (*size_bytes, *chunks) = (new_size_bytes, new_chunks);
                }
                self.stats.files += 1;
                self.entries.push(entry);
            }
            SourceEvent::FileFailed { reason } => {
                let (entry, ..) = self
                    .current_file
                    .take()
                    .ok_or_else(|| protocol("a file failure outside a file"))?;
                self.skip(entry.path, reason, true);
            }
        }
        Ok(false)
    }

    fn skip(&mut self, path: String, reason: String, unreadable: bool) {
        let skipped = SkippedEntry {
            path,
            reason,
            unreadable,
        };
        self.stats.skipped.push(skipped);
    }

    fn add_entry(&mut self, entry: SourceEntry) {
        let kind = match entry.kind {
            SourceKind::Directory { modified_ns } => {
                self.stats.directories += 1;
                EntryKind::Directory { modified_ns }
            }
            SourceKind::Symlink { target } => {
                self.stats.symlinks += 1;
                EntryKind::Symlink { target }
            }
            SourceKind::Skipped { reason } => {
                self.skip(entry.path, reason, true);
                return;
            }
            SourceKind::Special { reason } => {
                self.skip(entry.path, reason, false);
                return;
            }
            SourceKind::File { .. } => unreachable!("files arrive as FileStart"),
        };
        self.entries.push(Entry {
            path: entry.path,
            mode: entry.mode,
            owner: entry.owner,
            kind,
        });
    }

    /// Counts a chunk, and batches it unless this run has seen it; true
    /// once the batch is full.
    fn add_chunk(&mut self, fingerprint: Fingerprint, bytes: ChunkBytes) -> bool {
        self.stats.chunks += 1;
        self.stats.bytes_read += bytes.len() as u64;
        // A chunk seen earlier in this run is handled by its first batch.
        if !self.seen.insert(fingerprint) {
            return false;
        }
        self.batch_bytes += bytes.len();
        self.batch.push((fingerprint, bytes));
        self.hold(self.batch.len() - 1);
        if self.held_buffer_bytes > 2 * self.batch_size_bytes.max(1) {
            self.release_sparse_buffers();
        }
        self.batch_bytes >= self.batch_size_bytes
    }
}

impl<S: BackupService, C: Clock> Uploader<'_, S, C> {
    /// Settles `batch`: every chunk in it ends present in the store.
    async fn upload(&self, batch: Batch, stats: &mut UploadStats) -> Result<(), BackupError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut upload = Vec::new();
        let mut ask = Vec::new();
        for (fingerprint, bytes) in batch {
            match &self.bloom {
                Some(bloom) if !bloom.may_contain(&fingerprint) => {
                    stats.bloom_lookups_saved += 1;
                    upload.push((fingerprint, bytes));
                }
                _ => ask.push((fingerprint, bytes)),
            }
        }
        while !ask.is_empty() || !upload.is_empty() {
            let (to_upload, waiting, soonest_expiry_ms) = self.ask_index(ask, stats).await?;
            upload.extend(to_upload);
            if !upload.is_empty() {
                let outcome = self.service.put_chunks(std::mem::take(&mut upload)).await?;
                stats.new_chunks += outcome.stored_chunks;
                stats.new_bytes += outcome.stored_bytes;
                stats.duplicate_uploads += outcome.duplicate_chunks;
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

    /// One index query, counted, with one answer per fingerprint checked.
    async fn query_index(
        &self,
        fingerprints: Vec<Fingerprint>,
        stats: &mut UploadStats,
    ) -> Result<Vec<Answer>, BackupError> {
        let asked = fingerprints.len();
        stats.index_lookups += asked as u64;
        let answers = self
            .service
            .query(self.options.client, fingerprints, self.clock.now_ms())
            .await?;
        if answers.len() != asked {
            let problem = format!("{} answers for {asked} fingerprints", answers.len());
            return Err(BackupError::Protocol(problem));
        }
        Ok(answers)
    }

    /// Asks the index about `ask`; returns (upload now, ask again, the
    /// soonest lease expiry among those to ask again).
    async fn ask_index(
        &self,
        ask: Batch,
        stats: &mut UploadStats,
    ) -> Result<(Batch, Batch, Option<u64>), BackupError> {
        if ask.is_empty() {
            return Ok((Vec::new(), Vec::new(), None));
        }
        let fingerprints: Vec<Fingerprint> =
            ask.iter().map(|(fingerprint, _)| *fingerprint).collect();
        let answers = self.query_index(fingerprints, stats).await?;
        let (mut upload, mut waiting, mut soonest_expiry_ms) = (Vec::new(), Vec::new(), None);
        for (chunk, answer) in ask.into_iter().zip(answers) {
            match answer {
                Answer::Present => {}
                Answer::Upload => {
                    if self.bloom.is_some() {
                        stats.bloom_false_positives += 1;
                    }
                    upload.push(chunk);
                }
                Answer::Wait {
                    lease_expires_at_ms,
                } => {
                    stats.lease_waits += 1;
                    let soonest = soonest_expiry_ms.get_or_insert(lease_expires_at_ms);
                    *soonest = (*soonest).min(lease_expires_at_ms);
                    waiting.push(chunk);
                }
            }
        }
        Ok((upload, waiting, soonest_expiry_ms))
    }
}

/// Fingerprints asked per index query when confirming reused chunks.
const CONFIRM_BATCH_FINGERPRINTS: usize = 4096;

fn file_chunks(entry: &Entry) -> &[Fingerprint] {
    match &entry.kind {
        EntryKind::File { chunks, .. } => chunks,
        _ => &[],
    }
}

/// The files of `entries` that `parent` holds at the same path with the same
/// size and stamp, as entries for the new manifest (its mode and stamp, the
/// parent's chunks). Files without a stamp are never candidates.
fn unchanged_candidates(entries: &[SourceEntry], parent: &Manifest) -> HashMap<String, Entry> {
    let parent_files: HashMap<&str, (u64, &FileStamp, &Vec<Fingerprint>)> = parent
        .entries
        .iter()
        .filter_map(|entry| match &entry.kind {
            EntryKind::File {
                size_bytes,
                chunks,
                stamp: Some(stamp),
            } => Some((entry.path.as_str(), (*size_bytes, stamp, chunks))),
            _ => None,
        })
        .collect();
    let mut candidates = HashMap::with_capacity(parent_files.len());
    for entry in entries {
        let SourceKind::File {
            size_bytes,
            stamp: Some(stamp),
        } = &entry.kind
        else {
            continue;
        };
        let Some((parent_size_bytes, parent_stamp, chunks)) = parent_files.get(entry.path.as_str())
        else {
            continue;
        };
        if parent_size_bytes == size_bytes && *parent_stamp == stamp {
            let kind = EntryKind::File {
                size_bytes: *size_bytes,
                chunks: (*chunks).clone(),
                stamp: Some(*stamp),
            };
            let reused = Entry {
                path: entry.path.clone(),
                mode: entry.mode,
                owner: entry.owner,
                kind,
            };
            candidates.insert(entry.path.clone(), reused);
        }
    }
    candidates
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_bytes::Buffer;

    /// A chunk cut from a pooled buffer of `buffer_bytes`, `chunk_bytes`
    /// long, unique by `seed`; the buffer is held by the chunk alone.
    fn lone_chunk(buffer_bytes: usize, chunk_bytes: usize, seed: u8) -> ChunkBytes {
        let mut buffer = Buffer::pooled(buffer_bytes);
        buffer[..chunk_bytes].fill(seed);
        ChunkBytes::cut(&Arc::new(buffer), 0..chunk_bytes)
    }

    /// Files that differ from stored ones by an edit leave one new chunk per
    /// 4 MiB read buffer: held as they are, a batch of such chunks would keep
    /// gigabytes allocated. Past twice the batch size in buffers, the sparse
    /// chunks are copied out; the bytes stay the same.
    #[test]
    fn chunks_holding_little_of_their_buffer_are_copied_out_past_a_bound() {
        let (mut seen, mut stats) = (HashSet::new(), BackupStats::default());
        let batch_size_bytes = 1 << 20;
        let mut batch = BatchReader::new(&mut seen, &mut stats, batch_size_bytes);
        for seed in 0..12 {
            let chunk = lone_chunk(4 << 20, 64 << 10, seed);
            let fingerprint = Fingerprint::of(&chunk);
            assert!(
                !batch.add_chunk(fingerprint, chunk),
                "64 KiB chunks fill no batch"
            );
            assert!(batch.held_buffer_bytes <= 2 * batch_size_bytes + (4 << 20));
        }
        assert_eq!(batch.batch.len(), 12);
        for (seed, (fingerprint, bytes)) in batch.batch.iter().enumerate() {
            assert_eq!(Fingerprint::of(bytes), *fingerprint);
            assert!(bytes.iter().all(|&byte| byte == seed as u8));
        }
        assert!(
            batch
                .batch
                .iter()
                .any(|(_, bytes)| bytes.block_window().is_none())
        );
    }

    /// A first backup's batches hold their buffers nearly whole: nothing is
    /// copied, so the chunks can still be written from where they were read.
    #[test]
    fn chunks_that_fill_their_buffers_stay_where_they_were_read() {
        let (mut seen, mut stats) = (HashSet::new(), BackupStats::default());
        let batch_size_bytes = 16 << 20;
        let mut batch = BatchReader::new(&mut seen, &mut stats, batch_size_bytes);
        let mut full = false;
        for seed in 0..6 {
            let mut buffer = Buffer::pooled(4 << 20);
            buffer.fill(seed);
            for part in 0..4 {
                buffer[part << 20] = part as u8;
            }
            let buffer = Arc::new(buffer);
            for part in 0..4 {
                let chunk = ChunkBytes::cut(&buffer, part << 20..(part + 1) << 20);
                full = batch.add_chunk(Fingerprint::of(&chunk), chunk);
            }
        }
        assert!(full);
        assert!(
            batch
                .batch
                .iter()
                .all(|(_, bytes)| bytes.block_window().is_some())
        );
    }
}
