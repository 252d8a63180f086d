//! The engine end to end on a real repository directory: dedup, Bloom
//! statistics, bad input of every kind, crash leftovers, the naive index bug.

mod common;

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use backup::manifest::{Entry, EntryKind, Manifest};
use backup::restore::{RestoreError, restore};
use backup::service::{Answer, BackupService, ServiceError};
use backup::{
    ConcurrencyMode, Fingerprint, FsSource, MemoryEntry, MemorySource, Pipeline, RepoConfig,
    Repository, Source, SourceEntry, SourceKind,
};

/// A tree of a few files, some sharing content.
fn sample_tree(root: &Path) {
    std::fs::create_dir_all(root.join("docs/deep")).unwrap();
    std::fs::write(root.join("big.bin"), common::random_bytes(2 << 20, 1)).unwrap();
    std::fs::write(root.join("docs/copy.bin"), common::random_bytes(2 << 20, 1)).unwrap();
    std::fs::write(root.join("docs/deep/small.txt"), b"hello").unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
}

fn restore_into(
    repository: &Repository,
    id: &backup::SnapshotId,
    target: &Path,
) -> Result<(), RestoreError> {
    pollster::block_on(restore(repository, id, target)).map(|_| ())
}

#[test]
fn second_backup_of_an_unchanged_tree_stores_nothing_new() {
    let source = tempfile::tempdir().unwrap();
    sample_tree(source.path());
    let (repo_dir, repository) = common::repository(common::small_chunks());
    let first = common::backup_dir(&repository, source.path(), Pipeline::parallel_default());
    assert_eq!(first.stats.files, 4);
    assert_eq!(first.stats.bytes_read, (4 << 20) + 5);
    // The copy deduplicates within the run: only one 2 MiB file's bytes are new.
    assert_eq!(first.stats.new_bytes, (2 << 20) + 5);
    assert!(first.stats.bloom_lookups_saved > 0, "{:?}", first.stats);

    // After a restart, with the Bloom filter now full of our chunks.
    let repository = common::reopen(repo_dir.path());
    let second = common::backup_dir(&repository, source.path(), Pipeline::Inline);
    assert_eq!(second.stats.new_chunks, 0);
    assert_eq!(second.stats.new_bytes, 0);
    assert_eq!(second.stats.duplicate_uploads, 0);
    assert_eq!(second.stats.bloom_lookups_saved, 0);
    assert_eq!(second.stats.index_lookups, first.stats.new_chunks);
    assert!(second.stats.dedup_ratio().is_infinite());
    // Same tree, label and time: the manifest, and so the snapshot, is the same.
    assert_eq!(second.snapshot, first.snapshot);
    let listed = pollster::block_on(repository.list_snapshots()).unwrap();
    assert_eq!(listed.len(), 1);
}

#[test]
fn bloom_filter_saves_lookups_for_new_chunks_and_counts_false_positives() {
    let (_repo_dir, repository) = common::repository(common::small_chunks());
    let mut tree = MemorySource::new();
    tree.insert(
        "old",
        0o644,
        MemoryEntry::File(common::random_bytes(4 << 20, 7)),
    );
    common::backup_source(&repository, Arc::new(tree.clone()), Pipeline::Inline).unwrap();
    tree.insert(
        "new",
        0o644,
        MemoryEntry::File(common::random_bytes(4 << 20, 8)),
    );
    let report = common::backup_source(&repository, Arc::new(tree), Pipeline::Inline).unwrap();
    let stats = &report.stats;
    // Every chunk of "new" is new; the filter rules out nearly all of them.
    let new_chunks = stats.new_chunks;
    assert_eq!(
        stats.bloom_lookups_saved + stats.bloom_false_positives,
        new_chunks
    );
    assert!(stats.bloom_false_positives * 20 <= new_chunks, "{stats:?}");
    assert_eq!(
        stats.index_lookups,
        stats.chunks - new_chunks + stats.bloom_false_positives
    );
}

