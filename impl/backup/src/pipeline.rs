//! The chunk-and-hash step of a backup, inline or on all cores.
//!
//! Both pipelines turn a source listing into one ordered stream of
//! [`SourceEvent`]s: entries, and for each file its chunks with fingerprints.
//! [`Pipeline::Inline`] does it on the calling thread (the simulator refuses
//! system threads). [`Pipeline::Parallel`] runs `worker_threads` workers,
//! each taking the next entry of the listing and reading, chunking and
//! hashing it whole, so files are read and chunked side by side; a worker
//! with nothing left to take hashes the chunks another cuts from a large
//! file, so one large file still hashes on every core. The consumer puts the
//! events back in listing order.
//!
//! Memory stays bounded: before sending a group of events a worker takes its
//! size from a byte budget, which the consumer gives back only once it has
//! taken the group in order, so at most the budget (plus one group per
//! worker being built) is in flight wherever it sits. Workers on later
//! entries must leave a reserve of one largest group in the budget, which
//! only the earliest entry still being produced may use: the consumer waits
//! on that entry, so it can always move, and the pipeline cannot deadlock.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::Fingerprint;
use crate::chunk_bytes::ChunkBytes;
use crate::chunker::{ChunkReader, ChunkerConfig, split_in_memory};
use crate::source::{Source, SourceEntry, SourceKind};

/// How chunking and hashing are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipeline {
    /// Everything on the caller's thread. Required under the simulator.
    Inline,
    /// `worker_threads` threads that each read, chunk and hash whole
    /// entries, with at most `in_flight_bytes_max` of events between them
    /// and the consumer.
    Parallel {
        worker_threads: usize,
        in_flight_bytes_max: usize,
    },
}

impl Pipeline {
    /// Parallel on every core: one worker per core, since each worker does
    /// all the per-byte work (read, FastCDC cut points, SHA-256) for its
    /// entry. 64 MiB in flight covers several 16 MiB pack writes, so
    /// hashing goes on while the consumer waits for the disk.
    pub fn parallel_default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2);
        Self::Parallel {
            worker_threads: cores.max(1),
            in_flight_bytes_max: 64 << 20,
        }
    }
}

/// One step of the ordered stream a pipeline produces.
#[derive(Debug)]
pub enum SourceEvent {
    /// A directory, or a symlink, or a skipped entry: no content to read.
    Entry(SourceEntry),
    /// A file begins; its chunks follow, then [`SourceEvent::FileEnd`] or
    /// [`SourceEvent::FileFailed`].
    FileStart(SourceEntry),
    /// The next chunk of the current file.
    Chunk {
        fingerprint: Fingerprint,
        bytes: ChunkBytes,
    },
    /// The current file was read to its end.
    FileEnd,
    /// The current file could not be read (to the end); it is left out.
    FileFailed { reason: String },
}

/// An ordered stream of [`SourceEvent`]s.
pub trait EventStream {
    /// The next event, or `None` at the end of the source.
    fn next_event(&mut self) -> Option<SourceEvent>;
}

/// Starts `pipeline` over `entries` of `source`.
pub fn start(
    pipeline: Pipeline,
    source: Arc<dyn Source>,
    entries: Vec<SourceEntry>,
    config: ChunkerConfig,
) -> Box<dyn EventStream + Send> {
    match pipeline {
        Pipeline::Inline => Box::new(InlineStream::new(source, entries, config)),
        Pipeline::Parallel {
            worker_threads,
            in_flight_bytes_max,
        } => {
            // The reserve holds the largest group; the budget holds two, so
            // later entries always have room to run ahead.
            let reserve_bytes = group_cost_max_bytes(&config);
            let budget = Budget {
                capacity_bytes: in_flight_bytes_max.max(2 * reserve_bytes),
                reserve_bytes,
            };
            Box::new(ParallelStream::start(
                source,
                entries,
                config,
                worker_threads.max(1),
                budget,
            ))
        }
    }
}

/// Files listed at up to this size are read whole, then chunked in memory;
/// larger ones are streamed through a [`ChunkReader`].
const WHOLE_FILE_MAX_BYTES: usize = 1 << 20;

