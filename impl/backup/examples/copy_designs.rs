//! What a first backup's copies cost, measured: the same files read,
//! chunked (FastCDC), hashed (SHA-256) and written as 16 MiB `O_DIRECT`
//! packs (write, fsync, rename) on every core, in three buffer designs that
//! differ only in how often each chunk's bytes are copied in memory:
//!
//! - `two-copies`: the engine's first design. Each chunk is copied out of
//!   its read buffer into a buffer of its own, and one
//!   packing thread later copies every chunk into the pack's staging buffer,
//!   long after it was hashed, so from memory rather than cache.
//! - `one-copy`: each worker copies a chunk into its own pack buffer right
//!   after hashing it, while the bytes are still in cache.
//! - `zero-copies`: each worker reads a file straight into its pack buffer
//!   and chunks and hashes it there; only a buffer's unfinished tail moves.
//!
//! The engine now follows `zero-copies` by other means: its chunks are
//! ranges of pooled, aligned read buffers ([`backup::ChunkBytes`]) that pass
//! through the service boundary, and the store writes runs of them to the
//! pack with `O_DIRECT` from where they were read.
//!
//! Beside them, the ceiling the benchmark uses: FastCDC + SHA-256 of the same
//! bytes in memory on every core. Every design must find the same chunks;
//! the run stops if one does not. Packs go to a temporary directory and are
//! removed. This is an experiment to choose the engine's buffer design, not
//! part of the engine: it stores no index and no manifest.
//!
//! `cargo run --release -p crosscheck-backup --example copy_designs -- <DIR> [ROUNDS]`
//! (`crosscheck bench backup --data-dir D` leaves 1 GiB versions in `D/v1`..).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use backup::chunk_bytes::Buffer;
use backup::disk::HUGE_PAGE_BYTES;
use backup::{ChunkReader, ChunkerConfig, Fingerprint};
use crossbeam_channel::{Receiver, Sender, bounded};

/// Bytes per pack, as the engine's upload batches.
const PACK_BYTES: usize = 16 << 20;
/// Read size of the one-copy design's own read buffer.
const READ_BUFFER_BYTES: usize = 8 << 20;
/// `O_DIRECT` alignment of lengths and addresses.
const DIRECT_ALIGN_BYTES: usize = 4096;
/// Pack buffers in circulation: two per worker being filled, the rest
/// queued for or in the writer.
const PACK_BUFFERS: usize = 8;

const DESIGNS: [&str; 3] = ["two-copies", "one-copy", "zero-copies"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: copy_designs <DIR> [ROUNDS]: the files under DIR are the data");
        std::process::exit(2);
    };
    let rounds: usize = args.get(2).map_or(3, |rounds| {
        rounds.parse().unwrap_or_else(|_| {
            eprintln!("expected ROUNDS to be a whole number; found {rounds:?}");
            std::process::exit(2);
        })
    });
    let files = list_files(&dir);
    let total_bytes: u64 = files.iter().map(|(_, size)| size).sum();
    if total_bytes == 0 {
        eprintln!(
            "expected files with bytes under {}; found none",
            dir.display()
        );
        std::process::exit(2);
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let config = ChunkerConfig::default();
    println!(
        "copy_designs: {} files, {} MiB, {cores} cores, chunks {}/{}/{} bytes, {rounds} rounds",
        files.len(),
        total_bytes >> 20,
        config.size_min_bytes,
        config.size_avg_bytes,
        config.size_max_bytes
    );
    let ceiling = ceiling_mib_per_s(&files, config, cores);
    println!("ceiling (FastCDC + SHA-256 in memory, {cores} cores): {ceiling:.0} MiB/s");
    let parts = deal(&files, cores);
    let scratch = std::env::temp_dir().join(format!("copy-designs-{}", std::process::id()));
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); DESIGNS.len()];
    for round in 0..rounds {
        for (index, design) in DESIGNS.iter().enumerate() {
            std::fs::create_dir_all(&scratch).expect("scratch directory");
            let run = run_design(design, &parts, config, &scratch);
            std::fs::remove_dir_all(&scratch).expect("scratch removed");
            println!(
                "round {round} {design:<12} {:>6.3} s  {:>5.0} MiB/s  {:.2} CPU-s/GiB",
                run.seconds,
                mib_per_s(total_bytes, run.seconds),
                run.cpu_seconds / (total_bytes as f64 / (1u64 << 30) as f64)
            );
            if let Some(first) = runs.iter().flatten().next() {
                assert_eq!(
                    (run.chunks, run.digest),
                    (first.chunks, first.digest),
                    "{design} found other chunks than {}",
                    DESIGNS[0]
                );
            }
            runs[index].push(run);
        }
    }
    for (design, runs) in DESIGNS.iter().zip(&runs) {
        let mut seconds: Vec<f64> = runs.iter().map(|run| run.seconds).collect();
        seconds.sort_by(f64::total_cmp);
        let median = mib_per_s(total_bytes, seconds[seconds.len() / 2]);
        println!(
            "median {design:<12} {median:>5.0} MiB/s = {:.2} of the ceiling",
            median / ceiling
        );
    }
}