#[test]
fn symlinks_are_stored_as_links_and_special_files_are_skipped_and_reported() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"not ours").unwrap();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("file"), b"data").unwrap();
    std::os::unix::fs::symlink(outside.path(), source.path().join("to_outside")).unwrap();
    std::os::unix::fs::symlink("file", source.path().join("to_file")).unwrap();
    let fifo = std::ffi::CString::new(source.path().join("fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(source.path().join("socket")).unwrap();

    let (_repo_dir, repository) = common::repository(common::small_chunks());
    let report = common::backup_dir(&repository, source.path(), Pipeline::Inline);
    assert_eq!((report.stats.files, report.stats.symlinks), (1, 2));
    let mut skipped: Vec<(String, bool)> = report
        .stats
        .skipped
        .iter()
        .map(|entry| (entry.path.clone(), entry.reason.contains("special file")))
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        vec![("fifo".to_string(), true), ("socket".to_string(), true)]
    );
    // The link's target directory was not followed: its file is not in the snapshot.
    assert_eq!(report.stats.bytes_read, 4);

    let target = tempfile::tempdir().unwrap();
    restore_into(&repository, &report.snapshot, &target.path().join("r")).unwrap();
    let link = std::fs::read_link(target.path().join("r/to_outside")).unwrap();
    assert_eq!(link, outside.path());
    assert_eq!(
        std::fs::read(target.path().join("r/to_file")).unwrap(),
        b"data"
    );
}

/// A source whose listing is real but whose files fail as the test says:
/// one vanishes (replaced by a symlink) after listing, one fails mid-read.
struct FlakySource {
    inner: FsSource,
}

struct FailingReader {
    served: bool,
}

impl Read for FailingReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.served {
            return Err(io::Error::other("simulated EIO"));
        }
        self.served = true;
        buffer[..4].copy_from_slice(b"part");
        Ok(4)
    }
}

impl Source for FlakySource {
    fn list(&self) -> Result<Vec<SourceEntry>, backup::source::SourceError> {
        let entries = self.inner.list()?;
        let root = self.inner.root();
        std::fs::remove_file(root.join("swapped")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("swapped")).unwrap();
        Ok(entries)
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send>> {
        if path == "fails_midway" {
            return Ok(Box::new(FailingReader { served: false }));
        }
        self.inner.open(path)
    }
}

#[test]
fn unreadable_source_files_are_reported_and_do_not_stop_the_backup() {
    let source = tempfile::tempdir().unwrap();
    for name in ["fails_midway", "good", "swapped"] {
        std::fs::write(source.path().join(name), name.as_bytes()).unwrap();
    }
    let (_repo_dir, repository) = common::repository(common::small_chunks());
    let flaky = Arc::new(FlakySource {
        inner: FsSource::new(source.path()),
    });
    for pipeline in [Pipeline::Inline, Pipeline::parallel_default()] {
        let report = common::backup_source(&repository, flaky.clone(), pipeline);
        // The source swaps "swapped" on each listing; recreate it for the next round.
        std::fs::remove_file(source.path().join("swapped")).unwrap();
        std::fs::write(source.path().join("swapped"), b"swapped").unwrap();
        let report = report.unwrap();
        let mut skipped: Vec<&str> = report
            .stats
            .skipped
            .iter()
            .map(|s| s.path.as_str())
            .collect();
        skipped.sort();
        assert_eq!(
            skipped,
            ["fails_midway", "swapped"],
            "{:?}",
            report.stats.skipped
        );
        assert!(
            report
                .stats
                .skipped
                .iter()
                .any(|s| s.reason.contains("simulated EIO"))
        );
        assert_eq!(report.stats.files, 1);
        let manifest = pollster::block_on(repository.get_manifest(report.snapshot)).unwrap();
        let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["good"]);
    }
}

#[test]
fn an_unusable_source_root_is_a_clear_error() {
    let (_repo_dir, repository) = common::repository(common::small_chunks());
    let missing = Arc::new(FsSource::new("/nonexistent/crosscheck"));
    let error = common::backup_source(&repository, missing, Pipeline::Inline).unwrap_err();
    assert!(
        error.to_string().contains("expected a readable directory"),
        "{error}"
    );
    assert!(
        pollster::block_on(repository.list_snapshots())
            .unwrap()
            .is_empty()
    );
}

/// Backs up two trees, returns the repository dir, both snapshot ids, and
/// the one pack holding only the second tree's new chunk.
fn two_snapshots() -> (
    tempfile::TempDir,
    backup::SnapshotId,
    backup::SnapshotId,
    String,
) {
    let (repo_dir, repository) = common::repository(common::small_chunks());
    let mut tree = MemorySource::new();
    tree.insert(
        "keep",
        0o644,
        MemoryEntry::File(common::random_bytes(100_000, 1)),
    );
    let first =
        common::backup_source(&repository, Arc::new(tree.clone()), Pipeline::Inline).unwrap();
    let packs_before = repository.store().pack_paths();
    tree.insert(
        "victim",
        0o644,
        MemoryEntry::File(common::random_bytes(3_000, 2)),
    );
    let second = common::backup_source(&repository, Arc::new(tree), Pipeline::Inline).unwrap();
    let packs_after = repository.store().pack_paths();
    let new_pack = packs_after
        .into_iter()
        .find(|pack| !packs_before.contains(pack))
        .unwrap();
    (repo_dir, first.snapshot, second.snapshot, new_pack)
}

