//! The chunk-and-hash step of a backup, inline or on all cores.
//!
//! Both pipelines turn a source listing into one ordered stream of
//! [`SourceEvent`]s: entries, and for each file its chunks with fingerprints.
//! [`Pipeline::Inline`] does it on the calling thread (the simulator refuses
//! system threads). [`Pipeline::Parallel`] reads on one thread (and chunks
//! the files too large to read whole there), chunks small files and hashes
//! on `hasher_threads` more, and restores order on the consumer side.
//! Memory stays bounded: before sending an event the producer takes its size
//! from a byte budget, which the consumer gives back only once it has taken
//! the event in order, so at most `in_flight_bytes_max` (plus the one chunk
//! being waited on) is in flight wherever it sits: queues, hashers, reorder.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::Fingerprint;
use crate::chunker::{ChunkReader, ChunkerConfig};
use crate::source::{Source, SourceEntry, SourceKind};

/// How chunking and hashing are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipeline {
    /// Everything on the caller's thread. Required under the simulator.
    Inline,
    /// A reader/chunker thread plus `hasher_threads` SHA-256 threads, with at
    /// most `in_flight_bytes_max` of chunks between them and the consumer.
    Parallel {
        hasher_threads: usize,
        in_flight_bytes_max: usize,
    },
}

impl Pipeline {
    /// Parallel on every core: hashing is the per-byte bottleneck (SHA-256
    /// ≈1.3 GiB/s per core against ≈2 GiB/s for FastCDC cut points), so
    /// there is one hasher per core and the chunker shares a core. 64 MiB in
    /// flight covers several 16 MiB pack writes, so hashing goes on while
    /// the consumer waits for the disk.
    pub fn parallel_default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2);
        Self::Parallel {
            hasher_threads: cores.max(1),
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
        bytes: Vec<u8>,
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
            hasher_threads,
            in_flight_bytes_max,
        } => {
            // At least one largest chunk must fit, or the stream would
            // pass one event at a time.
            let budget_bytes =
                in_flight_bytes_max.max(config.size_max_bytes + EVENT_OVERHEAD_BYTES);
            Box::new(ParallelStream::start(
                source,
                entries,
                config,
                hasher_threads.max(1),
                budget_bytes,
            ))
        }
    }
}

/// Events before hashing: chunks carry bytes only.
enum RawEvent {
    Entry(SourceEntry),
    FileStart(SourceEntry),
    Chunk(Vec<u8>),
    FileEnd,
    FileFailed(String),
    /// A small file read whole, to be chunked where it is hashed: the
    /// reader then only reads, which is what bounds a tree of small files.
    /// Stands for its start, its chunks and its end.
    WholeFile {
        entry: SourceEntry,
        bytes: Vec<u8>,
    },
    /// A small file whose read failed: its start, then its failure.
    WholeFileFailed {
        entry: SourceEntry,
        reason: String,
    },
}

/// Files listed at up to this size are read whole by the reader and
/// chunked by a hasher; larger ones are streamed through a [`ChunkReader`].
const WHOLE_FILE_MAX_BYTES: usize = 1 << 20;

/// Walks the entries, opening and chunking each file in turn.
struct RawProducer {
    source: Arc<dyn Source>,
    entries: std::vec::IntoIter<SourceEntry>,
    config: ChunkerConfig,
    current: Option<ChunkReader<Box<dyn Read + Send>>>,
}

impl RawProducer {
    fn next_raw(&mut self) -> Option<RawEvent> {
        if let Some(reader) = self.current.as_mut() {
            return Some(match reader.next() {
                Some(Ok(bytes)) => RawEvent::Chunk(bytes),
                Some(Err(error)) => {
                    self.current = None;
                    RawEvent::FileFailed(format!("read failed: {error}"))
                }
                None => {
                    self.current = None;
                    RawEvent::FileEnd
                }
            });
        }
        let entry = self.entries.next()?;
        let SourceKind::File { size_bytes, .. } = entry.kind else {
            return Some(RawEvent::Entry(entry));
        };
        match self.source.open(&entry.path) {
            Ok(reader) => {
                let hint_bytes = usize::try_from(size_bytes).unwrap_or(usize::MAX);
                if hint_bytes <= WHOLE_FILE_MAX_BYTES {
                    return Some(self.read_whole(entry, reader, hint_bytes));
                }
                self.current = Some(ChunkReader::with_size_hint(reader, self.config, hint_bytes));
                Some(RawEvent::FileStart(entry))
            }
            // An unopenable file is reported like any other skipped entry.
            Err(error) => {
                let reason = format!("unreadable file, not backed up: {error}");
                Some(RawEvent::Entry(SourceEntry {
                    kind: SourceKind::Skipped { reason },
                    ..entry
                }))
            }
        }
    }
}

