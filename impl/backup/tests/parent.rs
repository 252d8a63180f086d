//! Re-backup against a parent snapshot: files with an unchanged size and
//! stamp are not read, their chunks are reused only once the index confirms
//! them, and anything changed or unconfirmed is read again.

mod common;

use std::path::Path;
use std::sync::Arc;

use backup::manifest::{EntryKind, Manifest};
use backup::service::BackupService;
use backup::{
    BackupOptions, BackupReport, Fingerprint, FsSource, NoProgress, Pipeline, Repository,
};

/// Three files of different sizes, one of them empty, and a directory.
fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::write(root.join("a.bin"), common::random_bytes(1 << 20, 1)).unwrap();
    std::fs::write(root.join("dir/b.bin"), common::random_bytes(300_000, 2)).unwrap();
    std::fs::write(root.join("dir/empty"), b"").unwrap();
}

fn backup_after(repository: &Repository, root: &Path, parent: Option<&Manifest>) -> BackupReport {
    let options = BackupOptions {
        label: "parent-test".into(),
        pipeline: Pipeline::parallel_default(),
        ..BackupOptions::default()
    };
    pollster::block_on(backup::client::backup_after(
        repository,
        Arc::new(FsSource::new(root)),
        parent,
        &options,
        &common::TestClock::default(),
        &NoProgress,
    ))
    .unwrap()
}

fn manifest(repository: &Repository, report: &BackupReport) -> Manifest {
    pollster::block_on(repository.get_manifest(report.snapshot.clone())).unwrap()
}

/// Path → chunks of every file in a manifest.
fn file_chunks(manifest: &Manifest) -> Vec<(String, Vec<Fingerprint>)> {
    let files = manifest
        .entries
        .iter()
        .filter_map(|entry| match &entry.kind {
            EntryKind::File { chunks, .. } => Some((entry.path.clone(), chunks.clone())),
            _ => None,
        });
    files.collect()
}

fn assert_restores_to(repository: &Repository, report: &BackupReport, root: &Path) {
    let target = tempfile::tempdir().unwrap();
    let target = target.path().join("restored");
    pollster::block_on(backup::restore::restore(
        repository,
        &report.snapshot,
        &target,
    ))
    .unwrap();
    assert_eq!(
        common::describe_tree(&target),
        common::describe_tree(root),
        "snapshot {}",
        report.snapshot
    );
}

#[test]
fn unchanged_files_are_not_read_and_give_the_same_chunks() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let (_repo_dir, repository) = common::repository(common::small_chunks());
    let first = backup_after(&repository, source.path(), None);
    assert_eq!((first.stats.files, first.stats.unchanged_files), (3, 0));
    let parent = manifest(&repository, &first);
    let second = backup_after(&repository, source.path(), Some(&parent));
    assert_eq!(second.stats.unchanged_files, 3, "{:?}", second.stats);
    assert_eq!(second.stats.unchanged_bytes, (1 << 20) + 300_000);
    assert_eq!(second.stats.bytes_read, 0);
    assert_eq!(second.stats.files, 3);
    assert_eq!(second.stats.chunks, first.stats.chunks);
    assert_eq!(
        (second.stats.new_chunks, second.stats.duplicate_uploads),
        (0, 0)
    );
    // Every distinct chunk was confirmed with the index, once.
    assert_eq!(second.stats.index_lookups, first.stats.new_chunks);
    assert_eq!(
        file_chunks(&manifest(&repository, &second)),
        file_chunks(&parent)
    );
    assert_restores_to(&repository, &second, source.path());
}

#[test]
fn a_file_rewritten_at_the_same_size_is_read_again() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let (_repo_dir, repository) = common::repository(common::small_chunks());
    let first = backup_after(&repository, source.path(), None);
    // Same size, new bytes: only the stamp tells the change.
    std::fs::write(
        source.path().join("dir/b.bin"),
        common::random_bytes(300_000, 99),
    )
    .unwrap();
    let parent = manifest(&repository, &first);
    let second = backup_after(&repository, source.path(), Some(&parent));
    assert_eq!(second.stats.unchanged_files, 2, "{:?}", second.stats);
    assert_eq!(second.stats.bytes_read, 300_000);
    assert!(second.stats.new_chunks > 0);
    assert_restores_to(&repository, &second, source.path());
}