#[test]
fn a_corrupt_chunk_fails_restore_naming_file_and_chunk_and_spares_other_snapshots() {
    type Corrupt = fn(&mut Vec<u8>);
    let corruptions: [(&str, Corrupt, &str); 3] = [
        (
            "bit flip",
            |bytes| *bytes.last_mut().unwrap() ^= 0x01,
            "hash to",
        ),
        (
            "truncation",
            |bytes| bytes.truncate(bytes.len() - 100),
            "truncated",
        ),
        ("zero length", |bytes| bytes.clear(), "zero length"),
    ];
    for (name, corrupt, expected_problem) in corruptions {
        let (repo_dir, first, second, pack) = two_snapshots();
        let pack_path = repo_dir.path().join(&pack);
        let mut bytes = std::fs::read(&pack_path).unwrap();
        corrupt(&mut bytes);
        std::fs::write(&pack_path, bytes).unwrap();

        let repository = common::reopen(repo_dir.path());
        let target = tempfile::tempdir().unwrap();
        let out = target.path().join("r");
        let error = restore_into(&repository, &second, &out).unwrap_err();
        let message = error.to_string();
        let RestoreError::Incomplete { unrestored, stats } = &error else {
            panic!("{name}: {error}")
        };
        assert_eq!(unrestored.len(), 1, "{name}: {message}");
        assert_eq!(unrestored[0].path, "victim", "{name}");
        assert!(message.contains(expected_problem), "{name}: {message}");
        // The rest of the snapshot is restored; the victim is left out
        // rather than written with wrong bytes.
        assert_eq!(stats.files, 1, "{name}: {stats:?}");
        let kept = std::fs::read(out.join("keep")).unwrap();
        assert_eq!(kept, common::random_bytes(100_000, 1), "{name}");
        assert!(!out.join("victim").exists(), "{name}");

        let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
        assert!(!report.is_clean(), "{name}");
        assert_eq!(
            report.damaged_snapshots(),
            vec![second.clone()],
            "{name}: {report:?}"
        );
        assert_eq!(report.damaged_files.len(), 1, "{name}");
        assert_eq!(report.damaged_files[0].path, "victim");
        // The first snapshot does not share the damaged pack: it restores.
        restore_into(&repository, &first, &target.path().join("first")).unwrap();
        let kept = std::fs::read(target.path().join("first/keep")).unwrap();
        assert_eq!(kept, common::random_bytes(100_000, 1), "{name}");
    }
}

/// The tree of [`two_snapshots`]' second snapshot.
fn second_tree() -> Arc<dyn Source> {
    let mut tree = MemorySource::new();
    let files = [("keep", 100_000, 1), ("victim", 3_000, 2)];
    for (path, size_bytes, seed) in files {
        let bytes = common::random_bytes(size_bytes, seed);
        tree.insert(path, 0o644, MemoryEntry::File(bytes));
    }
    Arc::new(tree)
}