#[derive(Clone, Copy)]
struct Run {
    seconds: f64,
    cpu_seconds: f64,
    chunks: u64,
    /// XOR of every chunk's fingerprint: equal when the chunks are.
    digest: [u8; 32],
}

/// What a worker found: chunk count and fingerprint XOR.
#[derive(Default)]
struct Found {
    chunks: u64,
    digest: [u8; 32],
}

impl Found {
    fn add(&mut self, bytes: &[u8]) {
        let fingerprint = Fingerprint::of(bytes);
        self.chunks += 1;
        for (out, byte) in self.digest.iter_mut().zip(fingerprint.0) {
            *out ^= byte;
        }
    }

    fn merge(&mut self, other: Found) {
        self.chunks += other.chunks;
        for (out, byte) in self.digest.iter_mut().zip(other.digest) {
            *out ^= byte;
        }
    }
}

/// A pack buffer: huge-page memory, of which the first `filled` bytes hold
/// chunks (one huge page past a pack's bytes leaves room to pad the tail).
struct PackBuffer {
    memory: Buffer,
    filled: usize,
}

impl PackBuffer {
    fn new() -> Self {
        Self {
            memory: Buffer::pooled(PACK_BYTES + HUGE_PAGE_BYTES),
            filled: 0,
        }
    }