impl RawProducer {
    /// Reads a small file whole. One that has grown past the cap since it
    /// was listed goes on streaming from where the read stopped.
    fn read_whole(
        &mut self,
        entry: SourceEntry,
        reader: Box<dyn Read + Send>,
        hint_bytes: usize,
    ) -> RawEvent {
        let mut bytes = Vec::with_capacity(hint_bytes);
        let cap_bytes = WHOLE_FILE_MAX_BYTES as u64 + 1;
        let mut reader = reader.take(cap_bytes);
        if let Err(error) = reader.read_to_end(&mut bytes) {
            let reason = format!("read failed: {error}");
            return RawEvent::WholeFileFailed { entry, reason };
        }
        if bytes.len() <= WHOLE_FILE_MAX_BYTES {
            return RawEvent::WholeFile { entry, bytes };
        }
        let rest = std::io::Cursor::new(bytes).chain(reader.into_inner());
        let size_bytes = WHOLE_FILE_MAX_BYTES * 2;
        self.current = Some(ChunkReader::with_size_hint(
            Box::new(rest),
            self.config,
            size_bytes,
        ));
        RawEvent::FileStart(entry)
    }
}

/// Turns one raw event into its events, chunking and hashing as needed.
fn hash_event(raw: RawEvent, config: ChunkerConfig, out: &mut Vec<SourceEvent>) {
    let chunk = |bytes: Vec<u8>| SourceEvent::Chunk {
        fingerprint: Fingerprint::of(&bytes),
        bytes,
    };
    match raw {
        RawEvent::Entry(entry) => out.push(SourceEvent::Entry(entry)),
        RawEvent::FileStart(entry) => out.push(SourceEvent::FileStart(entry)),
        RawEvent::Chunk(bytes) => out.push(chunk(bytes)),
        RawEvent::FileEnd => out.push(SourceEvent::FileEnd),
        RawEvent::FileFailed(reason) => out.push(SourceEvent::FileFailed { reason }),
        RawEvent::WholeFile { entry, bytes } => {
            out.push(SourceEvent::FileStart(entry));
            // FastCDC never cuts below the minimum size: such a file is one
            // chunk as it stands (and an empty file is none).
            if !bytes.is_empty() && bytes.len() <= config.size_min_bytes {
                out.push(chunk(bytes));
            } else if !bytes.is_empty() {
                let length = bytes.len();
                let chunks = ChunkReader::with_size_hint(&bytes[..], config, length);
                out.extend(chunks.map(|bytes| chunk(bytes.expect("reading memory cannot fail"))));
            }
            out.push(SourceEvent::FileEnd);
        }
        RawEvent::WholeFileFailed { entry, reason } => {
            out.push(SourceEvent::FileStart(entry));
            out.push(SourceEvent::FileFailed { reason });
        }
    }
}

/// Reads, chunks and hashes on the caller's thread.
struct InlineStream {
    producer: RawProducer,
    /// Events of the last raw event not yet handed out, in reverse order.
    ready: Vec<SourceEvent>,
}

impl InlineStream {
    fn new(source: Arc<dyn Source>, entries: Vec<SourceEntry>, config: ChunkerConfig) -> Self {
        let entries = entries.into_iter();
        Self {
            producer: RawProducer {
                source,
                entries,
                config,
                current: None,
            },
            ready: Vec::new(),
        }
    }
}

impl EventStream for InlineStream {
    fn next_event(&mut self) -> Option<SourceEvent> {
        while self.ready.is_empty() {
            let raw = self.producer.next_raw()?;
            hash_event(raw, self.producer.config, &mut self.ready);
            self.ready.reverse();
        }
        self.ready.pop()
    }
}

/// Bookkeeping bytes charged per event on top of its chunk, so that a run
/// of empty files or directories is bounded too.
const EVENT_OVERHEAD_BYTES: usize = 256;