#[test]
fn repair_lets_the_next_backup_heal_a_damaged_or_lost_chunk() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 2] = [
        ("bit flip", |pack| {
            let mut bytes = std::fs::read(pack).unwrap();
            *bytes.last_mut().unwrap() ^= 0x01;
            std::fs::write(pack, bytes).unwrap();
        }),
        ("lost pack", |pack| std::fs::remove_file(pack).unwrap()),
    ];
    for (name, damage) in damages {
        let (repo_dir, first, second, pack) = two_snapshots();
        damage(&repo_dir.path().join(&pack));
        let repository = common::reopen(repo_dir.path());
        if name == "lost pack" {
            // The index still claims the chunk: without a repair no backup
            // of the same data can commit.
            let error =
                common::backup_source(&repository, second_tree(), Pipeline::Inline).unwrap_err();
            assert!(
                error.to_string().contains("fsck --repair"),
                "{name}: {error}"
            );
        }
        let repaired = backup::fsck::repair(&repository).unwrap();
        assert_eq!(repaired.index_claims_forgotten, 1, "{name}: {repaired:?}");
        let dropped = usize::from(name == "bit flip");
        assert_eq!(repaired.chunks_dropped.len(), dropped, "{name}");
        let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
        assert_eq!(report.damaged_snapshots(), vec![second.clone()], "{name}");
        assert!(report.damaged_chunks.is_empty(), "{name}: {report:?}");
        assert!(report.index_claims_missing.is_empty(), "{name}: {report:?}");

        let healing = common::backup_source(&repository, second_tree(), Pipeline::Inline).unwrap();
        assert_eq!(healing.stats.new_chunks, 1, "{name}: {:?}", healing.stats);
        let repository = common::reopen(repo_dir.path());
        let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
        assert!(report.is_clean(), "{name}: {report:?}");
        let target = tempfile::tempdir().unwrap();
        for (index, id) in [first, second, healing.snapshot].iter().enumerate() {
            let out = target.path().join(index.to_string());
            restore_into(&repository, id, &out).unwrap();
            let keep = std::fs::read(out.join("keep")).unwrap();
            assert_eq!(keep, common::random_bytes(100_000, 1), "{name}");
        }
        let victim = std::fs::read(target.path().join("1/victim")).unwrap();
        assert_eq!(victim, common::random_bytes(3_000, 2), "{name}: healed");
    }
}

/// Two uploads of one chunk that raced (here: a second store opened before
/// the first backup, as another process would be) leave two copies in two
/// packs. Damage to the copy reads do not go to must not be blamed on any
/// snapshot; damage to the one they go to must, and repair then falls back
/// on the sound copy without a new backup.
#[test]
fn a_damaged_copy_is_blamed_on_snapshots_only_when_reads_go_to_it() {
    for damage_read_copy in [false, true] {
        let (repo_dir, repository) = common::repository(common::small_chunks());
        let racer = backup::store::ChunkStore::open(repository.disk().clone()).unwrap();
        let bytes = common::random_bytes(3_000, 7);
        let mut tree = MemorySource::new();
        tree.insert("dup", 0o644, MemoryEntry::File(bytes.clone()));
        let snapshot = common::backup_source(&repository, Arc::new(tree), Pipeline::Inline)
            .unwrap()
            .snapshot;
        let fingerprint = Fingerprint::of(&bytes);
        let other = common::random_bytes(2_000, 8);
        let racing_batch = [
            (fingerprint, bytes.clone().into()),
            (Fingerprint::of(&other), other.into()),
        ];
        assert_eq!(racer.put_batch(&racing_batch).unwrap().stored_chunks, 2);

        let repository = common::reopen(repo_dir.path());
        let read_pack = repository.store().pack_of(&fingerprint).unwrap();
        let packs = repository.store().pack_paths();
        assert_eq!(packs.len(), 2, "two packs hold the chunk: {packs:?}");
        let damaged_pack = if damage_read_copy {
            read_pack.clone()
        } else {
            packs.into_iter().find(|pack| *pack != read_pack).unwrap()
        };
        let pack_file = repo_dir.path().join(&damaged_pack);
        let mut pack_bytes = std::fs::read(&pack_file).unwrap();
        // Flip one byte inside this pack's copy of the chunk.
        let copy_at = pack_bytes
            .windows(64)
            .position(|w| w == &bytes[..64])
            .unwrap();
        pack_bytes[copy_at + 100] ^= 0x01;
        std::fs::write(&pack_file, pack_bytes).unwrap();

        let repository = common::reopen(repo_dir.path());
        let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
        assert!(!report.is_clean(), "{report:?}");
        let target = tempfile::tempdir().unwrap();
        let restored = restore_into(&repository, &snapshot, &target.path().join("r"));
        if damage_read_copy {
            assert_eq!(report.damaged_snapshots(), vec![snapshot.clone()]);
            assert_eq!(report.damaged_chunks.len(), 1, "{report:?}");
            assert!(report.damaged_spare_copies.is_empty(), "{report:?}");
            assert!(restored.is_err(), "reads go to the damaged copy");
        } else {
            assert!(report.damaged_snapshots().is_empty(), "{report:?}");
            assert!(report.damaged_chunks.is_empty(), "{report:?}");
            assert_eq!(report.damaged_spare_copies.len(), 1, "{report:?}");
            restored.unwrap();
        }

        backup::fsck::repair(&repository).unwrap();
        let repository = common::reopen(repo_dir.path());
        let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
        assert!(report.is_clean(), "repaired: {report:?}");
        let out = target.path().join("after-repair");
        restore_into(&repository, &snapshot, &out).unwrap();
        assert_eq!(std::fs::read(out.join("dup")).unwrap(), bytes);
    }
}