    fn room(&self) -> usize {
        PACK_BYTES - self.filled
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = self.filled;
        self.memory[at..at + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// The free part, to read into.
    fn free(&mut self) -> &mut [u8] {
        &mut self.memory[self.filled..PACK_BYTES]
    }

    fn filled(&self) -> &[u8] {
        &self.memory[..self.filled]
    }
}

/// Full pack buffers go to the writer (`None` once all are sent); written
/// ones come back.
struct Packs {
    full: Sender<Option<PackBuffer>>,
    empty: Receiver<PackBuffer>,
}

impl Packs {
    fn take(&self) -> PackBuffer {
        let mut buffer = self.empty.recv().expect("the writer hands buffers back");
        buffer.filled = 0;
        buffer
    }

    fn send(&self, buffer: PackBuffer) {
        if buffer.filled > 0 {
            self.full.send(Some(buffer)).expect("the writer is running");
        }
    }

    fn finish(&self) {
        self.full.send(None).expect("the writer is running");
    }
}

fn run_design(design: &str, parts: &[Vec<PathBuf>], config: ChunkerConfig, out: &Path) -> Run {
    let (full_sender, full_receiver) = bounded::<Option<PackBuffer>>(PACK_BUFFERS + 1);
    let (empty_sender, empty_receiver) = bounded::<PackBuffer>(PACK_BUFFERS);
    for _ in 0..PACK_BUFFERS {
        empty_sender
            .send(PackBuffer::new())
            .expect("room for every buffer");
    }
    let packs = &Packs {
        full: full_sender,
        empty: empty_receiver,
    };
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let found = std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_packs(&full_receiver, &empty_sender, out));
        let mut found = Found::default();
        if design == "two-copies" {
            // Chunks in buffers of their own go to one packing thread.
            let (chunk_sender, chunk_receiver) = bounded::<Vec<u8>>(256);
            let packer = scope.spawn(move || {
                let chunks = chunk_receiver;
                let mut buffer = packs.take();
                for chunk in chunks {
                    if buffer.room() < chunk.len() {
                        packs.send(buffer);
                        buffer = packs.take();
                    }
                    buffer.push(&chunk);
                }
                packs.send(buffer);
            });
            let workers: Vec<_> = parts
                .iter()
                .map(|part| {
                    let chunk_sender = chunk_sender.clone();
                    scope.spawn(move || two_copies(part, config, &chunk_sender))
                })
                .collect();
            drop(chunk_sender);
            workers
                .into_iter()
                .for_each(|worker| found.merge(worker.join().expect("worker")));
            packer.join().expect("packer");
        } else {
            let zero = design == "zero-copies";
            let workers: Vec<_> = parts
                .iter()
                .map(|part| {
                    scope.spawn(move || {
                        if zero {
                            zero_copies(part, config, packs)
                        } else {
                            one_copy(part, config, packs)
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .for_each(|worker| found.merge(worker.join().expect("worker")));
        }
        packs.finish();
        writer.join().expect("writer");
        found
    });
    Run {
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: own_cpu_seconds() - cpu_before,
        chunks: found.chunks,
        digest: found.digest,
    }
}

fn two_copies(files: &[PathBuf], config: ChunkerConfig, chunks: &Sender<Vec<u8>>) -> Found {
    let mut found = Found::default();
    for path in files {
        let file = std::fs::File::open(path).expect("a listed file opens");
        for chunk in ChunkReader::new(file, config) {
            let chunk = chunk.expect("a listed file reads");
            found.add(&chunk);
            // The copy into a buffer of the chunk's own, as the engine did.
            chunks
                .send(chunk.into_vec())
                .expect("the packer is running");
        }
    }
    found
}

fn one_copy(files: &[PathBuf], config: ChunkerConfig, packs: &Packs) -> Found {
    let mut found = Found::default();
    let mut read_buffer = vec![0u8; READ_BUFFER_BYTES];
    let mut pack = packs.take();
    for path in files {
        let mut file = std::fs::File::open(path).expect("a listed file opens");
        let mut filled = 0;
        loop {
            let at_end = fill(&mut file, &mut read_buffer, &mut filled);
            let window = &read_buffer[..filled];
            let done = for_each_chunk(window, at_end, config, |chunk| {
                found.add(chunk);
                if pack.room() < chunk.len() {
                    packs.send(std::mem::replace(&mut pack, packs.take()));
                }
                pack.push(chunk);
            });
            if at_end {
                break;
            }
            read_buffer.copy_within(done..filled, 0);
            filled -= done;
        }
    }
    packs.send(pack);
    found
}

fn zero_copies(files: &[PathBuf], config: ChunkerConfig, packs: &Packs) -> Found {
    let mut found = Found::default();
    let mut pack = packs.take();
    for path in files {
        let mut file = std::fs::File::open(path).expect("a listed file opens");
        // The file's unchunked bytes are the pack's bytes past `pack.filled`.
        let mut pending = 0;
        loop {
            let at_end = fill(&mut file, pack.free(), &mut pending);
            let start = pack.filled;
            let window = &pack.memory[start..start + pending];
            let done = for_each_chunk(window, at_end, config, |chunk| found.add(chunk));
            pack.filled += done;
            pending -= done;
            if at_end {
                break;
            }
            // The pack is full up to an unfinished chunk: it moves on.
            let mut next = packs.take();
            let tail = pack.filled;
            next.free()[..pending].copy_from_slice(&pack.memory[tail..tail + pending]);
            packs.send(std::mem::replace(&mut pack, next));
        }
    }
    packs.send(pack);
    found
}

/// Reads into `buffer[*filled..]` until it is full or the file ends;
/// returns whether it ended.
fn fill(file: &mut std::fs::File, buffer: &mut [u8], filled: &mut usize) -> bool {
    while *filled < buffer.len() {
        match file
            .read(&mut buffer[*filled..])
            .expect("a listed file reads")
        {
            0 => return true,
            count => *filled += count,
        }
    }
    false
}

/// Calls `each` on the chunks of `window` (which starts at a cut), leaving
/// out the last one unless the data ends with the window (its end is then
/// no cut); returns the bytes chunked.
fn for_each_chunk(
    window: &[u8],
    at_end: bool,
    config: ChunkerConfig,
    mut each: impl FnMut(&[u8]),
) -> usize {
    let chunks = fastcdc::v2020::FastCDC::new(
        window,
        config.size_min_bytes,
        config.size_avg_bytes,
        config.size_max_bytes,
    );
    let mut done = 0;
    for chunk in chunks {
        let end = chunk.offset + chunk.length;
        if end == window.len() && !at_end {
            break;
        }
        each(&window[chunk.offset..end]);
        done = end;
    }
    done
}

/// Writes each full buffer as a pack (`O_DIRECT`, fsync, rename, directory
/// fsync, as the store does) and hands it back.
fn write_packs(full: &Receiver<Option<PackBuffer>>, empty: &Sender<PackBuffer>, out: &Path) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let buffers = full.iter().map_while(|buffer| buffer);
    for (index, buffer) in buffers.enumerate() {
        let temp = out.join(format!("{index:06}.pack.tmp"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&temp)
            .expect("a pack file opens for O_DIRECT writes");
        let length = buffer.filled.next_multiple_of(DIRECT_ALIGN_BYTES);
        let bytes = &buffer.memory[..length];
        file.write_all_at(bytes, 0).expect("the pack is written");
        file.set_len(buffer.filled().len() as u64)
            .expect("the pack is cut to size");
        file.sync_all().expect("the pack is fsynced");
        std::fs::rename(&temp, out.join(format!("{index:06}.pack"))).expect("renamed");
        std::fs::File::open(out)
            .and_then(|dir| dir.sync_all())
            .expect("the directory is fsynced");
        // The receiver is gone only once every worker has finished.
        let _ = empty.send(buffer);
    }
}

fn ceiling_mib_per_s(files: &[(PathBuf, u64)], config: ChunkerConfig, cores: usize) -> f64 {
    let mut bytes = Vec::new();
    for (path, _) in files {
        std::fs::File::open(path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .expect("a listed file reads");
    }
    let started = Instant::now();
    let part_bytes = bytes.len().div_ceil(cores);
    let found = std::thread::scope(|scope| {
        let workers: Vec<_> = bytes
            .chunks(part_bytes)
            .map(|part| {
                scope.spawn(move || {
                    let mut found = Found::default();
                    for_each_chunk(part, true, config, |chunk| found.add(chunk));
                    found
                })
            })
            .collect();
        let mut found = Found::default();
        workers
            .into_iter()
            .for_each(|worker| found.merge(worker.join().expect("worker")));
        found
    });
    assert!(found.chunks > 0, "the ceiling found no chunk");
    mib_per_s(bytes.len() as u64, started.elapsed().as_secs_f64())
}

/// Every regular file under `dir`, with its size.
fn list_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| {
            eprintln!(
                "expected a readable directory at {}: {error}",
                dir.display()
            );
            std::process::exit(2);
        });
        for entry in entries {
            let entry = entry.expect("a directory entry");
            let metadata = entry.metadata().expect("an entry's metadata");
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() {
                files.push((entry.path(), metadata.len()));
            }
        }
    }
    files.sort();
    files
}

/// Deals files to `count` workers, largest first, each to the least loaded.
fn deal(files: &[(PathBuf, u64)], count: usize) -> Vec<Vec<PathBuf>> {
    let mut by_size: Vec<&(PathBuf, u64)> = files.iter().collect();
    by_size.sort_by_key(|(path, size)| (std::cmp::Reverse(*size), path.clone()));
    let mut parts: Vec<(u64, Vec<PathBuf>)> = vec![(0, Vec::new()); count];
    for (path, size) in by_size {
        let lightest = parts
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one worker");
        lightest.0 += size;
        lightest.1.push(path.clone());
    }
    parts.into_iter().map(|(_, part)| part).collect()
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64 / seconds
}

fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    let result = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(result, 0, "getrusage of this process");
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
