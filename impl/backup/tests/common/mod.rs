//! Helpers shared by the engine's integration tests: a repository on a real
//! temp directory, a test clock, and a tree comparison.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use backup::disk::{Disk, RealDisk};
use backup::{
    BackupOptions, BackupReport, Clock, FsSource, NoProgress, Pipeline, RepoConfig, Repository,
    Source,
};

/// `size_bytes` bytes drawn from ChaCha seeded with `seed`.
pub fn random_bytes(size_bytes: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut bytes = vec![0; size_bytes];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// The default repository with 16 KiB average chunks, so small test files
/// still have several.
pub fn small_chunks() -> RepoConfig {
    RepoConfig {
        chunker: backup::ChunkerConfig::with_average(16 * 1024),
        ..RepoConfig::default()
    }
}

/// A clock that only moves when slept on.
#[derive(Default)]
pub struct TestClock {
    now_ms: AtomicU64,
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    async fn sleep_ms(&self, duration_ms: u64) {
        self.now_ms.fetch_add(duration_ms, Ordering::SeqCst);
    }
}

/// A repository on a fresh temp directory.
pub fn repository(config: RepoConfig) -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let disk: Arc<dyn Disk> = Arc::new(RealDisk::open(dir.path()).unwrap());
    let repository = Repository::create(disk, config).unwrap();
    (dir, repository)
}

/// Reopens the repository in `dir` (as after a restart).
pub fn reopen(dir: &Path) -> Repository {
    Repository::open(Arc::new(RealDisk::open(dir).unwrap())).unwrap()
}

/// Backs up a directory with the given pipeline.
pub fn backup_dir(repository: &Repository, source: &Path, pipeline: Pipeline) -> BackupReport {
    backup_source(repository, Arc::new(FsSource::new(source)), pipeline).unwrap()
}

/// Backs up any source.
pub fn backup_source(
    repository: &Repository,
    source: Arc<dyn Source>,
    pipeline: Pipeline,
) -> Result<BackupReport, backup::BackupError> {
    let options = BackupOptions {
        label: "test".into(),
        pipeline,
        ..BackupOptions::default()
    };
    pollster::block_on(backup::client::backup(
        repository,
        source,
        &options,
        &TestClock::default(),
        &NoProgress,
    ))
}

/// What a tree holds, per relative path: kind, mode, and contents or target.
pub fn describe_tree(root: &Path) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    let mut tree = BTreeMap::new();
    walk(root, root, &mut tree);
    tree
}

fn walk(root: &Path, dir: &Path, tree: &mut BTreeMap<String, (String, u32, Vec<u8>)>) {
    for child in std::fs::read_dir(dir).unwrap() {
        let path = child.unwrap().path();
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o7777;
        if metadata.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            tree.insert(
                relative,
                (
                    "link".into(),
                    0,
                    target.to_string_lossy().as_bytes().to_vec(),
                ),
            );
        } else if metadata.is_dir() {
            tree.insert(relative, ("dir".into(), mode, Vec::new()));
            walk(root, &path, tree);
        } else {
            tree.insert(
                relative,
                ("file".into(), mode, std::fs::read(&path).unwrap()),
            );
        }
    }
}