#[test]
fn a_damaged_manifest_is_reported_and_does_not_hide_other_snapshots() {
    let (repo_dir, first, second, _pack) = two_snapshots();
    let manifest_path = repo_dir.path().join(format!("snapshots/{second}.json"));
    let mut bytes = std::fs::read(&manifest_path).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&manifest_path, bytes).unwrap();

    let repository = common::reopen(repo_dir.path());
    let listed = pollster::block_on(repository.list_snapshots()).unwrap();
    let ids: Vec<_> = listed.into_iter().map(|summary| summary.id).collect();
    assert_eq!(ids, vec![first.clone()]);
    let error = pollster::block_on(repository.get_manifest(second.clone())).unwrap_err();
    assert!(error.to_string().contains("damaged"), "{error}");
    let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
    assert_eq!(report.damaged_snapshots(), vec![second.clone()]);
    let found = pollster::block_on(backup::client::find_snapshot(&repository, &first.0[..6]));
    let target = tempfile::tempdir().unwrap();
    restore_into(&repository, &found.unwrap(), &target.path().join("r")).unwrap();
    // No backup can heal a manifest: repair moves it, unchanged, aside.
    let repaired = backup::fsck::repair(&repository).unwrap();
    let moved = format!("quarantine/snapshots/{second}.json");
    assert_eq!(repaired.manifests_quarantined, vec![moved.clone()]);
    assert!(repo_dir.path().join(moved).is_file());
    let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

/// Commits a manifest straight into the manifest store, as tampering would.
fn tampered(entries: Vec<Entry>) -> (tempfile::TempDir, Repository, backup::SnapshotId) {
    let (repo_dir, repository) = common::repository(common::small_chunks());
    let manifest = Manifest {
        label: "evil".into(),
        time_unix_ms: 0,
        entries,
        root: None,
    };
    let id = repository.manifests().commit(&manifest).unwrap();
    (repo_dir, repository, id)
}

#[test]
fn unsafe_manifest_paths_are_refused_before_anything_is_written() {
    let file = |path: &str| Entry {
        path: path.into(),
        mode: 0o644,
        owner: None,
        kind: EntryKind::File {
            size_bytes: 0,
            chunks: vec![],
            stamp: None,
        },
    };
    let link = |path: &str, target: &str| Entry {
        path: path.into(),
        mode: 0o777,
        owner: None,
        kind: EntryKind::Symlink {
            target: target.into(),
        },
    };
    let cases = [
        (
            vec![file("fine"), file("/tmp/evil")],
            "/tmp/evil",
            "absolute",
        ),
        (
            vec![file("fine"), file("a/../../evil")],
            "a/../../evil",
            "'..'",
        ),
        (
            vec![file("fine"), link("out", "/tmp"), file("out/evil")],
            "out/evil",
            "symlink",
        ),
    ];
    for (entries, bad_path, problem) in cases {
        let (_repo_dir, repository, id) = tampered(entries);
        let target = tempfile::tempdir().unwrap();
        let restored = target.path().join("r");
        let error = restore_into(&repository, &id, &restored).unwrap_err();
        let RestoreError::UnsafePath(unsafe_path) = &error else {
            panic!("{error}")
        };
        assert_eq!(unsafe_path.path, bad_path);
        assert!(error.to_string().contains(problem), "{error}");
        assert!(!restored.exists(), "restore wrote before refusing");
        // The service also refuses to commit such a manifest.
        let manifest = pollster::block_on(repository.get_manifest(id)).unwrap();
        let refused = pollster::block_on(repository.commit_manifest(manifest)).unwrap_err();
        assert!(
            matches!(refused, ServiceError::ManifestInvalid { .. }),
            "{refused}"
        );
    }
}

#[test]
fn restore_refuses_a_non_empty_target() {
    let (_repo_dir, repository, id) = tampered(vec![]);
    let target = tempfile::tempdir().unwrap();
    std::fs::write(target.path().join("existing"), b"x").unwrap();
    let error = restore_into(&repository, &id, target.path()).unwrap_err();
    assert!(
        matches!(error, RestoreError::TargetNotEmpty { .. }),
        "{error}"
    );
}