fn event_cost_bytes(raw: &RawEvent) -> usize {
    match raw {
        RawEvent::Chunk(bytes) | RawEvent::WholeFile { bytes, .. } => {
            bytes.len() + EVENT_OVERHEAD_BYTES
        }
        _ => EVENT_OVERHEAD_BYTES,
    }
}

/// A counting semaphore in bytes: the cap on bytes in flight.
struct ByteBudget {
    capacity_bytes: usize,
    state: Mutex<BudgetState>,
    changed: Condvar,
}

struct BudgetState {
    available_bytes: usize,
    closed: bool,
    /// Threads in `acquire`: a release wakes someone only if there is one
    /// (a wake per event was a futex call per event).
    waiting: usize,
}

impl ByteBudget {
    fn new(capacity_bytes: usize) -> Self {
        let state = Mutex::new(BudgetState {
            available_bytes: capacity_bytes,
            closed: false,
            waiting: 0,
        });
        Self {
            capacity_bytes,
            state,
            changed: Condvar::new(),
        }
    }

    /// Waits until `bytes` fit (a cost above the whole budget waits for all
    /// of it, so it cannot deadlock); false once the budget is closed.
    fn acquire(&self, bytes: usize) -> bool {
        let needed_bytes = bytes.min(self.capacity_bytes);
        let mut state = self.state.lock().expect("budget lock");
        state.waiting += 1;
        while state.available_bytes < needed_bytes && !state.closed {
            state = self.changed.wait(state).expect("budget lock");
        }
        state.waiting -= 1;
        state.available_bytes -= needed_bytes.min(state.available_bytes);
        !state.closed
    }

    /// Takes `bytes` if they fit now; false if they do not or it is closed.
    fn try_acquire(&self, bytes: usize) -> bool {
        let needed_bytes = bytes.min(self.capacity_bytes);
        let mut state = self.state.lock().expect("budget lock");
        if state.closed || state.available_bytes < needed_bytes {
            return false;
        }
        state.available_bytes -= needed_bytes;
        true
    }

    fn release(&self, bytes: usize) {
        let mut state = self.state.lock().expect("budget lock");
        let available_bytes = state.available_bytes + bytes.min(self.capacity_bytes);
        state.available_bytes = available_bytes.min(self.capacity_bytes);
        if state.waiting > 0 {
            self.changed.notify_all();
        }
    }

    fn close(&self) {
        self.state.lock().expect("budget lock").closed = true;
        self.changed.notify_all();
    }
}

/// Reader thread → work queue → hasher threads → result queue → reordering
/// by sequence number on the consumer's thread, under one byte budget.
/// Events travel in batches: one channel operation per event made a tree of
/// small files spend its time waking threads (strace showed 875k
/// `sched_yield` calls for the Rust docs tree).
struct ParallelStream {
    results: Receiver<Vec<Sequenced<Vec<SourceEvent>>>>,
    budget: Arc<ByteBudget>,
    reorder: BTreeMap<u64, (usize, Vec<SourceEvent>)>,
    /// Events of the raw event last taken in order, in reverse order.
    ready: Vec<SourceEvent>,
    sequence_next: u64,
    /// Bytes taken in order but not yet given back: released a batch's
    /// worth at a time, and always before waiting for more.
    unreleased_bytes: usize,
    threads: Vec<JoinHandle<()>>,
}

/// An event with its place in the stream and its cost in the byte budget.
type Sequenced<E> = (u64, usize, E);

/// Queue capacity in batches; the byte budget is the real bound.
const QUEUE_BATCHES_MAX: usize = 256;
/// A batch is sent once it holds this many bytes or events, or when the
/// producer would otherwise wait for budget (so a tiny budget cannot
/// deadlock on an unsent batch).
const BATCH_BYTES_MAX: usize = 1 << 20;
const BATCH_EVENTS_MAX: usize = 256;

/// The producer's side: reads and chunks, and sends events in batches.
struct BatchingProducer {
    producer: RawProducer,
    budget: Arc<ByteBudget>,
    sender: Sender<Vec<Sequenced<RawEvent>>>,
    batch: Vec<Sequenced<RawEvent>>,
    batch_bytes: usize,
}