/// Bookkeeping bytes charged per event on top of its chunk, so that a run
/// of empty files or directories is bounded too.
const EVENT_OVERHEAD_BYTES: usize = 256;

/// What producing an entry yields next.
enum Step {
    /// Events complete with fingerprints.
    Group(Vec<SourceEvent>),
    /// The next chunk of a streamed file, not yet hashed.
    Chunk(ChunkBytes),
}

/// The events of one entry, produced a step at a time.
enum EntryEvents {
    Done,
    /// One group left to hand out.
    Ready(Vec<SourceEvent>),
    /// A file streamed chunk by chunk; `start` is its pending `FileStart`.
    Streaming {
        start: Option<Box<SourceEntry>>,
        chunks: ChunkReader<Box<dyn Read + Send>>,
    },
}

impl EntryEvents {
    /// Opens `entry`: a small file is read, chunked and hashed here.
    fn new(source: &dyn Source, entry: SourceEntry, config: ChunkerConfig) -> Self {
        let SourceKind::File { size_bytes, .. } = entry.kind else {
            return Self::Ready(vec![SourceEvent::Entry(entry)]);
        };
        let reader = match source.open_entry(&entry) {
            Ok(reader) => reader,
            // An unopenable file is reported like any other skipped entry.
            Err(error) => {
                let reason = format!("unreadable file, not backed up: {error}");
                return Self::Ready(vec![SourceEvent::Entry(SourceEntry {
                    kind: SourceKind::Skipped { reason },
                    ..entry
                })]);
            }
        };
        let hint_bytes = usize::try_from(size_bytes).unwrap_or(usize::MAX);
        if hint_bytes > WHOLE_FILE_MAX_BYTES {
            let chunks = ChunkReader::with_size_hint(reader, config, hint_bytes);
            let start = Some(Box::new(entry));
            return Self::Streaming { start, chunks };
        }
        Self::read_whole(entry, reader, hint_bytes, config)
    }

    /// Reads a small file whole. One that has grown past the cap since it
    /// was listed goes on streaming from where the read stopped.
    fn read_whole(
        entry: SourceEntry,
        reader: Box<dyn Read + Send>,
        hint_bytes: usize,
        config: ChunkerConfig,
    ) -> Self {
        let mut bytes = Vec::with_capacity(hint_bytes);
        let cap_bytes = WHOLE_FILE_MAX_BYTES as u64 + 1;
        let mut reader = reader.take(cap_bytes);
        if let Err(error) = reader.read_to_end(&mut bytes) {
            let reason = format!("read failed: {error}");
            let failed = SourceEvent::FileFailed { reason };
            return Self::Ready(vec![SourceEvent::FileStart(entry), failed]);
        }
        if bytes.len() > WHOLE_FILE_MAX_BYTES {
            let rest = std::io::Cursor::new(bytes).chain(reader.into_inner());
            let chunks =
                ChunkReader::with_size_hint(Box::new(rest) as Box<dyn Read + Send>, config, 0);
            let start = Some(Box::new(entry));
            return Self::Streaming { start, chunks };
        }
        let mut group = vec![SourceEvent::FileStart(entry)];
        group.extend(split_in_memory(bytes, config).into_iter().map(hashed));
        group.push(SourceEvent::FileEnd);
        Self::Ready(group)
    }

    fn next_step(&mut self) -> Option<Step> {
        match std::mem::replace(self, Self::Done) {
            Self::Done => None,
            Self::Ready(group) => Some(Step::Group(group)),
            Self::Streaming {
                start: Some(entry),
                chunks,
            } => {
                *self = Self::Streaming {
                    start: None,
                    chunks,
                };
                Some(Step::Group(vec![SourceEvent::FileStart(*entry)]))
            }
            Self::Streaming {
                start: None,
                mut chunks,
            } => Some(match chunks.next() {
                Some(Ok(bytes)) => {
                    *self = Self::Streaming {
                        start: None,
                        chunks,
                    };
                    Step::Chunk(bytes)
                }
                Some(Err(error)) => {
                    let reason = format!("read failed: {error}");
                    Step::Group(vec![SourceEvent::FileFailed { reason }])
                }
                None => Step::Group(vec![SourceEvent::FileEnd]),
            }),
        }
    }

    fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }
}