/// What a kill -9 can leave behind at each step of the commit order: a pack
/// temp file, a pack the index never recorded, a manifest temp file. None of
/// it is damage; a later backup reuses the orphan chunks and cleanup
/// removes the temp files.
#[test]
fn crash_leftovers_are_harmless_and_cleaned_up() {
    let source = tempfile::tempdir().unwrap();
    sample_tree(source.path());
    let (repo_dir, repository) = common::repository(common::small_chunks());
    let first = common::backup_dir(&repository, source.path(), Pipeline::Inline);
    let disk = repository.disk().clone();
    disk.write("data/00/interrupted.pack.tmp", b"half a pack")
        .unwrap();
    disk.write("snapshots/interrupted.json.tmp", b"{\"label\":")
        .unwrap();
    // A pack made durable just before the crash, never recorded in the index.
    let orphan = common::random_bytes(3_000, 99);
    let orphan_fingerprint = backup::Fingerprint::of(&orphan);
    repository
        .store()
        .put_batch(&[(orphan_fingerprint, orphan.clone().into())])
        .unwrap();
    drop(repository);

    let repository = common::reopen(repo_dir.path());
    let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.temp_files.len(), 2);
    assert_eq!(report.unreferenced_chunks, 1);
    let target = tempfile::tempdir().unwrap();
    restore_into(&repository, &first.snapshot, &target.path().join("r")).unwrap();
    assert_eq!(
        common::describe_tree(&target.path().join("r")),
        common::describe_tree(source.path())
    );

    // The next backup uploads the orphan again (the index did not know it):
    // the store keeps one copy, counts a duplicate, and the index heals.
    std::fs::write(source.path().join("orphan"), &orphan).unwrap();
    let second = common::backup_dir(&repository, source.path(), Pipeline::Inline);
    assert_eq!(second.stats.duplicate_uploads, 1, "{:?}", second.stats);
    assert!(
        repository
            .shard_for(&orphan_fingerprint)
            .contains(&orphan_fingerprint)
    );
    // A directory that merely has a temp name is no leftover of ours: cleanup
    // removes the two temp files and leaves it.
    let not_ours = repo_dir.path().join("snapshots/someones.json.tmp");
    std::fs::create_dir(&not_ours).unwrap();
    let removed = backup::cleanup(&repository).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(not_ours.is_dir());
    std::fs::remove_dir(&not_ours).unwrap();
    let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
    assert!(report.is_clean() && report.temp_files.is_empty() && report.unreferenced_chunks == 0);
}

