//! The upload thread: while one pack is written and fsynced, the client goes
//! on reading, chunking and hashing the next batch, and nothing it promises
//! changes (the snapshot restores, the repository checks clean).

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backup::disk::{Disk, RealDisk};
use backup::{
    BackupOptions, BackupService, MemoryEntry, MemorySource, Pipeline, Progress, Repository, Source,
};

const BATCH_BYTES: usize = 256 << 10;

/// Counts the bytes the client has read, as its progress bar would.
#[derive(Default)]
struct ReadBytes(AtomicU64);

impl Progress for ReadBytes {
    fn advanced(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::SeqCst);
    }
}

/// A real disk whose first pack write holds until the client has read
/// `gate_bytes` (or `timeout` passes, which it records): a write that
/// stalls the reading can only end by the timeout.
struct GatedDisk {
    inner: RealDisk,
    read: Arc<ReadBytes>,
    gate_bytes: u64,
    timeout: Duration,
    gated: AtomicBool,
    timed_out: AtomicBool,
}

impl GatedDisk {
    fn hold_first_pack(&self, path: &str) {
        if !path.starts_with("data/") || self.gated.swap(true, Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        while self.read.0.load(Ordering::SeqCst) < self.gate_bytes {
            if started.elapsed() > self.timeout {
                self.timed_out.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Disk for GatedDisk {
    fn write(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        self.hold_first_pack(path);
        self.inner.write(path, bytes)
    }
    fn write_parts(&self, path: &str, parts: &[&[u8]]) -> io::Result<()> {
        self.hold_first_pack(path);
        self.inner.write_parts(path, parts)
    }
    fn fsync(&self, path: &str) -> io::Result<()> {
        self.inner.fsync(path)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn fsync_dir(&self, dir: &str) -> io::Result<()> {
        self.inner.fsync_dir(dir)
    }
    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn read_range(
        &self,
        path: &str,
        offset_bytes: u64,
        length_bytes: usize,
    ) -> io::Result<Vec<u8>> {
        self.inner.read_range(path, offset_bytes, length_bytes)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn remove(&self, path: &str) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn exists(&self, path: &str) -> io::Result<bool> {
        self.inner.exists(path)
    }
}

/// Eight files of 128 KiB of random bytes: four batches of new chunks.
fn source() -> Arc<dyn Source> {
    let mut tree = MemorySource::new();
    for index in 0..8_u64 {
        let bytes = common::random_bytes(128 << 10, index);
        tree.insert(&format!("f{index}"), 0o644, MemoryEntry::File(bytes));
    }
    Arc::new(tree)
}

/// Backs up [`source`] into a repository on a [`GatedDisk`] that waits for
/// the reading to pass the first two batches; returns whether the wait
/// timed out, with the repository's directory and the snapshot.
fn backup_gated(
    through_upload_thread: bool,
    timeout: Duration,
) -> (bool, tempfile::TempDir, backup::SnapshotId) {
    let dir = tempfile::tempdir().unwrap();
    let read = Arc::new(ReadBytes::default());
    let disk = Arc::new(GatedDisk {
        inner: RealDisk::open(dir.path()).unwrap(),
        read: read.clone(),
        gate_bytes: 2 * BATCH_BYTES as u64,
        timeout,
        gated: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
    });
    let repository = Repository::create(disk.clone(), common::small_chunks()).unwrap();
    let options = BackupOptions {
        label: "gated".into(),
        pipeline: Pipeline::Inline,
        batch_size_bytes: BATCH_BYTES,
        ..BackupOptions::default()
    };
    let clock = common::TestClock::default();
    let report = if through_upload_thread {
        repository.with_upload_thread(|service| {
            pollster::block_on(backup::client::backup(
                service,
                source(),
                &options,
                &clock,
                &*read,
            ))
        })
    } else {
        pollster::block_on(backup::client::backup(
            &repository,
            source(),
            &options,
            &clock,
            &*read,
        ))
    }
    .unwrap();
    assert!(
        disk.gated.load(Ordering::SeqCst),
        "no pack was ever written"
    );
    assert!(
        report.stats.new_chunks > 0 && report.stats.new_bytes == 8 * (128 << 10),
        "every byte is new: {:?}",
        report.stats
    );
    (disk.timed_out.load(Ordering::SeqCst), dir, report.snapshot)
}

#[test]
fn the_next_batch_is_read_while_a_pack_is_written_on_the_upload_thread() {
    let (timed_out, dir, snapshot) = backup_gated(true, Duration::from_secs(30));
    assert!(
        !timed_out,
        "the client stopped reading while the first pack was being written"
    );
    // The overlap changes nothing the repository promises.
    let repository = common::reopen(dir.path());
    let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
    assert!(
        report.is_clean(),
        "fsck after an overlapped backup: {report:?}"
    );
    let target = tempfile::tempdir().unwrap();
    let restore_dir = target.path().join("restored");
    pollster::block_on(backup::restore::restore(
        &repository,
        &snapshot,
        &restore_dir,
    ))
    .unwrap();
    for index in 0..8_u64 {
        let restored = std::fs::read(restore_dir.join(format!("f{index}"))).unwrap();
        assert_eq!(restored, common::random_bytes(128 << 10, index), "f{index}");
    }
    let listed = pollster::block_on(repository.list_snapshots()).unwrap();
    assert_eq!(listed.len(), 1);
}

/// The control: without the upload thread the write runs on the reading
/// thread, so the gate can only open by its timeout. This is what makes
/// the test above able to fail.
#[test]
fn without_the_upload_thread_reading_waits_for_every_pack_write() {
    let (timed_out, _dir, _snapshot) = backup_gated(false, Duration::from_millis(300));
    assert!(timed_out, "the gate opened although nothing could read");
}