fn hashed(bytes: ChunkBytes) -> SourceEvent {
    SourceEvent::Chunk {
        fingerprint: Fingerprint::of(&bytes),
        bytes,
    }
}

/// Reads, chunks and hashes on the caller's thread.
struct InlineStream {
    source: Arc<dyn Source>,
    entries: std::vec::IntoIter<SourceEntry>,
    config: ChunkerConfig,
    current: EntryEvents,
    /// Events of the last group not yet handed out, in reverse order.
    ready: Vec<SourceEvent>,
}

impl InlineStream {
    fn new(source: Arc<dyn Source>, entries: Vec<SourceEntry>, config: ChunkerConfig) -> Self {
        Self {
            source,
            entries: entries.into_iter(),
            config,
            current: EntryEvents::Done,
            ready: Vec::new(),
        }
    }
}

impl EventStream for InlineStream {
    fn next_event(&mut self) -> Option<SourceEvent> {
        while self.ready.is_empty() {
            match self.current.next_step() {
                Some(Step::Group(mut group)) => {
                    group.reverse();
                    self.ready = group;
                }
                Some(Step::Chunk(bytes)) => return Some(hashed(bytes)),
                None => {
                    let entry = self.entries.next()?;
                    self.current = EntryEvents::new(&*self.source, entry, self.config);
                }
            }
        }
        self.ready.pop()
    }
}

/// The most a group can cost: a streamed chunk, or a file read whole with
/// its start, end and every chunk (none shorter than the minimum but its
/// last).
fn group_cost_max_bytes(config: &ChunkerConfig) -> usize {
    let chunk_bytes = config.size_max_bytes + EVENT_OVERHEAD_BYTES;
    let chunks_max = WHOLE_FILE_MAX_BYTES / config.size_min_bytes.max(1) + 1;
    let whole_file_bytes = WHOLE_FILE_MAX_BYTES + (chunks_max + 2) * EVENT_OVERHEAD_BYTES;
    chunk_bytes.max(whole_file_bytes)
}

fn group_cost_bytes(group: &[SourceEvent]) -> usize {
    let event_cost = |event: &SourceEvent| match event {
        SourceEvent::Chunk { bytes, .. } => bytes.len() + EVENT_OVERHEAD_BYTES,
        _ => EVENT_OVERHEAD_BYTES,
    };
    group.iter().map(event_cost).sum()
}

/// The byte budget's sizes.
#[derive(Debug, Clone, Copy)]
struct Budget {
    capacity_bytes: usize,
    /// Left free for the earliest entry still being produced.
    reserve_bytes: usize,
}

/// What the workers share: the entries left to take, the byte budget, and
/// which entries are still being produced.
struct Scheduler {
    budget: Budget,
    state: Mutex<SchedulerState>,
    changed: Condvar,
}

struct SchedulerState {
    entries: std::iter::Enumerate<std::vec::IntoIter<SourceEntry>>,
    /// Entries taken by a worker whose last group is not yet sent: the
    /// first is the one the consumer will wait on next.
    producing: BTreeSet<u64>,
    available_bytes: usize,
    closed: bool,
    /// Threads in `acquire`: a release or a finished entry wakes someone
    /// only if there is one (a wake per event was a futex call per event).
    waiting: usize,
}

impl SchedulerState {
    fn fits(&self, budget: Budget, entry_index: u64, needed_bytes: usize) -> bool {
        let earliest = self.producing.first() == Some(&entry_index);
        let reserve_bytes = if earliest { 0 } else { budget.reserve_bytes };
        self.available_bytes >= needed_bytes + reserve_bytes
    }
}