impl BatchingProducer {
    /// Runs until the source is exhausted or the consumer goes away.
    fn run(mut self) {
        let mut sequence = 0_u64;
        while let Some(raw) = self.producer.next_raw() {
            let cost_bytes = event_cost_bytes(&raw);
            if !self.budget.try_acquire(cost_bytes) {
                // Everything in flight before us must be able to drain.
                if !self.send_batch() || !self.budget.acquire(cost_bytes) {
                    return;
                }
            }
            self.batch.push((sequence, cost_bytes, raw));
            self.batch_bytes += cost_bytes;
            sequence += 1;
            let full = self.batch_bytes >= BATCH_BYTES_MAX || self.batch.len() >= BATCH_EVENTS_MAX;
            if full && !self.send_batch() {
                return;
            }
        }
        self.send_batch();
    }

    /// Sends the pending batch; false once the consumer is gone.
    fn send_batch(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        self.batch_bytes = 0;
        self.sender.send(std::mem::take(&mut self.batch)).is_ok()
    }
}

impl ParallelStream {
    fn start(
        source: Arc<dyn Source>,
        entries: Vec<SourceEntry>,
        config: ChunkerConfig,
        hasher_threads: usize,
        budget_bytes: usize,
    ) -> Self {
        let budget = Arc::new(ByteBudget::new(budget_bytes));
        let (work_sender, work_receiver) = bounded::<Vec<Sequenced<RawEvent>>>(QUEUE_BATCHES_MAX);
        let (result_sender, result_receiver) = bounded(QUEUE_BATCHES_MAX);
        let mut threads = Vec::with_capacity(hasher_threads + 1);
        let producer = BatchingProducer {
            producer: RawProducer {
                source,
                entries: entries.into_iter(),
                config,
                current: None,
            },
            budget: budget.clone(),
            sender: work_sender,
            batch: Vec::new(),
            batch_bytes: 0,
        };
        threads.push(std::thread::spawn(move || producer.run()));
        for _ in 0..hasher_threads {
            let work_receiver = work_receiver.clone();
            let result_sender: Sender<Vec<Sequenced<Vec<SourceEvent>>>> = result_sender.clone();
            threads.push(std::thread::spawn(move || {
                for batch in work_receiver {
                    let hash = |(sequence, cost_bytes, raw)| {
                        let mut events = Vec::with_capacity(1);
                        hash_event(raw, config, &mut events);
                        (sequence, cost_bytes, events)
                    };
                    let hashed = batch.into_iter().map(hash).collect();
                    if result_sender.send(hashed).is_err() {
                        break;
                    }
                }
            }));
        }
        Self {
            results: result_receiver,
            budget,
            reorder: BTreeMap::new(),
            ready: Vec::new(),
            sequence_next: 0,
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
            if let Some((cost_bytes, mut events)) = self.reorder.remove(&self.sequence_next) {
                self.sequence_next += 1;
                self.unreleased_bytes += cost_bytes;
                if self.unreleased_bytes >= BATCH_BYTES_MAX {
                    self.budget
                        .release(std::mem::take(&mut self.unreleased_bytes));
                }
                events.reverse();
                self.ready = events;
                continue;
            }
            // The producer may be waiting for exactly these bytes.
            self.budget
                .release(std::mem::take(&mut self.unreleased_bytes));
            match self.results.recv() {
                Ok(batch) => {
                    for (sequence, cost_bytes, event) in batch {
                        assert!(
                            sequence >= self.sequence_next,
                            "sequence {sequence} seen twice"
                        );
                        self.reorder.insert(sequence, (cost_bytes, event));
                    }
                }
                // Every sender is gone and nothing is pending: the end.
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
        // Closing the budget and our receiving end makes every thread's
        // acquire, send or receive fail, so each exits and can be joined.
        self.budget.close();
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
            hasher_threads: 3,
            in_flight_bytes_max: 1,
        };
        let parallel = describe(&mut *start(parallel, source, entries, config));
        assert!(inline.len() > 200, "{} events", inline.len());
        assert_eq!(parallel, inline);
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
            hasher_threads: 2,
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
                SourceEvent::Chunk { bytes, .. } => current.as_mut().unwrap().1.push(bytes),
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
                .map(Result::unwrap)
                .collect();
            let path = format!("f{index}");
            expected.insert(path.clone(), streamed);
            tree.insert(&path, 0o644, MemoryEntry::File(bytes));
        }
        let parallel = Pipeline::Parallel {
            hasher_threads: 2,
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
            hasher_threads: 2,
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