/// The deliberate bug of naive mode, end to end: one client asks about a
/// chunk and stalls before uploading; a second client is told "present",
/// commits, and its snapshot names bytes that were never stored.
#[test]
fn naive_index_lets_a_snapshot_name_a_chunk_never_uploaded() {
    let config = RepoConfig {
        mode: ConcurrencyMode::Naive,
        ..common::small_chunks()
    };
    let (_repo_dir, repository) = common::repository(config);
    // Below the minimum chunk size: the file is exactly one chunk.
    let bytes = common::random_bytes(3_000, 5);
    let fingerprint = backup::Fingerprint::of(&bytes);
    let answers = pollster::block_on(repository.query(1, vec![fingerprint], 0)).unwrap();
    assert_eq!(answers, vec![Answer::Upload]); // client 1 stalls here

    let mut tree = MemorySource::new();
    tree.insert("file", 0o644, MemoryEntry::File(bytes));
    let report = common::backup_source(&repository, Arc::new(tree), Pipeline::Inline).unwrap();
    assert_eq!(
        report.stats.new_chunks, 0,
        "client 2 was told the chunk is present"
    );
    let target = tempfile::tempdir().unwrap();
    let error = restore_into(&repository, &report.snapshot, &target.path().join("r")).unwrap_err();
    let RestoreError::Incomplete { unrestored, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(unrestored[0].chunk, Some(fingerprint), "{error}");
    let fsck = backup::fsck(&repository, &mut |_, _| ()).unwrap();
    assert_eq!(fsck.index_claims_missing, vec![fingerprint]);
}

/// Pessimistic mode end to end: while another client holds the lease, the
/// backup waits (on its clock) until the lease expires, then uploads.
#[test]
fn pessimistic_backup_waits_out_a_stalled_lease_holder() {
    let config = RepoConfig {
        mode: ConcurrencyMode::Pessimistic { lease_ms: 5_000 },
        ..common::small_chunks()
    };
    let (_repo_dir, repository) = common::repository(config);
    let bytes = common::random_bytes(3_000, 6);
    let fingerprint = backup::Fingerprint::of(&bytes);
    let answers = pollster::block_on(repository.query(99, vec![fingerprint], 0)).unwrap();
    assert_eq!(answers, vec![Answer::Upload]); // client 99 stalls with the lease

    let mut tree = MemorySource::new();
    tree.insert("file", 0o644, MemoryEntry::File(bytes));
    let clock = common::TestClock::default();
    let options = backup::BackupOptions {
        client: 1,
        ..backup::BackupOptions::default()
    };
    let report = pollster::block_on(backup::client::backup(
        &repository,
        Arc::new(tree),
        &options,
        &clock,
        &backup::NoProgress,
    ))
    .unwrap();
    assert!(report.stats.lease_waits >= 1);
    assert_eq!(report.stats.new_chunks, 1);
    assert_eq!(
        report.stats.bloom_lookups_saved, 0,
        "pessimistic mode always asks"
    );
    use backup::Clock;
    assert!(clock.now_ms() >= 5_000, "uploaded before the lease expired");
}

#[test]
fn snapshot_prefixes_resolve_uniquely() {
    let (_repo_dir, repository) = common::repository(common::small_chunks());
    let mut tree = MemorySource::new();
    tree.insert("f", 0o644, MemoryEntry::Directory);
    let report = common::backup_source(&repository, Arc::new(tree), Pipeline::Inline).unwrap();
    let found = pollster::block_on(backup::client::find_snapshot(
        &repository,
        &report.snapshot.0[..8],
    ));
    assert_eq!(found.unwrap(), report.snapshot);
    let missing = pollster::block_on(backup::client::find_snapshot(&repository, "zz")).unwrap_err();
    assert!(matches!(missing, ServiceError::SnapshotNotFound { .. }));
    let _ = SourceKind::Directory { modified_ns: None };
}

#[test]
fn a_damaged_index_segment_is_named_by_fsck_and_costs_only_a_re_upload() {
    let (repo_dir, repository) = common::repository(common::small_chunks());
    let mut tree = MemorySource::new();
    tree.insert(
        "file",
        0o644,
        MemoryEntry::File(common::random_bytes(200_000, 3)),
    );
    let tree: Arc<dyn Source> = Arc::new(tree);
    let first = common::backup_source(&repository, tree.clone(), Pipeline::Inline).unwrap();
    drop(repository);
    // Flip one byte in the middle of the first index segment found.
    let segment = walk_files(&repo_dir.path().join("index"))
        .into_iter()
        .find(|path| std::fs::metadata(path).unwrap().len() > 0)
        .expect("an index segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&segment, bytes).unwrap();

    let repository = common::reopen(repo_dir.path());
    let report = backup::fsck(&repository, &mut |_, _| {}).unwrap();
    assert!(!report.is_clean(), "{report:?}");
    assert_eq!(report.damaged_index_segments.len(), 1, "{report:?}");
    let path = &report.damaged_index_segments[0].path;
    assert!(segment.ends_with(path), "{path} vs {}", segment.display());
    // No chunk is lost: the snapshot restores, and the next backup stores
    // the chunks the index forgot again instead of trusting them.
    let target = tempfile::tempdir().unwrap();
    restore_into(&repository, &first.snapshot, &target.path().join("out")).unwrap();
    let second = common::backup_source(&repository, tree, Pipeline::Inline).unwrap();
    assert!(second.stats.duplicate_uploads > 0, "{:?}", second.stats);
    // A repair drops the damaged segment, keeping every sound record.
    let repaired = backup::fsck::repair(&repository).unwrap();
    assert_eq!(repaired.index_segments_removed, 1, "{repaired:?}");
    let repository = common::reopen(repo_dir.path());
    let report = backup::fsck(&repository, &mut |_, _| {}).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// A manifest that hashes to its name yet was not written by a backup: one
/// file's sound chunks do not add up to its recorded size. fsck names the
/// file (no single chunk is at fault), as restore refuses it.
#[test]
fn fsck_names_a_file_whose_sound_chunks_do_not_hold_its_size() {
    let (repo_dir, _first, second, _pack) = two_snapshots();
    let repository = common::reopen(repo_dir.path());
    assert!(
        backup::fsck(&repository, &mut |_, _| ())
            .unwrap()
            .is_clean()
    );
    let mut manifest = pollster::block_on(repository.get_manifest(second)).unwrap();
    let victim = manifest
        .entries
        .iter_mut()
        .find(|entry| entry.path == "victim")
        .unwrap();
    let EntryKind::File { size_bytes, .. } = &mut victim.kind else {
        panic!("victim is a file")
    };
    *size_bytes += 1;
    let crafted = repository.manifests().commit(&manifest).unwrap();
    let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
    assert!(!report.is_clean(), "{report:?}");
    assert_eq!(report.damaged_snapshots(), vec![crafted.clone()]);
    let [file] = report.damaged_files.as_slice() else {
        panic!("{report:?}")
    };
    assert_eq!(
        (&file.snapshot, file.path.as_str(), file.chunk),
        (&crafted, "victim", None)
    );
    assert_eq!(
        file.problem,
        "its chunks hold 3000 bytes, the manifest says 3001"
    );
}

/// A name under `snapshots/` that holds no manifest file (a directory, a
/// dangling link, a symlink loop) is passed over by the listing and the choice of a parent,
/// and fsck names it; it stops nothing.
#[test]
fn a_snapshot_name_without_a_manifest_file_stops_nothing() {
    let (repo_dir, _first, _second, _pack) = two_snapshots();
    let chosen = common::reopen(repo_dir.path())
        .latest_snapshot("test")
        .unwrap();
    assert!(chosen.is_some());
    let snapshots = repo_dir.path().join("snapshots");
    let directory = "d".repeat(64);
    std::fs::create_dir(snapshots.join(format!("{directory}.json"))).unwrap();
    let dangling = "e".repeat(64);
    std::os::unix::fs::symlink("/nonexistent", snapshots.join(format!("{dangling}.json"))).unwrap();
    let looped = format!("{}.json", "f".repeat(64));
    std::os::unix::fs::symlink(&looped, snapshots.join(&looped)).unwrap();
    let repository = common::reopen(repo_dir.path());
    let listed = pollster::block_on(repository.list_snapshots()).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(repository.latest_snapshot("test").unwrap(), chosen);
    let report = backup::fsck(&repository, &mut |_, _| ()).unwrap();
    assert!(report.is_clean_but_for_strays(), "{report:?}");
    assert_eq!(report.snapshots_checked, 2);
    let strays = &report.stray_snapshot_entries;
    assert_eq!(strays.len(), 3, "{strays:?}");
    assert!(strays[0].contains(&directory) && strays[0].contains("is a directory"));
    assert!(strays[1].contains(&dangling) && strays[1].contains("dangling link"));
    assert!(strays[2].contains(&looped) && strays[2].contains("symlink loop"));
    // Repair moves no one's directory or link: it leaves both, and says so.
    let repaired = backup::fsck::repair(&repository).unwrap();
    assert!(repaired.manifests_quarantined.is_empty(), "{repaired:?}");
    assert_eq!(repaired.manifests_left.len(), 3, "{repaired:?}");
    assert!(snapshots.join(format!("{directory}.json")).is_dir());
    assert!(snapshots.join(format!("{dangling}.json")).is_symlink());
    assert!(snapshots.join(&looped).is_symlink());
}

/// A repository of the first format (format_version 1) opens; the first
/// backup into it raises the version before writing a pack of the current
/// format, so an older build refuses the repository instead of calling the
/// new packs damaged. A version newer than this build's is refused by name.
#[test]
fn an_older_format_is_upgraded_before_new_packs_and_a_newer_one_is_refused() {
    let (dir, repository) = common::repository(common::small_chunks());
    drop(repository);
    let config_path = dir.path().join(backup::repository::CONFIG_PATH);
    let set_version = |version: u32| {
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        config["format_version"] = version.into();
        std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    };
    let version_on_disk = || {
        let config: RepoConfig =
            serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        config.format_version
    };
    set_version(1);
    let repository = common::reopen(dir.path());
    assert_eq!(version_on_disk(), 1, "opening alone changes nothing");
    let source = tempfile::tempdir().unwrap();
    sample_tree(source.path());
    common::backup_dir(&repository, source.path(), Pipeline::Inline);
    assert_eq!(version_on_disk(), RepoConfig::FORMAT_VERSION);
    drop(repository);
    set_version(RepoConfig::FORMAT_VERSION + 1);
    let disk = Arc::new(backup::disk::RealDisk::open(dir.path()).unwrap());
    let Err(ServiceError::Repository { detail }) = Repository::open(disk) else {
        panic!("a newer format must be refused");
    };
    let expected = format!("format version {} found", RepoConfig::FORMAT_VERSION + 1);
    assert!(detail.contains(&expected), "{detail}");
}
