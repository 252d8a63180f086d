//! First-backup and re-backup throughput of the engine against the in-memory
//! chunk + SHA-256 ceiling on every core, on one file of random bytes.
//!
//! `cargo run --release -p crosscheck-backup --example throughput -- [MiB] [dir]`
//! (default 1024 MiB under the system temp directory). The CLI's
//! `crosscheck bench backup` is the full benchmark; this isolates the library.

use std::sync::Arc;
use std::time::Instant;

use backup::disk::{Disk, RealDisk};
use backup::{
    BackupOptions, ChunkBytes, ChunkReader, ChunkerConfig, Clock, Fingerprint, FsSource,
    NoProgress, Pipeline, RepoConfig, Repository,
};
use rand::{RngCore, SeedableRng};

struct RealClock;

impl Clock for RealClock {
    fn now_ms(&self) -> u64 {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since_epoch
            .map(|duration| duration.as_millis() as u64)
            .unwrap_or(0)
    }

    async fn sleep_ms(&self, duration_ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(duration_ms));
    }
}

/// A disk in RAM: files in a map, fsync a no-op.
#[derive(Default)]
struct MemoryDisk {
    files: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
}

impl Disk for MemoryDisk {
    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_string(), bytes.to_vec());
        Ok(())
    }
    fn fsync(&self, _path: &str) -> std::io::Result<()> {
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        let mut files = self.files.lock().unwrap();
        let bytes = files.remove(from).ok_or(std::io::ErrorKind::NotFound)?;
        files.insert(to.to_string(), bytes);
        Ok(())
    }
    fn fsync_dir(&self, _dir: &str) -> std::io::Result<()> {
        Ok(())
    }
    fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let files = self.files.lock().unwrap();
        Ok(files.get(path).ok_or(std::io::ErrorKind::NotFound)?.clone())
    }
    fn list(&self, dir: &str) -> std::io::Result<Vec<String>> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let files = self.files.lock().unwrap();
        let mut names: Vec<String> = files
            .keys()
            .filter_map(|path| path.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap().to_string())
            .collect();
        names.dedup();
        Ok(names)
    }
    fn remove(&self, path: &str) -> std::io::Result<()> {
        self.files.lock().unwrap().remove(path);
        Ok(())
    }
    fn exists(&self, path: &str) -> std::io::Result<bool> {
        Ok(self.files.lock().unwrap().contains_key(path))
    }
}

/// Delegates to a repository, adding up the time spent in chunk uploads.
struct Timed {
    inner: Repository,
    put_micros: std::sync::atomic::AtomicU64,
}

impl backup::BackupService for Timed {
    async fn config(&self) -> backup::service::ServiceResult<RepoConfig> {
        self.inner.config().await
    }
    async fn bloom(&self) -> backup::service::ServiceResult<backup::BloomFilter> {
        self.inner.bloom().await
    }
    async fn query(
        &self,
        client: backup::ClientId,
        fingerprints: Vec<Fingerprint>,
        now_ms: u64,
    ) -> backup::service::ServiceResult<Vec<backup::Answer>> {
        self.inner.query(client, fingerprints, now_ms).await
    }
    async fn put_chunks(
        &self,
        chunks: Vec<(Fingerprint, ChunkBytes)>,
    ) -> backup::service::ServiceResult<backup::service::PutOutcome> {
        let started = Instant::now();
        let outcome = self.inner.put_chunks(chunks).await;
        let micros = started.elapsed().as_micros() as u64;
        self.put_micros
            .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
        outcome
    }
    async fn get_chunk(&self, fingerprint: Fingerprint) -> backup::service::ServiceResult<Vec<u8>> {
        self.inner.get_chunk(fingerprint).await
    }
    async fn commit_manifest(
        &self,
        manifest: backup::Manifest,
    ) -> backup::service::ServiceResult<backup::SnapshotId> {
        self.inner.commit_manifest(manifest).await
    }
    async fn get_manifest(
        &self,
        id: backup::SnapshotId,
    ) -> backup::service::ServiceResult<backup::Manifest> {
        self.inner.get_manifest(id).await
    }
    async fn list_snapshots(&self) -> backup::service::ServiceResult<Vec<backup::SnapshotSummary>> {
        self.inner.list_snapshots().await
    }
}

fn mib_per_second(size_bytes: usize, seconds: f64) -> f64 {
    size_bytes as f64 / (1 << 20) as f64 / seconds
}

/// Chunks and hashes `bytes` in memory, split in one slice per core.
fn ceiling_seconds(bytes: &[u8], config: ChunkerConfig) -> f64 {
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for slice in bytes.chunks(bytes.len().div_ceil(cores)) {
            scope.spawn(move || {
                let chunks = ChunkReader::new(slice, config).map(|chunk| chunk.unwrap());
                chunks
                    .map(|chunk| Fingerprint::of(&chunk).0[0] as u64)
                    .sum::<u64>()
            });
        }
    });
    started.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let size_mib: usize = args
        .next()
        .map(|text| text.parse().expect("MiB"))
        .unwrap_or(1024);
    let base = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(base).expect("temp dir");
    let size_bytes = size_mib << 20;
    let mut bytes = vec![0_u8; size_bytes];
    rand_chacha::ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut bytes);
    let source_dir = work.path().join("source");
    std::fs::create_dir_all(&source_dir).unwrap();
    std::fs::write(source_dir.join("data.bin"), &bytes).unwrap();
    let config = ChunkerConfig::default();
    let ceiling = ceiling_seconds(&bytes, config);
    drop(bytes);

    // `THROUGHPUT_DISK=memory` keeps the repository in RAM: the pipeline and
    // client alone, without the disk's write and fsync bandwidth.
    let disk: Arc<dyn Disk> = match std::env::var("THROUGHPUT_DISK").as_deref() {
        Ok("memory") => Arc::new(MemoryDisk::default()),
        _ => Arc::new(RealDisk::open(work.path().join("repo")).unwrap()),
    };
    let repository = Repository::create(disk, RepoConfig::default()).unwrap();
    let repository = Timed {
        inner: repository,
        put_micros: Default::default(),
    };
    let options = BackupOptions {
        pipeline: Pipeline::parallel_default(),
        ..Default::default()
    };
    for (round, label) in [(0, "first backup"), (1, "re-backup")] {
        let options = BackupOptions {
            time_unix_ms: round,
            ..options.clone()
        };
        let source = Arc::new(FsSource::new(&source_dir));
        let started = Instant::now();
        let run = backup::client::backup(&repository, source, &options, &RealClock, &NoProgress);
        let report = pollster::block_on(run).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let put_micros = repository
            .put_micros
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        println!(
            "{label}: {:.0} MiB/s ({:.2} s, {:.2} s in uploads), new {} MiB, \
             ceiling {:.0} MiB/s, {:.0}% of it",
            mib_per_second(size_bytes, seconds),
            seconds,
            put_micros as f64 / 1e6,
            report.stats.new_bytes >> 20,
            mib_per_second(size_bytes, ceiling),
            100.0 * ceiling / seconds,
        );
    }
}