#[test]
fn a_parent_chunk_the_index_lacks_sends_its_file_back_to_be_read() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let (_repo_dir, repository) = common::repository(common::small_chunks());
    let first = backup_after(&repository, source.path(), None);
    // A parent naming a chunk the store never had (a damaged or foreign
    // snapshot): trusting it would commit a snapshot that cannot restore.
    let mut parent = manifest(&repository, &first);
    let bogus = Fingerprint::of(b"never stored");
    for entry in &mut parent.entries {
        if let EntryKind::File { chunks, .. } = &mut entry.kind
            && entry.path == "a.bin"
        {
            chunks[0] = bogus;
        }
    }
    let second = backup_after(&repository, source.path(), Some(&parent));
    assert_eq!(
        second.stats.unchanged_files, 2,
        "b.bin and the empty file: {:?}",
        second.stats
    );
    assert_eq!(second.stats.bytes_read, 1 << 20, "a.bin is read again");
    let chunks = file_chunks(&manifest(&repository, &second));
    assert!(chunks.iter().all(|(_, chunks)| !chunks.contains(&bogus)));
    assert_eq!(chunks, file_chunks(&manifest(&repository, &first)));
    assert_restores_to(&repository, &second, source.path());
}

#[test]
fn a_parent_from_another_tree_reuses_nothing() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let other = tempfile::tempdir().unwrap();
    tree(other.path());
    let (_repo_dir, repository) = common::repository(common::small_chunks());
    let first = backup_after(&repository, other.path(), None);
    let parent = manifest(&repository, &first);
    // Same paths and sizes, other inodes and times.
    let second = backup_after(&repository, source.path(), Some(&parent));
    assert_eq!(second.stats.unchanged_files, 0, "{:?}", second.stats);
    assert_eq!(second.stats.bytes_read, (1 << 20) + 300_000);
    assert_restores_to(&repository, &second, source.path());
}

/// The parent the CLI picks by default: the newest snapshot with the same
/// label, by time, found past other labels and past a damaged manifest; and
/// the newest over every label.
#[test]
fn the_latest_snapshot_of_a_label_is_found_past_other_labels_and_damage() {
    let source = tempfile::tempdir().unwrap();
    tree(source.path());
    let (repo_dir, repository) = common::repository(common::small_chunks());
    let snapshot = |label: &str, time_unix_ms: u64| {
        let options = BackupOptions {
            label: label.into(),
            time_unix_ms,
            ..BackupOptions::default()
        };
        let report = pollster::block_on(backup::client::backup(
            &repository,
            Arc::new(FsSource::new(source.path())),
            &options,
            &common::TestClock::default(),
            &NoProgress,
        ))
        .unwrap();
        report.snapshot
    };
    assert_eq!(repository.latest_snapshot("a").unwrap(), None);
    snapshot("a", 10);
    let newer = snapshot("a", 30);
    snapshot("b", 40);
    let middle = snapshot("a", 20);
    assert_eq!(
        repository.latest_snapshot("a").unwrap(),
        Some(newer.clone())
    );
    // Damage the newest: the one before it is chosen, and nothing fails.
    let path = repo_dir.path().join(format!("snapshots/{newer}.json"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(repository.latest_snapshot("a").unwrap(), Some(middle));
    assert_eq!(repository.latest_snapshot("c").unwrap(), None);
    // Over every label, the newest is "b" at 40 (what `restore latest` picks).
    let newest = repository.newest_manifest(None, true).unwrap();
    let (id, manifest) = newest.found.unwrap();
    assert_eq!((manifest.label.as_str(), manifest.time_unix_ms), ("b", 40));
    assert_eq!(id, repository.latest_snapshot("b").unwrap().unwrap());
    // The damaged manifest's head is unreadable too: it could have been the
    // newest, so it is named as passed over in either search.
    assert_eq!(newest.passed_over, vec![newer.clone()]);
    let of_a = repository.newest_manifest(Some("a"), false).unwrap();
    assert_eq!(of_a.passed_over, vec![newer.clone()]);
    let labels: Vec<&str> = of_a.labels.iter().map(String::as_str).collect();
    assert_eq!(labels, ["a", "b"]);
    // A label too long for the head read: those manifests are read whole,
    // and the newest is still the one chosen, its manifest with it.
    let long = "l".repeat(40_000);
    let long_newer = snapshot(&long, 50);
    snapshot(&long, 45);
    let (found, manifest) = repository.latest_manifest(&long).unwrap().unwrap();
    assert_eq!((found, manifest.time_unix_ms), (long_newer.clone(), 50));
    assert_eq!(manifest.label, long);
    let (newest, _) = repository
        .newest_manifest(None, true)
        .unwrap()
        .found
        .unwrap();
    assert_eq!(newest, long_newer);
}