impl Scheduler {
    fn new(entries: Vec<SourceEntry>, budget: Budget) -> Self {
        let state = SchedulerState {
            entries: entries.into_iter().enumerate(),
            producing: BTreeSet::new(),
            available_bytes: budget.capacity_bytes,
            closed: false,
            waiting: 0,
        };
        Self {
            budget,
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    /// The next entry of the listing, with its index, now being produced.
    fn take_entry(&self) -> Option<(u64, SourceEntry)> {
        let mut state = self.state.lock().expect("scheduler lock");
        if state.closed {
            return None;
        }
        let (index, entry) = state.entries.next()?;
        let index = index as u64;
        state.producing.insert(index);
        Some((index, entry))
    }

    /// The entry's last group is sent: a later entry may now be earliest.
    fn finish_entry(&self, entry_index: u64) {
        let mut state = self.state.lock().expect("scheduler lock");
        state.producing.remove(&entry_index);
        if state.waiting > 0 {
            self.changed.notify_all();
        }
    }

    fn needed_bytes(&self, bytes: usize) -> usize {
        bytes.min(self.budget.capacity_bytes - self.budget.reserve_bytes)
    }

    /// Takes `bytes` for a group of `entry_index` if they fit now.
    fn try_acquire(&self, entry_index: u64, bytes: usize) -> bool {
        let needed_bytes = self.needed_bytes(bytes);
        let mut state = self.state.lock().expect("scheduler lock");
        if state.closed || !state.fits(self.budget, entry_index, needed_bytes) {
            return false;
        }
        state.available_bytes -= needed_bytes;
        true
    }

    /// Waits until `bytes` fit; false once the pipeline is closed.
    fn acquire(&self, entry_index: u64, bytes: usize) -> bool {
        let needed_bytes = self.needed_bytes(bytes);
        let mut state = self.state.lock().expect("scheduler lock");
        state.waiting += 1;
        while !state.closed && !state.fits(self.budget, entry_index, needed_bytes) {
            state = self.changed.wait(state).expect("scheduler lock");
        }
        state.waiting -= 1;
        if state.closed {
            return false;
        }
        state.available_bytes -= needed_bytes;
        true
    }

    /// Gives back what `acquire` took for groups of `bytes` in all.
    fn release(&self, bytes: usize) {
        let mut state = self.state.lock().expect("scheduler lock");
        let available_bytes = state.available_bytes + bytes;
        state.available_bytes = available_bytes.min(self.budget.capacity_bytes);
        if state.waiting > 0 {
            self.changed.notify_all();
        }
    }

    fn close(&self) {
        self.state.lock().expect("scheduler lock").closed = true;
        self.changed.notify_all();
    }
}

/// A group's place in the stream: its entry, then its order in the entry.
type GroupKey = (u64, u32);

/// A group on its way to the consumer.
struct Sent {
    key: GroupKey,
    /// What it holds of the budget.
    cost_bytes: usize,
    /// The entry's last group.
    last: bool,
    events: Vec<SourceEvent>,
}

/// A chunk handed from the worker cutting it to an idle worker to hash.
struct HashJob {
    key: GroupKey,
    cost_bytes: usize,
    bytes: ChunkBytes,
}

/// Queue capacity in batches; the byte budget is the real bound.
const QUEUE_BATCHES_MAX: usize = 256;
/// A batch is sent once it holds this many bytes or groups, and always
/// before its worker waits for anything (so nothing the consumer waits for
/// sits in a batch of a waiting worker).
const BATCH_BYTES_MAX: usize = 1 << 20;
const BATCH_GROUPS_MAX: usize = 256;

/// One worker thread: takes entries in turn and produces them, and hashes
/// what others hand it.
struct Worker {
    source: Arc<dyn Source>,
    config: ChunkerConfig,
    scheduler: Arc<Scheduler>,
    results: Sender<Vec<Sent>>,
    hash_jobs: Receiver<HashJob>,
    /// Dropped once this worker can take no more entries, so the job queue
    /// closes when every worker is past the listing.
    hash_job_sender: Option<Sender<HashJob>>,
    /// Workers past the listing, doing nothing but hash jobs.
    hashing_workers: Arc<AtomicUsize>,
    batch: Vec<Sent>,
    batch_bytes: usize,
}

impl Worker {
    /// Runs until every entry is produced and hashed, or the consumer goes.
    fn run(mut self) {
        while let Some((index, entry)) = self.scheduler.take_entry() {
            if !self.hash_waiting_jobs() || !self.produce(index, entry) {
                return;
            }
        }
        self.hash_job_sender = None;
        if !self.send_batch() {
            return;
        }
        self.hashing_workers.fetch_add(1, Ordering::SeqCst);
        // The job queue closes once every worker is past the listing.
        while let Ok(job) = self.hash_jobs.recv() {
            if !self.hash_job(job) || !self.hash_waiting_jobs() || !self.send_batch() {
                return;
            }
        }
    }

    /// Hashes the jobs already queued; false once the consumer is gone.
    fn hash_waiting_jobs(&mut self) -> bool {
        while let Ok(job) = self.hash_jobs.try_recv() {
            if !self.hash_job(job) {
                return false;
            }
        }
        true
    }

    fn hash_job(&mut self, job: HashJob) -> bool {
        let events = vec![hashed(job.bytes)];
        self.push(job.key, job.cost_bytes, false, events)
    }

    /// Produces one entry's groups; false once the consumer is gone.
    fn produce(&mut self, index: u64, entry: SourceEntry) -> bool {
        let mut events = EntryEvents::new(&*self.source, entry, self.config);
        if matches!(events, EntryEvents::Streaming { .. }) && !self.send_batch() {
            // A long file comes: what is batched must not wait behind it.
            return false;
        }
        let mut part = 0_u32;
        while let Some(step) = events.next_step() {
            let key = (index, part);
            part += 1;
            let group = match step {
                Step::Group(group) => group,
                // Chunks cut here go to the workers with nothing else to do,
                // as long as they have less than two each waiting: then they
                // never stand idle, and this worker hashes the surplus.
                Step::Chunk(bytes) if self.hashers_want_work() => {
                    if !self.hand_over(key, bytes) {
                        return false;
                    }
                    continue;
                }
                Step::Chunk(bytes) => vec![hashed(bytes)],
            };
            let cost_bytes = group_cost_bytes(&group);
            let last = events.is_done();
            if !self.acquire(index, cost_bytes) || !self.push(key, cost_bytes, last, group) {
                return false;
            }
        }
        self.scheduler.finish_entry(index);
        true
    }

    fn hashers_want_work(&self) -> bool {
        let hashing_workers = self.hashing_workers.load(Ordering::SeqCst);
        let queued_jobs = self
            .hash_job_sender
            .as_ref()
            .map_or(usize::MAX, Sender::len);
        hashing_workers > 0 && queued_jobs < 2 * hashing_workers
    }

    /// Queues a chunk for an idle worker to hash; false once the consumer
    /// is gone.
    fn hand_over(&mut self, key: GroupKey, bytes: ChunkBytes) -> bool {
        let cost_bytes = bytes.len() + EVENT_OVERHEAD_BYTES;
        if !self.acquire(key.0, cost_bytes) {
            return false;
        }
        let job = HashJob {
            key,
            cost_bytes,
            bytes,
        };
        let sender = self.hash_job_sender.as_ref();
        sender
            .expect("a worker taking entries can hand over")
            .send(job)
            .is_ok()
    }

    /// Takes budget for a group of entry `index`, sending the batch before
    /// waiting for it.
    fn acquire(&mut self, index: u64, cost_bytes: usize) -> bool {
        if self.scheduler.try_acquire(index, cost_bytes) {
            return true;
        }
        self.send_batch() && self.scheduler.acquire(index, cost_bytes)
    }

    /// Adds a group (its budget taken) to the batch, sending a full batch.
    fn push(
        &mut self,
        key: GroupKey,
        cost_bytes: usize,
        last: bool,
        events: Vec<SourceEvent>,
    ) -> bool {
        self.batch.push(Sent {
            key,
            cost_bytes,
            last,
            events,
        });
        self.batch_bytes += cost_bytes;
        let full = self.batch_bytes >= BATCH_BYTES_MAX || self.batch.len() >= BATCH_GROUPS_MAX;
        !full || self.send_batch()
    }

    /// Sends the pending batch; false once the consumer is gone.
    fn send_batch(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        self.batch_bytes = 0;
        self.results.send(std::mem::take(&mut self.batch)).is_ok()
    }
}

/// Worker threads → result queue → reordering by group key on the
/// consumer's thread, under one byte budget. Groups travel in batches: one
/// channel operation per event made a tree of small files spend its time
/// waking threads (strace showed 875k `sched_yield` calls for the Rust docs
/// tree).
struct ParallelStream {
    results: Receiver<Vec<Sent>>,
    scheduler: Arc<Scheduler>,
    reorder: BTreeMap<GroupKey, Sent>,
    /// Events of the group last taken in order, in reverse order.
    ready: Vec<SourceEvent>,
    key_next: GroupKey,
    /// Bytes taken in order but not yet given back: released a batch's
    /// worth at a time, and always before waiting for more.
    unreleased_bytes: usize,
    threads: Vec<JoinHandle<()>>,
}

impl ParallelStream {
    fn start(
        source: Arc<dyn Source>,
        entries: Vec<SourceEntry>,
        config: ChunkerConfig,
        worker_threads: usize,
        budget: Budget,
    ) -> Self {
        let scheduler = Arc::new(Scheduler::new(entries, budget));
        let (result_sender, result_receiver) = bounded(QUEUE_BATCHES_MAX);
        let (hash_job_sender, hash_job_receiver) = unbounded();
        let hashing_workers = Arc::new(AtomicUsize::new(0));
        let threads = (0..worker_threads)
            .map(|_| {
                let worker = Worker {
                    source: source.clone(),
                    config,
                    scheduler: scheduler.clone(),
                    results: result_sender.clone(),
                    hash_jobs: hash_job_receiver.clone(),
                    hash_job_sender: Some(hash_job_sender.clone()),
                    hashing_workers: hashing_workers.clone(),
                    batch: Vec::new(),
                    batch_bytes: 0,
                };
                std::thread::spawn(move || worker.run())
            })
            .collect();
        Self {
            results: result_receiver,
            scheduler,
            reorder: BTreeMap::new(),
            ready: Vec::new(),
            key_next: (0, 0),
            unreleased_bytes: 0,
            threads,
        }
    }
}

impl EventStream for ParallelStream {
    fn next_event(&mut self) -> Option<SourceEvent> {
        loop {
            if let Some(event) = self.ready.pop() {
                return Some(event);
            }
            if let Some(sent) = self.reorder.remove(&self.key_next) {
                let (entry_index, part) = self.key_next;
                self.key_next = if sent.last {
                    (entry_index + 1, 0)
                } else {
                    (entry_index, part + 1)
                };
                self.unreleased_bytes += sent.cost_bytes;
                if self.unreleased_bytes >= BATCH_BYTES_MAX {
                    self.scheduler
                        .release(std::mem::take(&mut self.unreleased_bytes));
                }
                let mut events = sent.events;
                events.reverse();
                self.ready = events;
                continue;
            }
            // A worker may be waiting for exactly these bytes.
            self.scheduler
                .release(std::mem::take(&mut self.unreleased_bytes));
            match self.results.recv() {
                Ok(batch) => {
                    for sent in batch {
                        assert!(sent.key >= self.key_next, "group {:?} seen twice", sent.key);
                        self.reorder.insert(sent.key, sent);
                    }
                }
                // Every worker is gone and nothing is pending: the end.
                Err(_) => {
                    assert!(self.reorder.is_empty(), "a gap in the event sequence");
                    return None;
                }
            }
        }
    }
}

impl Drop for ParallelStream {
    fn drop(&mut self) {
        // Closing the scheduler and our receiving end makes every worker's
        // take, acquire or send fail, so each exits and can be joined. A
        // worker waiting for a hash job wakes when the others have gone.
        self.scheduler.close();
        let (_, closed_receiver) = bounded(0);
        self.results = closed_receiver;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{MemoryEntry, MemorySource};

    fn describe(stream: &mut dyn EventStream) -> Vec<String> {
        let mut described = Vec::new();
        while let Some(event) = stream.next_event() {
            described.push(match event {
                SourceEvent::Entry(entry) => format!("entry {} {:?}", entry.path, entry.kind),
                SourceEvent::FileStart(entry) => format!("start {}", entry.path),
                SourceEvent::Chunk { fingerprint, bytes } => {
                    assert_eq!(Fingerprint::of(&bytes), fingerprint);
                    format!("chunk {fingerprint} {}", bytes.len())
                }
                SourceEvent::FileEnd => "end".to_string(),
                SourceEvent::FileFailed { reason } => format!("failed {reason}"),
            });
        }
        described
    }

    /// Reordering after parallel hashing must give exactly the inline order,
    /// even with a byte budget smaller than one chunk.
    #[test]
    fn parallel_stream_equals_inline_stream() {
        let mut tree = MemorySource::new();
        tree.insert("d", 0o755, MemoryEntry::Directory);
        for index in 0..20_u8 {
            let bytes: Vec<u8> = (0..(index as usize * 37_000))
                .map(|i| (i * 7 % 251) as u8 ^ index)
                .collect();
            tree.insert(&format!("d/f{index:02}"), 0o644, MemoryEntry::File(bytes));
        }
        // Streamed files, several at once, their chunks hashed by others.
        for index in 0..4_usize {
            let bytes: Vec<u8> = (0..(WHOLE_FILE_MAX_BYTES + index * 700_000))
                .map(|i| ((i * 2_654_435_761) >> 11) as u8 ^ index as u8)
                .collect();
            tree.insert(&format!("d/large{index}"), 0o644, MemoryEntry::File(bytes));
        }
        tree.insert("d/link", 0o777, MemoryEntry::Symlink("f01".to_string()));
        let source: Arc<dyn Source> = Arc::new(tree);
        let entries = source.list().unwrap();
        let config = ChunkerConfig::with_average(4096);
        let inline = describe(&mut *start(
            Pipeline::Inline,
            source.clone(),
            entries.clone(),
            config,
        ));
        let parallel = Pipeline::Parallel {
            worker_threads: 3,
            in_flight_bytes_max: 1,
        };
        let parallel = describe(&mut *start(parallel, source, entries, config));
        assert!(inline.len() > 200, "{} events", inline.len());
        assert_eq!(parallel, inline);
    }

    /// Later entries may not take the reserve; the earliest may, and a
    /// finished entry hands that right to the next.
    #[test]
    fn only_the_earliest_entry_may_use_the_reserve() {
        let entries = (0..3)
            .map(|index| SourceEntry {
                path: format!("f{index}"),
                mode: 0o644,
                owner: None,
                kind: SourceKind::Directory { modified_ns: None },
            })
            .collect();
        let budget = Budget {
            capacity_bytes: 1000,
            reserve_bytes: 400,
        };
        let scheduler = Scheduler::new(entries, budget);
        let (first, _) = scheduler.take_entry().unwrap();
        let (second, _) = scheduler.take_entry().unwrap();
        assert!(scheduler.try_acquire(second, 600));
        assert!(
            !scheduler.try_acquire(second, 1),
            "the reserve is left free"
        );
        assert!(scheduler.try_acquire(first, 400));
        assert!(!scheduler.try_acquire(first, 1), "the budget is spent");
        scheduler.release(400);
        scheduler.finish_entry(first);
        assert!(scheduler.try_acquire(second, 400), "now the earliest");
        let (third, _) = scheduler.take_entry().unwrap();
        assert!(scheduler.take_entry().is_none());
        scheduler.release(1000);
        assert!(scheduler.try_acquire(third, 600));
        assert!(!scheduler.try_acquire(third, 1), "second is the earliest");
        assert!(scheduler.try_acquire(second, 1));
    }

    /// Counts the files the producer has opened.
    struct CountingSource {
        inner: MemorySource,
        opened: std::sync::atomic::AtomicUsize,
    }

    impl Source for CountingSource {
        fn list(&self) -> Result<Vec<SourceEntry>, crate::source::SourceError> {
            self.inner.list()
        }
        fn open(&self, path: &str) -> std::io::Result<Box<dyn Read + Send>> {
            self.opened
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.open(path)
        }
    }

    /// With room in the budget, the reader must run ahead of a consumer that
    /// has taken only one event. (A budget once counted in chunks, not
    /// bytes, let one small event through at a time and made a tree of
    /// small files three times slower.)
    #[test]
    fn the_reader_runs_ahead_of_the_consumer_within_the_budget() {
        let mut tree = MemorySource::new();
        for index in 0..1000 {
            tree.insert(
                &format!("f{index:04}"),
                0o644,
                MemoryEntry::File(vec![index as u8; 100]),
            );
        }
        let source = Arc::new(CountingSource {
            inner: tree,
            opened: Default::default(),
        });
        let entries = source.list().unwrap();
        let parallel = Pipeline::Parallel {
            worker_threads: 2,
            in_flight_bytes_max: 8 << 20,
        };
        let mut stream = start(
            parallel,
            source.clone(),
            entries,
            ChunkerConfig::with_average(4096),
        );
        assert!(stream.next_event().is_some());
        // 1000 files of 100 bytes fit in 8 MiB many times over: every one
        // is opened without the consumer taking another event.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let opened = || source.opened.load(std::sync::atomic::Ordering::SeqCst);
        while opened() < 1000 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(opened(), 1000, "files opened ahead of the consumer");
        drop(stream);
    }

    /// Every file's chunks, per path, as the stream gives them.
    fn chunks_per_file(stream: &mut dyn EventStream) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut files = BTreeMap::new();
        let mut current = None;
        while let Some(event) = stream.next_event() {
            match event {
                SourceEvent::FileStart(entry) => current = Some((entry.path, Vec::new())),
                SourceEvent::Chunk { bytes, .. } => {
                    current.as_mut().unwrap().1.push(bytes.into_vec())
                }
                SourceEvent::FileEnd => {
                    let (path, chunks) = current.take().unwrap();
                    files.insert(path, chunks);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
        files
    }

    /// A source whose listing says every file is 10 bytes long: each has
    /// grown since it was listed.
    struct GrownSource(MemorySource);

    impl Source for GrownSource {
        fn list(&self) -> Result<Vec<SourceEntry>, crate::source::SourceError> {
            let mut entries = self.0.list()?;
            for entry in &mut entries {
                if let SourceKind::File { size_bytes, .. } = &mut entry.kind {
                    *size_bytes = 10;
                }
            }
            Ok(entries)
        }
        fn open(&self, path: &str) -> std::io::Result<Box<dyn Read + Send>> {
            self.0.open(path)
        }
    }

    /// Small files are read whole and chunked on a hasher; large ones and
    /// ones that grew past the cap after listing are streamed. Whichever
    /// way, inline or parallel, the chunks are those of streaming the file.
    #[test]
    fn files_read_whole_are_chunked_exactly_as_if_streamed() {
        let config = ChunkerConfig::with_average(4096);
        let min = config.size_min_bytes;
        let sizes = [
            0,
            1,
            min - 1,
            min,
            min + 1,
            100_000,
            WHOLE_FILE_MAX_BYTES,
            WHOLE_FILE_MAX_BYTES + 1,
            3 << 20,
        ];
        let mut tree = MemorySource::new();
        let mut expected = BTreeMap::new();
        for (index, size) in sizes.into_iter().enumerate() {
            let bytes: Vec<u8> = (0..size)
                .map(|i| ((i * 2_654_435_761_usize) >> 13) as u8 ^ index as u8)
                .collect();
            let streamed: Vec<Vec<u8>> = ChunkReader::new(&bytes[..], config)
                .map(|chunk| chunk.unwrap().into_vec())
                .collect();
            let path = format!("f{index}");
            expected.insert(path.clone(), streamed);
            tree.insert(&path, 0o644, MemoryEntry::File(bytes));
        }
        let parallel = Pipeline::Parallel {
            worker_threads: 2,
            in_flight_bytes_max: 4 << 20,
        };
        let grown: Arc<dyn Source> = Arc::new(GrownSource(tree.clone()));
        let listed: Arc<dyn Source> = Arc::new(tree);
        for source in [listed, grown] {
            for pipeline in [Pipeline::Inline, parallel] {
                let entries = source.list().unwrap();
                let mut stream = start(pipeline, source.clone(), entries, config);
                assert_eq!(chunks_per_file(&mut *stream), expected, "{pipeline:?}");
            }
        }
    }

    /// Dropping a stream midway must stop and join its threads, not hang.
    #[test]
    fn dropping_a_parallel_stream_early_stops_its_threads() {
        let mut tree = MemorySource::new();
        tree.insert("big", 0o644, MemoryEntry::File(vec![7; 8 << 20]));
        let source: Arc<dyn Source> = Arc::new(tree);
        let entries = source.list().unwrap();
        let parallel = Pipeline::Parallel {
            worker_threads: 2,
            in_flight_bytes_max: 1,
        };
        let mut stream = start(parallel, source, entries, ChunkerConfig::with_average(4096));
        assert!(matches!(
            stream.next_event(),
            Some(SourceEvent::FileStart(_))
        ));
        drop(stream);
    }
}
